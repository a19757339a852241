"""The ranking model learned from coders' current decisions, and the re-ranking it drives.

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

from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from chartkeeper.coding import cac
from chartkeeper.coding.cac import PROPOSE_AT, Suggestion, Suggestions
from chartkeeper.coding.feedback_store import coding_feedback, create_feedback_schema

PRIOR_STRENGTH = 4.0  # the engine's confidence weighs as much as four coders' decisions
OTHER_SECTION = 0.5  # a decision on the same code found in another section counts half
IMPLICIT = 0.5  # an offered suggestion the coder left alone counts as half a rejection
MAX_SCORE = 0.99  # the engine's own ceiling: no suggestion is ever certain


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
