"""NCCI PTP and MUE files and checks (chartkeeper.coding.ncci), on files written in CMS's layouts.

Every code pair and MUE value below is SYNTHETIC: the files have the published layouts, but the
codes (11111, 22222, ...) and values are made up, because CMS's files are not available here.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date

import pytest

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci import (
    NCCI_ASSOCIATED_MODIFIERS,
    MueEdit,
    PtpEdit,
    ServiceLine,
    mue_violations,
    parse_mue,
    parse_ptp,
    ptp_conflicts,
)

# SYNTHETIC code pairs in the layout of CMS's PTP text files: copyright line, title row, the
# column header spread over four physical rows, then tab-delimited edits.
PTP_TXT = "\r\n".join([
    "CPT only copyright 2025 American Medical Association. All rights reserved.",
    "Column1/Column2 Edits",
    "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit Rationale",
    "\t\tprior to 1996\tDate\tDate\t0=not allowed\t",
    "\t\t\t\t*=no data\t1=allowed\t",
    "\t\t\t\t\t9=not applicable\t",
    "11111\t22222\t\t20200101\t*\t0\tMutually exclusive procedures",
    "11111\t33333\t*\t19960101\t*\t1\tStandards of medical / surgical practice",
    "44444\t55555\t\t20260101\t*\t1\tCPT Manual or CMS manual coding instruction",
    "66666\t77777\t\t20100101\t20231231\t0\tMisuse of column two code with column one code",
    "88888\t99999\t\t20150101\t20150101\t9\tDeleted edit",
    "G1111\t0001T\t\t20240701\t\t1\tMore extensive procedure",
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
    "22222,2,3 Date of Service Edit: Clinical,Clinical: Data",
    "33333,4,1 Line Edit,Nature of Service/Procedure",
    "44444,0,2 Date of Service Edit: Policy,Code Descriptor / CPT Instruction",
    "J1111,10,3 Date of Service Edit: Clinical,Prescribing Information",
]) + "\r\n"

DOS = date(2026, 2, 10)


def zipped(**members: str | bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            # A fixed time, so that the bytes (and the test ids built from them) never depend
            # on the second the tests were collected in (xdist workers must agree).
            member = zipfile.ZipInfo(name.replace("_", "."), date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(member, content)
    return buffer.getvalue()


# --- PTP files ---------------------------------------------------------------------------------


def test_the_ptp_text_file_is_read_with_its_four_row_header() -> None:
    edits = parse_ptp(PTP_TXT.encode(), source="ccipra-test-f1.txt", setting="practitioner")
    assert len(edits) == 6 and edits.setting == "practitioner"
    assert edits.pair("11111", "22222") == (
        PtpEdit(
            column1="11111", column2="22222", prior_to_1996=False,
            effective=date(2020, 1, 1), deleted=None, modifier_indicator=0,
            rationale="Mutually exclusive procedures",
        ),
    )
    assert edits.pair("11111", "33333")[0].prior_to_1996
    assert edits.pair("66666", "77777")[0].deleted == date(2023, 12, 31)
    assert edits.pair("88888", "99999")[0].modifier_indicator == 9
    # A blank deletion date means active, like "*".
    assert edits.pair("g1111", "0001t")[0].deleted is None
    assert edits.pair("22222", "11111") == ()


def test_the_ptp_file_is_read_from_a_comma_separated_export_with_a_one_row_header() -> None:
    text = "\n".join([
        '"CPT only copyright 2025 American Medical Association. All rights reserved."',
        'Column 1,Column 2,"*=in existence prior to 1996",Effective Date,'
        'Deletion Date *=no data,Modifier 0=not allowed 1=allowed 9=not applicable,'
        "PTP Edit Rationale",
        '11111,22222,,20200101,*,0,"Mutually exclusive procedures, synthetic"',
    ])
    edits = parse_ptp(text.encode(), source="ptp.csv", setting="hospital")
    assert edits.setting == "hospital"
    assert edits.pair("11111", "22222")[0].rationale == "Mutually exclusive procedures, synthetic"


def test_the_ptp_zip_is_read_with_all_its_parts() -> None:
    part2 = PTP_TXT.replace("11111\t22222", "12121\t21212")
    members: dict[str, str | bytes] = {
        "ccioph-test-f1_TXT": PTP_TXT, "ccioph-test-f2_txt": part2,
        "ccioph-test-f1_xlsx": b"PK not read",
    }
    data = zipped(**members)
    edits = parse_ptp(data, source="ccioph-test.zip", setting="hospital")
    assert len(edits) == 12
    assert edits.pair("12121", "21212") and edits.pair("11111", "22222")


def malformed(line: str) -> str:
    return PTP_TXT.replace("11111\t22222\t\t20200101\t*\t0\tMutually exclusive procedures", line)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CPT only copyright\n11111\t22222\t\t20200101\t*\t0\tX\n", "no PTP column header"),
        (PTP_TXT.split("11111\t22222")[0], "not followed by any edits"),
        (malformed("1111\t22222\t\t20200101\t*\t0\tX"), r"line 7: column 1 '1111' is not a CPT"),
        (malformed("11111\t2222Z2\t\t20200101\t*\t0\tX"), "line 7: column 2 '2222Z2'"),
        (malformed("11111\t22222\t\t2020-01-01\t*\t0\tX"),
         "line 7: effective date '2020-01-01', expected YYYYMMDD"),
        (malformed("11111\t22222\t\t20201340\t*\t0\tX"), "line 7: effective date '20201340' is"),
        (malformed("11111\t22222\t\t20200101\tnever\t0\tX"), "line 7: deletion date 'never'"),
        (malformed("11111\t22222\t\t20200101\t*\t2\tX"),
         "line 7: modifier indicator '2', expected 0, 1 or 9"),
        (malformed("11111\t22222\tyes\t20200101\t*\t0\tX"), "line 7: prior-to-1996 flag 'yes'"),
        (malformed("11111\t22222\t\t20200101"), "line 7: 4 columns, expected at least 6"),
        (PTP_TXT.replace("Modifier\t", "Indicator\t"), "header has no column for 'modifier'"),
    ],
)
def test_a_malformed_ptp_file_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_ptp(text.encode(), source="ptp.txt", setting="practitioner")


def test_a_truncated_ptp_file_is_refused() -> None:
    cut = PTP_TXT.encode()[: PTP_TXT.index("11111\t33333") + 9]
    with pytest.raises(CodeSetError, match="ptp.txt, line 8: 2 columns"):
        parse_ptp(cut, source="ptp.txt", setting="practitioner")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\x00\x01binary\x00" * 20, "binary data"),
        (b"Column 1\tColumn 2\n\x81\x8d\n", "byte 18 is neither UTF-8 nor Windows-1252"),
        (zipped(**{"readme_pdf": b"%PDF"}), "the zip holds no text or CSV file"),
        (zipped(**{"f1_txt": PTP_TXT})[:50], "not a readable zip archive"),
    ],
    ids=["empty", "binary", "not-text", "zip-without-text", "truncated-zip"],
)
def test_files_that_are_not_ptp_text_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_ptp(data, source="ptp.zip", setting="practitioner")


def test_a_zip_part_without_a_header_is_named() -> None:
    data = zipped(**{"f1_txt": PTP_TXT, "notes_txt": "release notes"})
    with pytest.raises(CodeSetError, match="ptp.zip:notes.txt: no PTP column header"):
        parse_ptp(data, source="ptp.zip", setting="practitioner")


def test_an_unknown_ptp_setting_is_refused() -> None:
    with pytest.raises(CodeSetError, match="PTP setting 'dme'"):
        parse_ptp(PTP_TXT.encode(), source="ptp.txt", setting="dme")  # type: ignore[arg-type]


# --- PTP checks --------------------------------------------------------------------------------


def test_a_modifier_indicator_0_pair_is_a_hit_whatever_the_modifiers() -> None:
    edits = parse_ptp(PTP_TXT.encode(), source="ptp.txt", setting="practitioner")
    lines = [ServiceLine("11111", date=DOS), ServiceLine("22222", ("59",), date=DOS)]
    hits = ptp_conflicts(edits, lines)
    assert [(h.column1_line, h.column2_line, h.column1, h.column2) for h in hits] == [
        (0, 1, "11111", "22222")
    ]
    assert hits[0].modifier_indicator == 0 and hits[0].date_of_service == DOS
    assert hits[0].rationale == "Mutually exclusive procedures"
    # The order of the lines does not matter; the pair is directional.
    assert [h.column2 for h in ptp_conflicts(edits, list(reversed(lines)))] == ["22222"]


@pytest.mark.parametrize(
    ("first", "second", "hit"),
    [
        ((), (), True),
        ((), ("59",), False),
        (("XU",), (), False),  # on either line
        (("LT",), ("RT",), False),
        ((), ("25",), False),
        ((), ("26",), True),  # the professional component is not an NCCI-associated modifier
        (("GA", "76"), (), True),
    ],
)
def test_a_modifier_indicator_1_pair_is_bypassed_by_an_ncci_associated_modifier(
    first: tuple[str, ...], second: tuple[str, ...], hit: bool
) -> None:
    edits = parse_ptp(PTP_TXT.encode(), source="ptp.txt", setting="practitioner")
    lines = [ServiceLine("11111", first), ServiceLine("33333", second)]
    assert bool(ptp_conflicts(edits, lines, DOS)) is hit


def test_edits_apply_only_from_their_effective_date_through_their_deletion_date() -> None:
    edits = parse_ptp(PTP_TXT.encode(), source="ptp.txt", setting="practitioner")
    not_yet = [ServiceLine("44444"), ServiceLine("55555")]
    assert ptp_conflicts(edits, not_yet, date(2025, 12, 31)) == []
    assert len(ptp_conflicts(edits, not_yet, date(2026, 1, 1))) == 1
    deleted = [ServiceLine("66666"), ServiceLine("77777")]
    assert len(ptp_conflicts(edits, deleted, date(2023, 12, 31))) == 1
    assert ptp_conflicts(edits, deleted, date(2024, 1, 1)) == []
    never = [ServiceLine("88888"), ServiceLine("99999")]
    assert ptp_conflicts(edits, never, date(2015, 1, 1)) == []
    assert edits.pair("66666", "77777")[0].in_effect(date(2010, 1, 1))


def test_pairs_are_checked_within_a_date_of_service() -> None:
    edits = parse_ptp(PTP_TXT.encode(), source="ptp.txt", setting="practitioner")
    lines = [
        ServiceLine("11111", date=DOS),
        ServiceLine("22222", date=date(2026, 2, 11)),
        ServiceLine("22222", date=DOS),
    ]
    assert [(h.column1_line, h.column2_line) for h in ptp_conflicts(edits, lines)] == [(0, 2)]
    assert ptp_conflicts(edits, lines, date(2026, 2, 11)) == []
    with pytest.raises(CodeSetError, match=r"line 1 \(11111\) has no date of service"):
        ptp_conflicts(edits, [ServiceLine("11111"), ServiceLine("22222")])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"code": "1111"}, "service code '1111': expected a CPT or HCPCS code"),
        ({"code": "11111", "modifiers": ("5",)}, "modifier '5' on 11111"),
        ({"code": "11111", "units": 0}, "units 0 on 11111"),
    ],
)
def test_a_malformed_service_line_is_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        ServiceLine(**arguments)  # type: ignore[arg-type]


def test_the_ncci_associated_modifiers_are_the_manuals_list() -> None:
    assert len(NCCI_ASSOCIATED_MODIFIERS) == 44
    assert {"59", "XE", "XP", "XS", "XU", "25", "91", "LT", "RT", "F9", "T9", "RI"} <= (
        NCCI_ASSOCIATED_MODIFIERS
    )
    assert "26" not in NCCI_ASSOCIATED_MODIFIERS and "50" not in NCCI_ASSOCIATED_MODIFIERS


# --- MUE files -------------------------------------------------------------------------------


def test_the_mue_csv_is_read() -> None:
    table = parse_mue(MUE_CSV.encode(), source="mue.csv", setting="practitioner")
    assert len(table) == 5 and table.setting == "practitioner"
    assert table.get("11111") == MueEdit(
        code="11111", value=1, adjudication=2, rationale="Anatomic Consideration"
    )
    assert table.get("33333") is not None
    edit = table.get("j1111")
    assert edit is not None and edit.adjudication_text == "Date of Service Edit: Clinical"
    assert table.get("55555") is None


def test_the_mue_file_is_read_tab_delimited_and_from_a_zip() -> None:
    tabbed = MUE_CSV.replace(",", "\t").replace('"', "")
    assert len(parse_mue(tabbed.encode(), source="mue.txt", setting="practitioner")) == 5
    hospital = MUE_CSV.replace("Practitioner Services", "Outpatient Hospital Services")
    data = zipped(**{"MCR_MUE_OutpatientHospitalServices_csv": hospital})
    assert parse_mue(data, source="mue.zip", setting="hospital").get("22222") is not None
    dme = MUE_CSV.replace("Practitioner Services", "DME Supplier Services")
    assert parse_mue(dme.encode(), source="dme.csv", setting="dme").setting == "dme"


def test_an_mue_file_for_another_setting_is_refused() -> None:
    hospital = MUE_CSV.replace("Practitioner Services", "Outpatient Hospital Services")
    with pytest.raises(CodeSetError, match="line 4: the file holds 'Outpatient Hospital Services"):
        parse_mue(hospital.encode(), source="mue.csv", setting="practitioner")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MUE_CSV.split("HCPCS")[0], "no MUE column header found"),
        (MUE_CSV.split("11111,")[0], "not followed by any values"),
        (MUE_CSV.replace("22222,2,", "22222,two,"), "line 6: MUE value 'two' is not a whole"),
        (MUE_CSV.replace("22222,2,", "22222,-2,"), "line 6: MUE value '-2'"),
        (MUE_CSV.replace("3 Date of Service Edit: Clinical,Clinical", "4 Edit,Clinical"),
         "line 6: MUE adjudication indicator '4 Edit', expected 1, 2 or 3"),
        (MUE_CSV.replace("1 Line Edit", "Line Edit"), "line 7: MUE adjudication indicator"),
        (MUE_CSV.replace("33333,", "3333,"), "line 7: HCPCS/CPT code '3333'"),
        (MUE_CSV.replace("44444,", "11111,"), "code 11111 has more than one MUE value"),
        (MUE_CSV.replace("22222,2,3 Date of Service Edit: Clinical,Clinical: Data", "22222,2"),
         "line 6: 2 columns, expected at least 3"),
        (MUE_CSV.replace("MUE Adjudication Indicator", "Indicator"),
         "header has no column for 'adjudication'"),
    ],
)
def test_a_malformed_mue_file_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_mue(text.encode(), source="mue.csv", setting="practitioner")


def test_an_unknown_mue_setting_is_refused() -> None:
    with pytest.raises(CodeSetError, match="MUE setting 'facility'"):
        parse_mue(MUE_CSV.encode(), source="mue.csv", setting="facility")  # type: ignore[arg-type]


# --- MUE checks --------------------------------------------------------------------------------


def test_date_of_service_mues_sum_the_units_of_a_date() -> None:
    table = parse_mue(MUE_CSV.encode(), source="mue.csv", setting="practitioner")
    lines = [
        ServiceLine("11111", ("RT",), 1, DOS),
        ServiceLine("11111", ("LT",), 1, DOS),  # MAI 2: a modifier does not split the date
        ServiceLine("11111", (), 1, date(2026, 2, 11)),
        ServiceLine("22222", (), 2, DOS),
    ]
    hits = mue_violations(table, lines)
    assert [(h.code, h.lines, h.units, h.value, h.adjudication) for h in hits] == [
        ("11111", (0, 1), 2, 1, 2)
    ]
    assert hits[0].date_of_service == DOS and hits[0].rationale == "Anatomic Consideration"
    assert mue_violations(table, lines, date(2026, 2, 11)) == []
    assert len(mue_violations(table, [ServiceLine("22222", units=3)], DOS)) == 1


def test_line_mues_apply_to_each_line() -> None:
    table = parse_mue(MUE_CSV.encode(), source="mue.csv", setting="practitioner")
    split = [ServiceLine("33333", ("76",), 3, DOS), ServiceLine("33333", ("77",), 3, DOS)]
    assert mue_violations(table, split) == []
    over = [ServiceLine("33333", (), 5, DOS), ServiceLine("33333", (), 1, DOS)]
    assert [(h.lines, h.units, h.adjudication) for h in mue_violations(table, over)] == [
        ((0,), 5, 1)
    ]


def test_a_zero_mue_refuses_any_unit_and_codes_without_an_mue_pass() -> None:
    table = parse_mue(MUE_CSV.encode(), source="mue.csv", setting="practitioner")
    assert [h.value for h in mue_violations(table, [ServiceLine("44444")], DOS)] == [0]
    assert mue_violations(table, [ServiceLine("55555", units=99)], DOS) == []
