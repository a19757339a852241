"""Amendments at the patient's request (45 CFR 164.526) in the workbench: HIM records the
request against a document; a physician accepts it (the amendment is a signed document linked
to the original) or it is denied on a lawful ground; after a denial HIM records the patient's
statement of disagreement."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from chartkeeper.api.auth import RequestAccess, access_of
from chartkeeper.chart.amendments import (
    AMENDMENT_REQUEST,
    DENIAL_TEXT,
    HIM_TASK,
    INPUT_CHANGE,
    INPUT_REASON,
    accept_amendment,
    add_disagreement,
    deny_amendment,
    request_amendment,
    task_input,
)
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.web import chart as charts
from chartkeeper.web.completion_pages import ref
from chartkeeper.web.pages import (
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    audited,
    guarded_read,
    my_practitioner,
    patient_document,
    read_form,
    render,
    require_role,
    store_of,
)

router = APIRouter(include_in_schema=False)
PAGE_AMEND = PageRule("page-amend", AuditAction.UPDATE)
RECORDING_ROLES = (Role.him_technician, Role.privacy_officer)
OPEN = "requested,received,accepted,in-progress"


def _ref_id(value: Any) -> str:
    return ref(value).partition("/")[2]


def _checked_task(access: RequestAccess, store: Store, task_id: str) -> dict[str, Any]:
    task = guarded_read(access, store, "Task", task_id)
    access.patients.add(_ref_id(task.get("for")))
    access.target("Task", task_id)
    return task


@router.get("/amendments", dependencies=[Depends(PAGE_SEARCH)])
def queue(request: Request) -> Response:
    access = access_of(request)
    require_role(access, *RECORDING_ROLES, Role.physician)
    access.target("Task")
    access.details["page"] = "amendment requests"
    grant = access.permit("Task", "s")
    with store_of(request).read() as txn:
        tasks = txn.search_params("Task", [("code", f"{HIM_TASK}|{AMENDMENT_REQUEST}"),
                                           ("status", OPEN), ("_count", "200")]).matches
    guard = access.record_guard()
    shown = [t for t in tasks if guard.visible(t, grant)]
    shown.sort(key=lambda t: ((t.get("restriction") or {}).get("period") or {}).get("end", ""))
    return render(request, "amendments.html", {"tasks": shown})


@router.post("/patients/{patient_id}/documents/{document_id}/amendment-requests",
             dependencies=[Depends(PageRule("page-amendment-request", AuditAction.CREATE))])
async def new_request(request: Request, patient_id: str, document_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *RECORDING_ROLES)
    access.permit("Task", "c")
    access.target("DocumentReference", document_id)
    access.patients.add(patient_id)
    store = store_of(request)

    def work() -> str:
        patient_document(access, store, patient_id, document_id, "r")
        received = fields.get("received", "").strip()
        try:
            day = date.fromisoformat(received) if received else date.today()
        except ValueError:
            raise InvalidRequest(f"'{received}' is not a date (YYYY-MM-DD)") from None
        if day > date.today():
            raise InvalidRequest("the request cannot have been received in the future")
        return request_amendment(store, document_id, fields.get("requested_by", ""),
                                 fields.get("change", ""), fields.get("reason", ""), day,
                                 audited(request, access, 201))

    task_id = await run_in_threadpool(work)
    access.target("Task", task_id)
    return RedirectResponse(f"/amendments/{task_id}", status_code=303)


@router.get("/amendments/{task_id}", dependencies=[Depends(PAGE_READ)])
def request_page(request: Request, task_id: str) -> Response:
    access = access_of(request)
    require_role(access, *RECORDING_ROLES, Role.physician)
    access.details["page"] = "amendment request"
    store = store_of(request)
    task = _checked_task(access, store, task_id)
    document_id = _ref_id(task.get("focus"))
    with store.read() as txn:
        document = txn.read("DocumentReference", document_id)
    _content_type, text = charts.document_text(document)
    outputs = [str((o.get("valueReference") or {}).get("reference", ""))
               for o in task.get("output") or []]
    return render(request, "amendment.html", {
        "task": task, "document": document, "text": text,
        "patient_id": _ref_id(task.get("for")), "outputs": outputs,
        "change": task_input(task, INPUT_CHANGE), "reason": task_input(task, INPUT_REASON),
        "grounds": [(basis.value, words) for basis, words in DENIAL_TEXT.items()],
        "role": access.who().role.value})


@router.post("/amendments/{task_id}/accept", dependencies=[Depends(PAGE_AMEND)])
async def accept(request: Request, task_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    practitioner = my_practitioner(request, access)  # the amendment is signed by a clinician
    access.permit("DocumentReference", "c")
    access.details["change"] = "amendment accepted"
    store = store_of(request)

    def work() -> str:
        _checked_task(access, store, task_id)
        return accept_amendment(store, task_id, practitioner, fields.get("text", ""),
                                audited(request, access, 201))

    reference = await run_in_threadpool(work)
    access.details["amendment"] = reference
    return RedirectResponse(f"/amendments/{task_id}", status_code=303)


@router.post("/amendments/{task_id}/deny", dependencies=[Depends(PAGE_AMEND)])
async def deny(request: Request, task_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *RECORDING_ROLES, Role.physician)
    access.permit("Task", "u")
    access.details["change"] = "amendment denied"
    store = store_of(request)

    def work() -> None:
        _checked_task(access, store, task_id)
        deny_amendment(store, task_id, fields.get("basis", ""), fields.get("explanation", ""),
                       audited(request, access, 200))

    await run_in_threadpool(work)
    return RedirectResponse(f"/amendments/{task_id}", status_code=303)


@router.post("/amendments/{task_id}/disagreement", dependencies=[Depends(PAGE_AMEND)])
async def disagreement(request: Request, task_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *RECORDING_ROLES)
    access.permit("DocumentReference", "c")
    access.details["change"] = "statement of disagreement"
    store = store_of(request)

    def work() -> str:
        _checked_task(access, store, task_id)
        return add_disagreement(store, task_id, fields.get("statement", ""),
                                fields.get("filed_by", ""), audited(request, access, 201))

    await run_in_threadpool(work)
    return RedirectResponse(f"/amendments/{task_id}", status_code=303)
