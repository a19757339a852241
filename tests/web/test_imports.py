"""Importing from the workbench: HIM uploads FHIR and HL7 v2 files, the import runs in the
background with its progress in the page, bad files are rejected by name, the uploads are not
kept, and other roles, foreign file kinds and forged posts are refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.web.conftest import Workbench, screenshot
from tests.web.support import csrf_of, sign_in_http
from tests.web.test_browser_flow import sign_in

PATIENT = {"resourceType": "Patient", "id": "upload-1",
           "name": [{"family": "Uploaded", "given": ["Una"]}], "birthDate": "1980-02-03"}


def wait_for_job(client: httpx.Client, location: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fragment = client.get(location, headers={"HX-Request": "1"}).text
        if 'data-status="running"' not in fragment:
            return fragment
        time.sleep(0.2)
    raise AssertionError("the import did not finish in 60 s")


def test_upload_fhir_and_hl7_files_with_progress(workbench: Workbench,
                                                 shared_data: Path) -> None:
    hl7 = shared_data / "hl7v2" / "ms_fhir_converter_samples" / "ADT-A01-01.hl7"
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    try:
        form = tech.get("/imports")
        files = [("files", ("patient.json", json.dumps(PATIENT).encode(), "application/json")),
                 ("files", ("ADT-A01-01.hl7", hl7.read_bytes(), "text/plain")),
                 ("files", ("broken.json", b"{not json", "application/json"))]
        started = tech.post("/imports", data={"csrf_token": csrf_of(form.text)}, files=files)
        assert started.status_code == 303 and started.headers["location"].startswith("/jobs/")
        result = wait_for_job(tech, started.headers["location"])
        assert 'data-status="done"' in result, result
        assert "3 files" in result and "1 rejected" in result and "broken.json" in result
        with workbench.store.read() as txn:
            assert txn.read("Patient", "upload-1")["name"][0]["family"] == "Uploaded"
        assert not any((workbench.home / "uploads").rglob("*.json"))  # not kept
        again = tech.post("/imports", data={"csrf_token": csrf_of(form.text)}, files=files[:1])
        assert "1 imported before" in wait_for_job(tech, again.headers["location"])
        created = workbench.security.trail.entries(user_id="tech", action="create", limit=50)
        assert any(e.details.get("files") == 3 for e in created)
    finally:
        tech.close()


def test_bad_uploads_are_refused(workbench: Workbench) -> None:
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    coder = sign_in_http(workbench.url, workbench.accounts["coder"])
    try:
        token = csrf_of(tech.get("/imports").text)
        exe = tech.post("/imports", data={"csrf_token": token},
                        files=[("files", ("tool.exe", b"MZ", "application/octet-stream"))])
        assert exe.status_code == 400 and "tool.exe" in exe.text
        none = tech.post("/imports", data={"csrf_token": token})
        assert none.status_code == 400
        forged = tech.post("/imports", files=[("files", ("p.json", b"{}", "application/json"))])
        assert forged.status_code == 403
        assert coder.get("/imports").status_code == 403
        other = tech.get("/jobs/not-a-job")
        assert other.status_code == 404
    finally:
        tech.close()
        coder.close()


def test_the_import_page_in_the_browser(page: Any, workbench: Workbench,
                                        tmp_path: Path) -> None:
    upload = tmp_path / "patient-2.json"
    upload.write_text(json.dumps({**PATIENT, "id": "upload-2"}))
    sign_in(page, workbench, "tech", "/imports")
    page.set_input_files("#files", str(upload))
    page.click("#import button[type=submit]")
    page.wait_for_selector("#job[data-status=done]", timeout=60_000)
    assert "1 created" in page.locator("#job").inner_text()
    screenshot(page, "14-import-done")
