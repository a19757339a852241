"""The security API over HTTP: sign-in and sessions, bearer tokens and client credentials,
one audit entry per request, break-the-glass, the accounting of disclosures, and passwords
that never reach the database, the logs or the audit trail in plain text.

Every test runs the real app on a fresh SQLite file and a fresh PostgreSQL database. Time is
moved with ``security.clock`` (sessions, lockout, TOTP steps and break-the-glass grants read
it); tokens and audit timestamps keep the real clock.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text, update

from chartkeeper.api.app import create_app
from chartkeeper.api.auth import SESSION_COOKIE
from chartkeeper.security.access import ACT_CODE
from chartkeeper.security.audit import CSV_COLUMNS, AuditEntry
from chartkeeper.security.identity import BAD_CREDENTIALS_MESSAGE, Role, app_user
from chartkeeper.security.services import ACCOUNT_RECHECK_SECONDS, SecurityServices
from chartkeeper.security.tokens import TokenIssuer, signing_key_path
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from tests.api.conftest import (
    FHIR,
    LiveServer,
    auth_header,
    fhir_client,
    issue_token,
    make_security,
    make_settings,
)

LOINC = "http://loinc.org"


# ----------------------------------------------------------------------------- fixtures
@dataclass
class Clock:
    """The security services' clock, frozen at the start of the test and moved by hand."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Site:
    settings: Settings
    store: Store
    security: SecurityServices
    clock: Clock
    app: FastAPI

    def client(self, token: str | None = None) -> TestClient:
        """A client with no credentials (or a bearer token); cookies persist across calls."""
        client = TestClient(self.app, base_url="http://testserver")
        if token is not None:
            client.headers.update(auth_header(token))
        return client

    def token(self, user: str, role: Role, scopes: str = "user/*.cruds",
              patient: str | None = None) -> str:
        return issue_token(self.security, user, role, scopes, patient)

    def add_user(self, name: str, role: Role, *, must_change_password: bool = False) -> str:
        password = f"Pw-{name}-{secrets.token_urlsafe(9)}"
        self.security.directory.add_user(name, role, password,
                                         must_change_password=must_change_password)
        return password

    def enroll(self, name: str) -> pyotp.TOTP:
        totp = pyotp.parse_uri(self.security.directory.enroll_totp(name))
        assert isinstance(totp, pyotp.TOTP)
        return totp

    def code(self, totp: pyotp.TOTP, steps_ahead: int = 0) -> str:
        return str(totp.at(int(self.clock.now.timestamp()) + 30 * steps_ahead))

    def entries(self, **filters: Any) -> list[AuditEntry]:
        return self.security.trail.entries(**filters, limit=100_000)

    def head(self) -> int:
        entries = self.entries()
        return entries[-1].seq if entries else 0

    def entries_after(self, seq: int) -> list[AuditEntry]:
        return [e for e in self.entries() if e.seq > seq]

    def seed(self, *resources: dict[str, Any]) -> None:
        """Write straight into the store (no request, so no audit entry)."""
        with self.store.write() as txn:
            for resource in resources:
                txn.create(resource, resource_id=resource["id"])


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Iterator[Site]:
    settings = make_settings(tmp_path, store.url)
    security = make_security(settings, store)
    clock = Clock()
    security.clock = clock
    app = create_app(settings, store, security)
    yield Site(settings, store, security, clock, app)
    security.close()


def patient(pid: str, family: str = "Doe", *, label: str | None = None,
            birth_date: str = "1970-01-01") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid,
                                "name": [{"family": family, "given": ["Pat"]}],
                                "birthDate": birth_date}
    if label:
        resource["meta"] = {"security": [{"system": ACT_CODE, "code": label}]}
    return resource


def observation(oid: str, pid: str, *, label: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": 101, "unit": "mg/dL"}}
    if label:
        resource["meta"] = {"security": [{"system": ACT_CODE, "code": label}]}
    return resource


def diagnostics(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return " | ".join(issue.get("diagnostics", "") for issue in body["issue"])


def issue_codes(response: httpx.Response) -> list[str]:
    return [issue["code"] for issue in response.json()["issue"]]


def sign_in(client: TestClient, username: str, password: str, totp: str | None = None,
            *, form: bool = False) -> httpx.Response:
    fields = {"username": username, "password": password}
    if totp is not None:
        fields["totp"] = totp
    response: httpx.Response = (client.post("/auth/sign-in", data=fields) if form
                                else client.post("/auth/sign-in", json=fields))
    return response


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", [])
                  if e["search"]["mode"] == "match")


def outcome_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


def raw_audit_rows(engine: Engine) -> str:
    """Every stored audit column, as text."""
    with engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for row in conn.execute(text(
            "SELECT * FROM audit_entry ORDER BY seq")))


# ----------------------------------------------------------------------------- 1. sessions
def test_sign_in_by_json_or_form_sets_a_strict_http_only_cookie_that_opens_fhir(
        site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    site.seed(patient("p1"))

    by_json = site.client()
    response = sign_in(by_json, "clerk", password)
    assert response.status_code == 200, response.text
    assert response.json() == {"user": "clerk", "role": "coder",
                               "idleMinutes": site.settings.session_idle_minutes}
    cookie_header = response.headers["set-cookie"].lower()
    assert cookie_header.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie_header
    assert "samesite=strict" in cookie_header
    assert "path=/" in cookie_header
    assert "secure" not in cookie_header  # plain-http base URL; https sets Secure
    assert "authorization" not in {k.lower() for k in by_json.headers}

    read = by_json.get("/fhir/Patient/p1")
    assert read.status_code == 200, read.text
    assert read.json()["id"] == "p1"
    whoami = by_json.get("/auth/whoami").json()
    assert (whoami["user"], whoami["role"], whoami["via"]) == ("clerk", "coder", "session")
    created = by_json.post("/fhir/Condition", headers={"Content-Type": FHIR}, json={
        "resourceType": "Condition", "subject": {"reference": "Patient/p1"},
        "code": {"text": "J45.909"}})
    assert created.status_code == 201, created.text

    [login] = site.entries(action="login")
    assert (login.user_id, login.role, login.outcome) == ("clerk", "coder", "success")
    assert (login.details["via"], login.details["session"]) == ("password", "started")

    by_form = site.client()
    response = sign_in(by_form, "CLERK", password, form=True)  # names are case-insensitive
    assert response.status_code == 200, response.text
    assert by_form.get("/fhir/Patient/p1").status_code == 200
    assert by_form.cookies[SESSION_COOKIE] != by_json.cookies[SESSION_COOKIE]

    # The cookie alone carries the session: a client given only its value is signed in.
    bare = site.client()
    bare.cookies.set(SESSION_COOKIE, by_json.cookies[SESSION_COOKIE])
    assert bare.get("/fhir/Patient/p1").status_code == 200


def test_the_session_cookie_is_secure_behind_an_https_base_url(store: Store,
                                                                tmp_path: Path) -> None:
    settings = make_settings(tmp_path, store.url, base_url="https://him.example.org/fhir")
    security = make_security(settings, store)
    try:
        password = "clerk-password-1234"
        security.directory.add_user("clerk", Role.coder, password)
        client = TestClient(create_app(settings, store, security), base_url="https://testserver")
        response = sign_in(client, "clerk", password)
        assert response.status_code == 200, response.text
        assert "; secure" in response.headers["set-cookie"].lower()
    finally:
        security.close()


def test_wrong_password_and_unknown_user_get_the_same_401(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    client = site.client()
    wrong = sign_in(client, "clerk", password + "x")
    unknown = sign_in(client, "nobody", password)
    malformed_name = sign_in(client, "no such user!", password)
    for response in (wrong, unknown, malformed_name):
        assert response.status_code == 401, response.text
        assert diagnostics(response) == BAD_CREDENTIALS_MESSAGE
        assert issue_codes(response) == ["login"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "set-cookie" not in response.headers
    assert SESSION_COOKIE not in client.cookies

    for body, content_type in ((b'{"username": "clerk"}', "application/json"),
                               (b"{not json", "application/json"),
                               (b'["clerk", "pw"]', "application/json"),
                               (b'{"username": "clerk", "password": 12345678901234}',
                                "application/json"),
                               (b"username=clerk&password=x", "text/plain")):
        response = client.post("/auth/sign-in", content=body,
                               headers={"Content-Type": content_type})
        assert response.status_code == 400, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


def test_repeated_failures_lock_the_account_until_the_lock_expires(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    client = site.client()
    threshold = site.security.directory.lockout.threshold
    for _ in range(threshold):
        response = sign_in(client, "clerk", "not-the-password-at-all")
        assert response.status_code == 401
        assert diagnostics(response) == BAD_CREDENTIALS_MESSAGE

    locked = sign_in(client, "clerk", password)  # even the right password waits
    assert locked.status_code == 401
    assert "locked" in diagnostics(locked)
    assert SESSION_COOKIE not in client.cookies

    site.clock.advance(seconds=site.security.directory.lockout.first_lock.total_seconds() - 1)
    assert sign_in(client, "clerk", password).status_code == 401
    site.clock.advance(seconds=2)
    response = sign_in(client, "clerk", password)
    assert response.status_code == 200, response.text
    assert site.security.directory.get_user("clerk").failed_attempts == 0


@pytest.mark.parametrize("role", [Role.physician, Role.administrator, Role.privacy_officer,
                                  Role.roi_specialist])
def test_privileged_roles_need_a_one_time_code_that_works_once(site: Site,
                                                               role: Role) -> None:
    name = f"user-{role.value}".replace("_", "-")
    password = site.add_user(name, role)
    client = site.client()

    not_enrolled = sign_in(client, name, password)
    assert not_enrolled.status_code == 401
    assert "enroll" in diagnostics(not_enrolled)

    totp = site.enroll(name)
    no_code = sign_in(client, name, password)
    assert no_code.status_code == 401
    assert "one-time code" in diagnostics(no_code)
    right = site.code(totp)
    wrong_code = f"{(int(right) + 500_000) % 1_000_000:06d}"
    assert sign_in(client, name, password, wrong_code).status_code == 401
    assert sign_in(client, name, password, "12ab56").status_code == 401
    # A right code does not rescue a wrong password, and is not spent by it.
    bad_password = sign_in(client, name, password + "x", right)
    assert diagnostics(bad_password) == BAD_CREDENTIALS_MESSAGE
    assert SESSION_COOKIE not in client.cookies

    signed_in = sign_in(client, name, password, right)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["role"] == role.value
    assert client.get("/auth/whoami").json()["role"] == role.value

    replay = sign_in(site.client(), name, password, right)
    assert replay.status_code == 401
    assert "already used" in diagnostics(replay)
    # The next time step's code is a fresh one.
    site.clock.advance(seconds=30)
    assert sign_in(site.client(), name, password, site.code(totp)).status_code == 200


def test_must_change_password_user_is_403_until_the_password_is_changed(site: Site) -> None:
    old = site.add_user("newhire", Role.coder, must_change_password=True)
    client = site.client()
    refused = sign_in(client, "newhire", old)
    assert refused.status_code == 403
    assert "/auth/change-password" in diagnostics(refused)
    assert SESSION_COOKIE not in client.cookies

    def change(password: str, new_password: str) -> httpx.Response:
        response: httpx.Response = client.post("/auth/change-password", json={
            "username": "newhire", "password": password, "newPassword": new_password})
        return response

    assert change("wrong-old-password", "a-brand-new-password").status_code == 401
    assert change(old, old).status_code == 400
    weak = change(old, "short")
    assert weak.status_code == 400
    assert "at least" in diagnostics(weak)
    assert "short" not in diagnostics(weak).replace("at least", "")
    assert site.security.directory.get_user("newhire").must_change_password

    new = "a-brand-new-password-2024"
    changed = change(old, new)
    assert changed.status_code == 204, changed.text
    assert sign_in(client, "newhire", old).status_code == 401
    response = sign_in(client, "newhire", new)
    assert response.status_code == 200, response.text
    assert client.get("/auth/whoami").json()["user"] == "newhire"

    changes = site.entries(action="privilege-change")
    assert [(e.user_id, e.role, e.outcome, e.details["change"]) for e in changes] == [
        ("newhire", "coder", "failure", "password")] * 2 + [
        ("newhire", "coder", "success", "password")]
    assert [(e.user_id, e.outcome) for e in site.entries(action="login-failure")] == [
        ("newhire", "denied")] * 3


def test_a_password_change_ends_every_open_session(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    site.seed(patient("p1"))
    browsers = [site.client(), site.client()]
    for browser in browsers:
        assert sign_in(browser, "clerk", password).status_code == 200
    changed = site.client().post("/auth/change-password", data={
        "username": "clerk", "password": password, "newPassword": "clerk-new-password-99"})
    assert changed.status_code == 204, changed.text
    for browser in browsers:
        assert browser.get("/fhir/Patient/p1").status_code == 401


def test_privileged_user_changes_password_with_one_time_codes(site: Site) -> None:
    old = site.add_user("dr-new", Role.physician, must_change_password=True)
    totp = site.enroll("dr-new")
    client = site.client()
    assert sign_in(client, "dr-new", old, site.code(totp)).status_code == 403
    no_code = client.post("/auth/change-password", json={
        "username": "dr-new", "password": old, "newPassword": "dr-new-password-2024"})
    assert no_code.status_code == 401
    changed = client.post("/auth/change-password", json={
        "username": "dr-new", "password": old, "newPassword": "dr-new-password-2024",
        "totp": site.code(totp, steps_ahead=1)})
    assert changed.status_code == 204, changed.text
    site.clock.advance(seconds=60)
    response = sign_in(client, "dr-new", "dr-new-password-2024", site.code(totp))
    assert response.status_code == 200, response.text


def test_an_idle_session_ends_after_the_idle_timeout(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    site.seed(patient("p1"))
    client = site.client()
    assert sign_in(client, "clerk", password).status_code == 200
    idle = site.settings.session_idle_minutes

    # Activity restarts the idle clock: two gaps shorter than the timeout keep it open.
    for _ in range(2):
        site.clock.advance(minutes=idle - 1)
        assert client.get("/fhir/Patient/p1").status_code == 200

    site.clock.advance(minutes=idle)
    expired = client.get("/fhir/Patient/p1")
    assert expired.status_code == 401
    assert "sign in again" in diagnostics(expired)
    assert expired.headers["www-authenticate"].startswith("Bearer")
    assert "Doe" not in expired.text
    # Over for good, even if the clock went back.
    site.clock.advance(minutes=-idle)
    assert client.get("/fhir/Patient/p1").status_code == 401


def test_sign_out_ends_the_session(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    site.seed(patient("p1"))
    client = site.client()
    assert site.client().post("/auth/sign-out").status_code == 401
    assert sign_in(client, "clerk", password).status_code == 200
    session = client.cookies[SESSION_COOKIE]
    other = site.client()
    assert sign_in(other, "clerk", password).status_code == 200

    out = client.post("/auth/sign-out")
    assert out.status_code == 204
    assert out.headers["set-cookie"].startswith(f'{SESSION_COOKIE}=""')
    assert client.get("/fhir/Patient/p1").status_code == 401
    replayed = site.client()
    replayed.cookies.set(SESSION_COOKIE, session)
    assert replayed.get("/fhir/Patient/p1").status_code == 401
    assert other.get("/fhir/Patient/p1").status_code == 200  # only that session ended
    forged = site.client()
    forged.cookies.set(SESSION_COOKIE, secrets.token_urlsafe(32))
    assert forged.get("/fhir/Patient/p1").status_code == 401


def test_a_disabled_user_loses_sessions_and_tokens(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    site.seed(patient("p1"))
    client = site.client()
    assert sign_in(client, "clerk", password).status_code == 200
    bearer = site.client(site.token("clerk", Role.coder))
    assert client.get("/fhir/Patient/p1").status_code == 200
    assert bearer.get("/fhir/Patient/p1").status_code == 200

    site.security.directory.disable("clerk")
    assert client.get("/fhir/Patient/p1").status_code == 401
    refused = bearer.get("/fhir/Patient/p1")
    assert refused.status_code == 401
    assert "disabled" in diagnostics(refused)
    assert sign_in(site.client(), "clerk", password).status_code == 403

    site.security.directory.enable("clerk")
    assert client.get("/fhir/Patient/p1").status_code == 401  # the session stays ended
    assert bearer.get("/fhir/Patient/p1").status_code == 200


def test_a_role_change_revokes_tokens_and_sessions(site: Site) -> None:
    password = site.add_user("clerk", Role.coder)
    site.seed(patient("p1"))
    client = site.client()
    assert sign_in(client, "clerk", password).status_code == 200
    bearer = site.client(site.token("clerk", Role.coder))
    assert bearer.get("/fhir/Patient/p1").status_code == 200  # the account state is cached
    # No route changes roles yet; an administrator would do it in the user table, from
    # another process: the API notices within ACCOUNT_RECHECK_SECONDS.
    with site.store.engine.begin() as conn:
        conn.execute(update(app_user).where(app_user.c.username == "clerk")
                     .values(role=Role.transcriptionist.value))
    changed = time.monotonic()
    while (refused := bearer.get("/fhir/Patient/p1")).status_code == 200:
        assert time.monotonic() - changed < ACCOUNT_RECHECK_SECONDS + 0.5
        time.sleep(0.05)
    assert refused.status_code == 401
    assert "role changed" in diagnostics(refused)
    assert client.get("/fhir/Patient/p1").status_code == 401
    # A token that claims a role the user never had is refused the same way.
    forged_role = site.security.issuer.issue("clerk", Role.administrator, "user/*.cruds")
    assert site.client(forged_role).get("/fhir/Patient/p1").status_code == 401


# ----------------------------------------------------------------------------- 2. tokens
@pytest.mark.parametrize("method,path", [
    ("GET", "/fhir/Patient"), ("GET", "/fhir/Patient/p1"), ("POST", "/fhir/Patient"),
    ("GET", "/auth/whoami"), ("GET", "/audit/entries"), ("GET", "/audit/verify"),
    ("POST", "/security/break-the-glass"), ("GET", "/security/break-the-glass"),
    ("POST", "/him/disclosures"), ("GET", "/him/disclosures?patient=p1")])
def test_requests_without_credentials_get_401_with_a_bearer_challenge(
        site: Site, method: str, path: str) -> None:
    site.seed(patient("p1"))
    response = site.client().request(method, path, json={"resourceType": "Patient"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="chartkeeper"')
    assert "invalid_token" not in response.headers["www-authenticate"]
    assert issue_codes(response) == ["login"]
    assert "Doe" not in response.text


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 forgery
def test_malformed_forged_and_expired_tokens_get_401(site: Site) -> None:
    site.seed(patient("p1"))
    base = site.settings.base_url
    key = signing_key_path(site.settings.home).read_bytes()
    issuer = site.security.issuer
    good = site.token("dr", Role.physician)
    assert site.client(good).get("/fhir/Patient/p1").status_code == 200
    now = datetime.now(UTC)
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, key, algorithms=["HS256"], audience=base)

    def signed(algorithm: str, body: dict[str, Any], typ: str = "at+jwt") -> str:
        return jwt.encode(body, key, algorithm=algorithm, headers={"typ": typ})

    cases: dict[str, str] = {
        "basic scheme": "Basic ZHI6cGFzc3dvcmQ=",
        "no token": "Bearer",
        "blank token": "Bearer    ",
        "not a JWT": "Bearer not-a-jwt",
        "other scheme": f"Token {good}",
        "expired": "Bearer " + issuer.issue("dr", Role.physician, "user/*.cruds",
                                            now=now - timedelta(hours=2), minutes=60),
        "not yet valid": "Bearer " + issuer.issue("dr", Role.physician, "user/*.cruds",
                                                  now=now + timedelta(hours=1)),
        "another key": "Bearer " + TokenIssuer(secrets.token_bytes(32), base, base).issue(
            "dr", Role.physician, "user/*.cruds"),
        "alg none": f"Bearer {_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.",
        "alg none, signature kept": (f"Bearer {_b64({'alg': 'none', 'typ': 'at+jwt'})}."
                                     f"{payload}.{signature}"),
        "HS512 with the right key": "Bearer " + signed("HS512", claims),
        "plain JWT type": "Bearer " + signed("HS256", claims, typ="JWT"),
        "wrong audience": "Bearer " + TokenIssuer(key, base, "https://elsewhere/fhir").issue(
            "dr", Role.physician, "user/*.cruds"),
        "wrong issuer": "Bearer " + TokenIssuer(key, "https://elsewhere/fhir", base).issue(
            "dr", Role.physician, "user/*.cruds"),
        "no expiry": "Bearer " + signed("HS256", {k: v for k, v in claims.items()
                                                  if k != "exp"}),
        "tampered role": (f"Bearer {header}."
                          f"{_b64({**claims, 'role': 'administrator'})}.{signature}"),
        "unknown user": "Bearer " + issuer.issue("ghost", Role.physician, "user/*.cruds"),
        "unknown role": "Bearer " + signed("HS256", {**claims, "role": "superuser"}),
        "system scope for a user": "Bearer " + signed("HS256", {**claims,
                                                               "scope": "system/*.cruds"}),
    }
    before = site.head()
    for case, value in cases.items():
        response = site.client().get("/fhir/Patient/p1", headers={"Authorization": value})
        assert response.status_code == 401, (case, response.text)
        assert response.json()["resourceType"] == "OperationOutcome", case
        assert issue_codes(response) == ["login"], case
        assert 'error="invalid_token"' in response.headers["www-authenticate"], case
        assert "Doe" not in response.text, case
    refusals = site.entries_after(before)
    assert len(refusals) == len(cases)
    assert {(e.outcome, e.action, e.user_id, e.details["status"]) for e in refusals} == {
        ("denied", "read", "anonymous", 401)}


def test_client_credentials_issue_a_token_held_to_the_clients_scopes(site: Site) -> None:
    secret = site.security.clients.register("lab-feed",
                                            "system/Observation.cruds system/Patient.rs")
    site.seed(patient("p1"), {"resourceType": "Encounter", "id": "e1", "status": "finished",
                              "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}})
    client = site.client()
    form = {"grant_type": "client_credentials"}

    by_basic = client.post("/auth/token", data=form, auth=("lab-feed", secret))
    assert by_basic.status_code == 200, by_basic.text
    assert by_basic.headers["cache-control"] == "no-store"
    body = by_basic.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert set(body["scope"].split()) == {"system/Observation.cruds", "system/Patient.rs"}

    by_form = client.post("/auth/token", data={**form, "client_id": "lab-feed",
                                               "client_secret": secret,
                                               "scope": "system/Observation.c"})
    assert by_form.status_code == 200, by_form.text
    assert by_form.json()["scope"] == "system/Observation.c"

    feed = site.client(body["access_token"])
    whoami = feed.get("/auth/whoami").json()
    assert (whoami["user"], whoami["role"], whoami["via"]) == ("lab-feed", "service", "token")
    created = feed.post("/fhir/Observation", headers={"Content-Type": FHIR},
                        json=observation("ignored", "p1"))
    assert created.status_code == 201, created.text
    assert feed.get("/fhir/Patient/p1").status_code == 200
    assert feed.get("/fhir/Patient?family=Doe").status_code == 200
    for response in (feed.get("/fhir/Encounter/e1"), feed.get("/fhir/Encounter"),
                     feed.put("/fhir/Patient/p1", headers={"Content-Type": FHIR},
                              json=patient("p1", "Changed"))):
        assert response.status_code == 403, response.text
        assert "finished" not in response.text
    narrow = site.client(by_form.json()["access_token"])
    assert narrow.get("/fhir/Observation").status_code == 403  # asked for create only

    audit = site.entries(user_id="lab-feed")
    logins = [e for e in audit if e.action == "login"]
    assert len(logins) == 2
    assert all(e.details["grant"] == "client_credentials" and e.outcome == "success"
               and e.role == "service" for e in logins)
    assert {e.details.get("client") for e in audit if e.action != "login"} == {"lab-feed"}

    site.security.clients.disable("lab-feed")
    assert feed.get("/fhir/Patient/p1").status_code == 401
    again = client.post("/auth/token", data=form, auth=("lab-feed", secret))
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"


def test_token_endpoint_refuses_bad_client_requests(site: Site) -> None:
    secret = site.security.clients.register("lab-feed",
                                            "system/Observation.cruds system/Patient.rs")
    client = site.client()
    form = {"grant_type": "client_credentials"}

    def oauth_error(response: httpx.Response, status: int, error: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"] == error, response.text
        assert response.headers["cache-control"] == "no-store"
        assert "access_token" not in response.json()

    wrong = client.post("/auth/token", data=form, auth=("lab-feed", secret + "x"))
    oauth_error(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].startswith("Basic")
    unknown = client.post("/auth/token", data=form, auth=("no-such-feed", secret))
    oauth_error(unknown, 401, "invalid_client")
    assert unknown.json() == wrong.json()
    oauth_error(client.post("/auth/token", data=form), 401, "invalid_client")
    oauth_error(client.post("/auth/token", data=form,
                            headers={"Authorization": "Basic !!notbase64"}),
                401, "invalid_client")
    oauth_error(client.post("/auth/token", data=form, headers={
        "Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}),
        401, "invalid_client")
    oauth_error(client.post("/auth/token", data={"grant_type": "password", "username": "x",
                                                 "password": "y"}, auth=("lab-feed", secret)),
                400, "unsupported_grant_type")
    oauth_error(client.post("/auth/token", content=b"", auth=("lab-feed", secret), headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 400, "unsupported_grant_type")
    oauth_error(client.post("/auth/token", data={**form, "scope": "system/Encounter.rs"},
                            auth=("lab-feed", secret)), 400, "invalid_scope")
    oauth_error(client.post("/auth/token", data={**form, "scope": "not a scope"},
                            auth=("lab-feed", secret)), 400, "invalid_scope")
    oauth_error(client.post("/auth/token", data={**form, "scope": "user/Patient.rs"},
                            auth=("lab-feed", secret)), 400, "invalid_scope")
    oauth_error(client.post("/auth/token", json={**form, "client_id": "lab-feed",
                                                 "client_secret": secret}),
                400, "invalid_request")
    failures = site.entries(action="login-failure")
    # Only a registered client id is recorded (an unknown "id" may be a pasted secret).
    assert [e.user_id for e in failures] == (["lab-feed"] + ["anonymous"] * 6
                                             + ["lab-feed"] * 3 + ["anonymous"])
    assert [e.outcome for e in failures] == ["denied"] * 5 + ["failure"] * 6
    assert secret.lower() not in raw_audit_rows(site.security.trail.engine).lower()


# ----------------------------------------------------------------------------- 3. audit
def test_every_request_leaves_exactly_one_audit_entry(live_server: LiveServer) -> None:
    security, store = live_server.security, live_server.store
    family, birth_date = "Zyxwvutson", "1961-02-03"
    with store.write() as txn:
        for resource in (patient("p-a", family, birth_date=birth_date),
                         patient("p-b", family, birth_date=birth_date),
                         observation("o-1", "p-a")):
            txn.create(resource, resource_id=resource["id"])
    clerk_password = "clerk-password-1234"
    security.directory.add_user("clerk", Role.coder, clerk_password)
    coder = issue_token(security, "coder-1", Role.coder)
    seq = max((e.seq for e in security.trail.entries(limit=100_000)), default=0)

    with fhir_client(live_server.url, live_server.token) as admin, \
            fhir_client(live_server.url, coder) as as_coder, \
            httpx.Client(base_url=live_server.url, timeout=60) as anonymous:
        assert admin.get("/fhir/Patient/p-a").status_code == 200
        found = admin.get("/fhir/Patient", params={"family": family, "birthdate": birth_date})
        assert found.status_code == 200
        assert match_ids(found.json()) == ["p-a", "p-b"]
        created = admin.post("/fhir/Observation", json=observation("x", "p-a"))
        assert created.status_code == 201
        new_id = created.json()["id"]
        updated = admin.put("/fhir/Patient/p-a",
                            json=patient("p-a", family, birth_date="1961-02-04"))
        assert updated.status_code == 200
        assert admin.delete("/fhir/Observation/o-1").status_code == 204
        assert as_coder.delete("/fhir/Patient/p-b").status_code == 403
        assert anonymous.get("/fhir/Patient/p-a").status_code == 401
        assert anonymous.post("/auth/sign-in", json={
            "username": "clerk", "password": clerk_password}).status_code == 200
        assert anonymous.post("/auth/sign-in", json={
            "username": "clerk", "password": "wrong-password-123"}).status_code == 401

    new = [e for e in security.trail.entries(limit=100_000) if e.seq > seq]
    assert [(e.action, e.outcome) for e in new] == [
        ("read", "success"), ("search", "success"), ("create", "success"),
        ("update", "success"), ("delete", "success"), ("delete", "denied"),
        ("read", "denied"), ("login", "success"), ("login-failure", "denied")]
    read, search, create, update_, delete, denied, anon, login, failure = new
    assert all(e.source_address == "127.0.0.1" for e in new)

    assert (read.user_id, read.role, read.patient_id) == ("fixture-admin", "administrator",
                                                          "p-a")
    assert (read.resource_type, read.resource_id) == ("Patient", "p-a")
    assert search.patient_id is None
    assert search.details["patients"] == ["p-a", "p-b"]
    assert search.details["patientCount"] == 2
    assert search.details["parameters"] == ["birthdate", "family"]
    assert (create.resource_type, create.resource_id, create.patient_id) == (
        "Observation", new_id, "p-a")
    assert create.details["after"] == 1
    assert (update_.resource_type, update_.resource_id, update_.patient_id) == (
        "Patient", "p-a", "p-a")
    assert update_.details["after"] == 2
    assert (delete.resource_type, delete.resource_id, delete.patient_id) == (
        "Observation", "o-1", "p-a")
    assert (denied.user_id, denied.role, denied.resource_id) == ("coder-1", "coder", "p-b")
    assert denied.details["status"] == 403
    assert (anon.user_id, anon.role, anon.details["status"]) == ("anonymous", "none", 401)
    assert (login.user_id, login.role) == ("clerk", "coder")
    assert failure.user_id == "clerk"

    # Search values (names, birth dates) are PHI: only parameter names are kept.
    stored = raw_audit_rows(security.trail.engine)
    assert family.lower() not in stored.lower()
    assert birth_date not in stored
    assert "1961-02-04" not in stored


def test_audit_reports_for_privacy_officers_as_fhir_and_csv(site: Site) -> None:
    site.seed(patient("p-a"), patient("p-b"), observation("o-1", "p-a"))
    admin = site.client(site.token("admin", Role.administrator))
    for path in ("/fhir/Patient/p-a", "/fhir/Observation/o-1", "/fhir/Patient/p-b"):
        assert admin.get(path).status_code == 200
    officer = site.client(site.token("privacy", Role.privacy_officer))

    report = officer.get("/audit/entries", params={"patient": "p-a"})
    assert report.status_code == 200, report.text
    assert report.headers["content-type"].startswith("application/fhir+json")
    bundle = report.json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle",
                                                                          "searchset", 2)
    events = [e["resource"] for e in bundle["entry"]]
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    assert [e["subtype"][0]["code"] for e in events] == ["read", "read"]
    assert all(e["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientRead") for e in events)
    assert all({"reference": "Patient/p-a"} in [x.get("what") for x in e["entity"]]
               for e in events)
    assert {x["what"]["reference"] for e in events for x in e["entity"]} == {
        "Patient/p-a", "Observation/o-1"}
    user = events[0]["agent"][0]
    assert (user["who"]["identifier"]["value"], user["role"][0]["text"]) == (
        "admin", "administrator")
    assert events[0]["agent"][1]["network"]["address"] == "testclient"

    as_csv = officer.get("/audit/entries", params={"patient": "p-a", "_format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[CSV_COLUMNS.index("patient_id")] for r in rows[1:]] == ["p-a", "p-a"]
    assert json.loads(rows[1][CSV_COLUMNS.index("details")])["status"] == 200

    by_user = officer.get("/audit/entries", params={"user": "admin", "action": "read"}).json()
    assert by_user["total"] == 3
    paged = officer.get("/audit/entries", params={"user": "admin", "_count": "1",
                                                  "_offset": "2"}).json()
    assert [e["resource"]["entity"][0]["what"]["reference"] for e in paged["entry"]] == [
        "Patient/p-b"]
    assert admin.get("/audit/entries", params={"patient": "p-a"}).status_code == 200
    for bad in ({"patient": "p-a", "family": "Doe"}, {"_count": "-1"}, {"_format": "xml"},
                {"action": "peek"}, {"since": "yesterday"}, {"until": "2024-01-01T00:00:00"}):
        assert officer.get("/audit/entries", params=bad).status_code == 400, bad
    for role in (Role.coder, Role.physician, Role.roi_specialist, Role.analyst):
        refused = site.client(site.token(f"r-{role.value}".replace("_", "-"), role))
        assert refused.get("/audit/entries", params={"patient": "p-a"}).status_code == 403
        assert refused.get("/audit/verify").status_code == 403

    verified = officer.get("/audit/verify")
    assert verified.status_code == 200
    result = verified.json()
    assert result["ok"] is True and result["firstBroken"] is None
    assert result["entries"] == len(site.entries()) - 1  # all but its own entry
    looked = site.entries(action="audit-log-access", user_id="privacy")
    assert looked[0].details["filters"] == ["patient"]
    assert "p-a" not in json.dumps([e.details for e in looked])


def _block_audit_inserts(engine: Engine) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER test_block_audit BEFORE INSERT ON audit_entry "
                "BEGIN SELECT RAISE(ABORT, 'audit storage unavailable (test)'); END")
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION test_block_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'audit storage unavailable (test)'; END $$")
            conn.exec_driver_sql(
                "CREATE TRIGGER test_block_audit BEFORE INSERT ON audit_entry "
                "FOR EACH ROW EXECUTE FUNCTION test_block_audit()")


def _unblock_audit_inserts(engine: Engine) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER test_block_audit")
        else:
            conn.exec_driver_sql("DROP TRIGGER test_block_audit ON audit_entry")
            conn.exec_driver_sql("DROP FUNCTION test_block_audit()")


def test_reads_fail_closed_when_the_audit_cannot_be_written(site: Site) -> None:
    site.seed(patient("p1", "Secretfamily"), observation("o1", "p1"))
    password = site.add_user("clerk", Role.coder)
    admin = site.client(site.token("admin", Role.administrator))
    assert admin.get("/fhir/Patient/p1").status_code == 200
    before = site.head()

    _block_audit_inserts(site.security.trail.engine)
    try:
        for response in (admin.get("/fhir/Patient/p1"),
                         admin.get("/fhir/Patient", params={"family": "Secretfamily"}),
                         admin.get("/fhir/Patient/p1/$everything"),
                         site.client().get("/fhir/Patient/p1")):
            assert response.status_code == 503, response.text
            assert issue_codes(response) == ["transient"]
            assert "Secretfamily" not in response.text and "mg/dL" not in response.text
            assert "etag" not in response.headers
        signed_in = sign_in(site.client(), "clerk", password)
        assert signed_in.status_code == 503
        assert "set-cookie" not in signed_in.headers
    finally:
        _unblock_audit_inserts(site.security.trail.engine)

    assert site.head() == before
    assert admin.get("/fhir/Patient/p1").status_code == 200
    assert site.head() == before + 1
    assert site.security.trail.verify().ok


def test_a_write_whose_audit_fails_is_not_stored(site: Site) -> None:
    site.seed(patient("p1"))
    admin = site.client(site.token("admin", Role.administrator))
    _block_audit_inserts(site.security.trail.engine)
    try:
        response = admin.post("/fhir/Observation", headers={"Content-Type": FHIR},
                              json=observation("x", "p1"))
        assert response.status_code == 503
    finally:
        _unblock_audit_inserts(site.security.trail.engine)
    found = admin.get("/fhir/Observation", params={"patient": "p1"}).json()
    assert match_ids(found) == []


# ----------------------------------------------------------------------------- 4. glass
def _restricted_chart(site: Site) -> None:
    site.seed(patient("vip", "Famous", label="CEL"), observation("vip-obs", "vip"),
              patient("pn", "Normal"), observation("pn-obs", "pn"),
              observation("pn-sud", "pn", label="42CFRPart2"))


def test_break_the_glass_opens_a_restricted_chart_for_a_limited_time(site: Site) -> None:
    _restricted_chart(site)
    doctor = site.client(site.token("dr-house", Role.physician))

    for path in ("/fhir/Patient/vip", "/fhir/Observation/vip-obs", "/fhir/Observation/pn-sud"):
        refused = doctor.get(path)
        assert refused.status_code == 403, (path, refused.text)
        assert "break-the-glass" in diagnostics(refused)
        assert "Famous" not in refused.text and "mg/dL" not in refused.text
    assert doctor.get("/fhir/Observation/pn-obs").status_code == 200

    observations = doctor.get("/fhir/Observation", params={"patient": "pn"}).json()
    assert match_ids(observations) == ["pn-obs"]
    [withheld] = outcome_entries(observations)
    assert withheld["resource"]["issue"][0]["code"] == "suppressed"
    assert "pn-sud" not in json.dumps(observations)
    patients = doctor.get("/fhir/Patient").json()
    assert match_ids(patients) == ["pn"]
    assert len(outcome_entries(patients)) == 1
    assert "Famous" not in json.dumps(patients)
    assert site.entries(action="search")[-1].details["withheld"] == 1

    reason = "Unresponsive in the ED; needs allergy and medication history"
    opened = doctor.post("/security/break-the-glass",
                         json={"patient": "vip", "reason": reason, "minutes": 30})
    assert opened.status_code == 201, opened.text
    grant = opened.json()
    assert (grant["user"], grant["role"], grant["patient"], grant["reason"]) == (
        "dr-house", "physician", "vip", reason)
    assert (datetime.fromisoformat(grant["expires"])
            - datetime.fromisoformat(grant["granted"])) == timedelta(minutes=30)
    [glass] = site.entries(action="break-the-glass")
    assert (glass.user_id, glass.role, glass.patient_id, glass.outcome) == (
        "dr-house", "physician", "vip", "success")
    assert glass.details["grant"] == grant["id"]

    read = doctor.get("/fhir/Patient/vip")
    assert read.status_code == 200
    assert read.json()["name"][0]["family"] == "Famous"
    entry = site.entries(action="read")[-1]
    assert (entry.patient_id, entry.details["breakTheGlass"]) == ("vip", ["vip"])
    assert doctor.get("/fhir/Observation/vip-obs").status_code == 200
    assert match_ids(doctor.get("/fhir/Patient").json()) == ["pn", "vip"]
    # The grant is the physician's own and for that patient only.
    assert doctor.get("/fhir/Observation/pn-sud").status_code == 403
    other = site.client(site.token("dr-other", Role.physician))
    assert other.get("/fhir/Patient/vip").status_code == 403

    opened = doctor.post("/security/break-the-glass", json={
        "patient": "Patient/pn", "reason": "Suspected overdose, treating now", "minutes": "15"})
    assert opened.status_code == 201, opened.text
    assert opened.json()["patient"] == "pn"
    assert doctor.get("/fhir/Observation/pn-sud").status_code == 200
    assert site.entries(action="read")[-1].details["breakTheGlass"] == ["pn"]

    site.clock.advance(minutes=16)
    assert doctor.get("/fhir/Observation/pn-sud").status_code == 403
    assert doctor.get("/fhir/Patient/vip").status_code == 200
    site.clock.advance(minutes=15)
    expired = doctor.get("/fhir/Patient/vip")
    assert expired.status_code == 403
    assert "break-the-glass" in diagnostics(expired)


def test_break_the_glass_by_session_is_audited_with_the_reason_for_review(site: Site) -> None:
    _restricted_chart(site)
    password = site.add_user("dr-house", Role.physician)
    totp = site.enroll("dr-house")
    doctor = site.client()
    assert sign_in(doctor, "dr-house", password, site.code(totp)).status_code == 200
    reason = "Cardiac arrest, attending physician"
    opened = doctor.post("/security/break-the-glass", data={"patient": "vip", "reason": reason,
                                                            "minutes": "20"})
    assert opened.status_code == 201, opened.text
    assert doctor.get("/fhir/Patient/vip").status_code == 200

    officer = site.client(site.token("privacy", Role.privacy_officer))
    review = officer.get("/security/break-the-glass")
    assert review.status_code == 200, review.text
    [grant] = review.json()["grants"]
    assert (grant["user"], grant["patient"], grant["reason"]) == ("dr-house", "vip", reason)
    since = (site.clock.now - timedelta(minutes=1)).isoformat()
    later = (site.clock.now + timedelta(minutes=1)).isoformat()
    assert len(officer.get("/security/break-the-glass",
                           params={"since": since}).json()["grants"]) == 1
    assert officer.get("/security/break-the-glass",
                       params={"since": later}).json()["grants"] == []
    assert officer.get("/security/break-the-glass",
                       params={"until": since}).json()["grants"] == []
    for bad in ("yesterday", "2026-01-01T00:00:00"):
        assert officer.get("/security/break-the-glass",
                           params={"since": bad}).status_code == 400
    for role in (Role.physician, Role.coder, Role.roi_specialist):
        refused = site.client(site.token(f"r-{role.value}".replace("_", "-"), role))
        assert refused.get("/security/break-the-glass").status_code == 403

    events = officer.get("/audit/entries", params={"action": "break-the-glass"}).json()
    [event] = [e["resource"] for e in events["entry"]]
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert event["subtype"][0]["display"] == "Emergency Override Started"


def test_break_the_glass_refuses_bad_requests_and_roles_without_it(site: Site) -> None:
    _restricted_chart(site)
    doctor = site.client(site.token("dr-house", Role.physician))
    reason = "Unresponsive in the ED, no family present"
    maximum = site.settings.break_glass_max_minutes
    for body in ({"patient": "vip", "reason": "because", "minutes": 30},
                 {"patient": "vip", "reason": "          x", "minutes": 30},
                 {"patient": "vip", "minutes": 30},
                 {"patient": "vip", "reason": reason, "minutes": maximum + 1},
                 {"patient": "vip", "reason": reason, "minutes": 0},
                 {"patient": "vip", "reason": reason, "minutes": -5},
                 {"patient": "vip", "reason": reason, "minutes": "abc"},
                 {"patient": "vip", "reason": reason, "minutes": True},
                 {"patient": "vip", "reason": reason, "minutes": 2.5},
                 {"reason": reason, "minutes": 30},
                 {"patient": "../vip", "reason": reason, "minutes": 30},
                 {"patient": 42, "reason": reason, "minutes": 30},
                 {"patient": "vip", "reason": reason, "minutes": 30, "note": "extra"},
                 {"patient": "vip", "reason": reason, "minutes": 30, "user": "dr-other"}):
        response = doctor.post("/security/break-the-glass", json=body)
        assert response.status_code == 400, (body, response.text)
        assert issue_codes(response) == ["invalid"], body
    not_json = doctor.post("/security/break-the-glass", content=b"{patient",
                           headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert doctor.post("/security/break-the-glass", json=["vip"]).status_code == 400

    analyst = site.client(site.token("analyst", Role.analyst))
    typist = site.client(site.token("typist", Role.transcriptionist))
    limited = site.client(site.token("dr-limited", Role.physician, "patient/*.rs", "vip"))
    secret = site.security.clients.register("feed", "system/*.cruds")
    service_token = site.client().post("/auth/token", data={
        "grant_type": "client_credentials"}, auth=("feed", secret)).json()["access_token"]
    for refused_client in (analyst, typist, limited, site.client(service_token)):
        refused = refused_client.post("/security/break-the-glass", json={
            "patient": "vip", "reason": reason, "minutes": 30})
        assert refused.status_code == 403, refused.text
        assert refused_client.get("/fhir/Patient/vip").status_code == 403

    assert site.security.glass.report() == []
    attempts = site.entries(action="break-the-glass")
    assert len(attempts) == 16 + 4
    assert {e.outcome for e in attempts} == {"failure", "denied"}
    assert doctor.get("/fhir/Patient/vip").status_code == 403


# ----------------------------------------------------------------------------- 5. disclosures
def _disclosure(pid: Any = "pn", **extra: Any) -> dict[str, Any]:
    return {"patient": pid, "recipient": "Acme Life Insurance, claims dept.",
            "purpose": "Underwriting, patient authorization on file",
            "description": "Discharge summary and lab results, March admission",
            "resources": [f"Patient/{pid}", "DocumentReference/d1"], **extra}


def _disclosure_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM disclosure")).scalar_one())


def test_disclosures_are_recorded_and_accounted_for_six_years_oldest_first(
        site: Site) -> None:
    roi = site.client(site.token("roi", Role.roi_specialist))
    now = site.clock.now
    recorded = roi.post("/him/disclosures", json=_disclosure())
    assert recorded.status_code == 201, recorded.text
    body = recorded.json()
    assert (body["patient"], body["releasedBy"], body["resources"]) == (
        "pn", "roi", ["Patient/pn", "DocumentReference/d1"])
    assert datetime.fromisoformat(body["date"]) == now

    five_years = (now - timedelta(days=5 * 365)).isoformat()
    seven_years = (now - timedelta(days=7 * 365)).isoformat()
    in_paris = (now - timedelta(days=30)).astimezone(timezone(timedelta(hours=2))).replace(
        microsecond=0).isoformat()
    assert in_paris.endswith("+02:00")
    for date in (five_years, seven_years, in_paris):
        assert roi.post("/him/disclosures", json=_disclosure(date=date)).status_code == 201
    assert roi.post("/him/disclosures", json=_disclosure("px")).status_code == 201

    accounting = roi.get("/him/disclosures", params={"patient": "pn"})
    assert accounting.status_code == 200, accounting.text
    listed = accounting.json()
    assert listed["patient"] == "pn"
    dates = [datetime.fromisoformat(d["date"]) for d in listed["disclosures"]]
    assert dates == sorted(dates)
    assert dates[0] == datetime.fromisoformat(five_years)
    assert dates[-1] == now
    assert len(dates) == 3  # the seven-year-old one and the other patient's are left out
    assert {d["patient"] for d in listed["disclosures"]} == {"pn"}
    assert listed["disclosures"][0]["recipient"] == "Acme Life Insurance, claims dept."

    officer = site.client(site.token("privacy", Role.privacy_officer))
    assert len(officer.get("/him/disclosures", params={"patient": "pn"})
               .json()["disclosures"]) == 3
    assert officer.post("/him/disclosures", json=_disclosure()).status_code == 403
    him = site.client(site.token("him-tech", Role.him_technician))
    assert him.post("/him/disclosures", json=_disclosure("pz")).status_code == 201

    logged = [e for e in site.entries(action="disclosure") if e.outcome == "success"]
    assert len(logged) == 6
    assert [e.user_id for e in site.entries(action="disclosure", user_id="privacy")] == [
        "privacy"]
    assert (logged[0].patient_id, logged[0].user_id, logged[0].outcome) == ("pn", "roi",
                                                                            "success")
    assert logged[0].details["resources"] == ["Patient/pn", "DocumentReference/d1"]
    report = site.entries(patient_id="pn", action="read")
    assert [e.details.get("report") for e in report] == ["accounting-of-disclosures"] * 2
    assert "Acme" not in raw_audit_rows(site.security.trail.engine)


def test_malformed_disclosures_are_refused_and_store_nothing(site: Site) -> None:
    roi = site.client(site.token("roi", Role.roi_specialist))
    future = (site.clock.now + timedelta(days=1)).isoformat()
    bodies: list[Any] = [
        _disclosure(date=future), _disclosure(date="last tuesday"), _disclosure(ssn="x"),
        _disclosure("../pn"), _disclosure("p" * 65), _disclosure(42),
        {**_disclosure(), "recipient": ""}, {**_disclosure(), "recipient": None},
        {k: v for k, v in _disclosure().items() if k != "purpose"},
        {k: v for k, v in _disclosure().items() if k != "description"},
        {**_disclosure(), "resources": "Patient/pn"}, {**_disclosure(), "resources": ["pn"]},
        {**_disclosure(), "resources": [{"reference": "Patient/pn"}]},
        {**_disclosure(), "resources": ["Patient/"]}, {**_disclosure(), "resources": ["/pn"]},
        {**_disclosure(), "resources": ["Patient/p n"]},
        {**_disclosure(), "resources": ["patient/pn"]},
        {**_disclosure(), "recipient": "x" * 2001}, [_disclosure()], "pn", None,
    ]
    for body in bodies:
        response = roi.post("/him/disclosures", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    for raw, content_type in ((b"{not json", "application/json"),
                              (b"", "application/json"),
                              (json.dumps(_disclosure()).encode(), "text/plain")):
        response = roi.post("/him/disclosures", content=raw,
                            headers={"Content-Type": content_type})
        assert response.status_code in (400, 415), response.text
    assert _disclosure_rows(site.store.engine) == 0
    assert roi.get("/him/disclosures", params={"patient": "pn"}).json()["disclosures"] == []
    assert roi.get("/him/disclosures").status_code == 400
    assert roi.get("/him/disclosures", params={"patient": "../x"}).status_code == 400

    for role in (Role.coder, Role.physician, Role.analyst):
        refused = site.client(site.token(f"r-{role.value}", role))
        assert refused.post("/him/disclosures", json=_disclosure()).status_code == 403
        assert refused.get("/him/disclosures", params={"patient": "pn"}).status_code == 403
    assert _disclosure_rows(site.store.engine) == 0
    outcomes = [e.outcome for e in site.entries(action="disclosure")]
    assert outcomes.count("failure") == len(bodies) + 3
    assert outcomes.count("denied") == 3


# ----------------------------------------------------------------------------- 6. passwords
SQL_LOGGER = "sqlalchemy.engine"


def _cli(home: Path, database_url: str, *args: str) -> subprocess.Popen[str]:
    """Start ``chartkeeper ARGS`` as a real process; the caller writes the password."""
    env = dict(os.environ, CHARTKEEPER_HOME=str(home), CHARTKEEPER_DATABASE_URL=database_url)
    return subprocess.Popen([sys.executable, "-m", "chartkeeper.cli", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str], stdin: str) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(stdin, timeout=120)
    return process.returncode, stdout, stderr


def _stored_text(engine: Engine, database_url: str) -> bytes:
    """Everything the database holds: the SQLite files' bytes, or every PostgreSQL row."""
    if engine.dialect.name == "sqlite":
        path = Path(database_url.removeprefix("sqlite:///"))
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert path.exists()
        return b"".join(f.read_bytes() for f in files if f.exists())
    dump: list[str] = []
    with engine.connect() as conn:
        tables = conn.execute(text(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")).scalars().all()
        assert {"app_user", "user_session", "service_client"} <= set(tables)
        for table in tables:
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                dump.append(repr(tuple(row)))
    return "\n".join(dump).encode()


def test_passwords_are_never_stored_or_logged_in_plain_text(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    home = tmp_path / "home"
    cli_first, cli_reset = "Cli-First-Horse-7391!", "Cli-Reset-Battery-2048?"
    changed, directory_pw = "Changed-Staple-Pw-5519", "Directory-Pw-Orchid-8842"
    typed_as_name = "correcthorsebatterystaple42"
    wrong = "Wrong-Guess-Password-0000"

    # Start-up dominates a CLI run: all three start at once, and each reads its password
    # (before touching the database) only when the one before it is done.
    weak_cli = _cli(home, database_url, "users", "add", "weak-user", "--role", "coder")
    reset_cli = _cli(home, database_url, "users", "set-password", "cli-coder")
    added = _finish(_cli(home, database_url, "users", "add", "cli-coder", "--role", "coder"),
                    cli_first + "\n")
    assert added[0] == 0, added
    assert "added cli-coder (coder)" in added[1]
    reset = _finish(reset_cli, cli_reset + "\n")  # reads stdin only after added is done
    assert reset[0] == 0, reset
    weak = _finish(weak_cli, "Weak-1\n")
    assert weak[0] == 1 and "at least" in weak[2], weak
    cli_output = "".join(out + err for _, out, err in (added, reset, weak))

    store = Store(database_url)
    store.create_schema()
    settings = make_settings(tmp_path, database_url)
    security = make_security(settings, store)
    secrets_seen = [cli_first, cli_reset, changed, directory_pw, typed_as_name, wrong,
                    "Weak-1"]
    try:
        security.directory.add_user("dr-dir", Role.physician, directory_pw)
        totp = pyotp.parse_uri(security.directory.enroll_totp("dr-dir"))
        assert isinstance(totp, pyotp.TOTP)
        client_secret = security.clients.register("lab-feed", "system/Observation.rs")
        secrets_seen.append(client_secret)
        client = TestClient(create_app(settings, store, security), base_url="http://testserver")

        assert sign_in(client, "cli-coder", cli_first).status_code == 401  # replaced
        assert sign_in(client, "cli-coder", cli_reset).status_code == 403  # must change
        too_short = client.post("/auth/change-password", json={
            "username": "cli-coder", "password": cli_reset, "newPassword": "Weak-1"})
        assert too_short.status_code == 400
        assert "Weak-1" not in too_short.text
        assert client.post("/auth/change-password", json={
            "username": "cli-coder", "password": cli_reset,
            "newPassword": changed}).status_code == 204
        signed_in = sign_in(client, "cli-coder", changed)
        assert signed_in.status_code == 200
        secrets_seen.append(client.cookies[SESSION_COOKIE])
        assert sign_in(client, "dr-dir", directory_pw, totp.now()).status_code == 200
        secrets_seen.append(client.cookies[SESSION_COOKIE])

        for username, password in (("cli-coder", wrong), (typed_as_name, changed),
                                   (changed, directory_pw), (directory_pw, changed),
                                   (f"{typed_as_name} ", wrong)):
            refused = sign_in(client, username, password)
            assert refused.status_code == 401
            assert username.strip() not in refused.text and password not in refused.text
        refused = client.post("/auth/sign-in", data={"username": changed, "password": wrong})
        assert refused.status_code == 401
        swapped = client.post("/auth/token", data={"grant_type": "client_credentials",
                                                   "client_id": client_secret,
                                                   "client_secret": "lab-feed"})
        assert swapped.status_code == 401
        assert client_secret not in swapped.text
        issued = client.post("/auth/token", data={"grant_type": "client_credentials"},
                             auth=("lab-feed", client_secret))
        assert issued.status_code == 200
        secrets_seen.append(issued.json()["access_token"])

        failures = security.trail.entries(action="login-failure", limit=1000)
        assert [e.user_id for e in failures] == [
            "cli-coder", "cli-coder", "cli-coder", "anonymous", "anonymous", "anonymous",
            "anonymous", "anonymous", "anonymous"]
        logins = security.trail.entries(action="login", limit=1000)
        assert [(e.user_id, e.role) for e in logins] == [
            ("cli-coder", "coder"), ("dr-dir", "physician"), ("lab-feed", "service")]
    finally:
        security.close()

    stored = _stored_text(store.engine, database_url).lower()
    if security.trail.engine is not store.engine:  # SQLite: the audit trail's own file
        stored += _stored_text(security.trail.engine,
                               str(security.trail.engine.url)).lower()
    store.dispose()
    # SQL statement logging shows bound parameters: a known leak, tested on its own below.
    records = [r for r in caplog.records if not r.name.startswith(SQL_LOGGER)]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}"
                       for r in records).lower()
    assert "user 'cli-coder' signed in" in logged  # the capture saw the activity
    assert "sign-in refused" in logged
    for secret in secrets_seen:
        assert secret.lower().encode() not in stored, secret
        assert secret.lower() not in logged, secret
        assert secret.lower() not in cli_output.lower(), secret


def test_sql_logging_does_not_show_a_password_typed_as_a_username(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    password = "correcthorsebatterystaple42"
    caplog.set_level(logging.INFO, logger=SQL_LOGGER)
    response = sign_in(site.client(), password, "whatever-it-was-123")
    assert response.status_code == 401
    assert any(r.name.startswith(SQL_LOGGER) for r in caplog.records)
    assert password not in caplog.text
