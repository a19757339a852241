"""HL7 v2 ingest: parsing the shared sample messages, mapping to FHIR, storing once."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from chartkeeper.ingest import (
    HL7Error,
    Hl7Ingestor,
    create_ingest_schema,
    parse,
    service,
    split_batch,
    to_bundle,
)
from chartkeeper.ingest.hl7v2 import SUPPORTED_EVENTS, to_datetime
from chartkeeper.ingest.service import hl7_message
from chartkeeper.mpi.merge import decisions_of
from chartkeeper.store import InvalidResource, Store
from chartkeeper.store.service import validate_for_store
from tests.conftest import SHARED_DATA

HL7_DATA = SHARED_DATA / "hl7v2"
MS_SAMPLES = HL7_DATA / "ms_fhir_converter_samples"
LOCAL = "urn:chartkeeper:hl7v2:assigning-authority:"
CORPORA = {
    "ms": MS_SAMPLES,
    "v2-to-fhir": HL7_DATA / "hl7_v2-to-fhir_archive_testmsgs",
    "hapi": HL7_DATA / "hapi_hl7v2_test_messages",
}

# Messages of the corpus we refuse, and why (file, message number in the file): code, field.
KNOWN_REFUSALS = {
    # v2.1 and v2.2 are outside the supported 2.3–2.8.
    ("A04-Register-Patient-v2.1.txt", 1): ("203", "MSH-12"),
    ("messages.txt", 1): ("203", "MSH-12"),
    ("messages.txt", 3): ("203", "MSH-12"),
    ("messages.txt", 8): ("203", "MSH-12"),
    ("messages.txt", 14): ("203", "MSH-12"),
    ("messages.txt", 15): ("203", "MSH-12"),
    ("messages.txt", 16): ("203", "MSH-12"),
    ("messages.txt", 17): ("203", "MSH-12"),
    ("messages.txt", 18): ("203", "MSH-12"),
    # MSH-2 is "^~}": three encoding characters where four are needed.
    ("messages.txt", 4): ("102", "MSH-2"),
    # PID-3 holds only a blank; two more have an empty MSH-10.
    ("example_oml_o21.hl7", 10): ("101", "PID-3"),
    ("example_oml_o21.hl7", 11): ("101", "MSH-10"),
    ("example_oml_o21.hl7", 12): ("101", "MSH-10"),
    # A uuencoded attachment, not a message.
    ("uuencoded_escaped.txt", 1): ("100", "MSH"),
}

def segment(name: str, fields: dict[int, str]) -> str:
    """One ER7 segment with the given fields (numbered as in the standard) and empty others."""
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join([name, *values])


GHH = "GHH&2.16.840.1.113883.19.5&ISO"
ADT_A01 = "\r".join([
    "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|GHH LAB|ELAB-3|20260105093000-0500||ADT^A01^ADT_A01|"
    "MSG00001|P|2.5.1",
    "EVN|A01|20260105093000-0500",
    segment("PID", {1: "1", 3: f"PATID1234^^^{GHH}^MR~123456789^^^USSSA^SS",
                    5: "O\\T\\BRIEN^ADAM^A^III", 7: "19610615", 8: "M",
                    11: "2222 HOME STREET^^GREENSBORO^NC^27401-1020", 13: "(555) 555-2004",
                    16: "S"}),
    "NK1|1|O\\T\\BRIEN^BARBARA^J|SPO^Spouse^HL70063|2222 HOME STREET^^GREENSBORO^NC^27401",
    segment("PV1", {1: "1", 2: "I", 3: "2000^2012^01", 7: "004777^ATTEND^AARON^A", 10: "SUR",
                    19: f"V100^^^{GHH}^VN", 44: "20260105090000-0500"}),
    "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives",
    "DG1|1||I10^Essential hypertension^I10||20260105",
    segment("IN1", {1: "1", 2: "BCBS^Blue Plan", 3: "BC1^^^BCBS&2.16.840.1.1&ISO",
                    4: "BLUE CROSS", 12: "20260101", 13: "20261231"}),
]) + "\r"

ORU_R01 = "\r".join([
    "MSH|^~\\&|LAB|GOOD HEALTH HOSPITAL|EHR|GHH|202601061015||ORU^R01^ORU_R01|LAB0042|P|2.5.1",
    f"PID|1||PATID1234^^^{GHH}^MR||O\\T\\BRIEN^ADAM||19610615|M",
    segment("OBR", {1: "1", 2: "ORD1^EHR", 3: "FIL1^LAB", 4: "24331-1^Lipid panel^LN",
                    7: "202601060800-0500", 22: "202601061010-0500", 25: "F"}),
    "OBX|1|NM|2093-3^Cholesterol^LN||196|mg/dL^^UCUM|<200|N|||F|||202601060800-0500",
    "OBX|2|NM|2571-8^Triglyceride^LN||250|mg/dL^milligrams per deciliter^UCUM|50-150|H^High^"
    "HL70078|||F",
    "OBX|3|ST|8251-1^Comment^LN||fasting\\.br\\12 hours||||||F",
]) + "\r"


def sample_messages() -> Iterator[tuple[str, str, int, str]]:
    """(corpus, file name, number in file, message) for every ER7 message in the corpora."""
    for corpus, folder in CORPORA.items():
        pattern = "*.hl7" if corpus == "ms" else "*.txt" if corpus == "v2-to-fhir" else "*"
        for path in sorted(folder.rglob(pattern)):
            if not path.is_file() or path.name.startswith(("LICENSE", "README")):
                continue
            text = path.read_text(encoding="utf-8")
            if path.name == "messages.txt":
                # HAPI's collection annotates its messages with /* */ and // comment lines.
                text = "\n".join(line for line in text.splitlines()
                                 if not re.match(r"\s*(/\*|\*|//)", line))
            for number, message in enumerate(split_batch(text), start=1):
                yield corpus, path.name, number, message


ALL_MESSAGES = list(sample_messages())


def supported(message: str) -> bool:
    try:
        parsed = parse(message)
    except HL7Error:
        return False
    return parsed.trigger in SUPPORTED_EVENTS.get(parsed.message_code, ())


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.create_schema()
    create_ingest_schema(store.engine)
    yield store
    store.dispose()


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        logged = conn.execute(select(func.count()).select_from(hl7_message)).scalar()
    return {**store.row_counts(), "hl7_message": int(logged or 0)}


def entries(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


# ------------------------------------------------------------------------------ splitting
@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_split_batch_drops_batch_envelopes_and_accepts_any_segment_ending(ending: str) -> None:
    first = ADT_A01.rstrip("\r").split("\r")
    second = ORU_R01.rstrip("\r").split("\r")
    batch = ending.join(["FHS|^~\\&|LAB", "BHS|^~\\&|LAB", *first, *second, "BTS|2", "FTS|1"])
    messages = split_batch("\ufeff" + batch + ending)
    assert [m.split("\r")[0][:20] for m in messages] == [first[0][:20], second[0][:20]]
    assert messages[0] == "\r".join(first)
    assert messages[1].split("\r")[-1].startswith("OBX|3")


def test_the_corpus_holds_every_sample_file() -> None:
    files = Counter((corpus, name) for corpus, name, _n, _m in ALL_MESSAGES)
    per_corpus = Counter(corpus for corpus, _name in files)
    # 139 Microsoft samples; the V2-to-FHIR archive has 37 ER7 files (the rest are XML).
    assert per_corpus == {"ms": 139, "v2-to-fhir": 37, "hapi": 6}
    assert len(ALL_MESSAGES) == 211


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(("corpus", "name", "number", "message"), ALL_MESSAGES,
                         ids=[f"{c}/{n}#{i}" for c, n, i, _m in ALL_MESSAGES])
def test_sample_message_parses_or_is_refused_for_a_known_reason(
        corpus: str, name: str, number: int, message: str) -> None:
    refusal = KNOWN_REFUSALS.get((name, number))
    if refusal is None:
        parsed = parse(message)
        assert parsed.msh.name == "MSH" and parsed.control_id and parsed.message_code
        return
    with pytest.raises(HL7Error) as caught:
        parse(message)
    assert (caught.value.code, caught.value.field) == refusal


def test_parse_unescapes_and_splits_repetitions_components_and_subcomponents() -> None:
    message = parse(ADT_A01)
    pid = message.first("PID")
    assert pid is not None
    assert pid.value(5) == "O&BRIEN"  # \T\ is the subcomponent separator, escaped
    assert pid.value(3, rep=2) == "123456789"
    assert pid.value(3, 4, 2) == "2.16.840.1.113883.19.5"
    assert (message.version, message.message_code, message.trigger, message.control_id) == (
        "2.5.1", "ADT", "A01", "MSG00001")
    obx = parse(ORU_R01).all("OBX")[2]
    assert obx.value(5) == "fasting\r12 hours"


ADT_A40 = "\r".join([
    "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|GHH LAB|ELAB-3|20260110120000-0500||ADT^A40^ADT_A39|"
    "MSG00040|P|2.5.1",
    "EVN|A40|20260110120000-0500",
    f"PID|1||PATID1234^^^{GHH}^MR||O\\T\\BRIEN^ADAM||19610615|M",
    f"MRG|OLD777^^^{GHH}^MR",
]) + "\r"


def txa(number: str, parent: str = "", completion: str = "AU") -> str:
    return segment("TXA", {1: "1", 2: "OV^Outpatient Visit Note", 3: "TX",
                           4: "202601051000-0500", 9: "543453^WILLIAMS^LINDSAY^^^^^^NPI",
                           12: number, 13: parent, 17: completion, 19: "AV"})


def mdm(trigger: str, control_id: str, txa_segment: str,
        text: str = "Seen for follow-up.~Blood pressure controlled.") -> str:
    return "\r".join([
        f"MSH|^~\\&|NOTES|GOOD HEALTH HOSPITAL|EHR|GHH|20260105103000-0500||MDM^{trigger}^"
        f"MDM_T02|{control_id}|P|2.5.1",
        f"EVN|{trigger}|20260105103000-0500",
        f"PID|1||PATID1234^^^{GHH}^MR||O\\T\\BRIEN^ADAM||19610615|M",
        txa_segment,
        f"OBX|1|TX|NOTE^Note text||{text}||||||F",
    ]) + "\r"


MDM_T02 = mdm("T02", "DOC0001", txa("NOTE100^GHH"))

VXU_V04 = "\r".join([
    "MSH|^~\\&|IZ|GOOD HEALTH HOSPITAL|IIS|STATE|20260105100000-0500||VXU^V04^VXU_V04|"
    "VXU0001|P|2.5.1",
    f"PID|1||PATID1234^^^{GHH}^MR||O\\T\\BRIEN^ADAM||19610615|M",
    "ORC|RE||IZ-1^GHH",
    segment("RXA", {1: "0", 2: "1", 3: "20260105093000-0500", 5: "208^COVID-19 mRNA^CVX",
                    6: "0.3", 7: "mL^mL^UCUM", 9: "00^New Record^NIP001", 15: "EW0150",
                    16: "20260331", 17: "PFR^Pfizer^MVX", 20: "CP", 21: "A"}),
    "RXR|C28161^Intramuscular^NCIT|LD^Left Deltoid^HL70163",
    "ORC|RE||IZ-2^GHH",
    segment("RXA", {1: "0", 2: "1", 3: "20260105", 5: "88^influenza^CVX", 6: "999",
                    18: "00^Parental decision^NIP002", 20: "RE", 21: "A"}),
]) + "\r"

SIU_S12 = "\r".join([
    "MSH|^~\\&|SCHED|GOOD HEALTH HOSPITAL|EHR|GHH|20260105080000-0500||SIU^S12^SIU_S12|"
    "SIU0001|P|2.5.1",
    segment("SCH", {1: "P100^EHR", 2: "F200^SCHED", 6: "NEW^New appointment",
                    7: "^Blood pressure follow-up", 8: "FU^Follow-up^HL70277", 9: "30",
                    10: "MIN", 11: "^^30^202601121400-0500^202601121430-0500", 25: "Booked"}),
    f"PID|1||PATID1234^^^{GHH}^MR||O\\T\\BRIEN^ADAM||19610615|M",
    "RGS|1|A",
    "AIS|1|A|99213^Office visit^C4|202601121400-0500|||30|MIN",
    "AIP|1|A|004777^ATTEND^AARON^A|D^Physician",
]) + "\r"

MALFORMED = {
    "empty": ("", None, "100"),
    "no MSH": ("PID|1||123^^^H^MR\r", "MSH", "100"),
    "wrong encoding characters": (ADT_A01.replace("MSH|^~\\&|", "MSH|^~^&|", 1), "MSH-2",
                                  "102"),
    "truncated MSH": ("MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|", "MSH-9", "101"),
    "truncated segment": (ADT_A01.split("PV1|")[0] + "P", "segment 5", "100"),
    "missing MSH-10": (ADT_A01.replace("|MSG00001|", "||"), "MSH-10", "101"),
    "unsupported version": (ADT_A01.replace("|P|2.5.1", "|P|2.2"), "MSH-12", "203"),
    "missing PID-3": (re.sub(r"PID\|1\|\|[^|]*\|", "PID|1|||", ADT_A01), "PID-3", "101"),
    "merge without MRG": (ADT_A40.split("MRG|")[0], "MRG", "100"),
    "merge with empty MRG-1": (ADT_A40.replace(f"MRG|OLD777^^^{GHH}^MR", "MRG|||ACC1"),
                               "MRG-1", "101"),
    "merge of a patient into itself": (ADT_A40.replace("OLD777", "PATID1234"), "MRG-1", "205"),
    "document without TXA": (MDM_T02.replace(txa("NOTE100^GHH"), "NTE|1||note"), "TXA", "100"),
    "document without TXA-2": (MDM_T02.replace("OV^Outpatient Visit Note", ""), "TXA-2", "101"),
    "document without TXA-12": (mdm("T02", "DOC0009", txa("")), "TXA-12", "101"),
    "document without TXA-17": (mdm("T02", "DOC0009", txa("N1", completion="")), "TXA-17",
                                "101"),
    "document with unknown TXA-17": (mdm("T02", "DOC0009", txa("N1", completion="ZZ")),
                                     "TXA-17", "103"),
    "replacement without TXA-13": (mdm("T10", "DOC0009", txa("N2")), "TXA-13", "101"),
    "document without text": (mdm("T02", "DOC0009", txa("N1"), text=""), "OBX-5", "101"),
    "immunization without RXA-5": (VXU_V04.replace("208^COVID-19 mRNA^CVX", ""), "RXA-5",
                                   "101"),
    "immunization without RXA-3": (VXU_V04.replace("|20260105|", "||"), "RXA-3", "101"),
    "appointment without SCH": (SIU_S12.replace(SIU_S12.split("\r")[1] + "\r", ""), "SCH",
                                "100"),
    "appointment without ids": (SIU_S12.replace("|P100^EHR|F200^SCHED|", "|||"), "SCH-2",
                                "101"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_message_names_the_field_and_stores_nothing(case: str, store: Store) -> None:
    text, field, code = MALFORMED[case]
    before = counts(store)
    with pytest.raises(HL7Error) as caught:
        Hl7Ingestor(store).ingest(text)
    assert (caught.value.field, caught.value.code) == (field, code)
    assert caught.value.message and (field or "") in str(caught.value)
    assert counts(store) == before


@pytest.mark.parametrize(("replacement", "code"), [("ADT^A17", "201"), ("RDE^O11", "200"),
                                                  ("MDM^T01", "201"), ("SIU^S26", "201")])
def test_unsupported_event_or_message_type_is_refused(replacement: str, code: str,
                                                      store: Store) -> None:
    text = ADT_A01.replace("ADT^A01^ADT_A01", replacement)
    with pytest.raises(HL7Error) as caught:
        Hl7Ingestor(store).ingest(text)
    assert (caught.value.field, caught.value.code) == ("MSH-9", code)
    assert counts(store)["resource"] == 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("MSHPID|^~\\&\r\n 0123AB."), max_size=120))
def test_parse_refuses_any_garbage_with_hl7error_only(text: str) -> None:
    try:
        parse(text)
    except HL7Error as exc:
        assert exc.code in ("100", "101", "102", "203")


@pytest.mark.parametrize(("ts", "expected"), [
    ("2026", "2026"), ("202601", "2026-01"), ("20260105", "2026-01-05"),
    ("202601050930-0500", "2026-01-05T09:30:00-05:00"),
    ("20260105093015.1234+0530", "2026-01-05T09:30:15.1234+05:30"),
    ("20260105093015+0000", "2026-01-05T09:30:15Z"),
    ("20260105093015", "2026-01-05"),  # no zone anywhere: kept to the day
    ("20261305", None),
])
def test_hl7_timestamps_become_fhir_datetimes_at_their_precision(ts: str,
                                                                 expected: str | None) -> None:
    assert to_datetime(ts) == expected


def test_a_timestamp_without_zone_takes_the_zone_of_msh7() -> None:
    assert to_datetime("202601050930", "-0500") == "2026-01-05T09:30:00-05:00"


# ------------------------------------------------------------------------------ mapping
def test_adt_a01_maps_patient_encounter_and_the_rest_as_a_transaction() -> None:
    bundle = to_bundle(parse(ADT_A01), datetime(2026, 1, 5, 14, 31, tzinfo=UTC))
    assert bundle["type"] == "transaction"
    types = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    assert types == {"Patient": 1, "Encounter": 1, "RelatedPerson": 1, "AllergyIntolerance": 1,
                     "Condition": 1, "Coverage": 1, "Provenance": 1}
    patient_entry = entries(bundle, "Patient")[0]
    assert patient_entry["request"] == {
        "method": "PUT",
        "url": "Patient?identifier=urn%3Aoid%3A2.16.840.1.113883.19.5|PATID1234"}
    patient = patient_entry["resource"]
    assert patient["name"][0] == {"family": "O&BRIEN", "given": ["ADAM", "A"],
                                  "suffix": ["III"]}
    assert (patient["birthDate"], patient["gender"]) == ("1961-06-15", "male")
    assert [i["value"] for i in patient["identifier"]] == ["PATID1234", "123456789"]
    encounter_entry = entries(bundle, "Encounter")[0]
    assert encounter_entry["request"]["url"] == (
        "Encounter?identifier=urn%3Aoid%3A2.16.840.1.113883.19.5|V100")
    encounter = encounter_entry["resource"]
    assert encounter["class"]["code"] == "IMP" and encounter["status"] == "in-progress"
    assert encounter["period"] == {"start": "2026-01-05T09:00:00-05:00"}
    assert encounter["subject"] == {"reference": patient_entry["fullUrl"]}
    allergy = entries(bundle, "AllergyIntolerance")[0]["resource"]
    assert allergy["criticality"] == "high" and allergy["category"] == ["medication"]
    assert allergy["code"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    condition = entries(bundle, "Condition")[0]["resource"]
    assert condition["code"]["coding"][0] == {
        "code": "I10", "system": "http://hl7.org/fhir/sid/icd-10-cm",
        "display": "Essential hypertension"}
    assert condition["encounter"] == {"reference": encounter_entry["fullUrl"]}
    coverage = entries(bundle, "Coverage")[0]["resource"]
    assert coverage["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    for entry in bundle["entry"]:
        validate_for_store(entry["resource"], None)


def test_oru_r01_maps_report_observations_and_provenance() -> None:
    received = datetime(2026, 1, 6, 15, 16, 17, tzinfo=UTC)
    bundle = to_bundle(parse(ORU_R01), received)
    report = entries(bundle, "DiagnosticReport")[0]["resource"]
    observations = entries(bundle, "Observation")
    assert report["status"] == "final"
    assert report["effectiveDateTime"] == "2026-01-06T08:00:00-05:00"
    assert report["result"] == [{"reference": o["fullUrl"]} for o in observations]
    cholesterol, triglyceride, comment = (o["resource"] for o in observations)
    assert cholesterol["valueQuantity"] == {"value": 196, "unit": "mg/dL",
                                            "system": "http://unitsofmeasure.org",
                                            "code": "mg/dL"}
    assert cholesterol["referenceRange"] == [{"text": "<200"}]
    assert triglyceride["valueQuantity"]["unit"] == "milligrams per deciliter"
    assert triglyceride["referenceRange"][0]["low"]["value"] == 50
    assert triglyceride["referenceRange"][0]["high"]["code"] == "mg/dL"
    assert triglyceride["interpretation"] == [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "H"}]}]
    assert comment["valueString"] == "fasting\r12 hours"
    provenance_entry = entries(bundle, "Provenance")[0]
    provenance = provenance_entry["resource"]
    assert provenance["recorded"] == "2026-01-06T15:16:17.000Z"
    assert {t["reference"] for t in provenance["target"]} == {
        e["fullUrl"] for e in bundle["entry"] if e is not provenance_entry}
    assert provenance["agent"][0]["who"]["display"] == "LAB / GOOD HEALTH HOSPITAL"
    assert provenance["entity"][0]["what"]["identifier"]["value"] == "LAB0042"
    for entry in bundle["entry"]:
        validate_for_store(entry["resource"], None)


# ------------------------------------------------------------------------------ storing
# Supported messages of the corpus we refuse to store, and why: field, code.
KNOWN_INGEST_REFUSALS = {
    # An ED OBX (application/pdf, Base64) with no data: the document has no content.
    ("MDM-T02-01.hl7", 1): ("OBX-5", "101"),
    ("MDM-T10-01.hl7", 1): ("OBX-5", "101"),
}


def test_every_supported_sample_maps_and_stores(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    stored = Counter()
    for corpus, name, number, message in ALL_MESSAGES:
        if not supported(message):
            continue
        if (name, number) in KNOWN_INGEST_REFUSALS:
            with pytest.raises(HL7Error) as caught:
                ingestor.ingest(message)
            assert (caught.value.field, caught.value.code) == \
                KNOWN_INGEST_REFUSALS[(name, number)]
            continue
        # The Microsoft samples reuse MSG00001: give each its own control id, or all but the
        # first would rightly be acknowledged as duplicates.
        msh = message.split("\r", 1)[0].split("|")
        msh[9] = f"{name}-{number}"
        text = "\r".join(["|".join(msh), *message.split("\r")[1:]])
        result = ingestor.ingest(text)
        assert result.status == "stored", name
        # The Provenance at least; a Patient already stored with this content is unchanged.
        assert result.created >= 1
        stored[corpus] += 1
    assert stored == {"ms": 49, "v2-to-fhir": 22, "hapi": 1}
    totals = counts(store)
    assert totals["hl7_message"] == 72
    with store.read() as txn:
        provenances = txn.search_params("Provenance", [("_count", "100")])
    # One per message, and one per merge message (A34/A39/A40) for the MPI's merge.
    merges = [p for p in provenances.matches
              if p.get("activity", {}).get("coding", [{}])[0].get("code") == "merge"]
    assert (len(provenances.matches) - len(merges), len(merges)) == (72, 4)


def test_the_same_message_twice_is_a_duplicate_and_changes_nothing(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    first = ingestor.ingest(ADT_A01)
    assert (first.status, first.source_id) == ("stored", "MSG00001")
    assert (first.created, first.updated) == (7, 0)
    before = counts(store)
    again = ingestor.ingest(ADT_A01)
    assert (again.status, again.created, again.updated) == ("duplicate", 0, 0)
    assert counts(store) == before


def test_a_resent_message_is_a_duplicate_on_sqlite_and_postgresql(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(database_url)
    store.create_schema()
    create_ingest_schema(store.engine)
    create_ingest_schema(store.engine)  # idempotent
    ingestor = Hl7Ingestor(store)
    assert ingestor.ingest(ORU_R01).status == "stored"
    before = counts(store)
    # A second session that checked before the first committed: the unique key refuses its
    # row, its whole transaction rolls back, and the message is acknowledged as a duplicate.
    original = Hl7Ingestor._stored_digest
    late = [True]

    def seen_too_late(txn: Any, sender: tuple[str, str], control_id: str) -> str | None:
        if late:
            late.pop()
            return None
        return original(txn, sender, control_id)

    monkeypatch.setattr(Hl7Ingestor, "_stored_digest", staticmethod(seen_too_late))
    result = ingestor.ingest(ORU_R01)
    assert (result.status, result.created) == ("duplicate", 0)
    monkeypatch.undo()
    assert ingestor.ingest(ORU_R01).status == "duplicate"
    assert counts(store) == before
    store.dispose()


def test_a_later_message_updates_the_same_patient_and_encounter(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(ADT_A01)
    discharge = (ADT_A01.replace("ADT^A01^ADT_A01|MSG00001", "ADT^A03^ADT_A03|MSG00002")
                 .replace("|20260105090000-0500", "|20260105090000-0500|20260107110000-0500"))
    result = ingestor.ingest(discharge)
    # The Encounter gets its discharge; the Patient, identical, keeps its version.
    assert (result.status, result.updated) == ("stored", 1)
    lab = ingestor.ingest(ORU_R01)
    assert lab.updated == 1  # the Patient (the ORU's PID adds to it); the results are new
    with store.read() as txn:
        patients = txn.search_params("Patient", [("identifier", "PATID1234")]).matches
        encounters = txn.search_params("Encounter", []).matches
        observations = txn.search_params("Observation", []).matches
    assert len(patients) == 1 and patients[0]["meta"]["versionId"] == "2"
    assert len(encounters) == 1
    assert encounters[0]["status"] == "finished"
    assert encounters[0]["period"]["end"] == "2026-01-07T11:00:00-05:00"
    assert {o["subject"]["reference"] for o in observations} == {
        f"Patient/{patients[0]['id']}"}


def test_a_message_the_store_refuses_leaves_nothing_behind(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    ingestor = Hl7Ingestor(store)
    assert ingestor.ingest(ORU_R01).status == "stored"
    before = counts(store)
    original = service.validate_for_store

    def refuse_conditions(resource: Any, expected: str | None) -> dict[str, Any]:
        if resource.get("resourceType") == "Condition":
            raise InvalidResource("Condition refused for the test")
        return original(resource, expected)

    # The Condition comes after the Patient and Encounter have been written in the same
    # transaction: those writes must be rolled back with it.
    monkeypatch.setattr(service, "validate_for_store", refuse_conditions)
    with pytest.raises(HL7Error) as caught:
        ingestor.ingest(ADT_A01)
    assert caught.value.code == "207" and "Condition refused" in caught.value.message
    assert counts(store) == before


# ------------------------------------------------------------------------------ agreement
def expected_bundles() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(HL7_DATA / "ms_fhir_converter_expected_fhir_r4_hl7v2.tar.gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith("-expected.json"):
                handle = tar.extractfile(member)
                assert handle is not None
                stem = member.name.rsplit("/", 1)[1].removesuffix("-expected.json")
                found[stem] = json.load(handle)
    return found


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == resource_type]


def _instant(value: str | None) -> datetime | str | None:
    if value is None or "T" not in value:
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _code(resource: dict[str, Any]) -> str | None:
    codings = resource.get("code", {}).get("coding", [])
    return codings[0].get("code") if codings else None


def _quantity(observation: dict[str, Any]) -> dict[str, Any] | None:
    if "valueQuantity" in observation:
        return dict(observation["valueQuantity"])
    # The converter turns a repeating OBX-5 into components; we keep the first value.
    components = observation.get("component", [])
    return dict(components[0]["valueQuantity"]) if components and \
        "valueQuantity" in components[0] else None


def agreement() -> tuple[dict[str, tuple[int, int]], dict[str, list[Any]]]:
    """Per field (agreeing, compared) between our bundles and the converter's expected ones."""
    expected = expected_bundles()
    tally: dict[str, list[int]] = {}
    differences: dict[str, list[Any]] = {}

    def compare(field: str, ours: Any, theirs: Any, agree: bool | None = None) -> None:
        counts = tally.setdefault(field, [0, 0])
        counts[1] += 1
        if (ours == theirs) if agree is None else agree:
            counts[0] += 1
        else:
            differences.setdefault(field, []).append((ours, theirs))

    for path in sorted(MS_SAMPLES.glob("*.hl7")):
        message = split_batch(path.read_text(encoding="utf-8"))[0]
        if path.stem not in expected or not supported(message):
            continue
        if parse(message).message_code not in ("ADT", "ORU") or \
                parse(message).trigger in ("A34", "A39", "A40"):
            continue  # measured on admissions and results only; merges and the rest below
        ours, theirs = to_bundle(parse(message)), expected[path.stem]
        patient, their_patient = _resources(ours, "Patient")[0], \
            _resources(theirs, "Patient")[0]
        # The converter adds identifiers and names from other segments (PD1, GT1, IN2...):
        # ours, all from PID, must each be among theirs.
        their_ids = {i.get("value") for i in their_patient.get("identifier", [])}
        ids = [i["value"] for i in patient.get("identifier", [])]
        compare("Patient.identifier", ids, None, all(i in their_ids for i in ids))
        their_names = {(n.get("family"), (n.get("given") or [None])[0])
                       for n in their_patient.get("name", [])}
        names = [(n.get("family"), (n.get("given") or [None])[0]) for n in patient["name"]]
        compare("Patient.name", names, None, all(n in their_names for n in names))
        compare("Patient.birthDate", patient.get("birthDate"), their_patient.get("birthDate"))
        compare("Patient.gender", patient.get("gender"), their_patient.get("gender"))
        encounters, their_encounters = _resources(ours, "Encounter"), \
            _resources(theirs, "Encounter")
        if encounters or their_encounters:
            encounter = encounters[0] if encounters else {}
            their_encounter = their_encounters[0] if their_encounters else {}
            compare("Encounter.class", encounter.get("class", {}).get("code"),
                    their_encounter.get("class", {}).get("code"))
            for end in ("start", "end"):
                compare(f"Encounter.period.{end}",
                        _instant(encounter.get("period", {}).get(end)),
                        _instant(their_encounter.get("period", {}).get(end)))
        # Observations pair up by code, in order (a message may repeat a code).
        their_observations: dict[str | None, list[dict[str, Any]]] = {}
        for observation in _resources(theirs, "Observation"):
            their_observations.setdefault(_code(observation), []).append(observation)
        for observation in _resources(ours, "Observation"):
            code = _code(observation)
            candidates = their_observations.get(code) or [None]
            match = candidates.pop(0) if len(candidates) > 1 else candidates[0]
            compare("Observation.code", code, code if match else None)
            if match is None:
                continue
            quantity, their_quantity = _quantity(observation), _quantity(match)
            if quantity or their_quantity:
                quantity, their_quantity = quantity or {}, their_quantity or {}
                compare("Observation.value", quantity.get("value"), their_quantity.get("value"))
                compare("Observation.unit", quantity.get("unit", quantity.get("code")),
                        their_quantity.get("unit", their_quantity.get("code")))
    return {k: (v[0], v[1]) for k, v in tally.items()}, differences


# Measured on the 31 supported Microsoft samples, 30 of which have an expected bundle
# (agreeing / compared, per field). Encounter times agree as instants: the converter writes
# them in another zone (+05:30 for our +01:10). The differences:
# - Encounter.period: in ADT-A04-01, A05-01 and A11-01 PV1-44/45 are empty and the converter
#   takes the times from elsewhere in the message (PV2 expected admit/discharge?); we do not;
# - Observation.code: ORU-R01-01's RP (reference pointer) OBX 1063-7 has no Observation there;
# - Observation.value: ORU-R01-01 repeats code 8867-4, first as an RP OBX whose value we do
#   not map yet (no value), which the converter skips: the pairing by code is off by one.
MEASURED_AGREEMENT = {
    "Patient.identifier": (30, 30),  # each of ours (all from PID) is among theirs
    "Patient.name": (30, 30),  # each of our (family, first given) is among theirs
    "Patient.birthDate": (30, 30),
    "Patient.gender": (30, 30),
    "Encounter.class": (26, 26),
    "Encounter.period.start": (25, 26),
    "Encounter.period.end": (23, 26),
    "Observation.code": (62, 63),
    "Observation.value": (49, 50),
    "Observation.unit": (50, 50),
}


def test_key_fields_agree_with_the_converters_expected_bundles() -> None:
    measured, differences = agreement()
    report = {field: f"{a}/{n} = {a / n:.1%}" for field, (a, n) in measured.items()}
    print("\nagreement with the Microsoft converter:", json.dumps(report, indent=1))
    for field, cases in differences.items():
        print(field, cases[:5])
    assert measured == MEASURED_AGREEMENT


# ------------------------------------------------------------------------------ CLI
def test_an_hl7_file_imports_through_chartkeeper_import_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    batch = tmp_path / "feed.hl7"
    batch.write_text("\r\n".join(["FHS|^~\\&|ADT1", "BHS|^~\\&|ADT1", ADT_A01.rstrip("\r"),
                                  ORU_R01.rstrip("\r"), "BTS|2", "FTS|1"]), encoding="utf-8")
    broken = tmp_path / "broken.hl7"
    broken.write_text(MALFORMED["missing PID-3"][0].replace("MSG00001", "MSG00003"))
    env = dict(os.environ, CHARTKEEPER_HOME=str(home))
    env.pop("CHARTKEEPER_DATABASE_URL", None)

    def chartkeeper(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chartkeeper.cli", "import", "--workers",
                               "0", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    first = chartkeeper(str(batch), str(broken))
    assert first.returncode == 1, first.stderr
    assert "files=2 created=12 updated=1 rejected=1" in first.stdout
    assert "PID-3" in first.stdout + first.stderr
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    before = counts(store)
    again = chartkeeper(str(batch))
    assert again.returncode == 0, again.stderr
    assert "files=1 created=0 updated=0 rejected=0" in again.stdout
    assert counts(store) == before
    assert before["hl7_message"] == 2
    store.dispose()


# ------------------------------------------------------------------------------ merges
V2_TO_FHIR = CORPORA["v2-to-fhir"]


def official(path: str) -> str:
    return split_batch((V2_TO_FHIR / path).read_text(encoding="utf-8"))[0]


def patient(store: Store, value: str) -> dict[str, Any]:
    with store.read() as txn:
        found = txn.search_params("Patient", [("identifier", value)]).matches
    assert len(found) == 1, value
    return found[0]


@pytest.mark.parametrize(("path", "survivor", "prior"), [
    ("ADT/A34-Merge-Patients---Patient-ID-v2.3.txt", "5027440", "5027450"),
    ("ADT/A39-Patient-Merge-VHIS-2-v2.5.1.txt", "84168156", "77966847"),
    ("ADT/A40-REDOX-A40-2-v2.3.txt", "0000000001", "53700"),
])
def test_official_merge_messages_link_the_survivor_and_the_prior_patient(
        path: str, survivor: str, prior: str) -> None:
    bundle = to_bundle(parse(official(path)))
    kept, replaced = entries(bundle, "Patient")
    assert kept["resource"]["identifier"][0]["value"] == survivor
    assert kept["resource"]["active"] is True
    assert kept["resource"]["link"] == [{"other": {"reference": replaced["fullUrl"]},
                                         "type": "replaces"}]
    assert replaced["request"]["method"] == "PUT"
    assert replaced["request"]["url"].endswith(f"|{prior}")
    assert replaced["resource"]["active"] is False
    assert [i["value"] for i in replaced["resource"]["identifier"]] == [prior]
    assert replaced["resource"]["link"] == [{"other": {"reference": kept["fullUrl"]},
                                             "type": "replaced-by"}]
    for entry in bundle["entry"]:
        validate_for_store(entry["resource"], None)


def test_a_merge_keeps_the_prior_patient_inactive_with_its_record(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(ADT_A01)
    ingestor.ingest(ADT_A01.replace("PATID1234", "OLD777").replace("MSG00001", "MSG00002")
                    .replace("V100", "V200"))
    result = ingestor.ingest(ADT_A40)
    # Created: the message's Provenance and the merge's. Updated: both Patients by the
    # message, then by the MPI's merge, and the prior patient's records it re-pointed.
    assert (result.status, result.created) == ("stored", 2)
    survivor, prior = patient(store, "PATID1234"), patient(store, "OLD777")
    with store.read() as txn:
        encounters = txn.search_params("Encounter", [("patient", f"Patient/{survivor['id']}")])
        assert {e["identifier"][0]["value"] for e in encounters.matches} >= {"V100", "V200"}
        assert not txn.search_params("Encounter", [("patient", f"Patient/{prior['id']}")]).total
        merges = decisions_of(txn, prior["id"])
    assert result.updated > len(merges[0]["target"]) >= 4  # patients, encounters, kin
    assert merges[0]["agent"][0]["who"]["display"] == "hl7:ADT1@GOOD HEALTH HOSPITAL"
    assert merges[0]["reason"] == [{"text": "ADT^A40 message MSG00040"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{prior['id']}"},
                                 "type": "replaces"}]
    assert prior["active"] is False
    assert prior["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                              "type": "replaced-by"}]
    # Stored, not deleted, and what the ADT stored is still there on both.
    assert prior["name"][0]["family"] == "O&BRIEN"
    assert prior["address"][0]["city"] == "GREENSBORO"
    assert survivor["address"][0]["city"] == "GREENSBORO"
    assert [i["value"] for i in prior["identifier"]] == ["OLD777", "123456789"]
    before = counts(store)
    again = ingestor.ingest(ADT_A40)
    assert (again.status, again.created, again.updated) == ("duplicate", 0, 0)
    assert counts(store) == before


def test_a_merge_creates_an_unknown_prior_patient_inactive(store: Store) -> None:
    result = Hl7Ingestor(store).ingest(official("ADT/A34-Merge-Patients---Patient-ID-v2.3.txt"))
    # two Patients, the message's Provenance and the merge's
    assert (result.status, result.created) == ("stored", 4)
    prior = patient(store, "5027450")
    assert prior["active"] is False and "name" not in prior
    assert prior["link"][0]["type"] == "replaced-by"
    assert patient(store, "5027440")["name"][0]["family"] == "Tester"


def test_a_merge_of_two_ids_of_the_same_stored_patient_is_refused(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(ADT_A01)
    before = counts(store)
    # 123456789 (the SSN in PID-3) already belongs to the Patient PATID1234.
    merge = ADT_A40.replace(f"MRG|OLD777^^^{GHH}^MR", "MRG|123456789^^^USSSA^SS")
    with pytest.raises(HL7Error) as caught:
        ingestor.ingest(merge)
    assert caught.value.code == "207" and "itself" in caught.value.message
    assert counts(store) == before


# ------------------------------------------------------------------------------ documents
def attachment_text(document: dict[str, Any]) -> str:
    return base64.b64decode(document["content"][0]["attachment"]["data"]).decode("utf-8")


def documents(store: Store) -> list[dict[str, Any]]:
    with store.read() as txn:
        return txn.search_params("DocumentReference", []).matches


def test_official_mdm_t02_maps_to_a_document_reference() -> None:
    bundle = to_bundle(parse(official("MDM/T02-plain-text-with-line-breaks-v2.3.1.txt")))
    assert Counter(e["resource"]["resourceType"] for e in bundle["entry"]) == {
        "Patient": 1, "Encounter": 1, "DocumentReference": 1, "Provenance": 1}
    entry = entries(bundle, "DocumentReference")[0]
    assert entry["request"] == {
        "method": "PUT",
        "url": "DocumentReference?identifier=urn%3Achartkeeper%3Ahl7v2%3Aassigning-authority"
               "%3ASendApp|OV17872"}
    document = entry["resource"]
    assert document["masterIdentifier"]["value"] == "OV17872"
    assert (document["status"], document["docStatus"]) == ("current", "final")
    assert document["type"] == {"coding": [{"code": "OV", "display": "Outpatient Visit Note"}]}
    assert document["author"] == [{"identifier": {"value": "543453",
                                                  "system": "http://hl7.org/fhir/sid/us-npi"},
                                   "display": "LINDSAY WILLIAMS"}]
    assert document["authenticator"]["identifier"]["value"] == "543453"
    # MSH-7 has no zone: the instant DocumentReference.date cannot be had, the day is kept.
    assert "date" not in document
    assert document["context"]["period"] == {"start": "2019-02-02"}
    assert document["context"]["encounter"] == [
        {"reference": entries(bundle, "Encounter")[0]["fullUrl"]}]
    text = attachment_text(document)
    assert text.startswith("Family History\n\n Problem Relation Age of Onset\n Asthma")
    assert text.endswith("Maternal Grandfather Deceased 65")
    assert document["content"][0]["attachment"]["contentType"] == "text/plain; charset=utf-8"
    for entry in bundle["entry"]:
        validate_for_store(entry["resource"], None)


def test_a_document_is_stored_once_and_an_edit_updates_it(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    assert ingestor.ingest(MDM_T02).status == "stored"
    [original] = documents(store)
    assert original["date"] == "2026-01-05T10:00:00-05:00"
    assert attachment_text(original) == "Seen for follow-up.\nBlood pressure controlled."
    before = counts(store)
    assert ingestor.ingest(MDM_T02).status == "duplicate"
    assert counts(store) == before
    edit = mdm("T08", "DOC0002", txa("NOTE100^GHH"), text="Seen for follow-up (corrected).")
    assert ingestor.ingest(edit).status == "stored"
    [edited] = documents(store)
    assert edited["id"] == original["id"] and edited["meta"]["versionId"] == "2"
    assert edited["docStatus"] == "amended"
    assert attachment_text(edited) == "Seen for follow-up (corrected)."


def test_a_replacement_document_supersedes_the_one_it_replaces(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(MDM_T02)
    [original] = documents(store)
    replacement = mdm("T10", "DOC0003", txa("NOTE101^GHH", parent="NOTE100^GHH"),
                      text="Rewritten note.")
    result = ingestor.ingest(replacement)
    # Created: the new document and the Provenance; updated: the superseded parent (the
    # Patient, identical, keeps its version).
    assert (result.status, result.created, result.updated) == ("stored", 2, 1)
    by_number = {d["masterIdentifier"]["value"]: d for d in documents(store)}
    assert by_number["NOTE100"]["status"] == "superseded"
    assert attachment_text(by_number["NOTE100"]) == attachment_text(original)
    new = by_number["NOTE101"]
    assert new["status"] == "current" and attachment_text(new) == "Rewritten note."
    assert new["relatesTo"] == [{"code": "replaces", "target": {
        "reference": f"DocumentReference/{original['id']}",
        "identifier": {"system": LOCAL + "GHH", "value": "NOTE100"}}}]


def test_a_replacement_of_a_document_never_received_keeps_its_number(store: Store) -> None:
    replacement = mdm("T10", "DOC0004", txa("NOTE201^GHH", parent="NOTE200^GHH"))
    assert Hl7Ingestor(store).ingest(replacement).status == "stored"
    [document] = documents(store)
    assert document["relatesTo"] == [{"code": "replaces", "target": {
        "identifier": {"system": LOCAL + "GHH", "value": "NOTE200"}}}]


# ------------------------------------------------------------------------------ immunizations
def test_vxu_v04_maps_each_rxa_to_an_immunization() -> None:
    bundle = to_bundle(parse(VXU_V04))
    given, refused = (e["resource"] for e in entries(bundle, "Immunization"))
    assert given["vaccineCode"] == {"coding": [{"code": "208", "system":
                                                "http://hl7.org/fhir/sid/cvx",
                                                "display": "COVID-19 mRNA"}]}
    assert (given["status"], given["occurrenceDateTime"]) == (
        "completed", "2026-01-05T09:30:00-05:00")
    assert (given["lotNumber"], given["expirationDate"]) == ("EW0150", "2026-03-31")
    assert given["manufacturer"] == {"display": "Pfizer"}
    assert given["primarySource"] is True
    assert given["doseQuantity"] == {"value": 0.3, "unit": "mL",
                                     "system": "http://unitsofmeasure.org", "code": "mL"}
    assert given["route"]["coding"][0]["code"] == "C28161"
    assert given["identifier"] == [{"system": LOCAL + "GHH", "value": "IZ-1"}]
    assert (refused["status"], refused["occurrenceDateTime"]) == ("not-done", "2026-01-05")
    assert refused["statusReason"] == {"coding": [{"code": "00",
                                                   "display": "Parental decision"}]}
    assert "doseQuantity" not in refused  # 999: amount unknown
    for entry in bundle["entry"]:
        validate_for_store(entry["resource"], None)


def test_official_vxu_messages_map_their_vaccines() -> None:
    bundle = to_bundle(parse(official("VXU/V04-multiple-admins-v2.5.1.txt")))
    immunizations = [e["resource"] for e in entries(bundle, "Immunization")]
    assert [i["vaccineCode"]["coding"][0]["code"] for i in immunizations] == [
        "49281-0215-88", "88", "88"]
    assert [i.get("primarySource") for i in immunizations] == [True, False, False]
    assert immunizations[0]["lotNumber"] == "315841"
    assert not entries(bundle, "Observation")  # the VIS and funding OBX are not mapped yet


def test_an_immunization_is_stored_once_and_a_deletion_marks_it(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    assert ingestor.ingest(VXU_V04).status == "stored"
    before = counts(store)
    assert ingestor.ingest(VXU_V04).status == "duplicate"
    assert counts(store) == before
    deletion = VXU_V04.replace("VXU0001", "VXU0002").replace("|CP|A", "|CP|D")
    assert ingestor.ingest(deletion).status == "stored"
    with store.read() as txn:
        immunizations = txn.search_params("Immunization", []).matches
    assert len(immunizations) == 2
    assert {i["status"] for i in immunizations} == {"entered-in-error", "not-done"}


# ------------------------------------------------------------------------------ appointments
def appointments(store: Store) -> list[dict[str, Any]]:
    with store.read() as txn:
        return txn.search_params("Appointment", []).matches


def test_siu_s12_maps_an_appointment_and_s15_cancels_it(store: Store) -> None:
    bundle = to_bundle(parse(SIU_S12))
    appointment = entries(bundle, "Appointment")[0]["resource"]
    assert appointment["status"] == "booked"
    assert (appointment["start"], appointment["end"]) == ("2026-01-12T14:00:00-05:00",
                                                          "2026-01-12T14:30:00-05:00")
    assert appointment["minutesDuration"] == 30
    assert appointment["appointmentType"]["coding"][0] == {
        "code": "FU", "system": "http://terminology.hl7.org/CodeSystem/v2-0277",
        "display": "Follow-up"}
    assert appointment["reasonCode"] == [{"text": "Blood pressure follow-up"}]
    assert appointment["serviceType"][0]["coding"][0]["code"] == "99213"
    assert [p["actor"].get("display") for p in appointment["participant"]] == [
        None, "AARON ATTEND"]
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(SIU_S12)
    assert ingestor.ingest(SIU_S12).status == "duplicate"
    cancel = (SIU_S12.replace("SIU^S12^SIU_S12|SIU0001", "SIU^S15^SIU_S12|SIU0002")
              .replace("NEW^New appointment", "PAT^Patient request")
              .replace("|Booked", "|Cancelled"))
    assert ingestor.ingest(cancel).status == "stored"
    [stored] = appointments(store)
    assert stored["status"] == "cancelled" and stored["meta"]["versionId"] == "2"
    assert stored["cancelationReason"]["coding"][0]["code"] == "PAT"


def test_official_siu_messages_keep_local_times_without_a_zone(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    for path in ("SIU/S12-sample-s12-v2.3.txt", "SIU/S13-sample-s13-v2.3.txt",
                 "SIU/S15-sample-s15-v2.3.txt"):
        assert ingestor.ingest(official(path)).status == "stored"
    [appointment] = appointments(store)
    assert appointment["status"] == "cancelled"
    assert "start" not in appointment
    assert appointment["requestedPeriod"] == [{"start": "2018-10-17"}]
    assert appointment["comment"] == "Scheduled for 2018-10-17 22:28 (sender's local time)"
    first = to_bundle(parse(official("SIU/S12-New-Appointment-v2.3.txt")))
    booked = entries(first, "Appointment")[0]["resource"]
    assert booked["status"] == "booked" and booked["minutesDuration"] == 15
    assert booked["comment"] == ("Scheduled for 2019-04-23 14:00 to 2019-04-23 14:15 "
                                 "(sender's local time)")


# ------------------------------------------------------------------------------ service fixes
def test_a_control_id_reused_with_different_content_is_refused(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(ORU_R01)
    before = counts(store)
    reused = ORU_R01.replace("||196|", "||210|")
    with pytest.raises(HL7Error) as caught:
        ingestor.ingest(reused)
    assert (caught.value.field, caught.value.code) == ("MSH-10", "207")
    assert "'LAB0042' was reused with different content" in caught.value.message
    assert counts(store) == before
    assert ingestor.ingest(ORU_R01).status == "duplicate"
    # Another sender may use the same control id.
    other = ORU_R01.replace("|LAB|GOOD HEALTH HOSPITAL|", "|LAB2|GOOD HEALTH HOSPITAL|")
    assert ingestor.ingest(other).status == "stored"


def test_a_lab_result_with_fewer_demographics_keeps_what_the_adt_stored(store: Store) -> None:
    ingestor = Hl7Ingestor(store)
    ingestor.ingest(ADT_A01)
    admitted = patient(store, "PATID1234")
    # The ORU's PID has the id and the name only.
    lab = ORU_R01.replace("||O\\T\\BRIEN^ADAM||19610615|M", "||O\\T\\BRIEN^ADAM")
    assert ingestor.ingest(lab).status == "stored"
    after = patient(store, "PATID1234")
    assert after["meta"]["versionId"] == "2"
    for element in ("birthDate", "gender", "address", "telecom", "maritalStatus"):
        assert after[element] == admitted[element], element
    assert after["name"] == [{"family": "O&BRIEN", "given": ["ADAM"]}]
    assert [i["value"] for i in after["identifier"]] == ["PATID1234", "123456789"]
    # What the message does carry wins.
    moved = ADT_A01.replace("MSG00001", "MSG00005").replace("2222 HOME STREET^^GREENSBORO",
                                                            "1 NEW ROAD^^DURHAM")
    ingestor.ingest(moved)
    assert patient(store, "PATID1234")["address"][0]["city"] == "DURHAM"
