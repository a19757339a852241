"""Reads an X12 interchange into segments and checks its envelope: ISA/IEA, GS/GE, ST/SE."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from chartkeeper.x12.errors import X12Error

ISA_LENGTH = 106


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: its id, its elements (``element(1)`` is the first) and its position."""

    segment_id: str
    elements: tuple[str, ...]
    #: 1-based position of the segment in the interchange, for error messages.
    position: int
    component_separator: str

    def element(self, index: int) -> str:
        """Element ``index`` (1-based), or "" when the segment is shorter."""
        return self.elements[index - 1] if 0 < index <= len(self.elements) else ""

    def components(self, index: int) -> tuple[str, ...]:
        """The components of composite element ``index``."""
        return tuple(self.element(index).split(self.component_separator))

    def where(self) -> str:
        return f"segment {self.position} ({self.segment_id})"

    def amount(self, index: int, *, required: bool = True) -> Decimal:
        """Element ``index`` as a decimal amount; "" is 0 unless the element is required."""
        raw = self.element(index)
        if raw == "" and not required:
            return Decimal(0)
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite():
            raise X12Error(f"{self.where()} element {self.segment_id}{index:02d} is {raw!r}; "
                           "expected a decimal amount")
        return value

    def date(self, index: int) -> date:
        """Element ``index`` as a CCYYMMDD date."""
        raw = self.element(index)
        try:
            return datetime.strptime(raw, "%Y%m%d").date()
        except ValueError:
            raise X12Error(f"{self.where()} element {self.segment_id}{index:02d} is {raw!r}; "
                           "expected a date CCYYMMDD") from None


@dataclass(frozen=True, slots=True)
class TransactionSet:
    """The segments between ST and SE (both excluded), with the group's identifiers."""

    transaction_set_id: str
    control_number: str
    version: str
    functional_id: str
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class Interchange:
    """A parsed interchange: sender, receiver and its transaction sets in order."""

    sender_id: str
    receiver_id: str
    control_number: str
    transaction_sets: tuple[TransactionSet, ...]


def _split(text: str) -> tuple[list[list[str]], str]:
    body = text.lstrip()
    if not body.startswith("ISA"):
        raise X12Error(f"not an X12 interchange: expected it to start with 'ISA', "
                       f"found {body[:20]!r}")
    if len(body) < ISA_LENGTH:
        raise X12Error(f"truncated interchange: {len(body)} characters, the ISA segment alone "
                       f"has {ISA_LENGTH}")
    element_separator, component_separator, terminator = body[3], body[104], body[105]
    if terminator.isalnum() or element_separator.isalnum():
        raise X12Error(f"ISA segment is not 106 characters with delimiters: {body[:ISA_LENGTH]!r}")
    raw_segments = [part.strip("\r\n") for part in body.split(terminator)]
    if raw_segments and raw_segments[-1].strip() == "":
        raw_segments.pop()
    else:
        raise X12Error(f"truncated interchange: the last segment {raw_segments[-1][:30]!r} has "
                       f"no segment terminator {terminator!r}")
    return [segment.split(element_separator) for segment in raw_segments], component_separator


def read_interchange(text: str) -> Interchange:
    """Parses ``text`` and checks every control number and count in the envelope."""
    rows, component_separator = _split(text)
    segments = [
        Segment(row[0].strip(), tuple(row[1:]), position, component_separator)
        for position, row in enumerate(rows, start=1)
    ]
    isa = segments[0]
    if segments[-1].segment_id != "IEA":
        raise X12Error(f"truncated interchange: it ends with {segments[-1].where()}, "
                       "expected the IEA trailer")
    iea = segments[-1]
    if iea.element(2) != isa.element(13):
        raise X12Error(f"IEA02 {iea.element(2)!r} does not match ISA13 {isa.element(13)!r}")
    groups = list(_groups(segments[1:-1]))
    if iea.element(1) != str(len(groups)):
        raise X12Error(f"IEA01 says {iea.element(1)!r} functional groups, found {len(groups)}")
    sets = tuple(transaction for group in groups for transaction in group)
    return Interchange(isa.element(6).strip(), isa.element(8).strip(), isa.element(13), sets)


def _trailer(segments: list[Segment], start: int, trailer: str, header: str) -> int | None:
    """Index of the trailer closing the header at ``start``; None if another header is first."""
    for index in range(start + 1, len(segments)):
        if segments[index].segment_id == trailer:
            return index
        if segments[index].segment_id == header:
            return None
    return None


def _groups(segments: list[Segment]) -> Iterator[list[TransactionSet]]:
    index = 0
    while index < len(segments):
        gs = segments[index]
        if gs.segment_id != "GS":
            raise X12Error(f"{gs.where()}: expected a GS functional group header")
        end = _trailer(segments, index, "GE", "GS")
        if end is None:
            raise X12Error(f"truncated interchange: group {gs.element(6)!r} at {gs.where()} "
                           "has no GE trailer")
        ge = segments[end]
        if ge.element(2) != gs.element(6):
            raise X12Error(f"{ge.where()}: GE02 {ge.element(2)!r} does not match GS06 "
                           f"{gs.element(6)!r}")
        transactions = list(_transactions(segments[index + 1 : end], gs))
        if ge.element(1) != str(len(transactions)):
            raise X12Error(f"{ge.where()}: GE01 says {ge.element(1)!r} transaction sets, "
                           f"found {len(transactions)}")
        yield transactions
        index = end + 1


def _transactions(segments: list[Segment], gs: Segment) -> Iterator[TransactionSet]:
    index = 0
    while index < len(segments):
        st = segments[index]
        if st.segment_id != "ST":
            raise X12Error(f"{st.where()}: expected an ST transaction set header")
        end = _trailer(segments, index, "SE", "ST")
        if end is None:
            raise X12Error(f"truncated interchange: transaction set {st.element(2)!r} at "
                           f"{st.where()} has no SE trailer")
        se = segments[end]
        counted = end - index + 1
        if se.element(1) != str(counted):
            raise X12Error(f"{se.where()}: SE01 says {se.element(1)!r} segments, transaction "
                           f"set {st.element(2)!r} has {counted} (ST through SE)")
        if se.element(2) != st.element(2):
            raise X12Error(f"{se.where()}: SE02 {se.element(2)!r} does not match ST02 "
                           f"{st.element(2)!r}")
        version = st.element(3) or gs.element(8)
        yield TransactionSet(st.element(1), st.element(2), version, gs.element(1),
                             tuple(segments[index + 1 : end]))
        index = end + 1


def transaction_sets(
    text: str, transaction_set_id: str, versions: frozenset[str], functional_id: str
) -> tuple[TransactionSet, ...]:
    """The transaction sets of ``text``, all of which must be of the expected type and version."""
    interchange = read_interchange(text)
    if not interchange.transaction_sets:
        raise X12Error(f"the interchange holds no transaction set; expected {transaction_set_id}")
    expected = " or ".join(sorted(versions))
    for transaction in interchange.transaction_sets:
        found = transaction.transaction_set_id
        if found != transaction_set_id or transaction.functional_id != functional_id:
            raise X12Error(f"transaction set {transaction.control_number} is a {found} "
                           f"(GS01 {transaction.functional_id}); expected a {transaction_set_id} "
                           f"(GS01 {functional_id}, {expected})")
        if transaction.version not in versions:
            raise X12Error(f"{found} transaction set {transaction.control_number} is version "
                           f"{transaction.version!r}; expected {expected}")
    return interchange.transaction_sets
