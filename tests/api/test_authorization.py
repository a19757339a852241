"""Who may see what, proven over HTTP: route coverage, the role matrix, compartment leaks.

The expectations here are written out independently of ``ROLE_POLICIES``: they state the
policy (a transcriptionist cannot read lab results, a coder cannot delete, a token limited
to patient A never sees patient B) and the app must agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from chartkeeper.api.app import UnguardedRouteError, check_route_rules, create_app
from chartkeeper.api.auth import api_routes
from chartkeeper.security.identity import Role
from chartkeeper.security.services import SecurityServices
from chartkeeper.store import Store
from chartkeeper.web.pages import PageRule
from tests.api.conftest import FHIR, auth_header, issue_token, make_security, make_settings

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PUBLIC_ROUTES = {
    ("GET", "/"), ("GET", "/fhir/metadata"), ("POST", "/auth/sign-in"),
    ("POST", "/auth/change-password"), ("POST", "/auth/token"),
    # The workbench's sign-in page and form, its password change, and its CSS/JS.
    ("GET", "/sign-in"), ("POST", "/sign-in"), ("POST", "/change-password"),
    ("GET", "/static/{name}"),
}
# B's data and the VIP's: none of these strings may reach a token limited to patient A.
FOREIGN = ("pat-b", "obs-b1", "enc-b", "doc-b", "bin-b", "pat-v", "obs-v1", "Bravo")


def observation(rid: str, patient: str, *, security: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "performer": [{"reference": "Practitioner/prac1"}],
        "valueQuantity": {"value": 101, "unit": "mg/dL"},
    }
    if security:
        resource["meta"] = {"security": [{"system": ACT_CODE, "code": security}]}
    return resource


SEED: list[dict[str, Any]] = [
    {"resourceType": "Practitioner", "id": "prac1", "name": [{"family": "Osler"}]},
    {"resourceType": "Patient", "id": "pat-a", "name": [{"family": "Alpha"}]},
    {"resourceType": "Patient", "id": "pat-b", "name": [{"family": "Bravo"}]},
    {"resourceType": "Patient", "id": "pat-v", "name": [{"family": "Victor"}],
     "meta": {"security": [{"system": ACT_CODE, "code": "CEL"}]}},
    observation("obs-a1", "pat-a"),
    observation("obs-a2", "pat-a", security="42CFRPart2"),
    observation("obs-b1", "pat-b"),
    observation("obs-v1", "pat-v"),
    {"resourceType": "Encounter", "id": "enc-a", "status": "finished",
     "class": {"code": "AMB"}, "subject": {"reference": "Patient/pat-a"}},
    {"resourceType": "Encounter", "id": "enc-b", "status": "finished",
     "class": {"code": "AMB"}, "subject": {"reference": "Patient/pat-b"}},
    {"resourceType": "DocumentReference", "id": "doc-b", "status": "current",
     "subject": {"reference": "Patient/pat-b"},
     "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/bin-b"}}]},
    {"resourceType": "Binary", "id": "bin-b", "contentType": "text/plain",
     "securityContext": {"reference": "DocumentReference/doc-b"}, "data": "UGF0aWVudCBC"},
    {"resourceType": "Binary", "id": "bin-a", "contentType": "text/plain",
     "securityContext": {"reference": "Patient/pat-a"}, "data": "UGF0aWVudCBB"},
    {"resourceType": "Group", "id": "grp", "type": "person", "actual": True,
     "member": [{"entity": {"reference": "Patient/pat-a"}},
                {"entity": {"reference": "Patient/pat-b"}}]},
]


@dataclass
class Site:
    app: FastAPI
    security: SecurityServices
    store: Store

    def client(self, token: str | None = None) -> TestClient:
        client = TestClient(self.app, base_url="http://testserver")
        client.headers["Content-Type"] = FHIR
        if token is not None:
            client.headers.update(auth_header(token))
        return client

    def token(self, user: str, role: Role, scopes: str = "user/*.cruds",
              patient: str | None = None) -> str:
        return issue_token(self.security, user, role, scopes, patient)


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Iterator[Site]:
    settings = make_settings(tmp_path, store.url)
    security = make_security(settings, store)
    app = create_app(settings, store, security)
    seeded = Site(app, security, store)
    with seeded.client(seeded.token("seeder", Role.administrator)) as admin:
        for resource in SEED:
            response = admin.put(f"/fhir/{resource['resourceType']}/{resource['id']}",
                                 json=resource)
            assert response.status_code == 201, response.text
    yield seeded
    security.close()


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"}


def assert_nothing_foreign(response: Any) -> None:
    """No foreign record in any entry (links echo the caller's own query, and are skipped)."""
    body = response.json()
    if body.get("resourceType") == "Bundle":
        body = [e.get("resource") for e in body.get("entry", [])
                if e.get("search", {}).get("mode") != "outcome"]
    elif body.get("resourceType") == "OperationOutcome":
        return
    text = json.dumps(body)
    for marker in FOREIGN:
        assert marker not in text, (marker, text[:500])


# ----------------------------------------------------------------------------- coverage
def test_every_route_has_an_access_rule_and_only_the_listed_ones_are_public(site: Site
                                                                          ) -> None:
    public = set()
    routes = api_routes(site.app)
    assert len(routes) >= 30
    for route in routes:
        assert route.rule is not None, f"{route.methods} {route.path} has no access rule"
        if route.rule.public:
            public.update((m, route.path) for m in route.methods)
    assert public == PUBLIC_ROUTES


def test_an_app_with_an_unguarded_route_refuses_to_start(site: Site) -> None:
    extra = APIRouter()

    @extra.get("/leak")
    def leak() -> dict[str, str]:
        return {"secret": "x"}

    site.app.include_router(extra)
    with pytest.raises(UnguardedRouteError, match="GET /leak"):
        check_route_rules(site.app)


def _concrete(path: str) -> str:
    values = {"resource_type": "Patient", "resource_id": "pat-a", "version_id": "1",
              "patient_id": "pat-a", "group_id": "grp", "job_id": "0" * 32,
              "name": "Patient.ndjson"}
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    return path


def test_without_credentials_every_non_public_route_answers_401(site: Site) -> None:
    checked = 0
    with site.client() as anonymous:
        for route in api_routes(site.app):
            for method in route.methods:
                if (method, route.path) in PUBLIC_ROUTES:
                    continue
                response = anonymous.request(method, _concrete(route.path), json={},
                                             follow_redirects=False)
                if isinstance(route.rule, PageRule):  # a page: the browser goes to sign in
                    assert response.status_code == 303, (method, route.path, response.text)
                    assert response.headers["location"].startswith("/sign-in?next=")
                    checked += 1
                    continue
                assert response.status_code == 401, (method, route.path, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["resourceType"] == "OperationOutcome"
                assert_nothing_foreign(response)
                checked += 1
    assert checked >= 20


# ----------------------------------------------------------------------------- role matrix
OBS_BODY = {"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
            "subject": {"reference": "Patient/pat-a"}}
CONDITION_BODY = {"resourceType": "Condition", "code": {"text": "hypertension"},
                  "subject": {"reference": "Patient/pat-a"}}
DOC_BODY = {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": "Patient/pat-a"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "SGk="}}]}
DISCLOSURE = {"patient": "pat-a", "recipient": "Acme Life Insurance",
              "purpose": "underwriting, patient authorization on file",
              "description": "discharge summary", "resources": ["Observation/obs-a1"]}
EXPORT = {"Prefer": "respond-async"}

# (role, method, path, body, headers, expected status)
MATRIX: list[tuple[Role, str, str, Any, dict[str, str], int]] = [
    (Role.transcriptionist, "GET", "/fhir/Observation/obs-a1", None, {}, 403),
    (Role.transcriptionist, "GET", "/fhir/Observation", None, {}, 403),
    (Role.transcriptionist, "GET", "/fhir/DocumentReference/doc-b", None, {}, 200),
    (Role.transcriptionist, "POST", "/fhir/DocumentReference", DOC_BODY, {}, 201),
    (Role.transcriptionist, "POST", "/fhir/Observation", OBS_BODY, {}, 403),
    (Role.transcriptionist, "POST", "/security/break-the-glass",
     {"patient": "pat-v", "reason": "typing the dictation", "minutes": 5}, {}, 403),
    (Role.coder, "GET", "/fhir/Observation/obs-a1", None, {}, 200),
    (Role.coder, "POST", "/fhir/Condition", CONDITION_BODY, {}, 201),
    (Role.coder, "POST", "/fhir/Observation", OBS_BODY, {}, 403),
    (Role.coder, "DELETE", "/fhir/Observation/obs-a1", None, {}, 403),
    (Role.coder, "GET", "/fhir/$export", None, EXPORT, 403),
    (Role.cancer_registrar, "POST", "/fhir/Condition", CONDITION_BODY, {}, 201),
    (Role.cancer_registrar, "PUT", "/fhir/Encounter/enc-a",
     {"resourceType": "Encounter", "id": "enc-a", "status": "cancelled",
      "class": {"code": "AMB"}, "subject": {"reference": "Patient/pat-a"}}, {}, 403),
    (Role.physician, "POST", "/fhir/Observation", OBS_BODY, {}, 201),
    (Role.physician, "DELETE", "/fhir/Observation/obs-a1", None, {}, 403),
    (Role.physician, "GET", "/fhir/$export", None, EXPORT, 403),
    (Role.physician, "GET", "/audit/entries", None, {}, 403),
    (Role.analyst, "GET", "/fhir/Observation?code=2345-7", None, {}, 200),
    (Role.analyst, "POST", "/fhir/Observation", OBS_BODY, {}, 403),
    (Role.analyst, "GET", "/fhir/$export", None, EXPORT, 202),
    (Role.analyst, "POST", "/security/break-the-glass",
     {"patient": "pat-v", "reason": "looking at trends", "minutes": 5}, {}, 403),
    (Role.roi_specialist, "POST", "/him/disclosures", DISCLOSURE, {}, 201),
    (Role.roi_specialist, "GET", "/him/disclosures?patient=pat-a", None, {}, 200),
    (Role.roi_specialist, "GET", "/audit/entries", None, {}, 403),
    (Role.roi_specialist, "PUT", "/fhir/Patient/pat-a",
     {"resourceType": "Patient", "id": "pat-a"}, {}, 403),
    (Role.privacy_officer, "GET", "/audit/entries", None, {}, 200),
    (Role.privacy_officer, "GET", "/security/break-the-glass", None, {}, 200),
    (Role.privacy_officer, "POST", "/fhir/Observation", OBS_BODY, {}, 403),
    (Role.privacy_officer, "POST", "/him/disclosures", DISCLOSURE, {}, 403),
    (Role.him_technician, "DELETE", "/fhir/Encounter/enc-a", None, {}, 204),
    (Role.him_technician, "POST", "/him/disclosures", DISCLOSURE, {}, 201),
    (Role.him_technician, "GET", "/audit/entries", None, {}, 403),
    (Role.administrator, "GET", "/audit/verify", None, {}, 200),
    (Role.administrator, "DELETE", "/fhir/Observation/obs-a1", None, {}, 204),
]


@pytest.mark.parametrize(("role", "method", "path", "body", "headers", "expected"), MATRIX,
                         ids=[f"{r.value}-{m}-{p}" for r, m, p, *_ in MATRIX])
def test_role_matrix(site: Site, role: Role, method: str, path: str, body: Any,
                     headers: dict[str, str], expected: int) -> None:
    token = site.token(f"user-{role.value}", role)
    with site.client(token) as client:
        if body is not None and not path.startswith("/fhir"):
            headers = {**headers, "Content-Type": "application/json"}
        response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == expected, response.text[:400]
    if expected == 403:
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "forbidden"


def test_token_scopes_narrow_what_the_role_allows(site: Site) -> None:
    token = site.token("dr-narrow", Role.physician, "user/Observation.rs")
    with site.client(token) as client:
        assert client.get("/fhir/Observation/obs-a1").status_code == 200
        assert client.get("/fhir/Patient/pat-a").status_code == 403
        assert client.post("/fhir/Observation", json=OBS_BODY).status_code == 403


def test_a_service_token_is_held_to_its_system_scopes(site: Site) -> None:
    secret = site.security.clients.register("lab-feed", "system/Observation.rs")
    token = site.security.clients.token_for_client("lab-feed", secret)
    with site.client(token) as client:
        assert client.get("/fhir/Observation?code=2345-7").status_code == 200
        assert client.post("/fhir/Observation", json=OBS_BODY).status_code == 403
        assert client.get("/fhir/Encounter/enc-a").status_code == 403
    site.security.clients.disable("lab-feed")
    with site.client(token) as client:
        assert client.get("/fhir/Observation/obs-a1").status_code == 401


# ----------------------------------------------------------------------------- compartments
@pytest.fixture
def patient_a(site: Site) -> Iterator[TestClient]:
    """A physician's token limited to patient A (SMART patient/ scopes)."""
    token = site.token("dr-a", Role.physician, "patient/*.cruds", patient="pat-a")
    with site.client(token) as client:
        yield client


@pytest.mark.parametrize("path", [
    "/fhir/Patient/pat-b", "/fhir/Patient/no-such-patient", "/fhir/Observation/obs-b1",
    "/fhir/Observation/no-such-observation", "/fhir/Encounter/enc-b",
    "/fhir/DocumentReference/doc-b", "/fhir/Binary/bin-b", "/fhir/Group/grp",
    "/fhir/Observation/obs-b1/_history", "/fhir/Observation/obs-b1/_history/1",
    "/fhir/Observation/no-such-observation/_history",
    "/fhir/Patient/pat-b/$everything", "/fhir/Patient/no-such-patient/$everything",
    "/fhir", "/fhir/_history", "/fhir/Observation/_history",
])
def test_patient_token_gets_403_for_others_whether_or_not_they_exist(
        patient_a: TestClient, path: str) -> None:
    response = patient_a.get(path)
    assert response.status_code == 403, response.text[:300]
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert "Bravo" not in response.text  # the refusal carries nothing of the record


@pytest.mark.parametrize("path", [
    "/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/grp/$export",
])
def test_patient_token_cannot_bulk_export(site: Site, path: str) -> None:
    # An analyst may export; limited to one patient, not even an analyst may.
    token = site.token("analyst-a", Role.analyst, "patient/*.rs", patient="pat-a")
    with site.client(token) as client:
        response = client.get(path, headers=EXPORT)
    assert response.status_code == 403


def test_patient_token_reads_its_own_patient(patient_a: TestClient) -> None:
    assert patient_a.get("/fhir/Patient/pat-a").status_code == 200
    assert patient_a.get("/fhir/Observation/obs-a1").status_code == 200
    assert patient_a.get("/fhir/Observation/obs-a1/_history/1").status_code == 200
    assert patient_a.get("/fhir/Binary/bin-a").status_code == 200
    assert patient_a.get("/fhir/Practitioner/prac1").status_code == 200  # shared, no PHI


@pytest.mark.parametrize(("query", "expected"), [
    ("/fhir/Observation", {"obs-a1"}),
    ("/fhir/Observation?subject=Patient/pat-b", set()),
    ("/fhir/Observation?patient=pat-b", set()),
    ("/fhir/Observation?code=2345-7", {"obs-a1"}),
    ("/fhir/Observation?subject.name=Bravo", set()),
    ("/fhir/Observation?subject:Patient.name=Bravo", set()),
    ("/fhir/Patient", {"pat-a"}),
    ("/fhir/Patient?_id=pat-b", set()),
    ("/fhir/Patient?_id=pat-a,pat-b,pat-v", {"pat-a"}),
    ("/fhir/Patient?_has:Observation:subject:code=2345-7", {"pat-a"}),
    ("/fhir/Patient?_has:Observation:patient:_id=obs-b1", set()),
    ("/fhir/Observation?_include=Observation:subject", {"obs-a1", "pat-a"}),
    ("/fhir/Observation?_include=Observation:subject&_include=Observation:performer",
     {"obs-a1", "pat-a", "prac1"}),
    ("/fhir/Patient?_revinclude=Observation:subject", {"pat-a", "obs-a1"}),
    ("/fhir/Practitioner?_revinclude=Observation:performer", {"prac1", "obs-a1"}),
    ("/fhir/Practitioner?_revinclude=Observation:performer&_include:iterate="
     "Observation:subject", {"prac1", "obs-a1", "pat-a"}),
    ("/fhir/Encounter?_revinclude=Observation:encounter", {"enc-a"}),
    ("/fhir/DocumentReference", set()),
    ("/fhir/Group", set()),  # A is a member, but so is B: the group is B's data too
])
def test_patient_token_search_never_leaks(patient_a: TestClient, query: str,
                                          expected: set[str]) -> None:
    response = patient_a.get(query)
    assert response.status_code == 200, response.text[:300]
    assert ids(response.json()) == expected
    assert_nothing_foreign(response)


def test_patient_token_counts_only_its_compartment(patient_a: TestClient) -> None:
    # Three patients hold this code; A's restricted 42 CFR Part 2 result is the second.
    counted = patient_a.get("/fhir/Observation?code=2345-7&_summary=count").json()
    assert counted["total"] == 2
    assert patient_a.get("/fhir/Observation?subject=Patient/pat-b&_summary=count"
                         ).json()["total"] == 0


def test_patient_token_search_by_post_never_leaks(patient_a: TestClient) -> None:
    response = patient_a.post("/fhir/Observation/_search", content="subject=Patient/pat-b",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert ids(response.json()) == set()


def test_patient_token_everything_holds_only_its_own_record(patient_a: TestClient) -> None:
    response = patient_a.get("/fhir/Patient/pat-a/$everything")
    assert response.status_code == 200
    found = ids(response.json())
    assert {"pat-a", "obs-a1", "enc-a"} <= found
    assert "obs-a2" not in found  # 42 CFR Part 2: withheld without break-the-glass
    assert_nothing_foreign(response)


def test_patient_token_batch_reads_are_checked_entry_by_entry(patient_a: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pat-a"}},
        {"request": {"method": "GET", "url": "Patient/pat-b"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pat-b"}},
        {"request": {"method": "GET", "url": "Observation/obs-b1/_history/1"}},
    ]}
    response = patient_a.post("/fhir", json=bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["resource"]["id"] == "pat-a"
    assert entries[1]["response"]["status"] == "403"
    assert ids(entries[2]["resource"]) == set()
    assert entries[3]["response"]["status"] == "403"
    assert "Bravo" not in response.text


def test_patient_token_cannot_write_into_another_compartment(site: Site,
                                                             patient_a: TestClient) -> None:
    before = site.store.row_counts()
    foreign = dict(OBS_BODY, subject={"reference": "Patient/pat-b"})
    assert patient_a.post("/fhir/Observation", json=foreign).status_code == 403
    hijack = dict(observation("obs-b1", "pat-a"))
    assert patient_a.put("/fhir/Observation/obs-b1", json=hijack).status_code == 403
    assert patient_a.delete("/fhir/Observation/obs-b1").status_code == 403
    assert patient_a.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    ).status_code == 403  # no subject: in nobody's compartment
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Observation"}, "resource": OBS_BODY},
        {"request": {"method": "POST", "url": "Observation"}, "resource": foreign},
    ]}
    assert patient_a.post("/fhir", json=transaction).status_code == 403
    assert site.store.row_counts() == before  # nothing stored by any refusal
    created = patient_a.post("/fhir/Observation", json=OBS_BODY)
    assert created.status_code == 201


def test_patient_token_refusals_are_audited(site: Site, patient_a: TestClient) -> None:
    patient_a.get("/fhir/Patient/pat-b")
    entries = site.security.trail.entries(user_id="dr-a", limit=10)
    assert [(e.action, e.outcome, e.resource_type, e.resource_id) for e in entries] == [
        ("read", "denied", "Patient", "pat-b")]


def test_sensitive_records_are_withheld_from_searches_and_refused_on_read(site: Site) -> None:
    token = site.token("dr-any", Role.physician)
    with site.client(token) as client:
        found = client.get("/fhir/Observation?code=2345-7").json()
        assert ids(found) == {"obs-a1", "obs-b1"}
        outcome = [e for e in found["entry"] if e["search"]["mode"] == "outcome"]
        assert "2 restricted entries were withheld" in json.dumps(outcome)
        refused = client.get("/fhir/Observation/obs-a2")
        assert refused.status_code == 403
        assert "break-the-glass" in refused.json()["issue"][0]["diagnostics"]
        assert client.get("/fhir/Patient/pat-v").status_code == 403
        assert client.get("/fhir/Observation/obs-v1").status_code == 403  # VIP's chart
        opened = client.post("/security/break-the-glass", json={
            "patient": "pat-v", "reason": "patient unresponsive in the emergency department",
            "minutes": 30}, headers={"Content-Type": "application/json"})
        assert opened.status_code == 201
        assert client.get("/fhir/Observation/obs-v1").status_code == 200
        assert client.get("/fhir/Observation/obs-a2").status_code == 403  # other patient


def test_deidentified_extract_for_analysts_only_without_phi_or_restricted_records(
        site: Site) -> None:
    analyst = site.token("analyst-1", Role.analyst)
    json_header = {"Content-Type": "application/json"}
    with site.client(analyst) as client:
        response = client.post("/him/deid-export", json={"patients": ["pat-a", "pat-v"]},
                               headers=json_header)
        assert response.status_code == 200, response.text[:300]
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        assert int(response.headers["x-withheld-restricted"]) >= 2  # Part 2 result, VIP, group
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        types = sorted(r["resourceType"] for r in lines)
        assert types.count("Patient") == 1 and "Observation" in types
        for marker in ("Alpha", "pat-a", "obs-a1", "obs-a2", "Victor", "pat-v"):
            assert marker not in response.text
        for bad in ({}, {"patients": []}, {"patients": "pat-a"}, {"patients": [1]},
                    {"patients": ["x"] * 101}):
            refused = client.post("/him/deid-export", json=bad, headers=json_header)
            assert refused.status_code == 400, bad
        assert client.post("/him/deid-export", json={"patients": ["nobody"]},
                           headers=json_header).status_code == 400
    with site.client(site.token("dr-deid", Role.physician)) as client:
        assert client.post("/him/deid-export", json={"patients": ["pat-a"]},
                           headers=json_header).status_code == 403


def test_changed_audit_settings_are_audited_at_start(store: Store, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, store.url)
    security = make_security(settings, store)
    for session_minutes in (15, 15, 30):
        changed = replace(settings, session_idle_minutes=session_minutes)
        with TestClient(create_app(changed, store, security)):
            pass
    entries = security.trail.entries(action="audit-setting-change")
    assert [e.details["settings"]["sessionIdleMinutes"] for e in entries] == [15, 30]
    assert entries[0].details["first"] is True
