"""An update that changes nothing makes no new version (a re-import, a resend), on both
databases; any real change, or a deleted resource put back, does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from chartkeeper.store import Store, schema
from chartkeeper.store.importer import Importer

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Noop", "given": ["Ann"]}],
           "birthDate": "1970-01-01", "meta": {"tag": [{"code": "t"}]}}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    yield store
    store.dispose()

UNTAGGED = {k: v for k, v in PATIENT.items() if k != "meta"}


def versions(store: Store) -> int:
    with store.read() as txn:
        return int(txn.conn.execute(
            select(func.count()).select_from(schema.resource_version)).scalar_one())


def test_the_same_content_again_keeps_the_version(store: Store) -> None:
    with store.write() as txn:
        first = txn.update("Patient", "p1", PATIENT)
    with store.write() as txn:
        stamped = txn.read("Patient", "p1")  # as read back, meta.versionId and all
        again = txn.update("Patient", "p1", stamped)
        plain = txn.update("Patient", "p1", PATIENT)
    assert (first.version_id, again.version_id, plain.version_id) == (1, 1, 1)
    assert again.unchanged and plain.unchanged
    assert versions(store) == 1
    with store.write() as txn:
        changed = txn.update("Patient", "p1", {**PATIENT, "gender": "female"})
        untagged = txn.update("Patient", "p1", {**UNTAGGED, "gender": "female"})
    assert (changed.version_id, untagged.version_id) == (2, 3)  # a meta.tag change counts
    with store.write() as txn:
        txn.delete("Patient", "p1")
        back = txn.update("Patient", "p1", {**UNTAGGED, "gender": "female"})
    assert back.version_id == 5 and not back.unchanged


def test_importing_the_same_ndjson_twice_changes_nothing(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_text("\n".join(json.dumps({**PATIENT, "id": f"p{n}"}) for n in range(5)) + "\n")
    first = Importer(store, workers=0).import_files([path])
    count = versions(store)
    second = Importer(store, workers=0).import_files([path])
    assert (first.created, first.updated) == (5, 0)
    assert (second.created, second.updated, second.rejected, second.skipped) == (0, 0, 0, 1)
    assert versions(store) == count == 5 + 1  # and the chunk's Provenance
