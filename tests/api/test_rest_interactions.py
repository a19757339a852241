"""The FHIR REST interactions over HTTP: create, read, vread, update, delete, history, headers."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.store import Store


def patient(family: str = "Chalmers", given: str = "Peter", birth: str = "1974-12-25",
            **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}],
            "gender": "male", "birthDate": birth, **extra}


def test_create_assigns_id_version_and_location(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient())
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


def test_create_ignores_client_id(client: TestClient) -> None:
    body = client.post("/fhir/Patient", json=patient(id="client-chosen")).json()
    assert body["id"] != "client-chosen"


def test_read_vread_update_history_delete_undelete(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient()).json()
    pid = created["id"]
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200 and read.json()["name"][0]["family"] == "Chalmers"
    assert read.headers["etag"] == 'W/"1"'

    changed = dict(read.json(), gender="other")
    updated = client.put(f"/fhir/Patient/{pid}", json=changed)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"

    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["gender"] == "male"
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2")
    assert v2.json()["gender"] == "other"
    assert client.get(f"/fhir/Patient/{pid}/_history/9").status_code == 404

    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient", params={"_id": pid}).json()["total"] == 0

    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["type"] == "history" and history["total"] == 3
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]

    revived = client.put(f"/fhir/Patient/{pid}", json=dict(changed, gender="female"))
    assert revived.status_code == 200 and revived.json()["meta"]["versionId"] == "4"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"


def test_update_creates_when_missing(client: TestClient) -> None:
    response = client.put("/fhir/Patient/abc-1", json=patient(id="abc-1"))
    assert response.status_code == 201
    assert response.json()["id"] == "abc-1"


def test_update_id_mismatch_is_rejected(client: TestClient, store: Store) -> None:
    before = store.row_counts()
    response = client.put("/fhir/Patient/abc-1", json=patient(id="other"))
    assert response.status_code == 400
    assert "does not match" in response.json()["issue"][0]["diagnostics"]
    assert store.row_counts() == before


def test_if_match_stale_version_is_412(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    body = dict(client.get(f"/fhir/Patient/{pid}").json(), gender="female")
    ok = client.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    bad = client.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": "nonsense"})
    assert bad.status_code == 400


def test_if_none_match_gives_304(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    response = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code \
        == 200


def test_if_none_exist_conditional_create(client: TestClient) -> None:
    ident = {"system": "urn:mrn", "value": "12345"}
    first = client.post("/fhir/Patient", json=patient(identifier=[ident]),
                        headers={"If-None-Exist": "identifier=urn:mrn|12345"})
    assert first.status_code == 201
    second = client.post("/fhir/Patient", json=patient(identifier=[ident]),
                         headers={"If-None-Exist": "identifier=urn:mrn|12345"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert client.get("/fhir/Patient").json()["total"] == 1


def test_conditional_update_and_delete(client: TestClient) -> None:
    ident = {"system": "urn:mrn", "value": "777"}
    created = client.put("/fhir/Patient?identifier=urn:mrn|777",
                         json=patient(identifier=[ident]))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put("/fhir/Patient?identifier=urn:mrn|777",
                         json=patient(identifier=[ident], gender="female"))
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    client.post("/fhir/Patient", json=patient(identifier=[ident]))
    ambiguous = client.put("/fhir/Patient?identifier=urn:mrn|777",
                           json=patient(identifier=[ident]))
    assert ambiguous.status_code == 412
    assert client.delete("/fhir/Patient?identifier=urn:mrn|777").status_code == 412
    assert client.delete(f"/fhir/Patient?_id={pid}").status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410


def test_type_and_system_history_with_since_and_count(client: TestClient) -> None:
    ids = [client.post("/fhir/Patient", json=patient(given=f"P{i}")).json()["id"]
           for i in range(3)]
    client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Acme"})
    history = client.get("/fhir/Patient/_history").json()
    assert history["total"] == 3
    page = client.get("/fhir/_history", params={"_count": 2}).json()
    assert page["total"] == 4 and len(page["entry"]) == 2
    assert any(link["relation"] == "next" for link in page["link"])
    first = client.get(f"/fhir/Patient/{ids[0]}").json()["meta"]["lastUpdated"]
    since = client.get("/fhir/_history", params={"_since": first}).json()
    assert since["total"] == 4
    future = client.get("/fhir/_history", params={"_since": "2999-01-01"}).json()
    assert future["total"] == 0


def test_unknown_type_and_route_errors_are_operation_outcomes(client: TestClient) -> None:
    unknown = client.get("/fhir/Spaceship/1")
    assert unknown.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"
    missing = client.get("/fhir/Patient/does-not-exist")
    assert missing.status_code == 404
    not_allowed = client.patch("/fhir/Patient/1", json={})
    assert not_allowed.status_code == 405
    assert not_allowed.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_lists_what_is_supported(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert set(resources) == load_definitions().resource_types
    observation_params = {p["name"] for p in resources["Observation"]["searchParam"]}
    assert {"code", "subject", "patient", "date", "value-quantity",
            "code-value-quantity"} <= observation_params
    assert {o["name"] for o in resources["Patient"]["operation"]} == {"everything", "export"}
    assert {i["code"] for i in cs["rest"][0]["interaction"]} >= {"transaction", "batch"}


def test_prefer_return_minimal(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert response.status_code == 201 and response.content == b""
    assert response.headers["location"]


def test_elements_and_summary_on_read(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    subset = client.get(f"/fhir/Patient/{pid}", params={"_elements": "gender"}).json()
    assert set(subset) == {"resourceType", "id", "meta", "gender"}
    assert subset["meta"]["tag"][0]["code"] == "SUBSETTED"


def test_summary_true_keeps_only_summary_elements(client: TestClient) -> None:
    body = patient(deceasedBoolean=False, communication=[{"language": {"text": "English"}}],
                   text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">P</div>"})
    pid = client.post("/fhir/Patient", json=body).json()["id"]
    summary = client.get(f"/fhir/Patient/{pid}", params={"_summary": "true"}).json()
    assert {"name", "gender", "birthDate", "deceasedBoolean"} <= set(summary)
    assert "communication" not in summary and "text" not in summary
    text_only = client.get(f"/fhir/Patient/{pid}", params={"_summary": "text"}).json()
    assert set(text_only) == {"resourceType", "id", "meta", "text"}
    data = client.get(f"/fhir/Patient/{pid}", params={"_summary": "data"}).json()
    assert "text" not in data and "communication" in data
    searched = client.get("/fhir/Patient", params={"_summary": "true"}).json()
    assert "communication" not in searched["entry"][0]["resource"]


def test_request_log_has_no_query_strings_or_bodies(client: TestClient,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="chartkeeper.access"):
        client.post("/fhir/Patient", json=patient(family="Zebediah"))
        client.get("/fhir/Patient", params={"family": "Zebediah", "birthdate": "1974-12-25"})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "GET /fhir/Patient 200" in logged
    assert "Zebediah" not in logged and "1974" not in logged
