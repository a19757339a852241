"""Parses the answers to an 837: the 999 acknowledgment and the 277CA claim acknowledgment."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from chartkeeper.x12.errors import X12Error
from chartkeeper.x12.segments import Segment, transaction_sets

#: pyx12 writes its 999s as 005010X231; the published guide with errata is 005010X231A1.
ACK_999_VERSIONS = frozenset({"005010X231", "005010X231A1"})
ACK_277CA_VERSIONS = frozenset({"005010X214"})
#: IK304: why a segment is in error (005010X231A1).
SEGMENT_ERRORS = {
    "1": "unrecognized segment ID", "2": "unexpected segment",
    "3": "required segment missing", "4": "loop occurs over maximum times",
    "5": "segment exceeds maximum use", "6": "segment not in defined transaction set",
    "7": "segment not in proper sequence", "8": "segment has data element errors",
    "I4": "implementation 'not used' segment present", "I6": "implementation dependent "
    "segment missing", "I7": "implementation loop occurs under minimum times",
    "I8": "implementation segment below minimum use", "I9": "implementation dependent "
    "'not used' segment present",
}
#: IK403: why a data element is in error (005010X231A1).
ELEMENT_ERRORS = {
    "1": "required data element missing", "2": "conditional required data element missing",
    "3": "too many data elements", "4": "data element too short", "5": "data element too long",
    "6": "invalid character in data element", "7": "invalid code value", "8": "invalid date",
    "9": "invalid time", "10": "exclusion condition violated", "12": "too many repetitions",
    "13": "too many components", "I10": "implementation 'not used' data element present",
    "I11": "implementation too few repetitions", "I12": "implementation pattern match failure",
    "I13": "implementation dependent 'not used' data element present",
    "I6": "code value not used in implementation", "I9": "implementation dependent data "
    "element missing",
}
#: 277CA claim status categories that mean the claim was not taken into adjudication.
REJECTED_CATEGORIES = frozenset({"A3", "A4", "A6", "A7", "A8"})


@dataclass(frozen=True, slots=True)
class ElementError:
    """An IK4: the element at ``position`` (component/repeat when given) and why it is wrong."""

    position: int
    component: int | None
    repeat: int | None
    data_element_ref: str
    error_code: str
    bad_value: str

    @property
    def description(self) -> str:
        return ELEMENT_ERRORS.get(self.error_code, f"error code {self.error_code}")


@dataclass(frozen=True, slots=True)
class SegmentError:
    """An IK3 and its IK4s: the segment, its position in the transaction set, and why."""

    segment_id: str
    position: int
    loop_id: str
    error_code: str
    element_errors: tuple[ElementError, ...]

    @property
    def description(self) -> str:
        return SEGMENT_ERRORS.get(self.error_code, f"error code {self.error_code}")


@dataclass(frozen=True, slots=True)
class TransactionSetAck:
    """An AK2 ... IK5 loop: the verdict on one transaction set (e.g. one 837)."""

    transaction_set_id: str
    control_number: str
    ack_code: str
    error_codes: tuple[str, ...]
    segment_errors: tuple[SegmentError, ...]

    @property
    def accepted(self) -> bool:
        """A (accepted) or E (accepted, errors noted); R, M, W and X are rejections."""
        return self.ack_code in ("A", "E")


@dataclass(frozen=True, slots=True)
class Ack999:
    """A 999 implementation acknowledgment of one functional group."""

    functional_id: str
    group_control_number: str
    version: str
    ack_code: str
    included: int
    received: int
    accepted_count: int
    error_codes: tuple[str, ...]
    transaction_sets: tuple[TransactionSetAck, ...]

    @property
    def accepted(self) -> bool:
        """The whole group was accepted (A, or E: accepted with errors noted)."""
        return self.ack_code in ("A", "E")

    def for_transaction(self, control_number: str) -> TransactionSetAck:
        """The verdict on the transaction set whose ST02 is ``control_number``."""
        for transaction in self.transaction_sets:
            if transaction.control_number == control_number:
                return transaction
        raise KeyError(f"the 999 does not acknowledge transaction set {control_number!r}")


def _int(segment: Segment, index: int) -> int:
    raw = segment.element(index)
    if not raw.isdigit():
        raise X12Error(f"{segment.where()} element {segment.segment_id}{index:02d} is {raw!r}; "
                       "expected a whole number")
    return int(raw)


def _optional_int(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


def parse_999(text: str) -> Ack999:
    """The 999 in ``text``: one functional group acknowledged, with its IK3/IK4 errors."""
    sets = transaction_sets(text, "999", ACK_999_VERSIONS, "FA")
    if len(sets) != 1:
        raise X12Error(f"expected one 999 transaction set, found {len(sets)}")
    segments = list(sets[0].segments)
    if not segments or segments[0].segment_id != "AK1":
        raise X12Error("999 transaction set does not start with AK1")
    ak1 = segments[0]
    if segments[-1].segment_id != "AK9":
        raise X12Error(f"999 transaction set ends with {segments[-1].where()}; expected AK9")
    ak9 = segments[-1]
    acks = tuple(_transaction_acks(segments[1:-1]))
    ack = Ack999(
        functional_id=ak1.element(1), group_control_number=ak1.element(2),
        version=ak1.element(3), ack_code=ak9.element(1), included=_int(ak9, 2),
        received=_int(ak9, 3), accepted_count=_int(ak9, 4),
        error_codes=tuple(code for code in ak9.elements[4:9] if code),
        transaction_sets=acks,
    )
    _check_999_counts(ack, ak9)
    return ack


def _transaction_acks(segments: list[Segment]) -> Iterator[TransactionSetAck]:
    index = 0
    while index < len(segments):
        ak2 = segments[index]
        if ak2.segment_id != "AK2":
            raise X12Error(f"{ak2.where()}: expected AK2 (transaction set response header)")
        errors: list[SegmentError] = []
        index += 1
        while index < len(segments) and segments[index].segment_id in ("IK3", "IK4", "CTX"):
            segment = segments[index]
            if segment.segment_id == "IK3":
                errors.append(SegmentError(segment.element(1), _int(segment, 2),
                                           segment.element(3), segment.element(4), ()))
            elif segment.segment_id == "IK4":
                if not errors:
                    raise X12Error(f"{segment.where()}: IK4 without an IK3 before it")
                position = segment.components(1)
                element = ElementError(
                    _int(segment, 1) if len(position) == 1 else int(position[0]),
                    _optional_int(position[1]) if len(position) > 1 else None,
                    _optional_int(position[2]) if len(position) > 2 else None,
                    segment.element(2), segment.element(3), segment.element(4),
                )
                last = errors[-1]
                errors[-1] = SegmentError(last.segment_id, last.position, last.loop_id,
                                          last.error_code, (*last.element_errors, element))
            index += 1
        if index >= len(segments) or segments[index].segment_id != "IK5":
            raise X12Error(f"AK2 at {ak2.where()} for transaction set {ak2.element(2)!r} has no "
                           "IK5 (transaction set response trailer)")
        ik5 = segments[index]
        yield TransactionSetAck(ak2.element(1), ak2.element(2), ik5.element(1),
                                tuple(code for code in ik5.elements[1:6] if code), tuple(errors))
        index += 1


def _check_999_counts(ack: Ack999, ak9: Segment) -> None:
    if ack.accepted_count > ack.received or ack.received > ack.included:
        raise X12Error(f"{ak9.where()}: AK9 counts are inconsistent (included {ack.included}, "
                       f"received {ack.received}, accepted {ack.accepted_count})")
    if len(ack.transaction_sets) == ack.received:
        accepted = sum(1 for transaction in ack.transaction_sets if transaction.accepted)
        if accepted != ack.accepted_count:
            raise X12Error(f"{ak9.where()}: AK904 says {ack.accepted_count} transaction sets "
                           f"accepted, the IK5s accept {accepted}")


@dataclass(frozen=True, slots=True)
class StatusCode:
    """One STC composite: category (A1, A2, A3, A7 ...), status code and entity."""

    category: str
    status: str
    entity: str


@dataclass(frozen=True, slots=True)
class ClaimStatus:
    """A 277CA verdict on one claim (loop 2200D), keyed by the claim's patient control number."""

    patient_control_number: str
    patient_last_name: str
    patient_first_name: str
    member_id: str
    statuses: tuple[StatusCode, ...]
    status_date: date | None
    action_code: str
    billed: Decimal | None
    payer_claim_control_number: str | None
    clearinghouse_trace_number: str | None

    @property
    def category_code(self) -> str:
        return self.statuses[0].category

    @property
    def status_code(self) -> str:
        return self.statuses[0].status

    @property
    def rejected(self) -> bool:
        """True when the payer did not take the claim into adjudication (A3, A4, A6, A7, A8)."""
        return any(status.category in REJECTED_CATEGORIES for status in self.statuses)


def parse_277ca(text: str) -> list[ClaimStatus]:
    """Every claim-level status (loop 2200D) of every 277CA transaction set in ``text``."""
    statuses: list[ClaimStatus] = []
    for transaction in transaction_sets(text, "277", ACK_277CA_VERSIONS, "HN"):
        statuses.extend(_claim_statuses(list(transaction.segments)))
    return statuses


def _claim_statuses(segments: list[Segment]) -> Iterator[ClaimStatus]:
    level = ""
    patient: Segment | None = None
    index = 0
    while index < len(segments):
        segment = segments[index]
        if segment.segment_id == "HL":
            level = segment.element(3)
        elif level == "PT" and segment.segment_id == "NM1" and segment.element(1) == "QC":
            patient = segment
        elif level == "PT" and segment.segment_id == "TRN":
            if patient is None:
                raise X12Error(f"{segment.where()}: claim TRN before the patient's NM1*QC")
            end = index + 1
            while end < len(segments) and segments[end].segment_id not in ("TRN", "HL", "SVC"):
                end += 1
            yield _claim_status(patient, segment, segments[index + 1 : end])
            index = end - 1
        index += 1


def _claim_status(patient: Segment, trn: Segment, loop: list[Segment]) -> ClaimStatus:
    if trn.element(1) != "2" or not trn.element(2):
        raise X12Error(f"{trn.where()}: claim TRN must be TRN*2*<patient control number>, "
                       f"found TRN01 {trn.element(1)!r} TRN02 {trn.element(2)!r}")
    stcs = [segment for segment in loop if segment.segment_id == "STC"]
    if not stcs:
        raise X12Error(f"{trn.where()}: claim {trn.element(2)!r} has no STC status segment")
    codes: list[StatusCode] = []
    for stc in stcs:
        for index in (1, 10, 11):
            if stc.element(index):
                parts = (*stc.components(index), "", "")
                codes.append(StatusCode(parts[0], parts[1], parts[2]))
    if not codes or not codes[0].category:
        raise X12Error(f"{stcs[0].where()}: STC01 has no status category code")
    refs = {segment.element(1): segment.element(2) for segment in loop
            if segment.segment_id == "REF"}
    first = stcs[0]
    return ClaimStatus(
        patient_control_number=trn.element(2), patient_last_name=patient.element(3),
        patient_first_name=patient.element(4), member_id=patient.element(9),
        statuses=tuple(codes), status_date=first.date(2) if first.element(2) else None,
        action_code=first.element(3),
        billed=first.amount(4) if first.element(4) else None,
        payer_claim_control_number=refs.get("1K"), clearinghouse_trace_number=refs.get("D9"),
    )
