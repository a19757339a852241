"""Record completion in the workbench: the HIM dashboard and deficiency worklist, assignment,
and the physician's own deficiencies, signed off from the document page.

Figures on the dashboard come from the open deficiency Tasks (fast at any size); "Run the
analysis" checks every discharged record against the site's rules, brings the Tasks up to
date and shows the Joint Commission delinquency rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from chartkeeper.api.auth import RequestAccess, access_of
from chartkeeper.chart.completion.analysis import age_band
from chartkeeper.chart.completion.rules import CompletionRules, load_rules
from chartkeeper.chart.completion.scan import reference_key
from chartkeeper.chart.completion.service import (
    analyze,
    assign_task,
    completion_summary,
    open_deficiency_tasks,
    physician_names,
    sync_tasks,
)
from chartkeeper.chart.completion.summary import BANDS
from chartkeeper.chart.completion.tasks import write_missing_document
from chartkeeper.chart.signing import SigningRefused, add_addendum, sign_document
from chartkeeper.security.access import Forbidden
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.web.chart import human_name
from chartkeeper.web.pages import (
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    audited,
    guarded_read,
    my_practitioner,
    patient_document,
    patients_by_id,
    read_form,
    render,
    require_role,
    store_of,
)

router = APIRouter(include_in_schema=False)
PAGE_WRITE = PageRule("page-write", AuditAction.UPDATE)
HIM_ROLES = (Role.him_technician, Role.administrator)
LIST_LIMIT = 500


@dataclass
class OpenTask:
    """One open deficiency as the worklist shows it."""

    task: dict[str, Any]
    code: str
    title: str
    patient: str
    focus: str
    owner: str
    due: date | None
    days_since_discharge: int | None
    band: str
    delinquent: bool


def site_rules(request: Request) -> CompletionRules:
    path = request.app.state.settings.completion_rules
    return load_rules(Path(path)) if path else CompletionRules()


def ref(value: Any) -> str:
    """``Type/id`` of a Reference, or '' (display-only or missing)."""
    return reference_key(value) or ""


def open_tasks(request: Request, access: RequestAccess, owner: str | None = None
               ) -> list[OpenTask]:
    """The open deficiency Tasks the user may see (newest discharge first)."""
    rules = site_rules(request)
    today = date.today()
    grant = access.permit("Task", "s")
    guard = access.record_guard()
    rows = []
    for task in open_deficiency_tasks(store_of(request)):
        if owner is not None and ref(task.get("owner")) != owner:
            continue
        if not guard.visible(task, grant):
            continue
        due_text = ((task.get("restriction") or {}).get("period") or {}).get("end")
        due = date.fromisoformat(due_text[:10]) if due_text else None
        days = ((today - (due - timedelta(days=rules.delinquency.threshold_days))).days
                if due else None)
        coding = (task.get("code") or {}).get("coding") or [{}]
        rows.append(OpenTask(task, str(coding[0].get("code", "")),
                             str((task.get("code") or {}).get("text", "")),
                             ref(task.get("for")), ref(task.get("focus")),
                             ref(task.get("owner")), due, days,
                             age_band(days) if days is not None else "",
                             bool(due and today > due)))
    rows.sort(key=lambda r: (r.days_since_discharge or 0), reverse=True)
    return rows


def _patient_names(store: Store, refs: set[str]) -> dict[str, str]:
    with store.read() as txn:
        found = patients_by_id(txn, (r.partition("/")[2] for r in refs
                                     if r.startswith("Patient/")))
    return {f"Patient/{pid}": human_name(patient) for pid, patient in found.items()}


def _worklist_context(request: Request, rows: list[OpenTask]) -> dict[str, Any]:
    store = store_of(request)
    shown = rows[:LIST_LIMIT]
    physicians = physician_names(store, {r.owner for r in rows if r.owner})
    by_physician: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_physician.setdefault(row.owner or "unassigned", dict.fromkeys(BANDS, 0))
        if row.band:
            counts[row.band] += 1
    return {"rows": shown, "total": len(rows), "physicians": physicians,
            "patients": _patient_names(store, {r.patient for r in shown}),
            "bands": BANDS, "by_physician": by_physician,
            "delinquent": sum(r.delinquent for r in rows)}


# ------------------------------------------------------------------------------- HIM side
@router.get("/completion", dependencies=[Depends(PAGE_SEARCH)])
def completion(request: Request, physician: str = "") -> Response:
    access = access_of(request)
    require_role(access, *HIM_ROLES, Role.privacy_officer)
    access.target("Task")
    access.details["page"] = "record completion"
    rows = open_tasks(request, access)
    if physician:
        rows = [r for r in rows if r.owner == physician]
    context = _worklist_context(request, rows)
    context.update(physician=physician, summary=None, sync=None, doctors=_doctors(request))
    return render(request, "completion.html", context)


def _doctors(request: Request) -> list[tuple[str, str]]:
    """(reference, name) of the practitioners a deficiency can be assigned to, by name."""
    with store_of(request).read() as txn:
        doctors = txn.search_params("Practitioner", [("_count", "500")]).matches
    names = physician_names(store_of(request), {f"Practitioner/{d['id']}" for d in doctors})
    return sorted(names.items(), key=lambda item: item[1])


@router.post("/completion/run", dependencies=[Depends(PageRule("page-completion-run",
                                                                   AuditAction.UPDATE))])
async def run_analysis(request: Request) -> Response:
    access = access_of(request)
    await read_form(request)
    require_role(access, *HIM_ROLES)
    access.permit("Task", "u")
    access.target("Task")
    access.details["page"] = "record completion analysis"
    rules = site_rules(request)
    store = store_of(request)
    today = date.today()

    def work() -> tuple[Any, Any]:
        deficiencies = analyze(store, rules, today)
        return sync_tasks(store, deficiencies, today, rules), completion_summary(
            store, today, rules)

    sync, summary = await run_in_threadpool(work)
    access.details["tasks"] = {k: v for k, v in vars(sync).items() if v}
    rows = open_tasks(request, access)
    context = _worklist_context(request, rows)
    context.update(physician="", summary=summary, sync=sync, doctors=_doctors(request))
    return render(request, "completion.html", context)


@router.post("/deficiencies/{task_id}/assign", dependencies=[Depends(PAGE_WRITE)])
async def assign(request: Request, task_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *HIM_ROLES)
    access.permit("Task", "u")
    access.target("Task", task_id)
    practitioner = fields.get("practitioner", "").removeprefix("Practitioner/")
    if not practitioner:
        raise InvalidRequest("choose the physician to assign the deficiency to")
    store = store_of(request)

    def work() -> dict[str, Any]:
        guarded_read(access, store, "Task", task_id, "u")
        return assign_task(store, task_id, practitioner, access.who().user_id,
                           audited(request, access, 200))

    task = await run_in_threadpool(work)
    access.details["assigned"] = ref(task.get("owner"))
    return RedirectResponse("/completion?assigned=1", status_code=303)


# ------------------------------------------------------------------------- physician side
@router.get("/deficiencies", dependencies=[Depends(PAGE_SEARCH)])
def my_deficiencies(request: Request) -> Response:
    access = access_of(request)
    practitioner = my_practitioner(request, access)
    access.target("Task")
    access.details["page"] = "my deficiencies"
    rows = open_tasks(request, access, owner=f"Practitioner/{practitioner}")
    context = _worklist_context(request, rows)
    return render(request, "deficiencies.html", context)


@router.get("/deficiencies/{task_id}/write", dependencies=[Depends(PAGE_READ)])
def write_form(request: Request, task_id: str) -> Response:
    """The form on which a physician writes the document a deficiency asks for."""
    access = access_of(request)
    my_practitioner(request, access)
    access.target("Task", task_id)
    task = guarded_read(access, store_of(request), "Task", task_id)
    access.patients.add(ref(task.get("for")).partition("/")[2])
    return render(request, "write_document.html", {"task": task})


@router.post("/deficiencies/{task_id}/write", dependencies=[Depends(PageRule(
    "page-write-document", AuditAction.CREATE))])
async def write_document(request: Request, task_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    practitioner = my_practitioner(request, access)
    access.permit("DocumentReference", "c")
    access.target("Task", task_id)
    access.details["change"] = "document written"
    store = store_of(request)

    def work() -> str:
        task = guarded_read(access, store, "Task", task_id, "u")
        access.patients.add(ref(task.get("for")).partition("/")[2])
        return write_missing_document(store, task_id, practitioner, fields.get("text", ""),
                                      site_rules(request), audited(request, access, 201))

    reference = await run_in_threadpool(work)
    access.details["document"] = reference
    return RedirectResponse("/deficiencies?written=1", status_code=303)


@router.post("/patients/{patient_id}/documents/{document_id}/sign",
             dependencies=[Depends(PAGE_WRITE)])
async def sign(request: Request, patient_id: str, document_id: str) -> Response:
    access = access_of(request)
    await read_form(request)
    practitioner = my_practitioner(request, access)
    access.permit("DocumentReference", "u")
    access.target("DocumentReference", document_id)
    access.patients.add(patient_id)
    access.details["change"] = "sign"
    store = store_of(request)

    def work() -> None:
        patient_document(access, store, patient_id, document_id, "u")
        with store.read() as txn:
            assigned = {ref(t.get("owner")) for t in txn.search_params("Task", [
                ("focus", f"DocumentReference/{document_id}"), ("_count", "20")]).matches}
        sign_document(store, document_id, practitioner, allowed=assigned,
                      before_commit=audited(request, access, 200))

    try:
        await run_in_threadpool(work)
    except SigningRefused as exc:
        raise Forbidden(exc.diagnostics) from None
    return RedirectResponse(f"/patients/{patient_id}/documents/{document_id}?signed=1",
                            status_code=303)


@router.post("/patients/{patient_id}/documents/{document_id}/addendum",
             dependencies=[Depends(PageRule("page-addendum", AuditAction.CREATE))])
async def addendum(request: Request, patient_id: str, document_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    practitioner = my_practitioner(request, access)
    access.permit("DocumentReference", "c")
    access.target("DocumentReference", document_id)
    access.patients.add(patient_id)
    access.details["change"] = "addendum"
    store = store_of(request)

    def work() -> str:
        patient_document(access, store, patient_id, document_id, "r")
        return add_addendum(store, document_id, practitioner, fields.get("text", ""),
                            before_commit=audited(request, access, 201))

    reference = await run_in_threadpool(work)
    return RedirectResponse(f"/patients/{patient_id}/documents/{reference.split('/')[1]}",
                            status_code=303)

