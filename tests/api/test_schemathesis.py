"""Property-based API tests: schemathesis over the app's own OpenAPI document.

Every operation of the HIM API (/auth, /security, /audit, /him) and the FHIR API (/fhir) is
called with generated requests, valid and invalid, in-process over ASGI, as an administrator,
a transcriptionist (whose role refuses most of it, so the 403 paths run too) and a release-of-
information specialist (break-the-glass, disclosures). Each
answer must be no 5xx, a documented status with the documented media type, headers and body
schema, and an operation that declares authentication must refuse a request without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chartkeeper.api.app import create_app
from chartkeeper.api.openapi import operations_without_contract
from chartkeeper.security.identity import Role
from chartkeeper.store import Store
from tests.api.conftest import issue_token, make_client, make_security, make_settings

# Examples per operation in the fuzzing phase (the coverage phase adds its boundary cases).
# CI keeps the whole file near a minute on SQLite; raise it locally to dig deeper.
MAX_EXAMPLES = int(os.environ.get("CHARTKEEPER_SCHEMATHESIS_EXAMPLES", "15"))


def _minimal_write(response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """A write asked for ``Prefer: return=minimal``: FHIR answers it without a body, which
    OpenAPI cannot mark optional, so there is no media type or body to check."""
    prefer = (case.headers or {}).get("Prefer", "")
    return "return=minimal" in str(prefer) and not response.content


def media_type_conformance(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                           case: schemathesis.Case) -> bool | None:
    if _minimal_write(response, case):
        return None
    return content_type_conformance(ctx, response, case)


def body_schema_conformance(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                            case: schemathesis.Case) -> bool | None:
    if _minimal_write(response, case):
        return None
    return response_schema_conformance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    media_type_conformance,
    response_headers_conformance,
    body_schema_conformance,
    ignored_auth,
]


@dataclass
class FuzzRun:
    """What the store holds before the run (so generated requests can aim at existing ids),
    and what the run met."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # valid, without id
    deleted: list[tuple[str, str]] = field(default_factory=list)
    export_jobs: list[str] = field(default_factory=list)  # kicked off during the run
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def seed(store: Store) -> FuzzRun:
    run = FuzzRun()
    with store.write() as txn:
        patient = txn.create({"resourceType": "Patient", "name": [{"family": "Fuzz"}],
                              "gender": "female", "birthDate": "1970-01-01"})
        pid = patient.resource_id
        txn.update("Patient", pid, {"resourceType": "Patient", "id": pid, "gender": "female",
                                    "name": [{"family": "Fuzz", "given": ["Ada"]}]})
        subject = {"reference": f"Patient/{pid}"}
        made = [
            patient,
            txn.create({"resourceType": "Encounter", "status": "finished", "subject": subject,
                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                  "code": "AMB"}}),
            txn.create({"resourceType": "Observation", "status": "final", "subject": subject,
                        "code": {"coding": [{"system": "http://loinc.org",
                                             "code": "8867-4"}]}}),
            txn.create({"resourceType": "DocumentReference", "status": "current",
                        "subject": subject,
                        "content": [{"attachment": {"contentType": "text/plain",
                                                    "data": "bm90ZQ=="}}]}),
        ]
        gone = txn.create({"resourceType": "Patient", "gender": "male"})
        txn.delete("Patient", gone.resource_id)
    for result in made:
        run.ids.setdefault(result.resource_type, []).append(result.resource_id)
        assert result.resource is not None
        run.templates[result.resource_type] = {
            k: v for k, v in result.resource.items() if k not in ("id", "meta")}
    run.deleted.append(("Patient", gone.resource_id))
    return run


@pytest.fixture
def fuzz_store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.create_schema()
    yield store
    store.dispose()


@pytest.fixture
def fuzz_run(fuzz_store: Store) -> FuzzRun:
    return seed(fuzz_store)


@dataclass
class Caller:
    """The app under test and the bearer token the generated requests carry."""

    app: FastAPI
    role: Role
    token: str


# The administrator reaches most of the FHIR API; the transcriptionist is refused most of it
# (403 paths); the release-of-information specialist reaches break-the-glass and disclosures.
@pytest.fixture(params=[Role.administrator, Role.transcriptionist, Role.roi_specialist],
                ids=lambda r: r.value)
def caller(request: pytest.FixtureRequest, fuzz_store: Store, fuzz_run: FuzzRun,
           tmp_path: Path) -> Iterator[Caller]:
    role: Role = request.param
    settings = make_settings(tmp_path, fuzz_store.url)
    security = make_security(settings, fuzz_store)
    token = issue_token(security, user=f"fuzz-{role.value.replace('_', '-')}", role=role)
    yield Caller(create_app(settings, fuzz_store, security), role, token)
    asgi.shutdown_lifespans()  # the app's shutdown, which flushes its audit writer
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(fuzz_run.statuses.items()))
    print(f"\n{role.value}: {fuzz_run.requests} generated requests ({statuses})")


@pytest.fixture
def api_schema(request: pytest.FixtureRequest, caller: Caller) -> schemathesis.BaseSchema:
    """The schema the app serves, loaded from the app itself (in-process, over ASGI)."""
    # schemathesis 4.32's lazy loader renames the running item through `Node._nodeid`, which
    # pytest 9.2 no longer has (it keeps a structured `_id`); give it the attribute it sets.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    return schemathesis.openapi.from_asgi("/openapi.json", caller.app)


lazy_schema = schemathesis.pytest.from_fixture("api_schema")


def steer(case: schemathesis.Case, data: st.DataObject, run: FuzzRun) -> None:
    """Point some generated requests at stored resources and export jobs, and give some
    writes a valid body of their URL's type, so that reads and writes reach the store and
    succeed, instead of all stopping at 403, 404, 400 or 422."""
    path = case.path_parameters or {}
    if "resource_type" in path and data.draw(st.booleans(), label="stored"):
        known = [(t, i) for t, ids in run.ids.items() for i in ids] + run.deleted
        resource_type, resource_id = data.draw(st.sampled_from(known), label="resource")
        path["resource_type"] = resource_type
        if "resource_id" in path:
            path["resource_id"] = resource_id
        if "version_id" in path:
            path["version_id"] = data.draw(st.sampled_from(["1", "2", "3"]), label="version")
    if "patient_id" in path and data.draw(st.booleans(), label="stored patient"):
        path["patient_id"] = run.ids["Patient"][0]
    if "job_id" in path and run.export_jobs and data.draw(st.booleans(), label="job"):
        path["job_id"] = data.draw(st.sampled_from(run.export_jobs), label="job id")
        if "name" in path:
            path["name"] = data.draw(st.sampled_from(
                [f"{t}.ndjson" for t in run.ids]), label="file")
    if isinstance(case.body, dict) and "resource_type" in path:
        body = data.draw(st.sampled_from(["generated", "aligned", "valid"]), label="body")
        template = run.templates.get(path["resource_type"])
        if body == "valid" and template is not None:
            case.body = dict(template)
            if case.headers and data.draw(st.booleans(), label="unconditional"):
                case.headers.pop("If-None-Exist", None)
                case.headers.pop("If-Match", None)
        if body != "generated":
            case.body["resourceType"] = path["resource_type"]
            if "resource_id" in path:
                case.body["id"] = path["resource_id"]


@lazy_schema.parametrize()
@lazy_schema.given(data=st.data())
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case, data: st.DataObject,
                                               fuzz_run: FuzzRun, caller: Caller) -> None:
    steer(case, data, fuzz_run)
    fuzz_run.requests += 1
    # Passed here rather than in the schema's config so that ignored_auth knows the
    # credentials are real and probes the operation without them.
    response = case.call_and_validate(headers={"Authorization": f"Bearer {caller.token}"},
                                      checks=CHECKS)
    fuzz_run.statuses[response.status_code] = fuzz_run.statuses.get(response.status_code, 0) + 1
    status_url = response.headers.get("content-location", [""])[0]
    if "/$export-poll-status/" in status_url:
        fuzz_run.export_jobs.append(status_url.rsplit("/", 1)[1])


def test_every_operation_has_a_contract(fuzz_store: Store, tmp_path: Path) -> None:
    """A new route gets its statuses, parameters and body written down, not guessed."""
    settings = make_settings(tmp_path, fuzz_store.url)
    app = create_app(settings, fuzz_store, make_security(settings, fuzz_store))
    assert operations_without_contract(app) == []


BIG = 2**63  # one past SQLite's INTEGER and PostgreSQL's bigint
FUZZ_FINDINGS = [
    # (method, path, body, the statuses a correct answer may have)
    ("POST", "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient", "ifMatch": []}}]}, {200, 400}),
    ("POST", "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": [], "url": "Patient"}}]}, {200, 400}),
    ("GET", f"/fhir/_history?_offset={BIG}", None, {200, 400}),
    ("GET", f"/fhir/Patient/_history?_offset={BIG}", None, {200, 400}),
    ("GET", "/fhir/Patient/{id}/_history?_offset=" + str(BIG), None, {200, 400}),
    ("GET", f"/fhir/Patient?_offset={BIG}", None, {200, 400}),
    ("GET", f"/audit/entries?_offset={BIG}", None, {200, 400}),
    ("GET", "/fhir/Patient/{id}/_history/" + str(BIG), None, {400, 404}),
    ("GET", "/fhir/Patient/{id}/_history/" + str(2**31), None, {400, 404}),  # int4 column
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), FUZZ_FINDINGS,
                         ids=[f"{m} {p.split('?')[0]}-{i}"
                              for i, (m, p, _, _) in enumerate(FUZZ_FINDINGS)])
def test_requests_the_fuzzer_found_answer_without_a_server_error(
        store: Store, tmp_path: Path, method: str, path: str, body: Any,
        expected: set[int]) -> None:
    with make_client(make_settings(tmp_path, store.url), store) as client:
        patient = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()
        client_errors = TestClient(client.app, raise_server_exceptions=False,
                                   headers=client.headers)
        response = client_errors.request(method, path.replace("{id}", patient["id"]),
                                         json=body)
    assert response.status_code in expected, response.text
