"""Every imported unit (a .json file, a chunk of an .ndjson file) writes one Provenance, in
its own transaction, naming what it wrote and the file by SHA-256; importing the same file
again changes nothing, even a create-only transaction Bundle (which would otherwise be created
twice). On both databases."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chartkeeper.store import Store, schema
from chartkeeper.store.importer import Importer, Source, import_provenance
from chartkeeper.store.service import validate_for_store

PATIENT_URN = "urn:uuid:7b0c7e4e-2f7e-4c1e-9a55-3d1f0c2b8a11"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    yield store
    store.dispose()


def versions(store: Store) -> int:
    with store.read() as txn:
        return int(txn.conn.execute(
            select(func.count()).select_from(schema.resource_version)).scalar_one())


def provenances(store: Store) -> list[dict[str, Any]]:
    with store.read() as txn:
        return txn.search_params("Provenance", [("_count", "100")]).matches


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def create_only_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": PATIENT_URN, "resource": {"resourceType": "Patient",
                                             "name": [{"family": "Prov", "given": ["Ada"]}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": PATIENT_URN}},
         "request": {"method": "POST", "url": "Observation"}}]}


@pytest.mark.parametrize("workers", [0, 1])
def test_a_create_only_bundle_gets_its_provenance_and_is_not_created_twice(
        store: Store, tmp_path: Path, workers: int) -> None:
    path = write(tmp_path / "visit.json", create_only_bundle())
    first = Importer(store, workers=workers).import_files([path])
    assert (first.created, first.skipped) == (2, 0)
    [prov] = provenances(store)
    targets = sorted(t["reference"].split("/")[0] for t in prov["target"])
    assert targets == ["Observation", "Patient"]
    assert all(t["reference"].endswith("/_history/1") for t in prov["target"])
    what = prov["entity"][0]["what"]
    assert what["identifier"]["value"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "visit.json" in what["display"]
    count = versions(store)
    again = Importer(store, workers=workers).import_files([path])
    assert (again.created, again.updated, again.skipped) == (0, 0, 1)
    assert versions(store) == count == 3


def test_a_transaction_with_puts_names_what_it_wrote(store: Store, tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "put-1", "gender": "female"},
         "request": {"method": "PUT", "url": "Patient/put-1"}},
        {"resource": {"resourceType": "Patient", "id": "put-2", "gender": "male"},
         "request": {"method": "PUT", "url": "Patient/put-2"}}]}
    path = write(tmp_path / "puts.json", bundle)
    Importer(store).import_files([path])
    [prov] = provenances(store)
    assert sorted(t["reference"] for t in prov["target"]) == [
        "Patient/put-1/_history/1", "Patient/put-2/_history/1"]
    # The same resources in another file: nothing changes, so no Provenance is claimed.
    bundle["id"] = "other-file"
    other = write(tmp_path / "same-content.json", bundle)
    summary = Importer(store).import_files([other])
    assert summary.skipped == 0 and len(provenances(store)) == 2  # a transaction reports 200


def test_a_single_resource_and_a_failed_bundle(store: Store, tmp_path: Path) -> None:
    single = write(tmp_path / "patient.json", {"resourceType": "Patient", "id": "solo"})
    bad = create_only_bundle()
    bad["entry"][1]["resource"]["status"] = 5  # a number where a code belongs
    broken = write(tmp_path / "broken.json", bad)
    summary = Importer(store).import_files([single, broken])
    assert summary.created == 1 and summary.rejected == 1
    [prov] = provenances(store)  # the failed Bundle left neither resources nor Provenance
    assert prov["target"] == [{"reference": "Patient/solo/_history/1"}]
    assert versions(store) == 2


def test_ndjson_chunks_name_their_lines_and_changes_are_recorded(
        store: Store, tmp_path: Path) -> None:
    lines = [json.dumps({"resourceType": "Patient", "id": f"n{n}"}) for n in range(3)]
    path = tmp_path / "Patient.ndjson"
    path.write_text("\n".join(lines) + "\n")
    Importer(store).import_files([path])
    [prov] = provenances(store)
    assert "lines 1-3" in prov["entity"][0]["what"]["display"]
    lines[1] = json.dumps({"resourceType": "Patient", "id": "n1", "gender": "other"})
    path.write_text("\n".join(lines) + "\n")
    summary = Importer(store).import_files([path])
    assert (summary.created, summary.updated, summary.skipped) == (0, 1, 0)
    changed = [p for p in provenances(store) if len(p["target"]) == 1]
    assert changed[0]["target"] == [{"reference": "Patient/n1/_history/2"}]


def test_the_provenance_is_valid_fhir() -> None:
    source = Source("file.ndjson", "ab" * 32, "1-1000")
    resource = import_provenance(source, ["Patient/x/_history/1"], "2026-11-29T10:00:00.000Z")
    validate_for_store(resource, None)
    assert resource["id"] == source.provenance_id == Source("other", "ab" * 32).provenance_id
