"""The release gate: each kind of claim error is caught before release, and good claims pass.

Claims are synthetic (see test_build); the code lists are the CMS files in ../shared/data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chartkeeper.x12 import (
    ClaimRejected,
    Diagnosis,
    InstitutionalClaim,
    InstitutionalServiceLine,
    Procedure,
    ProfessionalClaim,
    ProfessionalServiceLine,
    build_837i,
    build_837p,
    check_claim,
    npi_is_valid,
    release,
    release_text,
    validate,
)
from chartkeeper.x12.checks import (
    HCPCS_PATTERN,
    ICD10CM_PATTERN,
    ICD10PCS_PATTERN,
    npi_check_digit,
)
from chartkeeper.x12.claim import Claim
from tests.x12.test_build import (
    SUBSCRIBER,
    envelope,
    hcpcs_titles,
    icd10cm_titles,
    icd10pcs_titles,
    inpatient_stay,
    office_visit,
)


def rejection(claim: Claim) -> ClaimRejected:
    with pytest.raises(ClaimRejected) as caught:
        release([claim], envelope())
    return caught.value


def test_typical_claims_have_no_issues_of_our_own() -> None:
    assert check_claim(office_visit()) == []
    assert check_claim(inpatient_stay()) == []


def _bad_line_pointer(claim: ProfessionalClaim) -> ProfessionalClaim:
    line = dataclasses.replace(claim.lines[1], diagnosis_pointers=(1, 3))
    return dataclasses.replace(claim, lines=(claim.lines[0], line))


INJECTED: dict[str, tuple[Callable[[], Claim], str, str]] = {
    "no payer": (
        lambda: dataclasses.replace(office_visit(), payer=None),
        "payer-missing", "no payer",
    ),
    "missing subscriber id": (
        lambda: dataclasses.replace(
            inpatient_stay(), subscriber=dataclasses.replace(SUBSCRIBER, member_id="")
        ),
        "subscriber-id-missing", "DOE JOHN has no member id",
    ),
    "bad NPI check digit": (
        lambda: dataclasses.replace(
            office_visit(),
            billing_provider=dataclasses.replace(office_visit().billing_provider,
                                                 npi="1234567890"),
        ),
        "npi-check-digit", "NPI 1234567890 fails the Luhn check digit (expected last digit 3",
    ),
    "total is not the sum of lines": (
        lambda: dataclasses.replace(inpatient_stay(), total_charge=Decimal("9840.00")),
        "total-charge-mismatch", "total charge 9840.00 is not the sum of the line charges 9840.25",
    ),
    "pointer to a missing diagnosis": (
        lambda: _bad_line_pointer(office_visit()),
        "diagnosis-pointer", "line 2 points at diagnosis 3, but the claim has 2 diagnoses",
    ),
    "malformed ICD-10 code": (
        lambda: dataclasses.replace(inpatient_stay(), principal_diagnosis=Diagnosis("A41.9", "Y")),
        "icd10cm-format", "principal diagnosis 'A41.9' is not an ICD-10-CM code",
    ),
    "bad POA": (
        lambda: dataclasses.replace(inpatient_stay(), principal_diagnosis=Diagnosis("A419", "X")),
        "poa-value", "principal diagnosis A419 has POA 'X'",
    ),
    "discharge before admission": (
        lambda: dataclasses.replace(inpatient_stay(), admission_date=date(2026, 1, 6)),
        "discharge-before-admission",
        "discharge (statement through date) 2026-01-05 is before the admission 2026-01-06",
    ),
    "malformed PCS code": (
        lambda: dataclasses.replace(
            inpatient_stay(), principal_procedure=Procedure("02HV3IZ", date(2026, 1, 2))
        ),
        "icd10pcs-format", "procedure '02HV3IZ' is not an ICD-10-PCS code",
    ),
}


@pytest.mark.parametrize("error", sorted(INJECTED))
def test_each_injected_claim_error_is_caught_before_release(error: str) -> None:
    make_claim, code, message = INJECTED[error]
    rejected = rejection(make_claim())
    ours = [issue for issue in rejected.issues if issue.source == "chartkeeper"]
    # Only the injected error: the rest of the claim is clean.
    assert {issue.code for issue in ours} == {code}
    assert any(message in issue.message for issue in ours), ours
    assert message in str(rejected)


def test_a_missing_subscriber_id_is_also_caught_by_pyx12() -> None:
    claim = INJECTED["missing subscriber id"][0]()
    from_pyx12 = [issue for issue in rejection(claim).issues if issue.source == "pyx12"]
    assert any("NM109" in issue.message or "NM1" in issue.location for issue in from_pyx12)


def test_every_problem_is_listed_at_once() -> None:
    claim = dataclasses.replace(
        _bad_line_pointer(office_visit()), total_charge=Decimal("1"),
        diagnoses=(Diagnosis("Z0000"), Diagnosis("Z13.31")),
    )
    codes = {issue.code for issue in rejection(claim).issues}
    assert {"diagnosis-pointer", "total-charge-mismatch", "icd10cm-format"} <= codes


def test_amounts_that_are_not_numbers_are_refused_without_building() -> None:
    claim = dataclasses.replace(office_visit(), total_charge=Decimal("NaN"))
    issues = rejection(claim).issues
    assert [(issue.code, issue.message) for issue in issues] == [
        ("amount-not-finite", "total charge NaN is not a number")]


def test_corrupted_se_count_is_caught_by_pyx12_only() -> None:
    text = release([office_visit()], envelope())
    count = re.search(r"~SE\*(\d+)\*0001~", text)
    assert count is not None
    corrupted = text.replace(count.group(0), f"~SE*{int(count.group(1)) + 1}*0001~")
    with pytest.raises(ClaimRejected) as caught:
        release_text(corrupted)
    issue = caught.value.issues[0]
    assert issue.source == "pyx12" and issue.code == "4"
    assert f"SE count of {int(count.group(1)) + 1}" in issue.message
    assert f"I count {count.group(1)}" in issue.message


def test_missing_required_segment_is_caught_by_pyx12_only() -> None:
    text = build_837p([office_visit()], envelope())
    n4 = "N4*SPRINGFIELD*IL*627011234~"
    segments = text.split("~")
    se_index = next(i for i, s in enumerate(segments) if s.startswith("SE*"))
    count = int(segments[se_index].split("*")[1])
    corrupted = text.replace(n4, "", 1).replace(f"SE*{count}*", f"SE*{count - 1}*")
    issues = validate(corrupted)
    assert [issue.code for issue in issues] == ["3"]
    assert 'Mandatory segment "Billing Provider City, State, ZIP Code" (N4) missing' in (
        issues[0].message
    )
    assert "segment N4" in issues[0].location


def test_an_invalid_state_code_is_caught_by_pyx12() -> None:
    claim = office_visit()
    address = dataclasses.replace(claim.subscriber.address, state="XX")
    bad = dataclasses.replace(claim, subscriber=dataclasses.replace(claim.subscriber,
                                                                    address=address))
    issues = rejection(bad).issues
    assert [issue.source for issue in issues] == ["pyx12"]
    assert "(XX) is not a valid code" in issues[0].message


def test_mixed_claim_types_and_empty_batches_are_refused() -> None:
    with pytest.raises(ClaimRejected, match="separate 837s"):
        release([office_visit(), inpatient_stay()], envelope())
    with pytest.raises(ClaimRejected, match="no claims"):
        release([], envelope())


def test_validate_reports_text_that_is_not_x12_or_has_no_map() -> None:
    assert [issue.code for issue in validate("MSH|^~\\&|HIS")] == ["not-x12"]
    text = build_837p([office_visit()], envelope()).replace("005010X222A1", "005010X999A1")
    issues = validate(text)
    assert [issue.code for issue in issues] == ["no-map"]
    assert "005010X999A1" in issues[0].message


def test_npi_check_digit_matches_the_cms_example_and_catches_single_digit_errors() -> None:
    assert npi_check_digit("123456789") == 3  # CMS's published example NPI 1234567893
    assert npi_is_valid("1234567893")
    for position in range(10):
        for replacement in "0123456789":
            npi = "1234567893"
            changed = npi[:position] + replacement + npi[position + 1 :]
            if changed != npi:
                assert not npi_is_valid(changed), changed


def test_code_patterns_accept_every_code_in_the_official_files() -> None:
    cm = [code for code in icd10cm_titles() if not ICD10CM_PATTERN.fullmatch(code)]
    pcs = [code for code in icd10pcs_titles() if not ICD10PCS_PATTERN.fullmatch(code)]
    hcpcs = [code for code in hcpcs_titles() if not HCPCS_PATTERN.fullmatch(code)]
    assert (cm, pcs, hcpcs) == ([], [], [])
    assert len(icd10cm_titles()) > 70_000 and len(icd10pcs_titles()) > 60_000
    for malformed in ("A41.9", "a419", "4190", "A4", "A419ABCD"):
        assert not ICD10CM_PATTERN.fullmatch(malformed)
    for malformed in ("02HV3IZ", "02HV33", "02HV33ZZ", "02hv33z", "02HV3OZ"):
        assert not ICD10PCS_PATTERN.fullmatch(malformed)


# Property test: any claim drawn from real codes and synthetic parties passes pyx12.
BILLABLE_CM = sorted(icd10cm_titles())
PCS_CODES = sorted(icd10pcs_titles())
HCPCS_CODES = sorted(hcpcs_titles())
cents = st.integers(min_value=1, max_value=5_000_000).map(lambda c: Decimal(c).scaleb(-2))
units = st.integers(min_value=1, max_value=99).map(Decimal)
days = st.integers(min_value=0, max_value=30).map(lambda d: date(2026, 2, 1) + timedelta(d))
names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ '-", min_size=1, max_size=20).map(
    lambda n: n.strip() or "X"
)
modifier_lists = st.lists(st.sampled_from(["25", "59", "GT", "LT", "RT", "76"]), max_size=4,
                          unique=True).map(tuple)


@st.composite
def professional_claims(draw: st.DrawFn) -> ProfessionalClaim:
    dx = draw(st.lists(st.sampled_from(BILLABLE_CM), min_size=1, max_size=12, unique=True))
    lines = draw(st.lists(st.builds(
        ProfessionalServiceLine, st.sampled_from(HCPCS_CODES), cents, units, days,
        st.lists(st.integers(1, len(dx)), min_size=1, max_size=4, unique=True).map(tuple),
        modifier_lists, st.sampled_from([None, "11", "22", "02"]),
    ), min_size=1, max_size=8))
    subscriber = dataclasses.replace(SUBSCRIBER, last_name=draw(names), first_name=draw(names))
    return dataclasses.replace(
        office_visit(), subscriber=subscriber, diagnoses=tuple(Diagnosis(c) for c in dx),
        lines=tuple(lines), total_charge=sum((line.charge for line in lines), Decimal(0)),
        patient_control_number=draw(st.text("ABCDEFGHJK0123456789", min_size=1, max_size=20)),
    )


@st.composite
def institutional_claims(draw: st.DrawFn) -> InstitutionalClaim:
    start = draw(days)
    stay = draw(st.integers(0, 20))
    end = start + timedelta(stay)
    in_stay = st.integers(0, stay).map(lambda d: start + timedelta(d))
    poa = st.sampled_from(["Y", "N", "U", "W", "1"])
    other = draw(st.lists(st.builds(Diagnosis, st.sampled_from(BILLABLE_CM), poa), max_size=24))
    procedures = draw(st.lists(st.builds(Procedure, st.sampled_from(PCS_CODES), in_stay),
                               max_size=25))
    lines = draw(st.lists(st.builds(
        InstitutionalServiceLine, st.sampled_from(["0110", "0120", "0250", "0300", "0450"]),
        cents, units, in_stay, st.one_of(st.none(), st.sampled_from(HCPCS_CODES)),
    ), min_size=1, max_size=10))
    return dataclasses.replace(
        inpatient_stay(), statement_from=start, statement_to=end, admission_date=start,
        principal_diagnosis=Diagnosis(draw(st.sampled_from(BILLABLE_CM)), draw(poa)),
        other_diagnoses=tuple(other),
        principal_procedure=procedures[0] if procedures else None,
        other_procedures=tuple(procedures[1:]), lines=tuple(lines),
        total_charge=sum((line.charge for line in lines), Decimal(0)),
        drg=draw(st.one_of(st.none(), st.integers(1, 999).map(lambda n: f"{n:03d}"))),
    )


PROPERTY = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(professional_claims())
def test_any_valid_professional_claim_passes_pyx12(claim: ProfessionalClaim) -> None:
    # release() raises ClaimRejected on any finding, ours or pyx12's.
    assert release([claim], envelope()) == build_837p([claim], envelope())


@PROPERTY
@given(institutional_claims())
def test_any_valid_institutional_claim_passes_pyx12(claim: InstitutionalClaim) -> None:
    assert release([claim], envelope()) == build_837i([claim], envelope())


def test_pyx12_errors_never_reach_the_servers_log() -> None:
    """pyx12 logs the offending element's value (PHI); it stays inside the validator."""
    import logging

    class Server(logging.Handler):  # what a server's log handler on the root logger sees
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.names: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.names.append(record.name)

    server, root = Server(), logging.getLogger()
    level = root.level
    root.addHandler(server)
    root.setLevel(logging.DEBUG)
    try:
        issues = validate("ISA*00*          *00*          *ZZ*SUBMITTER      *ZZ*RECEIVER"
                          "       *260101*1200*^*00501*000000001*0*P*:~GS*HC*S*R*20260101*"
                          "1200*1*X*005010X222A1~ST*837*0001*005010X222A1~SE*2*0001~GE*1*1~"
                          "IEA*1*000000001~")
    finally:
        root.removeHandler(server)
        root.setLevel(level)
    assert issues  # the broken interchange was refused...
    assert not [name for name in server.names if name.startswith("pyx12")]  # ...silently
