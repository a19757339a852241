"""A patient's course as FHIR R4 resources, and the answer key that goes with them.

Every encounter and document carries a hospital identifier (visit number, document number)
so that the answer key, written apart from the records, can name them after the store has
given them ids of its own. Chart deficiencies are made here: some notes are left unsigned
(``docStatus`` preliminary, no authenticator) and some stays lack their discharge summary.
"""

from __future__ import annotations

import base64
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from chartkeeper.synth import billing, notes
from chartkeeper.synth.course import (
    AMBULATORY,
    CVX,
    EMERGENCY,
    HCPCS,
    ICD10CM,
    ICD10PCS,
    INPATIENT,
    LOINC,
    RXNORM,
    SNOMED,
    UCUM,
    Course,
    Diagnosis,
    Disease,
    Drug,
    Measure,
    Note,
    Procedure,
    Visit,
)
from chartkeeper.synth.modules import DIASTOLIC, SYSTOLIC
from chartkeeper.synth.people import (
    MRN_SYSTEM,
    SOPT_SYSTEM,
    SSN_SYSTEM,
    V2_IDENTIFIER_TYPE,
    Person,
)

Resource = dict[str, Any]
ENCOUNTER_SYSTEM = f"{MRN_SYSTEM}.3"  # visit (account) numbers
DOCUMENT_SYSTEM = f"{MRN_SYSTEM}.4"  # document numbers
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# Payers by coverage kind, with their PHDSC Source of Payment Typology code and display.
PAYERS: dict[str, tuple[str, str, str]] = {
    "medicare": ("Medicare (synthetic)", "1", "MEDICARE"),
    "medicaid": ("State Medicaid (synthetic)", "2", "MEDICAID"),
    "commercial": ("Evergreen Health Plan (synthetic)", "5", "PRIVATE HEALTH INSURANCE"),
    "self-pay": ("", "81", "Self-pay"),
}
CLASS_DISPLAY = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter",
                 "OBSENC": "observation encounter"}
# Encounter.type (SNOMED CT) by visit kind; kinds not listed use their class's default.
VISIT_TYPES = {
    "check-up": ("185349003", "Encounter for check up (procedure)"),
    "follow-up": ("390906007", "Follow-up encounter (procedure)"),
    "AMB": ("185345009", "Encounter for symptom (procedure)"),
    "EMER": ("50849002", "Emergency room admission (procedure)"),
    "IMP": ("32485007", "Hospital admission (procedure)"),
    "OBSENC": ("185347001", "Encounter for problem (procedure)"),
}
# Discharge disposition: the HL7 code (http://terminology.hl7.org/CodeSystem/discharge-
# disposition, which has none for home health: "oth") and the UB-04 patient status (NUBC form
# locator 17) that a hospital's ADT feed also carries (PV1-36), which billing needs.
DISPOSITIONS = {
    "home": ("home", "Home", "01", "Discharged to home or self care (routine discharge)"),
    "home-health": ("oth", "Other", "06", "Discharged/transferred to home under care of "
                    "organized home health service organization"),
    "snf": ("snf", "Skilled nursing facility", "03", "Discharged/transferred to skilled "
            "nursing facility (SNF) with Medicare certification"),
    "rehab": ("rehab", "Rehabilitation", "62", "Discharged/transferred to an inpatient "
              "rehabilitation facility (IRF)"),
    "expired": ("exp", "Expired", "20", "Expired"),
    "hospice": ("hosp", "Hospice", "50", "Hospice - home"),
    "other-hospital": ("other-hcf", "Other healthcare facility", "02", "Discharged/"
                       "transferred to a short-term general hospital for inpatient care"),
}
PATIENT_STATUS_SYSTEM = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
# Chart deficiencies (a modelling choice, not a published rate): a note is unsigned when its
# author has not yet authenticated it - likely in the last 30 days, rare later (a delinquent
# record) - and a few stays are discharged without their summary dictated.
UNSIGNED_RECENT, UNSIGNED_OLD, MISSING_DISCHARGE_SUMMARY = 0.30, 0.02, 0.03


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def instant(day: date, minutes: int) -> str:
    moment = datetime.combine(day, time(8, 0), tzinfo=UTC) + timedelta(minutes=minutes)
    return moment.isoformat().replace("+00:00", "Z")


def concept(system: str, code: str, display: str) -> Resource:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


@dataclass(frozen=True)
class Hospital:
    """The shared Organizations and Practitioners every patient's records point at."""

    organization_id: str
    payer_ids: dict[str, str]
    practitioner_ids: list[str]
    practitioner_names: list[str]
    resources: list[Resource]


class PatientRecords:
    """Turns one person's course into FHIR resources with fresh ids and references, and
    collects the answer key's facts about the encounters and documents made."""

    def __init__(self, rng: random.Random, hospital: Hospital, person: Person, index: int,
                 as_of: date) -> None:
        self.rng = rng
        self.hospital = hospital
        self.person = person
        self.index = index
        self.as_of = as_of
        self.resources: list[Resource] = []
        self.encounters: list[Resource] = []  # answer-key lines
        self.documents: list[Resource] = []
        self.patient_ref = self._add({"resourceType": "Patient"})
        self.pcp = rng.randrange(len(hospital.practitioner_ids))
        self._visits = 0
        self._notes = 0
        self._coverages = 0
        self._visits_made: list[tuple[Visit, str, str]] = []  # (visit, Encounter, Patient)
        self.duplicate_ref: str | None = None
        self.registered = person  # the identity the current visit is registered under

    # ------------------------------------------------------------------ building
    def _add(self, resource: Resource) -> str:
        resource["id"] = new_id(self.rng)
        self.resources.append(resource)
        return f"{resource['resourceType']}/{resource['id']}"

    def _practitioner(self, number: int) -> str:
        return f"Practitioner/{self.hospital.practitioner_ids[number]}"

    def build(self, course: Course, duplicate: Person | None = None) -> list[Resource]:
        """The patient's resources; with ``duplicate``, the person is registered a second
        time under that identity and one visit is recorded under the second registration."""
        self.resources[0].update(patient_resource(self.person, self.hospital,
                                                  self._practitioner(self.pcp), course.death))
        self._add(self._coverage(self.patient_ref, self.person))
        second_ref = None
        second_visit = None
        if duplicate is not None:
            second_ref = self._add({"resourceType": "Patient", **patient_resource(
                duplicate, self.hospital, self._practitioner(self.pcp), None)})
            self._add(self._coverage(second_ref, duplicate))
            if course.visits:
                second_visit = self.rng.randrange(len(course.visits))
        self.duplicate_ref = second_ref
        condition_refs: dict[str, str] = {}
        at_visits = {d for visit in course.visits for d in visit.diagnosed}
        for diagnosis in course.diagnoses:
            if diagnosis not in at_visits:  # diagnosed before the visits shown
                condition_refs[diagnosis.disease.key] = self._add(
                    self._condition(diagnosis, None))
        first_day = course.visits[0].day if course.visits else self.as_of
        for allergy in course.allergies:
            self._add(self._allergy(allergy, first_day))
        for number, visit in enumerate(course.visits):
            if number == second_visit and second_ref is not None and duplicate is not None:
                own, self.patient_ref = self.patient_ref, second_ref
                self.registered = duplicate  # the documents' headers show that registration
                self._visit(course, visit, dict(condition_refs))
                self.patient_ref, self.registered = own, self.person
                self.encounters[-1]["registeredAs"] = "duplicate"
            else:
                self._visit(course, visit, condition_refs)
        for diagnosis in course.diagnoses:
            if diagnosis.disease.chronic and diagnosis.disease.key in condition_refs:
                self._add(self._care_plan(diagnosis, condition_refs[diagnosis.disease.key]))
        # Last, so that the records before them stay what they were for a seed.
        for visit, encounter_ref, patient_ref in self._visits_made:
            for charge in billing.stay_charges(visit, encounter_ref, patient_ref,
                                               admitted_through_ed=True):
                self._add(charge)
        return self.resources

    def _visit(self, course: Course, visit: Visit, condition_refs: dict[str, str]) -> None:
        self._visits += 1
        number = f"V{self.index:07d}{self._visits:03d}"
        # The patient's own doctor sees them in clinic; anyone may see them in hospital.
        doctor = (self.pcp if visit.encounter_class == AMBULATORY and visit.kind in (
            "check-up", "follow-up") else self.rng.randrange(len(self.hospital.practitioner_ids)))
        encounter_ref = self._add(self._encounter(visit, number, doctor))
        self._visits_made.append((visit, encounter_ref, self.patient_ref))
        for diagnosis in visit.diagnosed:
            condition_refs[diagnosis.disease.key] = self._add(
                self._condition(diagnosis, encounter_ref))
        for measure, value in visit.results:
            self._add(self._observation(measure, value, visit.day, encounter_ref))
        for drug, disease in visit.orders:
            self._add(self._medication_request(drug, condition_refs.get(disease.key),
                                               visit.day, encounter_ref, doctor))
        for procedure in visit.procedures:
            self._add(self._procedure(procedure, visit, encounter_ref, doctor,
                                      condition_refs.get(procedure.reason.key)
                                      if procedure.reason else None))
        for vaccine in visit.immunizations:
            self._add({
                "resourceType": "Immunization", "status": "completed",
                "vaccineCode": concept(CVX, vaccine.cvx, vaccine.display),
                "patient": {"reference": self.patient_ref},
                "encounter": {"reference": encounter_ref},
                "occurrenceDateTime": instant(visit.day, 20), "primarySource": True,
                "performer": [{"actor": {"reference": self._practitioner(doctor)}}],
            })
        documents = []
        for note in visit.notes:
            if (note.kind == "discharge-summary" and visit.encounter_class == INPATIENT
                    and self.rng.random() < MISSING_DISCHARGE_SUMMARY):
                documents.append({"kind": note.kind, "deficiency": "missing"})
                continue
            documents.append(self._document(course, visit, note, encounter_ref, doctor))
        self.encounters.append({
            "encounter": number, "class": visit.encounter_class, "kind": visit.kind,
            "start": visit.day.isoformat(),
            "end": (visit.day + timedelta(days=visit.days)).isoformat(),
            "principal": _icd(visit.principal),
            "secondary": [code for code in (_icd(d) for d in visit.secondary) if code],
            "procedures": [{"snomed": p.code.snomed, "icd10pcs": p.code.icd10pcs,
                            "hcpcs": p.code.hcpcs, "day": p.day.isoformat()}
                           for p in visit.procedures],
            "documents": documents,
        })

    def _document(self, course: Course, visit: Visit, note: Note, encounter_ref: str,
                  doctor: int) -> Resource:
        self._notes += 1
        number = f"D{self.index:07d}{self._notes:03d}"
        author = self.hospital.practitioner_names[doctor]
        written, minutes = note_written(visit, note)
        recent = (self.as_of - written).days <= 30
        signed = self.rng.random() >= (UNSIGNED_RECENT if recent else UNSIGNED_OLD)
        text = notes.write_note(self.rng, self.registered, course, visit, note, author,
                                signed=signed)
        loinc, title = notes.note_loinc(note)
        document: Resource = {
            "resourceType": "DocumentReference",
            "masterIdentifier": {"system": DOCUMENT_SYSTEM, "value": number},
            "status": "current", "docStatus": "final" if signed else "preliminary",
            "type": concept(LOINC, loinc, title),
            "category": [concept("http://hl7.org/fhir/us/core/CodeSystem/"
                                 "us-core-documentreference-category", "clinical-note",
                                 "Clinical Note")],
            "subject": {"reference": self.patient_ref},
            "date": instant(written, minutes),
            "author": [{"reference": self._practitioner(doctor)}],
            "description": notes.note_title(note),
            "content": [{"attachment": {
                "contentType": "text/plain; charset=utf-8", "language": "en-US",
                "data": base64.b64encode(text.encode()).decode(),
                "title": notes.note_title(note), "creation": instant(written, minutes - 10)}}],
            "context": {"encounter": [{"reference": encounter_ref}],
                        "period": {"start": instant(visit.day, 0),
                                   "end": instant(written, minutes - 60)}},
        }
        if signed:
            document["authenticator"] = {"reference": self._practitioner(doctor)}
        self._add(document)
        return {"document": number, "kind": note.kind,
                "deficiency": None if signed else "unsigned"}

    # ------------------------------------------------------------------ resources
    def _coverage(self, beneficiary: str, person: Person) -> Resource:
        kind = person.coverage
        _, code, display = PAYERS[kind]
        payer = (f"Organization/{self.hospital.payer_ids[kind]}"
                 if kind in self.hospital.payer_ids else beneficiary)
        start = max(person.birth_date, self.as_of - timedelta(days=365 * 5))
        coverage: Resource = {
            "resourceType": "Coverage", "status": "active",
            "type": concept(SOPT_SYSTEM, code, display),
            "beneficiary": {"reference": beneficiary},
            "relationship": concept(
                "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self"),
            "period": {"start": start.isoformat()},
            "payor": [{"reference": payer}],
        }
        self._coverages += 1
        if kind in self.hospital.payer_ids:
            coverage["subscriberId"] = billing.member_id(self.index, self._coverages)
        return coverage

    def _encounter(self, visit: Visit, number: str, doctor: int) -> Resource:
        code, display = VISIT_TYPES.get(visit.kind, VISIT_TYPES[visit.encounter_class])
        end = visit.day + timedelta(days=visit.days)
        minutes = 30 if visit.encounter_class == AMBULATORY else 240 if visit.days == 0 else 600
        encounter: Resource = {
            "resourceType": "Encounter",
            "identifier": [{"use": "official", "type": concept(V2_IDENTIFIER_TYPE, "VN",
                                                               "Visit number"),
                            "system": ENCOUNTER_SYSTEM, "value": number}],
            "status": "finished",
            "class": {"system": ACT_CODE, "code": visit.encounter_class,
                      "display": CLASS_DISPLAY[visit.encounter_class]},
            "type": [concept(SNOMED, code, display)],
            "subject": {"reference": self.patient_ref},
            "participant": [{"type": [billing.participant_type(visit.encounter_class)],
                             "individual": {"reference": self._practitioner(doctor)}}],
            "period": {"start": instant(visit.day, 0), "end": instant(end, minutes)},
            "serviceProvider": {"reference": f"Organization/{self.hospital.organization_id}"},
        }
        if visit.days:
            encounter["length"] = {"value": visit.days, "unit": "days", "system": UCUM,
                                   "code": "d"}
        reasons = visit.reasons or ([visit.principal] if visit.principal else [])
        if reasons:
            encounter["reasonCode"] = [concept(SNOMED, d.snomed, d.snomed_display)
                                       for d in reasons]
        if visit.encounter_class != AMBULATORY:
            hospitalization: Resource = {"admitSource": concept(
                "http://terminology.hl7.org/CodeSystem/admit-source",
                "emd" if visit.encounter_class != EMERGENCY else "outp",
                "From accident/emergency department" if visit.encounter_class != EMERGENCY
                else "From outpatient department")}
            if visit.discharge:
                code, display, status, status_display = DISPOSITIONS.get(
                    visit.discharge, ("oth", "Other", "", ""))
                disposition = concept(
                    "http://terminology.hl7.org/CodeSystem/discharge-disposition", code,
                    display)
                if status:
                    disposition["coding"].append({"system": PATIENT_STATUS_SYSTEM,
                                                  "code": status, "display": status_display})
                hospitalization["dischargeDisposition"] = disposition
            encounter["hospitalization"] = hospitalization
        return encounter

    def _condition(self, diagnosis: Diagnosis, encounter_ref: str | None) -> Resource:
        disease = diagnosis.disease
        status = "resolved" if diagnosis.abated is not None else "active"
        condition: Resource = {
            "resourceType": "Condition",
            "clinicalStatus": concept(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", status,
                status.capitalize()),
            "verificationStatus": concept(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed",
                "Confirmed"),
            "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category",
                                 *(("problem-list-item", "Problem List Item") if disease.chronic
                                   else ("encounter-diagnosis", "Encounter Diagnosis")))],
            "code": {"coding": [
                {"system": ICD10CM, "code": disease.icd10cm, "display": disease.icd10cm_display},
                {"system": SNOMED, "code": disease.snomed, "display": disease.snomed_display},
            ], "text": disease.icd10cm_display},
            "subject": {"reference": self.patient_ref},
            "onsetDateTime": diagnosis.onset.isoformat(),
            "recordedDate": diagnosis.onset.isoformat(),
            "recorder": {"reference": self._practitioner(self.pcp)},
        }
        if diagnosis.abated is not None:
            condition["abatementDateTime"] = diagnosis.abated.isoformat()
        if encounter_ref is not None:
            condition["encounter"] = {"reference": encounter_ref}
        return condition

    def _allergy(self, allergy: Any, first_day: date) -> Resource:
        return {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": concept(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active",
                "Active"),
            "verificationStatus": concept(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "confirmed", "Confirmed"),
            "type": "allergy", "category": [allergy.category], "criticality": "low",
            "code": concept(SNOMED, allergy.snomed, allergy.display),
            "patient": {"reference": self.patient_ref},
            "recordedDate": first_day.isoformat(),
            "reaction": [{"manifestation": [concept(SNOMED, allergy.reaction_snomed,
                                                    allergy.reaction_display)]}],
        }

    def _care_plan(self, diagnosis: Diagnosis, condition_ref: str) -> Resource:
        start = max(diagnosis.onset, self.as_of - timedelta(days=365 * 3),
                    self.person.birth_date)
        return {
            "resourceType": "CarePlan", "status": "active", "intent": "plan",
            "category": [concept(SNOMED, "736271009", "Outpatient care plan")],
            "title": f"Care plan: {diagnosis.disease.snomed_display}",
            "subject": {"reference": self.patient_ref},
            "period": {"start": start.isoformat()},
            "addresses": [{"reference": condition_ref}],
            "author": {"reference": self._practitioner(self.pcp)},
        }

    def _quantity(self, measure: Measure, value: float) -> Resource:
        return {"value": value, "unit": measure.unit, "system": UCUM, "code": measure.unit}

    def _observation(self, measure: Measure, value: float | tuple[float, float], day: date,
                     encounter_ref: str) -> Resource:
        category = {"vital-signs": "Vital Signs", "laboratory": "Laboratory",
                    "imaging": "Imaging", "survey": "Survey"}.get(measure.category,
                                                                  measure.category.title())
        observation: Resource = {
            "resourceType": "Observation", "status": "final",
            "category": [concept(
                "http://terminology.hl7.org/CodeSystem/observation-category", measure.category,
                category)],
            "code": concept(LOINC, measure.loinc, measure.display),
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": encounter_ref},
            "effectiveDateTime": instant(day, 10),
        }
        if isinstance(value, tuple):
            observation["component"] = [
                {"code": concept(LOINC, part.loinc, part.display),
                 "valueQuantity": self._quantity(part, number)}
                for part, number in ((SYSTOLIC, value[0]), (DIASTOLIC, value[1]))]
        else:
            observation["valueQuantity"] = self._quantity(measure, value)
        return observation

    def _medication_request(self, drug: Drug, condition_ref: str | None, day: date,
                            encounter_ref: str, doctor: int) -> Resource:
        request: Resource = {
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": concept(RXNORM, drug.rxnorm, drug.display),
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": encounter_ref},
            "authoredOn": instant(day, 25),
            "requester": {"reference": self._practitioner(doctor)},
            "dosageInstruction": [{"text": drug.dosage}],
        }
        if condition_ref is not None:
            request["reasonReference"] = [{"reference": condition_ref}]
        return request

    def _procedure(self, procedure: Procedure, visit: Visit, encounter_ref: str, doctor: int,
                   condition_ref: str | None) -> Resource:
        code = procedure.code
        codings = [{"system": SNOMED, "code": code.snomed, "display": code.snomed_display}]
        if code.icd10pcs and visit.encounter_class == INPATIENT:
            codings.append({"system": ICD10PCS, "code": code.icd10pcs,
                            "display": code.icd10pcs_display or code.snomed_display})
        if code.hcpcs and visit.encounter_class != INPATIENT:
            codings.append({"system": HCPCS, "code": code.hcpcs,
                            "display": code.hcpcs_display or code.snomed_display})
        resource: Resource = {
            "resourceType": "Procedure", "status": "completed",
            "code": {"coding": codings, "text": code.snomed_display},
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": encounter_ref},
            "performedDateTime": instant(procedure.day, 90),
            "performer": [{"actor": {"reference": self._practitioner(doctor)}}],
        }
        if condition_ref is not None:
            resource["reasonReference"] = [{"reference": condition_ref}]
        elif procedure.reason is not None:
            resource["reasonCode"] = [concept(SNOMED, procedure.reason.snomed,
                                              procedure.reason.snomed_display)]
        if procedure.body_site:
            resource["bodySite"] = [{"text": procedure.body_site}]
        return resource


def note_written(visit: Visit, note: Note) -> tuple[date, int]:
    """When a note is written (day, minutes after 08:00, the visit's start): an H&P on the
    day of admission, an operative or pathology report on the day of its operation, the
    others (discharge summary, progress and ED notes, imaging) at the end of the visit.
    Record-completion rules time documents by these dates (H&P within 24 h of admission)."""
    if note.kind == "history-and-physical":
        return visit.day, 120
    if note.kind in ("operative-report", "pathology-report"):
        named = [p for p in visit.procedures if note.about in (
            p.code.snomed_display, p.code.icd10pcs_display)]
        operations = named or [p for p in visit.procedures if p.code.icd10pcs] \
            or visit.procedures
        day = min((p.day for p in operations), default=visit.day)
        return day, 300 if note.kind == "operative-report" else 420
    return visit.day + timedelta(days=visit.days), 120


def patient_resource(person: Person, hospital: Hospital, practitioner_ref: str,
                     death: date | None) -> Resource:
    """The Patient resource's content (no id) for ``person``."""
    patient: Resource = {
        "identifier": [
            {"use": "usual", "type": concept(V2_IDENTIFIER_TYPE, "MR", "Medical record number"),
             "system": MRN_SYSTEM, "value": person.mrn},
            {"use": "official", "type": concept(V2_IDENTIFIER_TYPE, "SS",
                                                "Social Security number"),
             "system": SSN_SYSTEM, "value": person.ssn},
        ],
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "telecom": [{"system": "phone", "value": person.phone, "use": "home"}],
        "gender": person.gender,
        "birthDate": person.birth_date.isoformat(),
        "address": [{"use": "home", "line": [person.line], "city": person.city,
                     "state": person.state, "postalCode": person.postal_code, "country": "US"}],
        "generalPractitioner": [{"reference": practitioner_ref}],
        "managingOrganization": {"reference": f"Organization/{hospital.organization_id}"},
    }
    if death is not None:
        patient["deceasedDateTime"] = instant(death, 300)
    return patient


def _icd(disease: Disease | None) -> str | None:
    return None if disease is None else disease.icd10cm
