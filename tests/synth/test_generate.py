"""The synthetic hospital generator: valid, loadable, coded, deterministic, and realistic."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import false, select

from chartkeeper.fhir.validation import validate_resource
from chartkeeper.store import Store, schema
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth import DEFAULT_AS_OF, GenerateError, generate
from chartkeeper.synth.modules import DIABETES_BY_AGE, HYPERTENSION_BY_AGE
from chartkeeper.synth.people import (
    MRN_SYSTEM,
    SSN_SYSTEM,
    STATES,
    luhn_check_digit,
    luhn_valid,
    ssn_could_be_valid,
)

ICD10CM_FY2026 = Path("codesets/icd10cm_fy2026_tabular_simple-icd-10-cm/code-list-April-2026.txt")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def resources_in(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((out / "bundles").glob("*.json")):
        found.extend(entry["resource"] for entry in json.loads(path.read_text())["entry"])
    return found


def references_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [ref for key, value in node.items()
                for ref in ([value] if key == "reference" and isinstance(value, str)
                            else references_in(value))]
    if isinstance(node, list):
        return [ref for item in node for ref in references_in(item)]
    return []


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "hospital"
    generate(out, 50, 2026)
    return out


@pytest.fixture(scope="module")
def big_hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-big") / "hospital"
    generate(out, 2000, 11, output_format="ndjson")
    return out


def billable_icd10cm(shared_data: Path) -> set[str]:
    """Leaf codes of the April 2026 ICD-10-CM tabular (a code with no longer code under it)."""
    codes = [line.strip() for line in (shared_data / ICD10CM_FY2026).read_text().splitlines()
             if line.strip() and "-" not in line]
    listed = set(codes)
    parents = {code[:n] for code in codes for n in range(3, len(code)) if code[:n] in listed}
    return listed - parents


def test_every_generated_resource_passes_validation(hospital: Path) -> None:
    resources = resources_in(hospital)
    assert len(resources) > 50 * 10
    problems = [(r["resourceType"], issue) for r in resources
                for issue in validate_resource(r) if issue.severity == "error"]
    assert problems == []
    kinds = Counter(r["resourceType"] for r in resources)
    assert kinds["Patient"] == 50 and kinds["Coverage"] == 50
    assert {"Encounter", "Observation", "Condition", "MedicationRequest", "Practitioner",
            "Organization"} <= set(kinds)


def test_bundles_load_into_a_sqlite_store_whole_with_every_reference_resolving(
        hospital: Path, sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.create_schema()
    summary = Importer(store, workers=0).import_files(find_files([hospital / "bundles"]))
    expected = len(resources_in(hospital))
    assert (summary.created, summary.rejected, summary.problems) == (expected, 0, [])
    r = schema.resource
    with store.read() as txn:
        stored = [json.loads(content) for (content,) in txn.conn.execute(
            select(r.c.content).where(r.c.deleted == false()))]
    store.dispose()
    assert len(stored) == expected
    ids = {f"{res['resourceType']}/{res['id']}" for res in stored}
    dangling = [ref for res in stored for ref in references_in(res) if ref not in ids]
    assert dangling == []
    assert not any(ref.startswith("urn:uuid:") for res in stored for ref in references_in(res))


def test_every_icd10cm_code_is_billable_in_the_april_2026_release(
        hospital: Path, big_hospital: Path, shared_data: Path) -> None:
    billable = billable_icd10cm(shared_data)
    assert "I10" in billable and "E119" in billable and "E11" not in billable
    conditions = resources_in(hospital) + [
        json.loads(line)
        for line in (big_hospital / "ndjson" / "Condition.ndjson").read_text().splitlines()]
    used = {coding["code"] for c in conditions if c["resourceType"] == "Condition"
            for coding in c["code"]["coding"]
            if coding["system"] == "http://hl7.org/fhir/sid/icd-10-cm"}
    assert used == {"I10", "E11.9"}
    assert {code.replace(".", "") for code in used} <= billable


def test_same_seed_gives_byte_identical_output_and_another_seed_differs(
        tmp_path: Path) -> None:
    generate(tmp_path / "a", 30, 5)
    generate(tmp_path / "b", 30, 5)
    generate(tmp_path / "c", 30, 6)
    generate(tmp_path / "d", 30, 5, output_format="ndjson")
    generate(tmp_path / "e", 30, 5, output_format="ndjson")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "d") == digest(tmp_path / "e")
    first, other = digest(tmp_path / "a"), digest(tmp_path / "c")
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_a_patients_records_do_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    generate(tmp_path / "few", 3, 9)
    generate(tmp_path / "more", 10, 9)
    for name in ("hospital.json", "patient-000001.json", "patient-000003.json"):
        assert ((tmp_path / "few" / "bundles" / name).read_bytes()
                == (tmp_path / "more" / "bundles" / name).read_bytes())


def _age(birth: str, day: date) -> int:
    born = date.fromisoformat(birth)
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def test_prevalence_by_age_band_is_near_the_cited_figures(big_hospital: Path) -> None:
    patients = [json.loads(line) for line in
                (big_hospital / "ndjson" / "Patient.ndjson").read_text().splitlines()]
    truth = [json.loads(line) for line in
             (big_hospital / "answer-key.ndjson").read_text().splitlines()]
    assert len(patients) == len(truth) == 2000
    ages = {next(i["value"] for i in p["identifier"] if i["system"] == MRN_SYSTEM):
            _age(p["birthDate"], DEFAULT_AS_OF) for p in patients}
    tolerance = 0.07  # about three standard errors for ~400 patients in a band
    for key, bands in (("hypertension", HYPERTENSION_BY_AGE),
                       ("type-2-diabetes", DIABETES_BY_AGE)):
        for low, high, cited in bands:
            in_band = [t for t in truth if low <= ages[t["mrn"]] < high]
            assert len(in_band) > 250
            having = sum(any(c["condition"] == key for c in t["conditions"]) for t in in_band)
            assert abs(having / len(in_band) - cited) < tolerance, (key, low, high, having,
                                                                    len(in_band), cited)
    children = [t for t in truth if ages[t["mrn"]] < 18]
    assert children and all(t["conditions"] == [] for t in children)


def test_the_answer_key_matches_the_charted_diagnoses_and_stays_out_of_the_fhir_folder(
        big_hospital: Path) -> None:
    truth = {t["mrn"]: {c["icd10cm"] for c in t["conditions"]} for t in
             map(json.loads, (big_hospital / "answer-key.ndjson").read_text().splitlines())}
    patient_mrn = {}
    for line in (big_hospital / "ndjson" / "Patient.ndjson").read_text().splitlines():
        p = json.loads(line)
        patient_mrn[f"Patient/{p['id']}"] = next(
            i["value"] for i in p["identifier"] if i["system"] == MRN_SYSTEM)
    charted: dict[str, set[str]] = {mrn: set() for mrn in patient_mrn.values()}
    for line in (big_hospital / "ndjson" / "Condition.ndjson").read_text().splitlines():
        c = json.loads(line)
        charted[patient_mrn[c["subject"]["reference"]]].add(c["code"]["coding"][0]["code"])
    assert charted == truth
    assert not list((big_hospital / "ndjson").glob("answer*"))


def test_demographics_identifiers_coverage_and_addresses(big_hospital: Path) -> None:
    patients = [json.loads(line) for line in
                (big_hospital / "ndjson" / "Patient.ndjson").read_text().splitlines()]
    mrns = [i["value"] for p in patients for i in p["identifier"] if i["system"] == MRN_SYSTEM]
    ssns = [i["value"] for p in patients for i in p["identifier"] if i["system"] == SSN_SYSTEM]
    assert len(mrns) == len(ssns) == 2000
    assert all(len(mrn) == 9 and luhn_valid(mrn) for mrn in mrns)
    assert len(set(mrns)) > 1990
    assert not any(ssn_could_be_valid(ssn) for ssn in ssns)
    assert all(900 <= int(ssn[:3]) <= 999 for ssn in ssns)
    assert len(STATES) == 50
    states = Counter(p["address"][0]["state"] for p in patients)
    assert len(states) >= 45 and states.most_common(1)[0][0] == "CA"
    genders = Counter(p["gender"] for p in patients)
    assert abs(genders["female"] - genders["male"]) < 200

    ages = {f"Patient/{p['id']}": _age(p["birthDate"], DEFAULT_AS_OF) for p in patients}
    payers: Counter[str] = Counter()
    for line in (big_hospital / "ndjson" / "Coverage.ndjson").read_text().splitlines():
        c = json.loads(line)
        kind = c["type"]["coding"][0]["display"]
        old = ages[c["beneficiary"]["reference"]] >= 65
        assert (kind == "MEDICARE") == old
        payers[kind] += 1
    assert set(payers) == {"MEDICARE", "MEDICAID", "PRIVATE HEALTH INSURANCE", "Self-pay"}


def test_luhn_check_digit_matches_a_known_number() -> None:
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_vital_signs_and_labs_carry_loinc_codes_and_ucum_units(big_hospital: Path) -> None:
    seen: dict[str, set[str]] = {}
    values: dict[str, list[float]] = {}
    for line in (big_hospital / "ndjson" / "Observation.ndjson").read_text().splitlines():
        o = json.loads(line)
        quantities = ([c["valueQuantity"] for c in o["component"]] if "component" in o
                      else [o["valueQuantity"]])
        assert all(q["system"] == "http://unitsofmeasure.org" for q in quantities)
        code = o["code"]["coding"][0]["code"]
        seen.setdefault(code, set()).update(q["code"] for q in quantities)
        if "valueQuantity" in o:
            values.setdefault(code, []).append(o["valueQuantity"]["value"])
    assert seen == {"85354-9": {"mm[Hg]"}, "8867-4": {"/min"}, "8302-2": {"cm"},
                    "29463-7": {"kg"}, "39156-5": {"kg/m2"}, "4548-4": {"%"},
                    "2345-7": {"mg/dL"}}
    assert 4.3 <= min(values["4548-4"]) and max(values["4548-4"]) <= 14
    assert 5.2 < sorted(values["4548-4"])[len(values["4548-4"]) // 2] < 6.0


@pytest.mark.parametrize("kind", ["zero", "negative"])
def test_generate_refuses_a_count_below_one(tmp_path: Path, kind: str) -> None:
    with pytest.raises(GenerateError, match="--patients must be 1 or more"):
        generate(tmp_path / "out", 0 if kind == "zero" else -5, 1)
    assert not (tmp_path / "out").exists()


def chartkeeper(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "chartkeeper.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("count", "message"), [
    ("0", "error: --patients must be 1 or more, got 0"),
    ("-5", "error: --patients must be 1 or more, got -5"),
])
def test_cli_rejects_bad_counts_with_one_clear_line(tmp_path: Path, count: str,
                                                    message: str) -> None:
    result = chartkeeper("generate", "--patients", count, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_cli_rejects_an_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = chartkeeper("generate", "--patients", "2", "--out", str(blocker / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --out {blocker / 'out'} cannot be written: "
                                     "Not a directory")


def test_cli_generates_and_reports_what_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = chartkeeper("generate", "--patients", "4", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("patients=4 resources=")
    assert sorted(p.name for p in (out / "bundles").iterdir()) == [
        "hospital.json", *(f"patient-00000{i}.json" for i in range(1, 5))]
    again = chartkeeper("generate", "--patients", "4", "--out", str(out))
    assert again.returncode == 2 and "is not empty" in again.stderr
