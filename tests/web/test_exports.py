"""Bulk export from the workbench: an analyst exports, watches the progress, downloads the
NDJSON; sensitive records stay behind; other roles and forged posts are refused."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.web.conftest import Workbench
from tests.web.support import csrf_of, sign_in_http


def finished(client: httpx.Client, location: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fragment = client.get(location, headers={"HX-Request": "1"}).text
        if 'data-status="running"' not in fragment:
            return fragment
        time.sleep(0.2)
    raise AssertionError("the export did not finish in 60 s")


def test_an_analyst_exports_patients_and_downloads_them(workbench: Workbench) -> None:
    analyst = sign_in_http(workbench.url, workbench.accounts["analyst"])
    try:
        form = analyst.get("/exports")
        started = analyst.post("/exports", data={"csrf_token": csrf_of(form.text),
                                                 "types": "Patient"})
        assert started.status_code == 303
        fragment = finished(analyst, started.headers["location"])
        assert 'data-status="done"' in fragment, fragment
        files_page = re.search(r'href="(/exports/[^"]+)"', fragment)
        assert files_page is not None
        listing = analyst.get(files_page.group(1))
        download = re.search(r'href="(/exports/[^"]+/Patient\.ndjson)"', listing.text)
        assert download is not None
        lines = analyst.get(download.group(1)).text.splitlines()
        patients = [json.loads(line) for line in lines]
        assert patients and all(p["resourceType"] == "Patient" for p in patients)
        assert not any(p.get("meta", {}).get("security") for p in patients)  # none sensitive
        exported = workbench.security.trail.entries(user_id="analyst", action="export",
                                                    limit=20)
        assert any(e.details.get("file") == "Patient.ndjson" for e in exported)
    finally:
        analyst.close()


def test_exports_are_refused_to_others_and_without_the_token(workbench: Workbench) -> None:
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    analyst = sign_in_http(workbench.url, workbench.accounts["analyst"])
    try:
        assert tech.get("/exports").status_code == 403
        assert analyst.post("/exports", data={"types": "Patient"}).status_code == 403
        bad = analyst.post("/exports", data={"csrf_token": csrf_of(analyst.get("/exports").text),
                                             "types": "NoSuchType"})
        assert bad.status_code == 400
    finally:
        tech.close()
        analyst.close()
