"""The workbench in Debian's chromium, driven by Playwright: a technician signs in, finds a
patient by a misspelled name, opens the chart, sees a lab trend and opens a document."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import Workbench, screenshot
from tests.web.support import misspell, patient_with_lab_trend


def sign_in(page: Any, workbench: Workbench, username: str, next_path: str = "/home") -> None:
    account = workbench.accounts[username]
    page.goto(f"{workbench.url}{next_path}")
    assert "/sign-in" in page.url  # no session: the page sends the browser to sign in
    screenshot(page, "01-sign-in")
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    if account.totp_secret:
        page.fill("#totp", account.code())
    page.click("button[type=submit]")
    page.wait_for_url(f"{workbench.url}{next_path}")


def test_technician_finds_a_misspelled_patient_and_reads_the_chart(
        page: Any, workbench: Workbench) -> None:
    patient, code = patient_with_lab_trend(workbench.store)
    family = patient["name"][0]["family"]
    given = patient["name"][0]["given"][0]
    sign_in(page, workbench, "tech")
    assert page.locator("h1").inner_text() == "Your work"
    screenshot(page, "02-home")

    page.keyboard.press("/")  # the keyboard shortcut to the patient search
    page.wait_for_url(f"{workbench.url}/patients")
    page.fill("#q", f"{given} {misspell(family)}")
    row = page.locator("#results tbody tr").first
    row.wait_for()
    assert family in row.inner_text()
    screenshot(page, "03-patient-search")

    page.click(f"#results a[href='/patients/{patient['id']}']")
    page.wait_for_url(f"{workbench.url}/patients/{patient['id']}")
    assert family in page.locator("#patient-name").inner_text()
    trend = page.locator(f"#results tr[data-code$='|{code}'] svg.trend")
    assert trend.count() == 1
    assert "results from" in (trend.get_attribute("aria-label") or "")
    screenshot(page, "04-chart")

    document = page.locator("#documents a").first
    title = document.inner_text()
    document.click()
    page.wait_for_selector("pre.note")
    assert page.locator("h1").inner_text() == title
    assert len(page.locator("pre.note").inner_text()) > 100
    screenshot(page, "05-document")


def test_a_tablet_sized_window_shows_the_chart(page: Any, workbench: Workbench) -> None:
    patient, _code = patient_with_lab_trend(workbench.store)
    page.set_viewport_size({"width": 820, "height": 1180})
    sign_in(page, workbench, "tech", f"/patients/{patient['id']}")
    assert page.locator("#patient-name").is_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 820, f"the chart is {width} px wide on an 820 px tablet"
    screenshot(page, "06-chart-tablet")
