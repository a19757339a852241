"""One patient's whole course: every disease module run over the person, then put together.

Each module draws from a random stream of its own (split from the patient's), so adding or
changing a module does not change what the others generate. After the modules: a death ends
the record (nothing after it), the chronic conditions a patient has are coded as secondary
diagnoses of the emergency visits and hospital stays they complicate, and allergies are
assigned.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date, timedelta

from chartkeeper.synth import cancer, conditions
from chartkeeper.synth.course import (
    AMBULATORY,
    Allergy,
    Course,
    Diagnosis,
    Module,
    ModuleOutput,
    Visit,
    Window,
)
from chartkeeper.synth.modules import primary_care
from chartkeeper.synth.people import Person

HISTORY_YEARS = 3  # encounters cover the last three years before the as-of date

# Allergy labels and how common they are in the US:
# penicillin about 10% of patients (Shenoy ES et al., JAMA 2019;321(2):188-199); sulfonamide
# antibiotics about 3% (Macy E, Poon KYT, Am J Med 2009); peanut 1.8% and shellfish 2.9% of
# adults, convincing food allergy (Gupta RS et al., JAMA Netw Open 2019;2(1):e185630); latex
# about 1% of the general population (Wu M et al., Allergy Asthma Immunol Res 2016).
ALLERGIES: tuple[tuple[Allergy, float], ...] = (
    (Allergy("penicillin", "764146007", "Penicillin", "medication", "247472004", "Hives"), 0.10),
    (Allergy("sulfonamide", "387406002", "Sulfonamide", "medication", "271807003",
             "Eruption of skin"), 0.03),
    (Allergy("peanut", "762952008", "Peanut", "food", "39579001", "Anaphylaxis"), 0.018),
    (Allergy("shellfish", "227037002", "Fish and shellfish", "food", "418290006",
             "Itching"), 0.029),
    (Allergy("latex", "111088007", "Latex", "environment", "40275004",
             "Contact dermatitis"), 0.01),
)


def all_modules() -> tuple[Module, ...]:
    return (primary_care, *conditions.MODULES, *cancer.MODULES)


def history_window(person: Person, as_of: date) -> Window:
    return Window(max(as_of - timedelta(days=365 * HISTORY_YEARS), person.birth_date), as_of)


def build_course(rng: random.Random, person: Person, as_of: date,
                 modules: Sequence[Module] | None = None) -> Course:
    """Everything true and recorded about ``person`` up to ``as_of``."""
    window = history_window(person, as_of)
    outputs: list[ModuleOutput] = []
    for module in all_modules() if modules is None else modules:
        outputs.append(module(random.Random(rng.getrandbits(64)), person, window))
    deaths = [o.death for o in outputs if o.death is not None]
    death = min(deaths) if deaths else None
    diagnoses = [d for o in outputs for d in o.diagnoses
                 if death is None or d.onset <= death]
    visits = sorted((v for o in outputs for v in o.visits if death is None or v.day <= death),
                    key=lambda v: (v.day, v.encounter_class == AMBULATORY, v.kind))
    if death is not None:
        for visit in visits:
            if visit.day + timedelta(days=visit.days) > death:
                visit.days = (death - visit.day).days
                if visit.encounter_class != AMBULATORY:
                    visit.discharge = "expired"
    for visit in visits:
        _code_coexisting(visit, diagnoses)
    abstracts = [a for o in outputs for a in o.abstracts]
    allergies = [allergy for allergy, rate in ALLERGIES if rng.random() < rate]
    return Course(diagnoses, visits, allergies, death, abstracts)


def _code_coexisting(visit: Visit, diagnoses: list[Diagnosis]) -> None:
    """An emergency visit or a stay is coded with the chronic conditions present then (they
    affect care: ICD-10-CM guidelines, Section III, reporting additional diagnoses)."""
    if visit.encounter_class == AMBULATORY:
        return
    coded = {d.key for d in visit.secondary}
    if visit.principal is not None:
        coded.add(visit.principal.key)
    for diagnosis in diagnoses:
        disease = diagnosis.disease
        if disease.chronic and diagnosis.onset <= visit.day and disease.key not in coded and (
                diagnosis.abated is None or diagnosis.abated > visit.day):
            visit.secondary.append(disease)
            coded.add(disease.key)
