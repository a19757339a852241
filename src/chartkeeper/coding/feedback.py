"""Coders' decisions as training data, the ranking model learned from them, and the reports.

Every decision a coder makes on a worksheet (accept, reject, edit to another code, add a code
the engine did not suggest) is one row of ``coding_feedback``, in the store's database and
written in the transaction that stores the final codes. Re-finalizing an encounter marks its
earlier rows as no longer current: the model and the accuracy report read current rows only,
the productivity report every row (superseded work was still work).

The ranking model is a Beta-Bernoulli update per code, kept simple enough to explain on the
screen. The engine's confidence ``p`` for a suggestion is the prior mean of "coders keep this
code", worth ``PRIOR_STRENGTH`` decisions; coders' decisions on the same code are the evidence:

    score = (PRIOR_STRENGTH * p + kept) / (PRIOR_STRENGTH + kept + dropped)

``kept`` counts acceptances, ``dropped`` rejections and edits away from the code; decisions
made on evidence from another note section than the suggestion's count ``OTHER_SECTION``,
rejections a coder made by leaving an offered (not proposed) suggestion alone count
``IMPLICIT``. The prior is always the engine's own confidence, never an earlier score, so the
model does not feed on itself; the score stays within [0, ``MAX_SCORE``] and the same rows
give the same ranking. Two learned additions, each of which explains itself the same way:
a code coders repeatedly changed a suggestion to (``edited`` X → Y) and a code coders
repeatedly added beside an accepted suggestion are offered with that suggestion's evidence,
at ``p × count / (PRIOR_STRENGTH + decisions on X)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
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
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from chartkeeper.coding import cac
from chartkeeper.coding.cac import PROPOSE_AT, Suggestion, Suggestions
from chartkeeper.coding.codesets import metadata

Outcome = Literal["accepted", "rejected", "edited", "added"]
OUTCOMES: tuple[Outcome, ...] = ("accepted", "rejected", "edited", "added")
KINDS = ("diagnosis", "procedure")

PRIOR_STRENGTH = 4.0  # the engine's confidence weighs as much as four coders' decisions
OTHER_SECTION = 0.5  # a decision on the same code found in another section counts half
IMPLICIT = 0.5  # an offered suggestion the coder left alone counts as half a rejection
MAX_SCORE = 0.99  # the engine's own ceiling: no suggestion is ever certain

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


# ------------------------------------------------------------------------------ the model
@dataclass
class Tally:
    """Weighted decisions on one code (in one section): kept and dropped."""

    kept: float = 0.0
    dropped: float = 0.0

    @property
    def decisions(self) -> float:
        return self.kept + self.dropped


@dataclass(frozen=True)
class Learned:
    """A code coders chose instead of (``replacement``) or beside (``companion``) another."""

    code: str
    display: str
    count: int
    kind: Literal["replacement", "companion"]


@dataclass
class RankingModel:
    """What coders' current decisions say about each code; see the module's description."""

    by_code: dict[str, Tally] = field(default_factory=dict)
    by_section: dict[tuple[str, str], Tally] = field(default_factory=dict)
    learned: dict[str, list[Learned]] = field(default_factory=dict)

    def evidence(self, code: str, section: str | None) -> tuple[float, float]:
        """(kept, dropped) for a suggestion of ``code`` found in ``section``: the same
        section's decisions in full, the others' at ``OTHER_SECTION``."""
        overall = self.by_code.get(code, Tally())
        same = self.by_section.get((code, section or ""), Tally())
        kept = same.kept + OTHER_SECTION * (overall.kept - same.kept)
        dropped = same.dropped + OTHER_SECTION * (overall.dropped - same.dropped)
        return kept, dropped

    def score(self, code: str, section: str | None, prior: float) -> float:
        """The engine's confidence ``prior`` updated by the coders' decisions on the code."""
        prior = min(max(prior, 0.0), 1.0)
        kept, dropped = self.evidence(code, section)
        value = (PRIOR_STRENGTH * prior + kept) / (PRIOR_STRENGTH + kept + dropped)
        return round(min(MAX_SCORE, max(0.0, value)), 6)

    def learned_score(self, anchor: str, learned: Learned, prior: float) -> float:
        decisions = self.by_code.get(anchor, Tally()).decisions
        value = min(max(prior, 0.0), 1.0) * learned.count / (PRIOR_STRENGTH + decisions)
        return round(min(MAX_SCORE, value), 6)

    def explain(self, code: str, section: str | None, prior: float) -> str:
        """One sentence on how a suggestion's score came about, for the worksheet."""
        overall = self.by_code.get(code)
        if overall is None or not overall.decisions:
            return f"{code}: the engine's confidence {prior:.2f}; no coder has decided on it yet"
        kept, dropped = self.evidence(code, section)
        return (f"{code}: the engine's confidence {prior:.2f} (worth {PRIOR_STRENGTH:g} "
                f"decisions) with coders keeping it {kept:g} and dropping it {dropped:g} times "
                f"(weighted) gives {self.score(code, section, prior):.2f}")


def learn(conn: Connection) -> RankingModel:
    """The ranking model from every current decision in the feedback table."""
    model = RankingModel()
    f = coding_feedback
    tallies = conn.execute(
        select(f.c.suggested_code, f.c.section, f.c.outcome, f.c.explicit,
               func.count().label("n"))
        .where(f.c.current, f.c.suggested_code.is_not(None))
        .group_by(f.c.suggested_code, f.c.section, f.c.outcome, f.c.explicit))
    for code, section, outcome, explicit, count in tallies:
        weight = float(count) * (1.0 if explicit else IMPLICIT)
        for tally in (model.by_code.setdefault(code, Tally()),
                      model.by_section.setdefault((code, section or ""), Tally())):
            if outcome == "accepted":
                tally.kept += weight
            else:
                tally.dropped += weight
    replacements = conn.execute(
        select(f.c.suggested_code, f.c.final_code, func.max(f.c.final_display),
               func.count().label("n"))
        .where(f.c.current, f.c.outcome == "edited")
        .group_by(f.c.suggested_code, f.c.final_code))
    for anchor, code, display, count in replacements:
        model.learned.setdefault(anchor, []).append(
            Learned(code, display or code, int(count), "replacement"))
    kept, added = aliased(f), aliased(f)
    companions = conn.execute(
        select(kept.c.suggested_code, added.c.final_code, func.max(added.c.final_display),
               func.count(func.distinct(added.c.provenance_id)))
        .select_from(kept.join(added, and_(kept.c.provenance_id == added.c.provenance_id,
                                           kept.c.kind == added.c.kind)))
        .where(kept.c.current, added.c.current, kept.c.outcome == "accepted",
               added.c.outcome == "added")
        .group_by(kept.c.suggested_code, added.c.final_code))
    for anchor, code, display, count in companions:
        model.learned.setdefault(anchor, []).append(
            Learned(code, display or code, int(count), "companion"))
    for found in model.learned.values():
        found.sort(key=lambda item: (-item.count, item.kind, item.code))
    return model


def load_model(engine: Engine) -> RankingModel:
    create_feedback_schema(engine)
    with engine.connect() as conn:
        return learn(conn)


def rerank(engine: Engine, suggestions: Suggestions, *,
           model: RankingModel | None = None) -> Suggestions:
    """The suggestions re-scored and re-ranked by what coders decided before (a new object;
    the engine's own suggestions are left as they were)."""
    model = model if model is not None else load_model(engine)
    diagnoses = _rerank(model, suggestions.diagnoses)
    procedures = _rerank(model, suggestions.procedures)
    return Suggestions(diagnoses, _principal(suggestions.principal, diagnoses), procedures)


def _rerank(model: RankingModel, suggestions: list[Suggestion]) -> list[Suggestion]:
    scored: dict[str, tuple[Suggestion, int]] = {}
    for position, suggestion in enumerate(suggestions):
        section = suggestion.evidence[0].section if suggestion.evidence else None
        value = model.score(suggestion.code, section, suggestion.confidence)
        scored[suggestion.code] = (replace(suggestion, confidence=value,
                                           evidence=list(suggestion.evidence),
                                           proposed=value >= PROPOSE_AT), position)
    offset = len(suggestions)
    for position, anchor in enumerate(suggestions):
        for learned in model.learned.get(anchor.code, []):
            value = model.learned_score(anchor.code, learned, anchor.confidence)
            existing = scored.get(learned.code)
            if existing is not None and existing[0].confidence >= value:
                continue
            evidence = list(existing[0].evidence if existing else []) or list(anchor.evidence)
            scored[learned.code] = (Suggestion(learned.code, learned.display, value, evidence,
                                               value >= PROPOSE_AT),
                                    existing[1] if existing else offset + position)
    ranked = sorted(scored.values(), key=lambda item: (-item[0].confidence, item[1],
                                                       item[0].code))
    return [suggestion for suggestion, _ in ranked]


def _principal(engine_choice: str | None, diagnoses: list[Suggestion]) -> str | None:
    """The engine's principal while it stays proposed; else the best proposed suggestion the
    guidelines let be principal."""
    proposed = [s.code for s in diagnoses if s.proposed]
    if engine_choice in proposed:
        return engine_choice
    eligible = [code for code in proposed if cac._may_be_principal(code)]
    if eligible:
        return eligible[0]
    return engine_choice if engine_choice is not None else (
        diagnoses[0].code if diagnoses else None)


# ----------------------------------------------------------------------------- the reports
@dataclass(frozen=True)
class Productivity:
    """One coder's output over a period.

    ``finalizations`` counts every time the coder finalized an encounter (a re-finalization
    included), ``encounters`` the distinct encounters, ``codes`` the final codes recorded
    (accepted, edited to and added), ``days`` the days (UTC) with at least one finalization.
    """

    coder: str
    encounters: int
    finalizations: int
    codes: int
    days: int

    @property
    def codes_per_encounter(self) -> float:
        return self.codes / self.finalizations if self.finalizations else 0.0

    @property
    def encounters_per_day(self) -> float:
        return self.encounters / self.days if self.days else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"coder": self.coder, "encounters": self.encounters,
                "finalizations": self.finalizations, "codes": self.codes, "days": self.days,
                "codesPerEncounter": round(self.codes_per_encounter, 2),
                "encountersPerDay": round(self.encounters_per_day, 2)}


@dataclass(frozen=True)
class Accuracy:
    """How the suggestions fared with one coder (``coder`` None: everyone).

    ``suggestions`` = accepted + edited + rejected (every suggestion decided on, explicitly or
    by leaving an offered one alone, ``rejected_implicitly`` of the rejected); ``added`` are
    codes the engine did not suggest. Shares of suggestions: accepted unchanged, edited,
    rejected; ``added_share`` is the part of the final codes the engine missed.
    """

    coder: str | None
    accepted: int
    edited: int
    rejected: int
    rejected_implicitly: int
    added: int

    @property
    def suggestions(self) -> int:
        return self.accepted + self.edited + self.rejected

    @property
    def final_codes(self) -> int:
        return self.accepted + self.edited + self.added

    def _share(self, count: int, whole: int) -> float:
        return count / whole if whole else 0.0

    @property
    def accepted_share(self) -> float:
        return self._share(self.accepted, self.suggestions)

    @property
    def edited_share(self) -> float:
        return self._share(self.edited, self.suggestions)

    @property
    def rejected_share(self) -> float:
        return self._share(self.rejected, self.suggestions)

    @property
    def added_share(self) -> float:
        return self._share(self.added, self.final_codes)

    def to_json(self) -> dict[str, Any]:
        return {"coder": self.coder, "suggestions": self.suggestions,
                "accepted": self.accepted, "edited": self.edited, "rejected": self.rejected,
                "rejectedImplicitly": self.rejected_implicitly, "added": self.added,
                "acceptedShare": round(self.accepted_share, 4),
                "editedShare": round(self.edited_share, 4),
                "rejectedShare": round(self.rejected_share, 4),
                "addedShare": round(self.added_share, 4)}


@dataclass(frozen=True)
class AccuracyReport:
    by_coder: list[Accuracy]
    overall: Accuracy

    def to_json(self) -> dict[str, Any]:
        return {"byCoder": [a.to_json() for a in self.by_coder],
                "overall": self.overall.to_json()}


def _period(since: date | None, until: date | None) -> list[Any]:
    """Conditions for decisions made from ``since`` through ``until`` (whole UTC days)."""
    if since is not None and until is not None and until < since:
        raise FeedbackError(f"the period ends ({until}) before it starts ({since})")
    conditions: list[Any] = []
    if since is not None:
        conditions.append(coding_feedback.c.decided_at >= datetime.combine(since, time(),
                                                                           UTC))
    if until is not None:
        conditions.append(coding_feedback.c.decided_at < datetime.combine(
            date.fromordinal(until.toordinal() + 1), time(), UTC))
    return conditions


def productivity(engine: Engine, *, since: date | None = None,
                 until: date | None = None) -> list[Productivity]:
    """Per coder, most encounters first: encounters coded, codes per encounter, per day."""
    conditions = _period(since, until)
    create_feedback_schema(engine)
    f = coding_feedback
    work: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "encounters": set(), "finalizations": set(), "codes": 0, "days": set()})
    with engine.connect() as conn:
        for coder, encounter, provenance, outcome, decided in conn.execute(
                select(f.c.coder, f.c.encounter_id, f.c.provenance_id, f.c.outcome,
                       f.c.decided_at).where(*conditions)):
            item = work[coder]
            item["encounters"].add(encounter)
            item["finalizations"].add(provenance)
            item["days"].add(_utc(decided).date())
            if outcome != "rejected":
                item["codes"] += 1
    report = [Productivity(coder, len(item["encounters"]), len(item["finalizations"]),
                           item["codes"], len(item["days"])) for coder, item in work.items()]
    return sorted(report, key=lambda p: (-p.encounters, p.coder))


def accuracy(engine: Engine, *, since: date | None = None,
             until: date | None = None) -> AccuracyReport:
    """Per coder and overall: the share of suggestions accepted unchanged, edited, rejected,
    and of final codes added (current decisions only: a re-finalization replaces the last)."""
    conditions = _period(since, until)
    create_feedback_schema(engine)
    f = coding_feedback
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with engine.connect() as conn:
        for coder, outcome, explicit, count in conn.execute(
                select(f.c.coder, f.c.outcome, f.c.explicit, func.count())
                .where(f.c.current, *conditions)
                .group_by(f.c.coder, f.c.outcome, f.c.explicit)):
            counts[coder][outcome] += int(count)
            if outcome == "rejected" and not explicit:
                counts[coder]["implicit"] += int(count)
    by_coder = [_accuracy(coder, counts[coder]) for coder in sorted(counts)]
    total: dict[str, int] = defaultdict(int)
    for item in counts.values():
        for key, value in item.items():
            total[key] += value
    return AccuracyReport(by_coder, _accuracy(None, total))


def _accuracy(coder: str | None, counts: dict[str, int]) -> Accuracy:
    return Accuracy(coder, counts.get("accepted", 0), counts.get("edited", 0),
                    counts.get("rejected", 0), counts.get("implicit", 0),
                    counts.get("added", 0))

