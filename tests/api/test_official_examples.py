"""Every official R4 example: create, read back unchanged, found by _id and by another parameter.

Runs on SQLite and PostgreSQL. Examples that the R4 definitions themselves reject (errata in
the published package) must be refused with 422 and are listed, with the reason, in
``tests/fhir/test_validation.py::KNOWN_INVALID_EXAMPLES``.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chartkeeper.fhir import indexing
from tests.fhir.test_validation import (
    KNOWN_INVALID_EXAMPLES,
    instance_examples,
    package_resources,
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def other_parameter(resource: dict[str, Any]) -> tuple[str, str] | None:
    """A (parameter, value) other than _id that should find this resource, from its index."""
    rows = indexing.extract(resource)
    for param, system, code, _text in rows.tokens:
        if not param.startswith("_") and ":" not in param and code:
            return param, f"{escape(system)}|{escape(code)}" if system else escape(code)
    for param, target_type, target_id, url in rows.references:
        if target_type and target_id:
            return param, f"{target_type}/{target_id}"
        if url and not url.startswith("urn:"):
            return param, url
    for param, _norm, exact in rows.strings:
        if exact and len(exact) < 255:
            return f"{param}:exact", escape(exact)
    for param, uri in rows.uris:
        if not param.startswith("_") and len(uri) < 512:
            return param, escape(uri)
    for param, low, high in rows.dates:
        if not param.startswith("_") and low > indexing.MIN_DATE_US:
            return param, f"ge{instant(low)}&{param}=le{instant(high)}"
    for param, _system, _code, value, _low, _high in rows.quantities:
        return param, f"ge{value!r}&{param}=le{value!r}"
    for param, value, _low, _high in rows.numbers:
        return param, f"ge{value!r}&{param}=le{value!r}"
    for param, _system, code, text in rows.tokens:
        if not param.startswith("_") and ":" not in param and text and not code:
            return f"{param}:text", escape(text)
    # Some resources (OperationOutcome, Binary...) carry no value any R4 parameter indexes.
    for param, low, high in rows.dates:
        if param == "_lastUpdated":
            return param, f"ge{instant(low)}&{param}=le{instant(high)}"
    return None


def instant(microseconds: int) -> str:
    moment = datetime.fromtimestamp(microseconds / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def all_examples() -> list[tuple[str, dict[str, Any]]]:
    examples = dict(package_resources())
    for name, resource in instance_examples().items():
        if name in examples:
            assert examples[name] == resource, f"{name} differs between the folder and the package"
        examples[name] = resource
    return sorted(examples.items())


def strip_meta(resource: dict[str, Any]) -> dict[str, Any]:
    copy = {k: v for k, v in resource.items() if k != "meta"}
    meta = {k: v for k, v in resource.get("meta", {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        copy["meta"] = meta
    return copy


@pytest.mark.slow
def test_every_official_example_round_trips_and_is_found(client: TestClient) -> None:
    examples = all_examples()
    outcome: Counter[str] = Counter()
    refused: dict[str, str] = {}
    no_other_param: list[str] = []
    seen: set[tuple[str, str]] = set()
    for name, resource in examples:
        rtype = resource["resourceType"]
        rid = resource.get("id")
        if rid:
            response = client.put(f"/fhir/{rtype}/{rid}", json=resource)
        else:
            response = client.post(f"/fhir/{rtype}", json=resource)
        if name in KNOWN_INVALID_EXAMPLES:
            assert response.status_code == 422, (name, response.status_code)
            assert response.json()["resourceType"] == "OperationOutcome"
            refused[name] = KNOWN_INVALID_EXAMPLES[name][0]
            outcome["refused as invalid"] += 1
            continue
        expected_status = 200 if (rtype, rid) in seen else 201
        assert response.status_code == expected_status, (name, response.text[:1000])
        stored = response.json()
        rid = stored["id"]
        seen.add((rtype, rid))

        read = client.get(f"/fhir/{rtype}/{rid}")
        assert read.status_code == 200, name
        assert strip_meta(read.json()) == strip_meta(dict(resource, id=rid)), name

        by_id = client.get(f"/fhir/{rtype}", params={"_id": rid}).json()
        assert by_id["total"] == 1, name

        other = other_parameter(stored)
        if other is None:
            no_other_param.append(name)
            outcome["found by _id only (no other indexed value)"] += 1
            continue
        param, value = other
        pairs = [(param, value)]
        if "&" in value:  # a range: two occurrences of the parameter, AND'ed
            first, _, second = value.partition("&")
            pairs = [(param, first), (param, second.split("=", 1)[1])]
        found = client.get(f"/fhir/{rtype}", params=[*pairs, ("_id", rid)])
        assert found.status_code == 200, (name, param, value, found.text[:500])
        assert found.json()["total"] == 1, (name, param, value)
        outcome["found by _id and another parameter"] += 1

    total = len(examples)
    print(f"\nofficial R4 examples: {total}; " + "; ".join(f"{k}: {v}" for k, v in outcome.items()))
    for name, why in sorted(refused.items()):
        print(f"  refused {name}: {why}")
    for name in no_other_param:
        print(f"  only _id: {name}")
    assert set(refused) == set(KNOWN_INVALID_EXAMPLES)
    assert outcome["found by _id and another parameter"] + len(no_other_param) + len(refused) \
        == total
    assert not no_other_param
