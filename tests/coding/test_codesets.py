"""Code-set releases: validated on import, kept by dates in force, refused when they clash."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from chartkeeper.coding import codesets
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.store.engine import make_engine

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codesets"
PCS_2025 = DATA / "icd10pcs-fy2025-tables-index-definitions" / "icd10pcs_tables_2025.xml"
PCS_2026 = DATA / "icd10pcs-fy2026-tables" / "icd10pcs_tables_2026.xml"
HCPCS_2020 = DATA / "hcpcs_2020_cms" / "2020-Alpha-Numeric-HCPCS-File.zip"
NEOPLASM = DATA / "icd10cm-fy2025-cdc-neoplasm-drug-eindex" / "icd-10-cm-neoplasm-2025.xml"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The packaged ICD-10-CM and the PCS tables of FY2025 and FY2026, imported up front: the
    tests of this module may run in any order, on any xdist worker."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('codesets') / 'store.sqlite'}")
    codesets.ensure_packaged(engine)
    for path, start, end in ((PCS_2025, date(2024, 10, 1), date(2025, 9, 30)),
                             (PCS_2026, date(2025, 10, 1), date(2026, 9, 30))):
        codesets.import_release(engine, path.read_bytes(), system="icd10pcs", source=path.name,
                                effective_from=start, effective_to=end)
    return engine


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(codesets.codeset_release))
                   .scalar_one())


def test_the_packaged_icd10cm_release_is_imported_once(engine: Engine) -> None:
    assert codesets.ensure_packaged(engine) is None
    (release,) = codesets.releases(engine, "icd10cm")
    assert release.version == "2026-04-01"
    assert release.entries == 74_719
    assert (release.effective_from, release.effective_to) == (date(2025, 10, 1),
                                                              date(2026, 9, 30))


def test_a_release_is_chosen_by_the_date_of_service(engine: Engine) -> None:
    first = codesets.import_release(engine, PCS_2025.read_bytes(), system="icd10pcs",
                                    source=PCS_2025.name,
                                    effective_from=date(2024, 10, 1),
                                    effective_to=date(2025, 9, 30))
    second = codesets.import_release(engine, PCS_2026.read_bytes(), system="icd10pcs",
                                     source=PCS_2026.name,
                                     effective_from=date(2025, 10, 1),
                                     effective_to=date(2026, 9, 30))
    assert first.entries == 78_948 and second.entries == 79_115
    assert codesets.release_for(engine, "icd10pcs", date(2025, 3, 1)) == first
    assert codesets.release_for(engine, "icd10pcs", date(2026, 3, 1)) == second
    assert codesets.release_for(engine, "icd10pcs") == second  # no date: the newest
    tables = codesets.model(engine, first)
    assert tables.is_valid("0SR9019") and not tables.is_valid("0SG604Y")
    with pytest.raises(codesets.NoRelease, match="no icd10pcs release is in force on "
                                                 "2023-01-01"):
        codesets.release_for(engine, "icd10pcs", date(2023, 1, 1))


def test_the_same_file_again_is_the_same_release(engine: Engine) -> None:
    before = count(engine)
    again = codesets.import_release(engine, PCS_2025.read_bytes(), system="icd10pcs",
                                    source="copy.xml", effective_from=date(2024, 10, 1),
                                    effective_to=date(2025, 9, 30))
    assert again.source == PCS_2025.name and count(engine) == before


def test_overlapping_dates_and_reused_versions_are_refused(engine: Engine) -> None:
    before = count(engine)
    with pytest.raises(CodeSetError, match="overlaps release"):
        codesets.import_release(engine, gzip.compress(PCS_2026.read_bytes()),
                                system="icd10pcs", source="other.xml.gz",
                                effective_from=date(2026, 1, 1), version="2026-b")
    with pytest.raises(CodeSetError, match="already imported from another file"):
        codesets.import_release(engine, gzip.compress(PCS_2026.read_bytes()),
                                system="icd10pcs", source="other.xml.gz",
                                effective_from=date(2030, 1, 1),
                                version=codesets.releases(engine, "icd10pcs")[0].version)
    assert count(engine) == before


@pytest.mark.parametrize(("system", "data", "message"), [
    ("icd10pcs", b"<ICD10PCS.tabular><version>2026", "icd10pcs_tables"),
    ("icd10cm", b"not xml at all", "broken.xml"),
    ("hcpcs", b"PK\x03\x04truncated", "broken.xml"),
    ("icd10cm-drug", NEOPLASM.read_bytes(), "not the drug file"),
    ("snomed", b"whatever", "unknown code system 'snomed'"),
])
def test_malformed_or_mislabelled_files_are_refused_and_nothing_is_stored(
        engine: Engine, system: str, data: bytes, message: str) -> None:
    before = count(engine)
    source = "icd10pcs_tables_2027.xml" if system == "icd10pcs" else "broken.xml"
    with pytest.raises(CodeSetError, match=message):
        codesets.import_release(engine, data, system=system, source=source,
                                effective_from=date(2027, 10, 1))
    assert count(engine) == before


def test_effective_dates_must_be_in_order(engine: Engine) -> None:
    with pytest.raises(CodeSetError, match="is before effective-from"):
        codesets.import_release(engine, HCPCS_2020.read_bytes(), system="hcpcs",
                                source=HCPCS_2020.name, effective_from=date(2020, 12, 31),
                                effective_to=date(2020, 1, 1))


def test_hcpcs_and_index_tables_import_with_their_counts(engine: Engine) -> None:
    hcpcs = codesets.import_release(engine, HCPCS_2020.read_bytes(), system="hcpcs",
                                    source=HCPCS_2020.name, effective_from=date(2020, 1, 1),
                                    effective_to=date(2020, 12, 31))
    assert hcpcs.version == "2020" and hcpcs.entries == 6_710
    neoplasm = codesets.import_release(engine, NEOPLASM.read_bytes(),
                                       system="icd10cm-neoplasm", source=NEOPLASM.name,
                                       effective_from=date(2024, 10, 1),
                                       effective_to=date(2025, 9, 30))
    assert neoplasm.entries > 1000


def test_models_are_rebuilt_from_the_database_in_a_new_process(engine: Engine) -> None:
    release = codesets.release_for(engine, "icd10pcs", date(2026, 3, 1))
    codesets._MODELS.pop(release.sha256, None)  # as a process that never parsed it
    assert codesets.model(engine, release).is_valid("0SR9019")


def test_fiscal_years_run_october_to_september() -> None:
    assert codesets.fiscal_year_dates(2027) == (date(2026, 10, 1), date(2027, 9, 30))
