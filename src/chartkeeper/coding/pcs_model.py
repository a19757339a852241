"""ICD-10-PCS table model: the code alphabet, axes, builder choices, rows and tables."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

#: The 34 characters a PCS code may use: digits and letters without I and O, in CMS order.
PCS_CHARACTERS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 7
_TABLE_POSITIONS = (1, 2, 3)
_ROW_POSITIONS = (4, 5, 6, 7)


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
