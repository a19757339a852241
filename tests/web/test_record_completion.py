"""Record completion in the browser: a technician runs the analysis and assigns a deficiency;
the physician finds it in their queue, signs the document, and it is locked. Over HTTP: the
deficiency checks agree with the synthetic hospital's answer key, and forged or wrong-role
posts are refused and audited."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx

from chartkeeper.chart.signing import is_locked
from chartkeeper.security.practitioners import practitioner_of
from tests.web.conftest import Workbench, screenshot
from tests.web.support import csrf_of, sign_in_http
from tests.web.test_browser_flow import sign_in


def doctor_of(workbench: Workbench) -> str:
    with workbench.store.read() as txn:
        practitioner = practitioner_of(txn, "drsmith")
    assert practitioner is not None
    return practitioner


def test_technician_assigns_and_physician_signs_off(page: Any, workbench: Workbench) -> None:
    sign_in(page, workbench, "tech", "/completion")
    page.click("#run-analysis")
    page.wait_for_selector("#sync-result")
    assert "Delinquent record rate" in page.locator("#summary").inner_text()
    row = page.locator("#worklist tbody tr", has_text="Sign document").first
    task_id = row.get_attribute("data-task")
    doctor = doctor_of(workbench)
    row.locator("select").select_option(f"Practitioner/{doctor}")
    screenshot(page, "07-record-completion")
    row.locator("button", has_text="Assign").click()
    page.wait_for_url(f"{workbench.url}/completion?assigned=1")
    with workbench.store.read() as txn:
        task = txn.read("Task", str(task_id))
    assert task["owner"] == {"reference": f"Practitioner/{doctor}"}
    document_id = task["focus"]["reference"].split("/")[1]

    page.context.clear_cookies()
    sign_in(page, workbench, "drsmith")
    page.click("a[href='/deficiencies']")
    mine = page.locator(f"#my-deficiencies tr[data-task='{task_id}'] a").first
    screenshot(page, "08-my-deficiencies")
    mine.click()
    assert "not signed" in page.locator("#signature").inner_text()
    page.click("#sign")
    page.wait_for_selector("#signed-notice")
    assert "locked" in page.locator("#signature").inner_text()
    screenshot(page, "09-signed-document")
    with workbench.store.read() as txn:
        assert is_locked(txn.read("DocumentReference", document_id))
        assert txn.read("Task", str(task_id))["status"] == "completed"
    signed = workbench.security.trail.entries(user_id="drsmith", action="update", limit=50)
    assert any(e.details.get("change") == "sign" and e.outcome == "success" for e in signed)


def test_deficiencies_found_agree_with_the_answer_key(workbench: Workbench) -> None:
    """Unsigned notes and missing discharge summaries of the synthetic hospital, as the
    completion analysis finds them, against its answer key (precision and recall)."""
    from chartkeeper.chart.completion.service import analyze

    found = {(d.rule, d.document or d.encounter) for d in analyze(workbench.store)
             if d.kind in ("unsigned", "missing")}
    with workbench.store.read() as txn:
        documents = txn.search_params("DocumentReference", [("_count", "5000")]).matches
        encounters = txn.search_params("Encounter", [("_count", "5000")]).matches
    doc_ids = {d["masterIdentifier"]["value"]: f"DocumentReference/{d['id']}"
               for d in documents if d.get("masterIdentifier")}
    visit_ids = {i["value"]: f"Encounter/{e['id']}" for e in encounters
                 for i in e.get("identifier", [])}
    expected = set()
    for patient in workbench.answer_key():
        for encounter in patient.get("encounters", []):
            for document in encounter.get("documents", []):
                if document.get("deficiency") == "unsigned":
                    expected.add(("authentication", doc_ids[document["document"]]))
                elif document.get("deficiency") == "missing":
                    expected.add(("discharge-summary", visit_ids[encounter["encounter"]]))
    # The browser test may have signed one by now: count only what is still unsigned.
    with workbench.store.read() as txn:
        signed_since = {("authentication", ref) for _, ref in expected
                        if ref.startswith("DocumentReference/")
                        and is_locked(txn.read("DocumentReference", ref.split("/")[1]))}
    # ... and the discharge summaries a physician has written here since (no masterIdentifier).
    written_since = {("discharge-summary", e["reference"]) for d in documents
                     if not d.get("masterIdentifier")
                     for e in (d.get("context") or {}).get("encounter", [])}
    expected -= signed_since | written_since
    true = len(found & expected)
    precision = true / len(found) if found else 1.0
    recall = true / len(expected) if expected else 1.0
    print(f"deficiencies: found {len(found)}, expected {len(expected)}, "
          f"precision {precision:.3f}, recall {recall:.3f}")
    assert expected and precision == 1.0 and recall == 1.0


def test_forged_and_wrong_role_posts_are_refused(workbench: Workbench) -> None:
    coder = sign_in_http(workbench.url, workbench.accounts["coder"])
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    try:
        with workbench.store.read() as txn:
            unsigned = txn.search_params("DocumentReference", [
                ("authenticator:missing", "true"), ("_count", "1")]).matches[0]
        patient = unsigned["subject"]["reference"].split("/")[1]
        path = f"/patients/{patient}/documents/{unsigned['id']}/sign"
        token = csrf_of(tech.get("/home").text)
        # No CSRF token: refused before anything else.
        assert tech.post(path, data={}).status_code == 403
        # A technician is not a physician: HIM does not sign for doctors.
        refused = tech.post(path, data={"csrf_token": token})
        assert refused.status_code == 403 and "physician" in refused.text
        coder_token = csrf_of(coder.get("/home").text)
        assert coder.post("/completion/run", data={"csrf_token": coder_token}
                          ).status_code == 403
        assert coder.get("/completion").status_code == 403
        with workbench.store.read() as txn:
            again = txn.read("DocumentReference", unsigned["id"])
        assert again["meta"]["versionId"] == unsigned["meta"]["versionId"]
        denied = [e for e in workbench.security.trail.entries(limit=10_000)
                  if e.user_id in ("tech", "coder") and e.outcome != "success"]
        assert len(denied) >= 4
    finally:
        coder.close()
        tech.close()


def test_a_signed_document_offers_an_addendum_not_an_edit(workbench: Workbench) -> None:
    doctor = sign_in_http(workbench.url, workbench.accounts["drsmith"])
    try:
        with workbench.store.read() as txn:
            mine = txn.search_params("DocumentReference", [
                ("author", f"Practitioner/{doctor_of(workbench)}"),
                ("authenticator:missing", "false"), ("_count", "1")]).matches
        if not mine:
            return
        document = mine[0]
        patient = document["subject"]["reference"].split("/")[1]
        page = doctor.get(f"/patients/{patient}/documents/{document['id']}")
        assert 'id="sign"' not in page.text and 'name="text"' in page.text
        added = doctor.post(f"/patients/{patient}/documents/{document['id']}/addendum",
                            data={"csrf_token": csrf_of(page.text),
                                  "text": "Corrected dose: 5 mg."})
        assert added.status_code == 303
        shown = doctor.get(added.headers["location"])
        assert "Corrected dose: 5 mg." in shown.text and "adds to" in shown.text
    finally:
        doctor.close()


def test_the_completion_pages_need_a_session(workbench: Workbench) -> None:
    with httpx.Client(base_url=workbench.url) as anonymous:
        assert anonymous.get("/completion").status_code == 303
        assert anonymous.post("/completion/run").status_code == 303


def test_a_physician_writes_a_missing_document_from_the_queue(workbench: Workbench) -> None:
    from chartkeeper.chart.completion.service import analyze, assign_task, sync_tasks

    sync_tasks(workbench.store, analyze(workbench.store), date.today())
    with workbench.store.read() as txn:
        missing = txn.search_params("Task", [
            ("code", "urn:chartkeeper:deficiency|dictate-discharge-summary"),
            ("status", "requested"), ("_count", "1")]).matches
    assert missing, "the synthetic hospital has no missing discharge summary"
    task_id = missing[0]["id"]
    assign_task(workbench.store, task_id, doctor_of(workbench), "tech")
    doctor = sign_in_http(workbench.url, workbench.accounts["drsmith"])
    try:
        queue = doctor.get("/deficiencies")
        assert f"/deficiencies/{task_id}/write" in queue.text
        form = doctor.get(f"/deficiencies/{task_id}/write")
        written = doctor.post(f"/deficiencies/{task_id}/write", data={
            "csrf_token": csrf_of(form.text),
            "text": "Discharge summary: admitted for pneumonia, treated, discharged home."})
        assert written.status_code == 303
        assert "written, signed and filed" in doctor.get(written.headers["location"]).text
        with workbench.store.read() as txn:
            task = txn.read("Task", task_id)
        assert task["status"] == "completed"
        document = task["output"][0]["valueReference"]["reference"]
        with workbench.store.read() as txn:
            assert is_locked(txn.read("DocumentReference", document.split("/")[1]))
    finally:
        doctor.close()
