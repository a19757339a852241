"""One synthetic hospital's registrations for the MPI tests (generated, imported and deduped
once per test process): tests that change the store work on a copy of the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from chartkeeper.mpi.dedupe import DedupeResult, Thresholds, dedupe
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.generate import generate
from chartkeeper.synth.people import MRN_SYSTEM

PATIENTS = 1500
SEED = 5


@pytest.fixture(scope="session")
def hospital_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated hospital: ndjson/ to import, answer-key.ndjson (the truth) apart."""
    root = tmp_path_factory.mktemp("mpi-hospital")
    generate(root / "h", PATIENTS, SEED, output_format="ndjson")
    return root / "h"


@pytest.fixture(scope="session")
def patients_file(hospital_files: Path) -> Path:
    """An SQLite store holding the hospital's Patients (never changed: copy it)."""
    path = hospital_files.parent / "patients.sqlite"
    store = Store(f"sqlite:///{path}")
    store.create_schema()
    Importer(store).import_files(
        [p for p in find_files([hospital_files / "ndjson"]) if p.name == "Patient.ndjson"])
    store.dispose()
    return path


@pytest.fixture(scope="session")
def batch(patients_file: Path) -> DedupeResult:
    """The batch run on the hospital: its pairs and the model it trained."""
    store = Store(f"sqlite:///{patients_file}")
    try:
        return dedupe(store, Thresholds(auto_link=0.999, review=0.5))
    finally:
        store.dispose()


def store_copy(patients_file: Path, folder: Path, name: str = "chartkeeper.sqlite") -> Store:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(patients_file, folder / name)
    store = Store(f"sqlite:///{folder / name}")
    store.create_schema()
    return store


def all_patients(store: Store) -> list[dict[str, Any]]:
    """The hospital's Patients (fewer than 2,000: two pages)."""
    with store.read() as txn:
        patients = txn.search_params("Patient", [("_count", "1000")]).matches
        patients += txn.search_params("Patient", [("_count", "1000"),
                                                  ("_offset", "1000")]).matches
    return patients


def true_pairs(store: Store, hospital: Path) -> set[frozenset[str]]:
    """The answer key's duplicate registrations as pairs of Patient ids (measuring only)."""
    patients = all_patients(store)
    by_mrn = {i["value"]: p["id"] for p in patients for i in p.get("identifier", [])
              if i.get("system") == MRN_SYSTEM}
    pairs = set()
    for line in (hospital / "answer-key.ndjson").read_text().splitlines():
        key = json.loads(line)
        for duplicate in key.get("duplicates", []):
            pairs.add(frozenset((by_mrn[key["mrn"]], by_mrn[duplicate["mrn"]])))
    return pairs
