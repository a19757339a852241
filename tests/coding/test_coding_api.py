"""The coding API over HTTP: suggestions, search, code details, the PCS builder, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chartkeeper.coding import codesets
from chartkeeper.security.identity import Role
from chartkeeper.store import Store
from tests.api.conftest import issue_token, make_security, make_settings
from tests.coding.test_codesets import PCS_2026

NOTE = ("DISCHARGE DIAGNOSES:\nPrincipal: acute on chronic systolic CHF (HFrEF)\n"
        "Secondary: hypertension\n\nHOSPITAL COURSE:\nDenies chest pain.\n")


@pytest.fixture(scope="module")
def app_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    from chartkeeper.api.app import create_app

    tmp = tmp_path_factory.mktemp("coding-api")
    store = Store(f"sqlite:///{tmp / 'store.sqlite'}")
    store.create_schema()
    codesets.import_release(store.engine, PCS_2026.read_bytes(), system="icd10pcs",
                            source=PCS_2026.name, effective_from=date(2025, 10, 1),
                            effective_to=date(2026, 9, 30))
    settings = make_settings(Path(tmp), store.url)
    security = make_security(settings, store)
    coder = issue_token(security, "coder-1", Role.coder)
    clerk = issue_token(security, "transcriptionist-1", Role.transcriptionist)
    with TestClient(create_app(settings, store, security), base_url="http://testserver") as http:
        yield http, coder, clerk
    store.dispose()


@pytest.fixture(scope="module")
def http(app_parts: tuple[TestClient, str, str]) -> TestClient:
    client, coder, _ = app_parts
    client.headers["Authorization"] = f"Bearer {coder}"
    return client


def test_suggest_returns_ranked_codes_with_evidence_and_principal(http: TestClient) -> None:
    answer = http.post("/api/coding/suggest", json={"text": NOTE, "setting": "inpatient"})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["principal"] == "I50.23"
    assert [d["code"] for d in found["diagnoses"] if d["proposed"]] == ["I50.23", "I10"]
    evidence = found["diagnoses"][0]["evidence"][0]
    assert NOTE[evidence["start"]:evidence["end"]] == evidence["text"]
    assert "R07.9" not in {d["code"] for d in found["diagnoses"]}  # denied


@pytest.mark.parametrize(("body", "message"), [
    ({"setting": "inpatient"}, "'text' must be the note"),
    ({"text": "  ", "setting": "inpatient"}, "'text' must be the note"),
    ({"text": NOTE, "setting": "emergency"}, "'setting' must be one of"),
    ({"text": NOTE}, "'setting' must be one of"),
    ({"text": NOTE, "setting": "outpatient", "age": -3}, "'age' must be whole years"),
    ({"text": NOTE, "setting": "outpatient", "date": "2026-13-01"}, "'date' must be a date"),
    ({"text": NOTE, "setting": "outpatient", "date": "2019-01-01"},
     "no icd10cm release is in force on 2019-01-01"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_bad_suggest_requests_get_an_operation_outcome(http: TestClient, body: object,
                                                       message: str) -> None:
    answer = http.post("/api/coding/suggest", json=body)
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert message in outcome["issue"][0]["diagnostics"]


def test_suggest_refuses_what_is_not_json(http: TestClient) -> None:
    answer = http.post("/api/coding/suggest", content=b"text=HTN",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 400 and "application/json" in answer.text
    answer = http.post("/api/coding/suggest", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "not valid JSON" in answer.text


def test_search_and_code_detail(http: TestClient) -> None:
    hits = http.get("/api/coding/search", params={"q": "htn"}).json()["hits"]
    assert hits[0]["code"] == "I10"
    detail = http.get("/api/coding/codes/E11.9").json()
    assert detail["billable"] and detail["title"].startswith("Type 2 diabetes mellitus")
    assert [a["code"] for a in detail["ancestors"]] == ["4", "E08-E13", "E11"]
    assert any(n["kind"] == "excludes1" for n in detail["notes"])
    missing = http.get("/api/coding/codes/E11.99")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    assert http.get("/api/coding/search", params={"q": ""}).status_code in (400, 422)


def test_pcs_builder_offers_only_valid_choices(http: TestClient) -> None:
    step = http.get("/api/coding/pcs", params={"prefix": "0SR9"}).json()
    assert {c["position"] for c in step["choices"]} == {5}
    assert [c["value"] for c in step["choices"]] == ["0"]  # hip replacement: open only
    done = http.get("/api/coding/pcs", params={"prefix": "0SR9019"}).json()
    assert done["code"]["title"].startswith("Replacement of Right Hip Joint")
    bad = http.get("/api/coding/pcs", params={"prefix": "0SR94"})
    assert bad.status_code == 400 and "character 5" in bad.json()["issue"][0]["diagnostics"]


def test_roles_without_the_coding_capability_are_refused(
        app_parts: tuple[TestClient, str, str]) -> None:
    client, _, clerk = app_parts
    answer = client.post("/api/coding/suggest", json={"text": NOTE, "setting": "inpatient"},
                         headers={"Authorization": f"Bearer {clerk}"})
    assert answer.status_code == 403
    assert client.get("/api/coding/releases",
                      headers={"Authorization": "Bearer nonsense"}).status_code == 401
