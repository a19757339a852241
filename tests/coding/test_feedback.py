"""Coders' decisions as training data: the feedback table, the ranking model that learns from
it (rejected codes fall, accepted ones rise, learned replacements and companions appear), and
the productivity and accuracy reports, on hand-built decisions in a real SQLite file."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from chartkeeper.coding.cac import PROPOSE_AT, Evidence, Suggestion, Suggestions
from chartkeeper.coding.feedback import (
    MAX_SCORE,
    FeedbackError,
    FeedbackRow,
    Outcome,
    accuracy,
    coding_feedback,
    create_feedback_schema,
    decisions_for,
    learn,
    load_model,
    productivity,
    record,
    rerank,
)
from chartkeeper.store.engine import make_engine

DAY1 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
DAY2 = datetime(2026, 5, 5, 14, 0, tzinfo=UTC)
DAY3 = datetime(2026, 5, 7, 23, 59, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
    create_feedback_schema(made)
    yield made
    made.dispose()


@pytest.fixture
def any_engine(database_url: str) -> Iterator[Engine]:
    """A fresh database, once SQLite and once PostgreSQL: the table's SQL runs on both."""
    made = make_engine(database_url)
    create_feedback_schema(made)
    yield made
    made.dispose()


def suggestion(code: str, confidence: float, section: str = "diagnoses") -> Suggestion:
    return Suggestion(code, f"title of {code}", confidence,
                      [Evidence(10, 20, "evidence", section)], confidence >= PROPOSE_AT)


def row(encounter: str, outcome: Outcome, *, suggested: str | None = None,
        final: str | None = None, coder: str = "alice", when: datetime = DAY1,
        provenance: str | None = None, section: str | None = "diagnoses",
        explicit: bool = True, display: str | None = None) -> FeedbackRow:
    return FeedbackRow(encounter, "outpatient", "diagnosis", outcome, coder, "coder", when,
                       provenance or f"prov-{encounter}-{coder}-{when:%d}",
                       suggested_code=suggested, confidence=0.5 if suggested else None,
                       score=0.5 if suggested else None, rank=1 if suggested else None,
                       proposed=True if suggested else None,
                       section=section if suggested else None, final_code=final,
                       final_display=display, explicit=explicit)


def save(engine: Engine, rows: Sequence[FeedbackRow]) -> None:
    with engine.begin() as conn:
        record(conn, rows)


def rows_in(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(coding_feedback)).scalar_one())


def scores(suggestions: Suggestions) -> dict[str, float]:
    return {s.code: s.confidence for s in suggestions.diagnoses}


# ------------------------------------------------------------------------------ the table
def test_a_refinalization_makes_the_earlier_decisions_history(engine: Engine) -> None:
    save(engine, [row("E1", "accepted", suggested="I10", final="I10"),
                  row("E1", "rejected", suggested="R51.9")])
    save(engine, [row("E1", "edited", suggested="I10", final="I12.9", coder="bob", when=DAY2)])
    with engine.connect() as conn:
        current = decisions_for(conn, "E1")
        everything = decisions_for(conn, "E1", current_only=False)
    assert [(r.outcome, r.final_code, r.coder) for r in current] == [("edited", "I12.9", "bob")]
    assert [r.current for r in everything] == [False, False, True]
    assert everything[0].decided_at == DAY1 and everything[0].decided_at.tzinfo is not None


@pytest.mark.parametrize(("bad", "message"), [
    (row("E1", "approved", suggested="I10", final="I10"),  # type: ignore[arg-type]
     "outcome 'approved' is not one of accepted, rejected, edited, added"),
    (row("E1", "accepted", final="I10"), "an accepted decision needs the suggested code"),
    (row("E1", "added", suggested="I10", final="I10"), "an added code 'I10' was not suggested"),
    (row("E1", "edited", suggested="I10"), "an edited decision needs the final code"),
    (row("E1", "rejected", suggested="I10", final="I10"), "a rejected suggestion has no final"),
    (FeedbackRow("E1", "outpatient", "diagnosis", "rejected", "alice", "coder",
                 datetime(2026, 5, 4), "p", suggested_code="I10"), "has no time zone"),
    (FeedbackRow("E1", "outpatient", "diagnosis", "rejected", "alice", "coder", DAY1, "p",
                 suggested_code="I10", confidence=1.5), "confidence 1.5 is outside 0..1"),
    (FeedbackRow("E1", "outpatient", "symptom", "rejected", "alice", "coder", DAY1, "p",
                 suggested_code="I10"), "kind 'symptom' is not one of diagnosis, procedure"),
])
def test_a_row_that_makes_no_sense_is_refused_and_nothing_is_stored(
        engine: Engine, bad: FeedbackRow, message: str) -> None:
    good = row("E2", "accepted", suggested="I10", final="I10")
    with pytest.raises(FeedbackError, match=message):
        save(engine, [good, bad])
    assert rows_in(engine) == 0


# ------------------------------------------------------------------------------ the model
def test_rejected_codes_fall_below_the_threshold_and_accepted_ones_rise(
        any_engine: Engine) -> None:
    """Three coders' rejections of A, proposed at 0.8, take it below the proposal threshold;
    three acceptances of B, offered at 0.4, make it proposed and first."""
    engine = any_engine
    engine_says = Suggestions([suggestion("A00.0", 0.8), suggestion("B01.9", 0.4)], "A00.0", [])
    seen = [scores(rerank(engine, engine_says))]
    for number in range(1, 4):
        save(engine, [row(f"E{number}", "rejected", suggested="A00.0"),
                      row(f"E{number}", "accepted", suggested="B01.9", final="B01.9")])
        seen.append(scores(rerank(engine, engine_says)))
    # (4 x 0.8 + 0) / (4 + n) and (4 x 0.4 + n) / (4 + n): the Beta prior at work.
    assert [s["A00.0"] for s in seen] == pytest.approx([0.8, 0.64, 3.2 / 6, 3.2 / 7])
    assert [s["B01.9"] for s in seen] == pytest.approx([0.4, 2.6 / 5, 3.6 / 6, 4.6 / 7])
    final = rerank(engine, engine_says)
    assert [(s.code, s.proposed) for s in final.diagnoses] == [("B01.9", True),
                                                               ("A00.0", False)]
    assert final.principal == "B01.9"  # the engine's choice is no longer proposed
    assert engine_says.diagnoses[0].confidence == 0.8  # the engine's own list is untouched


def test_decisions_on_the_code_from_another_section_count_half(engine: Engine) -> None:
    engine_says = Suggestions([suggestion("A00.0", 0.8, "diagnoses")], "A00.0", [])
    save(engine, [row(f"E{n}", "rejected", suggested="A00.0",
                      section="history_of_present_illness") for n in range(4)])
    assert scores(rerank(engine, engine_says))["A00.0"] == pytest.approx(3.2 / (4 + 2))
    other = Suggestions([suggestion("A00.0", 0.8, "history_of_present_illness")], None, [])
    assert scores(rerank(engine, other))["A00.0"] == pytest.approx(3.2 / (4 + 4))


def test_offered_suggestions_left_alone_count_as_half_a_rejection(engine: Engine) -> None:
    save(engine, [row(f"E{n}", "rejected", suggested="R52", explicit=False)
                  for n in range(2)])
    engine_says = Suggestions([suggestion("R52", 0.3)], None, [])
    assert scores(rerank(engine, engine_says))["R52"] == pytest.approx(1.2 / 5)


def test_the_model_is_deterministic_and_bounded(engine: Engine) -> None:
    save(engine, [row(f"E{n}", "accepted", suggested="A00.0", final="A00.0")
                  for n in range(300)] +
         [row(f"F{n}", "rejected", suggested="B01.9") for n in range(300)])
    engine_says = Suggestions([suggestion("B01.9", 0.99), suggestion("A00.0", 0.2)], "B01.9",
                              [suggestion("0BH17EZ", 0.7)])
    kept = copy.deepcopy(engine_says)
    first, second = rerank(engine, engine_says), rerank(engine, engine_says)
    assert first == second
    assert engine_says == kept
    assert 0 < scores(first)["B01.9"] < 0.02
    assert scores(first)["A00.0"] == pytest.approx((4 * 0.2 + 300) / 304)
    assert first.procedures[0].confidence == 0.7  # no decisions on it: the engine's own
    with engine.connect() as conn:
        model = learn(conn)
    assert model.score("A00.0", "diagnoses", 1.0) == MAX_SCORE  # never certain
    assert model.score("B01.9", "diagnoses", 0.0) == 0.0


def test_a_code_coders_keep_changing_a_suggestion_to_is_offered_in_its_place(
        engine: Engine) -> None:
    engine_says = Suggestions([suggestion("I10", 0.9), suggestion("N18.32", 0.95)], "I10", [])
    for number in range(1, 6):
        save(engine, [row(f"E{number}", "edited", suggested="I10", final="I12.9",
                          display="Hypertensive chronic kidney disease with stage 1 through "
                                  "stage 4 chronic kidney disease, or unspecified chronic "
                                  "kidney disease")])
        shown = {s.code: s for s in rerank(engine, engine_says).diagnoses}
        # 0.9 x edits / (4 + decisions on I10)
        assert shown["I12.9"].confidence == pytest.approx(0.9 * number / (4 + number))
    assert shown["I12.9"].proposed and not shown["I10"].proposed
    assert shown["I12.9"].display.startswith("Hypertensive chronic kidney disease")
    assert shown["I12.9"].evidence == shown["I10"].evidence
    with engine.connect() as conn:
        model = learn(conn)
    assert model.learned["I10"][0].kind == "replacement"
    assert "dropping it 5 times" in model.explain("I10", "diagnoses", 0.9)
    assert "no coder has decided on it yet" in model.explain("N18.32", "diagnoses", 0.95)


def test_a_code_coders_keep_adding_beside_an_accepted_suggestion_is_offered(
        any_engine: Engine) -> None:
    engine = any_engine
    for number in range(1, 7):
        save(engine, [row(f"E{number}", "accepted", suggested="E11.9", final="E11.9"),
                      row(f"E{number}", "added", final="Z79.84", display="metformin")])
    engine_says = Suggestions([suggestion("E11.9", 0.95)], "E11.9", [])
    shown = {s.code: s for s in rerank(engine, engine_says).diagnoses}
    assert shown["Z79.84"].confidence == pytest.approx(0.95 * 6 / (4 + 6))
    assert shown["Z79.84"].proposed
    # Without the suggestion it goes with, nothing is offered.
    alone = rerank(engine, Suggestions([suggestion("I10", 0.6)], "I10", []))
    assert [s.code for s in alone.diagnoses] == ["I10"]


def test_load_model_creates_the_table_on_a_new_database(tmp_path: Path) -> None:
    fresh = make_engine(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        model = load_model(fresh)
        assert model.by_code == {} and model.learned == {}
    finally:
        fresh.dispose()


# ---------------------------------------------------------------------------- the reports
def scenario(engine: Engine) -> None:
    """Alice codes E1 and E2 on day 1 and E3 on day 2; Bob codes E4 on day 2 and re-codes E1
    on day 3."""
    save(engine, [row("E1", "accepted", suggested="I10", final="I10", when=DAY1),
                  row("E1", "edited", suggested="E11.9", final="E11.65", when=DAY1),
                  row("E1", "rejected", suggested="R52", when=DAY1),
                  row("E1", "added", final="Z79.84", when=DAY1)])
    save(engine, [row("E2", "accepted", suggested="J18.9", final="J18.9", when=DAY1),
                  row("E2", "rejected", suggested="R50.9", when=DAY1, explicit=False),
                  row("E2", "added", final="R09.02", when=DAY1)])
    save(engine, [row("E3", "accepted", suggested="F33.1", final="F33.1", when=DAY2)])
    save(engine, [row("E4", "accepted", suggested="N18.32", final="N18.32", coder="bob",
                      when=DAY2),
                  row("E4", "added", final="I12.9", coder="bob", when=DAY2)])
    save(engine, [row("E1", "accepted", suggested="I10", final="I10", coder="bob", when=DAY3),
                  row("E1", "rejected", suggested="E11.9", coder="bob", when=DAY3),
                  row("E1", "accepted", suggested="R52", final="R52", coder="bob", when=DAY3)])


def test_productivity_counts_each_coders_encounters_codes_and_days(any_engine: Engine) -> None:
    engine = any_engine
    scenario(engine)
    report = {p.coder: p for p in productivity(engine)}
    alice, bob = report["alice"], report["bob"]
    assert (alice.encounters, alice.finalizations, alice.codes, alice.days) == (3, 3, 6, 2)
    assert (alice.codes_per_encounter, alice.encounters_per_day) == (2.0, 1.5)
    assert (bob.encounters, bob.finalizations, bob.codes, bob.days) == (2, 2, 4, 2)
    assert (bob.codes_per_encounter, bob.encounters_per_day) == (2.0, 1.0)
    assert [p.coder for p in productivity(engine)] == ["alice", "bob"]
    day_two = {p.coder: p for p in productivity(engine, since=date(2026, 5, 5),
                                                until=date(2026, 5, 5))}
    assert (day_two["alice"].encounters, day_two["alice"].codes) == (1, 1)
    assert (day_two["bob"].encounters, day_two["bob"].codes) == (1, 2)
    assert productivity(engine, since=date(2026, 6, 1)) == []
    assert alice.to_json()["encountersPerDay"] == 1.5


def test_accuracy_counts_current_decisions_per_coder_and_overall(any_engine: Engine) -> None:
    engine = any_engine
    scenario(engine)
    report = accuracy(engine)
    alice, bob = report.by_coder
    # Alice's first coding of E1 was replaced by Bob's: only E2 and E3 are hers now.
    assert (alice.coder, alice.accepted, alice.edited, alice.rejected,
            alice.rejected_implicitly, alice.added) == ("alice", 2, 0, 1, 1, 1)
    assert alice.accepted_share == pytest.approx(2 / 3)
    assert alice.added_share == pytest.approx(1 / 3)
    assert (bob.accepted, bob.edited, bob.rejected, bob.added) == (3, 0, 1, 1)
    assert bob.rejected_share == pytest.approx(1 / 4)
    overall = report.overall
    assert overall.coder is None
    assert (overall.suggestions, overall.accepted, overall.rejected, overall.added) == \
        (7, 5, 2, 2)
    assert overall.accepted_share == pytest.approx(5 / 7)
    assert overall.edited_share == 0.0
    assert report.to_json()["overall"]["acceptedShare"] == round(5 / 7, 4)


def test_a_report_period_that_ends_before_it_starts_is_refused(engine: Engine) -> None:
    with pytest.raises(FeedbackError, match=r"ends \(2026-05-01\) before it starts"):
        accuracy(engine, since=date(2026, 5, 2), until=date(2026, 5, 1))
    with pytest.raises(FeedbackError, match="before it starts"):
        productivity(engine, since=date(2026, 5, 2), until=date(2026, 5, 1))
