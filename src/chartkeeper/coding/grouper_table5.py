"""CMS's IPPS Table 5: the MS-DRG relative weights and mean lengths of stay a site imports."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci import decode_cms_text


@dataclass(frozen=True, slots=True)
class DrgWeight:
    """One row of CMS IPPS Table 5 for a fiscal year.

    ``post_acute`` and ``special_pay`` mark the DRGs of the post-acute care transfer policy;
    ``gmlos``/``amlos`` are the geometric and arithmetic mean lengths of stay.
    """

    drg: int
    post_acute: bool
    special_pay: bool
    mdc: str
    type: Literal["MED", "SURG"]
    title: str
    weight: Decimal
    gmlos: Decimal | None
    amlos: Decimal | None


def parse_table5(data: bytes, *, source: str = "<bytes>") -> dict[int, DrgWeight]:
    """Read CMS's IPPS Table 5 (MS-DRG relative weights and mean lengths of stay).

    CMS publishes it with each IPPS final rule as a zip holding a tab-delimited text file (and
    a spreadsheet): title lines, then the header ``MS-DRG | FY 20xx Final Rule Post-Acute DRG |
    FY 20xx Final Rule Special Pay DRG | MDC | TYPE | MS-DRG Title | Weights | Geometric mean
    LOS | Arithmetic mean LOS``, then one row per DRG (``001 | Yes | No | PRE | SURG | HEART
    TRANSPLANT ... | 26.2466 | 28.6 | 35.0``). The zip, the text file or a CSV export are read;
    columns are found by their header words, so the fiscal year in the header does not matter.
    """
    text = _only_text_member(data, source)
    try:
        rows = _table_rows(text)
    except csv.Error as error:
        raise CodeSetError(f"{source}: not a readable text or CSV file ({error})") from error
    header_at = next(
        (i for i, row in enumerate(rows) if row and _squash(row[0]) == "msdrg"
         and any("weight" in _squash(cell) for cell in row)),
        None,
    )
    if header_at is None:
        raise CodeSetError(
            f"{source}: no Table 5 header row found (expected a row starting 'MS-DRG' with a "
            "'Weights' column)"
        )
    header = [_squash(cell) for cell in rows[header_at]]
    columns = {
        "post_acute": _column(header, "postacute", source),
        "special_pay": _column(header, "specialpay", source),
        "mdc": _column(header, "mdc", source, exact=True),
        "type": _column(header, "type", source, exact=True),
        "title": _column(header, "title", source),
        "weight": _column(header, "weight", source),
        "gmlos": _column(header, "geometric", source),
        "amlos": _column(header, "arithmetic", source),
    }
    width = max(columns.values()) + 1
    weights: dict[int, DrgWeight] = {}
    # csv rows are lines here: Table 5 has no cell spanning lines.
    for number, row in enumerate(rows[header_at + 1:], start=header_at + 2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{source}, line {number}"
        if len(row) < width:
            raise CodeSetError(f"{where}: {len(row)} columns, expected {width}")
        cells = {name: row[index].strip() for name, index in columns.items()}
        drg_text = row[0].strip()
        if not re.fullmatch(r"[0-9]{1,3}", drg_text):
            raise CodeSetError(f"{where}: MS-DRG {drg_text!r} is not a DRG number")
        drg = int(drg_text)
        if drg in weights:
            raise CodeSetError(f"{where}: MS-DRG {drg:03d} is listed twice")
        drg_type = cells["type"].upper()
        if drg_type not in ("MED", "SURG"):
            raise CodeSetError(f"{where}: TYPE {cells['type']!r}, expected MED or SURG")
        weight = _decimal(cells["weight"], "weight", where)
        if weight is None:
            raise CodeSetError(f"{where}: the weight is empty")
        weights[drg] = DrgWeight(
            drg=drg,
            post_acute=_yes_no(cells["post_acute"], "post-acute DRG", where),
            special_pay=_yes_no(cells["special_pay"], "special pay DRG", where),
            mdc=cells["mdc"],
            type="MED" if drg_type == "MED" else "SURG",
            title=cells["title"],
            weight=weight,
            gmlos=_decimal(cells["gmlos"], "geometric mean LOS", where),
            amlos=_decimal(cells["amlos"], "arithmetic mean LOS", where),
        )
    if not weights:
        raise CodeSetError(f"{source}: the Table 5 header is not followed by any DRG rows")
    return weights


def _only_text_member(data: bytes, source: str) -> str:
    if data[:4] == b"PK\x03\x04":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as error:
            raise CodeSetError(f"{source}: not a readable zip archive ({error})") from error
        with archive:
            names = [
                name for name in archive.namelist()
                if name.lower().endswith((".txt", ".csv", ".tsv"))
            ]
            if len(names) != 1:
                raise CodeSetError(
                    f"{source}: expected one text or CSV file in the zip, found "
                    f"{len(names)} ({', '.join(archive.namelist()) or 'none'})"
                )
            return decode_cms_text(archive.read(names[0]), f"{source}:{names[0]}")
    return decode_cms_text(data, source)


def _table_rows(text: str) -> list[list[str]]:
    head = text[:20000]
    if head.count("\t") >= head.count(","):
        # CMS's tab-delimited files do not quote: a title starting with a quote mark is text.
        return list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    return list(csv.reader(io.StringIO(text)))


def _squash(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _column(header: Sequence[str], word: str, source: str, *, exact: bool = False) -> int:
    for index, cell in enumerate(header):
        if (cell == word) if exact else (word in cell):
            return index
    raise CodeSetError(f"{source}: the Table 5 header has no {word!r} column")


def _yes_no(cell: str, what: str, where: str) -> bool:
    value = cell.strip().lower()
    if value in ("yes", "y"):
        return True
    if value in ("no", "n"):
        return False
    raise CodeSetError(f"{where}: {what} {cell!r}, expected Yes or No")


def _decimal(cell: str, what: str, where: str) -> Decimal | None:
    text = cell.strip().replace(",", "")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise CodeSetError(f"{where}: {what} {cell!r} is not a number") from error
    if not value.is_finite() or value < 0:
        raise CodeSetError(f"{where}: {what} {cell!r} is not a non-negative number")
    return value
