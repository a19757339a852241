"""Load FHIR files into the store: single resources, Bundles and NDJSON, with a summary.

Preparing resources (parsing, validating, resolving a bundle's ``urn:uuid`` references,
indexing, serializing) is CPU work that needs no database, so with ``workers`` > 0 it runs in
worker processes while this process writes: on two cores the writer never waits for Python.
Each Bundle and each NDJSON chunk lands whole or not at all.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from chartkeeper.store.bundle import BundleProcessor, prepare_transaction
from chartkeeper.store.errors import InvalidRequest, StoreError
from chartkeeper.store.service import (
    PreparedResource,
    Store,
    Txn,
    new_id,
    now_instant,
    prepare_new,
    validate_for_store,
)

NDJSON_CHUNK = 1000


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    rejected: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: ImportSummary) -> None:
        self.created += other.created
        self.updated += other.updated
        self.rejected += other.rejected
        self.files += other.files
        self.problems.extend(other.problems)


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
# Units are what a worker hands back to the writer: (kind, file name, payload, problems).
Unit = tuple[str, str, Any, list[str]]


def prepare_json_file(path: str) -> Unit:
    """Parse a .json file; prepare it fully when it is a create-only transaction."""
    name = Path(path).name
    try:
        document = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        return ("error", name, None, [f"{name}: not valid JSON: {exc}"])
    if not isinstance(document, dict):
        return ("error", name, None, [f"{name}: the file holds no FHIR resource "
                                      "(not a JSON object)"])
    if document.get("resourceType") == "Bundle" and document.get("type") == "transaction":
        try:
            prepared = prepare_transaction(document)
        except StoreError as exc:
            return ("error", name, None, [f"{name}: {exc.diagnostics}"])
        if prepared is not None:
            return ("prepared", name, prepared, [])
    return ("document", name, document, [])


def prepare_ndjson_lines(name: str, first_line: int, lines: list[bytes]) -> Unit:
    """Parse and validate one chunk of NDJSON lines; bad lines become problems."""
    prepared: list[PreparedResource] = []
    problems: list[str] = []
    last_updated = now_instant()
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
    return ("upsert", name, prepared, problems)


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
        self.bundles = BundleProcessor(store, _no_get)
        self.workers = workers

    def import_file(self, path: Path) -> ImportSummary:
        return self.import_files([path])

    def import_files(self, paths: list[Path],
                     on_file: Callable[[str], None] | None = None) -> ImportSummary:
        summary = ImportSummary(files=len(paths))
        seen: set[str] = set()
        for unit in self._units(paths):
            if on_file is not None and unit[1] not in seen:
                seen.add(unit[1])
                on_file(unit[1])
            self._apply(unit, summary)
        return summary

    # The writer's side: one write transaction per unit.
    def _apply(self, unit: Unit, summary: ImportSummary) -> None:
        kind, name, payload, problems = unit
        summary.rejected += len(problems)
        summary.problems.extend(problems)
        try:
            if kind == "prepared":
                with self.store.write() as txn:
                    txn.insert_prepared(payload)
                summary.created += len(payload)
                self.progress(len(payload))
            elif kind == "upsert":
                with self.store.write() as txn:
                    created, updated = txn.upsert_prepared(payload)
                summary.created += created
                summary.updated += updated
                self.progress(len(payload))
            elif kind == "document":
                self._import_document(payload, summary)
        except StoreError as exc:
            summary.rejected += 1
            summary.problems.append(f"{name}: {exc.diagnostics}")

    def _import_document(self, document: dict[str, Any], summary: ImportSummary) -> None:
        if document.get("resourceType") == "Bundle" and document.get("type") in (
                "transaction", "batch"):
            response = self.bundles.process(document)
            for entry in response.get("entry", []):
                status = entry.get("response", {}).get("status", "")
                if status.startswith("201"):
                    summary.created += 1
                elif status.startswith("200"):
                    summary.updated += 1
                elif not status.startswith("2"):
                    summary.rejected += 1
                    summary.problems.append(str(entry["response"].get("outcome", status)))
            self.progress(len(response.get("entry", [])))
            return
        resource = validate_for_store(document, None)
        with self.store.write() as txn:
            if resource.get("id"):
                created, updated = txn.bulk_upsert([resource])
            else:
                txn.create(resource, validated=True)
                created, updated = 1, 0
        summary.created += created
        summary.updated += updated
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
