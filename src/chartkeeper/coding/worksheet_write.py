"""Storing a worksheet's checked decisions: the Conditions, the Encounter's billing
diagnoses, the Procedures, the draft Claim and the Provenance naming them all, with the
feedback rows and the audit entry, in one store transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from chartkeeper.coding import feedback
from chartkeeper.coding.worksheet import (
    CLAIM_TYPE,
    CODED,
    ENCOUNTER_SYSTEM,
    ICD10CM,
    POA_FHIR,
    POA_INDICATORS,
    POA_NUBC,
    PROCEDURE_SYSTEMS,
    TAG_SYSTEM,
    AlreadyBilled,
    Coder,
    Decision,
    Resource,
    claim_id,
    resource_id,
    version_body,
)
from chartkeeper.coding.worksheet_decisions import FinalDiagnosis, FinalProcedure, Plan, prepare
from chartkeeper.coding.worksheet_text import read_resource
from chartkeeper.coding.worksheet_view import current_claim
from chartkeeper.security.audit import AuditAction, AuditRecord, AuditTrail
from chartkeeper.store.errors import Conflict
from chartkeeper.store.service import Store, Txn, new_id, now_instant, search_all

CONDITION_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                      "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}
BILLING_ROLE = {"system": "http://terminology.hl7.org/CodeSystem/diagnosis-role",
                "code": "billing", "display": "Billing"}
PRINCIPAL_DIAGNOSIS = {"system": "http://terminology.hl7.org/CodeSystem/ex-diagnosistype",
                       "code": "principal", "display": "Principal Diagnosis"}
PRIMARY_PROCEDURE = {"system": "http://terminology.hl7.org/CodeSystem/ex-procedure-type",
                     "code": "primary", "display": "Primary procedure"}
NORMAL_PRIORITY = {"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                   "code": "normal", "display": "Normal"}
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
ACTIVITIES = {"CREATE": "create", "UPDATE": "revise"}
HEALTHCARE_PAYMENT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                      "code": "HPAYMT", "display": "healthcare payment"}
AUTHOR = {"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
          "code": "author", "display": "Author"}
USER_SYSTEM = "urn:chartkeeper:user"
# The flags billing must clear before it sends the claim: tags of a coded Claim.
NO_COVERAGE = {"system": TAG_SYSTEM, "code": "no-coverage",
               "display": "No active Coverage on the date of service"}
NO_PROVIDER = {"system": TAG_SYSTEM, "code": "no-provider",
               "display": "The encounter names no service provider"}


@dataclass
class Finalized:
    """What a finalization wrote: versioned references (``Type/id/_history/n``)."""

    encounter_id: str
    patient_id: str
    provenance_id: str
    activity: str  # CREATE (first coding of the encounter) or UPDATE
    claim: str
    conditions: list[str]
    procedures: list[str]
    removed: list[str]  # Conditions and Procedures of an earlier coding, now deleted
    encounter: str
    targets: list[str]
    flags: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"encounter": self.encounter_id, "patient": self.patient_id,
                "provenance": self.provenance_id, "activity": self.activity,
                "claim": self.claim, "conditions": self.conditions,
                "procedures": self.procedures, "removed": self.removed,
                "encounterVersion": self.encounter, "targets": self.targets,
                "flags": self.flags, "warnings": self.warnings}


BeforeCommit = Callable[[Txn], None] | None


def decide(store: Store, encounter_id: str, decisions: Sequence[Decision], coder: Coder, *,
           reason: str | None = None, audit: AuditTrail | None = None, via: str = "api",
           source_address: str | None = None, before_commit: BeforeCommit = None
           ) -> Finalized:
    """Check the coder's decisions and store the final codes in one transaction.

    With ``audit`` the entry is appended inside that transaction when the trail shares the
    store's database (else made durable just before the commit, as the API does);
    ``before_commit`` is the hook a page passes to append its request's own entry.
    """
    plan = prepare(store, encounter_id, decisions, coder, reason=reason)
    with store.write() as txn:
        finalized = write(txn, plan)
        if audit is not None:
            record = audit_record(finalized, coder, via=via, source_address=source_address)
            if str(audit.engine.url) == str(store.engine.url):
                audit.append(txn.conn, record)
            else:
                audit.append_many(None, [record], durable=True)
        if before_commit is not None:
            before_commit(txn)
    return finalized


def write(txn: Txn, plan: Plan) -> Finalized:
    """Store a checked plan inside the caller's write transaction (see ``decide``)."""
    documents = plan.documents
    encounter_id, patient_id = documents.encounter_id, documents.patient_id
    encounter = read_resource(txn, "Encounter", encounter_id)
    read_version = documents.encounter["meta"]["versionId"]
    if encounter["meta"]["versionId"] != read_version:
        raise Conflict(f"Encounter/{encounter_id} changed (version {read_version} became "
                       f"{encounter['meta']['versionId']}) since its decisions were checked; "
                       "open the worksheet again")
    existing_claim = current_claim(txn, encounter_id)
    if existing_claim is not None and existing_claim.get("status") != "draft":
        raise AlreadyBilled(f"Claim/{existing_claim['id']} of Encounter/{encounter_id} is "
                            f"{existing_claim.get('status')}, no longer a draft: re-coding "
                            "would change a claim billing has taken; ask billing to void it")
    targets: list[str] = []
    conditions = _write_conditions(txn, plan, targets)
    procedures = _write_procedures(txn, plan, targets)
    removed = _remove_stale(txn, encounter_id, set(conditions + procedures), targets)
    body = version_body(encounter)
    body["diagnosis"] = [entry for entry in body.get("diagnosis") or []
                         if not _is_billing(entry)] + [
        {"condition": {"reference": f"Condition/{condition_id}"},
         "use": {"coding": [BILLING_ROLE]}, "rank": rank}
        for rank, condition_id in enumerate(conditions, start=1)]
    encounter_written = _store(txn, body, targets)
    flags: list[str] = []
    claim = _claim(txn, plan, encounter, conditions, flags)
    claim_written = _store(txn, claim, targets)
    warnings = list(plan.warnings)
    if "no-coverage" in flags:
        warnings.append(f"Patient/{patient_id} has no active Coverage on "
                        f"{documents.date_of_service}: the Claim is stored as a draft tagged "
                        "no-coverage, and billing will refuse it until coverage is recorded")
    if "no-provider" in flags:
        warnings.append(f"Encounter/{encounter_id} names no serviceProvider: the Claim's "
                        "provider is a placeholder, tagged no-provider")
    activity = "UPDATE" if existing_claim is not None else "CREATE"
    provenance_id = new_id()
    txn.create(_provenance(plan, targets, activity), resource_id=provenance_id)
    rows = [_with(row, provenance_id) for row in plan.feedback]
    feedback.record(txn.conn, rows)
    return Finalized(encounter_id, patient_id, provenance_id, activity, claim_written,
                     [t for t in targets if t.startswith("Condition/") and t not in removed],
                     [t for t in targets if t.startswith("Procedure/") and t not in removed],
                     removed, encounter_written, targets, flags, warnings)


def _with(row: feedback.FeedbackRow, provenance_id: str) -> feedback.FeedbackRow:
    return replace(row, provenance_id=provenance_id, decided_at=datetime.now(UTC))


def _is_billing(entry: Resource) -> bool:
    return any(c.get("system") == BILLING_ROLE["system"] and c.get("code") == "billing"
               for c in (entry.get("use") or {}).get("coding") or [])


def _store(txn: Txn, resource: Resource, targets: list[str]) -> str:
    """Write (or leave, when identical) a resource; its current version joins the targets."""
    result = txn.update(resource["resourceType"], resource["id"], resource)
    location = f"{result.resource_type}/{result.resource_id}/_history/{result.version_id}"
    targets.append(location)
    return location


def _write_conditions(txn: Txn, plan: Plan, targets: list[str]) -> list[str]:
    encounter_id = plan.documents.encounter_id
    ids = []
    for diagnosis in plan.diagnoses:
        condition_id = resource_id(encounter_id, "Condition", diagnosis.code)
        _store(txn, {
            "resourceType": "Condition", "id": condition_id, "meta": {"tag": [CODED]},
            "category": [{"coding": [CONDITION_CATEGORY]}],
            "code": {"coding": [{"system": ICD10CM, "code": diagnosis.code,
                                 "display": diagnosis.display}], "text": diagnosis.display},
            "subject": {"reference": f"Patient/{plan.documents.patient_id}"},
            "encounter": {"reference": f"Encounter/{encounter_id}"},
        }, targets)
        ids.append(condition_id)
    return ids


def _write_procedures(txn: Txn, plan: Plan, targets: list[str]) -> list[str]:
    encounter_id = plan.documents.encounter_id
    ids = []
    seen: dict[str, int] = {}
    for procedure in plan.procedures:
        key = f"{procedure.system}|{procedure.code}"
        seen[key] = seen.get(key, 0) + 1
        procedure_id = resource_id(encounter_id, "Procedure", f"{key}|{seen[key]}")
        coding = {"system": PROCEDURE_SYSTEMS[procedure.system], "code": procedure.code}
        if procedure.display:
            coding["display"] = procedure.display
        _store(txn, {
            "resourceType": "Procedure", "id": procedure_id, "meta": {"tag": [CODED]},
            "status": "completed", "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/{plan.documents.patient_id}"},
            "encounter": {"reference": f"Encounter/{encounter_id}"},
            "performedDateTime": procedure.performed.isoformat(),
        }, targets)
        ids.append(procedure_id)
    return ids


def _remove_stale(txn: Txn, encounter_id: str, keep: set[str], targets: list[str]
                  ) -> list[str]:
    """Delete the Conditions and Procedures of an earlier coding that this one dropped."""
    removed = []
    for resource_type in ("Condition", "Procedure"):
        for resource in search_all(txn, resource_type, [
                ("encounter", f"Encounter/{encounter_id}"),
                ("_tag", f"{TAG_SYSTEM}|{CODED['code']}")]):
            if resource["id"] in keep:
                continue
            result = txn.delete(resource_type, resource["id"])
            location = f"{resource_type}/{resource['id']}/_history/{result.version_id}"
            targets.append(location)
            removed.append(location)
    return removed


def _claim(txn: Txn, plan: Plan, encounter: Resource, condition_ids: list[str],
           flags: list[str]) -> Resource:
    documents = plan.documents
    encounter_id, inpatient = documents.encounter_id, documents.setting == "inpatient"
    tags = [CODED]
    provider = encounter.get("serviceProvider")
    if not (provider or {}).get("reference"):
        provider = {"type": "Organization",
                    "display": "Service provider not recorded on the encounter"}
        tags.append(NO_PROVIDER)
        flags.append("no-provider")
    coverages = _active_coverages(txn, documents.patient_id, documents.date_of_service)
    if coverages:
        insurance = [{"sequence": n, "focal": n == 1,
                      "coverage": {"reference": f"Coverage/{coverage['id']}"}}
                     for n, coverage in enumerate(coverages, start=1)]
    else:
        insurance = [{"sequence": 1, "focal": True, "coverage": {
            "type": "Coverage", "display": "No active coverage on the date of service"}}]
        tags.append(NO_COVERAGE)
        flags.append("no-coverage")
    claim: Resource = {
        "resourceType": "Claim", "id": claim_id(encounter_id), "meta": {"tag": tags},
        "identifier": [{"system": ENCOUNTER_SYSTEM, "value": encounter_id}],
        "status": "draft",
        "type": {"coding": [{"system": CLAIM_TYPE,
                             "code": "institutional" if inpatient else "professional",
                             "display": "Institutional" if inpatient else "Professional"}]},
        "use": "claim", "patient": {"reference": f"Patient/{documents.patient_id}"},
        "billablePeriod": {k: v for k, v in (encounter.get("period") or {}).items()
                           if k in ("start", "end")},
        "created": now_instant(), "provider": provider,
        "priority": {"coding": [NORMAL_PRIORITY]},
        "diagnosis": [_claim_diagnosis(n, diagnosis, inpatient)
                      for n, diagnosis in enumerate(plan.diagnoses, start=1)],
        "insurance": insurance,
    }
    if inpatient and plan.procedures:
        claim["procedure"] = [
            {"sequence": n, **({"type": [{"coding": [PRIMARY_PROCEDURE]}]} if n == 1 else {}),
             "date": procedure.performed.isoformat(),
             "procedureCodeableConcept": {"coding": [_procedure_coding(procedure)]}}
            for n, procedure in enumerate(plan.procedures, start=1)]
    if not inpatient and plan.procedures:
        pointers = list(range(1, min(4, len(plan.diagnoses)) + 1))
        claim["item"] = [
            {"sequence": n, "diagnosisSequence": pointers,
             "productOrService": {"coding": [_procedure_coding(procedure)]},
             "servicedDate": procedure.performed.isoformat(),
             "quantity": {"value": procedure.units},
             "encounter": [{"reference": f"Encounter/{encounter_id}"}]}
            for n, procedure in enumerate(plan.procedures, start=1)]
    return claim


def _claim_diagnosis(sequence: int, diagnosis: FinalDiagnosis, inpatient: bool) -> Resource:
    entry: Resource = {"sequence": sequence, "diagnosisCodeableConcept": {"coding": [
        {"system": ICD10CM, "code": diagnosis.code, "display": diagnosis.display}]}}
    if inpatient and sequence == 1:
        entry["type"] = [{"coding": [PRINCIPAL_DIAGNOSIS]}]
    if diagnosis.poa is not None:
        entry["onAdmission"] = poa_concept(diagnosis.poa)
    return entry


def poa_concept(indicator: str) -> Resource:
    """Claim.diagnosis.onAdmission for a UB-04 present-on-admission indicator."""
    display = POA_INDICATORS[indicator]
    codings = [{"system": POA_NUBC, "code": indicator, "display": display}]
    if indicator != "1":
        codings.insert(0, {"system": POA_FHIR, "code": indicator.lower(), "display": display})
    return {"coding": codings, "text": display}


def _procedure_coding(procedure: FinalProcedure) -> Resource:
    coding = {"system": PROCEDURE_SYSTEMS[procedure.system], "code": procedure.code}
    if procedure.display:
        coding["display"] = procedure.display
    return coding


def _active_coverages(txn: Txn, patient_id: str, on: date) -> list[Resource]:
    """The patient's active Coverages in force on the day, in their order of benefits."""
    found = []
    for coverage in search_all(txn, "Coverage", [("beneficiary", f"Patient/{patient_id}"),
                                                  ("status", "active")]):
        period = coverage.get("period") or {}
        if period.get("start") and str(period["start"])[:10] > on.isoformat():
            continue
        if period.get("end") and str(period["end"])[:10] < on.isoformat():
            continue
        found.append(coverage)
    return sorted(found, key=lambda c: (int(c.get("order") or 10**6), str(c["id"])))


def _provenance(plan: Plan, targets: list[str], activity: str) -> Resource:
    documents, coder = plan.documents, plan.coder
    reason: Resource = {"coding": [HEALTHCARE_PAYMENT]}
    if plan.reason and plan.reason.strip():
        reason["text"] = plan.reason.strip()
    provenance: Resource = {
        "resourceType": "Provenance", "target": [{"reference": t} for t in targets],
        "recorded": now_instant(),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": activity,
                                 "display": ACTIVITIES[activity]}],
                     "text": "final codes assigned from the coder's worksheet"},
        "reason": [reason],
        "agent": [{"type": {"coding": [AUTHOR]}, "role": [{"text": coder.role}],
                   "who": {"identifier": {"system": USER_SYSTEM, "value": coder.user},
                           "display": coder.user}}],
    }
    sources = {(d.id, d.version) for d in documents.documents}
    if sources:
        provenance["entity"] = [
            {"role": "source",
             "what": {"reference": f"DocumentReference/{doc_id}/_history/{version}"}}
            for doc_id, version in sorted(sources)]
    return provenance


def audit_record(finalized: Finalized, coder: Coder, *, via: str = "api",
                 source_address: str | None = None) -> AuditRecord:
    """The audit entry of a finalization: who, which encounter, what was written (references
    and counts only: never a code or a word of the notes)."""
    return AuditRecord(
        user_id=coder.user, role=coder.role,
        action=AuditAction.CREATE if finalized.activity == "CREATE" else AuditAction.UPDATE,
        patient_id=finalized.patient_id, resource_type="Encounter",
        resource_id=finalized.encounter_id, source_address=source_address,
        details={"via": via, "change": "final codes assigned",
                 "provenance": finalized.provenance_id, "claim": finalized.claim,
                 "diagnoses": len(finalized.conditions),
                 "procedures": len(finalized.procedures), "removed": len(finalized.removed),
                 "flags": finalized.flags, "versions": finalized.targets[:50]})
