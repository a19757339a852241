"""From a coded Claim to an X12 837 claim: the MS-DRG and the 837I/837P claim.

``stay_of`` builds the grouper's inputs from the record and ``drg`` records the MS-DRG on the
Claim. ``claim_to_x12`` and ``prepare`` read everything an 837 needs from the store (billing
provider, payer, subscriber, attending, charges) and list every missing piece at once. The
release is ``claim_release``; the answers to the 837 are posted by ``remittance_posting``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Any

from chartkeeper import x12
from chartkeeper.coding import edits, grouper
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci import ServiceLine
from chartkeeper.coding.worksheet import (
    CLAIM_TYPE,
    ENCOUNTER_SYSTEM,
    ICD10CM,
    INPATIENT_CLASSES,
    POA_FHIR,
    POA_NUBC,
    PROCEDURE_SYSTEMS,
    claim_id,
    version_body,
)
from chartkeeper.store.errors import Conflict, Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Store, Txn, search_all
from chartkeeper.x12.checks import PATIENT_CONTROL_NUMBER_MAX
from chartkeeper.x12.claim import Claim as X12Claim
from chartkeeper.x12.claim import PayerResponsibility, Sex

Resource = dict[str, Any]

# The code system HL7 terminology (THO), CARIN Blue Button, Da Vinci PAS and CMS's Blue Button
# API all use for MS-DRGs: CMS's old page address, kept as the system's identity.
MS_DRG_SYSTEM = ("https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/"
                 "AcuteInpatientPPS/MS-DRG-Classifications-and-Software")
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
EIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.4"
TAXONOMY_SYSTEM = "http://nucc.org/provider-taxonomy"
REVENUE_SYSTEM = "https://www.nubc.org/CodeSystem/RevenueCodes"
PATIENT_STATUS_SYSTEM = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
POINT_OF_ORIGIN_SYSTEM = "https://www.nubc.org/CodeSystem/PointOfOrigin"
ADMISSION_TYPE_SYSTEM = "https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit"
ACT_PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ADMIT_SOURCE_SYSTEM = "http://terminology.hl7.org/CodeSystem/admit-source"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RELATIONSHIP_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
SOPT_SYSTEM = "urn:oid:2.16.840.1.113883.3.221.5"  # PHDSC Source of Payment Typology
IDENTIFIER_TYPES = "http://terminology.hl7.org/CodeSystem/v2-0203"
CARIN_IDENTIFIER_TYPES = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# Ours: the patient control number (CLM01) a Claim was sent with, and the control number
# (ISA13 = GS06 = ST02) of the batch that carried it.
PCN_SYSTEM = "urn:chartkeeper:patient-control-number"
CONTROL_SYSTEM = "urn:chartkeeper:x12:control-number"
TRANSACTION_SYSTEM = "urn:chartkeeper:x12:transaction"
TAG_SYSTEM = "urn:chartkeeper:claims"
BATCH_TAG = {"system": TAG_SYSTEM, "code": "x12-837", "display": "Outbound X12 837 claim batch"}
REJECTED_CODE = "rejected"
X12_MEDIA_TYPE = "application/EDI-X12"
CHARGEABLE = frozenset({"billable", "billed"})

#: FHIR discharge-disposition codes that name one UB-04 patient status (form locator 17).
#: ``hosp``, ``long`` and ``oth`` name none (home or facility hospice; custodial care, LTCH or
#: Medicaid nursing facility; anything): those stays need the NUBC code itself recorded.
DISCHARGE_STATUS_OF: Mapping[str, str] = {
    "home": "01", "alt-home": "01", "other-hcf": "70", "aadvice": "07", "exp": "20",
    "psy": "65", "rehab": "62", "snf": "03",
}
_AMBIGUOUS_DISPOSITIONS = {
    "hosp": "hospice at home (50) or in a medical facility (51)",
    "long": "custodial care (04), a long-term care hospital (63) or a Medicaid-only nursing "
            "facility (64)",
    "oth": "no particular status",
}
#: Admission source (FHIR admit-source) as the NUBC point of origin (CL102). Since July 2010
#: the emergency department is no point of origin (code 7 was retired): where the patient came
#: from before it is not recorded, so "information not available" (9).
POINT_OF_ORIGIN_OF: Mapping[str, str] = {
    "hosp-trans": "4", "emd": "9", "outp": "2", "born": "5", "gp": "2", "mp": "2",
    "nursing": "5", "psych": "6", "rehab": "6", "other": "9",
}
#: Encounter.priority (v3-ActPriority) as the UB-04 type of admission (CL101).
ADMISSION_TYPE_OF: Mapping[str, str] = {"EM": "1", "UR": "2", "A": "2", "EL": "3", "R": "3"}
#: Coverage.relationship as PAT01 (the patient's relationship to the subscriber).
PATIENT_RELATIONSHIP_OF: Mapping[str, str] = {
    "spouse": "01", "child": "19", "common": "53", "parent": "G8", "other": "G8",
    "injured": "G8",
}
#: Encounter.class as the 837P place of service.
PLACE_OF_SERVICE_OF: Mapping[str, str] = {
    "AMB": "11", "EMER": "23", "OBSENC": "22", "HH": "12", "VR": "02", "SS": "24",
}
_SEX_OF: Mapping[str, Sex] = {"male": "M", "female": "F"}
_RESPONSIBILITY: Mapping[int, PayerResponsibility] = {1: "P", 2: "S"}
_ACCOMMODATION = re.compile(r"01[0-9]{2}|02[01][0-9]")  # room & board revenue codes 0100-0219


# ------------------------------------------------------------------------------- errors
class ClaimsError(InvalidRequest, ValueError):
    """A billing request that cannot be carried out; the message says what and why."""


class StayError(ClaimsError):
    """The record does not give the grouper its inputs (no POA, an unmapped discharge...)."""


class ClaimIncomplete(ClaimsError):
    """The record lacks what the 837 needs; ``missing`` lists every piece at once.

    ``coded`` is the claim as the coding edits read it, when the record gives that much.
    """

    def __init__(self, claim: str, missing: Sequence[str],
                 coded: edits.CodedClaim | None = None) -> None:
        self.missing = tuple(missing)
        self.coded = coded
        lines = "\n".join(f"  - {item}" for item in self.missing)
        super().__init__(f"{claim} cannot be written as an 837 "
                         f"({_count(len(self.missing), 'piece')} missing):\n{lines}")


class ReleaseRefused(ClaimsError):
    """The edits or the X12 release gate refused the claim; nothing was stored or sent."""

    def __init__(self, claim: str, problems: Sequence[str], *,
                 edit_errors: Sequence[edits.Edit] = (),
                 x12_issues: Sequence[x12.X12Issue] = (),
                 missing: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        self.edit_errors = tuple(edit_errors)
        self.x12_issues = tuple(x12_issues)
        self.missing = tuple(missing)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{claim} was not released; nothing was stored or sent "
                         f"({_count(len(self.problems), 'problem')}):\n{lines}")


class AlreadyReleased(Conflict, ValueError):
    """The Claim is no longer a draft: it was released (or cancelled) already."""


class ClaimChanged(Conflict, ValueError):
    """The Claim (or the batch numbering) changed while it was checked: do it again."""


class UnknownResource(NotFound, ValueError):
    """A resource the claim needs is not in the store."""


class OutboxError(ClaimsError):
    """The outbox cannot take the file (before the release), or the write failed (after)."""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# ---------------------------------------------------------------------- reading the record
def read_resource(txn: Txn, resource_type: str, resource_id: str, what: str) -> Resource:
    try:
        return txn.read(resource_type, resource_id)
    except NotFound:
        raise UnknownResource(f"{what}: {resource_type}/{resource_id} is not known") from None
    except Gone:
        raise ClaimsError(f"{what}: {resource_type}/{resource_id} was deleted") from None


def _target(reference: Resource | None, *kinds: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference to one of ``kinds``; None for none or a display."""
    text = str((reference or {}).get("reference") or "")
    kind, _, rest = text.partition("/")
    if kind not in kinds or not rest:
        return None
    return kind, rest.split("/_history/")[0]


def _code(concept: Resource | None, system: str) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def identifier_of(resource: Resource, system: str) -> str | None:
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None


def _typed_identifier(resource: Resource, types: Sequence[tuple[str, str]]) -> str | None:
    for identifier in resource.get("identifier") or []:
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if (coding.get("system"), coding.get("code")) in types and identifier.get("value"):
                return str(identifier["value"])
    return None


def _day(value: object) -> date | None:
    """The calendar day a FHIR date or dateTime names, as written; None when not a full date."""
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _clock(value: object) -> time | None:
    """The time of day a FHIR dateTime names, as written (no time-zone shift)."""
    text = str(value)
    if len(text) < 16 or text[10] != "T":
        return None
    try:
        return time(int(text[11:13]), int(text[14:16]))
    except ValueError:
        return None


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _x12_text(value: str) -> str:
    """Upper case, accents dropped (X12's basic character set); other characters are left for
    the release gate to refuse by name."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip().upper()


def _money(value: object, where: str, gaps: list[str]) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        gaps.append(f"{where}: {value!r} is not an amount")
        return None
    return amount


@dataclass
class _Record:
    """A coded Claim with the Encounter and Patient it bills; ``gaps`` collects what is
    missing, so that every problem is reported at once."""

    claim: Resource
    encounter: Resource
    patient: Resource
    gaps: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"Claim/{self.claim['id']}"

    @property
    def institutional(self) -> bool:
        return _code(self.claim.get("type"), CLAIM_TYPE) == "institutional"


def _record(txn: Txn, claim_ref: str) -> _Record:
    claim = read_resource(txn, "Claim", claim_ref, "the claim")
    encounter_id = identifier_of(claim, ENCOUNTER_SYSTEM)
    if encounter_id is None:
        raise ClaimsError(f"Claim/{claim_ref} names no encounter (identifier "
                          f"{ENCOUNTER_SYSTEM}); only coded Claims are billed here")
    kind = _code(claim.get("type"), CLAIM_TYPE)
    if kind not in ("institutional", "professional"):
        raise ClaimsError(f"Claim/{claim_ref} is of type {kind!r}: only institutional (837I) "
                          "and professional (837P) claims are written")
    encounter = read_resource(txn, "Encounter", encounter_id, f"Claim/{claim_ref}")
    patient_ref = _target(claim.get("patient"), "Patient")
    if patient_ref is None:
        raise ClaimsError(f"Claim/{claim_ref} has no Patient")
    patient = read_resource(txn, "Patient", patient_ref[1], f"Claim/{claim_ref}")
    return _Record(claim, encounter, patient)


def _birth_and_sex(record: _Record) -> tuple[date | None, str]:
    patient = record.patient
    birth = _day(patient.get("birthDate")) if len(str(patient.get("birthDate"))) == 10 \
        else None
    if birth is None:
        record.gaps.append(f"Patient/{patient['id']} has no full birth date (birthDate "
                           f"{patient.get('birthDate')!r}): the age and the 837 need it")
    gender = patient.get("gender")
    return birth, gender if gender in ("male", "female") else "unknown"


def _stay_dates(record: _Record) -> tuple[date | None, date | None]:
    period = record.encounter.get("period") or {}
    admitted, discharged = _day(period.get("start")), _day(period.get("end"))
    where = f"Encounter/{record.encounter['id']}"
    if admitted is None:
        record.gaps.append(f"{where} has no admission date (period.start "
                           f"{period.get('start')!r})")
    if discharged is None:
        record.gaps.append(f"{where} has no discharge date (period.end {period.get('end')!r})")
    return admitted, discharged


def discharge_status(encounter: Resource) -> str:
    """The UB-04 patient status of an Encounter's discharge disposition.

    A NUBC patient status coding is taken as it is; otherwise the FHIR discharge-disposition
    code is mapped (``DISCHARGE_STATUS_OF``). Raises StayError naming the value otherwise.
    """
    where = f"Encounter/{encounter['id']}"
    disposition = (encounter.get("hospitalization") or {}).get("dischargeDisposition")
    if not disposition:
        raise StayError(f"{where} has no hospitalization.dischargeDisposition: the patient "
                        "status is needed to group and bill the stay")
    nubc = _code(disposition, PATIENT_STATUS_SYSTEM)
    if nubc is not None:
        status = nubc.zfill(2)
        if status not in grouper.DISCHARGE_STATUSES:
            raise StayError(f"{where}: NUBC patient status {nubc!r} is not one the grouper "
                            f"accepts ({', '.join(grouper.DISCHARGE_STATUSES)})")
        return status
    code = _code(disposition, DISPOSITION_SYSTEM) or ""
    if code in DISCHARGE_STATUS_OF:
        return DISCHARGE_STATUS_OF[code]
    codings = ", ".join(f"{c.get('system')}|{c.get('code')}"
                        for c in disposition.get("coding") or []) or repr(disposition)
    if code in _AMBIGUOUS_DISPOSITIONS:
        why = f"{code!r} means {_AMBIGUOUS_DISPOSITIONS[code]}"
    else:
        why = f"{codings} is not a discharge-disposition code this maps"
    raise StayError(f"{where}: the discharge disposition {why}; record the UB-04 patient "
                    f"status as a coding of {PATIENT_STATUS_SYSTEM} (known "
                    f"discharge-disposition codes: {', '.join(DISCHARGE_STATUS_OF)})")


def _poa(entry: Resource) -> str | None:
    concept = entry.get("onAdmission")
    nubc = _code(concept, POA_NUBC)
    if nubc is not None:
        return nubc.upper()
    fhir = _code(concept, POA_FHIR)
    return fhir.upper() if fhir is not None else None


def _claim_diagnoses(record: _Record, with_poa: bool) -> list[tuple[str, str | None]]:
    """(ICD-10-CM code as stored, POA) in sequence; the first is the principal."""
    found = []
    for entry in sorted(record.claim.get("diagnosis") or [], key=lambda d: d.get("sequence", 0)):
        code = _code(entry.get("diagnosisCodeableConcept"), ICD10CM)
        where = f"{record.where} diagnosis {entry.get('sequence')}"
        if code is None:
            record.gaps.append(f"{where} has no ICD-10-CM code")
            continue
        poa = _poa(entry)
        if with_poa and poa is None:
            record.gaps.append(f"{where} ({code}) has no present-on-admission indicator")
        found.append((code, poa))
    if not found:
        record.gaps.append(f"{record.where} has no diagnosis")
    return found


def _claim_procedures(record: _Record) -> list[tuple[str, date | None]]:
    found = []
    for entry in sorted(record.claim.get("procedure") or [], key=lambda p: p.get("sequence", 0)):
        code = _code(entry.get("procedureCodeableConcept"), PROCEDURE_SYSTEMS["icd10pcs"])
        where = f"{record.where} procedure {entry.get('sequence')}"
        if code is None:
            record.gaps.append(f"{where} has no ICD-10-PCS code")
            continue
        performed = _day(entry.get("date"))
        if performed is None:
            record.gaps.append(f"{where} ({code}) has no date performed")
        found.append((code, performed))
    return found


# --------------------------------------------------------------------------- the MS-DRG
def stay_of(txn: Txn, encounter_id: str) -> grouper.Stay:
    """The grouper's inputs for an inpatient stay, from its coded Claim and the record.

    Diagnoses in the Claim's sequence (the first is the principal) with POA from
    ``onAdmission``; ICD-10-PCS procedures with their dates; the age in whole years on the
    admission date from Patient.birthDate; the sex from Patient.gender; admission and
    discharge from Encounter.period; the patient status from the discharge disposition.
    """
    encounter = read_resource(txn, "Encounter", encounter_id, "the stay")
    try:
        claim = txn.read("Claim", claim_id(encounter_id))
    except (NotFound, Gone):
        raise StayError(f"Encounter/{encounter_id} has no coded Claim: code the stay first "
                        f"(Claim/{claim_id(encounter_id)} does not exist)") from None
    record = _record(txn, str(claim["id"]))
    if not record.institutional:
        raise StayError(f"Claim/{claim['id']} of Encounter/{encounter_id} is not institutional: "
                        "MS-DRGs are for inpatient stays")
    klass = str((encounter.get("class") or {}).get("code") or "")
    if klass not in INPATIENT_CLASSES:
        raise StayError(f"Encounter/{encounter_id} is of class {klass!r}, not an inpatient "
                        f"stay ({', '.join(sorted(INPATIENT_CLASSES))})")
    birth, sex = _birth_and_sex(record)
    admitted, discharged = _stay_dates(record)
    diagnoses = _claim_diagnoses(record, with_poa=True)
    procedures = _claim_procedures(record)
    status: str | None = None
    try:
        status = discharge_status(encounter)
    except StayError as problem:
        record.gaps.append(str(problem))
    if record.gaps:
        raise StayError(f"Encounter/{encounter_id} cannot be grouped: " + "; ".join(record.gaps))
    assert birth is not None and admitted is not None and discharged is not None
    assert status is not None
    try:
        return grouper.Stay(
            age=_age(birth, admitted), sex=sex, discharge_status=status, admitted=admitted,
            discharged=discharged,
            principal=grouper.Diagnosis(diagnoses[0][0], diagnoses[0][1] or ""),
            secondary=tuple(grouper.Diagnosis(code, poa or "") for code, poa in diagnoses[1:]),
            procedures=tuple(grouper.Procedure(code, performed)
                             for code, performed in procedures))
    except CodeSetError as problem:
        raise StayError(f"Encounter/{encounter_id} cannot be grouped: {problem}") from None


def drg_concept(assignment: grouper.DrgAssignment) -> Resource:
    """Claim.diagnosis.packageCode for an MS-DRG: the code, the grouper version, the title."""
    version = f"{assignment.version // 10}.{assignment.version % 10}"
    code = f"{assignment.drg:03d}"
    return {"coding": [{"system": MS_DRG_SYSTEM, "version": version, "code": code,
                        "display": assignment.title}],
            "text": f"MS-DRG {code} (v{version}): {assignment.title}"}


def drg(store: Store, encounter_id: str, weights: Mapping[int, grouper.DrgWeight] | None = None,
        *, version: int | None = None) -> grouper.DrgAssignment:
    """Group the stay and record its MS-DRG on the Claim (the principal diagnosis's
    ``packageCode``) in a new version. ``version`` defaults to the one in force on the discharge
    date; ``weights`` (IPPS Table 5) gives the relative weight. A stay the grouper does not
    group normally is refused and nothing is recorded."""
    with store.read() as txn:
        stay = stay_of(txn, encounter_id)
        read_version = txn.read("Claim", claim_id(encounter_id))["meta"]["versionId"]
    try:
        assignment = grouper.group(stay, version, weights=weights)
    except CodeSetError as problem:
        raise StayError(f"Encounter/{encounter_id}: {problem}") from None
    if not assignment.grouped:
        raise StayError(f"Encounter/{encounter_id} was not grouped: MS-DRG {assignment.drg} "
                        f"with return code {assignment.return_code} "
                        f"({assignment.return_code_meaning}); nothing was recorded")
    with store.write() as txn:
        claim = txn.read("Claim", claim_id(encounter_id))
        if claim["meta"]["versionId"] != read_version:
            raise ClaimChanged(f"Claim/{claim['id']} changed (version {read_version} became "
                           f"{claim['meta']['versionId']}) while the stay was grouped; group it "
                           "again")
        require_draft(claim, "record a DRG on")
        body = version_body(claim)
        _principal_entry(body)["packageCode"] = drg_concept(assignment)
        txn.update("Claim", str(claim["id"]), body)
    return assignment


def _principal_entry(claim: Resource) -> Resource:
    """The Claim's principal diagnosis entry (the lowest sequence); {} when there is none."""
    entries: list[Resource] = claim.get("diagnosis") or []
    return min(entries, key=lambda d: int(d.get("sequence", 0)), default={})


def require_draft(claim: Resource, action: str) -> None:
    if claim.get("status") != "draft":
        raise AlreadyReleased(f"Claim/{claim['id']} is {claim.get('status')}, not a draft: "
                              f"cannot {action} it (it was released, or cancelled)")


# --------------------------------------------------------------------------- the 837 claim
def patient_control_number(claim_ref: str) -> str:
    """CLM01 for a Claim: its id's letters and digits, upper case, cut to the 20 characters
    payers keep (a UUID's first 80 bits). Stored on the released Claim as an identifier."""
    return re.sub(r"[^0-9A-Za-z]", "", claim_ref)[:PATIENT_CONTROL_NUMBER_MAX].upper()


@dataclass(frozen=True)
class Prepared:
    """A Claim as an X12 claim, with the priced lines to record on the released version."""

    claim: Resource
    x12_claim: X12Claim
    coded: edits.CodedClaim
    items: list[Resource]
    total: Decimal
    payer: str
    warnings: list[str]


@dataclass
class _Built:
    """One claim type's part of the X12 claim, and what the release records of it."""

    fields: dict[str, Any]
    coded: edits.CodedClaim | None
    items: list[Resource]
    total: Decimal
    warnings: list[str] = field(default_factory=list)


def claim_to_x12(txn: Txn, claim_ref: str) -> X12Claim:
    """The 837I (institutional) or 837P (professional) claim model of a coded Claim.

    Raises ClaimIncomplete listing every missing piece (coverage, payer and its payer id,
    subscriber id, the billing provider's NPI, EIN and address, the attending's NPI, a
    placeholder provider, unpriced lines...)."""
    return prepare(txn, claim_ref).x12_claim


def prepare(txn: Txn, claim_ref: str) -> Prepared:
    """``claim_to_x12`` with what the release records: the edits' view, lines and total."""
    record = _record(txn, claim_ref)
    birth, sex = _birth_and_sex(record)
    billing = _billing_provider(txn, record)
    coverage = _coverage(txn, record)
    subscriber, patient, payer, payer_ref = _insured(txn, record, coverage, birth, sex)
    diagnoses = _claim_diagnoses(record, with_poa=record.institutional)
    if record.institutional:
        built = _institutional(txn, record, birth, sex, diagnoses)
    else:
        built = _professional(txn, record, birth, sex, diagnoses)
    if record.gaps or built.coded is None:
        raise ClaimIncomplete(record.where, record.gaps, built.coded)
    assert billing is not None and subscriber is not None and payer_ref is not None
    common: dict[str, Any] = dict(
        patient_control_number=patient_control_number(str(record.claim["id"])),
        billing_provider=billing, subscriber=subscriber, payer=payer, total_charge=built.total,
        patient=patient)
    x12_claim: X12Claim
    if record.institutional:
        x12_claim = x12.InstitutionalClaim(**common, **built.fields)
    else:
        x12_claim = x12.ProfessionalClaim(**common, **built.fields)
    return Prepared(record.claim, x12_claim, built.coded, built.items, built.total, payer_ref,
                    built.warnings)


def _billing_provider(txn: Txn, record: _Record) -> x12.BillingProvider | None:
    provider = record.claim.get("provider")
    target = _target(provider, "Organization")
    if target is None:
        record.gaps.append(f"{record.where}: the provider is a placeholder "
                           f"({(provider or {}).get('display') or provider!r}), not an "
                           "Organization: record the Encounter's serviceProvider and code it "
                           "again")
        return None
    organization = read_resource(txn, *target, f"{record.where} provider")
    where = f"Organization/{target[1]}"
    npi = identifier_of(organization, NPI_SYSTEM)
    ein = identifier_of(organization, EIN_SYSTEM)
    if npi is None:
        record.gaps.append(f"{where} (billing provider) has no NPI (identifier {NPI_SYSTEM})")
    if ein is None:
        record.gaps.append(f"{where} (billing provider) has no EIN (identifier {EIN_SYSTEM})")
    if not organization.get("name"):
        record.gaps.append(f"{where} (billing provider) has no name")
    address = _address(organization.get("address") or [], ("billing", "work"), where,
                       "billing provider", record.gaps)
    taxonomy = next((_code(kind, TAXONOMY_SYSTEM) for kind in organization.get("type") or []
                     if _code(kind, TAXONOMY_SYSTEM)), None)
    if npi is None or ein is None or address is None or not organization.get("name"):
        return None
    return x12.BillingProvider(_x12_text(str(organization["name"])), npi, ein.replace("-", ""),
                               address, taxonomy)


def _address(addresses: list[Resource], preferred: Sequence[str], where: str, whose: str,
             gaps: list[str]) -> x12.Address | None:
    if not addresses:
        gaps.append(f"{where} ({whose}) has no address")
        return None
    chosen = next((a for use in preferred for a in addresses if a.get("use") == use),
                  addresses[0])
    lines = [str(line) for line in chosen.get("line") or [] if str(line).strip()]
    missing = [name for name, value in (("line", lines), ("city", chosen.get("city")),
                                        ("state", chosen.get("state")),
                                        ("postalCode", chosen.get("postalCode"))) if not value]
    if missing:
        gaps.append(f"{where} ({whose}) address lacks {', '.join(missing)}")
        return None
    return x12.Address(_x12_text(lines[0]), _x12_text(str(chosen["city"])),
                       _x12_text(str(chosen["state"])),
                       str(chosen["postalCode"]).replace("-", "").replace(" ", ""),
                       _x12_text(lines[1]) if len(lines) > 1 else None)


def _coverage(txn: Txn, record: _Record) -> tuple[Resource, int] | None:
    """The focal Coverage and its sequence (1 primary, 2 secondary...)."""
    insurance = sorted(record.claim.get("insurance") or [],
                       key=lambda i: (not i.get("focal"), i.get("sequence", 0)))
    if not insurance:
        record.gaps.append(f"{record.where} has no insurance: no payer to bill")
        return None
    target = _target(insurance[0].get("coverage"), "Coverage")
    if target is None:
        display = (insurance[0].get("coverage") or {}).get("display")
        record.gaps.append(f"{record.where} has no Coverage ({display or 'a placeholder'}): "
                           "no payer to bill; record the patient's coverage and code the "
                           "encounter again")
        return None
    coverage = read_resource(txn, *target, f"{record.where} insurance")
    if coverage.get("status") != "active":
        record.gaps.append(f"Coverage/{target[1]} is {coverage.get('status')}, not active")
    return coverage, int(insurance[0].get("sequence") or 1)


def _insured(txn: Txn, record: _Record, found: tuple[Resource, int] | None,
             birth: date | None, sex: str
             ) -> tuple[x12.Subscriber | None, x12.Patient | None, x12.Payer | None,
                        str | None]:
    if found is None:
        return None, None, None, None
    coverage, sequence = found
    where = f"Coverage/{coverage['id']}"
    payer, payer_ref = _payer(txn, record, coverage)
    member_id = coverage.get("subscriberId") or _typed_identifier(
        coverage, [(IDENTIFIER_TYPES, "MB")])
    if not member_id:
        record.gaps.append(f"{where} has no subscriberId (the member id the payer knows)")
    relationship = _code(coverage.get("relationship"), RELATIONSHIP_SYSTEM) or "self"
    holder: Resource = record.patient
    if relationship != "self":
        target = _target(coverage.get("subscriber"), "Patient", "RelatedPerson")
        if target is None:
            record.gaps.append(f"{where}: the beneficiary is the subscriber's {relationship}, "
                               "but the Coverage names no subscriber")
            return None, None, payer, payer_ref
        holder = read_resource(txn, *target, f"{where} subscriber")
    holder_where = f"{holder['resourceType']}/{holder['id']}"
    name = _name(holder, holder_where, record.gaps)
    address = _address(holder.get("address") or [], ("home",), holder_where, "subscriber",
                       record.gaps)
    holder_birth = birth if holder is record.patient else _day(holder.get("birthDate"))
    if holder_birth is None and holder is not record.patient:
        record.gaps.append(f"{holder_where} (subscriber) has no birth date")
    if name is None or address is None or holder_birth is None or not member_id:
        return None, None, payer, payer_ref
    group = next((str(c.get("value")) for c in coverage.get("class") or []
                  if _code(c.get("type"), "http://terminology.hl7.org/CodeSystem/"
                           "coverage-class") == "group" and c.get("value")), None)
    subscriber = x12.Subscriber(
        str(member_id), name[0], name[1], holder_birth,
        _SEX_OF.get(str(holder.get("gender")), "U"), address, group,
        _RESPONSIBILITY.get(sequence, "T"),
        _filing_indicator(coverage, record.institutional))
    patient = None
    if holder is not record.patient:
        own = _name(record.patient, f"Patient/{record.patient['id']}", record.gaps)
        own_address = _address(record.patient.get("address") or [], ("home",),
                               f"Patient/{record.patient['id']}", "patient", record.gaps)
        if own is None or own_address is None or birth is None:
            return None, None, payer, payer_ref
        patient = x12.Patient(PATIENT_RELATIONSHIP_OF.get(relationship, "G8"), own[0], own[1],
                              birth, _SEX_OF.get(sex, "U"), own_address)
    return subscriber, patient, payer, payer_ref


def _payer(txn: Txn, record: _Record, coverage: Resource) -> tuple[x12.Payer | None, str | None]:
    where = f"Coverage/{coverage['id']}"
    payors = coverage.get("payor") or []
    target = _target(payors[0] if payors else None, "Organization")
    if target is None:
        named = (payors[0] if payors else {}).get("reference") or "nobody"
        record.gaps.append(f"no payer: {where} is paid by {named} (self-pay or not an "
                           "Organization), so there is no one to send a claim to")
        return None, None
    organization = read_resource(txn, *target, f"{where} payor")
    payer_id = _typed_identifier(organization, [(IDENTIFIER_TYPES, "NIIP"),
                                                (CARIN_IDENTIFIER_TYPES, "payerid")])
    if payer_id is None:
        record.gaps.append(f"Organization/{target[1]} (payer {organization.get('name')!r}) has "
                           f"no payer id (an identifier of type {IDENTIFIER_TYPES}|NIIP)")
    if not organization.get("name"):
        record.gaps.append(f"Organization/{target[1]} (payer) has no name")
    if payer_id is None or not organization.get("name"):
        return None, f"Organization/{target[1]}"
    return (x12.Payer(_x12_text(str(organization["name"])), payer_id),
            f"Organization/{target[1]}")


def _filing_indicator(coverage: Resource, institutional: bool) -> str:
    """SBR09 from the Coverage type (Source of Payment Typology); ZZ when it says nothing."""
    code = _code(coverage.get("type"), SOPT_SYSTEM) or ""
    if code.startswith("1"):
        return "MA" if institutional else "MB"
    if code.startswith("2"):
        return "MC"
    if code.startswith("31"):
        return "CH"
    if code.startswith("32"):
        return "VA"
    if code.startswith("6"):
        return "BL"
    if code.startswith("5"):
        return "CI"
    return "ZZ"


def _name(person: Resource, where: str, gaps: list[str]) -> tuple[str, str] | None:
    names = person.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    family, given = chosen.get("family"), (chosen.get("given") or [None])[0]
    if not family or not given:
        gaps.append(f"{where} has no family and given name")
        return None
    return _x12_text(str(family)), _x12_text(str(given))


def _clinician(txn: Txn, record: _Record, roles: Sequence[str], what: str
               ) -> x12.Provider | None:
    """The first Encounter participant in one of ``roles`` (v3-ParticipationType)."""
    encounter = record.encounter
    for role in roles:
        for participant in encounter.get("participant") or []:
            if not any(_code(kind, PARTICIPATION_SYSTEM) == role
                       for kind in participant.get("type") or []):
                continue
            target = _target(participant.get("individual"), "Practitioner")
            if target is None:
                continue
            practitioner = read_resource(txn, *target, f"Encounter/{encounter['id']} {what}")
            npi = identifier_of(practitioner, NPI_SYSTEM)
            name = _name(practitioner, f"Practitioner/{target[1]}", record.gaps)
            if npi is None:
                record.gaps.append(f"Practitioner/{target[1]} ({what}) has no NPI (identifier "
                                   f"{NPI_SYSTEM})")
            if npi is None or name is None:
                return None
            return x12.Provider(name[0], name[1], npi)
    record.gaps.append(f"Encounter/{encounter['id']} names no {what} (a participant of type "
                       f"{' or '.join(roles)} who is a Practitioner)")
    return None


def _charges(txn: Txn, record: _Record) -> list[Resource]:
    return sorted((c for c in search_all(txn, "ChargeItem", [
        ("context", f"Encounter/{record.encounter['id']}")]) if c.get("status") in CHARGEABLE),
        key=lambda c: str(c["id"]))


def _charge_day(charge: Resource) -> date | None:
    moment = charge.get("occurrenceDateTime") or (charge.get("occurrencePeriod") or {}).get(
        "start")
    return _day(moment) if moment else None


def _units(value: object, where: str, gaps: list[str]) -> Decimal:
    units = _money(1 if value is None else value, f"{where} quantity", gaps)
    return units if units is not None else Decimal(1)


def _institutional(txn: Txn, record: _Record, birth: date | None, sex: str,
                   diagnoses: list[tuple[str, str | None]]) -> _Built:
    encounter = record.encounter
    admitted, discharged = _stay_dates(record)
    status: str | None = None
    try:
        status = discharge_status(encounter)
    except StayError as problem:
        record.gaps.append(str(problem))
    procedures = _claim_procedures(record)
    coded = None
    if birth is not None and admitted is not None and discharged is not None and status:
        coded = _coded(record, "inpatient", _age(birth, admitted), sex, diagnoses,
                       admitted=admitted, discharged=discharged, discharge_status=status,
                       procedures=tuple(edits.ClaimProcedure(code, performed)
                                        for code, performed in procedures))
    attending = _clinician(txn, record, ("ATND",), "attending physician")
    package = _code(_principal_entry(record.claim).get("packageCode"), MS_DRG_SYSTEM)
    if package is None:
        record.gaps.append(f"{record.where} has no MS-DRG recorded: group the stay first "
                           "(`chartkeeper claims drg ENCOUNTER`)")
    elif coded is not None and not record.gaps:
        _check_drg(record, coded, package)
    lines, items, total = _revenue_lines(txn, record, admitted, discharged)
    if record.gaps or admitted is None or discharged is None or status is None:
        return _Built({}, coded, items, total)
    hospitalization = encounter.get("hospitalization") or {}
    admit_source = _code(hospitalization.get("admitSource"), ADMIT_SOURCE_SYSTEM) or "other"
    origin = _code(hospitalization.get("admitSource"), POINT_OF_ORIGIN_SYSTEM) or \
        POINT_OF_ORIGIN_OF.get(admit_source, "9")
    admission_type = _code(encounter.get("priority"), ADMISSION_TYPE_SYSTEM) or \
        ADMISSION_TYPE_OF.get(_code(encounter.get("priority"), ACT_PRIORITY_SYSTEM) or "") or \
        {"born": "4", "emd": "1"}.get(admit_source, "9")
    period = encounter.get("period") or {}
    pcs = [x12.Procedure(code, performed) for code, performed in procedures
           if performed is not None]
    return _Built(dict(
        facility_code="11", statement_from=admitted, statement_to=discharged,
        admission_type=admission_type, discharge_status=status,
        principal_diagnosis=x12.Diagnosis(diagnoses[0][0].replace(".", ""), diagnoses[0][1]),
        other_diagnoses=tuple(x12.Diagnosis(code.replace(".", ""), poa)
                              for code, poa in diagnoses[1:]),
        lines=lines, admission_source=origin, admission_date=admitted,
        admission_hour=_clock(period.get("start")), discharge_hour=_clock(period.get("end")),
        principal_procedure=pcs[0] if pcs else None, other_procedures=tuple(pcs[1:]),
        attending_provider=attending, drg=package), coded, items, total)


def _check_drg(record: _Record, coded: edits.CodedClaim, package: str) -> None:
    """The recorded MS-DRG must be what the stay groups to now, under the version recorded."""
    coding = next(c for c in _principal_entry(record.claim)["packageCode"]["coding"]
                  if c.get("system") == MS_DRG_SYSTEM)
    recorded = str(coding.get("version") or "")
    version = int(recorded.replace(".", "")) if re.fullmatch(r"\d\d\.\d", recorded) else None
    assert coded.admitted is not None and coded.discharged is not None
    assert coded.discharge_status is not None
    try:
        principal, *secondary = (grouper.Diagnosis(d.code, d.poa or "") for d in coded.diagnoses)
        now = grouper.group(grouper.Stay(
            coded.age, coded.sex, coded.discharge_status, coded.admitted, coded.discharged,
            principal, tuple(secondary),
            tuple(grouper.Procedure(p.code, p.performed) for p in coded.procedures)), version)
    except CodeSetError as problem:
        record.gaps.append(f"{record.where}: the stay cannot be grouped to check its MS-DRG "
                           f"{package}: {problem}")
        return
    if f"{now.drg:03d}" != package:
        record.gaps.append(f"{record.where} records MS-DRG {package}, but the stay groups to "
                           f"{now.drg:03d} ({now.title}) now: group it again")


@dataclass(frozen=True)
class _Line:
    """A priced ChargeItem: revenue code, date, HCPCS/CPT (system, code), amount, units."""

    revenue: str
    day: date | None
    service: tuple[str, str] | None
    amount: Decimal
    units: Decimal

    @property
    def accommodation(self) -> bool:
        return bool(_ACCOMMODATION.fullmatch(self.revenue))


def _service_coding(concept: Resource | None) -> tuple[str, str] | None:
    """(system, code) of the CPT or HCPCS coding of a concept."""
    for system in (PROCEDURE_SYSTEMS["cpt"], PROCEDURE_SYSTEMS["hcpcs"]):
        code = _code(concept, system)
        if code is not None:
            return system, code
    return None


def _price(record: _Record, charge: Resource) -> Decimal | None:
    """ChargeItem.priceOverride: the charge's amount (R4's total price of the item)."""
    where = f"ChargeItem/{charge['id']}"
    price = (charge.get("priceOverride") or {}).get("value")
    if price is None:
        record.gaps.append(f"{where} has no priceOverride: it is not priced")
        return None
    return _money(price, f"{where} priceOverride", record.gaps)


def _revenue_lines(txn: Txn, record: _Record, admitted: date | None, discharged: date | None
                   ) -> tuple[tuple[x12.InstitutionalServiceLine, ...], list[Resource], Decimal]:
    """837I lines from the stay's ChargeItems in revenue code order (room & board first); the
    accommodation days (revenue codes 0100-0219) must add up to the days of the stay."""
    found = []
    for charge in _charges(txn, record):
        revenue = _code(charge.get("code"), REVENUE_SYSTEM)
        if revenue is None:
            record.gaps.append(f"ChargeItem/{charge['id']} has no revenue code "
                               f"({REVENUE_SYSTEM}): an 837I line needs one")
            continue
        amount = _price(record, charge)
        units = _units((charge.get("quantity") or {}).get("value"),
                       f"ChargeItem/{charge['id']}", record.gaps)
        if amount is not None:
            found.append(_Line(revenue, _charge_day(charge), _service_coding(charge.get("code")),
                               amount, units))
    if not found:
        record.gaps.append(f"Encounter/{record.encounter['id']} has no billable ChargeItem: "
                           "an 837I needs its room & board and other charges")
    found.sort(key=lambda line: (line.revenue, line.day or date.min))
    if admitted is not None and discharged is not None and found:
        days = max(1, (discharged - admitted).days)  # the discharge day is not a day billed
        billed = sum((line.units for line in found if line.accommodation), Decimal(0))
        if billed != days:
            record.gaps.append(f"room & board (revenue codes 0100-0219) bills {billed} days; "
                               f"the stay {admitted}..{discharged} is {days} days")
    lines = tuple(x12.InstitutionalServiceLine(
        line.revenue, line.amount, line.units, line.day,
        line.service[1] if line.service else None,
        unit_basis="DA" if line.accommodation else "UN") for line in found)
    items = []
    for number, line in enumerate(found, start=1):
        product = {"system": line.service[0], "code": line.service[1]} if line.service else {
            "system": DATA_ABSENT, "code": "not-applicable", "display": "Not Applicable"}
        item: Resource = {
            "sequence": number, "revenue": {"coding": [{"system": REVENUE_SYSTEM,
                                                        "code": line.revenue}]},
            "productOrService": {"coding": [product]}, "quantity": {"value": _number(line.units)},
            "net": usd(line.amount),
            "encounter": [{"reference": f"Encounter/{record.encounter['id']}"}]}
        if line.day is not None:
            item["servicedDate"] = line.day.isoformat()
        items.append(item)
    return lines, items, _total(record, [line.amount for line in found])


def _total(record: _Record, amounts: Sequence[Decimal]) -> Decimal:
    """Claim.total when billing recorded one (the release gate checks it against the lines),
    else the sum of the lines."""
    recorded = (record.claim.get("total") or {}).get("value")
    if recorded is not None:
        amount = _money(recorded, f"{record.where} total", record.gaps)
        if amount is not None:
            return amount
    return sum(amounts, Decimal(0))


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def usd(amount: Decimal) -> Resource:
    return {"value": _number(amount), "currency": "USD"}


def _professional(txn: Txn, record: _Record, birth: date | None, sex: str,
                  diagnoses: list[tuple[str, str | None]]) -> _Built:
    encounter = record.encounter
    period = encounter.get("period") or {}
    service_day = _day(period.get("end") or period.get("start"))
    if service_day is None:
        record.gaps.append(f"Encounter/{encounter['id']} has no date of service")
    rendering = _clinician(txn, record, ("PPRF", "ATND"), "rendering provider")
    klass = str((encounter.get("class") or {}).get("code") or "")
    place = PLACE_OF_SERVICE_OF.get(klass)
    if place is None:
        record.gaps.append(f"Encounter/{encounter['id']} class {klass!r} has no place of "
                           f"service ({', '.join(PLACE_OF_SERVICE_OF)} do)")
    positions = {entry.get("sequence"): number for number, entry in enumerate(
        sorted(record.claim.get("diagnosis") or [], key=lambda d: d.get("sequence", 0)),
        start=1)}
    prices = _prices(txn, record)
    lines, items, amounts, coded_lines = [], [], [], []
    for item in sorted(record.claim.get("item") or [], key=lambda i: i.get("sequence", 0)):
        where = f"{record.where} item {item.get('sequence')}"
        service = _service_coding(item.get("productOrService"))
        if service is None:
            record.gaps.append(f"{where} has no CPT or HCPCS code")
            continue
        code = service[1]
        units = _units((item.get("quantity") or {}).get("value"), where, record.gaps)
        day = _day(item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start")
                   ) or service_day
        modifiers = tuple(str(c.get("code")) for m in item.get("modifier") or []
                          for c in (m.get("coding") or [])[:1])
        try:
            coded_lines.append(ServiceLine(code, modifiers, int(units), day))
        except CodeSetError as problem:
            record.gaps.append(f"{where}: {problem}")
        amount = prices.pop(service, None)
        if amount is None:
            record.gaps.append(f"{where} ({code}) has no charge: record a priced ChargeItem "
                               "with this code on the encounter")
            continue
        pointers = tuple(positions.get(sequence, 0)
                         for sequence in item.get("diagnosisSequence") or [])
        if day is not None:
            lines.append(x12.ProfessionalServiceLine(code, amount, units, day, pointers,
                                                     modifiers))
        amounts.append(amount)
        items.append({**item, "net": usd(amount)})
    warnings = [f"ChargeItem code {code} ({system}) is on the encounter but not coded on the "
                "Claim: it is not billed" for system, code in sorted(prices)]
    coded = None
    if birth is not None and service_day is not None:
        coded = _coded(record, "outpatient", _age(birth, service_day), sex, diagnoses,
                       service_date=service_day, lines=tuple(coded_lines))
    total = _total(record, amounts)
    if record.gaps or place is None:
        return _Built({}, coded, items, total, warnings)
    return _Built(dict(
        place_of_service=place,
        diagnoses=tuple(x12.Diagnosis(code.replace(".", "")) for code, _ in diagnoses),
        lines=tuple(lines), rendering_provider=rendering), coded, items, total, warnings)


def _prices(txn: Txn, record: _Record) -> dict[tuple[str, str], Decimal]:
    """The charges on the encounter by CPT/HCPCS (system, code); several of one are added."""
    prices: dict[tuple[str, str], Decimal] = {}
    for charge in _charges(txn, record):
        amount = _price(record, charge)
        service = _service_coding(charge.get("code"))
        if service is not None and amount is not None:
            prices[service] = prices.get(service, Decimal(0)) + amount
    return prices


def _coded(record: _Record, setting: edits.Setting, age: int, sex: str,
           diagnoses: list[tuple[str, str | None]], **stay: Any) -> edits.CodedClaim | None:
    try:
        return edits.CodedClaim(
            setting=setting, age=age, sex=sex,
            diagnoses=tuple(edits.ClaimDiagnosis(code, poa) for code, poa in diagnoses),
            **stay)
    except edits.ClaimError as problem:
        record.gaps.append(f"{record.where}: {problem}")
        return None
