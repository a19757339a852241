"""Reading the CMS ICD-10-PCS tables XML: safe XML parsing and each table, row, axis and label."""

from __future__ import annotations

import gzip
import zlib
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.pcs_model import (
    _ROW_POSITIONS,
    _TABLE_POSITIONS,
    CODE_LENGTH,
    PCS_CHARACTERS,
    Axis,
    Choice,
    PcsRow,
    PcsTable,
)

TABLES_ROOT = "ICD10PCS.tabular"
_ALLOWED = frozenset(PCS_CHARACTERS)


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
