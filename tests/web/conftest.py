"""Fixtures for the workbench tests: the real app served by uvicorn over a real SQLite store
holding a small synthetic hospital, users of each role, and Debian's chromium via Playwright.

Screenshots the browser tests take go to ``artifacts/screenshots/`` (kept by CI)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from chartkeeper.api.app import create_app
from chartkeeper.security.identity import TOTP_INTERVAL_SECONDS, TOTP_WINDOW_STEPS, Role
from chartkeeper.security.practitioners import link_practitioner
from chartkeeper.security.services import SecurityServices
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.generate import generate
from tests.api.conftest import CHEAP_HASHER, free_port, served_on

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PATIENTS = 40
PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    username: str
    role: Role
    password: str
    totp_secret: str | None = None
    last_step: int = 0

    def code(self) -> str:
        """A code for a time step later than the last one used (the server refuses a code
        used before), inside the server's window of one step either side of now."""
        assert self.totp_secret is not None
        now_step = int(time.time()) // TOTP_INTERVAL_SECONDS
        step = max(now_step - TOTP_WINDOW_STEPS, self.last_step + 1)
        while step > now_step + TOTP_WINDOW_STEPS:  # three sign-ins in one step: wait
            time.sleep(1)
            now_step = int(time.time()) // TOTP_INTERVAL_SECONDS
        self.last_step = step
        return str(pyotp.TOTP(self.totp_secret).at(step * TOTP_INTERVAL_SECONDS))


@dataclass
class Workbench:
    url: str
    home: Path
    store: Store
    security: SecurityServices
    hospital: Path
    accounts: dict[str, Account]

    def answer_key(self) -> list[dict[str, Any]]:
        """The synthetic hospital's truth: for measuring in tests, never read by the product."""
        lines = (self.hospital / "answer-key.ndjson").read_text().splitlines()
        return [json.loads(line) for line in lines]


def add_account(security: SecurityServices, username: str, role: Role) -> Account:
    security.directory.add_user(username, role, PASSWORD)
    secret = None
    if role.requires_second_factor:
        uri = security.directory.enroll_totp(username)
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return Account(username, role, PASSWORD, secret)


@pytest.fixture(scope="package")
def workbench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    root = tmp_path_factory.mktemp("workbench")
    hospital = root / "hospital"
    generate(hospital, PATIENTS, 6)
    store = Store(f"sqlite:///{root / 'chartkeeper.sqlite'}")
    store.create_schema()
    summary = Importer(store).import_files(find_files([hospital / "bundles"]))
    assert summary.rejected == 0, summary.problems[:3]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(home=root / "home", database_url=store.url, base_url=f"{url}/fhir")
    security = SecurityServices.build(settings, store.engine, hasher=CHEAP_HASHER)
    accounts = {name: add_account(security, name, role) for name, role in [
        ("tech", Role.him_technician), ("drsmith", Role.physician),
        ("roi", Role.roi_specialist), ("coder", Role.coder), ("analyst", Role.analyst)]}
    with store.read() as txn:
        doctor = txn.search_params("Practitioner", [("_count", "1"), ("_sort", "_id")]).matches[0]
    link_practitioner(store, "drsmith", doctor["id"])
    with served_on(create_app(settings, store, security), port):
        yield Workbench(url, settings.home, store, security, hospital, accounts)
    store.dispose()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: make test installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
