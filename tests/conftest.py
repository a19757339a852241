"""Shared fixtures: reference data, a throwaway PostgreSQL cluster, and fresh database URLs."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_OS_USER = "postgres"
POSTGRES_SUPERUSER = "postgres"
TEST_DATABASE = "chartkeeper_test"
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that asks for the server directly is a postgres test, so `-m "not postgres"`
    # deselects it without every author remembering the mark.
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (../shared/data): test material only, never copied."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"reference data not found at {SHARED_DATA}: the tests read ../shared/data "
            "next to the repository",
            pytrace=False,
        )
    return SHARED_DATA


def find_postgres_bindir() -> Path:
    """The bin directory of the highest PostgreSQL major version installed from Debian."""
    candidates = []
    for bindir in POSTGRES_ROOT.glob("*/bin"):
        version = bindir.parent.name
        if version.isdigit() and (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            candidates.append((int(version), bindir))
    if not candidates:
        pytest.fail(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {POSTGRES_ROOT}/*/bin; "
            "run `make test-deps` (installs Debian's postgresql)",
            pytrace=False,
        )
    return max(candidates)[1]


@dataclass
class PostgresServer:
    """A running throwaway cluster reached over a Unix socket in its own temp dir."""

    bindir: Path
    root: Path
    run_as: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3) of the ``chartkeeper_test`` database."""
        return self.url_for(TEST_DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{POSTGRES_SUPERUSER}@/{database}?host={self.socket_dir}"

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the cluster's binaries as the user that owns the cluster."""
        command = [*self.run_as, str(self.bindir / program), *args]
        completed = subprocess.run(
            command, cwd=self.root, env=self.env, capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else "(no server log)"
            pytest.fail(
                f"{' '.join(command)} exited {completed.returncode}\n"
                f"{completed.stdout}{completed.stderr}\nserver log:\n{log}",
                pytrace=False,
            )
        return completed

    def start(self) -> None:
        self.run(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            POSTGRES_SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        options = f"-k {self.socket_dir} -c listen_addresses='' -c fsync=on"
        self.run(
            "pg_ctl",
            "start",
            "--wait",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "-o",
            options,
        )
        self.fresh_database(TEST_DATABASE)

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "pg_ctl"),
                "stop",
                "--pgdata",
                str(self.data_dir),
                "-m",
                "immediate",
                "--wait",
            ],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            check=False,
        )

    def _admin(self) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=str(self.socket_dir), user=POSTGRES_SUPERUSER, dbname="postgres", autocommit=True
        )

    def fresh_database(self, name: str) -> str:
        """Create an empty database called ``name`` (dropping any old one); return its URL."""
        self.drop_database(name)
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, ending any sessions still connected to it."""
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} is not a lower-case SQL identifier")
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _server_env() -> dict[str, str]:
    # PG* variables from the caller (PGHOST, PGPORT, PGDATA...) must not redirect the cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for this test session (one per xdist worker)."""
    bindir = find_postgres_bindir()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    # Short base dir: a Unix socket path must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix=f"chartkeeper-pg-{worker}-", dir="/tmp"))
    run_as: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        try:
            owner = pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            shutil.rmtree(root)
            pytest.fail(
                f"running as root, but there is no {POSTGRES_OS_USER!r} OS user to run "
                "the cluster as; Debian's postgresql package creates it "
                "(run `make test-deps`)",
                pytrace=False,
            )
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = ("runuser", "-u", POSTGRES_OS_USER, "--")
    server = PostgresServer(bindir=bindir, root=root, run_as=run_as, env=_server_env())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a new SQLite file in this test's temp dir."""
    return f"sqlite:///{tmp_path}/chartkeeper.sqlite"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    # Looked up only here, so a SQLite-only run never starts the cluster.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"test_{uuid.uuid4().hex[:20]}"
    url = server.fresh_database(name)
    yield url
    server.drop_database(name)
