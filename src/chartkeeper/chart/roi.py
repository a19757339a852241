"""Release of information: the request queue, minimum-necessary selection, the release
packet and the accounting of disclosures (45 CFR 164.502(b), 164.524, 164.528). The
authorization and its check are in ``chart.authorization``, the PDF in ``chart.packet``.

- A request is a ``Task``: code ``urn:chartkeeper:him-task|release-of-information``, ``for``
  the Patient, ``reasonCode`` the v3 PurposeOfUse code, ``authoredOn`` the day it was received,
  ``restriction.period.end`` the due date, ``requester`` and ``restriction.recipient`` (the
  Patient, or a contained Organization: name, contact person, address), and ``input``s for the
  scope: ``record-type`` (a LOINC document type or a resource type; none: the whole record),
  ``date-range`` (a Period), ``sensitive-category`` (a v3 ActCode label) and
  ``identity-verification``. Released, it is ``completed`` with ``output`` ``release-packet``.
- The packet is a ``Binary`` (application/pdf) and a ``DocumentReference`` (LOINC 11503-0
  "Medical records" + our ``roi-packet`` code) whose ``context.related`` names the Task, both
  labelled with the sensitive categories of what they enclose.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from chartkeeper.chart.authorization import (
    CATEGORIES,
    LOINC_CODE,
    NOT_RECORDS,
    OPEN_STATUSES,
    PURPOSE_OF_USE,
    PURPOSES,
    RIGHT_OF_ACCESS,
    TPO_WITHOUT_AUTHORIZATION,
    DateRange,
    Party,
    Problem,
    authorized_scope,
    category_words,
    check_authorization,
    check_categories,
    check_purpose,
    coding,
    label_categories,
    read_authorization,
    record_categories,
    record_type_coding,
)
from chartkeeper.chart.packet import (
    LOINC,
    Facility,
    PacketContent,
    Progress,
    build_packet,
    fhir_date,
    human_name,
    medical_record_number,
    record_date,
    record_title,
)
from chartkeeper.security.access import patients_of
from chartkeeper.security.privacy import Disclosure, DisclosureLog
from chartkeeper.store import InvalidRequest, NotFound, Store, StoreError
from chartkeeper.store.service import Resource, Txn, everything, now_instant

HIM_TASK = "urn:chartkeeper:him-task"
HIM_DOCUMENT = "urn:chartkeeper:him-document"
ROI_TASK = "release-of-information"
PACKET_TYPE = ("11503-0", "Medical records")  # LOINC; no code names an ROI packet itself
RESPONSE_DAYS = 30  # 164.524(b)(2): act on a request for access within 30 days of receipt
TASK_STATUSES = frozenset({"draft", "requested", "received", "accepted", "rejected", "ready",
                           "cancelled", "in-progress", "on-hold", "failed", "completed",
                           "entered-in-error"})


class ReleaseRefused(StoreError):
    """The release cannot go ahead; ``problems`` says each reason. Nothing was stored."""

    status = 422
    issue_code = "business-rule"

    def __init__(self, request_id: str, problems: list[Problem]) -> None:
        super().__init__(f"Release of information for Task/{request_id} refused: "
                         + "; ".join(p.message for p in problems))
        self.problems = problems


class DisclosureNotRecorded(StoreError):
    """The packet was stored but the accounting of disclosures refused the entry."""

    status = 500
    issue_code = "exception"


@dataclass(frozen=True)
class Request:
    """An ROI request as the queue and the checks read it (parsed from its Task)."""

    id: str
    version: int
    status: str
    patient_id: str
    purpose: str
    requester: Party | None  # None: the patient
    recipient: Party | None  # None: the patient
    record_types: tuple[str, ...]  # resource types and LOINC document types; (): all
    dates: DateRange
    sensitive: frozenset[str]
    received: date | None
    due: date | None
    identity_verification: str
    task: Resource = field(repr=False)

    @property
    def purpose_text(self) -> str:
        return f"{self.purpose} ({PURPOSES.get(self.purpose, ('unknown', None))[0]})"

    @property
    def needs_authorization(self) -> bool:
        return self.purpose not in TPO_WITHOUT_AUTHORIZATION and self.purpose != RIGHT_OF_ACCESS

    @property
    def accountable(self) -> bool:
        """164.528(a)(1)(i)-(ii): disclosures for treatment, payment or operations and those
        to the patient (right of access, 164.524) are not in the accounting. Disclosures under
        an authorization are exempt too (164.528(a)(1)(iv)), but we account for them: HIM
        policy here lists every release to a third party, and the rule sets a floor."""
        return not (self.purpose in TPO_WITHOUT_AUTHORIZATION or self.purpose == "HOPERAT"
                    or self.purpose == RIGHT_OF_ACCESS or self.recipient is None)


@dataclass(frozen=True)
class LeftOut:
    reference: str
    title: str
    reason: str


@dataclass
class Selection:
    """The minimum necessary: the records to release and what was left out, with why."""

    patient: Resource
    records: list[Resource]
    left_out: list[LeftOut]

    @property
    def references(self) -> list[str]:
        return [f"{r['resourceType']}/{r['id']}" for r in self.records]

    @property
    def categories(self) -> frozenset[str]:
        return frozenset().union(*(record_categories(r) for r in self.records))


@dataclass(frozen=True)
class Released:
    request_id: str
    packet_id: str  # the DocumentReference
    binary_id: str
    pdf: bytes
    selection: Selection
    disclosure: Disclosure | None  # None: not accountable (TPO, or to the patient)


# ------------------------------------------------------------------------------ requests
def _party_reference(party: Party, local_id: str, contained: list[Resource]) -> Resource:
    organization: Resource = {"resourceType": "Organization", "id": local_id,
                              "name": party.organization or party.name}
    if party.organization and party.name:
        organization["contact"] = [{"name": {"text": party.name}}]
    if party.address:
        organization["address"] = [{"text": party.address}]
    if party.identifier:
        organization["identifier"] = [{"value": party.identifier}]
    contained.append(organization)
    return {"reference": f"#{local_id}", "display": party.label}


def _party_of(reference: Any, task: Resource) -> Party | None:
    ref = str((reference or {}).get("reference", ""))
    if ref.startswith("Patient/"):
        return None
    found: Resource = next((c for c in task.get("contained") or []
                            if f"#{c.get('id')}" == ref), {})
    contacts = found.get("contact") or []
    person = str(((contacts[0] if contacts else {}).get("name") or {}).get("text", ""))
    address = str(((found.get("address") or [{}])[0]).get("text", ""))
    identifier = str(((found.get("identifier") or [{}])[0]).get("value", ""))
    name = str(found.get("name", (reference or {}).get("display", "")))
    return Party(person or name, name if person else "", address, identifier)


def _input(code: str, **value: Any) -> Resource:
    return {"type": {"coding": [coding(HIM_TASK, code)]}, **value}


def _inputs(task: Resource, code: str) -> list[Resource]:
    return [i for i in task.get("input") or []
            if any(c.get("code") == code for c in (i.get("type") or {}).get("coding") or [])]


def create_request(store: Store, patient_id: str, purpose: str, *,
                   requester: Party | None = None, recipient: Party | None = None,
                   record_types: Sequence[str] = (), dates: DateRange | None = None,
                   sensitive: Sequence[str] = (), received: date | None = None,
                   due: date | None = None, identity_verification: str = "",
                   today: date | None = None) -> str:
    """Log a request (requester/recipient None: the patient) and return its Task id."""
    today = today or date.today()
    received = received or today
    due = due or received + timedelta(days=RESPONSE_DAYS)
    check_purpose(purpose)
    if received > today:
        raise InvalidRequest(f"received date {received} is in the future (today is {today})")
    if due < today:
        raise InvalidRequest(f"due date {due} is in the past (today is {today})")
    if dates and dates.start and dates.end and dates.start > dates.end:
        raise InvalidRequest(f"date range starts {dates.start} after it ends {dates.end}")
    for party in (requester, recipient):
        if party is not None and not party.name.strip():
            raise InvalidRequest("a requester or recipient needs a name")
    inputs = [_input("record-type", valueCoding=record_type_coding(t)) for t in record_types]
    if dates and (dates.start or dates.end):
        inputs.append(_input("date-range", valuePeriod=dates.as_period()))
    inputs += [_input("sensitive-category", valueCoding=coding(*CATEGORIES[c][:2]))
               for c in check_categories(sensitive)]
    if identity_verification.strip():
        inputs.append(_input("identity-verification", valueString=identity_verification.strip()))
    with store.write() as txn:
        patient = _read_patient(txn, patient_id)
        patient_ref = {"reference": f"Patient/{patient_id}", "display": human_name(patient)}
        contained: list[Resource] = []
        asked_by = (patient_ref if requester is None
                    else _party_reference(requester, "requester", contained))
        sent_to = (_party_reference(recipient, "recipient", contained) if recipient
                   else asked_by)
        task: Resource = {
            "resourceType": "Task", **({"contained": contained} if contained else {}),
            "status": "requested", "intent": "order",
            "code": {"coding": [coding(HIM_TASK, ROI_TASK, "Release of information")]},
            "for": patient_ref, "authoredOn": received.isoformat(), "requester": asked_by,
            "reasonCode": {"coding": [coding(PURPOSE_OF_USE, purpose)],
                           "text": PURPOSES[purpose][0]},
            "restriction": {"period": {"end": due.isoformat()}, "recipient": [sent_to]},
            **({"input": inputs} if inputs else {}),
        }
        return txn.create(task).resource_id


def _read_patient(txn: Txn, patient_id: str) -> Resource:
    try:
        return txn.read("Patient", patient_id)
    except StoreError as exc:
        raise InvalidRequest(f"Patient/{patient_id} is not in the record store: "
                             f"{exc.diagnostics}") from exc


def request_of(task: Resource) -> Request:
    """Read a release-of-information Task as a ``Request``."""
    if not any(c.get("system") == HIM_TASK and c.get("code") == ROI_TASK
               for c in (task.get("code") or {}).get("coding") or []):
        raise NotFound(f"Task/{task.get('id')} is not a release-of-information request")
    restriction = task.get("restriction") or {}
    reason = ((task.get("reasonCode") or {}).get("coding") or [{}])[0]
    recipients = restriction.get("recipient") or [{}]
    types = [str((i.get("valueCoding") or {}).get("code")) for i in _inputs(task, "record-type")]
    ranges = _inputs(task, "date-range")
    identity = _inputs(task, "identity-verification")
    return Request(
        id=str(task["id"]), version=int(task.get("meta", {}).get("versionId", 1)),
        status=str(task.get("status")),
        patient_id=str(task["for"]["reference"]).removeprefix("Patient/"),
        purpose=str(reason.get("code", "")), requester=_party_of(task.get("requester"), task),
        recipient=_party_of(recipients[0], task), record_types=tuple(types),
        dates=DateRange.of(ranges[0].get("valuePeriod")) if ranges else DateRange(),
        sensitive=label_categories(i.get("valueCoding")
                                   for i in _inputs(task, "sensitive-category")),
        received=fhir_date(task.get("authoredOn")),
        due=fhir_date((restriction.get("period") or {}).get("end")),
        identity_verification=str(identity[-1].get("valueString", "")) if identity else "",
        task=task)


def get_request(store: Store, request_id: str) -> Request:
    with store.read() as txn:
        return request_of(txn.read("Task", request_id))


def list_requests(store: Store, status: str | None = None) -> list[Request]:
    """The ROI queue, oldest due date first (then oldest received)."""
    if status is not None and status not in TASK_STATUSES:
        raise InvalidRequest(f"unknown Task status {status!r}; expected one of "
                             f"{sorted(TASK_STATUSES)}")
    params = [("code", f"{HIM_TASK}|{ROI_TASK}")] + ([("status", status)] if status else [])
    found: list[Request] = []
    with store.read() as txn:
        while True:
            page = txn.search_params("Task", [*params, ("_count", "500"),
                                              ("_offset", str(len(found)))])
            found.extend(request_of(t) for t in page.matches)
            if len(page.matches) < 500:
                break
    return sorted(found, key=lambda r: (r.due or date.max, r.received or date.max, r.id))


def _change_request(store: Store, request_id: str, change: dict[str, Any]) -> Request:
    with store.write() as txn:
        task = txn.read("Task", request_id)
        current = request_of(task)
        if current.status not in OPEN_STATUSES:
            raise InvalidRequest(f"Task/{request_id} is {current.status}; it can no longer "
                                 "change")
        new_inputs = change.pop("input", [])
        updated = {**task, **change, "lastModified": now_instant()}
        if new_inputs:
            updated["input"] = [*(task.get("input") or []), *new_inputs]
        result = txn.update("Task", request_id, updated, if_match=current.version)
        assert result.resource is not None
        return request_of(result.resource)


def start_request(store: Store, request_id: str, specialist: str) -> Request:
    """Take a request off the queue: in-progress, owned by the ROI specialist."""
    return _change_request(store, request_id, {"status": "in-progress",
                                               "owner": {"display": specialist}})


def reject_request(store: Store, request_id: str, reason: str) -> Request:
    if not reason.strip():
        raise InvalidRequest("a rejected request needs the reason given to the requester")
    return _change_request(store, request_id, {"status": "rejected",
                                               "statusReason": {"text": reason.strip()}})


def record_identity_verification(store: Store, request_id: str, evidence: str) -> Request:
    """Record how the requester's identity was verified (164.514(h)), e.g. photo ID seen."""
    if not evidence.strip():
        raise InvalidRequest("say how the identity was verified (document, who, when)")
    return _change_request(store, request_id, {"input": [
        _input("identity-verification", valueString=evidence.strip())]})


# ------------------------------------------------------------------------------ selection
def _document_types(resource: Resource) -> set[str]:
    """The LOINC document type codes (and our packet code) of a document; none for others."""
    concept = resource.get("type")
    if resource["resourceType"] not in ("DocumentReference", "Composition") or \
            not isinstance(concept, dict):
        return set()
    return {str(c.get("code")) for c in concept.get("coding") or []
            if isinstance(c, dict) and c.get("system") in (LOINC, HIM_DOCUMENT)}


def _is_released_kind(resource: Resource, patient_id: str) -> bool:
    """A record of this patient's chart, not HIM work about it (requests, consents, packets)."""
    return (resource["resourceType"] not in NOT_RECORDS
            and "roi-packet" not in _document_types(resource)
            and patient_id in patients_of(resource))


def select_records(store: Store, request: Request, consent: Resource | None) -> Selection:
    """The minimum necessary (164.502(b)): the patient's records inside both the requested and
    the authorized scope (types, dates), sensitive ones only where requested and explicitly
    authorized. Everything else of the chart is listed in ``left_out`` with the reason."""
    scope = authorized_scope(request, consent)
    allowed = request.sensitive & scope.categories
    with store.read() as txn:
        chart = everything(txn, request.patient_id)
    records: list[Resource] = []
    left_out: list[LeftOut] = []
    for resource in chart:
        if not _is_released_kind(resource, request.patient_id):
            continue
        reason = _reason_to_leave_out(resource, request, scope.covers, (
            (request.dates, "requested"), (scope.dates, "authorized")), allowed)
        if reason:
            left_out.append(LeftOut(f"{resource['resourceType']}/{resource['id']}",
                                    record_title(resource), reason))
        else:
            records.append(resource)
    records.sort(key=lambda r: (r["resourceType"], record_date(r) or date.min, r["id"]))
    patient = next(r for r in chart if r["resourceType"] == "Patient"
                   and r["id"] == request.patient_id)
    return Selection(patient, records, left_out)


def _reason_to_leave_out(resource: Resource, request: Request, authorized: Any,
                         ranges: tuple[tuple[DateRange, str], ...], allowed: frozenset[str]
                         ) -> str:
    kind = resource["resourceType"]
    document_types = _document_types(resource)
    if request.record_types and kind not in request.record_types and \
            not document_types.intersection(request.record_types):
        return "not a requested record type"
    if not authorized(kind, document_types):
        return "outside the record types the authorization covers"
    day = record_date(resource)
    for dates, which in ranges:
        if (dates.start or dates.end) and day is None:
            return f"undated, and the {which} dates are {dates.text}"
        if day is not None and not dates.contains(day):
            return f"dated {day}, outside the {which} dates {dates.text}"
    sensitive = record_categories(resource) - allowed
    if sensitive:
        asked = "not authorized" if sensitive <= request.sensitive else "not requested"
        return f"sensitive ({category_words(sensitive)}): {asked} for release"
    return ""


# ------------------------------------------------------------------------------ release
def _facility_of(txn: Txn, patient: Resource) -> Facility:
    reference = str((patient.get("managingOrganization") or {}).get("reference", ""))
    if reference.startswith("Organization/"):
        try:
            organization = txn.read("Organization", reference.removeprefix("Organization/"))
        except StoreError:
            organization = {}
        if organization.get("name"):
            address = (organization.get("address") or [{}])[0]
            lines = [*address.get("line", []), " ".join(
                str(address.get(k, "")) for k in ("city", "state", "postalCode")).strip()]
            phone = next((str(t.get("value")) for t in organization.get("telecom") or []
                          if t.get("system") == "phone"), "")
            return Facility(str(organization["name"]),
                            address.get("text") or ", ".join(x for x in lines if x), phone)
    return Facility("Health Information Management Department")


def _address_lines(request: Request, patient: Resource) -> list[str]:
    if request.recipient is not None:
        party = request.recipient
        return [party.name, party.organization, *party.address.split("\n")]
    address = (patient.get("address") or [{}])[0]
    city = " ".join(str(address.get(k, "")) for k in ("city", "state", "postalCode")).strip()
    return [human_name(patient), *(address.get("text", "").split("\n")
                                   if address.get("text") else [*address.get("line", []), city])]


def _basis(request: Request, consent: Resource | None) -> list[str]:
    if consent is not None:
        period = (consent.get("provision") or {}).get("period") or {}
        return [f"Authorization: Consent/{consent['id']}, signed {consent.get('dateTime')}, "
                f"valid until {period.get('end')} (45 CFR 164.508)."]
    if request.purpose == RIGHT_OF_ACCESS:
        return ["Released at the patient's request under the right of access (45 CFR "
                f"164.524). Identity verified: {request.identity_verification}."]
    return [f"Disclosed for {PURPOSES[request.purpose][0]} as permitted without an "
            "authorization by 45 CFR 164.506(c)."]


def _limited_to(request: Request, consent: Resource | None) -> str:
    # 164.502(b)(2): the minimum-necessary standard does not govern disclosures for treatment,
    # to the patient or under an authorization (whose scope governs instead); it does govern
    # payment. Every release is cut to the request and any authorization all the same.
    if consent is not None:
        return "what was requested and what the authorization permits"
    if request.purpose in TPO_WITHOUT_AUTHORIZATION and request.purpose not in (
            "TREAT", "ETREAT"):
        return "the minimum necessary for the purpose stated (45 CFR 164.502(b))"
    return "what was requested"


def _scope_lines(request: Request, selection: Selection) -> list[str]:
    kinds = [f"LOINC {t}" if LOINC_CODE.fullmatch(t) else t for t in request.record_types]
    lines = [f"Record types: {', '.join(kinds) or 'the complete record'}",
             f"Dates of care: {request.dates.text}"]
    if selection.categories:
        lines.append(f"Sensitive records included as authorized: "
                     f"{category_words(selection.categories)}")
    return lines


def _packet_resources(request: Request, consent: Resource | None, selection: Selection,
                      pdf: bytes, released_by: str, facility: Facility) -> tuple[Resource,
                                                                                 Resource]:
    # The packet holds what it encloses: it carries the same sensitivity labels, so the
    # access layer closes it to those who may not see the sensitive records themselves.
    labels = [coding(*CATEGORIES[c][:2]) for c in sorted(selection.categories)]
    meta = {"meta": {"security": labels}} if labels else {}
    binary: Resource = {"resourceType": "Binary", **meta, "contentType": "application/pdf",
                        "securityContext": {"reference": f"Patient/{request.patient_id}"},
                        "data": base64.b64encode(pdf).decode()}
    related = [{"reference": f"Task/{request.id}"}]
    if consent is not None:
        related.append({"reference": f"Consent/{consent['id']}"})
    recipient = "the patient" if request.recipient is None else request.recipient.label
    document: Resource = {
        "resourceType": "DocumentReference", **meta, "status": "current", "docStatus": "final",
        "type": {"coding": [coding(LOINC, *PACKET_TYPE),
                            coding(HIM_DOCUMENT, "roi-packet", "Release of information packet")],
                 "text": "Release of information packet"},
        "subject": {"reference": f"Patient/{request.patient_id}"}, "date": now_instant(),
        "author": [{"display": released_by}], "custodian": {"display": facility.name},
        "description": f"Release of information to {recipient} for {request.purpose_text}",
        **({"securityLabel": [{"coding": [label]} for label in labels]} if labels else {}),
        "content": [{"attachment": {
            "contentType": "application/pdf", "size": len(pdf),
            "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode(),
            "title": f"Release of information {request.id}.pdf"}}],
        "context": {"related": related}}
    return binary, document


def release(store: Store, disclosure_log: DisclosureLog, request_id: str,
            consent_id: str | None, released_by: str, today: date, *,
            facility: Facility | None = None, now: datetime | None = None,
            on_progress: Progress | None = None) -> Released:
    """Check, select, build and store the packet, complete the Task and account for the
    disclosure. Raises ``ReleaseRefused`` naming every problem (nothing stored or logged)."""
    if not released_by.strip() or len(released_by) > 128:
        raise InvalidRequest("released_by must name the ROI specialist (1 to 128 characters)")
    request = get_request(store, request_id)
    consent = read_authorization(store, consent_id) if consent_id else None
    problems = check_authorization(consent, request, today)
    if problems:
        raise ReleaseRefused(request_id, problems)
    selection = select_records(store, request, consent)
    if not selection.records:
        raise ReleaseRefused(request_id, [Problem(
            "nothing-to-release", "no record of the patient is inside the requested and "
            f"authorized scope ({len(selection.left_out)} left out)")])
    patient = selection.patient
    with store.read() as txn:
        facility = facility or _facility_of(txn, patient)
    pdf = build_packet(PacketContent(
        facility=facility, letter_date=today, recipient=_address_lines(request, patient),
        patient_name=human_name(patient), birth_date=str(patient.get("birthDate", "")),
        mrn=medical_record_number(patient), purpose=request.purpose_text,
        basis=_basis(request, consent), scope=_scope_lines(request, selection),
        specialist=released_by, request_id=request.id, records=selection.records,
        part2="substance-use" in selection.categories,
        limited_to=_limited_to(request, consent)), on_progress)
    binary, document = _packet_resources(request, consent, selection, pdf, released_by,
                                         facility)
    with store.write() as txn:
        binary_id = txn.create(binary).resource_id
        document["content"][0]["attachment"]["url"] = f"Binary/{binary_id}"
        packet_id = txn.create(document).resource_id
        task = dict(request.task, status="completed", lastModified=now_instant(),
                    owner={"display": released_by},
                    output=[{"type": {"coding": [coding(HIM_TASK, "release-packet")]},
                             "valueReference": {"reference": f"DocumentReference/{packet_id}"}}])
        if consent is not None:
            task["input"] = [*(task.get("input") or []), _input(
                "authorization", valueReference={"reference": f"Consent/{consent['id']}"})]
        txn.update("Task", request.id, task, if_match=request.version)
    disclosure = None
    if request.accountable:
        disclosure = _account(disclosure_log, request, consent, selection, packet_id,
                              released_by, now)
    return Released(request.id, packet_id, binary_id, pdf, selection, disclosure)


def _account(log: DisclosureLog, request: Request, consent: Resource | None,
             selection: Selection, packet_id: str, released_by: str,
             now: datetime | None) -> Disclosure:
    assert request.recipient is not None  # disclosures to the patient are not accounted
    party = request.recipient
    counts = Counter(r["resourceType"] for r in selection.records)
    description = (f"Release of information packet DocumentReference/{packet_id} (request "
                   f"Task/{request.id}): " + ", ".join(f"{n} {kind}" for kind, n in
                                                      sorted(counts.items()))
                   + f"; dates of care {request.dates.text}"
                   + (f"; authorization Consent/{consent['id']}" if consent else ""))
    body = {"patient": request.patient_id,
            "recipient": ", ".join(p for p in (party.label, *party.address.splitlines())
                                   if p.strip())[:2000],
            "purpose": request.purpose_text, "description": description[:2000],
            "resources": selection.references}
    try:
        return log.record(released_by, body, now)
    except Exception as exc:
        # The packet is stored and the Task completed (the disclosure happened); the entry
        # must still be made by hand, so say exactly which release it is.
        raise DisclosureNotRecorded(
            f"packet DocumentReference/{packet_id} for Task/{request.id} was stored, but the "
            f"accounting of disclosures refused the entry: {exc}") from exc
