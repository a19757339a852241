"""ICD-10-CM index files (CDC/CMS XML): Alphabetic Index, External Cause Index, Neoplasm, Drugs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from xml.etree.ElementTree import Element

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.icd10cm import CATEGORY, read_xml

IndexKind = Literal["index", "eindex", "neoplasm", "drug"]
INDEX_ROOT = "ICD10CM.index"

# Codes as the index prints them: "C50.9-" and "D05.-" (more characters needed), "T36.0X1".
INDEX_CODE = re.compile(rf"{CATEGORY}(?:\.[0-9A-Z]{{0,4}})?-?")
# <code>, <subcat> and <seecat> may also name a range ("A00-A09") in the Alphabetic Index.
_CODE_OR_RANGE = re.compile(rf"{INDEX_CODE.pattern}(?:\s*-\s*{INDEX_CODE.pattern})?")
# Table cells hold a dash where a column has no code.
_NO_CODE = frozenset({"-", "--", "\u2014", "\u2013"})
_TEXT_CHILDREN = ("see", "seeAlso", "manif")
_CODE_CHILDREN = ("code", "seecat", "subcat")


def normalize_index_code(code: str) -> str:
    """An index code without dot, dash or spaces, upper case: "C50.9-" -> "C509"."""
    return re.sub(r"[.\s]", "", code).upper().rstrip("-")


def is_partial_code(code: str) -> bool:
    """Whether the index marks the code as needing more characters ("C50.9-", "D05.-")."""
    return code.strip().endswith("-")


@dataclass(frozen=True, slots=True)
class IndexTerm:
    """One main term or subterm, flattened with the path that leads to it.

    ``path`` is the main term then each subterm, without their nonessential modifiers;
    ``nemod`` holds those modifiers, one entry per path element ("" where none). ``cells``
    maps a table column heading to the code in it, as written (dash cells left out).
    """

    path: tuple[str, ...]
    nemod: tuple[str, ...]
    code: str | None = None
    see: str | None = None
    see_also: str | None = None
    see_category: str | None = None
    subcategory: str | None = None
    manif: str | None = None
    cells: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def term(self) -> str:
        """The path joined as coders write it: "Neoplasm, neoplastic, breast, areola"."""
        return ", ".join(self.path)

    @property
    def level(self) -> int:
        """0 for a main term, 1 for its subterms, and so on."""
        return len(self.path) - 1

    @property
    def normalized_code(self) -> str | None:
        """``code`` without dot or trailing dash ("C509"), None where there is no code."""
        return None if self.code is None else normalize_index_code(self.code)

    def normalized_cells(self) -> dict[str, str]:
        """``cells`` with each code normalized."""
        return {heading: normalize_index_code(code) for heading, code in self.cells.items()}


@dataclass(frozen=True, slots=True)
class CmIndex:
    """One index file: its kind, version, title, table columns and every term in file order."""

    kind: IndexKind
    version: str | None
    title: str | None
    columns: tuple[str, ...]
    terms: tuple[IndexTerm, ...]
    source: str

    def find(self, *path: str) -> list[IndexTerm]:
        """The terms at a path, compared without case ("Aspirin" or "neoplasm, neoplastic",
        "breast"); the Table of Drugs lists some substances under two letters."""
        wanted = tuple(part.strip().lower() for part in path)
        return [
            term for term in self.terms
            if len(term.path) == len(wanted)
            and tuple(part.lower() for part in term.path) == wanted
        ]

    def with_code(self, code: str) -> Iterator[IndexTerm]:
        """Terms whose code or a table cell is this code (compared normalized)."""
        wanted = normalize_index_code(code)
        for term in self.terms:
            if term.normalized_code == wanted or wanted in term.normalized_cells().values():
                yield term


def _title(element: Element, where: str) -> tuple[str, str]:
    """A <title>'s essential text (nemod removed, its tail kept: "Abandonment NEC") and nemod."""
    title = element.find("title")
    if title is None:
        addenda = element.find("diff") is not None
        hint = " (an addenda <diff>: load the full index)" if addenda else ""
        raise CodeSetError(f"{where}: <{element.tag}> without <title>{hint}")
    parts = [title.text or ""]
    modifiers = []
    for child in title:
        if child.tag != "nemod":
            raise CodeSetError(f"{where}: unexpected <{child.tag}> inside <title>")
        modifiers.append(child.text or "")
        parts.append(child.tail or "")
    text = " ".join(" ".join(parts).split())
    if not text:
        raise CodeSetError(f"{where}: empty <title>")
    return text, " ".join(" ".join(modifiers).split())


def _flat_text(element: Element | None) -> str | None:
    if element is None:
        return None
    text = " ".join("".join(element.itertext()).split())
    return text or None


class _Reader:
    def __init__(self, source: str, columns: tuple[str, ...]) -> None:
        self.source = source
        self.columns = columns
        self.terms: list[IndexTerm] = []

    def term(
        self, element: Element, path: tuple[str, ...], nemod: tuple[str, ...], where: str
    ) -> None:
        text, modifier = _title(element, where)
        path, nemod = path + (text,), nemod + (modifier,)
        where = f"{self.source}: term {', '.join(path)!r}"
        values: dict[str, str | None] = {tag: _flat_text(element.find(tag)) for tag in
                                         _TEXT_CHILDREN + _CODE_CHILDREN}
        for tag in _CODE_CHILDREN:
            value = values[tag]
            if value is not None and not _CODE_OR_RANGE.fullmatch(value):
                raise CodeSetError(f"{where}: <{tag}> {value!r} is not an ICD-10-CM code")
        self.terms.append(IndexTerm(
            path, nemod, values["code"], values["see"], values["seeAlso"], values["seecat"],
            values["subcat"], values["manif"], MappingProxyType(self.cells(element, where)),
        ))
        for child in element.findall("term"):
            level = child.get("level", "")
            if level != str(len(path)):
                raise CodeSetError(
                    f"{where}: subterm with level={level!r}, expected level=\"{len(path)}\""
                )
            self.term(child, path, nemod, where)

    def cells(self, element: Element, where: str) -> dict[str, str]:
        cells: dict[str, str] = {}
        seen: set[int] = set()
        for cell in element.findall("cell"):
            col = cell.get("col", "")
            # Column 1 holds the term itself; the codes sit in columns 2..n of the heading.
            if not col.isdigit() or not 2 <= int(col) <= len(self.columns) or int(col) in seen:
                raise CodeSetError(
                    f"{where}: <cell col={col!r}> does not match the {len(self.columns)} "
                    f"heading columns (expected one cell per column 2-{len(self.columns)})"
                )
            seen.add(int(col))
            value = _flat_text(cell) or ""
            if value in _NO_CODE:
                continue
            if not INDEX_CODE.fullmatch(value):
                raise CodeSetError(f"{where}: cell {col} holds {value!r}, not a code or a dash")
            cells[self.columns[int(col) - 1]] = value
        return cells


def _columns(root: Element, source: str) -> tuple[str, ...]:
    heading = root.find("indexHeading")
    if heading is None:
        return ()
    heads = heading.findall("head")
    columns = tuple(_flat_text(head) or "" for head in heads)
    numbers = [head.get("col") for head in heads]
    if not heads or numbers != [str(n) for n in range(1, len(heads) + 1)] or not all(columns):
        raise CodeSetError(
            f"{source}: <indexHeading> must name columns col=1..n in order, got {numbers}"
        )
    return columns


def _kind(columns: tuple[str, ...], title: str | None, source: str) -> IndexKind:
    if columns:
        first = columns[0].lower()
        if first.startswith("neoplasm"):
            return "neoplasm"
        if first.startswith(("substance", "drug")):
            return "drug"
        raise CodeSetError(
            f"{source}: a table headed {columns[0]!r}; expected the Neoplasm Table or the "
            "Table of Drugs and Chemicals"
        )
    if title is not None and "external cause" in title.lower():
        return "eindex"
    return "index"


def parse_index(data: bytes, *, source: str) -> CmIndex:
    """Read one ICD-10-CM index XML file (plain or gzip-compressed), detecting its kind."""
    root = read_xml(data, source=source, root_tag=INDEX_ROOT)
    if root.get("isAddenda") == "true":
        raise CodeSetError(f"{source}: an addenda file (isAddenda=\"true\"), not a full index")
    title = _flat_text(root.find("title"))
    columns = _columns(root, source)
    kind = _kind(columns, title, source)
    reader = _Reader(source, columns)
    letters = root.findall("letter")
    if not letters:
        raise CodeSetError(f"{source}: no <letter> in the index")
    for letter in letters:
        where = f"{source}: letter {_flat_text(letter.find('title'))!r}"
        for main_term in letter.findall("mainTerm"):
            reader.term(main_term, (), (), where)
    if not reader.terms:
        raise CodeSetError(f"{source}: no <mainTerm> in the index")
    return CmIndex(
        kind, _flat_text(root.find("version")), title, columns, tuple(reader.terms), source
    )
