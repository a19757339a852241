"""The course of one synthetic patient: what is true about them and what happened to them.

Disease modules (``modules.py`` for the chronic conditions of the first slice,
``conditions.py``, ``cancer.py``) each look at a ``Person`` and return a ``ModuleOutput``:
the diagnoses the person truly has, with onset dates, and the encounters that follow from
them, already filled with what was measured, diagnosed, ordered, done and documented. The FHIR
builder (``generate.py``) turns a course into resources, the note writer (``notes.py``) writes
the clinical documents from it, and the answer key is taken from it. Nothing here is FHIR.

Codes are written as FHIR writes them: ICD-10-CM dotted (``J18.9``), ICD-10-PCS as seven
characters, HCPCS Level II as five, SNOMED CT and LOINC as their ids.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from chartkeeper.synth.people import Person

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
HCPCS = "urn:oid:2.16.840.1.113883.6.285"
CVX = "http://hl7.org/fhir/sid/cvx"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class Disease:
    """A condition as coded: the billable ICD-10-CM code of the April 2026 release and the
    SNOMED CT concept. ``chronic`` conditions stay on the problem list; acute ones resolve."""

    key: str
    icd10cm: str  # dotted, as FHIR writes ICD-10-CM
    icd10cm_display: str
    snomed: str
    snomed_display: str
    chronic: bool = True


@dataclass(frozen=True)
class Drug:
    rxnorm: str
    display: str
    dosage: str


@dataclass(frozen=True)
class Measure:
    loinc: str
    display: str
    unit: str  # UCUM code, also shown as the unit
    category: str  # "vital-signs", "laboratory" or "imaging"


@dataclass(frozen=True)
class ProcedureCode:
    """A procedure: SNOMED CT always; ICD-10-PCS when done in an inpatient stay (what the
    hospital codes); HCPCS Level II where one exists for outpatient billing."""

    key: str
    snomed: str
    snomed_display: str
    icd10pcs: str | None = None
    icd10pcs_display: str | None = None
    hcpcs: str | None = None
    hcpcs_display: str | None = None


@dataclass(frozen=True)
class Vaccine:
    cvx: str
    display: str


@dataclass(frozen=True)
class Allergy:
    key: str
    snomed: str  # the substance
    display: str
    category: str  # "medication", "food", "environment"
    reaction_snomed: str
    reaction_display: str


@dataclass(frozen=True)
class Diagnosis:
    disease: Disease
    onset: date
    abated: date | None = None  # an acute condition's resolution


@dataclass(frozen=True)
class Procedure:
    code: ProcedureCode
    day: date
    reason: Disease | None = None
    body_site: str | None = None  # free text, e.g. "left hip", "right breast"


# The documents the note writer can write (LOINC document type codes).
NOTE_TYPES: dict[str, tuple[str, str]] = {
    "history-and-physical": ("34117-2", "History and physical note"),
    "progress-note": ("11506-3", "Progress note"),
    "emergency-note": ("34111-5", "Emergency department note"),
    "discharge-summary": ("18842-5", "Discharge summary"),
    "operative-report": ("11504-8", "Surgical operation note"),
    "pathology-report": ("11526-1", "Pathology study"),
    "radiology-report": ("18748-4", "Diagnostic imaging study"),
}


@dataclass
class Note:
    """A clinical document to write for a visit. ``about`` names what it documents (the
    procedure for an operative or pathology report, the study for a radiology report)."""

    kind: str  # a key of NOTE_TYPES
    about: str | None = None
    findings: str | None = None  # what a module wants said (e.g. the pathology diagnosis)


# Encounter classes (v3-ActCode) and the visit kinds that use them.
AMBULATORY, EMERGENCY, INPATIENT, OBSERVATION = "AMB", "EMER", "IMP", "OBSENC"


@dataclass
class Visit:
    """One encounter and everything recorded at it.

    ``principal`` is the diagnosis a coder would sequence first (the reason for an admission
    after study, or the first-listed diagnosis of an outpatient visit); ``secondary`` are the
    other diagnoses coded for this encounter. ``days`` is the length of an inpatient or
    observation stay (discharge on ``day + days``).
    """

    day: date
    kind: str  # "check-up", "follow-up", "emergency", "admission", "observation", "surgery", ...
    encounter_class: str = AMBULATORY
    days: int = 0
    reasons: list[Disease] = field(default_factory=list)
    # (measure, value); the blood pressure panel is (BP_PANEL, (systolic, diastolic)).
    results: list[tuple[Measure, float | tuple[float, float]]] = field(default_factory=list)
    diagnosed: list[Diagnosis] = field(default_factory=list)
    orders: list[tuple[Drug, Disease]] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    immunizations: list[Vaccine] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    principal: Disease | None = None
    secondary: list[Disease] = field(default_factory=list)
    discharge: str | None = None  # "home", "home-health", "snf", "rehab", "expired"


@dataclass
class ModuleOutput:
    """What one disease module adds to a patient's course."""

    diagnoses: list[Diagnosis] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    death: date | None = None
    # Facts for the answer key only (cancer abstracts: site, histology, stage, treatment).
    abstracts: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True)
class Window:
    """The stretch of the record shown: encounters fall in [start, as_of)."""

    start: date
    as_of: date


# A module: given the patient's own random stream, the person and the window, what happens.
Module = Callable[[random.Random, Person, Window], ModuleOutput]


@dataclass
class Course:
    """Everything true and everything recorded about one patient."""

    diagnoses: list[Diagnosis]
    visits: list[Visit]
    allergies: list[Allergy] = field(default_factory=list)
    death: date | None = None
    abstracts: list[dict[str, object]] = field(default_factory=list)
