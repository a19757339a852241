"""The CMS ICD-10-CM order file (fixed-width text) and how CMS code-set text files are decoded."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.icd10cm_codes import CATEGORY, dotted


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
