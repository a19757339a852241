"""Import files from the workbench: FHIR JSON, Bundles and NDJSON, HL7 v2 and C-CDA files
uploaded by HIM, imported in the background with the progress shown in the page, exactly as
``chartkeeper import`` does (whole or not at all, Provenance for each, nothing twice)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePath

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from chartkeeper.api.auth import access_of
from chartkeeper.ingest.files import SUFFIXES, import_any
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.web.jobs import Progress, runner_of
from chartkeeper.web.pages import PAGE, PageRule, read_upload, render, require_role, store_of

router = APIRouter(include_in_schema=False)
IMPORT_ROLES = (Role.him_technician, Role.administrator)
MAX_FILES = 200


@router.get("/imports", dependencies=[Depends(PAGE)])
def import_form(request: Request) -> Response:
    require_role(access_of(request), *IMPORT_ROLES)
    return render(request, "imports.html", {"suffixes": SUFFIXES,
                                            "limit": request.app.state.settings.max_body_bytes})


@router.post("/imports", dependencies=[Depends(PageRule("page-import", AuditAction.CREATE))])
async def start_import(request: Request) -> Response:
    access = access_of(request)
    settings = request.app.state.settings
    _fields, files = await read_upload(request, settings.max_body_bytes)
    require_role(access, *IMPORT_ROLES)
    access.permit("Patient", "c")
    files = [(name, data) for name, data in files if name or data]
    if not files:
        raise InvalidRequest("choose one or more files to import")
    if len(files) > MAX_FILES:
        raise InvalidRequest(f"import at most {MAX_FILES} files at a time")
    for name, _data in files:
        if PurePath(name).suffix not in SUFFIXES:
            raise InvalidRequest(f"{name}: not a file Chartkeeper imports (one of "
                                 f"{', '.join(SUFFIXES)})")
    access.details["files"] = len(files)
    uploads = settings.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(dir=uploads))
    paths = []
    for number, (name, data) in enumerate(files):
        path = folder / f"{number:03d}-{PurePath(name).name}"  # no directories from the client
        path.write_bytes(data)
        paths.append(path)
    store = store_of(request)

    def work(progress: Progress) -> tuple[str, str]:
        done = [0]

        def reached(_name: str) -> None:
            done[0] += 1
            progress(done[0], len(paths))

        try:
            progress(0, len(paths))
            total = import_any(store, paths, on_file=reached)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # uploaded records are not kept
        rejected = f", {total.rejected} rejected: " + "; ".join(total.problems[:5]) \
            if total.rejected else ""
        return ("/imports", f"{total.files} files: {total.created} created, {total.updated} "
                            f"updated, {total.skipped} imported before{rejected}")

    job = runner_of(request).start(access.who().user_id, "Import", work)
    access.details["job"] = job.id
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
