"""Primary care: who has hypertension and type 2 diabetes, and the check-ups and follow-ups with
the vitals, labs, medications and vaccines that go with them."""

from __future__ import annotations

import random
from datetime import date, timedelta

from chartkeeper.synth.course import (
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    UCUM,
    Course,
    Diagnosis,
    Disease,
    Drug,
    Measure,
    ModuleOutput,
    Note,
    Vaccine,
    Visit,
    Window,
)
from chartkeeper.synth.people import Person

__all__ = ["ICD10CM", "LOINC", "RXNORM", "SNOMED", "UCUM", "Course", "Diagnosis", "Disease",
           "Drug", "Measure", "Visit"]

# --- prevalence ---------------------------------------------------------------------------
# Hypertension (systolic >= 130 or diastolic >= 80 mmHg, or taking medication), adults:
# Ostchega Y. et al., "Hypertension Prevalence Among Adults Aged 18 and Over: United States,
# 2017-2018", NCHS Data Brief No. 364 (NHANES 2017-2018): 22.4% at 18-39, 54.5% at 40-59,
# 74.5% at 60 and over; men 51.0%, women 39.7%.
HYPERTENSION_BY_AGE: tuple[tuple[int, int, float], ...] = (
    (18, 40, 0.224), (40, 60, 0.545), (60, 200, 0.745))
HYPERTENSION_MEN_TO_WOMEN = 51.0 / 39.7
# Diabetes (diagnosed and undiagnosed), adults: CDC National Diabetes Statistics Report
# (NHANES 2017-2020): 4.8% at 18-44, 18.9% at 45-64, 29.2% at 65 and over. The report finds
# it somewhat more common in men; the men-to-women ratio below (1.15) is an approximation of
# that. About 90-95% of diabetes is type 2, and this module models only type 2, with every
# case diagnosed (undiagnosed diabetes is not modelled yet).
DIABETES_BY_AGE: tuple[tuple[int, int, float], ...] = (
    (18, 45, 0.048), (45, 65, 0.189), (65, 200, 0.292))
DIABETES_MEN_TO_WOMEN = 1.15


def band_rate(bands: tuple[tuple[int, int, float], ...], age: int) -> float:
    for low, high, rate in bands:
        if low <= age < high:
            return rate
    return 0.0


def by_sex(rate: float, men_to_women: float, gender: str) -> float:
    """Split a both-sexes rate into men's and women's so that an even mix keeps the mean."""
    factor = 2 * men_to_women / (1 + men_to_women) if gender == "male" else 2 / (1 + men_to_women)
    return min(0.95, rate * factor)


def hypertension_prevalence(age: int, gender: str) -> float:
    return by_sex(band_rate(HYPERTENSION_BY_AGE, age), HYPERTENSION_MEN_TO_WOMEN, gender)


def diabetes_prevalence(age: int, gender: str) -> float:
    return by_sex(band_rate(DIABETES_BY_AGE, age), DIABETES_MEN_TO_WOMEN, gender)


# --- codes --------------------------------------------------------------------------------
HYPERTENSION = Disease("hypertension", "I10", "Essential (primary) hypertension",
                       "59621000", "Essential hypertension (disorder)")
DIABETES = Disease("type-2-diabetes", "E11.9", "Type 2 diabetes mellitus without complications",
                   "44054006", "Diabetes mellitus type 2 (disorder)")


LISINOPRIL = Drug("314076", "lisinopril 10 MG Oral Tablet", "1 tablet by mouth once daily")
HYDROCHLOROTHIAZIDE = Drug("310798", "Hydrochlorothiazide 25 MG Oral Tablet",
                           "1 tablet by mouth once daily")
METFORMIN = Drug("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
                 "1 tablet by mouth once daily with the evening meal")


BP_PANEL = Measure("85354-9", "Blood pressure panel with all children optional", "mm[Hg]",
                   "vital-signs")
SYSTOLIC = Measure("8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs")
DIASTOLIC = Measure("8462-4", "Diastolic blood pressure", "mm[Hg]", "vital-signs")
HEART_RATE = Measure("8867-4", "Heart rate", "/min", "vital-signs")
HEIGHT = Measure("8302-2", "Body height", "cm", "vital-signs")
WEIGHT = Measure("29463-7", "Body weight", "kg", "vital-signs")
BMI = Measure("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "vital-signs")
HBA1C = Measure("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "laboratory")
GLUCOSE = Measure("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory")


# --- the course of a patient --------------------------------------------------------------


def _onset(rng: random.Random, person: Person, as_of: date, earliest_age: int) -> date:
    age = person.age_on(as_of)
    onset_age = rng.randint(max(earliest_age, age - 20), age)
    day = person.birth_date + timedelta(days=onset_age * 365 + rng.randrange(0, 365))
    return min(day, as_of - timedelta(days=1))


def assign_diagnoses(rng: random.Random, person: Person, as_of: date) -> list[Diagnosis]:
    """The conditions this person truly has on ``as_of``, each with its onset date."""
    age = person.age_on(as_of)
    diagnoses = []
    if rng.random() < hypertension_prevalence(age, person.gender):
        diagnoses.append(Diagnosis(HYPERTENSION, _onset(rng, person, as_of, 18)))
    if rng.random() < diabetes_prevalence(age, person.gender):
        diagnoses.append(Diagnosis(DIABETES, _onset(rng, person, as_of, 18)))
    return diagnoses


def _clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _body(rng: random.Random, person: Person, age: int, diabetic: bool) -> tuple[float, float]:
    """Height (cm) and weight (kg): adult heights and BMI near NHANES means; children on a
    rough growth curve."""
    male = person.gender == "male"
    if age >= 18:
        height = _clip(rng.gauss(175.4 if male else 161.5, 7.3), 140, 205)
        bmi = _clip(rng.gauss(32.5 if diabetic else 29.0, 5.5), 17, 55)
        return round(height, 1), round(bmi * (height / 100) ** 2, 1)
    if age < 1:
        return round(rng.gauss(65, 5), 1), round(rng.gauss(7, 1.2), 1)
    height = (75 + 6.2 * age if age < 13 else 152 + (age - 13) * (5 if male else 2))
    weight = (8 + 2.6 * age if age < 13 else 42 + (age - 13) * (6 if male else 3))
    return round(rng.gauss(height, 4), 1), round(_clip(rng.gauss(weight, weight * 0.12), 5, 150), 1)


def _vitals(rng: random.Random, person: Person, day: date, active: set[str],
            treated: set[str]) -> list[tuple[Measure, float | tuple[float, float]]]:
    age = person.age_on(day)
    height, weight = _body(rng, person, age, DIABETES.key in active)
    results: list[tuple[Measure, float | tuple[float, float]]] = [
        (HEIGHT, height), (WEIGHT, weight)]
    if age >= 2:
        results.append((BMI, round(weight / (height / 100) ** 2, 1)))
    if age >= 3:
        if HYPERTENSION.key in active:
            mean = (134.0, 82.0) if HYPERTENSION.key in treated else (148.0, 91.0)
        elif age < 18:
            mean = (105.0, 65.0)
        else:
            mean = (117.0, 74.0)
        systolic = round(_clip(rng.gauss(mean[0], 10), 85, 200))
        diastolic = round(_clip(rng.gauss(mean[1], 8), 45, min(120, systolic - 20)))
        results.append((BP_PANEL, (systolic, diastolic)))
    heart_rate = rng.gauss(74 if age >= 18 else 90 if age >= 3 else 120, 10)
    results.append((HEART_RATE, round(_clip(heart_rate, 45, 170))))
    return results


def _labs(rng: random.Random, active: set[str], treated: set[str]
          ) -> list[tuple[Measure, float | tuple[float, float]]]:
    if DIABETES.key not in active:
        return [(HBA1C, round(_clip(rng.gauss(5.4, 0.3), 4.3, 6.4), 1)),
                (GLUCOSE, round(_clip(rng.gauss(92, 9), 65, 125)))]
    a1c = rng.gauss(7.2, 0.9) if DIABETES.key in treated else rng.gauss(8.1, 1.3)
    return [(HBA1C, round(_clip(a1c, 6.5, 14.0), 1)),
            (GLUCOSE, round(_clip(rng.gauss(150 if DIABETES.key in treated else 185, 35),
                                  100, 450)))]


def _visit_days(rng: random.Random, start: date, end: date, every: int) -> list[date]:
    days = []
    day = start + timedelta(days=rng.randrange(0, every))
    while day < end:
        days.append(day)
        day += timedelta(days=every + rng.randrange(-30, 31))
    return days


# Visit reasons of a check-up (ICD-10-CM April 2026): adults without or with abnormal
# findings, children (29 days to 17 years) without abnormal findings.
ADULT_EXAM = Disease("adult-exam", "Z00.00", "Encounter for general adult medical examination "
                     "without abnormal findings", "185349003", "Encounter for check up")
ADULT_EXAM_ABNORMAL = Disease("adult-exam-abnormal", "Z00.01", "Encounter for general adult "
                              "medical examination with abnormal findings", "185349003",
                              "Encounter for check up")
CHILD_EXAM = Disease("child-exam", "Z00.129", "Encounter for routine child health examination "
                     "without abnormal findings", "410620009", "Well child visit")

# Vaccines (CVX). Coverage: CDC FluVaxView 2023-24 season, about 45% of adults and 55% of
# children vaccinated against influenza; pneumococcal vaccination of adults 65 and over
# about 65% (NHIS 2022) - modelled as 20% a year until given.
FLU = Vaccine("150", "Influenza, injectable, quadrivalent, preservative free")
PNEUMOCOCCAL = Vaccine("216", "Pneumococcal conjugate vaccine, 20 valent")
TDAP = Vaccine("115", "Tdap")
FLU_COVERAGE_ADULT, FLU_COVERAGE_CHILD = 0.45, 0.55


def primary_care(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """Hypertension and type 2 diabetes with their follow-ups, and the yearly check-up with
    its vital signs, screening labs and vaccines."""
    as_of, window_start = window.as_of, window.start
    diagnoses = assign_diagnoses(rng, person, as_of)
    visits = {day: Visit(day, "check-up")
              for day in _visit_days(rng, window_start, as_of, 365)}
    for diagnosis in diagnoses:
        first = max(diagnosis.onset, window_start)
        for day in _visit_days(rng, first, as_of, 182):
            visits.setdefault(day, Visit(day, "follow-up"))
        if diagnosis.onset >= window_start:
            visits[diagnosis.onset] = visits.get(diagnosis.onset, Visit(diagnosis.onset,
                                                                         "follow-up"))
    # Conditions older than the window are already treated (controlled values); every
    # condition gets its medication ordered at its first visit in the window.
    treated: set[str] = {d.disease.key for d in diagnoses if d.onset < window_start}
    ordered: set[str] = set()
    pneumococcal_given = False
    for day in sorted(visits):
        visit = visits[day]
        age = person.age_on(day)
        active = [d.disease for d in diagnoses if d.onset <= day]
        active_keys = {d.key for d in active}
        for diagnosis in diagnoses:
            if diagnosis.onset == day:
                visit.diagnosed.append(diagnosis)
        if active and visit.kind == "follow-up":
            visit.reasons = list(active)
        visit.results = _vitals(rng, person, day, active_keys, treated)
        if age >= 18 and (visit.kind == "check-up" or DIABETES.key in active_keys):
            visit.results.extend(_labs(rng, active_keys, treated))
        for diagnosis in diagnoses:
            key = diagnosis.disease.key
            if key in active_keys and key not in ordered:
                visit.orders.append((_first_line_drug(rng, diagnosis.disease, active_keys),
                                     diagnosis.disease))
                ordered.add(key)
                treated.add(key)
        if visit.kind == "check-up":
            visit.principal = (CHILD_EXAM if age < 18 else
                               ADULT_EXAM_ABNORMAL if visit.diagnosed else ADULT_EXAM)
            visit.secondary = [d.disease for d in visit.diagnosed] + [
                d for d in active if d not in {x.disease for x in visit.diagnosed}]
            if rng.random() < (FLU_COVERAGE_CHILD if age < 18 else FLU_COVERAGE_ADULT):
                visit.immunizations.append(FLU)
            if age >= 65 and not pneumococcal_given and rng.random() < 0.2:
                visit.immunizations.append(PNEUMOCOCCAL)
                pneumococcal_given = True
            if 11 <= age and rng.random() < 0.1:
                visit.immunizations.append(TDAP)
        else:
            visit.principal = active[0] if active else ADULT_EXAM
            visit.secondary = active[1:]
        visit.notes.append(Note("progress-note"))
    return ModuleOutput(diagnoses, [visits[day] for day in sorted(visits)])


def _first_line_drug(rng: random.Random, disease: Disease, active: set[str]) -> Drug:
    if disease is DIABETES:
        return METFORMIN
    # An ACE inhibitor is preferred with diabetes; otherwise ACE inhibitor or thiazide.
    if DIABETES.key in active or rng.random() < 0.6:
        return LISINOPRIL
    return HYDROCHLOROTHIAZIDE
