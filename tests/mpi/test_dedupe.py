"""Batch deduplication against the synthetic hospital's answer key (its second registrations,
with typos, nicknames, transposed birth dates, new addresses and phones): pairwise precision,
recall and F1 at the automatic-link threshold; and records with almost nothing filled in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chartkeeper.mpi.dedupe import Thresholds, dedupe, patient_row, phonetic
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.generate import generate
from chartkeeper.synth.people import MRN_SYSTEM

PATIENTS = 1500


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    root = tmp_path_factory.mktemp("mpi")
    generate(root / "h", PATIENTS, 5, output_format="ndjson")
    store = Store(f"sqlite:///{root / 'mpi.sqlite'}")
    store.create_schema()
    files = [p for p in find_files([root / "h" / "ndjson"]) if p.name == "Patient.ndjson"]
    Importer(store).import_files(files)
    yield store, root / "h"
    store.dispose()


def true_pairs(store: Store, hospital: Path) -> set[frozenset[str]]:
    with store.read() as txn:
        patients = txn.search_params("Patient", [("_count", "1000")]).matches
        patients += txn.search_params("Patient", [("_count", "1000"),
                                                  ("_offset", "1000")]).matches
    by_mrn = {i["value"]: p["id"] for p in patients for i in p.get("identifier", [])
              if i.get("system") == MRN_SYSTEM}
    pairs = set()
    for line in (hospital / "answer-key.ndjson").read_text().splitlines():
        key = json.loads(line)
        for duplicate in key.get("duplicates", []):
            pairs.add(frozenset((by_mrn[key["mrn"]], by_mrn[duplicate["mrn"]])))
    return pairs


def test_duplicates_of_the_synthetic_hospital(hospital: tuple[Store, Path]) -> None:
    store, folder = hospital
    truth = true_pairs(store, folder)
    result = dedupe(store, Thresholds(auto_link=0.999, review=0.5))
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
