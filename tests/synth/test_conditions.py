"""The nine condition modules: real codes, courses inside the window, coded visits, and
generated prevalence and incidence that match the published rates the modules cite."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from chartkeeper.synth import conditions
from chartkeeper.synth.conditions import MODULES, RATES
from chartkeeper.synth.course import (
    EMERGENCY,
    INPATIENT,
    NOTE_TYPES,
    OBSERVATION,
    Disease,
    Module,
    ModuleOutput,
    ProcedureCode,
    Window,
)
from chartkeeper.synth.people import Person, make_person
from tests.synth.codesets import billable_icd10cm, hcpcs_codes, valid_icd10pcs

AS_OF = date(2026, 1, 1)
WINDOW = Window(AS_OF - timedelta(days=3 * 365), AS_OF)
PEOPLE = 6000
CHRONIC = {"asthma", "copd", "heart-failure", "ckd", "depression"}
# The keys of the diagnoses that count as one event of each acute module.
EVENT_KEYS = {"pneumonia": {"pneumonia"}, "uti": {"uti", "pyelonephritis"},
              "hip-fracture": {"hip-fracture"}, "pregnancy": {"live-birth"}}
MAIN_KEY = dict(zip(MODULES, RATES, strict=True))


def constants(kind: type) -> list[object]:
    """Every ``kind`` object among the module's constants, looking inside dicts and tuples."""
    found: list[object] = []

    def walk(value: object) -> None:
        if isinstance(value, kind):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, tuple):
            for item in value:
                walk(item)

    for name, value in vars(conditions).items():
        if name.isupper():
            walk(value)
    return found


@pytest.fixture(scope="module")
def people() -> list[Person]:
    rng = random.Random("test-conditions:people")
    return [make_person(rng, AS_OF) for _ in range(PEOPLE)]


@pytest.fixture(scope="module")
def courses(people: list[Person]) -> dict[Module, list[tuple[Person, ModuleOutput]]]:
    return {module: [(person, module(random.Random(f"{module.__name__}:{n}"), person, WINDOW))
                     for n, person in enumerate(people)]
            for module in MODULES}


def all_visits(courses: dict[Module, list[tuple[Person, ModuleOutput]]]
               ) -> Iterator[tuple[Module, Person, ModuleOutput]]:
    for module, outputs in courses.items():
        for person, output in outputs:
            yield module, person, output


def test_every_icd10cm_code_is_billable_in_the_april_2026_release(shared_data: Path) -> None:
    diseases = constants(Disease)
    assert len(diseases) > 40
    billable = billable_icd10cm(shared_data)
    assert sorted({d.icd10cm for d in diseases if isinstance(d, Disease)} - billable) == []


def test_every_procedure_code_is_valid_icd10pcs_and_hcpcs(shared_data: Path) -> None:
    procedures = [p for p in constants(ProcedureCode) if isinstance(p, ProcedureCode)]
    pcs = {p.icd10pcs for p in procedures if p.icd10pcs}
    hcpcs = {p.hcpcs for p in procedures if p.hcpcs}
    assert {"0SR9029", "0QS636Z", "10E0XZZ", "10D00Z1"} <= pcs
    assert [code for code in sorted(pcs) if not valid_icd10pcs(shared_data, code)] == []
    assert hcpcs and sorted(hcpcs - hcpcs_codes(shared_data)) == []


def test_codes_are_well_formed() -> None:
    for disease in constants(Disease):
        assert isinstance(disease, Disease)
        assert disease.snomed.isdigit() and disease.snomed_display.strip()
    for measure in constants(conditions.Measure):
        assert isinstance(measure, conditions.Measure)
        number, _, check = measure.loinc.partition("-")
        assert number.isdigit() and check.isdigit() and measure.unit
    for drug in constants(conditions.Drug):
        assert isinstance(drug, conditions.Drug)
        assert drug.rxnorm.isdigit() and drug.dosage


def test_visits_fall_inside_the_window_in_day_order(
        courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    for _, person, output in all_visits(courses):
        days = [visit.day for visit in output.visits]
        assert days == sorted(days)
        for day in days:
            assert WINDOW.start <= day < WINDOW.as_of and day >= person.birth_date


def test_every_visit_is_coded_and_documented(
        courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    visits = 0
    for _, _, output in all_visits(courses):
        for visit in output.visits:
            visits += 1
            kinds = [note.kind for note in visit.notes]
            assert visit.principal is not None and visit.reasons
            assert visit.principal not in visit.secondary
            assert kinds and set(kinds) <= set(NOTE_TYPES)
            if visit.encounter_class in (INPATIENT, OBSERVATION):
                assert visit.days >= 1 and visit.discharge is not None
                assert {"history-and-physical", "discharge-summary"} <= set(kinds)
                assert all(p.code.icd10pcs for p in visit.procedures)
            else:
                assert visit.days == 0 and visit.discharge is None
            if visit.encounter_class == EMERGENCY:
                assert "emergency-note" in kinds
            for diagnosis in visit.diagnosed:
                assert diagnosis in output.diagnoses
    assert visits > 5000


def test_acute_diagnoses_resolve_and_chronic_ones_do_not(
        courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    for _, _, output in all_visits(courses):
        for diagnosis in output.diagnoses:
            if diagnosis.disease.chronic:
                assert diagnosis.abated is None
            elif diagnosis.disease.key != "pregnancy":  # one under way at the as-of date
                assert diagnosis.abated is not None and diagnosis.abated >= diagnosis.onset


def standard_errors(observed: float, expected: float, chances: list[float]) -> float:
    """How many binomial standard errors ``observed`` lies from ``expected``."""
    variance = sum(p * (1 - p) for p in chances)
    return abs(observed - expected) / math.sqrt(variance)


@pytest.mark.parametrize("module", [m for m in MODULES if MAIN_KEY[m] in CHRONIC],
                         ids=lambda m: m.__name__)
def test_prevalence_matches_the_published_rate(
        module: Module, courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    key, rate = MAIN_KEY[module], RATES[MAIN_KEY[module]]
    chances = [rate(person.age_on(AS_OF), person.gender) for person, _ in courses[module]]
    observed = sum(any(d.disease.key == key for d in output.diagnoses)
                   for _, output in courses[module])
    assert observed > 20
    # Within 4 standard errors of a binomial count with each person's own chance.
    assert standard_errors(observed, sum(chances), chances) < 4


def slice_chances(person: Person, rate: conditions.Rate) -> list[float]:
    """The chance of an event in each 365-day slice of the window, at the age in its middle."""
    chances = []
    start = max(WINDOW.start, person.birth_date)
    while start < WINDOW.as_of:
        end = min(start + timedelta(days=365), WINDOW.as_of)
        middle = start + (end - start) / 2
        chances.append(rate(person.age_on(middle), person.gender) * (end - start).days / 365)
        start = end
    return chances


@pytest.mark.parametrize("module", [m for m in MODULES if MAIN_KEY[m] not in CHRONIC],
                         ids=lambda m: m.__name__)
def test_incidence_matches_the_published_rate(
        module: Module, courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    key = MAIN_KEY[module]
    chances = [chance for person, _ in courses[module]
               for chance in slice_chances(person, RATES[key])]
    observed = sum(d.disease.key in EVENT_KEYS[key] and d.onset < AS_OF
                   for _, output in courses[module] for d in output.diagnoses)
    assert observed > 10
    assert standard_errors(observed, sum(chances), chances) < 4


def test_rates_follow_the_sources_shape() -> None:
    assert conditions.pregnancy_rate(30, "male") == 0.0
    assert conditions.pregnancy_rate(14, "female") == conditions.pregnancy_rate(45, "female") == 0
    assert conditions.hip_fracture_rate(85, "female") > conditions.hip_fracture_rate(85, "male")
    assert conditions.hip_fracture_rate(50, "female") == 0.0
    assert conditions.chronic_kidney_disease_rate(70, "female") == pytest.approx(
        0.381 * 2 / (1 + 12.4 / 14.3))
    assert conditions.copd_rate(30, "female") > conditions.copd_rate(30, "male")
    assert conditions.depression_rate(16, "female") == 0.292


def test_pregnancy_only_for_women_aged_15_to_44(
        courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    deliveries = cesareans = 0
    for person, output in courses[conditions.pregnancy]:
        if person.gender == "male":
            assert output == ModuleOutput()
        for diagnosis in output.diagnoses:
            assert 15 <= person.age_on(diagnosis.onset) <= 44
        for visit in output.visits:
            if visit.kind == "delivery":
                deliveries += 1
                codes = {p.code.icd10pcs for p in visit.procedures}
                cesareans += "10D00Z1" in codes
                assert codes in ({"10D00Z1"}, {"10E0XZZ"})
                assert visit.secondary == [conditions.LIVE_BIRTH]
                assert visit.principal is not None and visit.principal.icd10cm in {"O80",
                                                                                   "O32.1XX0"}
            else:
                assert visit.principal is not None and visit.principal.icd10cm[:3] == "Z34"
    assert deliveries > 50
    share = conditions.CESAREAN_SHARE
    assert standard_errors(cesareans, deliveries * share, [share] * deliveries) < 4


def test_hip_fracture_goes_from_the_ed_to_surgery_and_a_facility(
        courses: dict[Module, list[tuple[Person, ModuleOutput]]]) -> None:
    stays = 0
    for _, output in courses[conditions.hip_fracture]:
        for visit in output.visits:
            if visit.encounter_class == INPATIENT:
                stays += 1
                assert "operative-report" in [note.kind for note in visit.notes]
                assert visit.discharge in {"snf", "rehab", "home-health"}
                assert [p.code.icd10pcs[:3] for p in visit.procedures
                        if p.code.icd10pcs] in (["0SR"], ["0QS"])
            assert visit.principal is not None and visit.principal.key != "fall"
            if visit.encounter_class in (EMERGENCY, INPATIENT):
                assert conditions.FALL in visit.secondary
    assert stays > 5


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_the_same_seed_gives_the_same_course(module: Module, people: list[Person]) -> None:
    older = [person for person in people if person.age_on(AS_OF) >= 65][:300]
    women = [person for person in people if person.gender == "female"][:300]
    for person in older + women:
        first = module(random.Random(f"again:{person.mrn}"), person, WINDOW)
        assert module(random.Random(f"again:{person.mrn}"), person, WINDOW) == first
