"""Records retention in the workbench: the review of records past retention, legal holds, and
destruction with its certificate.

HIM technicians, privacy officers and administrators see the review; technicians and
administrators place and release holds and destroy records (the role matrix gives privacy
officers no writes). Destruction asks the user to type the patient's MRN; each write and its
audit entry commit in one transaction.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from chartkeeper.api.auth import access_of
from chartkeeper.chart.packet import human_name, medical_record_number
from chartkeeper.chart.retention import (
    CERTIFICATE,
    RetentionRules,
    active_holds,
    certificates,
    destroy,
    load_retention_rules,
    past_retention,
    place_hold,
    release_hold,
)
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Resource, Txn, new_id
from chartkeeper.web.chart import document_text
from chartkeeper.web.pages import (
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    audited,
    patients_by_id,
    read_form,
    render,
    require_role,
    store_of,
)

router = APIRouter(include_in_schema=False)
REVIEWERS = (Role.him_technician, Role.privacy_officer, Role.administrator)
KEEPERS = (Role.him_technician, Role.administrator)  # place and release holds, destroy
PAGE_SIZE = 50
METHODS = (
    "Deletion from the electronic record store",
    "Deletion from the electronic record store; paper record shredded",
    "Deletion from the electronic record store; paper record incinerated",
    "Deletion from the electronic record store; paper record pulped",
)


def site_retention_rules(request: Request) -> RetentionRules:
    """The site's retention schedule (``CHARTKEEPER_RETENTION_RULES``), else the defaults."""
    path = request.app.state.settings.retention_rules
    return load_retention_rules(Path(path) if path else None)


@router.get("/retention", dependencies=[Depends(PAGE_SEARCH)])
def review(request: Request, page: int = 1, mrn: str = "") -> Response:
    access = access_of(request)
    require_role(access, *REVIEWERS)
    grant = access.permit("Patient", "s")
    access.permit("DocumentReference", "s")
    access.target("Patient")
    access.details["page"] = "records retention"
    if page < 1:
        raise InvalidRequest(f"page must be at least 1, got {page}")
    store = store_of(request)
    today = date.today()
    guard = access.record_guard()
    items = [i for i in past_retention(store, site_retention_rules(request), today, PAGE_SIZE,
                                       (page - 1) * PAGE_SIZE) if guard.visible(i.patient, grant)]
    with store.read() as txn:
        holds = active_holds(txn, 200)
        held = patients_by_id(txn, {h.patient_id for h in holds})
        found = certificates(txn, mrn)
    shown = {k: v for k, v in held.items() if guard.visible(v, grant)}
    return render(request, "retention.html", {
        "items": items, "page": page, "page_size": PAGE_SIZE, "today": today,
        "holds": [h for h in holds if h.patient_id in shown],
        "names": {k: human_name(v) for k, v in shown.items()},
        "mrns": {k: medical_record_number(v) for k, v in shown.items()},
        "certificates": found, "mrn": mrn, "methods": METHODS,
        "can_keep": access.who().role in KEEPERS, "done": request.query_params.get("done", "")})


def _find_patient(txn: Txn, wanted: str) -> Resource:
    """The Patient with id ``wanted``, else the one whose identifier (an MRN) it is."""
    wanted = wanted.strip()
    if not wanted:
        raise InvalidRequest("enter the patient's MRN (or record id) to place the hold on")
    try:
        return txn.read("Patient", wanted)
    except (NotFound, Gone):
        pass
    matches = txn.search_params("Patient", [("identifier", wanted), ("_count", "2")]).matches
    if len(matches) != 1:
        raise InvalidRequest(f"{'no patient' if not matches else 'more than one patient'} has "
                             f"the MRN or record id {wanted[:64]!r}")
    return matches[0]


@router.post("/retention/holds",
             dependencies=[Depends(PageRule("page-legal-hold", AuditAction.CREATE))])
async def place(request: Request) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *KEEPERS)
    grant = access.permit("Flag", "c")
    access.target("Flag")
    access.details["change"] = "legal hold placed"
    store = store_of(request)

    def work() -> None:
        with store.read() as txn:
            patient = _find_patient(txn, fields.get("patient", ""))
        patient_id = str(patient["id"])
        access.patients.add(patient_id)
        access.record_guard().check(patient, grant, f"Patient/{patient_id}")
        place_hold(store, patient_id, fields.get("matter", ""), access.who().user_id,
                   datetime.now(UTC), before_commit=audited(request, access, 201))

    await run_in_threadpool(work)
    return RedirectResponse("/retention?done=hold-placed", status_code=303)


@router.post("/retention/holds/{flag_id}/release",
             dependencies=[Depends(PageRule("page-legal-hold-release", AuditAction.UPDATE))])
async def release(request: Request, flag_id: str) -> Response:
    access = access_of(request)
    await read_form(request)
    require_role(access, *KEEPERS)
    grant = access.permit("Flag", "u")
    access.target("Flag", flag_id)
    access.details["change"] = "legal hold released"
    store = store_of(request)

    def work() -> None:
        with store.read() as txn:
            try:
                flag = txn.read("Flag", flag_id)
            except (NotFound, Gone):
                raise NotFound(f"Flag/{flag_id} is not a legal hold") from None
        access.record_guard().check(flag, grant, f"Flag/{flag_id}")
        release_hold(store, flag_id, access.who().user_id, datetime.now(UTC),
                     before_commit=audited(request, access, 200))

    await run_in_threadpool(work)
    return RedirectResponse("/retention?done=hold-released", status_code=303)


@router.post("/retention/patients/{patient_id}/destroy",
             dependencies=[Depends(PageRule("page-destroy-record", AuditAction.DELETE))])
async def destroy_record(request: Request, patient_id: str) -> Response:
    access = access_of(request)
    access.target("Patient", patient_id)
    access.patients.add(patient_id)  # refused or not, the trail names whose record it was
    fields = await read_form(request)
    require_role(access, *KEEPERS)
    grant = access.permit("Patient", "d")
    access.details["change"] = "record destroyed"
    method = fields.get("method", "")
    if method not in METHODS:
        raise InvalidRequest("choose the method of destruction from the list")
    store = store_of(request)
    rules = site_retention_rules(request)

    def work() -> str:
        with store.read() as txn:
            patient = txn.read("Patient", patient_id)
        access.record_guard().check(patient, grant, f"Patient/{patient_id}")
        expected = medical_record_number(patient) or patient_id
        if fields.get("confirm", "").strip() != expected:
            what = "record id" if expected == patient_id else "MRN"
            raise InvalidRequest(f"to confirm the destruction, type the patient's {what} in "
                                 "the confirmation field")
        certificate_id = new_id()
        access.details["certificate"] = f"DocumentReference/{certificate_id}"
        destroy(store, patient_id, rules, date.today(), access.who().user_id, method,
                before_commit=audited(request, access, 200),
                certificate_id=certificate_id)
        return certificate_id

    certificate_id = await run_in_threadpool(work)
    return RedirectResponse(f"/retention/certificates/{certificate_id}", status_code=303)


@router.get("/retention/certificates/{document_id}", dependencies=[Depends(PAGE_READ)])
def certificate(request: Request, document_id: str) -> Response:
    access = access_of(request)
    require_role(access, *REVIEWERS)
    grant = access.permit("DocumentReference", "r")
    access.target("DocumentReference", document_id)
    access.details["page"] = "certificate of destruction"
    with store_of(request).read() as txn:
        document = txn.read("DocumentReference", document_id)
    codings = (document.get("type") or {}).get("coding") or []
    if not any(c.get("code") == CERTIFICATE["code"] and c.get("system") == CERTIFICATE["system"]
               for c in codings):
        raise NotFound(f"DocumentReference/{document_id} is not a certificate of destruction")
    access.record_guard().check(document, grant, f"DocumentReference/{document_id}")
    return render(request, "retention_certificate.html", {
        "document": document, "text": document_text(document)[1]})
