"""Amendments of the record at the patient's request (HIPAA 45 CFR 164.526).

A patient asks that a document be amended: the request is a ``Task`` (code
``urn:chartkeeper:him-task|amendment-request``, focus the document, due within 60 days of
receipt as 164.526(b)(2) requires). It is then either

- accepted: the amendment is a new signed ``DocumentReference`` that ``relatesTo`` (appends)
  the original, which stays as it was and readable (164.526(c)(1): identify the records
  affected and append or link the amendment); the Task is completed with the amendment as its
  output; or
- denied, for one of the four reasons 164.526(a)(2) allows, stated in plain language
  (164.526(d)(1)); the patient may then file a statement of disagreement, kept as a document
  linked to the original (164.526(d)(1)(ii), (d)(4)), as is the hospital's rebuttal if any.
"""

from __future__ import annotations

import base64
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from chartkeeper.chart.completion.scan import reference_key
from chartkeeper.chart.signing import AUTHOR_SIGNATURE, PARTICIPATION, BeforeCommit
from chartkeeper.store import Store
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Resource, Txn, new_id, now_instant

HIM_TASK = "urn:chartkeeper:him-task"
AMENDMENT_REQUEST = "amendment-request"
RESPONSE_DAYS = 60  # 164.526(b)(2)(i); one 30-day extension with notice (b)(2)(ii)
MAX_TEXT = 20_000
INPUT_CHANGE = "requested change"
INPUT_REASON = "reason given"


class DenialBasis(StrEnum):
    """The only grounds on which 164.526(a)(2) lets a covered entity deny an amendment."""

    not_created_here = "not-created-here"  # (a)(2)(i), unless the originator is unavailable
    not_designated_record_set = "not-designated-record-set"  # (a)(2)(ii)
    not_available_for_inspection = "not-available-for-inspection"  # (a)(2)(iii), 164.524
    accurate_and_complete = "accurate-and-complete"  # (a)(2)(iv)


DENIAL_TEXT = {
    DenialBasis.not_created_here: "The information was not created by this hospital.",
    DenialBasis.not_designated_record_set: "The information is not part of the designated "
                                           "record set.",
    DenialBasis.not_available_for_inspection: "The information is not available for "
                                              "inspection under 45 CFR 164.524.",
    DenialBasis.accurate_and_complete: "The information is accurate and complete.",
}


class AmendmentError(InvalidRequest):
    """The request or decision is not acceptable (names what is wrong)."""


def _text(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise AmendmentError(f"the {what} is required")
    if len(value) > MAX_TEXT:
        raise AmendmentError(f"the {what} is limited to {MAX_TEXT} characters")
    return value


def _document(txn: Txn, document_id: str) -> Resource:
    try:
        return txn.read("DocumentReference", document_id)
    except (NotFound, Gone):
        raise NotFound(f"DocumentReference/{document_id} does not exist") from None


def _task(txn: Txn, task_id: str) -> Resource:
    try:
        task = txn.read("Task", task_id)
    except (NotFound, Gone):
        raise NotFound(f"Task/{task_id} does not exist") from None
    codes = [c.get("code") for c in (task.get("code") or {}).get("coding") or []]
    if AMENDMENT_REQUEST not in codes:
        raise AmendmentError(f"Task/{task_id} is not an amendment request")
    if task.get("status") not in ("requested", "received", "accepted", "in-progress"):
        raise AmendmentError(f"the amendment request Task/{task_id} was decided already "
                             f"({task.get('status')})")
    return task


def task_input(task: Resource, name: str) -> str:
    """The text of one of a request Task's inputs (INPUT_CHANGE, INPUT_REASON)."""
    for item in task.get("input") or []:
        if (item.get("type") or {}).get("text") == name:
            return str(item.get("valueString", ""))
    return ""


def request_amendment(store: Store, document_id: str, requested_by: str, change: str,
                      reason: str, received: date, before_commit: BeforeCommit = None) -> str:
    """Record a patient's request to amend a document; the Task's id."""
    change = _text(change, "requested change")
    reason = _text(reason, "reason for the request")
    requested_by = _text(requested_by, "requester")
    with store.write() as txn:
        document = _document(txn, document_id)
        task: Resource = {
            "resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": HIM_TASK, "code": AMENDMENT_REQUEST,
                                 "display": "Amendment request (45 CFR 164.526)"}]},
            "focus": {"reference": f"DocumentReference/{document_id}"},
            "for": document.get("subject"),
            "authoredOn": now_instant(),
            "requester": {"display": requested_by},
            "restriction": {"period": {"end": (received + timedelta(days=RESPONSE_DAYS))
                                       .isoformat()}},
            "input": [{"type": {"text": INPUT_CHANGE}, "valueString": change},
                      {"type": {"text": INPUT_REASON}, "valueString": reason}],
        }
        task_id = txn.create({k: v for k, v in task.items() if v is not None}).resource_id
        if before_commit is not None:
            before_commit(txn)
        return task_id


def _linked_document(original: Resource, document_id: str, title: str, text: str,
                     author: dict[str, Any], signed: bool) -> Resource:
    now = now_instant()
    linked: Resource = {
        "resourceType": "DocumentReference", "id": new_id(), "status": "current",
        "docStatus": "final" if signed else "preliminary",
        "type": {"text": title}, "category": original.get("category") or [],
        "subject": original.get("subject"), "date": now, "author": [author],
        "description": f"{title}: {original.get('description') or 'document'}",
        "relatesTo": [{"code": "appends",
                       "target": {"reference": f"DocumentReference/{document_id}"}}],
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode(),
                                    "title": title, "creation": now}}],
    }
    if signed:
        linked["authenticator"] = author
    if original.get("context"):
        linked["context"] = {k: v for k, v in original["context"].items()
                             if k in ("encounter", "period")}
    return {k: v for k, v in linked.items() if v not in (None, [], {})}


def accept_amendment(store: Store, task_id: str, practitioner_id: str, amended_text: str,
                     before_commit: BeforeCommit = None) -> str:
    """Accept: a signed amendment linked to the original; the amendment's reference."""
    amended_text = _text(amended_text, "amendment text")
    author = {"reference": f"Practitioner/{practitioner_id}"}
    with store.write() as txn:
        task = _task(txn, task_id)
        document_id = _ref_id(task.get("focus"))
        original = _document(txn, document_id)
        amendment = _linked_document(original, document_id, "Amendment", amended_text,
                                     author, signed=True)
        created = txn.create(amendment, resource_id=amendment["id"])
        txn.create({
            "resourceType": "Provenance", "target": [{"reference": created.location}],
            "recorded": created.last_updated,
            "activity": {"coding": [{"system": PARTICIPATION, "code": "AUTHEN"}]},
            "agent": [{"who": author}],
            "signature": [{"type": [AUTHOR_SIGNATURE], "when": created.last_updated,
                           "who": author}],
            "entity": [{"role": "source", "what": {"reference": f"Task/{task_id}"}}],
        })
        reference = f"DocumentReference/{created.resource_id}"
        txn.update("Task", task_id, dict(
            task, status="completed", lastModified=now_instant(),
            businessStatus={"text": "accepted"},
            output=[{"type": {"text": "amendment"}, "valueReference": {"reference": reference}}]))
        if before_commit is not None:
            before_commit(txn)
    return reference


def deny_amendment(store: Store, task_id: str, basis: DenialBasis | str, explanation: str = "",
                   before_commit: BeforeCommit = None) -> None:
    """Deny, on one of 164.526(a)(2)'s grounds, in plain language."""
    try:
        basis = DenialBasis(basis)
    except ValueError:
        allowed = ", ".join(b.value for b in DenialBasis)
        raise AmendmentError(f"'{basis}' is not a ground for denial under 45 CFR "
                             f"164.526(a)(2); use one of: {allowed}") from None
    text = DENIAL_TEXT[basis] + (f" {explanation.strip()}" if explanation.strip() else "")
    with store.write() as txn:
        task = _task(txn, task_id)
        txn.update("Task", task_id, dict(
            task, status="rejected", lastModified=now_instant(),
            businessStatus={"text": "denied"},
            statusReason={"coding": [{"system": f"{HIM_TASK}-denial", "code": basis.value}],
                          "text": text}))
        if before_commit is not None:
            before_commit(txn)


def add_disagreement(store: Store, task_id: str, statement: str, filed_by: str,
                     before_commit: BeforeCommit = None) -> str:
    """The patient's statement of disagreement with a denial, linked to the original."""
    statement = _text(statement, "statement of disagreement")
    with store.write() as txn:
        try:
            task = txn.read("Task", task_id)
        except (NotFound, Gone):
            raise NotFound(f"Task/{task_id} does not exist") from None
        if task.get("status") != "rejected":
            raise AmendmentError("a statement of disagreement follows a denied request only")
        document_id = _ref_id(task.get("focus"))
        original = _document(txn, document_id)
        linked = _linked_document(original, document_id, "Statement of disagreement",
                                  statement, {"display": _text(filed_by, "filer")},
                                  signed=False)
        created = txn.create(linked, resource_id=linked["id"])
        reference = f"DocumentReference/{created.resource_id}"
        txn.update("Task", task_id, dict(task, output=[*(task.get("output") or []), {
            "type": {"text": "statement of disagreement"},
            "valueReference": {"reference": reference}}]))
        if before_commit is not None:
            before_commit(txn)
    return reference


def _ref_id(value: Any) -> str:
    kind, _, rid = (reference_key(value) or "").partition("/")
    if kind != "DocumentReference" or not rid:
        raise AmendmentError("the amendment request does not name a document")
    return rid
