"""Build the FastAPI application around one store."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chartkeeper import __version__
from chartkeeper.api import fhir
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.bundle import operation_outcome
from chartkeeper.store.errors import OutcomeIssue, StoreError
from chartkeeper.store.export import ExportManager

log = logging.getLogger("chartkeeper.api")
access_log = logging.getLogger("chartkeeper.access")

HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-long", 415: "not-supported"}


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if store is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = Store(settings.database_url)
        store.create_schema()
    app = FastAPI(title="Chartkeeper", version=__version__,
                  description="Health information management over a FHIR R4 record store")
    app.state.settings = settings
    app.state.store = store
    app.state.exports = ExportManager(store, settings.home / "exports")
    app.include_router(fhir.router)

    @app.middleware("http")
    async def _access_log(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        # Method, path and status only: query strings and bodies hold PHI and are never logged.
        access_log.info("%s %s %d %.1f ms", request.method, request.url.path,
                        response.status_code, (time.perf_counter() - started) * 1000)
        return response

    @app.exception_handler(StoreError)
    async def _store_error(_request: Request, exc: StoreError) -> Response:
        return fhir.error_response(exc)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_request: Request, exc: IntegrityError) -> Response:
        return fhir.fhir_response(operation_outcome([OutcomeIssue(
            "conflict", f"The write conflicts with stored data: {type(exc.orig).__name__}")]), 409)

    @app.exception_handler(OperationalError)
    async def _operational_error(_request: Request, exc: OperationalError) -> Response:
        log.error("database error: %s", type(exc.orig).__name__)
        return fhir.fhir_response(operation_outcome([OutcomeIssue(
            "transient", "The database is busy or unavailable; retry the request")]), 503)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = HTTP_ISSUE_CODES.get(exc.status_code, "processing")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return fhir.fhir_response(operation_outcome([OutcomeIssue(code, detail)]),
                                  exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        issues = [OutcomeIssue("invalid", str(e.get("msg")), ".".join(map(str, e.get("loc", ()))))
                  for e in exc.errors()]
        return fhir.fhir_response(operation_outcome(issues), 400)

    @app.get("/", include_in_schema=False)
    def home() -> dict[str, Any]:
        return {"name": "Chartkeeper", "version": __version__, "fhir": "/fhir/metadata"}

    return app
