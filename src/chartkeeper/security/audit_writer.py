"""Group commit for the audit trail: ``AuditWriter`` appends what callers submit, in batches."""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from chartkeeper.security.audit_records import AuditAction, AuditRecord, AuditWriterClosed

if TYPE_CHECKING:
    from chartkeeper.security.audit import AuditTrail

# The trail's logger, as before the writer had a module of its own: log settings keep working.
_log = logging.getLogger("chartkeeper.security.audit")

# The database as a whole is unusable (down, unreachable, locked past the busy timeout, no
# pooled connection free), rather than one record being bad: retrying the rest of a failed
# batch one by one would only wait that much longer for the same answer.
_DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


@dataclass(frozen=True)
class _Submission:
    record: AuditRecord
    future: Future[int]


# Entries that record looking, not changing: committed before the response leaves, flushed to
# disk with the next durable commit or checkpoint. Everything else (changes, exports,
# disclosures, sign-ins, break-the-glass, privilege changes) waits for the disk.
RELAXED_ACTIONS = frozenset({AuditAction.READ, AuditAction.SEARCH})


def needs_fsync(records: Iterable[AuditRecord]) -> bool:
    return any(record.action not in RELAXED_ACTIONS for record in records)


class AuditWriter:
    """Group commit for the audit trail: one thread appends what callers submit, in batches.

    Each API request can then record its own entry and wait until it is durable, and the
    requests that arrive while a transaction commits share the next one: one lock, one INSERT
    and one fsync for up to ``max_batch`` entries instead of one each. The thread takes the
    first queued record, drains whatever else is queued, and writes the batch with
    ``AuditTrail.append_many``. If the batch fails, each of its records is retried alone
    once, so one bad record fails only its own caller; when a retry finds the database
    unavailable, the rest of the batch fails with that error without more attempts.

    Any number of writers (uvicorn workers, app instances in one process, the CLI) may append
    to the same database: the trail's lock and head read keep one chain. Create the writer
    after the server forks its workers (in the app's lifespan), never before: a thread does
    not survive ``fork``.

    Every ``checkpoint_every`` entries it has appended, the writer signs a checkpoint of the
    head (``None``: never). A failed checkpoint is logged and tried again after the next batch;
    the entries it would have covered are already committed.

    Every ``index_every`` seconds (``None``: never) it catches the patient index up with
    whatever entries this or any other writer appended (``AuditTrail.index_patients``).
    """

    def __init__(self, trail: AuditTrail, *, max_batch: int = 512,
                 checkpoint_every: int | None = 10_000, index_every: float | None = 1.0,
                 thread_name: str = "chartkeeper-audit-writer") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1 or None, got {checkpoint_every}")
        if index_every is not None and index_every <= 0:
            raise ValueError(f"index_every must be positive or None, got {index_every}")
        self.trail = trail
        self.max_batch = max_batch
        self.checkpoint_every = checkpoint_every
        self.index_every = index_every
        # Written by the writer thread only. A batch retried entry by entry counts one
        # transaction per entry that landed.
        self.batches_written = 0
        self.entries_written = 0
        self.checkpoints_written = 0
        self._since_checkpoint = 0
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()
        # Flush at interpreter exit too: daemon threads are stopped without finishing.
        atexit.register(self.close)

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, record: AuditRecord) -> Future[int]:
        """Queue ``record``; the future gives its seq once committed, or the write's error.

        A record whose details are not JSON is refused here (``InvalidAuditRecord``), and so is
        any record once the writer is closed (``AuditWriterClosed``). The future is running
        from the start, so it cannot be cancelled: an access that happened is audited even if
        the request that made it is abandoned. Callers that must fail closed wait on it.
        """
        record.details_json()
        future: Future[int] = Future()
        future.set_running_or_notify_cancel()
        with self._state:
            if self._closed:
                raise AuditWriterClosed(
                    f"the audit writer is closed; {record.action.value} by "
                    f"{record.user_id!r} was not recorded")
            self._queue.put(_Submission(record, future))
        return future

    def write(self, record: AuditRecord, timeout: float | None = None) -> int:
        """Submit ``record`` and wait until it is committed; return its seq."""
        return self.submit(record).result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write everything already submitted, then stop the thread. Idempotent.

        Raises ``TimeoutError`` if the queued entries are not all written within ``timeout``
        seconds; the thread keeps writing them.
        """
        with self._state:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        atexit.unregister(self.close)
        if threading.current_thread() is self._thread:
            return  # called from a future's callback: the thread stops after this batch
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(
                f"the audit writer did not finish its queued entries within {timeout} s; "
                "it goes on writing them")

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        batch: list[_Submission] = []
        next_index = None if self.index_every is None else time.monotonic() + self.index_every
        try:
            stopping = False
            while not stopping:
                if next_index is not None and time.monotonic() >= next_index:
                    self._index_patients()
                    next_index = time.monotonic() + (self.index_every or 0)
                try:
                    first = self._queue.get(timeout=None if next_index is None else
                                            max(0.0, next_index - time.monotonic()))
                except queue.Empty:
                    continue
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        following = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if following is None:
                        stopping = True
                        break
                    batch.append(following)
                self._write(batch)
                batch = []
                self._checkpoint_if_due()
        finally:
            # Reached with work left only if this thread failed unexpectedly: refuse new
            # records and answer the waiting ones rather than leave them blocked for ever.
            with self._state:
                self._closed = True
            stopped = AuditWriterClosed("the audit writer thread stopped; entry not recorded")
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(stopped)
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    left.future.set_exception(stopped)

    def _write(self, batch: list[_Submission]) -> None:
        try:
            seqs = self.trail.append_many(None, [s.record for s in batch],
                                          durable=needs_fsync(s.record for s in batch))
        except Exception as exc:
            _log.warning("audit batch of %d entries failed (%s: %s); retrying each alone",
                         len(batch), type(exc).__name__, exc)
            self._write_each_alone(batch)
            return
        self.batches_written += 1
        self.entries_written += len(seqs)
        self._since_checkpoint += len(seqs)
        for submission, seq in zip(batch, seqs, strict=True):
            submission.future.set_result(seq)

    def _write_each_alone(self, batch: list[_Submission]) -> None:
        unavailable: Exception | None = None
        for submission in batch:
            if unavailable is not None:
                submission.future.set_exception(unavailable)
                continue
            try:
                [seq] = self.trail.append_many(None, [submission.record],
                                               durable=needs_fsync([submission.record]))
            except Exception as exc:
                if isinstance(exc, _DATABASE_UNAVAILABLE):
                    unavailable = exc
                submission.future.set_exception(exc)
                continue
            self.batches_written += 1
            self.entries_written += 1
            self._since_checkpoint += 1
            submission.future.set_result(seq)

    def _index_patients(self) -> None:
        try:
            self.trail.index_patients()
        except Exception as exc:  # the entries are safe; reports catch the index up too
            _log.warning("audit patient index catch-up failed (%s); trying again later",
                         type(exc).__name__)

    def _checkpoint_if_due(self) -> None:
        if self.checkpoint_every is None or self._since_checkpoint < self.checkpoint_every:
            return
        try:
            self.trail.checkpoint()
        except Exception:
            _log.exception("audit checkpoint after %d entries failed; trying again after the "
                           "next batch", self._since_checkpoint)
            return
        self.checkpoints_written += 1
        self._since_checkpoint = 0


async def awrite(writer: AuditWriter, record: AuditRecord) -> int:
    """Submit ``record`` to ``writer`` and await its seq without blocking the event loop.

    Cancelling the awaiting task does not withdraw the entry: it is written all the same.
    """
    return await asyncio.wrap_future(writer.submit(record))
