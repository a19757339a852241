"""The stay as the grouper reads it, and its MS-DRG: the discharge's patient status, the Claim's
diagnoses and procedures, ``stay_of``, and ``drg``, which records the MS-DRG on the Claim.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from chartkeeper.coding import grouper
from chartkeeper.coding.claim_record import (
    ClaimChanged,
    Record,
    Resource,
    StayError,
    age_on,
    birth_and_sex,
    code_of,
    day_of,
    read_record,
    read_resource,
    require_draft,
)
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.worksheet import (
    ICD10CM,
    INPATIENT_CLASSES,
    POA_FHIR,
    POA_NUBC,
    PROCEDURE_SYSTEMS,
    claim_id,
    version_body,
)
from chartkeeper.store.errors import Gone, NotFound
from chartkeeper.store.service import Store, Txn

# The code system HL7 terminology (THO), CARIN Blue Button, Da Vinci PAS and CMS's Blue Button
# API all use for MS-DRGs: CMS's old page address, kept as the system's identity.
MS_DRG_SYSTEM = ("https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/"
                 "AcuteInpatientPPS/MS-DRG-Classifications-and-Software")
PATIENT_STATUS_SYSTEM = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
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


# -------------------------------------------------------------------- the stay as coded
def stay_dates(record: Record) -> tuple[date | None, date | None]:
    period = record.encounter.get("period") or {}
    admitted, discharged = day_of(period.get("start")), day_of(period.get("end"))
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
    nubc = code_of(disposition, PATIENT_STATUS_SYSTEM)
    if nubc is not None:
        status = nubc.zfill(2)
        if status not in grouper.DISCHARGE_STATUSES:
            raise StayError(f"{where}: NUBC patient status {nubc!r} is not one the grouper "
                            f"accepts ({', '.join(grouper.DISCHARGE_STATUSES)})")
        return status
    code = code_of(disposition, DISPOSITION_SYSTEM) or ""
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
    nubc = code_of(concept, POA_NUBC)
    if nubc is not None:
        return nubc.upper()
    fhir = code_of(concept, POA_FHIR)
    return fhir.upper() if fhir is not None else None


def claim_diagnoses(record: Record, with_poa: bool) -> list[tuple[str, str | None]]:
    """(ICD-10-CM code as stored, POA) in sequence; the first is the principal."""
    found = []
    for entry in sorted(record.claim.get("diagnosis") or [], key=lambda d: d.get("sequence", 0)):
        code = code_of(entry.get("diagnosisCodeableConcept"), ICD10CM)
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


def claim_procedures(record: Record) -> list[tuple[str, date | None]]:
    found = []
    for entry in sorted(record.claim.get("procedure") or [], key=lambda p: p.get("sequence", 0)):
        code = code_of(entry.get("procedureCodeableConcept"), PROCEDURE_SYSTEMS["icd10pcs"])
        where = f"{record.where} procedure {entry.get('sequence')}"
        if code is None:
            record.gaps.append(f"{where} has no ICD-10-PCS code")
            continue
        performed = day_of(entry.get("date"))
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
    record = read_record(txn, str(claim["id"]))
    if not record.institutional:
        raise StayError(f"Claim/{claim['id']} of Encounter/{encounter_id} is not institutional: "
                        "MS-DRGs are for inpatient stays")
    klass = str((encounter.get("class") or {}).get("code") or "")
    if klass not in INPATIENT_CLASSES:
        raise StayError(f"Encounter/{encounter_id} is of class {klass!r}, not an inpatient "
                        f"stay ({', '.join(sorted(INPATIENT_CLASSES))})")
    birth, sex = birth_and_sex(record)
    admitted, discharged = stay_dates(record)
    diagnoses = claim_diagnoses(record, with_poa=True)
    procedures = claim_procedures(record)
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
            age=age_on(birth, admitted), sex=sex, discharge_status=status, admitted=admitted,
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
        principal_entry(body)["packageCode"] = drg_concept(assignment)
        txn.update("Claim", str(claim["id"]), body)
    return assignment


def principal_entry(claim: Resource) -> Resource:
    """The Claim's principal diagnosis entry (the lowest sequence); {} when there is none."""
    entries: list[Resource] = claim.get("diagnosis") or []
    return min(entries, key=lambda d: int(d.get("sequence", 0)), default={})
