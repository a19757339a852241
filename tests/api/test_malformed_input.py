"""Malformed requests get a clear OperationOutcome with the right status and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chartkeeper.store import Store
from tests.api.conftest import make_client, make_settings


@pytest.fixture
def seeded(client: TestClient, store: Store) -> dict[str, int]:
    client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"})
    return store.row_counts()


def assert_refused(response_status: int, expected: int, body: dict[str, object]) -> None:
    assert response_status == expected, body
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]  # type: ignore[index]
    assert issue["severity"] in ("error", "fatal")
    assert issue["diagnostics"]


@pytest.mark.parametrize(("payload", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[1, 2, 3]", 400, "resourceType"),
    (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', 400,
     "does not match"),
    (b'{"resourceType": "Patient", "favouriteColour": "blue"}', 422, "favouriteColour"),
    (b'{"resourceType": "Patient", "birthDate": "25/12/1974"}', 422, "birthDate"),
    (b'{"resourceType": "Patient", "gender": 3}', 422, "gender"),
    (b'{"resourceType": "Patient", "managingOrganization": {"reference": "Organization/"}}', 422,
     "reference"),
    (b'{"resourceType": "Patient", "generalPractitioner": [{"reference": "Spaceship/1"}]}', 422,
     "reference"),
    (b'{"resourceType": "Patient", "name": {"family": "not-an-array"}}', 422, "name"),
])
def test_bad_create_bodies(client: TestClient, store: Store, seeded: dict[str, int],
                           payload: bytes, status: int, needle: str) -> None:
    response = client.post("/fhir/Patient", content=payload,
                           headers={"Content-Type": "application/fhir+json"})
    body = response.json()
    assert_refused(response.status_code, status, body)
    text = " ".join(str(i.get("diagnostics", "")) + " " + " ".join(i.get("expression", []))
                    for i in body["issue"])
    assert needle.lower() in text.lower()
    assert store.row_counts() == seeded


def test_every_problem_is_listed(client: TestClient, store: Store, seeded: dict[str, int]) -> None:
    response = client.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": 1, "birthDate": "yesterday", "colour": "red"})
    assert response.status_code == 422
    assert len(response.json()["issue"]) >= 3
    assert store.row_counts() == seeded


def test_wrong_content_type_is_415(client: TestClient, store: Store,
                                   seeded: dict[str, int]) -> None:
    response = client.post("/fhir/Patient", content=b"<Patient/>",
                           headers={"Content-Type": "application/xml"})
    assert_refused(response.status_code, 415, response.json())
    assert store.row_counts() == seeded


def test_oversized_payload_is_413(store: Store, tmp_path: Path) -> None:
    with make_client(make_settings(tmp_path, store.url, max_body_bytes=10_000),
                     store) as client:
        before = store.row_counts()
        big = {"resourceType": "Patient", "name": [{"text": "x" * 20_000}]}
        response = client.post("/fhir/Patient", json=big,
                               headers={"Content-Type": "application/fhir+json"})
        assert_refused(response.status_code, 413, response.json())
        assert store.row_counts() == before


def test_update_of_wrong_type_and_bad_ids(client: TestClient, store: Store,
                                          seeded: dict[str, int]) -> None:
    response = client.put("/fhir/Patient/x1", json={"resourceType": "Observation", "id": "x1",
                                                    "status": "final", "code": {"text": "t"}})
    assert_refused(response.status_code, 422, response.json())
    response = client.put("/fhir/Patient/x1", json={"resourceType": "Patient"})
    assert_refused(response.status_code, 400, response.json())
    response = client.put("/fhir/Patient/bad$id", json={"resourceType": "Patient",
                                                        "id": "bad$id"})
    assert response.status_code in (400, 422)
    assert store.row_counts() == seeded


def test_delete_of_unknown_type_is_404(client: TestClient) -> None:
    assert_refused(*(lambda r: (r.status_code, 404, r.json()))(client.delete("/fhir/Nope/1")))
