"""C-CDA import into a real SQLite store: the HL7 examples, converter samples and Synthea."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import pytest

from chartkeeper.ingest.ccda import CcdaError
from chartkeeper.ingest.ccda_service import CcdaIngestor
from chartkeeper.ingest.service import create_ingest_schema
from chartkeeper.store import Store
from chartkeeper.store.search import parse_query

V3 = "urn:hl7-org:v3"
H = {"h": V3}
SECTION_ROOTS = {"problems": "2.16.840.1.113883.10.20.22.2.5",
                 "medications": "2.16.840.1.113883.10.20.22.2.1",
                 "allergies": "2.16.840.1.113883.10.20.22.2.6",
                 "results": "2.16.840.1.113883.10.20.22.2.3",
                 "social-history": "2.16.840.1.113883.10.20.22.2.17",
                 "plan-of-treatment": "2.16.840.1.113883.10.20.22.2.10"}
INSTRUCTION = "2.16.840.1.113883.10.20.22.4.20"
PLANNED_MOODS = {"INT", "RQO", "PRP", "ARQ", "PRMS", "APT"}


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.create_schema()
    create_ingest_schema(store.engine)
    yield store
    store.dispose()


def hl7_examples(shared_data: Path) -> list[Path]:
    """The full documents among the HL7 examples: a ClinicalDocument in the v3 namespace."""
    found = []
    for path in sorted((shared_data / "ccda" / "hl7_c-cda-examples").rglob("*.xml")):
        try:
            root = SafeET.parse(path).getroot()
        except SafeET.ParseError:
            continue
        if root.tag == f"{{{V3}}}ClinicalDocument":
            found.append(path)
    return found


def synthea_documents(shared_data: Path) -> list[bytes]:
    archive = shared_data / "synthea" / "ccda_2024-04_105docs" / \
        "synthea_sample_data_ccda_latest.zip"
    with zipfile.ZipFile(archive) as zipped:
        return [zipped.read(name) for name in sorted(zipped.namelist())
                if name.endswith(".xml")]


def sections(root: Element, name: str) -> list[Element]:
    base = SECTION_ROOTS[name]
    return [s for s in root.iterfind(".//h:structuredBody//h:section", H)
            if {t.get("root") for t in s.findall("h:templateId", H)} & {base, base + ".1"}]


def planned_entries(section: Element) -> dict[str, int]:
    """A Plan of Treatment section's entries by the resource each must become: goals (goal
    mood) → Goal, planned substance administrations → MedicationRequest, planned acts,
    encounters, procedures and observations → ServiceRequest. Instructions, supplies and
    event-mood entries (handoff communication) are not mapped."""
    found = {"Goal": 0, "MedicationRequest": 0, "ServiceRequest": 0}
    for statement in section.findall("h:entry/*", H):
        tag, mood = statement.tag.removeprefix(f"{{{V3}}}"), statement.get("moodCode")
        if INSTRUCTION in {t.get("root") for t in statement.findall("h:templateId", H)}:
            continue
        if tag == "observation" and mood == "GOL":
            found["Goal"] += 1
        elif mood in PLANNED_MOODS and tag == "substanceAdministration":
            found["MedicationRequest"] += 1
        elif mood in PLANNED_MOODS and tag in ("act", "encounter", "procedure", "observation"):
            found["ServiceRequest"] += 1
    return found


def expected_counts(raw: bytes) -> dict[str, int]:
    """Distinct items per section, counted from the XML with XPath, not by the mapper:
    problems/allergies by (negation, code) and medications by (mood, code), uncoded ones
    each on their own; results as organizers + component observations; social history and
    plan of treatment entry by entry (they are not reconciled)."""
    root = SafeET.fromstring(raw)
    counts: dict[str, int] = {}
    keys: set[tuple[str, ...]] = set()
    n = 0
    for section in sections(root, "problems"):
        for obs in section.findall(".//h:entry//h:observation[h:templateId]", H):
            if "2.16.840.1.113883.10.20.22.4.4" not in {
                    t.get("root") for t in obs.findall("h:templateId", H)}:
                continue
            value = obs.find("h:value", H)
            code = value.get("code") if value is not None else None
            n += 1
            keys.add((obs.get("negationInd", ""), value.get("codeSystem", ""), code)
                     if code and value is not None else ("uncoded", str(n)))
    counts["problems"] = len(keys)
    keys, n = set(), 0
    for section in sections(root, "medications"):
        for admin in section.findall("h:entry/h:substanceAdministration", H):
            code = admin.find("h:consumable/h:manufacturedProduct/h:manufacturedMaterial/"
                              "h:code", H)
            n += 1
            keys.add((admin.get("moodCode") == "INT", code.get("codeSystem"), code.get("code"))
                     if code is not None and code.get("code") else ("uncoded", str(n)))
    counts["medications"] = len(keys)
    keys, n = set(), 0
    for section in sections(root, "allergies"):
        for obs in section.findall(".//h:entry//h:observation", H):
            if "2.16.840.1.113883.10.20.22.4.7" not in {
                    t.get("root") for t in obs.findall("h:templateId", H)}:
                continue
            code = obs.find("h:participant/h:participantRole/h:playingEntity/h:code", H)
            n += 1
            if code is not None and code.get("code"):
                keys.add((obs.get("negationInd", ""), code.get("codeSystem"), code.get("code")))
            elif obs.get("negationInd") == "true":
                keys.add(("no known allergy",))
            else:
                keys.add(("uncoded", str(n)))
    counts["allergies"] = len(keys)
    counts["results"] = sum(
        len(s.findall("h:entry/h:organizer", H))
        + len(s.findall("h:entry/h:organizer/h:component/h:observation", H))
        + len(s.findall("h:entry/h:observation", H))
        for s in sections(root, "results"))
    counts["social-history"] = sum(len(s.findall("h:entry/h:observation", H))
                                   for s in sections(root, "social-history"))
    counts["plan-of-treatment"] = sum(sum(planned_entries(s).values())
                                      for s in sections(root, "plan-of-treatment"))
    return counts


def stored_counts(store: Store, patient_id: str) -> dict[str, int]:
    """Current resources of the patient by type, read from the store's resource table (the
    search API pages at 1,000, and a Synthea record holds more results than that)."""
    import json

    from sqlalchemy import false, select

    from chartkeeper.store import schema
    r = schema.resource
    found: dict[str, int] = {}
    ref = f"Patient/{patient_id}"
    with store.engine.connect() as conn:
        for rtype, content in conn.execute(select(r.c.resource_type, r.c.content).where(
                r.c.deleted == false(), r.c.content.contains(ref))):
            resource = json.loads(content)
            if (resource.get("subject") or resource.get("patient") or {}).get("reference") != ref:
                continue
            codes = {c.get("code") for category in resource.get("category", [])
                     if isinstance(category, dict)  # AllergyIntolerance's are codes
                     for c in category.get("coding", [])}
            if rtype == "Observation" and "social-history" in codes:
                rtype = "social-history"
            elif rtype == "Observation" and "laboratory" not in codes:
                continue
            elif rtype == "MedicationRequest" and "18776-5" in codes:  # plan of treatment
                rtype = "planned MedicationRequest"
            found[rtype] = found.get(rtype, 0) + 1
    return {"problems": found.get("Condition", 0),
            "medications": found.get("MedicationStatement", 0)
            + found.get("MedicationRequest", 0),
            "allergies": found.get("AllergyIntolerance", 0),
            "results": found.get("DiagnosticReport", 0) + found.get("Observation", 0),
            "social-history": found.get("social-history", 0),
            "plan-of-treatment": found.get("ServiceRequest", 0) + found.get("Goal", 0)
            + found.get("planned MedicationRequest", 0)}


def patient_of(store: Store, sha256: str) -> str:
    from sqlalchemy import select

    from chartkeeper.ingest.ccda_service import ccda_document
    with store.engine.connect() as conn:
        return str(conn.execute(select(ccda_document.c.patient_id)
                                .where(ccda_document.c.sha256 == sha256)).scalar_one())


def test_synthea_documents_import_with_section_counts_matching_and_reimport_is_a_no_op(
        store: Store, shared_data: Path) -> None:
    import hashlib
    documents = synthea_documents(shared_data)
    assert len(documents) == 105
    ingestor = CcdaIngestor(store)
    mismatches = []
    for raw in documents:
        result = ingestor.ingest(raw)
        assert result.status == "stored" and result.created > 0
        # One patient per Synthea document: the patient's resources are this document's.
        stored = stored_counts(store, patient_of(store, hashlib.sha256(raw).hexdigest()))
        if stored != expected_counts(raw):
            mismatches.append((result.source_id, stored, expected_counts(raw)))
    assert mismatches == []
    before = store.row_counts()
    # Re-importing parses each document again: a sample of 15 keeps the test short.
    for raw in documents[::7]:
        assert ingestor.ingest(raw).status == "duplicate"
    assert store.row_counts() == before


def test_hl7_examples_and_converter_samples_import_and_reimport_changes_nothing(
        store: Store, shared_data: Path) -> None:
    paths = hl7_examples(shared_data) + sorted(
        (shared_data / "ccda" / "ms_fhir_converter_samples").glob("*.ccda"))
    assert len(paths) >= 40
    ingestor = CcdaIngestor(store)
    for path in paths:
        raw = path.read_bytes()
        assert ingestor.ingest(raw).status == "stored", path.name
    before = store.row_counts()
    for path in paths:
        assert ingestor.ingest(path.read_bytes()).status == "duplicate"
    assert store.row_counts() == before


def test_an_example_document_maps_each_section_to_its_counted_resources(
        store: Store, shared_data: Path) -> None:
    raw = (shared_data / "ccda" / "ms_fhir_converter_samples" / "CCD.ccda").read_bytes()
    CcdaIngestor(store).ingest(raw)
    import hashlib
    assert stored_counts(store, patient_of(store, hashlib.sha256(raw).hexdigest())) == \
        expected_counts(raw)
    with store.read() as txn:
        docref = txn.search("DocumentReference", parse_query("DocumentReference", [])).matches
        provenance = txn.search("Provenance", parse_query("Provenance", [])).matches
    attachment = docref[0]["content"][0]["attachment"]
    assert attachment["url"].startswith("Binary/") and len(attachment["hash"]) == 28
    assert docref[0]["identifier"][0]["value"] == hashlib.sha256(raw).hexdigest()
    assert len(provenance[0]["target"]) > 10


def test_a_problem_recorded_again_in_a_new_document_updates_it(store: Store,
                                                                 shared_data: Path) -> None:
    raw = (shared_data / "ccda" / "ms_fhir_converter_samples" / "CCD.ccda").read_bytes()
    ingestor = CcdaIngestor(store)
    ingestor.ingest(raw)
    counts = store.row_counts()
    # The same patient and entries in a new document (new id): linked, not duplicated.
    again = ingestor.ingest(raw.replace(b'extension="TT988"', b'extension="TT989"', 1)
                            if b'extension="TT988"' in raw else raw + b" ")
    # Entries matched to those recorded; identical ones keep their version (no-op updates).
    assert again.status == "stored"
    with store.read() as txn:
        conditions = txn.search("Condition", parse_query("Condition", [])).matches
    codes = [c["code"].get("coding", [{}])[0].get("code") for c in conditions]
    assert len(codes) == len(set(codes))
    assert store.row_counts()["resource"] > counts["resource"]  # Composition, Binary, ...


BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ClinicalDocument xmlns="urn:hl7-org:v3">&lol2;</ClinicalDocument>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>"""
NO_PATIENT = b"""<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3" extension="d1"/>
<code code="34133-9" codeSystem="2.16.840.1.113883.6.1"/></ClinicalDocument>"""


@pytest.mark.parametrize(("raw", "message"), [
    (BOMB, "unsafe XML"), (XXE, "unsafe XML"), (b"MSH|^~\\&|not xml", "not well-formed"),
    (b"<Bundle xmlns='http://hl7.org/fhir'/>", "expected ClinicalDocument"),
    (NO_PATIENT, "no recordTarget"), (b"", "empty")])
def test_malformed_documents_are_refused_and_nothing_is_stored(
        store: Store, raw: bytes, message: str) -> None:
    before = store.row_counts()
    with pytest.raises(CcdaError, match=message):
        CcdaIngestor(store).ingest(raw)
    assert store.row_counts() == before


def test_chartkeeper_import_of_an_xml_document(tmp_path: Path, shared_data: Path) -> None:
    document = tmp_path / "ccd.xml"
    document.write_bytes(
        (shared_data / "ccda" / "ms_fhir_converter_samples" / "CCD.ccda").read_bytes())
    env = dict(os.environ, CHARTKEEPER_HOME=str(tmp_path / "home"))
    env.pop("CHARTKEEPER_DATABASE_URL", None)
    run = subprocess.run([sys.executable, "-m", "chartkeeper.cli", "import", str(document)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "files=1" in run.stdout and "rejected=0" in run.stdout
    assert "created=0" not in run.stdout
