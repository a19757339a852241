"""The ICD-10-CM index parser against the CDC FY2025 Neoplasm, Drug and External Cause files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from chartkeeper.coding.cm_index import (
    CmIndex,
    is_partial_code,
    normalize_index_code,
    parse_index,
)
from chartkeeper.coding.errors import CodeSetError

INDEX_DIR = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
    / "icd10cm-fy2025-cdc-neoplasm-drug-eindex"
)
NEOPLASM = INDEX_DIR / "icd-10-cm-neoplasm-2025.xml"
DRUG = INDEX_DIR / "icd-10-cm-drug-2025.xml"
EINDEX = INDEX_DIR / "icd-10-cm-eindex-2025.xml"


@pytest.fixture(scope="module")
def neoplasm() -> CmIndex:
    return parse_index(NEOPLASM.read_bytes(), source=NEOPLASM.name)


@pytest.fixture(scope="module")
def drug() -> CmIndex:
    return parse_index(DRUG.read_bytes(), source=DRUG.name)


@pytest.fixture(scope="module")
def eindex() -> CmIndex:
    return parse_index(EINDEX.read_bytes(), source=EINDEX.name)


def test_neoplasm_table_counts_and_columns(neoplasm: CmIndex) -> None:
    assert (neoplasm.kind, neoplasm.version, neoplasm.title) == ("neoplasm", "2025", None)
    assert neoplasm.columns == (
        "Neoplasm", "Malignant Primary", "Malignant Secondary", "Ca in situ", "Benign",
        "Uncertain Behavior", "Unspecified Behavior",
    )
    # One main term ("Neoplasm, neoplastic") and 1,938 subterms; 10,916 cells, 1,898 dashes.
    assert len(neoplasm.terms) == 1_939
    assert [t.term for t in neoplasm.terms if t.level == 0] == ["Neoplasm, neoplastic"]
    assert sum(len(t.cells) for t in neoplasm.terms) == 10_916 - 1_898


def test_neoplasm_breast_row(neoplasm: CmIndex) -> None:
    [breast] = neoplasm.find("neoplasm, neoplastic", "Breast")
    assert breast.nemod == ("", "(connective tissue) (glandular tissue) (soft parts)")
    assert dict(breast.cells) == {
        "Malignant Primary": "C50.9-", "Malignant Secondary": "C79.81", "Ca in situ": "D05.-",
        "Benign": "D24.-", "Uncertain Behavior": "D48.6-", "Unspecified Behavior": "D49.3",
    }
    assert breast.normalized_cells()["Malignant Primary"] == "C509"
    assert breast.normalized_cells()["Ca in situ"] == "D05"
    [areola] = neoplasm.find("Neoplasm, neoplastic", "breast", "areola")
    assert areola.cells["Malignant Primary"] == "C50.0-"
    assert areola.term == "Neoplasm, neoplastic, breast, areola"


def test_neoplasm_partial_rows_and_cross_references(neoplasm: CmIndex) -> None:
    # The CDC file itself leaves the in-situ cell out of this row.
    [sacrococcyx] = neoplasm.find("Neoplasm, neoplastic", "sacrococcyx, sacrococcygeal")
    assert "Ca in situ" not in sacrococcyx.cells and sacrococcyx.cells["Benign"] == "D16.8"
    [see] = [t for t in neoplasm.terms if t.path[-1] == "breast" and t.see]
    assert see.see == "Neoplasm, breast"
    assert see.cells == {}


def test_drug_table_counts_and_aspirin(drug: CmIndex) -> None:
    assert drug.kind == "drug" and drug.version == "2025"
    assert drug.columns[0] == "Substance" and len(drug.columns) == 7
    assert sum(1 for t in drug.terms if t.level == 0) == 5_177
    assert len(drug.terms) == 5_177 + 2_251
    assert sum(len(t.cells) for t in drug.terms) == 43_212 - 3_186
    [aspirin] = drug.find("Aspirin")
    assert aspirin.nemod == ("(aluminum) (soluble)",)
    assert dict(aspirin.cells) == {
        "Poisoning Accidental (unintentional)": "T39.011",
        "Poisoning Intentional self-harm": "T39.012",
        "Poisoning Assault": "T39.013",
        "Poisoning Undetermined": "T39.014",
        "Adverse effect": "T39.015",
        "Underdosing": "T39.016",
    }
    assert aspirin in list(drug.with_code("T39011"))
    # Listed under "#" and again under its letter.
    assert len(drug.find("1-propanol")) == 2
    [propanol] = drug.find("1-propanol")[:1]
    assert "Adverse effect" not in propanol.cells  # "--" in the table


def test_external_cause_index(eindex: CmIndex) -> None:
    assert eindex.kind == "eindex"
    assert eindex.title == "ICD-10-CM EXTERNAL CAUSE of INJURIES INDEX"
    assert eindex.columns == ()
    assert sum(1 for t in eindex.terms if t.level == 0) == 314
    assert len(eindex.terms) == 314 + 7_750
    assert sum(1 for t in eindex.terms if t.code) == 6_650
    # The nonessential modifier is kept apart; the text after it stays in the term.
    [abandonment] = eindex.find("Abandonment NEC")
    assert abandonment.code == "X58"
    assert abandonment.nemod == (
        "(causing exposure to weather conditions) (with intent to injure or kill)",
    )
    [powered] = eindex.find("Accident", "boat, boating", "striking swimmer", "powered")
    assert (powered.code, powered.level, powered.nemod[0]) == ("V94.11", 3, "(to)")
    [lightning] = eindex.find("Accident", "caused by, due to", "lightning")
    assert lightning.subcategory == "T75.0"
    [aircraft] = eindex.find("Accident", "aircraft")
    assert aircraft.see_also == "Accident, transport, aircraft"


def test_codes_keep_their_written_form_and_a_normal_form() -> None:
    assert normalize_index_code("C50.9-") == "C509"
    assert normalize_index_code("t36.0x1") == "T360X1"
    assert is_partial_code("D05.-") and not is_partial_code("D49.3")


ALPHABETIC = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.index>
  <version>2099</version>
  <title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
  <letter>
    <title>Q</title>
    <mainTerm>
      <title>Quuxitis<nemod>(invented)</nemod></title>
      <code>A00.1</code>
      <term level="1">
        <title>with invented complication</title>
        <code>A01.-</code>
        <manif>A02</manif>
      </term>
      <term level="1">
        <title>see elsewhere</title>
        <seecat>A00</seecat>
      </term>
    </mainTerm>
  </letter>
</ICD10CM.index>
"""


def test_alphabetic_index_is_read_by_the_xsd_structure() -> None:
    index = parse_index(gzip.compress(ALPHABETIC.encode()), source="invented-index.xml.gz")
    assert index.kind == "index" and index.columns == ()
    assert [(t.path, t.code, t.manif, t.see_category) for t in index.terms] == [
        (("Quuxitis",), "A00.1", None, None),
        (("Quuxitis", "with invented complication"), "A01.-", "A02", None),
        (("Quuxitis", "see elsewhere"), None, None, "A00"),
    ]
    assert index.terms[1].normalized_code == "A01"


TABLE = """<ICD10CM.index>
  <version>2099</version>
  <indexHeading>
    <head col="1">Neoplasm</head><head col="2">Malignant Primary</head>
    <head col="3">Benign</head>
  </indexHeading>
  <letter><title>N</title>
    <mainTerm><title>Invented site</title><cell col="2">A00.1</cell><cell col="3">-</cell>
    </mainTerm>
  </letter>
</ICD10CM.index>
"""


def test_the_invented_table_itself_parses() -> None:
    index = parse_index(TABLE.encode(), source="table.xml")
    assert index.kind == "neoplasm" and dict(index.terms[0].cells) == {"Malignant Primary": "A00.1"}


@pytest.mark.parametrize(
    ("document", "old", "new", "message"),
    [
        (TABLE, "ICD10CM.index", "ICD10CM.tabular", "expected <ICD10CM.index>"),
        (TABLE, '<cell col="3">-</cell>', '<cell col="3">-</cell><cell col="4">A01</cell>',
         "does not match the 3 heading columns"),
        (TABLE, '<cell col="3">-</cell>', '<cell col="2">A01</cell>',
         "does not match the 3 heading columns"),
        (TABLE, '<cell col="2">A00.1</cell>', '<cell col="1">A00.1</cell>', "heading columns"),
        (TABLE, '<cell col="2">A00.1</cell>', '<cell col="2">benign</cell>', "not a code"),
        (TABLE, '<head col="3">', '<head col="4">', "must name columns col=1..n"),
        (TABLE, ">Neoplasm<", ">Procedure<", "a table headed 'Procedure'"),
        (TABLE, "<title>Invented site</title>", "", "without <title>"),
        (ALPHABETIC, "<code>A00.1</code>", "<code>see above</code>", "is not an ICD-10-CM code"),
        (ALPHABETIC, 'level="1"', 'level="2"', "expected level=\"1\""),
        (ALPHABETIC, "<ICD10CM.index>", '<ICD10CM.index isAddenda="true">', "an addenda file"),
        (ALPHABETIC, "<letter>", "<letter><mainTerm><title>Odd</title></mainTerm></letter><letter>",
         None),
    ],
)
def test_malformed_index_files_raise_code_set_errors(
    document: str, old: str, new: str, message: str | None
) -> None:
    assert old in document
    changed = document.replace(old, new)
    if message is None:  # a control: the change is harmless
        assert parse_index(changed.encode(), source="bad.xml").terms[0].path == ("Odd",)
        return
    with pytest.raises(CodeSetError, match=message) as caught:
        parse_index(changed.encode(), source="bad.xml")
    assert "bad.xml" in str(caught.value)


def test_truncated_and_empty_index_files_are_refused() -> None:
    raw = DRUG.read_bytes()
    with pytest.raises(CodeSetError, match=r"not well-formed XML at line \d+"):
        parse_index(raw[: len(raw) // 3], source="cut.xml")
    with pytest.raises(CodeSetError, match="no <letter>"):
        parse_index(b"<ICD10CM.index><version>1</version></ICD10CM.index>", source="e.xml")
