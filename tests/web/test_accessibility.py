"""Every workbench page passes axe-core's WCAG 2.1 A/AA rules with no serious or critical
violation, signed in as the role that uses it (the CSP blocks inline script, so the tests
inject axe through Playwright with the CSP bypassed for the check only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chartkeeper.mpi.merge import Decider, link
from tests.web.axe import violations
from tests.web.conftest import Workbench
from tests.web.support import patient_with_lab_trend
from tests.web.test_browser_flow import sign_in
from tests.web.test_mpi_pages import review_tasks


@pytest.fixture
def axe_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def check(page: Any, url: str) -> None:
    page.goto(url)
    found = violations(page)
    assert found == [], f"{url}: {found}"


def test_the_technicians_pages_are_accessible(axe_page: Any, workbench: Workbench) -> None:
    patient, _code = patient_with_lab_trend(workbench.store)
    check(axe_page, f"{workbench.url}/sign-in")
    sign_in(axe_page, workbench, "tech")
    with workbench.store.read() as txn:
        document = txn.search_params("DocumentReference", [
            ("subject", f"Patient/{patient['id']}"), ("_count", "1")]).matches[0]
    for path in ("/home", f"/patients?q={patient['name'][0]['family']}",
                 f"/patients/{patient['id']}",
                 f"/patients/{patient['id']}/documents/{document['id']}",
                 "/completion", "/amendments", "/retention", "/imports"):
        check(axe_page, f"{workbench.url}{path}")


def test_the_roi_and_physician_pages_are_accessible(axe_page: Any,
                                                    workbench: Workbench) -> None:
    sign_in(axe_page, workbench, "roi", "/roi")
    check(axe_page, f"{workbench.url}/roi")
    axe_page.context.clear_cookies()
    sign_in(axe_page, workbench, "drsmith", "/deficiencies")
    check(axe_page, f"{workbench.url}/deficiencies")


def test_the_mpi_pages_are_accessible(axe_page: Any, workbench: Workbench) -> None:
    queued = review_tasks(workbench)
    with workbench.store.write() as txn:  # a decision to undo, and an overlay to list
        for pid, born in (("mpi-a11y-1", "1950-05-05"), ("mpi-a11y-2", "1959-09-09")):
            txn.create({"resourceType": "Patient", "id": pid, "birthDate": born,
                        "name": [{"family": "Checked", "given": [pid]}]}, resource_id=pid)
        link(txn, "mpi-a11y-1", "mpi-a11y-2", Decider("tech", "him-technician", "a11y"))
    sign_in(axe_page, workbench, "tech", "/mpi")
    for path in ("/mpi", f"/mpi/reviews/{queued['open'].task}", "/mpi/history",
                 "/mpi/overlays"):
        check(axe_page, f"{workbench.url}{path}")
    axe_page.click("#run-overlay-check button")  # the check's job page, then its findings
    check(axe_page, axe_page.url)
    axe_page.click("#job-result")
    axe_page.wait_for_selector("#overlays")
    check(axe_page, axe_page.url)
