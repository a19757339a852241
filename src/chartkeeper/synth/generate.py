"""Write the synthetic hospital: one transaction Bundle (or NDJSON lines) per patient, streamed,
deterministic for a seed, with the answer key kept apart from the FHIR output."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

from chartkeeper.synth import modules as m
from chartkeeper.synth.people import (
    FAMILY_NAMES,
    FEMALE_NAMES,
    MALE_NAMES,
    MRN_SYSTEM,
    SOPT_SYSTEM,
    SSN_SYSTEM,
    V2_IDENTIFIER_TYPE,
    Person,
    make_person,
)

Resource = dict[str, Any]
DEFAULT_AS_OF = date(2026, 1, 1)  # fixed, so that output never depends on the day it is run
FORMATS = ("bundles", "ndjson")
PRACTITIONERS = 20
HOSPITAL_NAME = "Chartkeeper General Hospital"
# Payers by coverage kind, with their PHDSC Source of Payment Typology code and display.
PAYERS: dict[str, tuple[str, str, str]] = {
    "medicare": ("Medicare (synthetic)", "1", "MEDICARE"),
    "medicaid": ("State Medicaid (synthetic)", "2", "MEDICAID"),
    "commercial": ("Evergreen Health Plan (synthetic)", "5", "PRIVATE HEALTH INSURANCE"),
    "self-pay": ("", "81", "Self-pay"),
}


class GenerateError(ValueError):
    """Bad arguments to the generator: a count out of range or an unusable output directory."""


@dataclass(frozen=True)
class Summary:
    patients: int
    resources: int
    out: Path


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _instant(day: date, minutes: int) -> str:
    moment = datetime.combine(day, time(8, 0), tzinfo=UTC) + timedelta(minutes=minutes)
    return moment.isoformat().replace("+00:00", "Z")


def _concept(system: str, code: str, display: str) -> Resource:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


@dataclass(frozen=True)
class Hospital:
    """The shared Organizations and Practitioners every patient's records point at."""

    organization_id: str
    payer_ids: dict[str, str]
    practitioner_ids: list[str]
    resources: list[Resource]


def build_hospital(seed: int) -> Hospital:
    rng = random.Random(f"chartkeeper-synth:{seed}:hospital")
    organization_id = _uuid(rng)
    resources: list[Resource] = [{
        "resourceType": "Organization", "id": organization_id, "active": True,
        "type": [_concept("http://terminology.hl7.org/CodeSystem/organization-type", "prov",
                          "Healthcare Provider")],
        "name": HOSPITAL_NAME,
    }]
    payer_ids: dict[str, str] = {}
    for kind, (name, _, _) in PAYERS.items():
        if not name:
            continue
        payer_ids[kind] = _uuid(rng)
        resources.append({
            "resourceType": "Organization", "id": payer_ids[kind], "active": True,
            "type": [_concept("http://terminology.hl7.org/CodeSystem/organization-type", "pay",
                              "Payer")],
            "name": name,
        })
    practitioner_ids = []
    for number in range(1, PRACTITIONERS + 1):
        gender = rng.choice(("female", "male"))
        practitioner_ids.append(_uuid(rng))
        resources.append({
            "resourceType": "Practitioner", "id": practitioner_ids[-1], "active": True,
            "identifier": [{"system": f"{MRN_SYSTEM}.2", "value": f"P{number:04d}"}],
            "name": [{"family": rng.choice(FAMILY_NAMES),
                      "given": [rng.choice(FEMALE_NAMES if gender == "female" else MALE_NAMES)],
                      "prefix": ["Dr."]}],
            "gender": gender,
        })
    return Hospital(organization_id, payer_ids, practitioner_ids, resources)


class _PatientBuilder:
    """Turns one person's course into FHIR resources with fresh ids and references."""

    def __init__(self, rng: random.Random, hospital: Hospital, person: Person,
                 as_of: date) -> None:
        self.rng = rng
        self.hospital = hospital
        self.person = person
        self.as_of = as_of
        self.resources: list[Resource] = []
        self.patient_ref = self._add({"resourceType": "Patient"})
        self.practitioner_ref = f"Practitioner/{rng.choice(hospital.practitioner_ids)}"

    def _add(self, resource: Resource) -> str:
        resource["id"] = _uuid(self.rng)
        self.resources.append(resource)
        return f"{resource['resourceType']}/{resource['id']}"

    def build(self, course: m.Course) -> list[Resource]:
        self.resources[0].update(self._patient())
        self._add(self._coverage())
        condition_refs: dict[str, str] = {}
        at_visits = {d.disease.key for visit in course.visits for d in visit.diagnosed}
        for diagnosis in course.diagnoses:
            if diagnosis.disease.key not in at_visits:  # diagnosed before the visits shown
                condition_refs[diagnosis.disease.key] = self._add(self._condition(diagnosis, None))
        for visit in course.visits:
            encounter_ref = self._add(self._encounter(visit))
            for diagnosis in visit.diagnosed:
                condition_refs[diagnosis.disease.key] = self._add(
                    self._condition(diagnosis, encounter_ref))
            for measure, value in visit.results:
                self._add(self._observation(measure, value, visit.day, encounter_ref))
            for drug, disease in visit.orders:
                self._add(self._medication_request(drug, condition_refs[disease.key],
                                                   visit.day, encounter_ref))
        return self.resources

    def _patient(self) -> Resource:
        p = self.person
        return {
            "identifier": [
                {"use": "usual", "type": _concept(V2_IDENTIFIER_TYPE, "MR",
                                                  "Medical record number"),
                 "system": MRN_SYSTEM, "value": p.mrn},
                {"use": "official", "type": _concept(V2_IDENTIFIER_TYPE, "SS",
                                                     "Social Security number"),
                 "system": SSN_SYSTEM, "value": p.ssn},
            ],
            "active": True,
            "name": [{"use": "official", "family": p.family, "given": [p.given]}],
            "telecom": [{"system": "phone", "value": p.phone, "use": "home"}],
            "gender": p.gender,
            "birthDate": p.birth_date.isoformat(),
            "address": [{"use": "home", "line": [p.line], "city": p.city, "state": p.state,
                         "postalCode": p.postal_code, "country": "US"}],
            "generalPractitioner": [{"reference": self.practitioner_ref}],
            "managingOrganization": {"reference": f"Organization/"
                                                  f"{self.hospital.organization_id}"},
        }

    def _coverage(self) -> Resource:
        kind = self.person.coverage
        _, code, display = PAYERS[kind]
        payer = (f"Organization/{self.hospital.payer_ids[kind]}"
                 if kind in self.hospital.payer_ids else self.patient_ref)
        start = max(self.person.birth_date, self.as_of - timedelta(days=365 * 5))
        return {
            "resourceType": "Coverage", "status": "active",
            "type": _concept(SOPT_SYSTEM, code, display),
            "beneficiary": {"reference": self.patient_ref},
            "relationship": _concept(
                "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self"),
            "period": {"start": start.isoformat()},
            "payor": [{"reference": payer}],
        }

    def _encounter(self, visit: m.Visit) -> Resource:
        code, display = (("185349003", "Encounter for check up (procedure)")
                         if visit.kind == "check-up" else ("390906007", "Follow-up encounter"))
        encounter: Resource = {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "type": [_concept(m.SNOMED, code, display)],
            "subject": {"reference": self.patient_ref},
            "participant": [{"individual": {"reference": self.practitioner_ref}}],
            "period": {"start": _instant(visit.day, 0), "end": _instant(visit.day, 30)},
            "serviceProvider": {"reference": f"Organization/{self.hospital.organization_id}"},
        }
        if visit.reasons:
            encounter["reasonCode"] = [_concept(m.SNOMED, d.snomed, d.snomed_display)
                                       for d in visit.reasons]
        return encounter

    def _condition(self, diagnosis: m.Diagnosis, encounter_ref: str | None) -> Resource:
        disease = diagnosis.disease
        condition: Resource = {
            "resourceType": "Condition",
            "clinicalStatus": _concept(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "verificationStatus": _concept(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed",
                "Confirmed"),
            "category": [_concept("http://terminology.hl7.org/CodeSystem/condition-category",
                                  "problem-list-item", "Problem List Item")],
            "code": {"coding": [
                {"system": m.ICD10CM, "code": disease.icd10cm, "display": disease.icd10cm_display},
                {"system": m.SNOMED, "code": disease.snomed, "display": disease.snomed_display},
            ], "text": disease.icd10cm_display},
            "subject": {"reference": self.patient_ref},
            "onsetDateTime": diagnosis.onset.isoformat(),
            "recordedDate": diagnosis.onset.isoformat(),
            "recorder": {"reference": self.practitioner_ref},
        }
        if encounter_ref is not None:
            condition["encounter"] = {"reference": encounter_ref}
        return condition

    def _quantity(self, measure: m.Measure, value: float) -> Resource:
        return {"value": value, "unit": measure.unit, "system": m.UCUM, "code": measure.unit}

    def _observation(self, measure: m.Measure, value: float | tuple[float, float], day: date,
                     encounter_ref: str) -> Resource:
        observation: Resource = {
            "resourceType": "Observation", "status": "final",
            "category": [_concept(
                "http://terminology.hl7.org/CodeSystem/observation-category", measure.category,
                "Vital Signs" if measure.category == "vital-signs" else "Laboratory")],
            "code": _concept(m.LOINC, measure.loinc, measure.display),
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": encounter_ref},
            "effectiveDateTime": _instant(day, 10),
        }
        if isinstance(value, tuple):
            observation["component"] = [
                {"code": _concept(m.LOINC, part.loinc, part.display),
                 "valueQuantity": self._quantity(part, number)}
                for part, number in ((m.SYSTOLIC, value[0]), (m.DIASTOLIC, value[1]))]
        else:
            observation["valueQuantity"] = self._quantity(measure, value)
        return observation

    def _medication_request(self, drug: m.Drug, condition_ref: str, day: date,
                            encounter_ref: str) -> Resource:
        return {
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": _concept(m.RXNORM, drug.rxnorm, drug.display),
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": encounter_ref},
            "authoredOn": _instant(day, 25),
            "requester": {"reference": self.practitioner_ref},
            "reasonReference": [{"reference": condition_ref}],
            "dosageInstruction": [{"text": drug.dosage}],
        }


def patient_records(seed: int, index: int, hospital: Hospital, as_of: date
                    ) -> tuple[Person, m.Course, list[Resource]]:
    """Patient number ``index``: the same (seed, index) always gives the same records."""
    rng = random.Random(f"chartkeeper-synth:{seed}:patient:{index}")
    person = make_person(rng, as_of)
    course = m.build_course(rng, person, as_of)
    return person, course, _PatientBuilder(rng, hospital, person, as_of).build(course)


def transaction_bundle(resources: list[Resource], method: str = "POST") -> Resource:
    """A transaction Bundle: POST entries with urn:uuid fullUrls and references rewritten to
    them, or PUT entries (for the shared resources) that keep their ids."""
    if method == "PUT":
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r,
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources]}
    local = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}
    entries = []
    for resource in resources:
        body = _rewrite_references({k: v for k, v in resource.items() if k != "id"}, local)
        entries.append({"fullUrl": local[f"{resource['resourceType']}/{resource['id']}"],
                        "resource": body,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _rewrite_references(node: Any, local: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: (local.get(value, value) if key == "reference" and isinstance(value, str)
                      else _rewrite_references(value, local)) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite_references(item, local) for item in node]
    return node


def answer_key_line(index: int, person: Person, course: m.Course) -> Resource:
    return {
        "index": index, "mrn": person.mrn, "mrnSystem": MRN_SYSTEM,
        "conditions": [{"condition": d.disease.key, "icd10cm": d.disease.icd10cm,
                        "snomed": d.disease.snomed, "onset": d.onset.isoformat()}
                       for d in course.diagnoses],
    }


def _dumps(document: Resource) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def check_arguments(patients: int, output_format: str) -> None:
    if type(patients) is not int or patients < 1:
        raise GenerateError(f"--patients must be 1 or more, got {patients}")
    if output_format not in FORMATS:
        raise GenerateError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}")


def prepare_output(out: Path) -> None:
    """Create ``out`` (empty) or raise GenerateError saying why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise GenerateError(f"--out {out} is not empty; give a new or empty directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GenerateError(f"--out {out} cannot be written: {exc.strerror or exc}") from exc


def generate(out: Path, patients: int, seed: int, *, output_format: str = "bundles",
             as_of: date = DEFAULT_AS_OF,
             on_patient: Callable[[int], None] | None = None) -> Summary:
    """Write ``patients`` patients to ``out``; output is byte-identical for the same arguments.

    ``bundles``: ``out/bundles/hospital.json`` (the shared Organizations and Practitioners, PUT)
    and ``out/bundles/patient-NNNNNN.json``. ``ndjson``: ``out/ndjson/<Type>.ndjson``. Either
    way the truth goes to ``out/answer-key.ndjson``, outside the folder to import.
    """
    check_arguments(patients, output_format)
    prepare_output(out)
    hospital = build_hospital(seed)
    folder = out / output_format
    folder.mkdir()
    total = len(hospital.resources)
    with (out / "answer-key.ndjson").open("w", encoding="utf-8", newline="\n") as key, \
            _Writer(folder, output_format) as writer:
        writer.shared(hospital.resources)
        for index, (person, course, resources) in enumerate(
                _patients(seed, patients, hospital, as_of), start=1):
            writer.patient(index, resources)
            key.write(_dumps(answer_key_line(index, person, course)) + "\n")
            total += len(resources)
            if on_patient is not None:
                on_patient(index)
    return Summary(patients, total, out)


def _patients(seed: int, patients: int, hospital: Hospital, as_of: date
              ) -> Iterator[tuple[Person, m.Course, list[Resource]]]:
    for index in range(1, patients + 1):
        yield patient_records(seed, index, hospital, as_of)


class _Writer:
    """Streams resources to bundle files or per-type NDJSON files."""

    def __init__(self, folder: Path, output_format: str) -> None:
        self.folder = folder
        self.output_format = output_format
        self.handles: dict[str, IO[str]] = {}

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self.handles.values():
            handle.close()

    def shared(self, resources: list[Resource]) -> None:
        if self.output_format == "bundles":
            self._write_file("hospital.json", transaction_bundle(resources, "PUT"))
        else:
            self._write_lines(resources)

    def patient(self, index: int, resources: list[Resource]) -> None:
        if self.output_format == "bundles":
            self._write_file(f"patient-{index:06d}.json", transaction_bundle(resources))
        else:
            self._write_lines(resources)

    def _write_file(self, name: str, bundle: Resource) -> None:
        (self.folder / name).write_text(_dumps(bundle) + "\n", encoding="utf-8")

    def _write_lines(self, resources: list[Resource]) -> None:
        for resource in resources:
            rtype = resource["resourceType"]
            if rtype not in self.handles:
                self.handles[rtype] = (self.folder / f"{rtype}.ndjson").open(
                    "w", encoding="utf-8", newline="\n")
            self.handles[rtype].write(_dumps(resource) + "\n")
