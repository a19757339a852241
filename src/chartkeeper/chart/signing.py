"""Sign and lock; addenda. A signed document is the legal record: it is never edited again.

A ``DocumentReference`` is signed (authenticated) when its ``docStatus`` is final (or amended)
and it names its ``authenticator``; a ``Composition`` when it is final with a legal or
professional attester. Signing writes, in one transaction, the signed version, a
``Provenance`` carrying the signature (ASTM E1762 signature types, as FHIR's Signature type
asks) and the completion of the document's open "sign" deficiency Tasks. From then on the
only changes are new documents linked to it: an addendum (``relatesTo`` appends, written and
signed by a clinician) or an amendment (see ``amendments.py``). The API refuses to update or
delete a locked document (``check_not_locked``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from chartkeeper.chart.completion.scan import reference_key
from chartkeeper.chart.completion.tasks import DEFICIENCY_SYSTEM, OPEN_STATUSES
from chartkeeper.store import Store
from chartkeeper.store.errors import Conflict, Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Resource, Txn, new_id, now_instant

SIGNATURE_TYPES = "urn:iso-astm:E1762-95:2013"
AUTHOR_SIGNATURE = {"system": SIGNATURE_TYPES, "code": "1.2.840.10065.1.12.1.1",
                    "display": "Author's Signature"}
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
MAX_ADDENDUM_CHARS = 100_000
# Runs inside the write transaction just before it commits (the web appends its audit entry
# there, so the change and its entry land together).
BeforeCommit = Callable[[Txn], None] | None


class DocumentLocked(Conflict):
    """A signed document was to be changed in place."""

    issue_code = "business-rule"

    def __init__(self, reference: str) -> None:
        super().__init__(f"{reference} is signed and locked: it cannot be changed or deleted; "
                         "write an addendum, or record an amendment, which link to it")


class SigningRefused(InvalidRequest):
    """The document cannot be signed by this practitioner (or is signed already)."""


def is_locked(resource: Resource) -> bool:
    """Whether ``resource`` is a signed document (and so may not be changed in place)."""
    kind = resource.get("resourceType")
    if kind == "DocumentReference":
        return (resource.get("docStatus") in ("final", "amended")
                and bool(resource.get("authenticator")))
    if kind == "Composition":
        return resource.get("status") in ("final", "amended") and any(
            a.get("mode") in ("legal", "professional") for a in resource.get("attester") or [])
    return False


def check_not_locked(resource: Resource) -> None:
    """Raise ``DocumentLocked`` when ``resource`` (the stored version) is signed."""
    if is_locked(resource):
        raise DocumentLocked(f"{resource['resourceType']}/{resource.get('id')}")


def authors_of(document: Resource) -> set[str]:
    return {key for a in document.get("author") or [] if (key := reference_key(a))}


@dataclass
class Signed:
    document: str  # versioned reference of the signed version
    provenance: str
    tasks_completed: int


def _read_document(txn: Txn, document_id: str) -> Resource:
    try:
        return txn.read("DocumentReference", document_id)
    except (NotFound, Gone):
        raise NotFound(f"DocumentReference/{document_id} does not exist") from None


def sign_document(store: Store, document_id: str, practitioner_id: str,
                  allowed: set[str] | None = None, before_commit: BeforeCommit = None
                  ) -> Signed:
    """Authenticate a document as ``Practitioner/practitioner_id`` and lock it.

    The signer must be one of its authors, or named in ``allowed`` (e.g. the owner of its
    "sign" deficiency, when HIM reassigned it). Refused when it is signed already.
    """
    signer = f"Practitioner/{practitioner_id}"
    with store.write() as txn:
        document = _read_document(txn, document_id)
        if is_locked(document):
            raise SigningRefused(f"DocumentReference/{document_id} is signed already")
        if signer not in authors_of(document) | (allowed or set()):
            raise SigningRefused(f"{signer} is not an author of DocumentReference/"
                                 f"{document_id} and it was not assigned to them")
        signed = dict(document, docStatus="final", authenticator={"reference": signer})
        result = txn.update("DocumentReference", document_id, signed)
        when = result.last_updated
        provenance = txn.create({
            "resourceType": "Provenance", "target": [{"reference": result.location}],
            "recorded": when,
            "activity": {"coding": [{"system": PARTICIPATION, "code": "AUTHEN",
                                     "display": "authenticator"}]},
            "agent": [{"type": {"coding": [{"system": PARTICIPATION, "code": "AUTHEN"}]},
                       "who": {"reference": signer}}],
            "signature": [{"type": [AUTHOR_SIGNATURE], "when": when,
                           "who": {"reference": signer}}],
        })
        completed = complete_tasks(txn, f"DocumentReference/{document_id}", "sign")
        if before_commit is not None:
            before_commit(txn)
    return Signed(result.location, provenance.location, completed)


def complete_tasks(txn: Txn, focus: str, code: str) -> int:
    """Complete the open deficiency Tasks of ``code`` about ``focus``; how many."""
    page = txn.search_params("Task", [("focus", focus), ("code", f"{DEFICIENCY_SYSTEM}|{code}"),
                                      ("status", ",".join(OPEN_STATUSES)),
                                      ("_count", "100")])
    for task in page.matches:
        done = dict(task, status="completed", lastModified=now_instant())
        txn.update("Task", str(task["id"]), done)
    return len(page.matches)


def signed_document(txn: Txn, *, patient: str, encounter: str | None, loinc: str, title: str,
                    author: str, text: str) -> str:
    """Write a new document, signed by its author, with its signature's Provenance, inside
    ``txn``; its reference. (A document written in the workbench is signed as it is saved.)"""
    if len(text) > MAX_ADDENDUM_CHARS:
        raise InvalidRequest(f"a document is limited to {MAX_ADDENDUM_CHARS} characters")
    now = now_instant()
    document: Resource = {
        "resourceType": "DocumentReference", "id": new_id(), "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": title}],
                 "text": title},
        "subject": {"reference": patient}, "date": now, "description": title,
        "author": [{"reference": author}], "authenticator": {"reference": author},
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode(),
                                    "title": title, "creation": now}}],
    }
    if encounter:
        document["context"] = {"encounter": [{"reference": encounter}]}
    created = txn.create(document, resource_id=document["id"])
    txn.create({
        "resourceType": "Provenance", "target": [{"reference": created.location}],
        "recorded": now, "activity": {"coding": [{"system": PARTICIPATION, "code": "AUTHEN"}]},
        "agent": [{"who": {"reference": author}}],
        "signature": [{"type": [AUTHOR_SIGNATURE], "when": now, "who": {"reference": author}}],
    })
    return f"DocumentReference/{created.resource_id}"


def add_addendum(store: Store, document_id: str, practitioner_id: str, text: str,
                 before_commit: BeforeCommit = None) -> str:
    """A signed addendum to a document (the original stays as it is); its reference."""
    text = text.strip()
    if not text:
        raise InvalidRequest("an addendum needs text")
    if len(text) > MAX_ADDENDUM_CHARS:
        raise InvalidRequest(f"an addendum is limited to {MAX_ADDENDUM_CHARS} characters")
    author = f"Practitioner/{practitioner_id}"
    with store.write() as txn:
        original = _read_document(txn, document_id)
        now = now_instant()
        addendum: Resource = {
            "resourceType": "DocumentReference", "id": new_id(), "status": "current",
            "docStatus": "final",
            "type": original.get("type") or {"text": "Addendum"},
            "category": original.get("category") or [],
            "subject": original.get("subject"), "date": now,
            "author": [{"reference": author}], "authenticator": {"reference": author},
            "description": f"Addendum to {original.get('description') or 'the document'}",
            "relatesTo": [{"code": "appends",
                           "target": {"reference": f"DocumentReference/{document_id}"}}],
            "content": [{"attachment": {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(text.encode()).decode(), "title": "Addendum",
                "creation": now}}],
        }
        if original.get("context"):
            addendum["context"] = {k: v for k, v in original["context"].items()
                                   if k in ("encounter", "period", "facilityType")}
        addendum = {k: v for k, v in addendum.items() if v not in (None, [], {})}
        result = txn.create(addendum, resource_id=addendum["id"])
        txn.create({
            "resourceType": "Provenance", "target": [{"reference": result.location}],
            "recorded": now,
            "activity": {"coding": [{"system": PARTICIPATION, "code": "AUTHEN"}]},
            "agent": [{"who": {"reference": author}}],
            "signature": [{"type": [AUTHOR_SIGNATURE], "when": now,
                           "who": {"reference": author}}],
        })
        if before_commit is not None:
            before_commit(txn)
    return f"DocumentReference/{result.resource_id}"
