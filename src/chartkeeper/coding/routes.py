"""The coding API: suggestions for a text, the encoder's search, code details, the PCS builder,
and the coder's work: the queue, an encounter's worksheet, the decisions that finalize it, the
edits check and the productivity and accuracy reports.

Every route needs a signed-in user whose role has the coding capability; errors are FHIR
``OperationOutcome``s like the rest of the API. The queue and the worksheet show patient data:
they are audited like FHIR searches and reads, and a finalization's audit entry is appended
inside the transaction that stores the codes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from chartkeeper.api.auth import AUTHENTICATED, access_of
from chartkeeper.coding import codesets, edits, feedback, service
from chartkeeper.coding.cac import SETTINGS, SuggestError
from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.worksheet_json import decisions_from_json
from chartkeeper.coding.worksheet_service import (
    audit_finalization,
    check_decisions,
    coder_of,
    finalize,
    guarded_queue,
    guarded_worksheet,
    nubc_discharge_status,
    parse_date,
    permit_coding_writes,
    report_period,
    require_coding,
    unbilled,
)
from chartkeeper.coding.worksheet_write import Finalized
from chartkeeper.security.access import Capability
from chartkeeper.security.audit import AuditAction
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest, NotFound, PayloadTooLarge
from chartkeeper.store.service import Resource

router = APIRouter(prefix="/api/coding", tags=["coding"])
MAX_NOTE_BYTES = 1024 * 1024  # a long discharge summary is tens of kilobytes
MAX_DECISIONS_BYTES = 256 * 1024


def _engine(request: Request) -> Any:
    access_of(request).require(Capability.coding)
    return request.app.state.store.engine


async def _json_object(request: Request, limit: int, shape: str) -> dict[str, Any]:
    """The body as a JSON object of at most ``limit`` bytes; ``shape`` says what to send."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/fhir+json"):
        raise InvalidRequest(f"send application/json: {shape}")
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise InvalidRequest(f"the body must be a JSON object: {shape}")
    return fields


@router.post("/suggest", dependencies=[Depends(AUTHENTICATED)])
async def suggest(request: Request) -> dict[str, Any]:
    """``{"text", "setting", "age"?, "date"?}`` -> diagnoses ranked best first, each with
    code, display, confidence and evidence spans; the principal; procedures."""
    engine = _engine(request)
    fields = await _json_object(request, MAX_NOTE_BYTES,
                                '{"text": ..., "setting": "inpatient" | "outpatient"}')
    text, setting, age = fields.get("text"), fields.get("setting"), fields.get("age")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("'text' must be the note as a non-empty string")
    if setting not in SETTINGS:
        raise InvalidRequest(f"'setting' must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if age is not None and (type(age) is not int or not 0 <= age <= 124):
        raise InvalidRequest(f"'age' must be whole years from 0 to 124, got {age!r}")
    on = parse_date(fields.get("date"), "'date'")

    def run() -> dict[str, Any]:
        try:
            return service.suggest(engine, text, setting, age=age, on=on).to_json()
        except (SuggestError, CodeSetError) as exc:
            raise InvalidRequest(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/search", dependencies=[Depends(AUTHENTICATED)])
async def search(request: Request, q: str = Query(min_length=1, max_length=200),
                 limit: int = Query(25, ge=1, le=200),
                 on: str | None = Query(None, alias="date")) -> dict[str, Any]:
    """ICD-10-CM codes by words, abbreviations, misspellings or the code itself."""
    engine = _engine(request)
    when = parse_date(on, "date")

    def run() -> dict[str, Any]:
        try:
            hits = service.search(engine, q, limit=limit, on=when)
        except CodeSetError as exc:
            raise InvalidRequest(str(exc)) from None
        return {"query": q, "hits": [hit.to_json() for hit in hits]}

    return await run_in_threadpool(run)


@router.get("/codes/{code}", dependencies=[Depends(AUTHENTICATED)])
async def code_detail(request: Request, code: str,
                      on: str | None = Query(None, alias="date")) -> dict[str, Any]:
    """A code, its place in the hierarchy and every instructional note that applies."""
    engine = _engine(request)
    when = parse_date(on, "date")

    def run() -> dict[str, Any]:
        try:
            return service.detail(engine, code, when).to_json()
        except UnknownCode as exc:
            raise NotFound(str(exc)) from None
        except CodeSetError as exc:
            raise InvalidRequest(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/pcs", dependencies=[Depends(AUTHENTICATED)])
async def pcs_choices(request: Request, prefix: str = Query("", max_length=7),
                      on: str | None = Query(None, alias="date")) -> dict[str, Any]:
    """The ICD-10-PCS builder: the valid values for the next character after ``prefix``."""
    engine = _engine(request)
    when = parse_date(on, "date")

    def run() -> dict[str, Any]:
        try:
            return service.pcs_step(engine, prefix.upper(), when)
        except CodeSetError as exc:
            raise InvalidRequest(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/releases", dependencies=[Depends(AUTHENTICATED)])
async def releases(request: Request) -> dict[str, Any]:
    """The code-set releases imported, with the dates each is in force."""
    engine = _engine(request)

    def run() -> dict[str, Any]:
        codesets.ensure_packaged(engine)
        return {"releases": [release.to_json() for release in codesets.releases(engine)]}

    return await run_in_threadpool(run)


# ======================================================================= the worksheet API
@router.get("/queue", dependencies=[Depends(AUTHENTICATED)])
async def work_queue(request: Request, setting: str | None = Query(None, max_length=20),
                     count: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0, le=1_000_000),
                     as_of: str | None = Query(None, alias="asOf")) -> dict[str, Any]:
    """Unbilled encounters (finished, no coded Claim), oldest discharge first, with the days
    since discharge; ``setting`` inpatient or outpatient; paged by ``count`` and ``offset``.
    Restricted records are listed without the patient (audited as a search)."""
    access = access_of(request)
    require_coding(access)
    access.action = AuditAction.SEARCH
    access.target("Encounter")
    access.details["query"] = "coding queue"
    when = parse_date(as_of, "asOf")
    store: Store = request.app.state.store

    def run() -> dict[str, Any]:
        items = unbilled(store, setting=setting, as_of=when)
        rows = guarded_queue(access, store, items[offset:offset + count])
        return {"total": len(items), "offset": offset, "count": len(rows),
                "asOf": (when or datetime.now(UTC).date()).isoformat(),
                "items": [row.to_json() for row in rows],
                "restricted": sum(1 for row in rows if not row.visible)}

    return await run_in_threadpool(run)


@router.get("/encounters/{encounter_id}/worksheet", dependencies=[Depends(AUTHENTICATED)])
async def encounter_worksheet(request: Request, encounter_id: str) -> dict[str, Any]:
    """The encounter's documents, the suggestions ranked (confidence, proposed, explanation,
    evidence in the joined text and in its document), the decisions recorded, the current
    Claim and the discharge status the edits default to (audited as a read)."""
    access = access_of(request)
    require_coding(access)
    access.action = AuditAction.READ
    store: Store = request.app.state.store

    def run() -> dict[str, Any]:
        guarded = guarded_worksheet(access, store, encounter_id)
        return {**guarded.sheet.to_json(),
                "dischargeStatus": nubc_discharge_status(guarded.encounter)}

    return await run_in_threadpool(run)


@router.post("/encounters/{encounter_id}/edits", dependencies=[Depends(AUTHENTICATED)])
async def encounter_edits(request: Request, encounter_id: str) -> dict[str, Any]:
    """The edits the decisions' claim fails (``errors`` block finalizing); nothing is stored.
    The body is the decisions' (``reason`` optional)."""
    access = access_of(request)
    require_coding(access)
    access.action = AuditAction.READ
    body = decisions_from_json(await _json_object(
        request, MAX_DECISIONS_BYTES, '{"decisions": [...], "reason": ...}'))
    store: Store = request.app.state.store

    def run() -> dict[str, Any]:
        guarded = guarded_worksheet(access, store, encounter_id)
        _plan, found = check_decisions(store, guarded, body.decisions, coder_of(access),
                                       discharge_status=body.discharge_status,
                                       reason=body.reason)
        failed = edits.errors(found)
        return {"encounter": encounter_id, "clean": not failed, "errors": len(failed),
                "edits": [edit.to_json() for edit in found]}

    return await run_in_threadpool(run)


@router.post("/encounters/{encounter_id}/decisions", dependencies=[Depends(AUTHENTICATED)])
async def encounter_decisions(request: Request, encounter_id: str) -> Response:
    """Finalize the encounter: ``{"decisions": [{"action", "code", "replacement"?, "reason"?,
    "poa"?, "system"?, "performed"?, "units"?}...], "reason", "dischargeStatus"?}``. The
    decisions are checked, the claim must pass the edits, then the Conditions, the Encounter's
    billing diagnoses, the Procedures, the draft Claim and the Provenance are stored with the
    audit entry in one transaction: 201 for a first coding, 200 for a re-coding."""
    access = access_of(request)
    require_coding(access)
    permit_coding_writes(access)
    access.action = AuditAction.UPDATE
    access.details["change"] = "final codes assigned"
    body = decisions_from_json(await _json_object(
        request, MAX_DECISIONS_BYTES, '{"decisions": [...], "reason": ...}'))
    store: Store = request.app.state.store
    source = request.client.host if request.client else None

    def run() -> tuple[Finalized, list[edits.Edit], Resource]:
        guarded = guarded_worksheet(access, store, encounter_id)
        finalized, found = finalize(
            store, guarded, body.decisions, coder_of(access), reason=body.reason or "",
            discharge_status=body.discharge_status,
            before_commit=audit_finalization(access, source))
        with store.read() as txn:
            claim = txn.read("Claim", finalized.claim.split("/")[1])
        return finalized, found, claim

    finalized, found, claim = await run_in_threadpool(run)
    return JSONResponse({"finalized": finalized.to_json(), "claim": claim,
                         "edits": [edit.to_json() for edit in found]},
                        201 if finalized.activity == "CREATE" else 200)


@router.get("/reports/productivity", dependencies=[Depends(AUTHENTICATED)])
async def productivity_report(request: Request, since: str | None = Query(None, max_length=10),
                              until: str | None = Query(None, max_length=10)
                              ) -> dict[str, Any]:
    """Per coder over ``since``..``until`` (whole UTC days; the last 30 days by default):
    encounters coded, finalizations, final codes, codes per encounter, encounters per day."""
    access = access_of(request)
    require_coding(access)
    start, end = report_period(since, until)
    engine = request.app.state.store.engine

    def run() -> dict[str, Any]:
        report = feedback.productivity(engine, since=start, until=end)
        return {"since": start.isoformat(), "until": end.isoformat(),
                "coders": [row.to_json() for row in report]}

    return await run_in_threadpool(run)


@router.get("/reports/accuracy", dependencies=[Depends(AUTHENTICATED)])
async def accuracy_report(request: Request, since: str | None = Query(None, max_length=10),
                          until: str | None = Query(None, max_length=10)) -> dict[str, Any]:
    """How the suggestions fared over the period, per coder and overall: accepted unchanged,
    edited, rejected (explicitly or left alone), and the final codes added by hand."""
    access = access_of(request)
    require_coding(access)
    start, end = report_period(since, until)
    engine = request.app.state.store.engine

    def run() -> dict[str, Any]:
        report = feedback.accuracy(engine, since=start, until=end)
        return {"since": start.isoformat(), "until": end.isoformat(), **report.to_json()}

    return await run_in_threadpool(run)
