"""ICD-10-CM tabular list (the CMS XML) and order file: codes, titles, 7th characters, notes."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from chartkeeper.coding.errors import CodeSetError, UnknownCode

NoteKind = Literal[
    "includes", "inclusionTerm", "excludes1", "excludes2",
    "codeFirst", "useAdditionalCode", "codeAlso", "notes",
]
CodeKind = Literal["chapter", "block", "category", "subcategory"]
NOTE_KINDS: tuple[NoteKind, ...] = (
    "includes", "inclusionTerm", "excludes1", "excludes2",
    "codeFirst", "useAdditionalCode", "codeAlso", "notes",
)
TABULAR_ROOT = "ICD10CM.tabular"

#: A category: a letter, then a digit in 2nd or 3rd place ("E11", "C4A", FY2026's "QA0").
CATEGORY = r"[A-Z](?:[0-9][0-9A-Z]|[A-Z][0-9])"
#: A diagnosis code as the tabular writes it: category, then a dot and up to four characters.
CODE_PATTERN = re.compile(rf"{CATEGORY}(?:\.[0-9A-Z]{{1,4}})?")
_BLOCK_ID = re.compile(rf"({CATEGORY})(?:-({CATEGORY}))?")
_CHAPTER_NUMBER = re.compile(r"[1-9][0-9]?")
_SEVENTH = re.compile(r"[0-9A-Z]")
# The only 7th-character restriction CMS states in prose (category S06, FY2026): "7th characters
# D and S do not apply to codes in category S06 with 6th character 7 - ..., or 8 - ...".
_SEVENTH_EXCEPTION = re.compile(
    r"7th characters? (?P<chars>[0-9A-Z](?:(?:,|,? and|,? or) [0-9A-Z])*) do(?:es)? not apply "
    rf"to codes in (?:category|subcategory) (?P<code>{CATEGORY}(?:\.[0-9A-Z]+)?) "
    r"with 6th characters? (?P<sixth>.+)"
)
_SIXTH_VALUE = re.compile(r"(?:^|,? or |, )([0-9A-Z]) -")
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Note:
    """One instructional note: ``kind`` is the tabular element it sits in."""

    kind: NoteKind
    text: str


@dataclass(frozen=True, slots=True)
class CmCode:
    """A chapter (its number), block (its range, "I10-I1A") or code (dotted, "E11.9").

    Codes built from a leaf plus a 7th character ("S72.001A") are subcategories whose
    ``seventh`` is that character and whose ``parent`` is the leaf. ``seven_chr`` is the
    sevenChrDef in force at this code (its own or an ancestor's), empty where none applies.
    """

    code: str
    title: str
    kind: CodeKind
    parent: str | None
    children: tuple[str, ...]
    notes: tuple[Note, ...]
    seven_chr: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    seven_chr_note: str | None = None
    seventh: str | None = None


@dataclass(frozen=True, slots=True)
class _SeventhException:
    prefix: str  # undotted code the rule is stated for
    sixth: frozenset[str]
    chars: frozenset[str]


def undotted(code: str) -> str:
    """A code as claims and order files write it: upper case, no dot ("E119")."""
    return code.strip().upper().replace(".", "")


def dotted(code: str) -> str:
    """A code as the tabular writes it: upper case, dot after the category ("E11.9")."""
    bare = undotted(code)
    return bare if len(bare) <= 3 else f"{bare[:3]}.{bare[3:]}"


def read_xml(data: bytes, *, source: str, root_tag: str) -> Element:
    """Parse (optionally gzip-compressed) XML safely and check its root element."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise CodeSetError(f"{source}: not a readable gzip file ({exc})") from exc
    try:
        root = SafeElementTree.fromstring(data)
    except ParseError as exc:
        line, column = exc.position
        raise CodeSetError(
            f"{source}: not well-formed XML at line {line}, column {column} "
            f"(truncated or damaged file?): {exc}"
        ) from exc
    except DefusedXmlException as exc:
        raise CodeSetError(f"{source}: XML with forbidden constructs ({exc!r})") from exc
    if root.tag != root_tag:
        raise CodeSetError(f"{source}: root element is <{root.tag}>, expected <{root_tag}>")
    return root


def decode_text(data: bytes, *, source: str) -> str:
    """Text of a code-set file: UTF-8 (with or without BOM), else Windows-1252 as CMS writes."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise CodeSetError(
            f"{source}: byte {exc.start} is neither UTF-8 nor Windows-1252 text"
        ) from exc


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


def _child_text(element: Element, tag: str, where: str) -> str:
    child = element.find(tag)
    text = "" if child is None or child.text is None else " ".join(child.text.split())
    if not text:
        raise CodeSetError(f"{where}: <{element.tag}> has no <{tag}> text")
    return text


def _notes(element: Element) -> tuple[Note, ...]:
    notes: list[Note] = []
    for kind in NOTE_KINDS:
        for holder in element.findall(kind):
            for note in holder.findall("note"):
                text = " ".join((note.text or "").split())
                if text:
                    notes.append(Note(kind, text))
    return tuple(notes)


class _Reader:
    """Walks the tabular once, building chapters, blocks, codes and 7th-character codes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.chapters: dict[str, CmCode] = {}
        self.blocks: dict[str, CmCode] = {}
        self.codes: dict[str, CmCode] = {}
        self.headings: set[str] = set()

    def chapter(self, element: Element) -> None:
        where = f"{self.source}: chapter"
        number = _child_text(element, "name", where)
        if not _CHAPTER_NUMBER.fullmatch(number) or number in self.chapters:
            raise CodeSetError(f"{where} {number!r}: expected a new chapter number 1-99")
        top: list[str] = []
        below: dict[str, list[str]] = {}
        # CMS lists blocks flat; a block without codes heads the blocks after it that fall in
        # its range (V00-V99 over V00-V09...), and its notes apply to them.
        heads: list[tuple[str, str, str]] = []
        for section in element.findall("section"):
            block_id = (section.get("id") or "").strip()
            match = _BLOCK_ID.fullmatch(block_id)
            if match is None or block_id in self.blocks:
                raise CodeSetError(
                    f"{where} {number}, section {block_id!r}: expected a new block id like "
                    "'A00-A09' or 'B10'"
                )
            first, last = match[1], match[2] or match[1]
            while heads and not (heads[-1][1] <= first and last <= heads[-1][2]):
                heads.pop()
            (below[heads[-1][0]] if heads else top).append(block_id)
            if self.block(section, block_id, heads[-1][0] if heads else number):
                below[block_id] = []
                heads.append((block_id, first, last))
        if not top:
            raise CodeSetError(f"{where} {number}: no <section> (block) in it")
        for heading, blocks in below.items():
            self.blocks[heading] = replace(self.blocks[heading], children=tuple(blocks))
        self.headings.update(below)
        self.chapters[number] = CmCode(
            number, _child_text(element, "desc", f"{where} {number}"), "chapter", None,
            tuple(top), _notes(element),
        )

    def block(self, element: Element, block_id: str, parent: str) -> bool:
        """Read one block; True when it has no codes of its own (a heading block)."""
        where = f"{self.source}: section {block_id}"
        categories = [
            self.diag(diag, block_id, "category", None, (), where)
            for diag in element.findall("diag")
        ]
        self.blocks[block_id] = CmCode(
            block_id, _child_text(element, "desc", where), "block", parent,
            tuple(categories), _notes(element),
        )
        return not categories

    def diag(
        self, element: Element, parent: str, kind: CodeKind, inherited: CmCode | None,
        exceptions: tuple[_SeventhException, ...], where: str,
    ) -> str:
        code = _child_text(element, "name", where)
        where = f"{self.source}: code {code}"
        if not CODE_PATTERN.fullmatch(code) or code in self.codes:
            raise CodeSetError(f"{where}: expected a new ICD-10-CM code like 'E11.9'")
        bare = undotted(code)
        if kind == "category" and len(bare) != 3:
            raise CodeSetError(f"{where}: a category must have 3 characters")
        if kind == "subcategory" and (bare[:-1] != undotted(parent)):
            raise CodeSetError(f"{where}: does not extend its parent {parent} by one character")
        title = _child_text(element, "desc", where)
        notes = _notes(element)
        seven_chr, seven_chr_note = self.seven_chr(element, inherited, where)
        exceptions += tuple(_seventh_exceptions(notes, where))
        inner = CmCode(code, title, kind, parent, (), notes, seven_chr, seven_chr_note)
        # Hold the code's place before its descendants so that the dict keeps tabular order.
        self.codes[code] = inner
        children = [
            self.diag(child, code, "subcategory", inner, exceptions, where)
            for child in element.findall("diag")
        ]
        if not children and seven_chr:
            children = self.seventh_codes(inner, exceptions)
        self.codes[code] = CmCode(
            code, title, kind, parent, tuple(children), notes, seven_chr, seven_chr_note
        )
        return code

    def seven_chr(
        self, element: Element, inherited: CmCode | None, where: str
    ) -> tuple[Mapping[str, str], str | None]:
        definition = element.find("sevenChrDef")
        note_holder = element.find("sevenChrNote")
        note = None
        if note_holder is not None:
            note = " ".join(" ".join(n.text or "" for n in note_holder.findall("note")).split())
        if definition is None:
            if inherited is None:
                return _EMPTY, note
            return inherited.seven_chr, note or inherited.seven_chr_note
        meanings: dict[str, str] = {}
        # <note> elements inside a sevenChrDef qualify the extension before them (or are
        # stray); the meaning of each 7th character is its <extension> text alone.
        for extension in definition.findall("extension"):
            char = (extension.get("char") or "").strip()
            meaning = " ".join((extension.text or "").split())
            if not _SEVENTH.fullmatch(char) or not meaning or char in meanings:
                raise CodeSetError(
                    f"{where}: sevenChrDef extension char={char!r} needs one new character "
                    "0-9/A-Z and a meaning"
                )
            meanings[char] = meaning
        if not meanings:
            raise CodeSetError(f"{where}: empty <sevenChrDef>")
        return MappingProxyType(meanings), note

    def seventh_codes(
        self, leaf: CmCode, exceptions: tuple[_SeventhException, ...]
    ) -> list[str]:
        base = undotted(leaf.code).ljust(6, "X")
        built: list[str] = []
        for char, meaning in leaf.seven_chr.items():
            if any(
                base.startswith(rule.prefix) and base[5] in rule.sixth and char in rule.chars
                for rule in exceptions
            ):
                continue
            code = dotted(base + char)
            self.codes[code] = CmCode(
                code, f"{leaf.title}, {meaning}", "subcategory", leaf.code, (), (), seventh=char
            )
            built.append(code)
        return built


def _seventh_exceptions(notes: tuple[Note, ...], where: str) -> Iterator[_SeventhException]:
    for note in notes:
        if "7th character" not in note.text or "not apply" not in note.text:
            continue
        match = _SEVENTH_EXCEPTION.search(note.text)
        sixth = _SIXTH_VALUE.findall(match["sixth"]) if match else []
        if match is None or not sixth:
            # Silently ignoring it would yield codes CMS does not allow.
            raise CodeSetError(f"{where}: unrecognised 7th-character exception note {note.text!r}")
        yield _SeventhException(
            undotted(match["code"]), frozenset(sixth), frozenset(re.findall(r"\b[0-9A-Z]\b",
                                                                           match["chars"])),
        )


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


@dataclass(frozen=True, slots=True)
class OrderEntry:
    """One line of the CMS order file (icd10cm_order_YYYY.txt)."""

    order: int
    code: str  # dotted
    billable: bool  # False for a header (a code with codes below it)
    short_title: str
    long_title: str


_ORDER_CODE = re.compile(rf"{CATEGORY}[0-9A-Z]{{0,4}}")


def parse_order_file(data: bytes, *, source: str = "<bytes>") -> dict[str, OrderEntry]:
    """Read the CMS fixed-width order file, keyed by dotted code, in file order.

    Columns (1-based): order number 1-5, code 7-13, 1 = billable / 0 = header at 15, short
    title 17-76, long title from 78.
    """
    text = decode_text(data, source=source)
    entries: dict[str, OrderEntry] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        order, code, flag = line[0:5], line[6:13].rstrip(), line[14:15]
        short, long = line[16:76].rstrip(), line[77:].strip()
        if not (
            len(line) >= 78 and order.isdigit() and _ORDER_CODE.fullmatch(code)
            and flag in ("0", "1") and short and long
            and line[5] + line[13] + line[15] + line[76] == "    "
        ):
            raise CodeSetError(
                f"{source}: line {number}: expected 'NNNNN CODE    F SHORT(60) LONG' "
                f"(order, code, 0/1, titles), got {line[:40]!r}"
            )
        code = dotted(code)
        if code in entries:
            raise CodeSetError(f"{source}: line {number}: code {code} listed twice")
        entries[code] = OrderEntry(int(order), code, flag == "1", short, long)
    if not entries:
        raise CodeSetError(f"{source}: no order-file lines")
    return entries

