"""Search latency over the FHIR API on a store filled by bench/ingest.py.

Runs typical searches through the real app (in-process HTTP with Starlette's TestClient, so
the figure includes parsing, SQL, JSON and Bundle building but not a network hop):
patient by name, observations by patient + code + date, conditions by code.

    .venv/bin/python bench/ingest.py --resources 1000000        # builds var/bench/ingest.sqlite
    .venv/bin/python bench/search.py --database-url sqlite:///var/bench/ingest.sqlite
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from chartkeeper.api.app import create_app  # noqa: E402
from chartkeeper.settings import Settings  # noqa: E402
from chartkeeper.store import Store, schema  # noqa: E402


def sample(store: Store, rtype: str, n: int, seed: int) -> list[dict[str, Any]]:
    r = schema.resource
    with store.engine.connect() as conn:
        top = conn.execute(select(func.max(r.c.pk))).scalar() or 0
        rng = random.Random(seed)
        found: list[dict[str, Any]] = []
        attempts = 0
        while len(found) < n and attempts < n * 200:
            attempts += 1
            pk = rng.randint(1, top)
            row = conn.execute(select(r.c.content).where(
                r.c.pk >= pk, r.c.resource_type == rtype).order_by(r.c.pk).limit(1)).first()
            if row is not None:
                found.append(orjson.loads(row.content))
    return found


def queries(store: Store, n: int) -> dict[str, list[list[tuple[str, str]]]]:
    patients = sample(store, "Patient", n, 1)
    observations = [o for o in sample(store, "Observation", n * 2, 2)
                    if "effectiveDateTime" in o and o["subject"]["reference"].startswith(
                        "Patient/")][:n]
    conditions = sample(store, "Condition", n, 3)
    return {
        "patient by name (family prefix)": [
            [("family", p["name"][0]["family"][:5])] for p in patients],
        "observations by patient + code + date": [
            [("patient", o["subject"]["reference"]),
             ("code", f"{o['code']['coding'][0]['system']}|{o['code']['coding'][0]['code']}"),
             ("date", "ge" + o["effectiveDateTime"][:10])] for o in observations],
        "conditions by code": [
            [("code", f"{c['code']['coding'][0]['system']}|{c['code']['coding'][0]['code']}")]
            for c in conditions],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url",
                        default=f"sqlite:///{REPO / 'var' / 'bench' / 'ingest.sqlite'}")
    parser.add_argument("--queries", type=int, default=200, help="queries per kind")
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", "bench/search.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    run_search_bench(args.database_url, args.queries)


def bench_token(app: Any) -> str:
    """An administrator's bearer token on the app's security services (user 'bench')."""
    from chartkeeper.security.identity import Role, UserExists

    security = app.state.security
    try:
        security.directory.add_user("bench", Role.administrator, "bench-password-not-used")
    except UserExists:
        pass
    token: str = security.issuer.issue("bench", Role.administrator, "user/*.cruds")
    return token


def run_search_bench(database_url: str, queries_per_kind: int) -> None:
    """Print p50/p95/max latency of each kind of search against the store at the URL."""
    store = Store(database_url)
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(schema.resource)).scalar()
    print(f"store: {database_url.split('://')[0]}, {total:,} resources")
    settings = Settings(home=REPO / "var" / "bench" / "home", database_url=database_url)
    app = create_app(settings, store)
    kinds = queries(store, queries_per_kind)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {bench_token(app)}"
        for kind, params_list in kinds.items():
            for params in params_list[:10]:  # warm the caches and compiled statements
                client.get("/fhir/" + ("Patient" if "patient by" in kind else
                                       "Observation" if "observ" in kind else "Condition"),
                           params=params)
            times: list[float] = []
            matches: list[int] = []
            rtype = ("Patient" if "patient by" in kind else
                     "Observation" if "observ" in kind else "Condition")
            for params in params_list:
                t0 = time.perf_counter()
                response = client.get(f"/fhir/{rtype}", params=params)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
                matches.append(response.json().get("total", 0))
            print(f"{kind:<40} n={len(times):>4}  p50 {statistics.median(times):6.1f} ms  "
                  f"p95 {percentile(times, 0.95):6.1f} ms  max {max(times):6.1f} ms  "
                  f"median matches {statistics.median(matches):,.0f}")
    store.dispose()


if __name__ == "__main__":
    main()
