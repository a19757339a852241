"""Real-time matching against a large index (goal: ``Patient/$match`` within 200 ms p95 at
1,000,000 patients).

Builds (once, then reuses) an SQLite store of ``--patients`` synthetic registrations from
``bench/mpi_people.py`` (a known share are second registrations of someone), trains the model
on the first ``--train`` registrations and stores it, then asks ``--queries`` times for the
matches of a second registration (its own record left out) and times each call: candidate
lookups in the store's indexes, term frequencies, scoring. Prints p50/p95/max, how often the
first registration came first, and the command line.

    .venv/bin/python bench/mpi_match.py --patients 1000000 [--queries 200] [--train 100000]
    .venv/bin/python bench/mpi_match.py --patients 1000000 --http   # through the API, in-process
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))


def build(store_path: Path, patients: int) -> None:
    from bench.mpi_people import write_ndjson
    from chartkeeper.store import Store
    from chartkeeper.store.importer import Importer

    folder = store_path.parent / f"mpi-people-{patients}"
    if not (folder / "Patient.ndjson").exists():
        started = time.perf_counter()
        write_ndjson(folder, patients)
        print(f"generated {patients:,} registrations in {time.perf_counter() - started:.0f} s")
    store = Store(f"sqlite:///{store_path}")
    store.create_schema()
    started = time.perf_counter()
    Importer(store).import_files([folder / "Patient.ndjson"])
    print(f"imported in {time.perf_counter() - started:.0f} s")
    store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--train", type=int, default=100_000,
                        help="registrations the model is trained on")
    parser.add_argument("--http", action="store_true",
                        help="ask the real app's Patient/$match (in-process, as an admin)")
    parser.add_argument("--dir", type=Path, default=REPO / "var" / "bench")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from bench.mpi_people import rows_and_truth
    from chartkeeper.mpi.dedupe import Thresholds, dedupe_rows
    from chartkeeper.mpi.match import match
    from chartkeeper.mpi.service import load_model, save_model
    from chartkeeper.store import Store

    args.dir.mkdir(parents=True, exist_ok=True)
    store_path = args.dir / f"mpi-{args.patients}.sqlite"
    if not store_path.exists():
        build(store_path, args.patients)
    store = Store(f"sqlite:///{store_path}")
    with store.read() as txn:
        model = load_model(txn)
    if model is None:
        rows, _truth = rows_and_truth(args.train)
        started = time.perf_counter()
        trained = dedupe_rows(rows, Thresholds())
        print(f"trained on {len(rows):,} registrations in {time.perf_counter() - started:.0f} s")
        with store.write() as txn:
            save_model(txn, trained.model)

    key = args.dir / f"mpi-people-{args.patients}" / "answer-key.ndjson"
    pairs = [p["patients"] for p in map(json.loads, key.open()) if len(p["patients"]) == 2]
    step = max(len(pairs) // args.queries, 1)
    chosen = pairs[::step][:args.queries]
    client = None
    if args.http:
        client = http_client(store, args.dir)
    times: list[float] = []
    first_ranked = 0
    with store.read() as txn:
        queries = [txn.read("Patient", second) for _first, second in chosen]
    for (first, second), patient in zip(chosen, queries, strict=True):
        started = time.perf_counter()
        if client is not None:
            body = {k: v for k, v in patient.items() if k not in ("id", "meta")}
            body["identifier"] = [i for i in body.get("identifier", [])
                                  if "mrn" not in i.get("system", "")]  # its own MRN
            answer = client.post("/fhir/Patient/$match", json={
                "resourceType": "Parameters", "parameter": [
                    {"name": "resource", "resource": body},
                    {"name": "count", "valueInteger": 5}]})
            ids = [e["resource"]["id"] for e in answer.json().get("entry", [])
                   if e["resource"]["id"] != second]
        else:
            with store.read() as txn:
                ids = [m.patient["id"] for m in match(txn, patient, count=5)]
        times.append((time.perf_counter() - started) * 1000)
        first_ranked += bool(ids) and ids[0] == first
    times.sort()
    p95 = times[max(int(len(times) * 0.95) - 1, 0)]
    where = "API" if args.http else "in process"
    print(f"Patient/$match against {args.patients:,} patients ({where}), "
          f"{len(times)} queries: p50 {statistics.median(times):.0f} ms, "
          f"p95 {p95:.0f} ms, max {times[-1]:.0f} ms; the first registration ranked first "
          f"for {first_ranked} of {len(times)}")
    print("reproduce: .venv/bin/python bench/mpi_match.py " + " ".join(sys.argv[1:]))
    store.dispose()


def http_client(store: Any, folder: Path) -> Any:
    from argon2 import PasswordHasher
    from fastapi.testclient import TestClient

    from chartkeeper.api.app import create_app
    from chartkeeper.security.identity import Role, UserExists
    from chartkeeper.security.services import SecurityServices
    from chartkeeper.settings import Settings

    home = folder / f"mpi-home-{os.getpid()}"
    settings = Settings(home=home, database_url=store.url)
    security = SecurityServices.build(settings, store.engine,
                                      hasher=PasswordHasher(time_cost=1, memory_cost=8,
                                                            parallelism=1))
    try:
        security.directory.add_user("bench", Role.administrator, "bench-password-long-enough")
    except UserExists:
        pass
    token = security.issuer.issue("bench", Role.administrator, "user/*.cruds")
    client = TestClient(create_app(settings, store, security), base_url="http://testserver")
    client.headers["Authorization"] = f"Bearer {token}"
    client.headers["Content-Type"] = "application/fhir+json"
    return client


if __name__ == "__main__":
    main()
