"""Reading the CMS ICD-10-CM tabular XML: safe XML parsing, notes, blocks, codes, 7th characters."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.icd10cm_codes import (
    _EMPTY,
    CATEGORY,
    CODE_PATTERN,
    NOTE_KINDS,
    CmCode,
    CodeKind,
    Note,
    dotted,
    undotted,
)

TABULAR_ROOT = "ICD10CM.tabular"

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


@dataclass(frozen=True, slots=True)
class _SeventhException:
    prefix: str  # undotted code the rule is stated for
    sixth: frozenset[str]
    chars: frozenset[str]


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
