"""HCPCS Level II against the CMS 2020 alpha-numeric file; CPT files with invented content."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import date
from pathlib import Path

import pytest

from chartkeeper.coding.cpt import CptRelease, cpt_category, parse_cpt
from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.hcpcs import HcpcsRelease, parse_hcpcs

HCPCS_ZIP = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
    / "hcpcs_2020_cms" / "2020-Alpha-Numeric-HCPCS-File.zip"
)
ANWEB = "HCPC2020_ANWEB_w_disclaimer.txt"


@pytest.fixture(scope="module")
def release() -> HcpcsRelease:
    return parse_hcpcs(HCPCS_ZIP.read_bytes(), source=HCPCS_ZIP.name)


@pytest.fixture(scope="module")
def anweb() -> bytes:
    with zipfile.ZipFile(HCPCS_ZIP) as archive:
        return archive.read(ANWEB)


def _records(anweb: bytes, *codes: str) -> list[str]:
    """The real records of some codes, as lines of the ANWEB text."""
    lines = anweb.decode("cp1252").split("\r\n")
    return [line for line in lines if line[:5].strip() in codes]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# -- HCPCS: the real 2020 file ----------------------------------------------------------------

def test_counts_and_year_of_the_2020_release(release: HcpcsRelease) -> None:
    assert release.year == 2020
    assert len(release.codes) == 6_710
    assert len(release.modifiers) == 369
    assert all(re.fullmatch(r"[A-V][0-9]{4}", code) for code in release.codes)


@pytest.mark.parametrize(
    ("code", "short", "long"),
    [
        ("J7613", "Albuterol non-comp unit",
         "Albuterol, inhalation solution, fda-approved final product, non-compounded, "
         "administered through dme, unit dose, 1 mg"),
        ("G0444", "Depression screen annual", "Annual depression screening, 15 minutes"),
        ("A0428", "Bls",
         "Ambulance service, basic life support, non-emergency transport, (bls)"),
    ],
)
def test_known_codes_and_descriptions(
    release: HcpcsRelease, code: str, short: str, long: str
) -> None:
    found = release.get(code.lower())
    assert (found.kind, found.short, found.long) == ("procedure", short, long)


def test_continued_descriptions_match_cms_spreadsheet(
    release: HcpcsRelease, anweb: bytes
) -> None:
    # The .xls beside the .txt in the same zip holds each long description in one cell; its
    # records are split by 5-byte BIFF CONTINUE headers ("<\0", length, flag), removed here.
    with zipfile.ZipFile(HCPCS_ZIP) as archive:
        xls = archive.read("HCPC2020_ANWEB_w_disclaimer.xls")
    cells = re.sub(rb" {2,}", b" ", re.sub(rb"<\x00..\x00", b"", xls, flags=re.S))
    continued = [
        code for code in [*release.codes.values(), *release.modifiers.values()]
        if len(code.long) > 80
    ]
    assert len(continued) == 3_049
    missing = [
        code.code for code in continued
        if " ".join(code.long.split()).encode("cp1252") not in cells
    ]
    # G0503's spreadsheet cell stops after 1,188 characters; the text file has it all.
    assert missing == ["G0503"]
    assert release.get("G0503").long.startswith("Subsequent psychiatric collaborative care")
    assert len(release.get("G0503").long) > 1_188
    assert len(_records(anweb, "G0502")) == 14


def test_modifiers(release: HcpcsRelease) -> None:
    left = release.get("lt")
    assert (left.kind, left.short) == ("modifier", "Left side")
    assert left.long == (
        "Left side (used to identify procedures performed on the left side of the body)"
    )
    assert release.modifiers["RT"].short == "Right side"
    assert "25" not in release.modifiers  # CPT modifiers are not in the HCPCS file
    assert "LT" not in release.codes


def test_dates_and_validity(release: HcpcsRelease) -> None:
    ended = release.get("C9043")
    assert (ended.action_code, ended.termination_date) == ("D", date(2019, 12, 31))
    assert ended.add_date == date(2019, 4, 1) and ended.cross_references == ("J0642",)
    assert release.is_valid("C9043", date(2019, 12, 31))
    assert not release.is_valid("C9043", date(2020, 1, 1))
    assert not release.is_valid("C9043", date(2019, 3, 31))
    assert not release.is_valid("G0444", date(2011, 10, 13))
    assert release.is_valid("G0444", date(2011, 10, 14))
    assert release.get("CP").termination_date == date(2017, 12, 31)
    added = release.get("G2021")
    assert (added.action_code, added.add_date) == ("A", date(2020, 1, 1))
    assert not release.is_valid("ZZ999", date(2020, 1, 1))
    with pytest.raises(UnknownCode, match="'ZZ999' is not a code in HCPCS 2020"):
        release.get("ZZ999")


def test_administrative_fields(release: HcpcsRelease) -> None:
    albuterol = release.get("J7613")
    assert albuterol.pricing == ("00",) and albuterol.coverage == "D"
    assert albuterol.betos == "D1G" and albuterol.type_of_service == ("1", "P")


def test_bare_text_and_any_year_in_the_zip(release: HcpcsRelease, anweb: bytes) -> None:
    bare = parse_hcpcs(anweb, source=ANWEB)
    assert bare.year == 2020 and bare.codes == release.codes
    assert parse_hcpcs(anweb, source="anweb.txt").year is None
    renamed = parse_hcpcs(_zip({"HCPC2031_JAN_ANWEB_v2.txt": anweb}), source="new.zip")
    assert renamed.year == 2031 and len(renamed.codes) == 6_710


# -- HCPCS: malformed input -------------------------------------------------------------------

def _bad(anweb: bytes, change: str) -> bytes:
    g0444, j7613, j7613_more = _records(anweb, "J7613", "G0444")  # in file order
    lines = {
        "truncated record": [j7613[:200], j7613_more],
        "orphan continuation": [j7613_more, g0444],
        "continuation of another code": [g0444, j7613_more],
        "out of sequence": [j7613, j7613_more, j7613_more],
        "bad date": [j7613[:268] + "20051301" + j7613[276:], j7613_more],
        "unknown action": [j7613[:292] + "Z" + j7613[293:], j7613_more],
        "bad code": ["J761 " + j7613[5:], j7613_more],
        "twice": [g0444, g0444],
        "junk after records": [g0444, "this is not a record"],
        "too long": [g0444 + "X" * 10],
    }[change]
    return "\r\n".join(["CMS disclaimer text before the records", *lines]).encode("cp1252")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("truncated record", "record of 200 characters, expected 293-320"),
        ("orphan continuation", "follows no first record"),
        ("continuation of another code", "continuation of J7613 follows no first record"),
        ("out of sequence", "continuation out of sequence"),
        ("bad date", "add_date '20051301' is not a date YYYYMMDD"),
        ("unknown action", "action code 'Z'"),
        ("bad code", "'J761 ' is not a HCPCS procedure code"),
        ("twice", "procedure G0444 listed twice"),
        ("junk after records", "expected a record"),
        ("too long", "record of 330 characters"),
    ],
)
def test_malformed_records_raise_code_set_errors(
    anweb: bytes, change: str, message: str
) -> None:
    with pytest.raises(CodeSetError, match=re.escape(message)) as caught:
        parse_hcpcs(_bad(anweb, change), source="bad.txt")
    assert "bad.txt: line " in str(caught.value)


def test_malformed_zips_raise_code_set_errors(anweb: bytes) -> None:
    raw = HCPCS_ZIP.read_bytes()
    with pytest.raises(CodeSetError, match="not a readable zip file"):
        parse_hcpcs(raw[: len(raw) // 2], source="cut.zip")
    with pytest.raises(CodeSetError, match=r"expected one \*ANWEB\*.txt in the zip, found none"):
        parse_hcpcs(_zip({"README.txt": b"hello"}), source="other.zip")
    with pytest.raises(CodeSetError, match="expected one"):
        parse_hcpcs(_zip({"a_ANWEB.txt": anweb, "b_ANWEB.txt": anweb}), source="two.zip")
    with pytest.raises(CodeSetError, match="no HCPCS procedure records"):
        parse_hcpcs(b"just a disclaimer\r\n", source="empty.txt")


# -- CPT: invented files only (CPT content is AMA-licensed) -----------------------------------

def test_tab_delimited_file_like_longult() -> None:
    text = "00001\tTest descriptor one\r\n0001F\tTest descriptor two\r\n\r\n0001T\tTest three\r\n"
    release = parse_cpt(text.encode(), source="LONGULT.txt")
    assert release.codes == {
        "00001": "Test descriptor one", "0001F": "Test descriptor two", "0001T": "Test three",
    }
    assert release.descriptor("0001f") == "Test descriptor two"
    assert "0001T" in release and "99999" not in release
    with pytest.raises(UnknownCode, match="'99999' is not a code in CPT"):
        release.descriptor("99999")


def test_space_delimited_file_like_medu_and_csv_with_header() -> None:
    medu = parse_cpt(b"00002 TEST DESCRIPTOR ONE\n0002U TEST DESCRIPTOR TWO\n", source="MEDU.txt")
    assert medu.codes == {"00002": "TEST DESCRIPTOR ONE", "0002U": "TEST DESCRIPTOR TWO"}
    csv_file = b'Code,Descriptor\n00003,"Test descriptor, with a comma"\n0003M,Test four\n'
    release = parse_cpt(csv_file, source="cpt.csv")
    assert isinstance(release, CptRelease)
    assert release.codes == {"00003": "Test descriptor, with a comma", "0003M": "Test four"}


def test_categories_by_last_character() -> None:
    assert [cpt_category(c) for c in ("00001", "0001A", "0001F", "0001T", "0001U")] == [
        "I", "I", "II", "III", "PLA",
    ]
    with pytest.raises(ValueError, match="not a CPT code"):
        cpt_category("A0001")


def test_repeated_code_with_the_same_text_is_accepted_once() -> None:
    release = parse_cpt(b"00001\tTest one\n00001\tTest one\n", source="cpt.txt")
    assert release.codes == {"00001": "Test one"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"   \n\n", "empty file"),
        (b"0001\tTest descriptor one\n", "'0001' is not a CPT code"),
        (b"00001\tTest one\n0001X\tTest two\n", "line 2: '0001X' is not a CPT code"),
        (b"A0001\tTest descriptor one\n", "'A0001' is not a CPT code"),
        (b"00001\t   \n", "code 00001 has an empty descriptor"),
        (b"00001\n", "code 00001 has an empty descriptor"),
        (b"00001\tTest one\n00001\tTest two\n", "line 2: code 00001 has a different descriptor"),
        (b"code,descriptor\n00001,Test one,extra\n", "line 2: 3 fields, the header has 2"),
        (b"code,descriptor\n", "no CPT codes"),
        (b"code,descriptor\n00001,\n", "empty descriptor"),
    ],
)
def test_malformed_cpt_files_raise_code_set_errors(content: bytes, message: str) -> None:
    with pytest.raises(CodeSetError, match=re.escape(message)) as caught:
        parse_cpt(content, source="licensed.txt")
    assert "licensed.txt" in str(caught.value)


def test_windows_1252_text_is_accepted() -> None:
    release = parse_cpt("00001\tTest descriptor \u2013 one\n".encode("cp1252"), source="a.txt")
    assert release.codes["00001"] == "Test descriptor \u2013 one"
