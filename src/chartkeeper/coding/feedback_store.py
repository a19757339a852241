"""The ``coding_feedback`` table: coders' decisions on worksheets, validated and stored.

Every decision a coder makes on a worksheet (accept, reject, edit to another code, add a code
the engine did not suggest) is one row of ``coding_feedback``, in the store's database and
written in the transaction that stores the final codes. Re-finalizing an encounter marks its
earlier rows as no longer current: the model and the accuracy report read current rows only,
the productivity report every row (superseded work was still work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from chartkeeper.coding.codesets import metadata

Outcome = Literal["accepted", "rejected", "edited", "added"]
OUTCOMES: tuple[Outcome, ...] = ("accepted", "rejected", "edited", "added")
KINDS = ("diagnosis", "procedure")

coding_feedback = Table(
    "coding_feedback",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("encounter_id", String(64), nullable=False),
    Column("setting", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("suggested_code", String(16), nullable=True),
    Column("confidence", Float, nullable=True),  # the engine's, before re-ranking
    Column("score", Float, nullable=True),  # what the coder was shown, after re-ranking
    Column("rank", Integer, nullable=True),
    Column("proposed", Boolean, nullable=True),
    Column("section", String(64), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("final_code", String(16), nullable=True),
    Column("final_display", String(255), nullable=True),
    Column("explicit", Boolean, nullable=False),
    Column("reason", String(500), nullable=True),
    Column("coder", String(128), nullable=False),
    Column("role", String(64), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("provenance_id", String(64), nullable=False),
    Column("current", Boolean, nullable=False),
)
Index("ix_coding_feedback_encounter", coding_feedback.c.encounter_id)
Index("ix_coding_feedback_code", coding_feedback.c.suggested_code, coding_feedback.c.current)
Index("ix_coding_feedback_provenance", coding_feedback.c.provenance_id)


class FeedbackError(ValueError):
    """A feedback row that cannot be recorded, or a report asked for an impossible period."""


@dataclass(frozen=True)
class FeedbackRow:
    """One decision on one code of one encounter's worksheet."""

    encounter_id: str
    setting: str
    kind: str
    outcome: Outcome
    coder: str
    role: str
    decided_at: datetime
    provenance_id: str
    suggested_code: str | None = None
    confidence: float | None = None
    score: float | None = None
    rank: int | None = None
    proposed: bool | None = None
    section: str | None = None
    final_code: str | None = None
    final_display: str | None = None
    explicit: bool = True
    reason: str | None = None
    current: bool = True

    def check(self) -> None:
        where = f"feedback for Encounter/{self.encounter_id}"
        if self.outcome not in OUTCOMES:
            raise FeedbackError(f"{where}: outcome {self.outcome!r} is not one of "
                                f"{', '.join(OUTCOMES)}")
        if self.kind not in KINDS:
            raise FeedbackError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.outcome != "added" and not self.suggested_code:
            raise FeedbackError(f"{where}: an {self.outcome} decision needs the suggested code")
        if self.outcome == "added" and self.suggested_code:
            raise FeedbackError(f"{where}: an added code {self.final_code!r} was not "
                                f"suggested, yet suggested_code is {self.suggested_code!r}")
        if self.outcome != "rejected" and not self.final_code:
            raise FeedbackError(f"{where}: an {self.outcome} decision needs the final code")
        if self.outcome == "rejected" and self.final_code:
            raise FeedbackError(f"{where}: a rejected suggestion has no final code, got "
                                f"{self.final_code!r}")
        for name in ("confidence", "score"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise FeedbackError(f"{where}: {name} {value!r} is outside 0..1")
        if self.rank is not None and self.rank < 1:
            raise FeedbackError(f"{where}: rank {self.rank} is below 1")
        if self.decided_at.tzinfo is None:
            raise FeedbackError(f"{where}: decided_at {self.decided_at} has no time zone")
        if not self.coder or not self.role:
            raise FeedbackError(f"{where}: the coder and the role are required")

    def to_json(self) -> dict[str, Any]:
        return {"encounter": self.encounter_id, "setting": self.setting, "kind": self.kind,
                "outcome": self.outcome, "suggestedCode": self.suggested_code,
                "confidence": self.confidence, "score": self.score, "rank": self.rank,
                "proposed": self.proposed, "section": self.section,
                "finalCode": self.final_code, "finalDisplay": self.final_display,
                "explicit": self.explicit, "reason": self.reason, "coder": self.coder,
                "role": self.role, "decidedAt": self.decided_at.isoformat(),
                "provenance": self.provenance_id, "current": self.current}


def create_feedback_schema(engine: Engine) -> None:
    """Create the feedback table (idempotent), on SQLite or PostgreSQL."""
    coding_feedback.create(engine, checkfirst=True)


def record(conn: Connection, rows: Sequence[FeedbackRow]) -> None:
    """Store one finalization's decisions inside the caller's transaction; the rows of earlier
    finalizations of the same encounters stop being current."""
    for row in rows:
        row.check()
    encounters = sorted({row.encounter_id for row in rows})
    if encounters:
        conn.execute(update(coding_feedback).where(
            coding_feedback.c.encounter_id.in_(encounters), coding_feedback.c.current)
            .values(current=False))
    if rows:
        conn.execute(insert(coding_feedback), [_values(row) for row in rows])


def _values(row: FeedbackRow) -> dict[str, Any]:
    return {"encounter_id": row.encounter_id, "setting": row.setting, "kind": row.kind,
            "suggested_code": row.suggested_code, "confidence": row.confidence,
            "score": row.score, "rank": row.rank, "proposed": row.proposed,
            "section": row.section, "outcome": row.outcome, "final_code": row.final_code,
            "final_display": (row.final_display or "")[:255] or None,
            "explicit": row.explicit, "reason": (row.reason or "")[:500] or None,
            "coder": row.coder[:128], "role": row.role[:64],
            "decided_at": row.decided_at.astimezone(UTC), "provenance_id": row.provenance_id,
            "current": row.current}


def _row(found: Any) -> FeedbackRow:
    return FeedbackRow(
        found.encounter_id, found.setting, found.kind, found.outcome, found.coder, found.role,
        _utc(found.decided_at), found.provenance_id, found.suggested_code, found.confidence,
        found.score, found.rank, found.proposed, found.section, found.final_code,
        found.final_display, bool(found.explicit), found.reason, bool(found.current))


def _utc(moment: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were stored in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def decisions_for(conn: Connection, encounter_id: str, *, current_only: bool = True
                  ) -> list[FeedbackRow]:
    """An encounter's recorded decisions in the order they were made."""
    query = select(coding_feedback).where(coding_feedback.c.encounter_id == encounter_id)
    if current_only:
        query = query.where(coding_feedback.c.current)
    return [_row(found) for found in conn.execute(query.order_by(coding_feedback.c.pk))]
