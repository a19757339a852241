"""Transaction and batch Bundles: urn:uuid and conditional references, all-or-nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from chartkeeper.store import Store

PATIENT_URN = "urn:uuid:8f0b7ad0-6d7c-4b3e-9a44-4c0a4f2b1c01"


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None,
               if_none_exist: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def patient_entry() -> dict[str, Any]:
    return post_entry({"resourceType": "Patient", "name": [{"family": "Urn"}],
                       "identifier": [{"system": "urn:mrn", "value": "T1"}]}, PATIENT_URN)


def observation_entry(subject: str = PATIENT_URN) -> dict[str, Any]:
    return post_entry({"resourceType": "Observation", "status": "final",
                       "code": {"text": "pulse"}, "subject": {"reference": subject}})


def test_transaction_resolves_urn_uuid_references(client: TestClient) -> None:
    response = client.post("/fhir", json=transaction(observation_entry(), patient_entry()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_location = body["entry"][0]["response"]["location"]
    patient_location = body["entry"][1]["response"]["location"]
    obs = client.get("/fhir/" + obs_location.split("/_history")[0]).json()
    assert obs["subject"]["reference"] == patient_location.split("/_history")[0]


def test_transaction_conditional_reference_and_if_none_exist(client: TestClient) -> None:
    client.post("/fhir", json=transaction(patient_entry()))
    again = transaction(
        post_entry({"resourceType": "Patient", "name": [{"family": "Urn"}],
                    "identifier": [{"system": "urn:mrn", "value": "T1"}]}, PATIENT_URN,
                   if_none_exist="identifier=urn:mrn|T1"),
        observation_entry("Patient?identifier=urn:mrn|T1"),
    )
    body = client.post("/fhir", json=again).json()
    assert [e["response"]["status"] for e in body["entry"]] == ["200 OK", "201 Created"]
    assert client.get("/fhir/Patient").json()["total"] == 1
    patient_id = client.get("/fhir/Patient").json()["entry"][0]["resource"]["id"]
    obs = client.get("/fhir/Observation").json()["entry"][0]["resource"]
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_with_one_bad_entry_changes_nothing(client: TestClient, store: Store) -> None:
    client.post("/fhir/Patient", json={"resourceType": "Patient"})
    before = store.row_counts()
    bad = observation_entry()
    del bad["resource"]["status"]  # required element missing
    response = client.post("/fhir", json=transaction(patient_entry(), bad))
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("Bundle.entry[1]" in (i.get("expression") or [""])[0] for i in outcome["issue"])
    assert store.row_counts() == before


def test_transaction_unresolvable_conditional_reference_fails_whole(
        client: TestClient, store: Store) -> None:
    before = store.row_counts()
    response = client.post("/fhir", json=transaction(
        patient_entry(), observation_entry("Patient?identifier=urn:mrn|nobody")))
    assert response.status_code == 400
    assert "matched 0" in response.json()["issue"][0]["diagnostics"]
    assert store.row_counts() == before


def test_transaction_if_match_is_enforced(client: TestClient, store: Store) -> None:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}
                      ).json()["id"]
    client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                             "gender": "female"})
    before = store.row_counts()
    stale = transaction(
        patient_entry(),
        {"resource": {"resourceType": "Patient", "id": pid, "gender": "other"},
         "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"1"'}},
    )
    response = client.post("/fhir", json=stale)
    assert response.status_code == 412
    assert store.row_counts() == before
    fresh = transaction(
        {"resource": {"resourceType": "Patient", "id": pid, "gender": "other"},
         "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"2"'}})
    assert client.post("/fhir", json=fresh).status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "other"


def test_transaction_delete_put_get_order(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    body = client.post("/fhir", json=transaction(
        {"request": {"method": "GET", "url": f"Patient?_id={pid}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"resource": {"resourceType": "Patient", "id": "fixed-id"},
         "request": {"method": "PUT", "url": "Patient/fixed-id"}},
    )).json()
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[1] == "204 No Content" and statuses[2] == "201 Created"
    # GET runs last, so it sees the deletion made inside the same transaction.
    assert statuses[0] == "200 OK" and body["entry"][0]["resource"]["total"] == 0
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410


def test_batch_entries_succeed_or_fail_independently(client: TestClient) -> None:
    bad = observation_entry("Patient/does-not-matter")
    del bad["resource"]["code"]
    body = client.post("/fhir", json=transaction(
        post_entry({"resourceType": "Patient"}), bad,
        {"request": {"method": "GET", "url": "Patient?_count=5"}},
        kind="batch")).json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1] == "422"
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert statuses[2] == "200 OK"
    assert body["entry"][2]["resource"]["total"] == 1


def test_bundle_shape_errors(client: TestClient, store: Store) -> None:
    before = store.row_counts()
    for bad in (
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": "nope"},
        {"resourceType": "Bundle", "type": "transaction",
         "entry": [{"request": {"method": "POST", "url": "Patient"}}]},
    ):
        response = client.post("/fhir", json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert store.row_counts() == before
