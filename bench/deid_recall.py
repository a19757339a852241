"""Recall and precision of Safe Harbor de-identification on a planted corpus, and its speed.

Builds synthetic patients (FHIR R4 resources) with planted instances of the 18 Safe Harbor
identifier classes (45 CFR 164.514(b)(2)(i)(A)-(R)) in structured fields and in clinical notes,
written in the clinician's voice around paragraphs of the real synthetic visit notes in
../shared/data/notes (MTS-Dialog and ACI-Bench, CC BY 4.0) when present. Reports, per class,
the share of planted values whose every letter and digit was found (recall), the share of
findings that overlap a planted value (precision; the carrier notes hold unplanted names and
dates of their own, so this is a lower bound), how many clinical words survived, and notes/s.

    .venv/bin/python bench/deid_recall.py --notes 2000
    .venv/bin/python bench/deid_recall.py --notes 2000 --no-record-terms   # patterns only

The tests import ``planted_corpus`` and ``score`` from here (tests/security/test_deid.py).
"""

from __future__ import annotations

import argparse
import base64
import csv
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from chartkeeper.security.deid import (  # noqa: E402
    PatientTerms,
    SafeHarborDeidentifier,
    redact,
)

NOTES_DIR = REPO.parent / "shared" / "data" / "notes" / "ms_clinical_visit_note_corpus" / "data"
AS_OF = date(2026, 1, 1)

#: The Safe Harbor identifier classes, by the letter of 164.514(b)(2)(i).
CLASSES: dict[str, str] = {
    "A": "names", "B": "geographic subdivisions", "C": "dates", "C-age": "ages over 89",
    "D": "telephone numbers", "E": "fax numbers", "F": "email addresses",
    "G": "social security numbers", "H": "medical record numbers",
    "I": "health plan beneficiary numbers", "J": "account numbers",
    "K": "certificate/license numbers", "L": "vehicle identifiers", "M": "device identifiers",
    "N": "URLs", "O": "IP addresses", "P": "biometric identifiers", "Q": "full-face photos",
    "R": "other unique identifying numbers",
}
#: Words a de-identified note must keep (diseases named after people, drugs, findings).
CLINICAL_TERMS = (
    "Parkinson", "Down syndrome", "Alzheimer", "Crohn", "Hodgkin", "Cushing", "Graves",
    "Bell's palsy", "metformin", "lisinopril", "atorvastatin", "levothyroxine", "warfarin",
    "amoxicillin", "hypertension", "diabetes", "creatinine", "hemoglobin A1c",
)

FIRST = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
         "Sarah", "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa", "Matthew",
         "Margaret", "Anthony", "Sandra", "Donald", "Ashley", "Hiroshi", "Aaliyah", "Oksana",
         "Mateo", "Priya", "Tobias", "Imani", "Ingrid", "Rafael", "Yusuf")
LAST = ("Smith", "Johnson", "Williams", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
        "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
        "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis",
        "Robinson", "Walker", "Young", "Allen", "King", "Okafor", "Nakamura", "Kowalski",
        "Fitzgerald", "Abernathy", "Delacroix", "Vasquez", "Lindqvist", "Oyelaran", "Brennan")
STREETS = ("Elm", "Maple", "Oak", "Washington", "Lincoln", "Highland", "Chestnut", "Sumner",
           "Birch Hollow", "Prospect", "Riverside", "Mill Pond", "Cedar Ridge", "Fairview")
SUFFIXES = ("St", "Street", "Ave", "Avenue", "Rd", "Road", "Lane", "Ln", "Dr", "Drive", "Ct",
            "Blvd", "Way", "Terrace", "Place")
# city, state, ZIP, county: the last rows are in restricted three-digit ZIP areas.
PLACES = (
    ("Springfield", "MA", "01103", "Hampden"), ("Northampton", "MA", "01060", "Hampshire"),
    ("Worcester", "MA", "01608", "Worcester"), ("Hartford", "CT", "06106", "Hartford"),
    ("Albany", "NY", "12208", "Albany"), ("Burlington", "VT", "05401", "Chittenden"),
    ("Portland", "ME", "04101", "Cumberland"), ("Providence", "RI", "02903", "Providence"),
    ("Scranton", "PA", "18503", "Lackawanna"), ("Dayton", "OH", "45402", "Montgomery"),
    ("Acworth", "NH", "03601", "Sullivan"), ("Averill", "VT", "05901", "Essex"),
    ("Valentine", "NE", "69201", "Cherry"), ("Rawlins", "WY", "82301", "Carbon"),
    ("Socorro", "NM", "87801", "Socorro"), ("Ely", "NV", "89301", "White Pine"),
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
CONDITIONS = (("49049000", "Parkinson's disease"), ("41040004", "Down syndrome"),
              ("26929004", "Alzheimer's disease"), ("34000006", "Crohn's disease"),
              ("38341003", "Hypertension"), ("44054006", "Type 2 diabetes mellitus"))


@dataclass
class PlantedNote:
    """A note and where its planted identifiers are: (start, end, class)."""

    text: str = ""
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, *segments: str | tuple[str, str]) -> None:
        for segment in segments:
            if isinstance(segment, tuple):
                kind, value = segment
                self.spans.append((len(self.text), len(self.text) + len(value), kind))
                self.text += value
            else:
                self.text += segment


@dataclass
class PlantedPatient:
    """One synthetic record: its resources, the identifiers planted in structured fields
    (class, exact value), and its notes (also embedded in the resources)."""

    resources: list[dict[str, Any]]
    structured: list[tuple[str, str]]
    notes: list[PlantedNote]
    patient_id: str
    birth_date: str


def carrier_paragraphs(limit: int = 4000) -> list[str]:
    """Paragraphs of real synthetic visit notes (no planted identifiers), if the data is here."""
    paragraphs: list[str] = []
    sources = [(NOTES_DIR / "mts-dialog" / "MTS_Dataset_TrainingSet.csv", "section_text"),
               (NOTES_DIR / "aci-bench" / "challenge_data" / "train.csv", "note")]
    for path, column in sources:
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                for paragraph in row[column].split("\n\n"):
                    paragraph = " ".join(paragraph.split())
                    if 80 <= len(paragraph) <= 900:
                        paragraphs.append(paragraph)
    if not paragraphs:
        paragraphs = ["Patient reports intermittent chest pain on exertion relieved by rest. "
                      "No fever, chills, nausea or vomiting. Lungs clear to auscultation."]
    return paragraphs[:limit]


@dataclass
class _Person:
    """The identifiers one synthetic patient carries, in one place."""

    rng: random.Random
    index: int
    first: str = ""
    middle: str = ""
    last: str = ""
    spouse_first: str = ""
    daughter: str = ""
    age: int = 0
    birth: date = AS_OF
    street: str = ""
    apt: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    county: str = ""
    phone: str = ""
    fax: str = ""
    email: str = ""
    ssn: str = ""
    mrn: str = ""
    plan: str = ""
    account: str = ""
    license: str = ""
    certificate: str = ""
    vin: str = ""
    plate: str = ""
    serial: str = ""
    udi: str = ""
    url: str = ""
    ip: str = ""
    biometric: str = ""
    photo: str = ""
    other: str = ""
    visit: date = AS_OF

    def __post_init__(self) -> None:
        r = self.rng
        self.first, self.last = r.choice(FIRST), r.choice(LAST)
        self.middle = r.choice(FIRST)
        self.spouse_first = r.choice([f for f in FIRST if f != self.first])
        self.daughter = r.choice([f for f in FIRST if f not in (self.first, self.spouse_first)])
        self.age = r.choice([r.randint(18, 89), r.randint(18, 89), r.randint(90, 104)])
        self.birth = date(AS_OF.year - self.age - 1, r.randint(1, 12), r.randint(1, 28))
        self.visit = date(r.randint(2015, 2025), r.randint(1, 12), r.randint(1, 28))
        self.street = f"{r.randint(2, 9899)} {r.choice(STREETS)} {r.choice(SUFFIXES)}"
        self.apt = f"Apt {r.randint(1, 40)}{r.choice('ABCD')}"
        self.city, self.state, self.zip, self.county = r.choice(PLACES)
        area = r.choice(("413", "617", "508", "860", "802", "212", "603"))
        self.phone = f"{area}-555-{r.randint(100, 9999):04d}"
        self.fax = f"{area}-555-{r.randint(100, 9999):04d}"
        self.email = (f"{self.first.lower()}.{self.last.lower()}{r.randint(1, 99)}@"
                      f"{r.choice(('example.com', 'mail.example.org', 'inbox.example.net'))}")
        self.ssn = f"{r.randint(100, 665)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"
        self.mrn = f"{r.randint(1000000, 99999999)}"
        self.plan = f"{r.choice(('XEK', 'W', 'HPN', 'MA'))}{r.randint(10**7, 10**10)}"
        self.account = f"{r.randint(10000, 99999)}-{r.randint(100, 999)}-{r.randint(10, 99)}"
        self.license = f"S{r.randint(10**7, 10**8 - 1)}"
        self.certificate = f"BC-{self.birth.year}-{r.randint(100000, 999999)}"
        self.vin = "".join(r.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(14)) + \
            f"{r.randint(100, 999)}"
        letters = "".join(r.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
        self.plate = f"{r.randint(1, 9)}{letters}{r.randint(100, 999)}"
        self.serial = f"PM-{r.randint(10000, 99999)}-{r.choice('XYZ')}"
        self.udi = f"(01){r.randint(10**13, 10**14 - 1)}(17){r.randint(200101, 291231)}" \
                   f"(10)A{r.randint(100, 999)}B{r.randint(1, 9)}"
        self.url = r.choice((f"https://www.facebook.com/{self.first.lower()}.{self.last.lower()}"
                             f".{r.randint(10, 9999)}",
                             f"http://{self.first.lower()}{self.last.lower()}blog.example.org/about",
                             f"www.{self.last.lower()}-family-{r.randint(10, 99)}.com"))
        ipv4 = ".".join(str(r.randint(lo, hi)) for lo, hi in ((11, 223), (0, 255), (0, 255),
                                                                 (1, 254)))
        self.ip = r.choice((ipv4, f"2001:db8:{r.randint(1, 9999):x}::{r.randint(1, 9999):x}"))
        self.biometric = f"FP-{r.randint(10**7, 10**8 - 1)}"
        self.photo = f"IMG_{self.visit:%Y%m%d}_{r.randint(100000, 235959)}.jpg"
        self.other = f"SP-{self.visit.year}-{r.randint(10000, 99999)}"

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


def _date_text(rng: random.Random, d: date) -> str:
    month = MONTHS[d.month - 1]
    return rng.choice((
        f"{d:%m/%d/%Y}", f"{d.month}/{d.day}/{d:%y}", f"{month} {d.day}, {d.year}",
        f"{d.day}-{month[:3]}-{d.year}", f"{d:%Y-%m-%d}", f"{month[:3]} {d.year}",
        f"{d.day} {month} {d.year}", f"{month} {d.day}", f"{d:%m/%Y}",
        f"{month[:3]}. {d.day}, {d.year}", f"{d.day}{_ordinal(d.day)} of {month}, {d.year}",
    ))


def _ordinal(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _phone_text(rng: random.Random, phone: str) -> str:
    digits = phone.replace("-", "")
    return rng.choice((phone, f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                       f"{digits[:3]}.{digits[3:6]}.{digits[6:]}",
                       f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}", digits))


def _age_text(rng: random.Random, age: int) -> str:
    return rng.choice((f"{age}-year-old", f"{age} y/o", f"{age} yo", f"{age} year old",
                       f"{age} years old", f"{age} y.o."))


def _sentences(p: _Person) -> Iterator[tuple[str | tuple[str, str], ...]]:
    """Sentences in the clinician's voice, each planting some identifiers (class, value)."""
    r = p.rng
    age: str | tuple[str, str] = (("C-age", _age_text(r, p.age)) if p.age >= 90
                                  else _age_text(r, p.age))
    sex = r.choice(("male", "female", "man", "woman"))
    yield ("Pt ", ("A", p.name), ", ", age, " ", sex, ", seen ", ("C", _date_text(r, p.visit)),
           " for follow-up.")
    yield ("Lives at ", ("B", p.street), ", ", ("B", p.apt), ", ", ("B", p.city), ", ", p.state,
           " ", ("B", p.zip), ".")
    yield ("Resides in ", ("B", p.county), " County with his wife ", ("A", p.spouse_first),
           "; daughter ", ("A", p.daughter), " visits on weekends.")
    yield ("MRN ", ("H", p.mrn), r.choice((". ", "; ", ", ")), "DOB: ",
           ("C", _date_text(r, p.birth)), ".")
    yield (r.choice(("Call ", "Best contact ", "Reach pt at ")), ("D", _phone_text(r, p.phone)),
           "; fax records to ", ("E", _phone_text(r, p.fax)), ".")
    yield ("Email ", ("F", p.email), " for portal questions.")
    yield ("SSN ", ("G", r.choice((p.ssn, p.ssn.replace("-", " "), p.ssn.replace("-", "")))),
           " verified at registration.")
    yield (r.choice(("Insurance member ID ", "Medicaid # ", "Policy number ", "Subscriber ID: ")),
           ("I", p.plan), ".")
    yield (r.choice(("Billing account # ", "Acct no. ", "Account number ")), ("J", p.account),
           " has a balance.")
    yield ("Driver's license ", ("K", p.license), " and birth certificate number ",
           ("K", p.certificate), " on file.")
    yield ("Drove in today, VIN ", ("L", p.vin), r.choice((", license plate ", ", plate # ")),
           ("L", p.plate), ".")
    yield ("Pacemaker serial no. ", ("M", p.serial), ", UDI ", ("M", p.udi), ".")
    yield ("Pt blog: ", ("N", p.url), " — discussed privacy.")
    yield ("Portal login from IP ", ("O", p.ip), " flagged by security.")
    yield ("Fingerprint ID ", ("P", p.biometric), " used for med cabinet access.")
    yield ("Wound photo ", ("Q", p.photo), " uploaded to chart.")
    yield ("Enrolled in study, participant ", ("R", p.other), ".")
    yield ("Mr./Ms. ", ("A", p.last), " agrees with plan; discussed with ", ("A", p.first),
           " and spouse ", ("A", f"{p.spouse_first} {p.last}"), ".")
    yield ("Next visit ", ("C", _date_text(r, date(p.visit.year + 1, p.visit.month, 3))),
           "; age at that visit: ", age, ".")
    yield ("History of Parkinson disease and Down syndrome in a sibling; on metformin, "
           "lisinopril, atorvastatin and levothyroxine. Creatinine stable, hemoglobin A1c 7.1.",)


def planted_note(p: _Person, carriers: Sequence[str], sentences: int = 8) -> PlantedNote:
    """A note: real carrier paragraphs with a random choice of planted sentences between."""
    r = p.rng
    bank = list(_sentences(p))
    chosen = [bank[0], *r.sample(bank[1:-1], min(sentences, len(bank) - 2)), bank[-1]]
    note = PlantedNote()
    for i, sentence in enumerate(chosen):
        note.add(*sentence, " ")
        if i % 3 == 2:
            note.add(r.choice(carriers), "\n\n")
    return note


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def planted_patient(index: int, rng: random.Random, carriers: Sequence[str],
                    notes: int = 2) -> PlantedPatient:
    """One patient with every identifier class in structured fields and ``notes`` notes."""
    p = _Person(rng, index)
    pid, sid = f"pat-{index:05d}", f"{index:05d}"
    written = [planted_note(p, carriers) for _ in range(notes)]
    visit = f"{p.visit:%Y-%m-%d}"
    subject = {"reference": f"Patient/{pid}", "display": p.name}
    condition = rng.choice(CONDITIONS)
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": pid,
        "meta": {"versionId": "3", "lastUpdated": f"{visit}T10:15:00Z",
                 "source": f"http://ehr.example.org/source/{p.mrn}"},
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{p.name}, MRN {p.mrn}</div>'},
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
             "valueString": f"{rng.choice(FIRST)} {rng.choice(LAST)}"},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
             "valueAddress": {"city": p.city, "state": p.state, "country": "US"}},
            {"url": "http://example.org/fhir/StructureDefinition/portal-login",
             "valueString": f"last login {p.visit:%m/%d/%Y} from {p.ip}"},
            {"url": "http://example.org/fhir/StructureDefinition/vehicle",
             "valueString": f"VIN {p.vin}, plate {p.plate}"},
        ],
        "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                  "code": "MR"}]},
             "system": "http://hospital.example.org/mrn", "value": p.mrn},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": p.ssn},
            {"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": p.license},
            {"system": "http://example.org/birth-certificate", "value": p.certificate},
            {"system": "http://example.org/biometric/fingerprint", "value": p.biometric},
            {"system": "http://example.org/study", "value": p.other},
        ],
        "name": [{"use": "official", "family": p.last, "given": [p.first, p.middle],
                  "prefix": ["Mr."]}],
        "telecom": [{"system": "phone", "value": p.phone, "use": "home"},
                    {"system": "fax", "value": p.fax},
                    {"system": "email", "value": p.email},
                    {"system": "url", "value": p.url}],
        "gender": "unknown",
        "birthDate": f"{p.birth:%Y-%m-%d}",
        "_birthDate": {"extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
             "valueDateTime": f"{p.birth:%Y-%m-%d}T04:12:00-05:00"}]},
        "address": [{
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                           "extension": [{"url": "latitude", "valueDecimal": 42.1015},
                                         {"url": "longitude", "valueDecimal": -72.5898}]}],
            "use": "home", "line": [p.street, p.apt], "city": p.city, "district": p.county,
            "state": p.state, "postalCode": p.zip, "country": "US"}],
        "photo": [{"contentType": "image/jpeg", "data": _b64(f"JFIF face of {p.name}"),
                   "title": p.photo}],
        "contact": [{"name": {"family": p.last, "given": [p.spouse_first]},
                     "telecom": [{"system": "phone", "value": p.phone}]}],
        "managingOrganization": {"reference": "Organization/org-1"},
    }
    spouse = {
        "resourceType": "RelatedPerson", "id": f"rp-{sid}", "patient": subject,
        "name": [{"family": p.last, "given": [p.spouse_first]}],
        "telecom": [{"system": "phone", "value": p.phone}],
        "birthDate": f"{p.birth.year + 2}-{p.birth.month:02d}-{p.birth.day:02d}",
    }
    encounter = {
        "resourceType": "Encounter", "id": f"enc-{sid}", "status": "finished",
        "identifier": [{"system": "http://hospital.example.org/visit", "value": p.account}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": subject,
        "period": {"start": f"{visit}T09:00:00-05:00", "end": f"{visit}T09:40:00-05:00"},
        "serviceProvider": {"reference": "Organization/org-1"},
        "participant": [{"individual": {"reference": "Practitioner/prac-1"}}],
    }
    age_observation = {
        "resourceType": "Observation", "id": f"age-{sid}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0", "display": "Age"}]},
        "subject": subject, "encounter": {"reference": f"Encounter/enc-{sid}"},
        "effectiveDateTime": f"{visit}T09:05:00-05:00", "issued": f"{visit}T09:06:00Z",
        "valueQuantity": {"value": p.age, "unit": "a", "system": "http://unitsofmeasure.org",
                          "code": "a"},
    }
    note_observation = {
        "resourceType": "Observation", "id": f"note-{sid}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "34109-9",
                             "display": "Note"}], "text": f"Note for {p.name}"},
        "subject": subject, "effectiveDateTime": visit, "valueString": written[0].text,
        "note": [{"authorString": "Dr. Anil Kumar", "time": f"{visit}T11:00:00Z",
                  "text": f"Reviewed with {p.first} on {p.visit:%m/%d/%Y}."}],
    }
    condition_resource = {
        "resourceType": "Condition", "id": f"cond-{sid}",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": condition[0],
                             "display": condition[1]}], "text": condition[1]},
        "subject": subject, "onsetDateTime": f"{p.visit.year - 3}-{p.visit.month:02d}-11",
        "recordedDate": visit,
    }
    coverage = {
        "resourceType": "Coverage", "id": f"cov-{sid}", "status": "active",
        "identifier": [{"system": "http://payer.example.org/member", "value": p.plan}],
        "subscriberId": p.plan, "beneficiary": {"reference": f"Patient/{pid}"},
        "payor": [{"reference": "Organization/org-1"}],
        "period": {"start": f"{p.visit.year}-01-01"},
    }
    account = {
        "resourceType": "Account", "id": f"acct-{sid}", "status": "active",
        "identifier": [{"system": "http://hospital.example.org/account", "value": p.account}],
        "subject": [{"reference": f"Patient/{pid}"}], "name": f"Account of {p.name}",
    }
    device = {
        "resourceType": "Device", "id": f"dev-{sid}",
        "identifier": [{"system": "http://example.org/device", "value": p.serial}],
        "udiCarrier": [{"deviceIdentifier": p.udi[4:18], "carrierHRF": p.udi}],
        "serialNumber": p.serial, "lotNumber": f"LOT{p.mrn}",
        "manufactureDate": f"{p.visit.year - 1}-06-15T00:00:00Z",
        "patient": {"reference": f"Patient/{pid}"},
    }
    media = {
        "resourceType": "Media", "id": f"media-{sid}", "status": "completed",
        "subject": {"reference": f"Patient/{pid}"}, "createdDateTime": f"{visit}T09:20:00Z",
        "content": {"contentType": "image/jpeg", "data": _b64(f"JFIF full face {p.name}"),
                    "title": p.photo, "url": f"https://pacs.example.org/{p.mrn}/face.jpg"},
    }
    documents = [{
        "resourceType": "DocumentReference", "id": f"doc-{sid}-{k}", "status": "current",
        "subject": subject, "date": f"{visit}T12:00:00Z",
        "author": [{"reference": "Practitioner/prac-1"}],
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": _b64(note.text), "title": f"Visit note {visit}",
                                    "creation": f"{visit}T12:00:00-05:00"}}],
        "context": {"encounter": [{"reference": f"Encounter/enc-{sid}"}]},
    } for k, note in enumerate(written)]
    structured = [
        ("A", p.first), ("A", p.last), ("A", p.middle), ("A", p.spouse_first),
        ("B", p.street), ("B", p.apt), ("B", p.city), ("B", p.zip), ("B", p.county),
        ("B", "42.1015"), ("C", f"{p.birth:%Y-%m-%d}"), ("C", visit),
        ("C", f"{p.visit:%m/%d/%Y}"), ("D", p.phone), ("E", p.fax), ("F", p.email),
        ("G", p.ssn), ("H", p.mrn), ("I", p.plan), ("J", p.account), ("K", p.license),
        ("K", p.certificate), ("L", p.vin), ("L", p.plate), ("M", p.serial), ("M", p.udi),
        ("M", f"LOT{p.mrn}"), ("N", p.url), ("O", p.ip), ("P", p.biometric),
        ("Q", _b64(f"JFIF face of {p.name}")), ("Q", p.photo), ("R", p.other),
        ("R", pid), ("R", f"rp-{sid}"), ("R", f"enc-{sid}"), ("R", f"doc-{sid}-0"),
    ]
    if p.age >= 90:
        structured.append(("C-age", str(p.birth.year)))
    resources = [patient, spouse, encounter, age_observation, note_observation,
                 condition_resource, coverage, account, device, media, *documents]
    return PlantedPatient(resources, structured, written, pid, f"{p.birth:%Y-%m-%d}")


def shared_resources() -> list[dict[str, Any]]:
    """The organization and practitioner every synthetic patient cites."""
    return [
        {"resourceType": "Organization", "id": "org-1", "name": "Springfield General Hospital",
         "address": [{"line": ["759 Chestnut St"], "city": "Springfield", "state": "MA",
                      "postalCode": "01199"}],
         "telecom": [{"system": "phone", "value": "413-794-0000"}]},
        {"resourceType": "Practitioner", "id": "prac-1",
         "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9999974592"}],
         "name": [{"family": "Kumar", "given": ["Anil"], "prefix": ["Dr."]}]},
    ]


def planted_corpus(patients: int, seed: int = 20261129, notes_per_patient: int = 2,
                   carriers: Sequence[str] | None = None) -> list[PlantedPatient]:
    """``patients`` planted patients, the same for the same seed."""
    rng = random.Random(seed)
    paragraphs = list(carriers) if carriers is not None else carrier_paragraphs()
    return [planted_patient(i, rng, paragraphs, notes_per_patient) for i in range(patients)]


@dataclass
class Report:
    """Recall per class, precision, clinical words kept, speed."""

    planted: Counter[str] = field(default_factory=Counter)
    caught: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[str, str]] = field(default_factory=list)
    findings: int = 0
    on_planted: int = 0
    unplanted: Counter[str] = field(default_factory=Counter)
    terms_seen: int = 0
    terms_kept: int = 0
    notes: int = 0
    seconds: float = 0.0

    @property
    def recall(self) -> float:
        return sum(self.caught.values()) / max(1, sum(self.planted.values()))

    @property
    def precision(self) -> float:
        return self.on_planted / max(1, self.findings)

    @property
    def terms_kept_share(self) -> float:
        return self.terms_kept / max(1, self.terms_seen)


def score(deid: SafeHarborDeidentifier, corpus: Sequence[PlantedPatient],
          record_terms: bool = True) -> Report:
    """Run ``find_phi`` on every planted note (with the patient's deny-list unless told not)."""
    report = Report()
    started = time.perf_counter()
    for patient in corpus:
        terms = deid.terms_for(patient.resources) if record_terms else PatientTerms.empty()
        for note in patient.notes:
            findings = deid.find_phi(note.text, terms)
            report.notes += 1
            covered = bytearray(len(note.text))
            for f in findings:
                covered[f.start:f.end] = b"\1" * (f.end - f.start)
            for start, end, kind in note.spans:
                report.planted[kind] += 1
                if all(covered[i] for i in range(start, end) if note.text[i].isalnum()):
                    report.caught[kind] += 1
                else:
                    report.missed.append((kind, note.text[start:end]))
            for f in findings:
                report.findings += 1
                if any(s < f.end and f.start < e for s, e, _ in note.spans):
                    report.on_planted += 1
                else:
                    report.unplanted[f"{f.entity}: {note.text[f.start:f.end]}"] += 1
            scrubbed = redact(note.text, findings)
            for term in CLINICAL_TERMS:
                seen = note.text.count(term)
                report.terms_seen += seen
                report.terms_kept += min(seen, scrubbed.count(term))
    report.seconds = time.perf_counter() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=2000, help="notes to generate")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--no-record-terms", action="store_true",
                        help="patterns only: no deny-list from the patient's own record")
    args = parser.parse_args()
    built = time.perf_counter()
    deid = SafeHarborDeidentifier(b"bench-key-bench-key-bench-key-32", as_of=AS_OF)
    print(f"analyzer built in {time.perf_counter() - built:.1f} s")
    corpus = planted_corpus((args.notes + 1) // 2, seed=args.seed)
    report = score(deid, corpus, record_terms=not args.no_record_terms)
    print(f"{'class':<7} {'identifier':<34} {'planted':>8} {'found':>8} {'recall':>8}")
    for kind, label in CLASSES.items():
        n = report.planted[kind]
        if n:
            print(f"{kind:<7} {label:<34} {n:>8} {report.caught[kind]:>8} "
                  f"{report.caught[kind] / n:>8.4f}")
    print(f"overall recall {report.recall:.4f} "
          f"({sum(report.caught.values())}/{sum(report.planted.values())})")
    print(f"precision (findings on a planted value) {report.precision:.4f} "
          f"({report.on_planted}/{report.findings}; carrier notes hold unplanted PHI)")
    print(f"clinical words kept {report.terms_kept_share:.4f} "
          f"({report.terms_kept}/{report.terms_seen})")
    print(f"{report.notes} notes in {report.seconds:.1f} s: "
          f"{report.notes / report.seconds:.1f} notes/s (one core, incl. deny-list build)")
    for kind, value in report.missed[:20]:
        print(f"  missed {kind}: {value!r}")
    for text, n in report.unplanted.most_common(15):
        print(f"  unplanted finding x{n}: {text!r}")
    flags = " --no-record-terms" if args.no_record_terms else ""
    print(f"reproduce: .venv/bin/python bench/deid_recall.py --notes {args.notes} "
          f"--seed {args.seed}{flags}")


if __name__ == "__main__":
    main()
