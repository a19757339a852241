"""The coding API: suggestions for a text, the encoder's search, code details, the PCS builder,
and the coder's work: the queue, an encounter's worksheet, the decisions that finalize it, the
edits check and the productivity and accuracy reports.

Every route needs a signed-in user whose role has the coding capability; errors are FHIR
``OperationOutcome``s like the rest of the API. The queue and the worksheet show patient data:
they are audited like FHIR searches and reads, and a finalization's audit entry is appended
inside the transaction that stores the codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from chartkeeper.api.auth import AUTHENTICATED, RequestAccess, access_of
from chartkeeper.coding import claims, codesets, edits, feedback, grouper, service
from chartkeeper.coding.cac import SETTINGS, SuggestError
from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.ncci import ServiceLine
from chartkeeper.coding.worksheet import (
    ACTIONS,
    POA_INDICATORS,
    PROCEDURE_SYSTEMS,
    Action,
    Coder,
    Decision,
    Finalized,
    Plan,
    QueueItem,
    Worksheet,
    prepare,
    queue,
    worksheet,
    write,
)
from chartkeeper.security.access import Capability
from chartkeeper.security.audit import AuditAction
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest, NotFound, OutcomeIssue, PayloadTooLarge
from chartkeeper.store.service import Resource, Txn

router = APIRouter(prefix="/api/coding", tags=["coding"])
MAX_NOTE_BYTES = 1024 * 1024  # a long discharge summary is tens of kilobytes


def _engine(request: Request) -> Any:
    access_of(request).require(Capability.coding)
    return request.app.state.store.engine


def _date(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


async def _json_object(request: Request, limit: int, shape: str) -> dict[str, Any]:
    """The body as a JSON object of at most ``limit`` bytes; ``shape`` says what to send."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/fhir+json"):
        raise InvalidRequest(f"send application/json: {shape}")
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise InvalidRequest(f"the body must be a JSON object: {shape}")
    return fields


@router.post("/suggest", dependencies=[Depends(AUTHENTICATED)])
async def suggest(request: Request) -> dict[str, Any]:
    """``{"text", "setting", "age"?, "date"?}`` -> diagnoses ranked best first, each with
    code, display, confidence and evidence spans; the principal; procedures."""
    engine = _engine(request)
    fields = await _json_object(request, MAX_NOTE_BYTES,
                                '{"text": ..., "setting": "inpatient" | "outpatient"}')
    text, setting, age = fields.get("text"), fields.get("setting"), fields.get("age")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("'text' must be the note as a non-empty string")
    if setting not in SETTINGS:
        raise InvalidRequest(f"'setting' must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if age is not None and (type(age) is not int or not 0 <= age <= 124):
        raise InvalidRequest(f"'age' must be whole years from 0 to 124, got {age!r}")
    on = _date(fields.get("date"), "'date'")

    def run() -> dict[str, Any]:
        try:
            return service.suggest(engine, text, setting, age=age, on=on).to_json()
        except (SuggestError, CodeSetError) as exc:
            raise InvalidRequest(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/search", dependencies=[Depends(AUTHENTICATED)])
async def search(request: Request, q: str = Query(min_length=1, max_length=200),
                 limit: int = Query(25, ge=1, le=200),
                 on: str | None = Query(None, alias="date")) -> dict[str, Any]:
    """ICD-10-CM codes by words, abbreviations, misspellings or the code itself."""
    engine = _engine(request)
    when = _date(on, "date")

    def run() -> dict[str, Any]:
        try:
            hits = service.search(engine, q, limit=limit, on=when)
        except CodeSetError as exc:
            raise InvalidRequest(str(exc)) from None
        return {"query": q, "hits": [hit.to_json() for hit in hits]}

    return await run_in_threadpool(run)


@router.get("/codes/{code}", dependencies=[Depends(AUTHENTICATED)])
async def code_detail(request: Request, code: str,
                      on: str | None = Query(None, alias="date")) -> dict[str, Any]:
    """A code, its place in the hierarchy and every instructional note that applies."""
    engine = _engine(request)
    when = _date(on, "date")

    def run() -> dict[str, Any]:
        try:
            return service.detail(engine, code, when).to_json()
        except UnknownCode as exc:
            raise NotFound(str(exc)) from None
        except CodeSetError as exc:
            raise InvalidRequest(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/pcs", dependencies=[Depends(AUTHENTICATED)])
async def pcs_choices(request: Request, prefix: str = Query("", max_length=7),
                      on: str | None = Query(None, alias="date")) -> dict[str, Any]:
    """The ICD-10-PCS builder: the valid values for the next character after ``prefix``."""
    engine = _engine(request)
    when = _date(on, "date")

    def run() -> dict[str, Any]:
        try:
            return service.pcs_step(engine, prefix.upper(), when)
        except CodeSetError as exc:
            raise InvalidRequest(str(exc)) from None

    return await run_in_threadpool(run)


@router.get("/releases", dependencies=[Depends(AUTHENTICATED)])
async def releases(request: Request) -> dict[str, Any]:
    """The code-set releases imported, with the dates each is in force."""
    engine = _engine(request)

    def run() -> dict[str, Any]:
        codesets.ensure_packaged(engine)
        return {"releases": [release.to_json() for release in codesets.releases(engine)]}

    return await run_in_threadpool(run)


# ================================================================ the coder's work: shared
# What the worksheet pages (web/coding_work_pages.py) and the API below both need: the
# records shown only after the RecordGuard saw them, the edits that gate a finalization, and
# the finalization itself with the request's audit entry inside its transaction.
MAX_DECISIONS = 300
MAX_DECISIONS_BYTES = 256 * 1024
MAX_CODE = 16  # the longest ICD-10-CM code is 8 characters with its dot, PCS 7
MAX_UNITS = 9999
QUEUE_SETTINGS = ("inpatient", "outpatient")
REPORT_DAYS = 30  # the reports' default period: the last 30 days, today included
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
SEXES = {"male": "male", "female": "female"}  # other and unknown are "unknown" to the MCE

AuditHook = Callable[[Txn, Finalized], None]


class EditsFailed(InvalidRequest):
    """The coded claim fails edits that block billing: they are fixed before it is final."""

    status = 422
    issue_code = "business-rule"

    def __init__(self, encounter_id: str, failed: Sequence[edits.Edit]) -> None:
        issues = [OutcomeIssue("business-rule", f"{edit.rule}: {edit.message}", "decisions")
                  for edit in failed]
        count = len(failed)
        super().__init__(
            f"Encounter/{encounter_id}: {count} edit{'s' if count != 1 else ''} block"
            f"{'' if count != 1 else 's'} billing; fix {'them' if count != 1 else 'it'} "
            "before finalizing: " + "; ".join(edit.message for edit in failed), issues)
        self.edits = list(failed)


def checked_id(encounter_id: str) -> str:
    """A FHIR id as the path gave it (anything else names no encounter)."""
    if not _ID.fullmatch(encounter_id):
        raise NotFound(f"Encounter/{encounter_id[:64]!r} is not known: an id is 1 to 64 "
                       "letters, digits, '-' or '.'")
    return encounter_id


def require_coding(access: RequestAccess) -> None:
    """Forbidden unless the caller's role codes (the role matrix's coding capability)."""
    access.require(Capability.coding)


@dataclass(frozen=True)
class GuardedWorksheet:
    """A worksheet whose Encounter, Patient and documents the caller may see."""

    sheet: Worksheet
    encounter: Resource
    patient: Resource


def _subject(encounter: Resource) -> str | None:
    reference = str((encounter.get("subject") or {}).get("reference") or "")
    kind, _, rest = reference.partition("/")
    return rest.split("/_history/")[0] if kind == "Patient" and rest else None


def guarded_worksheet(access: RequestAccess, store: Store, encounter_id: str
                      ) -> GuardedWorksheet:
    """The encounter's worksheet, shown to the RecordGuard first: the Encounter, its Patient
    and every document whose text the worksheet holds (a restricted one needs break-the-glass
    for the whole worksheet, since its text is part of what is shown)."""
    checked_id(encounter_id)
    access.target("Encounter", encounter_id)
    guard = access.record_guard()
    with store.read() as txn:
        encounter = txn.read("Encounter", encounter_id)
    patient_id = _subject(encounter)
    if patient_id is not None:
        access.patients.add(patient_id)  # refused or not, the trail names whose record
    guard.check(encounter, access.permit("Encounter", "r"), f"Encounter/{encounter_id}")
    sheet = worksheet(store, encounter_id)
    with store.read() as txn:
        patient = txn.read("Patient", sheet.documents.patient_id)
        documents = [txn.read("DocumentReference", document_id) for document_id
                     in dict.fromkeys(d.id for d in sheet.documents.documents)]
    guard.check(patient, access.permit("Patient", "r"), f"Patient/{patient['id']}")
    grant = access.permit("DocumentReference", "r")
    for document in documents:
        guard.check(document, grant, f"DocumentReference/{document['id']}")
    return GuardedWorksheet(sheet, sheet.documents.encounter, patient)


@dataclass(frozen=True)
class QueueRow:
    """A queue item and whether the caller may see whose it is."""

    item: QueueItem
    visible: bool

    def to_json(self) -> dict[str, Any]:
        found = self.item.to_json()
        if not self.visible:  # restricted record: the work shows, the person does not
            found.update(patient=None, patientName=None)
        return {**found, "restricted": not self.visible}


def guarded_queue(access: RequestAccess, store: Store, items: Sequence[QueueItem]
                  ) -> list[QueueRow]:
    """Queue items with their Encounter and Patient shown to the RecordGuard."""
    guard = access.record_guard()
    encounter_grant = access.permit("Encounter", "s")
    patient_grant = access.permit("Patient", "s")
    with store.read() as txn:
        encounters = _by_id(txn, "Encounter", [i.encounter_id for i in items])
        patients = _by_id(txn, "Patient", [i.patient_id for i in items])
    rows = []
    for item in items:
        encounter, patient = encounters.get(item.encounter_id), patients.get(item.patient_id)
        visible = (encounter is not None and patient is not None
                   and guard.visible(encounter, encounter_grant)
                   and guard.visible(patient, patient_grant))
        rows.append(QueueRow(item, visible))
    return rows


def _by_id(txn: Txn, resource_type: str, ids: Sequence[str]) -> dict[str, Resource]:
    ordered = sorted(set(ids))
    found: dict[str, Resource] = {}
    for start in range(0, len(ordered), 200):
        chunk = ordered[start:start + 200]
        for resource in txn.search_params(resource_type, [
                ("_id", ",".join(chunk)), ("_count", str(len(chunk)))]).matches:
            found[str(resource["id"])] = resource
    return found


def unbilled(store: Store, *, setting: str | None = None, as_of: date | None = None
             ) -> list[QueueItem]:
    """The coders' queue, inpatient or outpatient only when ``setting`` says so."""
    if setting not in (None, "", *QUEUE_SETTINGS):
        raise InvalidRequest(f"setting must be one of {', '.join(QUEUE_SETTINGS)}, got "
                             f"{setting!r}")
    items = queue(store, as_of=as_of)
    return [item for item in items if not setting or item.setting == setting]


def nubc_discharge_status(encounter: Resource) -> str | None:
    """The NUBC patient status the encounter's discharge disposition stands for (the claims'
    mapping), or None when it records none the mapping knows: the coder then chooses."""
    try:
        return claims.discharge_status(encounter)
    except claims.StayError:
        return None


def claim_for_edits(plan: Plan, patient: Resource, discharge_status: str | None
                    ) -> edits.CodedClaim:
    """The checked decisions as the claim the edits read: the final codes in sequence, with
    POA, the stay's dates and discharge status (inpatient) or the service lines."""
    documents = plan.documents
    encounter_id = documents.encounter_id
    if documents.age is None or not 0 <= documents.age <= 124:
        raise InvalidRequest(f"Patient/{documents.patient_id}: the birth date gives no age "
                             f"from 0 to 124 on {documents.start} (got {documents.age}); the "
                             "edits need the age")
    sex = SEXES.get(str(patient.get("gender") or ""), "unknown")
    diagnoses = tuple(edits.ClaimDiagnosis(d.code, d.poa) for d in plan.diagnoses)
    try:
        if documents.setting == "inpatient":
            status = discharge_status or nubc_discharge_status(documents.encounter)
            if status is None:
                statuses = ", ".join(grouper.DISCHARGE_STATUSES)
                raise InvalidRequest(
                    f"Encounter/{encounter_id} records no discharge disposition: choose the "
                    f"discharge status (UB-04 FL17, one of {statuses})")
            return edits.CodedClaim(
                "inpatient", documents.age, sex, diagnoses, admitted=documents.start,
                discharged=documents.date_of_service, discharge_status=status,
                procedures=tuple(edits.ClaimProcedure(p.code, p.performed)
                                 for p in plan.procedures))
        return edits.CodedClaim(
            "outpatient", documents.age, sex, diagnoses, service_date=documents.date_of_service,
            lines=tuple(ServiceLine(p.code, units=p.units, date=p.performed)
                        for p in plan.procedures))
    except (edits.ClaimError, CodeSetError) as exc:
        raise InvalidRequest(f"Encounter/{encounter_id}: {exc}") from None


def discharge_status_of(value: str | None) -> str | None:
    """A discharge status as given (two digits of the NUBC list), or None for the default."""
    if value is None or not value.strip():
        return None
    status = value.strip()
    if status not in grouper.DISCHARGE_STATUSES:
        raise InvalidRequest(f"discharge status {status[:20]!r} is not a NUBC patient status "
                             f"code ({', '.join(grouper.DISCHARGE_STATUSES)})")
    return status


def check_decisions(store: Store, guarded: GuardedWorksheet, decisions: Sequence[Decision],
                    coder: Coder, *, discharge_status: str | None = None,
                    reason: str | None = None) -> tuple[Plan, list[edits.Edit]]:
    """The decisions checked (``prepare``: a CodingError names every problem) and the edits
    their claim fails, errors and warnings."""
    encounter_id = guarded.sheet.documents.encounter_id
    plan = prepare(store, encounter_id, decisions, coder, reason=reason)
    claim = claim_for_edits(plan, guarded.patient, discharge_status)
    try:
        return plan, edits.check(store.engine, claim)
    except (edits.ClaimError, CodeSetError) as exc:
        raise InvalidRequest(f"Encounter/{encounter_id}: {exc}") from None


def finalize(store: Store, guarded: GuardedWorksheet, decisions: Sequence[Decision],
             coder: Coder, *, reason: str, discharge_status: str | None,
             before_commit: AuditHook) -> tuple[Finalized, list[edits.Edit]]:
    """Check the decisions and the edits, then store the final codes (``worksheet.write``,
    as ``worksheet.decide`` does) with ``before_commit`` appending the request's audit entry
    inside the same transaction. Refused, with nothing stored, when a decision is wrong
    (CodingError), an edit is an error (EditsFailed) or billing has the claim (AlreadyBilled).

    ``decide`` itself is not called because the edits sit between its check and its write,
    and the audit entry names the Provenance the write made."""
    if not reason.strip():
        raise InvalidRequest("give the reason for the coding: it is recorded on the Provenance")
    plan, found = check_decisions(store, guarded, decisions, coder,
                                  discharge_status=discharge_status, reason=reason.strip())
    blocking = edits.errors(found)
    if blocking:
        raise EditsFailed(guarded.sheet.documents.encounter_id, blocking)
    with store.write() as txn:
        finalized = write(txn, plan)
        before_commit(txn, finalized)
    return finalized, found


def audit_finalization(access: RequestAccess, source: str | None) -> AuditHook:
    """The hook that appends the request's audit entry inside the finalization's write: a
    create (first coding) or update, naming the Provenance and counts, never a code (the
    entry's ``via`` says token or session: the API or the workbench)."""
    def hook(txn: Txn, finalized: Finalized) -> None:
        access.action = (AuditAction.CREATE if finalized.activity == "CREATE"
                         else AuditAction.UPDATE)
        access.details.update(
            change="final codes assigned", provenance=finalized.provenance_id,
            claim=finalized.claim, diagnoses=len(finalized.conditions),
            procedures=len(finalized.procedures), removed=len(finalized.removed),
            flags=finalized.flags, versions=finalized.targets[:50])
        access.audit_in_transaction(txn.conn, 201 if finalized.activity == "CREATE" else 200,
                                    source)
    return hook


def report_period(since: str | None, until: str | None, *, today: date | None = None
                  ) -> tuple[date, date]:
    """The reports' period: the dates given, else the last ``REPORT_DAYS`` days to today."""
    end = _date(until, "until") or today or datetime.now(UTC).date()
    start = _date(since, "since") or end - timedelta(days=REPORT_DAYS - 1)
    if end < start:
        raise InvalidRequest(f"the period ends ({end}) before it starts ({start})")
    return start, end


# ------------------------------------------------------------------ decisions as JSON
_DECISION_KEYS = frozenset({"action", "code", "replacement", "reason", "poa", "system",
                            "performed", "units"})
_BODY_KEYS = frozenset({"decisions", "reason", "dischargeStatus"})


@dataclass(frozen=True)
class DecisionsBody:
    decisions: list[Decision]
    reason: str | None
    discharge_status: str | None


class _Issues:
    def __init__(self) -> None:
        self.found: list[OutcomeIssue] = []

    def add(self, expression: str, message: str) -> None:
        self.found.append(OutcomeIssue("invalid", f"{expression}: {message}", expression))

    def raise_any(self) -> None:
        if self.found:
            raise InvalidRequest("; ".join(i.diagnostics for i in self.found), self.found)


def _text(value: Any, where: str, issues: _Issues, limit: int, *, required: bool = False
          ) -> str | None:
    if value is None:
        if required:
            issues.add(where, "is required")
        return None
    if not isinstance(value, str):
        issues.add(where, f"must be text, got {type(value).__name__}")
        return None
    if len(value) > limit:
        issues.add(where, f"is {len(value)} characters long; at most {limit}")
        return None
    if required and not value.strip():
        issues.add(where, "must not be empty")
        return None
    return value


def decisions_from_json(fields: dict[str, Any]) -> DecisionsBody:
    """``{"decisions": [...], "reason", "dischargeStatus"?}``; every problem is reported at
    once, with its place (``decisions[2].units``)."""
    issues = _Issues()
    for key in sorted(set(fields) - _BODY_KEYS):
        issues.add(key[:40], "is not a field of the body (expected "
                             f"{', '.join(sorted(_BODY_KEYS))})")
    reason = _text(fields.get("reason"), "reason", issues, 500)
    status = _text(fields.get("dischargeStatus"), "dischargeStatus", issues, 2)
    listed = fields.get("decisions")
    decisions: list[Decision] = []
    if not isinstance(listed, list) or not listed:
        issues.add("decisions", "must be a non-empty list of decisions")
    elif len(listed) > MAX_DECISIONS:
        issues.add("decisions", f"has {len(listed)} entries; at most {MAX_DECISIONS}")
    else:
        for number, entry in enumerate(listed):
            decision = _decision(entry, f"decisions[{number}]", issues)
            if decision is not None:
                decisions.append(decision)
    issues.raise_any()
    try:
        checked_status = discharge_status_of(status)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.diagnostics, [OutcomeIssue("invalid", exc.diagnostics,
                                                            "dischargeStatus")]) from None
    return DecisionsBody(decisions, reason, checked_status)


def _decision(entry: Any, where: str, issues: _Issues) -> Decision | None:
    if not isinstance(entry, dict):
        issues.add(where, f"must be an object, got {type(entry).__name__}")
        return None
    before = len(issues.found)
    for key in sorted(set(entry) - _DECISION_KEYS):
        issues.add(f"{where}.{key[:40]}", f"is not a field of a decision (expected "
                                         f"{', '.join(sorted(_DECISION_KEYS))})")
    action: Action | None = next((a for a in ACTIONS if a == entry.get("action")), None)
    if action is None:
        issues.add(f"{where}.action", f"must be one of {', '.join(ACTIONS)}, got "
                                      f"{str(entry.get('action'))[:20]!r}")
    code = _text(entry.get("code"), f"{where}.code", issues, MAX_CODE, required=True)
    replacement = _text(entry.get("replacement"), f"{where}.replacement", issues, MAX_CODE)
    reason = _text(entry.get("reason"), f"{where}.reason", issues, 500)
    poa = _text(entry.get("poa"), f"{where}.poa", issues, 1)
    if poa is not None and poa not in POA_INDICATORS:
        issues.add(f"{where}.poa", f"must be one of {', '.join(POA_INDICATORS)}, got {poa!r}")
    system = _text(entry.get("system"), f"{where}.system", issues, 16)
    if system is not None and system not in PROCEDURE_SYSTEMS:
        issues.add(f"{where}.system", f"must be one of {', '.join(PROCEDURE_SYSTEMS)} (or "
                                      f"absent for an ICD-10-CM diagnosis), got {system!r}")
    performed_text = _text(entry.get("performed"), f"{where}.performed", issues, 10)
    performed = None
    if performed_text is not None:
        try:
            performed = date.fromisoformat(performed_text)
        except ValueError:
            issues.add(f"{where}.performed", f"must be a date as YYYY-MM-DD, got "
                                             f"{performed_text!r}")
    units = entry.get("units", 1)
    if type(units) is not int or not 1 <= units <= MAX_UNITS:
        issues.add(f"{where}.units", f"must be a whole number from 1 to {MAX_UNITS}, got "
                                     f"{str(units)[:20]!r}")
    if len(issues.found) > before:
        return None
    assert code is not None and action is not None
    return Decision(action, code.strip(), replacement=replacement, reason=reason, poa=poa,
                    system=system, performed=performed, units=units)


def coder_of(access: RequestAccess) -> Coder:
    principal = access.who()
    return Coder(principal.user_id, principal.role.value)


def _permit_coding_writes(access: RequestAccess) -> None:
    """A finalization writes Conditions, Procedures, the Encounter and a Claim."""
    for resource_type in ("Condition", "Procedure", "Claim"):
        access.permit(resource_type, "c")
        access.permit(resource_type, "u")
    access.permit("Encounter", "u")


# ======================================================================= the worksheet API
@router.get("/queue", dependencies=[Depends(AUTHENTICATED)])
async def work_queue(request: Request, setting: str | None = Query(None, max_length=20),
                     count: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0, le=1_000_000),
                     as_of: str | None = Query(None, alias="asOf")) -> dict[str, Any]:
    """Unbilled encounters (finished, no coded Claim), oldest discharge first, with the days
    since discharge; ``setting`` inpatient or outpatient; paged by ``count`` and ``offset``.
    Restricted records are listed without the patient (audited as a search)."""
    access = access_of(request)
    require_coding(access)
    access.action = AuditAction.SEARCH
    access.target("Encounter")
    access.details["query"] = "coding queue"
    when = _date(as_of, "asOf")
    store: Store = request.app.state.store

    def run() -> dict[str, Any]:
        items = unbilled(store, setting=setting, as_of=when)
        rows = guarded_queue(access, store, items[offset:offset + count])
        return {"total": len(items), "offset": offset, "count": len(rows),
                "asOf": (when or datetime.now(UTC).date()).isoformat(),
                "items": [row.to_json() for row in rows],
                "restricted": sum(1 for row in rows if not row.visible)}

    return await run_in_threadpool(run)


@router.get("/encounters/{encounter_id}/worksheet", dependencies=[Depends(AUTHENTICATED)])
async def encounter_worksheet(request: Request, encounter_id: str) -> dict[str, Any]:
    """The encounter's documents, the suggestions ranked (confidence, proposed, explanation,
    evidence in the joined text and in its document), the decisions recorded, the current
    Claim and the discharge status the edits default to (audited as a read)."""
    access = access_of(request)
    require_coding(access)
    access.action = AuditAction.READ
    store: Store = request.app.state.store

    def run() -> dict[str, Any]:
        guarded = guarded_worksheet(access, store, encounter_id)
        return {**guarded.sheet.to_json(),
                "dischargeStatus": nubc_discharge_status(guarded.encounter)}

    return await run_in_threadpool(run)


@router.post("/encounters/{encounter_id}/edits", dependencies=[Depends(AUTHENTICATED)])
async def encounter_edits(request: Request, encounter_id: str) -> dict[str, Any]:
    """The edits the decisions' claim fails (``errors`` block finalizing); nothing is stored.
    The body is the decisions' (``reason`` optional)."""
    access = access_of(request)
    require_coding(access)
    access.action = AuditAction.READ
    body = decisions_from_json(await _json_object(
        request, MAX_DECISIONS_BYTES, '{"decisions": [...], "reason": ...}'))
    store: Store = request.app.state.store

    def run() -> dict[str, Any]:
        guarded = guarded_worksheet(access, store, encounter_id)
        _plan, found = check_decisions(store, guarded, body.decisions, coder_of(access),
                                       discharge_status=body.discharge_status,
                                       reason=body.reason)
        failed = edits.errors(found)
        return {"encounter": encounter_id, "clean": not failed, "errors": len(failed),
                "edits": [edit.to_json() for edit in found]}

    return await run_in_threadpool(run)


@router.post("/encounters/{encounter_id}/decisions", dependencies=[Depends(AUTHENTICATED)])
async def encounter_decisions(request: Request, encounter_id: str) -> Response:
    """Finalize the encounter: ``{"decisions": [{"action", "code", "replacement"?, "reason"?,
    "poa"?, "system"?, "performed"?, "units"?}...], "reason", "dischargeStatus"?}``. The
    decisions are checked, the claim must pass the edits, then the Conditions, the Encounter's
    billing diagnoses, the Procedures, the draft Claim and the Provenance are stored with the
    audit entry in one transaction: 201 for a first coding, 200 for a re-coding."""
    access = access_of(request)
    require_coding(access)
    _permit_coding_writes(access)
    access.action = AuditAction.UPDATE
    access.details["change"] = "final codes assigned"
    body = decisions_from_json(await _json_object(
        request, MAX_DECISIONS_BYTES, '{"decisions": [...], "reason": ...}'))
    store: Store = request.app.state.store
    source = request.client.host if request.client else None

    def run() -> tuple[Finalized, list[edits.Edit], Resource]:
        guarded = guarded_worksheet(access, store, encounter_id)
        finalized, found = finalize(
            store, guarded, body.decisions, coder_of(access), reason=body.reason or "",
            discharge_status=body.discharge_status,
            before_commit=audit_finalization(access, source))
        with store.read() as txn:
            claim = txn.read("Claim", finalized.claim.split("/")[1])
        return finalized, found, claim

    finalized, found, claim = await run_in_threadpool(run)
    return JSONResponse({"finalized": finalized.to_json(), "claim": claim,
                         "edits": [edit.to_json() for edit in found]},
                        201 if finalized.activity == "CREATE" else 200)


@router.get("/reports/productivity", dependencies=[Depends(AUTHENTICATED)])
async def productivity_report(request: Request, since: str | None = Query(None, max_length=10),
                              until: str | None = Query(None, max_length=10)
                              ) -> dict[str, Any]:
    """Per coder over ``since``..``until`` (whole UTC days; the last 30 days by default):
    encounters coded, finalizations, final codes, codes per encounter, encounters per day."""
    access = access_of(request)
    require_coding(access)
    start, end = report_period(since, until)
    engine = request.app.state.store.engine

    def run() -> dict[str, Any]:
        report = feedback.productivity(engine, since=start, until=end)
        return {"since": start.isoformat(), "until": end.isoformat(),
                "coders": [row.to_json() for row in report]}

    return await run_in_threadpool(run)


@router.get("/reports/accuracy", dependencies=[Depends(AUTHENTICATED)])
async def accuracy_report(request: Request, since: str | None = Query(None, max_length=10),
                          until: str | None = Query(None, max_length=10)) -> dict[str, Any]:
    """How the suggestions fared over the period, per coder and overall: accepted unchanged,
    edited, rejected (explicitly or left alone), and the final codes added by hand."""
    access = access_of(request)
    require_coding(access)
    start, end = report_period(since, until)
    engine = request.app.state.store.engine

    def run() -> dict[str, Any]:
        report = feedback.accuracy(engine, since=start, until=end)
        return {"since": start.isoformat(), "until": end.isoformat(), **report.to_json()}

    return await run_in_threadpool(run)
