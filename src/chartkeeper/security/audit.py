"""The tamper-evident audit trail: an append-only, HMAC-chained log of access to patient data.

Every entry carries ``entry_hash = HMAC-SHA256(entry key, prev_hash || canonical JSON of the
entry, seq included)``, so editing, deleting, reordering or forging an entry breaks the chain
for anyone holding the key, and the key lives outside the database (``AuditKey``). Signed
checkpoints of the head make truncation of the tail detectable too. Database triggers refuse
UPDATE and DELETE on the audit tables, so tampering needs someone who can drop triggers;
``verify`` finds what they did. Reports by patient use an index of the patients each entry
concerns (``audit_patient``), derived from the entries behind the chain and checked by
``verify``.

Writing: ``AuditTrail.append`` joins a caller's write transaction (the entry commits with the
change it records); ``append_many`` appends several in one; ``AuditWriter`` group-commits the
one entry per API request that reads need, so concurrent requests share a transaction and an
fsync. Any number of writers and processes may append to one database: a lock (SQLite's write
lock, a PostgreSQL advisory lock) and the head read under it keep a single chain.

This serves HIPAA 164.312(b) (audit controls), ONC 170.315(d)(2) auditable events and
tamper-resistance, (d)(3) audit reports and (d)(10) auditing actions on health information,
and ASTM E2147. Entries export as FHIR R4 ``AuditEvent`` following IHE Basic Audit Log
Patterns (BALP).

PHI: ``details`` is stored as given and is readable by anyone who can read the audit tables.
Callers must not put PHI in free text there (no names, no raw search strings with values):
pass ids, parameter names and before/after version ids, not clinical content.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import csv
import hashlib
import hmac
import ipaddress
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
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
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from chartkeeper.security.identity import KeyFileError, load_or_create_key
from chartkeeper.store.engine import WRITE_OPTION

# ----------------------------------------------------------------------------- schema

metadata = MetaData()

GENESIS_HASH = "0" * 64
KEY_BYTES = 32
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


# ----------------------------------------------------------------------------- errors


class AuditError(Exception):
    """Base class: the audit trail refused an operation."""


class InvalidAuditRecord(AuditError, ValueError):
    """An entry or a report filter has a value the audit trail cannot store or compare."""


class AuditKeyError(AuditError):
    """The audit key file is missing, malformed or readable by others."""


class AuditTransactionError(AuditError):
    """``append`` was given a connection that is not in a suitable write transaction."""


class AuditWriterClosed(AuditError):
    """An ``AuditWriter`` was given a record after it was closed (or its thread stopped)."""


# ----------------------------------------------------------------------------- records


class AuditAction(StrEnum):
    """What the user did. Values are what the ``action`` column stores."""

    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    PRINT = "print"
    EXPORT = "export"
    DISCLOSURE = "disclosure"
    LOGIN = "login"
    LOGIN_FAILURE = "login-failure"
    LOGOUT = "logout"
    PRIVILEGE_CHANGE = "privilege-change"
    AUDIT_SETTING_CHANGE = "audit-setting-change"
    AUDIT_LOG_ACCESS = "audit-log-access"
    BREAK_THE_GLASS = "break-the-glass"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


_LIMITS = {"user_id": 128, "role": 64, "patient_id": 64, "resource_type": 64,
           "resource_id": 64, "source_address": 255}


@dataclass(frozen=True)
class AuditRecord:
    """One event to append. ``recorded``, ``seq`` and the hashes are assigned by the trail.

    ``details`` is JSON-serializable context: before/after version ids for changes, the
    names (not values) of search parameters, a break-the-glass reason. Never PHI in free text.
    """

    user_id: str
    role: str
    action: AuditAction
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    patient_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    source_address: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "action", AuditAction(self.action))
        except ValueError as exc:
            raise InvalidAuditRecord(
                f"unknown audit action {self.action!r}; expected one of "
                f"{', '.join(a.value for a in AuditAction)}") from exc
        try:
            object.__setattr__(self, "outcome", AuditOutcome(self.outcome))
        except ValueError as exc:
            raise InvalidAuditRecord(
                f"unknown audit outcome {self.outcome!r}; expected one of "
                f"{', '.join(o.value for o in AuditOutcome)}") from exc
        for name in ("user_id", "role"):
            if not getattr(self, name):
                raise InvalidAuditRecord(f"an audit entry needs a non-empty {name}")
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise InvalidAuditRecord(
                    f"audit {name} must be text of at most {limit} characters, got {value!r}")

    def details_json(self) -> str:
        """The details as canonical JSON (sorted keys), exactly as stored and hashed."""
        try:
            return orjson.dumps(dict(self.details), option=orjson.OPT_SORT_KEYS).decode()
        except TypeError as exc:
            raise InvalidAuditRecord(f"audit details are not JSON-serializable: {exc}") from exc


@dataclass(frozen=True)
class AuditEntry:
    """One stored entry of the chain."""

    seq: int
    recorded: str
    user_id: str
    role: str
    patient_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: str
    source_address: str | None
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str

    @classmethod
    def from_row(cls, row: Row[Any]) -> AuditEntry:
        details = orjson.loads(row.details)
        return cls(row.seq, row.recorded, row.user_id, row.role, row.patient_id, row.action,
                   row.resource_type, row.resource_id, row.outcome, row.source_address,
                   details if isinstance(details, dict) else {"value": details},
                   row.prev_hash, row.entry_hash)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the chain's entry ``seq`` had hash ``entry_hash``.

    Keep a copy outside the database as well (a log shipper, a ticket, a printout) and pass
    it to ``verify(anchor=...)``: someone who can drop triggers can delete checkpoints too.
    """

    seq: int
    entry_hash: str
    signed_at: str
    signature: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries_checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    checkpoints_checked: int = 0


# ----------------------------------------------------------------------------- key


def audit_key_path(home: Path) -> Path:
    """Where the audit key lives: in ``$CHARTKEEPER_HOME``, outside the database."""
    return home / "audit.key"


class AuditKey:
    """The HMAC key, kept in a file outside the database (e.g. ``$CHARTKEEPER_HOME/audit.key``).

    A missing file is created with 32 random bytes and mode 0600; an existing one is reused.
    A key file that others may read, or that is not 32 bytes, is refused.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            secret = load_or_create_key(self.path, KEY_BYTES)
        except KeyFileError as exc:
            raise AuditKeyError(f"audit {exc}") from exc
        if len(secret) != KEY_BYTES:
            raise AuditKeyError(
                f"audit key {self.path} holds {len(secret)} bytes; expected {KEY_BYTES}")
        # Separate keys for entries and checkpoints, so one kind cannot stand in for the other.
        self._entry_key = hmac.digest(secret, b"chartkeeper audit entry", "sha256")
        self._checkpoint_key = hmac.digest(secret, b"chartkeeper audit checkpoint", "sha256")

    @classmethod
    def in_home(cls, home: Path) -> AuditKey:
        return cls(audit_key_path(home))

    def __repr__(self) -> str:
        return f"AuditKey({str(self.path)!r})"

    def entry_hash(self, prev_hash: str, canonical: bytes) -> str:
        return hmac.new(self._entry_key, prev_hash.encode("ascii") + canonical,
                        hashlib.sha256).hexdigest()

    def checkpoint_signature(self, seq: int, entry_hash: str, signed_at: str) -> str:
        message = b"\x1f".join(
            [b"checkpoint", str(seq).encode(), entry_hash.encode(), signed_at.encode()])
        return hmac.new(self._checkpoint_key, message, hashlib.sha256).hexdigest()


_HASHED_FIELDS = ("seq", "recorded", "user_id", "role", "patient_id", "action",
                  "resource_type", "resource_id", "outcome", "source_address", "details")


def canonical_entry(values: Mapping[Any, Any]) -> bytes:
    """The bytes an entry's hash covers: every stored field but the hashes, keys sorted."""
    return orjson.dumps(
        {name: values[name] for name in _HASHED_FIELDS}, option=orjson.OPT_SORT_KEYS)


def entry_patients(patient_id: str | None, details_json: str) -> set[str]:
    """The patients an entry concerns: its patient_id and its details' "patients" list."""
    found = {patient_id} if patient_id else set()
    if '"patients"' in details_json:
        listed = orjson.loads(details_json).get("patients")
        if isinstance(listed, list):
            found.update(p for p in listed if isinstance(p, str) and 0 < len(p) <= 64)
    return found


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise InvalidAuditRecord(f"{moment!r} has no time zone; audit times are UTC instants")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _filter_instant(value: datetime | str) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidAuditRecord(f"{value!r} is not an ISO 8601 instant") from exc
    return _instant(value)


# ----------------------------------------------------------------------------- trail


CSV_COLUMNS = ("seq", "recorded", "user_id", "role", "patient_id", "action", "resource_type",
               "resource_id", "outcome", "source_address", "details", "prev_hash", "entry_hash")


class AuditTrail:
    """The audit chain in one database, keyed by an ``AuditKey`` held outside it."""

    def __init__(self, engine: Engine, key: AuditKey, *, observer: str = "chartkeeper",
                 server_url: str = "http://127.0.0.1:8000/fhir",
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self.key = key
        self.observer = observer
        self.server_url = server_url
        self._clock = clock

    # ------------------------------------------------------------------ writing
    def append(self, conn: Connection | None, entry: AuditRecord) -> int:
        """Append one entry and return its seq.

        With a connection, the entry joins the caller's open write transaction and commits or
        rolls back with it (on SQLite it must be a ``Store.write()`` transaction, which holds
        the write lock from BEGIN; on PostgreSQL it must be READ COMMITTED, the default, so
        the head is read after the append lock is taken). With ``None`` it runs in a
        transaction of its own. Cost: one SELECT of the head and one INSERT (plus the advisory
        lock on PostgreSQL).
        """
        return self.append_many(conn, [entry])[0]

    def append_many(self, conn: Connection | None, records: Sequence[AuditRecord], *,
                    durable: bool = True) -> list[int]:
        """Append several entries in one transaction and return their seqs, in order.

        The same rules as ``append``, for the price of one: one lock, one read of the head and
        one multi-row INSERT, however many entries. Either all of them land or none does; a
        record whose details are not JSON is refused before anything is locked or written.
        """
        if conn is not None:
            self._check_write_transaction(conn)
        if not records:
            return []
        if conn is None:
            if self.engine.dialect.name == "sqlite":
                return self._append_on_driver(records, durable)
            with _write_connection(self.engine, durable) as own:
                return self._append_locked(own, records)
        return self._append_locked(conn, records)

    def _append_on_driver(self, records: Sequence[AuditRecord], durable: bool) -> list[int]:
        """``append_many`` in a transaction of its own on SQLite, on the driver's connection
        (taken from the engine's pool): every read request appends an entry, and SQLAlchemy's
        connection and statement layers cost more than the transaction itself (0.55 → 0.35 ms
        a read, bench/RESULTS.md). Errors are raised as SQLAlchemy's, like the other path."""
        details = [record.details_json() for record in records]
        try:
            pooled = self.engine.raw_connection()
        except sqlite3.Error as exc:  # the pool does not wrap what connect() raised
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
        statement = "BEGIN IMMEDIATE"
        try:
            raw: Any = pooled.driver_connection
            if not durable:
                raw.execute("PRAGMA synchronous=NORMAL")
            try:
                raw.execute(statement)
                try:
                    statement = _HEAD_SQL
                    row = raw.execute(statement).fetchone()
                    rows = self._chain(row, records, details)
                    statement = _insert_sql("?")
                    raw.executemany(statement, rows)
                    statement = "COMMIT"
                    raw.execute(statement)
                except BaseException:
                    if raw.in_transaction:
                        raw.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    raw.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            pooled.invalidate()
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
        finally:
            pooled.close()
        return [row[0] for row in rows]

    def _check_write_transaction(self, conn: Connection) -> None:
        if not conn.in_transaction():
            raise AuditTransactionError(
                "append(conn, ...) needs a connection inside an open transaction; "
                "pass None to append in a transaction of its own")
        if conn.dialect.name == "sqlite" and not conn.get_execution_options().get(WRITE_OPTION):
            raise AuditTransactionError(
                "on SQLite, append(conn, ...) needs a write transaction (Store.write()) that "
                "took the lock with BEGIN IMMEDIATE; a read transaction could fork the chain")

    def _lock(self, conn: Connection) -> None:
        # SQLite: the BEGIN IMMEDIATE of the write transaction already holds the only write
        # lock. PostgreSQL: one advisory lock, released at commit or rollback.
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_ID)))

    def _head(self, conn: Connection) -> tuple[int, str]:
        row = conn.exec_driver_sql(_HEAD_SQL).first()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def _append_locked(self, conn: Connection, records: Sequence[AuditRecord]) -> list[int]:
        details = [record.details_json() for record in records]
        self._lock(conn)
        rows = self._chain(conn.exec_driver_sql(_HEAD_SQL).first(), records, details)
        conn.exec_driver_sql(_insert_sql("?" if conn.dialect.name == "sqlite" else "%s"), rows)
        return [row[0] for row in rows]

    def _chain(self, head: Any, records: Sequence[AuditRecord], details: Sequence[str]
               ) -> list[tuple[Any, ...]]:
        """The rows of ``records`` chained after ``head`` (a (seq, entry_hash) row or None),
        in ``ENTRY_COLUMNS`` order."""
        head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
        rows: list[tuple[Any, ...]] = []
        for seq, record, details_json in zip(
                range(head_seq + 1, head_seq + 1 + len(records)), records, details, strict=True):
            values: dict[str, Any] = {
                "seq": seq,
                "recorded": _instant(self._clock()),
                "user_id": record.user_id,
                "role": record.role,
                "patient_id": record.patient_id,
                "action": record.action.value,
                "resource_type": record.resource_type,
                "resource_id": record.resource_id,
                "outcome": record.outcome.value,
                "source_address": record.source_address,
                "details": details_json,
            }
            values["prev_hash"] = head_hash
            values["entry_hash"] = head_hash = self.key.entry_hash(
                head_hash, canonical_entry(values))
            rows.append(tuple(values[column] for column in ENTRY_COLUMNS))
        return rows

    # ------------------------------------------------------------------ patient index
    def index_patients(self, *, max_rows: int = 2000) -> int:
        """Bring the patient index (``audit_patient``) up to the head of the chain.

        Reads the entries after the mark, inserts one row per patient they concern and moves
        the mark, in transactions of about ``max_rows`` rows so that appends wait at most a
        few milliseconds. Returns the number of entries indexed. Safe to call from any number
        of threads and processes: the mark is read under the trail's lock (SQLite's write
        lock, a row lock on PostgreSQL), so no entry is indexed twice.
        """
        indexed = 0
        while True:
            with self.engine.connect() as peek:  # nothing to do: no write lock taken
                mark = peek.execute(select(audit_patient_mark.c.indexed_through)).scalar()
                head = peek.execute(select(func.max(audit_entry.c.seq))).scalar()
            if mark is None:
                raise AuditError("the audit trail has no patient-index mark; run "
                                 "create_audit_schema")
            if head is None or head <= mark:
                return indexed
            with _write_connection(self.engine, durable=False) as conn:
                indexed += self._index_batch(conn, max_rows)

    def _index_batch(self, conn: Connection, max_rows: int) -> int:
        mark_query = select(audit_patient_mark.c.indexed_through)
        if conn.dialect.name == "postgresql":
            mark_query = mark_query.with_for_update()
        mark = int(conn.execute(mark_query).scalar_one())
        patient_rows: list[tuple[str, int]] = []
        last = mark
        entries = conn.execute(
            select(audit_entry.c.seq, audit_entry.c.patient_id, audit_entry.c.details)
            .where(audit_entry.c.seq > mark).order_by(audit_entry.c.seq)
            .limit(max(1, max_rows // 10))).all()
        for seq, patient_id, details in entries:
            patient_rows.extend((pid, seq) for pid in entry_patients(patient_id, details))
            last = int(seq)
            if len(patient_rows) >= max_rows:
                break
        if last == mark:
            return 0
        if patient_rows:
            patient_rows.sort()  # neighbours in the index: fewer pages touched
            marker = "?" if conn.dialect.name == "sqlite" else "%s"
            conn.exec_driver_sql(
                f"INSERT INTO audit_patient (patient_id, seq) VALUES ({marker}, {marker})",
                patient_rows)
        conn.execute(update(audit_patient_mark).values(indexed_through=last))
        return sum(1 for seq, _, _ in entries if seq <= last)

    def checkpoint(self) -> Checkpoint:
        """Sign the current head and store the checkpoint (the existing one if already signed)."""
        with _write_connection(self.engine) as conn:
            self._lock(conn)
            seq, entry_hash = self._head(conn)
            existing = conn.execute(
                select(audit_checkpoint).where(audit_checkpoint.c.seq == seq)).first()
            if existing is not None:
                return Checkpoint(existing.seq, existing.entry_hash, existing.signed_at,
                                  existing.signature)
            signed_at = _instant(self._clock())
            checkpoint = Checkpoint(seq, entry_hash, signed_at,
                                    self.key.checkpoint_signature(seq, entry_hash, signed_at))
            conn.execute(insert(audit_checkpoint).values(
                seq=seq, entry_hash=entry_hash, signed_at=signed_at,
                signature=checkpoint.signature))
            return checkpoint

    # ------------------------------------------------------------------ reading
    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one consistent state of the chain across batches."""
        conn = self.engine.connect()
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn, conn.begin():
            yield conn

    def _stream(self, conn: Connection, table: Table, conditions: list[ColumnElement[bool]],
                batch_size: int) -> Iterator[Row[Any]]:
        """Rows in seq order, fetched in keyset-paginated batches (bounded memory)."""
        last = -1
        while True:
            rows = conn.execute(
                select(table).where(table.c.seq > last, *conditions)
                .order_by(table.c.seq).limit(batch_size)
            ).all()
            yield from rows
            if len(rows) < batch_size:
                return
            last = rows[-1].seq

    def verify(self, *, anchor: Checkpoint | None = None, batch_size: int = 5000
               ) -> VerifyResult:
        """Recompute the whole chain and check every checkpoint (and ``anchor``, if given).

        Detects edited, deleted, reordered and forged entries, forged checkpoints, and a tail
        truncated past the last checkpoint. Entries appended after the last checkpoint and then
        removed cannot be told from never written; checkpoint often, and keep ``anchor``s.
        """
        checked = 0
        checkpoints_checked = 0
        expected_seq = 1
        prev_hash = GENESIS_HASH
        anchor_hash: str | None = GENESIS_HASH if anchor is not None and anchor.seq == 0 else None

        def broken(seq: int, reason: str) -> VerifyResult:
            return VerifyResult(False, checked, seq, reason, checkpoints_checked)

        def check_signature(cp: Checkpoint | Row[Any], what: str) -> str | None:
            expected = self.key.checkpoint_signature(cp.seq, cp.entry_hash, cp.signed_at)
            if not hmac.compare_digest(expected, cp.signature):
                return (f"{what} for entry {cp.seq} signed at {cp.signed_at} has an invalid "
                        "signature (forged, altered, or signed with another key)")
            return None

        if anchor is not None and (problem := check_signature(anchor, "anchor checkpoint")):
            return broken(anchor.seq, problem)
        with self._snapshot() as conn:
            checkpoints = self._stream(conn, audit_checkpoint, [], batch_size)
            pending = next(checkpoints, None)
            # A checkpoint of the empty chain (seq 0) vouches for the genesis hash.
            while pending is not None and pending.seq <= 0:
                if problem := check_signature(pending, "checkpoint"):
                    return broken(pending.seq, problem)
                if pending.seq < 0 or pending.entry_hash != GENESIS_HASH:
                    return broken(pending.seq, f"checkpoint for entry {pending.seq} is not "
                                               "a checkpoint of the empty chain")
                checkpoints_checked += 1
                pending = next(checkpoints, None)
            expected_index: dict[int, set[str]] = {}
            # Entries after the mark are not indexed yet: they must have no rows.
            indexed_through = int(conn.execute(
                select(func.coalesce(func.max(audit_patient_mark.c.indexed_through), 0))
            ).scalar_one())

            def index_problem() -> tuple[int, str] | None:
                """Compare the patient index with the entries of the window just read."""
                if not expected_index:
                    return None
                low, high = min(expected_index), max(expected_index)
                stored: dict[int, set[str]] = {}
                for seq, pid in conn.execute(
                        select(audit_patient.c.seq, audit_patient.c.patient_id)
                        .where(audit_patient.c.seq >= low, audit_patient.c.seq <= high)):
                    stored.setdefault(int(seq), set()).add(pid)
                for seq in sorted(set(expected_index) | set(stored)):
                    if stored.get(seq, set()) != expected_index.get(seq, set()):
                        return seq, (f"the patient index of entry {seq} does not match the "
                                     "entry (rows added or removed: reports by patient would "
                                     "be wrong)")
                expected_index.clear()
                return None

            for row in self._stream(conn, audit_entry, [], batch_size):
                if row.seq != expected_seq:
                    return broken(expected_seq, f"entry {expected_seq} is missing: the entry "
                                                f"after {expected_seq - 1} is {row.seq}")
                if row.prev_hash != prev_hash:
                    return broken(row.seq, f"entry {row.seq}'s prev_hash does not match the "
                                           f"hash of entry {row.seq - 1} (removed, reordered "
                                           "or replaced entries)")
                computed = self.key.entry_hash(prev_hash, canonical_entry(row._mapping))
                if not hmac.compare_digest(computed, row.entry_hash):
                    return broken(row.seq, f"entry {row.seq}'s contents do not match its "
                                           "entry_hash under this key (edited or forged)")
                while pending is not None and pending.seq <= row.seq:
                    if problem := check_signature(pending, "checkpoint"):
                        return broken(pending.seq, problem)
                    if pending.entry_hash != row.entry_hash:
                        return broken(row.seq, f"checkpoint for entry {row.seq} signed at "
                                               f"{pending.signed_at} names a different hash "
                                               "than the chain holds")
                    checkpoints_checked += 1
                    pending = next(checkpoints, None)
                if anchor is not None and row.seq == anchor.seq:
                    anchor_hash = row.entry_hash
                expected_index[row.seq] = (entry_patients(row.patient_id, row.details)
                                           if row.seq <= indexed_through else set())
                if len(expected_index) >= batch_size and (problem_at := index_problem()):
                    return broken(*problem_at)
                prev_hash = computed
                expected_seq += 1
                checked += 1
            if problem_at := index_problem():
                return broken(*problem_at)
            orphan = conn.execute(select(func.min(audit_patient.c.seq)).where(
                audit_patient.c.seq >= expected_seq)).scalar()
            if pending is not None:
                if problem := check_signature(pending, "checkpoint"):
                    return broken(pending.seq, problem)
                return broken(expected_seq, f"the chain ends at entry {expected_seq - 1} but "
                                            f"a checkpoint signed at {pending.signed_at} covers "
                                            f"entry {pending.seq}: the tail was truncated")
        if orphan is not None:
            return broken(int(orphan), f"the patient index names entry {orphan}, past the end "
                                       f"of the chain at {expected_seq - 1} (the tail was "
                                       "truncated)")
        if indexed_through >= expected_seq:
            return broken(expected_seq, f"the patient index was written up to entry "
                                        f"{indexed_through}, past the end of the chain at "
                                        f"{expected_seq - 1} (the tail was truncated)")
        if anchor is not None:
            if anchor_hash is None:
                return broken(expected_seq, f"the chain ends at entry {expected_seq - 1} but "
                                            f"the anchor covers entry {anchor.seq}: the tail "
                                            "was truncated")
            if anchor_hash != anchor.entry_hash:
                return broken(anchor.seq, f"the anchor for entry {anchor.seq} names a "
                                          "different hash than the chain holds")
        return VerifyResult(True, checked, None, None, checkpoints_checked)

    def _conditions(self, patient_id: str | None, user_id: str | None, action: str | None,
                    since: datetime | str | None, until: datetime | str | None
                    ) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if patient_id is not None:
            self.index_patients()  # a report by patient sees every entry up to now
            conditions.append(audit_entry.c.seq.in_(
                select(audit_patient.c.seq).where(audit_patient.c.patient_id == patient_id)))
        if user_id is not None:
            conditions.append(audit_entry.c.user_id == user_id)
        if action is not None:
            try:
                conditions.append(audit_entry.c.action == AuditAction(action).value)
            except ValueError as exc:
                raise InvalidAuditRecord(f"unknown audit action {action!r}") from exc
        if since is not None:
            conditions.append(audit_entry.c.recorded >= _filter_instant(since))
        if until is not None:
            conditions.append(audit_entry.c.recorded < _filter_instant(until))
        return conditions

    def entries(self, *, patient_id: str | None = None, user_id: str | None = None,
                action: str | None = None, since: datetime | str | None = None,
                until: datetime | str | None = None, limit: int = 100, offset: int = 0
                ) -> list[AuditEntry]:
        """Entries in seq order for reports; ``since`` is inclusive, ``until`` exclusive."""
        if limit < 0 or offset < 0:
            raise InvalidAuditRecord(f"limit and offset must be >= 0, got {limit}, {offset}")
        conditions = self._conditions(patient_id, user_id, action, since, until)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_entry).where(*conditions).order_by(audit_entry.c.seq)
                .limit(limit).offset(offset)
            ).all()
        return [AuditEntry.from_row(row) for row in rows]

    def iter_entries(self, *, patient_id: str | None = None, user_id: str | None = None,
                     action: str | None = None, since: datetime | str | None = None,
                     until: datetime | str | None = None, batch_size: int = 5000
                     ) -> Iterator[AuditEntry]:
        """Every matching entry in seq order, from one snapshot, read in batches.

        Filters are checked at the call (``InvalidAuditRecord``); the rows are read as the
        iterator is consumed, in a read transaction that stays open until it is exhausted.
        """
        conditions = self._conditions(patient_id, user_id, action, since, until)

        def stream() -> Iterator[AuditEntry]:
            with self._snapshot() as conn:
                for row in self._stream(conn, audit_entry, conditions, batch_size):
                    yield AuditEntry.from_row(row)

        return stream()

    def export_csv(self, stream: TextIO, *, patient_id: str | None = None,
                   user_id: str | None = None, action: str | None = None,
                   since: datetime | str | None = None, until: datetime | str | None = None,
                   batch_size: int = 5000) -> int:
        """Write matching entries as CSV (header first) and return how many rows were written."""
        conditions = self._conditions(patient_id, user_id, action, since, until)
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        written = 0
        with self._snapshot() as conn:
            for row in self._stream(conn, audit_entry, conditions, batch_size):
                writer.writerow(["" if row._mapping[c] is None else row._mapping[c]
                                 for c in CSV_COLUMNS])
                written += 1
        return written

    def to_audit_event(self, entry: AuditEntry) -> dict[str, Any]:
        """The entry as a FHIR R4 AuditEvent following IHE BALP."""
        return audit_event(entry, observer=self.observer, server_url=self.server_url)


# ----------------------------------------------------------------------------- group commit

_log = logging.getLogger(__name__)

# The database as a whole is unusable (down, unreachable, locked past the busy timeout, no
# pooled connection free), rather than one record being bad: retrying the rest of a failed
# batch one by one would only wait that much longer for the same answer.
_DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


@dataclass(frozen=True)
class _Submission:
    record: AuditRecord
    future: Future[int]


# Entries that record looking, not changing: committed before the response leaves, flushed to
# disk with the next durable commit or checkpoint. Everything else (changes, exports,
# disclosures, sign-ins, break-the-glass, privilege changes) waits for the disk.
RELAXED_ACTIONS = frozenset({AuditAction.READ, AuditAction.SEARCH})


def needs_fsync(records: Iterable[AuditRecord]) -> bool:
    return any(record.action not in RELAXED_ACTIONS for record in records)


class AuditWriter:
    """Group commit for the audit trail: one thread appends what callers submit, in batches.

    Each API request can then record its own entry and wait until it is durable, and the
    requests that arrive while a transaction commits share the next one: one lock, one INSERT
    and one fsync for up to ``max_batch`` entries instead of one each. The thread takes the
    first queued record, drains whatever else is queued, and writes the batch with
    ``AuditTrail.append_many``. If the batch fails, each of its records is retried alone
    once, so one bad record fails only its own caller; when a retry finds the database
    unavailable, the rest of the batch fails with that error without more attempts.

    Any number of writers (uvicorn workers, app instances in one process, the CLI) may append
    to the same database: the trail's lock and head read keep one chain. Create the writer
    after the server forks its workers (in the app's lifespan), never before: a thread does
    not survive ``fork``.

    Every ``checkpoint_every`` entries it has appended, the writer signs a checkpoint of the
    head (``None``: never). A failed checkpoint is logged and tried again after the next batch;
    the entries it would have covered are already committed.

    Every ``index_every`` seconds (``None``: never) it catches the patient index up with
    whatever entries this or any other writer appended (``AuditTrail.index_patients``).
    """

    def __init__(self, trail: AuditTrail, *, max_batch: int = 512,
                 checkpoint_every: int | None = 10_000, index_every: float | None = 1.0,
                 thread_name: str = "chartkeeper-audit-writer") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1 or None, got {checkpoint_every}")
        if index_every is not None and index_every <= 0:
            raise ValueError(f"index_every must be positive or None, got {index_every}")
        self.trail = trail
        self.max_batch = max_batch
        self.checkpoint_every = checkpoint_every
        self.index_every = index_every
        # Written by the writer thread only. A batch retried entry by entry counts one
        # transaction per entry that landed.
        self.batches_written = 0
        self.entries_written = 0
        self.checkpoints_written = 0
        self._since_checkpoint = 0
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()
        # Flush at interpreter exit too: daemon threads are stopped without finishing.
        atexit.register(self.close)

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, record: AuditRecord) -> Future[int]:
        """Queue ``record``; the future gives its seq once committed, or the write's error.

        A record whose details are not JSON is refused here (``InvalidAuditRecord``), and so is
        any record once the writer is closed (``AuditWriterClosed``). The future is running
        from the start, so it cannot be cancelled: an access that happened is audited even if
        the request that made it is abandoned. Callers that must fail closed wait on it.
        """
        record.details_json()
        future: Future[int] = Future()
        future.set_running_or_notify_cancel()
        with self._state:
            if self._closed:
                raise AuditWriterClosed(
                    f"the audit writer is closed; {record.action.value} by "
                    f"{record.user_id!r} was not recorded")
            self._queue.put(_Submission(record, future))
        return future

    def write(self, record: AuditRecord, timeout: float | None = None) -> int:
        """Submit ``record`` and wait until it is committed; return its seq."""
        return self.submit(record).result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write everything already submitted, then stop the thread. Idempotent.

        Raises ``TimeoutError`` if the queued entries are not all written within ``timeout``
        seconds; the thread keeps writing them.
        """
        with self._state:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        atexit.unregister(self.close)
        if threading.current_thread() is self._thread:
            return  # called from a future's callback: the thread stops after this batch
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(
                f"the audit writer did not finish its queued entries within {timeout} s; "
                "it goes on writing them")

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        batch: list[_Submission] = []
        next_index = None if self.index_every is None else time.monotonic() + self.index_every
        try:
            stopping = False
            while not stopping:
                if next_index is not None and time.monotonic() >= next_index:
                    self._index_patients()
                    next_index = time.monotonic() + (self.index_every or 0)
                try:
                    first = self._queue.get(timeout=None if next_index is None else
                                            max(0.0, next_index - time.monotonic()))
                except queue.Empty:
                    continue
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        following = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if following is None:
                        stopping = True
                        break
                    batch.append(following)
                self._write(batch)
                batch = []
                self._checkpoint_if_due()
        finally:
            # Reached with work left only if this thread failed unexpectedly: refuse new
            # records and answer the waiting ones rather than leave them blocked for ever.
            with self._state:
                self._closed = True
            stopped = AuditWriterClosed("the audit writer thread stopped; entry not recorded")
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(stopped)
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    left.future.set_exception(stopped)

    def _write(self, batch: list[_Submission]) -> None:
        try:
            seqs = self.trail.append_many(None, [s.record for s in batch],
                                          durable=needs_fsync(s.record for s in batch))
        except Exception as exc:
            _log.warning("audit batch of %d entries failed (%s: %s); retrying each alone",
                         len(batch), type(exc).__name__, exc)
            self._write_each_alone(batch)
            return
        self.batches_written += 1
        self.entries_written += len(seqs)
        self._since_checkpoint += len(seqs)
        for submission, seq in zip(batch, seqs, strict=True):
            submission.future.set_result(seq)

    def _write_each_alone(self, batch: list[_Submission]) -> None:
        unavailable: Exception | None = None
        for submission in batch:
            if unavailable is not None:
                submission.future.set_exception(unavailable)
                continue
            try:
                [seq] = self.trail.append_many(None, [submission.record],
                                               durable=needs_fsync([submission.record]))
            except Exception as exc:
                if isinstance(exc, _DATABASE_UNAVAILABLE):
                    unavailable = exc
                submission.future.set_exception(exc)
                continue
            self.batches_written += 1
            self.entries_written += 1
            self._since_checkpoint += 1
            submission.future.set_result(seq)

    def _index_patients(self) -> None:
        try:
            self.trail.index_patients()
        except Exception as exc:  # the entries are safe; reports catch the index up too
            _log.warning("audit patient index catch-up failed (%s); trying again later",
                         type(exc).__name__)

    def _checkpoint_if_due(self) -> None:
        if self.checkpoint_every is None or self._since_checkpoint < self.checkpoint_every:
            return
        try:
            self.trail.checkpoint()
        except Exception:
            _log.exception("audit checkpoint after %d entries failed; trying again after the "
                           "next batch", self._since_checkpoint)
            return
        self.checkpoints_written += 1
        self._since_checkpoint = 0


async def awrite(writer: AuditWriter, record: AuditRecord) -> int:
    """Submit ``record`` to ``writer`` and await its seq without blocking the event loop.

    Cancelling the awaiting task does not withdraw the entry: it is written all the same.
    """
    return await asyncio.wrap_future(writer.submit(record))


# ----------------------------------------------------------------------------- AuditEvent

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

Coding = dict[str, str]


def _coding(system: str, code: str, display: str) -> Coding:
    return {"system": system, "code": code, "display": display}


_REST = _coding(EVENT_TYPE, "rest", "Restful Operation")
_SOURCE_ROLE = _coding(DCM, "110153", "Source Role ID")
_DESTINATION_ROLE = _coding(DCM, "110152", "Destination Role ID")
_APPLICATION = _coding(DCM, "110150", "Application")
_CUSTODIAN = _coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                     "custodian", "Custodian")
_RECIPIENT = _coding(PARTICIPATION, "IRCP", "information recipient")
_AUTHOR = _coding(PARTICIPATION, "AUT", "author (originator)")
_EXPORT = _coding(DCM, "110106", "Export")
_SECURITY_ALERT = _coding(DCM, "110113", "Security Alert")
_USER_AUTHENTICATION = _coding(DCM, "110114", "User Authentication")


@dataclass(frozen=True)
class _EventShape:
    """How one audit action reads in AuditEvent: codes, agent roles and the BALP profile."""

    type: Coding
    subtype: Coding
    action: str  # AuditEvent.action: C R U D E
    client: Coding
    server: Coding
    user: Coding | None
    profile: str | None = None  # BALP profile for a success, "Patient" prefixed with a patient


_SHAPES: dict[str, _EventShape] = {
    "read": _EventShape(_REST, _coding(RESTFUL, "read", "read"), "R",
                        _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT, "Read"),
    "search": _EventShape(_REST, _coding(RESTFUL, "search-type", "search type"), "E",
                          _SOURCE_ROLE, _DESTINATION_ROLE, _RECIPIENT, "Query"),
    "create": _EventShape(_REST, _coding(RESTFUL, "create", "create"), "C",
                          _SOURCE_ROLE, _DESTINATION_ROLE, _AUTHOR, "Create"),
    "update": _EventShape(_REST, _coding(RESTFUL, "update", "update"), "U",
                          _SOURCE_ROLE, _DESTINATION_ROLE, _AUTHOR, "Update"),
    "delete": _EventShape(_REST, _coding(RESTFUL, "delete", "delete"), "D",
                          _APPLICATION, _CUSTODIAN, _AUTHOR, "Delete"),
    "print": _EventShape(_EXPORT, _coding(LIFECYCLE, "report", "Report (Output) Record "
                                          "Lifecycle Event"), "R",
                         _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT),
    "export": _EventShape(_EXPORT, _coding(LIFECYCLE, "extract", "Extract Record Lifecycle "
                                           "Event"), "R",
                          _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT),
    "disclosure": _EventShape(_EXPORT, _coding(LIFECYCLE, "disclose", "Disclose Record "
                                               "Lifecycle Event"), "R",
                              _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT),
    "login": _EventShape(_USER_AUTHENTICATION, _coding(DCM, "110122", "Login"), "E",
                         _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "login-failure": _EventShape(_USER_AUTHENTICATION, _coding(DCM, "110122", "Login"), "E",
                                 _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "logout": _EventShape(_USER_AUTHENTICATION, _coding(DCM, "110123", "Logout"), "E",
                          _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "privilege-change": _EventShape(_SECURITY_ALERT, _coding(
        DCM, "110137", "User Security Attributes Changed"), "U",
        _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "audit-setting-change": _EventShape(_SECURITY_ALERT, _coding(
        DCM, "110129", "Security Configuration"), "U", _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "audit-log-access": _EventShape(_coding(DCM, "110101", "Audit Log Used"), _coding(
        RESTFUL, "search-type", "search type"), "R", _DESTINATION_ROLE, _SOURCE_ROLE,
        _RECIPIENT),
    "break-the-glass": _EventShape(_SECURITY_ALERT, _coding(
        DCM, "110127", "Emergency Override Started"), "E", _SOURCE_ROLE, _DESTINATION_ROLE,
        None),
}

# FHIR R4 AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure.
_OUTCOMES = {"success": "0", "failure": "4", "denied": "8"}
_OUTCOME_TEXT = {"failure": "the operation failed", "denied": "access was denied"}


def _network(address: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        kind = "5" if "://" in address else "1"  # URI, else machine name
    else:
        kind = "2"  # IP address
    return {"address": address, "type": kind}


def audit_event(entry: AuditEntry, *, observer: str = "chartkeeper",
                server_url: str = "http://127.0.0.1:8000/fhir") -> dict[str, Any]:
    """A FHIR R4 AuditEvent for ``entry``, shaped after the IHE BALP profiles.

    Successful REST events (read, search, create, update, delete) claim the matching BALP
    profile (``IHE.BasicAudit.Read``, ``PatientRead``...). Other events use the DICOM event
    types that the R4 AuditEvent value set includes and claim no profile.
    """
    shape = _SHAPES[entry.action]
    subtype = shape.subtype
    if entry.action == "search" and entry.resource_type is None:
        subtype = _coding(RESTFUL, "search-system", "search system")
    client: dict[str, Any] = {
        "type": {"coding": [shape.client]},
        "who": {"display": entry.source_address or "unknown client"},
        "requestor": False,
    }
    if entry.source_address:
        client["network"] = _network(entry.source_address)
    server = {
        "type": {"coding": [shape.server]},
        "who": {"display": observer},
        "requestor": False,
        "network": _network(server_url),
    }
    user: dict[str, Any] = {"type": {"coding": [shape.user]}} if shape.user else {}
    user |= {
        "who": {"identifier": {"value": entry.user_id}},
        "requestor": True,
        "role": [{"text": entry.role}],
    }
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": str(entry.seq)}
    if shape.profile is not None and entry.outcome == "success":
        name = ("Patient" + shape.profile) if entry.patient_id else shape.profile
        event["meta"] = {"profile": [BALP_PROFILE + name]}
    event |= {
        "type": shape.type,
        "subtype": [subtype],
        "action": shape.action,
        "recorded": entry.recorded,
        "outcome": _OUTCOMES[entry.outcome],
    }
    if entry.outcome in _OUTCOME_TEXT:
        event["outcomeDesc"] = _OUTCOME_TEXT[entry.outcome]
    if entry.action == "break-the-glass":
        event["purposeOfEvent"] = [{"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/v3-ActReason", "ETREAT",
            "Emergency Treatment")]}]
    event["agent"] = [user, client, server]
    event["source"] = {
        "site": observer,
        "observer": {"display": observer},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }
    entities: list[dict[str, Any]] = []
    if entry.patient_id:
        entities.append({
            "what": {"reference": f"Patient/{entry.patient_id}"},
            "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient"),
        })
    if entry.action in ("search", "audit-log-access"):
        # The stored details carry the cleaned query (parameter names), never raw values.
        query = str(entry.details.get("query") or f"{entry.resource_type or ''}?")
        entities.append({
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "24", "Query"),
            "description": query,
            "query": base64.b64encode(query.encode()).decode(),
        })
    elif entry.resource_type and entry.resource_id:
        entities.append({
            "what": {"reference": f"{entry.resource_type}/{entry.resource_id}"},
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
        })
    request_id = entry.details.get("request_id")
    if isinstance(request_id, str) and request_id:
        entities.append({
            "what": {"identifier": {"value": request_id}},
            "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"},
        })
    if entities:
        event["entity"] = entities
    return event
