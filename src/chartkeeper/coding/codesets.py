"""Code-set releases: the official files a site imports, kept by system and effective dates.

Each release is the validated file itself (compressed), with the dates it is in force; the
parsed model is built from it on first use in a process and kept. That keeps every fiscal
year side by side, lets every application server read the same releases from the database,
and means a release is only ever what CMS, CDC or the AMA published. ICD-10-CM of April 2026
comes with the ``simple-icd-10-cm`` package; everything else is imported by the site.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
)

from chartkeeper.coding.errors import CodeSetError

metadata = MetaData()  # the coding slice's own tables

codeset_release = Table(
    "codeset_release",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("system", String(32), nullable=False),
    Column("version", String(64), nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("effective_to", Date, nullable=True),
    Column("source", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("entries", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("imported_by", String(255), nullable=False),
    UniqueConstraint("system", "version", name="uq_codeset_release_system_version"),
)


def _icd10cm(data: bytes, source: str) -> tuple[Any, int, str]:
    from chartkeeper.coding.icd10cm import parse_tabular

    model = parse_tabular(data, source=source)
    return model, sum(1 for _ in model.billable_codes()), model.version


def _cm_index(kind: str) -> Callable[[bytes, str], tuple[Any, int, str]]:
    def parse(data: bytes, source: str) -> tuple[Any, int, str]:
        from chartkeeper.coding.cm_index import parse_index

        model = parse_index(data, source=source)
        if model.kind != kind:
            raise CodeSetError(f"{source}: this is the ICD-10-CM {model.kind} file, not the "
                               f"{kind} file")
        return model, len(model.terms), str(model.version or "")

    return parse


def _pcs(data: bytes, source: str) -> tuple[Any, int, str]:
    from chartkeeper.coding.pcs import parse_tables

    model = parse_tables(data, source=source)
    return model, sum(1 for _ in model.codes()), model.version


def _pcs_index(data: bytes, source: str) -> tuple[Any, int, str]:
    from chartkeeper.coding.pcs_index import parse_index

    model = parse_index(data, source=source)
    return model, len(model.entries), ""


def _pcs_definitions(data: bytes, source: str) -> tuple[Any, int, str]:
    from chartkeeper.coding.pcs_index import parse_definitions

    model = parse_definitions(data, source=source)
    return model, len(model.sections), ""


def _hcpcs(data: bytes, source: str) -> tuple[Any, int, str]:
    from chartkeeper.coding.hcpcs import parse_hcpcs

    model = parse_hcpcs(data, source=source)
    return model, len(model.codes), str(model.year) if model.year else ""


def _cpt(data: bytes, source: str) -> tuple[Any, int, str]:
    from chartkeeper.coding.cpt import parse_cpt

    model = parse_cpt(data, source=source)
    return model, len(model.codes), ""


def _ncci(table: str, setting: str) -> Callable[[bytes, str], tuple[Any, int, str]]:
    def parse(data: bytes, source: str) -> tuple[Any, int, str]:
        from chartkeeper.coding import ncci

        parser = ncci.parse_ptp if table == "ptp" else ncci.parse_mue
        model = parser(data, source=source, setting=setting)  # type: ignore[arg-type]
        return model, len(model), ""

    return parse


# The systems a site can import, each with its parser (which validates the file).
PARSERS: dict[str, Callable[[bytes, str], tuple[Any, int, str]]] = {
    "icd10cm": _icd10cm,
    "icd10cm-index": _cm_index("index"),
    "icd10cm-eindex": _cm_index("eindex"),
    "icd10cm-neoplasm": _cm_index("neoplasm"),
    "icd10cm-drug": _cm_index("drug"),
    "icd10pcs": _pcs,
    "icd10pcs-index": _pcs_index,
    "icd10pcs-definitions": _pcs_definitions,
    "hcpcs": _hcpcs,
    "cpt": _cpt,
    "ncci-ptp-practitioner": _ncci("ptp", "practitioner"),
    "ncci-ptp-hospital": _ncci("ptp", "hospital"),
    "ncci-mue-practitioner": _ncci("mue", "practitioner"),
    "ncci-mue-hospital": _ncci("mue", "hospital"),
}

# What ships with the package: ICD-10-CM April 1 2026 (simple-icd-10-cm). CMS's April update
# belongs to fiscal year 2026, which runs from 1 October 2025 to 30 September 2026.
PACKAGED_ICD10CM = ("simple_icd_10_cm.data", "icd10c-tabular-April-1-2026.xml")
PACKAGED_ICD10CM_DATES = (date(2025, 10, 1), date(2026, 9, 30))


@dataclass(frozen=True)
class Release:
    """One imported file: the system, its version, the dates it is in force."""

    pk: int
    system: str
    version: str
    effective_from: date
    effective_to: date | None
    source: str
    sha256: str
    entries: int
    imported_at: datetime
    imported_by: str

    def covers(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, "version": self.version,
                "effectiveFrom": self.effective_from.isoformat(),
                "effectiveTo": self.effective_to.isoformat() if self.effective_to else None,
                "source": self.source, "sha256": self.sha256, "entries": self.entries,
                "importedAt": self.imported_at.isoformat(), "importedBy": self.imported_by}


class NoRelease(CodeSetError):
    """No release of a code system is in force on a date (or none is imported at all)."""


def create_coding_schema(engine: Engine) -> None:
    """Create the coding slice's tables (idempotent), on SQLite or PostgreSQL."""
    metadata.create_all(engine)


def fiscal_year_dates(fiscal_year: int) -> tuple[date, date]:
    """CMS's fiscal year ``fiscal_year`` runs from 1 October before it to 30 September."""
    return date(fiscal_year - 1, 10, 1), date(fiscal_year, 9, 30)


def import_release(engine: Engine, data: bytes, *, system: str, source: str,
                   effective_from: date, effective_to: date | None = None,
                   version: str | None = None, imported_by: str = "system") -> Release:
    """Validate a code-set file with its parser and store it; nothing is stored if it fails.

    The same file imported again is the release already there; another file under the same
    system and version is refused.
    """
    if system not in PARSERS:
        raise CodeSetError(f"unknown code system {system!r}; expected one of "
                           f"{', '.join(sorted(PARSERS))}")
    if effective_to is not None and effective_to < effective_from:
        raise CodeSetError(f"{source}: effective-to {effective_to} is before effective-from "
                           f"{effective_from}")
    model, entries, file_version = PARSERS[system](data, source)
    if entries == 0:
        raise CodeSetError(f"{source}: no {system} entries found")
    version = version or file_version or effective_from.isoformat()
    sha256 = hashlib.sha256(data).hexdigest()
    create_coding_schema(engine)
    with engine.begin() as conn:
        existing = conn.execute(select(codeset_release).where(
            codeset_release.c.system == system,
            codeset_release.c.version == version)).first()
        if existing is not None:
            if existing.sha256 != sha256:
                raise CodeSetError(f"{source}: {system} version {version!r} is already imported "
                                   f"from another file ({existing.source}); give another "
                                   "version")
            return _release(existing)
        overlapping = [r for r in _rows(conn, system)
                       if _overlaps(r, effective_from, effective_to)]
        if overlapping:
            other = overlapping[0]
            raise CodeSetError(f"{source}: {system} {effective_from}..{effective_to or 'open'} "
                               f"overlaps release {other.version!r} "
                               f"({other.effective_from}..{other.effective_to or 'open'})")
        pk = conn.execute(insert(codeset_release).values(
            system=system, version=version, effective_from=effective_from,
            effective_to=effective_to, source=source[:255], sha256=sha256, entries=entries,
            content=gzip.compress(data, 6), imported_at=datetime.now(UTC),
            imported_by=imported_by[:255])).inserted_primary_key
        assert pk is not None
        row = conn.execute(select(codeset_release).where(
            codeset_release.c.pk == pk[0])).one()
    _MODELS[sha256] = model
    return _release(row)


def ensure_packaged(engine: Engine) -> Release | None:
    """Import the ICD-10-CM release that ships with the package unless one is there."""
    create_coding_schema(engine)
    if releases(engine, "icd10cm"):
        return None
    data = packaged_icd10cm()
    start, end = PACKAGED_ICD10CM_DATES
    package, name = PACKAGED_ICD10CM
    return import_release(engine, data, system="icd10cm", source=f"{package}/{name}",
                          effective_from=start, effective_to=end, version="2026-04-01",
                          imported_by="chartkeeper (packaged)")


def packaged_icd10cm() -> bytes:
    """The tabular file simple-icd-10-cm ships, read without importing the package: its
    import parses the whole file into module globals, which we never use."""
    spec = importlib.util.find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        raise NoRelease("the simple-icd-10-cm package is not installed: reinstall Chartkeeper")
    package, name = PACKAGED_ICD10CM
    folder = Path(next(iter(spec.submodule_search_locations))) / package.split(".")[1]
    return (folder / name).read_bytes()


def releases(engine: Engine, system: str | None = None) -> list[Release]:
    create_coding_schema(engine)
    with engine.connect() as conn:
        rows = _rows(conn, system)
    return [_release(row) for row in rows]


def release_for(engine: Engine, system: str, on: date | None = None) -> Release:
    """The release in force on ``on``; without a date, the newest."""
    found = releases(engine, system)
    if not found:
        raise NoRelease(f"no {system} release is imported; import the official file with "
                        f"`chartkeeper codes import --system {system} FILE`")
    if on is None:
        return max(found, key=lambda r: r.effective_from)
    for release in found:
        if release.covers(on):
            return release
    spans = ", ".join(f"{r.version} ({r.effective_from}..{r.effective_to or 'open'})"
                      for r in sorted(found, key=lambda r: r.effective_from))
    raise NoRelease(f"no {system} release is in force on {on.isoformat()}: imported are "
                    f"{spans}; import the release for that date")


_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def model(engine: Engine, release: Release) -> Any:
    """The parsed release, built once per process."""
    with _LOCK:
        if release.sha256 in _MODELS:
            return _MODELS[release.sha256]
        with engine.connect() as conn:
            content = conn.execute(select(codeset_release.c.content).where(
                codeset_release.c.pk == release.pk)).scalar_one()
        parsed, _, _ = PARSERS[release.system](gzip.decompress(content), release.source)
        _MODELS[release.sha256] = parsed
        return parsed


def _rows(conn: Any, system: str | None) -> list[Any]:
    query = select(*[c for c in codeset_release.c if c.name != "content"]).order_by(
        codeset_release.c.system, codeset_release.c.effective_from)
    if system is not None:
        query = query.where(codeset_release.c.system == system)
    return list(conn.execute(query))


def _overlaps(row: Any, start: date, end: date | None) -> bool:
    return (row.effective_to is None or start <= row.effective_to) and \
        (end is None or row.effective_from <= end)


def _release(row: Any) -> Release:
    imported_at = row.imported_at
    if imported_at.tzinfo is None:
        imported_at = imported_at.replace(tzinfo=UTC)
    return Release(row.pk, row.system, row.version, row.effective_from, row.effective_to,
                   row.source, row.sha256, row.entries, imported_at, row.imported_by)
