"""Reading and validating CMS's quarterly NCCI PTP and MUE files into edit tables.

CMS publishes both quarterly, and a site downloads them (they are not shipped here):

* PTP edits, one set for practitioners and one for hospital outpatient services (OPPS): zips
  of a tab-delimited text file (and a spreadsheet). A copyright line or two, then the column
  header ``Column 1 | Column 2 | * = In existence prior to 1996 | Effective Date | Deletion Date
  *=no data | Modifier 0=not allowed 1=allowed 9=not applicable | PTP Edit Rationale``, which
  the text files spread over several physical rows, then one edit per row.
* MUE values for practitioner, outpatient hospital and DME supplier services: a CSV after a
  disclaimer block, with ``HCPCS/CPT Code | Practitioner Services MUE Values | MUE Adjudication
  Indicator | MUE Rationale``; the indicator is written out ("2 Date of Service Edit: Policy").

Both parsers take the zip or the bare file, tab- or comma-separated, and name the file and line
of anything that is not what CMS writes.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from types import MappingProxyType
from typing import Final

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.icd10cm_order import decode_text
from chartkeeper.coding.ncci_tables import (
    _HCPCS,
    MueEdit,
    MueSetting,
    MueTable,
    PtpEdit,
    PtpEdits,
    PtpSetting,
)

# CMS's PTP text files spread the column header over four physical rows; allow a few more.
_HEADER_ROWS: Final = 6
_MUE_SETTING_WORDS: Final[Mapping[str, MueSetting]] = {
    "practitioner": "practitioner",
    "outpatienthospital": "hospital",
    "facilityoutpatient": "hospital",
    "hospital": "hospital",
    "dme": "dme",
    "durablemedicalequipment": "dme",
}


def parse_ptp(data: bytes, *, source: str, setting: PtpSetting) -> PtpEdits:
    """Read a CMS PTP edit file (zip, text or CSV) for practitioners or hospital outpatients."""
    if setting not in ("practitioner", "hospital"):
        raise CodeSetError(f"{source}: PTP setting {setting!r}, expected practitioner or hospital")
    edits: list[PtpEdit] = []
    for member, text in _texts(data, source):
        edits.extend(_ptp_rows(text, member))
    return PtpEdits(source=source, setting=setting, edits=tuple(edits))


def parse_mue(data: bytes, *, source: str, setting: MueSetting) -> MueTable:
    """Read a CMS MUE file (zip, CSV or text) for practitioner, hospital or DME services."""
    if setting not in ("practitioner", "hospital", "dme"):
        raise CodeSetError(
            f"{source}: MUE setting {setting!r}, expected practitioner, hospital or dme"
        )
    edits: dict[str, MueEdit] = {}
    for member, text in _texts(data, source):
        for edit in _mue_rows(text, member, setting):
            if edit.code in edits:
                raise CodeSetError(f"{member}: code {edit.code} has more than one MUE value")
            edits[edit.code] = edit
    return MueTable(source=source, setting=setting, edits=MappingProxyType(edits))


def _texts(data: bytes, source: str) -> Iterator[tuple[str, str]]:
    """The text files in ``data``: itself, or each text/CSV member of a zip, by name."""
    if data[:4] != b"PK\x03\x04":
        yield source, decode_cms_text(data, source)
        return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise CodeSetError(f"{source}: not a readable zip archive ({error})") from error
    with archive:
        names = sorted(
            name for name in archive.namelist()
            if name.lower().endswith((".txt", ".csv", ".tsv"))
        )
        if not names:
            raise CodeSetError(
                f"{source}: the zip holds no text or CSV file "
                f"({', '.join(archive.namelist()) or 'it is empty'})"
            )
        for name in names:
            try:
                member = archive.read(name)
            except (zipfile.BadZipFile, EOFError) as error:
                raise CodeSetError(f"{source}: cannot read {name} ({error})") from error
            yield f"{source}:{name}", decode_cms_text(member, f"{source}:{name}")


def decode_cms_text(data: bytes, source: str) -> str:
    """A CMS text or CSV file as text (``decode_text``), refusing an empty or binary file."""
    if not data.strip():
        raise CodeSetError(f"{source}: the file is empty")
    if b"\x00" in data[:4096]:
        raise CodeSetError(f"{source}: binary data, expected a text or CSV file")
    return decode_text(data, source=source)


def _rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    """Rows with the physical line each starts on.

    Tab-delimited files are split on tabs alone: CMS's text files do not quote, and a cell that
    starts with a quote mark is text. CSV files follow CSV quoting (cells may span lines).
    """
    head = text[:20000]
    if head.count("\t") >= head.count(","):
        reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text))
    rows = []
    line = 1
    try:
        for row in reader:
            rows.append((line, [cell.strip() for cell in row]))
            line = reader.line_num + 1
    except csv.Error as error:
        raise CodeSetError(f"{source}, line {reader.line_num}: {error}") from error
    return rows


def _looks_like_data(row: Sequence[str]) -> bool:
    return bool(row) and (
        bool(_HCPCS.fullmatch(row[0].upper())) or any(re.fullmatch(r"[0-9]{8}", c) for c in row)
    )


def _squash(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _ptp_rows(text: str, source: str) -> Iterator[PtpEdit]:
    rows = _rows(text, source)
    start = next(
        (
            at for at, (_, row) in enumerate(rows)
            if len(row) >= 2 and _squash(row[0]).startswith("column")
            and _squash(row[1]).startswith("column")
        ),
        None,
    )
    if start is None:
        raise CodeSetError(
            f"{source}: no PTP column header found (expected a row starting "
            "'Column 1', 'Column 2')"
        )
    # The text files split the header over several rows ("Deletion" / "Date" / "*=no data");
    # gather the rows that follow it and hold no code and no date, up to the first edit.
    header = list(rows[start][1])
    at = start + 1
    while at < len(rows) and at - start <= _HEADER_ROWS and not _looks_like_data(rows[at][1]):
        for index, cell in enumerate(rows[at][1]):
            if index >= len(header):
                header.append("")
            header[index] = f"{header[index]} {cell}".strip()
        at += 1
    names = [_squash(cell) for cell in header]
    columns = {
        "column1": _find(names, "column1", source),
        "column2": _find(names, "column2", source),
        "effective": _find(names, "effective", source),
        "deletion": _find(names, "deletion", source),
        "modifier": _find(names, "modifier", source),
    }
    prior = _find_optional(names, "1996")
    rationale = _find_optional(names, "rationale")
    width = max(columns.values()) + 1
    found = False
    for line, row in rows[at:]:
        if not any(row):
            continue
        where = f"{source}, line {line}"
        if len(row) < width:
            raise CodeSetError(f"{where}: {len(row)} columns, expected at least {width}")
        column1 = _code(row[columns["column1"]], "column 1", where)
        column2 = _code(row[columns["column2"]], "column 2", where)
        prior_cell = row[prior] if prior is not None and prior < len(row) else ""
        if prior_cell not in ("", "*"):
            raise CodeSetError(
                f"{where}: prior-to-1996 flag {prior_cell!r}, expected '*' or nothing"
            )
        deletion = row[columns["deletion"]]
        modifier = row[columns["modifier"]]
        if modifier not in ("0", "1", "9"):
            raise CodeSetError(f"{where}: modifier indicator {modifier!r}, expected 0, 1 or 9")
        found = True
        yield PtpEdit(
            column1=column1,
            column2=column2,
            prior_to_1996=prior_cell == "*",
            effective=_yyyymmdd(row[columns["effective"]], "effective date", where),
            deleted=None if deletion in ("", "*") else _yyyymmdd(deletion, "deletion date", where),
            modifier_indicator=0 if modifier == "0" else 1 if modifier == "1" else 9,
            rationale=row[rationale] if rationale is not None and rationale < len(row) else "",
        )
    if not found:
        raise CodeSetError(f"{source}: the PTP header is not followed by any edits")


def _mue_rows(text: str, source: str, setting: MueSetting) -> Iterator[MueEdit]:
    rows = _rows(text, source)
    start = next(
        (
            at for at, (_, row) in enumerate(rows)
            if any("hcpcs" in _squash(cell) for cell in row)
            and any("mue" in _squash(cell) and "value" in _squash(cell) for cell in row)
        ),
        None,
    )
    if start is None:
        raise CodeSetError(
            f"{source}: no MUE column header found (expected 'HCPCS/CPT Code' and a "
            "'... MUE Values' column)"
        )
    header_line, header = rows[start]
    names = [_squash(cell) for cell in header]
    code_at = _find(names, "hcpcs", source)
    value_at = next(index for index, name in enumerate(names) if "mue" in name and "value" in name)
    indicator_at = _find(names, "adjudication", source)
    rationale_at = _find_optional(names, "rationale")
    stated = names[value_at].replace("muevalues", "").replace("muevalue", "")
    stated_setting = next(
        (named for word, named in _MUE_SETTING_WORDS.items() if stated.startswith(word)), None
    )
    if stated_setting is not None and stated_setting != setting:
        raise CodeSetError(
            f"{source}, line {header_line}: the file holds {header[value_at]!r}, "
            f"not {setting} MUEs"
        )
    width = max(code_at, value_at, indicator_at) + 1
    found = False
    for line, row in rows[start + 1:]:
        if not any(row):
            continue
        where = f"{source}, line {line}"
        if len(row) < width:
            raise CodeSetError(f"{where}: {len(row)} columns, expected at least {width}")
        code = _code(row[code_at], "HCPCS/CPT code", where)
        value = row[value_at]
        if not re.fullmatch(r"[0-9]+", value):
            raise CodeSetError(f"{where}: MUE value {value!r} is not a whole number")
        indicator = re.match(r"\s*([0-9]+)\b", row[indicator_at])
        number = int(indicator.group(1)) if indicator else None
        if number not in (1, 2, 3):
            raise CodeSetError(
                f"{where}: MUE adjudication indicator {row[indicator_at]!r}, expected 1, 2 or "
                "3 (e.g. '2 Date of Service Edit: Policy')"
            )
        found = True
        yield MueEdit(
            code=code,
            value=int(value),
            adjudication=1 if number == 1 else 2 if number == 2 else 3,
            rationale=row[rationale_at] if rationale_at is not None and rationale_at < len(row)
            else "",
        )
    if not found:
        raise CodeSetError(f"{source}: the MUE header is not followed by any values")


def _find(names: Sequence[str], word: str, source: str) -> int:
    index = _find_optional(names, word)
    if index is None:
        raise CodeSetError(f"{source}: the header has no column for {word!r}")
    return index


def _find_optional(names: Sequence[str], word: str) -> int | None:
    return next((index for index, name in enumerate(names) if word in name), None)


def _code(cell: str, what: str, where: str) -> str:
    code = cell.strip().upper()
    if not _HCPCS.fullmatch(code):
        raise CodeSetError(f"{where}: {what} {cell!r} is not a CPT or HCPCS code")
    return code


def _yyyymmdd(cell: str, what: str, where: str) -> date:
    if not re.fullmatch(r"[0-9]{8}", cell):
        raise CodeSetError(f"{where}: {what} {cell!r}, expected YYYYMMDD")
    try:
        return datetime.strptime(cell, "%Y%m%d").date()
    except ValueError as error:
        raise CodeSetError(f"{where}: {what} {cell!r} is not a date") from error
