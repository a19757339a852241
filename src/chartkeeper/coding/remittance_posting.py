"""Posts the answers to released 837s onto their Claims: 999, 277CA and 835 as ClaimResponses,
and each 835's payment as a PaymentReconciliation (``payment_reconciliation``).

Each file is posted in one store transaction or not at all. A 999 names the batch it answers by
its group control number (our batches carry one control number in ISA13, GS06 and ST02); a
277CA and an 835 name each claim by its patient control number (CLM01), the identifier the
release stored on the Claim. A malformed or unbalanced file, an answer to a claim we never
released, a billed amount that is not the claim's, or a file posted before: a PostingError
listing every problem, and nothing stored. A rejection (999 or 277CA) sends the Claim back to
draft, tagged ``rejected``, so that billing corrects it and releases it again.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chartkeeper import x12
from chartkeeper.coding.claims import (
    CONTROL_SYSTEM,
    PCN_SYSTEM,
    REJECTED_CODE,
    TAG_SYSTEM,
    ClaimsError,
    usd,
)
from chartkeeper.coding.payment_reconciliation import TRACE_SYSTEM, payment_reconciliation
from chartkeeper.store.errors import Gone, NotFound
from chartkeeper.store.service import Store, Txn, now_instant
from chartkeeper.x12.remittance import Adjustment, ClaimPayment, Remittance, ServicePayment
from chartkeeper.x12.responses import ClaimStatus, TransactionSetAck
from chartkeeper.x12.segments import read_interchange

Resource = dict[str, Any]

ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
CARIN_ADJUDICATION = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
GROUP_SYSTEM = "https://x12.org/codes/claim-adjustment-group-codes"
REASON_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
CATEGORY_SYSTEM = "https://x12.org/codes/claim-status-category-codes"
STATUS_SYSTEM = "https://x12.org/codes/claim-status-codes"
ENTITY_SYSTEM = "https://x12.org/codes/entity-identifier-codes"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
# Ours: the payer's claim number and the 999's own codes (the 835 trace number is in
# payment_reconciliation; X12 elements 618 "syntax error", 620 "segment error", 621 "element
# error", 717 "ack code").
PAYER_CLAIM_SYSTEM = "urn:chartkeeper:x12:payer-claim-control-number"
ACK_SYSTEM = "urn:chartkeeper:x12:999-acknowledgment-code"
SYNTAX_SYSTEM = "urn:chartkeeper:x12:999-transaction-set-syntax-error"
SEGMENT_SYSTEM = "urn:chartkeeper:x12:999-segment-syntax-error"
ELEMENT_SYSTEM = "urn:chartkeeper:x12:999-element-syntax-error"
KINDS = {"999": "999", "277": "277CA", "835": "835"}
_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:chartkeeper:claims:responses")

GROUPS = {"CO": "Contractual Obligations", "OA": "Other adjustments",
          "PI": "Payor Initiated Reductions", "PR": "Patient Responsibility"}
#: 277CA status categories (X12 external code list 507) of an acknowledgment.
CATEGORIES = {
    "A0": "Acknowledgement/Forwarded", "A1": "Acknowledgement/Receipt",
    "A2": "Acknowledgement/Acceptance into adjudication system",
    "A3": "Acknowledgement/Returned as unprocessable claim", "A4": "Acknowledgement/Not Found",
    "A5": "Acknowledgement/Split Claim", "A6": "Acknowledgement/Rejected for Missing Information",
    "A7": "Acknowledgement/Rejected for Invalid Information",
    "A8": "Acknowledgement/Rejected for relational field in error",
}
#: CLP02: what the payer did with the claim.
CLAIM_STATUSES = {
    "1": "Processed as primary", "2": "Processed as secondary", "3": "Processed as tertiary",
    "4": "Denied", "19": "Processed as primary, forwarded to additional payer(s)",
    "20": "Processed as secondary, forwarded to additional payer(s)",
    "21": "Processed as tertiary, forwarded to additional payer(s)",
    "22": "Reversal of previous payment", "23": "Not our claim, forwarded to additional payer(s)",
    "25": "Predetermination pricing only - no payment",
}
ACK_CODES = {"A": "accepted", "E": "accepted, errors noted", "M": "rejected (message "
             "authentication failed)", "R": "rejected", "W": "rejected (assurance failed)",
             "X": "rejected (content could not be analyzed)"}


class PostingError(ClaimsError):
    """A 999, 277CA or 835 that cannot be posted; ``problems`` lists every reason."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"{what} was not posted; nothing was stored "
                         f"({count} problem{'' if count == 1 else 's'}):\n{lines}")


@dataclass(frozen=True)
class Posted:
    """What a file posted: ClaimResponse ids, the Claims answered, those sent back to draft."""

    kind: str
    claim_responses: tuple[str, ...]
    claims: tuple[str, ...]
    rejected: tuple[str, ...]
    payment_reconciliations: tuple[str, ...] = ()  # an 835's, one per transaction set


@dataclass
class _Posting:
    """The ClaimResponses and rejections of one file, written together once all is checked."""

    kind: str
    digest: str
    problems: list[str] = field(default_factory=list)
    responses: list[Resource] = field(default_factory=list)
    reconciliations: list[Resource] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # claim id -> why

    def response_id(self, *key: object) -> str:
        return str(uuid.uuid5(_IDS, "|".join([self.kind, self.digest, *map(str, key)])))


def transaction_kind(text: str) -> str:
    """999, 277CA or 835: what an inbound interchange holds, from its ST01."""
    try:
        sets = read_interchange(text).transaction_sets
    except x12.X12Error as problem:
        raise PostingError("the file", [f"it is not a readable X12 interchange: {problem}"]
                           ) from None
    found = {transaction.transaction_set_id for transaction in sets}
    kinds = {KINDS[ident] for ident in found if ident in KINDS}
    if len(found) != 1 or len(kinds) != 1:
        raise PostingError("the file", [f"it holds transaction set(s) {sorted(found) or 'none'}; "
                                        "expected one of 999, 277 (277CA) or 835"])
    return kinds.pop()


def post(store: Store, text: str) -> Posted:
    """Post a 999, 277CA or 835, whichever the file is (its ST01 says)."""
    return {"999": post_999, "277CA": post_277ca, "835": post_835}[transaction_kind(text)](
        store, text)


def _parsed(kind: str, problem: x12.X12Error) -> PostingError:
    return PostingError(f"the {kind}", [f"it is malformed or does not balance: {problem}"])


def _digest(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8", "surrogateescape")).hexdigest()


# ------------------------------------------------------------------------------------ 999
def post_999(store: Store, text: str) -> Posted:
    """A 999 on one of our batches: each Claim it carried gets a ClaimResponse (outcome
    ``queued`` when accepted, ``error`` with the syntax errors when rejected)."""
    try:
        ack = x12.parse_999(text)
    except x12.X12Error as problem:
        raise _parsed("999", problem) from None
    posting = _Posting("999", _digest(text))
    with store.write() as txn:
        if ack.functional_id != "HC":
            posting.problems.append(f"the 999 acknowledges a functional group of type "
                                    f"{ack.functional_id!r}, not claims (HC)")
        batches = []
        if ack.group_control_number.isdigit():
            batches = txn.search_params("DocumentReference", [
                ("identifier", f"{CONTROL_SYSTEM}|{int(ack.group_control_number)}")]).matches
        if not batches:
            posting.problems.append(f"the 999 acknowledges group {ack.group_control_number!r}, "
                                    "which no released 837 batch carries")
        for batch in batches:
            _acknowledge(txn, posting, ack, batch)
        return _finish(txn, posting, "the 999")


def _acknowledge(txn: Txn, posting: _Posting, ack: x12.Ack999, batch: Resource) -> None:
    control = int(next(i["value"] for i in batch["identifier"] if i["system"] == CONTROL_SYSTEM))
    transaction = next((t for t in ack.transaction_sets if t.control_number.isdigit()
                        and int(t.control_number) == control), None)
    if transaction is None and ack.transaction_sets:
        posting.problems.append(f"the 999 answers group {control} but not its transaction set "
                                f"{control:04d}")
        return
    code = transaction.ack_code if transaction is not None else ack.ack_code
    accepted = code in ("A", "E")
    for related in (batch.get("context") or {}).get("related") or []:
        claim = _claim(txn, posting, str(related.get("reference", "")).partition("/")[2])
        if claim is None:
            continue
        response = _response(posting, claim, posting.response_id(claim["id"]))
        response["outcome"] = "queued" if accepted else "error"
        response["disposition"] = (f"999 for batch {control}: {ACK_CODES.get(code, code)} "
                                   f"(IK5/AK9 {code})")
        if not accepted:
            response["error"] = _syntax_errors(transaction, code)
            posting.rejected[str(claim["id"])] = f"rejected by the 999 for batch {control}"
        posting.responses.append(response)


def _syntax_errors(transaction: TransactionSetAck | None, code: str) -> list[Resource]:
    errors = [{"code": {"coding": [{"system": ACK_SYSTEM, "code": code}],
                        "text": f"acknowledgment code {code}: {ACK_CODES.get(code, code)}"}}]
    if transaction is None:
        return errors
    errors += [{"code": {"coding": [{"system": SYNTAX_SYSTEM, "code": reason}],
                         "text": f"transaction set syntax error {reason}"}}
               for reason in transaction.error_codes]
    for segment in transaction.segment_errors:
        errors.append({"code": {"coding": [{"system": SEGMENT_SYSTEM, "code": segment.error_code}],
                                "text": f"segment {segment.segment_id} at position "
                                        f"{segment.position} (loop {segment.loop_id}): "
                                        f"{segment.description}"}})
        errors += [{"code": {"coding": [{"system": ELEMENT_SYSTEM, "code": element.error_code}],
                             "text": f"{segment.segment_id}{element.position:02d}: "
                                     f"{element.description} ({element.bad_value!r})"}}
                   for element in segment.element_errors]
    return errors


# ---------------------------------------------------------------------------------- 277CA
def post_277ca(store: Store, text: str) -> Posted:
    """A 277CA: each claim status becomes a ClaimResponse (``queued`` when accepted, A0/A1/A2/
    A5; ``error`` when rejected, A3/A4/A6/A7/A8, and the Claim goes back to draft)."""
    try:
        statuses = x12.parse_277ca(text)
    except x12.X12Error as problem:
        raise _parsed("277CA", problem) from None
    posting = _Posting("277CA", _digest(text))
    with store.write() as txn:
        for number, status in enumerate(statuses, start=1):
            _claim_status(txn, posting, number, status)
        return _finish(txn, posting, "the 277CA")


def _claim_status(txn: Txn, posting: _Posting, number: int, status: ClaimStatus) -> None:
    claim = _claim_by_number(txn, posting, status.patient_control_number, "277CA status")
    if claim is None:
        return
    if status.billed is not None:
        _same_total(posting, claim, abs(status.billed), "277CA status")
    response = _response(posting, claim, posting.response_id(status.patient_control_number,
                                                              number))
    if status.payer_claim_control_number:
        response["identifier"] = [{"system": PAYER_CLAIM_SYSTEM,
                                   "value": status.payer_claim_control_number}]
    codes = [f"{s.category}:{s.status}" + (f":{s.entity}" if s.entity else "")
             for s in status.statuses]
    meaning = CATEGORIES.get(status.category_code, f"category {status.category_code}")
    response["outcome"] = "error" if status.rejected else "queued"
    response["disposition"] = f"277CA {', '.join(codes)}: {meaning}"
    if status.rejected:
        response["error"] = [{"code": {"coding": [
            {"system": CATEGORY_SYSTEM, "code": s.category,
             **({"display": CATEGORIES[s.category]} if s.category in CATEGORIES else {})},
            *([{"system": STATUS_SYSTEM, "code": s.status}] if s.status else []),
            *([{"system": ENTITY_SYSTEM, "code": s.entity}] if s.entity else [])],
            "text": f"{s.category}:{s.status}" + (f":{s.entity}" if s.entity else "")}}
            for s in status.statuses]
        posting.rejected[str(claim["id"])] = f"rejected by the 277CA ({', '.join(codes)})"
    posting.responses.append(response)


# ------------------------------------------------------------------------------------ 835
def post_835(store: Store, text: str) -> Posted:
    """An 835: one ClaimResponse per CLP (outcome complete) with the payment, the payer's
    claim number, the totals, the claim's CAS adjustments and each SVC's adjudication."""
    try:
        remittances = x12.parse_835_all(text)
    except x12.X12Error as problem:
        raise _parsed("835", problem) from None
    posting = _Posting("835", _digest(text))
    with store.write() as txn:
        for index, remittance in enumerate(remittances):
            paid = []
            for number, payment in enumerate(remittance.claims, start=1):
                claim = _payment(txn, posting, remittance, number, payment)
                if claim is not None:
                    paid.append((claim, posting.responses[-1]["id"], payment))
            posting.reconciliations.append(payment_reconciliation(
                remittance, posting.response_id("payment", index, remittance.trace_number),
                paid, now_instant()))
        return _finish(txn, posting, "the 835")


def _payment(txn: Txn, posting: _Posting, remittance: Remittance, number: int,
             payment: ClaimPayment) -> Resource | None:
    """The ClaimResponse of one CLP (appended to the posting); the Claim it answers."""
    claim = _claim_by_number(txn, posting, payment.patient_control_number, "835 payment")
    if claim is None:
        return None
    _same_total(posting, claim, abs(payment.billed), f"835 {remittance.trace_number} payment")
    response = _response(posting, claim, posting.response_id(
        remittance.trace_number, payment.patient_control_number, number))
    if payment.payer_claim_control_number:
        response["identifier"] = [{"system": PAYER_CLAIM_SYSTEM,
                                   "value": payment.payer_claim_control_number}]
    response["outcome"] = "complete"
    status = CLAIM_STATUSES.get(payment.status_code, f"CLP02 {payment.status_code}")
    response["disposition"] = (f"{status} by {remittance.payer_name} (835 "
                               f"{remittance.trace_number})")
    items = []
    used: set[int] = set()
    for service in payment.services:
        sequence = _item_for(claim, service, used)
        if sequence is None:
            posting.problems.append(
                f"835 {remittance.trace_number} pays service {service.procedure_qualifier}:"
                f"{service.procedure_code} of claim {payment.patient_control_number}, which is "
                f"no line of Claim/{claim['id']}")
            continue
        used.add(sequence)
        items.append({"itemSequence": sequence, "adjudication": [
            _amount(ADJUDICATION, "submitted", "Submitted Amount", service.billed),
            _amount(ADJUDICATION, "benefit", "Benefit Amount", service.paid),
            *map(_adjustment, service.adjustments)]})
    if items:
        response["item"] = items
    if payment.adjustments:
        response["adjudication"] = [_adjustment(a) for a in payment.adjustments]
    response["total"] = [
        _amount(ADJUDICATION, "submitted", "Submitted Amount", payment.billed),
        _amount(ADJUDICATION, "benefit", "Benefit Amount", payment.paid),
        _amount(CARIN_ADJUDICATION, "memberliability", "Member liability",
                payment.patient_responsibility)]
    if payment.paid != 0:
        response["payment"] = {
            "type": {"coding": [{"system": PAYMENT_TYPE, "code": "complete",
                                 "display": "Complete"}]},
            "date": remittance.payment_date.isoformat(), "amount": usd(payment.paid),
            "identifier": {"system": TRACE_SYSTEM, "value": remittance.trace_number}}
    if payment.drg:
        response["processNote"] = [{"number": 1, "type": "display",
                                    "text": f"paid on MS-DRG {payment.drg}"}]
    posting.responses.append(response)
    return claim


def _item_for(claim: Resource, service: ServicePayment, used: set[int]) -> int | None:
    """The Claim line an SVC pays: HC (HCPCS/CPT) by procedure code, NU by revenue code."""
    for item in sorted(claim.get("item") or [], key=lambda i: i.get("sequence", 0)):
        if item.get("sequence") in used:
            continue
        if service.procedure_qualifier == "NU":
            concept = item.get("revenue")
        elif service.procedure_qualifier == "HC":
            concept = item.get("productOrService")
        else:
            return None
        if any(c.get("code") == service.procedure_code for c in (concept or {}).get("coding")
               or []):
            return int(item["sequence"])
    return None


def _amount(system: str, code: str, display: str, amount: Decimal) -> Resource:
    return {"category": {"coding": [{"system": system, "code": code, "display": display}]},
            "amount": usd(amount)}


def _adjustment(adjustment: Adjustment) -> Resource:
    """A CAS triplet: the group as the category, the CARC as the reason."""
    found: Resource = {
        "category": {"coding": [{"system": GROUP_SYSTEM, "code": adjustment.group,
                                 "display": GROUPS[adjustment.group]}]},
        "reason": {"coding": [{"system": REASON_SYSTEM, "code": adjustment.reason}]},
        "amount": usd(adjustment.amount)}
    if adjustment.quantity is not None:
        found["value"] = float(adjustment.quantity)
    return found


# ----------------------------------------------------------------------------- common
def _claim(txn: Txn, posting: _Posting, claim_ref: str) -> Resource | None:
    try:
        return txn.read("Claim", claim_ref)
    except (NotFound, Gone):
        posting.problems.append(f"Claim/{claim_ref} of the batch is not in the store")
        return None


def _claim_by_number(txn: Txn, posting: _Posting, number: str, what: str) -> Resource | None:
    found = txn.search_params("Claim", [("identifier", f"{PCN_SYSTEM}|{number}")]).matches
    if len(found) != 1:
        posting.problems.append(
            f"{what} for patient control number {number!r}: "
            + ("no released Claim has it" if not found else
               f"{len(found)} Claims have it ({', '.join(c['id'] for c in found)})"))
        return None
    return found[0]


def _same_total(posting: _Posting, claim: Resource, billed: Decimal, what: str) -> None:
    total = (claim.get("total") or {}).get("value")
    if total is None or Decimal(str(total)) != billed:
        posting.problems.append(f"{what} reports {billed} billed on claim "
                                f"{_number_of(claim)}, but Claim/{claim['id']}'s total is "
                                f"{total}: it answers another claim")


def _number_of(claim: Resource) -> str:
    return next((str(i["value"]) for i in claim.get("identifier") or []
                 if i.get("system") == PCN_SYSTEM), "?")


def _response(posting: _Posting, claim: Resource, response_id: str) -> Resource:
    posting.answered.append(str(claim["id"]))
    response: Resource = {
        "resourceType": "ClaimResponse", "id": response_id,
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": f"x12-{posting.kind.lower()}",
                          "display": f"Posted from an X12 {posting.kind}"}]},
        "status": "active", "type": claim["type"], "use": claim.get("use", "claim"),
        "patient": claim["patient"], "created": now_instant(),
        "request": {"reference": f"Claim/{claim['id']}"}, "outcome": "queued"}
    if (claim.get("insurer") or {}).get("reference"):
        response["insurer"] = claim["insurer"]
    else:
        posting.problems.append(f"Claim/{claim['id']} names no insurer: it was never released")
    if (claim.get("provider") or {}).get("reference"):
        response["requestor"] = claim["provider"]
    return response


def _finish(txn: Txn, posting: _Posting, what: str) -> Posted:
    """Write the file's ClaimResponses and rejections, or raise with every problem (the
    caller's transaction then rolls back)."""
    for response in [*posting.responses, *posting.reconciliations]:
        try:
            txn.read(response["resourceType"], response["id"])
        except (NotFound, Gone):
            continue
        posting.problems.append(f"{what} was posted before ({response['resourceType']}/"
                                f"{response['id']} exists)")
    if posting.problems:
        raise PostingError(what, posting.problems)
    for response in [*posting.responses, *posting.reconciliations]:
        txn.update(response["resourceType"], response["id"], response)
    for claim_ref, why in posting.rejected.items():
        claim = txn.read("Claim", claim_ref)
        body = copy.deepcopy(claim)
        meta = {k: v for k, v in body.pop("meta").items() if k not in ("versionId",
                                                                        "lastUpdated")}
        tags = [t for t in meta.get("tag") or [] if t.get("system") != TAG_SYSTEM
                or t.get("code") != REJECTED_CODE]
        meta["tag"] = [*tags, {"system": TAG_SYSTEM, "code": REJECTED_CODE,
                               "display": f"{why[:1].upper()}{why[1:]}: correct it and release "
                                          "it again"}]
        body["meta"] = meta
        body["status"] = "draft"
        txn.update("Claim", claim_ref, body)
    return Posted(posting.kind, tuple(r["id"] for r in posting.responses),
                  tuple(dict.fromkeys(posting.answered)), tuple(posting.rejected),
                  tuple(r["id"] for r in posting.reconciliations))
