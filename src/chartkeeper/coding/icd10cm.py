"""ICD-10-CM tabular list (the CMS XML) and order file: codes, titles, 7th characters, notes.

This module holds the ``Tabular`` model, its queries and ``parse_tabular``; the codes and
notes live in ``icd10cm_codes``, the XML reading in ``icd10cm_xml`` and the order file in
``icd10cm_order``, all re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.icd10cm_codes import CATEGORY as CATEGORY
from chartkeeper.coding.icd10cm_codes import CODE_PATTERN as CODE_PATTERN
from chartkeeper.coding.icd10cm_codes import NOTE_KINDS as NOTE_KINDS
from chartkeeper.coding.icd10cm_codes import CmCode as CmCode
from chartkeeper.coding.icd10cm_codes import CodeKind as CodeKind
from chartkeeper.coding.icd10cm_codes import Note as Note
from chartkeeper.coding.icd10cm_codes import NoteKind as NoteKind
from chartkeeper.coding.icd10cm_codes import dotted as dotted
from chartkeeper.coding.icd10cm_codes import undotted as undotted
from chartkeeper.coding.icd10cm_order import OrderEntry as OrderEntry
from chartkeeper.coding.icd10cm_order import decode_text as decode_text
from chartkeeper.coding.icd10cm_order import parse_order_file as parse_order_file
from chartkeeper.coding.icd10cm_xml import TABULAR_ROOT as TABULAR_ROOT
from chartkeeper.coding.icd10cm_xml import _child_text as _child_text
from chartkeeper.coding.icd10cm_xml import _notes as _notes
from chartkeeper.coding.icd10cm_xml import _Reader
from chartkeeper.coding.icd10cm_xml import read_xml as read_xml


class Tabular:
    """One release of the ICD-10-CM tabular list; several releases can live side by side.

    Look-ups accept codes dotted or not, in any case. A missing code raises ``UnknownCode``
    (a ``KeyError``); ``is_billable`` and ``in`` simply answer False. Where a block has the
    name of its only category ("B10"), ``get`` returns the category and ``block`` the block.
    """

    def __init__(
        self, version: str, source: str, chapters: dict[str, CmCode],
        blocks: dict[str, CmCode], codes: dict[str, CmCode], headings: frozenset[str],
    ) -> None:
        self.version = version
        self.source = source
        self._chapters = chapters
        self._blocks = blocks
        self._codes = codes
        self._headings = headings  # blocks whose children are blocks
        self._positions: dict[str, int] = {}  # undotted code -> place in tabular order

    def __repr__(self) -> str:
        return f"<Tabular ICD-10-CM {self.version} from {self.source}: {len(self._codes)} codes>"

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and dotted(code) in self._codes

    def _unknown(self, code: str) -> UnknownCode:
        return UnknownCode(code, f"ICD-10-CM {self.version} ({self.source})")

    def get(self, code: str) -> CmCode:
        """The code, else the block of that range, else the chapter of that number."""
        name = code.strip().upper()
        found = (
            self._codes.get(dotted(name)) or self._blocks.get(name) or self._chapters.get(name)
        )
        if found is None:
            raise self._unknown(code)
        return found

    def block(self, block_id: str) -> CmCode:
        """A block by its range ("I10-I1A") or single-category name ("B10")."""
        try:
            return self._blocks[block_id.strip().upper()]
        except KeyError:
            raise self._unknown(block_id) from None

    def chapter(self, number: str | int) -> CmCode:
        """A chapter by its number (1 to 22)."""
        try:
            return self._chapters[str(number).strip()]
        except KeyError:
            raise self._unknown(str(number)) from None

    def chapters(self) -> list[CmCode]:
        """The chapters in tabular order."""
        return list(self._chapters.values())

    def blocks(self) -> list[CmCode]:
        """The blocks in tabular order, heading blocks ("C00-C96") included."""
        return list(self._blocks.values())

    def codes(self) -> Iterator[CmCode]:
        """Every category and subcategory in tabular order, 7th-character codes included."""
        return iter(self._codes.values())

    def is_billable(self, code: str) -> bool:
        """A complete code: a leaf without 7th characters, or a leaf plus its 7th character."""
        found = self._codes.get(dotted(code))
        return found is not None and not found.children

    def title(self, code: str) -> str:
        """The code's title; a 7th-character code reads "base title, 7th-character meaning"."""
        return self.get(code).title

    def billable_codes(self) -> Iterator[tuple[str, str]]:
        """(code, title) of every billable code in tabular order, codes dotted."""
        for found in self._codes.values():
            if not found.children:
                yield found.code, found.title

    def parent(self, code: str) -> CmCode | None:
        """The code's parent: subcategory to code, category to block, block to chapter."""
        return self._parent_of(self.get(code))

    def _parent_of(self, node: CmCode) -> CmCode | None:
        if node.parent is None:
            return None
        if node.kind == "subcategory":
            return self._codes[node.parent]
        if node.kind == "block" and node.parent.isdigit():
            return self._chapters[node.parent]
        return self._blocks[node.parent]

    def ancestors(self, code: str) -> list[CmCode]:
        """Parent, grandparent... up to the chapter, nearest first."""
        found: list[CmCode] = []
        node = self._parent_of(self.get(code))
        while node is not None:
            found.append(node)
            node = self._parent_of(node)
        return found

    def children(self, code: str) -> list[CmCode]:
        """The code's children in tabular order (blocks of a chapter, categories of a block)."""
        node = self.get(code)
        if node.kind == "chapter" or node.code in self._headings and node.kind == "block":
            return [self._blocks[child] for child in node.children]
        return [self._codes[child] for child in node.children]

    def notes_applying(self, code: str) -> list[tuple[str, Note]]:
        """Every note in force at a code, with the code it comes from, nearest first.

        A code's own notes, then those of each ancestor up to the chapter. An ancestor's
        inclusion terms are left out: they name what the ancestor covers, they give no
        instruction to the codes below it.
        """
        node = self.get(code)
        applying = [(node.code, note) for note in node.notes]
        for ancestor in self.ancestors(code):
            applying.extend(
                (ancestor.code, note) for note in ancestor.notes if note.kind != "inclusionTerm"
            )
        return applying

    def excludes1_conflict(self, code_a: str, code_b: str) -> str | None:
        """The Excludes1 note that forbids reporting the two codes together, else None.

        Only references written in parentheses are read ("(E10.-)", "(O24.4-)", "(C00-C96)",
        "(E08.-, E09.-)"); a reference qualified in words ("with 7th character B") is
        skipped rather than over-applied.
        """
        for this, other in ((code_a, code_b), (code_b, code_a)):
            target = undotted(self.get(other).code)
            for _, note in self.notes_applying(this):
                if note.kind == "excludes1" and any(
                    self._covers(ref, target) for ref in code_references(note.text)
                ):
                    return note.text
        return None

    def _covers(self, reference: CodeReference, code: str) -> bool:
        # Ranges follow tabular order, which is not alphabetical (C4A lies in C43-C44);
        # a reference to codes this release lacks falls back to comparing the characters.
        if not self._positions:
            self._positions = {undotted(code): n for n, code in enumerate(self._codes)}
        first = self._positions.get(reference.first)
        last = self._positions.get(reference.last)
        here = self._positions.get(code)
        if first is None or last is None or here is None:
            return reference.covers(code)
        node = self._codes[dotted(reference.last)]
        while node.children:
            node = self._codes[node.children[-1]]
        return first <= here <= self._positions[undotted(node.code)]


@dataclass(frozen=True, slots=True)
class CodeReference:
    """A code, a code and all below it ("E10.-"), or a range ("C00-C96"), undotted."""

    first: str
    last: str

    def covers(self, code: str) -> bool:
        """Whether an undotted code falls within the reference, comparing characters."""
        return self.first <= code[: len(self.first)] and code[: len(self.last)] <= self.last


_REFERENCE = re.compile(
    rf"(?P<first>{CATEGORY}(?:\.[0-9A-Z]{{0,4}})?)-?(?:\s*-\s*"
    rf"(?P<last>{CATEGORY}(?:\.[0-9A-Z]{{0,4}})?)-?)?"
)
_PARENTHESES = re.compile(r"\(([^()]*)\)")


def code_references(text: str) -> list[CodeReference]:
    """The code references of a note, read from its parenthesised lists of codes."""
    found: list[CodeReference] = []
    for group in _PARENTHESES.findall(text):
        for item in group.split(","):
            match = _REFERENCE.fullmatch(item.strip())
            if match:
                first = undotted(match["first"])
                found.append(CodeReference(first, undotted(match["last"] or first)))
    return found


def parse_tabular(data: bytes, *, source: str = "<bytes>") -> Tabular:
    """Read a CMS ICD-10-CM tabular XML file (plain or gzip-compressed)."""
    root = read_xml(data, source=source, root_tag=TABULAR_ROOT)
    version = " ".join((root.findtext("version") or "").split())
    if not version:
        raise CodeSetError(f"{source}: <version> missing or empty")
    reader = _Reader(source)
    for chapter in root.findall("chapter"):
        reader.chapter(chapter)
    if not reader.chapters:
        raise CodeSetError(f"{source}: no <chapter> in the tabular")
    return Tabular(
        version, source, reader.chapters, reader.blocks, reader.codes, frozenset(reader.headings)
    )
