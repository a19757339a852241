"""Long-running work started from a page (release packets, analyses): run in a worker thread,
its progress shown in the page, which polls ``/jobs/{id}`` with htmx until it is done.

Jobs live in the serving process's memory: a restart forgets them (the work they did is in
the store; only the progress bar is lost). Only the user who started a job may see it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from chartkeeper.api.auth import access_of
from chartkeeper.security.access import Forbidden
from chartkeeper.store.errors import NotFound, StoreError
from chartkeeper.web.pages import PAGE, render

router = APIRouter(include_in_schema=False)
KEEP_SECONDS = 3600
Progress = Callable[..., None]  # (done, total[, note])


@dataclass
class Job:
    id: str
    owner: str
    title: str
    done: int = 0
    total: int = 0
    status: str = "running"  # running | done | failed
    message: str = ""
    note: str = ""  # progress in words, when there is no count to show
    result_href: str = ""
    result_label: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        return int(100 * self.done / self.total) if self.total else 0


class JobRunner:
    """A few worker threads and the jobs they run, by id."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, owner: str, title: str,
              work: Callable[[Progress], tuple[str, str]]) -> Job:
        """Run ``work(progress)`` in a thread; it returns (result link, its label)."""
        job = Job(secrets.token_urlsafe(12), owner, title)
        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job

        def progress(done: int, total: int, note: str = "") -> None:
            job.done, job.total, job.note = done, total, note

        def run() -> None:
            try:
                job.result_href, job.result_label = work(progress)
                job.status = "done"
            except StoreError as exc:
                job.status, job.message = "failed", exc.diagnostics
            except Exception as exc:  # shown to the user by kind only: no PHI in messages
                job.status, job.message = "failed", f"the work failed ({type(exc).__name__})"

        self._pool.submit(run)
        return job

    def get(self, job_id: str, owner: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound("no such job (it may have finished more than an hour ago)")
        if job.owner != owner:
            raise Forbidden("this job was started by someone else")
        return job

    def _forget_old(self) -> None:
        now = time.monotonic()
        for job_id in [j.id for j in self._jobs.values() if now - j.started > KEEP_SECONDS
                       and j.status != "running"]:
            del self._jobs[job_id]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def runner_of(request: Request) -> JobRunner:
    runner: JobRunner | None = getattr(request.app.state, "jobs", None)
    if runner is None:
        runner = request.app.state.jobs = JobRunner()
    return runner


@router.get("/jobs/{job_id}", dependencies=[Depends(PAGE)])
def job_status(request: Request, job_id: str) -> Response:
    """The job's progress: a fragment for htmx (polling while it runs), or a page."""
    principal = access_of(request).who()
    job = runner_of(request).get(job_id, principal.user_id)
    context: dict[str, Any] = {"job": job}
    if request.headers.get("hx-request"):
        return render(request, "job.html", context)
    return render(request, "job_page.html", context)
