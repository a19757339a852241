"""NCCI procedure-to-procedure (PTP) and medically unlikely edit (MUE) files, and the checks.

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
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Final, Literal

from chartkeeper.coding.errors import CodeSetError

PtpSetting = Literal["practitioner", "hospital"]
MueSetting = Literal["practitioner", "hospital", "dme"]

#: Modifiers that may bypass a PTP edit whose modifier indicator is 1 (NCCI Policy Manual,
#: chapter I): anatomic, global surgery, and the distinct-service modifiers.
NCCI_ASSOCIATED_MODIFIERS: Final = frozenset({
    "E1", "E2", "E3", "E4",
    "FA", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9",
    "TA", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9",
    "LT", "RT", "LC", "LD", "LM", "RC", "RI",
    "24", "25", "57", "58", "78", "79",
    "27", "59", "91", "XE", "XP", "XS", "XU",
})

#: MUE adjudication indicators: 1 applies to each claim line, 2 and 3 to all of a date.
MUE_ADJUDICATION: Final[Mapping[int, str]] = MappingProxyType({
    1: "Line Edit",
    2: "Date of Service Edit: Policy",
    3: "Date of Service Edit: Clinical",
})

# CPT (five digits, or four and F/T/U/M for category II/III, PLA and MAAA codes) or HCPCS
# level II (a letter and four digits).
_HCPCS = re.compile(r"[0-9]{4}[0-9A-Z]|[A-Z][0-9]{4}")
_MODIFIER = re.compile(r"[0-9A-Z]{2}")
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


@dataclass(frozen=True, slots=True)
class PtpEdit:
    """One column 1 / column 2 pair.

    ``deleted`` is the last date of service the edit applies to (CMS writes quarter ends such
    as 20231231); None while the edit is active. ``modifier_indicator`` is 0 (no modifier
    bypasses it), 1 (an NCCI-associated modifier may) or 9 (not applicable: the edit was
    deleted back to its start and never applies).
    """

    column1: str
    column2: str
    prior_to_1996: bool
    effective: date
    deleted: date | None
    modifier_indicator: Literal[0, 1, 9]
    rationale: str

    def in_effect(self, on: date) -> bool:
        """Whether the edit applies to services on ``on``."""
        if self.modifier_indicator == 9 or on < self.effective:
            return False
        return self.deleted is None or on <= self.deleted


@dataclass(frozen=True, slots=True)
class PtpEdits:
    """The PTP edits of one file (or several parts of one release)."""

    source: str
    setting: PtpSetting
    edits: tuple[PtpEdit, ...]
    _pairs: Mapping[tuple[str, str], tuple[PtpEdit, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        pairs: defaultdict[tuple[str, str], list[PtpEdit]] = defaultdict(list)
        for edit in self.edits:
            pairs[(edit.column1, edit.column2)].append(edit)
        object.__setattr__(
            self, "_pairs", MappingProxyType({pair: tuple(found) for pair, found in pairs.items()})
        )

    def __len__(self) -> int:
        return len(self.edits)

    def pair(self, column1: str, column2: str) -> tuple[PtpEdit, ...]:
        """Every row for the pair, in and out of effect."""
        return self._pairs.get((column1.upper(), column2.upper()), ())


@dataclass(frozen=True, slots=True)
class MueEdit:
    """The most units of a code one beneficiary is likely to get on one date (or claim line)."""

    code: str
    value: int
    adjudication: Literal[1, 2, 3]
    rationale: str

    @property
    def adjudication_text(self) -> str:
        return MUE_ADJUDICATION[self.adjudication]


@dataclass(frozen=True, slots=True)
class MueTable:
    """The MUE values of one file."""

    source: str
    setting: MueSetting
    edits: Mapping[str, MueEdit]

    def __len__(self) -> int:
        return len(self.edits)

    def get(self, code: str) -> MueEdit | None:
        return self.edits.get(code.upper())


@dataclass(frozen=True, slots=True)
class ServiceLine:
    """A claim line: a CPT/HCPCS code, its modifiers, units and date of service."""

    code: str
    modifiers: tuple[str, ...] = ()
    units: int = 1
    date: date | None = None

    def __post_init__(self) -> None:
        code = self.code.strip().upper()
        if not _HCPCS.fullmatch(code):
            raise CodeSetError(f"service code {self.code!r}: expected a CPT or HCPCS code")
        object.__setattr__(self, "code", code)
        modifiers = tuple(modifier.strip().upper() for modifier in self.modifiers)
        for modifier in modifiers:
            if not _MODIFIER.fullmatch(modifier):
                raise CodeSetError(
                    f"modifier {modifier!r} on {code}: expected two letters or digits"
                )
        object.__setattr__(self, "modifiers", modifiers)
        if isinstance(self.units, bool) or not isinstance(self.units, int) or self.units < 1:
            raise CodeSetError(f"units {self.units!r} on {code}: expected a whole number >= 1")


@dataclass(frozen=True, slots=True)
class PtpHit:
    """A PTP edit the lines break: the column 2 line is not payable with the column 1 line."""

    column1_line: int
    column2_line: int
    column1: str
    column2: str
    date_of_service: date
    modifier_indicator: Literal[0, 1]
    rationale: str


@dataclass(frozen=True, slots=True)
class MueHit:
    """Units of a code over its MUE value, on one line (MAI 1) or one date (MAI 2 and 3)."""

    code: str
    date_of_service: date
    lines: tuple[int, ...]
    units: int
    value: int
    adjudication: Literal[1, 2, 3]
    rationale: str


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


def ptp_conflicts(
    edits: PtpEdits, lines: Sequence[ServiceLine], on: date | None = None
) -> list[PtpHit]:
    """The PTP edits broken by ``lines``, pair by pair on the same date of service.

    With ``on``, only the lines of that date of service are checked (a line without a date is
    taken to be on ``on``); without it every line needs a date. An edit with modifier indicator
    0 is always a hit; one with 1 is bypassed when either line carries an NCCI-associated
    modifier; one not in effect on the date of service does not apply.
    """
    hits = []
    for day, indexed in _by_date(lines, on).items():
        for i, first in indexed:
            for j, second in indexed:
                if i == j:
                    continue
                for edit in edits.pair(first.code, second.code):
                    if not edit.in_effect(day) or edit.modifier_indicator == 9:
                        continue
                    if edit.modifier_indicator == 1 and _bypassed(first, second):
                        continue
                    hits.append(
                        PtpHit(
                            column1_line=i,
                            column2_line=j,
                            column1=first.code,
                            column2=second.code,
                            date_of_service=day,
                            modifier_indicator=edit.modifier_indicator,
                            rationale=edit.rationale,
                        )
                    )
    return hits


def mue_violations(
    table: MueTable, lines: Sequence[ServiceLine], on: date | None = None
) -> list[MueHit]:
    """Units over the MUE value: per line for MAI 1, summed per code and date for MAI 2 and 3.

    ``on`` selects the lines as :func:`ptp_conflicts` does.
    """
    hits = []
    for day, indexed in _by_date(lines, on).items():
        by_code: defaultdict[str, list[tuple[int, ServiceLine]]] = defaultdict(list)
        for index, line in indexed:
            by_code[line.code].append((index, line))
        for code, coded in by_code.items():
            edit = table.get(code)
            if edit is None:
                continue
            groups = (
                [[item] for item in coded] if edit.adjudication == 1 else [coded]
            )
            for group in groups:
                units = sum(line.units for _, line in group)
                if units > edit.value:
                    hits.append(
                        MueHit(
                            code=code,
                            date_of_service=day,
                            lines=tuple(index for index, _ in group),
                            units=units,
                            value=edit.value,
                            adjudication=edit.adjudication,
                            rationale=edit.rationale,
                        )
                    )
    return hits


def _bypassed(first: ServiceLine, second: ServiceLine) -> bool:
    return any(
        modifier in NCCI_ASSOCIATED_MODIFIERS for modifier in first.modifiers + second.modifiers
    )


def _by_date(
    lines: Sequence[ServiceLine], on: date | None
) -> dict[date, list[tuple[int, ServiceLine]]]:
    days: defaultdict[date, list[tuple[int, ServiceLine]]] = defaultdict(list)
    for index, line in enumerate(lines):
        day = line.date if line.date is not None else on
        if day is None:
            raise CodeSetError(
                f"line {index + 1} ({line.code}) has no date of service and no date was given"
            )
        if on is None or day == on:
            days[day].append((index, line))
    return dict(days)


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
    """A CMS text or CSV file as text: UTF-8, or Windows-1252 as CMS writes non-ASCII."""
    if not data.strip():
        raise CodeSetError(f"{source}: the file is empty")
    if b"\x00" in data[:4096]:
        raise CodeSetError(f"{source}: binary data, expected a text or CSV file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        # CMS's text files are Windows-1252 when they carry a non-ASCII character at all.
        return data.decode("cp1252")
    except UnicodeDecodeError as error:
        raise CodeSetError(
            f"{source}: byte {error.start} is neither UTF-8 nor Windows-1252 text"
        ) from error


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


__all__ = [
    "MUE_ADJUDICATION",
    "NCCI_ASSOCIATED_MODIFIERS",
    "MueEdit",
    "MueHit",
    "MueTable",
    "PtpEdit",
    "PtpEdits",
    "PtpHit",
    "ServiceLine",
    "mue_violations",
    "parse_mue",
    "parse_ptp",
    "ptp_conflicts",
]
