"""The coder's worksheet on a real SQLite store of synthetic patients: the encounter's text,
suggestions, decisions checked against the code sets, the final codes stored as FHIR with
Provenance, audit and feedback, refusals that store nothing, and the work queue."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chartkeeper.coding import codesets, feedback
from chartkeeper.coding.cac import PROPOSE_AT
from chartkeeper.coding.icd10cm import Tabular
from chartkeeper.coding.worksheet import (
    ICD10CM,
    PROCEDURE_SYSTEMS,
    AlreadyBilled,
    Coder,
    CodingError,
    Decision,
    DecisionError,
    InvalidCode,
    NoCodeSet,
    NotCodable,
    claim_id,
)
from chartkeeper.coding.worksheet_queue import queue
from chartkeeper.coding.worksheet_text import SEPARATOR, encounter_text
from chartkeeper.coding.worksheet_view import Worksheet, worksheet
from chartkeeper.coding.worksheet_write import decide
from chartkeeper.security.audit import AuditKey, AuditTrail, create_audit_schema
from chartkeeper.store import Store
from chartkeeper.store.errors import Gone
from chartkeeper.store.service import provenance_of

from .conftest import FY2025_CM, HCPCS_2020, Hospital, coding_rows, store_copy

ALICE = Coder("alice", "coder")
BOB = Coder("bob", "coder")


@pytest.fixture
def store(hospital: Hospital, tmp_path: Path) -> Iterator[Store]:
    """A fresh copy of the hospital (ICD-10-CM and ICD-10-PCS FY2026) for one test."""
    copy = store_copy(hospital.path, tmp_path / "store.sqlite")
    yield copy
    copy.dispose()


@pytest.fixture
def store_without_pcs(hospital: Hospital, tmp_path: Path) -> Iterator[Store]:
    copy = store_copy(hospital.without_pcs, tmp_path / "cm-only.sqlite")
    yield copy
    copy.dispose()


@pytest.fixture(scope="module")
def table(hospital: Hospital) -> Tabular:
    """The packaged ICD-10-CM release, for the titles the tests expect."""
    copy = Store(f"sqlite:///{hospital.without_pcs}")
    try:
        release = codesets.release_for(copy.engine, "icd10cm", date(2026, 3, 1))
        parsed: Tabular = codesets.model(copy.engine, release)
        return parsed
    finally:
        copy.dispose()


def counts(store: Store) -> dict[str, int]:
    """Every row the store and the coding slice hold: a refusal must leave them as they were."""
    found = coding_rows(store)
    with store.engine.connect() as conn:
        found["codeset_release"] = int(conn.execute(
            select(func.count()).select_from(codesets.codeset_release)).scalar_one())
    return found


def read(store: Store, reference: str) -> dict[str, Any]:
    resource_type, resource_id = reference.split("/")[:2]
    with store.read() as txn:
        return txn.read(resource_type, resource_id)


def decisions_for(sheet: Worksheet, *, poa: str | None = None, **special: Decision
                  ) -> list[Decision]:
    """Accept every proposed suggestion except those given a decision of their own, which
    take the suggestion's place in the sequence."""
    chosen = []
    for suggestion in sheet.suggestions.diagnoses:
        if suggestion.code in special:
            chosen.append(special[suggestion.code])
        elif suggestion.proposed:
            chosen.append(Decision.accept(suggestion.code, poa=poa))
    return chosen


def inpatient_decisions(sheet: Worksheet) -> list[Decision]:
    """The stay coded the way a coder would: pneumonia first, hypertension with CKD as I12.9,
    the fever integral to pneumonia rejected, long-term metformin added, a CPAP session."""
    proposed = [s.code for s in sheet.suggestions.diagnoses if s.proposed]
    assert {"J18.9", "I10", "N18.32", "E11.9"} <= set(proposed)
    assert "R50.9" in {s.code for s in sheet.suggestions.diagnoses}
    chosen = [Decision.accept("J18.9", poa="Y"),
              Decision.edit("I10", "I12.9", reason="hypertension with CKD (I.C.9.a.2)",
                            poa="Y"),
              Decision.reject("R50.9", reason="integral to pneumonia")]
    chosen += [Decision.accept(code, poa="Y") for code in proposed
               if code not in ("J18.9", "I10", "R50.9")]
    chosen += [Decision.add("Z79.84", poa="1"),
               Decision.add("5A09357", system="icd10pcs", performed=date(2026, 3, 10))]
    return chosen


# --------------------------------------------------------------------- the encounter's text
def test_encounter_text_joins_the_stays_documents_in_date_order(store: Store,
                                                                hospital: Hospital) -> None:
    with store.read() as txn:
        found = encounter_text(txn, hospital.inpatient)
        references = {d["id"]: d for d in txn.search_params("DocumentReference", [
            ("encounter", f"Encounter/{hospital.inpatient}")]).matches}
        patient = txn.read("Patient", found.patient_id)
    assert found.setting == "inpatient" and found.encounter_class == "IMP"
    assert [d.type for d in found.documents] == ["History and physical note",
                                                  "Discharge summary"]
    assert found.date_of_service == date(2026, 3, 15)  # period.end: the discharge
    assert found.start == date(2026, 3, 9)
    assert patient["birthDate"] == "1938-01-02" and found.age == 88
    first, second = found.documents
    assert found.text[first.end:second.start] == SEPARATOR
    for document in found.documents:
        attachment = references[document.id]["content"][0]["attachment"]
        assert found.text[document.start:document.end] == \
            base64.b64decode(attachment["data"]).decode("utf-8")
    offset = found.text.index("DISCHARGE DIAGNOSES:")
    assert found.locate(offset) == (second, offset - second.start)
    with pytest.raises(CodingError, match="in no document"):
        found.locate(first.end + 1)


def test_encounter_text_of_an_office_visit_is_outpatient_on_its_day(store: Store,
                                                                    hospital: Hospital) -> None:
    with store.read() as txn:
        found = encounter_text(txn, hospital.outpatient[0])
        encounter = txn.read("Encounter", hospital.outpatient[0])
    assert found.setting == "outpatient" and found.encounter_class == "AMB"
    assert found.date_of_service.isoformat() == encounter["period"]["end"][:10]
    assert len(found.documents) == 1 and found.documents[0].start == 0
    assert found.text.startswith("PROGRESS NOTE")


def test_encounter_text_reads_current_text_only_and_says_what_it_skipped(
        store: Store, hospital: Hospital) -> None:
    encounter_id = hospital.outpatient[1]
    with store.read() as txn:
        before = encounter_text(txn, encounter_id)

    def document(status: str, attachment: dict[str, Any], day: str) -> dict[str, Any]:
        return {"resourceType": "DocumentReference", "status": status,
                "subject": {"reference": f"Patient/{before.patient_id}"}, "date": day,
                "content": [{"attachment": attachment}],
                "context": {"encounter": [{"reference": f"Encounter/{encounter_id}"}]}}

    addendum = "ADDENDUM: follow-up arranged."
    with store.write() as txn:
        pdf = txn.create(document("current", {"contentType": "application/pdf",
                                               "data": base64.b64encode(b"%PDF-1.4").decode()},
                                  "2030-01-01T00:00:00Z")).resource_id
        broken = txn.create(document("current", {"contentType": "text/plain",
                                                  "data": base64.b64encode(b"\xff\xfe\xfa")
                                                  .decode()},
                                     "2030-01-02T00:00:00Z")).resource_id
        txn.create(document("superseded", {"contentType": "text/plain", "data": base64
                                            .b64encode(b"an old version").decode()},
                            "2030-01-03T00:00:00Z"))
        txn.create(document("current", {"contentType": "text/plain; charset=utf-8",
                                         "data": base64.b64encode(addendum.encode()).decode()},
                            "2030-01-04T00:00:00Z"))
    with store.read() as txn:
        after = encounter_text(txn, encounter_id)
    assert after.text == before.text + SEPARATOR + addendum  # the addendum is newer: last
    assert "an old version" not in after.text
    assert len(after.skipped) == 2
    assert f"DocumentReference/{pdf}" in after.skipped[0]
    assert "application/pdf: only text/plain is read" in after.skipped[0]
    assert f"DocumentReference/{broken}" in after.skipped[1]
    assert "not base64 utf-8 text" in after.skipped[1]


# ---------------------------------------------------------------------------- the worksheet
def test_worksheet_suggests_codes_with_evidence_in_the_documents(
        store: Store, hospital: Hospital, table: Tabular) -> None:
    sheet = worksheet(store, hospital.inpatient)
    assert sheet.release == "2026-04-01"
    assert sheet.suggestions.principal == "J18.9"
    by_code = {s.code: s for s in sheet.suggestions.diagnoses}
    assert by_code["E11.9"].display == table.title("E11.9") == \
        "Type 2 diabetes mellitus without complications"
    assert by_code["N18.32"].proposed and not by_code["R05.9"].proposed
    text = sheet.documents.text
    for suggestion in sheet.suggestions.diagnoses:
        for evidence in suggestion.evidence:
            assert text[evidence.start:evidence.end] == evidence.text
    as_json = sheet.to_json()
    summary = sheet.documents.documents[1]
    pneumonia = next(s for s in as_json["suggestions"]["diagnoses"] if s["code"] == "J18.9")
    best = pneumonia["evidence"][0]
    assert best["document"] == f"DocumentReference/{summary.id}"
    assert best["section"] == "diagnoses"
    assert text[summary.start + best["documentStart"]:summary.start + best["documentEnd"]] \
        == best["text"]
    assert "no coder has decided on it yet" in pneumonia["explanation"]
    assert sheet.recorded == [] and sheet.claim is None


# ------------------------------------------------------------------------------ finalizing
def test_finalizing_a_stay_stores_conditions_diagnoses_procedures_claim_and_provenance(
        store: Store, hospital: Hospital, table: Tabular, tmp_path: Path) -> None:
    create_audit_schema(store.engine)
    trail = AuditTrail(store.engine, AuditKey(tmp_path / "audit.key"))
    sheet = worksheet(store, hospital.inpatient)
    assert next(s for s in sheet.suggestions.diagnoses if s.code == "R50.9").proposed
    chosen = inpatient_decisions(sheet)
    done = decide(store, hospital.inpatient, chosen, ALICE, reason="initial coding",
                  audit=trail, via="test")
    assert done.activity == "CREATE" and done.flags == [] and done.warnings == []
    finals = [str(d.final_code) for d in chosen if d.system is None and d.action != "reject"]
    assert finals[:2] == ["J18.9", "I12.9"] and "Z79.84" in finals

    conditions = [read(store, ref) for ref in done.conditions]
    assert [c["code"]["coding"][0]["code"] for c in conditions] == finals
    for condition, code in zip(conditions, finals, strict=True):
        assert condition["code"]["coding"][0] == {"system": ICD10CM, "code": code,
                                                  "display": table.title(code)}
        assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
        assert condition["subject"] == {"reference": f"Patient/{done.patient_id}"}
        assert condition["encounter"] == {"reference": f"Encounter/{hospital.inpatient}"}

    encounter = read(store, done.encounter)
    billing = [d for d in encounter["diagnosis"] if d["use"]["coding"][0]["code"] == "billing"]
    assert [d["rank"] for d in billing] == list(range(1, len(finals) + 1))
    assert billing[0]["condition"]["reference"] == f"Condition/{conditions[0]['id']}"
    assert billing[0]["use"]["coding"][0]["system"] == \
        "http://terminology.hl7.org/CodeSystem/diagnosis-role"

    [procedure_ref] = done.procedures
    procedure = read(store, procedure_ref)
    assert procedure["status"] == "completed"
    assert procedure["performedDateTime"] == "2026-03-10"
    assert procedure["code"]["coding"][0] == {
        "system": "http://www.cms.gov/Medicare/Coding/ICD10", "code": "5A09357",
        "display": "Assistance of Respiratory Ventilation, Less than 24 Consecutive Hours, "
                   "Continuous Positive Airway Pressure"}

    claim = read(store, done.claim)
    assert claim["id"] == claim_id(hospital.inpatient)
    assert (claim["status"], claim["use"]) == ("draft", "claim")
    assert claim["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/claim-type",
        "code": "institutional", "display": "Institutional"}
    assert claim["patient"] == {"reference": f"Patient/{done.patient_id}"}
    assert claim["provider"] == encounter["serviceProvider"]
    assert claim["priority"]["coding"][0]["code"] == "normal"
    with store.read() as txn:
        [coverage] = txn.search_params("Coverage", [
            ("beneficiary", f"Patient/{done.patient_id}")]).matches
    assert claim["insurance"] == [{"sequence": 1, "focal": True,
                                   "coverage": {"reference": f"Coverage/{coverage['id']}"}}]
    assert [d["sequence"] for d in claim["diagnosis"]] == list(range(1, len(finals) + 1))
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] \
        == finals
    first, metformin = claim["diagnosis"][0], claim["diagnosis"][finals.index("Z79.84")]
    assert first["type"][0]["coding"][0]["code"] == "principal"
    assert first["onAdmission"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission",
         "code": "y", "display": "Yes"},
        {"system": "https://www.nubc.org/CodeSystem/PresentOnAdmissionIndicators",
         "code": "Y", "display": "Yes"}]
    assert metformin["onAdmission"]["coding"] == [
        {"system": "https://www.nubc.org/CodeSystem/PresentOnAdmissionIndicators",
         "code": "1", "display": "Exempt from POA reporting"}]
    assert claim["procedure"] == [{
        "sequence": 1, "type": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/ex-procedure-type",
            "code": "primary", "display": "Primary procedure"}]}],
        "date": "2026-03-10", "procedureCodeableConcept": procedure["code"]}]
    assert "item" not in claim

    provenance = read(store, f"Provenance/{done.provenance_id}")
    assert {t["reference"] for t in provenance["target"]} == set(done.targets)
    assert set(done.targets) == {*done.conditions, *done.procedures, done.encounter,
                                 done.claim}
    assert provenance["activity"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE",
        "display": "create"}
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "alice"
    assert provenance["reason"][0]["text"] == "initial coding"
    assert {e["what"]["reference"] for e in provenance["entity"]} == {
        f"DocumentReference/{d.id}/_history/{d.version}" for d in sheet.documents.documents}
    with store.read() as txn:
        assert provenance_of(txn, [("Claim", claim["id"])])[("Claim", claim["id"])][0][
            "id"] == done.provenance_id

    [entry] = trail.entries(patient_id=done.patient_id)
    assert (entry.user_id, entry.action, entry.resource_type, entry.resource_id) == \
        ("alice", "create", "Encounter", hospital.inpatient)
    assert entry.details["provenance"] == done.provenance_id
    assert entry.details["diagnoses"] == len(finals) and entry.details["via"] == "test"
    assert not any(code in str(entry.details) for code in finals)  # no PHI in the trail

    with store.engine.connect() as conn:
        rows = feedback.decisions_for(conn, hospital.inpatient)
    outcome = {(r.suggested_code, r.final_code): r for r in rows}
    assert outcome[("I10", "I12.9")].outcome == "edited"
    assert outcome[("I10", "I12.9")].reason == "hypertension with CKD (I.C.9.a.2)"
    assert outcome[("R50.9", None)].outcome == "rejected" and outcome[("R50.9", None)].explicit
    assert outcome[("R05.9", None)].outcome == "rejected"
    assert not outcome[("R05.9", None)].explicit  # offered, left alone
    assert outcome[("J18.9", "J18.9")].section == "diagnoses"
    assert outcome[("J18.9", "J18.9")].confidence == pytest.approx(
        next(s.confidence for s in sheet.engine_suggestions.diagnoses if s.code == "J18.9"))
    assert {(r.outcome, r.final_code, r.kind) for r in rows if r.suggested_code is None} == {
        ("added", "Z79.84", "diagnosis"), ("added", "5A09357", "procedure")}
    assert {r.provenance_id for r in rows} == {done.provenance_id}
    assert len(rows) == len(sheet.suggestions.diagnoses) + 2


def test_refinalizing_replaces_the_codes_instead_of_adding_to_them(
        store: Store, hospital: Hospital) -> None:
    first = decide(store, hospital.inpatient, inpatient_decisions(worksheet(store,
                                                                            hospital.inpatient)),
                   ALICE)
    code_of = {ref: read(store, ref)["code"]["coding"][0]["code"] for ref in first.conditions}
    sheet = worksheet(store, hospital.inpatient)
    assert sheet.claim is not None and sheet.claim["status"] == "draft"
    assert {r.provenance_id for r in sheet.recorded} == {first.provenance_id}
    # Bob drops the added metformin code and the procedure, and accepts the fever.
    chosen = [d for d in inpatient_decisions(sheet) if d.code not in ("Z79.84", "5A09357")]
    chosen = [Decision.accept("R50.9", poa="Y") if d.code == "R50.9" else d for d in chosen]
    second = decide(store, hospital.inpatient, chosen, BOB, reason="second review")
    assert second.activity == "UPDATE"
    assert second.claim == f"Claim/{claim_id(hospital.inpatient)}/_history/2"
    metformin = next(ref for ref, code in code_of.items() if code == "Z79.84")
    removed_ids = {ref.split("/")[1] for ref in second.removed}
    assert removed_ids == {metformin.split("/")[1], first.procedures[0].split("/")[1]}
    with store.read() as txn:
        with pytest.raises(Gone):
            txn.read("Condition", metformin.split("/")[1])
        current = txn.search_params("Condition", [
            ("encounter", f"Encounter/{hospital.inpatient}")]).matches
        claims = txn.search_params("Claim", [("patient", f"Patient/{first.patient_id}")]).matches
        encounter = txn.read("Encounter", hospital.inpatient)
    codes = [c["code"]["coding"][0]["code"] for c in current]
    assert sorted(codes) == sorted(str(d.final_code) for d in chosen if d.action != "reject")
    assert len(codes) == len(set(codes))
    assert len(claims) == 1 and claims[0]["meta"]["versionId"] == "2"
    billing = [d for d in encounter["diagnosis"] if d["use"]["coding"][0]["code"] == "billing"]
    assert len(billing) == len(codes)
    assert "procedure" not in claims[0]
    # Unchanged Conditions keep their version; the Provenance still names them.
    assert set(first.conditions) - {metformin} <= set(second.conditions)
    provenance = read(store, f"Provenance/{second.provenance_id}")
    assert provenance["activity"]["coding"][0]["code"] == "UPDATE"
    assert {t["reference"] for t in provenance["target"]} >= set(second.removed)
    with store.engine.connect() as conn:
        everything = feedback.decisions_for(conn, hospital.inpatient, current_only=False)
    assert {r.provenance_id for r in everything if r.current} == {second.provenance_id}
    assert {r.provenance_id for r in everything if not r.current} == {first.provenance_id}


def test_finalizing_an_office_visit_stores_a_professional_claim_with_service_lines(
        store: Store, hospital: Hospital) -> None:
    encounter_id = hospital.outpatient[0]
    sheet = worksheet(store, encounter_id)
    chosen = decisions_for(sheet) + [Decision.add("99213", system="cpt"),
                                     Decision.add("G0008", system="hcpcs", units=1)]
    done = decide(store, encounter_id, chosen, ALICE)
    assert any("CPT codes were checked for their form only" in w for w in done.warnings)
    assert any("HCPCS Level II codes were checked for their form only" in w
               for w in done.warnings)
    claim = read(store, done.claim)
    assert claim["type"]["coding"][0]["code"] == "professional"
    assert all("onAdmission" not in d and "type" not in d for d in claim["diagnosis"])
    assert "procedure" not in claim
    day = sheet.documents.date_of_service.isoformat()
    diagnoses = list(range(1, min(4, len(claim["diagnosis"])) + 1))
    assert claim["item"] == [
        {"sequence": 1, "diagnosisSequence": diagnoses,
         "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                          "code": "99213"}]},
         "servicedDate": day, "quantity": {"value": 1},
         "encounter": [{"reference": f"Encounter/{encounter_id}"}]},
        {"sequence": 2, "diagnosisSequence": diagnoses,
         "productOrService": {"coding": [{"system": PROCEDURE_SYSTEMS["hcpcs"],
                                          "code": "G0008"}]},
         "servicedDate": day, "quantity": {"value": 1},
         "encounter": [{"reference": f"Encounter/{encounter_id}"}]}]
    procedures = [read(store, ref) for ref in done.procedures]
    assert [p["code"]["coding"][0]["system"] for p in procedures] == [
        "http://www.ama-assn.org/go/cpt", "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"]
    assert all(p["performedDateTime"] == day for p in procedures)


def test_coders_rejections_lower_a_code_on_the_next_worksheets(store: Store,
                                                               hospital: Hospital) -> None:
    """Coders reject the engine's hypertension code on office visits: on the next visit's
    worksheet it falls below the proposal threshold; accepted codes keep theirs."""
    with_i10 = []  # visits where I10 is proposed beside another code (which is kept)
    for encounter_id in hospital.outpatient:
        proposed = {s.code for s in worksheet(store, encounter_id).engine_suggestions.diagnoses
                    if s.proposed}
        if "I10" in proposed and len(proposed) > 1:
            with_i10.append(encounter_id)
    assert len(with_i10) >= 4
    *coded, last = with_i10[:4]
    before = worksheet(store, last)
    engine_i10 = next(s for s in before.engine_suggestions.diagnoses if s.code == "I10")
    scores = [next(s for s in before.suggestions.diagnoses if s.code == "I10").confidence]
    for encounter_id in coded:
        sheet = worksheet(store, encounter_id)
        decide(store, encounter_id, decisions_for(sheet, I10=Decision.reject(
            "I10", reason="elevated reading, no diagnosis of hypertension")), ALICE)
        scores.append(next(s for s in worksheet(store, last).suggestions.diagnoses
                           if s.code == "I10").confidence)
    assert scores[0] == pytest.approx(engine_i10.confidence, abs=1e-6)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    after = worksheet(store, last)
    i10 = next(s for s in after.suggestions.diagnoses if s.code == "I10")
    assert i10.confidence < PROPOSE_AT and not i10.proposed
    assert after.suggestions.diagnoses[-1].code == "I10" or \
        after.suggestions.diagnoses.index(i10) > before.suggestions.diagnoses.index(
            next(s for s in before.suggestions.diagnoses if s.code == "I10"))
    assert "dropping it" in after.explanations["I10"]
    # The engine itself is unchanged: only the worksheet's ranking learned.
    assert next(s for s in after.engine_suggestions.diagnoses
                if s.code == "I10").confidence == engine_i10.confidence


# ------------------------------------------------------------------------------- refusals
def _fy2025_billable(code: str) -> bool:
    with gzip.open(FY2025_CM, "rt", encoding="utf-8") as rows:
        return any(line.split("\t")[2] == code and line.split("\t")[3] == "1"
                   for line in rows)


@pytest.mark.parametrize(("code", "message"), [
    ("E11", "E11 is not billable in ICD-10-CM 2026-04-01"),
    ("Z99.999", "Z99.999 is not a code of ICD-10-CM 2026-04-01"),
    ("G35", "G35 is not billable in ICD-10-CM 2026-04-01"),  # FY2025 code, split in FY2026
    ("S30.1XXA", "S30.1XXA is not a code of ICD-10-CM 2026-04-01"),  # deleted for FY2026
])
def test_an_invalid_diagnosis_code_is_refused_and_nothing_is_stored(
        store: Store, hospital: Hospital, code: str, message: str) -> None:
    if code in ("G35", "S30.1XXA"):
        assert _fy2025_billable(code)  # valid the year before: the wrong fiscal year's code
    encounter_id = hospital.outpatient[2]
    chosen = decisions_for(worksheet(store, encounter_id)) + [Decision.add(code)]
    before = counts(store)
    with pytest.raises(InvalidCode, match=message) as caught:
        decide(store, encounter_id, chosen, ALICE)
    assert "the date of service being 20" in str(caught.value)
    assert caught.value.issues[0].code == "code-invalid"
    assert caught.value.issues[0].expression == f"decisions[{len(chosen) - 1}].code"
    assert counts(store) == before


def test_every_invalid_code_is_reported_at_once(store: Store, hospital: Hospital) -> None:
    chosen = [*inpatient_decisions(worksheet(store, hospital.inpatient)),
              Decision.add("E11", poa="Y"),
              Decision.add("0BH17EX", system="icd10pcs", performed=date(2026, 3, 11))]
    before = counts(store)
    with pytest.raises(InvalidCode) as caught:
        decide(store, hospital.inpatient, chosen, ALICE)
    assert [i.diagnostics.split(" ")[0] for i in caught.value.issues] == ["E11", "0BH17EX"]
    assert "0BH17EX is not a valid code of ICD-10-PCS 2026" in str(caught.value)
    assert counts(store) == before


def test_a_date_of_service_with_no_release_is_refused_naming_the_date(
        store: Store, hospital: Hospital) -> None:
    with store.read() as txn:
        day = encounter_text(txn, hospital.before_fy2026).date_of_service
    fiscal_year = day.year + 1 if day.month >= 10 else day.year
    before = counts(store)
    for attempt in (lambda: worksheet(store, hospital.before_fy2026),
                    lambda: decide(store, hospital.before_fy2026, [Decision.add("I10")], ALICE)):
        with pytest.raises(NoCodeSet) as caught:
            attempt()
        message = str(caught.value)
        assert f"date of service {day.isoformat()}" in message
        assert f"--system icd10cm --fiscal-year {fiscal_year}" in message
        assert "2026-04-01 (2025-10-01..2026-09-30)" in message  # what is imported
    assert counts(store) == before


def test_pcs_codes_are_refused_without_a_pcs_release(store_without_pcs: Store,
                                                     hospital: Hospital) -> None:
    store = store_without_pcs
    assert codesets.releases(store.engine, "icd10pcs") == []
    chosen = inpatient_decisions(worksheet(store, hospital.inpatient))
    before = counts(store)
    with pytest.raises(NoCodeSet, match="no ICD-10-PCS release is imported") as caught:
        decide(store, hospital.inpatient, chosen, ALICE)
    assert "--system icd10pcs --fiscal-year 2026" in str(caught.value)
    assert counts(store) == before
    # Without the procedure the stay is coded.
    done = decide(store, hospital.inpatient, [d for d in chosen if d.system is None], ALICE)
    assert done.procedures == []


def test_hcpcs_codes_are_refused_when_no_imported_release_covers_the_date(
        store_without_pcs: Store, hospital: Hospital) -> None:
    store = store_without_pcs
    codesets.import_release(store.engine, HCPCS_2020.read_bytes(), system="hcpcs",
                            source=HCPCS_2020.name, effective_from=date(2020, 1, 1),
                            effective_to=date(2020, 12, 31))
    encounter_id = hospital.outpatient[3]
    chosen = decisions_for(worksheet(store, encounter_id)) + [
        Decision.add("G0008", system="hcpcs")]
    before = counts(store)
    with pytest.raises(NoCodeSet, match="HCPCS Level II: no hcpcs release is in force on 20"):
        decide(store, encounter_id, chosen, ALICE)
    assert counts(store) == before


@pytest.mark.parametrize(("change", "message"), [
    ("no-poa", "J18.9: an inpatient diagnosis needs its present-on-admission indicator"),
    ("undecided", "no decision on the proposed suggestion(s) N18.32"),
    ("unknown", "accept A00.0: not among the suggestions; add it instead"),
    ("edit-no-reason", "edit I10: say why the code changes"),
    ("twice", "J18.9 is decided twice"),
    ("external-first", "W19.XXXA cannot be the principal diagnosis"),
    ("cpt-inpatient", "procedures of an inpatient stay are coded in ICD-10-PCS, not CPT"),
    ("no-date", "5A09357: an ICD-10-PCS procedure needs the date performed"),
    ("bad-poa", "an inpatient diagnosis needs its present-on-admission indicator, one of Y, N"),
    ("performed-after", "5A09357: performed on 2026-03-16, outside the encounter "
                        "(2026-03-09..2026-03-15)"),
])
def test_decisions_that_do_not_make_a_coded_stay_are_refused(
        store: Store, hospital: Hospital, change: str, message: str) -> None:
    chosen = inpatient_decisions(worksheet(store, hospital.inpatient))
    if change == "no-poa":
        chosen[0] = Decision.accept("J18.9")
    elif change == "undecided":
        chosen = [d for d in chosen if d.code != "N18.32"]
    elif change == "unknown":
        chosen.append(Decision.accept("A00.0", poa="Y"))
    elif change == "edit-no-reason":
        chosen[1] = Decision("edit", "I10", replacement="I12.9", poa="Y")
    elif change == "twice":
        chosen.append(Decision.reject("J18.9"))
    elif change == "external-first":
        chosen.insert(0, Decision.add("W19.XXXA", poa="Y"))
    elif change == "cpt-inpatient":
        chosen.append(Decision.add("99223", system="cpt", performed=date(2026, 3, 9)))
    elif change == "no-date":
        chosen[-1] = Decision.add("5A09357", system="icd10pcs")
    elif change == "bad-poa":
        chosen[0] = Decision.accept("J18.9", poa="X")
    elif change == "performed-after":
        chosen[-1] = Decision.add("5A09357", system="icd10pcs", performed=date(2026, 3, 16))
    before = counts(store)
    with pytest.raises(DecisionError) as caught:
        decide(store, hospital.inpatient, chosen, ALICE)
    assert message in str(caught.value)
    assert len(caught.value.issues) == 1  # the one problem, not others it would cause
    assert counts(store) == before


def test_present_on_admission_is_refused_for_an_office_visit(store: Store,
                                                             hospital: Hospital) -> None:
    encounter_id = hospital.outpatient[4]
    chosen = decisions_for(worksheet(store, encounter_id), poa="Y")
    with pytest.raises(DecisionError, match="present on admission is reported for inpatient"):
        decide(store, encounter_id, chosen, ALICE)
    with pytest.raises(DecisionError, match="outpatient procedures are coded in HCPCS or CPT"):
        decide(store, encounter_id, decisions_for(worksheet(store, encounter_id)) + [
            Decision.add("5A09357", system="icd10pcs", performed=date(2026, 1, 1))], ALICE)


def test_a_claim_billing_has_taken_is_not_recoded(store: Store, hospital: Hospital) -> None:
    encounter_id = hospital.outpatient[5]
    chosen = decisions_for(worksheet(store, encounter_id))
    done = decide(store, encounter_id, chosen, ALICE)
    claim = read(store, done.claim)
    claim.pop("meta")
    with store.write() as txn:
        txn.update("Claim", claim["id"], dict(claim, status="active"))
    before = counts(store)
    with pytest.raises(AlreadyBilled, match="is active, no longer a draft"):
        decide(store, encounter_id, chosen, ALICE)
    assert counts(store) == before


def test_an_encounter_that_has_not_ended_is_not_coded(store: Store,
                                                      hospital: Hospital) -> None:
    encounter_id = hospital.outpatient[6]
    encounter = read(store, f"Encounter/{encounter_id}")
    encounter.pop("meta")
    with store.write() as txn:
        txn.update("Encounter", encounter_id, dict(encounter, status="in-progress"))
    before = counts(store)
    with pytest.raises(NotCodable, match="is in-progress: final codes are assigned once"):
        decide(store, encounter_id, [Decision.add("I10")], ALICE)
    assert counts(store) == before


def test_a_claim_without_coverage_or_provider_is_stored_flagged(store: Store,
                                                                hospital: Hospital) -> None:
    encounter_id = hospital.outpatient[7]
    encounter = read(store, f"Encounter/{encounter_id}")
    encounter.pop("meta")
    encounter.pop("serviceProvider")
    with store.write() as txn:
        txn.update("Encounter", encounter_id, encounter)
        for coverage in txn.search_params("Coverage", [
                ("beneficiary", encounter["subject"]["reference"])]).matches:
            coverage.pop("meta")
            txn.update("Coverage", coverage["id"], dict(coverage, status="cancelled"))
    done = decide(store, encounter_id, decisions_for(worksheet(store, encounter_id)), ALICE)
    assert done.flags == ["no-provider", "no-coverage"]
    assert any("billing will refuse it" in w for w in done.warnings)
    claim = read(store, done.claim)
    assert claim["status"] == "draft"
    assert {t["code"] for t in claim["meta"]["tag"]} == {"coded", "no-provider", "no-coverage"}
    assert claim["provider"] == {"type": "Organization",
                                 "display": "Service provider not recorded on the encounter"}
    assert claim["insurance"][0]["coverage"] == {
        "type": "Coverage", "display": "No active coverage on the date of service"}


def test_the_audit_entry_and_the_codes_land_together_or_not_at_all(
        store: Store, hospital: Hospital, tmp_path: Path) -> None:
    create_audit_schema(store.engine)
    trail = AuditTrail(store.engine, AuditKey(tmp_path / "audit.key"))
    encounter_id = hospital.outpatient[0]
    chosen = decisions_for(worksheet(store, encounter_id))
    before = counts(store)

    def refuse(_txn: Any) -> None:
        raise RuntimeError("the page's audit could not be written")

    with pytest.raises(RuntimeError):
        decide(store, encounter_id, chosen, ALICE, audit=trail, before_commit=refuse)
    assert counts(store) == before and trail.entries() == []
    seen = []
    done = decide(store, encounter_id, chosen, ALICE, audit=trail,
                  before_commit=lambda txn: seen.append(txn.conn.in_transaction()))
    assert seen == [True]
    assert [(e.action, e.details["provenance"]) for e in trail.entries()] == [
        ("create", done.provenance_id)]
    # A trail in a file of its own (the SQLite default) gets the entry before the commit.
    own = tmp_path / "audit.sqlite"
    other = Store(f"sqlite:///{own}")
    try:
        create_audit_schema(other.engine)
        separate = AuditTrail(other.engine, AuditKey(tmp_path / "audit.key"))
        again = decide(store, encounter_id, chosen, BOB, audit=separate, source_address="cli")
        [entry] = separate.entries()
        assert (entry.user_id, entry.action, entry.details["provenance"]) == (
            "bob", "update", again.provenance_id)
    finally:
        other.dispose()


def test_a_coder_needs_a_name_and_a_role() -> None:
    with pytest.raises(CodingError, match="user name must be 1 to 128"):
        Coder(" ", "coder")
    with pytest.raises(CodingError, match="role must be 1 to 64"):
        Coder("alice", "")


# ------------------------------------------------------------------------------- the queue
def test_the_queue_lists_unbilled_encounters_oldest_discharge_first(
        store: Store, hospital: Hospital) -> None:
    as_of = date(2026, 11, 30)
    with store.read() as txn:
        finished = txn.search_params("Encounter", [("status", "finished"),
                                                   ("_count", "1000")]).matches
    waiting = queue(store, as_of=as_of)
    assert len(waiting) == len(finished)
    ages = [item.age_days for item in waiting]
    assert ages == sorted(ages, reverse=True)
    by_id = {item.encounter_id: item for item in waiting}
    stay = by_id[hospital.inpatient]
    assert (stay.encounter_class, stay.setting, stay.discharged) == (
        "IMP", "inpatient", date(2026, 3, 15))
    assert stay.age_days == (as_of - date(2026, 3, 15)).days == 260
    with store.read() as txn:
        patient = txn.read("Patient", stay.patient_id)
    official = next(n for n in patient["name"] if n.get("use") == "official")
    assert stay.patient_name == " ".join([*official["given"], official["family"]])

    decide(store, hospital.inpatient, inpatient_decisions(worksheet(store, hospital.inpatient)),
           ALICE)
    decide(store, hospital.outpatient[0], decisions_for(worksheet(store,
                                                                  hospital.outpatient[0])),
           ALICE)
    after = queue(store, as_of=as_of)
    assert {i.encounter_id for i in after} == set(by_id) - {hospital.inpatient,
                                                            hospital.outpatient[0]}
    assert [i.encounter_id for i in queue(store, as_of=as_of, limit=3)] == \
        [i.encounter_id for i in after[:3]]
