"""ICD-10-PCS tables (CMS tabular XML): code validity, long titles and the axis-by-axis builder.

This module holds ``PcsTables`` (validity and the builder) and ``parse_tables``; the table
model lives in ``pcs_model``, the XML reading in ``pcs_xml`` and the long titles in
``pcs_titles``, all re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.pcs_model import _ROW_POSITIONS
from chartkeeper.coding.pcs_model import CODE_LENGTH as CODE_LENGTH
from chartkeeper.coding.pcs_model import PCS_CHARACTERS as PCS_CHARACTERS
from chartkeeper.coding.pcs_model import Axis as Axis
from chartkeeper.coding.pcs_model import Choice as Choice
from chartkeeper.coding.pcs_model import PcsRow as PcsRow
from chartkeeper.coding.pcs_model import PcsTable as PcsTable
from chartkeeper.coding.pcs_titles import long_title as long_title
from chartkeeper.coding.pcs_xml import TABLES_ROOT as TABLES_ROOT
from chartkeeper.coding.pcs_xml import _parse_table, _required_text
from chartkeeper.coding.pcs_xml import parse_xml as parse_xml


class PcsCodeError(CodeSetError):
    """A code or builder prefix that the PCS tables do not allow."""

    def __init__(self, code: str, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        #: 1-based position of the first character that is not allowed, when there is one.
        self.position = position



class PcsTables:
    """A parsed ICD-10-PCS tables file: validity, titles, explanations and the builder."""

    def __init__(self, version: str, title: str, source: str, tables: Sequence[PcsTable]) -> None:
        #: The file's <version> ("2025") and <title> ("2025 ICD-10-PCS Tables").
        self.version = version
        self.file_title = title
        self.source = source
        self.tables: dict[str, PcsTable] = {}
        self._row_of: dict[str, PcsRow] = {}
        # Choices after prefixes of up to 3 characters, and the rows of each table by body
        # part (3E0 has 187 rows, 3E03 15) with the values each allows at positions 4 to 7:
        # the builder filters them by a prefix with a few set look-ups per row.
        self._rows_by_body_part: dict[str, list[_RowValues]] = {}
        self._head: dict[str, tuple[Choice, ...]] = {}
        for table in tables:
            self._add_table(table)
        self._sorted_codes = tuple(sorted(self._row_of))
        self._head = {prefix: _sorted_choices(choices) for prefix, choices in self._head.items()}

    def _add_table(self, table: PcsTable) -> None:
        key = table.code
        if key in self.tables:
            raise CodeSetError(f"{self.source}: table {key} appears twice")
        self.tables[key] = table
        for depth, axis in enumerate(table.axes):
            choice = Choice(axis.position, axis.title, axis.value, axis.label)
            offered = self._head.setdefault(key[:depth], ())
            if choice not in offered:
                self._head[key[:depth]] = (*offered, choice)
        self._head[key] = tuple({(c.value, c.label): c for row in table.rows
                                 for c in row.axes[0]}.values())
        for row in table.rows:
            row_values = (row, tuple(frozenset(c.value for c in axis) for axis in row.axes))
            for body_part in row_values[1][0]:
                self._rows_by_body_part.setdefault(key + body_part, []).append(row_values)
        for row in table.rows:
            for code in row.codes(key):
                if code in self._row_of:
                    # One code in two rows would have two meanings and two titles.
                    raise CodeSetError(f"{self.source}: table {key}: code {code} is allowed "
                                       "by more than one row")
                self._row_of[code] = row

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._row_of

    def is_valid(self, code: str) -> bool:
        """Whether ``code`` (7 characters, upper case) is a valid code in these tables."""
        return code in self._row_of

    def codes(self) -> Iterator[str]:
        """Every valid code, in CMS order (digits before letters)."""
        return iter(self._sorted_codes)

    def table(self, code: str) -> PcsTable:
        """The table of a code or of a prefix of at least 3 characters."""
        if len(code) < 3:
            raise PcsCodeError(code, f"{code!r}: a table needs 3 characters (section, body "
                                     "system, operation)")
        self._check_prefix(code[:3])
        return self.tables[code[:3]]

    def axes(self, code: str) -> list[Axis]:
        """The seven characters of a valid code explained, position by position."""
        row = self._row(code)
        axes = list(self.tables[code[:3]].axes)
        # The row, not the table, gives the labels: XW0 reuses a value across rows.
        for position, axis_choices in zip(_ROW_POSITIONS, row.axes, strict=True):
            character = code[position - 1]
            choice = next(c for c in axis_choices if c.value == character)
            axes.append(Axis(position, choice.title, choice.value, choice.label))
        return axes

    def title(self, code: str) -> str:
        """The long description of a valid code, built from its labels as CMS builds it."""
        return long_title(self.axes(code))

    def choices(self, prefix: str = "") -> list[Choice]:
        """Values for the position after ``prefix`` that lead to at least one valid code.

        Raises PcsCodeError naming the first character of ``prefix`` the tables do not
        allow. A value appears once per distinct label: a few tables (e.g. XW0) give one
        character different meanings in different rows, told apart by later characters.
        """
        if len(prefix) >= CODE_LENGTH:
            raise PcsCodeError(prefix, f"prefix {prefix!r} has {len(prefix)} characters; "
                                       f"a builder prefix has 0 to {CODE_LENGTH - 1}")
        offered = self._offered(prefix)
        if not offered:
            self._check_prefix(prefix)
        return list(offered)

    def _offered(self, prefix: str) -> tuple[Choice, ...]:
        """The choices after ``prefix``; empty when no valid code starts with it."""
        if len(prefix) <= 3:
            return self._head.get(prefix, ())
        depth = len(prefix) - 3
        rows = self._rows_by_body_part.get(prefix[:4], [])
        offered: dict[tuple[str, str], Choice] = {}
        for row, values in rows:
            # Every combination of a row's labels is a code, so any row that allows the
            # prefix leads to a valid code through each of its next labels: no dead ends.
            if all(prefix[3 + i] in values[i] for i in range(1, depth)):
                for choice in row.axes[depth]:
                    offered.setdefault((choice.value, choice.label), choice)
        return _sorted_choices(offered.values())

    def _row(self, code: str) -> PcsRow:
        row = self._row_of.get(code)
        if row is not None:
            return row
        if len(code) != CODE_LENGTH:
            raise PcsCodeError(code, f"{code!r} is not an ICD-10-PCS code: it has "
                                     f"{len(code)} characters, expected {CODE_LENGTH}")
        self._check_prefix(code)
        raise AssertionError(f"{code!r} passed every character check but is not a code")

    def _check_prefix(self, prefix: str) -> None:
        """Raise PcsCodeError naming the first character the tables do not allow."""
        for index, character in enumerate(prefix):
            offered = self._offered(prefix[:index])
            if any(choice.value == character for choice in offered):
                continue
            allowed = "".join(dict.fromkeys(choice.value for choice in offered))
            where = f"after {prefix[:index]!r}" if index else "as the first character"
            axis = f" ({offered[0].title})" if offered else ""
            raise PcsCodeError(
                prefix,
                f"{prefix!r}: character {index + 1}{axis} {character!r} is not allowed "
                f"{where} in {self.source}; allowed: {allowed}",
                position=index + 1,
            )


_RowValues = tuple[PcsRow, tuple[frozenset[str], ...]]
_ORDER = {character: index for index, character in enumerate(PCS_CHARACTERS)}


def _sorted_choices(choices: Iterable[Choice]) -> tuple[Choice, ...]:
    return tuple(sorted(choices, key=lambda choice: (_ORDER[choice.value], choice.label)))


def parse_tables(data: bytes, *, source: str) -> PcsTables:
    """Parse a CMS ``icd10pcs_tables_YYYY.xml`` file (plain or gzip-compressed)."""
    root = parse_xml(data, source=source, root_tag=TABLES_ROOT)
    version = _required_text(root, "version", f"{source}: <{TABLES_ROOT}>")
    title = _required_text(root, "title", f"{source}: <{TABLES_ROOT}>")
    tables = [_parse_table(element, number, source)
              for number, element in enumerate(root.findall("pcsTable"), start=1)]
    if not tables:
        raise CodeSetError(f"{source}: no <pcsTable> elements; expected the CMS PCS tables")
    return PcsTables(version, title, source, tables)
