"""Load FHIR files into the store: single resources, Bundles and NDJSON, with a summary.

Preparing resources (parsing, validating, resolving a bundle's ``urn:uuid`` references,
indexing, serializing) is CPU work that needs no database, so with ``workers`` > 0 it runs in
worker processes while this process writes: on two cores the writer never waits for Python.
Each Bundle and each NDJSON chunk lands whole or not at all.

Every unit (a .json file, or a chunk of an .ndjson file) that writes anything writes, in the
same transaction, one ``Provenance`` naming what it created or changed, the file, and the
SHA-256 of the unit's bytes. The Provenance's id is derived from that digest, so it is also
the import log: a unit whose Provenance is already stored was imported before, and importing
the same file again changes nothing (a create-only Bundle would otherwise be created twice).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from chartkeeper.store.bundle import BundleProcessor, prepare_transaction
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound, StoreError
from chartkeeper.store.service import (
    PreparedResource,
    Resource,
    Store,
    Txn,
    new_id,
    now_instant,
    prepare_new,
    validate_for_store,
)

NDJSON_CHUNK = 1000
SHA256_SYSTEM = "urn:chartkeeper:sha256"
# The Provenance of an imported unit has the id uuid5(IMPORT_NAMESPACE, its SHA-256).
IMPORT_NAMESPACE = uuid.UUID("6f1c3e0a-9d5b-5c1e-8f39-2b7c0d4a1e55")
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    rejected: int = 0
    files: int = 0
    skipped: int = 0  # files or NDJSON chunks imported before, left as they are
    problems: list[str] = field(default_factory=list)

    def add(self, other: ImportSummary) -> None:
        self.created += other.created
        self.updated += other.updated
        self.rejected += other.rejected
        self.files += other.files
        self.skipped += other.skipped
        self.problems.extend(other.problems)


@dataclass(frozen=True)
class Source:
    """Where a unit came from: the file's name, which lines (NDJSON), its bytes' SHA-256."""

    name: str
    digest: str
    lines: str | None = None

    @property
    def provenance_id(self) -> str:
        return str(uuid.uuid5(IMPORT_NAMESPACE, self.digest))


def import_provenance(source: Source, targets: list[str], recorded: str) -> Resource:
    """The Provenance of one imported unit: what it wrote (versioned references), when, by
    which agent, from which file (by name and SHA-256)."""
    display = f"FHIR file {source.name}" + (f" lines {source.lines}" if source.lines else "")
    return {
        "resourceType": "Provenance", "id": source.provenance_id,
        "target": [{"reference": ref} for ref in targets],
        "recorded": recorded,
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "UPDATE"}]},
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "assembler"}]},
                   "who": {"display": "chartkeeper import"}}],
        "entity": [{"role": "source", "what": {
            "identifier": {"system": SHA256_SYSTEM, "value": source.digest},
            "display": display}}],
    }


def already_imported(txn: Txn, source: Source) -> bool:
    try:
        txn.read("Provenance", source.provenance_id)
    except (NotFound, Gone):
        return False
    return True


def _written(entries: list[dict[str, Any]]) -> list[str]:
    """Versioned references of what a Bundle's response entries say was written."""
    return [str(e["response"]["location"]) for e in entries
            if str(e.get("response", {}).get("status", "")).startswith(("200", "201"))
            and e["response"].get("location")]


def find_files(paths: list[Path], suffixes: tuple[str, ...] = (".json", ".ndjson")
               ) -> list[Path]:
    """Expand directories into the files inside them with one of ``suffixes``, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix in suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


def _no_get(_txn: Txn, url: str, _method: str) -> dict[str, Any]:
    raise InvalidRequest(f"GET entries ({url}) are not allowed in an import")


# ----------------------------------------------------------------------------- preparation
@dataclass
class Unit:
    """What a worker hands back to the writer: the kind of work, its source, its payload
    (prepared resources or a parsed document) and the problems found on the way."""

    kind: str  # "prepared" | "upsert" | "document" | "error"
    source: Source
    payload: Any = None
    problems: list[str] = field(default_factory=list)


def prepare_json_file(path: str) -> Unit:
    """Parse a .json file; prepare it fully (its Provenance too) when it is a create-only
    transaction."""
    name = Path(path).name
    raw = Path(path).read_bytes()
    source = Source(name, hashlib.sha256(raw).hexdigest())
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Unit("error", source, problems=[f"{name}: not valid JSON: {exc}"])
    if not isinstance(document, dict):
        return Unit("error", source, problems=[f"{name}: the file holds no FHIR resource "
                                               "(not a JSON object)"])
    if document.get("resourceType") == "Bundle" and document.get("type") == "transaction":
        try:
            prepared = prepare_transaction(document)
        except StoreError as exc:
            return Unit("error", source, problems=[f"{name}: {exc.diagnostics}"])
        if prepared is not None:
            if prepared:
                recorded = prepared[0].last_updated
                targets = [f"{p.resource_type}/{p.resource_id}/_history/1" for p in prepared]
                prepared.append(prepare_new(import_provenance(source, targets, recorded),
                                            recorded))
            return Unit("prepared", source, prepared)
    return Unit("document", source, document)


def prepare_ndjson_lines(name: str, first_line: int, lines: list[bytes]) -> Unit:
    """Parse and validate one chunk of NDJSON lines; bad lines become problems."""
    prepared: list[PreparedResource] = []
    problems: list[str] = []
    last_updated = now_instant()
    digest = hashlib.sha256(b"".join(lines)).hexdigest()
    source = Source(name, digest, f"{first_line}-{first_line + len(lines) - 1}")
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{name} line {number}: not valid JSON: {exc}")
            continue
        try:
            resource = validate_for_store(resource, None)
            if not resource.get("id"):
                resource = dict(resource, id=new_id())
            prepared.append(prepare_new(resource, last_updated))
        except StoreError as exc:
            problems.append(f"{name} line {number}: {exc.diagnostics}")
    return Unit("upsert", source, prepared, problems)


def _ndjson_chunks(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    chunk: list[bytes] = []
    first = 1
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not chunk:
                first = number
            chunk.append(line)
            if len(chunk) >= NDJSON_CHUNK:
                yield first, chunk
                chunk = []
    if chunk:
        yield first, chunk


class Importer:
    """Imports files; each Bundle or NDJSON chunk lands whole or not at all."""

    def __init__(self, store: Store, progress: Callable[[int], None] | None = None,
                 workers: int = 0) -> None:
        self.store = store
        self.progress = progress or (lambda _n: None)
        self.workers = workers

    def import_file(self, path: Path) -> ImportSummary:
        return self.import_files([path])

    def import_files(self, paths: list[Path],
                     on_file: Callable[[str], None] | None = None) -> ImportSummary:
        summary = ImportSummary(files=len(paths))
        seen: set[str] = set()
        for unit in self._units(paths):
            if on_file is not None and unit.source.name not in seen:
                seen.add(unit.source.name)
                on_file(unit.source.name)
            self._apply(unit, summary)
        return summary

    # The writer's side: one write transaction per unit.
    def _apply(self, unit: Unit, summary: ImportSummary) -> None:
        name = unit.source.name
        summary.rejected += len(unit.problems)
        summary.problems.extend(unit.problems)
        try:
            if unit.kind == "prepared":
                with self.store.write() as txn:
                    if already_imported(txn, unit.source):
                        summary.skipped += 1
                        return
                    txn.insert_prepared(unit.payload)
                summary.created += max(len(unit.payload) - 1, 0)  # less the Provenance
                self.progress(len(unit.payload))
            elif unit.kind == "upsert":
                with self.store.write() as txn:
                    if already_imported(txn, unit.source):
                        summary.skipped += 1
                        return
                    done = txn.upsert_prepared(unit.payload)
                    self._record(txn, unit.source, done.created + done.updated)
                summary.created += len(done.created)
                summary.updated += len(done.updated)
                self.progress(len(unit.payload))
            elif unit.kind == "document":
                self._import_document(unit.payload, unit.source, summary)
        except StoreError as exc:
            summary.rejected += 1
            summary.problems.append(f"{name}: {exc.diagnostics}")

    @staticmethod
    def _record(txn: Txn, source: Source, targets: list[str]) -> None:
        """Write the unit's Provenance, when it wrote anything (inside its transaction)."""
        if not targets:
            return
        recorded = now_instant()
        provenance = validate_for_store(import_provenance(source, targets, recorded), None)
        txn.upsert_prepared([prepare_new(provenance, recorded)])

    def _import_document(self, document: dict[str, Any], source: Source,
                         summary: ImportSummary) -> None:
        with self.store.read() as txn:
            if already_imported(txn, source):
                summary.skipped += 1
                return
        if document.get("resourceType") == "Bundle" and document.get("type") in (
                "transaction", "batch"):
            processor = BundleProcessor(
                self.store, _no_get,
                before_commit=lambda txn, entries: self._record(txn, source, _written(entries)))
            response = processor.process(document)
            entries = response.get("entry", [])
            for entry in entries:
                status = entry.get("response", {}).get("status", "")
                if status.startswith("201"):
                    summary.created += 1
                elif status.startswith("200"):
                    summary.updated += 1
                elif not status.startswith("2"):
                    summary.rejected += 1
                    summary.problems.append(str(entry["response"].get("outcome", status)))
            if document["type"] == "batch":  # each entry committed on its own
                with self.store.write() as txn:
                    self._record(txn, source, _written(entries))
            self.progress(len(entries))
            return
        resource = validate_for_store(document, None)
        with self.store.write() as txn:
            if resource.get("id"):
                done = txn.bulk_upsert([resource])
                written = done.created + done.updated
                summary.created += len(done.created)
                summary.updated += len(done.updated)
            else:
                written = [txn.create(resource, validated=True).location]
                summary.created += 1
            self._record(txn, source, written)
        self.progress(1)

    # The preparing side: in this process, or in workers with a bounded queue.
    def _tasks(self, paths: list[Path]) -> Iterator[tuple[Callable[..., Unit], tuple[Any, ...]]]:
        for path in paths:
            if path.suffix == ".ndjson":
                for first, lines in _ndjson_chunks(path):
                    yield prepare_ndjson_lines, (path.name, first, lines)
            else:
                yield prepare_json_file, (str(path),)

    def _units(self, paths: list[Path]) -> Iterator[Unit]:
        if self.workers <= 0:
            for function, args in self._tasks(paths):
                yield function(*args)
            return
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            pending: deque[Future[Unit]] = deque()
            for function, args in self._tasks(paths):
                pending.append(pool.submit(function, *args))
                if len(pending) > 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
