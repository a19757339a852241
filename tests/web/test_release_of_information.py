"""Release of information in the browser: an ROI specialist logs a request, records the
authorization, produces the packet (its progress shown in the page), and the disclosure
appears in the patient's accounting. Over HTTP: an expired authorization is refused, audited
and nothing is released."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from chartkeeper.chart.authorization import Party, authorization_consent, record_authorization
from chartkeeper.chart.roi import create_request
from tests.web.conftest import Workbench, screenshot
from tests.web.support import csrf_of, patient_with_lab_trend, sign_in_http
from tests.web.test_browser_flow import sign_in

TODAY = date.today()


def test_roi_specialist_releases_a_packet_that_is_accounted_for(
        page: Any, workbench: Workbench) -> None:
    patient, _code = patient_with_lab_trend(workbench.store)
    sign_in(page, workbench, "roi", "/roi")
    page.fill("#patient", patient["id"])
    page.select_option("#purpose", "LEGAL")
    page.fill("#requester_name", "Jane Counsel")
    page.fill("#requester_org", "Counsel & Partners LLP")
    page.fill("#requester_address", "1 Court Street, Springfield")
    page.fill("#record_types", "18842-5, Observation")
    screenshot(page, "10-roi-queue")
    page.click("#new-request button[type=submit]")
    page.wait_for_url(f"{workbench.url}/roi/*")
    assert page.locator("#problems").count() == 1  # no authorization on file yet
    page.fill("#signed", (TODAY - timedelta(days=3)).isoformat())
    page.fill("#expires", (TODAY + timedelta(days=180)).isoformat())
    page.fill("#auth_types", "18842-5, Observation")
    page.check("#verified")
    page.click("#new-authorization button[type=submit]")
    page.wait_for_selector("#authorization-ok")
    assert page.locator("#selection tbody tr").count() > 0
    screenshot(page, "11-roi-request")
    page.click("#release")
    page.wait_for_selector("#job[data-status=done]", timeout=60_000)
    screenshot(page, "12-roi-packet-ready")
    with page.expect_download() as download:
        page.click("#job-result")
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF")
    page.goto(f"{workbench.url}/patients/{patient['id']}/disclosures")
    row = page.locator("#disclosures tbody tr").first
    assert "Jane Counsel" in row.inner_text() and "roi" in row.inner_text()
    screenshot(page, "13-accounting-of-disclosures")
    printed = workbench.security.trail.entries(user_id="roi", action="print", limit=20)
    assert printed and printed[-1].patient_id == patient["id"]


def test_an_expired_authorization_is_refused_and_nothing_released(workbench: Workbench) -> None:
    patient, _code = patient_with_lab_trend(workbench.store)
    attorney = Party("Old Counsel", "Expired LLP")
    request_id = create_request(workbench.store, patient["id"], "LEGAL", requester=attorney,
                                recipient=attorney)
    consent_id = record_authorization(workbench.store, authorization_consent(
        patient["id"], attorney, ["LEGAL"], signed=TODAY - timedelta(days=400),
        expires=TODAY - timedelta(days=35), verified_on=TODAY - timedelta(days=400)))
    roi = sign_in_http(workbench.url, workbench.accounts["roi"])
    try:
        page = roi.get(f"/roi/{request_id}", params={"authorization": consent_id})
        assert page.status_code == 200 and "expired" in page.text
        before = len(workbench.security.disclosures.accounting(
            patient["id"], workbench.security.now()))
        refused = roi.post(f"/roi/{request_id}/release", data={
            "csrf_token": csrf_of(page.text), "authorization": consent_id})
        assert refused.status_code == 422 and "expired" in refused.text
        assert len(workbench.security.disclosures.accounting(
            patient["id"], workbench.security.now())) == before
        with workbench.store.read() as txn:
            assert txn.read("Task", request_id).get("status") != "completed"
        audited = workbench.security.trail.entries(user_id="roi", action="disclosure",
                                                    limit=50)
        assert audited[-1].outcome != "success"
        assert audited[-1].details.get("refused") == ["expired"]
        # A forged release without the form's token never reaches the checks.
        assert roi.post(f"/roi/{request_id}/release", data={
            "authorization": consent_id}).status_code == 403
    finally:
        roi.close()


def test_other_roles_cannot_release(workbench: Workbench) -> None:
    coder = sign_in_http(workbench.url, workbench.accounts["coder"])
    try:
        assert coder.get("/roi").status_code == 403
        token = csrf_of(coder.get("/home").text)
        assert coder.post("/roi", data={"csrf_token": token, "patient": "x",
                                        "purpose": "LEGAL"}).status_code == 403
    finally:
        coder.close()
