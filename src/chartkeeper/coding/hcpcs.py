"""HCPCS Level II (the CMS alpha-numeric file): procedure and modifier codes with their dates."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date
from typing import Literal

from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.icd10cm import decode_text

HcpcsKind = Literal["procedure", "modifier"]

# The fixed-width record of the ANWEB .txt, 1-based inclusive columns. CMS ships the layout
# as a separate document (not in the 2020 zip); these columns were checked against every
# record of the 2020 file. OPPS fields (241-252) are blank there and not read.
_FIELDS: dict[str, tuple[int, int]] = {
    "code": (1, 5), "sequence": (6, 10), "record_id": (11, 11), "long": (12, 91),
    "short": (92, 119), "pricing": (120, 127), "multiple_pricing": (128, 128),
    "cross_references": (205, 229), "coverage": (230, 230), "asc_group": (231, 232),
    "processing_note": (253, 256), "betos": (257, 259), "type_of_service": (261, 265),
    "add_date": (269, 276), "action_effective": (277, 284), "termination_date": (285, 292),
    "action_code": (293, 293),
}
RECORD_LENGTH = 320
_LAST_FIELD = _FIELDS["action_code"][1]
_DESCRIPTION_END = _FIELDS["long"][1]
# Record identification codes: first line and continuation of a procedure or modifier.
_RECORD_IDS: dict[str, tuple[HcpcsKind, bool]] = {
    "3": ("procedure", False), "4": ("procedure", True),
    "7": ("modifier", False), "8": ("modifier", True),
}
#: CMS action codes: what the release changed about a code.
ACTION_CODES: dict[str, str] = {
    "A": "add procedure or modifier code",
    "B": "change in both administrative data field and long description",
    "C": "change in long description",
    "D": "discontinue procedure or modifier code",
    "F": "change in administrative data field",
    "N": "no maintenance for this code",
    "P": "payment change (MOG, pricing indicator codes, anesthesia base units, Ambulatory "
         "Surgical Centers)",
    "R": "re-activate discontinued/deleted procedure or modifier code",
    "S": "change in short description",
    "T": "miscellaneous change (BETOS, type of service)",
}
_PROCEDURE = re.compile(r"[A-Z][0-9]{4}")
_MODIFIER = re.compile(r"   [0-9A-Z]{2}")
_RECORD_START = re.compile(r".{5}[0-9]{5}[3478]")
_YEAR = re.compile(r"HCPC(20[0-9]{2})", re.IGNORECASE)
_ANWEB = re.compile(r"ANWEB.*\.txt", re.IGNORECASE)
_MAX_MEMBER_BYTES = 64 * 1024 * 1024  # an ANWEB txt is about 3 MB; refuse zip bombs


@dataclass(frozen=True, slots=True)
class HcpcsCode:
    """One HCPCS Level II procedure or modifier with its long description assembled."""

    code: str
    kind: HcpcsKind
    short: str
    long: str
    add_date: date
    action_code: str
    action_effective: date | None
    termination_date: date | None  # the last day the code may be reported
    pricing: tuple[str, ...]
    coverage: str
    betos: str
    type_of_service: tuple[str, ...]
    processing_note: str
    cross_references: tuple[str, ...]
    asc_group: str

    def is_valid(self, on: date) -> bool:
        """Whether the code may be reported for a service on that day."""
        if on < self.add_date:
            return False
        return self.termination_date is None or on <= self.termination_date


@dataclass(frozen=True, slots=True)
class HcpcsRelease:
    """One yearly HCPCS Level II file: procedure codes and modifiers, keyed by code."""

    year: int | None
    codes: dict[str, HcpcsCode]
    modifiers: dict[str, HcpcsCode]
    source: str

    def get(self, code: str) -> HcpcsCode:
        """A procedure code ("J7613") or modifier ("LT"), any case."""
        key = code.strip().upper()
        found = self.codes.get(key) or self.modifiers.get(key)
        if found is None:
            release = f"HCPCS {self.year}" if self.year else "HCPCS"
            raise UnknownCode(code, f"{release} ({self.source})")
        return found

    def is_valid(self, code: str, on: date) -> bool:
        """Whether the code exists in this release and may be reported on that day."""
        key = code.strip().upper()
        found = self.codes.get(key) or self.modifiers.get(key)
        return found is not None and found.is_valid(on)


def _field(line: str, name: str) -> str:
    first, last = _FIELDS[name]
    return line[first - 1:last]


def _date(line: str, name: str, where: str) -> date | None:
    text = _field(line, name).strip()
    if not text:
        return None
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError(text)
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise CodeSetError(f"{where}: {name} {text!r} is not a date YYYYMMDD") from None


def _split(text: str, width: int) -> tuple[str, ...]:
    return tuple(
        part for part in (text[n:n + width].strip() for n in range(0, len(text), width)) if part
    )


def _anweb_text(data: bytes, source: str) -> tuple[bytes, str]:
    """The ANWEB .txt inside a CMS zip, and the name it is known by."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if _ANWEB.search(info.filename)]
            if len(members) != 1:
                names = [info.filename for info in archive.infolist()]
                raise CodeSetError(
                    f"{source}: expected one *ANWEB*.txt in the zip, found "
                    f"{[m.filename for m in members] or 'none'} among {names}"
                )
            member = members[0]
            if member.file_size > _MAX_MEMBER_BYTES:
                raise CodeSetError(f"{source}: {member.filename} is {member.file_size} bytes")
            return archive.read(member), f"{source}!{member.filename}"
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CodeSetError(f"{source}: not a readable zip file ({exc})") from exc


class _Record:
    """A first-line record being extended by its continuation records."""

    def __init__(self, line: str, kind: HcpcsKind, where: str) -> None:
        self.line = line
        self.kind = kind
        self.where = where
        self.long = [_field(line, "long").strip()]
        self.sequence = int(_field(line, "sequence"))

    def build(self) -> HcpcsCode:
        line, where = self.line, self.where
        add_date = _date(line, "add_date", where)
        if add_date is None:
            raise CodeSetError(f"{where}: no add date (columns 269-276)")
        action = _field(line, "action_code")
        if action not in ACTION_CODES:
            raise CodeSetError(
                f"{where}: action code {action!r} (column 293), expected one of "
                f"{''.join(ACTION_CODES)}"
            )
        return HcpcsCode(
            code=_field(line, "code").strip(), kind=self.kind,
            short=_field(line, "short").strip(),
            # CMS cuts long descriptions at spaces; its own spreadsheet joins them with one.
            long=" ".join(part for part in self.long if part),
            add_date=add_date, action_code=action,
            action_effective=_date(line, "action_effective", where),
            termination_date=_date(line, "termination_date", where),
            pricing=_split(_field(line, "pricing"), 2),
            coverage=_field(line, "coverage").strip(),
            betos=_field(line, "betos").strip(),
            type_of_service=_split(_field(line, "type_of_service"), 1),
            processing_note=_field(line, "processing_note").strip(),
            cross_references=_split(_field(line, "cross_references"), 5),
            asc_group=_field(line, "asc_group").strip(),
        )


def parse_hcpcs(data: bytes, *, source: str) -> HcpcsRelease:
    """Read the CMS alpha-numeric HCPCS file: the zip CMS publishes or its ANWEB .txt.

    Lines before the first record (CMS's disclaimer) are skipped; after it every non-blank
    line must be a record. The year comes from the file name ("HCPC2020_...").
    """
    name = source
    if data[:4] == b"PK\x03\x04":
        data, name = _anweb_text(data, source)
    year_match = _YEAR.search(name)
    codes: dict[str, HcpcsCode] = {}
    modifiers: dict[str, HcpcsCode] = {}
    current: _Record | None = None
    started = False

    def finish(record: _Record | None) -> None:
        if record is not None:
            table = codes if record.kind == "procedure" else modifiers
            built = record.build()
            if built.code in table:
                raise CodeSetError(f"{record.where}: {record.kind} {built.code} listed twice")
            table[built.code] = built

    for number, line in enumerate(decode_text(data, source=name).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}: line {number}"
        if not _RECORD_START.match(line):
            if started:
                raise CodeSetError(
                    f"{where}: expected a record (code, 5-digit sequence, record id 3/4/7/8), "
                    f"got {line[:30]!r}"
                )
            continue
        started = True
        kind, continued = _RECORD_IDS[line[10]]
        code_field = _field(line, "code")
        if not (_PROCEDURE if kind == "procedure" else _MODIFIER).fullmatch(code_field):
            raise CodeSetError(f"{where}: {code_field!r} is not a HCPCS {kind} code")
        if continued:
            if current is None or _field(current.line, "code") != code_field or (
                current.kind != kind
            ):
                raise CodeSetError(f"{where}: continuation of {code_field.strip()} follows no "
                                   "first record of that code")
            sequence = int(_field(line, "sequence"))
            if sequence <= current.sequence or line[_DESCRIPTION_END:].strip():
                raise CodeSetError(f"{where}: continuation out of sequence or longer than a "
                                   f"description ({len(line)} characters)")
            current.sequence = sequence
            current.long.append(_field(line, "long").strip())
            continue
        if not _LAST_FIELD <= len(line) <= RECORD_LENGTH:
            raise CodeSetError(
                f"{where}: record of {len(line)} characters, expected {_LAST_FIELD}-"
                f"{RECORD_LENGTH} (truncated or not an ANWEB file)"
            )
        finish(current)
        current = _Record(line, kind, where)
    finish(current)
    if not codes:
        raise CodeSetError(f"{name}: no HCPCS procedure records")
    return HcpcsRelease(
        int(year_match[1]) if year_match else None, codes, modifiers, source
    )
