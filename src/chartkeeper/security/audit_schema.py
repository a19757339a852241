"""The audit trail's tables, the triggers that keep them append-only, and its write transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection

from chartkeeper.security.audit_records import AuditError
from chartkeeper.store.engine import WRITE_OPTION

metadata = MetaData()

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key that serializes appends and checkpoints ("chkaudit" in ASCII).
APPEND_LOCK_ID = 0x63686B6175646974


def _instant_column() -> String:
    # Bytewise ordering on PostgreSQL too, so range filters on the ISO text are exact.
    return String(40).with_variant(String(40, collation="C"), "postgresql")


audit_entry = Table(
    "audit_entry",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded", _instant_column(), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("role", String(64), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("action", String(32), nullable=False),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("source_address", String(255), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    # No index on patient_id: reports by patient go through audit_patient, which also holds
    # the patients of entries that name several.
    Index("ix_audit_entry_user", "user_id", "seq"),
    Index("ix_audit_entry_recorded", "recorded"),
)

audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("entry_hash", String(64), nullable=False),
    Column("signed_at", _instant_column(), nullable=False),
    Column("signature", String(64), nullable=False),
)

# Which patients each entry concerns: its patient_id and the ids in details["patients"] (a
# search over several patients is one entry). An index for reports by patient, derived from
# hashed content and checked against it by verify(). It is written behind the chain, not in
# the request's transaction: a page of 50 patients is 50 inserts at random places in the
# index, which cost five times the entry itself (bench/RESULTS.md, issue 3). The writer
# thread catches it up every second, and every report by patient catches it up first.
audit_patient = Table(
    "audit_patient",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", String(64), primary_key=True),
    Index("ix_audit_patient_patient", "patient_id", "seq"),
)

# One row: every entry up to ``indexed_through`` has its rows in audit_patient. It only moves
# forward (a trigger refuses the rest); verify() expects no rows above it.
audit_patient_mark = Table(
    "audit_patient_mark",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("indexed_through", BigInteger, nullable=False),
)

_AUDIT_TABLES = ("audit_entry", "audit_checkpoint", "audit_patient")
ENTRY_COLUMNS = tuple(column.name for column in audit_entry.columns)
# Plain SQL to the driver for the head and the INSERT: every read request appends an entry,
# and SQLAlchemy's statement handling cost more than the statements.
_HEAD_SQL = "SELECT seq, entry_hash FROM audit_entry ORDER BY seq DESC LIMIT 1"


def _insert_sql(marker: str) -> str:
    return (f"INSERT INTO audit_entry ({', '.join(ENTRY_COLUMNS)}) "
            f"VALUES ({', '.join([marker] * len(ENTRY_COLUMNS))})")

_PG_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION chartkeeper_audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END
$$
"""

_PG_MARK_FUNCTION = """
CREATE OR REPLACE FUNCTION chartkeeper_audit_mark_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.id <> OLD.id OR NEW.indexed_through < OLD.indexed_through THEN
        RAISE EXCEPTION USING
            MESSAGE = 'audit_patient_mark only moves forward: ' || TG_OP || ' refused',
            ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$
"""

_SQLITE_MARK_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS audit_patient_mark_no_delete BEFORE DELETE ON "
    "audit_patient_mark BEGIN SELECT RAISE(ABORT, 'audit_patient_mark only moves forward: "
    "DELETE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_patient_mark_forward BEFORE UPDATE ON "
    "audit_patient_mark WHEN NEW.id <> OLD.id OR NEW.indexed_through < OLD.indexed_through "
    "BEGIN SELECT RAISE(ABORT, 'audit_patient_mark only moves forward: UPDATE refused'); END",
]

_PG_MARK_TRIGGERS = [
    "CREATE OR REPLACE TRIGGER audit_patient_mark_forward BEFORE UPDATE OR DELETE ON "
    "audit_patient_mark FOR EACH ROW EXECUTE FUNCTION chartkeeper_audit_mark_forward()",
    "CREATE OR REPLACE TRIGGER audit_patient_mark_no_truncate BEFORE TRUNCATE ON "
    "audit_patient_mark FOR EACH STATEMENT EXECUTE FUNCTION chartkeeper_audit_refuse_change()",
]


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"
        for op in ("UPDATE", "DELETE")
    ]


def _postgres_triggers(table: str) -> list[str]:
    return [
        f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION chartkeeper_audit_refuse_change()",
        # Row triggers do not fire on TRUNCATE.
        f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION chartkeeper_audit_refuse_change()",
    ]


def create_audit_schema(engine: Engine) -> None:
    """Create the audit tables and the triggers that refuse UPDATE and DELETE. Idempotent.

    Triggers stop the application and careless operators; they do not stop the owner of the
    tables, who can drop them. For that, run the application as a database role that may only
    INSERT and SELECT here, and rely on ``AuditTrail.verify``.
    """
    with _write_connection(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_ID)))
        metadata.create_all(conn)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(_PG_REFUSE_FUNCTION)
            conn.exec_driver_sql(_PG_MARK_FUNCTION)
            statements = [s for table in _AUDIT_TABLES for s in _postgres_triggers(table)]
            statements += _PG_MARK_TRIGGERS
        elif conn.dialect.name == "sqlite":
            statements = [s for table in _AUDIT_TABLES for s in _sqlite_triggers(table)]
            statements += _SQLITE_MARK_TRIGGERS
        else:
            raise AuditError(
                f"the audit trail supports sqlite and postgresql, not {conn.dialect.name!r}"
            )
        for statement in statements:
            conn.exec_driver_sql(statement)
        # Trails made before the index moved behind the chain wrote it with each entry: they
        # start indexed up to their head. The patient_id index those versions kept on
        # audit_entry is covered by audit_patient.
        if conn.execute(select(audit_patient_mark.c.id)).first() is None:
            head = conn.execute(select(func.coalesce(func.max(audit_entry.c.seq), 0))).scalar()
            conn.execute(insert(audit_patient_mark).values(id=1, indexed_through=head))
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_audit_entry_patient")


@contextmanager
def _write_connection(engine: Engine, durable: bool = True) -> Iterator[Connection]:
    """A transaction that holds SQLite's write lock from BEGIN (see store.engine).

    ``durable=False`` commits without waiting for the disk: SQLite ``synchronous=NORMAL`` in
    WAL mode (the commit survives a crash of the process, not of the machine; restored to
    FULL before the connection returns to the pool), PostgreSQL ``synchronous_commit=off``.
    """
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
        relaxed_sqlite = not durable and conn.dialect.name == "sqlite"
        # On the driver's connection: through SQLAlchemy the PRAGMA would open a transaction,
        # and SQLite refuses to change the safety level inside one.
        raw: Any = conn.connection.driver_connection
        if relaxed_sqlite:
            raw.execute("PRAGMA synchronous=NORMAL")
        try:
            with conn.begin():
                if not durable and conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn
        finally:
            if relaxed_sqlite:
                raw.execute("PRAGMA synchronous=FULL")

