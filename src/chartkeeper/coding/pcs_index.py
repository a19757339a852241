"""ICD-10-PCS Alphabetic Index and Definitions (CMS XML): index entries and axis-value meanings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.pcs import parse_xml

INDEX_ROOT = "ICD10PCS.index"
DEFINITIONS_ROOT = "ICD10PCS.definitions"
#: An index reference: a table (3 characters), a partial code (4-6) or a whole code (7).
_PARTIAL_CODE = re.compile(r"[0-9A-HJ-NP-Z]{3,7}")
_SECTION_CODE = re.compile(r"[0-9A-HJ-NP-Z]")


@dataclass(frozen=True, slots=True)
class PcsDefinition:
    """What one axis value means in a section: its definition, explanation and inclusions.

    ``terms`` lists every label the entry covers: CMS gives "1st Toe, Left" and "1st Toe,
    Right" one shared entry, and device entries name a body system ("... in Lower Joints").
    """

    section: str
    axis_position: int
    axis_title: str
    terms: tuple[str, ...]
    definition: str | None
    explanation: str | None
    includes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeviceAggregate:
    """A specific device value that rolls up to a general one ("..., Metal" -> J)."""

    device: str
    operation: str
    body_systems: tuple[str, ...]
    parent_value: str
    parent_label: str


class PcsDefinitions:
    """A parsed CMS ``icd10pcs_definitions_YYYY.xml`` file."""

    def __init__(self, version: str, title: str, source: str, sections: dict[str, str],
                 entries: list[PcsDefinition], aggregates: tuple[DeviceAggregate, ...]) -> None:
        self.version = version
        self.title = title
        self.source = source
        #: Section code -> section title, e.g. "0" -> "Medical and Surgical".
        self.sections = sections
        self.device_aggregates = aggregates
        self._entries = entries
        self._by_term: dict[tuple[str, int, str], PcsDefinition] = {}
        for entry in entries:
            for term in entry.terms:
                key = (entry.section, entry.axis_position, term)
                if key in self._by_term:
                    raise CodeSetError(f"{source}: section {entry.section}, axis "
                                       f"{entry.axis_position}: term {term!r} is defined twice")
                self._by_term[key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[PcsDefinition]:
        return iter(self._entries)

    def definition(self, section: str, axis_pos: int, label: str, *,
                   body_system: str | None = None) -> PcsDefinition | None:
        """The entry for a table label, or None when CMS defines none for it.

        Device entries are per body system ("Synthetic Substitute in Lower Joints"): pass
        ``body_system`` (the label of position 2) to find them.
        """
        found = self._by_term.get((section, axis_pos, label))
        if found is None and body_system is not None:
            found = self._by_term.get((section, axis_pos, f"{label} in {body_system}"))
        return found

    def terms(self, section: str, axis_pos: int) -> list[PcsDefinition]:
        """Every entry of one section's axis, in file order."""
        return [e for e in self._entries
                if e.section == section and e.axis_position == axis_pos]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of the Alphabetic Index: its path of terms and where it points.

    ``code`` is a table (3 characters), a partial code (4-6) or a whole code (7) into the
    tables, whether given on the line or with its see/use reference. A line with no title of
    its own (a bare "see Destruction" under a main term) has its parent's path.
    """

    path: tuple[str, ...]
    code: str | None
    see: str | None
    use: str | None


class PcsIndex:
    """A parsed CMS ``icd10pcs_index_YYYY.xml`` file, its entries in index order."""

    def __init__(self, version: str, title: str, source: str,
                 entries: tuple[IndexEntry, ...]) -> None:
        self.version = version
        self.title = title
        self.source = source
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[IndexEntry]:
        return iter(self.entries)

    def main_term(self, title: str) -> list[IndexEntry]:
        """The entries under one main term (case-insensitive), the main term's own first."""
        wanted = title.casefold()
        return [e for e in self.entries if e.path[0].casefold() == wanted]


def parse_definitions(data: bytes, *, source: str) -> PcsDefinitions:
    """Parse a CMS ``icd10pcs_definitions_YYYY.xml`` file (plain or gzip-compressed)."""
    root = parse_xml(data, source=source, root_tag=DEFINITIONS_ROOT)
    version = _text(root, "version", f"{source}: <{DEFINITIONS_ROOT}>")
    title = _text(root, "title", f"{source}: <{DEFINITIONS_ROOT}>")
    sections: dict[str, str] = {}
    entries: list[PcsDefinition] = []
    for section in root.findall("section"):
        code = section.get("code", "")
        if not _SECTION_CODE.fullmatch(code) or code in sections:
            raise CodeSetError(f"{source}: <section code={code!r}> is not a new PCS section "
                               "character")
        where = f"{source}: section {code}"
        sections[code] = _text(section, "title", where)
        for axis in section.findall("axis"):
            entries.extend(_axis_entries(axis, code, where))
    if not sections:
        raise CodeSetError(f"{source}: no <section> elements; expected the CMS PCS definitions")
    aggregates = tuple(_aggregate(element, number, source) for number, element in
                       enumerate(root.findall("deviceAggregation/aggregate"), start=1))
    return PcsDefinitions(version, title, source, sections, entries, aggregates)


def _axis_entries(axis: Element, section: str, where: str) -> Iterator[PcsDefinition]:
    position_text = axis.get("pos", "")
    if not position_text.isdigit() or not 1 <= int(position_text) <= 7:
        raise CodeSetError(f"{where}: axis pos={position_text!r}, expected 1 to 7")
    position = int(position_text)
    where = f"{where}, axis {position}"
    axis_title = _text(axis, "title", where)
    for number, terms in enumerate(axis.findall("terms"), start=1):
        titles = tuple(_clean(t.text) for t in terms.findall("title"))
        if not titles or not all(titles):
            raise CodeSetError(f"{where}: <terms> #{number} has no title")
        definition = _optional(terms, "definition")
        explanation = _optional(terms, "explanation")
        includes = tuple(filter(None, (_clean(i.text) for i in terms.findall("includes"))))
        if definition is None and explanation is None and not includes:
            raise CodeSetError(f"{where}: term {titles[0]!r} has no definition, explanation "
                               "or includes")
        yield PcsDefinition(section, position, axis_title, titles, definition, explanation,
                            includes)


def _aggregate(element: Element, number: int, source: str) -> DeviceAggregate:
    where = f"{source}: deviceAggregation aggregate #{number}"
    parent = element.find("parent")
    parent_value = parent.get("value", "") if parent is not None else ""
    if not _SECTION_CODE.fullmatch(parent_value):
        raise CodeSetError(f"{where}: <parent value={parent_value!r}> is not a PCS character")
    return DeviceAggregate(
        device=_text(element, "device", where),
        operation=_text(element, "operation", where),
        body_systems=tuple(_clean(b.text) for b in element.findall("bodySys")),
        parent_value=parent_value,
        parent_label=_text(element, "parent", where),
    )


def parse_index(data: bytes, *, source: str) -> PcsIndex:
    """Parse a CMS ``icd10pcs_index_YYYY.xml`` file (plain or gzip-compressed)."""
    root = parse_xml(data, source=source, root_tag=INDEX_ROOT)
    version = _text(root, "version", f"{source}: <{INDEX_ROOT}>")
    title = _text(root, "title", f"{source}: <{INDEX_ROOT}>")
    entries: list[IndexEntry] = []
    for letter in root.findall("letter"):
        letter_title = _text(letter, "title", f"{source}: <letter>")
        for number, main_term in enumerate(letter.findall("mainTerm"), start=1):
            where = f"{source}: letter {letter_title}, main term #{number}"
            _index_entries(main_term, (), 0, where, entries)
    if not entries:
        raise CodeSetError(f"{source}: no <mainTerm> elements; expected the CMS PCS index")
    return PcsIndex(version, title, source, tuple(entries))


def _index_entries(element: Element, parent: tuple[str, ...], depth: int, where: str,
                   entries: list[IndexEntry]) -> None:
    title_element = element.find("title")
    if element.tag == "mainTerm" and title_element is None:
        raise CodeSetError(f"{where}: <mainTerm> has no <title>")
    if element.tag == "term" and element.get("level") != str(depth):
        raise CodeSetError(f"{where} ({' / '.join(parent)}): <term level="
                           f"{element.get('level')!r}> at depth {depth}")
    path = parent
    if title_element is not None:
        title = _clean(title_element.text)
        if not title:
            raise CodeSetError(f"{where} ({' / '.join(parent)}): empty <title>")
        path = (*parent, title)
    where_here = f"{where} ({' / '.join(path) or 'untitled'})"
    codes = [_code(e, where_here) for e in element if e.tag in ("code", "codes", "tab")]
    references: dict[str, str] = {}
    for kind in ("see", "use"):
        for reference in element.findall(kind):
            text = _clean(reference.text)
            if not text or kind in references:
                raise CodeSetError(f"{where_here}: empty or repeated <{kind}>")
            references[kind] = text
            codes.extend(_code(e, where_here) for e in reference
                         if e.tag in ("code", "codes", "tab"))
    if len(codes) > 1:
        raise CodeSetError(f"{where_here}: {len(codes)} code references on one line")
    children = element.findall("term")
    if codes or references or title_element is not None:
        entries.append(IndexEntry(path, codes[0] if codes else None, references.get("see"),
                                  references.get("use")))
    elif not children:
        raise CodeSetError(f"{where_here}: a <term> with no title, code or reference")
    for child in children:
        _index_entries(child, path, depth + 1, where, entries)


def _code(element: Element, where: str) -> str:
    code = (element.text or "").strip()
    if not _PARTIAL_CODE.fullmatch(code):
        raise CodeSetError(f"{where}: <{element.tag}> {code!r} is not 3 to 7 PCS characters "
                           "(0-9, A-H, J-N, P-Z)")
    return code


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def _optional(element: Element, tag: str) -> str | None:
    child = element.find(tag)
    return (_clean(child.text) or None) if child is not None else None


def _text(element: Element, tag: str, where: str) -> str:
    text = _optional(element, tag)
    if text is None:
        raise CodeSetError(f"{where}: missing <{tag}>")
    return text
