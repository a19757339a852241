"""The release-of-information tests' site: a store holding a small chart with ordinary and
sensitive records, and the accounting of disclosures beside it."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from chartkeeper.chart.authorization import ACT_CODE, Party
from chartkeeper.security.privacy import DisclosureLog, create_privacy_schema
from chartkeeper.store import Store

LOINC = "http://loinc.org"
MRN = "MRN-000417"
TODAY = date.today()
ATTORNEY = Party("Jane Smith", "Smith & Law LLP", "12 Court Street\nSpringfield, IL 62701")

Resource = dict[str, Any]


def text_document(doc_id: str, loinc: str, title: str, day: str, text: str,
                  patient: str = "p1", labels: tuple[str, ...] = ()) -> Resource:
    document: Resource = {
        "resourceType": "DocumentReference", "id": doc_id, "status": "current",
        "type": {"coding": [{"system": LOINC, "code": loinc, "display": title}]},
        "subject": {"reference": f"Patient/{patient}"}, "date": f"{day}T16:00:00Z",
        "author": [{"display": "Dr. Ann Osler"}],
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode()}}],
        "context": {"period": {"start": f"{day}T09:00:00Z"}}}
    if labels:
        document["meta"] = {"security": [{"system": ACT_CODE, "code": c} for c in labels]}
    return document


def condition(cid: str, text: str, onset: str, labels: tuple[str, ...] = ()) -> Resource:
    resource: Resource = {
        "resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "code": {"text": text}, "onsetDateTime": onset, "recordedDate": onset}
    if labels:
        resource["meta"] = {"security": [{"system": ACT_CODE, "code": c} for c in labels]}
    return resource


def observation(oid: str, text: str, value: float, unit: str, day: str) -> Resource:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"text": text}, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": f"{day}T10:00:00Z",
            "valueQuantity": {"value": value, "unit": unit},
            "referenceRange": [{"low": {"value": 90, "unit": unit},
                                "high": {"value": 130, "unit": unit}}]}


def encounter(eid: str, start: str) -> Resource:
    return {"resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "subject": {"reference": "Patient/p1"}, "period": {"start": f"{start}T09:00:00Z"}}


DISCHARGE_TEXT = "DISCHARGE SUMMARY. Community-acquired pneumonia, treated and resolved."
PROGRESS_TEXT = "PROGRESS NOTE. Blood pressure controlled on lisinopril."
RADIOLOGY_TEXT = "CHEST X-RAY. Lungs are clear."
SUD_TEXT = "ADDICTION COUNSELING NOTE. Alcohol use disorder, in early remission."
PSY_TEXT = "PSYCHIATRY NOTE. Generalized anxiety disorder follow-up."
OTHER_PATIENT_TEXT = "OTHER PATIENT NOTE. Must never be released with p1."

# The chart: what a 2023 attorney request for notes, problems and results should get, and
# everything that must stay out of it.
CHART: list[Resource] = [
    {"resourceType": "Organization", "id": "hosp", "name": "Springfield General Hospital",
     "address": [{"line": ["1 Hospital Drive"], "city": "Springfield", "state": "IL",
                  "postalCode": "62702"}],
     "telecom": [{"system": "phone", "value": "217-555-0100"}]},
    {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-04",
     "name": [{"use": "official", "family": "Lopez", "given": ["Maria"]}],
     "identifier": [{"type": {"coding": [{
         "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
         "system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": MRN}],
     "address": [{"line": ["4 Elm Street"], "city": "Springfield", "state": "IL"}],
     "managingOrganization": {"reference": "Organization/hosp"}},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Other", "given": ["Olga"]}]},
    encounter("e1", "2023-02-01"), encounter("e2", "2023-08-15"), encounter("e3", "2024-03-10"),
    text_document("d1", "18842-5", "Discharge summary", "2023-02-03", DISCHARGE_TEXT),
    text_document("d2", "11506-3", "Progress note", "2023-08-15", PROGRESS_TEXT),
    text_document("d3", "18748-4", "Diagnostic imaging study", "2024-03-10", RADIOLOGY_TEXT),
    text_document("d4", "11506-3", "Addiction counseling note", "2023-09-01", SUD_TEXT,
                  labels=("ETH",)),
    text_document("d5", "11506-3", "Psychiatry note", "2023-10-01", PSY_TEXT, labels=("PSY",)),
    text_document("x1", "11506-3", "Progress note", "2023-05-05", OTHER_PATIENT_TEXT,
                  patient="p2"),
    condition("c1", "Essential hypertension", "2019-06-01"),
    condition("c2", "Pneumonia", "2023-02-01"),
    condition("c3", "Alcohol use disorder", "2023-09-01", labels=("ETH",)),
    observation("o1", "Systolic blood pressure", 128, "mm[Hg]", "2023-08-15"),
    observation("o2", "Systolic blood pressure", 141, "mm[Hg]", "2024-03-10"),
    {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
     "medicationCodeableConcept": {"text": "Lisinopril 10 mg tablet"},
     "subject": {"reference": "Patient/p1"}, "authoredOn": "2023-08-15",
     "dosageInstruction": [{"text": "1 tablet by mouth daily"}]},
]
REQUESTED_TYPES = ("18842-5", "11506-3", "Condition", "Observation")
YEAR_2023 = ("2023-01-01", "2023-12-31")
# Inside the 2023 attorney request, not sensitive.
IN_SCOPE = {"DocumentReference/d1", "DocumentReference/d2", "Condition/c2", "Observation/o1"}


@dataclass
class Site:
    store: Store
    log: DisclosureLog

    def counts(self) -> dict[str, int]:
        return self.store.row_counts()


def open_site(database_url: str) -> Site:
    store = Store(database_url)
    store.create_schema()
    create_privacy_schema(store.engine)
    with store.write() as txn:
        for resource in CHART:
            txn.update(resource["resourceType"], resource["id"], dict(resource))
    return Site(store, DisclosureLog(store.engine))


def days(n: int) -> date:
    return TODAY + timedelta(days=n)
