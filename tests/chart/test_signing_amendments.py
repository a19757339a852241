"""Sign and lock, addenda, and amendments at the patient's request (45 CFR 164.526), on both
databases; and the API refusing to change a signed document in place."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chartkeeper.chart.amendments import (
    INPUT_CHANGE,
    AmendmentError,
    accept_amendment,
    add_disagreement,
    deny_amendment,
    request_amendment,
    task_input,
)
from chartkeeper.chart.signing import (
    DEFICIENCY_SYSTEM,
    SigningRefused,
    add_addendum,
    is_locked,
    sign_document,
)
from chartkeeper.store import Store, schema
from tests.api.conftest import make_client, make_settings

Resource = dict[str, Any]


@pytest.fixture
def records(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    with store.write() as txn:
        txn.update("Patient", "p1", {"resourceType": "Patient", "id": "p1",
                                     "name": [{"family": "Signer", "given": ["Sam"]}]})
        for pid in ("dr-a", "dr-b"):
            txn.update("Practitioner", pid, {"resourceType": "Practitioner", "id": pid})
        txn.update("DocumentReference", "note-1", {
            "resourceType": "DocumentReference", "id": "note-1", "status": "current",
            "docStatus": "preliminary", "subject": {"reference": "Patient/p1"},
            "type": {"text": "Progress note"}, "description": "Progress note",
            "author": [{"reference": "Practitioner/dr-a"}],
            "content": [{"attachment": {"contentType": "text/plain",
                                        "data": base64.b64encode(b"Doing well.").decode()}}]})
        txn.update("Task", "sign-1", {
            "resourceType": "Task", "id": "sign-1", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": DEFICIENCY_SYSTEM, "code": "sign"}]},
            "focus": {"reference": "DocumentReference/note-1"},
            "owner": {"reference": "Practitioner/dr-a"}})
    yield store
    store.dispose()


def versions(store: Store) -> int:
    with store.read() as txn:
        return int(txn.conn.execute(
            select(func.count()).select_from(schema.resource_version)).scalar_one())


def read(store: Store, rtype: str, rid: str) -> Resource:
    with store.read() as txn:
        return txn.read(rtype, rid)


def test_the_author_signs_and_the_document_locks(records: Store) -> None:
    signed = sign_document(records, "note-1", "dr-a")
    note = read(records, "DocumentReference", "note-1")
    assert is_locked(note) and note["authenticator"] == {"reference": "Practitioner/dr-a"}
    assert signed.tasks_completed == 1
    assert read(records, "Task", "sign-1")["status"] == "completed"
    provenance = read(records, "Provenance", signed.provenance.split("/")[1])
    assert provenance["target"] == [{"reference": signed.document}]
    assert provenance["signature"][0]["type"][0]["code"] == "1.2.840.10065.1.12.1.1"
    with pytest.raises(SigningRefused, match="signed already"):
        sign_document(records, "note-1", "dr-a")


def test_only_an_author_or_the_assignee_may_sign(records: Store) -> None:
    before = versions(records)
    with pytest.raises(SigningRefused, match="not an author"):
        sign_document(records, "note-1", "dr-b")
    assert versions(records) == before
    sign_document(records, "note-1", "dr-b", allowed={"Practitioner/dr-b"})
    assert read(records, "DocumentReference", "note-1")["authenticator"]["reference"] == \
        "Practitioner/dr-b"


def test_an_addendum_links_to_the_original_which_stays_as_signed(records: Store) -> None:
    sign_document(records, "note-1", "dr-a")
    original = read(records, "DocumentReference", "note-1")
    reference = add_addendum(records, "note-1", "dr-a", "Potassium rechecked: 4.1 mmol/L.")
    addendum = read(records, "DocumentReference", reference.split("/")[1])
    assert addendum["relatesTo"] == [{"code": "appends",
                                      "target": {"reference": "DocumentReference/note-1"}}]
    assert is_locked(addendum)
    assert read(records, "DocumentReference", "note-1") == original
    with pytest.raises(Exception, match="needs text"):
        add_addendum(records, "note-1", "dr-a", "   ")


def test_an_accepted_amendment_is_appended_and_the_original_kept(records: Store) -> None:
    sign_document(records, "note-1", "dr-a")
    original = read(records, "DocumentReference", "note-1")
    task_id = request_amendment(records, "note-1", "Sam Signer (patient)",
                                "My allergy is to penicillin, not to sulfa.",
                                "The note lists the wrong drug.", date(2026, 11, 2))
    task = read(records, "Task", task_id)
    assert task["restriction"]["period"]["end"] == "2027-01-01"  # 60 days (164.526(b)(2))
    assert task_input(task, INPUT_CHANGE).startswith("My allergy")
    reference = accept_amendment(records, task_id, "dr-a", "Allergy: penicillin (rash).")
    amendment = read(records, "DocumentReference", reference.split("/")[1])
    assert amendment["relatesTo"][0]["target"]["reference"] == "DocumentReference/note-1"
    assert read(records, "DocumentReference", "note-1") == original
    done = read(records, "Task", task_id)
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"]["reference"] == reference
    with pytest.raises(AmendmentError, match="decided already"):
        deny_amendment(records, task_id, "accurate-and-complete")


def test_a_denial_needs_a_lawful_ground_then_takes_a_disagreement(records: Store) -> None:
    task_id = request_amendment(records, "note-1", "Sam Signer", "Remove the diagnosis.",
                                "I disagree with it.", date(2026, 11, 2))
    with pytest.raises(AmendmentError, match="not a ground for denial"):
        deny_amendment(records, task_id, "we would rather not")
    with pytest.raises(AmendmentError, match="follows a denied request"):
        add_disagreement(records, task_id, "I still disagree.", "Sam Signer")
    deny_amendment(records, task_id, "accurate-and-complete", "Confirmed by the attending.")
    task = read(records, "Task", task_id)
    assert task["status"] == "rejected"
    assert task["statusReason"]["text"].startswith("The information is accurate and complete.")
    reference = add_disagreement(records, task_id, "I still disagree.", "Sam Signer")
    statement = read(records, "DocumentReference", reference.split("/")[1])
    assert statement["type"]["text"] == "Statement of disagreement"
    assert not is_locked(statement)


@pytest.mark.parametrize("missing", ["change", "reason", "document"])
def test_incomplete_amendment_requests_are_refused(records: Store, missing: str) -> None:
    before = versions(records)
    args = {"change": "x", "reason": "y", "document": "note-1"}
    args[missing] = "" if missing != "document" else "no-such-document"
    with pytest.raises(Exception, match="required|does not exist"):
        request_amendment(records, args["document"], "Sam", args["change"], args["reason"],
                          date(2026, 11, 2))
    assert versions(records) == before


def test_the_api_refuses_to_change_or_delete_a_signed_document(
        records: Store, tmp_path: Path) -> None:
    sign_document(records, "note-1", "dr-a")
    signed = read(records, "DocumentReference", "note-1")
    with make_client(make_settings(tmp_path, records.url), records) as client:
        edited = dict(signed, description="edited afterwards")
        put = client.put("/fhir/DocumentReference/note-1", json=edited)
        assert put.status_code == 409
        outcome = put.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "business-rule"
        assert "signed and locked" in outcome["issue"][0]["diagnostics"]
        assert client.delete("/fhir/DocumentReference/note-1").status_code == 409
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": edited, "request": {"method": "PUT",
                                             "url": "DocumentReference/note-1"}}]}
        assert client.post("/fhir", json=bundle).status_code == 409
        audit = client.app.state.security.trail.entries(action="update", limit=100)
        assert audit and audit[-1].outcome != "success"
    assert read(records, "DocumentReference", "note-1") == signed
