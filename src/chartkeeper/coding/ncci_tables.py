"""The NCCI edit tables as loaded from CMS's files: PTP code pairs and MUE values.

Each table is immutable and keyed for the checks in :mod:`chartkeeper.coding.ncci`; the
parsers that build them from CMS's files live in :mod:`chartkeeper.coding.ncci_files`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Final, Literal

PtpSetting = Literal["practitioner", "hospital"]
MueSetting = Literal["practitioner", "hospital", "dme"]

#: MUE adjudication indicators: 1 applies to each claim line, 2 and 3 to all of a date.
MUE_ADJUDICATION: Final[Mapping[int, str]] = MappingProxyType({
    1: "Line Edit",
    2: "Date of Service Edit: Policy",
    3: "Date of Service Edit: Clinical",
})

# CPT (five digits, or four and F/T/U/M for category II/III, PLA and MAAA codes) or HCPCS
# level II (a letter and four digits).
_HCPCS = re.compile(r"[0-9]{4}[0-9A-Z]|[A-Z][0-9]{4}")


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
