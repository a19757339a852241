"""ICD-10-PCS tables (CMS tabular XML): code validity, long titles and the axis-by-axis builder."""

from __future__ import annotations

import gzip
import itertools
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from chartkeeper.coding.errors import CodeSetError

#: The 34 characters a PCS code may use: digits and letters without I and O, in CMS order.
PCS_CHARACTERS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 7
TABLES_ROOT = "ICD10PCS.tabular"
_TABLE_POSITIONS = (1, 2, 3)
_ROW_POSITIONS = (4, 5, 6, 7)
_ALLOWED = frozenset(PCS_CHARACTERS)


class PcsCodeError(CodeSetError):
    """A code or builder prefix that the PCS tables do not allow."""

    def __init__(self, code: str, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        #: 1-based position of the first character that is not allowed, when there is one.
        self.position = position


@dataclass(frozen=True, slots=True)
class Axis:
    """One character of a code explained: its position (1-7), the axis title and the label."""

    position: int
    title: str
    value: str
    label: str


@dataclass(frozen=True, slots=True)
class Choice:
    """A value the builder offers for the next position, with its axis title and label."""

    position: int
    title: str
    value: str
    label: str


@dataclass(frozen=True, slots=True)
class PcsRow:
    """One row of a table: the labels it allows for positions 4 to 7."""

    axes: tuple[tuple[Choice, ...], tuple[Choice, ...], tuple[Choice, ...], tuple[Choice, ...]]

    def codes(self, table: str) -> Iterator[str]:
        """Every code the row allows, in the order of the row's labels."""
        for combination in itertools.product(*self.axes):
            yield table + "".join(choice.value for choice in combination)


@dataclass(frozen=True, slots=True)
class PcsTable:
    """One table: section, body system and operation (positions 1-3) and its rows."""

    axes: tuple[Axis, Axis, Axis]
    definition: str | None
    rows: tuple[PcsRow, ...]

    @property
    def code(self) -> str:
        """The table's three characters, e.g. ``0SR``."""
        return "".join(axis.value for axis in self.axes)


class PcsTables:
    """A parsed ICD-10-PCS tables file: validity, titles, explanations and the builder."""

    def __init__(self, version: str, title: str, source: str, tables: Sequence[PcsTable]) -> None:
        #: The file's <version> ("2025") and <title> ("2025 ICD-10-PCS Tables").
        self.version = version
        self.file_title = title
        self.source = source
        self.tables: dict[str, PcsTable] = {}
        self._row_of: dict[str, PcsRow] = {}
        # Choices after prefixes of up to 3 characters, and the rows of each table by body
        # part (3E0 has 187 rows, 3E03 15) with the values each allows at positions 4 to 7:
        # the builder filters them by a prefix with a few set look-ups per row.
        self._rows_by_body_part: dict[str, list[_RowValues]] = {}
        self._head: dict[str, tuple[Choice, ...]] = {}
        for table in tables:
            self._add_table(table)
        self._sorted_codes = tuple(sorted(self._row_of))
        self._head = {prefix: _sorted_choices(choices) for prefix, choices in self._head.items()}

    def _add_table(self, table: PcsTable) -> None:
        key = table.code
        if key in self.tables:
            raise CodeSetError(f"{self.source}: table {key} appears twice")
        self.tables[key] = table
        for depth, axis in enumerate(table.axes):
            choice = Choice(axis.position, axis.title, axis.value, axis.label)
            offered = self._head.setdefault(key[:depth], ())
            if choice not in offered:
                self._head[key[:depth]] = (*offered, choice)
        self._head[key] = tuple({(c.value, c.label): c for row in table.rows
                                 for c in row.axes[0]}.values())
        for row in table.rows:
            row_values = (row, tuple(frozenset(c.value for c in axis) for axis in row.axes))
            for body_part in row_values[1][0]:
                self._rows_by_body_part.setdefault(key + body_part, []).append(row_values)
        for row in table.rows:
            for code in row.codes(key):
                if code in self._row_of:
                    # One code in two rows would have two meanings and two titles.
                    raise CodeSetError(f"{self.source}: table {key}: code {code} is allowed "
                                       "by more than one row")
                self._row_of[code] = row

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._row_of

    def is_valid(self, code: str) -> bool:
        """Whether ``code`` (7 characters, upper case) is a valid code in these tables."""
        return code in self._row_of

    def codes(self) -> Iterator[str]:
        """Every valid code, in CMS order (digits before letters)."""
        return iter(self._sorted_codes)

    def table(self, code: str) -> PcsTable:
        """The table of a code or of a prefix of at least 3 characters."""
        if len(code) < 3:
            raise PcsCodeError(code, f"{code!r}: a table needs 3 characters (section, body "
                                     "system, operation)")
        self._check_prefix(code[:3])
        return self.tables[code[:3]]

    def axes(self, code: str) -> list[Axis]:
        """The seven characters of a valid code explained, position by position."""
        row = self._row(code)
        axes = list(self.tables[code[:3]].axes)
        # The row, not the table, gives the labels: XW0 reuses a value across rows.
        for position, axis_choices in zip(_ROW_POSITIONS, row.axes, strict=True):
            character = code[position - 1]
            choice = next(c for c in axis_choices if c.value == character)
            axes.append(Axis(position, choice.title, choice.value, choice.label))
        return axes

    def title(self, code: str) -> str:
        """The long description of a valid code, built from its labels as CMS builds it."""
        return long_title(self.axes(code))

    def choices(self, prefix: str = "") -> list[Choice]:
        """Values for the position after ``prefix`` that lead to at least one valid code.

        Raises PcsCodeError naming the first character of ``prefix`` the tables do not
        allow. A value appears once per distinct label: a few tables (e.g. XW0) give one
        character different meanings in different rows, told apart by later characters.
        """
        if len(prefix) >= CODE_LENGTH:
            raise PcsCodeError(prefix, f"prefix {prefix!r} has {len(prefix)} characters; "
                                       f"a builder prefix has 0 to {CODE_LENGTH - 1}")
        offered = self._offered(prefix)
        if not offered:
            self._check_prefix(prefix)
        return list(offered)

    def _offered(self, prefix: str) -> tuple[Choice, ...]:
        """The choices after ``prefix``; empty when no valid code starts with it."""
        if len(prefix) <= 3:
            return self._head.get(prefix, ())
        depth = len(prefix) - 3
        rows = self._rows_by_body_part.get(prefix[:4], [])
        offered: dict[tuple[str, str], Choice] = {}
        for row, values in rows:
            # Every combination of a row's labels is a code, so any row that allows the
            # prefix leads to a valid code through each of its next labels: no dead ends.
            if all(prefix[3 + i] in values[i] for i in range(1, depth)):
                for choice in row.axes[depth]:
                    offered.setdefault((choice.value, choice.label), choice)
        return _sorted_choices(offered.values())

    def _row(self, code: str) -> PcsRow:
        row = self._row_of.get(code)
        if row is not None:
            return row
        if len(code) != CODE_LENGTH:
            raise PcsCodeError(code, f"{code!r} is not an ICD-10-PCS code: it has "
                                     f"{len(code)} characters, expected {CODE_LENGTH}")
        self._check_prefix(code)
        raise AssertionError(f"{code!r} passed every character check but is not a code")

    def _check_prefix(self, prefix: str) -> None:
        """Raise PcsCodeError naming the first character the tables do not allow."""
        for index, character in enumerate(prefix):
            offered = self._offered(prefix[:index])
            if any(choice.value == character for choice in offered):
                continue
            allowed = "".join(dict.fromkeys(choice.value for choice in offered))
            where = f"after {prefix[:index]!r}" if index else "as the first character"
            axis = f" ({offered[0].title})" if offered else ""
            raise PcsCodeError(
                prefix,
                f"{prefix!r}: character {index + 1}{axis} {character!r} is not allowed "
                f"{where} in {self.source}; allowed: {allowed}",
                position=index + 1,
            )


_RowValues = tuple[PcsRow, tuple[frozenset[str], ...]]
_ORDER = {character: index for index, character in enumerate(PCS_CHARACTERS)}


def _sorted_choices(choices: Iterable[Choice]) -> tuple[Choice, ...]:
    return tuple(sorted(choices, key=lambda choice: (_ORDER[choice.value], choice.label)))


def parse_tables(data: bytes, *, source: str) -> PcsTables:
    """Parse a CMS ``icd10pcs_tables_YYYY.xml`` file (plain or gzip-compressed)."""
    root = parse_xml(data, source=source, root_tag=TABLES_ROOT)
    version = _required_text(root, "version", f"{source}: <{TABLES_ROOT}>")
    title = _required_text(root, "title", f"{source}: <{TABLES_ROOT}>")
    tables = [_parse_table(element, number, source)
              for number, element in enumerate(root.findall("pcsTable"), start=1)]
    if not tables:
        raise CodeSetError(f"{source}: no <pcsTable> elements; expected the CMS PCS tables")
    return PcsTables(version, title, source, tables)


def parse_xml(data: bytes, *, source: str, root_tag: str) -> Element:
    """Parse CMS XML safely (gzip accepted) and check its root element."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise CodeSetError(f"{source}: not a readable gzip file: {exc}") from exc
    try:
        root: Element = SafeElementTree.fromstring(data)
    except ParseError as exc:
        raise CodeSetError(f"{source}: not well-formed XML: {exc}") from exc
    except DefusedXmlException as exc:
        raise CodeSetError(f"{source}: XML refused for safety: {exc}") from exc
    if root.tag != root_tag:
        raise CodeSetError(f"{source}: root element is <{root.tag}>, expected <{root_tag}>")
    return root


def _parse_table(element: Element, number: int, source: str) -> PcsTable:
    axes = {}
    where = f"{source}: pcsTable #{number}"
    for axis_element in element.findall("axis"):
        position = _position(axis_element, where)
        labels = _labels(axis_element, position, where)
        if len(labels) != 1:
            raise CodeSetError(f"{where}: axis {position} has {len(labels)} labels, expected 1")
        if position in axes or position not in _TABLE_POSITIONS:
            raise CodeSetError(f"{where}: unexpected or repeated axis pos={position} at the "
                               "table level; expected one each of 1, 2 and 3")
        axes[position] = Axis(position, labels[0].title, labels[0].value, labels[0].label)
    missing = [p for p in _TABLE_POSITIONS if p not in axes]
    if missing:
        raise CodeSetError(f"{where}: missing axis {missing[0]} (section, body system and "
                           "operation are required)")
    key = "".join(axes[p].value for p in _TABLE_POSITIONS)
    where = f"{source}: table {key}"
    definition_element = element.find("axis[@pos='3']/definition")
    definition = (definition_element.text or "").strip() or None \
        if definition_element is not None else None
    rows = tuple(_parse_row(row, index, where)
                 for index, row in enumerate(element.findall("pcsRow"), start=1))
    if not rows:
        raise CodeSetError(f"{where}: no <pcsRow>; a table needs at least one row")
    return PcsTable((axes[1], axes[2], axes[3]), definition, rows)


def _parse_row(element: Element, number: int, table_where: str) -> PcsRow:
    where = f"{table_where}, row {number}"
    axes: dict[int, tuple[Choice, ...]] = {}
    for axis_element in element.findall("axis"):
        position = _position(axis_element, where)
        if position in axes or position not in _ROW_POSITIONS:
            raise CodeSetError(f"{where}: unexpected or repeated axis pos={position}; a row "
                               "has one each of 4, 5, 6 and 7")
        labels = _labels(axis_element, position, where)
        if not labels:
            raise CodeSetError(f"{where}: axis {position} has no <label>")
        axes[position] = labels
    missing = [p for p in _ROW_POSITIONS if p not in axes]
    if missing:
        raise CodeSetError(f"{where}: missing axis {missing[0]} (a row needs axes 4 to 7)")
    return PcsRow((axes[4], axes[5], axes[6], axes[7]))


def _position(axis: Element, where: str) -> int:
    text = axis.get("pos", "")
    if not text.isdigit() or not 1 <= int(text) <= CODE_LENGTH:
        raise CodeSetError(f"{where}: axis pos={text!r}, expected 1 to {CODE_LENGTH}")
    return int(text)


def _labels(axis: Element, position: int, where: str) -> tuple[Choice, ...]:
    title = _required_text(axis, "title", f"{where}, axis {position}")
    labels: list[Choice] = []
    for label in axis.findall("label"):
        value = label.get("code", "")
        if len(value) != 1 or value not in _ALLOWED:
            raise CodeSetError(f"{where}, axis {position}: label code {value!r} is not one "
                               f"PCS character (0-9, A-H, J-N, P-Z)")
        text = " ".join((label.text or "").split())
        if not text:
            raise CodeSetError(f"{where}, axis {position}: label {value!r} has no text")
        if any(existing.value == value for existing in labels):
            raise CodeSetError(f"{where}, axis {position}: label {value!r} is listed twice")
        labels.append(Choice(position, title, value, text))
    declared = axis.get("values")
    if declared is not None and declared != str(len(labels)):
        raise CodeSetError(f"{where}, axis {position}: values={declared!r} but "
                           f"{len(labels)} labels")
    return tuple(labels)


def _required_text(element: Element, tag: str, where: str) -> str:
    child = element.find(tag)
    text = " ".join((child.text or "").split()) if child is not None else ""
    if not text:
        raise CodeSetError(f"{where}: missing <{tag}>")
    return text


# Long titles. CMS writes each code's long description from its labels; the rules below
# reproduce its phrasing for the Medical and Surgical section (root operation, body part,
# device, approach and qualifier) and a plain "<type> of <body part>" pattern elsewhere.

#: How a root operation opens its title; {body} and {device} are filled in.
_OPERATION_PHRASES = {
    "Bypass": "Bypass {body}", "Change": "Change {device} in {body}",
    "Control": "Control Bleeding in {body}", "Detachment": "Detachment at {body}",
    "Extirpation": "Extirpation of Matter from {body}", "Fragmentation": "Fragmentation in {body}",
    "Insertion": "Insertion of {device} into {body}", "Map": "Map {body}",
    "Release": "Release {body}", "Removal": "Removal of {device} from {body}",
    "Repair": "Repair {body}", "Reposition": "Reposition {body}",
    "Revision": "Revision of {device} in {body}", "Supplement": "Supplement {body}",
    "Transfer": "Transfer {body}",
}
#: Modifiers CMS keeps after the noun ("Thoracic Aorta, Descending"), unlike "Kidney, Right".
_KEPT_MODIFIERS = frozenset({
    "Ascending/Arch", "Descending", "Pylorus", "One Artery", "Two Arteries", "Three Arteries",
    "Four or More Arteries", "Dual Chamber", "Single Chamber", "Single Chamber Rate Responsive",
    "Flow Diverter", "Vertebral Body Tether", "Pneumatic", "Anterior Column", "Posterior Column",
})
#: Devices whose title name is not their label reordered.
_DEVICE_NAMES = {"Cardiac Lead, Pacemaker": "Pacemaker Lead",
                 "Cardiac Lead, Defibrillator": "Defibrillator Lead",
                 "Infusion Device, Pump": "Infusion Pump"}
#: A device label whose modifier is itself the device's name: "Intraluminal Device, Airway".
_NAMED_DEVICE_ENDINGS = ("Airway", "Valve", "Pessary", "Prosthesis", "Telescope")
_COUNTS = frozenset({"Two", "Three", "Four or More"})
#: Axes outside Medical and Surgical whose value says what the procedure used.
_USING_AXES = frozenset({"Device", "Contrast", "Radionuclide", "Method", "Equipment",
                         "Modality Qualifier"})
#: Qualifiers naming the part of the body part that is treated; the title names them instead.
_SUBSITES = frozenset({"Left Atrial Appendage", "Hemorrhoidal Plexus", "Ductus Arteriosus",
                       "Uterine Artery", "Prostatic Artery"})
_CREATED_FROM = frozenset({"Truncal Valve", "Common Atrioventricular Valve"})
#: Qualifiers that describe how the procedure was done, written after the approach.
_AFTER_APPROACH = frozenset({"Diagnostic", "Hand-Assisted", "Vertical", "Ultrasonic"})
_TOOTH_COUNTS = frozenset({"Single", "Multiple", "All"})
#: Qualifiers that narrow the body part, written right after it.
_BODY_MODIFIERS = frozenset({"Bifurcation", "Sesamoid Bone(s) 1st Toe", "Stoma", "Supracervical"})
#: Qualifiers naming a technique: "... using Drug-Coated Balloon".
_TECHNIQUE_ENDINGS = ("Therapy", "Electroporation", "Ablation", "Analysis", "Retriever",
                      "Balloon", "Deployment Technique", "Flap")
_SIDES = frozenset({"Right", "Left", "Bilateral"})


def long_title(axes: Sequence[Axis]) -> str:
    """A code's long title from its seven explained characters."""
    section, body_system, operation, body, approach, device, qualifier = (a.label for a in axes)
    if section != "Medical and Surgical":
        return _other_section_title(axes)
    device_text = None if _is_none(axes[5]) else _device_phrase(device)
    qualifier_text = None if _is_none(axes[6]) else qualifier
    return _medical_surgical_title(operation, body_system, body, device_text,
                                   _approach_phrase(approach), qualifier_text)


def _other_section_title(axes: Sequence[Axis]) -> str:
    """'Introduction of <substance> into <body part>, <approach>', '<type> of <part> using ...'.

    CMS's phrasing outside Medical and Surgical varies by section and is not checked against
    a CMS list here; this is the common shape of its titles.
    """
    operation, body = axes[2].label, axes[3]
    rest = [axis for axis in axes[4:] if not _is_none(axis)]
    substance = next((a for a in rest if "Substance" in a.title), None)
    if operation not in ("Introduction", "Irrigation", "Transfusion"):
        substance = None
    if axes[0].label == "Placement" and rest and rest[-1].title != "Approach":
        # "Removal of Brace on Right Upper Arm": the device is placed on a body region.
        device = next((a for a in rest if a.title == "Device"), None)
        if device is not None:
            return f"{operation} of {device.label} on {_noun_phrase(body.label)}"
    if substance is not None and not _is_none(body):
        text = f"{operation} of {substance.label} into {_noun_phrase(body.label)}"
        rest.remove(substance)
    elif _is_none(body):
        text = operation
    elif body.title == "Qualifier":
        text = f"{operation}, {body.label}"
    else:
        text = f"{operation} of {_noun_phrase(body.label)}"
    approach: list[str] = []
    after: list[str] = []
    for axis in rest:
        if axis.title == "Approach":
            approach.append(_approach_phrase(axis.label))
        elif axis.title == "Function":
            text += f" {axis.label}"
        elif axis.title in _USING_AXES:
            text += f" using {axis.label}"
        else:
            after.append(axis.label)
    return ", ".join([text, *approach, *after])


def _medical_surgical_title(operation: str, body_system: str, body: str, device: str | None,
                            approach: str, qualifier: str | None) -> str:
    body_text = _noun_phrase(body)
    after_approach, qualifier_given = None, qualifier
    if qualifier is not None:
        if qualifier in _SUBSITES or qualifier.split(", ")[0] in _SUBSITES:
            # The qualifier names the part of the body part treated, and the title names it.
            body_text, qualifier = _noun_phrase(qualifier), None
        elif operation == "Bypass":
            flows_from = body.startswith(("Coronary Artery", "Pulmonary Trunk",
                                          "Pulmonary Artery"))
            body_text += f" {'from' if flows_from else 'to'} {_noun_phrase(qualifier)}"
            qualifier = None
        elif operation == "Transfer":
            if qualifier.endswith("Flap"):
                body_text += f", {qualifier}"
            elif "Skin" in qualifier or "Subcutaneous" in qualifier:
                body_text += f" with {qualifier}"
            else:
                body_text += f" to {_noun_phrase(qualifier)}"
            qualifier = None
        elif operation == "Creation":
            if device is not None and "Valve" in qualifier:
                source = _noun_phrase(qualifier)
                return f"Creation of {body_text} from {source} using {device}, {approach}"
            body_text, qualifier = f"{_noun_phrase(qualifier)} in {body_text}", None
        elif qualifier in _CREATED_FROM or qualifier.startswith("Atrioventricular Valve"):
            body_text += f" created from {_noun_phrase(qualifier)}"
            qualifier = None
        elif qualifier in _AFTER_APPROACH or (operation in ("Drainage", "Excision")
                                              and qualifier in _TOOTH_COUNTS):
            after_approach, qualifier = qualifier, None
        elif qualifier == "Biventricular" and device is not None:
            device, qualifier = f"{qualifier} {device}", None
        elif qualifier in _BODY_MODIFIERS or (qualifier in _TOOTH_COUNTS and (
                device is None or operation == "Replacement")):
            body_text += f", {qualifier}" + ("," if device is not None else "")
            qualifier = None
    phrase = _OPERATION_PHRASES.get(operation, operation + " of {body}")
    if operation == "Supplement" and body_system.startswith("Subcutaneous Tissue"):
        phrase = "Supplement of {body}"
    elif operation == "Repair" and qualifier_given in _TOOTH_COUNTS:
        phrase = "Repair of {body}"
    elif operation == "Fragmentation" and body_system.endswith(("Arteries", "Veins")):
        phrase = "Fragmentation of {body}"
    if qualifier is not None and qualifier.endswith("Flap"):
        # The flap is the autologous tissue: CMS names it instead of the device.
        device = None
    opening = phrase.format(body=body_text, device=device or "")
    if device is not None and "{device}" not in phrase:
        opening += f" with {device}"
    parts = [opening]
    if qualifier is not None:
        if qualifier.endswith(_TECHNIQUE_ENDINGS):
            parts[0] += f"{',' if device is not None else ''} using {qualifier}"
        else:
            parts.append(_noun_phrase(qualifier))
    parts.append(approach)
    if after_approach is not None:
        parts.append(after_approach)
    return ", ".join(parts)


def _is_none(axis: Axis) -> bool:
    # "No Device", "No Qualifier", "None": the value Z that names nothing.
    return axis.value == "Z" and (axis.label.startswith("No ") or axis.label == "None")


def _approach_phrase(label: str) -> str:
    return label if label.startswith("Via ") else f"{label} Approach"


def _noun_phrase(label: str) -> str:
    """'Kidney, Right' -> 'Right Kidney'; 'Hip Joint, Femoral Surface, Left' keeps its middle."""
    parts = label.split(", ")
    if len(parts) == 1 or parts[-1] in _KEPT_MODIFIERS:
        return label
    if len(parts) == 2:
        return f"{parts[1]} {parts[0]}"
    if parts[-1] in _SIDES:
        if parts[1].endswith("Surface"):
            return f"{parts[-1]} {', '.join(parts[:-1])}"
        return f"{parts[-1]} {parts[1]} {parts[0]}"
    return label


def _device_phrase(label: str) -> str:
    """'Intraluminal Device, Drug-eluting, Two' -> 'Two Drug-eluting Intraluminal Devices'."""
    if label in _DEVICE_NAMES:
        return _DEVICE_NAMES[label]
    parts = label.split(", ")
    if len(parts) > 1 and parts[-1] in _COUNTS:
        return f"{parts[-1]} {' '.join(reversed(parts[1:-1]))} {parts[0]}s".replace("  ", " ")
    if len(parts) == 2 and parts[1].endswith(_NAMED_DEVICE_ENDINGS):
        return parts[1]
    if len(parts) == 3:
        return f"{parts[1]} {parts[0]}, {parts[2]}"
    return _noun_phrase(label)
