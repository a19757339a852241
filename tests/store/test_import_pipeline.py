"""The pipelined importer: bundles prepared in worker processes land as the sequential path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chartkeeper.store import Store
from chartkeeper.store.bundle import prepare_transaction
from chartkeeper.store.errors import InvalidResource
from chartkeeper.store.importer import Importer, find_files

SYNTHEA = "synthea/r4_transaction_bundles_subset"


def synthea_files(shared_data: Path) -> list[Path]:
    files = find_files([shared_data / SYNTHEA])
    # Practitioner and hospital bundles first, as a site would load them.
    return sorted(files, key=lambda p: (not p.name[0].islower(), p.name))


@pytest.mark.slow
def test_workers_and_sequential_import_store_the_same(tmp_path: Path, shared_data: Path) -> None:
    counts = []
    for workers in (0, 1):
        store = Store(f"sqlite:///{tmp_path}/w{workers}.sqlite")
        store.create_schema()
        summary = Importer(store, workers=workers).import_files(synthea_files(shared_data))
        assert summary.rejected == 0, summary.problems[:3]
        counts.append(store.row_counts())
        with store.read() as txn:
            page = txn.search_params("Observation", [("patient.family", "Armstrong"),
                                                     ("_summary", "count")])
            assert page.total and page.total > 0
        store.dispose()
    assert counts[0] == counts[1]
    files = len(synthea_files(shared_data))
    assert counts[0]["resource"] == 6072 + files  # each file's Provenance


def test_prepare_transaction_needs_the_database_for_conditional_entries() -> None:
    conditional = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "Patient?identifier=urn:mrn|1"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    assert prepare_transaction(conditional) is None
    batch = dict(conditional, type="batch")
    assert prepare_transaction(batch) is None


def test_prepare_transaction_rewrites_urn_references_and_names_bad_entries() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
         "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    prepared = prepare_transaction(json.loads(json.dumps(bundle)))
    assert prepared is not None
    patient, observation = prepared
    assert json.loads(observation.content)["subject"]["reference"] == \
        f"Patient/{patient.resource_id}"
    assert ("patient", "Patient", patient.resource_id, None) in observation.rows.references
    del bundle["entry"][1]["resource"]["status"]
    with pytest.raises(InvalidResource) as caught:
        prepare_transaction(bundle)
    assert "Bundle.entry[1]" in caught.value.diagnostics
