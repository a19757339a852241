"""C-CDA Social History and Plan of Treatment import, checked against the published documents."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest
from sqlalchemy import select

from chartkeeper.ingest.ccda import CcdaError
from chartkeeper.ingest.ccda_map import Resource
from chartkeeper.ingest.ccda_service import CcdaIngestor, ccda_document
from chartkeeper.ingest.service import create_ingest_schema
from chartkeeper.store import Store
from tests.ingest.test_ccda import H, hl7_examples, planned_entries, sections

SOCIAL_HISTORY_LOINC = "29762-2"
PLAN_OF_TREATMENT_LOINC = "18776-5"
PLANNED_TYPES = {"Goal", "MedicationRequest", "ServiceRequest"}


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.create_schema()
    create_ingest_schema(store.engine)
    yield store
    store.dispose()


def sample_documents(shared_data: Path) -> list[Path]:
    return hl7_examples(shared_data) + sorted(
        (shared_data / "ccda" / "ms_fhir_converter_samples").glob("*.ccda"))


def expected_entries(raw: bytes) -> dict[str, Counter[str]]:
    """Resources each section must yield, by type, counted from the XML: one Observation per
    Social History observation, one Goal / MedicationRequest / ServiceRequest per planned
    entry. Empty for a section the document does not have."""
    root = SafeET.fromstring(raw)
    expected: dict[str, Counter[str]] = {}
    social = sections(root, "social-history")
    if social:
        expected["social-history"] = Counter(
            {"Observation": sum(len(s.findall("h:entry/h:observation", H)) for s in social)})
    plans = sections(root, "plan-of-treatment")
    if plans:
        expected["plan-of-treatment"] = sum((Counter(planned_entries(s)) for s in plans),
                                            Counter())
    return expected


def stored_sections(store: Store, raw: bytes) -> tuple[dict[str, list[Resource]], Resource]:
    """The resources the document's Composition lists in its Social History and Plan of
    Treatment sections, and the Provenance of the document."""
    sha256 = hashlib.sha256(raw).hexdigest()
    with store.engine.connect() as conn:
        docref_id = conn.execute(select(ccda_document.c.document_reference_id)
                                 .where(ccda_document.c.sha256 == sha256)).scalar_one()
    found: dict[str, list[Resource]] = {}
    with store.read() as txn:
        docref = txn.read("DocumentReference", docref_id)
        composition_type, composition_id = \
            docref["context"]["related"][0]["reference"].split("/")
        composition = txn.read(composition_type, composition_id)
        for section in composition.get("section", []):
            code = section.get("code", {}).get("coding", [{}])[0].get("code")
            name = {SOCIAL_HISTORY_LOINC: "social-history",
                    PLAN_OF_TREATMENT_LOINC: "plan-of-treatment"}.get(code)
            if name is None:
                continue
            found.setdefault(name, [])
            for entry in section.get("entry", []):
                rtype, rid = entry["reference"].split("/")
                found[name].append(txn.read(rtype, rid))
        provenance = txn.search_params(
            "Provenance", [("entity", f"DocumentReference/{docref_id}")]).matches
    assert len(provenance) == 1
    return found, provenance[0]


def category_codes(resource: Resource) -> set[str]:
    return {c.get("code", "") for category in resource.get("category", [])
            for c in category.get("coding", [])}


def test_each_sample_documents_sections_list_one_resource_per_entry(
        store: Store, shared_data: Path) -> None:
    """Over the HL7 examples and the converter samples (Synthea's are counted in
    test_ccda.py), imported into one store: every Social History observation and every mapped
    Plan of Treatment entry is one resource of the right kind, listed in the document's
    Composition and named by its Provenance, even where the examples reuse an entry's id."""
    ingestor = CcdaIngestor(store)
    documents = Counter[str]()
    resources = Counter[str]()
    for path in sample_documents(shared_data):
        raw = path.read_bytes()
        assert ingestor.ingest(raw).status == "stored", path.name
        expected = expected_entries(raw)
        found, provenance = stored_sections(store, raw)
        assert set(found) == set(expected), path.name
        targets = {t["reference"] for t in provenance["target"]}
        for name, listed in found.items():
            kinds = Counter(r["resourceType"] for r in listed)
            assert +kinds == +expected[name], (path.name, name)
            assert {f"{r['resourceType']}/{r['id']}" for r in listed} <= targets
            documents[name] += 1
            resources[name] += len(listed)
        for observation in found.get("social-history", []):
            assert category_codes(observation) == {"social-history"}
        for planned in found.get("plan-of-treatment", []):
            assert planned["resourceType"] in PLANNED_TYPES
            if planned["resourceType"] == "MedicationRequest":
                assert PLAN_OF_TREATMENT_LOINC in category_codes(planned)
    # Measured on the samples at hand: guards against a vacuous pass if they change.
    assert documents["social-history"] >= 15 and resources["social-history"] >= 34
    assert documents["plan-of-treatment"] >= 22 and resources["plan-of-treatment"] >= 52


def transfer_summary(shared_data: Path) -> bytes:
    return (shared_data / "ccda" / "hl7_c-cda-examples" / "Documents" / "Transfer Summary"
            / "Transfer_Summary.xml").read_bytes()


def by_code(resources: list[Resource], field: str) -> dict[str, Resource]:
    return {r[field]["coding"][0]["code"]: r for r in resources if r.get(field, {}).get("coding")}


def test_the_hl7_transfer_summary_maps_its_social_history_values(
        store: Store, shared_data: Path) -> None:
    raw = transfer_summary(shared_data)
    CcdaIngestor(store).ingest(raw)
    social = by_code(stored_sections(store, raw)[0]["social-history"], "code")
    smoking = social["72166-2"]
    assert smoking["code"]["coding"][0]["system"] == "http://loinc.org"
    assert smoking["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct", "code": "8517006", "display": "Ex-smoker"}
    assert smoking["status"] == "final" and smoking["effectiveDateTime"] == "2013-06-21"
    alcohol = social["74013-4"]  # PQ → valueQuantity (the example gives no unit)
    assert alcohol["valueQuantity"] == {"value": 1}
    belief = social["75281-6"]  # ST → valueString
    assert belief["valueString"].startswith("Does not accept blood transfusions")
    residence = social["75274-1"]
    assert residence["valueCodeableConcept"]["coding"][0]["code"] == "308899009"


def test_the_hl7_transfer_summary_maps_its_plan_of_treatment(
        store: Store, shared_data: Path) -> None:
    raw = transfer_summary(shared_data)
    CcdaIngestor(store).ingest(raw)
    planned = stored_sections(store, raw)[0]["plan-of-treatment"]
    requests = by_code([r for r in planned if r["resourceType"] == "ServiceRequest"], "code")
    colonoscopy = requests["73761001"]  # Planned Procedure, moodCode RQO
    assert colonoscopy["intent"] == "order" and colonoscopy["status"] == "active"
    assert colonoscopy["occurrenceDateTime"] == "2013-06-13"
    assert colonoscopy["subject"]["reference"].startswith("Patient/")
    checkup = requests["185349003"]  # Planned Encounter, moodCode INT
    assert checkup["intent"] == "plan"
    # Planned Act and Nutrition Recommendation share one id in the example: two requests.
    assert {"225358003", "61310001"} <= set(requests)
    medications = by_code([r for r in planned if r["resourceType"] == "MedicationRequest"],
                          "medicationCodeableConcept")
    vaccine = medications["88"]  # Planned Immunization Activity → MedicationRequest
    assert vaccine["medicationCodeableConcept"]["coding"][0]["system"] == \
        "http://hl7.org/fhir/sid/cvx"
    assert vaccine["intent"] == "plan"
    assert vaccine["dosageInstruction"][0]["timing"]["event"] == ["2013-11-15"]
    assert "829888" in medications  # Planned Medication Activity (heparin)
    (goal,) = [r for r in planned if r["resourceType"] == "Goal"]
    assert goal["lifecycleStatus"] == "active"
    assert goal["description"]["coding"][0]["code"] == "44616-1"
    assert goal["target"][0]["detailQuantity"] == {
        "value": 92, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%",
        "comparator": ">="}
    # Instruction-free section: only the handoff (event mood) and the supply are not mapped.
    assert len(planned) == 7


def test_a_smoking_status_coded_assertion_takes_the_loinc_code(
        store: Store, shared_data: Path) -> None:
    # The ONC 170.314(b)(2) sample sends R1.1's placeholder code ASSERTION.
    raw = (shared_data / "ccda" / "ms_fhir_converter_samples"
           / "170.314B2_Amb_CCD.ccda").read_bytes()
    assert b'code="ASSERTION"' in raw
    CcdaIngestor(store).ingest(raw)
    social = stored_sections(store, raw)[0]["social-history"]
    assert [o["code"]["coding"][0]["code"] for o in social] == ["72166-2", "72166-2"]
    assert all(o["code"]["coding"][0]["system"] == "http://loinc.org" for o in social)


def ccd_with(shared_data: Path, pattern: bytes, replacement: bytes) -> bytes:
    raw = (shared_data / "ccda" / "ms_fhir_converter_samples"
           / "C-CDA_R2-1_CCD.xml.ccda").read_bytes()
    changed, count = re.subn(pattern, replacement, raw)
    assert count == 1
    return changed


@pytest.mark.parametrize("replacement", [b"", b'<code nullFlavor="UNK"/>'])
def test_a_social_history_observation_without_a_code_refuses_the_document(
        store: Store, shared_data: Path, replacement: bytes) -> None:
    # Its value (1 drink per day) cannot be read without the code: the sender must fix it.
    raw = ccd_with(shared_data, rb'<code code="74013-4"[^>]*/>', replacement)
    before = store.row_counts()
    with pytest.raises(CcdaError, match=r"Social History entry 3 \(observation "
                       r"urn:ietf:rfc:3986\|urn:uuid:37f76c51-.*\) has no code"):
        CcdaIngestor(store).ingest(raw)
    assert store.row_counts() == before


def test_a_smoking_status_without_a_code_takes_its_templates_code(
        store: Store, shared_data: Path) -> None:
    raw = ccd_with(shared_data, rb'<code code="72166-2"[^>]*/>', b"")
    assert CcdaIngestor(store).ingest(raw).status == "stored"
    social = stored_sections(store, raw)[0]["social-history"]
    smoking = [o for o in social if o["code"]["coding"][0]["code"] == "72166-2"]
    assert len(smoking) == 1 and smoking[0]["valueCodeableConcept"]["coding"]


def test_a_new_version_of_a_document_stores_its_own_social_history_and_plan(
        store: Store, shared_data: Path) -> None:
    # Entries of these sections are kept per document: not matched to the earlier version's,
    # not even the planned medications to the medication list.
    first = transfer_summary(shared_data)
    second = first.replace(b'<id root="04fc2b90-10e0-11e2-892e-0800200c9a66"',
                           b'<id root="04fc2b90-10e0-11e2-892e-0800200c9a67"', 1)
    assert second != first
    ingestor = CcdaIngestor(store)
    ingestor.ingest(first)
    ingestor.ingest(second)
    earlier, later = stored_sections(store, first)[0], stored_sections(store, second)[0]
    for name in ("social-history", "plan-of-treatment"):
        assert len(earlier[name]) == len(later[name]) > 0
        assert not {r["id"] for r in earlier[name]} & {r["id"] for r in later[name]}
        assert all(r["meta"]["versionId"] == "1" for r in earlier[name] + later[name])
