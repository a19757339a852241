"""Sign-in, tokens, break-the-glass, audit reports and the accounting of disclosures."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from chartkeeper.api.auth import (
    AUDIT_LOG,
    AUTHENTICATED,
    BREAK_GLASS,
    DISCLOSURE,
    DISCLOSURE_REPORT,
    SESSION_COOKIE,
    SESSION_SCOPES,
    SIGN_IN,
    SIGN_OUT,
    RequestAccess,
    access_of,
    services_of,
)
from chartkeeper.security.access import Capability, Forbidden, Principal
from chartkeeper.security.audit import CSV_COLUMNS, AuditAction, InvalidAuditRecord
from chartkeeper.security.identity import (
    AuthenticationError,
    Role,
    SecurityError,
    UnknownUser,
    User,
    check_username,
    normalize_username,
)
from chartkeeper.security.services import SecurityServices
from chartkeeper.security.tokens import (
    ClientNotFound,
    InvalidClient,
    InvalidScope,
    ScopeNotGranted,
    TokenRequestError,
)
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.store.search import parse_int

router = APIRouter()
MAX_FORM_BYTES = 64 * 1024
MAX_AUDIT_PAGE = 1000
BREAK_GLASS_FIELDS = frozenset({"patient", "reason", "minutes"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


async def read_fields(request: Request) -> dict[str, Any]:
    """A small JSON object or urlencoded form; anything else is a 400/415 OperationOutcome."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest(f"the request body exceeds {MAX_FORM_BYTES} bytes")
    if content_type == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise InvalidRequest("the form is not UTF-8") from exc
    if content_type in ("application/json", "application/fhir+json"):
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(fields, dict):
            raise InvalidRequest("the body must be a JSON object")
        return fields
    raise InvalidRequest("send application/json or application/x-www-form-urlencoded")


def _field(fields: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string")
    return value


def _username_hint(username: str) -> str | None:
    """The tried name for the audit of a failed sign-in, only if it looks like a username
    (a password typed into the name field must not land in the audit trail)."""
    try:
        return check_username(normalize_username(username))
    except SecurityError:
        return None


async def authenticate_password(access: RequestAccess, services: SecurityServices, username: str,
                        password: str, totp: str | None) -> User:
    """Check a password (and TOTP); a refusal is audited as a failed login of the name tried,
    but only when that name is an account: many passwords look like usernames, and one typed
    into the name field must not land in the audit trail."""
    access.user_hint = _username_hint(username)
    access.action = AuditAction.LOGIN_FAILURE
    try:
        user: User = await run_in_threadpool(services.directory.authenticate, username,
                                             password, totp, services.now())
    except UnknownUser:
        access.user_hint = None
        raise
    access.user_hint = user.username
    return user


def signed_in(access: RequestAccess, user: User) -> None:
    """Audit the rest of the request as the user who just proved who they are (with role)."""
    access.principal = Principal(user.username, user.role, SESSION_SCOPES, via="password")


def _registered_client(services: SecurityServices, client_id: str) -> str | None:
    """``client_id`` if a client of that id is registered (else it may be a pasted secret)."""
    try:
        return services.clients.get(client_id).client_id
    except ClientNotFound:
        return None


# ------------------------------------------------------------------------------ sign-in
@router.post("/auth/sign-in", dependencies=[Depends(SIGN_IN)], tags=["auth"])
async def sign_in(request: Request) -> Response:
    """Password (and TOTP for privileged roles) -> a web session cookie."""
    access = access_of(request)
    services = services_of(request)
    fields = await read_fields(request)
    username = _field(fields, "username") or ""
    password = _field(fields, "password") or ""
    totp = _field(fields, "totp", required=False)
    user = await authenticate_password(access, services, username, password, totp)
    if user.must_change_password:
        raise Forbidden("the password must be changed before signing in "
                        "(POST /auth/change-password)")
    token = await run_in_threadpool(services.sessions.start, user, services.now())
    access.action = AuditAction.LOGIN
    signed_in(access, user)
    access.details["session"] = "started"
    response = json_response({"user": user.username, "role": user.role.value,
                              "idleMinutes": services.sessions.policy.idle_minutes})
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.app.state.settings.base_url.startswith("https://"),
                        path="/")
    return response


@router.post("/auth/sign-out", dependencies=[Depends(SIGN_OUT)], tags=["auth"])
def sign_out(request: Request) -> Response:
    access = access_of(request)
    access.who()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        services_of(request).sessions.end(cookie, services_of(request).now())
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/auth/change-password", dependencies=[Depends(SIGN_IN)], tags=["auth"])
async def change_password(request: Request) -> Response:
    access = access_of(request)
    services = services_of(request)
    fields = await read_fields(request)
    username = _field(fields, "username") or ""
    password = _field(fields, "password") or ""
    new_password = _field(fields, "newPassword") or ""
    totp = _field(fields, "totp", required=False)
    user = await authenticate_password(access, services, username, password, totp)
    # Signed in: from here a refusal (same or weak new password) is a failed password change.
    access.action = AuditAction.PRIVILEGE_CHANGE
    signed_in(access, user)
    access.details["change"] = "password"
    if new_password == password:
        raise InvalidRequest("the new password must differ from the old one")
    await run_in_threadpool(services.directory.set_password, user.username, new_password)
    await run_in_threadpool(services.sessions.end_all, user.username, services.now())
    return Response(status_code=204)


@router.get("/auth/whoami", dependencies=[Depends(AUTHENTICATED)], tags=["auth"])
def whoami(request: Request) -> Response:
    principal = access_of(request).who()
    return json_response({
        "user": principal.user_id, "role": principal.role.value,
        "scope": str(principal.scopes), "patient": principal.patient,
        "via": principal.via,
        "capabilities": sorted(c.value for c in principal.policy.capabilities)})


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="chartkeeper"'
    return json_response({"error": error, "error_description": description}, status, headers)


@router.post("/auth/token", dependencies=[Depends(SIGN_IN)], tags=["auth"])
async def token(request: Request) -> Response:
    """OAuth2 token endpoint: client_credentials for registered backend services (RFC 6749
    4.4; client id and secret by HTTP Basic or in the form)."""
    access = access_of(request)
    services = services_of(request)
    access.action = AuditAction.LOGIN_FAILURE
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return _oauth_error("invalid_request", "send application/x-www-form-urlencoded")
    try:
        fields = await read_fields(request)
    except InvalidRequest as exc:
        return _oauth_error("invalid_request", exc.diagnostics)
    if fields.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "only client_credentials is supported")
    client_id, secret = fields.get("client_id"), fields.get("client_secret")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return _oauth_error("invalid_client", "malformed Basic credentials", 401)
        name, sep, password = decoded.partition(":")
        if not sep:
            return _oauth_error("invalid_client", "malformed Basic credentials", 401)
        client_id, secret = unquote(name), unquote(password)
    if not client_id or not secret:
        return _oauth_error("invalid_client", "client authentication is required", 401)
    try:
        issued = await run_in_threadpool(services.clients.token_for_client, client_id, secret,
                                         fields.get("scope", ""), services.now())
    except InvalidClient as exc:
        # Only a registered id is recorded: the "id" may be the secret, pasted in its place.
        access.user_hint = await run_in_threadpool(_registered_client, services, client_id)
        return _oauth_error("invalid_client", str(exc), 401)
    except (InvalidScope, ScopeNotGranted) as exc:
        access.user_hint = client_id  # the client authenticated; its request was refused
        return _oauth_error("invalid_scope", str(exc))
    except TokenRequestError as exc:
        access.user_hint = client_id
        return _oauth_error("invalid_request", str(exc))
    claims = services.issuer.verify(issued)
    access.action = AuditAction.LOGIN
    access.principal = Principal(client_id, Role.service, claims.scopes, client_id=client_id,
                                 via="client_credentials")
    access.details["grant"] = "client_credentials"
    return json_response({
        "access_token": issued, "token_type": "bearer",
        "expires_in": int((claims.expires_at - claims.issued_at).total_seconds()),
        "scope": str(claims.scopes)}, headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------ break the glass
@router.post("/security/break-the-glass", dependencies=[Depends(BREAK_GLASS)],
             tags=["security"])
async def break_the_glass(request: Request) -> Response:
    """Open a restricted patient's record for a limited time, with a stated reason."""
    access = access_of(request)
    principal = access.require(Capability.break_glass)
    if principal.role is Role.service or principal.compartment_limited:
        raise Forbidden("break-the-glass is for signed-in clinical and HIM users")
    fields = await read_fields(request)
    unknown = set(fields) - BREAK_GLASS_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown break-the-glass fields: {', '.join(sorted(unknown))[:200]}"
                             f"; expected {', '.join(sorted(BREAK_GLASS_FIELDS))}")
    services = services_of(request)
    minutes = fields.get("minutes", 60)
    if isinstance(minutes, str) and minutes.isascii() and minutes.isdigit():
        minutes = int(minutes)
    patient = fields.get("patient")
    if isinstance(patient, str) and patient.startswith("Patient/"):
        patient = patient[len("Patient/"):]
    grant = await run_in_threadpool(services.glass.open, principal.user_id,
                                    principal.role.value, patient, fields.get("reason"),
                                    minutes, services.now())
    access.patients.add(grant.patient_id)
    access.target("Patient", grant.patient_id)
    access.details.update({"grant": grant.id, "expires": grant.expires_at.isoformat()})
    return json_response(grant.as_json(), 201)


@router.get("/security/break-the-glass", dependencies=[Depends(AUDIT_LOG)], tags=["security"])
def break_the_glass_report(request: Request) -> Response:
    """The privacy officer's review: every break-the-glass grant in a time window."""
    access = access_of(request)
    access.require(Capability.break_glass_report)
    params = dict(parse_qsl(request.url.query))
    since, until = _instant(params.get("since"), "since"), _instant(params.get("until"), "until")
    access.details["report"] = "break-the-glass"
    grants = services_of(request).glass.report(since, until)
    return json_response({"grants": [g.as_json() for g in grants]})


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 date-time with a time zone") from exc
    if moment.tzinfo is None:
        raise InvalidRequest(f"'{name}' must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    return moment


# ------------------------------------------------------------------------------ audit reports
AUDIT_FILTERS = ("patient", "user", "action", "since", "until", "_count", "_offset", "_format")


@router.get("/audit/entries", dependencies=[Depends(AUDIT_LOG)], tags=["audit"])
def audit_entries(request: Request) -> Response:
    """Audit report by patient, user, action and time: FHIR AuditEvents (BALP) or CSV."""
    access = access_of(request)
    access.require(Capability.audit_report)
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    unknown = set(params) - set(AUDIT_FILTERS)
    if unknown:
        raise InvalidRequest(f"unknown parameters: {', '.join(sorted(unknown))}")
    count = parse_int("_count", params.get("_count", "100"))
    offset = parse_int("_offset", params.get("_offset", "0"))
    fmt = params.get("_format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("_format must be json or csv")
    access.details["report"] = "audit"
    access.details["filters"] = sorted(k for k in params if not k.startswith("_"))
    trail = services_of(request).trail
    filters: dict[str, Any] = {
        "patient_id": params.get("patient"), "user_id": params.get("user"),
        "action": params.get("action"),
        "since": _instant(params.get("since"), "since"),
        "until": _instant(params.get("until"), "until")}
    try:
        entries = trail.entries(**filters, limit=min(count, MAX_AUDIT_PAGE),
                                offset=offset)
    except InvalidAuditRecord as exc:
        raise InvalidRequest(str(exc)) from exc
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for entry in entries:
            row = [getattr(entry, c) for c in CSV_COLUMNS]
            row[CSV_COLUMNS.index("details")] = orjson.dumps(
                entry.details, option=orjson.OPT_SORT_KEYS).decode()
            writer.writerow(row)
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=audit.csv"})
    base = request.app.state.settings.base_url
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
              "entry": [{"fullUrl": f"{base}/AuditEvent/audit-{e.seq}",
                         "resource": trail.to_audit_event(e), "search": {"mode": "match"}}
                        for e in entries]}
    return Response(orjson.dumps(bundle), media_type="application/fhir+json")


@router.get("/audit/verify", dependencies=[Depends(AUDIT_LOG)], tags=["audit"])
def audit_verify(request: Request) -> Response:
    """Recompute the audit chain: intact, or the first broken entry."""
    access = access_of(request)
    access.require(Capability.audit_report)
    access.details["report"] = "verify"
    result = services_of(request).trail.verify()
    return json_response({"ok": result.ok, "entries": result.entries_checked,
                          "checkpoints": result.checkpoints_checked,
                          "firstBroken": result.first_broken_seq, "reason": result.reason})


# ------------------------------------------------------------------------------ disclosures
@router.post("/him/disclosures", dependencies=[Depends(DISCLOSURE)], tags=["him"])
async def record_disclosure(request: Request) -> Response:
    """Record a release of information (45 CFR 164.528 accounting)."""
    access = access_of(request)
    principal = access.require(Capability.disclosure_record)
    fields = await read_fields(request)
    services = services_of(request)
    disclosure = await run_in_threadpool(services.disclosures.record, principal.user_id,
                                         fields, services.now())
    access.patients.add(disclosure.patient_id)
    access.details.update({"disclosure": disclosure.id,
                           "resources": disclosure.resources[:100]})
    return json_response(disclosure.as_json(), 201)


@router.get("/him/disclosures", dependencies=[Depends(DISCLOSURE_REPORT)], tags=["him"])
def accounting_of_disclosures(request: Request) -> Response:
    """A patient's accounting of disclosures: the last six years, oldest first."""
    access = access_of(request)
    access.require(Capability.disclosure_report)
    params = dict(parse_qsl(request.url.query))
    patient = params.get("patient")
    if not patient:
        raise InvalidRequest("'patient' is required")
    services = services_of(request)
    disclosures = services.disclosures.accounting(patient, services.now())
    access.patients.add(patient)
    access.details["report"] = "accounting-of-disclosures"
    return json_response({"patient": patient,
                          "disclosures": [d.as_json() for d in disclosures]})


__all__ = ["AuthenticationError", "router"]
