"""Tests for the structural FHIR R4 validator."""

from __future__ import annotations

import copy
import json
import re
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chartkeeper.fhir.definitions import load
from chartkeeper.fhir.validation import (
    Issue,
    ValidationError,
    check_resource,
    validate_resource,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EXAMPLES_DIR = DATA / "fhir-r4" / "instance_examples"
EXAMPLES_TGZ = DATA / "fhir-r4" / "hl7.fhir.r4.examples-4.0.1.tgz"
SYNTHEA_NDJSON = DATA / "synthea" / "bulk_ndjson_10_patients"
SYNTHEA_BUNDLES = DATA / "synthea" / "r4_transaction_bundles_subset"



def require_data(path: Path) -> Path:
    """Reference data is test material the suite cannot do without: fail loudly if absent."""
    if not path.exists():
        pytest.fail(f"reference data not found at {path} (tests read ../shared/data)",
                    pytrace=False)
    return path

# Official R4 examples that are genuinely invalid against the R4 StructureDefinitions (errata
# in the published package). For each: why, and the (issue code, expression regex) of every
# error it must produce; each pattern must match at least one error and every error a pattern.
KNOWN_INVALID_EXAMPLES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "DeviceMetric-example.json": (
        "DeviceMetric.parent is Reference(Device) in R4; the example points to DeviceDefinition",
        (("invalid", r"DeviceMetric\.parent\.reference"),),
    ),
    "DeviceUseStatement-example.json": (
        "DeviceUseStatement.reasonReference does not allow Procedure in R4",
        (("invalid", r"DeviceUseStatement\.reasonReference\[0\]\.reference"),),
    ),
    "MedicationRequest-medrx0301.json": (
        "MedicationRequest.dispenseRequest.performer is Reference(Organization) only",
        (("invalid", r"MedicationRequest\.dispenseRequest\.performer\.reference"),),
    ),
    "Observation-clinical-gender.json": (
        "Observation.performer does not allow Encounter",
        (("invalid", r"Observation\.performer\[0\]\.reference"),),
    ),
    "Questionnaire-qs1.json": (
        "Questionnaire.item.linkId is 1..1 but 32 nested items have none",
        (("required", r"Questionnaire(\.item\[\d+\])+\.linkId"),),
    ),
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "its id has 67 characters; an id is at most 64",
        (("too-long", r"SearchParameter\.id"),),
    ),
    **{
        f"SearchParameter-{family}-extensions-{rtype}-{code}.json": (
            "SearchParameter.base is 1..* but this extension search parameter has none",
            (("required", r"SearchParameter\.base"),),
        )
        for family, rtype in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for code in ("author", "effective", "end", "keyword", "workflow")
    },
    **{
        name: (
            "the package's own ImplementationGuide stub lacks name and status (both 1..1) and "
            "its manifest references the SearchParameter whose id is over 64 characters",
            (
                ("required", r"ImplementationGuide\.name"),
                ("required", r"ImplementationGuide\.status"),
                ("value", r"ImplementationGuide\.manifest\.resource\[11904\]"
                          r"\.reference\.reference"),
            ),
        )
        for name in ("ImplementationGuide-fhir.json", "ig-r4.json")
    },
}


def errors(issues: list[Issue]) -> list[Issue]:
    return [issue for issue in issues if issue.severity == "error"]


def assert_fails_as_documented(name: str, found: list[Issue]) -> None:
    reason, patterns = KNOWN_INVALID_EXAMPLES[name]
    for issue in found:
        assert any(
            issue.code == code and re.fullmatch(expr, issue.expression)
            for code, expr in patterns
        ), f"{name} ({reason}): unexpected {issue}"
    for code, expr in patterns:
        assert any(
            issue.code == code and re.fullmatch(expr, issue.expression) for issue in found
        ), f"{name} ({reason}): no {code} error at {expr}"


@cache
def instance_examples() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(require_data(EXAMPLES_DIR).glob("*.json"))
    }


def package_resources() -> Iterator[tuple[str, Any]]:
    with tarfile.open(require_data(EXAMPLES_TGZ), "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            content = json.load(handle)
            if isinstance(content, dict) and "resourceType" in content:
                yield member.name.rsplit("/", 1)[-1], content


def synthea_ndjson_resources() -> Iterator[tuple[str, Any]]:
    for path in sorted(require_data(SYNTHEA_NDJSON).glob("*.ndjson")):
        if path.name == "log.ndjson":  # the bulk-export log, not FHIR resources
            continue
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield f"{path.name}:{number}", json.loads(line)


def synthea_bundles() -> Iterator[tuple[str, Any]]:
    for path in sorted(require_data(SYNTHEA_BUNDLES).glob("*.json")):
        yield path.name, json.loads(path.read_text(encoding="utf-8"))


# --- official examples and Synthea --------------------------------------------------------


def test_official_instance_examples_have_no_errors_except_known_errata() -> None:
    examples = instance_examples()
    assert len(examples) == 685
    failing = {name: errors(validate_resource(r)) for name, r in examples.items()}
    failing = {name: found for name, found in failing.items() if found}
    assert set(failing) == set(KNOWN_INVALID_EXAMPLES) & set(examples)
    assert len(failing) == 5
    for name, found in failing.items():
        assert_fails_as_documented(name, found)


def test_every_resource_in_the_r4_examples_package_has_no_errors_except_known_errata() -> None:
    count = 0
    failing: dict[str, list[Issue]] = {}
    for name, resource in package_resources():
        count += 1
        found = errors(validate_resource(resource))
        if found:
            failing[name] = found
    assert count == 5306  # 5,307 JSON files, less package.json
    assert set(failing) == set(KNOWN_INVALID_EXAMPLES)
    for name, found in failing.items():
        assert_fails_as_documented(name, found)


def test_synthea_bulk_ndjson_resources_have_no_errors() -> None:
    resources = list(synthea_ndjson_resources())
    assert len(resources) == 7160
    failing = {name: errors(validate_resource(r)) for name, r in resources}
    assert {name: found for name, found in failing.items() if found} == {}


def test_synthea_transaction_bundles_and_their_entries_have_no_errors() -> None:
    entries = 0
    for name, bundle in synthea_bundles():
        assert errors(validate_resource(bundle)) == [], name
        for index, entry in enumerate(bundle["entry"]):
            entries += 1
            assert errors(validate_resource(entry["resource"])) == [], f"{name} entry {index}"
    assert entries == 6072


# --- bad input ----------------------------------------------------------------------------

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "Body weight"},
}


def observation(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(OBSERVATION), **changes}


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


BAD_INPUT: list[tuple[str, object, str, str]] = [
    # (case, resource, issue code, expression)
    ("not an object", ["Patient"], "structure", "$this"),
    ("a string is not a resource", "Patient/1", "structure", "$this"),
    ("missing resourceType", {"id": "1"}, "required", "resourceType"),
    ("unknown resourceType", {"resourceType": "Foo"}, "not-supported", "resourceType"),
    ("abstract resourceType", {"resourceType": "DomainResource"}, "not-supported",
     "resourceType"),
    ("bad id", patient(id="a b"), "value", "Patient.id"),
    ("id too long", patient(id="a" * 65), "too-long", "Patient.id"),
    ("unknown element", patient(nickname="Bob"), "structure", "Patient.nickname"),
    ("unknown nested element", patient(name=[{"surname": "X"}]), "structure",
     "Patient.name[0].surname"),
    ("string for boolean", patient(active="true"), "structure", "Patient.active"),
    ("number for string", patient(name=[{"family": 42}]), "structure",
     "Patient.name[0].family"),
    ("string for integer", patient(multipleBirthInteger="2"), "structure",
     "Patient.multipleBirthInteger"),
    ("float for integer", patient(multipleBirthInteger=2.0), "structure",
     "Patient.multipleBirthInteger"),
    ("boolean for decimal", observation(valueQuantity={"value": True}), "structure",
     "Observation.valueQuantity.value"),
    ("unsignedInt below zero",
     {"resourceType": "Bundle", "type": "searchset", "total": -1}, "value", "Bundle.total"),
    ("bad date", patient(birthDate="1980-13-01"), "value", "Patient.birthDate"),
    ("date in US format", patient(birthDate="01/02/1980"), "value", "Patient.birthDate"),
    ("date that does not exist", patient(birthDate="2021-02-29"), "value", "Patient.birthDate"),
    ("dateTime with time but no timezone", observation(effectiveDateTime="2020-01-01T10:00:00"),
     "value", "Observation.effectiveDateTime"),
    ("instant without timezone", observation(issued="2020-01-01T10:00:00"), "value",
     "Observation.issued"),
    ("instant without time", observation(issued="2020-01-01"), "value", "Observation.issued"),
    ("bad time", observation(valueTime="25:00:00"), "value", "Observation.valueTime"),
    ("code with doubled space", patient(gender="fe  male"), "value", "Patient.gender"),
    ("uri with a space", patient(identifier=[{"system": "urn:a b", "value": "1"}]), "value",
     "Patient.identifier[0].system"),
    ("bad uuid", patient(extension=[{"url": "http://x", "valueUuid": "urn:uuid:XYZ"}]),
     "value", "Patient.extension[0].valueUuid"),
    ("bad oid", patient(extension=[{"url": "http://x", "valueOid": "1.2.3"}]),
     "value", "Patient.extension[0].valueOid"),
    ("bad base64", patient(photo=[{"data": "not base64!"}]), "value", "Patient.photo[0].data"),
    ("base64 cut short", patient(photo=[{"data": "aGVsbG8"}]), "value", "Patient.photo[0].data"),
    ("narrative div is not a div", patient(text={"status": "generated", "div": "<p>x</p>"}),
     "value", "Patient.text.div"),
    ("bad meta.versionId", patient(meta={"versionId": "a/b"}), "value", "Patient.meta.versionId"),
    ("meta.lastUpdated without timezone", patient(meta={"lastUpdated": "2020-01-01T00:00:00"}),
     "value", "Patient.meta.lastUpdated"),
    ("array for max=1", patient(gender=["male"]), "structure", "Patient.gender"),
    ("array for a max=1 complex element", observation(code=[{"text": "x"}]), "structure",
     "Observation.code"),
    ("single value for max=*", patient(name={"family": "X"}), "structure", "Patient.name"),
    ("single primitive for max=*", patient(name=[{"given": "Ann"}]), "structure",
     "Patient.name[0].given"),
    ("Observation without status",
     {"resourceType": "Observation", "code": {"text": "x"}}, "required", "Observation.status"),
    ("Observation without code",
     {"resourceType": "Observation", "status": "final"}, "required", "Observation.code"),
    ("required backbone child missing",
     observation(component=[{"valueString": "x"}]), "required", "Observation.component[0].code"),
    ("required choice missing",
     {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
      "subject": {"reference": "Patient/1"}}, "required", "MedicationRequest.medication[x]"),
    ("two value[x] at once", observation(valueString="a", valueBoolean=True), "structure",
     "Observation.valueBoolean"),
    ("choice type not allowed", observation(valueUri="http://x"), "structure",
     "Observation.valueUri"),
    ("empty object", observation(code={}), "structure", "Observation.code"),
    ("empty object in an array", patient(name=[{}]), "structure", "Patient.name[0]"),
    ("empty array", patient(name=[]), "structure", "Patient.name"),
    ("empty string", patient(gender=""), "value", "Patient.gender"),
    ("whitespace-only string", patient(name=[{"family": "  "}]), "value",
     "Patient.name[0].family"),
    ("null", patient(gender=None), "structure", "Patient.gender"),
    ("null complex element", observation(code=None), "structure", "Observation.code"),
    ("null in an array without _x", patient(name=[{"given": ["Ann", None]}]), "structure",
     "Patient.name[0].given[1]"),
    ("null in _x with a null value",
     patient(name=[{"given": ["Ann", None], "_given": [None, None]}]), "structure",
     "Patient.name[0]._given[1]"),
    ("_x misaligned", patient(name=[{"given": ["Ann"], "_given": [None, {"id": "a"}]}]),
     "structure", "Patient.name[0]._given"),
    ("_x with a value", patient(_gender={"value": "male"}), "structure",
     "Patient.gender.value"),
    ("positiveInt of zero", observation(effectiveTiming={"repeat": {"frequency": 0}}), "value",
     "Observation.effectiveTiming.repeat.frequency"),
    ("_x on a complex element", patient(_name=[{"id": "a"}]), "structure", "Patient._name"),
    ("_x for an attribute (Extension.url)",
     patient(extension=[{"url": "http://x", "_url": {"id": "u"}, "valueCode": "a"}]),
     "structure", "Patient.extension[0]._url"),
    ("resourceType inside a datatype", patient(name=[{"resourceType": "HumanName"}]),
     "structure", "Patient.name[0].resourceType"),
    ("reference to a bare type", observation(subject={"reference": "Patient"}), "value",
     "Observation.subject.reference"),
    ("reference with an empty id", observation(subject={"reference": "Patient/"}), "value",
     "Observation.subject.reference"),
    ("reference to an unknown type", observation(subject={"reference": "Foo/1"}), "value",
     "Observation.subject.reference"),
    ("reference to a malformed URL", observation(subject={"reference": "http//x"}), "value",
     "Observation.subject.reference"),
    ("reference with a bad id", observation(subject={"reference": "Patient/a b"}), "value",
     "Observation.subject.reference"),
    ("reference to a bad contained id", observation(subject={"reference": "#a b"}), "value",
     "Observation.subject.reference"),
    ("reference to a bad urn:uuid", observation(subject={"reference": "urn:uuid:1234"}),
     "value", "Observation.subject.reference"),
    ("reference to the wrong target type", observation(encounter={"reference": "Patient/1"}),
     "invalid", "Observation.encounter.reference"),
    ("conditional reference to the wrong target type",
     observation(encounter={"reference": "Patient?identifier=x|1"}), "invalid",
     "Observation.encounter.reference"),
    ("reference in an array to the wrong target type",
     observation(performer=[{"reference": "Device/1"}]), "invalid",
     "Observation.performer[0].reference"),
    ("contained resource with an error",
     observation(contained=[{"resourceType": "Patient", "active": "yes"}]), "structure",
     "Observation.contained[0].active"),
    ("contained resource without resourceType", observation(contained=[{"id": "p1"}]),
     "required", "Observation.contained[0].resourceType"),
    ("bundle entry with an error",
     {"resourceType": "Bundle", "type": "collection",
      "entry": [{"resource": {"resourceType": "Observation", "status": "final"}}]},
     "required", "Bundle.entry[0].resource.code"),
    ("contentReference child with an error",
     {"resourceType": "Bundle", "type": "searchset",
      "entry": [{"link": [{"relation": "self", "url": "http://x", "bogus": 1}]}]},
     "structure", "Bundle.entry[0].link[0].bogus"),
    ("extension without url", patient(extension=[{"valueString": "x"}]), "required",
     "Patient.extension[0].url"),
    ("extension with both value and extensions",
     patient(extension=[{"url": "http://x", "valueString": "x",
                         "extension": [{"url": "a", "valueCode": "b"}]}]),
     "invalid", "Patient.extension[0]"),
    ("extension with neither value nor extensions", patient(extension=[{"url": "http://x"}]),
     "invalid", "Patient.extension[0]"),
    ("extension value of an unknown type",
     patient(extension=[{"url": "http://x", "valueFoo": "x"}]), "structure",
     "Patient.extension[0].valueFoo"),
    ("modifierExtension without url", patient(modifierExtension=[{"valueBoolean": True}]),
     "required", "Patient.modifierExtension[0].url"),
    ("primitive extension without url",
     patient(_birthDate={"extension": [{"valueString": "x"}]}), "required",
     "Patient.birthDate.extension[0].url"),
]


@pytest.mark.parametrize(
    ("resource", "code", "expression"),
    [pytest.param(r, c, e, id=case) for case, r, c, e in BAD_INPUT],
)
def test_bad_input_is_reported_with_code_and_location(
    resource: object, code: str, expression: str
) -> None:
    found = errors(validate_resource(resource))
    assert (code, expression) in {(i.code, i.expression) for i in found}, found
    with pytest.raises(ValidationError) as raised:
        check_resource(resource)
    assert raised.value.issues == validate_resource(resource)


def test_diagnostics_name_the_offending_value_and_what_was_expected() -> None:
    [issue] = validate_resource(observation(issued="2020-01-01T10:00:00"))
    assert "'2020-01-01T10:00:00'" in issue.diagnostics
    assert "timezone" in issue.diagnostics
    [issue] = validate_resource(observation(encounter={"reference": "Patient/1"}))
    assert "Patient" in issue.diagnostics and "Encounter" in issue.diagnostics


def test_all_issues_are_listed_not_just_the_first() -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "issued": "2020-01-01",  # instant without time
        "subject": {"reference": "Foo/1"},  # unknown type
        "flavour": "sweet",  # unknown element
    }
    found = validate_resource(resource)
    assert [(i.code, i.expression) for i in found] == [
        ("value", "Observation.issued"),
        ("value", "Observation.subject.reference"),
        ("structure", "Observation.flavour"),
    ]
    with pytest.raises(ValidationError) as raised:
        check_resource(resource)
    assert len(raised.value.issues) == 3
    assert "3 validation error(s)" in str(raised.value)


def test_absurdly_deep_nesting_is_an_error_not_a_crash() -> None:
    extension: dict[str, Any] = {"url": "http://x", "valueString": "x"}
    for _ in range(5000):
        extension = {"url": "http://x", "extension": [extension]}
    found = validate_resource(patient(extension=[extension]))
    assert [(i.code, i.expression) for i in found] == [("too-costly", "$this")]


def test_valid_minimal_resources_pass() -> None:
    assert validate_resource(OBSERVATION) == []
    assert validate_resource(patient()) == []
    check_resource(OBSERVATION)


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/123",
        "Patient/123/_history/2",
        "Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-99-9999",
        "http://example.org/fhir/Patient/123",
        "https://example.org/fhir/Group/1/_history/1",
        "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
        "urn:oid:1.2.3.4",
        "#p1",
        "#",
    ],
)
def test_well_formed_references_are_accepted(reference: str) -> None:
    resource = observation(subject={"reference": reference}, focus=[{"reference": reference}])
    assert validate_resource(resource) == []


def test_reference_without_target_profile_accepts_any_resource_type() -> None:
    resource = patient(extension=[{"url": "http://x", "valueReference": {"reference": "Foo/1"}}])
    assert [i.code for i in validate_resource(resource)] == ["value"]  # still a known type
    resource = patient(extension=[{"url": "http://x",
                                   "valueReference": {"reference": "Device/1"}}])
    assert validate_resource(resource) == []


def test_primitive_arrays_may_hold_nulls_aligned_with_their_extensions() -> None:
    resource = patient(name=[{
        "given": ["Ann", None],
        "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}],
    }])
    assert validate_resource(resource) == []


def test_a_primitive_may_have_only_its_extension() -> None:
    absent = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    assert validate_resource(patient(_birthDate=absent)) == []
    # a required primitive is present when only its _x is given
    assert validate_resource(observation(status=None) | {"_status": absent}) == [
        Issue("error", "structure", "Observation.status",
              "status is null; omit the property instead")
    ]
    minimal = {k: v for k, v in OBSERVATION.items() if k != "status"}
    assert validate_resource(minimal | {"_status": absent}) == []


def test_an_extension_value_given_only_as_primitive_extension_counts_as_a_value() -> None:
    extension = {"url": "http://x", "_valueString": {"extension": [
        {"url": "http://y", "valueCode": "z"}]}}
    assert validate_resource(patient(extension=[extension])) == []


def test_value_and_its_primitive_extension_are_one_choice_not_two() -> None:
    resource = observation(valueString="a", _valueString={"id": "v1"})
    assert validate_resource(resource) == []
    resource = observation(valueString="a", _valueBoolean={"id": "v1"})
    assert [i.code for i in validate_resource(resource)] == ["structure"]


def test_nested_resources_are_validated_with_their_own_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"response": {"status": "400", "outcome": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "bogus": True}],
        }}}],
    }
    [issue] = validate_resource(bundle)
    assert issue.expression == "Bundle.entry[0].response.outcome.issue[0].bogus"
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "p", "resource": {"resourceType": "Patient", "gender": 1}}],
    }
    [issue] = validate_resource(parameters)
    assert issue.code == "structure"
    assert issue.expression == "Parameters.parameter[0].resource.gender"


def test_numbers_are_checked_against_their_type_ranges() -> None:
    assert validate_resource(patient(multipleBirthInteger=2147483647)) == []
    [issue] = validate_resource(patient(multipleBirthInteger=2147483648))
    assert (issue.code, issue.expression) == ("value", "Patient.multipleBirthInteger")
    assert validate_resource(observation(valueQuantity={"value": 1})) == []
    assert validate_resource(observation(valueQuantity={"value": 72.5})) == []
    [issue] = validate_resource(observation(valueQuantity={"value": float("nan")}))
    assert issue.code == "value"


def test_warnings_do_not_fail_check_resource() -> None:
    resource = patient(photo=[{"data": "aGVs\nbG8="}])  # base64 with a line break
    [issue] = validate_resource(resource)
    assert (issue.severity, issue.expression) == ("warning", "Patient.photo[0].data")
    check_resource(resource)


def test_strings_over_one_megabyte_are_too_long() -> None:
    [issue] = validate_resource(patient(name=[{"text": "x" * (1024 * 1024 + 1)}]))
    assert (issue.code, issue.expression) == ("too-long", "Patient.name[0].text")


def test_non_ascii_spaces_are_not_whitespace_in_fhir_codes() -> None:
    # FHIR's regexes are XML Schema regexes: \s is only space, tab, CR and LF.
    assert validate_resource(patient(gender="male\u00a0")) == []


# --- property test: mutations of valid examples are caught ---------------------------------

Location = tuple[tuple[str | int, ...], str]  # (JSON path to an object, key in it)


@cache
def valid_examples() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(
        (name, resource) for name, resource in instance_examples().items()
        if name not in KNOWN_INVALID_EXAMPLES
    )


@cache
def element_tables(resource_type: str) -> dict[str, dict[str, dict[str, Any]]]:
    """For each element path with children: JSON key -> its element definition."""
    sd = load().structure_definitions[resource_type]
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for element in sd["elements"]:
        if "." not in element["path"]:
            continue
        parent, name = element["path"].rsplit(".", 1)
        table = tables.setdefault(parent, {})
        if name.endswith("[x]"):
            for t in element.get("types", []):
                table[name[:-3] + t["code"][0].upper() + t["code"][1:]] = element
        else:
            table[name] = element
    return tables


def required_locations(resource: dict[str, Any]) -> list[Location]:
    """Every present element with min >= 1 in the resource and its backbone elements."""
    tables = element_tables(resource["resourceType"])
    found: list[Location] = []

    def visit(obj: dict[str, Any], sd_path: str, json_path: tuple[str | int, ...]) -> None:
        table = tables.get(sd_path, {})
        for key, value in obj.items():
            element = table.get(key)
            if element is None:
                continue
            if element["min"] >= 1:
                found.append((json_path, key))
            child_path = element.get("contentReference", "#" + element["path"])[1:]
            if child_path in tables:
                items = value if isinstance(value, list) else [value]
                for index, item in enumerate(items):
                    if isinstance(item, dict):
                        item_path = (key, index) if isinstance(value, list) else (key,)
                        visit(item, child_path, json_path + item_path)

    visit(resource, resource["resourceType"], ())
    return found


def all_keys(node: object, json_path: tuple[str | int, ...] = ()) -> list[Location]:
    found: list[Location] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((json_path, key))
            found.extend(all_keys(value, json_path + (key,)))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(all_keys(item, json_path + (index,)))
    return found


def primitive_leaves(node: object, json_path: tuple[str | int, ...] = ()) -> list[Location]:
    found: list[Location] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str | bool | int | float):
                found.append((json_path, key))
            else:
                found.extend(primitive_leaves(value, json_path + (key,)))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(primitive_leaves(item, json_path + (index,)))
    return found


def resolve(resource: Any, json_path: tuple[str | int, ...]) -> Any:
    for step in json_path:
        resource = resource[step]
    return resource


def other_json_type(value: str | bool | int | float) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return 12345


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutating_a_valid_example_always_yields_an_error(data: st.DataObject) -> None:
    name, original = data.draw(st.sampled_from(valid_examples()), label="example")
    resource = copy.deepcopy(original)
    mutation = data.draw(st.sampled_from(["delete-required", "rename", "retype"]),
                         label="mutation")
    if mutation == "delete-required":
        locations = required_locations(resource)
        if not locations:  # an example with only optional elements: rename instead
            mutation = "rename"
        else:
            json_path, key = data.draw(st.sampled_from(locations), label="location")
            parent = resolve(resource, json_path)
            del parent[key]
            parent.pop("_" + key, None)
    if mutation == "rename":
        json_path, key = data.draw(st.sampled_from(all_keys(resource)), label="location")
        suffix = data.draw(st.from_regex(r"[A-Za-z0-9]{1,6}", fullmatch=True), label="suffix")
        parent = resolve(resource, json_path)
        parent[f"{key}_{suffix}"] = parent.pop(key)
    elif mutation == "retype":
        json_path, key = data.draw(st.sampled_from(primitive_leaves(resource)), label="leaf")
        parent = resolve(resource, json_path)
        parent[key] = other_json_type(parent[key])
    assert errors(validate_resource(resource)), f"{name}: {mutation} went unnoticed"
