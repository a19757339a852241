"""Pre-release claim checks that pyx12 cannot make: NPIs, sums, pointers, code formats, dates."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from datetime import date
from decimal import Decimal

from chartkeeper.x12.build import DELIMITERS, HI_CODES_PER_SEGMENT
from chartkeeper.x12.claim import (
    INPATIENT_FACILITY_CODES,
    POA_FACILITY_CODES,
    Address,
    Claim,
    Diagnosis,
    Envelope,
    InstitutionalClaim,
    ProfessionalClaim,
    Provider,
)
from chartkeeper.x12.errors import X12Issue

#: ICD-10-CM without the dot: a letter, a digit, a digit or A/B, then up to 4 characters.
ICD10CM_PATTERN = re.compile(r"[A-Z][0-9][0-9AB][0-9A-Z]{0,4}")
#: ICD-10-PCS: 7 characters of digits and letters other than I and O.
ICD10PCS_PATTERN = re.compile(r"[0-9A-HJ-NP-Z]{7}")
#: CPT (5 digits, or 4 digits and F/T/U) or HCPCS Level II (a letter and 4 digits).
HCPCS_PATTERN = re.compile(r"[0-9]{4}[0-9FTU]|[A-V][0-9]{4}")
MODIFIER_PATTERN = re.compile(r"[0-9A-Z]{2}")
REVENUE_CODE_PATTERN = re.compile(r"[0-9]{4}")
MS_DRG_PATTERN = re.compile(r"[0-9]{3}")
NPI_PATTERN = re.compile(r"[12][0-9]{9}")
POA_VALUES = frozenset({"Y", "N", "U", "W", "1"})
#: The IG asks payers to keep at least 20 characters of CLM01; longer ones come back cut short.
PATIENT_CONTROL_NUMBER_MAX = 20
PROFESSIONAL_MAX_LINES = 50
INSTITUTIONAL_MAX_LINES = 999
MAX_POINTERS = 4
MAX_MODIFIERS = 4


def npi_check_digit(first_nine: str) -> int:
    """The Luhn check digit of an NPI: computed over the card prefix 80840 and the 9 digits."""
    total = 0
    for index, char in enumerate(reversed("80840" + first_nine)):
        digit = int(char)
        if index % 2 == 0:  # doubled: every second digit counting leftwards from the check digit
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return (10 - total % 10) % 10


def npi_is_valid(npi: str) -> bool:
    """True for 10 digits starting with 1 or 2 whose last digit is the Luhn check digit."""
    return bool(NPI_PATTERN.fullmatch(npi)) and npi_check_digit(npi[:9]) == int(npi[9])


class _Findings:
    """Collects issues for one claim, each located at the claim's patient control number."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.issues: list[X12Issue] = []

    def add(self, code: str, message: str) -> None:
        self.issues.append(X12Issue("chartkeeper", code, self.where, message))


def check_claims(claims: Sequence[Claim], envelope: Envelope) -> list[X12Issue]:
    """Every problem in the envelope and the claims that pyx12's structural check cannot see."""
    findings = _Findings("envelope")
    _check_text_values(findings, envelope, "envelope")
    phone = envelope.submitter.contact_phone
    if not re.fullmatch(r"[0-9]{10}", phone):
        findings.add("phone-format", f"submitter phone {phone!r} must be 10 digits")
    for role, party in (("submitter", envelope.submitter), ("receiver", envelope.receiver)):
        if not 1 <= len(party.edi_id) <= 15:
            findings.add("envelope", f"{role} EDI id {party.edi_id!r} must be 1 to 15 characters")
    for what, number in (("interchange", envelope.interchange_control_number),
                         ("group", envelope.group_control_number),
                         ("transaction set", envelope.transaction_control_number)):
        if not 0 < number < 10**9:
            findings.add("envelope", f"{what} control number {number} must be 1 to 999999999")
    issues = findings.issues
    if not claims:
        issues.append(X12Issue("chartkeeper", "no-claims", "batch", "the batch holds no claims"))
    kinds = {type(claim) for claim in claims}
    if len(kinds) > 1:
        issues.append(X12Issue("chartkeeper", "mixed-claim-types", "batch",
                               "professional and institutional claims go in separate 837s"))
    for claim in claims:
        issues.extend(check_claim(claim))
    return issues


def check_claim(claim: Claim) -> list[X12Issue]:
    """Every problem of one claim that pyx12 cannot know about."""
    findings = _Findings(f"claim {claim.patient_control_number!r}")
    _check_text_values(findings, claim, "claim")
    _check_parties(findings, claim)
    charges = [line.charge for line in claim.lines]
    _check_charges(findings, claim.total_charge, charges, [line.units for line in claim.lines])
    if isinstance(claim, ProfessionalClaim):
        _check_professional(findings, claim)
    else:
        _check_institutional(findings, claim)
    return findings.issues


def _check_text_values(findings: _Findings, value: object, path: str) -> None:
    """Every string in the model is walked: delimiters or non-ASCII would break the segments."""
    if isinstance(value, str):
        bad = sorted(DELIMITERS.intersection(value))
        if bad:
            findings.add("delimiter-in-value",
                         f"{path} {value!r} contains the X12 delimiter(s) {''.join(bad)}")
        if any(not " " <= char <= "~" for char in value):
            findings.add("character-set",
                         f"{path} {value!r} has characters outside printable ASCII")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _check_text_values(findings, getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, tuple):
        for index, item in enumerate(value, start=1):
            _check_text_values(findings, item, f"{path}[{index}]")


def _check_npi(findings: _Findings, npi: str, whose: str) -> None:
    if not NPI_PATTERN.fullmatch(npi):
        findings.add("npi-format",
                     f"{whose} NPI {npi!r} must be 10 digits starting with 1 or 2")
    elif not npi_is_valid(npi):
        findings.add("npi-check-digit", f"{whose} NPI {npi} fails the Luhn check digit "
                     f"(expected last digit {npi_check_digit(npi[:9])}, found {npi[9]})")


def _check_address(findings: _Findings, address: Address, whose: str, nine_digits: bool) -> None:
    pattern = r"[0-9]{9}" if nine_digits else r"[0-9]{5}(?:[0-9]{4})?"
    if not re.fullmatch(pattern, address.postal_code):
        expected = "9 digits (ZIP+4)" if nine_digits else "5 or 9 digits"
        findings.add("zip-format", f"{whose} ZIP {address.postal_code!r}: expected {expected}")


def _check_parties(findings: _Findings, claim: Claim) -> None:
    pcn = claim.patient_control_number
    if not pcn.strip() or len(pcn) > PATIENT_CONTROL_NUMBER_MAX:
        findings.add("patient-control-number", f"patient control number {pcn!r} must be 1 to "
                     f"{PATIENT_CONTROL_NUMBER_MAX} characters")
    if claim.payer is None:
        findings.add("payer-missing", "the claim has no payer (loop 2010BB); nothing to send to")
    elif not claim.payer.payer_id.strip() or not claim.payer.name.strip():
        findings.add("payer-missing", f"payer {claim.payer!r} lacks a name or a payer id")
    if not claim.subscriber.member_id.strip():
        findings.add("subscriber-id-missing", f"subscriber {claim.subscriber.last_name} "
                     f"{claim.subscriber.first_name} has no member id (2010BA NM109)")
    provider = claim.billing_provider
    _check_npi(findings, provider.npi, "billing provider")
    if not re.fullmatch(r"[0-9]{9}", provider.tax_id):
        findings.add("tax-id-format",
                     f"billing provider EIN {provider.tax_id!r} must be 9 digits, no hyphen")
    # The 837 IGs require the billing provider's full ZIP+4.
    _check_address(findings, provider.address, "billing provider", nine_digits=True)
    _check_address(findings, claim.subscriber.address, "subscriber", nine_digits=False)
    if claim.patient is not None:
        _check_address(findings, claim.patient.address, "patient", nine_digits=False)
    for role, clinician in _clinicians(claim):
        _check_npi(findings, clinician.npi, f"{role} provider")


def _clinicians(claim: Claim) -> Iterator[tuple[str, Provider]]:
    if claim.rendering_provider is not None:
        yield "rendering", claim.rendering_provider
    if isinstance(claim, InstitutionalClaim):
        if claim.attending_provider is not None:
            yield "attending", claim.attending_provider
        if claim.operating_provider is not None:
            yield "operating", claim.operating_provider


def _decimals(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _check_charges(
    findings: _Findings, total: Decimal, charges: list[Decimal], units: list[Decimal]
) -> None:
    if not charges:
        findings.add("no-service-lines", "the claim has no service lines")
    amounts = [("total charge", total), *((f"line {n} charge", c) for n, c in
                                          enumerate(charges, start=1))]
    amounts += [(f"line {n} units", u) for n, u in enumerate(units, start=1)]
    infinite = [(what, value) for what, value in amounts if not value.is_finite()]
    for what, value in infinite:
        findings.add("amount-not-finite", f"{what} {value} is not a number")
    if infinite:
        return  # NaN cannot be compared or summed; the other amount checks would only repeat it
    for number, (charge, quantity) in enumerate(zip(charges, units, strict=True), start=1):
        if charge < 0 or _decimals(charge) > 2:
            findings.add("line-charge", f"line {number} charge {charge} must be >= 0 in cents")
        if quantity <= 0:
            findings.add("line-units", f"line {number} units {quantity} must be more than 0")
    if _decimals(total) > 2:
        findings.add("total-charge", f"total charge {total} has more than 2 decimals")
    line_sum = sum(charges, Decimal(0))
    if total != line_sum:
        findings.add("total-charge-mismatch",
                     f"total charge {total} is not the sum of the line charges {line_sum}")


def _check_icd10cm(findings: _Findings, code: str, role: str) -> None:
    if not ICD10CM_PATTERN.fullmatch(code):
        findings.add("icd10cm-format", f"{role} diagnosis {code!r} is not an ICD-10-CM code "
                     "(letter, digit, digit or A/B, up to 4 more; no dot)")


def _check_service_codes(
    findings: _Findings, number: int, code: str | None, modifiers: tuple[str, ...]
) -> None:
    if code is not None and not HCPCS_PATTERN.fullmatch(code):
        findings.add("procedure-code-format",
                     f"line {number} procedure {code!r} is not a CPT/HCPCS code")
    if len(modifiers) > MAX_MODIFIERS:
        findings.add("modifier-count", f"line {number} has {len(modifiers)} modifiers; at most 4")
    if modifiers and code is None:
        findings.add("modifier-without-code", f"line {number} has modifiers but no HCPCS code")
    for modifier in modifiers:
        if not MODIFIER_PATTERN.fullmatch(modifier):
            findings.add("modifier-format",
                         f"line {number} modifier {modifier!r} must be 2 letters/digits")


def _check_bill_codes(findings: _Findings, place: str, place_name: str, frequency: str) -> None:
    if not re.fullmatch(r"[0-9]{2}", place):
        findings.add("place-of-service", f"{place_name} {place!r} must be 2 digits")
    if not re.fullmatch(r"[0-9A-Z]", frequency):
        findings.add("frequency-code", f"claim frequency code {frequency!r} must be 1 character")


def _check_professional(findings: _Findings, claim: ProfessionalClaim) -> None:
    _check_bill_codes(findings, claim.place_of_service, "place of service",
                      claim.frequency_code)
    if not claim.diagnoses:
        findings.add("diagnosis-missing", "an 837P claim needs at least one diagnosis")
    if len(claim.diagnoses) > HI_CODES_PER_SEGMENT:
        findings.add("too-many-diagnoses",
                     f"{len(claim.diagnoses)} diagnoses; an 837P holds at most 12")
    for position, dx in enumerate(claim.diagnoses, start=1):
        _check_icd10cm(findings, dx.code, f"diagnosis {position}")
        if dx.poa is not None:
            findings.add("poa-value", f"diagnosis {dx.code} has POA {dx.poa!r}; present on "
                         "admission is reported on institutional claims only")
    if len(claim.lines) > PROFESSIONAL_MAX_LINES:
        findings.add("too-many-lines", f"{len(claim.lines)} lines; an 837P holds at most 50")
    births = [claim.subscriber.birth_date] if claim.patient is None else [claim.patient.birth_date]
    for number, line in enumerate(claim.lines, start=1):
        _check_service_codes(findings, number, line.procedure_code, line.modifiers)
        if line.place_of_service is not None and not re.fullmatch(r"[0-9]{2}",
                                                                  line.place_of_service):
            findings.add("place-of-service",
                         f"line {number} place of service {line.place_of_service!r}: 2 digits")
        pointers = line.diagnosis_pointers
        if not 1 <= len(pointers) <= MAX_POINTERS:
            findings.add("diagnosis-pointer",
                         f"line {number} has {len(pointers)} diagnosis pointers; expected 1 to 4")
        for pointer in pointers:
            if not 1 <= pointer <= len(claim.diagnoses):
                findings.add("diagnosis-pointer", f"line {number} points at diagnosis {pointer}, "
                             f"but the claim has {len(claim.diagnoses)} diagnoses")
        if len(set(pointers)) != len(pointers):
            findings.add("diagnosis-pointer", f"line {number} repeats a diagnosis pointer")
        if line.service_date < births[0]:
            findings.add("dates-out-of-order", f"line {number} service date "
                         f"{line.service_date} is before the patient's birth {births[0]}")


def _diagnoses(claim: InstitutionalClaim) -> Iterator[tuple[str, Diagnosis]]:
    yield "principal", claim.principal_diagnosis
    for position, dx in enumerate(claim.other_diagnoses, start=1):
        yield f"other diagnosis {position}", dx


def _check_institutional(findings: _Findings, claim: InstitutionalClaim) -> None:
    inpatient = claim.facility_code in INPATIENT_FACILITY_CODES
    _check_bill_codes(findings, claim.facility_code, "facility type code", claim.frequency_code)
    for role, dx in _diagnoses(claim):
        _check_icd10cm(findings, dx.code, role)
        if dx.poa is not None and dx.poa not in POA_VALUES:
            findings.add("poa-value", f"{role} diagnosis {dx.code} has POA {dx.poa!r}; "
                         "expected one of Y N U W 1")
        elif dx.poa is None and claim.facility_code in POA_FACILITY_CODES:
            findings.add("poa-missing", f"{role} diagnosis {dx.code} has no POA indicator; "
                         "inpatient hospital claims need one on every diagnosis (1 if exempt)")
    if claim.admitting_diagnosis is not None:
        _check_icd10cm(findings, claim.admitting_diagnosis, "admitting")
    if len(claim.other_diagnoses) > 2 * HI_CODES_PER_SEGMENT:
        findings.add("too-many-diagnoses", f"{len(claim.other_diagnoses)} other diagnoses; "
                     "an 837I holds at most 24")
    if claim.drg is not None and not MS_DRG_PATTERN.fullmatch(claim.drg):
        findings.add("drg-format", f"DRG {claim.drg!r} must be a 3-digit MS-DRG")
    if len(claim.lines) > INSTITUTIONAL_MAX_LINES:
        findings.add("too-many-lines", f"{len(claim.lines)} lines; an 837I holds at most 999")
    for number, line in enumerate(claim.lines, start=1):
        if not REVENUE_CODE_PATTERN.fullmatch(line.revenue_code):
            findings.add("revenue-code-format",
                         f"line {number} revenue code {line.revenue_code!r} must be 4 digits")
        _check_service_codes(findings, number, line.procedure_code, line.modifiers)
        if line.service_date is not None:
            _check_within_stay(findings, claim, line.service_date, f"line {number} service date")
    _check_procedures(findings, claim)
    _check_stay(findings, claim, inpatient)


def _check_procedures(findings: _Findings, claim: InstitutionalClaim) -> None:
    if claim.other_procedures and claim.principal_procedure is None:
        findings.add("procedure-missing", "other procedures without a principal procedure")
    if len(claim.other_procedures) > 2 * HI_CODES_PER_SEGMENT:
        findings.add("too-many-procedures", f"{len(claim.other_procedures)} other procedures; "
                     "an 837I holds at most 24")
    procedures = [claim.principal_procedure, *claim.other_procedures]
    for procedure in procedures:
        if procedure is None:
            continue
        if not ICD10PCS_PATTERN.fullmatch(procedure.code):
            findings.add("icd10pcs-format", f"procedure {procedure.code!r} is not an ICD-10-PCS "
                         "code (7 characters, digits and letters except I and O)")
        _check_within_stay(findings, claim, procedure.performed, f"procedure {procedure.code}")


def _check_within_stay(
    findings: _Findings, claim: InstitutionalClaim, day: date, what: str
) -> None:
    start = min(claim.statement_from, claim.admission_date or claim.statement_from)
    if not start <= day <= claim.statement_to:
        findings.add("dates-out-of-order", f"{what} {day} is outside the stay "
                     f"{start} to {claim.statement_to}")


def _check_stay(findings: _Findings, claim: InstitutionalClaim, inpatient: bool) -> None:
    if claim.statement_from > claim.statement_to:
        findings.add("dates-out-of-order", f"statement period starts {claim.statement_from} "
                     f"after it ends {claim.statement_to}")
    admitted = claim.admission_date
    if admitted is not None and claim.statement_to < admitted:
        findings.add("discharge-before-admission", f"discharge (statement through date) "
                     f"{claim.statement_to} is before the admission {admitted}")
    birth = claim.subscriber.birth_date if claim.patient is None else claim.patient.birth_date
    if claim.statement_from < birth:
        findings.add("dates-out-of-order",
                     f"statement period starts {claim.statement_from} before the birth {birth}")
    if inpatient:
        if admitted is None:
            findings.add("admission-missing", f"facility code {claim.facility_code} is an "
                         "inpatient bill; the admission date (DTP*435) is required")
        if claim.admission_source is None:
            findings.add("admission-missing", "inpatient bills need the admission source (CL102)")
        if claim.attending_provider is None:
            findings.add("attending-missing", "inpatient bills need the attending provider")
