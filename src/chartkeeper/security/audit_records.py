"""The audit trail's errors and records: what callers append, what the chain stores, checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy.engine import Row

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
