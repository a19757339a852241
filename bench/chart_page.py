"""Chart page server time for a patient with 2,000+ resources (goal: p95 under 300 ms).

Builds a store from the synthetic hospital, takes its patient with the most records and gives
them years more of laboratory results and progress notes (copies of their own, dated earlier)
until the chart holds ``--resources`` records, then asks the real app (in-process, so the time
is the server's: access checks, $everything, Provenance lookup, assembly, rendering and the
audit entry) for the chart page ``--requests`` times.

    .venv/bin/python bench/chart_page.py [--resources 2500] [--requests 60]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def grow(store: Any, patient_id: str, target: int) -> int:
    """Add earlier copies of the patient's results and notes until the chart has ``target``
    resources; returns the count."""
    from chartkeeper.store.service import everything, new_id

    with store.read() as txn:
        records = everything(txn, patient_id)
    seeds = [r for r in records if r["resourceType"] in ("Observation", "DocumentReference")]
    count = len(records)
    shift = 0
    while count < target:
        shift += 1
        batch = []
        for seed in seeds[: target - count]:
            clone = copy.deepcopy(seed)
            clone.pop("meta", None)
            clone["id"] = new_id()
            clone.pop("masterIdentifier", None)
            for key in ("effectiveDateTime", "issued", "date"):
                if isinstance(clone.get(key), str) and len(clone[key]) >= 10:
                    day = date.fromisoformat(clone[key][:10]) - timedelta(days=91 * shift)
                    clone[key] = day.isoformat() + clone[key][10:]
            batch.append(clone)
        with store.write() as txn:
            txn.bulk_upsert(batch)
        count += len(batch)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resources", type=int, default=2500)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--patients", type=int, default=150, help="synthetic hospital size")
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", "bench/chart_page.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")

    from fastapi.testclient import TestClient

    from bench.search import bench_token, percentile
    from chartkeeper.api.app import create_app
    from chartkeeper.settings import Settings
    from chartkeeper.store import Store
    from chartkeeper.store.importer import Importer, find_files
    from chartkeeper.store.service import everything
    from chartkeeper.synth.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "hospital", args.patients, 17)
        store = Store(f"sqlite:///{root / 'chart.sqlite'}")
        store.create_schema()
        Importer(store).import_files(find_files([root / "hospital" / "bundles"]))
        with store.read() as txn:
            patients = txn.search_params("Patient", [("_count", "1000")]).matches
            sizes = {p["id"]: len(everything(txn, p["id"])) for p in patients}
        patient_id = max(sizes, key=lambda pid: sizes[pid])
        total = grow(store, patient_id, args.resources)
        app = create_app(Settings(home=root / "home", database_url=store.url), store)
        times: list[float] = []
        with TestClient(app) as client:
            client.headers["Authorization"] = f"Bearer {bench_token(app)}"
            for number in range(args.requests + 3):
                started = time.perf_counter()
                response = client.get(f"/patients/{patient_id}")
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text[:300]
                if number >= 3:  # the first requests warm caches (definitions, templates)
                    times.append(elapsed)
        size = len(response.content)
        store.dispose()
    print(f"chart of a patient with {total} resources, {size / 1024:.0f} KiB of HTML")
    print(f"server time over {len(times)} requests: p50 {statistics.median(times):.0f} ms, "
          f"p95 {percentile(times, 0.95):.0f} ms, max {max(times):.0f} ms (goal: p95 < 300 ms)")


if __name__ == "__main__":
    main()
