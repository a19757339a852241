"""Import files of any kind the product reads, by suffix: FHIR JSON / Bundles / NDJSON
(``store.importer``), HL7 v2 ``.hl7`` files and C-CDA ``.xml`` documents (this slice). The
command line and the workbench's import page both use it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from chartkeeper.ingest.ccda_service import import_ccda_file
from chartkeeper.ingest.service import create_ingest_schema, import_hl7_file
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, ImportSummary

SUFFIXES = (".json", ".ndjson", ".hl7", ".xml")


def import_any(store: Store, files: list[Path], *, workers: int = 0,
               on_progress: Callable[[int], None] | None = None,
               on_file: Callable[[str], None] | None = None) -> ImportSummary:
    """Import ``files``; ``on_progress(n)`` counts resources written, ``on_file(name)`` is
    called as each file is reached. Each file, chunk, message or document lands whole or not
    at all; what was imported before changes nothing."""
    count = on_progress or (lambda _n: None)
    reached = on_file or (lambda _name: None)
    importer = Importer(store, count, workers=workers)
    total = importer.import_files([f for f in files if f.suffix not in (".hl7", ".xml")],
                                  reached)
    if any(f.suffix in (".hl7", ".xml") for f in files):
        create_ingest_schema(store.engine)
    for suffix, import_one in ((".hl7", import_hl7_file), (".xml", import_ccda_file)):
        for path in (f for f in files if f.suffix == suffix):
            before = total.created + total.updated
            import_one(store, path, total)
            count(total.created + total.updated - before)
            reached(path.name)
    return total
