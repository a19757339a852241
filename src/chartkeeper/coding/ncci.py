"""NCCI procedure-to-procedure (PTP) and medically unlikely edit (MUE) files, and the checks.

The files are read and validated in :mod:`chartkeeper.coding.ncci_files` (where their layouts
are described) into the tables of :mod:`chartkeeper.coding.ncci_tables`; this module checks a
claim's service lines against them, and re-exports both so importers need only this module.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci_files import decode_cms_text, parse_mue, parse_ptp
from chartkeeper.coding.ncci_tables import (
    _HCPCS,
    MUE_ADJUDICATION,
    MueEdit,
    MueSetting,
    MueTable,
    PtpEdit,
    PtpEdits,
    PtpSetting,
)

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

_MODIFIER = re.compile(r"[0-9A-Z]{2}")


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


__all__ = [
    "MUE_ADJUDICATION",
    "NCCI_ASSOCIATED_MODIFIERS",
    "MueEdit",
    "MueHit",
    "MueSetting",
    "MueTable",
    "PtpEdit",
    "PtpEdits",
    "PtpHit",
    "PtpSetting",
    "ServiceLine",
    "decode_cms_text",
    "mue_violations",
    "parse_mue",
    "parse_ptp",
    "ptp_conflicts",
]
