"""The cancer modules: valid codes, registrar abstracts that agree with them, incidence and stage
that follow the cited rates, and courses that stay inside the window and end at death."""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from chartkeeper.synth import cancer
from chartkeeper.synth.course import (
    INPATIENT,
    NOTE_TYPES,
    Disease,
    ModuleOutput,
    Visit,
    Window,
)
from chartkeeper.synth.people import Person, make_person
from tests.synth.codesets import billable_icd10cm, hcpcs_codes, valid_icd10pcs

AS_OF = date(2026, 1, 1)
WINDOW = Window(AS_OF - timedelta(days=3 * 365), AS_OF)
SOURCE = Path(cancer.__file__).read_text()
IMSWEB_ICD10CM = Path("naaccr/imsweb_algorithms_tables/icd/icd-10-cm-to-icd-o-3.csv")
KEYS = {module: key for module, key in zip(cancer.MODULES, cancer.INCIDENCE, strict=True)}


def run(module: cancer.Module, seed: int, person: Person, window: Window) -> ModuleOutput:
    return module(random.Random(f"cancer-test:{seed}:{KEYS[module]}"), person, window)


@dataclasses.dataclass(frozen=True)
class Case:
    person: Person
    window: Window
    output: ModuleOutput

    @property
    def abstract(self) -> dict[str, object]:
        return self.output.abstracts[0]


@pytest.fixture(scope="module")
def cases() -> dict[str, list[Case]]:
    """Many diagnosed cases: people aged 55 to 85 followed over a 20-year window, so that
    every cancer is diagnosed often enough to see its stage mix and all its code variants."""
    window = Window(AS_OF - timedelta(days=20 * 365), AS_OF)
    found: dict[str, list[Case]] = {key: [] for key in cancer.INCIDENCE}
    for seed in range(20_000):
        rng = random.Random(seed)
        person = make_person(rng, AS_OF)
        person = dataclasses.replace(
            person, birth_date=AS_OF - timedelta(days=rng.randrange(55 * 365, 85 * 365)))
        for module in cancer.MODULES:
            output = run(module, seed, person, window)
            if output.abstracts:
                found[KEYS[module]].append(Case(person, window, output))
    return found


def all_cases(cases: dict[str, list[Case]]) -> Iterator[Case]:
    for found in cases.values():
        yield from found


def coded_diseases(visit: Visit) -> list[Disease]:
    return [*([visit.principal] if visit.principal else []), *visit.secondary, *visit.reasons,
            *(d.disease for d in visit.diagnosed)]


# --- codes --------------------------------------------------------------------------------
def test_every_icd10cm_code_written_in_the_module_is_billable(shared_data: Path) -> None:
    literals = set(re.findall(r'"([A-Z]\d{2}(?:\.[0-9A-Z]{1,4})?)"', SOURCE))
    assert {"C61", "C20", "C34.11", "Z51.11", "C78.7"} <= literals
    assert sorted(literals - billable_icd10cm(shared_data)) == []


def test_every_icd10cm_code_in_generated_visits_is_billable(
        shared_data: Path, cases: dict[str, list[Case]]) -> None:
    used = {d.icd10cm for case in all_cases(cases) for visit in case.output.visits
            for d in coded_diseases(visit)}
    assert {"C50.411", "C50.412", "C43.59", "C18.7", "C34.32", "Z51.0", "Z85.3"} <= used
    assert sorted(used - billable_icd10cm(shared_data)) == []


def test_every_icd10pcs_code_is_valid_in_fy2026(
        shared_data: Path, cases: dict[str, list[Case]]) -> None:
    literals = {code for code in re.findall(r'"([0-9][0-9A-HJ-NP-Z]{6})"', SOURCE)
                if not code.isdigit()}
    used = {p.code.icd10pcs for case in all_cases(cases) for visit in case.output.visits
            for p in visit.procedures if p.code.icd10pcs}
    assert {"0HTT0ZZ", "0HTU0ZZ", "0DTF4ZZ", "0VT04ZZ", "0BTC4ZZ"} <= literals | used
    assert used <= literals
    assert sorted(c for c in literals if not valid_icd10pcs(shared_data, c)) == []


def test_every_hcpcs_code_is_in_the_cms_2020_file(
        shared_data: Path, cases: dict[str, list[Case]]) -> None:
    literals = set(re.findall(r'"([A-Z]\d{4})"', SOURCE))
    used = {p.code.hcpcs for case in all_cases(cases) for visit in case.output.visits
            for p in visit.procedures if p.code.hcpcs}
    assert {"J9045", "J9267", "J9190", "G0202", "G0121", "G0103"} <= literals
    assert used <= literals
    assert sorted(literals - hcpcs_codes(shared_data)) == []


def test_inpatient_procedures_carry_icd10pcs_and_stays_have_a_discharge(
        cases: dict[str, list[Case]]) -> None:
    inpatient = [v for case in all_cases(cases) for v in case.output.visits
                 if v.encounter_class == INPATIENT]
    assert len(inpatient) > 100
    for visit in inpatient:
        assert visit.days >= 1 and visit.discharge in ("home", "expired")
        assert all(p.code.icd10pcs for p in visit.procedures)


def imsweb_rows(shared_data: Path) -> dict[str, dict[str, str]]:
    with (shared_data / IMSWEB_ICD10CM).open(newline="") as table:
        return {row["ICD-10-CM-CODE"]: row for row in csv.DictReader(table)}


def test_abstract_topography_and_laterality_agree_with_the_imsweb_conversion_table(
        shared_data: Path, cases: dict[str, list[Case]]) -> None:
    """IMS's ICD-10-CM to ICD-O-3 table (NAACCR algorithms): the site must match; where the
    ICD-10-CM code fixes the side (table laterality 1 or 2) or the site is not paired (0),
    the abstract's laterality must match too; 9 means the code does not say."""
    table = imsweb_rows(shared_data)
    checked = Counter()
    for case in all_cases(cases):
        abstract = case.abstract
        row = table[str(abstract["icd10cm"]).replace(".", "")]
        assert row["REPORTABILITY"] == "Y"
        assert abstract["primarySite"] == row["ICD-O-3-PRIMARY-SITE"], abstract
        if row["LATERALITY"] in ("0", "1", "2"):
            assert abstract["laterality"] == row["LATERALITY"], abstract
        else:
            assert abstract["laterality"] in ("1", "2", "9")
        checked[abstract["cancer"]] += 1
    assert set(checked) == set(cancer.INCIDENCE)


def test_abstracts_hold_the_registrar_items(cases: dict[str, list[Case]]) -> None:
    histologies = {"breast-cancer": {"8500", "8520", "8522"},
                   "lung-cancer": {"8140", "8070", "8041", "8046"},
                   "colorectal-cancer": {"8140", "8480"}, "prostate-cancer": {"8140"},
                   "melanoma": {"8720", "8721", "8743"}}
    summary = {"localized": {"1"}, "regional": {"2", "3", "4"}, "distant": {"7"}}
    for key, found in cases.items():
        for case in found:
            a = case.abstract
            assert a["histologicTypeIcdO3"] in histologies[key]
            assert a["behaviorCodeIcdO3"] == "3" and a["diagnosticConfirmation"] == "1"
            assert date.fromisoformat(str(a["dateOfDiagnosis"])) >= case.window.start
            if a["stageGroup"] is not None:
                assert a["seerSummaryStage2018"] in summary[str(a["extent"])]
                assert str(a["tnmClinM"]).startswith("cM1") == (a["extent"] == "distant")
            if a["rxDateSurgery"]:
                assert a["tnmPathT"] and str(a["tnmPathT"]).startswith("pT")
            assert a["vitalStatus"] == ("0" if case.output.death else "1")


def test_each_case_is_diagnosed_once_with_a_pathology_report(
        cases: dict[str, list[Case]]) -> None:
    for case in all_cases(cases):
        primaries = [d for d in case.output.diagnoses if d.disease.key == case.abstract["cancer"]]
        assert len(primaries) == 1
        assert primaries[0].onset.isoformat() == case.abstract["dateOfDiagnosis"]
        visit = next(v for v in case.output.visits if primaries[0] in v.diagnosed)
        reports = [n for n in visit.notes if n.kind == "pathology-report"]
        assert reports and reports[0].findings
        assert all(n.kind in NOTE_TYPES for v in case.output.visits for n in v.notes)


def test_treatment_visits_are_sequenced_as_a_coder_would(cases: dict[str, list[Case]]) -> None:
    kinds = Counter()
    for case in all_cases(cases):
        primary = case.abstract["icd10cm"]
        for visit in case.output.visits:
            assert visit.principal is not None
            kinds[visit.kind] += 1
            if visit.kind == "chemotherapy":
                assert visit.principal.icd10cm in ("Z51.11", "Z51.12")
                assert visit.secondary[0].icd10cm == primary
            elif visit.kind == "radiation":
                assert visit.principal.icd10cm == "Z51.0"
                assert visit.secondary[0].icd10cm == primary
            elif visit.kind in ("surgery", "consultation", "admission"):
                assert visit.principal.icd10cm == primary
    assert {"screening", "procedure", "surgery", "chemotherapy", "radiation", "follow-up",
            "admission"} <= set(kinds)


# --- rates --------------------------------------------------------------------------------
def test_incidence_functions_return_the_cited_rates() -> None:
    assert cancer.breast_cancer_incidence(72, "female") == pytest.approx(438.0e-5)
    assert cancer.prostate_cancer_incidence(67, "male") == pytest.approx(780.0e-5)
    assert cancer.prostate_cancer_incidence(67, "female") == 0.0
    assert cancer.lung_cancer_incidence(77, "male") == pytest.approx(390.0e-5)
    assert cancer.colorectal_cancer_incidence(10, "male") == 0.0
    assert cancer.melanoma_incidence(90, "male") == pytest.approx(180.0e-5)


def test_diagnosis_rates_match_the_incidence_times_the_window() -> None:
    """40,000 people over a 10-year window: each cancer's count is within four standard
    deviations (Poisson) of the sum of incidence(age in mid-window) x years."""
    window = Window(AS_OF - timedelta(days=3652), AS_OF)
    observed: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for seed in range(40_000):
        person = make_person(random.Random(seed), AS_OF)
        start = max(window.start, person.birth_date)
        years = (window.as_of - start).days / 365.25
        middle = start + (window.as_of - start) / 2
        for module in cancer.MODULES:
            key = KEYS[module]
            expected[key] += cancer.INCIDENCE[key](person.age_on(middle), person.gender) * years
            if run(module, seed, person, window).abstracts:
                observed[key] += 1
    for key in cancer.INCIDENCE:
        assert expected[key] > 80
        assert abs(observed[key] - expected[key]) <= 4 * math.sqrt(expected[key]), key


def test_breast_cancer_is_almost_only_in_women_and_prostate_only_in_men(
        cases: dict[str, list[Case]]) -> None:
    breast = Counter(case.person.gender for case in cases["breast-cancer"])
    assert breast["female"] > 300
    assert breast["male"] / breast.total() < 0.03
    assert {case.person.gender for case in cases["prostate-cancer"]} == {"male"}
    male_codes = {case.abstract["icd10cm"] for case in cases["breast-cancer"]
                  if case.person.gender == "male"}
    assert male_codes <= {"C50.921", "C50.922"}


def test_stage_at_diagnosis_follows_the_seer_shares(cases: dict[str, list[Case]]) -> None:
    for key, found in cases.items():
        extents = Counter(str(case.abstract["extent"]) for case in found)
        n = extents.total()
        assert n > 200, key
        weights = cancer.STAGE_SHARES[key]
        for extent, weight in zip(cancer.EXTENTS, weights, strict=True):
            share = weight / sum(weights)
            tolerance = 4 * math.sqrt(share * (1 - share) / n)
            assert abs(extents[extent] / n - share) <= tolerance, (key, extent, extents)


# --- the course in time -------------------------------------------------------------------
def test_visits_stay_inside_the_window_and_none_follow_death(
        cases: dict[str, list[Case]]) -> None:
    for case in all_cases(cases):
        death = case.output.death
        for visit in case.output.visits:
            end = visit.day + timedelta(days=visit.days)
            assert case.window.start <= visit.day and end < case.window.as_of
            if death:
                assert end <= death


def test_only_distant_cases_die_and_they_die_in_a_terminal_admission(
        cases: dict[str, list[Case]]) -> None:
    deaths = 0
    for case in all_cases(cases):
        death = case.output.death
        if death is None:
            assert case.abstract["dateOfDeath"] is None
            continue
        deaths += 1
        assert case.abstract["extent"] == "distant"
        assert case.abstract["dateOfDeath"] == death.isoformat() < AS_OF.isoformat()
        last = case.output.visits[-1]
        assert last.encounter_class == INPATIENT and last.discharge == "expired"
        assert last.day + timedelta(days=last.days) == death
        assert "Z51.5" in {d.icd10cm for d in last.secondary}
    assert deaths > 50


def test_the_same_seed_gives_the_same_course() -> None:
    for seed in range(3000):
        person = make_person(random.Random(seed), AS_OF)
        for module in cancer.MODULES:
            assert run(module, seed, person, WINDOW) == run(module, seed, person, WINDOW)


def test_a_window_before_birth_or_a_day_long_gives_no_cancer() -> None:
    person = make_person(random.Random(1), AS_OF)
    old = dataclasses.replace(person, birth_date=date(1940, 1, 1))
    for module in cancer.MODULES:
        assert module(random.Random(0), old, Window(AS_OF, AS_OF)) == ModuleOutput()
        child = dataclasses.replace(person, birth_date=AS_OF - timedelta(days=400))
        assert module(random.Random(0), child, WINDOW) == ModuleOutput()
