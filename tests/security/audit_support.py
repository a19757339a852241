"""Helpers shared by the audit-trail tests: a hand-moved clock, records, and tampering."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text

from chartkeeper.security.audit import AuditAction, AuditRecord, audit_entry, canonical_entry
from chartkeeper.store.engine import WRITE_OPTION


class FakeClock:
    """A clock the tests move by hand, so report filters on ``recorded`` are exact."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def record(n: int, **changes: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "user_id": "dr-okafor", "role": "physician", "action": AuditAction.READ,
        "patient_id": "pat-1", "resource_type": "Observation", "resource_id": f"obs-{n}",
        "source_address": "10.1.2.3", "details": {"n": n},
    }
    values.update(changes)
    return AuditRecord(**values)


def tamper(engine: Engine, *statements: Any) -> None:
    """Drop the audit triggers, as an attacker with DDL rights would, then run ``statements``."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        if conn.dialect.name == "sqlite":
            names = conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('audit_entry', 'audit_checkpoint', 'audit_patient', "
                "'audit_patient_mark')")
            ).scalars().all()
            for name in names:
                conn.exec_driver_sql(f'DROP TRIGGER "{name}"')
        else:
            triggers = conn.execute(text(
                "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c "
                "ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
                "AND c.relname IN ('audit_entry', 'audit_checkpoint', 'audit_patient', "
                "'audit_patient_mark')")).all()
            for name, table in triggers:
                conn.exec_driver_sql(f'DROP TRIGGER "{name}" ON "{table}"')
        for statement in statements:
            conn.execute(statement)


def stored(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(audit_entry).where(audit_entry.c.seq == seq)).one()
    return dict(row._mapping)


def entry_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_entry)).scalar_one())


def plain_sha256(prev_hash: str, values: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_entry(values)).hexdigest()
