"""Record completion (quantitative analysis): rules on hand-made records, and the whole
synthetic hospital measured against its answer key on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from chartkeeper.chart.completion.analysis import Deficiency, age_band, analyze
from chartkeeper.chart.completion.rules import CompletionRules, Delinquency, DischargeSummaryRule
from chartkeeper.chart.completion.summary import completion_summary, months_before, physician_names
from chartkeeper.chart.completion.tasks import sync_tasks
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth import DEFAULT_AS_OF, generate
from tests.chart.completion.charts import (
    DISCHARGE,
    H_AND_P,
    OPERATIVE,
    PATHOLOGY,
    PROGRESS,
    Chart,
    at,
    coded_procedures,
    score,
    score_table,
    sign,
)
from tests.conftest import PostgresServer

AS_OF = date(2025, 6, 30)
RULES = CompletionRules()


def found(store: Store, rules: CompletionRules = RULES, as_of: date = AS_OF
          ) -> list[tuple[str, str]]:
    return [(d.rule, d.kind) for d in analyze(store, rules, as_of)]


# ---------------------------------------------------------------------- hand-made records
def test_a_complete_stay_has_no_deficiencies(store: Store, chart: Chart) -> None:
    doctor = chart.practitioner("House")
    chart.complete_stay(at("2025-06-01 08:00"), at("2025-06-05 14:00"), doctor)
    assert analyze(store, RULES, AS_OF) == []


def test_a_patients_own_statement_is_not_a_document_to_sign(store: Store, chart: Chart
                                                             ) -> None:
    """A statement of disagreement (164.526) is the patient's, linked to the record: no
    physician signs it, so it is no authentication deficiency."""
    doctor = chart.practitioner("House")
    stay = chart.complete_stay(at("2025-06-01 08:00"), at("2025-06-05 14:00"), doctor)
    statement = chart.document(stay, PROGRESS, at("2025-06-20 10:00"), doctor, signed=False)
    with store.write() as txn:
        resource = txn.read("DocumentReference", statement.split("/")[1])
        txn.update("DocumentReference", resource["id"],
                   dict(resource, author=[{"display": "the patient"}]))
    assert analyze(store, RULES, AS_OF) == []


def test_missing_discharge_summary_is_owed_by_the_attending_not_the_first_listed(
        store: Store, chart: Chart) -> None:
    attending, consultant = chart.practitioner("Attending"), chart.practitioner("Consultant")
    stay = chart.stay(at("2025-06-01 08:00"), at("2025-06-03 12:00"), attending,
                      consultant=consultant)
    chart.document(stay, H_AND_P, at("2025-06-01 11:00"), attending)
    (deficiency,) = analyze(store, RULES, AS_OF)
    assert (deficiency.rule, deficiency.kind, deficiency.encounter, deficiency.patient,
            deficiency.physician, deficiency.document) == (
        "discharge-summary", "missing", stay, chart.patient, attending, None)
    assert (deficiency.discharged, deficiency.days_since_discharge, deficiency.delinquent,
            deficiency.task_code) == (date(2025, 6, 3), 27, False,
                                      "dictate-discharge-summary")


def test_history_and_physical_must_be_written_within_24_hours_of_admission(
        store: Store, chart: Chart) -> None:
    doctor = chart.practitioner("House")
    on_time = chart.stay(at("2025-06-01 08:00"), at("2025-06-04 12:00"), doctor)
    chart.document(on_time, H_AND_P, at("2025-06-02 07:59"), doctor)
    before = chart.stay(at("2025-06-10 08:00"), at("2025-06-12 12:00"), doctor)
    chart.document(before, H_AND_P, at("2025-05-20 09:00"), doctor)  # pre-admission H&P
    late = chart.stay(at("2025-06-20 08:00"), at("2025-06-25 12:00"), doctor)
    late_hp = chart.document(late, H_AND_P, at("2025-06-21 14:00"), doctor)
    missing = chart.stay(at("2025-06-22 08:00"), at("2025-06-24 12:00"), doctor)
    for stay in (on_time, before, late, missing):
        chart.document(stay, DISCHARGE, at("2025-06-25 12:00"), doctor)
    deficiencies = analyze(store, RULES, AS_OF)
    assert [(d.encounter, d.kind, d.document) for d in deficiencies] == [
        (missing, "missing", None), (late, "late", late_hp)]
    late_one = next(d for d in deficiencies if d.kind == "late")
    assert not late_one.actionable and late_one.task_code is None
    assert "30 hours after admission" in late_one.detail


def test_observation_stays_need_an_h_and_p_but_no_discharge_summary(
        store: Store, chart: Chart) -> None:
    doctor = chart.practitioner("House")
    chart.stay(at("2025-06-01 08:00"), at("2025-06-02 12:00"), doctor, klass="OBSENC")
    assert found(store) == [("history-and-physical", "missing")]


def test_each_operation_needs_an_operative_report_from_its_surgeon(
        store: Store, chart: Chart) -> None:
    doctor, surgeon = chart.practitioner("Attending"), chart.practitioner("Surgeon")
    stay = chart.complete_stay(at("2025-06-01 08:00"), at("2025-06-08 12:00"), doctor)
    # Day 2: a lobectomy and its node sampling, one operation with one report.
    chart.procedure(stay, "0BTC4ZZ", at("2025-06-02 09:00"), surgeon)
    chart.procedure(stay, "07B74ZX", at("2025-06-02 10:00"), surgeon)
    chart.document(stay, OPERATIVE, at("2025-06-02 13:00"), surgeon)
    chart.document(stay, PATHOLOGY, at("2025-06-03 13:00"), surgeon)
    # Day 4: a percutaneous intramedullary nail (an operation), no report.
    nail = chart.procedure(stay, "0QS636Z", at("2025-06-04 09:00"), surgeon)
    # Neither is an operation: a vaginal delivery, robotic assistance.
    chart.procedure(stay, "10E0XZZ", at("2025-06-05 09:00"), doctor)
    chart.procedure(stay, "8E0W4CZ", at("2025-06-05 09:00"), doctor)
    (deficiency,) = analyze(store, RULES, AS_OF)
    assert (deficiency.rule, deficiency.procedure, deficiency.physician) == (
        "operative-report", nail, surgeon)
    assert deficiency.task_code == "dictate-operative-report"


def test_a_report_written_before_the_operation_does_not_answer_for_it(
        store: Store, chart: Chart) -> None:
    doctor = chart.practitioner("House")
    stay = chart.complete_stay(at("2025-06-01 08:00"), at("2025-06-08 12:00"), doctor)
    chart.document(stay, OPERATIVE, at("2025-06-01 13:00"), doctor)
    chart.procedure(stay, "10D00Z1", at("2025-06-03 09:00"), doctor)  # cesarean
    assert found(store) == [("operative-report", "missing")]


def test_excised_tissue_needs_a_pathology_report(store: Store, chart: Chart) -> None:
    doctor, surgeon = chart.practitioner("Attending"), chart.practitioner("Surgeon")
    stay = chart.complete_stay(at("2025-06-01 08:00"), at("2025-06-04 12:00"), doctor)
    resection = chart.procedure(stay, "0HTU0ZZ", at("2025-06-01 10:00"), surgeon)
    chart.document(stay, OPERATIVE, at("2025-06-01 13:00"), surgeon)
    replaced = chart.complete_stay(at("2025-06-10 08:00"), at("2025-06-14 12:00"), doctor)
    chart.procedure(replaced, "0SR9029", at("2025-06-11 10:00"), surgeon)  # no tissue rule
    chart.document(replaced, OPERATIVE, at("2025-06-11 13:00"), surgeon)
    (deficiency,) = analyze(store, RULES, AS_OF)
    assert (deficiency.rule, deficiency.procedure, deficiency.physician,
            deficiency.task_code) == ("pathology-report", resection, surgeon,
                                      "pathology-report")
    chart.document(stay, PATHOLOGY, at("2025-06-02 15:00"), surgeon)
    assert analyze(store, RULES, AS_OF) == []


def test_a_document_is_signed_only_when_final_and_authenticated(
        store: Store, chart: Chart) -> None:
    doctor, resident = chart.practitioner("Attending"), chart.practitioner("Resident")
    visit = chart.stay(at("2025-06-01 08:00"), at("2025-06-01 09:00"), doctor, klass="AMB")
    unsigned = chart.document(visit, PROGRESS, at("2025-06-01 10:00"), resident, signed=False)
    no_authenticator = chart.document(visit, PROGRESS, at("2025-06-01 10:00"), resident,
                                      signed=False, doc_status="final")
    chart.document(visit, PROGRESS, at("2025-06-01 10:00"), resident, signed=False,
                   status="entered-in-error")
    chart.document(visit, PROGRESS, at("2025-06-01 11:00"), doctor, doc_status="amended")
    deficiencies = analyze(store, RULES, AS_OF)
    assert sorted((d.document, d.physician, d.task_code) for d in deficiencies) == sorted([
        (unsigned, resident, "sign"), (no_authenticator, resident, "sign")])


def test_only_encounters_discharged_by_the_as_of_date_are_analysed(
        store: Store, chart: Chart) -> None:
    doctor = chart.practitioner("House")
    chart.stay(at("2025-06-28 08:00"), at("2025-07-02 12:00"), doctor)  # discharged later
    chart.stay(at("2025-06-28 08:00"), None, doctor, status="in-progress")
    chart.stay(at("2025-06-25 08:00"), at("2025-06-27 12:00"), doctor, status="cancelled")
    assert found(store) == []
    assert {d.discharged for d in analyze(store, RULES, date(2025, 7, 2))} == {
        date(2025, 7, 2)}


def test_switched_off_rules_and_chosen_encounters_limit_the_analysis(
        store: Store, chart: Chart) -> None:
    doctor = chart.practitioner("House")
    first = chart.stay(at("2025-06-01 08:00"), at("2025-06-02 12:00"), doctor)
    chart.stay(at("2025-06-03 08:00"), at("2025-06-04 12:00"), doctor)
    assert len(found(store)) == 4
    off = replace(RULES, discharge_summary=DischargeSummaryRule(enabled=False))
    assert found(store, off) == [("history-and-physical", "missing")] * 2
    assert {d.encounter for d in analyze(store, RULES, AS_OF, encounters=[first])} == {first}


# ---------------------------------------------------------------------- delinquency, figures
@pytest.mark.parametrize(("days", "band"), [(0, "0-7"), (7, "0-7"), (8, "8-14"),
                                            (14, "8-14"), (15, "15-30"), (30, "15-30"),
                                            (31, ">30"), (400, ">30")])
def test_age_bands_are_days_since_discharge(days: int, band: str) -> None:
    assert age_band(days) == band


def test_delinquency_bands_and_the_joint_commission_rate_on_fixed_dates(
        store: Store, chart: Chart) -> None:
    house, grey = chart.practitioner("House"), chart.practitioner("Grey")
    stays = {}
    for days in (0, 7, 8, 14, 15, 30, 31, 45):
        discharged = AS_OF - timedelta(days=days)
        doctor = house if days % 2 else grey
        stays[days] = chart.stay(at(f"{discharged - timedelta(days=2)} 08:00"),
                                 at(f"{discharged} 12:00"), doctor)
        chart.document(stays[days], H_AND_P, at(f"{discharged - timedelta(days=2)} 10:00"),
                       doctor)  # each stay lacks only its discharge summary
    # Complete stays count as discharges; one more than a year ago does not.
    for month in range(1, 12):
        chart.complete_stay(at(f"2024-{month:02d}-10 08:00"), at(f"2024-{month:02d}-12 09:00"),
                            house)
    chart.stay(at("2025-01-10 08:00"), at("2025-01-10 08:30"), house, klass="AMB")
    by_days = {d.days_since_discharge: d for d in analyze(store, RULES, AS_OF)}
    assert {days: d.delinquent for days, d in by_days.items()} == {
        0: False, 7: False, 8: False, 14: False, 15: False, 30: False, 31: True, 45: True}

    summary = completion_summary(store, AS_OF, RULES)
    assert summary.by_age_band == {"0-7": 2, "8-14": 2, "15-30": 2, ">30": 2}
    assert summary.by_physician == {house: 4, grey: 4}
    assert summary.by_physician_and_band == {
        house: {"0-7": 1, "8-14": 0, "15-30": 1, ">30": 2},
        grey: {"0-7": 1, "8-14": 2, "15-30": 1, ">30": 0}}
    assert (summary.open_deficiencies, summary.incomplete_records,
            summary.delinquent_records) == (8, 8, 2)
    # July 2024 through June 2025: the eight stays and five of the eleven complete ones
    # (July to November 2024); the clinic visit is not a discharge the rate counts.
    assert summary.period_start == date(2024, 7, 1)
    assert summary.discharges == 8 + 5
    assert summary.average_monthly_discharges == pytest.approx(13 / 12)
    assert summary.delinquency_rate == pytest.approx(2 / (13 / 12))
    assert summary.meets_standard is False
    assert physician_names(store, [house]) == {house: "Dr. Pat House"}
    shorter = replace(RULES, delinquency=Delinquency(threshold_days=14))
    assert completion_summary(store, AS_OF, shorter).delinquent_records == 4


def test_months_before_keeps_the_day_or_the_months_last() -> None:
    assert months_before(date(2025, 6, 30), 12) == date(2024, 6, 30)
    assert months_before(date(2025, 3, 31), 1) == date(2025, 2, 28)
    assert months_before(date(2025, 1, 15), 13) == date(2023, 12, 15)


# ---------------------------------------------------------------------- the synthetic hospital
PATIENTS, SEED = 200, 27  # 20 stays with operations, 3 discharge summaries never written


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("him") / "hospital"
    generate(out, PATIENTS, SEED)
    return out


def load(url: str, hospital: Path) -> Store:
    store = Store(url)
    store.create_schema()
    summary = Importer(store, workers=0).import_files(find_files([hospital / "bundles"]))
    assert (summary.rejected, summary.problems) == (0, [])
    return store


@pytest.fixture(scope="module")
def hospital_file(hospital: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hospital imported into a SQLite file, which tests copy before writing to it."""
    path = tmp_path_factory.mktemp("him-store") / "hospital.sqlite"
    load(f"sqlite:///{path}", hospital).dispose()
    return path


def check_against_answer_key(store: Store, hospital: Path) -> list[Deficiency]:
    deficiencies = analyze(store, RULES, DEFAULT_AS_OF)
    scores = score(store, deficiencies, hospital / "answer-key.ndjson", RULES, DEFAULT_AS_OF)
    print(f"\n{store.dialect}, {PATIENTS} patients, seed {SEED}, as of {DEFAULT_AS_OF}\n"
          + score_table(scores))
    assert {rule: (s.precision, s.recall) for rule, s in scores.items()} == {
        rule: (1.0, 1.0) for rule in scores}
    # The generator leaves notes unsigned and discharge summaries unwritten, and never
    # omits an H&P, operative or pathology report: those rules must find nothing.
    assert scores["authentication"].expected > 20
    assert scores["discharge-summary"].expected >= 1
    assert all(scores[rule].found == scores[rule].expected == 0 for rule in (
        "history-and-physical", "operative-report", "pathology-report"))
    key = hospital / "answer-key.ndjson"
    operative, pathology = RULES.operative_report, RULES.pathology_report
    assert coded_procedures(key, operative.operating_room_pcs, operative.encounter_classes,
                            DEFAULT_AS_OF) >= 3
    assert coded_procedures(key, pathology.tissue_pcs, pathology.encounter_classes,
                            DEFAULT_AS_OF) >= 1
    return deficiencies


def test_analysis_matches_the_answer_key_on_sqlite(hospital: Path, hospital_file: Path) -> None:
    store = Store(f"sqlite:///{hospital_file}")
    try:
        deficiencies = check_against_answer_key(store, hospital)
    finally:
        store.dispose()
    # Old unsigned notes make delinquent records; recent ones are not yet delinquent.
    assert {d.delinquent for d in deficiencies} == {True, False}


def test_analysis_matches_the_answer_key_on_postgresql(
        hospital: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.fresh_database("him_answer_key")
    store = load(url, hospital)
    try:
        check_against_answer_key(store, hospital)
    finally:
        store.dispose()
        postgres_server.drop_database("him_answer_key")


def test_worklist_of_the_synthetic_hospital_is_stable_and_follows_signatures(
        hospital_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "hospital.sqlite"
    shutil.copyfile(hospital_file, copy)
    store = Store(f"sqlite:///{copy}")
    try:
        deficiencies = analyze(store, RULES, DEFAULT_AS_OF)
        first = sync_tasks(store, deficiencies, DEFAULT_AS_OF, RULES)
        assert first.created == len(deficiencies) and first.completed == 0
        rows = store.row_counts()
        again = sync_tasks(store, analyze(store, RULES, DEFAULT_AS_OF), DEFAULT_AS_OF, RULES)
        assert (again.written, again.unchanged) == (0, len(deficiencies))
        assert store.row_counts() == rows
        unsigned = next(d for d in deficiencies if d.task_code == "sign")
        assert unsigned.document is not None and unsigned.physician is not None
        sign(store, unsigned.document, unsigned.physician)
        after = sync_tasks(store, analyze(store, RULES, DEFAULT_AS_OF), DEFAULT_AS_OF, RULES)
        assert (after.completed, after.created, after.unchanged) == (
            1, 0, len(deficiencies) - 1)
    finally:
        store.dispose()

