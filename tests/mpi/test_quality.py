"""The MPI's data-quality views on a small store built by hand, on SQLite and PostgreSQL: the
duplicate rate from the decisions and the open reviews, the review queue by age, and the
records that suggest two people in one (overlay risk)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chartkeeper.mpi.dedupe import Evidence, Pair
from chartkeeper.mpi.merge import Decider, link, merge, undo
from chartkeeper.mpi.quality import (
    LOINC,
    blood_group,
    duplicate_rate,
    overlay_risks,
    queue_age,
)
from chartkeeper.mpi.service import decide, review_task
from chartkeeper.store import Store
from chartkeeper.store.service import Txn

TECH = Decider("tech", "him-technician", "checked both registrations")
SNOMED = "http://snomed.info/sct"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    yield store
    store.dispose()


def patient(txn: Txn, pid: str, born: str = "1970-01-01", sex: str = "female",
            **extra: Any) -> None:
    txn.create({"resourceType": "Patient", "id": pid, "active": True, "birthDate": born,
                "gender": sex, "name": [{"family": pid.title(), "given": ["Pat"]}], **extra},
               resource_id=pid)


def blood_test(txn: Txn, pid: str, code: str, text: str, when: str,
               answer: str | None = None, status: str = "final") -> None:
    value: dict[str, Any] = {"text": text} if text else {}
    if answer:
        value["coding"] = [{"system": SNOMED, "code": answer}]
    txn.create({"resourceType": "Observation", "status": status,
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
                "valueCodeableConcept": value})


def queued(txn: Txn, left: str, right: str, authored: datetime | None = None) -> str:
    task = review_task(Pair(left, right, 0.8, 2.0, (
        Evidence("surname", None, None, "Exact match on surname", 4.2),
        Evidence("dob", None, None, "All other comparisons", -6.5))))
    if authored is not None:
        task["authoredOn"] = authored.strftime("%Y-%m-%dT%H:%M:%SZ")
    txn.create(task, resource_id=task["id"])
    return str(task["id"])


def test_duplicate_rate_counts_merged_linked_and_pending_per_active_patient(
        store: Store) -> None:
    with store.write() as txn:
        for n in range(12):
            patient(txn, f"p{n:02d}")
        merge(txn, "p00", "p01", TECH)
        link(txn, "p02", "p03", TECH)
        unlinked = link(txn, "p04", "p05", TECH)
        unmerged = merge(txn, "p06", "p07", TECH)
        queued(txn, "p08", "p09")
        queued(txn, "p10", "p11")
        decided = queued(txn, "p08", "p10")
    with store.write() as txn:
        undo(txn, unlinked.provenance_id, TECH)
        undo(txn, unmerged.provenance_id, TECH)
        decide(txn, decided, "not-duplicate", TECH)
    rate = duplicate_rate(store)
    assert (rate.patients, rate.inactive, rate.active) == (12, 1, 11)
    assert (rate.merged, rate.linked, rate.pending) == (1, 1, 2)
    assert rate.rate == pytest.approx(4 / 11)
    assert rate.per_active(rate.merged) == pytest.approx(1 / 11)


def test_an_empty_store_has_no_duplicate_rate_and_an_empty_queue(store: Store) -> None:
    rate = duplicate_rate(store)
    with store.read() as txn:
        age = queue_age(txn, NOW)
    assert (rate.patients, rate.rate) == (0, 0.0)
    assert (age.open, age.oldest_task, age.oldest_days) == (0, None, None)
    assert [count for _label, count in age.bands] == [0, 0, 0, 0]


def test_queue_age_bands_the_open_reviews_by_when_they_were_queued(store: Store) -> None:
    with store.write() as txn:
        for n in range(14):
            patient(txn, f"q{n:02d}")
        ages = [1, 6, 10, 29, 45, 100, 200]
        tasks = [queued(txn, f"q{2 * i:02d}", f"q{2 * i + 1:02d}", NOW - timedelta(days=days))
                 for i, days in enumerate(ages)]
    with store.write() as txn:  # a decided review is no longer waiting, however old
        decide(txn, tasks[-1], "link", TECH)
    with store.read() as txn:
        age = queue_age(txn, NOW)
    assert age.open == 6
    assert age.bands == [("under 7 days", 2), ("7 to 30 days", 2), ("30 to 90 days", 1),
                         ("over 90 days", 1)]
    assert age.oldest_task == tasks[-2] and age.oldest_days == 100


@pytest.mark.parametrize(("code", "text", "answer", "expected"), [
    ("882-1", "Blood group A Rh(D) positive", None, ("A", "+")),
    ("882-1", "O NEG", None, ("O", "-")),
    ("882-1", "AB+", None, ("AB", "+")),
    ("882-1", "", "278154007", ("O", "-")),
    ("883-9", "Group B", None, ("B", None)),
    ("883-9", "B Rh positive", None, ("B", None)),  # an ABO result says nothing of Rh
    ("10331-7", "Negative", None, (None, "-")),
    ("10331-7", "", "165747007", (None, "+")),
])
def test_blood_group_reads_the_abo_group_and_rh_type_a_result_states(
        code: str, text: str, answer: str | None, expected: tuple[str | None, str | None]
) -> None:
    value: dict[str, Any] = {"text": text} if text else {}
    if answer:
        value["coding"] = [{"system": SNOMED, "code": answer}]
    observation = {"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": LOINC, "code": code}]},
                   "valueCodeableConcept": value}
    assert blood_group(observation) == expected


def test_overlay_risk_finds_records_that_suggest_two_people(store: Store) -> None:
    with store.write() as txn:
        for pid in ("reborn", "moved", "completed", "typed", "retyped", "steady",
                    "survivor", "prior", "left", "right", "same1", "same2", "blood1",
                    "blood2"):
            patient(txn, pid)
        patient(txn, "nosex", sex="unknown")
        patient(txn, "late", born="1970")
    with store.write() as txn:
        reborn = txn.read("Patient", "reborn")
        txn.update("Patient", "reborn", {**reborn, "birthDate": "1971-05-05"})
        moved = txn.read("Patient", "moved")
        txn.update("Patient", "moved", {**moved, "address": [{"city": "Akron"}]})
        late = txn.read("Patient", "late")  # a partial date made full: not a change of person
        txn.update("Patient", "late", {**late, "birthDate": "1970-03-04"})
        # one person's repeated results, in different words: no conflict
        blood_test(txn, "steady", "882-1", "Blood group A Rh(D) positive", "2020-01-01")
        blood_test(txn, "steady", "883-9", "Group A", "2021-01-01")
        blood_test(txn, "steady", "10331-7", "Positive", "2022-01-01")
        blood_test(txn, "typed", "882-1", "A+", "2020-01-01")
        blood_test(txn, "typed", "882-1", "", "2024-02-02", answer="278155008")  # O+
        blood_test(txn, "retyped", "882-1", "A+", "2020-01-01")
        blood_test(txn, "retyped", "882-1", "B-", "2023-01-01", status="entered-in-error")
        survivor = txn.read("Patient", "survivor")
        txn.update("Patient", "survivor", {**survivor, "birthDate": "1980-02-02"})
        right = txn.read("Patient", "right")
        txn.update("Patient", "right", {**right, "gender": "male"})
        blood_test(txn, "blood1", "883-9", "A", "2020-01-01")
        blood_test(txn, "blood2", "883-9", "B", "2020-01-01")
    with store.write() as txn:
        merge(txn, "survivor", "prior", TECH)
        link(txn, "left", "right", TECH)
        link(txn, "same1", "same2", TECH)
        link(txn, "blood1", "blood2", TECH)
        link(txn, "nosex", "completed", TECH)  # a sex not stated is no conflict

    steps: list[int] = []
    risks = overlay_risks(store, on_step=lambda n, _name: steps.append(n))
    assert steps == [0, 1, 2]
    found = {(r.kind, r.patient, r.other) for r in risks}
    assert found == {
        ("identity-changed", "reborn", None), ("identity-changed", "survivor", None),
        ("identity-changed", "right", None), ("blood-groups", "typed", None),
        ("merged-conflict", "survivor", "prior"), ("linked-conflict", "left", "right"),
        ("linked-conflict", "blood1", "blood2")}
    detail = {(r.kind, r.patient): r.detail for r in risks}
    assert detail["identity-changed", "reborn"] == \
        "birth date: 1970-01-01 (version 1) → 1971-05-05 (version 2)"
    assert detail["blood-groups", "typed"] == "ABO A (2020-01-01), O (2024-02-02)"
    assert detail["merged-conflict", "survivor"] == "birth date 1980-02-02 / 1970-01-01"
    assert detail["linked-conflict", "left"] == "sex female / male"
    assert detail["linked-conflict", "blood1"] == "blood group A / B"
    assert len(overlay_risks(store, limit=2)) == 2
