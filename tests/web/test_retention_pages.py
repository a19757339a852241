"""Records retention over HTTP: the review lists records past retention, a legal hold is placed
and shown, a held record's destruction is refused and audited, a released one is destroyed
with its certificate, and forged, unconfirmed or wrong-role posts change nothing.

The workbench's store is shared by every web test: these tests destroy only patients they
create themselves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chartkeeper.chart.retention import holds_for
from chartkeeper.security.identity import Role
from chartkeeper.store import Gone, schema
from tests.web.conftest import Account, Workbench, add_account
from tests.web.support import csrf_of, sign_in_http

METHOD = "Deletion from the electronic record store"


@pytest.fixture(scope="module")
def accounts(workbench: Workbench) -> dict[Role, Account]:
    suffix = uuid.uuid4().hex[:6]
    return {role: add_account(workbench.security, f"ret-{role.value}-{suffix}", role)
            for role in (Role.privacy_officer, Role.administrator)}


@pytest.fixture
def tech(workbench: Workbench) -> Iterator[httpx.Client]:
    client = sign_in_http(workbench.url, workbench.accounts["tech"])
    yield client
    client.close()


def old_patient(workbench: Workbench, last_visit: str = "1991-04-05") -> dict[str, Any]:
    """A patient of ours, last seen long ago (so past retention), with one encounter."""
    token = uuid.uuid4().hex[:8]
    with workbench.store.write() as txn:
        patient = txn.create({
            "resourceType": "Patient",
            "identifier": [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "urn:oid:1.2.3.99", "value": f"RT{token}"}],
            "name": [{"use": "official", "family": "Retentia", "given": [f"Old{token}"]}],
            "birthDate": "1940-02-03"}).resource
        assert patient is not None
        txn.create({"resourceType": "Encounter", "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                              "code": "AMB"},
                    "subject": {"reference": f"Patient/{patient['id']}"},
                    "period": {"start": f"{last_visit}T09:00:00Z",
                               "end": f"{last_visit}T10:00:00Z"}})
    return patient


def mrn(patient: dict[str, Any]) -> str:
    return str(patient["identifier"][0]["value"])


def versions(workbench: Workbench) -> int:
    with workbench.store.read() as txn:
        return int(txn.conn.execute(
            select(func.count()).select_from(schema.resource_version)).scalar_one())


def audit(workbench: Workbench, **filters: Any) -> list[Any]:
    return workbench.security.trail.entries(limit=10_000, **filters)


def place(client: httpx.Client, patient: dict[str, Any], matter: str) -> httpx.Response:
    token = csrf_of(client.get("/retention").text)
    return client.post("/retention/holds", data={"csrf_token": token, "patient": mrn(patient),
                                                 "matter": matter})


def destroy(client: httpx.Client, patient: dict[str, Any], confirm: str | None
            ) -> httpx.Response:
    fields = {"csrf_token": csrf_of(client.get("/retention").text), "method": METHOD}
    if confirm is not None:
        fields["confirm"] = confirm
    return client.post(f"/retention/patients/{patient['id']}/destroy", data=fields)


def test_the_review_lists_old_records_and_a_placed_hold_is_shown(
        workbench: Workbench, tech: httpx.Client) -> None:
    patient = old_patient(workbench)
    page = tech.get("/retention")
    assert page.status_code == 200
    assert f'data-patient="{patient["id"]}"' in page.text and mrn(patient) in page.text
    assert "2001-04-05" in page.text  # ten years after the last encounter
    searched = [e for e in audit(workbench, user_id="tech", action="search")
                if e.details.get("page") == "records retention"]
    assert searched and patient["id"] in (searched[-1].patient_id or "") + str(
        searched[-1].details.get("patients", []))

    placed = place(tech, patient, "Roe v. Chartkeeper General")
    assert placed.status_code == 303 and placed.headers["location"] == "/retention?done=hold-placed"
    page = tech.get("/retention?done=hold-placed")
    assert "The legal hold was placed" in page.text
    holds = page.text[page.text.index('id="holds"'):]
    assert "Roe v. Chartkeeper General" in holds and mrn(patient) in holds
    row = page.text[page.text.index(f'data-patient="{patient["id"]}"'):]
    assert "on hold" in row[:row.index("</tr>")]
    entries = audit(workbench, patient_id=patient["id"], user_id="tech", action="create")
    assert entries[-1].outcome == "success"
    assert entries[-1].details["change"] == "legal hold placed"


def test_destroying_a_held_record_is_refused_and_audited_until_released(
        workbench: Workbench, tech: httpx.Client) -> None:
    patient = old_patient(workbench)
    assert place(tech, patient, "State investigation 2025-17").status_code == 303
    before = versions(workbench)
    refused = destroy(tech, patient, mrn(patient))
    assert refused.status_code == 409 and "legal hold" in refused.text
    assert versions(workbench) == before
    denied = audit(workbench, patient_id=patient["id"], user_id="tech", action="delete")
    assert denied and denied[-1].outcome != "success"

    with workbench.store.read() as txn:
        (hold,) = holds_for(txn, patient["id"])
    token = csrf_of(tech.get("/retention").text)
    released = tech.post(f"/retention/holds/{hold.id}/release", data={"csrf_token": token})
    assert released.status_code == 303
    with workbench.store.read() as txn:
        (hold,) = holds_for(txn, patient["id"])
    assert not hold.active and hold.released_by == "tech"

    done = destroy(tech, patient, mrn(patient))
    assert done.status_code == 303
    certificate = tech.get(done.headers["location"])
    assert certificate.status_code == 200
    assert "CERTIFICATE OF DESTRUCTION" in certificate.text and mrn(patient) in certificate.text
    assert "purge of those versions is not implemented" in certificate.text
    with workbench.store.read() as txn, pytest.raises(Gone):
        txn.read("Patient", patient["id"])
    entries = audit(workbench, patient_id=patient["id"], user_id="tech", action="delete")
    assert entries[-1].outcome == "success"
    assert entries[-1].details["certificate"].startswith("DocumentReference/")
    found = tech.get("/retention", params={"mrn": mrn(patient)})
    assert done.headers["location"] in found.text


def test_destruction_needs_the_typed_mrn_and_a_csrf_token(workbench: Workbench,
                                                          tech: httpx.Client) -> None:
    patient = old_patient(workbench)
    before = versions(workbench)
    missing = destroy(tech, patient, None)
    assert missing.status_code == 400 and "type the patient&#39;s MRN" in missing.text
    assert destroy(tech, patient, "wrong").status_code == 400
    forged = tech.post(f"/retention/patients/{patient['id']}/destroy",
                       data={"method": METHOD, "confirm": mrn(patient)})
    assert forged.status_code == 403 and "CSRF token" in forged.text
    no_token = tech.post("/retention/holds", data={"patient": mrn(patient), "matter": "x"})
    assert no_token.status_code == 403
    assert versions(workbench) == before
    refused = audit(workbench, patient_id=patient["id"], user_id="tech", action="delete")
    assert any(e.details.get("csrf") == "refused" for e in refused)
    with workbench.store.read() as txn:
        assert txn.read("Patient", patient["id"])["id"] == patient["id"]


def test_a_recent_patient_is_not_listed_and_cannot_be_destroyed(workbench: Workbench,
                                                                 tech: httpx.Client) -> None:
    patient = old_patient(workbench, last_visit="2024-06-01")
    assert f'data-patient="{patient["id"]}"' not in tech.get("/retention").text
    before = versions(workbench)
    refused = destroy(tech, patient, mrn(patient))
    assert refused.status_code == 409 and "inside its retention period" in refused.text
    assert versions(workbench) == before


def test_privacy_officers_review_administrators_destroy_others_are_refused(
        workbench: Workbench, accounts: dict[Role, Account]) -> None:
    patient = old_patient(workbench)
    with closing(sign_in_http(workbench.url, accounts[Role.privacy_officer])) as privacy:
        page = privacy.get("/retention")
        assert page.status_code == 200 and f'data-patient="{patient["id"]}"' in page.text
        assert "Destroy the record" not in page.text and 'id="place-hold"' not in page.text
        assert place(privacy, patient, "Roe v. Chartkeeper").status_code == 403
        assert destroy(privacy, patient, mrn(patient)).status_code == 403
    with closing(sign_in_http(workbench.url, workbench.accounts["roi"])) as roi:
        assert roi.get("/retention").status_code == 403
    with closing(sign_in_http(workbench.url, accounts[Role.administrator])) as admin:
        assert "Destroy the record" in admin.get("/retention").text
        done = destroy(admin, patient, mrn(patient))
        assert done.status_code == 303, done.text[:300]
        assert admin.get(done.headers["location"]).status_code == 200
