"""A throwaway PostgreSQL cluster for benchmarks, started the same way the tests start theirs."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import (
    POSTGRES_OS_USER,
    PostgresServer,
    _server_env,
    find_postgres_bindir,
)


@contextmanager
def throwaway_postgres(database: str = "chartkeeper_bench") -> Iterator[str]:
    """Start a cluster on a Unix socket in /tmp, yield a database URL, then remove it all."""
    root = Path(tempfile.mkdtemp(prefix="chartkeeper-pg-bench-", dir="/tmp"))
    run_as: tuple[str, ...] = ()
    if os.geteuid() == 0:
        owner = pwd.getpwnam(POSTGRES_OS_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = ("runuser", "-u", POSTGRES_OS_USER, "--")
    server = PostgresServer(bindir=find_postgres_bindir(), root=root, run_as=run_as,
                            env=_server_env())
    try:
        server.start()
        yield server.fresh_database(database)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
