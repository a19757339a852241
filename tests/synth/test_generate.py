"""The synthetic hospital generator: valid, loadable, coded, deterministic, and realistic."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
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
from tests.synth.codesets import billable_icd10cm, hcpcs_codes, valid_icd10pcs


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


def test_every_generated_resource_passes_validation(hospital: Path) -> None:
    resources = resources_in(hospital)
    assert len(resources) > 50 * 10
    problems = [(r["resourceType"], issue) for r in resources
                for issue in validate_resource(r) if issue.severity == "error"]
    assert problems == []
    kinds = Counter(r["resourceType"] for r in resources)
    duplicates = sum(len(t["duplicates"]) for t in answer_key(hospital))
    assert kinds["Patient"] == kinds["Coverage"] == 50 + duplicates
    assert {"Encounter", "Observation", "Condition", "MedicationRequest", "Practitioner",
            "Organization", "DocumentReference", "Immunization", "CarePlan"} <= set(kinds)


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
    files = len(find_files([hospital / "bundles"]))
    assert len(stored) == expected + files  # and each file's import Provenance
    assert sum(res["resourceType"] == "Provenance" for res in stored) == files
    ids = {f"{res['resourceType']}/{res['id']}" for res in stored}
    dangling = [ref for res in stored for ref in references_in(res)
                if ref.split("/_history/")[0] not in ids]
    assert dangling == []
    assert not any(ref.startswith("urn:uuid:") for res in stored for ref in references_in(res))


def ndjson(folder: Path, resource_type: str) -> list[dict[str, Any]]:
    path = folder / "ndjson" / f"{resource_type}.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()]


def answer_key(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "answer-key.ndjson").read_text().splitlines()]


def codes(resources: list[dict[str, Any]], element: str, system: str) -> set[str]:
    return {coding["code"] for r in resources if element in r
            for coding in r[element]["coding"] if coding["system"] == system}


def test_every_code_is_valid_in_its_code_set(
        hospital: Path, big_hospital: Path, shared_data: Path) -> None:
    billable = billable_icd10cm(shared_data)
    assert "I10" in billable and "E11.9" in billable and "E11" not in billable
    conditions = [r for r in resources_in(hospital) if r["resourceType"] == "Condition"] + \
        ndjson(big_hospital, "Condition")
    used = codes(conditions, "code", "http://hl7.org/fhir/sid/icd-10-cm")
    assert {"I10", "E11.9", "J45.20", "N39.0", "C61", "O80"} & used
    assert len(used) > 40
    assert used <= billable, sorted(used - billable)
    procedures = ndjson(big_hospital, "Procedure")
    pcs = codes(procedures, "code", "http://www.cms.gov/Medicare/Coding/ICD10")
    assert len(pcs) > 5
    assert [code for code in pcs if not valid_icd10pcs(shared_data, code)] == []
    hcpcs = codes(procedures, "code", "urn:oid:2.16.840.1.113883.6.285")
    assert hcpcs and hcpcs <= hcpcs_codes(shared_data)
    # The answer key's codes, the coder's truth, come from the same code sets.
    truth = answer_key(big_hospital)
    encounters = [e for t in truth for e in t["encounters"]]
    assert {e["principal"] for e in encounters} <= billable
    assert {c for e in encounters for c in e["secondary"]} <= billable
    assert all(valid_icd10pcs(shared_data, p["icd10pcs"]) for e in encounters
               for p in e["procedures"] if p["icd10pcs"])
    vaccines = codes(ndjson(big_hospital, "Immunization"), "vaccineCode",
                     "http://hl7.org/fhir/sid/cvx")
    assert vaccines == {"150", "216", "115"}


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
    truth = answer_key(big_hospital)
    second = {d["mrn"] for t in truth for d in t["duplicates"]}
    patients = [p for p in ndjson(big_hospital, "Patient")
                if not {i["value"] for i in p["identifier"]} & second]
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
    assert children and not any(c["condition"] in ("hypertension", "type-2-diabetes")
                                for t in children for c in t["conditions"])


def test_the_answer_key_matches_the_charted_diagnoses_and_stays_out_of_the_fhir_folder(
        big_hospital: Path) -> None:
    key = answer_key(big_hospital)
    truth = {t["mrn"]: {c["icd10cm"] for c in t["conditions"]} for t in key}
    # A visit registered under a duplicate record charts its diagnoses there: count them for
    # the person the answer key says it is.
    same_person = {d["mrn"]: t["mrn"] for t in key for d in t["duplicates"]}
    patient_mrn = {}
    for line in (big_hospital / "ndjson" / "Patient.ndjson").read_text().splitlines():
        p = json.loads(line)
        mrn = next(i["value"] for i in p["identifier"] if i["system"] == MRN_SYSTEM)
        patient_mrn[f"Patient/{p['id']}"] = same_person.get(mrn, mrn)
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
    duplicates = sum(len(t["duplicates"]) for t in answer_key(big_hospital))
    assert 40 <= duplicates <= 130  # DUPLICATE_RATE 4% of 2,000
    assert len(mrns) == len(ssns) == 2000 + duplicates
    assert all(len(mrn) == 9 and luhn_valid(mrn) for mrn in mrns)
    assert len(set(mrns)) > 1990
    assert not any(ssn_could_be_valid(ssn) for ssn in ssns)
    assert all(900 <= int(ssn[:3]) <= 999 for ssn in ssns)
    assert len(STATES) == 50
    states = Counter(p["address"][0]["state"] for p in patients)
    assert len(states) >= 45 and states.most_common(1)[0][0] == "CA"
    genders = Counter(p["gender"] for p in patients)
    assert abs(genders["female"] - genders["male"]) < 200

    # Coverage follows the true age (a duplicate registration may carry a mistyped birth date).
    second = {d["mrn"] for t in answer_key(big_hospital) for d in t["duplicates"]}
    ages = {f"Patient/{p['id']}": _age(p["birthDate"], DEFAULT_AS_OF) for p in patients
            if not {i["value"] for i in p["identifier"]} & second}
    payers: Counter[str] = Counter()
    for line in (big_hospital / "ndjson" / "Coverage.ndjson").read_text().splitlines():
        c = json.loads(line)
        kind = c["type"]["coding"][0]["display"]
        if c["beneficiary"]["reference"] not in ages:
            continue
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
    assert all(len(units) == 1 for units in seen.values()), seen  # one unit per code
    expected = {"85354-9": {"mm[Hg]"}, "8867-4": {"/min"}, "8302-2": {"cm"},
                "29463-7": {"kg"}, "39156-5": {"kg/m2"}, "4548-4": {"%"},
                "2345-7": {"mg/dL"}, "2708-6": {"%"}, "2160-0": {"mg/dL"}}
    assert {code: seen[code] for code in expected} == expected
    assert len(seen) > 15
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


# http://terminology.hl7.org/CodeSystem/discharge-disposition (R4 4.0.1)
R4_DISPOSITIONS = {"home", "alt-home", "other-hcf", "hosp", "long", "aadvice", "exp", "psy",
                   "rehab", "snf", "oth"}


def test_encounters_of_every_class_with_stays_discharged(big_hospital: Path) -> None:
    encounters = ndjson(big_hospital, "Encounter")
    classes = Counter(e["class"]["code"] for e in encounters)
    assert set(classes) == {"AMB", "EMER", "IMP", "OBSENC"}, classes
    assert classes["AMB"] > classes["EMER"] > 0 and classes["IMP"] > 0
    for encounter in encounters:
        assert encounter["period"]["start"] < encounter["period"]["end"]
        number = encounter["identifier"][0]
        assert number["system"].endswith(".3") and number["value"].startswith("V")
        if encounter["class"]["code"] in ("IMP", "OBSENC"):
            codings = encounter["hospitalization"]["dischargeDisposition"]["coding"]
            # An R4 discharge-disposition code, and the UB-04 patient status billing needs.
            assert codings[0]["code"] in R4_DISPOSITIONS
            assert [c["system"] for c in codings[1:]] == [
                "https://www.nubc.org/CodeSystem/PatDischargeStatus"]
            assert re.fullmatch(r"[0-9]{2}", codings[1]["code"])
    numbers = [e["identifier"][0]["value"] for e in encounters]
    assert len(set(numbers)) == len(numbers)
    # The answer key names every encounter by its visit number, with its coded truth.
    key_numbers = {e["encounter"] for t in answer_key(big_hospital) for e in t["encounters"]}
    assert key_numbers == set(numbers)


def test_documents_carry_narrative_and_some_are_deficient(big_hospital: Path) -> None:
    documents = ndjson(big_hospital, "DocumentReference")
    kinds = Counter(d["type"]["coding"][0]["code"] for d in documents)
    # H&P, progress, ED, discharge summary, operative, pathology, radiology (LOINC).
    assert set(kinds) == {"34117-2", "11506-3", "34111-5", "18842-5", "11504-8", "11526-1",
                          "18748-4"}, kinds
    patients = {f"Patient/{p['id']}": p for p in ndjson(big_hospital, "Patient")}
    unsigned = 0
    for document in documents[:3000]:
        text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
        assert len(text) > 200
        assert patients[document["subject"]["reference"]]["name"][0]["family"] in text
        assert "Essential (primary) hypertension" not in text  # clinical words, not ICD titles
        if document["docStatus"] == "preliminary":
            unsigned += 1
            assert "authenticator" not in document
            assert "signed by" not in text.lower() and "signed electronically" not in text
        else:
            assert document["authenticator"]["reference"].startswith("Practitioner/")
    assert unsigned > 0
    deficiencies = Counter(d["deficiency"] for t in answer_key(big_hospital)
                           for e in t["encounters"] for d in e["documents"])
    assert deficiencies["unsigned"] > 0 and deficiencies["missing"] > 0
    assert deficiencies[None] > 10 * (deficiencies["unsigned"] + deficiencies["missing"])
    assert sum(deficiencies.values()) - deficiencies["missing"] == len(documents)


def test_duplicate_registrations_differ_as_registration_errors_do(big_hospital: Path) -> None:
    truth = answer_key(big_hospital)
    by_mrn = {next(i["value"] for i in p["identifier"] if i["system"] == MRN_SYSTEM): p
              for p in ndjson(big_hospital, "Patient")}
    pairs = [(by_mrn[t["mrn"]], by_mrn[d["mrn"]], d["changes"]) for t in truth
             for d in t["duplicates"]]
    assert pairs
    changes = Counter(change for _, _, found in pairs for change in found)
    assert {"given-name-typo", "family-name-typo", "birth-date-transposed",
            "address-changed"} <= set(changes)
    for first, second, found in pairs:
        assert first["id"] != second["id"]
        ssn = [i["value"] for i in first["identifier"] if i["system"] == SSN_SYSTEM]
        assert ssn == [i["value"] for i in second["identifier"] if i["system"] == SSN_SYSTEM]
        assert first["gender"] == second["gender"]
        assert ("birth-date-transposed" in found) == (first["birthDate"] != second["birthDate"])
        assert ("family-name-typo" in found) == (
            first["name"][0]["family"] != second["name"][0]["family"])


def test_nothing_happens_after_a_death(big_hospital: Path) -> None:
    deceased = {f"Patient/{p['id']}": p["deceasedDateTime"][:10]
                for p in ndjson(big_hospital, "Patient") if "deceasedDateTime" in p}
    assert deceased
    for encounter in ndjson(big_hospital, "Encounter"):
        died = deceased.get(encounter["subject"]["reference"])
        if died is not None:
            assert encounter["period"]["end"][:10] <= died
    died_at = [e for t in answer_key(big_hospital) if t["death"] for e in t["encounters"]
               if e["end"] == t["death"] and e["class"] == "IMP"]
    assert died_at
