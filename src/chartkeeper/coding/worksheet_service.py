"""The coder's work as the API and the workbench pages (``web/coding_work_pages.py``) both
do it: the records shown only after the RecordGuard saw them, the edits that gate a
finalization, and the finalization itself with the request's audit entry inside its
transaction."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from chartkeeper.api.auth import RequestAccess
from chartkeeper.coding import claims, edits, grouper
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci import ServiceLine
from chartkeeper.coding.worksheet import Coder, Decision
from chartkeeper.coding.worksheet_decisions import Plan, prepare
from chartkeeper.coding.worksheet_queue import QueueItem, queue
from chartkeeper.coding.worksheet_view import Worksheet, worksheet
from chartkeeper.coding.worksheet_write import Finalized, write
from chartkeeper.security.access import Capability
from chartkeeper.security.audit import AuditAction
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest, NotFound, OutcomeIssue
from chartkeeper.store.service import Resource, Txn

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


def parse_date(value: str | None, name: str) -> date | None:
    """A date parameter as YYYY-MM-DD, None when absent or empty; ``name`` says which."""
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


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
    """Check the decisions and the edits, then store the final codes (``worksheet_write.write``,
    as ``worksheet_write.decide`` does) with ``before_commit`` appending the request's audit
    entry inside the same transaction. Refused, with nothing stored, when a decision is wrong
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
    end = parse_date(until, "until") or today or datetime.now(UTC).date()
    start = parse_date(since, "since") or end - timedelta(days=REPORT_DAYS - 1)
    if end < start:
        raise InvalidRequest(f"the period ends ({end}) before it starts ({start})")
    return start, end


def coder_of(access: RequestAccess) -> Coder:
    principal = access.who()
    return Coder(principal.user_id, principal.role.value)


def permit_coding_writes(access: RequestAccess) -> None:
    """A finalization writes Conditions, Procedures, the Encounter and a Claim."""
    for resource_type in ("Condition", "Procedure", "Claim"):
        access.permit(resource_type, "c")
        access.permit(resource_type, "u")
    access.permit("Encounter", "u")
