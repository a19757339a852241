"""What a hospital's feeds carry for billing, made up for the synthetic hospital.

A real hospital's ADT and charge feeds name its NPI and tax id, each clinician's NPI, the
payer's id and the patient's member id, and post a charge for each service (HL7 v2 DFT^P03).
The synthetic hospital carries the same, so that a coded stay of the demo store can be
grouped and released as an 837I. Nothing here is real: the NPIs pass the Luhn check with the
80840 prefix but lie in blocks that this hospital made up, and the payer ids, tax id and
prices are invented.

Charges are written for inpatient stays only, as revenue-code lines of the facility claim:
an outpatient or emergency facility line and a professional line need a CPT or HCPCS code for
the service, and CPT is licensed (a site's charge master supplies those).

Nothing here draws from the patient's random stream: every value follows from the hospital,
the patient's number or the stay.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chartkeeper.synth.course import INPATIENT, Visit
from chartkeeper.synth.people import V2_IDENTIFIER_TYPE, luhn_check_digit

Resource = dict[str, Any]

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
EIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.4"
TAXONOMY_SYSTEM = "http://nucc.org/provider-taxonomy"
REVENUE_SYSTEM = "https://www.nubc.org/CodeSystem/RevenueCodes"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

HOSPITAL_EIN = "990000001"
HOSPITAL_ADDRESS: Resource = {"use": "work", "line": ["1 Hospital Drive"], "city": "Springfield",
                              "state": "IL", "postalCode": "62702-5555"}
GENERAL_ACUTE_CARE_HOSPITAL = ("282N00000X", "General Acute Care Hospital")
# By the payer kinds of records.PAYERS (self-pay has no payer).
PAYER_IDS = {"medicare": "SYNMCR01", "medicaid": "SYNMCD01", "commercial": "SYNEVG01"}

# The synthetic chargemaster: revenue code, what the line is, price per unit (USD).
ROOM_AND_BOARD = ("0120", "Room and board, semi-private", "1200.00")
PHARMACY = ("0250", "Pharmacy", "85.00")
LABORATORY = ("0300", "Laboratory", "42.00")
OPERATING_ROOM = ("0360", "Operating room services", "2400.00")
OTHER_THERAPY = ("0940", "Other therapeutic services", "610.00")
EMERGENCY_ROOM = ("0450", "Emergency room", "950.00")


def npi(block: str, number: int) -> str:
    """A 10-digit NPI: '1', the 2-digit block, the 6-digit number and its check digit."""
    payload = f"1{block}{number:06d}"
    return payload + luhn_check_digit("80840" + payload)


def hospital_npi() -> str:
    return npi("98", 1)


def practitioner_npi(number: int) -> str:
    """The NPI of practitioner ``number`` (from 1)."""
    return npi("99", number)


def hospital_billing(organization: Resource) -> None:
    """Add the hospital's NPI, tax id, address and taxonomy to its Organization."""
    organization["identifier"] = [{"system": NPI_SYSTEM, "value": hospital_npi()},
                                  {"system": EIN_SYSTEM, "value": HOSPITAL_EIN}]
    organization["address"] = [dict(HOSPITAL_ADDRESS)]
    code, display = GENERAL_ACUTE_CARE_HOSPITAL
    organization["type"].append({"coding": [{"system": TAXONOMY_SYSTEM, "code": code,
                                             "display": display}], "text": display})


def payer_identifier(kind: str) -> list[Resource]:
    """The payer id (NIIP) by which a clearinghouse routes claims to the payer."""
    return [{"type": {"coding": [{"system": V2_IDENTIFIER_TYPE, "code": "NIIP",
                                  "display": "National Insurance Payor Identifier (Payor)"}]},
             "value": PAYER_IDS[kind]}]


def member_id(index: int, registration: int) -> str:
    """The member id on a patient's Coverage (per registration: a duplicate registration is
    a separate enrolment record)."""
    return f"SYN{index:07d}{registration:02d}"


def participant_type(encounter_class: str) -> Resource:
    """The attending physician of a hospital encounter, the primary performer of a visit."""
    code, display = (("PPRF", "primary performer") if encounter_class == "AMB"
                     else ("ATND", "attender"))
    return {"coding": [{"system": PARTICIPATION, "code": code, "display": display}]}


def stay_charges(visit: Visit, encounter_ref: str, patient_ref: str, admitted_through_ed: bool
                 ) -> list[Resource]:
    """The facility charges of an inpatient stay (none for other encounters)."""
    if visit.encounter_class != INPATIENT:
        return []
    start, end = visit.day.isoformat(), (visit.day + timedelta(days=visit.days)).isoformat()
    lines: list[tuple[tuple[str, str, str], int]] = [(ROOM_AND_BOARD, max(1, visit.days))]
    if admitted_through_ed:
        lines.append((EMERGENCY_ROOM, 1))
    if visit.orders:
        lines.append((PHARMACY, len(visit.orders) * max(1, visit.days)))
    if visit.results:
        lines.append((LABORATORY, len(visit.results)))
    surgical = sum(1 for p in visit.procedures if (p.code.icd10pcs or " ")[0] == "0")
    if surgical:
        lines.append((OPERATING_ROOM, surgical))
    if len(visit.procedures) > surgical:
        lines.append((OTHER_THERAPY, len(visit.procedures) - surgical))
    charges = []
    for (code, text, price), units in lines:
        charge: Resource = {
            "resourceType": "ChargeItem", "status": "billable",
            "code": {"coding": [{"system": REVENUE_SYSTEM, "code": code}], "text": text},
            "subject": {"reference": patient_ref},
            "context": {"reference": encounter_ref},
            "quantity": {"value": units},
            "priceOverride": {"value": float(price) * units, "currency": "USD"},
        }
        if code == ROOM_AND_BOARD[0]:
            charge["occurrencePeriod"] = {"start": start, "end": end}
        else:
            charge["occurrenceDateTime"] = start
        charges.append(charge)
    return charges
