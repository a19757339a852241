"""Batch deduplication against the synthetic hospital's answer key (its second registrations,
with typos, nicknames, transposed birth dates, new addresses and phones): pairwise precision,
recall and F1 at the automatic-link threshold; and records with almost nothing filled in."""

from __future__ import annotations

from pathlib import Path

import pytest

from chartkeeper.mpi.dedupe import DedupeResult, Thresholds, dedupe, patient_row, phonetic
from chartkeeper.store import Store
from tests.mpi.conftest import true_pairs


def test_duplicates_of_the_synthetic_hospital(patients_file: Path, hospital_files: Path,
                                              batch: DedupeResult) -> None:
    store = Store(f"sqlite:///{patients_file}")
    truth = true_pairs(store, hospital_files)
    store.dispose()
    result = batch
    links = {frozenset((p.left, p.right)) for p in result.links}
    true_links = len(links & truth)
    precision = true_links / len(links) if links else 1.0
    recall = true_links / len(truth)
    f1 = 2 * precision * recall / (precision + recall)
    print(f"MPI on {result.patients} patients: {len(truth)} true pairs, {len(links)} links, "
          f"{len(result.review)} to review; precision {precision:.4f} recall {recall:.4f} "
          f"F1 {f1:.4f}")
    assert len(truth) > 20
    assert precision >= 0.999 and f1 >= 0.99
    assert result.model["link_type"] == "dedupe_only"  # the trained model, as data


def test_thin_records_are_never_linked(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'thin.sqlite'}")
    store.create_schema()
    with store.write() as txn:
        for n in range(30):
            txn.update("Patient", f"t{n}", {"resourceType": "Patient", "id": f"t{n}",
                                            "gender": "female"})
        txn.update("Patient", "kanji", {"resourceType": "Patient", "id": "kanji",
                                        "name": [{"family": "山田", "given": ["太郎"]}],
                                        "birthDate": "2999-01-01"})
    result = dedupe(store)
    assert result.links == [] and result.review == []
    assert "not enough comparable records" in result.note
    store.dispose()


def test_rows_keep_only_what_is_matched_on() -> None:
    row = patient_row({"resourceType": "Patient", "id": "x", "birthDate": "1970",
                       "gender": "unknown",
                       "telecom": [{"system": "phone", "value": "(555) 010-0147"}],
                       "name": [{"family": " Van  Dyke ", "given": ["Ann"]}]})
    assert row == {"unique_id": "x", "first_name": "ann", "surname": "van dyke",
                   "first_name_phonetic": ["AN"], "surname_phonetic": ["FNTK", "VANDYC"],
                   "dob": None, "sex": None, "postcode": None, "street": None,
                   "phone": "5550100147", "ssn": None}
    # Codes that sound alike agree; a name in another script has no phonetic code; a birth
    # date in the future is an entry error, not evidence.
    assert set(phonetic("smyth") or []) & set(phonetic("smith") or [])
    assert phonetic("山田") is None and phonetic("Müller") == ["MALAR", "MLR"]
    assert patient_row({"id": "y", "birthDate": "2999-01-01"})["dob"] is None
    with pytest.raises(ValueError, match="thresholds"):
        Thresholds(auto_link=0.4, review=0.9)
