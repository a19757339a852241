"""The test infrastructure itself: the throwaway PostgreSQL server and the database URL fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from conftest import PostgresServer


def _engine(url: str) -> sa.Engine:
    # NullPool: every connect() is a new server session, so "another connection" is real.
    return sa.create_engine(url, poolclass=NullPool)


def test_shared_data_points_at_the_reference_data(shared_data: Path) -> None:
    assert shared_data.is_dir()
    assert (shared_data / "README.md").is_file()


def test_postgres_server_answers_version_query(postgres_server: PostgresServer) -> None:
    engine = _engine(postgres_server.url)
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version()")).scalar_one()
        database = conn.execute(sa.text("select current_database()")).scalar_one()
    engine.dispose()
    assert "PostgreSQL" in version
    assert database == "chartkeeper_test"


def test_postgres_committed_row_is_read_back_by_another_connection(
    postgres_server: PostgresServer,
) -> None:
    engine = _engine(postgres_server.fresh_database("infra_readback"))
    with engine.begin() as conn:
        writer_pid = conn.execute(sa.text("select pg_backend_pid()")).scalar_one()
        conn.execute(sa.text("create table note (id integer primary key, body text not null)"))
        conn.execute(sa.text("insert into note values (1, 'discharge summary signed')"))
    with engine.connect() as conn:
        reader_pid = conn.execute(sa.text("select pg_backend_pid()")).scalar_one()
        body = conn.execute(sa.text("select body from note where id = 1")).scalar_one()
    engine.dispose()
    assert reader_pid != writer_pid
    assert body == "discharge summary signed"


def test_fresh_databases_are_independent_and_recreated_empty(
    postgres_server: PostgresServer,
) -> None:
    first = _engine(postgres_server.fresh_database("infra_first"))
    second = _engine(postgres_server.fresh_database("infra_second"))
    with first.begin() as conn:
        conn.execute(sa.text("create table encounter (id integer primary key)"))
        conn.execute(sa.text("insert into encounter values (7)"))
    assert sa.inspect(first).get_table_names() == ["encounter"]
    assert sa.inspect(second).get_table_names() == []
    second.dispose()

    # Asking again for an existing name drops it, even with a session still open on it.
    holder = first.connect()
    recreated = _engine(postgres_server.fresh_database("infra_first"))
    assert sa.inspect(recreated).get_table_names() == []
    recreated.dispose()
    holder.invalidate()
    holder.close()
    first.dispose()


def test_fresh_database_rejects_a_name_that_is_not_an_identifier(
    postgres_server: PostgresServer,
) -> None:
    with pytest.raises(ValueError, match="not a lower-case SQL identifier"):
        postgres_server.fresh_database('x"; drop database chartkeeper_test; --')


def test_sqlite_url_is_a_real_file_after_a_write(sqlite_url: str, tmp_path: Path) -> None:
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table patient (id text primary key)"))
        conn.execute(sa.text("insert into patient values ('example')"))
    engine.dispose()
    path = tmp_path / "chartkeeper.sqlite"
    assert path.is_file()
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    with _engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("select id from patient")).scalar_one() == "example"


def test_database_url_is_empty_and_writable(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    engine = _engine(database_url)
    assert sa.inspect(engine).get_table_names() == []
    with engine.begin() as conn:
        conn.execute(sa.text("create table claim (id integer primary key)"))
        conn.execute(sa.text("insert into claim values (1)"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from claim")).scalar_one() == 1
    engine.dispose()
    is_postgres = database_url.startswith("postgresql+psycopg://")
    assert (request.node.get_closest_marker("postgres") is not None) == is_postgres
