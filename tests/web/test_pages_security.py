"""The workbench's pages over HTTP: sign-in and its second factor, CSRF on every form, no open
redirect, patient data only through the access rules, and every page that shows a patient
audited. Bad input gets a clear page and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chartkeeper.api.auth import SESSION_COOKIE
from chartkeeper.web.finder import parse_query
from tests.web.conftest import PASSWORD, Workbench
from tests.web.support import csrf_of, misspell, patient_with_lab_trend, sign_in_http

VIP_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}


@pytest.fixture
def tech(workbench: Workbench) -> Iterator[httpx.Client]:
    client = sign_in_http(workbench.url, workbench.accounts["tech"])
    yield client
    client.close()


def audit(workbench: Workbench, **filters: Any) -> list[Any]:
    return workbench.security.trail.entries(limit=10_000, **filters)


def any_patient(workbench: Workbench) -> dict[str, Any]:
    with workbench.store.read() as txn:
        return txn.search_params("Patient", [("_count", "1"), ("_sort", "_id")]).matches[0]


def test_pages_without_a_session_send_the_browser_to_sign_in(workbench: Workbench) -> None:
    patient = any_patient(workbench)
    with httpx.Client(base_url=workbench.url) as anonymous:
        before = len(audit(workbench))
        answer = anonymous.get(f"/patients/{patient['id']}")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/sign-in?next=/patients/{patient['id']}"
        assert anonymous.get("/").headers["location"] == "/sign-in"
        assert len(audit(workbench)) == before  # nothing was shown, nothing to audit
        page = anonymous.get("/sign-in")
        assert page.status_code == 200 and "no-store" in page.headers["cache-control"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_sign_in_returns_to_the_page_asked_for_with_its_query(workbench: Workbench) -> None:
    account = workbench.accounts["tech"]
    with httpx.Client(base_url=workbench.url) as client:
        asked = client.get("/patients", params={"q": "smith", "page": "2"})
        assert asked.status_code == 303
        location = asked.headers["location"]
        assert location == "/sign-in?next=/patients%3Fq%3Dsmith%26page%3D2"
        form = client.get(location)
        assert 'value="/patients?q=smith&amp;page=2"' in form.text
        answer = client.post("/sign-in", data={
            "csrf_token": csrf_of(form.text), "username": account.username,
            "password": PASSWORD, "next": "/patients?q=smith&page=2"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/patients?q=smith&page=2"
        # Only a path on this site: another host in next is never followed.
        form = client.get("/sign-in", params={"next": "//evil.example/patients?q=x"})
        assert 'value="/home"' in form.text


def test_sign_in_needs_its_csrf_token_and_refusals_are_audited(workbench: Workbench) -> None:
    account = workbench.accounts["tech"]
    with httpx.Client(base_url=workbench.url) as client:
        form = client.get("/sign-in")
        fields = {"username": account.username, "password": PASSWORD, "next": "/home"}
        missing = client.post("/sign-in", data=fields)
        assert missing.status_code == 403 and "CSRF token" in missing.text
        forged = client.post("/sign-in", data={**fields, "csrf_token": "0" * 40})
        assert forged.status_code == 403 and "not valid" in forged.text
        assert SESSION_COOKIE not in client.cookies
        refused = [e for e in audit(workbench, action="login")
                   if e.details.get("csrf") == "refused"]
        assert len(refused) >= 2 and all(e.outcome != "success" for e in refused)
        good = client.post("/sign-in", data={**fields, "csrf_token": csrf_of(form.text)})
        assert good.status_code == 303 and good.headers["location"] == "/home"


def test_a_wrong_password_or_second_factor_is_refused_on_the_page(workbench: Workbench) -> None:
    doctor = workbench.accounts["drsmith"]
    with httpx.Client(base_url=workbench.url) as client:
        token = csrf_of(client.get("/sign-in").text)
        base = {"csrf_token": token, "username": doctor.username, "next": "/home"}
        wrong = client.post("/sign-in", data={**base, "password": "not the password"})
        assert wrong.status_code == 401 and "sign-in-error" in wrong.text
        no_code = client.post("/sign-in", data={**base, "password": PASSWORD})
        assert no_code.status_code == 401 and 'id="totp"' in no_code.text
        assert "required" in no_code.text.split('id="totp"')[1].split(">")[0]
        bad_code = client.post("/sign-in", data={**base, "password": PASSWORD, "totp": "000000"})
        assert bad_code.status_code == 401
        assert SESSION_COOKIE not in client.cookies


def test_after_sign_in_only_a_path_on_this_site_is_followed(workbench: Workbench) -> None:
    account = workbench.accounts["tech"]
    for target in ("https://evil.example/x", "//evil.example/x", "javascript:alert(1)"):
        with httpx.Client(base_url=workbench.url) as client:
            token = csrf_of(client.get("/sign-in").text)
            answer = client.post("/sign-in", data={
                "csrf_token": token, "username": account.username, "password": PASSWORD,
                "next": target})
            assert answer.headers["location"] == "/home", target


def test_a_forged_sign_out_keeps_the_session(workbench: Workbench, tech: httpx.Client) -> None:
    assert tech.post("/sign-out", data={}).status_code == 403
    assert tech.get("/home").status_code == 200
    home = tech.get("/home")
    assert tech.post("/sign-out", data={"csrf_token": csrf_of(home.text)}).status_code == 303
    assert tech.get("/home").status_code == 303  # signed out: back to sign-in


def test_chart_and_search_are_audited_with_the_patient(workbench: Workbench,
                                                       tech: httpx.Client) -> None:
    patient, _ = patient_with_lab_trend(workbench.store)
    family = patient["name"][0]["family"]
    results = tech.get("/patients", params={"q": misspell(family)}, headers={"HX-Request": "1"})
    assert results.status_code == 200 and f"/patients/{patient['id']}" in results.text
    assert "<html" not in results.text  # htmx gets the rows only
    chart = tech.get(f"/patients/{patient['id']}")
    assert chart.status_code == 200 and family in chart.text
    reads = audit(workbench, patient_id=patient["id"], user_id="tech", action="read")
    assert any(e.details.get("page") == "chart" for e in reads)
    searches = [e for e in audit(workbench, user_id="tech", action="search")
                if e.details.get("page") == "patient search"]
    assert searches and family not in str(searches[-1].details)  # no search text in the trail


def test_ssn_is_masked_on_the_chart(workbench: Workbench, tech: httpx.Client) -> None:
    patient = any_patient(workbench)
    ssn = next((i["value"] for i in patient.get("identifier", [])
                if i.get("system") == "http://hl7.org/fhir/sid/us-ssn"), None)
    if ssn is None:
        pytest.skip("the synthetic patient has no SSN")
    chart = tech.get(f"/patients/{patient['id']}").text
    assert ssn not in chart and f"***-**-{ssn[-4:]}" in chart


def test_a_restricted_chart_is_refused_and_hidden_from_search(workbench: Workbench,
                                                              tech: httpx.Client) -> None:
    with workbench.store.write() as txn:
        vip = txn.create({"resourceType": "Patient", "meta": {"security": [VIP_LABEL]},
                          "name": [{"family": "Zyxwvut", "given": ["Famous"]}],
                          "birthDate": "1960-01-01"}).resource
    workbench.security.forget_restricted_patients()
    refused = tech.get(f"/patients/{vip['id']}")
    assert refused.status_code == 403 and "break-the-glass" in refused.text
    assert "Zyxwvut" not in refused.text
    denied = audit(workbench, patient_id=vip["id"], user_id="tech")
    assert denied and denied[-1].outcome != "success"
    search = tech.get("/patients", params={"q": "Zyxwvut"})
    assert "Zyxwvut</a>" not in search.text and "1 restricted not shown" in search.text


@pytest.mark.parametrize("path", ["/patients/no-such-patient",
                                  "/patients/x/documents/no-such-document"])
def test_unknown_records_get_a_clear_page(tech: httpx.Client, path: str) -> None:
    answer = tech.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "Not found" in answer.text


def test_a_document_of_another_patient_is_not_shown_under_this_one(
        workbench: Workbench, tech: httpx.Client) -> None:
    with workbench.store.read() as txn:
        doc = txn.search_params("DocumentReference", [("_count", "1")]).matches[0]
        others = txn.search_params("Patient", [("_count", "50")]).matches
    owner = doc["subject"]["reference"].split("/")[1]
    other = next(p["id"] for p in others if p["id"] != owner)
    assert tech.get(f"/patients/{other}/documents/{doc['id']}").status_code == 404
    assert tech.get(f"/patients/{owner}/documents/{doc['id']}").status_code == 200


def test_query_parsing() -> None:
    query = parse_query("Smiht, Jon 04/02/1961 MRN123")
    assert query.names == ["Smiht", "Jon"] and query.birth_date == "1961-04-02"
    assert query.identifiers == ["MRN123"]
    assert parse_query("13/45/2000").birth_date is None  # not a date: an identifier
    assert parse_query("   ").empty
