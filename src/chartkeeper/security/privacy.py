"""Break-the-glass grants, the accounting of disclosures, and restricted-patient lookup.

Break-the-glass (ONC 170.315(d)(6) emergency access): a permitted user opens a restricted
patient's record with a stated reason for a limited time. Every grant is kept here for the
privacy officer's report and appended to the audit trail by the API.

Accounting of disclosures (45 CFR 164.528): each release of information records the date, the
patient, the recipient, the purpose, what was released and who released it, and a patient's
accounting lists the disclosures of the last six years.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.engine import Row

from chartkeeper.security.access import sensitive_label_tokens
from chartkeeper.security.identity import SecurityError, require_aware, utc, write_transaction
from chartkeeper.store import schema as store_schema

metadata = MetaData()

break_glass = Table(
    "break_glass",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False, index=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

disclosure = Table(
    "disclosure",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("disclosed_at", DateTime(timezone=True), nullable=False),
    Column("patient_id", String(64), nullable=False, index=True),
    Column("recipient", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("description", Text, nullable=False),  # what was released, in words
    Column("resources", Text, nullable=False),  # JSON list of "Type/id" released
    Column("released_by", String(128), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

MIN_REASON_LENGTH = 10
ACCOUNTING_YEARS = 6
_FHIR_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
# A released resource: "<ResourceType>/<FHIR id>" (not "Patient/", "/x" or a URL).
_RELEASED_RESOURCE = re.compile(r"[A-Z][A-Za-z]{0,63}/[A-Za-z0-9\-.]{1,64}")


def create_privacy_schema(engine: Engine) -> None:
    metadata.create_all(engine)


class PrivacyRequestError(SecurityError, ValueError):
    """A break-the-glass or disclosure request that cannot be recorded as given."""


def _check_patient_id(patient_id: Any) -> str:
    if not isinstance(patient_id, str) or not 0 < len(patient_id) <= 64 or \
            not set(patient_id) <= _FHIR_ID_CHARS:
        raise PrivacyRequestError(f"patient must be a FHIR id, got {patient_id!r:.80}")
    return patient_id


def _text(value: Any, name: str, minimum: int = 1, maximum: int = 2000) -> str:
    if not isinstance(value, str) or not minimum <= len(value.strip()) <= maximum:
        raise PrivacyRequestError(f"{name} must be text of {minimum} to {maximum} characters")
    return value.strip()


# ------------------------------------------------------------------------------ break the glass
@dataclass(frozen=True)
class GlassGrant:
    id: int
    username: str
    role: str
    patient_id: str
    reason: str
    granted_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> GlassGrant:
        return cls(row.id, row.username, row.role, row.patient_id, row.reason,
                   utc(row.granted_at), utc(row.expires_at))

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.username, "role": self.role,
                "patient": self.patient_id, "reason": self.reason,
                "granted": self.granted_at.isoformat(), "expires": self.expires_at.isoformat()}


class BreakGlassRegistry:
    """Time-limited emergency grants, one per (user, patient, moment)."""

    def __init__(self, engine: Engine, max_minutes: int = 60) -> None:
        self.engine = engine
        self.max_minutes = max_minutes

    def open(self, username: str, role: str, patient_id: Any, reason: Any, minutes: Any,
             now: datetime | None = None) -> GlassGrant:
        patient = _check_patient_id(patient_id)
        stated = _text(reason, "reason", MIN_REASON_LENGTH)
        if isinstance(minutes, bool) or not isinstance(minutes, int) or \
                not 0 < minutes <= self.max_minutes:
            raise PrivacyRequestError(f"minutes must be a whole number from 1 to "
                                      f"{self.max_minutes}")
        moment = require_aware(now)
        with write_transaction(self.engine) as conn:
            pk = conn.execute(insert(break_glass).values(
                username=username, role=role, patient_id=patient, reason=stated,
                granted_at=moment, expires_at=moment + timedelta(minutes=minutes),
            ).returning(break_glass.c.id)).scalar_one()
        return GlassGrant(int(pk), username, role, patient, stated, moment,
                          moment + timedelta(minutes=minutes))

    def active_patients(self, username: str, now: datetime | None = None) -> frozenset[str]:
        moment = require_aware(now)
        with self.engine.connect() as conn:
            return frozenset(conn.execute(select(break_glass.c.patient_id).where(
                break_glass.c.username == username, break_glass.c.expires_at > moment,
                break_glass.c.granted_at <= moment)).scalars())

    def report(self, since: datetime | None = None, until: datetime | None = None
               ) -> list[GlassGrant]:
        """Every grant in the window, newest first: the privacy officer's review list."""
        conds = []
        if since is not None:
            conds.append(break_glass.c.granted_at >= require_aware(since, "since"))
        if until is not None:
            conds.append(break_glass.c.granted_at < require_aware(until, "until"))
        with self.engine.connect() as conn:
            rows = conn.execute(select(break_glass).where(*conds)
                                .order_by(break_glass.c.granted_at.desc(),
                                          break_glass.c.id.desc())).all()
        return [GlassGrant.from_row(r) for r in rows]


# ------------------------------------------------------------------------------ disclosures
@dataclass(frozen=True)
class Disclosure:
    id: int
    disclosed_at: datetime
    patient_id: str
    recipient: str
    purpose: str
    description: str
    resources: list[str]
    released_by: str

    @classmethod
    def from_row(cls, row: Row[Any]) -> Disclosure:
        return cls(row.id, utc(row.disclosed_at), row.patient_id, row.recipient, row.purpose,
                   row.description, orjson.loads(row.resources), row.released_by)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "date": self.disclosed_at.isoformat(),
                "patient": self.patient_id, "recipient": self.recipient,
                "purpose": self.purpose, "description": self.description,
                "resources": self.resources, "releasedBy": self.released_by}


class DisclosureLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, released_by: str, body: Any, now: datetime | None = None) -> Disclosure:
        """Record one release of information from a JSON object: patient, recipient,
        purpose, description, resources (list of "Type/id"), date (optional, ISO)."""
        if not isinstance(body, dict):
            raise PrivacyRequestError("a disclosure is a JSON object")
        unknown = set(body) - {"patient", "recipient", "purpose", "description", "resources",
                               "date"}
        if unknown:
            raise PrivacyRequestError(f"unknown disclosure fields: {', '.join(sorted(unknown))}")
        patient = _check_patient_id(body.get("patient"))
        recipient = _text(body.get("recipient"), "recipient")
        purpose = _text(body.get("purpose"), "purpose")
        description = _text(body.get("description"), "description")
        resources = body.get("resources", [])
        if not isinstance(resources, list) or not all(
                isinstance(r, str) and _RELEASED_RESOURCE.fullmatch(r) for r in resources):
            raise PrivacyRequestError("resources must be a list of 'Type/id' references")
        moment = require_aware(now)
        disclosed_at = moment
        if body.get("date") is not None:
            try:
                disclosed_at = utc(datetime.fromisoformat(str(body["date"])))
            except ValueError as exc:
                raise PrivacyRequestError("date must be an ISO 8601 date-time") from exc
            if disclosed_at > moment:
                raise PrivacyRequestError("a disclosure cannot be dated in the future")
        with write_transaction(self.engine) as conn:
            pk = conn.execute(insert(disclosure).values(
                disclosed_at=disclosed_at, patient_id=patient, recipient=recipient,
                purpose=purpose, description=description,
                resources=orjson.dumps(resources).decode(), released_by=released_by,
                recorded_at=moment).returning(disclosure.c.id)).scalar_one()
        return Disclosure(int(pk), disclosed_at, patient, recipient, purpose, description,
                          resources, released_by)

    def accounting(self, patient_id: str, now: datetime | None = None,
                   years: int = ACCOUNTING_YEARS) -> list[Disclosure]:
        """The patient's accounting: disclosures of the last ``years`` years, oldest first."""
        patient = _check_patient_id(patient_id)
        since = require_aware(now) - timedelta(days=365 * years + years // 4)
        with self.engine.connect() as conn:
            rows = conn.execute(select(disclosure).where(
                disclosure.c.patient_id == patient, disclosure.c.disclosed_at >= since)
                .order_by(disclosure.c.disclosed_at, disclosure.c.id)).all()
        return [Disclosure.from_row(r) for r in rows]


# ------------------------------------------------------------------------------ restricted
def restricted_patients(engine: Engine) -> frozenset[str]:
    """Ids of patients whose whole chart is restricted (VIP, restricted confidentiality),
    read from the store's ``_security`` index."""
    token = store_schema.idx_token
    res = store_schema.resource
    labels = sensitive_label_tokens()
    with engine.connect() as conn:
        return frozenset(conn.execute(
            select(res.c.resource_id).join(token, token.c.resource_pk == res.c.pk).where(
                token.c.resource_type == "Patient", token.c.param == "_security",
                token.c.code.in_([code for _, code in labels]),
                token.c.system.in_({system for system, _ in labels}),
                res.c.deleted.is_(False),
            )).scalars())
