"""FHIR search over HTTP: every parameter type, prefixes, modifiers, chains, includes, paging."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


def search(client: TestClient, rtype: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/fhir/{rtype}", params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
def clinic(client: TestClient) -> dict[str, str]:
    """Two patients, an organization, observations and a condition to search."""
    def post(resource: dict[str, Any]) -> str:
        response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, response.text
        rid: str = response.json()["id"]
        return rid

    org = post({"resourceType": "Organization", "name": "General Hospital"})
    peter = post({"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}],
                  "gender": "male", "birthDate": "1974-12-25", "active": True,
                  "managingOrganization": {"reference": f"Organization/{org}"},
                  "identifier": [{"system": "urn:mrn", "value": "A100"}],
                  "address": [{"city": "Zürich", "postalCode": "8001"}]})
    ana = post({"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Ana"]}],
                "gender": "female", "birthDate": "1990-03",
                "identifier": [{"system": "urn:mrn", "value": "B200"}]})

    def obs(subject: str, code: str, value: float, unit: str, when: str) -> str:
        return post({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code,
                                 "display": "Glucose" if code == "2345-7" else "Weight"}]},
            "subject": {"reference": f"Patient/{subject}"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit},
        })

    g1 = obs(peter, "2345-7", 95, "mg/dL", "2024-01-10T08:00:00Z")
    g2 = obs(peter, "2345-7", 182, "mg/dL", "2024-03-05T08:00:00Z")
    w1 = obs(ana, "29463-7", 61.5, "kg", "2023-07-01")
    cond = post({"resourceType": "Condition",
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                      "code": "E11.9"}], "text": "Type 2 diabetes"},
                 "subject": {"reference": f"Patient/{peter}"},
                 "onsetDateTime": "2020-05-01"})
    return {"org": org, "peter": peter, "ana": ana, "g1": g1, "g2": g2, "w1": w1, "cond": cond}


def test_string_search_default_exact_contains(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Patient", name="chal")) == {clinic["peter"]}
    assert ids(search(client, "Patient", family="muller")) == {clinic["ana"]}  # accents folded
    assert ids(search(client, "Patient", **{"family:exact": "Müller"})) == {clinic["ana"]}
    assert ids(search(client, "Patient", **{"family:exact": "muller"})) == set()
    assert ids(search(client, "Patient", **{"name:contains": "ALM"})) == {clinic["peter"]}
    assert ids(search(client, "Patient", **{"address-city": "zurich"})) == {clinic["peter"]}


def test_token_search_forms(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Patient", identifier="urn:mrn|A100")) == {clinic["peter"]}
    assert ids(search(client, "Patient", identifier="A100")) == {clinic["peter"]}
    assert ids(search(client, "Patient", identifier="urn:other|A100")) == set()
    assert ids(search(client, "Patient", identifier="urn:mrn|")) == {clinic["peter"],
                                                                     clinic["ana"]}
    assert ids(search(client, "Patient", gender="female")) == {clinic["ana"]}
    assert ids(search(client, "Patient", **{"gender:not": "female"})) == {clinic["peter"]}
    assert ids(search(client, "Patient", active="true")) == {clinic["peter"]}
    assert ids(search(client, "Observation", code="http://loinc.org|2345-7")) == {
        clinic["g1"], clinic["g2"]}
    assert ids(search(client, "Condition", **{"code:text": "type 2"})) == {clinic["cond"]}
    assert ids(search(client, "Observation", **{"code:text": "weig"})) == {clinic["w1"]}


def test_or_and_and_semantics(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Patient", gender="male,female")) == {clinic["peter"],
                                                                    clinic["ana"]}
    both = client.get("/fhir/Patient", params=[("name", "peter"), ("name", "chalmers")]).json()
    assert ids(both) == {clinic["peter"]}
    neither = client.get("/fhir/Patient", params=[("name", "peter"), ("name", "ana")]).json()
    assert ids(neither) == set()


@pytest.mark.parametrize(("value", "expected"), [
    ("1974-12-25", {"peter"}), ("1974", {"peter"}), ("eq1974-12", {"peter"}),
    ("gt1980", {"ana"}), ("lt1980-01-01", {"peter"}), ("ge1990-03-15", {"ana"}),
    ("le1974-12-25", {"peter"}), ("sa1975", {"ana"}), ("eb1975", {"peter"}),
    ("ne1974-12-25", {"ana"}),
])
def test_date_prefixes(client: TestClient, clinic: dict[str, str], value: str,
                       expected: set[str]) -> None:
    assert ids(search(client, "Patient", birthdate=value)) == {clinic[k] for k in expected}


def test_quantity_and_number_prefixes(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Observation", **{"value-quantity": "gt100"})) == {clinic["g2"]}
    assert ids(search(client, "Observation", **{"value-quantity": "95"})) == {clinic["g1"]}
    assert ids(search(client, "Observation",
                      **{"value-quantity": "le100|http://unitsofmeasure.org|mg/dL"})) == {
        clinic["g1"]}
    assert ids(search(client, "Observation", **{"value-quantity": "lt100||kg"})) == {clinic["w1"]}
    assert ids(search(client, "Observation", **{"value-quantity": "ap60"})) == {clinic["w1"]}


def test_date_on_observation_and_last_updated(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Observation", date="2024-01")) == {clinic["g1"]}
    assert ids(search(client, "Observation", date="ge2024-01-01")) == {clinic["g1"],
                                                                       clinic["g2"]}
    assert len(ids(search(client, "Observation", _lastUpdated="gt2000-01-01"))) == 3
    assert ids(search(client, "Observation", _lastUpdated="lt2000-01-01")) == set()


def test_reference_search_forms(client: TestClient, clinic: dict[str, str]) -> None:
    peter = clinic["peter"]
    expected = {clinic["g1"], clinic["g2"]}
    assert ids(search(client, "Observation", subject=f"Patient/{peter}")) == expected
    assert ids(search(client, "Observation", patient=peter)) == expected
    assert ids(search(client, "Observation", **{"subject:Patient": peter})) == expected
    assert ids(search(client, "Observation", subject=f"http://testserver/fhir/Patient/{peter}")) \
        == expected
    assert ids(search(client, "Patient", organization=clinic["org"])) == {peter}


def test_missing_modifier(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Patient", **{"organization:missing": "true"})) == {clinic["ana"]}
    assert ids(search(client, "Patient", **{"organization:missing": "false"})) == {
        clinic["peter"]}


def test_identifier_modifier_on_reference(client: TestClient) -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"identifier": {"system": "urn:mrn", "value": "Z9"}}}
    rid = client.post("/fhir/Observation", json=obs).json()["id"]
    assert ids(search(client, "Observation", **{"subject:identifier": "urn:mrn|Z9"})) == {rid}


def test_chained_and_has(client: TestClient, clinic: dict[str, str]) -> None:
    assert ids(search(client, "Observation", **{"subject:Patient.name": "chalmers"})) == {
        clinic["g1"], clinic["g2"]}
    assert ids(search(client, "Observation", **{"patient.gender": "female"})) == {clinic["w1"]}
    assert ids(search(client, "Patient", **{"organization.name": "general"})) == {
        clinic["peter"]}
    assert ids(search(client, "Patient", **{"_has:Observation:patient:code": "29463-7"})) == {
        clinic["ana"]}
    assert ids(search(client, "Patient", **{"_has:Condition:subject:code": "E11.9"})) == {
        clinic["peter"]}


def test_include_and_revinclude(client: TestClient, clinic: dict[str, str]) -> None:
    bundle = search(client, "Observation", code="2345-7", _include="Observation:subject")
    assert ids(bundle) == {clinic["g1"], clinic["g2"]}
    assert ids(bundle, "include") == {clinic["peter"]}
    bundle = search(client, "Patient", _id=clinic["peter"], _revinclude="Observation:subject")
    assert ids(bundle, "include") == {clinic["g1"], clinic["g2"]}
    star = search(client, "Patient", _id=clinic["peter"], _include="*")
    assert ids(star, "include") == {clinic["org"]}


def test_sort_and_paging_links(client: TestClient, clinic: dict[str, str]) -> None:
    asc = search(client, "Observation", _sort="date")
    assert [e["resource"]["id"] for e in asc["entry"]] == [clinic["w1"], clinic["g1"],
                                                           clinic["g2"]]
    desc = search(client, "Observation", _sort="-date")
    assert [e["resource"]["id"] for e in desc["entry"]] == [clinic["g2"], clinic["g1"],
                                                            clinic["w1"]]
    by_value = search(client, "Observation", _sort="-value-quantity")
    assert by_value["entry"][0]["resource"]["id"] == clinic["g2"]
    page1 = search(client, "Observation", _sort="date", _count=2)
    assert page1["total"] == 3 and len(page1["entry"]) == 2
    next_url = next(link["url"] for link in page1["link"] if link["relation"] == "next")
    page2 = client.get(next_url.replace("http://testserver", "")).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == [clinic["g2"]]
    assert any(link["relation"] == "previous" for link in page2["link"])
    assert not any(link["relation"] == "next" for link in page2["link"])


def test_summary_count_and_elements(client: TestClient, clinic: dict[str, str]) -> None:
    counted = search(client, "Observation", _summary="count")
    assert counted["total"] == 3 and "entry" not in counted
    slim = search(client, "Patient", _elements="gender", _id=clinic["ana"])
    resource = slim["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender"}


def test_composite_search(client: TestClient, clinic: dict[str, str]) -> None:
    found = search(client, "Observation", **{"code-value-quantity": "http://loinc.org|2345-7$gt100"})
    assert ids(found) == {clinic["g2"]}


def test_post_search_equals_get(client: TestClient, clinic: dict[str, str]) -> None:
    response = client.post("/fhir/Patient/_search", content="gender=female",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert ids(response.json()) == {clinic["ana"]}


def test_system_search_by_id_and_type(client: TestClient, clinic: dict[str, str]) -> None:
    found = client.get("/fhir", params={"_id": clinic["peter"]}).json()
    assert ids(found) == {clinic["peter"]}
    typed = client.get("/fhir", params={"_type": "Organization"}).json()
    assert ids(typed) == {clinic["org"]}


@pytest.mark.parametrize("query", [
    {"nonsense": "1"}, {"birthdate": "not-a-date"}, {"_count": "-1"}, {"_sort": "nonsense"},
    {"_include": "Nope:subject"}, {"name:frobnicate": "x"}, {"birthdate": "gt"},
    {"_summary": "maybe"}, {"general-practitioner.name.family": "x"},
])
def test_bad_search_parameters_are_400(client: TestClient, query: dict[str, str]) -> None:
    response = client.get("/fhir/Patient", params=query)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"]


def test_include_iterate_follows_included_resources(client: TestClient,
                                                    clinic: dict[str, str]) -> None:
    plain = search(client, "Observation", _id=clinic["g1"], _include="Observation:subject")
    assert ids(plain, "include") == {clinic["peter"]}
    iterated = client.get("/fhir/Observation", params=[
        ("_id", clinic["g1"]), ("_include", "Observation:subject"),
        ("_include:iterate", "Patient:organization")]).json()
    assert ids(iterated, "include") == {clinic["peter"], clinic["org"]}


def test_every_advertised_search_parameter_is_accepted(client: TestClient) -> None:
    """What /metadata lists, search answers: no advertised parameter is refused."""
    capabilities = client.get("/fhir/metadata").json()
    checked = 0
    for resource in capabilities["rest"][0]["resource"]:
        for param in resource["searchParam"]:
            if param["name"] == "_id":
                continue
            response = client.get(f"/fhir/{resource['type']}",
                                  params={f"{param['name']}:missing": "false",
                                          "_summary": "count"})
            assert response.status_code == 200, (resource["type"], param["name"], response.text)
            checked += 1
    assert checked > 2400


def test_unindexed_parameters_are_refused_not_ignored(client: TestClient) -> None:
    for rtype, code in (("Patient", "_text"), ("Patient", "_content"),
                        ("DocumentReference", "relationship")):
        response = client.get(f"/fhir/{rtype}", params={code: "x"})
        assert response.status_code == 400, (rtype, code)
    listed = {p["name"] for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]
              if r["type"] == "DocumentReference" for p in r["searchParam"]}
    assert "relationship" not in listed and "_text" not in listed


def test_single_parameter_counts_and_pages_skip_deleted_and_updated(client: TestClient) -> None:
    created = [client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"})
               .json()["id"] for _ in range(5)]
    client.delete(f"/fhir/Patient/{created[0]}")
    client.put(f"/fhir/Patient/{created[1]}", json={"resourceType": "Patient",
                                                    "id": created[1], "gender": "female"})
    page1 = search(client, "Patient", gender="male", _count=2)
    assert page1["total"] == 3
    page2 = search(client, "Patient", gender="male", _count=2, _offset=2)
    found = [e["resource"]["id"] for e in page1["entry"] + page2["entry"]]
    assert found == created[2:]
    assert page2["total"] == 3 and not any(lk["relation"] == "next" for lk in page2["link"])
