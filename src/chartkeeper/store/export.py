"""FHIR Bulk Data $export: asynchronous jobs that write one NDJSON file per resource type."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import false, select

from chartkeeper.store import schema
from chartkeeper.store.errors import InvalidRequest, NotFound
from chartkeeper.store.service import Store, compartment_members, normalize_instant, now_instant

NDJSON_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")


log = logging.getLogger(__name__)


@dataclass
class ExportJob:
    id: str
    level: str  # system | patient | group
    request_url: str
    types: list[str] | None
    since: str | None
    group_id: str | None
    directory: Path
    transaction_time: str = field(default_factory=now_instant)
    status: str = "in-progress"  # in-progress | complete | error | cancelled
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    owner: str | None = None  # who started it: only they may poll, fetch or cancel
    # Which stored resources (JSON text) may leave in the export; None keeps all.
    keep: Callable[[str], bool] | None = None
    withheld: int = 0


class ExportManager:
    """Runs $export jobs in background threads; files live under ``<home>/exports/<job>``."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root
        self.jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()

    def start(self, level: str, request_url: str, types: list[str] | None, since: str | None,
              output_format: str | None, group_id: str | None = None, *,
              owner: str | None = None, keep: Callable[[str], bool] | None = None
              ) -> ExportJob:
        if output_format is not None and output_format not in NDJSON_FORMATS:
            raise InvalidRequest(f"_outputFormat '{output_format}' is not supported; use "
                                 "application/fhir+ndjson")
        if since is not None:
            since = normalize_instant(since)
        if group_id is not None:
            with self.store.read() as txn:
                txn.read("Group", group_id)
        job_id = uuid.uuid4().hex
        job = ExportJob(job_id, level, request_url, types, since, group_id, self.root / job_id,
                        owner=owner, keep=keep)
        with self._lock:
            self.jobs[job_id] = job
        thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                  name=f"export-{job_id}")
        thread.start()
        return job

    def get(self, job_id: str) -> ExportJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"No export job '{job_id}'")
        return job

    def cancel(self, job_id: str) -> None:
        job = self.get(job_id)
        job.cancel.set()
        job.status = "cancelled"
        shutil.rmtree(job.directory, ignore_errors=True)
        with self._lock:
            self.jobs.pop(job_id, None)

    def file_path(self, job_id: str, name: str) -> Path:
        job = self.get(job_id)
        if job.status != "complete" or "/" in name or not name.endswith(".ndjson"):
            raise NotFound(f"No file '{name}' in export '{job_id}'")
        path = job.directory / name
        if not path.is_file():
            raise NotFound(f"No file '{name}' in export '{job_id}'")
        return path

    def _patient_ids(self, job: ExportJob) -> list[str] | None:
        if job.level == "system":
            return None
        r = schema.resource
        with self.store.read() as txn:
            if job.level == "group":
                assert job.group_id is not None
                group = txn.read("Group", job.group_id)
                ids = []
                for member in group.get("member", []):
                    ref = member.get("entity", {}).get("reference", "")
                    if ref.startswith("Patient/"):
                        ids.append(ref.split("/")[1])
                return ids
            return list(txn.conn.execute(
                select(r.c.resource_id).where(r.c.resource_type == "Patient",
                                              r.c.deleted == false())).scalars())

    def _run(self, job: ExportJob) -> None:
        try:
            job.directory.mkdir(parents=True, exist_ok=True)
            patients = self._patient_ids(job)
            members = compartment_members("Patient")
            r = schema.resource
            ref = schema.idx_reference
            counts: dict[str, int] = {}
            handles: dict[str, Any] = {}
            with self.store.read() as txn:
                conds = [r.c.deleted == false()]
                if job.types:
                    conds.append(r.c.resource_type.in_(job.types))
                if job.since:
                    conds.append(r.c.last_updated >= job.since)
                if patients is None:
                    stmt = select(r.c.resource_type, r.c.content).where(*conds).order_by(r.c.pk)
                    rows = txn.conn.execution_options(yield_per=1000).execute(stmt)
                    self._write_rows(job, rows, counts, handles)
                else:
                    compartment_types = ["Patient", *members]
                    type_filter = job.types or compartment_types
                    seen: set[int] = set()
                    for start in range(0, len(patients), 200):
                        chunk = patients[start:start + 200]
                        in_compartment = select(ref.c.resource_pk).where(
                            ref.c.target_type == "Patient", ref.c.target_id.in_(chunk))
                        stmt = select(r.c.pk, r.c.resource_type, r.c.content).where(
                            *conds, r.c.resource_type.in_(type_filter),
                            (r.c.pk.in_(in_compartment)) | (
                                (r.c.resource_type == "Patient") & r.c.resource_id.in_(chunk)),
                        ).order_by(r.c.pk)
                        fresh = [row for row in txn.conn.execute(stmt) if row.pk not in seen]
                        seen.update(row.pk for row in fresh)
                        self._write_rows(job, ((row.resource_type, row.content) for row in fresh),
                                         counts, handles)
                        job.progress = f"{min(start + 200, len(patients))}/{len(patients)} patients"
            for handle in handles.values():
                handle.close()
            if job.cancel.is_set():
                return
            job.output = [
                {"type": rtype, "count": n, "file": f"{rtype}.ndjson"}
                for rtype, n in sorted(counts.items())
            ]
            job.status = "complete"
            job.progress = "complete"
        except Exception as exc:  # a failed job reports its error on the status URL
            job.status = "error"
            job.errors.append(f"{type(exc).__name__}: {exc}")
            log.error("export %s failed: %s", job.id, type(exc).__name__)

    def _write_rows(self, job: ExportJob, rows: Any, counts: dict[str, int],
                    handles: dict[str, Any]) -> None:
        for rtype, content in rows:
            if job.cancel.is_set():
                return
            if job.keep is not None and not job.keep(content):
                job.withheld += 1
                continue
            handle = handles.get(rtype)
            if handle is None:
                handle = handles[rtype] = open(job.directory / f"{rtype}.ndjson", "w",
                                               encoding="utf-8")
            handle.write(content)
            handle.write("\n")
            counts[rtype] = counts.get(rtype, 0) + 1
            if sum(counts.values()) % 1000 == 0:
                job.progress = f"{sum(counts.values())} resources"


def check_types(types: list[str] | None, known: frozenset[str]) -> None:
    for t in types or []:
        if t not in known:
            raise InvalidRequest(f"Unknown resource type '{t}' in _type")
