"""Build the FastAPI application around one store."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chartkeeper import __version__
from chartkeeper.api import deid_routes, fhir, openapi, security_routes
from chartkeeper.api.auth import RequestAccess, api_routes
from chartkeeper.coding import routes as coding_routes
from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.security.identity import SecurityError
from chartkeeper.security.services import SecurityServices
from chartkeeper.security.tokens import TokenError
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.bundle import operation_outcome
from chartkeeper.store.errors import OutcomeIssue, StoreError
from chartkeeper.store.export import ExportManager
from chartkeeper.web import (
    amendment_pages,
    coding_pages,
    coding_work_pages,
    completion_pages,
    export_pages,
    import_pages,
    jobs,
    mpi_pages,
    pages,
    retention_pages,
    roi_pages,
)

log = logging.getLogger("chartkeeper.api")
access_log = logging.getLogger("chartkeeper.access")

GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700 (3.11)
HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-long", 415: "not-supported"}


class UnguardedRouteError(RuntimeError):
    """A route without an AccessRule: the app refuses to start (deny by default)."""


def create_app(settings: Settings | None = None, store: Store | None = None,
               security: SecurityServices | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if store is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = Store(settings.database_url)
        store.create_schema()
    if security is None:
        security = SecurityServices.build(settings, store.engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        security.audit_writer  # noqa: B018 - start the writer thread in the serving process
        await run_in_threadpool(security.record_audit_settings, settings)
        settle_memory()
        yield
        security.close()  # flush the audit writer

    app = FastAPI(title="Chartkeeper", version=__version__, lifespan=lifespan,
                  description="Health information management over a FHIR R4 record store")
    app.state.settings = settings
    app.state.store = store
    app.state.security = security
    app.state.exports = ExportManager(store, settings.home / "exports")
    app.include_router(fhir.router)
    app.include_router(security_routes.router)
    app.include_router(deid_routes.router)
    app.include_router(pages.router)
    app.include_router(completion_pages.router)
    app.include_router(roi_pages.router)
    app.include_router(retention_pages.router)
    app.include_router(jobs.router)
    app.include_router(amendment_pages.router)
    app.include_router(import_pages.router)
    app.include_router(export_pages.router)
    app.include_router(mpi_pages.router)
    app.include_router(coding_routes.router)
    app.include_router(coding_pages.router)
    app.include_router(coding_work_pages.router)

    @app.middleware("http")
    async def _audit_and_log(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        try:
            response: Response = await call_next(request)
        except Exception:
            await _audit(request, 500)
            raise
        if not await _audit(request, response.status_code):
            response = fhir.fhir_response(operation_outcome([OutcomeIssue(
                "transient", "The access could not be audited, so it was not given; retry")]),
                503)
        # Method, path and status only: query strings and bodies hold PHI and are never logged.
        access_log.info("%s %s %d %.1f ms", request.method, request.url.path,
                        response.status_code, (time.perf_counter() - started) * 1000)
        return response

    async def _audit(request: Request, status: int) -> bool:
        """Append the request's one audit entry and wait until it is durable."""
        access: RequestAccess | None = getattr(request.state, "access", None)
        if access is None or access.audited and status < 400:
            # Audited inside the write transaction (a failed request rolled that back).
            return True
        client = request.client.host if request.client else None
        try:
            record = access.audit_record(status, client)
            if record is not None:
                await asyncio.wrap_future(security.audit_writer.submit(record))
        except Exception as exc:  # fail closed: no audit entry, no response body
            log.error("audit append failed: %s", type(exc).__name__)
            return False
        return True

    @app.exception_handler(SecurityError)
    async def _security_error(request: Request, exc: SecurityError) -> Response:
        status = int(getattr(exc, "status", 400))
        if isinstance(exc, pages.SignInNeeded):
            return pages.sign_in_redirect(request, exc.next_path)
        if pages.is_page(request):
            return pages.error_page(request, status, str(exc))
        code = {401: "login", 403: "forbidden"}.get(status, "invalid" if status == 400
                                                    else "processing")
        headers = {}
        if status == 401:
            error = ', error="invalid_token"' if isinstance(exc, TokenError) else ""
            headers["WWW-Authenticate"] = f'Bearer realm="chartkeeper"{error}'
        return fhir.fhir_response(operation_outcome([OutcomeIssue(code, str(exc))]), status,
                                  headers)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        if pages.is_page(request):
            return pages.error_page(request, exc.status, exc.diagnostics)
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

    check_route_rules(app)
    openapi.install_openapi(app)
    return app


def settle_memory() -> None:
    """Load the FHIR definitions now and take what is alive at start-up out of the garbage
    collector's sight (gc.freeze): the definitions and compiled search expressions are
    millions of objects that never die, and every full collection walked them again (the
    chart of a 2,500-record patient took 80 ms longer on every second request). Young
    collections run less often too: a chart page allocates tens of thousands of dicts."""
    load_definitions()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def check_route_rules(app: FastAPI) -> None:
    """Deny by default: every API route must name its AccessRule, or the app does not start."""
    unguarded = [f"{','.join(sorted(r.methods))} {r.path}" for r in api_routes(app)
                 if r.rule is None]
    if unguarded:
        raise UnguardedRouteError(f"routes without an access rule: {', '.join(unguarded)}")
