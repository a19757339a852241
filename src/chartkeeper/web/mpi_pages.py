"""The master patient index in the workbench: the duplicate review queue with the data-quality
summary, one pair side by side with the evidence and the decision (merge, link or not a
duplicate), the history of merges and links with their undo, and the overlay check.

Every decision is made by the signed-in HIM technician or administrator with a stated reason,
recorded on the decision's Provenance, and audited inside the decision's transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from chartkeeper.api.auth import RequestAccess, access_of
from chartkeeper.mpi.history import DecisionRow, recent_decisions
from chartkeeper.mpi.merge import Decider, DecisionRefused, undo_of
from chartkeeper.mpi.quality import (
    OVERLAY_STEPS,
    OverlayRisk,
    age_in_days,
    duplicate_rate,
    overlay_risks,
    queue_age,
)
from chartkeeper.mpi.service import (
    VERDICTS,
    Review,
    decide,
    get_review,
    open_reviews,
    undo_decision,
)
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest
from chartkeeper.store.service import now_instant
from chartkeeper.web.chart import human_name, masked
from chartkeeper.web.jobs import Progress, runner_of
from chartkeeper.web.pages import (
    PAGE,
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    audited,
    guarded_read,
    patients_by_id,
    read_form,
    render,
    require_role,
    store_of,
)

router = APIRouter(include_in_schema=False)
MPI_ROLES = (Role.him_technician, Role.administrator)
PAGE_DECIDE = PageRule("page-mpi-decide", AuditAction.UPDATE)
QUEUE_PAGE = 25
HISTORY_PAGE = 50
OVERLAY_LIMIT = 200
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
MRN_CODE = "MR"
# The compared fields (mpi/dedupe.py's columns) in the order the review page shows them.
FIELD_LABELS = {"first_name": "First name", "surname": "Last name", "dob": "Birth date",
                "sex": "Sex", "street": "Street address", "postcode": "Postal code",
                "phone": "Phone", "ssn": "Social Security number"}
ACTIVITY_WORDS = {"merge": "merged", "link": "linked", "unmerge": "merge undone",
                  "unlink": "link undone"}


# -------------------------------------------------------------------------- what is shown
@dataclass
class Registration:
    """One patient record as the review page shows it, field by field."""

    id: str
    name: str
    values: dict[str, str]  # compared field -> what the record says
    identifiers: list[tuple[str, str]]  # (label, value; SSN masked) other than the SSN
    status: str


def _registration(patient: dict[str, Any]) -> Registration:
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    address = (patient.get("address") or [{}])[0]
    phone = next((str(t.get("value", "")) for t in patient.get("telecom") or []
                  if t.get("system") == "phone"), "")
    ssn = next((i for i in patient.get("identifier") or [] if i.get("system") == SSN_SYSTEM),
               None)
    city = ", ".join(p for p in (address.get("city", ""), address.get("state", "")) if p)
    values = {
        "first_name": " ".join(name.get("given") or []), "surname": str(name.get("family", "")),
        "dob": str(patient.get("birthDate", "")), "sex": str(patient.get("gender", "")),
        "street": " ".join([*(address.get("line") or []), city]).strip(),
        "postcode": str(address.get("postalCode", "")), "phone": phone,
        "ssn": masked(ssn) if ssn else ""}
    identifiers = [(_identifier_label(i), masked(i)) for i in patient.get("identifier") or []
                   if i.get("system") != SSN_SYSTEM]
    merged_into = next((str(lk["other"].get("reference", "")) for lk in patient.get("link") or []
                        if lk.get("type") == "replaced-by"), "")
    status = (f"merged into {merged_into}" if merged_into
              else "inactive" if patient.get("active") is False else "active")
    return Registration(str(patient["id"]), human_name(patient), values, identifiers, status)


def _identifier_label(identifier: dict[str, Any]) -> str:
    kind = identifier.get("type") or {}
    codes = [c.get("code") for c in kind.get("coding") or []]
    if MRN_CODE in codes:
        return "Medical record number"
    return str(kind.get("text") or identifier.get("system") or "Identifier")


@dataclass
class EvidenceRow:
    label: str
    left: str
    right: str
    level: str = ""
    weight: float | None = None


def _evidence_rows(review: Review, left: Registration, right: Registration
                   ) -> list[EvidenceRow]:
    """The compared fields side by side, each with the agreement level and match weight the
    model gave it (fields the model did not compare are shown without)."""
    evidence = {name: (level, weight) for name, level, weight in review.evidence}
    rows = []
    for name, label in FIELD_LABELS.items():
        level, weight = evidence.pop(name, ("", None))
        rows.append(EvidenceRow(label, left.values.get(name, ""), right.values.get(name, ""),
                                level, weight))
    rows += [EvidenceRow(name, "", "", level, weight) for name, (level, weight)
             in evidence.items()]
    return rows


def _page_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"page '{value[:20]}' is not a page number") from None
    if not 1 <= number <= 100_000:
        raise InvalidRequest(f"page {number} is out of range")
    return number


def _decider(access: RequestAccess, reason: str) -> Decider:
    principal = access.who()
    if not reason.strip():
        raise InvalidRequest("give the reason for the decision: it is recorded with it")
    return Decider(principal.user_id, principal.role.value.replace("_", "-"), reason.strip())


# ------------------------------------------------------------------------------ the queue
@dataclass
class QueueRow:
    review: Review
    age_days: int | None
    names: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, born)


@router.get("/mpi", dependencies=[Depends(PAGE_SEARCH)])
def queue(request: Request, page: str = "1") -> Response:
    access = access_of(request)
    require_role(access, *MPI_ROLES)
    access.target("Task")
    access.details["page"] = "duplicate review queue"
    number = _page_number(page)
    store = store_of(request)
    task_grant, patient_grant = access.permit("Task", "s"), access.permit("Patient", "s")
    guard = access.record_guard()
    with store.read() as txn:
        reviews, total = open_reviews(txn, count=QUEUE_PAGE, offset=(number - 1) * QUEUE_PAGE)
        patients = patients_by_id(txn, (p for r in reviews for p in (r.left, r.right)))
        age = queue_age(txn)
    rate = duplicate_rate(store)
    rows, withheld = [], 0
    for review in reviews:
        if not guard.visible(review.task, task_grant):
            withheld += 1
            continue
        row = QueueRow(review, age_in_days(str(review.task.get("authoredOn", "")), age.as_of))
        for patient_id in (review.left, review.right):
            patient = patients.get(patient_id)
            if patient is not None and guard.visible(patient, patient_grant):
                row.names.append((patient_id, human_name(patient),
                                  str(patient.get("birthDate", ""))))
            else:
                row.names.append((patient_id, "restricted or deleted record", ""))
        rows.append(row)
    return render(request, "mpi_queue.html", {
        "rows": rows, "total": total, "page": number, "withheld": withheld,
        "pages": max((total + QUEUE_PAGE - 1) // QUEUE_PAGE, 1), "rate": rate, "age": age})


# ----------------------------------------------------------------------------- one review
def _review_context(access: RequestAccess, store: Store, task_id: str) -> dict[str, Any]:
    """Everything the review page shows, each record shown to the RecordGuard first."""
    access.target("Task", task_id)
    with store.read() as txn:
        review = get_review(txn, task_id)
    access.patients.update((review.left, review.right))
    access.record_guard().check(review.task, access.permit("Task", "r"), f"Task/{task_id}")
    left = _registration(guarded_read(access, store, "Patient", review.left))
    right = _registration(guarded_read(access, store, "Patient", review.right))
    decided_by = (review.task.get("owner") or {}).get("display", "")
    notes = review.task.get("note") or []
    provenance = next((str(o["valueReference"]["reference"]).removeprefix("Provenance/")
                       for o in review.task.get("output") or []
                       if (o.get("type") or {}).get("text") == "provenance"), None)
    undone = None
    if provenance:
        with store.read() as txn:
            undone = undo_of(txn, [provenance]).get(provenance)
    return {
        "review": review, "task": review.task, "left": left, "right": right,
        "rows": _evidence_rows(review, left, right),
        "verdict": VERDICTS.get(review.verdict or "", ""), "decided_by": decided_by,
        "decision_note": notes[-1] if notes else None, "provenance": provenance,
        "undone": undone, "error": None, "reason": "", "decision": ""}


@router.get("/mpi/reviews/{task_id}", dependencies=[Depends(PAGE_READ)])
def review_page(request: Request, task_id: str) -> Response:
    access = access_of(request)
    require_role(access, *MPI_ROLES)
    access.details["page"] = "duplicate review"
    context = _review_context(access, store_of(request), task_id)
    return render(request, "mpi_review.html", context)


@router.post("/mpi/reviews/{task_id}/decision", dependencies=[Depends(PAGE_DECIDE)])
async def decision(request: Request, task_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *MPI_ROLES)
    access.permit("Task", "u")
    access.permit("Patient", "u")
    access.details["change"] = "duplicate review decided"
    store = store_of(request)
    verdict, _, survivor = fields.get("decision", "").partition(":")
    reason = fields.get("reason", "")

    def work() -> str:
        _review_context(access, store, task_id)  # the Task and both patients, guarded
        if verdict not in VERDICTS:
            raise InvalidRequest("choose a decision: merge (and which record stays), link, "
                                 "or not a duplicate")
        decider = _decider(access, reason)
        access.details["decision"] = verdict
        with store.write() as txn:
            outcome = decide(txn, task_id, verdict,  # type: ignore[arg-type]
                             decider, survivor=survivor or None,
                             mode=request.app.state.settings.mpi_merge_mode)
            if outcome is not None:
                access.details["provenance"] = outcome.provenance_id
                access.details["versions"] = outcome.targets[:50]
            audited(request, access, 200)(txn)
        return VERDICTS[verdict]

    try:
        await run_in_threadpool(work)
    except (InvalidRequest, DecisionRefused) as exc:
        # The form again, with what was wrong; nothing was written.
        context = await run_in_threadpool(_review_context, access, store, task_id)
        context.update(error=exc.diagnostics, reason=reason, decision=fields.get("decision"))
        return render(request, "mpi_review.html", context, exc.status)
    return RedirectResponse(f"/mpi/reviews/{task_id}", status_code=303)


# ---------------------------------------------------------------------------- the history
def _history_context(request: Request, access: RequestAccess, number: int) -> dict[str, Any]:
    store = store_of(request)
    guard = access.record_guard()
    grant, patient_grant = access.permit("Provenance", "s"), access.permit("Patient", "s")
    with store.read() as txn:
        decisions, more = recent_decisions(txn, HISTORY_PAGE, (number - 1) * HISTORY_PAGE)
        patients = patients_by_id(txn, (p for d in decisions for p in d.patients))
    shown: list[DecisionRow] = []
    withheld = 0
    for row in decisions:
        if guard.visible(row.provenance, grant):
            shown.append(row)
        else:
            withheld += 1
    names = {pid: human_name(patient) for pid, patient in patients.items()
             if guard.visible(patient, patient_grant)}
    return {"decisions": shown, "names": names, "withheld": withheld, "page": number,
            "more": more, "words": ACTIVITY_WORDS, "error": None, "undone": None}


@router.get("/mpi/history", dependencies=[Depends(PAGE_SEARCH)])
def history(request: Request, page: str = "1", undone: str = "") -> Response:
    access = access_of(request)
    require_role(access, *MPI_ROLES)
    access.target("Provenance")
    access.details["page"] = "merge and link history"
    context = _history_context(request, access, _page_number(page))
    context["undone"] = ACTIVITY_WORDS.get(undone)
    return render(request, "mpi_history.html", context)


@router.post("/mpi/history/{provenance_id}/undo", dependencies=[Depends(PAGE_DECIDE)])
async def history_undo(request: Request, provenance_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *MPI_ROLES)
    access.permit("Provenance", "c")
    access.permit("Patient", "u")
    access.target("Provenance", provenance_id)
    access.details["change"] = "merge or link undone"
    store = store_of(request)

    def work() -> str:
        provenance = guarded_read(access, store, "Provenance", provenance_id)
        access.patients.update(
            str(t.get("reference", "")).split("/")[1] for t in provenance.get("target") or []
            if str(t.get("reference", "")).startswith("Patient/"))
        decider = _decider(access, fields.get("reason", ""))
        with store.write() as txn:
            outcome = undo_decision(txn, provenance_id, decider)
            access.details.update(decision=outcome.activity, undone=provenance_id,
                                  provenance=outcome.provenance_id,
                                  versions=outcome.targets[:50])
            audited(request, access, 200)(txn)
        return outcome.activity

    try:
        activity = await run_in_threadpool(work)
    except (InvalidRequest, DecisionRefused) as exc:
        context = await run_in_threadpool(_history_context, request, access, 1)
        context["error"] = exc.diagnostics
        return render(request, "mpi_history.html", context, exc.status)
    return RedirectResponse(f"/mpi/history?undone={activity}", status_code=303)


# ------------------------------------------------------------------------- overlay check
@dataclass
class OverlayRow:
    risk: OverlayRisk
    name: str
    other_name: str


@dataclass
class OverlayCheck:
    """A finished overlay check, kept in memory for the user who ran it (like its job)."""

    owner: str
    risks: list[OverlayRisk]
    finished: str


def _overlay_checks(request: Request) -> dict[str, OverlayCheck]:
    checks: dict[str, OverlayCheck] | None = getattr(request.app.state, "overlay_checks", None)
    if checks is None:
        checks = request.app.state.overlay_checks = {}
    return checks


@router.post("/mpi/overlays", dependencies=[Depends(PAGE)])
async def start_overlay_check(request: Request) -> Response:
    """Start the overlay check (a scan of the whole index) as a job with its progress."""
    access = access_of(request)
    await read_form(request)
    require_role(access, *MPI_ROLES)
    access.permit("Patient", "s")
    access.permit("Observation", "s")
    store, checks = store_of(request), _overlay_checks(request)
    owner = access.who().user_id

    def work(progress: Progress) -> tuple[str, str]:
        steps = len(OVERLAY_STEPS)
        risks = overlay_risks(store, OVERLAY_LIMIT, on_step=lambda n, name: progress(
            n, steps, f"checking {name}"))
        for stale in [k for k, check in checks.items() if check.owner == owner]:
            del checks[stale]  # a user keeps their latest check only
        key = secrets.token_urlsafe(12)
        checks[key] = OverlayCheck(owner, risks, now_instant())
        return f"/mpi/overlays?check={key}", f"{len(risks)} findings"

    job = runner_of(request).start(owner, "Overlay check", work)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/mpi/overlays", dependencies=[Depends(PAGE_SEARCH)])
def overlays(request: Request, check: str = "") -> Response:
    access = access_of(request)
    require_role(access, *MPI_ROLES)
    access.target("Patient")
    access.details["page"] = "overlay check"
    grant = access.permit("Patient", "s")
    access.permit("Observation", "s")
    found = _overlay_checks(request).get(check) if check else None
    if found is None or found.owner != access.who().user_id:
        access.action = None  # the form alone shows no one: nothing to audit
        return render(request, "mpi_overlays.html", {
            "rows": [], "checked": None, "withheld": 0, "limit": OVERLAY_LIMIT,
            "capped": False, "steps": OVERLAY_STEPS, "expired": bool(check)})
    risks = found.risks
    with store_of(request).read() as txn:
        patients = patients_by_id(txn, (p for r in risks for p in (r.patient, r.other) if p))
    guard = access.record_guard()
    visible = {pid for pid, patient in patients.items() if guard.visible(patient, grant)}
    rows = [OverlayRow(r, human_name(patients[r.patient]),
                       human_name(patients[r.other]) if r.other else "")
            for r in risks
            if r.patient in visible and (r.other is None or r.other in visible)]
    return render(request, "mpi_overlays.html", {
        "rows": rows, "checked": found.finished, "withheld": len(risks) - len(rows),
        "limit": OVERLAY_LIMIT, "capped": len(risks) >= OVERLAY_LIMIT,
        "steps": OVERLAY_STEPS, "expired": False})
