"""CPT code files a site licenses from the AMA (none ship with Chartkeeper): read and checked."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import Literal

from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.icd10cm import decode_text

CptCategory = Literal["I", "II", "III", "PLA"]

# Category I is five digits, or four digits and A (vaccine administration) or M (MAAA
# administrative codes); Category II ends in F, Category III in T, PLA codes in U.
CPT_CODE = re.compile(r"[0-9]{4}[0-9AMFTU]")
_CATEGORY_BY_SUFFIX: dict[str, CptCategory] = {"F": "II", "T": "III", "U": "PLA"}


def cpt_category(code: str) -> CptCategory:
    """The CPT category a code belongs to, by its last character."""
    code = code.strip().upper()
    if not CPT_CODE.fullmatch(code):
        raise ValueError(f"{code!r} is not a CPT code (5 digits, or 4 digits + A/M/F/T/U)")
    return _CATEGORY_BY_SUFFIX.get(code[-1], "I")


@dataclass(frozen=True, slots=True)
class CptRelease:
    """The CPT codes and descriptors of one licensed file."""

    codes: dict[str, str]
    source: str

    def descriptor(self, code: str) -> str:
        """The descriptor of a code; ``UnknownCode`` when the file lacks it."""
        try:
            return self.codes[code.strip().upper()]
        except KeyError:
            raise UnknownCode(code, f"CPT ({self.source})") from None

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code.strip().upper() in self.codes


def _table_rows(
    lines: list[str], first: int, header: list[str], delimiter: str, source: str
) -> list[tuple[int, str, str]]:
    code_at, descriptor_at = header.index("code"), header.index("descriptor")
    rows = []
    for number, line in enumerate(lines[first + 1:], start=first + 2):
        try:
            cells = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error as exc:
            raise CodeSetError(f"{source}: line {number}: unreadable CSV ({exc})") from exc
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise CodeSetError(
                f"{source}: line {number}: {len(cells)} fields, the header has {len(header)}"
            )
        rows.append((number, cells[code_at], cells[descriptor_at]))
    return rows


def _rows(text: str, source: str) -> list[tuple[int, str, str]]:
    """(line number, code, descriptor) of each record, whatever the file's format."""
    lines = text.splitlines()
    first = next((n for n, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise CodeSetError(f"{source}: empty file, expected CPT codes with descriptors")
    for delimiter in (",", "\t"):
        try:
            cells = next(csv.reader([lines[first]], delimiter=delimiter), [])
        except csv.Error as exc:
            raise CodeSetError(f"{source}: line {first + 1}: unreadable CSV ({exc})") from exc
        header = [cell.strip().lower() for cell in cells]
        if "code" in header and "descriptor" in header:
            return _table_rows(lines, first, header, delimiter, source)
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        # The code, then a tab (LONGULT.txt) or spaces (MEDU.txt, SHORTU.txt).
        code, *descriptor = line.split(None, 1)
        rows.append((number, code, descriptor[0] if descriptor else ""))
    return rows


def parse_cpt(data: bytes, *, source: str) -> CptRelease:
    """Read a licensed CPT file: AMA tab-delimited (LONGULT/MEDU style) or CSV code,descriptor.

    A code must have CPT's shape and a non-empty descriptor; a code listed twice with two
    different descriptors is refused (the same descriptor twice is accepted once).
    """
    codes: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for number, raw_code, raw_descriptor in _rows(decode_text(data, source=source), source):
        code = raw_code.strip().upper()
        descriptor = " ".join(raw_descriptor.split())
        if not CPT_CODE.fullmatch(code):
            raise CodeSetError(
                f"{source}: line {number}: {raw_code!r} is not a CPT code "
                "(5 digits, or 4 digits + A/M/F/T/U)"
            )
        if not descriptor:
            raise CodeSetError(f"{source}: line {number}: code {code} has an empty descriptor")
        if code in codes and codes[code] != descriptor:
            raise CodeSetError(
                f"{source}: line {number}: code {code} has a different descriptor than on "
                f"line {first_seen[code]}"
            )
        codes.setdefault(code, descriptor)
        first_seen.setdefault(code, number)
    if not codes:
        raise CodeSetError(f"{source}: no CPT codes in the file")
    return CptRelease(codes, source)
