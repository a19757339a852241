"""SMART scopes, bearer tokens, client credentials, and the users/token command line."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from chartkeeper.security.identity import (
    InvalidRole,
    Role,
    service_client,
)
from chartkeeper.security.tokens import (
    BAD_CLIENT_MESSAGE,
    INTERACTIONS,
    ClientExists,
    InvalidClient,
    InvalidScope,
    Scope,
    ScopeContext,
    ScopeNotGranted,
    ServiceClientRegistry,
    TokenExpired,
    TokenInvalid,
    TokenIssuer,
    TokenRequestError,
    parse_scope,
    parse_scopes,
    signing_key_path,
)
from chartkeeper.settings import Settings

FHIR_BASE = "https://chartkeeper.example/fhir"
KEY = secrets.token_bytes(32)


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(KEY, FHIR_BASE, FHIR_BASE)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, object], payload: dict[str, object]) -> str:
    """A token with no signature at all, as an attacker would hand-craft it."""
    return (f"{b64url(json.dumps(header).encode())}."
            f"{b64url(json.dumps(payload).encode())}.")


def valid_payload() -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    return {"iss": FHIR_BASE, "aud": FHIR_BASE, "sub": "alice", "iat": now, "nbf": now,
            "exp": now + 600, "jti": "j1", "scope": "user/*.rs", "role": "coder"}


# ------------------------------------------------------------------------------- scopes
def test_v2_scopes_parse_into_context_type_and_interactions() -> None:
    scope = parse_scope("patient/Observation.rs")
    assert scope == Scope(ScopeContext.patient, "Observation", frozenset("rs"))
    assert str(parse_scope("user/*.cruds")) == "user/*.cruds"
    assert parse_scope("system/*.rs").context is ScopeContext.system


@pytest.mark.parametrize(("v1", "v2"), [
    ("patient/*.read", "patient/*.rs"),
    ("user/Observation.write", "user/Observation.cud"),
    ("patient/Patient.*", "patient/Patient.cruds"),
    ("system/Encounter.read", "system/Encounter.rs"),
])
def test_v1_scopes_map_to_v2(v1: str, v2: str) -> None:
    assert parse_scope(v1) == parse_scope(v2)
    assert str(parse_scope(v1)) == v2


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty scope"),
    ("patient", "expected <context>/<resource type>.<permissions>"),
    ("patient/Observation", "missing '.<permissions>'"),
    ("patient/Observation.", "no permissions"),
    ("practitioner/Observation.rs", "unknown context 'practitioner'"),
    ("patient/Observations.rs", "'Observations' is not a FHIR R4 resource type"),
    ("patient/observation.rs", "'observation' is not a FHIR R4 resource type"),
    ("patient/.rs", "'' is not a FHIR R4 resource type"),
    ("patient/Observation.sr", "in that order"),
    ("patient/Observation.rr", "at most once"),
    ("patient/Observation.rx", "letters of 'cruds'"),
    ("patient/Observation.readwrite", "letters of 'cruds'"),
    ("patient/Observation.rs?category=laboratory", "granular scopes"),
    ("patient/Observation.rs extra", "no whitespace"),
])
def test_malformed_scopes_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(InvalidScope) as refused:
        parse_scope(text)
    assert problem in str(refused.value)
    assert refused.value.scope == text


def test_scope_lists_keep_known_non_resource_scopes_and_refuse_others() -> None:
    parsed = parse_scopes("openid fhirUser launch/patient patient/*.read patient/*.rs")
    assert [str(s) for s in parsed.resources] == ["patient/*.rs"]
    assert parsed.others == ("openid", "fhirUser", "launch/patient")
    with pytest.raises(InvalidScope, match="not a SMART resource scope"):
        parse_scopes("openid admin")
    with pytest.raises(InvalidScope, match="unknown context"):
        parse_scopes("openid launch/everything.r")


ALLOWS_MATRIX = [
    ("user/Observation.rs", {("Observation", "r"), ("Observation", "s")}),
    ("patient/Patient.cud", {("Patient", "c"), ("Patient", "u"), ("Patient", "d")}),
    ("system/*.rs", {(t, i) for t in ("Observation", "Patient") for i in "rs"}),
    ("user/*.cruds", {(t, i) for t in ("Observation", "Patient") for i in INTERACTIONS}),
    ("patient/*.read", {(t, i) for t in ("Observation", "Patient") for i in "rs"}),
    ("user/Patient.s", {("Patient", "s")}),
]


@pytest.mark.parametrize(("text", "allowed"), ALLOWS_MATRIX)
def test_scope_allows_exactly_its_types_and_interactions(
        text: str, allowed: set[tuple[str, str]]) -> None:
    scope = parse_scope(text)
    granted = {(t, i) for t in ("Observation", "Patient") for i in INTERACTIONS
               if scope.allows(t, i)}
    assert granted == allowed


def test_scope_allows_refuses_an_unknown_interaction() -> None:
    with pytest.raises(ValueError, match="one of c, r, u, d, s"):
        parse_scope("user/*.cruds").allows("Patient", "read")


permissions_strategy = st.lists(st.sampled_from(INTERACTIONS), min_size=1, unique=True).map(
    lambda letters: "".join(c for c in INTERACTIONS if c in letters))


@given(context=st.sampled_from(list(ScopeContext)),
       resource=st.sampled_from(["*", "Patient", "Observation", "DocumentReference"]),
       permissions=permissions_strategy)
def test_every_well_formed_v2_scope_round_trips(context: ScopeContext, resource: str,
                                               permissions: str) -> None:
    text = f"{context.value}/{resource}.{permissions}"
    scope = parse_scope(text)
    assert str(scope) == text
    assert scope.interactions == frozenset(permissions)


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_invalid_scope(text: str) -> None:
    try:
        scope = parse_scope(text)
    except InvalidScope:
        return
    assert parse_scope(str(scope)) == scope


# ------------------------------------------------------------------------------- tokens
def test_issued_token_verifies_with_its_claims(issuer: TokenIssuer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = issuer.issue("alice", Role.coder, "patient/Observation.read launch/patient",
                         patient="pat-123", minutes=30, now=now)

    claims = issuer.verify(token)

    assert claims.subject == "alice"
    assert claims.role is Role.coder
    assert claims.patient == "pat-123"
    assert str(claims.scopes) == "patient/Observation.rs launch/patient"
    assert claims.expires_at - claims.issued_at == timedelta(minutes=30)
    assert claims.issued_at == now
    assert claims.allows("Observation", "r") and claims.allows("Observation", "s")
    assert not claims.allows("Observation", "u") and not claims.allows("Patient", "r")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "at+jwt"}


def test_expired_token_is_refused(issuer: TokenIssuer) -> None:
    token = issuer.issue("alice", Role.coder, "user/*.rs", minutes=60,
                         now=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(TokenExpired):
        issuer.verify(token)


def test_token_from_the_future_is_refused(issuer: TokenIssuer) -> None:
    token = issuer.issue("alice", Role.coder, "user/*.rs",
                         now=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(TokenInvalid, match="not .*valid yet"):
        issuer.verify(token)


def test_wrong_audience_and_wrong_issuer_are_refused(issuer: TokenIssuer) -> None:
    token = issuer.issue("alice", Role.coder, "user/*.rs")
    with pytest.raises(TokenInvalid, match="wrong audience") as audience:
        TokenIssuer(KEY, FHIR_BASE, "https://other.example/fhir").verify(token)
    assert "audience" in audience.value.reason
    with pytest.raises(TokenInvalid, match="wrong issuer"):
        TokenIssuer(KEY, "https://other.example/fhir", FHIR_BASE).verify(token)


def test_alg_none_is_refused(issuer: TokenIssuer) -> None:
    for alg in ("none", "None", "NONE"):
        token = unsigned({"alg": alg, "typ": "at+jwt"}, valid_payload())
        with pytest.raises(TokenInvalid, match="algorithm .* is not accepted"):
            issuer.verify(token)


def test_token_signed_with_another_key_is_refused(issuer: TokenIssuer) -> None:
    forged = jwt.encode(valid_payload(), secrets.token_bytes(32), algorithm="HS256",
                        headers={"typ": "at+jwt"})
    with pytest.raises(TokenInvalid, match="signature") as refused:
        issuer.verify(forged)
    assert refused.value.reason == "signature does not verify"


@pytest.mark.filterwarnings("ignore:The HMAC key is 32 bytes long")
def test_algorithm_confusion_tokens_are_refused(issuer: TokenIssuer) -> None:
    # Same key, other HMAC size: still not the configured algorithm.
    hs512 = jwt.encode(valid_payload(), KEY, algorithm="HS512", headers={"typ": "at+jwt"})
    # A public-key algorithm with the attacker's own key pair.
    attacker = ec.generate_private_key(ec.SECP256R1())
    es256 = jwt.encode(valid_payload(), attacker, algorithm="ES256", headers={"typ": "at+jwt"})
    for token, alg in ((hs512, "HS512"), (es256, "ES256")):
        with pytest.raises(TokenInvalid, match=f"algorithm '{alg}' is not accepted"):
            issuer.verify(token)


def test_other_jwts_signed_with_the_key_are_not_access_tokens(issuer: TokenIssuer) -> None:
    not_access = jwt.encode(valid_payload(), KEY, algorithm="HS256")  # typ "JWT"
    with pytest.raises(TokenInvalid, match="token type"):
        issuer.verify(not_access)


def test_tampered_and_garbage_tokens_are_refused(issuer: TokenIssuer) -> None:
    token = issuer.issue("alice", Role.coder, "user/Observation.rs")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "user/*.cruds"
    tampered = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(TokenInvalid, match="signature"):
        issuer.verify(tampered)
    for garbage in ("", "not a token", "a.b.c", token + "x"):
        with pytest.raises(TokenInvalid):
            issuer.verify(garbage)


@pytest.mark.parametrize(("change", "reason"), [
    ({"scope": "user/*.rx"}, "malformed scope"),
    ({"role": "superuser"}, "unknown role 'superuser'"),
    ({"exp": None}, "missing claim 'exp'"),
    ({"scope": "patient/*.rs"}, "patient/ scopes need a patient"),
    ({"scope": "system/*.rs"}, "system/ scopes are for the service role only"),
    ({"sub": 42}, "Subject must be a string"),
])
def test_validly_signed_tokens_with_bad_claims_are_refused(
        issuer: TokenIssuer, change: dict[str, object], reason: str) -> None:
    payload = valid_payload()
    for name, value in change.items():
        if value is None:
            del payload[name]
        else:
            payload[name] = value
    token = jwt.encode(payload, KEY, algorithm="HS256", headers={"typ": "at+jwt"})
    with pytest.raises(TokenInvalid) as refused:
        issuer.verify(token)
    assert reason in refused.value.reason


def test_issue_refuses_requests_that_cannot_make_a_valid_token(issuer: TokenIssuer) -> None:
    with pytest.raises(TokenRequestError, match="need a patient"):
        issuer.issue("alice", Role.coder, "patient/*.rs")
    with pytest.raises(TokenRequestError, match="service role only"):
        issuer.issue("alice", Role.administrator, "system/*.rs")
    with pytest.raises(TokenRequestError, match="between 1 and 1440"):
        issuer.issue("alice", Role.coder, "user/*.rs", minutes=0)
    with pytest.raises(TokenRequestError, match="at least one scope"):
        issuer.issue("alice", Role.coder, "")
    with pytest.raises(TokenRequestError, match="not a FHIR id"):
        issuer.issue("alice", Role.coder, "patient/*.rs", patient="../Patient/1")
    with pytest.raises(InvalidScope):
        issuer.issue("alice", Role.coder, "user/Observation.rw")
    with pytest.raises(InvalidRole):
        issuer.issue("alice", "superuser", "user/*.rs")
    with pytest.raises(TokenRequestError, match="at least 32 bytes"):
        TokenIssuer(b"short", FHIR_BASE, FHIR_BASE)


def test_issuer_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = signing_key_path(tmp_path)
    token = TokenIssuer.from_key_file(path, FHIR_BASE, FHIR_BASE).issue(
        "alice", Role.coder, "user/*.rs")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TokenIssuer.from_key_file(path, FHIR_BASE, FHIR_BASE).verify(token).subject == "alice"


# ------------------------------------------------------------------------------- clients
@pytest.fixture
def registry(engine: Engine, issuer: TokenIssuer) -> ServiceClientRegistry:
    return ServiceClientRegistry(engine, issuer,
                                 PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def test_client_credentials_grant_only_the_intersection(
        registry: ServiceClientRegistry, issuer: TokenIssuer) -> None:
    secret = registry.register("hl7-feed", "system/Observation.cruds system/Patient.rs")

    token = registry.token_for_client(
        "hl7-feed", secret, "system/Observation.rs system/Patient.cruds system/Encounter.r")
    claims = issuer.verify(token)

    assert str(claims.scopes) == "system/Observation.rs system/Patient.rs"
    assert (claims.subject, claims.client_id, claims.role) == (
        "hl7-feed", "hl7-feed", Role.service)
    assert claims.expires_at - claims.issued_at == timedelta(minutes=5)
    assert not claims.allows("Encounter", "r") and not claims.allows("Patient", "u")

    wildcard = issuer.verify(registry.token_for_client("hl7-feed", secret, "system/*.r"))
    assert str(wildcard.scopes) == "system/Observation.r system/Patient.r"
    everything = issuer.verify(registry.token_for_client("hl7-feed", secret, ""))
    assert str(everything.scopes) == "system/Observation.cruds system/Patient.rs"
    user_scopes = "user/*.cruds patient/*.rs openid"
    with pytest.raises(ScopeNotGranted, match="'hl7-feed'"):
        registry.token_for_client("hl7-feed", secret, user_scopes)
    with pytest.raises(ScopeNotGranted):
        registry.token_for_client("hl7-feed", secret, "system/Encounter.cruds")
    with pytest.raises(InvalidScope):
        registry.token_for_client("hl7-feed", secret, "system/Encounter.x")


def test_wrong_secret_unknown_and_disabled_clients_read_the_same(
        registry: ServiceClientRegistry) -> None:
    secret = registry.register("billing", "system/Claim.cruds")
    refusals = []
    for client_id, given_secret in (("billing", secret + "x"), ("nobody", secret)):
        with pytest.raises(InvalidClient) as refused:
            registry.token_for_client(client_id, given_secret, "system/Claim.r")
        refusals.append(str(refused.value))
    registry.disable("billing")
    with pytest.raises(InvalidClient) as disabled:
        registry.token_for_client("billing", secret, "system/Claim.r")
    refusals.append(str(disabled.value))
    assert refusals == [BAD_CLIENT_MESSAGE] * 3


def test_client_registration_is_checked_and_the_secret_never_stored(
        registry: ServiceClientRegistry, engine: Engine) -> None:
    with pytest.raises(InvalidScope, match="system/ scopes only"):
        registry.register("portal", "system/Patient.rs patient/*.rs")
    with pytest.raises(TokenRequestError, match="not valid"):
        registry.register("bad client", "system/Patient.rs")
    secret = registry.register("portal", "system/Patient.rs")
    with pytest.raises(ClientExists):
        registry.register("portal", "system/*.rs")
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(select(service_client))]
    assert len(rows) == 1
    assert secret not in repr(rows) and "$argon2id$" in repr(rows)
    assert [str(s) for s in registry.get("portal").scopes] == ["system/Patient.rs"]


# ------------------------------------------------------------------------------- the CLI
def security_cli(home: Path, *args: str, password: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHARTKEEPER_DATABASE_URL", "CHARTKEEPER_BASE_URL")}
    env["CHARTKEEPER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "chartkeeper.security.cli", *args], env=env,
        input="" if password is None else password + "\n",
        capture_output=True, text=True, timeout=300)


def test_cli_adds_a_user_from_stdin_and_issues_a_token_that_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    password = "Stdin-Only-Passphrase-2026"

    added = security_cli(home, "users", "add", "alice", "--role", "coder", password=password)
    assert added.returncode == 0, added.stderr
    assert "added alice (coder)" in added.stdout

    issued = security_cli(home, "token", "issue", "--user", "alice",
                          "--scope", "user/Observation.rs patient/*.read",
                          "--patient", "p1", "--minutes", "15")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    claims = TokenIssuer.from_settings(Settings(home=home)).verify(token)
    assert (claims.subject, claims.role, claims.patient) == ("alice", Role.coder, "p1")
    assert str(claims.scopes) == "user/Observation.rs patient/*.rs"
    assert claims.expires_at - claims.issued_at == timedelta(minutes=15)

    listed = security_cli(home, "users", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout and "coder" in listed.stdout
    for result in (added, issued, listed):
        assert password not in result.stdout + result.stderr
    for path in home.iterdir():
        assert password.encode() not in path.read_bytes()
    for key in ("token-signing.key", "totp-secrets.key"):
        assert stat.S_IMODE((home / key).stat().st_mode) == 0o600


def test_cli_refusals_are_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    weak = security_cli(home, "users", "add", "bob", "--role", "coder", password="short-pw")
    assert weak.returncode == 1
    assert "password must be at least 12 characters (got 8)" in weak.stderr
    assert "short-pw" not in weak.stderr + weak.stdout

    no_password = security_cli(home, "users", "add", "bob", "--role", "coder")
    assert no_password.returncode == 1 and "no password on stdin" in no_password.stderr

    bad_role = security_cli(home, "users", "add", "bob", "--role", "surgeon",
                            password="Long-Enough-Passphrase")
    assert bad_role.returncode == 2 and "surgeon" in bad_role.stderr

    unknown = security_cli(home, "token", "issue", "--user", "ghost", "--scope", "user/*.rs")
    assert unknown.returncode == 1 and "no user named 'ghost'" in unknown.stderr

    assert security_cli(home, "users", "add", "bob", "--role", "physician",
                        password="Long-Enough-Passphrase").returncode == 0
    bad_scope = security_cli(home, "token", "issue", "--user", "bob", "--scope", "user/*.rx")
    assert bad_scope.returncode == 1 and "invalid scope 'user/*.rx'" in bad_scope.stderr

    assert security_cli(home, "users", "disable", "bob").returncode == 0
    disabled = security_cli(home, "token", "issue", "--user", "bob", "--scope", "user/*.rs")
    assert disabled.returncode == 1 and "disabled" in disabled.stderr
    assert disabled.stdout == ""


def test_cli_account_changes_and_token_issues_are_audited_as_privilege_changes(
        tmp_path: Path) -> None:
    from chartkeeper.security.audit import AuditKey, AuditTrail
    from chartkeeper.store.engine import make_engine

    home = tmp_path / "home"
    password = "Audited-Passphrase-2026"
    assert security_cli(home, "users", "add", "carol", "--role", "coder",
                        password=password).returncode == 0
    assert security_cli(home, "token", "issue", "--user", "carol",
                        "--scope", "user/*.rs").returncode == 0
    assert security_cli(home, "users", "disable", "carol").returncode == 0
    assert security_cli(home, "users", "disable", "nobody").returncode == 1  # nothing changed
    engine = make_engine(f"sqlite:///{home / 'audit.sqlite'}")  # the trail's own file
    trail = AuditTrail(engine, AuditKey.in_home(home))
    entries = trail.entries(action="privilege-change")
    assert [(e.details["account"], e.details["change"]) for e in entries] == [
        ("carol", "add"), ("carol", "token-issued"), ("carol", "disable")]
    assert entries[0].details["role"] == "coder" and entries[0].role == "administrator"
    assert trail.verify().ok
    assert password not in repr(entries)
    engine.dispose()
