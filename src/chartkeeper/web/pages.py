"""The web workbench: server-rendered pages (Jinja2) made lively with htmx.

Pages go through the same security layer as the API: each route has an ``AccessRule`` (a
``PageRule``, which sends a browser without a session to the sign-in page instead of
answering 401), records are shown only after the ``RecordGuard`` has seen them, and every
page that shows patient data is audited like the API read or search it stands for.

Every form post carries a CSRF token (the session cookie is SameSite=strict as well): a
signed value bound to the session, or before sign-in to a random nonce cookie. A post
without it, or with a wrong one, is refused (403) and audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, UploadFile

from chartkeeper import __version__
from chartkeeper.api.auth import (
    PUBLIC,
    SESSION_COOKIE,
    AccessRule,
    RequestAccess,
    access_of,
    services_of,
)
from chartkeeper.api.fhir import visible_everything
from chartkeeper.api.security_routes import MAX_FORM_BYTES, authenticate_password, signed_in
from chartkeeper.chart.completion.tasks import DEFICIENCY_SYSTEM, OPEN_STATUSES
from chartkeeper.chart.signing import is_locked
from chartkeeper.mpi.merge import REVIEW_TASK_CODE
from chartkeeper.mpi.service import OPEN as OPEN_REVIEWS
from chartkeeper.security.access import Forbidden, Interaction
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import (
    AuthenticationError,
    Role,
    SecondFactorRequired,
    SecurityError,
    load_or_create_key,
)
from chartkeeper.security.practitioners import practitioner_of
from chartkeeper.store import Store
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Resource, Txn, provenance_of
from chartkeeper.web import chart as charts
from chartkeeper.web.finder import find_patients

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_FILES = {"workbench.css": "text/css", "workbench.js": "text/javascript",
                "htmx.min.js": "text/javascript"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSRF_NONCE_COOKIE = "chartkeeper_csrf"

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["version"] = __version__
templates.env.filters["moment"] = charts.moment
templates.env.filters["day"] = charts.day
router = APIRouter(include_in_schema=False)


class SignInNeeded(SecurityError):
    """A page asked for without a (live) session: the browser goes to the sign-in page."""

    status = 401

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in to continue")
        self.next_path = next_path


class PageRule(AccessRule):
    """An AccessRule for pages: the same checks, HTML answers, sign-in instead of 401."""

    async def __call__(self, request: Request) -> RequestAccess:
        request.state.page = True
        try:
            return await super().__call__(request)
        except AuthenticationError:
            request.state.access = None  # nothing was shown: no audit entry for the redirect
            query = request.url.query
            # Back to the page asked for, query included (/coding/encoder?code=E11.9).
            raise SignInNeeded(f"{request.url.path}?{query}" if query else request.url.path
                               ) from None


PAGE = PageRule("page", None)  # shows no patient data
PAGE_SEARCH = PageRule("page-search", AuditAction.SEARCH)
PAGE_READ = PageRule("page-read", AuditAction.READ)
PAGE_SIGN_IN = PageRule("page-sign-in", AuditAction.LOGIN, public=True)
PAGE_PUBLIC = PageRule("page-public", None, public=True)


def is_page(request: Request) -> bool:
    return bool(getattr(request.state, "page", False))


# ------------------------------------------------------------------------------------ CSRF
def _csrf_key(request: Request) -> bytes:
    key: bytes | None = getattr(request.app.state, "csrf_key", None)
    if key is None:
        key = load_or_create_key(request.app.state.settings.home / "keys" / "csrf.key")
        request.app.state.csrf_key = key
    return key


def csrf_token(request: Request, session: str | None = None) -> str:
    """The token forms must send back: bound to the session, else to the nonce cookie."""
    session = session or request.cookies.get(SESSION_COOKIE)
    basis = f"s:{session}" if session else f"n:{request.state.csrf_nonce}"
    return hmac.new(_csrf_key(request), basis.encode(), hashlib.sha256).hexdigest()[:40]


def _ensure_nonce(request: Request) -> str | None:
    """The pre-sign-in nonce (set on the response when new)."""
    nonce = request.cookies.get(CSRF_NONCE_COOKIE)
    if nonce and len(nonce) <= 64:
        request.state.csrf_nonce = nonce
        return None
    request.state.csrf_nonce = secrets.token_urlsafe(24)
    return str(request.state.csrf_nonce)


async def read_form(request: Request) -> dict[str, str]:
    """The posted form, after its CSRF token was checked (403 when missing or wrong)."""
    form = await _checked_form(request, MAX_FORM_BYTES)
    return {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}


async def read_upload(request: Request, max_bytes: int
                      ) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A posted multipart form with files, CSRF checked: (fields, [(file name, bytes)])."""
    form = await _checked_form(request, max_bytes)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
    files = [(str(v.filename or ""), await v.read()) for _k, v in form.multi_items()
             if isinstance(v, UploadFile)]
    return fields, files


async def _checked_form(request: Request, max_bytes: int) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
    body = await request.body()
    if len(body) > max_bytes:
        raise InvalidRequest(f"the form exceeds {max_bytes} bytes")
    form = await request.form(max_part_size=max_bytes) if is_form else FormData()
    field = form.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER) or (field if isinstance(field, str) else "")
    if not sent:
        _refuse_csrf(request, "the form has no CSRF token; reload the page and try again")
    nonce = request.cookies.get(CSRF_NONCE_COOKIE)
    request.state.csrf_nonce = nonce or ""
    if not (request.cookies.get(SESSION_COOKIE) or nonce) or not hmac.compare_digest(
            sent, csrf_token(request)):
        _refuse_csrf(request, "the form's CSRF token is not valid for this session; reload "
                              "the page and try again")
    if not is_form:
        raise InvalidRequest("send the form as application/x-www-form-urlencoded")
    return form


def audited(request: Request, access: RequestAccess, status: int) -> Callable[[Txn], None]:
    """The ``before_commit`` hook a page's write passes to the slice: it appends the request's
    audit entry inside the write's transaction, so the change and its entry land together."""
    source = request.client.host if request.client else None
    return lambda txn: access.audit_in_transaction(txn.conn, status, source)


def patient_document(access: RequestAccess, store: Store, patient_id: str, document_id: str,
                     interaction: Interaction) -> Resource:
    """A document of this patient's record that the caller may see (404 when it belongs to
    another patient: a page never shows a document under someone else's chart)."""
    document = guarded_read(access, store, "DocumentReference", document_id, interaction)
    subject = str((document.get("subject") or {}).get("reference", ""))
    if subject.split("/_history/")[0] != f"Patient/{patient_id}":
        raise NotFound(f"DocumentReference/{document_id} is not in this patient's record")
    return document


def _refuse_csrf(request: Request, message: str) -> None:
    access: RequestAccess | None = getattr(request.state, "access", None)
    if access is not None:
        access.details["csrf"] = "refused"
    raise Forbidden(message)


# ------------------------------------------------------------------------------- rendering
def render(request: Request, name: str, context: dict[str, Any], status: int = 200
           ) -> HTMLResponse:
    access: RequestAccess | None = getattr(request.state, "access", None)
    principal = access.principal if access is not None else None
    new_nonce = None
    if not request.cookies.get(SESSION_COOKIE) or principal is None:
        new_nonce = _ensure_nonce(request)
    base = {"request": request, "user": principal,
            "csrf": csrf_token(request) if (principal or hasattr(request.state, "csrf_nonce"))
            else ""}
    response = templates.TemplateResponse(request, name, {**base, **context},
                                          status_code=status)
    if new_nonce:
        response.set_cookie(CSRF_NONCE_COOKIE, new_nonce, httponly=True, samesite="strict",
                            path="/")
    response.headers["Cache-Control"] = "no-store"  # pages hold PHI: never cached
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'")
    return response


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"status": status, "message": message}, status)


def sign_in_redirect(request: Request, next_path: str) -> Response:
    return RedirectResponse(f"/sign-in?next={quote(next_path, safe='/')}", status_code=303)


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no scheme, no host) may be the place to go after sign-in."""
    if not value:
        return "/home"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/home"
    return value


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def require_role(access: RequestAccess, *roles: Role) -> None:
    """Forbidden unless the caller has one of ``roles`` (pages narrow the role matrix)."""
    principal = access.who()
    if principal.role not in roles:
        names = ", ".join(r.value.replace("_", " ") for r in roles)
        raise Forbidden(f"this page is for: {names}")


def my_practitioner(request: Request, access: RequestAccess) -> str:
    """The Practitioner id of the signed-in physician (Forbidden when not linked)."""
    require_role(access, Role.physician)
    with store_of(request).read() as txn:
        practitioner = practitioner_of(txn, access.who().user_id)
    if practitioner is None:
        raise Forbidden("your account is not linked to a Practitioner yet; ask an "
                        "administrator (chartkeeper users link-practitioner)")
    return practitioner


def guarded_read(access: RequestAccess, store: Store, resource_type: str, resource_id: str,
                 interaction: Interaction = "r") -> Resource:
    """A resource the caller may see (or act on): role, compartment and sensitivity checked,
    its patients noted for the audit entry."""
    with store.read() as txn:
        resource = txn.read(resource_type, resource_id)
    access.record_guard().check(resource, access.permit(resource_type, interaction),
                                f"{resource_type}/{resource_id}")
    return resource


def patients_by_id(txn: Txn, ids: Iterable[str]) -> dict[str, Resource]:
    """Patients by id, looked up 200 at a time."""
    ordered = sorted(set(ids))
    found: dict[str, Resource] = {}
    for start in range(0, len(ordered), 200):
        chunk = ordered[start:start + 200]
        for patient in txn.search_params("Patient", [("_id", ",".join(chunk)),
                                                     ("_count", str(len(chunk)))]).matches:
            found[str(patient["id"])] = patient
    return found


# -------------------------------------------------------------------------------- static
@router.get("/static/{name}", dependencies=[Depends(PUBLIC)])
def static(name: str) -> Response:
    if name not in STATIC_FILES:
        raise NotFound(f"no static file {name}")
    path = STATIC / ("vendor/" + name if name == "htmx.min.js" else name)
    if not path.exists():
        raise NotFound(f"{name} is not installed (run make install)")
    return FileResponse(path, media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "public, max-age=3600"})


# ------------------------------------------------------------------------------- sign-in
@router.get("/", dependencies=[Depends(PAGE_PUBLIC)])
def root(request: Request) -> Response:
    return RedirectResponse("/home" if request.cookies.get(SESSION_COOKIE) else "/sign-in",
                            status_code=303)


@router.get("/sign-in", dependencies=[Depends(PAGE_PUBLIC)])
def sign_in_form(request: Request, next: str | None = None) -> Response:  # noqa: A002
    return render(request, "sign_in.html", {"next": _safe_next(next), "error": None,
                                            "username": "", "ask_totp": False})


@router.post("/sign-in", dependencies=[Depends(PAGE_SIGN_IN)])
async def sign_in(request: Request) -> Response:
    access = access_of(request)
    services = services_of(request)
    fields = await read_form(request)
    username = fields.get("username", "").strip()
    next_path = _safe_next(fields.get("next"))
    context: dict[str, Any] = {"next": next_path, "username": username,
                               "ask_totp": bool(fields.get("totp"))}
    if not username or not fields.get("password"):
        return render(request, "sign_in.html",
                      {**context, "error": "Enter your username and password."}, 400)
    try:
        user = await authenticate_password(access, services, username, fields["password"],
                                           fields.get("totp") or None)
    except SecondFactorRequired as exc:
        return render(request, "sign_in.html", {**context, "ask_totp": True,
                                                "error": str(exc)}, 401)
    except AuthenticationError as exc:
        return render(request, "sign_in.html", {**context, "error": str(exc)},
                      int(getattr(exc, "status", 401)))
    signed_in(access, user)
    if user.must_change_password:
        access.details["session"] = "password change required"
        return render(request, "change_password.html",
                      {"username": user.username, "error": None}, 200)
    token = await run_in_threadpool(services.sessions.start, user, services.now())
    access.details["session"] = "started"
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.app.state.settings.base_url.startswith("https://"))
    response.delete_cookie(CSRF_NONCE_COOKIE, path="/")
    return response


@router.post("/change-password", dependencies=[Depends(PAGE_SIGN_IN)])
async def change_password(request: Request) -> Response:
    access = access_of(request)
    services = services_of(request)
    fields = await read_form(request)
    username = fields.get("username", "").strip()
    context = {"username": username}
    new_password = fields.get("new_password", "")
    if new_password != fields.get("repeat_password"):
        return render(request, "change_password.html",
                      {**context, "error": "The two new passwords differ."}, 400)
    try:
        user = await authenticate_password(access, services, username,
                                           fields.get("password", ""),
                                           fields.get("totp") or None)
        access.action = AuditAction.PRIVILEGE_CHANGE
        signed_in(access, user)
        access.details["change"] = "password"
        if new_password == fields.get("password"):
            raise InvalidRequest("the new password must differ from the old one")
        await run_in_threadpool(services.directory.set_password, user.username, new_password)
        await run_in_threadpool(services.sessions.end_all, user.username, services.now())
    except (SecurityError, InvalidRequest) as exc:
        message = exc.diagnostics if isinstance(exc, InvalidRequest) else str(exc)
        return render(request, "change_password.html", {**context, "error": message}, 400)
    return render(request, "sign_in.html", {
        "next": "/home", "username": user.username, "ask_totp": user.requires_second_factor,
        "error": None, "notice": "Password changed. Sign in with the new password."})


@router.post("/sign-out", dependencies=[Depends(PageRule("page-sign-out", AuditAction.LOGOUT))])
async def sign_out(request: Request) -> Response:
    await read_form(request)
    access_of(request).who()
    services = services_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await run_in_threadpool(services.sessions.end, cookie, services.now())
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------------- home
@router.get("/home", dependencies=[Depends(PAGE)])
def home(request: Request) -> Response:
    principal = access_of(request).who()
    with store_of(request).read() as txn:
        practitioner = practitioner_of(txn, principal.user_id)
        queues = work_queues(txn, principal.role.value, practitioner)
    return render(request, "home.html", {"queues": queues})


def work_queues(txn: Any, role: str, practitioner: str | None = None) -> list[dict[str, Any]]:
    """The user's work queues and their counts (what needs doing, by role)."""
    def count(rtype: str, params: list[tuple[str, str]]) -> int:
        page = txn.search_params(rtype, [*params, ("_summary", "count")])
        return int(page.total or 0)

    queues: list[dict[str, Any]] = [{"name": "Find a patient", "href": "/patients", "count": None,
               "hint": "search by name, birth date, MRN or any identifier"}]
    open_deficiencies = [("code", f"{DEFICIENCY_SYSTEM}|"), ("status", ",".join(OPEN_STATUSES))]
    if role in ("him_technician", "administrator", "privacy_officer"):
        queues.append({"name": "Record completion", "href": "/completion",
                       "count": count("Task", open_deficiencies),
                       "hint": "open deficiencies of discharged records, by physician and age"})
    if role in ("him_technician", "administrator"):
        queues.append({"name": "MPI review", "href": "/mpi",
                       "count": count("Task", [("code", "|".join(REVIEW_TASK_CODE)),
                                               ("status", ",".join(OPEN_REVIEWS))]),
                       "hint": "possible duplicate patients to merge, link or keep apart"})
    if role in ("roi_specialist", "him_technician"):
        queues.append({"name": "Release of information", "href": "/roi",
                       "count": count("Task", [("code", "urn:chartkeeper:him-task|"
                                                        "release-of-information"),
                                               ("status", "requested,received,accepted,"
                                                          "in-progress")]),
                       "hint": "requests for records, oldest due first"})
    if role in ("him_technician", "privacy_officer", "physician"):
        queues.append({"name": "Amendment requests", "href": "/amendments",
                       "count": count("Task", [("code", "urn:chartkeeper:him-task|"
                                                        "amendment-request"),
                                               ("status", "requested,received,accepted,"
                                                          "in-progress")]),
                       "hint": "patients' requests to amend their record (60 days)"})
    if role in ("coder", "him_technician"):
        queues.append({"name": "Coding", "href": "/coding", "count": None,
                       "hint": "finished encounters to code, oldest discharge first"})
    if role in ("him_technician", "administrator"):
        queues.append({"name": "Import records", "href": "/imports", "count": None,
                       "hint": "FHIR, HL7 v2 and C-CDA files, with progress"})
    if role in ("analyst", "administrator"):
        queues.append({"name": "Bulk export", "href": "/exports", "count": None,
                       "hint": "NDJSON files of the store, with progress"})
    if role in ("him_technician", "privacy_officer", "administrator"):
        queues.append({"name": "Records retention", "href": "/retention", "count": None,
                       "hint": "records past retention, legal holds, destruction"})
    if role == "physician" and practitioner is not None:
        queues.append({"name": "My deficiencies", "href": "/deficiencies",
                       "count": count("Task", [*open_deficiencies,
                                               ("owner", f"Practitioner/{practitioner}")]),
                       "hint": "documents to sign or dictate"})
    return queues


# ----------------------------------------------------------------------------- patients
@router.get("/patients", dependencies=[Depends(PAGE_SEARCH)])
def patients(request: Request, q: str = "") -> Response:
    access = access_of(request)
    grant = access.permit("Patient", "s")
    access.target("Patient")
    access.details["page"] = "patient search"
    results: list[Any] = []
    if q.strip():
        with store_of(request).read() as txn:
            found = find_patients(txn, q)
        guard = access.record_guard()
        results = [f for f in found if guard.visible(f.patient, grant)]
        withheld = len(found) - len(results)
    else:
        access.action = None  # the empty form shows no one: nothing to audit
        withheld = 0
    name = "patient_rows.html" if request.headers.get("hx-request") else "patients.html"
    return render(request, name, {"q": q, "results": results, "withheld": withheld})


@router.get("/patients/{patient_id}", dependencies=[Depends(PAGE_READ)])
def chart(request: Request, patient_id: str) -> Response:
    access = access_of(request)
    access.details["page"] = "chart"
    access.target("Patient", patient_id)
    access.patients.add(patient_id)  # refused or not, the trail names whose chart was asked for
    store = store_of(request)
    patient, shown, withheld = visible_everything(access, store, patient_id)
    # A record merged into this one without moving its records (a federated merge): its
    # records are this patient's too.
    for link in patient.get("link", []):
        reference = str(link.get("other", {}).get("reference", ""))
        if link.get("type") == "replaces" and reference.startswith("Patient/"):
            prior = reference.split("/", 1)[1]
            access.patients.add(prior)
            try:
                _prior, more, hidden = visible_everything(access, store, prior)
            except (Forbidden, NotFound, Gone):
                withheld += 1
                continue
            have = {(r.get("resourceType"), r.get("id")) for r in shown}
            shown += [r for r in more if r.get("resourceType") != "Patient"
                      and (r.get("resourceType"), r.get("id")) not in have]
            withheld += hidden
    with store.read() as txn:
        sources = provenance_of(txn, ((str(r["resourceType"]), str(r["id"])) for r in shown))
    view = charts.assemble(patient, shown, sources, withheld)
    return render(request, "chart.html", {"chart": view, "age": charts.age(view.birth_date)})


@router.get("/patients/{patient_id}/documents/{document_id}", dependencies=[Depends(PAGE_READ)])
def document(request: Request, patient_id: str, document_id: str) -> Response:
    access = access_of(request)
    grant = access.permit("DocumentReference", "r")
    access.target("DocumentReference", document_id)
    access.patients.add(patient_id)
    access.details["page"] = "document"
    resource = patient_document(access, store_of(request), patient_id, document_id, "r")
    with store_of(request).read() as txn:
        sources = provenance_of(txn, [("DocumentReference", document_id)])
    content_type, text = charts.document_text(resource)
    item = charts.item_of(resource, {f"DocumentReference/{document_id}": charts.source_text(
        sources.get(("DocumentReference", document_id), []), resource)})
    with store_of(request).read() as txn:
        linked = [d for d in txn.search_params("DocumentReference", [
            ("relatesto", f"DocumentReference/{document_id}"), ("_count", "50")]).matches
            if access.record_guard().visible(d, grant)]
    locked = is_locked(resource)
    physician = access.who().role is Role.physician
    return render(request, "document.html", {
        "patient_id": patient_id, "doc": resource, "item": item, "text": text,
        "content_type": content_type, "locked": locked, "linked": linked,
        "can_sign": physician and not locked, "can_addend": physician and locked,
        "can_request_amendment": access.who().role in (Role.him_technician,
                                                      Role.privacy_officer),
        "signed_now": bool(request.query_params.get("signed"))})
