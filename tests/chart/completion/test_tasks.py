"""The deficiency worklist as FHIR Tasks: created once, stable on re-runs, closed when the
record is completed."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from chartkeeper.chart.completion.analysis import Deficiency, analyze
from chartkeeper.chart.completion.rules import CompletionRules, DischargeSummaryRule
from chartkeeper.chart.completion.tasks import (
    DEFICIENCY_SYSTEM,
    TASK_IDENTIFIER_SYSTEM,
    assign_task,
    deficiency_task,
    open_deficiency_tasks,
    sync_tasks,
    task_id,
    write_missing_document,
)
from chartkeeper.fhir.validation import validate_resource
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest, NotFound
from tests.chart.completion.charts import DISCHARGE, H_AND_P, PROGRESS, Chart, at

AS_OF = date(2025, 6, 30)
RULES = CompletionRules()


def sync(store: Store, rules: CompletionRules = RULES, as_of: date = AS_OF,
         encounters: list[str] | None = None) -> dict[str, int]:
    result = sync_tasks(store, analyze(store, rules, as_of, encounters), as_of, rules)
    return {k: v for k, v in vars(result).items() if v}


def tasks_by_code(store: Store) -> dict[str, dict[str, object]]:
    with store.read() as txn:
        page = txn.search_params("Task", [("_count", "100")])
    return {t["code"]["coding"][0]["code"]: t for t in page.matches}


def test_each_open_deficiency_becomes_one_valid_r4_task(store: Store) -> None:
    chart = Chart(store)
    doctor, resident = chart.practitioner("House"), chart.practitioner("Resident")
    stay = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    note = chart.document(stay, PROGRESS, at("2025-05-02 09:00"), resident, signed=False)
    chart.document(stay, H_AND_P, at("2025-05-01 10:00"), doctor)
    assert sync(store) == {"created": 2}
    tasks = tasks_by_code(store)
    assert set(tasks) == {"sign", "dictate-discharge-summary"}
    signing, summary = tasks["sign"], tasks["dictate-discharge-summary"]
    for task in (signing, summary):
        assert [i for i in validate_resource(task) if i.severity == "error"] == []
        assert (task["status"], task["intent"], task["authoredOn"]) == (
            "requested", "order", "2025-06-30")
        assert task["for"] == {"reference": chart.patient}
        assert task["encounter"] == {"reference": stay}
        assert task["restriction"] == {"period": {"end": "2025-06-03"}}  # discharge + 30
        assert task["code"]["coding"][0]["system"] == DEFICIENCY_SYSTEM
    assert signing["focus"] == {"reference": note}
    assert signing["owner"] == {"reference": resident}
    assert signing["identifier"] == [{"system": TASK_IDENTIFIER_SYSTEM,
                                      "value": f"sign/{note}"}]
    assert signing["id"] == task_id(f"sign/{note}")
    assert summary["focus"] == {"reference": stay}
    assert summary["owner"] == {"reference": doctor}
    assert summary["identifier"][0]["value"] == f"dictate-discharge-summary/{stay}"


def test_running_again_changes_nothing(store: Store) -> None:
    chart = Chart(store)
    doctor = chart.practitioner("House")
    stay = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    chart.document(stay, PROGRESS, at("2025-05-02 09:00"), doctor, signed=False)
    assert sync(store) == {"created": 3}
    rows = store.row_counts()
    assert sync(store) == {"unchanged": 3}
    assert sync(store, as_of=date(2025, 7, 15)) == {"unchanged": 3}  # authoredOn kept
    assert store.row_counts() == rows  # not one new version


def test_signing_the_document_completes_its_task(store: Store) -> None:
    chart = Chart(store)
    doctor = chart.practitioner("House")
    stay = chart.complete_stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    note = chart.document(stay, PROGRESS, at("2025-05-02 09:00"), doctor, signed=False)
    sync(store)
    chart.sign(note, doctor)
    assert sync(store, as_of=date(2025, 7, 1)) == {"completed": 1}
    task = tasks_by_code(store)["sign"]
    assert (task["status"], task["lastModified"]) == ("completed", "2025-07-01")
    assert open_deficiency_tasks(store) == []
    assert sync(store, as_of=date(2025, 7, 1)) == {}


def test_a_late_dictation_completes_the_missing_document_task(store: Store) -> None:
    chart = Chart(store)
    doctor = chart.practitioner("House")
    stay = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    chart.document(stay, H_AND_P, at("2025-05-01 10:00"), doctor)
    sync(store)
    chart.document(stay, DISCHARGE, at("2025-06-20 10:00"), doctor)
    assert sync(store) == {"completed": 1}


def test_a_partial_analysis_leaves_other_encounters_tasks_open(store: Store) -> None:
    chart = Chart(store)
    doctor = chart.practitioner("House")
    first = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    second = chart.stay(at("2025-05-10 08:00"), at("2025-05-12 12:00"), doctor)
    assert sync(store) == {"created": 4}
    assert sync(store, encounters=[first]) == {"unchanged": 4}
    chart.document(second, DISCHARGE, at("2025-05-12 10:00"), doctor)
    assert sync(store, encounters=[first]) == {"unchanged": 3, "completed": 1}


def test_switching_a_rule_off_cancels_its_tasks(store: Store) -> None:
    chart = Chart(store)
    doctor = chart.practitioner("House")
    stay = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    chart.document(stay, H_AND_P, at("2025-05-01 10:00"), doctor)
    sync(store)
    off = replace(RULES, discharge_summary=DischargeSummaryRule(enabled=False))
    assert sync(store, rules=off) == {"cancelled": 1}
    task = tasks_by_code(store)["dictate-discharge-summary"]
    assert task["status"] == "cancelled"
    assert "discharge-summary rule is switched off" in task["statusReason"]["text"]


def test_a_deficiency_that_comes_back_reopens_its_task_but_a_rejected_one_stays(
        store: Store) -> None:
    chart = Chart(store)
    doctor = chart.practitioner("House")
    stay = chart.complete_stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    note = chart.document(stay, PROGRESS, at("2025-05-02 09:00"), doctor)
    other = chart.document(stay, PROGRESS, at("2025-05-02 10:00"), doctor, signed=False)
    sync(store)
    ident = note.split("/")[1]
    with store.write() as txn:  # the signature is withdrawn (an amendment in progress)
        document = txn.read("DocumentReference", ident)
        document["docStatus"] = "preliminary"
        del document["authenticator"]
        txn.update("DocumentReference", ident, document)
        task = txn.read("Task", task_id(f"sign/{other}"))
        txn.update("Task", task["id"], dict(task, status="rejected"))  # the doctor disputes
    assert sync(store) == {"created": 1, "left_alone": 1}
    chart.sign(note, doctor)
    sync(store)
    with store.write() as txn:
        document = txn.read("DocumentReference", ident)
        document["docStatus"] = "preliminary"
        del document["authenticator"]
        txn.update("DocumentReference", ident, document)
    assert sync(store) == {"reopened": 1, "left_alone": 1}
    with store.read() as txn:
        assert txn.read("Task", task_id(f"sign/{note}"))["status"] == "requested"


def test_a_late_h_and_p_gets_no_task() -> None:
    late = Deficiency("history-and-physical", "late", "Encounter/1", "Patient/1",
                      "Practitioner/1", "DocumentReference/1", None, "IMP", AS_OF, 0, False,
                      "History and physical written 30 hours after admission")
    with pytest.raises(ValueError, match="not actionable"):
        deficiency_task(late, RULES, AS_OF)



def test_an_assignment_by_him_outlives_the_next_analysis(store: Store) -> None:
    """HIM gives a resident's unsigned note to the attending; re-running keeps that."""
    chart = Chart(store)
    doctor, resident = chart.practitioner("House"), chart.practitioner("Resident")
    stay = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    chart.document(stay, PROGRESS, at("2025-05-02 09:00"), resident, signed=False)
    chart.document(stay, H_AND_P, at("2025-05-01 10:00"), doctor)
    chart.document(stay, DISCHARGE, at("2025-05-04 10:00"), doctor)
    sync(store)
    task = tasks_by_code(store)["sign"]
    assert task["owner"] == {"reference": resident}
    assign_task(store, str(task["id"]), doctor.split("/")[1], "tech")
    assert sync(store) == {"unchanged": 1}
    again = tasks_by_code(store)["sign"]
    assert again["owner"] == {"reference": doctor}
    assert again["note"][-1]["text"] == f"Assigned to {doctor} by tech"  # type: ignore[index]
    with pytest.raises(InvalidRequest, match="does not exist"):
        assign_task(store, str(task["id"]), "no-such-doctor", "tech")
    with pytest.raises(NotFound):
        assign_task(store, "no-such-task", doctor.split("/")[1], "tech")


def test_the_owner_writes_the_missing_discharge_summary(store: Store) -> None:
    chart = Chart(store)
    doctor, other = chart.practitioner("House"), chart.practitioner("Wilson")
    stay = chart.stay(at("2025-05-01 08:00"), at("2025-05-04 12:00"), doctor)
    chart.document(stay, H_AND_P, at("2025-05-01 10:00"), doctor)
    sync(store)
    task = tasks_by_code(store)["dictate-discharge-summary"]
    with pytest.raises(InvalidRequest, match="not to you"):
        write_missing_document(store, str(task["id"]), other.split("/")[1], "Summary.")
    with pytest.raises(InvalidRequest, match="needs its text"):
        write_missing_document(store, str(task["id"]), doctor.split("/")[1], "  ")
    reference = write_missing_document(store, str(task["id"]), doctor.split("/")[1],
                                       "Admitted for CHF; diuresed; discharged home.")
    with store.read() as txn:
        written = txn.read("DocumentReference", reference.split("/")[1])
        done = txn.read("Task", str(task["id"]))
    assert written["type"]["coding"][0]["code"] == DISCHARGE
    assert written["authenticator"] == {"reference": doctor}
    assert written["context"]["encounter"] == [{"reference": stay}]
    assert done["status"] == "completed"
    assert "created" not in sync(store)
    assert [d for d in analyze(store, RULES, AS_OF) if d.rule == "discharge-summary"] == []
