"""The coding API: suggestions for a text, the encoder's search, code details, the PCS builder.

Every route needs a signed-in user whose role has the coding capability; errors are FHIR
``OperationOutcome``s like the rest of the API.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from chartkeeper.api.auth import AUTHENTICATED, access_of
from chartkeeper.coding import codesets, service
from chartkeeper.coding.cac import SETTINGS, SuggestError
from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.security.access import Capability
from chartkeeper.store.errors import InvalidRequest, NotFound, PayloadTooLarge

router = APIRouter(prefix="/api/coding", tags=["coding"])
MAX_NOTE_BYTES = 1024 * 1024  # a long discharge summary is tens of kilobytes


def _engine(request: Request) -> Any:
    access_of(request).require(Capability.coding)
    return request.app.state.store.engine


def _date(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/fhir+json"):
        raise InvalidRequest("send the note as application/json: {\"text\": ..., "
                             "\"setting\": \"inpatient\" | \"outpatient\"}")
    body = await request.body()
    if len(body) > MAX_NOTE_BYTES:
        raise PayloadTooLarge(f"the request body exceeds {MAX_NOTE_BYTES} bytes")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise InvalidRequest("the body must be a JSON object")
    return fields


@router.post("/suggest", dependencies=[Depends(AUTHENTICATED)])
async def suggest(request: Request) -> dict[str, Any]:
    """``{"text", "setting", "age"?, "date"?}`` -> diagnoses ranked best first, each with
    code, display, confidence and evidence spans; the principal; procedures."""
    engine = _engine(request)
    fields = await _json_body(request)
    text, setting, age = fields.get("text"), fields.get("setting"), fields.get("age")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("'text' must be the note as a non-empty string")
    if setting not in SETTINGS:
        raise InvalidRequest(f"'setting' must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if age is not None and (type(age) is not int or not 0 <= age <= 124):
        raise InvalidRequest(f"'age' must be whole years from 0 to 124, got {age!r}")
    on = _date(fields.get("date"), "'date'")

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
    when = _date(on, "date")

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
    when = _date(on, "date")

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
    when = _date(on, "date")

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
