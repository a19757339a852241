"""Group commit of audit entries (``AuditWriter``) on a real SQLite file and a real PostgreSQL.

Batching is made deterministic by holding the lock every append takes (SQLite's write lock,
PostgreSQL's advisory lock) while records are submitted: they queue behind it and must be
written together once it is released.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import DBAPIError

from chartkeeper.security.audit import (
    APPEND_LOCK_ID,
    AuditAction,
    AuditKey,
    AuditRecord,
    AuditTrail,
    AuditWriter,
    AuditWriterClosed,
    InvalidAuditRecord,
    audit_checkpoint,
    audit_entry,
    audit_patient,
    audit_patient_mark,
    awrite,
    create_audit_schema,
)
from chartkeeper.store.engine import WRITE_OPTION, make_engine

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return AuditKey(tmp_path / "home" / "audit.key")


@pytest.fixture
def trail(engine: Engine, key: AuditKey) -> AuditTrail:
    return AuditTrail(engine, key)


MakeWriter = Callable[..., AuditWriter]


@pytest.fixture
def writers() -> Iterator[MakeWriter]:
    """Make writers that are closed (flushed) when the test ends, whatever happened."""
    made: list[AuditWriter] = []

    def make(trail: AuditTrail, **options: Any) -> AuditWriter:
        writer = AuditWriter(trail, **options)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close(timeout=60)


def record(n: int, **changes: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "user_id": "dr-okafor", "role": "physician", "action": AuditAction.READ,
        "patient_id": "pat-1", "resource_type": "Observation", "resource_id": f"obs-{n}",
        "details": {"n": n},
    }
    values.update(changes)
    return AuditRecord(**values)


@contextmanager
def append_lock_held(engine: Engine) -> Iterator[None]:
    """Hold the lock that every append takes, so that submitted records queue behind it."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_ID)))
        yield


def entry_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_entry)).scalar_one())


def results(futures: list[Future[int]]) -> list[int]:
    return [future.result(timeout=120) for future in futures]


# --------------------------------------------------------------------------- concurrency


def test_eight_threads_through_two_writers_form_one_valid_chain(
        database_url: str, key: AuditKey, writers: MakeWriter) -> None:
    # Two engines, two writers: what two uvicorn workers on one database look like.
    engines = [make_engine(database_url) for _ in range(2)]
    create_audit_schema(engines[0])
    pair = [writers(AuditTrail(e, key), max_batch=64) for e in engines]
    threads, per_thread = 8, 200
    start = threading.Barrier(threads)
    seqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        writer = pair[worker % 2]
        try:
            start.wait()
            records = [record(n, user_id=f"user-{worker}") for n in range(per_thread)]
            if worker < 4:
                # A request handler: one entry, wait until it is durable, answer.
                mine = [writer.write(r, timeout=120) for r in records]
            else:
                # A handler that records as it goes and confirms before it answers.
                mine = results([writer.submit(r) for r in records])
            with lock:
                seqs.extend(mine)
        except BaseException as exc:  # reported below, in the test's own thread
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=client, args=(w,)) for w in range(threads)]
    try:
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        for writer in pair:
            writer.close(timeout=60)
    finally:
        for e in engines:
            e.dispose()

    total = threads * per_thread
    assert errors == []
    assert sorted(seqs) == list(range(1, total + 1))
    assert sum(w.entries_written for w in pair) == total
    # Group commit happened: fewer transactions than entries.
    assert sum(w.batches_written for w in pair) < total
    trail = AuditTrail(make_engine(database_url), key)
    try:
        result = trail.verify()
        assert result.ok and result.entries_checked == total
        for worker in range(threads):
            assert len(trail.entries(user_id=f"user-{worker}", limit=1000)) == per_thread
    finally:
        trail.engine.dispose()


_WORKER_PROCESS = """
import sys
from chartkeeper.security.audit import AuditKey, AuditRecord, AuditTrail, AuditWriter
from chartkeeper.store.engine import make_engine

url, key_path, user, count = sys.argv[1:]
engine = make_engine(url)
with AuditWriter(AuditTrail(engine, AuditKey(key_path)), checkpoint_every=50) as writer:
    futures = [writer.submit(AuditRecord(user_id=user, role="service", action="read",
                                         resource_type="Patient", resource_id=str(n)))
               for n in range(int(count))]
    seqs = [future.result() for future in futures]
engine.dispose()
print(len(set(seqs)), writer.batches_written)
"""


def test_writers_in_separate_processes_keep_one_chain(
        database_url: str, trail: AuditTrail, key: AuditKey, writers: MakeWriter) -> None:
    count = 300
    processes = [
        subprocess.Popen([sys.executable, "-c", _WORKER_PROCESS, database_url, str(key.path),
                          f"worker-{n}", str(count)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    here = writers(trail, checkpoint_every=50)
    mine = results([here.submit(record(n, user_id="worker-main")) for n in range(count)])
    here.close(timeout=60)
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert out.split()[0] == str(count)

    assert len(set(mine)) == count
    result = trail.verify()
    assert result.ok and result.entries_checked == 3 * count
    assert result.checkpoints_checked >= 1
    for user in ("worker-0", "worker-1", "worker-main"):
        assert len(trail.entries(user_id=user, limit=1000)) == count


# --------------------------------------------------------------------------- batching


def test_records_queued_behind_a_commit_share_one_transaction(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail)
    with append_lock_held(engine):
        futures = [writer.submit(record(n)) for n in range(100)]
    seqs = results(futures)

    assert seqs == list(range(1, 101))  # one writer keeps submission order
    # The writer may have taken the first record alone before the rest arrived; everything
    # else was queued when the lock came free and went in one transaction.
    assert writer.batches_written <= 2
    assert writer.entries_written == 100
    assert trail.verify().ok


def test_batches_hold_at_most_max_batch_records(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail, max_batch=10)
    with append_lock_held(engine):
        futures = [writer.submit(record(n)) for n in range(35)]
    assert results(futures) == list(range(1, 36))
    assert writer.batches_written in (4, 5)
    assert trail.verify().ok


# --------------------------------------------------------------------------- failures


def _refuse_poisoned_inserts(engine: Engine) -> None:
    """A database rule that refuses one particular row at INSERT time."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER audit_entry_poison BEFORE INSERT ON audit_entry "
                "WHEN NEW.resource_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned record refused'); END")
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.resource_id = 'poison' THEN RAISE EXCEPTION "
                "'poisoned record refused' USING ERRCODE = 'check_violation'; END IF; "
                "RETURN NEW; END $$")
            conn.exec_driver_sql(
                "CREATE TRIGGER audit_entry_poison BEFORE INSERT ON audit_entry "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()")


def test_a_record_refused_at_insert_fails_alone(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    _refuse_poisoned_inserts(engine)
    writer = writers(trail)
    with append_lock_held(engine):
        before = [writer.submit(record(n)) for n in range(5)]
        poisoned = writer.submit(record(99, resource_id="poison"))
        after = [writer.submit(record(n)) for n in range(5, 10)]

    with pytest.raises(DBAPIError, match="poisoned record refused"):
        poisoned.result(timeout=120)
    assert results(before) + results(after) == list(range(1, 11))
    assert writer.write(record(10), timeout=120) == 11
    assert "poison" not in {e.resource_id for e in trail.entries()}
    result = trail.verify()
    assert result.ok and result.entries_checked == 11


@contextmanager
def audit_table_missing(engine: Engine) -> Iterator[None]:
    """The audit table is gone (a failed migration, a restore in progress) until the block ends."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        conn.exec_driver_sql("ALTER TABLE audit_entry RENAME TO audit_entry_away")
    try:
        yield
    finally:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            conn.exec_driver_sql("ALTER TABLE audit_entry_away RENAME TO audit_entry")


def test_a_failed_database_fails_the_futures_and_the_writer_goes_on(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail)
    assert writer.write(record(0), timeout=120) == 1
    with audit_table_missing(engine):
        futures = [writer.submit(record(n)) for n in range(1, 4)]
        for future in futures:
            with pytest.raises(DBAPIError, match="audit_entry"):
                future.result(timeout=120)

    assert writer.write(record(4), timeout=120) == 2
    assert [e.resource_id for e in trail.entries()] == ["obs-0", "obs-4"]
    assert trail.verify().ok


def test_an_unreachable_database_fails_every_future(tmp_path: Path, key: AuditKey) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/no-such-directory/chartkeeper.sqlite")
    try:
        with AuditWriter(AuditTrail(engine, key)) as writer:
            futures = [writer.submit(record(n)) for n in range(3)]
            for future in futures:
                with pytest.raises(DBAPIError, match="unable to open database file"):
                    future.result(timeout=120)
        assert writer.batches_written == 0 and writer.entries_written == 0
    finally:
        engine.dispose()


def test_a_disposed_engine_reconnects_for_the_next_batch(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail)
    assert writer.write(record(0), timeout=120) == 1
    engine.dispose()  # every pooled connection closed under the writer
    assert writer.write(record(1), timeout=120) == 2
    assert trail.verify().ok


def test_sqlite_appends_from_every_thread_share_one_connection(
        trail: AuditTrail, engine: Engine) -> None:
    """Own-transaction appends on SQLite all use the process's one append connection: one
    connection's page cache stays valid between appends (through the pool they rotated, and
    every append re-read the B-trees). After a database error the next append opens another."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the append connection is SQLite's")
    opened: list[object] = []
    event.listen(engine, "connect", lambda dbapi, _record: opened.append(dbapi))
    trail.append(None, record(0))
    opened.clear()

    def append_some(first: int) -> None:
        for n in range(first, first + 10):
            trail.append_many(None, [record(n)], durable=n % 2 == 0)

    threads = [threading.Thread(target=append_some, args=(1 + 10 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert opened == []  # 40 appends from four threads, no connection opened for them
    with audit_table_missing(engine), pytest.raises(DBAPIError, match="audit_entry"):
        trail.append(None, record(99))
    assert trail.append(None, record(41)) == 42
    result = trail.verify()
    assert result.ok and result.entries_checked == 42
    trail.close()
    assert trail.append(None, record(42)) == 43


def test_invalid_records_are_refused_at_submit(trail: AuditTrail, engine: Engine,
                                               writers: MakeWriter) -> None:
    writer = writers(trail)
    with pytest.raises(InvalidAuditRecord, match="not JSON-serializable"):
        writer.submit(record(0, details={"blob": object()}))
    assert writer.write(record(1), timeout=120) == 1
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        AuditWriter(trail, max_batch=0)
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1"):
        AuditWriter(trail, checkpoint_every=0)


# --------------------------------------------------------------------------- closing


def test_close_flushes_queued_records_then_refuses_more(
        trail: AuditTrail, engine: Engine) -> None:
    writer = AuditWriter(trail)
    with append_lock_held(engine):
        futures = [writer.submit(record(n)) for n in range(50)]
        # The writer is stuck behind the lock: close cannot finish in time...
        with pytest.raises(TimeoutError, match="did not finish its queued entries"):
            writer.close(timeout=0.05)
        # ...and it is closed already: nothing more is accepted.
        with pytest.raises(AuditWriterClosed, match="closed; read by 'dr-okafor'"):
            writer.submit(record(50))
    writer.close()  # waits for the queue to be written

    assert all(future.done() for future in futures)
    assert results(futures) == list(range(1, 51))
    assert entry_count(engine) == 50
    with pytest.raises(AuditWriterClosed):
        writer.write(record(51))
    writer.close()  # idempotent
    assert trail.verify().ok


def test_close_of_an_idle_writer_is_immediate_and_the_context_manager_closes(
        trail: AuditTrail) -> None:
    with AuditWriter(trail) as writer:
        assert writer.write(record(0), timeout=120) == 1
    assert writer.closed
    with pytest.raises(AuditWriterClosed):
        writer.submit(record(1))


# --------------------------------------------------------------------------- asyncio


def test_awrite_awaits_the_seq_and_a_cancelled_caller_is_still_audited(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail)

    async def requests() -> list[int]:
        return list(await asyncio.gather(*(awrite(writer, record(n)) for n in range(20))))

    assert sorted(asyncio.run(requests())) == list(range(1, 21))

    async def abandoned() -> None:
        # The client goes away while its entry waits behind the lock.
        task = asyncio.ensure_future(awrite(writer, record(20, resource_id="abandoned")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with append_lock_held(engine):
        asyncio.run(abandoned())
    writer.close(timeout=60)
    assert trail.entries(limit=100)[-1].resource_id == "abandoned"
    assert trail.verify().ok


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_every_signs_the_head_every_n_entries(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail, checkpoint_every=10)
    for n in range(25):
        writer.write(record(n), timeout=120)
    writer.close(timeout=60)

    assert writer.checkpoints_written == 2
    with engine.connect() as conn:
        signed = conn.execute(select(audit_checkpoint.c.seq)
                              .order_by(audit_checkpoint.c.seq)).scalars().all()
    assert signed == [10, 20]
    result = trail.verify()
    assert result.ok and result.checkpoints_checked == 2


def test_no_checkpoints_when_checkpoint_every_is_none(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    writer = writers(trail, checkpoint_every=None)
    with append_lock_held(engine):
        futures = [writer.submit(record(n)) for n in range(30)]
    results(futures)
    writer.close(timeout=60)
    assert writer.checkpoints_written == 0
    assert trail.verify().checkpoints_checked == 0


def test_the_writer_thread_catches_the_patient_index_up(
        trail: AuditTrail, engine: Engine, writers: MakeWriter) -> None:
    # Entries appended by someone else (another process, a request's own transaction).
    trail.append_many(None, [record(n, patient_id=f"pat-{n % 3}") for n in range(30)])
    writers(trail, index_every=0.05)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and index_mark(engine) < 30:
        time.sleep(0.05)
    assert index_mark(engine) == 30
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(audit_patient)).scalar_one()
    assert rows == 30
    assert trail.verify().ok


def test_index_every_must_be_positive(trail: AuditTrail) -> None:
    with pytest.raises(ValueError, match="index_every"):
        AuditWriter(trail, index_every=0)


def index_mark(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(audit_patient_mark.c.indexed_through)).scalar_one())
