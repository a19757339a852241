"""The coder's work in chromium and over HTTP: the queue of unbilled encounters, an inpatient
stay's worksheet with the evidence marked in its notes, decisions (accept, reject, edit through
the code search, add through the search, present on admission, a procedure, sequencing), the
edits check, finalization and the stored Claim; an invalid code shown on the page with nothing
stored; the form without JavaScript; the reports; and roles without coding refused.

The hospital is the coding tests' one (ten patients of seed 9 seen up to 1 September 2026, one
inpatient stay in fiscal year 2026, ICD-10-CM and ICD-10-PCS FY2026), served by uvicorn."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest

from chartkeeper.api.app import create_app
from chartkeeper.coding import codesets, service
from chartkeeper.coding.worksheet import claim_id
from chartkeeper.coding.worksheet_view import worksheet
from chartkeeper.security.identity import Role
from chartkeeper.security.services import SecurityServices
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.generate import generate
from tests.api.conftest import CHEAP_HASHER, free_port, served_on
from tests.coding.conftest import AS_OF, FY2026, PATIENTS, SEED, coding_rows, import_pcs
from tests.web.axe import violations
from tests.web.conftest import Account, add_account, screenshot
from tests.web.support import csrf_of, sign_in_http

ROLES = {"coder": Role.coder, "tech": Role.him_technician, "typist": Role.transcriptionist}
CPAP = ("Assistance of Respiratory Ventilation, Less than 24 Consecutive Hours, Continuous "
        "Positive Airway Pressure")


@dataclass
class Coding:
    url: str
    store: Store
    security: SecurityServices
    accounts: dict[str, Account]
    stay: str  # the inpatient stay of fiscal year 2026
    visits: list[str]  # office visits of fiscal year 2026 with a note, oldest first


def _day(encounter: dict[str, Any]) -> str:
    period = encounter["period"]
    return str(period.get("end") or period["start"])[:10]


@pytest.fixture(scope="module")
def coding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coding]:
    root = tmp_path_factory.mktemp("coding-work")
    generate(root / "synth", PATIENTS, SEED, output_format="bundles", as_of=AS_OF)
    store = Store(f"sqlite:///{root / 'chartkeeper.sqlite'}")
    store.create_schema()
    summary = Importer(store).import_files(find_files([root / "synth" / "bundles"]))
    assert summary.rejected == 0, summary.problems[:3]
    codesets.ensure_packaged(store.engine)
    import_pcs(store)
    with store.read() as txn:
        encounters = txn.search_params("Encounter", [("_count", "1000")]).matches
        documented = {ref["reference"].split("/")[1]
                      for doc in txn.search_params("DocumentReference",
                                                   [("_count", "1000")]).matches
                      for ref in (doc.get("context") or {}).get("encounter", [])}
    start, end = (d.isoformat() for d in FY2026)
    in_fy = sorted((e for e in encounters if start <= _day(e) <= end), key=_day)
    [stay] = [e["id"] for e in in_fy if e["class"]["code"] == "IMP"]
    visits = [e["id"] for e in in_fy if e["class"]["code"] == "AMB" and e["id"] in documented]
    # The suggestion engine and the search index load once per process (seconds): now, not
    # under the browser's timeout.
    worksheet(store, stay)
    service.search(store.engine, "htn")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(home=root / "home", database_url=store.url, base_url=f"{url}/fhir")
    security = SecurityServices.build(settings, store.engine, hasher=CHEAP_HASHER)
    accounts = {name: add_account(security, name, role) for name, role in ROLES.items()}
    try:
        with served_on(create_app(settings, store, security), port):
            yield Coding(url, store, security, accounts, stay, visits)
    finally:
        store.dispose()




def sign_in(page: Any, coding: Coding, username: str, next_path: str) -> None:
    account = coding.accounts[username]
    page.goto(f"{coding.url}{next_path}")
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{coding.url}{next_path.split('?')[0]}")


def row(page: Any, table: str, code: str) -> Any:
    return page.locator(f"#{table} tbody tr[data-code='{code}']")


def submit(page: Any, selector: str) -> None:
    """Press a worksheet button: the form posts and the page comes back."""
    with page.expect_navigation():
        page.click(selector)


def diagnosis_codes(page: Any) -> list[str]:
    return [str(c) for c in page.locator("#diagnoses tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.code)")]


# ------------------------------------------------------------------------------ in chromium
def test_a_coder_codes_a_stay_from_the_queue_to_the_claim(page: Any, coding: Coding) -> None:
    sign_in(page, coding, "coder", "/coding")
    assert page.locator("h1").inner_text() == "Coding"
    ages = [int(t) for t in page.locator("#coding-queue tbody td:first-child").all_inner_texts()]
    assert ages == sorted(ages, reverse=True) and len(ages) == 25  # oldest first, paged
    page.select_option("#setting", "inpatient")
    with page.expect_navigation():
        page.click("#queue-filter button")
    assert page.url.endswith("/coding?setting=inpatient")
    queued = page.locator(f"#coding-queue tr[data-encounter='{coding.stay}']")
    assert "inpatient" in queued.inner_text() and "2026-03-15" in queued.inner_text()
    screenshot(page, "coding-work-01-queue")
    with page.expect_navigation():
        queued.locator("a:text('Code')").click()
    assert page.url == f"{coding.url}/coding/encounters/{coding.stay}"
    assert page.locator("#encounter-class").inner_text() == "inpatient (IMP)"
    assert page.locator("#setting").inner_text().startswith("inpatient")

    # The evidence is marked in the notes; the suggestion's code brings it into view.
    marks = page.locator("mark[data-codes~='J18.9']")
    assert marks.count() >= 3
    assert {t.lower() for t in marks.all_inner_texts()} == {"pneumonia", "cap"}
    row(page, "diagnoses", "J18.9").locator("a.suggestion-code").click()
    target = page.locator("mark:target")
    target.wait_for()
    assert "J18.9" in str(target.get_attribute("data-codes")).split()
    assert target.inner_text().lower() == "pneumonia"
    assert page.evaluate("location.hash") == f"#{target.get_attribute('id')}"
    box = target.bounding_box()
    assert box is not None and 0 <= box["y"] <= 900  # scrolled to it
    screenshot(page, "coding-work-02-evidence")

    # The engine's principal comes first; every proposed code starts accepted.
    codes = diagnosis_codes(page)
    assert codes[0] == "J18.9" and {"I10", "N18.32", "E11.9", "R50.9"} <= set(codes)
    assert row(page, "diagnoses", "N18.32").locator("input[value=accept]").is_checked()
    assert "0.99" in row(page, "diagnoses", "N18.32").inner_text()
    assert "proposed" in row(page, "diagnoses", "N18.32").inner_text()
    assert "offered" in row(page, "diagnoses", "R05.9").inner_text()

    # Reject the fever (integral to pneumonia), with the reason.
    fever = row(page, "diagnoses", "R50.9")
    fever.locator("input[value=reject]").check()
    fever.locator("input[placeholder^='reason']").fill("integral to pneumonia")
    # Edit the hypertension: find its replacement with the search, as the coder types.
    submit(page, "#diagnoses tr[data-code='I10'] button:text('Find')")
    assert page.locator("#code-search legend").inner_text() == \
        "Find the code that replaces I10"
    assert row(page, "diagnoses", "R50.9").locator("input[value=reject]").is_checked()
    page.fill("#search-q", "hypertensive chronic kidney disease")
    page.locator("#search-hits tr[data-code='I12.9']").wait_for()
    submit(page, "#search-hits tr[data-code='I12.9'] button:text('Replace I10 with I12.9')")
    hypertension = row(page, "diagnoses", "I10")
    assert hypertension.locator("input[value=edit]").is_checked()
    assert hypertension.locator("input[placeholder='replace with']").input_value() == "I12.9"
    assert "Hypertensive chronic kidney disease with stage 1 through stage 4" in \
        hypertension.inner_text()
    hypertension.locator("input[placeholder^='reason']").fill(
        "hypertension with CKD (I.C.9.a.2)")
    # Add long-term metformin through the search.
    page.fill("#search-q", "oral hypoglycemic")
    page.locator("#search-hits tr[data-code='Z79.84']").wait_for()
    submit(page, "#search-hits button:text('Add Z79.84')")
    added = row(page, "diagnoses", "Z79.84")
    assert added.get_attribute("data-origin") == "added"
    assert "Long term (current) use of oral hypoglycemic drugs" in added.inner_text()
    assert page.locator("#worksheet-notice").inner_text() == "Z79.84 added"
    # Sequencing: N18.32 made principal, then pneumonia back to first.
    submit(page, "#diagnoses tr[data-code='N18.32'] button:text('Make principal')")
    assert diagnosis_codes(page)[0] == "N18.32"
    submit(page, "#diagnoses tr[data-code='J18.9'] button:text('Make principal')")
    submit(page, "#diagnoses tr[data-code='Z79.84'] button[aria-label='Move Z79.84 up']")
    order = diagnosis_codes(page)
    assert order[0] == "J18.9" and order.index("Z79.84") == len(order) - 2
    # Present on admission: Y for all, then exempt for the drug therapy code.
    page.select_option("#poa-all", "Y")
    submit(page, "button[value='poa-all']")
    page.select_option("#diagnoses tr[data-code='Z79.84'] select", "1")
    assert row(page, "diagnoses", "E11.9").locator("select").input_value() == "Y"
    assert row(page, "diagnoses", "R50.9").locator("select").input_value() == ""  # rejected
    # The CPAP session, an ICD-10-PCS procedure with its date.
    page.fill("#proc-code", "5A09357")
    page.fill("#proc-date", "2026-03-10")
    submit(page, "button[value='add-procedure']")
    assert CPAP in row(page, "procedures", "5A09357").inner_text()
    assert row(page, "diagnoses", "Z79.84").locator("select").input_value() == "1"

    submit(page, "#check-edits")
    assert page.locator("#edits-summary").inner_text().startswith("No errors")
    assert page.locator("#edit-results tr[data-severity='error']").count() == 0
    assert page.locator("#discharge-status").input_value() == "01"  # discharged home
    screenshot(page, "coding-work-03-worksheet")

    # What the Claim will hold: the accepted, edited (to their replacement) and added codes,
    # in the worksheet's sequence.
    expected = [str(c) for c in page.locator("#diagnoses tbody tr").evaluate_all(
        """rows => rows.filter(r => r.dataset.origin === 'added'
                                    || r.querySelector('input[value=accept]:checked')
                                    || r.querySelector('input[value=edit]:checked'))
                       .map(r => r.querySelector('input[value=edit]:checked')
                                 ? r.querySelector("input[placeholder='replace with']").value
                                 : r.dataset.code)""")]
    assert expected[0] == "J18.9" and "I12.9" in expected and expected[-1] == "Z79.84"
    page.fill("#reason", "initial coding")
    submit(page, "#finalize")
    assert re.search(r"/coding/encounters/[^?]+\?finalized=[0-9a-f-]+#stored-claim$", page.url)
    assert page.locator("#finalized").inner_text().startswith("Final codes stored")
    lines = page.locator("#claim-diagnoses tbody tr")
    claimed = [str(c) for c in lines.evaluate_all("rows => rows.map(r => r.dataset.code)")]
    assert claimed == expected
    assert "R50.9" not in claimed and "I10" not in claimed
    assert "principal" in lines.first.inner_text() and "POA Y (Yes)" in lines.first.inner_text()
    assert "POA 1 (Exempt from POA reporting)" in \
        row(page, "claim-diagnoses", "Z79.84").inner_text()
    assert "performed 2026-03-10" in row(page, "claim-procedures", "5A09357").inner_text()
    screenshot(page, "coding-work-04-claim")
    # The worksheet now starts from what was finalized, for a re-coding.
    assert diagnosis_codes(page)[:len(claimed)] == [
        "I10" if code == "I12.9" else code for code in claimed]
    assert row(page, "diagnoses", "R50.9").locator("input[value=reject]").is_checked()
    assert row(page, "diagnoses", "I10").locator("input[placeholder='replace with']") \
        .input_value() == "I12.9"
    assert row(page, "diagnoses", "Z79.84").count() == 1
    assert row(page, "diagnoses", "Z79.84").locator("select").input_value() == "1"
    assert row(page, "procedures", "5A09357").locator("input[type=date]").input_value() == \
        "2026-03-10"
    assert page.locator("#finalize").inner_text() == \
        "Finalize again (replaces the stored codes)"
    with coding.store.read() as txn:
        claim = txn.read("Claim", claim_id(coding.stay))
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] \
        == claimed
    with page.expect_navigation():
        page.click("#stored-claim a:text('Back to the coding queue')")
    assert page.locator(f"#coding-queue tr[data-encounter='{coding.stay}']").count() == 0


def test_an_invalid_code_is_shown_on_the_page_and_nothing_is_stored(
        page: Any, coding: Coding) -> None:
    visit = coding.visits[0]
    sign_in(page, coding, "coder", f"/coding/encounters/{visit}")
    page.fill("#search-q", "E11")
    submit(page, "button[value='add-typed']")
    assert row(page, "diagnoses", "E11").get_attribute("data-origin") == "added"
    page.fill("#reason", "initial coding")
    before = coding_rows(coding.store)
    submit(page, "#finalize")
    error = page.locator("#worksheet-error").inner_text()
    assert "E11 is not billable in ICD-10-CM 2026-04-01" in error
    assert "Nothing was stored." in error
    assert row(page, "diagnoses", "E11").count() == 1  # the worksheet as the coder left it
    assert page.locator("#reason").input_value() == "initial coding"
    assert coding_rows(coding.store) == before
    screenshot(page, "coding-work-05-invalid")


def test_the_pages_are_accessible(browser: Any, coding: Coding) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    try:
        sign_in(page, coding, "tech", "/coding")
        for path in ("/coding", f"/coding/encounters/{coding.stay}",
                     f"/coding/encounters/{coding.visits[1]}", "/coding/reports"):
            page.goto(f"{coding.url}{path}")
            found = violations(page)
            assert found == [], f"{path}: {found}"
    finally:
        context.close()


# -------------------------------------------------------------------------------- over HTTP
def _post(client: httpx.Client, path: str, page: str, **fields: str) -> httpx.Response:
    """Post the worksheet form as the page holds it, with ``fields`` changed."""
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    for name, value in re.findall(r'<input type="radio" name="([^"]+)" value="([^"]+)" '
                                  r'checked', page):
        form[name] = value
    form.update(csrf_token=csrf_of(page), **fields)
    return client.post(path, data=form)


def test_the_worksheet_works_without_javascript(coding: Coding) -> None:
    visit = coding.visits[2]
    path = f"/coding/encounters/{visit}"
    client = sign_in_http(coding.url, coding.accounts["coder"])
    try:
        page = client.get(path)
        assert page.status_code == 200 and "no-store" in page.headers["cache-control"]
        assert 'id="search-q"' in page.text and "<mark" in page.text
        entry = coding.security.trail.entries(user_id="coder", action="read", limit=1000)[-1]
        assert (entry.resource_type, entry.resource_id) == ("Encounter", visit)
        assert entry.patient_id is not None and entry.details["page"] == "coding worksheet"
        found = _post(client, path, page.text, **{"do": "search", "search-q": "diabetis"})
        assert found.status_code == 200 and 'value="add:E11.9"' in found.text
        added = _post(client, path, found.text, **{"do": "add:E10.9"})
        assert 'data-code="E10.9" data-origin="added"' in added.text
        # Type 2 as well: added, or accepted when the engine suggested it.
        added = _post(client, path, added.text, **{"do": "add:E11.9"})
        assert re.search(r'data-code="E11.9" data-origin="(added|suggested)" '
                         r'data-action="(add|accept)"', added.text)
        checked = _post(client, path, added.text, do="check")
        assert checked.status_code == 200
        assert 'data-severity="error" data-rule="excludes1"' in checked.text
        assert "error: fix it before finalizing" in checked.text
        before = coding_rows(coding.store)
        refused = _post(client, path, checked.text, do="finalize", reason="initial coding")
        assert refused.status_code == 422
        assert "1 edit blocks billing" in refused.text and "Nothing was stored." in refused.text
        no_reason = _post(client, path, checked.text, do="finalize")
        assert no_reason.status_code == 400 and "give the reason" in no_reason.text
        damaged = _post(client, path, page.text, **{"do": "up:0", "n-0-action": "maybe"})
        assert damaged.status_code == 400 and "choose accept, reject or edit" in damaged.text
        forged = client.post(path, data={"do": "finalize", "reason": "x", "rows": "0"})
        assert forged.status_code == 403
        assert coding_rows(coding.store) == before
        # The search's results as the coder types are a fragment of the page.
        fragment = client.get("/coding/worksheet-search", params={
            "search-q": "htn", "search-date": "2026-03-01", "search-for": "0",
            "search-replacing": "I10"})
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'value="replace:0:I10"' in fragment.text and 'value="add:I10"' in fragment.text
    finally:
        client.close()


def test_the_reports_show_a_coders_work(coding: Coding) -> None:
    visit = coding.visits[3]
    sheet = worksheet(coding.store, visit)
    client = sign_in_http(coding.url, coding.accounts["tech"])
    try:
        page = client.get(f"/coding/encounters/{visit}")
        assert page.status_code == 200
        done = _post(client, f"/coding/encounters/{visit}", page.text, do="finalize",
                     reason="initial coding")
        assert done.status_code == 303, done.text[:2000]
        proposed = [s.code for s in sheet.suggestions.diagnoses if s.proposed]
        proposed.sort(key=lambda code: code != sheet.suggestions.principal)  # it comes first
        today = date.today().isoformat()
        report = client.get("/coding/reports")
        assert report.status_code == 200
        assert f'value="{today}"' in report.text  # the last 30 days, today included
        tech = re.search(r'<tr data-coder="tech">(.*?)</tr>', report.text, re.S)
        assert tech is not None
        cells = re.findall(r"<td>([^<]*)</td>", tech.group(1))
        assert cells[:3] == ["1", "1", str(len(proposed))]
        # Finalized again from the worksheet as it was stored: one encounter, two
        # finalizations, the same codes.
        again = client.get(f"/coding/encounters/{visit}")
        assert "Finalize again" in again.text
        redone = _post(client, f"/coding/encounters/{visit}", again.text, do="finalize",
                       reason="second look")
        assert redone.status_code == 303, redone.text[:2000]
        with coding.store.read() as txn:
            claim = txn.read("Claim", claim_id(visit))
        assert claim["meta"]["versionId"] == "2"
        assert [d["diagnosisCodeableConcept"]["coding"][0]["code"]
                for d in claim["diagnosis"]] == proposed
        report = client.get("/coding/reports")
        tech = re.search(r'<tr data-coder="tech">(.*?)</tr>', report.text, re.S)
        assert tech is not None
        assert re.findall(r"<td>([^<]*)</td>", tech.group(1))[:3] == [
            "1", "2", str(2 * len(proposed))]
        old = client.get("/coding/reports", params={"since": "2020-01-01",
                                                    "until": "2020-01-31"})
        assert "No encounter was finalized in this period." in old.text
        bad = client.get("/coding/reports", params={"since": "2026-06-01",
                                                    "until": "2026-05-01"})
        assert bad.status_code == 400 and "the period ends (2026-05-01) before it starts" \
            in bad.text
    finally:
        client.close()


def test_roles_without_coding_are_refused(coding: Coding) -> None:
    typist = sign_in_http(coding.url, coding.accounts["typist"])
    try:
        page = typist.get("/home")
        token = csrf_of(page.text)
        for method, path in [("GET", "/coding"), ("GET", f"/coding/encounters/{coding.stay}"),
                             ("POST", f"/coding/encounters/{coding.stay}"),
                             ("GET", "/coding/reports")]:
            answer = typist.request(method, path, data={"csrf_token": token, "do": "refresh",
                                                        "rows": "0"} if method == "POST"
                                    else None)
            assert answer.status_code == 403, path
            assert "coding is for: him technician, coder, physician" in answer.text
            assert "<mark" not in answer.text and "J18.9" not in answer.text
    finally:
        typist.close()
    denied = [e for e in coding.security.trail.entries(user_id="typist", limit=100)
              if e.outcome != "success"]
    assert len(denied) == 4
    with httpx.Client(base_url=coding.url) as anonymous:
        answer = anonymous.get(f"/coding/encounters/{coding.stay}")
        assert answer.status_code == 303
        assert answer.headers["location"] == \
            f"/sign-in?next=/coding/encounters/{coding.stay}"
