"""The assembled hospital's prevalence on 10,000 patients against the published figures each
module cites (issue 4): every patient's course is built exactly as ``generate`` builds it."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from chartkeeper.synth import DEFAULT_AS_OF, cancer, conditions, modules
from chartkeeper.synth.assemble import build_course, history_window
from chartkeeper.synth.course import Course
from chartkeeper.synth.people import Person, make_person

PATIENTS = 10_000
SEED = 4242


@pytest.fixture(scope="module")
def hospital() -> list[tuple[Person, Course]]:
    people = []
    for index in range(1, PATIENTS + 1):
        rng = random.Random(f"chartkeeper-synth:{SEED}:patient:{index}")
        person = make_person(rng, DEFAULT_AS_OF)
        people.append((person, build_course(rng, person, DEFAULT_AS_OF)))
    return people


def standard_errors(observed: int, chances: list[float]) -> float:
    expected = sum(chances)
    return abs(observed - expected) / math.sqrt(sum(p * (1 - p) for p in chances))


def has(course: Course, key: str) -> bool:
    return any(d.disease.key == key for d in course.diagnoses)


PREVALENCE: dict[str, Callable[[int, str], float]] = {
    "hypertension": modules.hypertension_prevalence,
    "type-2-diabetes": modules.diabetes_prevalence,
    **{key: conditions.RATES[key] for key in ("asthma", "copd", "heart-failure", "ckd",
                                              "depression")},
}


@pytest.mark.parametrize("key", sorted(PREVALENCE))
def test_chronic_prevalence_is_within_four_standard_errors_of_the_cited_rate(
        hospital: list[tuple[Person, Course]], key: str) -> None:
    # A patient who died before the as-of date is counted at their age at death.
    chances = [PREVALENCE[key](person.age_on(course.death or DEFAULT_AS_OF), person.gender)
               for person, course in hospital]
    observed = sum(has(course, key) for _, course in hospital)
    assert observed > 30, key
    assert standard_errors(observed, chances) < 4, (key, observed, sum(chances))


@pytest.mark.parametrize("key", sorted(cancer.INCIDENCE))
def test_cancer_diagnoses_are_within_four_standard_errors_of_seer_incidence(
        hospital: list[tuple[Person, Course]], key: str) -> None:
    chances = [cancer.diagnosis_probability(cancer.INCIDENCE[key], person,
                                            history_window(person, DEFAULT_AS_OF))
               for person, _ in hospital]
    observed = sum(has(course, key) for _, course in hospital)
    assert observed > 3, key
    assert standard_errors(observed, chances) < 4, (key, observed, sum(chances))


def test_conditions_follow_age_and_sex(hospital: list[tuple[Person, Course]]) -> None:
    for person, course in hospital:
        age = person.age_on(DEFAULT_AS_OF)
        keys = {d.disease.key for d in course.diagnoses}
        if person.gender == "male":
            assert "pregnancy" not in keys
        else:
            assert "prostate-cancer" not in keys
        if age < 18:
            assert not keys & {"hypertension", "type-2-diabetes", "copd", "hip-fracture"}
