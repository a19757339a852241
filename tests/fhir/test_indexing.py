"""Search-index extraction: official examples, Synthea data, and the rules of R4 search."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chartkeeper.fhir.definitions import SearchParam, load
from chartkeeper.fhir.fhirpath import (
    FhirPathEvaluationError,
    FhirPathSyntaxError,
    UnsupportedExpressionError,
    compile_expression,
    parse_reference,
)
from chartkeeper.fhir.indexing import (
    MAX_DATE_US,
    MIN_DATE_US,
    IndexRows,
    InvalidSearchValueError,
    UnknownResourceTypeError,
    compile_param,
    compiled_params,
    date_range,
    extract,
    normalize_string,
)
from tests.fhir.test_validation import package_resources

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
EXAMPLES = DATA / "fhir-r4" / "instance_examples"
EXAMPLES_PACKAGE = DATA / "fhir-r4" / "hl7.fhir.r4.examples-4.0.1.tgz"
SYNTHEA = DATA / "synthea"


def _us(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _example(name: str) -> dict[str, Any]:
    resource: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return resource


def _rows_for(rows: list[Any], param: str) -> list[Any]:
    return [row for row in rows if row[0] == param]


def _with_entries(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield resource
    for entry in resource.get("entry", []) if resource.get("resourceType") == "Bundle" else []:
        inner = entry.get("resource")
        if isinstance(inner, dict):
            yield from _with_entries(inner)


def _synthea_resources() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for path in sorted((SYNTHEA / "bulk_ndjson_10_patients").glob("*.ndjson")):
        for line in path.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                if "resourceType" in item:  # log.ndjson holds export log lines
                    resources.append(item)
    for path in sorted((SYNTHEA / "r4_transaction_bundles_subset").glob("*.json")):
        bundle = json.loads(path.read_text())
        resources.extend(entry["resource"] for entry in bundle["entry"])
    return resources


@pytest.fixture(scope="module")
def synthea_resources() -> list[dict[str, Any]]:
    return _synthea_resources()


def _assert_well_formed(rows: IndexRows) -> None:
    for param, normalized, exact in rows.strings:
        assert len(exact) <= 255 and len(normalized) <= 255, param
        assert normalized == normalize_string(normalized), param
    for param, low, high in rows.dates:
        assert MIN_DATE_US <= low <= high <= MAX_DATE_US, param
    for param, _, _, amount, lowest, highest in rows.quantities:
        assert lowest <= amount <= highest, param
    for param, number, least, most in rows.numbers:
        assert least <= number <= most, param


# ---------------------------------------------------------------------------------------------
# Every parameter compiles one way or another


def test_every_official_parameter_is_fast_fallback_or_skipped_with_a_reason() -> None:
    definitions = load()
    routes: Counter[str] = Counter()
    skipped_reasons: Counter[str] = Counter()
    total = 0
    for resource_type in sorted(definitions.resource_types):
        params = definitions.params_for(resource_type)
        compiled = compiled_params(resource_type)
        assert [c.param.code for c in compiled] == list(params)
        for item in compiled:
            total += 1
            routes[item.route] += 1
            if item.route == "skipped":
                skipped_reasons[item.reason.split(":")[0]] += 1
                # only parameters with nothing to index are skipped
                assert (
                    item.param.type == "special"
                    or item.param.expression is None
                    or item.param.code in ("_text", "_content", "_query")
                    or item.reason == "composite whose first component is not a token"
                ), item
            else:
                assert item.entries, item
    print(f"\nsearch parameters: {total}; routes: {dict(routes)}; skipped: {dict(skipped_reasons)}")
    assert routes["fast"] + routes["fallback"] + routes["skipped"] == total == 3169
    assert routes["fast"] == 2580
    # The one official expression outside the subset is the R4 Patient parameter whose
    # expression starts at DocumentReference (an error in the definitions).
    assert routes["fallback"] == 1
    assert routes["skipped"] == 588


def test_fast_path_covers_every_distinct_official_expression_but_one() -> None:
    definitions = load()
    fast, other = set(), set()
    for resource_type in definitions.resource_types:
        for item in compiled_params(resource_type):
            expression = item.param.expression
            if expression and item.route == "fast":
                fast.add(expression)
            elif expression and item.route == "fallback":
                other.add(expression)
    print(f"\ndistinct expressions: fast {len(fast)}, fallback {len(other)}")
    assert len(other) == 1
    assert len(fast) > 1400


def test_an_expression_outside_the_subset_falls_back_to_fhirpathpy() -> None:
    param = SearchParam(
        code="family-select", resource_type="Patient", type="string",
        expression="Patient.name.select(family)", url="urn:test:family-select",
    )
    compiled = compile_param(param)
    assert compiled.route == "fallback"
    assert "select" in compiled.reason
    rows = IndexRows()
    compiled.index(_example("Patient-example.json"), rows)
    assert rows.strings == [
        ("family-select", "chalmers", "Chalmers"), ("family-select", "windsor", "Windsor")
    ]


def test_fallback_resolve_filter_keeps_only_references_to_the_type() -> None:
    param = SearchParam(
        code="subj", resource_type="Observation", type="reference",
        expression="Observation.subject.where(resolve() is Patient).select($this)",
        url="urn:test:subj",
    )
    compiled = compile_param(param)
    assert compiled.route == "fallback"
    rows = IndexRows()
    compiled.index({"resourceType": "Observation", "subject": {"reference": "Patient/1"}}, rows)
    compiled.index({"resourceType": "Observation", "subject": {"reference": "Group/2"}}, rows)
    assert rows.references == [("subj", "Patient", "1", None)]


def test_a_parameter_neither_evaluator_reads_is_skipped_not_raised() -> None:
    param = SearchParam(
        code="broken", resource_type="Patient", type="string",
        expression="Patient.name.where(",
        url="urn:test:broken",
    )
    compiled = compile_param(param)
    assert compiled.route == "skipped"
    assert "neither evaluator" in compiled.reason
    assert compiled.entries == ()


def test_compiler_rejects_what_it_cannot_type() -> None:
    with pytest.raises(UnsupportedExpressionError, match="'nonsense' is not an element"):
        compile_expression("Patient.nonsense", "Patient")
    with pytest.raises(UnsupportedExpressionError, match="select"):
        compile_expression("Patient.name.select(given)", "Patient")
    with pytest.raises(FhirPathSyntaxError, match="expected"):
        compile_expression("Patient.name.where(", "Patient")


def test_boolean_logic_on_several_items_is_an_evaluation_error() -> None:
    (branch,) = compile_expression("Patient.name.given and true", "Patient")
    patient = {"resourceType": "Patient", "name": [{"given": ["Ann", "Lee"]}]}
    with pytest.raises(FhirPathEvaluationError, match="collection of 2 items"):
        branch.evaluate([patient], patient)
    (exists,) = compile_expression("Patient.name.given.exists() and true", "Patient")
    assert exists.evaluate([patient], patient) == [True]


def test_choice_elements_compile_to_one_branch_per_type() -> None:
    branches = compile_expression("Observation.value", "Observation")
    assert {b.type.name for b in branches} >= {"Quantity", "CodeableConcept", "string", "Period"}
    only = compile_expression("(Observation.value as Quantity)", "Observation")
    assert [(b.keys, b.type.name) for b in only] == [(("valueQuantity",), "Quantity")]
    nested = compile_expression("Patient.contact.name", "Patient")
    assert [b.type.name for b in nested] == ["HumanName"]
    recursive = compile_expression("Questionnaire.item.item.code", "Questionnaire")
    assert [b.type.name for b in recursive] == ["Coding"]


# ---------------------------------------------------------------------------------------------
# Whole data sets


def test_extract_indexes_all_685_official_example_files() -> None:
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) == 685
    indexed = 0
    for path in files:
        resource = json.loads(path.read_text())
        rows = extract(resource)
        _assert_well_formed(rows)
        if "id" in resource:
            assert (
                "_id", None, resource["id"], None
            ) in rows.tokens, path.name
        indexed += 1
    assert indexed == 685


def test_extract_indexes_every_resource_in_the_examples_package() -> None:
    count = 0
    for _name, resource in package_resources():
        for item in _with_entries(resource):
            _assert_well_formed(extract(item))
            count += 1
    assert count > 5300


def test_extract_indexes_all_synthea_resources(synthea_resources: list[dict[str, Any]]) -> None:
    assert len(synthea_resources) > 13_000
    per_type: Counter[str] = Counter()
    for resource in synthea_resources:
        rows = extract(resource)
        _assert_well_formed(rows)
        per_type[resource["resourceType"]] += 1
        assert ("_id", None, resource["id"], None) in rows.tokens
        if resource["resourceType"] == "Observation":
            assert _rows_for(rows.tokens, "code")
            assert _rows_for(rows.references, "subject")
    assert per_type["Observation"] > 3000


# ---------------------------------------------------------------------------------------------
# Hand-checked official examples


def test_patient_example_rows() -> None:
    rows = extract(_example("Patient-example.json"))
    assert ("family", "chalmers", "Chalmers") in rows.strings
    assert ("family", "windsor", "Windsor") in rows.strings
    assert {r[2] for r in _rows_for(rows.strings, "given")} == {"Peter", "James", "Jim"}
    name_values = {r[2] for r in _rows_for(rows.strings, "name")}
    assert {"Chalmers", "Peter", "James", "Jim", "Windsor"} <= name_values
    assert ("address-city", "pleasantville", "PleasantVille") in rows.strings
    assert _rows_for(rows.dates, "birthdate") == [
        ("birthdate", _us("1974-12-25T00:00:00Z"), _us("1974-12-25T23:59:59.999999Z"))
    ]
    assert ("gender", None, "male", None) in rows.tokens
    assert ("identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", None) in rows.tokens
    assert ("telecom", None, "(03) 5555 6473", None) in rows.tokens
    assert ("phone", None, "(03) 5555 6473", None) in rows.tokens
    assert ("organization", "Organization", "1", None) in rows.references
    assert ("_id", None, "example", None) in rows.tokens
    assert ("active", None, "true", None) in rows.tokens


def test_observation_example_rows() -> None:
    rows = extract(_example("Observation-example.json"))
    loinc = {(r[1], r[2]) for r in _rows_for(rows.tokens, "code") if r[1] == "http://loinc.org"}
    assert loinc == {("http://loinc.org", "29463-7"), ("http://loinc.org", "3141-9")}
    assert ("code", "http://loinc.org", "29463-7", "body weight") in rows.tokens
    assert ("subject", "Patient", "example", None) in rows.references
    assert ("patient", "Patient", "example", None) in rows.references
    assert _rows_for(rows.dates, "date") == [
        ("date", _us("2016-03-28T00:00:00Z"), _us("2016-03-28T23:59:59.999999Z"))
    ]
    assert _rows_for(rows.quantities, "value-quantity") == [
        ("value-quantity", "http://unitsofmeasure.org", "[lb_av]", 185.0, 184.5, 185.5)
    ]
    assert ("combo-code", "http://loinc.org", "29463-7", "body weight") in rows.tokens
    assert (
        "code-value-quantity", "http://loinc.org", "29463-7", "http://unitsofmeasure.org",
        "[lb_av]", 184.5, 185.5, None,
    ) in rows.composites


def test_observation_subject_group_is_not_a_patient() -> None:
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Group/g1"}}
    rows = extract(resource)
    assert ("subject", "Group", "g1", None) in rows.references
    assert _rows_for(rows.references, "patient") == []


def test_encounter_period_is_one_range_in_utc() -> None:
    rows = extract(_example("Encounter-home.json"))
    assert _rows_for(rows.dates, "date") == [
        ("date", _us("2015-01-17T06:00:00Z"), _us("2015-01-17T06:30:00.999999Z"))
    ]


def test_open_period_runs_to_the_sentinel() -> None:
    rows = extract({"resourceType": "Encounter", "status": "planned",
                    "period": {"start": "2020-05-01"}})
    assert rows.dates == [("date", _us("2020-05-01T00:00:00Z"), MAX_DATE_US)]


def test_condition_onset_date_time() -> None:
    rows = extract(_example("Condition-f201.json"))
    assert _rows_for(rows.dates, "onset-date") == [
        ("onset-date", _us("2013-04-02T00:00:00Z"), _us("2013-04-02T23:59:59.999999Z"))
    ]


def test_blood_pressure_component_code_value_quantity() -> None:
    rows = extract(_example("Observation-blood-pressure.json"))
    components = _rows_for(rows.composites, "component-code-value-quantity")
    assert (
        "component-code-value-quantity", "http://loinc.org", "8480-6",
        "http://unitsofmeasure.org", "mm[Hg]", 106.5, 107.5, None,
    ) in components
    assert (
        "component-code-value-quantity", "http://loinc.org", "8462-4",
        "http://unitsofmeasure.org", "mm[Hg]", 59.5, 60.5, None,
    ) in components
    # systolic codes never pair with the diastolic value
    assert not [r for r in components if r[2] == "8480-6" and r[5] == 59.5]
    # the panel itself has no value, so code-value-quantity has nothing to index
    assert _rows_for(rows.composites, "code-value-quantity") == []


def test_id_and_last_updated() -> None:
    rows = extract(_example("Patient-glossy.json"))
    assert ("_id", None, "glossy", None) in rows.tokens
    meta = _example("Patient-glossy.json")["meta"]["lastUpdated"]
    assert _rows_for(rows.dates, "_lastUpdated") == [("_lastUpdated", *date_range(meta))]


def test_meta_tag_security_profile_source() -> None:
    rows = extract({"resourceType": "Basic", "code": {"text": "x"}, "meta": {
        "tag": [{"system": "urn:t", "code": "a", "display": "A Tag"}],
        "security": [{"system": "urn:s", "code": "R"}],
        "profile": ["http://example.org/StructureDefinition/p"],
        "source": "urn:source#1",
    }})
    assert ("_tag", "urn:t", "a", "a tag") in rows.tokens
    assert ("_security", "urn:s", "R", None) in rows.tokens
    assert ("_profile", "http://example.org/StructureDefinition/p") in rows.uris
    assert ("_source", "urn:source#1") in rows.uris


# ---------------------------------------------------------------------------------------------
# Datatype rules


def test_codeable_concept_text_is_a_row_and_fills_missing_displays() -> None:
    rows = extract({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                    "code": {"text": "Heart  Attack", "coding": [
                        {"system": "http://snomed.info/sct", "code": "22298006"},
                        {"system": "urn:x", "code": "mi", "display": "Myocardial Infarction"},
                    ]}})
    assert _rows_for(rows.tokens, "code") == [
        ("code", "http://snomed.info/sct", "22298006", "heart attack"),
        ("code", "urn:x", "mi", "myocardial infarction"),
        ("code", None, None, "heart attack"),
    ]


def test_identifier_contact_point_and_boolean_tokens() -> None:
    rows = extract({"resourceType": "Patient", "active": False,
                    "identifier": [{"system": "urn:mrn", "value": "42",
                                    "type": {"text": "Medical Record Number"}}],
                    "telecom": [{"system": "email", "value": "a@b.org"},
                                {"system": "phone", "value": "555"}]})
    assert ("identifier", "urn:mrn", "42", "medical record number") in rows.tokens
    assert ("active", None, "false", None) in rows.tokens
    assert ("email", None, "a@b.org", None) in rows.tokens
    assert ("email", None, "555", None) not in rows.tokens
    assert ("phone", None, "555", None) in rows.tokens


def test_strings_keep_exact_text_and_truncate() -> None:
    long_family = "Ó" + "x" * 300
    rows = extract({"resourceType": "Patient", "name": [{"family": long_family}],
                    "address": [{"line": ["1  Main St"], "district": "Nord"}]})
    assert ("family", "o" + "x" * 254, long_family[:255]) in rows.strings
    assert ("address", "1 main st", "1  Main St") in rows.strings
    assert ("address", "nord", "Nord") in rows.strings


def test_reference_forms() -> None:
    rows = extract({"resourceType": "Encounter", "status": "finished", "participant": [
        {"individual": {"reference": "Practitioner/p1/_history/2"}},
        {"individual": {"reference": "https://fhir.example.org/r4/Practitioner/p2"}},
        {"individual": {"reference": "https://example.org/unknown/thing"}},
        {"individual": {"reference": "urn:uuid:0b8d3c83-93f8-4f9e-9c47-3c4b1a1f0000"}},
        {"individual": {"reference": "#contained"}},
        {"individual": {"identifier": {"system": "urn:npi", "value": "99"}}},
    ]})
    assert _rows_for(rows.references, "participant") == [
        ("participant", "Practitioner", "p1", None),
        ("participant", "Practitioner", "p2", "https://fhir.example.org/r4/Practitioner/p2"),
        ("participant", None, None, "https://example.org/unknown/thing"),
        ("participant", None, None, "urn:uuid:0b8d3c83-93f8-4f9e-9c47-3c4b1a1f0000"),
    ]
    assert ("participant:identifier", "urn:npi", "99", None) in rows.tokens
    # where(resolve() is Practitioner): only the references typed as Practitioner
    assert [r[1:3] for r in _rows_for(rows.references, "practitioner")] == [
        ("Practitioner", "p1"), ("Practitioner", "p2")
    ]


def test_parse_reference() -> None:
    assert parse_reference("Patient/1") == ("Patient", "1", None)
    assert parse_reference("Patient/1/_history/4") == ("Patient", "1", None)
    assert parse_reference("http://x.org/fhir/Patient/1") == (
        "Patient", "1", "http://x.org/fhir/Patient/1"
    )
    assert parse_reference("urn:uuid:abc") == (None, None, "urn:uuid:abc")
    assert parse_reference("Patient?identifier=urn:mrn|1") == (
        "Patient", None, "Patient?identifier=urn:mrn|1"
    )
    assert parse_reference("#c1") is None


def test_canonical_at_a_reference_parameter_is_a_url() -> None:
    rows = extract({"resourceType": "PlanDefinition", "status": "active",
                    "library": ["http://example.org/Library/lib|1.0"]})
    assert ("depends-on", None, None, "http://example.org/Library/lib|1.0") in rows.references


def test_quantity_precision_follows_the_digits_written() -> None:
    def bounds(value: Any) -> tuple[float, float, float]:
        rows = extract({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org",
                                          "code": "mg"}})
        found = _rows_for(rows.quantities, "value-quantity")
        assert len(found) == 1
        _, _, _, amount, low, high = found[0]
        return amount, low, high

    assert bounds(5.4) == (5.4, 5.35, 5.45)
    assert bounds(100) == (100.0, 99.5, 100.5)
    assert bounds(0.001) == (0.001, 0.0005, 0.0015)
    assert bounds(Decimal("5.40")) == (5.4, 5.395, 5.405)
    assert bounds(1e-7)[1:] == (0.5e-7, 1.5e-7)


def test_quantity_uses_unit_when_code_is_missing_and_money_uses_currency() -> None:
    rows = extract({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "valueQuantity": {"value": 3, "unit": "tablets"}})
    assert ("value-quantity", None, "tablets", 3.0, 2.5, 3.5) in rows.quantities
    rows = extract({"resourceType": "ChargeItem", "status": "billed",
                    "subject": {"reference": "Patient/1"}, "code": {"text": "x"},
                    "priceOverride": {"value": 12.5, "currency": "USD"}})
    assert ("price-override", None, "USD", 12.5, 12.45, 12.55) in rows.quantities


def test_range_quantity_and_number() -> None:
    rows = extract({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                    "onsetRange": {"low": {"value": 10, "unit": "a", "code": "a",
                                           "system": "http://unitsofmeasure.org"},
                                   "high": {"value": 20, "code": "a"}}})
    assert ("onset-age", "http://unitsofmeasure.org", "a", 15.0, 10.0, 20.0) in rows.quantities
    rows = extract({"resourceType": "RiskAssessment", "status": "final",
                    "subject": {"reference": "Patient/1"},
                    "prediction": [{"probabilityDecimal": 0.25},
                                   {"probabilityRange": {"low": {"value": 0.1}}}]})
    assert ("probability", 0.25, 0.245, 0.255) in rows.numbers
    assert ("probability", 0.1, 0.1, float("inf")) in rows.numbers


def test_timing_indexes_the_span_of_its_events_or_its_bounds() -> None:
    rows = extract({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "effectiveTiming": {"event": ["2020-03-01T08:00:00Z", "2020-01-01"]}})
    assert _rows_for(rows.dates, "date") == [
        ("date", _us("2020-01-01T00:00:00Z"), _us("2020-03-01T08:00:00.999999Z"))
    ]
    rows = extract({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                    "subject": {"reference": "Patient/1"},
                    "activity": [{"detail": {"status": "scheduled", "scheduledTiming": {
                        "repeat": {"boundsPeriod": {"start": "2021", "end": "2021-06"}}}}}]})
    assert _rows_for(rows.dates, "activity-date") == [
        ("activity-date", _us("2021-01-01T00:00:00Z"), _us("2021-06-30T23:59:59.999999Z"))
    ]


def test_patient_deceased_is_a_boolean_token() -> None:
    alive = extract({"resourceType": "Patient"})
    dead = extract({"resourceType": "Patient", "deceasedDateTime": "2020-02-02"})
    assert ("deceased", None, "false", None) in alive.tokens
    assert ("deceased", None, "true", None) in dead.tokens
    assert _rows_for(dead.dates, "death-date") == [("death-date", *date_range("2020-02-02"))]


def test_extension_parameters_index_the_extension_value() -> None:
    rows = extract({"resourceType": "Patient", "extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName",
        "valueString": "Smíth",
    }]})
    assert ("mothersMaidenName", "smith", "Smíth") in rows.strings


def test_malformed_input_raises_specific_errors() -> None:
    with pytest.raises(UnknownResourceTypeError, match="resourceType"):
        extract({"id": "x"})
    with pytest.raises(UnknownResourceTypeError, match="Spaceship"):
        extract({"resourceType": "Spaceship"})
    with pytest.raises(InvalidSearchValueError, match="birthdate.*1974-13-01"):
        extract({"resourceType": "Patient", "birthDate": "1974-13-01"})


# ---------------------------------------------------------------------------------------------
# date_range and normalize_string


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2013", "2013-01-01T00:00:00Z", "2013-12-31T23:59:59.999999Z"),
        ("2012-02", "2012-02-01T00:00:00Z", "2012-02-29T23:59:59.999999Z"),
        ("2013-01", "2013-01-01T00:00:00Z", "2013-01-31T23:59:59.999999Z"),
        ("2013-01-14", "2013-01-14T00:00:00Z", "2013-01-14T23:59:59.999999Z"),
        ("2013-01-14T10:00:00+01:00", "2013-01-14T09:00:00Z", "2013-01-14T09:00:00.999999Z"),
        ("2013-01-14T10:00:00-05:30", "2013-01-14T15:30:00Z", "2013-01-14T15:30:00.999999Z"),
        ("2013-01-14T10:00:00.123Z", "2013-01-14T10:00:00.123Z", "2013-01-14T10:00:00.123999Z"),
        ("2013-01-14T10:00:00.1234567Z", "2013-01-14T10:00:00.123456Z",
         "2013-01-14T10:00:00.123456Z"),
        ("2013-01-14T10:00:00", "2013-01-14T10:00:00Z", "2013-01-14T10:00:00.999999Z"),
    ],
)
def test_date_range(text: str, low: str, high: str) -> None:
    assert date_range(text) == (_us(low), _us(high))


@pytest.mark.parametrize(
    "text",
    ["", "13", "2013-1", "2013-13", "2013-02-30", "2013-01-14T25:00:00Z", "2013-01-14T10:61:00Z",
     "2013-01-14 10:00:00", "2013-01-14T10:00:00+15:00", "yesterday", "2013-01-14Z", "0000"],
)
def test_date_range_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="FHIR date|out of range"):
        date_range(text)


def test_date_sentinels() -> None:
    assert MIN_DATE_US == _us("0001-01-01T00:00:00Z")
    assert MAX_DATE_US == _us("9999-12-31T23:59:59.999999Z")


def test_normalize_string() -> None:
    assert normalize_string("  Chalmers ") == "chalmers"
    assert normalize_string("José Müller-Straße") == "jose muller-strasse"
    assert normalize_string("du Marché\t\n  Ëlise") == "du marche elise"
    assert normalize_string("ＡＢＣ") == "abc"  # NFKD folds full-width forms
    assert normalize_string("") == ""


_MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
)


def _precisions(moment: datetime, digits: int) -> list[str]:
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    seconds = f"{day}T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    fraction = f"{moment.microsecond:06d}"[:digits]
    return [f"{moment.year:04d}", day[:7], day, f"{seconds}Z", f"{seconds}.{fraction}Z"]


@given(_MOMENTS, st.integers(min_value=1, max_value=6))
def test_nested_precisions_contain_each_other(moment: datetime, digits: int) -> None:
    ranges = [date_range(text) for text in _precisions(moment, digits)]
    for outer, inner in zip(ranges, ranges[1:], strict=False):
        assert outer[0] <= inner[0] <= inner[1] <= outer[1]
    assert MIN_DATE_US <= ranges[0][0] and ranges[0][1] <= MAX_DATE_US


@given(
    _MOMENTS,
    st.integers(min_value=1, max_value=6),
    st.sampled_from(["Z", "+01:00", "-05:30", "+14:00", "-12:00", ""]),
)
def test_low_never_exceeds_high(moment: datetime, digits: int, zone: str) -> None:
    for text in _precisions(moment, digits):
        if text.endswith("Z") and zone != "Z":
            text = text[:-1] + zone
        low, high = date_range(text)
        assert low <= high


@given(st.text(alphabet="0123456789-T:.Z+ ", max_size=32))
def test_date_range_on_arbitrary_text_either_raises_value_error_or_is_ordered(text: str) -> None:
    try:
        low, high = date_range(text)
    except ValueError:
        return
    assert low <= high
