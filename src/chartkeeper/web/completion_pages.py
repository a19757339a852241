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
from chartkeeper.security.practitioners import practitioner_of
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.web.pages import (
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    audited,
    patient_document,
    read_form,
    render,
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


def require_role(access: RequestAccess, *roles: Role) -> None:
    principal = access.who()
    if principal.role not in roles:
        names = ", ".join(r.value.replace("_", " ") for r in roles)
        raise Forbidden(f"this page is for: {names}")


def site_rules(request: Request) -> CompletionRules:
    path = request.app.state.settings.completion_rules
    return load_rules(Path(path)) if path else CompletionRules()


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _ref(value: Any) -> str:
    return str((value or {}).get("reference", "")).split("/_history/")[0]


def open_tasks(request: Request, access: RequestAccess, owner: str | None = None
               ) -> list[OpenTask]:
    """The open deficiency Tasks the user may see (newest discharge first)."""
    rules = site_rules(request)
    today = date.today()
    grant = access.permit("Task", "s")
    guard = access.record_guard()
    rows = []
    for task in open_deficiency_tasks(_store(request)):
        if owner is not None and _ref(task.get("owner")) != owner:
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
                             _ref(task.get("for")), _ref(task.get("focus")),
                             _ref(task.get("owner")), due, days,
                             age_band(days) if days is not None else "",
                             bool(due and today > due)))
    rows.sort(key=lambda r: (r.days_since_discharge or 0), reverse=True)
    return rows


def _patient_names(store: Store, refs: set[str]) -> dict[str, str]:
    from chartkeeper.web.chart import human_name

    ids = sorted(r.split("/", 1)[1] for r in refs if r.startswith("Patient/"))
    names: dict[str, str] = {}
    with store.read() as txn:
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            for patient in txn.search_params("Patient", [("_id", ",".join(chunk)),
                                                         ("_count", str(len(chunk)))]).matches:
                names[f"Patient/{patient['id']}"] = human_name(patient)
    return names


def _worklist_context(request: Request, rows: list[OpenTask]) -> dict[str, Any]:
    store = _store(request)
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
    with _store(request).read() as txn:
        doctors = txn.search_params("Practitioner", [("_count", "500")]).matches
    names = physician_names(_store(request), {f"Practitioner/{d['id']}" for d in doctors})
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
    store = _store(request)
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
    store = _store(request)
    def work() -> dict[str, Any]:
        with store.read() as txn:
            task = txn.read("Task", task_id)
        access.record_guard().check(task, access.permit("Task", "u"), f"Task/{task_id}")
        return assign_task(store, task_id, practitioner, access.who().user_id,
                           audited(request, access, 200))

    task = await run_in_threadpool(work)
    access.details["assigned"] = _ref(task.get("owner"))
    return RedirectResponse("/completion?assigned=1", status_code=303)


# ------------------------------------------------------------------------- physician side
def my_practitioner(request: Request, access: RequestAccess) -> str:
    """The Practitioner id of the signed-in physician (Forbidden when not linked)."""
    require_role(access, Role.physician)
    with _store(request).read() as txn:
        practitioner = practitioner_of(txn, access.who().user_id)
    if practitioner is None:
        raise Forbidden("your account is not linked to a Practitioner yet; ask an "
                        "administrator (chartkeeper users link-practitioner)")
    return practitioner


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
    with _store(request).read() as txn:
        task = txn.read("Task", task_id)
    access.record_guard().check(task, access.permit("Task", "r"), f"Task/{task_id}")
    access.patients.add(_ref(task.get("for")).partition("/")[2])
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
    store = _store(request)

    def work() -> str:
        with store.read() as txn:
            task = txn.read("Task", task_id)
        access.record_guard().check(task, access.permit("Task", "u"), f"Task/{task_id}")
        access.patients.add(_ref(task.get("for")).partition("/")[2])
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
    store = _store(request)

    def work() -> None:
        patient_document(access, store, patient_id, document_id, "u")
        with store.read() as txn:
            assigned = {_ref(t.get("owner")) for t in txn.search_params("Task", [
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
    store = _store(request)

    def work() -> str:
        patient_document(access, store, patient_id, document_id, "r")
        return add_addendum(store, document_id, practitioner, fields.get("text", ""),
                            before_commit=audited(request, access, 201))

    reference = await run_in_threadpool(work)
    return RedirectResponse(f"/patients/{patient_id}/documents/{reference.split('/')[1]}",
                            status_code=303)

