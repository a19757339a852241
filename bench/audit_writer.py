"""Audit entries per second: one transaction per entry (``append``) against group commit.

K threads play request handlers: each records N/K entries, one at a time, and waits until
each is durable before the next, as a handler that must fail closed does. ``append`` gives
every entry its own transaction (and fsync); ``AuditWriter`` lets the entries that arrive
while one transaction commits share the next. A third row submits everything at once and
waits at the end: the writer's ceiling. Each database is fresh; the chain is verified after.

    .venv/bin/python bench/audit_writer.py [--requests 4000] [--threads 16]
        [--postgres [URL]]   # no URL: a throwaway cluster, started as the tests start theirs
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, func, make_url, select, text  # noqa: E402

from chartkeeper.security.audit import (  # noqa: E402
    AuditAction,
    AuditKey,
    AuditRecord,
    AuditTrail,
    AuditWriter,
    audit_entry,
    create_audit_schema,
)
from chartkeeper.store.engine import make_engine  # noqa: E402


@dataclass(frozen=True)
class Run:
    method: str
    entries: int
    seconds: float
    latencies: list[float]
    transactions: int | None

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    def row(self, database: str) -> str:
        if self.latencies:
            ordered = sorted(self.latencies)
            p50 = f"{statistics.median(ordered) * 1000:.1f} ms"
            p95 = f"{ordered[int(0.95 * (len(ordered) - 1))] * 1000:.1f} ms"
        else:
            p50 = p95 = "-"
        batch = ("1" if self.transactions is None
                 else f"{self.entries / self.transactions:.1f}")
        return (f"| {database} | {self.method} | {self.entries:,} | **{self.rate:,.0f}** | "
                f"{p50} | {p95} | {batch} |")


def request_record(worker: int, n: int) -> AuditRecord:
    return AuditRecord(user_id=f"user-{worker}", role="physician", action=AuditAction.READ,
                       patient_id=f"pat-{n % 97}", resource_type="Observation",
                       resource_id=f"obs-{worker}-{n}", source_address="10.0.0.7",
                       details={"request_id": f"req-{worker}-{n}"})


def in_threads(threads: int, per_thread: int,
               record_one: Callable[[AuditRecord], object]) -> tuple[float, list[float]]:
    """Run ``threads`` request handlers; return the wall time and every call's latency."""
    start = threading.Barrier(threads + 1)
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def handler(worker: int) -> None:
        mine: list[float] = []
        try:
            start.wait()
            for n in range(per_thread):
                began = time.perf_counter()
                record_one(request_record(worker, n))
                mine.append(time.perf_counter() - began)
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=handler, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return elapsed, latencies


def measure(engine: Engine, key: AuditKey, method: str, threads: int, per_thread: int) -> Run:
    trail = AuditTrail(engine, key)
    entries = threads * per_thread
    if method == "append (one transaction each)":
        elapsed, latencies = in_threads(threads, per_thread, lambda r: trail.append(None, r))
        return Run(method, entries, elapsed, latencies, None)
    writer = AuditWriter(trail, checkpoint_every=None)
    try:
        if method == "AuditWriter.write (wait for each)":
            elapsed, latencies = in_threads(threads, per_thread, writer.write)
        else:  # submit everything, then wait
            began = time.perf_counter()
            futures = [writer.submit(request_record(w, n))
                       for w in range(threads) for n in range(per_thread)]
            for future in futures:
                future.result()
            elapsed, latencies = time.perf_counter() - began, []
    finally:
        writer.close()
    return Run(method, entries, elapsed, latencies, writer.batches_written)


METHODS = ("append (one transaction each)", "AuditWriter.write (wait for each)",
           "AuditWriter.submit (all, then wait)")


@contextmanager
def fresh_sqlite(directory: Path, name: str) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{directory / name}.sqlite")
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def postgres_database(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        create_audit_schema(engine)
        with engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(audit_entry)).scalar_one()
        if held:
            raise SystemExit(f"{url} already holds {held} audit entries; give the benchmark an "
                             "empty database (it appends, and audit entries cannot be removed)")
        yield engine
    finally:
        engine.dispose()


def bench_database(label: str, engines: Callable[[str], AbstractContextManager[Engine]],
                   key: AuditKey, threads: int, per_thread: int) -> list[str]:
    rows = []
    for index, method in enumerate(METHODS):
        with engines(f"run{index}") as engine:
            create_audit_schema(engine)
            run = measure(engine, key, method, threads, per_thread)
            result = AuditTrail(engine, key).verify()
            if not result.ok:
                raise SystemExit(f"{label}: chain broken after {method}: {result.reason}")
        rows.append(run.row(label))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="entries per method")
    parser.add_argument("--threads", type=int, default=16, help="concurrent request handlers")
    parser.add_argument("--postgres", nargs="?", const="throwaway", metavar="URL",
                        help="also PostgreSQL: an empty database at URL, or a throwaway "
                             "cluster when no URL is given")
    args = parser.parse_args()
    per_thread = max(1, args.requests // args.threads)
    print("command:", " ".join([".venv/bin/python", "bench/audit_writer.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL)")
    print(f"load: {args.threads} threads x {per_thread} entries = "
          f"{args.threads * per_thread:,} entries per method")
    print()
    print("| database | method | entries | entries/s | p50 | p95 | entries per transaction |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="chartkeeper-bench-audit-") as scratch:
        directory = Path(scratch)
        key = AuditKey(directory / "audit.key")
        bench_database("SQLite", lambda name: fresh_sqlite(directory, name), key,
                       args.threads, per_thread)
        if args.postgres == "throwaway":
            from bench.pg import throwaway_postgres

            with throwaway_postgres() as url:
                _bench_postgres(url, key, args.threads, per_thread, fresh_each=True)
        elif args.postgres:
            _bench_postgres(args.postgres, key, args.threads, per_thread, fresh_each=False)


def _bench_postgres(url: str, key: AuditKey, threads: int, per_thread: int, *,
                    fresh_each: bool) -> None:
    engine = make_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
    engine.dispose()
    label = f"PostgreSQL {version.split()[0]}"
    if not fresh_each:
        # One database for all three methods: later runs append to a longer chain, which
        # costs nothing measurable (the head is read by primary key).
        with postgres_database(url) as shared:

            @contextmanager
            def same(_name: str) -> Iterator[Engine]:
                yield shared

            bench_database(label, same, key, threads, per_thread)
        return
    base = make_url(url)

    @contextmanager
    def fresh(name: str) -> Iterator[Engine]:
        admin = make_engine(base.render_as_string(hide_password=False))
        try:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS bench_{name}")
                conn.exec_driver_sql(f"CREATE DATABASE bench_{name}")
        finally:
            admin.dispose()
        with postgres_database(base.set(database=f"bench_{name}")
                               .render_as_string(hide_password=False)) as engine:
            yield engine

    bench_database(label, fresh, key, threads, per_thread)


if __name__ == "__main__":
    main()
