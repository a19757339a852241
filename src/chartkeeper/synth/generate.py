"""Write the synthetic hospital: one transaction Bundle (or NDJSON lines) per patient, streamed,
deterministic for a seed, with the answer key kept apart from the FHIR output."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

from chartkeeper.synth import billing
from chartkeeper.synth.assemble import build_course
from chartkeeper.synth.course import Course
from chartkeeper.synth.duplicates import DUPLICATE_RATE, register_again
from chartkeeper.synth.people import (
    FAMILY_NAMES,
    FEMALE_NAMES,
    MALE_NAMES,
    MRN_SYSTEM,
    Person,
    make_person,
)
from chartkeeper.synth.records import PAYERS, Hospital, PatientRecords, concept, new_id

Resource = dict[str, Any]
DEFAULT_AS_OF = date(2026, 1, 1)  # fixed, so that output never depends on the day it is run
FORMATS = ("bundles", "ndjson")
PRACTITIONERS = 20
HOSPITAL_NAME = "Chartkeeper General Hospital"


class GenerateError(ValueError):
    """Bad arguments to the generator: a count out of range or an unusable output directory."""


@dataclass(frozen=True)
class Summary:
    patients: int
    resources: int
    out: Path


def build_hospital(seed: int) -> Hospital:
    rng = random.Random(f"chartkeeper-synth:{seed}:hospital")
    organization_id = new_id(rng)
    hospital: Resource = {
        "resourceType": "Organization", "id": organization_id, "active": True,
        "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type", "prov",
                          "Healthcare Provider")],
        "name": HOSPITAL_NAME,
    }
    billing.hospital_billing(hospital)
    resources: list[Resource] = [hospital]
    payer_ids: dict[str, str] = {}
    for kind, (name, _, _) in PAYERS.items():
        if not name:
            continue
        payer_ids[kind] = new_id(rng)
        resources.append({
            "resourceType": "Organization", "id": payer_ids[kind], "active": True,
            "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type", "pay",
                              "Payer")],
            "name": name,
            "identifier": billing.payer_identifier(kind),
        })
    practitioner_ids, practitioner_names = [], []
    for number in range(1, PRACTITIONERS + 1):
        gender = rng.choice(("female", "male"))
        practitioner_ids.append(new_id(rng))
        family = rng.choice(FAMILY_NAMES)
        given = rng.choice(FEMALE_NAMES if gender == "female" else MALE_NAMES)
        practitioner_names.append(f"{given} {family}, MD")
        resources.append({
            "resourceType": "Practitioner", "id": practitioner_ids[-1], "active": True,
            "identifier": [{"system": f"{MRN_SYSTEM}.2", "value": f"P{number:04d}"},
                           {"system": billing.NPI_SYSTEM,
                            "value": billing.practitioner_npi(number)}],
            "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
            "gender": gender,
        })
    return Hospital(organization_id, payer_ids, practitioner_ids, practitioner_names,
                    resources)


def patient_records(seed: int, index: int, hospital: Hospital, as_of: date
                    ) -> tuple[Person, Course, list[Resource], Resource]:
    """Patient number ``index`` and its answer-key line: the same (seed, index) always gives
    the same records."""
    rng = random.Random(f"chartkeeper-synth:{seed}:patient:{index}")
    person = make_person(rng, as_of)
    course = build_course(rng, person, as_of)
    duplicate: Person | None = None
    changes: list[str] = []
    if rng.random() < DUPLICATE_RATE:
        duplicate, changes = register_again(rng, person, as_of)
    records = PatientRecords(rng, hospital, person, index, as_of)
    resources = records.build(course, duplicate)
    key = answer_key_line(index, person, course, records)
    if duplicate is not None:
        key["duplicates"] = [{"mrn": duplicate.mrn, "changes": changes}]
    return person, course, resources, key


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


def answer_key_line(index: int, person: Person, course: Course,
                    records: PatientRecords) -> Resource:
    """The truth about one patient, for measuring later work (never imported)."""
    return {
        "index": index, "mrn": person.mrn, "mrnSystem": MRN_SYSTEM,
        "conditions": [{"condition": d.disease.key, "icd10cm": d.disease.icd10cm,
                        "snomed": d.disease.snomed, "onset": d.onset.isoformat(),
                        **({"abated": d.abated.isoformat()} if d.abated else {})}
                       for d in course.diagnoses],
        "allergies": [a.key for a in course.allergies],
        "death": course.death.isoformat() if course.death else None,
        "encounters": records.encounters,
        "cancerAbstracts": course.abstracts,
        "duplicates": [],
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
        for index in range(1, patients + 1):
            _, _, resources, truth = patient_records(seed, index, hospital, as_of)
            writer.patient(index, resources)
            key.write(_dumps(truth) + "\n")
            total += len(resources)
            if on_patient is not None:
                on_patient(index)
    return Summary(patients, total, out)


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
