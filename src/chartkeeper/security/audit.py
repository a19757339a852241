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

This module holds ``AuditTrail`` and is the audit trail's public face: it re-exports what
callers use from ``audit_records`` (errors, records), ``audit_key``, ``audit_schema`` (tables,
triggers), ``audit_writer`` (group commit) and ``audit_event`` (FHIR AuditEvent).
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import ColumnElement, Engine, Table, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError

from chartkeeper.security.audit_appender import SqliteAppender
from chartkeeper.security.audit_event import audit_event
from chartkeeper.security.audit_key import KEY_BYTES, AuditKey, audit_key_path, canonical_entry
from chartkeeper.security.audit_records import (
    AuditAction,
    AuditEntry,
    AuditError,
    AuditKeyError,
    AuditOutcome,
    AuditRecord,
    AuditTransactionError,
    AuditWriterClosed,
    Checkpoint,
    InvalidAuditRecord,
    VerifyResult,
    _filter_instant,
    _instant,
    _utc_now,
    entry_patients,
)
from chartkeeper.security.audit_schema import (
    _HEAD_SQL,
    APPEND_LOCK_ID,
    ENTRY_COLUMNS,
    GENESIS_HASH,
    _insert_sql,
    _write_connection,
    audit_checkpoint,
    audit_entry,
    audit_patient,
    audit_patient_mark,
    create_audit_schema,
    metadata,
)
from chartkeeper.security.audit_verify import verify_chain
from chartkeeper.security.audit_writer import RELAXED_ACTIONS, AuditWriter, awrite, needs_fsync
from chartkeeper.store.engine import WRITE_OPTION

__all__ = [
    # the trail (this module)
    "CSV_COLUMNS", "AuditTrail",
    # records, errors and instants (audit_records)
    "AuditAction", "AuditEntry", "AuditError", "AuditKeyError", "AuditOutcome", "AuditRecord",
    "AuditTransactionError", "AuditWriterClosed", "Checkpoint", "InvalidAuditRecord",
    "VerifyResult", "entry_patients", "_instant",
    # the key (audit_key)
    "KEY_BYTES", "AuditKey", "audit_key_path", "canonical_entry",
    # tables and constants (audit_schema)
    "APPEND_LOCK_ID", "ENTRY_COLUMNS", "GENESIS_HASH", "audit_checkpoint", "audit_entry",
    "audit_patient", "audit_patient_mark", "create_audit_schema", "metadata",
    "_write_connection",
    # group commit (audit_writer)
    "RELAXED_ACTIONS", "AuditWriter", "awrite", "needs_fsync",
    # FHIR AuditEvent (audit_event)
    "audit_event",
]

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
        self._appender = SqliteAppender(engine)

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
        """``append_many`` in a transaction of its own on SQLite, with plain SQL on the
        process's one append connection (``SqliteAppender``): every read request appends an
        entry, and SQLAlchemy's connection and statement layers, and a page cache emptied by
        the other pooled connections' writes, cost more than the transaction itself
        (bench/RESULTS.md). Errors are raised as SQLAlchemy's, like the other path."""
        details = [record.details_json() for record in records]
        statement = "BEGIN IMMEDIATE"

        def append(raw: sqlite3.Connection) -> list[tuple[Any, ...]]:
            nonlocal statement
            raw.execute(statement)
            try:
                statement = _HEAD_SQL
                rows = self._chain(raw.execute(statement).fetchone(), records, details)
                statement = _insert_sql("?")
                raw.executemany(statement, rows)
                statement = "COMMIT"
                raw.execute(statement)
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            return rows

        try:
            rows = self._appender.run(append, durable=durable)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
        return [row[0] for row in rows]

    def close(self) -> None:
        """Close the append connection on SQLite (the next append opens another)."""
        self._appender.close()

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
        return verify_chain(self, anchor=anchor, batch_size=batch_size)

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
