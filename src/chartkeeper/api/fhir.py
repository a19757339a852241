"""The FHIR R4 REST API under /fhir: instance, type and system interactions, operations."""

from __future__ import annotations

import uuid
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.exc import IntegrityError

from chartkeeper import __version__
from chartkeeper.api.auth import (
    AUTHENTICATED,
    FHIR_BUNDLE,
    FHIR_CREATE,
    FHIR_DELETE,
    FHIR_EXPORT,
    FHIR_READ,
    FHIR_SEARCH,
    FHIR_UPDATE,
    PUBLIC,
    RequestAccess,
    access_of,
)
from chartkeeper.chart.signing import check_not_locked
from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.fhir.definitions import summary_elements
from chartkeeper.fhir.fhirpath import parse_reference
from chartkeeper.fhir.indexing import searchable_codes
from chartkeeper.security.access import (
    SHARED_TYPES,
    Capability,
    Forbidden,
    Grant,
    Interaction,
    compartment_params,
    in_patient_compartment_type,
    referenced_patients,
    sensitivities,
)
from chartkeeper.security.audit import AuditAction
from chartkeeper.store import Store
from chartkeeper.store.bundle import BundleProcessor, operation_outcome, parse_etag
from chartkeeper.store.errors import (
    Conflict,
    Gone,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    OutcomeIssue,
    PayloadTooLarge,
    StoreError,
    UnsupportedMediaType,
)
from chartkeeper.store.export import ExportJob, ExportManager, check_types
from chartkeeper.store.search import SearchPage, parse_int, parse_query, restrict_to_patient
from chartkeeper.store.service import (
    HistoryPage,
    Resource,
    Txn,
    WriteResult,
    everything,
    now_instant,
)

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
router = APIRouter(prefix="/fhir")


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON,
                    headers=headers)


def error_response(exc: StoreError) -> Response:
    return fhir_response(operation_outcome(exc.issues), exc.status)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _base(request: Request) -> str:
    base: str = request.app.state.settings.base_url
    return base


async def read_json(request: Request) -> Any:
    """Read a JSON body, refusing wrong media types, oversized payloads and broken JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type or '(none)'}' is not supported; send {FHIR_JSON}"
        )
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and \
            int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise InvalidRequest("The request body is empty; a FHIR resource is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from exc


def _write_headers(result: WriteResult, base: str) -> dict[str, str]:
    headers = {"ETag": f'W/"{result.version_id}"', "Last-Modified": _http_date(result.last_updated)}
    headers["Location"] = f"{base}/{result.location}"
    return headers


def _http_date(instant: str) -> str:
    return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")), usegmt=True)


def _prefer_return(request: Request) -> str:
    prefer = request.headers.get("prefer", "")
    for part in prefer.split(";"):
        part = part.strip()
        if part.startswith("return="):
            return part.split("=", 1)[1]
    return "representation"


def _write_response(request: Request, result: WriteResult, created_status: int = 201
                    ) -> Response:
    status = created_status if result.created else 200
    headers = _write_headers(result, _base(request))
    if _prefer_return(request) == "minimal" or result.resource is None:
        return Response(status_code=status, headers=headers)
    if _prefer_return(request) == "OperationOutcome":
        return fhir_response(operation_outcome([OutcomeIssue(
            "informational", f"{result.location} stored", severity="information")]),
            status, headers)
    return fhir_response(result.resource, status, headers)


def _query_items(request: Request) -> list[tuple[str, str]]:
    return list(parse_qsl(request.url.query, keep_blank_values=True))


def _apply_elements(resource: dict[str, Any], elements: list[str] | None, summary: str | None
                    ) -> dict[str, Any]:
    if elements is None and summary not in ("text", "data", "true"):
        return resource
    if summary == "true":
        names, choices = summary_elements(resource["resourceType"])
        subset = {k: v for k, v in resource.items()
                  if k in ("resourceType", "id", "meta") or k in names
                  or any(k.startswith(c) and k[len(c):][:1].isupper() for c in choices)}
    elif summary == "data":
        subset = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "text":
        subset = {k: resource[k] for k in ("resourceType", "id", "meta", "text") if k in resource}
    else:
        keep = {"resourceType", "id", "meta", *(elements or [])}
        subset = {k: v for k, v in resource.items() if k in keep}
    meta = dict(subset.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED"}]
    subset["meta"] = meta
    return subset


def _page_link(base_path: str, items: list[tuple[str, str]], offset: int) -> str:
    kept = [(k, v) for k, v in items if k != "_offset"]
    if offset:
        kept.append(("_offset", str(offset)))
    query = urlencode(kept)
    return f"{base_path}?{query}" if query else base_path


def searchset(request: Request, resource_type: str | None, page: SearchPage,
              items: list[tuple[str, str]], summary: str | None, elements: list[str] | None
              ) -> dict[str, Any]:
    base = _base(request)
    path = f"{base}/{resource_type}" if resource_type else base
    links = [{"relation": "self", "url": _page_link(path, items, page.offset)}]
    if page.count and (page.total is None and len(page.matches) == page.count
                       or page.total is not None and page.offset + page.count < page.total):
        links.append({"relation": "next", "url": _page_link(path, items, page.offset + page.count)})
    if page.offset > 0:
        links.append({"relation": "previous",
                      "url": _page_link(path, items, max(0, page.offset - page.count))})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": _new_bundle_id(),
                              "meta": {"lastUpdated": now_instant()}, "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    entries = [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
         "resource": _apply_elements(r, elements, summary), "search": {"mode": "match"}}
        for r in page.matches
    ] + [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
         "search": {"mode": "include"}}
        for r in page.included
    ]
    if entries:
        bundle["entry"] = entries
    return bundle


def _new_bundle_id() -> str:
    return str(uuid.uuid4())


def _search(request: Request, txn: Txn, resource_type: str | None,
            items: list[tuple[str, str]], grant: Grant) -> dict[str, Any]:
    """Run a search for the caller: within the granted compartment, and with every match and
    included resource shown to the request's guard (what it may not see is withheld)."""
    access = access_of(request)
    settings = request.app.state.settings
    query = parse_query(resource_type, items)
    if query.count is None:
        query.count = settings.default_page_size
    query.count = min(query.count, settings.max_page_size)
    if grant.compartment is not None and resource_type is not None and \
            resource_type not in SHARED_TYPES:
        restrict_to_patient(query, grant.compartment,
                            compartment_params().get(resource_type, frozenset()))
    access.details["parameters"] = sorted({name for name, _ in items})
    page = txn.search(resource_type, query)
    guard = access.record_guard()
    before = guard.withheld
    page.matches = list(guard.filter(page.matches, grant))
    page.included = [r for r in page.included
                     if _include_visible(access, grant, r)]
    bundle = searchset(request, resource_type, page, items, query.summary, query.elements)
    _note_withheld(bundle, guard.withheld - before)
    return bundle


def _include_visible(access: RequestAccess, grant: Grant, resource: dict[str, Any]) -> bool:
    """An _include/_revinclude target: the caller needs read on its type, and the guard."""
    guard = access.record_guard()
    try:
        own = access.permit(str(resource.get("resourceType")), "r")
    except Forbidden:
        guard.withheld += 1
        return False
    if guard.visible(resource, own if own.compartment is None else grant):
        return True
    guard.withheld += 1
    return False


def history_bundle(request: Request, page: HistoryPage, path: str,
                   items: list[tuple[str, str]], offset: int, count: int) -> dict[str, Any]:
    base = _base(request)
    links = [{"relation": "self", "url": _page_link(path, items, offset)}]
    if offset + count < page.total:
        links.append({"relation": "next", "url": _page_link(path, items, offset + count)})
    if offset:
        links.append({"relation": "previous", "url": _page_link(path, items,
                                                                max(0, offset - count))})
    entries = []
    for e in page.entries:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{e.resource_type}/{e.resource_id}"}
        if e.resource is not None:
            entry["resource"] = e.resource
        entry["request"] = {
            "method": e.method,
            "url": e.resource_type if e.method == "POST" else f"{e.resource_type}/{e.resource_id}",
        }
        entry["response"] = {
            "status": {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}
            [e.method],
            "etag": f'W/"{e.version_id}"', "lastModified": e.last_updated,
        }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": _new_bundle_id(),
                              "type": "history", "total": page.total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


def _history_params(items: list[tuple[str, str]]) -> tuple[str | None, int, int]:
    since = None
    count, offset = 50, 0
    for name, value in items:
        if name == "_since":
            since = value
        elif name == "_count":
            count = min(parse_int("_count", value), 1000)
        elif name == "_offset":
            offset = parse_int("_offset", value)
        elif name in ("_format", "_pretty"):
            continue
        else:
            raise InvalidRequest(f"History does not support the parameter '{name}'")
    return since, count, offset


def _known_type(resource_type: str) -> None:
    if resource_type not in load_definitions().resource_types:
        raise NotFound(f"Unknown resource type '{resource_type}'")


# --------------------------------------------------------------------------- authorization
# Every route names its AccessRule; handlers narrow it with permit() and show every resource
# that leaves the store to the request's RecordGuard (compartment and sensitive records).
def _not_limited(access: RequestAccess, what: str) -> None:
    """Refuse what a patient-compartment-limited caller cannot be given safely."""
    if access.who().compartment_limited:
        raise Forbidden(f"{what} is not available to a token limited to one patient")


def _check_write(access: RequestAccess, txn: Txn, method: str, resource_type: str,
                 resource_id: str | None, criteria: str | None, resource: Any) -> None:
    """Whether the caller may write: role and scopes, the new content's compartment, and the
    current version (compartment and sensitivity) of what is replaced or deleted."""
    interaction: Interaction = {"POST": "c", "PUT": "u", "DELETE": "d"}[method]  # type: ignore[assignment]
    grant = access.permit(resource_type, interaction)
    if resource_type == "Patient":  # a VIP or restricted label may come or go
        access.services.forget_restricted_patients()
    guard = access.record_guard()
    if isinstance(resource, dict):
        if not guard.compartment_check(resource, grant):
            raise Forbidden(f"writing this {resource_type} outside the permitted patient "
                            "compartment is not permitted")
        access.patients.update(referenced_patients(resource))
    if grant.compartment is not None and criteria is not None:
        raise Forbidden("conditional writes are not available to a token limited to one "
                        "patient")
    existing: list[dict[str, Any]] = []
    if resource_id is not None:
        try:
            existing = [txn.read(resource_type, resource_id)]
        except (NotFound, Gone):
            existing = []
    elif criteria:
        existing = txn.match(resource_type, criteria)
    for current in existing:
        guard.check(current, grant, f"{resource_type}/{current['id']}")
        check_not_locked(current)  # a signed document changes only by addendum or amendment
    if len(existing) == 1:
        access.details["before"] = int(existing[0]["meta"]["versionId"])


def _audit_write(request: Request, access: RequestAccess, txn: Txn,
                 result: WriteResult | None, status: int) -> None:
    """Append the request's audit entry inside its write transaction: the change and its
    entry commit together (an entry that cannot be written rolls the change back)."""
    if result is not None:
        access.target(result.resource_type, result.resource_id)
        access.details["after"] = result.version_id
        if result.resource_type == "Patient":
            access.patients.add(result.resource_id)
    client = request.client.host if request.client else None
    access.audit_in_transaction(txn.conn, status, client)


def _answer(request: Request, response: Response) -> Response:
    """Audit a read-only request from the handler's thread, then give its response."""
    client = request.client.host if request.client else None
    access_of(request).audit_now(response.status_code, client)
    return response


def _shown(access: RequestAccess, grant: Grant, resource: dict[str, Any], what: str) -> None:
    access.record_guard().check(resource, grant, what)


def _check_binary(access: RequestAccess, txn: Txn, binary: dict[str, Any], grant: Grant
                  ) -> None:
    """A Binary is as open as the resource its securityContext names (R4 Binary)."""
    context = binary.get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    target = parse_reference(reference) if isinstance(reference, str) else None
    if target is None or target[0] is None or target[1] is None:
        if grant.compartment is not None:
            raise Forbidden(f"access to Binary/{binary.get('id')} is not permitted")
        return
    try:
        owner = txn.read(target[0], target[1])
    except (NotFound, Gone):
        if grant.compartment is None:  # nothing stored to protect; the role allows Binary
            return
        raise Forbidden(f"access to Binary/{binary.get('id')} is not permitted") from None
    _shown(access, grant, owner, f"Binary/{binary.get('id')}")


def _search_grant(access: RequestAccess, resource_type: str) -> Grant:
    grant = access.permit(resource_type, "s")
    if grant.compartment is not None and resource_type not in SHARED_TYPES and \
            not in_patient_compartment_type(resource_type):
        raise Forbidden(f"{resource_type} is outside the patient compartment")
    return grant


# --------------------------------------------------------------------------- system level
@router.get("/metadata", dependencies=[Depends(PUBLIC)])
def capabilities(request: Request) -> Response:
    return fhir_response(capability_statement(_base(request)))


@router.post("", dependencies=[Depends(FHIR_BUNDLE)])
@router.post("/", dependencies=[Depends(FHIR_BUNDLE)])
async def batch_or_transaction(request: Request) -> Response:
    access = access_of(request)
    access.who()
    bundle = await read_json(request)
    kind = bundle.get("type") if isinstance(bundle, dict) else None
    access.details["bundle"] = kind if isinstance(kind, str) else "invalid"
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    entries = entries if isinstance(entries, list) else []
    methods = [e["request"].get("method") for e in entries
               if isinstance(e, dict) and isinstance(e.get("request"), dict)]
    if entries and all(m in ("GET", "HEAD") for m in methods):
        access.action = AuditAction.SEARCH  # a read-only batch reads, it changes nothing
    processor = BundleProcessor(
        _store(request), lambda txn, url, method: _bundle_get(request, txn, url),
        lambda txn, method, rtype, rid, criteria, resource: _check_write(
            access, txn, method, rtype, rid, criteria, resource),
        lambda txn, _entries: _audit_write(request, access, txn, None, 200))
    result = await run_in_threadpool(_process_bundle, processor, bundle)
    return fhir_response(result)


def _process_bundle(processor: BundleProcessor, bundle: Any) -> dict[str, Any]:
    try:
        return processor.process(bundle)
    except IntegrityError as exc:
        raise Conflict(f"The transaction conflicts with a concurrent write: {exc.orig}") from exc


def _bundle_get(request: Request, txn: Txn, url: str) -> dict[str, Any]:
    access = access_of(request)
    parts = urlsplit(url)
    segments = [s for s in parts.path.strip("/").split("/") if s]
    items = list(parse_qsl(parts.query, keep_blank_values=True))
    if len(segments) == 1:
        _known_type(segments[0])
        grant = _search_grant(access, segments[0])
        return {"resource": _search(request, txn, segments[0], items, grant),
                "response": {"status": "200 OK"}}
    if len(segments) in (2, 4):
        _known_type(segments[0])
        grant = access.permit(segments[0], "r")
    if len(segments) == 2:
        resource = _guarded_read(access, grant, txn, segments[0], segments[1])
    elif len(segments) == 4 and segments[2] == "_history":
        resource = _guarded_read(access, grant, txn, segments[0], segments[1], segments[3])
    else:
        raise InvalidRequest(f"GET url '{url}' is not a read or search")
    return {"resource": resource, "response": {
        "status": "200 OK", "etag": f'W/"{resource["meta"]["versionId"]}"'}}


def _guarded_read(access: RequestAccess, grant: Grant, txn: Txn, resource_type: str,
                  resource_id: str, version_id: str | None = None) -> dict[str, Any]:
    """Read (or vread) and check; to a compartment-limited caller a missing resource is 403."""
    try:
        if version_id is None:
            resource = txn.read(resource_type, resource_id)
        else:
            resource = txn.vread(resource_type, resource_id, version_id)
    except (NotFound, Gone):
        if grant.compartment is not None:
            raise Forbidden(f"access to {resource_type}/{resource_id} is not permitted"
                            ) from None
        raise
    what = f"{resource_type}/{resource_id}"
    if resource_type == "Binary":
        _check_binary(access, txn, resource, grant)
    else:
        _shown(access, grant, resource, what)
    return resource


@router.get("", dependencies=[Depends(FHIR_SEARCH)])
@router.get("/", dependencies=[Depends(FHIR_SEARCH)])
def system_search(request: Request) -> Response:
    access = access_of(request)
    items = _query_items(request)
    _not_limited(access, "a search across all types")
    types = [t for name, value in items if name == "_type" for t in value.split(",") if t]
    grant = Grant(None)
    for rtype in types or ["*"]:
        grant = access.permit(rtype, "s")
    with _store(request).read() as txn:
        bundle = _search(request, txn, None, items, grant)
    return _answer(request, fhir_response(bundle))


@router.get("/_history", dependencies=[Depends(FHIR_READ)])
def system_history(request: Request) -> Response:
    access = access_of(request)
    _not_limited(access, "history across all types")
    grant = access.permit("*", "r")
    items = _query_items(request)
    since, count, offset = _history_params(items)
    with _store(request).read() as txn:
        page = txn.history(since=since, count=count, offset=offset)
    _filter_history(access, grant, page)
    return _answer(request, fhir_response(history_bundle(
        request, page, f"{_base(request)}/_history", items, offset, count)))


def _filter_history(access: RequestAccess, grant: Grant, page: HistoryPage,
                    strict: bool = False) -> None:
    """Drop (or, ``strict``, refuse) the versions the caller may not see."""
    guard = access.record_guard()
    kept = []
    for entry in page.entries:
        if entry.resource is None or guard.visible(entry.resource, grant):
            kept.append(entry)
        elif strict:
            raise Forbidden(f"access to {entry.resource_type}/{entry.resource_id} is not "
                            "permitted")
        else:
            guard.withheld += 1
    page.entries = kept


# --------------------------------------------------------------------------- bulk export
def _export_kickoff(request: Request, level: str, group_id: str | None = None) -> Response:
    access = access_of(request)
    principal = access.require(Capability.bulk_export)
    _not_limited(access, "$export")
    prefer = request.headers.get("prefer", "")
    if "respond-async" not in prefer:
        raise InvalidRequest("$export needs the header 'Prefer: respond-async'")
    items = _query_items(request)
    types: list[str] | None = None
    since = output_format = None
    for name, value in items:
        if name == "_type":
            types = [t for t in value.split(",") if t]
        elif name == "_since":
            since = value
        elif name == "_outputFormat":
            output_format = value
        else:
            raise InvalidRequest(f"$export does not support the parameter '{name}'")
    check_types(types, load_definitions().resource_types)
    for rtype in types or ["*"]:
        access.permit(rtype, "r")
    if group_id is not None:
        access.permit("Group", "r")
        access.target("Group", group_id)
    access.details.update({"level": level, "types": types or ["*"]})
    manager: ExportManager = request.app.state.exports
    restricted = access.services.restricted_patients()
    job = manager.start(level, str(request.url), types, since, output_format, group_id,
                        owner=principal.user_id, keep=export_filter(restricted))
    access.details["job"] = job.id
    return Response(status_code=202, headers={
        "Content-Location": f"{_base(request)}/$export-poll-status/{job.id}"})


def export_filter(restricted: frozenset[str]) -> Any:
    """Bulk exports never carry sensitive records or restricted patients' charts (there is no
    break-the-glass for a bulk copy). Only resources that could match are parsed."""
    markers = tuple(f"Patient/{pid}" for pid in restricted)

    def keep(content: str) -> bool:
        if '"security"' not in content and not any(m in content for m in markers) and \
                not (restricted and '"resourceType":"Patient"' in content):
            return True
        resource = orjson.loads(content)
        if sensitivities(resource):
            return False
        if resource.get("resourceType") == "Patient" and resource.get("id") in restricted:
            return False
        return not (referenced_patients(resource) & restricted)
    return keep


@router.get("/$export", dependencies=[Depends(FHIR_EXPORT)])
def export_system(request: Request) -> Response:
    return _export_kickoff(request, "system")


@router.get("/Patient/$export", dependencies=[Depends(FHIR_EXPORT)])
def export_patients(request: Request) -> Response:
    return _export_kickoff(request, "patient")


@router.get("/Group/{group_id}/$export", dependencies=[Depends(FHIR_EXPORT)])
def export_group(request: Request, group_id: str) -> Response:
    return _export_kickoff(request, "group", group_id)


def _own_job(request: Request, job_id: str) -> ExportJob:
    """The caller's export job; anyone else's (or none) is 403 alike."""
    access = access_of(request)
    manager: ExportManager = request.app.state.exports
    try:
        job = manager.get(job_id)
    except NotFound:
        job = None
    if job is None or job.owner != access.who().user_id:
        raise Forbidden(f"export job '{job_id}' is not yours")
    access.details["job"] = job_id
    return job


@router.get("/$export-poll-status/{job_id}", dependencies=[Depends(AUTHENTICATED)])
def export_status(request: Request, job_id: str) -> Response:
    job = _own_job(request, job_id)
    if job.status == "in-progress":
        return Response(status_code=202, headers={"X-Progress": job.progress,
                                                  "Retry-After": "1"})
    if job.status == "error":
        return fhir_response(operation_outcome(
            [OutcomeIssue("exception", "; ".join(job.errors))]), 500)
    base = _base(request)
    manifest: dict[str, Any] = {
        "transactionTime": job.transaction_time,
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [{"type": o["type"], "count": o["count"],
                    "url": f"{base}/$export-file/{job.id}/{o['file']}"} for o in job.output],
        "error": [],
    }
    if job.withheld:
        manifest["extension"] = {"withheldRestrictedRecords": job.withheld}
    return Response(orjson.dumps(manifest), 200, media_type="application/json")


@router.delete("/$export-poll-status/{job_id}", dependencies=[Depends(AUTHENTICATED)])
def export_cancel(request: Request, job_id: str) -> Response:
    _own_job(request, job_id)
    manager: ExportManager = request.app.state.exports
    manager.cancel(job_id)
    return Response(status_code=202)


@router.get("/$export-file/{job_id}/{name}", dependencies=[Depends(FHIR_EXPORT)])
def export_file(request: Request, job_id: str, name: str) -> Response:
    _own_job(request, job_id)
    access_of(request).details["file"] = name
    manager: ExportManager = request.app.state.exports
    return FileResponse(manager.file_path(job_id, name), media_type="application/fhir+ndjson")


# --------------------------------------------------------------------------- $everything
@router.get("/Patient/{patient_id}/$everything", dependencies=[Depends(FHIR_READ)])
def patient_everything(request: Request, patient_id: str) -> Response:
    access = access_of(request)
    grant = access.permit("Patient", "r")
    access.target("Patient", patient_id)
    access.details["operation"] = "everything"
    types = since = None
    for name, value in _query_items(request):
        if name == "_type":
            types = [t for t in value.split(",") if t]
        elif name == "_since":
            since = value
        elif name not in ("_format", "_pretty", "_count"):
            raise InvalidRequest(f"$everything does not support the parameter '{name}'")
    check_types(types, load_definitions().resource_types)
    _patient, shown, withheld = visible_everything(access, _store(request), patient_id, types,
                                                   since, grant)
    base = _base(request)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "id": _new_bundle_id(), "type": "searchset",
        "total": len(shown),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in shown],
    }
    _note_withheld(bundle, withheld)
    return _answer(request, fhir_response(bundle))


# --------------------------------------------------------------------------- $match
@router.post("/Patient/$match", dependencies=[Depends(FHIR_SEARCH)])
async def patient_match(request: Request) -> Response:
    """The probable duplicates of a Patient (FHIR R4 Patient/$match), scored by the MPI's
    trained model; each entry has its score and match grade."""
    from chartkeeper.mpi.match import match, match_bundle, match_parameters

    access = access_of(request)
    access.target("Patient")
    access.details["operation"] = "match"
    grant = _search_grant(access, "Patient")
    patient, count, only_certain = match_parameters(await read_json(request))

    def run() -> Response:
        with _store(request).read() as txn:
            found = match(txn, patient, count=count, only_certain=only_certain)
        guard = access.record_guard()
        shown = [m for m in found if guard.visible(m.patient, grant)]
        bundle = match_bundle(shown, _base(request))
        bundle["id"] = _new_bundle_id()
        _note_withheld(bundle, len(found) - len(shown))
        return _answer(request, fhir_response(bundle))
    return await run_in_threadpool(run)


def visible_everything(access: RequestAccess, store: Store, patient_id: str,
                       types: list[str] | None = None, since: str | None = None,
                       grant: Grant | None = None) -> tuple[Resource, list[Resource], int]:
    """A patient's record as this caller may see it: (the Patient, the resources shown, how
    many were withheld). Forbidden when the patient is outside the caller's compartment or
    restricted without break-the-glass. The API's ``$everything`` and the chart page use it."""
    grant = grant or access.permit("Patient", "r")
    if grant.compartment is not None and grant.compartment != patient_id:
        raise Forbidden(f"access to Patient/{patient_id} is not permitted")
    with store.read() as txn:
        patient = _guarded_read(access, grant, txn, "Patient", patient_id)
        resources = everything(txn, patient_id, types, since)
    guard = access.record_guard()
    shown = []
    for resource in resources:
        if resource is patient or resource.get("resourceType") == "Patient" and \
                resource.get("id") == patient_id:
            shown.append(resource)
            continue
        rtype = str(resource.get("resourceType"))
        try:
            rgrant = access.permit(rtype, "r")
        except Forbidden:
            guard.withheld += 1
            continue
        if guard.visible(resource, rgrant if rgrant.compartment is None else grant):
            shown.append(resource)
        else:
            guard.withheld += 1
    return patient, shown, guard.withheld


def _note_withheld(bundle: dict[str, Any], withheld: int) -> None:
    """Say (without ids) that restricted entries were left out, as an outcome entry."""
    if not withheld:
        return
    bundle.setdefault("entry", []).append({"resource": operation_outcome([OutcomeIssue(
        "suppressed", f"{withheld} restricted entries were withheld; break-the-glass to see "
                      "a restricted patient's record", severity="warning")]),
        "search": {"mode": "outcome"}})


# --------------------------------------------------------------------------- type level
@router.get("/{resource_type}/_history", dependencies=[Depends(FHIR_READ)])
def type_history(request: Request, resource_type: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type)
    _not_limited(access, "type history")
    grant = access.permit(resource_type, "r")
    items = _query_items(request)
    since, count, offset = _history_params(items)
    with _store(request).read() as txn:
        page = txn.history(resource_type, since=since, count=count, offset=offset)
    _filter_history(access, grant, page)
    return _answer(request, fhir_response(history_bundle(
        request, page, f"{_base(request)}/{resource_type}/_history", items, offset, count)))


@router.get("/{resource_type}", dependencies=[Depends(FHIR_SEARCH)])
def search_type(request: Request, resource_type: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type)
    grant = _search_grant(access, resource_type)
    with _store(request).read() as txn:
        bundle = _search(request, txn, resource_type, _query_items(request), grant)
    return _answer(request, fhir_response(bundle))


@router.post("/{resource_type}/_search", dependencies=[Depends(FHIR_SEARCH)])
async def search_type_post(request: Request, resource_type: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type)
    grant = _search_grant(access, resource_type)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    body = (await request.body()).decode("utf-8", errors="replace")
    if body and content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
    items = _query_items(request) + list(parse_qsl(body, keep_blank_values=True))

    def run() -> Response:
        with _store(request).read() as txn:
            bundle = _search(request, txn, resource_type, items, grant)
        return _answer(request, fhir_response(bundle))
    return await run_in_threadpool(run)


@router.post("/{resource_type}", dependencies=[Depends(FHIR_CREATE)])
async def create(request: Request, resource_type: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type)
    access.permit(resource_type, "c")
    resource = await read_json(request)
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        got = resource.get("resourceType") if isinstance(resource, dict) else type(resource)
        message = f"The body's resourceType '{got}' does not match the URL type '{resource_type}'"
        raise InvalidRequest(message, [OutcomeIssue("invalid", message, "resourceType")])
    if_none_exist = request.headers.get("if-none-exist")

    def run() -> WriteResult:
        with _store(request).write() as txn:
            _check_write(access, txn, "POST", resource_type, None, None, resource)
            if if_none_exist:
                result = txn.conditional_create(resource, if_none_exist)
            else:
                result = txn.create(resource)
            if resource_type == "Patient" and not result.unchanged and result.resource:
                _screen_new_patient(access, txn, result.resource)
            _audit_write(request, access, txn, result, 200 if result.unchanged else 201)
            return result
    result = await run_in_threadpool(run)
    if result.unchanged:
        return _write_response(request, result, 200)
    return _write_response(request, result)


def _screen_new_patient(access: RequestAccess, txn: Txn, patient: Resource) -> None:
    """The MPI's check at registration, in the creating transaction: a certain duplicate is
    linked, a probable one queued for review (the decisions stay a person's)."""
    from chartkeeper.mpi.service import Decider, screen_new_patient

    who = access.who()
    screened = screen_new_patient(txn, patient, Decider(
        who.user_id, str(who.role), "duplicate check when the patient was registered"))
    if screened.linked or screened.queued:
        access.details["probable_duplicates"] = screened.linked + screened.queued


@router.put("/{resource_type}", dependencies=[Depends(FHIR_UPDATE)])
async def conditional_update(request: Request, resource_type: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type)
    access.permit(resource_type, "u")
    criteria = request.url.query
    if not criteria:
        raise MethodNotAllowed("PUT on a type needs search criteria (conditional update)")
    resource = await read_json(request)
    if_match = parse_etag(request.headers.get("if-match"))

    def run() -> WriteResult:
        with _store(request).write() as txn:
            _check_write(access, txn, "PUT", resource_type, None, criteria, resource)
            result = txn.conditional_update(resource_type, criteria, resource, if_match)
            _audit_write(request, access, txn, result, 201 if result.created else 200)
            return result
    result = await run_in_threadpool(run)
    return _write_response(request, result)


@router.delete("/{resource_type}", dependencies=[Depends(FHIR_DELETE)])
def conditional_delete(request: Request, resource_type: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type)
    access.permit(resource_type, "d")
    criteria = request.url.query
    if not criteria:
        raise MethodNotAllowed("DELETE on a type needs search criteria (conditional delete)")
    with _store(request).write() as txn:
        _check_write(access, txn, "DELETE", resource_type, None, criteria, None)
        results = txn.conditional_delete(resource_type, criteria)
        _audit_write(request, access, txn, results[0] if len(results) == 1 else None, 204)
    return Response(status_code=204)


# --------------------------------------------------------------------------- instance level
@router.get("/{resource_type}/{resource_id}", dependencies=[Depends(FHIR_READ)])
def read(request: Request, resource_type: str, resource_id: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type, resource_id)
    grant = access.permit(resource_type, "r")
    with _store(request).read() as txn:
        resource = _guarded_read(access, grant, txn, resource_type, resource_id)
    version = resource["meta"]["versionId"]
    etag = f'W/"{version}"'
    headers = {"ETag": etag, "Last-Modified": _http_date(resource["meta"]["lastUpdated"])}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and parse_etag(if_none_match) == int(version):
        return _answer(request, Response(status_code=304, headers=headers))
    items = _query_items(request)
    summary = elements = None
    for name, value in items:
        if name == "_elements":
            elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_summary":
            summary = value
    return _answer(request, fhir_response(_apply_elements(resource, elements, summary), 200,
                                          headers))


@router.put("/{resource_type}/{resource_id}", dependencies=[Depends(FHIR_UPDATE)])
async def update(request: Request, resource_type: str, resource_id: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type, resource_id)
    access.permit(resource_type, "u")
    resource = await read_json(request)
    if_match = parse_etag(request.headers.get("if-match"))

    def run() -> WriteResult:
        try:
            with _store(request).write() as txn:
                _check_write(access, txn, "PUT", resource_type, resource_id, None, resource)
                result = txn.update(resource_type, resource_id, resource, if_match)
                _audit_write(request, access, txn, result, 201 if result.created else 200)
                return result
        except IntegrityError as exc:
            raise Conflict(f"{resource_type}/{resource_id} was created concurrently") from exc
    result = await run_in_threadpool(run)
    return _write_response(request, result)


@router.delete("/{resource_type}/{resource_id}", dependencies=[Depends(FHIR_DELETE)])
def delete(request: Request, resource_type: str, resource_id: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type, resource_id)
    access.permit(resource_type, "d")
    if_match = parse_etag(request.headers.get("if-match"))
    with _store(request).write() as txn:
        _check_write(access, txn, "DELETE", resource_type, resource_id, None, None)
        result = txn.delete(resource_type, resource_id, if_match)
        _audit_write(request, access, txn, result, 204)
    headers = {"ETag": f'W/"{result.version_id}"'} if not result.unchanged else {}
    return Response(status_code=204, headers=headers)


@router.get("/{resource_type}/{resource_id}/_history", dependencies=[Depends(FHIR_READ)])
def instance_history(request: Request, resource_type: str, resource_id: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type, resource_id)
    grant = access.permit(resource_type, "r")
    items = _query_items(request)
    since, count, offset = _history_params(items)
    with _store(request).read() as txn:
        try:
            page = txn.history(resource_type, resource_id, since=since, count=count,
                               offset=offset)
        except NotFound:
            if grant.compartment is not None:
                raise Forbidden(f"access to {resource_type}/{resource_id} is not permitted"
                                ) from None
            raise
    if grant.compartment is not None and not any(e.resource for e in page.entries):
        raise Forbidden(f"access to {resource_type}/{resource_id} is not permitted")
    _filter_history(access, grant, page, strict=True)
    path = f"{_base(request)}/{resource_type}/{resource_id}/_history"
    return _answer(request, fhir_response(history_bundle(request, page, path, items, offset,
                                                         count)))


@router.get("/{resource_type}/{resource_id}/_history/{version_id}",
            dependencies=[Depends(FHIR_READ)])
def vread(request: Request, resource_type: str, resource_id: str, version_id: str) -> Response:
    _known_type(resource_type)
    access = access_of(request)
    access.target(resource_type, resource_id)
    grant = access.permit(resource_type, "r")
    with _store(request).read() as txn:
        resource = _guarded_read(access, grant, txn, resource_type, resource_id, version_id)
    headers = {"ETag": f'W/"{resource["meta"]["versionId"]}"',
               "Last-Modified": _http_date(resource["meta"]["lastUpdated"])}
    return _answer(request, fhir_response(resource, 200, headers))


# --------------------------------------------------------------------------- capabilities
def capability_statement(base: str) -> dict[str, Any]:
    defs = load_definitions()
    interactions = [{"code": c} for c in (
        "read", "vread", "update", "delete", "history-instance", "history-type", "create",
        "search-type")]
    resources = []
    for rtype in sorted(defs.resource_types):
        searchable = searchable_codes(rtype) | {"_id"}
        params = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(defs.params_for(rtype).values(), key=lambda p: p.code)
            if p.code in searchable
        ]
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": interactions,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchInclude": ["*"],
            "searchRevInclude": ["*"],
            "searchParam": params,
        }
        if rtype == "Patient":
            entry["operation"] = [
                {"name": "everything",
                 "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                {"name": "export",
                 "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
                               "patient-export"},
            ]
        if rtype == "Group":
            entry["operation"] = [{
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now_instant(),
        "publisher": "Chartkeeper",
        "kind": "instance",
        "software": {"name": "Chartkeeper", "version": __version__},
        "implementation": {"description": "Chartkeeper FHIR R4 record store", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "search-system"}, {"code": "history-system"}],
            "searchParam": [
                {"name": "_count", "type": "number"}, {"name": "_offset", "type": "number"},
                {"name": "_sort", "type": "string"}, {"name": "_include", "type": "string"},
                {"name": "_revinclude", "type": "string"},
                {"name": "_summary", "type": "token"}, {"name": "_elements", "type": "string"},
                {"name": "_total", "type": "token"}, {"name": "_has", "type": "string"},
            ],
            "operation": [{
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}],
        }],
    }
