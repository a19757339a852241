"""Writes X12 5010 837P (005010X222A1) and 837I (005010X223A2) claim interchanges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, time
from decimal import Decimal
from typing import TypeVar

from chartkeeper.x12.claim import (
    Address,
    BillingProvider,
    Diagnosis,
    Envelope,
    InstitutionalClaim,
    Patient,
    Payer,
    ProfessionalClaim,
    Provider,
    Subscriber,
)
from chartkeeper.x12.errors import ClaimBuildError

PROFESSIONAL_VERSION = "005010X222A1"
INSTITUTIONAL_VERSION = "005010X223A2"
ELEMENT_SEPARATOR = "*"
COMPONENT_SEPARATOR = ":"
REPETITION_SEPARATOR = "^"
SEGMENT_TERMINATOR = "~"
DELIMITERS = frozenset(
    ELEMENT_SEPARATOR + COMPONENT_SEPARATOR + REPETITION_SEPARATOR + SEGMENT_TERMINATOR
)
#: HI segments hold at most 12 codes; the 837I allows two segments of other diagnoses and of
#: other procedures, the 837P one segment of 12 diagnoses.
HI_CODES_PER_SEGMENT = 12

ClaimT = TypeVar("ClaimT", ProfessionalClaim, InstitutionalClaim)


def format_amount(value: Decimal) -> str:
    """An X12 decimal (R): no trailing zeros and no point when whole (``150.50`` -> ``150.5``)."""
    if not value.is_finite():
        raise ClaimBuildError(f"amount {value} is not a finite number")
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def format_date(value: date) -> str:
    """An X12 date, CCYYMMDD."""
    return value.strftime("%Y%m%d")


def format_time(value: time) -> str:
    """An X12 time, HHMM."""
    return value.strftime("%H%M")


def _text(value: str, what: str) -> str:
    """A value as an element, refused when it would break the segment structure."""
    bad = DELIMITERS.intersection(value)
    if bad or "\n" in value or "\r" in value:
        raise ClaimBuildError(
            f"{what} {value!r} contains an X12 delimiter or line break; expected none of "
            f"{''.join(sorted(DELIMITERS))}"
        )
    return value


class _Transaction:
    """The segments of one ST..SE transaction set, with the HL counter."""

    def __init__(self) -> None:
        self.segments: list[str] = []
        self.hl_count = 0

    def add(self, segment_id: str, *elements: str) -> None:
        values = list(elements)
        # Trailing empty elements are dropped: X12 forbids a segment that ends in separators.
        while values and values[-1] == "":
            values.pop()
        self.segments.append(ELEMENT_SEPARATOR.join([segment_id, *values]))

    def hl(self, parent: int | None, level: str, has_children: bool) -> int:
        self.hl_count += 1
        parent_id = "" if parent is None else str(parent)
        self.add("HL", str(self.hl_count), parent_id, level, "1" if has_children else "0")
        return self.hl_count


def _composite(*components: str) -> str:
    values = list(components)
    while values and values[-1] == "":
        values.pop()
    return COMPONENT_SEPARATOR.join(values)


def _control(value: int, width: int, what: str) -> str:
    if not 0 < value < 10**width:
        raise ClaimBuildError(f"{what} {value} is out of range; expected 1 to {10**width - 1}")
    return str(value).zfill(width)


def _edi_id(value: str, what: str) -> str:
    if not 1 <= len(value) <= 15:
        raise ClaimBuildError(f"{what} {value!r} must be 1 to 15 characters (ISA06/ISA08)")
    return _text(value, what)


def _isa(envelope: Envelope) -> str:
    """The ISA segment: fixed widths, 106 characters with its terminator."""
    sender, receiver = envelope.submitter, envelope.receiver
    elements = [
        "ISA", "00", " " * 10, "00", " " * 10,
        sender.id_qualifier.ljust(2)[:2], _edi_id(sender.edi_id, "submitter EDI id").ljust(15),
        receiver.id_qualifier.ljust(2)[:2], _edi_id(receiver.edi_id, "receiver EDI id").ljust(15),
        envelope.created.strftime("%y%m%d"), envelope.created.strftime("%H%M"),
        REPETITION_SEPARATOR, "00501",
        _control(envelope.interchange_control_number, 9, "interchange control number"),
        "1" if envelope.acknowledgment_requested else "0", envelope.usage, COMPONENT_SEPARATOR,
    ]
    return ELEMENT_SEPARATOR.join(elements)


def _interchange(envelope: Envelope, version: str, body: _Transaction) -> str:
    """Wraps one transaction set in ST/SE, GS/GE and ISA/IEA with the counts filled in."""
    # ST02 is 4 to 9 digits; GS06 and its GE02 twin carry the number without padding.
    _control(envelope.transaction_control_number, 9, "transaction control number")
    st_control = str(envelope.transaction_control_number).zfill(4)
    _control(envelope.group_control_number, 9, "group control number")
    group_control = str(envelope.group_control_number)
    interchange_control = str(envelope.interchange_control_number).zfill(9)
    created = envelope.created
    segments = [
        _isa(envelope),
        ELEMENT_SEPARATOR.join([
            "GS", "HC", envelope.submitter.edi_id, envelope.receiver.edi_id,
            format_date(created.date()), created.strftime("%H%M"), group_control, "X", version,
        ]),
        ELEMENT_SEPARATOR.join(["ST", "837", st_control, version]),
        *body.segments,
    ]
    # SE01 counts ST through SE: the body, ST itself and SE.
    segments.append(ELEMENT_SEPARATOR.join(["SE", str(len(body.segments) + 2), st_control]))
    segments.append(ELEMENT_SEPARATOR.join(["GE", "1", group_control]))
    segments.append(ELEMENT_SEPARATOR.join(["IEA", "1", interchange_control]))
    return "".join(segment + SEGMENT_TERMINATOR for segment in segments)


def _header(tx: _Transaction, envelope: Envelope) -> None:
    created = envelope.created
    tx.add("BHT", "0019", "00", _text(envelope.batch_id, "batch id"),
           format_date(created.date()), created.strftime("%H%M"), "CH")
    submitter, receiver = envelope.submitter, envelope.receiver
    tx.add("NM1", "41", "2", _text(submitter.name, "submitter name"), "", "", "", "", "46",
           submitter.edi_id)
    tx.add("PER", "IC", _text(submitter.contact_name, "submitter contact"), "TE",
           _text(submitter.contact_phone, "submitter phone"))
    tx.add("NM1", "40", "2", _text(receiver.name, "receiver name"), "", "", "", "", "46",
           receiver.edi_id)


def _address(tx: _Transaction, address: Address) -> None:
    tx.add("N3", _text(address.line1, "address"), _text(address.line2 or "", "address"))
    tx.add("N4", _text(address.city, "city"), _text(address.state, "state"),
           _text(address.postal_code, "postal code"))


def _person(
    tx: _Transaction, entity: str, last: str, first: str, qualifier: str, ident: str
) -> None:
    tx.add("NM1", entity, "1", _text(last, "last name"), _text(first, "first name"), "", "", "",
           qualifier, _text(ident, "identifier"))


def _billing_provider(tx: _Transaction, provider: BillingProvider) -> int:
    hl = tx.hl(None, "20", True)
    if provider.taxonomy:
        tx.add("PRV", "BI", "PXC", _text(provider.taxonomy, "billing provider taxonomy"))
    tx.add("NM1", "85", "2", _text(provider.name, "billing provider name"), "", "", "", "", "XX",
           _text(provider.npi, "billing provider NPI"))
    _address(tx, provider.address)
    tx.add("REF", "EI", _text(provider.tax_id, "billing provider tax id"))
    return hl


def _subscriber(
    tx: _Transaction, parent: int, subscriber: Subscriber, payer: Payer | None,
    has_dependents: bool, is_patient: bool,
) -> int:
    if payer is None:
        raise ClaimBuildError(
            f"subscriber {subscriber.member_id!r} has a claim without a payer; loop 2010BB "
            "(payer name) is required"
        )
    hl = tx.hl(parent, "22", has_dependents)
    tx.add("SBR", subscriber.payer_responsibility, "18" if is_patient else "",
           _text(subscriber.group_number or "", "group number"), "", "", "", "", "",
           subscriber.claim_filing_indicator)
    _person(tx, "IL", subscriber.last_name, subscriber.first_name, "MI", subscriber.member_id)
    _address(tx, subscriber.address)
    tx.add("DMG", "D8", format_date(subscriber.birth_date), subscriber.sex)
    tx.add("NM1", "PR", "2", _text(payer.name, "payer name"), "", "", "", "", "PI",
           _text(payer.payer_id, "payer id"))
    return hl


def _patient(tx: _Transaction, parent: int, patient: Patient) -> None:
    tx.hl(parent, "23", False)
    tx.add("PAT", _text(patient.relationship, "patient relationship"))
    # 5010 has no patient identifier in 2010CA: NM108/NM109 are not used.
    tx.add("NM1", "QC", "1", _text(patient.last_name, "patient last name"),
           _text(patient.first_name, "patient first name"))
    _address(tx, patient.address)
    tx.add("DMG", "D8", format_date(patient.birth_date), patient.sex)


def _hierarchy(
    tx: _Transaction, claims: Sequence[ClaimT], write_claim: Callable[[_Transaction, ClaimT], None]
) -> None:
    """Billing provider > subscriber (+ payer) > patient > claims, in the order first seen."""
    by_provider: dict[BillingProvider, dict[tuple[Subscriber, Payer | None], list[ClaimT]]] = {}
    for claim in claims:
        subscribers = by_provider.setdefault(claim.billing_provider, {})
        subscribers.setdefault((claim.subscriber, claim.payer), []).append(claim)
    for provider, subscribers in by_provider.items():
        provider_hl = _billing_provider(tx, provider)
        for (subscriber, payer), subscriber_claims in subscribers.items():
            own = [claim for claim in subscriber_claims if claim.patient is None]
            dependents: dict[Patient, list[ClaimT]] = {}
            for claim in subscriber_claims:
                if claim.patient is not None:
                    dependents.setdefault(claim.patient, []).append(claim)
            subscriber_hl = _subscriber(tx, provider_hl, subscriber, payer, bool(dependents),
                                        bool(own))
            for claim in own:
                write_claim(tx, claim)
            for patient, patient_claims in dependents.items():
                _patient(tx, subscriber_hl, patient)
                for claim in patient_claims:
                    write_claim(tx, claim)


def _procedure_code(code: str, modifiers: tuple[str, ...]) -> str:
    return _composite("HC", _text(code, "procedure code"),
                      *(_text(modifier, "modifier") for modifier in modifiers))


def _professional_claim(tx: _Transaction, claim: ProfessionalClaim) -> None:
    pcn = _text(claim.patient_control_number, "patient control number")
    tx.add("CLM", pcn, format_amount(claim.total_charge), "", "",
           _composite(claim.place_of_service, "B", claim.frequency_code),
           "Y" if claim.provider_signature else "N", claim.assignment, claim.benefits_assigned,
           claim.release_of_information)
    if len(claim.diagnoses) > HI_CODES_PER_SEGMENT:
        raise ClaimBuildError(f"claim {pcn}: {len(claim.diagnoses)} diagnoses; an 837P holds 12")
    tx.add("HI", *(
        _composite("ABK" if index == 0 else "ABF", _text(dx.code, "diagnosis code"))
        for index, dx in enumerate(claim.diagnoses)
    ))
    if claim.rendering_provider is not None:
        rendering = claim.rendering_provider
        _person(tx, "82", rendering.last_name, rendering.first_name, "XX", rendering.npi)
    for number, line in enumerate(claim.lines, start=1):
        tx.add("LX", str(number))
        place = line.place_of_service
        tx.add("SV1", _procedure_code(line.procedure_code, line.modifiers),
               format_amount(line.charge), "UN", format_amount(line.units),
               "" if place is None or place == claim.place_of_service else place, "",
               _composite(*(str(pointer) for pointer in line.diagnosis_pointers)))
        tx.add("DTP", "472", "D8", format_date(line.service_date))


def _diagnosis_with_poa(qualifier: str, dx: Diagnosis) -> str:
    # POA "1" (exempt from reporting) is a UB-04 paper value; in 5010 an exempt code is sent
    # with the indicator left empty.
    poa = "" if dx.poa in (None, "1") else dx.poa
    return _composite(qualifier, _text(dx.code, "diagnosis code"), "", "", "", "", "", "", poa)


def _chunks(values: Sequence[str], what: str, pcn: str) -> list[Sequence[str]]:
    if len(values) > 2 * HI_CODES_PER_SEGMENT:
        raise ClaimBuildError(f"claim {pcn}: {len(values)} {what}; an 837I holds at most 24")
    size = HI_CODES_PER_SEGMENT
    return [values[start : start + size] for start in range(0, len(values), size)]


def _institutional_claim(tx: _Transaction, claim: InstitutionalClaim) -> None:
    pcn = _text(claim.patient_control_number, "patient control number")
    tx.add("CLM", pcn, format_amount(claim.total_charge), "", "",
           _composite(claim.facility_code, "A", claim.frequency_code), "", claim.assignment,
           claim.benefits_assigned, claim.release_of_information)
    if claim.discharge_hour is not None:
        tx.add("DTP", "096", "TM", format_time(claim.discharge_hour))
    tx.add("DTP", "434", "RD8",
           f"{format_date(claim.statement_from)}-{format_date(claim.statement_to)}")
    if claim.admission_date is not None:
        if claim.admission_hour is None:
            tx.add("DTP", "435", "D8", format_date(claim.admission_date))
        else:
            stamp = format_date(claim.admission_date) + format_time(claim.admission_hour)
            tx.add("DTP", "435", "DT", stamp)
    tx.add("CL1", claim.admission_type, claim.admission_source or "", claim.discharge_status)
    tx.add("HI", _diagnosis_with_poa("ABK", claim.principal_diagnosis))
    if claim.admitting_diagnosis is not None:
        tx.add("HI", _composite("ABJ", _text(claim.admitting_diagnosis, "admitting diagnosis")))
    if claim.drg is not None:
        tx.add("HI", _composite("DR", _text(claim.drg, "DRG")))
    others = [_diagnosis_with_poa("ABF", dx) for dx in claim.other_diagnoses]
    for chunk in _chunks(others, "other diagnoses", pcn):
        tx.add("HI", *chunk)
    if claim.principal_procedure is not None:
        principal = claim.principal_procedure
        tx.add("HI", _composite("BBR", _text(principal.code, "procedure code"), "D8",
                                format_date(principal.performed)))
    elif claim.other_procedures:
        raise ClaimBuildError(f"claim {pcn}: other procedures without a principal procedure")
    procedures = [
        _composite("BBQ", _text(proc.code, "procedure code"), "D8", format_date(proc.performed))
        for proc in claim.other_procedures
    ]
    for chunk in _chunks(procedures, "other procedures", pcn):
        tx.add("HI", *chunk)
    for entity, provider in (("71", claim.attending_provider), ("72", claim.operating_provider),
                             ("82", claim.rendering_provider)):
        if provider is not None:
            _clinician(tx, entity, provider)
    for number, line in enumerate(claim.lines, start=1):
        tx.add("LX", str(number))
        code = line.procedure_code
        tx.add("SV2", _text(line.revenue_code, "revenue code"),
               "" if code is None else _procedure_code(code, line.modifiers),
               format_amount(line.charge), line.unit_basis, format_amount(line.units))
        if line.service_date is not None:
            tx.add("DTP", "472", "D8", format_date(line.service_date))


def _clinician(tx: _Transaction, entity: str, provider: Provider) -> None:
    _person(tx, entity, provider.last_name, provider.first_name, "XX", provider.npi)


def _build(
    claims: Sequence[ClaimT], envelope: Envelope, version: str,
    write_claim: Callable[[_Transaction, ClaimT], None],
) -> str:
    if not claims:
        raise ClaimBuildError("no claims to write; an 837 needs at least one claim")
    tx = _Transaction()
    _header(tx, envelope)
    _hierarchy(tx, claims, write_claim)
    return _interchange(envelope, version, tx)


def build_837p(claims: Sequence[ProfessionalClaim], envelope: Envelope) -> str:
    """The 005010X222A1 interchange (one ISA, GS and ST) holding ``claims``."""
    wrong = [type(claim).__name__ for claim in claims if not isinstance(claim, ProfessionalClaim)]
    if wrong:
        raise ClaimBuildError(f"build_837p writes ProfessionalClaim only, got {wrong[0]}")
    return _build(claims, envelope, PROFESSIONAL_VERSION, _professional_claim)


def build_837i(claims: Sequence[InstitutionalClaim], envelope: Envelope) -> str:
    """The 005010X223A2 interchange (one ISA, GS and ST) holding ``claims``."""
    wrong = [type(claim).__name__ for claim in claims if not isinstance(claim, InstitutionalClaim)]
    if wrong:
        raise ClaimBuildError(f"build_837i writes InstitutionalClaim only, got {wrong[0]}")
    return _build(claims, envelope, INSTITUTIONAL_VERSION, _institutional_claim)
