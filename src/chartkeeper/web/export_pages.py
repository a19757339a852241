"""Bulk export from the workbench (analysts, administrators): the same NDJSON export as
``$export`` (sensitive records and restricted charts never leave in bulk), run in the
background with its progress in the page, then the files to download."""

from __future__ import annotations

import time
from datetime import date

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from chartkeeper.api.auth import access_of
from chartkeeper.api.fhir import export_filter
from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.security.access import Capability, Forbidden
from chartkeeper.security.audit import AuditAction
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.store.export import ExportManager, check_types
from chartkeeper.web.jobs import Progress, runner_of
from chartkeeper.web.pages import PAGE, PageRule, read_form, render

router = APIRouter(include_in_schema=False)
PAGE_EXPORT = PageRule("page-export", AuditAction.EXPORT)
POLL_SECONDS = 0.25


def _manager(request: Request) -> ExportManager:
    manager: ExportManager = request.app.state.exports
    return manager


@router.get("/exports", dependencies=[Depends(PAGE)])
def export_form(request: Request) -> Response:
    access_of(request).require(Capability.bulk_export)
    return render(request, "exports.html", {})


@router.post("/exports", dependencies=[Depends(PAGE_EXPORT)])
async def start_export(request: Request) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    principal = access.require(Capability.bulk_export)
    if principal.patient is not None:
        raise Forbidden("a bulk export is not available to a patient-limited session")
    types = [t.strip() for t in fields.get("types", "").split(",") if t.strip()] or None
    check_types(types, load_definitions().resource_types)
    for rtype in types or ["*"]:
        access.permit(rtype, "r")
    since = fields.get("since", "").strip() or None
    if since is not None:
        try:
            date.fromisoformat(since)
        except ValueError:
            raise InvalidRequest(f"'{since}' is not a date (YYYY-MM-DD)") from None
    access.details.update({"level": "system", "types": types or ["*"], "page": "export"})
    manager = _manager(request)
    export = manager.start("system", str(request.url), types, since, None,
                           owner=principal.user_id,
                           keep=export_filter(access.services.restricted_patients()))
    access.details["export"] = export.id

    def follow(progress: Progress) -> tuple[str, str]:
        while export.status == "in-progress":
            progress(0, 0, export.progress)
            time.sleep(POLL_SECONDS)
        if export.status != "complete":
            raise InvalidRequest(f"the export {export.status}: {'; '.join(export.errors)}")
        total = sum(int(o["count"]) for o in export.output)
        withheld = f", {export.withheld} sensitive withheld" if export.withheld else ""
        return f"/exports/{export.id}", f"{total} resources in {len(export.output)} files" \
                                        f"{withheld}"

    job = runner_of(request).start(principal.user_id, "Export", follow)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/exports/{export_id}", dependencies=[Depends(PAGE)])
def export_files(request: Request, export_id: str) -> Response:
    principal = access_of(request).require(Capability.bulk_export)
    export = _manager(request).get(export_id)
    if export.owner != principal.user_id:
        raise Forbidden("this export was started by someone else")
    return render(request, "export_files.html", {"export": export})


@router.get("/exports/{export_id}/{name}", dependencies=[Depends(PAGE_EXPORT)])
def export_file(request: Request, export_id: str, name: str) -> Response:
    access = access_of(request)
    principal = access.require(Capability.bulk_export)
    manager = _manager(request)
    export = manager.get(export_id)
    if export.owner != principal.user_id:
        raise Forbidden("this export was started by someone else")
    access.details.update({"export": export_id, "file": name})
    return FileResponse(manager.file_path(export_id, name), media_type="application/fhir+ndjson",
                        filename=name, headers={"Cache-Control": "no-store"})
