"""Synthea transaction bundles and bulk NDJSON load completely; $everything; bulk $export."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from chartkeeper.store import Store
from chartkeeper.store.importer import NDJSON_CHUNK, Importer, find_files

SYNTHEA = "synthea/r4_transaction_bundles_subset"
NDJSON = "synthea/bulk_ndjson_10_patients"


def load_transaction_bundles(client: TestClient, shared_data: Path) -> dict[str, int]:
    """Post the practitioner/hospital bundles first (patients cite them conditionally)."""
    folder = shared_data / SYNTHEA
    files = sorted(folder.glob("*.json"), key=lambda p: (not p.name[0].islower(), p.name))
    expected: Counter[str] = Counter()
    for path in files:
        bundle = json.loads(path.read_text())
        response = client.post("/fhir", json=bundle)
        assert response.status_code == 200, (path.name, response.text[:2000])
        statuses = [e["response"]["status"] for e in response.json()["entry"]]
        created = [s for s in statuses if s.startswith("201")]
        for entry, status in zip(bundle["entry"], statuses, strict=True):
            if status.startswith("201"):
                expected[entry["resource"]["resourceType"]] += 1
        assert len(created) + statuses.count("200 OK") == len(bundle["entry"])
    return dict(expected)


@pytest.mark.slow
def test_synthea_transaction_bundles_load_completely_and_everything(
        client: TestClient, shared_data: Path) -> None:
    expected = load_transaction_bundles(client, shared_data)
    for rtype, n in expected.items():
        total = client.get(f"/fhir/{rtype}", params={"_summary": "count"}).json()["total"]
        assert total == n, rtype
    patient_files = [p for p in (shared_data / SYNTHEA).glob("*.json") if p.name[0].isupper()]
    assert expected["Patient"] == len(patient_files) == 23

    bundle = json.loads(next((shared_data / SYNTHEA).glob("Alberto_*.json")).read_text())
    mrn = next(i["value"] for i in bundle["entry"][0]["resource"]["identifier"]
               if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR")
    found = client.get("/fhir/Patient", params={"identifier": mrn}).json()
    assert found["total"] == 1
    pid = found["entry"][0]["resource"]["id"]

    everything = client.get(f"/fhir/Patient/{pid}/$everything").json()
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything["entry"]}
    # Every stored resource that references the patient must be in $everything.
    referencing: set[tuple[str, str]] = set()
    for rtype in expected:
        page = client.get(f"/fhir/{rtype}", params={"_count": 1000}).json()
        for entry in page.get("entry", []):
            if f'"Patient/{pid}"' in orjson.dumps(entry["resource"]).decode():
                referencing.add((rtype, entry["resource"]["id"]))
    assert referencing, "the patient should be referenced"
    assert referencing <= got
    assert ("Patient", pid) in got
    # Everything the patient's own bundle held is there (its organization and practitioner are
    # cited rather than referencing the patient), and nothing of another patient.
    bundle_types = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    got_types = Counter(rtype for rtype, _ in got)
    assert all(got_types[t] >= n for t, n in bundle_types.items())
    assert got_types["Patient"] == 1
    assert len(referencing) + 1 == bundle_types.total() - 2


@pytest.mark.slow
def test_bulk_ndjson_loads_completely(store: Store, shared_data: Path) -> None:
    files = [p for p in find_files([shared_data / NDJSON]) if p.name != "log.ndjson"]
    expected = Counter()
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                expected[json.loads(line)["resourceType"]] += 1
    importer = Importer(store)
    created = rejected = 0
    for path in files:
        summary = importer.import_file(path)
        created += summary.created
        rejected += summary.rejected
        assert not summary.problems, summary.problems[:3]
    assert rejected == 0
    assert created == sum(expected.values())
    chunks = sum(-(-len(path.read_text().splitlines()) // NDJSON_CHUNK) for path in files)
    counts = store.row_counts()
    assert counts["resource"] == sum(expected.values()) + chunks  # one Provenance a chunk
    with store.read() as txn:
        page = txn.search_params("DocumentReference", [("_summary", "count")])
    assert page.total == expected["DocumentReference"]
    # Importing the same files again changes nothing: each chunk was imported before.
    again = importer.import_files(files)
    assert (again.created, again.updated, again.skipped) == (0, 0, chunks)
    assert store.row_counts() == counts


def _wait_for_export(client: TestClient, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(status_url.replace("http://testserver", ""))
        if response.status_code == 200:
            manifest: dict[str, Any] = response.json()
            return manifest
        assert response.status_code == 202
        assert "x-progress" in response.headers
        time.sleep(0.05)
    raise AssertionError("export did not finish")


def test_bulk_export_system_patient_and_group(client: TestClient) -> None:
    a = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}).json()
    b = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}).json()
    for p in (a, b):
        client.post("/fhir/Observation", json={
            "resourceType": "Observation", "status": "final", "code": {"text": "hr"},
            "subject": {"reference": f"Patient/{p['id']}"}})
    client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "X"})
    group = client.post("/fhir/Group", json={
        "resourceType": "Group", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{a['id']}"}}]}).json()

    refused = client.get("/fhir/$export")
    assert refused.status_code == 400  # needs Prefer: respond-async

    def run(path: str, **params: str) -> dict[str, int]:
        kick = client.get(path, params=params, headers={"Prefer": "respond-async"})
        assert kick.status_code == 202, kick.text
        manifest = _wait_for_export(client, kick.headers["content-location"])
        counts = {}
        for output in manifest["output"]:
            body = client.get(output["url"].replace("http://testserver", ""))
            assert body.headers["content-type"].startswith("application/fhir+ndjson")
            lines = [json.loads(line) for line in body.text.splitlines()]
            assert all(r["resourceType"] == output["type"] for r in lines)
            counts[output["type"]] = len(lines)
            assert output["count"] == len(lines)
        return counts

    assert run("/fhir/$export") == {"Patient": 2, "Observation": 2, "Organization": 1,
                                    "Group": 1}
    assert run("/fhir/$export", _type="Observation") == {"Observation": 2}
    # Group is in the Patient compartment (Group.member), so patient-level exports carry it.
    assert run("/fhir/Patient/$export") == {"Patient": 2, "Observation": 2, "Group": 1}
    assert run(f"/fhir/Group/{group['id']}/$export") == {"Patient": 1, "Observation": 1,
                                                         "Group": 1}
    bad = client.get("/fhir/$export", params={"_type": "Nope"},
                     headers={"Prefer": "respond-async"})
    assert bad.status_code == 400
    missing = client.get("/fhir/Group/nope/$export", headers={"Prefer": "respond-async"})
    assert missing.status_code == 404
