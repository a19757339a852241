"""Real-time matching: the compiled scorer gives splink's own numbers, ``Patient/$match``
finds the synthetic hospital's second registrations, and a Patient created through the API
is checked against the index in its own transaction."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chartkeeper.mpi.dedupe import DedupeResult, patient_row
from chartkeeper.mpi.match import Scorer, match, match_parameters
from chartkeeper.mpi.service import load_model, open_reviews, save_model
from chartkeeper.store import Store
from chartkeeper.store.errors import StoreError
from chartkeeper.synth.people import MRN_SYSTEM
from tests.api.conftest import make_client, make_settings
from tests.mpi.conftest import all_patients, store_copy


@pytest.fixture(scope="module")
def hospital(patients_file: Path, hospital_files: Path, batch: DedupeResult,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    """The hospital's patients and the batch run's model, none of its pairs linked."""
    store = store_copy(patients_file, tmp_path_factory.mktemp("match"))
    with store.write() as txn:
        save_model(txn, batch.model)
    yield store, hospital_files
    store.dispose()


@pytest.fixture(scope="module")
def trained(batch: DedupeResult) -> dict[str, Any]:
    return batch.model


def second_registrations(store: Store, folder: Path) -> list[tuple[dict[str, Any], str]]:
    """(the second registration, the first one's id) for each duplicate in the answer key."""
    everyone = all_patients(store)
    by_mrn = {i["value"]: p for p in everyone for i in p.get("identifier", [])
              if i.get("system") == MRN_SYSTEM}
    out = []
    for line in (folder / "answer-key.ndjson").read_text().splitlines():
        key = json.loads(line)
        for duplicate in key.get("duplicates", []):
            out.append((by_mrn[duplicate["mrn"]], by_mrn[key["mrn"]]["id"]))
    return out


def test_the_compiled_scorer_gives_splinks_numbers(hospital: tuple[Store, Path],
                                                   trained: dict[str, Any]) -> None:
    import duckdb
    import pyarrow as pa
    from splink import DuckDBAPI, Linker

    store, folder = hospital
    rows = [patient_row(p) for p in all_patients(store)[:300]]
    record = {**rows[7], "unique_id": "new"}
    scorer = Scorer(trained)
    assert {"first_name", "surname"} <= set(scorer.tf_columns)
    frequencies = {column: {record[column]: 0.0009 * (n + 1)}
                   for n, column in enumerate(scorer.tf_columns)}
    ours = {p.right if p.left == "new" else p.left: p
            for p in scorer.score(record, rows, frequencies)}
    con = duckdb.connect()
    api = DuckDBAPI(connection=con)
    linker = Linker(api.register(pa.Table.from_pylist(rows)), trained, log_level=30)
    for column, table in frequencies.items():
        linker.table_management.register_term_frequency_lookup(api.register(
            pa.Table.from_pylist([{column: k, f"tf_{column}": v} for k, v in table.items()])),
            column)
    theirs = linker.inference.score_pairs([record], rows).as_record_list()
    con.close()
    assert len(theirs) == len(ours) == 300
    for scored in theirs:
        pair = ours[scored["unique_id_r"]]
        assert pair.weight == pytest.approx(scored["match_weight"], abs=1e-9)
        assert pair.probability == pytest.approx(scored["match_probability"], abs=1e-12)
    assert ours[rows[7]["unique_id"]].probability > 0.999


def test_match_finds_the_second_registrations(hospital: tuple[Store, Path],
                                              trained: dict[str, Any]) -> None:
    store, folder = hospital
    cases = second_registrations(store, folder)
    assert len(cases) > 20
    found = certain = 0
    with store.read() as txn:
        for duplicate, first in cases:
            query = {k: v for k, v in copy.deepcopy(duplicate).items() if k not in ("id", "meta")}
            # the query is the second registration itself, stored: it finds itself too
            matches = match(txn, query, count=3)
            top = [m for m in matches if m.patient["id"] != duplicate["id"]]
            if top and top[0].patient["id"] == first:
                found += 1
                certain += top[0].grade == "certain"
    print(f"$match: first registration ranked first for {found} of {len(cases)} second "
          f"registrations ({certain} certain)")
    assert found / len(cases) >= 0.95


def test_thin_and_odd_records_are_never_certain(hospital: tuple[Store, Path],
                                                trained: dict[str, Any]) -> None:
    store, _ = hospital
    someone = all_patients(store)[3]
    thin = {"resourceType": "Patient", "name": [{"family": someone["name"][0]["family"]}],
            "gender": someone.get("gender")}
    kanji = {"resourceType": "Patient", "name": [{"family": "山田", "given": ["太郎"]}],
             "birthDate": "2999-01-01"}
    with store.read() as txn:
        assert all(m.grade != "certain" for m in match(txn, thin))
        assert match(txn, kanji) == []


@pytest.mark.parametrize(("body", "message"), [
    ({"resourceType": "Patient"}, "Parameters"),
    ({"resourceType": "Parameters"}, "needs the 'resource'"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Observation"}}]}, "must be a Patient"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "gender": "female"}}]},
     "nothing to match on"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "birthDate": "1970"}},
        {"name": "count", "valueInteger": 0}]}, "count"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "birthDate": "1970"}},
        {"name": "onlyCertainMatches", "valueString": "yes"}]}, "onlyCertainMatches"),
    ({"resourceType": "Parameters", "parameter": [{"name": "fuzzy"}]}, "no parameter"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "birthDate": "1970-13-45"}}
    ]}, "not a valid date"),
])
def test_bad_match_input_is_refused(body: Any, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        match_parameters(body)


def test_match_and_registration_check_over_the_api(database_url: str, tmp_path: Path,
                                                   hospital: tuple[Store, Path],
                                                   trained: dict[str, Any]) -> None:
    source, folder = hospital
    duplicate, first = second_registrations(source, folder)[0]
    store = Store(database_url)
    store.create_schema()
    with store.write() as txn:  # the index and its model, without the second registration
        txn.create_many([p for p in all_patients(source) if p["id"] != duplicate["id"]])
        save_model(txn, trained)
    query = {k: v for k, v in duplicate.items() if k not in ("id", "meta")}
    with make_client(make_settings(tmp_path, database_url), store) as client:
        answer = client.post("/fhir/Patient/$match", json={
            "resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": query}, {"name": "count", "valueInteger": 3}]})
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert bundle["type"] == "searchset"
        best = bundle["entry"][0]
        assert best["resource"]["id"] == first
        assert best["search"]["mode"] == "match" and 0 < best["search"]["score"] <= 1
        assert best["search"]["extension"][0]["valueCode"] in ("certain", "probable")
        refused = client.post("/fhir/Patient/$match", json={"resourceType": "Parameters"})
        assert refused.status_code == 400
        assert refused.json()["resourceType"] == "OperationOutcome"

        before = client.get("/fhir/Task", params={"_summary": "count"}).json()["total"]
        created = client.post("/fhir/Patient", json=query)
        assert created.status_code == 201, created.text
        new_id = created.json()["id"]
    with store.read() as txn:
        linked = txn.read("Patient", first).get("link", [])
        reviews, queued = open_reviews(txn)
        assert load_model(txn) == trained
    # certain: linked at once; probable: queued for a person
    assert {"other": {"reference": f"Patient/{new_id}"}, "type": "seealso"} in linked or \
        any({r.left, r.right} == {new_id, first} for r in reviews)
    assert queued + len(linked) > before
    store.dispose()


def test_an_adt_registration_is_checked(sqlite_url: str, hospital: tuple[Store, Path],
                                        trained: dict[str, Any]) -> None:
    from chartkeeper.ingest.service import Hl7Ingestor, create_ingest_schema

    source, folder = hospital
    duplicate, first = second_registrations(source, folder)[1]
    store = Store(sqlite_url)
    store.create_schema()
    create_ingest_schema(store.engine)
    with store.write() as txn:
        txn.create_many([p for p in all_patients(source) if p["id"] != duplicate["id"]])
        save_model(txn, trained)
    name, address = duplicate["name"][0], duplicate["address"][0]
    phone = next((t["value"] for t in duplicate.get("telecom", [])), "")
    ssn = next((i["value"] for i in duplicate["identifier"] if "ssn" in i["system"]), "")
    message = "\r".join([
        "MSH|^~\\&|REG|GHH|CK|CK|20260110120000||ADT^A04^ADT_A01|REG00001|P|2.5.1",
        "EVN|A04|20260110120000",
        f"PID|1||NEW123^^^GHH^MR||{name['family']}^{name['given'][0]}||"
        f"{duplicate['birthDate'].replace('-', '')}|{duplicate['gender'][0].upper()}|||"
        f"{address['line'][0]}^^{address['city']}^{address['state']}^{address['postalCode']}"
        f"||{phone}|||||{ssn}",
        "PV1|1|O"])
    result = Hl7Ingestor(store).ingest(message)
    assert result.status == "stored"
    with store.read() as txn:
        new = txn.search_params("Patient", [("identifier", "NEW123")]).matches[0]
        links = txn.read("Patient", first).get("link", [])
        reviews, _total = open_reviews(txn)
    linked = {"other": {"reference": f"Patient/{new['id']}"}, "type": "seealso"} in links
    queued = any({r.left, r.right} == {new["id"], first} for r in reviews)
    assert linked or queued
    store.dispose()
