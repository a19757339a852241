"""The coder's work over the API, on the real app and a real SQLite store of synthetic
patients: the queue oldest discharge first, an encounter's worksheet as JSON, decisions that
store the Claim with the audit entry, the edits that gate them, every malformed body answered
with an OperationOutcome and nothing stored, the reports, and roles without coding refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chartkeeper.api.app import create_app
from chartkeeper.coding.worksheet import claim_id
from chartkeeper.coding.worksheet_queue import queue
from chartkeeper.security.identity import Role
from chartkeeper.security.services import SecurityServices
from chartkeeper.store import Store
from tests.api.conftest import issue_token, make_security, make_settings

from .conftest import Hospital, coding_rows, store_copy

AS_OF = "2026-11-30"
PNEUMONIA_DAY = date(2026, 3, 10)
VIP = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}


@dataclass
class Site:
    client: TestClient
    store: Store
    security: SecurityServices
    tokens: dict[str, str]

    def call(self, method: str, path: str, who: str = "coder", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="module")
def site(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The app over a copy of the hospital: a coder, a HIM technician, a transcriptionist."""
    root = tmp_path_factory.mktemp("worksheet-api")
    store = store_copy(hospital.path, root / "store.sqlite")
    settings = make_settings(Path(root), store.url)
    security = make_security(settings, store)
    tokens = {"coder": issue_token(security, "alice", Role.coder),
              "tech": issue_token(security, "hank", Role.him_technician),
              "typist": issue_token(security, "tess", Role.transcriptionist)}
    with TestClient(create_app(settings, store, security), base_url="http://testserver") as client:
        yield Site(client, store, security, tokens)
    store.dispose()




def stay_decisions(sheet: dict[str, Any]) -> list[dict[str, Any]]:
    """The stay coded as a coder would: pneumonia first, hypertension with CKD as I12.9, the
    fever integral to pneumonia rejected, long-term metformin added, a CPAP session."""
    proposed = [d["code"] for d in sheet["suggestions"]["diagnoses"] if d["proposed"]]
    chosen: list[dict[str, Any]] = [
        {"action": "accept", "code": "J18.9", "poa": "Y"},
        {"action": "edit", "code": "I10", "replacement": "I12.9", "poa": "Y",
         "reason": "hypertension with CKD (I.C.9.a.2)"},
        {"action": "reject", "code": "R50.9", "reason": "integral to pneumonia"}]
    chosen += [{"action": "accept", "code": code, "poa": "Y"} for code in proposed
               if code not in ("J18.9", "I10", "R50.9")]
    return [*chosen, {"action": "add", "code": "Z79.84", "poa": "1"},
            {"action": "add", "code": "5A09357", "system": "icd10pcs",
             "performed": PNEUMONIA_DAY.isoformat()}]


def outcome_of(answer: Any) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


# ------------------------------------------------------------------------------ the queue
def test_the_queue_lists_unbilled_encounters_oldest_discharge_first(
        site: Site, hospital: Hospital) -> None:
    expected = queue(site.store, as_of=date.fromisoformat(AS_OF))
    answer = site.call("GET", "/api/coding/queue", params={"asOf": AS_OF, "count": 500})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["total"] == len(expected) and found["asOf"] == AS_OF
    assert [i["encounter"] for i in found["items"]] == [i.encounter_id for i in expected]
    ages = [i["ageDays"] for i in found["items"]]
    assert ages == sorted(ages, reverse=True) and ages[0] > 1000  # the 2023 visits first
    stay = next(i for i in found["items"] if i["encounter"] == hospital.inpatient)
    assert stay == {"encounter": hospital.inpatient, "patient": stay["patient"],
                    "patientName": expected[[i.encounter_id for i in expected].index(
                        hospital.inpatient)].patient_name, "class": "IMP",
                    "setting": "inpatient", "discharged": "2026-03-15", "ageDays": 260,
                    "restricted": False}
    assert stay["patientName"]  # a real name, from the Patient
    inpatient = site.call("GET", "/api/coding/queue",
                          params={"asOf": AS_OF, "setting": "inpatient"}).json()
    assert {i["setting"] for i in inpatient["items"]} == {"inpatient"}
    assert hospital.inpatient in [i["encounter"] for i in inpatient["items"]]
    page = site.call("GET", "/api/coding/queue",
                     params={"asOf": AS_OF, "count": 10, "offset": 10}).json()
    assert [i["encounter"] for i in page["items"]] == [
        i.encounter_id for i in expected[10:20]]
    [entry] = site.security.trail.entries(user_id="alice", action="search")[-1:]
    assert (entry.outcome, entry.resource_type) == ("success", "Encounter")
    assert entry.details["patientCount"] >= 2  # the patients listed are named in the trail


@pytest.mark.parametrize("params", [
    {"setting": "emergency"}, {"count": "0"}, {"count": "501"}, {"offset": "-1"},
    {"asOf": "30/11/2026"}, {"count": "ten"}])
def test_bad_queue_parameters_get_an_operation_outcome(site: Site,
                                                       params: dict[str, str]) -> None:
    answer = site.call("GET", "/api/coding/queue", params=params)
    assert answer.status_code == 400
    assert outcome_of(answer)["issue"][0]["severity"] == "error"


# -------------------------------------------------------------------------- the worksheet
def test_the_worksheet_shows_the_documents_suggestions_and_evidence(
        site: Site, hospital: Hospital) -> None:
    answer = site.call("GET", f"/api/coding/encounters/{hospital.inpatient}/worksheet")
    assert answer.status_code == 200, answer.text
    sheet = answer.json()
    assert (sheet["setting"], sheet["class"], sheet["release"]) == (
        "inpatient", "IMP", "2026-04-01")
    assert (sheet["start"], sheet["dateOfService"]) == ("2026-03-09", "2026-03-15")
    assert sheet["dischargeStatus"] == "01"  # discharged home
    assert [d["type"] for d in sheet["documents"]] == ["History and physical note",
                                                        "Discharge summary"]
    assert sheet["suggestions"]["principal"] == "J18.9"
    by_code = {d["code"]: d for d in sheet["suggestions"]["diagnoses"]}
    assert by_code["E11.9"]["display"] == "Type 2 diabetes mellitus without complications"
    assert by_code["N18.32"]["proposed"] and not by_code["R05.9"]["proposed"]
    assert "no coder has decided on it yet" in by_code["J18.9"]["explanation"]
    documents = {f"DocumentReference/{d['id']}": d for d in sheet["documents"]}
    for suggestion in sheet["suggestions"]["diagnoses"]:
        for evidence in suggestion["evidence"]:
            assert sheet["text"][evidence["start"]:evidence["end"]] == evidence["text"]
            document = documents[evidence["document"]]
            start = document["start"] + evidence["documentStart"]
            assert sheet["text"][start:start + len(evidence["text"])] == evidence["text"]
    assert sheet["claim"] is None and sheet["recorded"] == []
    [entry] = site.security.trail.entries(user_id="alice", action="read")[-1:]
    assert (entry.resource_type, entry.resource_id, entry.outcome) == (
        "Encounter", hospital.inpatient, "success")
    assert entry.patient_id == sheet["patient"]


def test_an_unknown_encounter_or_one_without_a_code_set_is_refused(
        site: Site, hospital: Hospital) -> None:
    missing = site.call("GET", "/api/coding/encounters/no-such-stay/worksheet")
    assert missing.status_code == 404
    assert "Encounter/no-such-stay is not known" in outcome_of(missing)["issue"][0][
        "diagnostics"]
    odd = site.call("GET", "/api/coding/encounters/" + "x" * 80 + "/worksheet")
    assert odd.status_code == 404
    old = site.call("GET", f"/api/coding/encounters/{hospital.before_fy2026}/worksheet")
    assert old.status_code == 400
    issue = outcome_of(old)["issue"][0]
    assert issue["code"] == "not-supported"
    assert "no ICD-10-CM release is in force on its date of service" in issue["diagnostics"]


# -------------------------------------------------------------------------- the decisions
@pytest.fixture
def fresh(hospital: Hospital, tmp_path: Path) -> Iterator[Site]:
    """A site of its own for a test that stores codes."""
    store = store_copy(hospital.path, tmp_path / "store.sqlite")
    settings = make_settings(tmp_path, store.url)
    security = make_security(settings, store)
    tokens = {"coder": issue_token(security, "alice", Role.coder),
              "bob": issue_token(security, "bob", Role.coder)}
    with TestClient(create_app(settings, store, security), base_url="http://testserver") as client:
        yield Site(client, store, security, tokens)
    store.dispose()


def test_decisions_store_the_claim_with_its_audit_entry(fresh: Site, hospital: Hospital
                                                        ) -> None:
    stay = hospital.inpatient
    sheet = fresh.call("GET", f"/api/coding/encounters/{stay}/worksheet").json()
    decisions = stay_decisions(sheet)
    checked = fresh.call("POST", f"/api/coding/encounters/{stay}/edits",
                         json={"decisions": decisions})
    assert checked.status_code == 200, checked.text
    assert checked.json()["clean"] and checked.json()["errors"] == 0

    answer = fresh.call("POST", f"/api/coding/encounters/{stay}/decisions",
                        json={"decisions": decisions, "reason": "initial coding"})
    assert answer.status_code == 201, answer.text
    done = answer.json()
    finals = [d.get("replacement") or d["code"] for d in decisions
              if d["action"] != "reject" and "system" not in d]
    claim = done["claim"]
    assert claim["id"] == claim_id(stay) and claim["status"] == "draft"
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] \
        == finals
    assert finals[:2] == ["J18.9", "I12.9"]
    assert claim["diagnosis"][0]["type"][0]["coding"][0]["code"] == "principal"
    nubc = [next(c["code"] for c in d["onAdmission"]["coding"]
                 if c["system"].startswith("https://www.nubc.org")) for d in claim["diagnosis"]]
    assert nubc == ["Y"] * (len(finals) - 1) + ["1"]
    assert claim["procedure"][0]["procedureCodeableConcept"]["coding"][0]["code"] == "5A09357"
    assert claim["procedure"][0]["date"] == "2026-03-10"
    finalized = done["finalized"]
    assert finalized["activity"] == "CREATE" and finalized["claim"].endswith("/_history/1")
    with fresh.store.read() as txn:
        stored = txn.read("Claim", claim_id(stay))
        provenance = txn.read("Provenance", finalized["provenance"])
    assert stored["diagnosis"] == claim["diagnosis"]
    assert provenance["reason"][0]["text"] == "initial coding"
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "alice"

    [entry] = [e for e in fresh.security.trail.entries(user_id="alice", limit=1000)
               if e.action == "create"]
    assert (entry.resource_type, entry.resource_id, entry.patient_id) == (
        "Encounter", stay, finalized["patient"])
    assert entry.details["provenance"] == finalized["provenance"]
    assert entry.details["via"] == "token" and entry.details["status"] == 201
    assert entry.details["diagnoses"] == len(finals)
    assert "J18.9" not in str(entry.details)  # references and counts, never a code

    after = fresh.call("GET", "/api/coding/queue", params={"asOf": AS_OF, "count": 500})
    assert stay not in [i["encounter"] for i in after.json()["items"]]
    again = fresh.call("GET", f"/api/coding/encounters/{stay}/worksheet").json()
    assert again["claim"] == {"id": claim["id"], "version": "1", "status": "draft"}

    # Bob re-codes it: the Claim gets a new version, and the answer is 200.
    recoded = fresh.call("POST", f"/api/coding/encounters/{stay}/decisions", who="bob",
                         json={"decisions": [d for d in decisions if d["code"] != "Z79.84"],
                               "reason": "second review"})
    assert recoded.status_code == 200, recoded.text
    assert recoded.json()["finalized"]["activity"] == "UPDATE"
    assert "Z79.84" not in str(recoded.json()["claim"]["diagnosis"])

    report = fresh.call("GET", "/api/coding/reports/productivity",
                        params={"since": "2020-01-01", "until": "2099-12-31"}).json()
    by_coder = {row["coder"]: row for row in report["coders"]}
    assert by_coder["alice"]["encounters"] == by_coder["bob"]["encounters"] == 1
    assert by_coder["alice"]["codes"] == len(finals) + 1  # and the procedure
    accuracy = fresh.call("GET", "/api/coding/reports/accuracy",
                          params={"since": "2020-01-01", "until": "2099-12-31"}).json()
    assert [row["coder"] for row in accuracy["byCoder"]] == ["bob"]  # the current coding
    assert accuracy["overall"]["edited"] == 1 and accuracy["overall"]["rejected"] >= 1
    default = fresh.call("GET", "/api/coding/reports/productivity").json()
    assert (date.fromisoformat(default["until"]) - date.fromisoformat(default["since"])).days \
        == 29
    assert {row["coder"] for row in default["coders"]} == {"alice", "bob"}  # coded today


def test_a_claim_failing_an_edit_is_not_stored(fresh: Site, hospital: Hospital) -> None:
    stay = hospital.inpatient
    sheet = fresh.call("GET", f"/api/coding/encounters/{stay}/worksheet").json()
    # Type 1 and type 2 diabetes together: the Excludes1 note at E11 makes it an error.
    decisions = [*stay_decisions(sheet), {"action": "add", "code": "E10.9", "poa": "Y"}]
    checked = fresh.call("POST", f"/api/coding/encounters/{stay}/edits",
                         json={"decisions": decisions}).json()
    assert not checked["clean"] and checked["errors"] == 1
    [error] = [e for e in checked["edits"] if e["severity"] == "error"]
    assert (error["rule"], error["codes"]) == ("excludes1", ["E11.9", "E10.9"])
    before = coding_rows(fresh.store)
    answer = fresh.call("POST", f"/api/coding/encounters/{stay}/decisions",
                        json={"decisions": decisions, "reason": "initial coding"})
    assert answer.status_code == 422
    issue = outcome_of(answer)["issue"][0]
    assert issue["code"] == "business-rule"
    assert issue["diagnostics"].startswith("excludes1: E11.9 (Type 2 diabetes mellitus")
    assert coding_rows(fresh.store) == before
    # Another discharge status reaches the Medicare Code Editor; a wrong one is refused.
    wrong = fresh.call("POST", f"/api/coding/encounters/{stay}/edits",
                       json={"decisions": stay_decisions(sheet), "dischargeStatus": "99"})
    assert wrong.status_code == 400
    assert "'99' is not a NUBC patient status code" in outcome_of(wrong)["issue"][0][
        "diagnostics"]


def _stay_body(site: Site, hospital: Hospital) -> list[dict[str, Any]]:
    sheet = site.call("GET", f"/api/coding/encounters/{hospital.inpatient}/worksheet").json()
    return stay_decisions(sheet)


@pytest.mark.parametrize(("body", "where", "message"), [
    ([], None, "the body must be a JSON object"),
    ({"reason": "x"}, "decisions", "must be a non-empty list of decisions"),
    ({"decisions": [], "reason": "x"}, "decisions", "must be a non-empty list"),
    ({"decisions": "J18.9", "reason": "x"}, "decisions", "must be a non-empty list"),
    ({"decisions": ["J18.9"], "reason": "x"}, "decisions[0]", "must be an object, got str"),
    ({"decisions": [{"action": "keep", "code": "J18.9"}], "reason": "x"},
     "decisions[0].action", "must be one of accept, reject, edit, add, got 'keep'"),
    ({"decisions": [{"action": "add"}], "reason": "x"}, "decisions[0].code", "is required"),
    ({"decisions": [{"action": "add", "code": 1810}], "reason": "x"}, "decisions[0].code",
     "must be text, got int"),
    ({"decisions": [{"action": "add", "code": "E" * 40}], "reason": "x"},
     "decisions[0].code", "is 40 characters long; at most 16"),
    ({"decisions": [{"action": "add", "code": "99213", "system": "cpt", "units": 0}],
      "reason": "x"}, "decisions[0].units", "must be a whole number from 1 to 9999"),
    ({"decisions": [{"action": "add", "code": "99213", "system": "cpt", "units": True}],
      "reason": "x"}, "decisions[0].units", "must be a whole number"),
    ({"decisions": [{"action": "add", "code": "5A09357", "system": "icd10pcs",
                     "performed": "10/03/2026"}], "reason": "x"},
     "decisions[0].performed", "must be a date as YYYY-MM-DD"),
    ({"decisions": [{"action": "add", "code": "I10", "poa": "X"}], "reason": "x"},
     "decisions[0].poa", "must be one of Y, N, U, W, 1"),
    ({"decisions": [{"action": "add", "code": "I10", "system": "loinc"}], "reason": "x"},
     "decisions[0].system", "must be one of icd10pcs, hcpcs, cpt"),
    ({"decisions": [{"action": "add", "code": "I10", "extra": 1}], "reason": "x"},
     "decisions[0].extra", "is not a field of a decision"),
    ({"decisions": [{"action": "add", "code": "I10"}], "reason": "x", "force": True},
     "force", "is not a field of the body"),
    ({"decisions": [{"action": "add", "code": "I10"}], "reason": "r" * 501},
     "reason", "is 501 characters long; at most 500"),
])
def test_a_malformed_body_gets_an_operation_outcome_and_stores_nothing(
        site: Site, hospital: Hospital, body: Any, where: str | None, message: str) -> None:
    before = coding_rows(site.store)
    answer = site.call("POST", f"/api/coding/encounters/{hospital.inpatient}/decisions",
                       json=body)
    assert answer.status_code == 400
    issues = outcome_of(answer)["issue"]
    assert any(message in i["diagnostics"] for i in issues), issues
    if where is not None:
        assert where in [i.get("expression", [None])[0] for i in issues], issues
    assert coding_rows(site.store) == before


def test_a_body_that_is_not_json_is_refused(site: Site, hospital: Hospital) -> None:
    path = f"/api/coding/encounters/{hospital.inpatient}/decisions"
    before = coding_rows(site.store)
    for content, kind in (("decisions=J18.9", "application/x-www-form-urlencoded"),
                          ('{"decisions": [', "application/json")):
        answer = site.call("POST", path, content=content, headers={"Content-Type": kind})
        assert answer.status_code == 400
        text = outcome_of(answer)["issue"][0]["diagnostics"]
        assert "application/json" in text or "not valid JSON" in text
    big = site.call("POST", path, content=b"{" + b" " * 300_000 + b"}",
                    headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert coding_rows(site.store) == before


@pytest.mark.parametrize(("change", "status", "message"), [
    ("invalid-code", 400, "E11 is not billable in ICD-10-CM 2026-04-01"),
    ("unknown-code", 400, "Z99.999 is not a code of ICD-10-CM 2026-04-01"),
    ("no-poa", 400, "J18.9: an inpatient diagnosis needs its present-on-admission indicator"),
    ("undecided", 400, "no decision on the proposed suggestion(s) N18.32"),
    ("no-reason", 400, "give the reason for the coding"),
])
def test_decisions_the_worksheet_refuses_store_nothing(
        site: Site, hospital: Hospital, change: str, status: int, message: str) -> None:
    decisions = _stay_body(site, hospital)
    reason: str | None = "initial coding"
    if change == "invalid-code":
        decisions.append({"action": "add", "code": "E11", "poa": "Y"})
    elif change == "unknown-code":
        decisions.append({"action": "add", "code": "Z99.999", "poa": "Y"})
    elif change == "no-poa":
        decisions[0] = {"action": "accept", "code": "J18.9"}
    elif change == "undecided":
        decisions = [d for d in decisions if d["code"] != "N18.32"]
    elif change == "no-reason":
        reason = None
    before = coding_rows(site.store)
    answer = site.call("POST", f"/api/coding/encounters/{hospital.inpatient}/decisions",
                       json={"decisions": decisions, "reason": reason})
    assert answer.status_code == status, answer.text
    body = outcome_of(answer)
    assert any(message in i["diagnostics"] for i in body["issue"]), body
    if change in ("invalid-code", "unknown-code"):
        assert body["issue"][0]["code"] == "code-invalid"
        assert body["issue"][0]["expression"] == [f"decisions[{len(decisions) - 1}].code"]
    assert coding_rows(site.store) == before


def test_a_claim_billing_has_taken_is_not_recoded(fresh: Site, hospital: Hospital) -> None:
    stay = hospital.inpatient
    body = {"decisions": _stay_body(fresh, hospital), "reason": "initial coding"}
    assert fresh.call("POST", f"/api/coding/encounters/{stay}/decisions",
                      json=body).status_code == 201
    with fresh.store.write() as txn:
        claim = txn.read("Claim", claim_id(stay))
        claim.pop("meta")
        txn.update("Claim", claim["id"], dict(claim, status="active"))
    before = coding_rows(fresh.store)
    answer = fresh.call("POST", f"/api/coding/encounters/{stay}/decisions", json=body)
    assert answer.status_code == 409
    assert "is active, no longer a draft" in outcome_of(answer)["issue"][0]["diagnostics"]
    assert coding_rows(fresh.store) == before


def test_a_restricted_record_needs_break_the_glass(fresh: Site, hospital: Hospital) -> None:
    """A VIP's visit stays in the queue without the name; its worksheet (the notes) is
    refused until the coder breaks the glass, and the refusal is audited."""
    visit = hospital.outpatient[0]
    with fresh.store.write() as txn:
        encounter = txn.read("Encounter", visit)
        patient_id = encounter["subject"]["reference"].split("/")[1]
        patient = txn.read("Patient", patient_id)
        patient["meta"] = {"security": [VIP]}
        txn.update("Patient", patient_id, patient)
    fresh.security.forget_restricted_patients()
    items = fresh.call("GET", "/api/coding/queue", params={"asOf": AS_OF, "count": 500}
                       ).json()["items"]
    hidden = [i for i in items if i["restricted"]]
    assert visit in [i["encounter"] for i in hidden]
    assert all(i["patient"] is None and i["patientName"] is None for i in hidden)
    assert patient["name"][0]["family"] not in str(hidden)
    path = f"/api/coding/encounters/{visit}/worksheet"
    refused = fresh.call("GET", path)
    assert refused.status_code == 403
    assert "break-the-glass" in outcome_of(refused)["issue"][0]["diagnostics"]
    [entry] = [e for e in fresh.security.trail.entries(user_id="alice", limit=100)
               if e.outcome != "success"]
    assert (entry.patient_id, entry.resource_id) == (patient_id, visit)
    glass = fresh.call("POST", "/security/break-the-glass", json={
        "patient": patient_id, "reason": "coding the visit", "minutes": 15})
    assert glass.status_code == 201, glass.text
    assert fresh.call("GET", path).status_code == 200


# ------------------------------------------------------------------------------- reports
@pytest.mark.parametrize("params", [
    {"since": "2026-13-01"}, {"until": "yesterday"},
    {"since": "2026-06-01", "until": "2026-05-01"}])
def test_a_bad_report_period_is_refused(site: Site, params: dict[str, str]) -> None:
    for report in ("productivity", "accuracy"):
        answer = site.call("GET", f"/api/coding/reports/{report}", params=params)
        assert answer.status_code == 400
        assert outcome_of(answer)["issue"][0]["code"] == "invalid"


# -------------------------------------------------------------------------------- access
def test_roles_without_the_coding_capability_are_refused_and_audited(
        site: Site, hospital: Hospital) -> None:
    stay = hospital.inpatient
    before = coding_rows(site.store)
    body = {"decisions": [{"action": "accept", "code": "J18.9", "poa": "Y"}], "reason": "x"}
    for method, path, kw in [
            ("GET", "/api/coding/queue", {}),
            ("GET", f"/api/coding/encounters/{stay}/worksheet", {}),
            ("POST", f"/api/coding/encounters/{stay}/edits", {"json": body}),
            ("POST", f"/api/coding/encounters/{stay}/decisions", {"json": body}),
            ("GET", "/api/coding/reports/productivity", {}),
            ("GET", "/api/coding/reports/accuracy", {})]:
        answer = site.call(method, path, who="typist", **kw)
        assert answer.status_code == 403, (path, answer.text)
        issue = outcome_of(answer)["issue"][0]
        assert issue["code"] == "forbidden"
        assert "does not have the coding capability" in issue["diagnostics"]
        assert "J18.9" not in answer.text
    assert coding_rows(site.store) == before
    denied = [e for e in site.security.trail.entries(user_id="tess", limit=100)
              if e.outcome != "success"]
    assert len(denied) == 6
    # A HIM technician codes as well.
    tech = site.call("GET", f"/api/coding/encounters/{stay}/worksheet", who="tech")
    assert tech.status_code == 200
    anonymous = site.client.get(f"/api/coding/encounters/{stay}/worksheet")
    assert anonymous.status_code == 401
