"""Reports on coders' decisions: productivity per coder, and how the suggestions fared."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Engine, func, select

from chartkeeper.coding.feedback_store import (
    FeedbackError,
    _utc,
    coding_feedback,
    create_feedback_schema,
)


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
