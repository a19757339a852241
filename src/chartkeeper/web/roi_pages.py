"""Release of information in the workbench: the request queue, a request with its
authorization check and the minimum-necessary preview, the release (packet built in the
background, its progress in the page), the packet, and the patient's accounting of
disclosures."""

from __future__ import annotations

import base64
from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from chartkeeper.api.auth import RequestAccess, access_of
from chartkeeper.chart.authorization import (
    CATEGORIES,
    PURPOSES,
    DateRange,
    Party,
    authorization_consent,
    authorizations_for,
    check_authorization,
    read_authorization,
    record_authorization,
)
from chartkeeper.chart.roi import (
    ReleaseRefused,
    create_request,
    get_request,
    list_requests,
    release,
    select_records,
)
from chartkeeper.chart.roi import Request as RoiRequest
from chartkeeper.security.access import Capability
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest, NotFound
from chartkeeper.web.chart import human_name
from chartkeeper.web.jobs import Progress, runner_of
from chartkeeper.web.pages import (
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    guarded_read,
    patients_by_id,
    read_form,
    render,
    require_role,
    store_of,
)

router = APIRouter(include_in_schema=False)
ROI_ROLES = (Role.roi_specialist, Role.him_technician)
PAGE_DISCLOSE = PageRule("page-disclose", AuditAction.DISCLOSURE)
PAGE_CREATE = PageRule("page-create", AuditAction.CREATE)
PAGE_PRINT = PageRule("page-print", AuditAction.PRINT)


def _date(value: str, what: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"the {what} '{value}' is not a date (YYYY-MM-DD)") from None


def _guarded_patient(access: RequestAccess, store: Store, patient_id: str) -> dict[str, Any]:
    access.patients.add(patient_id)
    return guarded_read(access, store, "Patient", patient_id)


# ------------------------------------------------------------------------------- the queue
@router.get("/roi", dependencies=[Depends(PAGE_SEARCH)])
def queue(request: Request) -> Response:
    access = access_of(request)
    require_role(access, *ROI_ROLES, Role.privacy_officer)
    access.target("Task")
    access.details["page"] = "release of information queue"
    store = store_of(request)
    guard = access.record_guard()
    grant = access.permit("Task", "s")
    requests = [r for r in list_requests(store) if r.status not in ("completed", "rejected",
                                                                      "cancelled")
                and guard.visible(r.task, grant)]
    with store.read() as txn:
        found = patients_by_id(txn, (r.patient_id for r in requests))
    names = {pid: human_name(found[pid]) if pid in found else pid
             for pid in (r.patient_id for r in requests)}
    return render(request, "roi_queue.html", {
        "requests": requests, "names": names, "purposes": sorted(PURPOSES.items()),
        "categories": sorted(CATEGORIES.items()), "today": date.today()})


@router.post("/roi", dependencies=[Depends(PAGE_CREATE)])
async def new_request(request: Request) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *ROI_ROLES)
    access.permit("Task", "c")
    access.target("Task")
    patient_id = fields.get("patient", "").strip()
    if not patient_id:
        raise InvalidRequest("name the patient (their record id)")
    store = store_of(request)
    requester = None
    if fields.get("requester_name", "").strip():
        requester = Party(fields["requester_name"].strip(), fields.get("requester_org", ""),
                          fields.get("requester_address", ""))

    def work() -> str:
        _guarded_patient(access, store, patient_id)
        start, end = _date(fields.get("from", ""), "first date"), _date(fields.get("to", ""),
                                                                         "last date")
        return create_request(
            store, patient_id, fields.get("purpose", ""), requester=requester,
            recipient=requester,
            record_types=[t.strip() for t in fields.get("record_types", "").split(",")
                          if t.strip()],
            dates=DateRange(start, end) if start or end else None,
            received=_date(fields.get("received", ""), "date received"),
            identity_verification=fields.get("identity", ""))

    request_id = await run_in_threadpool(work)
    access.target("Task", request_id)
    return RedirectResponse(f"/roi/{request_id}", status_code=303)


# ---------------------------------------------------------------------------- one request
@router.get("/roi/{request_id}", dependencies=[Depends(PAGE_READ)])
def request_page(request: Request, request_id: str) -> Response:
    access = access_of(request)
    require_role(access, *ROI_ROLES, Role.privacy_officer)
    access.target("Task", request_id)
    access.details["page"] = "release of information request"
    store = store_of(request)
    item = get_request(store, request_id)
    patient = _guarded_patient(access, store, item.patient_id)
    consents = authorizations_for(store, item.patient_id)
    chosen = request.query_params.get("authorization") or (consents[0]["id"] if consents
                                                             else "")
    consent = next((c for c in consents if c["id"] == chosen), None)
    problems = check_authorization(consent, item, date.today())
    selection = select_records(store, item, consent) if not problems else None
    return render(request, "roi_request.html", {
        "item": item, "patient": patient, "name": human_name(patient),
        "consents": consents, "consent": consent, "problems": problems,
        "selection": selection, "purposes": sorted(PURPOSES.items()),
        "categories": sorted(CATEGORIES.items())})


@router.post("/roi/{request_id}/authorizations", dependencies=[Depends(PAGE_CREATE)])
async def add_authorization(request: Request, request_id: str) -> Response:
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *ROI_ROLES)
    access.permit("Consent", "c")
    store = store_of(request)

    def work() -> str:
        item = get_request(store, request_id)
        _guarded_patient(access, store, item.patient_id)
        signed = _date(fields.get("signed", ""), "signature date")
        expires = _date(fields.get("expires", ""), "expiry date")
        if signed is None or expires is None:
            raise InvalidRequest("an authorization needs the date it was signed and its expiry")
        recipient = None
        if fields.get("recipient", "").strip():
            recipient = Party(fields["recipient"].strip(), fields.get("recipient_org", ""))
        consent = authorization_consent(
            item.patient_id, recipient, [p for p in fields.get("purposes", "").split(",")
                                         if p.strip()] or [item.purpose],
            signed=signed, expires=expires,
            verified_on=date.today() if fields.get("verified") == "yes" else None,
            record_types=[t.strip() for t in fields.get("record_types", "").split(",")
                          if t.strip()],
            sensitive=[c for c in CATEGORIES if fields.get(f"sensitive-{c}") == "yes"])
        return record_authorization(store, consent)

    consent_id = await run_in_threadpool(work)
    access.target("Consent", consent_id)
    return RedirectResponse(f"/roi/{request_id}?authorization={consent_id}", status_code=303)


@router.post("/roi/{request_id}/release", dependencies=[Depends(PAGE_DISCLOSE)])
async def start_release(request: Request, request_id: str) -> Response:
    """Check now (a refusal answers at once, naming each problem); build and store the
    packet in the background, its progress shown in the page."""
    access = access_of(request)
    fields = await read_form(request)
    require_role(access, *ROI_ROLES)
    access.who().require(Capability.disclosure_record)
    access.target("Task", request_id)
    store = store_of(request)
    consent_id = fields.get("authorization") or None
    item: RoiRequest = await run_in_threadpool(get_request, store, request_id)
    await run_in_threadpool(_guarded_patient, access, store, item.patient_id)
    user = access.who().user_id
    log = request.app.state.security.disclosures

    def work(progress: Progress) -> tuple[str, str]:
        released = release(store, log, request_id, consent_id, user, date.today(),
                           on_progress=progress)
        return (f"/roi/{request_id}/packet",
                f"Release packet ({len(released.selection.records)} records)")

    # The checks run before the job starts, so that a refusal is shown (and audited) now.
    consent = (await run_in_threadpool(read_authorization, store, consent_id)
               if consent_id else None)
    problems = check_authorization(consent, item, date.today())
    if problems:
        access.details["refused"] = [p.code for p in problems]
        raise ReleaseRefused(request_id, problems)
    job = runner_of(request).start(user, "Release packet", work)
    access.details["job"] = job.id
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/roi/{request_id}/packet", dependencies=[Depends(PAGE_PRINT)])
def packet(request: Request, request_id: str) -> Response:
    """The stored release packet (PDF), to print or send; audited as a print."""
    access = access_of(request)
    require_role(access, *ROI_ROLES, Role.privacy_officer)
    store = store_of(request)
    item = get_request(store, request_id)
    outputs = [o.get("valueReference", {}).get("reference", "")
               for o in item.task.get("output") or []]
    packet_ref = next((o for o in outputs if o.startswith("DocumentReference/")), "")
    if not packet_ref:
        raise NotFound("this request has no release packet yet")
    guard = access.record_guard()
    access.patients.add(item.patient_id)
    with store.read() as txn:
        document = txn.read("DocumentReference", packet_ref.split("/")[1])
        guard.check(document, access.permit("DocumentReference", "r"), packet_ref)
        binary_ref = str(document["content"][0]["attachment"].get("url", ""))
        if not binary_ref.startswith("Binary/"):
            raise NotFound("the release packet's file is missing")
        binary = txn.read("Binary", binary_ref.split("/")[1])
    guard.check(binary, access.permit("Binary", "r"), binary_ref)
    access.target("DocumentReference", packet_ref.split("/")[1])
    return Response(base64.b64decode(binary.get("data", "")), media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="release-'
                                                    f'{request_id}.pdf"',
                             "Cache-Control": "no-store"})


# ------------------------------------------------------------------- accounting of disclosures
@router.get("/patients/{patient_id}/disclosures", dependencies=[Depends(PAGE_READ)])
def accounting(request: Request, patient_id: str) -> Response:
    access = access_of(request)
    access.who().require(Capability.disclosure_report)
    access.target("Patient", patient_id)
    access.details["page"] = "accounting of disclosures"
    store = store_of(request)
    patient = _guarded_patient(access, store, patient_id)
    security = request.app.state.security
    disclosures = security.disclosures.accounting(patient_id, security.now())
    return render(request, "disclosures.html", {"patient": patient, "name": human_name(patient),
                                                "disclosures": disclosures})

