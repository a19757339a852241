"""999, 277CA and 835 parsers: realistic answers to our claims, and malformed ones refused.

pyx12 ships no 835/999/277 sample files, so the messages below were written for these tests
following the 005010X221A1 (835), 005010X231A1 (999) and 005010X214 (277CA) guides. All parties,
ids and amounts are synthetic; each message is checked with pyx12 (test_*_is_valid_x12) so its
structure is right. The claims they answer are test_build's office visit and inpatient stay.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartkeeper.x12 import (
    X12Error,
    build_837i,
    build_837p,
    parse_277ca,
    parse_835,
    parse_835_all,
    parse_999,
    reconcile,
    validate,
)
from chartkeeper.x12.remittance import Adjustment
from chartkeeper.x12.validate import acknowledge
from tests.x12.test_build import envelope, inpatient_stay, office_visit

TRANSACTION_SET = {"HP": "835", "HN": "277", "FA": "999"}


def interchange(functional_id: str, version: str, *bodies: str, st03: bool = True) -> str:
    """Wraps transaction set bodies (one segment a line, no terminators) in ST/SE/GS/GE/ISA/IEA."""
    isa = ("ISA*00*          *00*          *ZZ*SYNPAYER01     *ZZ*SUBMITTER01    *260120*0900*^*"
           "00501*000000101*0*T*:~\n")
    lines = [isa, f"GS*{functional_id}*SYNPAYER01*SUBMITTER01*20260120*0900*101*X*{version}~\n"]
    tsid = TRANSACTION_SET[functional_id]
    for number, body in enumerate(bodies, start=1):
        segments = [segment.strip() for segment in body.strip().splitlines()]
        control = f"{number:04d}"
        lines.append(f"ST*{tsid}*{control}" + (f"*{version}~\n" if st03 else "~\n"))
        lines.extend(f"{segment}~\n" for segment in segments)
        lines.append(f"SE*{len(segments) + 2}*{control}~\n")
    lines.append(f"GE*{len(bodies)}*101~\nIEA*1*000000101~\n")
    return "".join(lines)


# The office visit (PCN0001, 187.50): the wellness visit paid at the fee schedule, the screening
# with coinsurance; an overpayment recovered (WO 10) and interest paid (L6 -2.50) by PLB.
CLINIC_835 = """
BPR*I*137.5*C*ACH*CCP*01*011000015*DA*123456789*1512345678**01*071000013*DA*987654321*20260122
TRN*1*EFT0000123*1512345678
DTM*405*20260120
N1*PR*SYNTHETIC MEDICARE CONTRACTOR
N3*1 PAYER WAY
N4*CHICAGO*IL*606010001
REF*2U*SYNPAY01
PER*BL*EDI SUPPORT*TE*5555550100
N1*PE*SYNTHETIC FAMILY MEDICINE*XX*1234567893
REF*TJ*123456789
LX*1
CLP*PCN0001*1*187.5*145*5*MB*PAYERCLAIM0001*11*1
NM1*QC*1*DOE*JOHN****MI*SYN123456789
DTM*232*20260110
SVC*HC:G0439*162.5*130**1
DTM*472*20260110
CAS*CO*45*32.5
REF*6R*1
AMT*B6*130
SVC*HC:G0444:25*25*15**1
DTM*472*20260110
CAS*CO*45*5*1
CAS*PR*2*5
REF*6R*2
AMT*B6*20
PLB*1234567893*20261231*WO:PAYERCLAIM0000*10*L6*-2.5
"""

# The inpatient stay (PCN0002, 9840.25) paid by DRG, less the Part A deductible; no lines.
HOSPITAL_835 = """
BPR*I*7200*C*ACH*CCP*01*011000015*DA*123456789*1512345678**01*071000013*DA*555444333*20260122
TRN*1*EFT0000124*1512345678
N1*PR*SYNTHETIC MEDICARE PART A
N3*2 PAYER WAY
N4*CHICAGO*IL*606010001
PER*BL*EDI SUPPORT*TE*5555550100
N1*PE*SYNTHETIC GENERAL HOSPITAL*XX*1245319599
LX*1
CLP*PCN0002*1*9840.25*7200*1676*MA*PAYERCLAIM0002*11*1**871*1.8
CAS*PR*1*1676
CAS*CO*45*964.25
NM1*QC*1*DOE*JOHN****MI*SYN123456789
DTM*232*20260101
DTM*233*20260105
"""

# PCN0001 accepted into adjudication (A2:20); PCN0002 rejected for its billing NPI (A7:562:85).
CLAIM_ACK_277 = """
BHT*0085*08*ACK0001*20260116*1000*TH
HL*1**20*1
NM1*PR*2*SYNTHETIC MEDICARE CONTRACTOR*****PI*SYNPAY01
TRN*1*BATCH0001
DTP*050*D8*20260116
DTP*009*D8*20260116
HL*2*1*21*1
NM1*41*2*SYNTHETIC BILLING OFFICE*****46*SUBMITTER01
TRN*2*BATCH0001
STC*A1:19:PR*20260116*WQ*10027.75
QTY*90*1
QTY*AA*1
AMT*YU*187.5
AMT*YY*9840.25
HL*3*2*19*1
NM1*85*2*SYNTHETIC FAMILY MEDICINE*****XX*1234567893
TRN*1*0
STC*A1:19:PR**WQ*187.5
QTY*QA*1
AMT*YU*187.5
HL*4*3*PT
NM1*QC*1*DOE*JOHN****MI*SYN123456789
TRN*2*PCN0001
STC*A2:20:PR*20260116*WQ*187.5
REF*1K*PAYERCLAIM0001
REF*D9*CH000001
DTP*472*D8*20260110
HL*5*2*19*1
NM1*85*2*SYNTHETIC GENERAL HOSPITAL*****XX*1245319599
TRN*1*0
STC*A1:19:PR**WQ*9840.25
QTY*QC*1
AMT*YY*9840.25
HL*6*5*PT
NM1*QC*1*DOE*JOHN****MI*SYN123456789
TRN*2*PCN0002
STC*A7:562:85*20260116*U*9840.25******A3:21:85
REF*D9*CH000002
DTP*472*RD8*20260101-20260105
"""

ACCEPTED_999 = """
AK1*HC*1*005010X222A1
AK2*837*0001*005010X222A1
IK5*A
AK9*A*1*1*1
"""

REJECTED_999 = """
AK1*HC*2*005010X223A2
AK2*837*0001*005010X223A2
IK3*NM1*9*2010*8
CTX*CLM01:PCN0002
IK4*9*67*7*1245319590
IK5*R*I5
AK9*R*1*1*0
"""


@pytest.fixture(scope="module")
def clinic_835() -> str:
    return interchange("HP", "005010X221A1", CLINIC_835, st03=False)


@pytest.fixture(scope="module")
def claim_ack_277() -> str:
    return interchange("HN", "005010X214", CLAIM_ACK_277)


@pytest.mark.parametrize(
    ("functional_id", "version", "bodies", "st03"),
    [("HP", "005010X221A1", (CLINIC_835, HOSPITAL_835), False),
     ("HN", "005010X214", (CLAIM_ACK_277,), True),
     ("FA", "005010X231A1", (ACCEPTED_999,), True),
     ("FA", "005010X231A1", (REJECTED_999,), True)],
    ids=["835", "277CA", "999-accepted", "999-rejected"],
)
def test_test_messages_are_valid_x12(
    functional_id: str, version: str, bodies: tuple[str, ...], st03: bool
) -> None:
    assert validate(interchange(functional_id, version, *bodies, st03=st03)) == []


def test_validate_reports_envelope_element_errors_missing_from_pyx12s_json() -> None:
    """The 835 guide does not use ST03; pyx12 only logs that, and validate still reports it."""
    issues = validate(interchange("HP", "005010X221A1", CLINIC_835, st03=True))
    assert [(issue.code, issue.location, issue.message) for issue in issues] == [
        ("10", "line 3 (ELE)",
         'Data element "Implementation Convention Reference" (ST03) is marked as Not Used')]


def test_835_payment_claims_lines_and_adjustments(clinic_835: str) -> None:
    remittance = parse_835(clinic_835)
    assert (remittance.payer_name, remittance.payer_id) == ("SYNTHETIC MEDICARE CONTRACTOR",
                                                            "SYNPAY01")
    assert (remittance.payee_name, remittance.payee_id) == ("SYNTHETIC FAMILY MEDICINE",
                                                            "1234567893")
    assert remittance.total_paid == Decimal("137.5")
    assert (remittance.trace_number, remittance.payment_date) == ("EFT0000123", date(2026, 1, 22))
    assert remittance.payment_method == "ACH"
    claim = remittance.claim("PCN0001")
    assert (claim.status_code, claim.billed, claim.paid, claim.patient_responsibility) == (
        "1", Decimal("187.5"), Decimal("145"), Decimal("5"))
    assert claim.payer_claim_control_number == "PAYERCLAIM0001"
    assert claim.adjustments == ()
    wellness, screening = claim.services
    assert (wellness.procedure_code, wellness.billed, wellness.paid) == (
        "G0439", Decimal("162.5"), Decimal("130"))
    assert wellness.adjustments == (Adjustment("CO", "45", Decimal("32.5"), None),)
    assert screening.modifiers == ("25",) and screening.service_date == date(2026, 1, 10)
    assert screening.adjustments == (Adjustment("CO", "45", Decimal("5"), Decimal("1")),
                                     Adjustment("PR", "2", Decimal("5"), None))
    recovery, interest = remittance.provider_adjustments
    assert (recovery.reason_code, recovery.reference_id, recovery.amount) == (
        "WO", "PAYERCLAIM0000", Decimal("10"))
    assert (interest.reason_code, interest.amount) == ("L6", Decimal("-2.5"))
    assert recovery.fiscal_period_end == date(2026, 12, 31)


def test_835_with_two_payments_needs_parse_835_all() -> None:
    text = interchange("HP", "005010X221A1", CLINIC_835, HOSPITAL_835, st03=False)
    clinic, hospital = parse_835_all(text)
    assert hospital.claim("PCN0002").adjustments == (
        Adjustment("PR", "1", Decimal("1676"), None), Adjustment("CO", "45", Decimal("964.25"),
                                                                 None))
    assert hospital.claim("PCN0002").drg == "871"
    assert hospital.payer_id == "1512345678"  # no N104 or REF*2U: TRN03, "1" and the EIN
    assert clinic.claim("PCN0001").paid == Decimal("145")
    with pytest.raises(X12Error, match="expected one 835 transaction set, found 2"):
        parse_835(text)


def test_277ca_claim_statuses(claim_ack_277: str) -> None:
    accepted, rejected = parse_277ca(claim_ack_277)
    assert accepted.patient_control_number == "PCN0001"
    assert (accepted.category_code, accepted.status_code, accepted.action_code) == (
        "A2", "20", "WQ")
    assert accepted.payer_claim_control_number == "PAYERCLAIM0001"
    assert accepted.billed == Decimal("187.5") and not accepted.rejected
    assert rejected.patient_control_number == "PCN0002" and rejected.rejected
    assert [(s.category, s.status, s.entity) for s in rejected.statuses] == [
        ("A7", "562", "85"), ("A3", "21", "85")]
    assert rejected.payer_claim_control_number is None
    assert rejected.clearinghouse_trace_number == "CH000002"
    assert (rejected.member_id, rejected.status_date) == ("SYN123456789", date(2026, 1, 16))


def test_999_accepted_and_rejected_with_ik3_ik4() -> None:
    accepted = parse_999(interchange("FA", "005010X231A1", ACCEPTED_999))
    assert accepted.accepted and accepted.group_control_number == "1"
    assert accepted.for_transaction("0001").accepted
    rejected = parse_999(interchange("FA", "005010X231A1", REJECTED_999))
    assert not rejected.accepted and rejected.version == "005010X223A2"
    transaction = rejected.for_transaction("0001")
    assert (transaction.ack_code, transaction.error_codes) == ("R", ("I5",))
    (segment,) = transaction.segment_errors
    assert (segment.segment_id, segment.position, segment.loop_id) == ("NM1", 9, "2010")
    assert segment.description == "segment has data element errors"
    (element,) = segment.element_errors
    assert (element.position, element.data_element_ref, element.bad_value) == (
        9, "67", "1245319590")
    assert element.description == "invalid code value"


def test_segment_terminator_is_taken_from_the_isa() -> None:
    """Some senders end segments with a line break instead of "~"; ISA16/terminator tell."""
    text = interchange("FA", "005010X231A1", ACCEPTED_999).replace("~\n", "\n")
    assert parse_999(text).for_transaction("0001").ack_code == "A"


def test_999_that_pyx12_writes_for_a_broken_837_is_parsed() -> None:
    """pyx12 itself acknowledges our 837 with an invalid state code: a third-party 999."""
    claim = office_visit()
    address = dataclasses.replace(claim.subscriber.address, state="XX")
    broken = dataclasses.replace(claim, subscriber=dataclasses.replace(claim.subscriber,
                                                                       address=address))
    parsed = parse_999(acknowledge(build_837p([broken], envelope())))
    assert (parsed.functional_id, parsed.version, parsed.ack_code) == ("HC", "005010X222A1", "R")
    (segment,) = parsed.for_transaction("0001").segment_errors
    assert segment.segment_id == "N4"
    assert [(e.position, e.error_code, e.bad_value) for e in segment.element_errors] == [
        (2, "7", "XX")]


def test_responses_are_put_back_onto_their_claims(clinic_835: str, claim_ack_277: str) -> None:
    hospital = parse_835(interchange("HP", "005010X221A1", HOSPITAL_835, st03=False))
    visit, stay = reconcile([office_visit(), inpatient_stay()], parse_277ca(claim_ack_277),
                            [parse_835(clinic_835), hospital])
    assert visit.claim.patient_control_number == "PCN0001" and not visit.rejected and visit.paid
    assert stay.rejected and stay.payments[0].paid == Decimal("7200")
    with pytest.raises(X12Error, match=r"835 payment for claim 'PCN0002', which is not among"):
        reconcile([office_visit()], [], [hospital])
    cheaper = dataclasses.replace(office_visit(), total_charge=Decimal("180"))
    with pytest.raises(X12Error, match="reports 187.5 billed; the claim's total is 180"):
        reconcile([cheaper], parse_277ca(claim_ack_277)[:1])


# Malformed input: every one is refused with an X12Error that says what is wrong.
def test_text_that_is_not_x12_is_refused() -> None:
    for text in ("", "MSH|^~\\&|HIS|", "<ClinicalDocument/>", "ISA*00*short~"):
        with pytest.raises(X12Error, match="not an X12 interchange|truncated|ISA segment"):
            parse_835(text)


def test_truncated_interchanges_are_refused(clinic_835: str) -> None:
    with pytest.raises(X12Error, match="has no segment terminator"):
        parse_835(clinic_835[: len(clinic_835) // 2])
    no_trailers = clinic_835[: clinic_835.index("SE*")]
    with pytest.raises(X12Error, match=r"it ends with segment 29 \(PLB\), expected the IEA"):
        parse_835(no_trailers)
    no_se = clinic_835.replace("SE*28*0001~\n", "")
    with pytest.raises(X12Error, match="transaction set '0001' at segment 3 .* has no SE"):
        parse_835(no_se)


def test_wrong_transaction_types_are_refused(clinic_835: str, claim_ack_277: str) -> None:
    claim = build_837i([inpatient_stay()], envelope())
    with pytest.raises(X12Error, match=r"is a 837 \(GS01 HC\); expected a 835 \(GS01 HP"):
        parse_835(claim)
    with pytest.raises(X12Error, match="is a 835 .* expected a 277"):
        parse_277ca(clinic_835)
    with pytest.raises(X12Error, match="expected a 999"):
        parse_999(claim_ack_277)
    status_277 = claim_ack_277.replace("005010X214", "005010X212")
    with pytest.raises(X12Error, match="version '005010X212'; expected 005010X214"):
        parse_277ca(status_277)


def test_miscounted_envelopes_are_refused(clinic_835: str) -> None:
    with pytest.raises(X12Error, match="SE01 says '27' segments, transaction set '0001' has 28"):
        parse_835(clinic_835.replace("SE*28*0001", "SE*27*0001"))
    with pytest.raises(X12Error, match="GE01 says '2' transaction sets, found 1"):
        parse_835(clinic_835.replace("GE*1*101", "GE*2*101"))
    with pytest.raises(X12Error, match="IEA02 '000000102' does not match ISA13 '000000101'"):
        parse_835(clinic_835.replace("IEA*1*000000101", "IEA*1*000000102"))


def test_835_that_does_not_balance_is_refused(clinic_835: str) -> None:
    with pytest.raises(X12Error, match=r"BPR02 total 140 != claim payments 145 - provider "
                                       r"adjustments 7.5 = 137.5"):
        parse_835(clinic_835.replace("BPR*I*137.5*", "BPR*I*140*"))
    overpaid = clinic_835.replace("*187.5*145*", "*187.5*146*").replace("*137.5*", "*138.5*")
    with pytest.raises(X12Error, match=r"claim PCN0001 does not balance: billed 187.5 - paid "
                                       r"146 != adjustments 42.5"):
        parse_835(overpaid)
    with pytest.raises(X12Error, match="service G0439 does not balance"):
        parse_835(clinic_835.replace("SVC*HC:G0439*162.5*130", "SVC*HC:G0439*162.5*131"))


def test_835_with_bad_values_is_refused(clinic_835: str) -> None:
    with pytest.raises(X12Error, match=r"element CLP04 is '14,5'; expected a decimal amount"):
        parse_835(clinic_835.replace("*187.5*145*", "*187.5*14,5*"))
    with pytest.raises(X12Error, match="CAS01 'XX' is not an adjustment group"):
        parse_835(clinic_835.replace("CAS*CO*45*32.5", "CAS*XX*45*32.5"))
    with pytest.raises(X12Error, match="BPR16 is '20261340'; expected a date CCYYMMDD"):
        parse_835(clinic_835.replace("*987654321*20260122", "*987654321*20261340"))
    with pytest.raises(X12Error, match=r"no N1\*PE segment"):
        parse_835(clinic_835.replace("N1*PE*", "N1*XX*"))


def test_malformed_999_and_277ca_are_refused(claim_ack_277: str) -> None:
    wrong_count = ACCEPTED_999.replace("AK9*A*1*1*1", "AK9*A*1*1*0")
    with pytest.raises(X12Error, match="AK904 says 0 transaction sets accepted, the IK5s accept 1"):
        parse_999(interchange("FA", "005010X231A1", wrong_count))
    no_ik5 = REJECTED_999.replace("IK5*R*I5\n", "")
    with pytest.raises(X12Error, match="transaction set '0001' has no IK5"):
        parse_999(interchange("FA", "005010X231A1", no_ik5))
    no_stc = claim_ack_277.replace("STC*A2:20:PR*20260116*WQ*187.5~\n", "").replace(
        "SE*41*0001", "SE*40*0001")
    with pytest.raises(X12Error, match="claim 'PCN0001' has no STC status segment"):
        parse_277ca(no_stc)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=2000), char=st.sampled_from("*~:X9 .-"),
       at=st.integers(min_value=0, max_value=2000))
def test_damaged_835_parses_or_raises_x12error_only(cut: int, char: str, at: int) -> None:
    """Whatever the damage (a cut, a changed character), the only failure is an X12Error."""
    text = interchange("HP", "005010X221A1", CLINIC_835, st03=False)
    text = text[: len(text) - cut]
    if at < len(text):
        text = text[:at] + char + text[at + 1 :]
    try:
        remittance = parse_835(text)
    except X12Error as error:
        assert str(error)
    else:
        assert remittance.total_paid == sum(c.paid for c in remittance.claims) - sum(
            p.amount for p in remittance.provider_adjustments)
