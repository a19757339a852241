"""Ingest throughput: Synthea transaction bundles, replicated with fresh ids, into the store.

Every copy of a patient bundle gets new UUIDs (resource ids, fullUrls, identifiers), so the
store sees distinct patients. Bundles go through the same pipeline as ``chartkeeper import``:
worker processes validate, resolve references and index each bundle (``prepare_transaction``),
the main process writes each bundle in its own transaction (``insert_prepared``).

    .venv/bin/python bench/ingest.py --resources 1000000 --database-url sqlite:///var/bench.sqlite
    .venv/bin/python bench/ingest.py --resources 1000000 --postgres
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import resource
import sys
import time
import uuid
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.search import run_search_bench  # noqa: E402
from chartkeeper.store import Store  # noqa: E402
from chartkeeper.store.bundle import BundleProcessor, prepare_transaction  # noqa: E402
from chartkeeper.store.errors import InvalidRequest  # noqa: E402
from chartkeeper.store.service import PreparedResource  # noqa: E402

SYNTHEA = REPO.parent / "shared" / "data" / "synthea" / "r4_transaction_bundles_subset"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def bundle_texts() -> tuple[list[str], list[str]]:
    """(shared bundles loaded once: hospitals/practitioners, patient bundles to replicate)."""
    shared, patients = [], []
    for path in sorted(SYNTHEA.glob("*.json")):
        (patients if path.name[0].isupper() else shared).append(path.read_text())
    return shared, patients


def fresh_copy(text: str) -> dict[str, object]:
    mapping: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        old = match.group(0)
        if old not in mapping:
            mapping[old] = str(uuid.uuid4())
        return mapping[old]

    copied: dict[str, object] = json.loads(UUID.sub(replace, text))
    return copied


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def database_size(store: Store, url: str) -> str:
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        return f"{total / 1e9:.2f} GB"
    from sqlalchemy import text

    with store.engine.connect() as conn:
        size = conn.execute(text("select pg_database_size(current_database())")).scalar()
    return f"{int(size or 0) / 1e9:.2f} GB"


_TEMPLATES: list[str] = []


def _prepare_copy(index: int) -> tuple[int, list[PreparedResource]]:
    """In a worker: a fresh copy of one patient bundle, prepared as an import would."""
    bundle = fresh_copy(_TEMPLATES[index % len(_TEMPLATES)])
    prepared = prepare_transaction(bundle)
    assert prepared is not None, "Synthea patient bundles need no database to prepare"
    return len(prepared), prepared


def run(url: str, target: int, report_every: int, workers: int) -> None:
    store = Store(url)
    store.create_schema()

    def no_get(*_args: object) -> dict[str, object]:
        raise InvalidRequest("no GET entries in the benchmark")

    processor = BundleProcessor(store, no_get)
    shared, patients = bundle_texts()
    for text in shared:
        processor.process(json.loads(text))
    _TEMPLATES[:] = patients
    loaded = 0
    started = time.perf_counter()
    next_report = report_every
    window_start, window_loaded = started, 0
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future[tuple[int, list[PreparedResource]]]] = deque()
        index = 0
        while loaded < target:
            while len(pending) < 2 * workers + 2:  # keep the workers busy, memory bounded
                pending.append(pool.submit(_prepare_copy, index))
                index += 1
            size, prepared = pending.popleft().result()
            with store.write() as txn:  # one transaction per bundle, as an import does
                txn.insert_prepared(prepared)
            loaded += size
            window_loaded += size
            if loaded >= next_report:
                now = time.perf_counter()
                print(f"  {loaded:>9,} resources  {window_loaded / (now - window_start):8,.0f} "
                      f"res/s (last {window_loaded:,})  peak RSS {peak_rss_mb():,.0f} MB",
                      flush=True)
                next_report += report_every
                window_start, window_loaded = now, 0
        for future in pending:
            future.cancel()
    wall = time.perf_counter() - started
    print(f"database: {url.split('://')[0]}  resources: {loaded:,}  preparing workers: {workers}")
    print(f"ingest rate: {loaded / wall:,.0f} resources/s (wall clock, bundles copied, "
          "validated and indexed in the worker, written here)")
    print(f"wall time: {wall:,.1f} s  peak RSS (writer): {peak_rss_mb():,.0f} MB  "
          f"database size: {database_size(store, url)}")
    store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None,
                        help="default: a new SQLite file under var/bench/")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway PostgreSQL cluster (Debian binaries) and use it")
    parser.add_argument("--report-every", type=int, default=100_000)
    parser.add_argument("--then-search", type=int, default=0, metavar="N",
                        help="afterwards run bench/search.py with N queries per kind "
                             "(needed with --postgres, whose cluster is removed at the end)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="processes preparing bundles while the main process writes")
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", "bench/ingest.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if args.postgres:
        from bench.pg import throwaway_postgres

        with throwaway_postgres() as url:
            run(url, args.resources, args.report_every, args.workers)
            if args.then_search:
                analyze(url)
                run_search_bench(url, args.then_search)
        return
    url = args.database_url
    if url is None:
        folder = REPO / "var" / "bench"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("ingest.sqlite*"):
            old.unlink()
        url = f"sqlite:///{folder / 'ingest.sqlite'}"
    run(url, args.resources, args.report_every, args.workers)
    if args.then_search:
        run_search_bench(url, args.then_search)


def analyze(url: str) -> None:
    """Refresh PostgreSQL's planner statistics, as autovacuum would shortly after a load."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


if __name__ == "__main__":
    main()
