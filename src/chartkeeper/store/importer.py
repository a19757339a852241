"""Load FHIR files into the store: single resources, Bundles and NDJSON, with a summary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from chartkeeper.store.bundle import BundleProcessor
from chartkeeper.store.errors import InvalidRequest, StoreError
from chartkeeper.store.service import Store, Txn, validate_for_store

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


def find_files(paths: list[Path]) -> list[Path]:
    """Expand directories into the .json / .ndjson files inside them, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix in (".json", ".ndjson")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


def _no_get(_txn: Txn, url: str, _method: str) -> dict[str, Any]:
    raise InvalidRequest(f"GET entries ({url}) are not allowed in an import")


class Importer:
    """Imports files; each Bundle or NDJSON chunk lands whole or not at all."""

    def __init__(self, store: Store, progress: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.progress = progress or (lambda _n: None)
        self.bundles = BundleProcessor(store, _no_get)

    def import_file(self, path: Path) -> ImportSummary:
        summary = ImportSummary(files=1)
        try:
            if path.suffix == ".ndjson":
                self._import_ndjson(path, summary)
            else:
                raw = path.read_bytes()
                try:
                    document = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise InvalidRequest(f"not valid JSON: {exc}") from exc
                self._import_document(document, summary)
        except StoreError as exc:
            summary.rejected += 1
            summary.problems.append(f"{path.name}: {exc.diagnostics}")
        return summary

    def _import_document(self, document: Any, summary: ImportSummary) -> None:
        if not isinstance(document, dict):
            raise InvalidRequest("the file holds no FHIR resource (not a JSON object)")
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
        self._store_resources([document], summary)

    def _store_resources(self, resources: list[Any], summary: ImportSummary) -> None:
        valid: list[dict[str, Any]] = []
        with_ids: list[dict[str, Any]] = []
        without_ids: list[dict[str, Any]] = []
        for resource in resources:
            try:
                valid.append(validate_for_store(resource, None))
            except StoreError as exc:
                summary.rejected += 1
                summary.problems.append(exc.diagnostics)
        for resource in valid:
            (with_ids if resource.get("id") else without_ids).append(resource)
        with self.store.write() as txn:
            created, updated = txn.bulk_upsert(with_ids)
            for resource in without_ids:
                txn.create(resource, validated=True)
                created += 1
        summary.created += created
        summary.updated += updated
        self.progress(len(resources))

    def _import_ndjson(self, path: Path, summary: ImportSummary) -> None:
        for chunk in _ndjson_chunks(path, summary):
            self._store_resources(chunk, summary)


def _ndjson_chunks(path: Path, summary: ImportSummary) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                chunk.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                summary.rejected += 1
                summary.problems.append(f"{path.name} line {number}: not valid JSON: {exc}")
                continue
            if len(chunk) >= NDJSON_CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
