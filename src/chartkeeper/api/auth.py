"""The authorization layer of the API: every route declares an ``AccessRule``.

A rule is a FastAPI dependency. It authenticates the caller (bearer token, or the web session
cookie) unless the rule is public, and leaves a ``RequestAccess`` on ``request.state`` through
which the handler asks for permission (``permit``, ``require``) and shows each resource that
leaves the store to the ``RecordGuard``. After the handler, the app's middleware turns the
``RequestAccess`` into exactly one audit entry and waits until it is committed: no audit, no
response.

``create_app`` refuses to start when a route has no rule (deny by default); a test walks the
routes to prove it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route

from chartkeeper.security.access import (
    Capability,
    Forbidden,
    Grant,
    Interaction,
    Principal,
    RecordGuard,
)
from chartkeeper.security.audit import AuditAction, AuditOutcome, AuditRecord, needs_fsync
from chartkeeper.security.identity import (
    AuthenticationError,
    Role,
    SecurityError,
    UserNotFound,
)
from chartkeeper.security.services import SecurityServices
from chartkeeper.security.tokens import TokenInvalid, parse_scopes
from chartkeeper.store.errors import StoreError

SESSION_COOKIE = "chartkeeper_session"
SESSION_SCOPES = parse_scopes("user/*.cruds")  # a signed-in user: whatever the role allows
MAX_AUDITED_PATIENTS = 100


class AuditUnavailable(StoreError):
    """The audit entry could not be written: nothing is given and nothing is changed."""

    status = 503
    issue_code = "transient"

    def __init__(self) -> None:
        super().__init__("The access could not be audited, so it was not given; retry")


class AuthenticationRequired(AuthenticationError):
    def __init__(self) -> None:
        super().__init__("authentication required: send 'Authorization: Bearer <token>' or "
                         "sign in at /auth/sign-in")


def services_of(request: Request) -> SecurityServices:
    services: SecurityServices = request.app.state.security
    return services


def authenticate(request: Request, services: SecurityServices) -> Principal:
    """The caller of ``request``, or AuthenticationError (401). May query the database."""
    principal = _authenticate(request, services, lookup=True)
    if principal is None:  # not reached: with lookup it answers or raises
        raise AuthenticationRequired()
    return principal


def authenticate_cached(request: Request, services: SecurityServices) -> Principal | None:
    """As ``authenticate`` from what is in memory (a verified token and its account's state
    checked within the last second); None when the database must be asked."""
    return _authenticate(request, services, lookup=False)


def _authenticate(request: Request, services: SecurityServices, *,
                  lookup: bool) -> Principal | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenInvalid("expected 'Authorization: Bearer <token>'")
        claims = services.verify_token(token.strip())
        if claims.client_id is not None:
            known, client = services.cached_client(claims.client_id)
            if not known:
                if not lookup:
                    return None
                client = services.lookup_client(claims.client_id)
            if client is None:
                raise TokenInvalid("the token's client is not registered")
            if not client.active:
                raise TokenInvalid("the token's client is disabled")
        else:
            known, user = services.cached_user(claims.subject)
            if not known:
                if not lookup:
                    return None
                user = services.lookup_user(claims.subject)
            if user is None:
                raise TokenInvalid("the token's user does not exist")
            if not user.active:
                raise TokenInvalid("the token's user is disabled")
            if user.role is not claims.role:
                raise TokenInvalid("the user's role changed since the token was issued")
        return Principal(claims.subject, claims.role, claims.scopes, claims.patient,
                         claims.client_id, via="token")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if not lookup:  # a session is resumed (and its idle time renewed) in the database
            return None
        session = services.sessions.resume(cookie, services.now())
        try:
            user = services.directory.get_user(session.username)
        except UserNotFound:
            raise AuthenticationRequired() from None
        if not user.active or user.role is not session.role:
            services.sessions.end(cookie, services.now())
            raise AuthenticationRequired()
        return Principal(user.username, user.role, SESSION_SCOPES, via="session")
    raise AuthenticationRequired()


@dataclass
class RequestAccess:
    """One request's authorization state and the makings of its audit entry."""

    rule: AccessRule
    services: SecurityServices
    principal: Principal | None = None
    guard: RecordGuard | None = None
    action: AuditAction | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    patients: set[str] = field(default_factory=set)
    details: dict[str, Any] = field(default_factory=dict)
    user_hint: str | None = None  # the name tried at a failed sign-in
    audited: bool = False  # the entry was appended inside the request's write transaction

    def who(self) -> Principal:
        if self.principal is None:
            raise AuthenticationRequired()
        return self.principal

    def record_guard(self) -> RecordGuard:
        if self.guard is None:
            principal = self.who()
            services = self.services
            self.guard = RecordGuard(
                principal, services.restricted_patients,
                lambda: services.glass.active_patients(principal.user_id, services.now()))
        return self.guard

    def permit(self, resource_type: str, interaction: Interaction) -> Grant:
        return self.who().permit(resource_type, interaction)

    def require(self, capability: Capability) -> Principal:
        principal = self.who()
        principal.require(capability)
        return principal

    def target(self, resource_type: str | None, resource_id: str | None = None) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id

    def audit_in_transaction(self, conn: Any, status: int, source: str | None) -> None:
        """Append this request's entry inside its write transaction, so the change and its
        audit entry commit together or not at all (the middleware then adds nothing)."""
        record = self.audit_record(status, source)
        if record is None:
            return
        try:
            if self.services.audit_shares_store:
                self.services.trail.append(conn, record)
            else:
                # The trail has a file of its own (SQLite): the entry is made durable before
                # the change commits, so a change is never left without its entry (a commit
                # failing after this leaves an entry for a change that did not land).
                self.services.trail.append_many(None, [record], durable=True)
        except Exception as exc:
            raise AuditUnavailable() from exc
        self.audited = True

    def audit_now(self, status: int, source: str | None) -> None:
        """Append this request's entry from the handler's own thread before it answers (a
        read's entry then costs one short transaction, not a hop to the writer thread)."""
        record = self.audit_record(status, source)
        if record is None:
            return
        try:
            self.services.trail.append_many(None, [record], durable=needs_fsync([record]))
        except Exception as exc:
            raise AuditUnavailable() from exc
        self.audited = True

    def audit_record(self, status: int, source: str | None) -> AuditRecord | None:
        """The one audit entry of this request (None for unaudited public routes)."""
        action = self.action or self.rule.audit
        if action is None:
            if status not in (401, 403):
                return None
            action = AuditAction.READ
        if status < 400:
            outcome = AuditOutcome.SUCCESS
        elif status in (401, 403):
            outcome = AuditOutcome.DENIED
        else:
            outcome = AuditOutcome.FAILURE
        patients = set(self.patients)
        if self.guard is not None:
            patients |= self.guard.patients_seen
            if self.guard.broke_glass_for:
                self.details["breakTheGlass"] = sorted(self.guard.broke_glass_for)
            if self.guard.withheld:
                self.details["withheld"] = self.guard.withheld
        details = dict(self.details)
        details["status"] = status
        patient_id = None
        if len(patients) == 1:
            patient_id = next(iter(patients))
        elif patients:
            ordered = sorted(patients)
            details["patients"] = ordered[:MAX_AUDITED_PATIENTS]
            details["patientCount"] = len(ordered)
        if self.principal is not None:
            user_id, role = self.principal.user_id, self.principal.role.value
            if self.principal.client_id:
                details["client"] = self.principal.client_id
            details["via"] = self.principal.via
        else:
            user_id, role = (self.user_hint or "anonymous")[:128], "none"
        return AuditRecord(
            user_id=user_id, role=role, action=action, outcome=outcome,
            patient_id=_fits(patient_id, 64), resource_type=_fits(self.resource_type, 64),
            resource_id=_fits(self.resource_id, 64), source_address=_fits(source, 255),
            details=details)


def _fits(value: str | None, limit: int) -> str | None:
    """Request-supplied text cut to its audit column (an over-long id is still recorded)."""
    return None if value is None else value[:limit]


class AccessRule:
    """The authorization decision attached to a route (a FastAPI dependency).

    ``audit`` is the action every request of the route is audited as (None: not audited
    unless refused). ``public`` routes skip authentication; they are listed in the coverage
    test by name.
    """

    def __init__(self, name: str, audit: AuditAction | None, *, public: bool = False) -> None:
        self.name = name
        self.audit = audit
        self.public = public

    def __repr__(self) -> str:
        return f"AccessRule({self.name!r})"

    async def __call__(self, request: Request) -> RequestAccess:
        access = RequestAccess(self, services_of(request))
        request.state.access = access
        if not self.public:
            # On the event loop when memory suffices; a database lookup goes to a thread.
            principal = authenticate_cached(request, access.services)
            if principal is None:
                principal = await run_in_threadpool(authenticate, request, access.services)
            access.principal = principal
        return access


def access_of(request: Request) -> RequestAccess:
    access: RequestAccess | None = getattr(request.state, "access", None)
    if access is None:  # a handler ran without its rule: a programming error, refuse
        raise Forbidden("this route has no authorization rule")
    return access


# The rules. One per kind of route; handlers narrow them with permit() and require().
PUBLIC = AccessRule("public", None, public=True)
SIGN_IN = AccessRule("sign-in", AuditAction.LOGIN, public=True)
AUTHENTICATED = AccessRule("authenticated", None)
SIGN_OUT = AccessRule("sign-out", AuditAction.LOGOUT)
FHIR_READ = AccessRule("fhir-read", AuditAction.READ)
FHIR_SEARCH = AccessRule("fhir-search", AuditAction.SEARCH)
FHIR_CREATE = AccessRule("fhir-create", AuditAction.CREATE)
FHIR_UPDATE = AccessRule("fhir-update", AuditAction.UPDATE)
FHIR_DELETE = AccessRule("fhir-delete", AuditAction.DELETE)
FHIR_BUNDLE = AccessRule("fhir-bundle", AuditAction.UPDATE)
FHIR_EXPORT = AccessRule("fhir-export", AuditAction.EXPORT)
BREAK_GLASS = AccessRule("break-the-glass", AuditAction.BREAK_THE_GLASS)
AUDIT_LOG = AccessRule("audit-log", AuditAction.AUDIT_LOG_ACCESS)
DISCLOSURE = AccessRule("disclosure", AuditAction.DISCLOSURE)
DISCLOSURE_REPORT = AccessRule("disclosure-report", AuditAction.READ)
DEID_EXPORT = AccessRule("deid-export", AuditAction.EXPORT)


@dataclass(frozen=True)
class ApiRoute:
    """One API operation as served: full path, methods and the rule it depends on."""

    path: str
    methods: frozenset[str]
    rule: AccessRule | None


def _rule(dependant: Any) -> AccessRule | None:
    for dependency in getattr(dependant, "dependencies", None) or []:
        if isinstance(dependency.call, AccessRule):
            return dependency.call
    return None


def rule_of(route: Any) -> AccessRule | None:
    """The AccessRule an APIRoute depends on, if any."""
    return _rule(getattr(route, "dependant", None))


def api_routes(app: Any) -> list[ApiRoute]:
    """Every APIRoute the app serves, included routers flattened (FastAPI keeps included
    routers as lazy branches, so ``app.routes`` alone does not list their routes)."""
    found: list[ApiRoute] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found.append(ApiRoute(route.path, frozenset(route.methods or ()),
                                   _rule(route.dependant)))
        elif hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                original = context.original_route
                if isinstance(original, APIRoute):
                    dependant = context.dependant or original.dependant
                    rule = _rule(dependant) or _rule(original.dependant)
                    found.append(ApiRoute(context.path, frozenset(original.methods or ()), rule))
        elif isinstance(route, BaseRoute) and not isinstance(route, Route):
            # A mount or another kind of route could bypass the rules: refuse to guess.
            found.append(ApiRoute(getattr(route, "path", repr(route)), frozenset(), None))
    return found


def security_status(exc: SecurityError) -> int:
    return int(getattr(exc, "status", 400))


__all__ = ["AccessRule", "RequestAccess", "Role", "access_of", "api_routes", "authenticate"]
