"""What authorization and auditing cost on the record store's read and search benchmarks.

Runs the same requests through the real app (in-process, Starlette's TestClient) twice on the
same store: with the code of a baseline commit from before the authorization layer (no
token, no audit), and with the working tree (bearer token, role and compartment checks,
the record guard, one durable audit entry per request). Each side runs in its own process;
the sides alternate ``--rounds`` times and each keeps its best round, so drift of the machine
does not count against either. The baseline is checked out with ``git worktree`` into a
temporary folder.

    .venv/bin/python bench/ingest.py --resources 1000000      # builds var/bench/ingest.sqlite
    .venv/bin/python bench/security_overhead.py [--baseline bcb4130] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "bcb4130"  # the last commit before the authorization layer


def measure(database_url: str, n: int) -> dict[str, dict[str, float]]:
    """Run in a child process whose ``chartkeeper`` is either side's code."""
    sys.path.insert(0, str(REPO))
    from fastapi.testclient import TestClient

    from bench.search import percentile, queries, sample
    from chartkeeper.api.app import create_app
    from chartkeeper.settings import Settings
    from chartkeeper.store import Store

    store = Store(database_url)
    settings = Settings(home=REPO / "var" / "bench" / "home", database_url=database_url)
    app = create_app(settings, store)
    secured = hasattr(app.state, "security")
    requests: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {
        "read Patient by id": [(f"/fhir/Patient/{p['id']}", []) for p in
                               sample(store, "Patient", n, 11)],
        "read Observation by id": [(f"/fhir/Observation/{o['id']}", []) for o in
                                   sample(store, "Observation", n, 12)],
    }
    for kind, params_list in queries(store, n).items():
        rtype = ("Patient" if "patient by" in kind else
                 "Observation" if "observ" in kind else "Condition")
        requests[f"search {kind}"] = [(f"/fhir/{rtype}", params) for params in params_list]
    results: dict[str, dict[str, float]] = {}
    with TestClient(app) as client:
        if secured:
            from bench.search import bench_token
            client.headers["Authorization"] = f"Bearer {bench_token(app)}"
        for kind, calls in requests.items():
            for path, params in calls[:10]:  # warm caches and compiled statements
                client.get(path, params=params)
            # The same garbage-collector settings on both sides (the app has done this at
            # start-up since the chart page's tuning; the baseline has not): the comparison is
            # of the security layer, not of the collector.
            gc.collect()
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
            times: list[float] = []
            started = time.perf_counter()
            for path, params in calls:
                t0 = time.perf_counter()
                response = client.get(path, params=params)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (path, response.text[:300])
            elapsed = time.perf_counter() - started
            results[kind] = {"p50": statistics.median(times), "p95": percentile(times, 0.95),
                             "per_s": len(calls) / elapsed}
    store.dispose()
    return results


def run_side(src: Path, database_url: str, n: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, __file__, "--child", database_url, "--queries", str(n)],
        env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run with {src} failed:\n{done.stderr[-3000:]}")
    out = done.stdout
    result: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return result


def best(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {kind: {"p50": min(r[kind]["p50"] for r in rounds),
                   "p95": min(r[kind]["p95"] for r in rounds),
                   "per_s": max(r[kind]["per_s"] for r in rounds)} for kind in rounds[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url",
                        default=f"sqlite:///{REPO / 'var' / 'bench' / 'ingest.sqlite'}")
    parser.add_argument("--queries", type=int, default=200, help="requests per kind")
    parser.add_argument("--baseline", default=BASELINE, help="git ref without the layer")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.queries)))
        return
    print("command:", " ".join([".venv/bin/python", "bench/security_overhead.py",
                                *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"store: {args.database_url}")
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree),
                        args.baseline], check=True, capture_output=True)
        # The compiled FHIR definitions are built at install time and not in git.
        definitions = "src/chartkeeper/fhir/definitions"
        for compiled in (REPO / definitions).glob("*.json.gz"):
            (worktree / definitions).mkdir(parents=True, exist_ok=True)
            (worktree / definitions / compiled.name).symlink_to(compiled)
        try:
            before_rounds, after_rounds = [], []
            for _ in range(args.rounds):
                before_rounds.append(run_side(worktree / "src", args.database_url,
                                              args.queries))
                after_rounds.append(run_side(REPO / "src", args.database_url, args.queries))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(worktree)], check=False, capture_output=True)
    before, after = best(before_rounds), best(after_rounds)
    print(f"{'':<48}{'before p50':>11}{'after p50':>10}{'before p95':>11}{'after p95':>10}"
          f"{'before/s':>9}{'after/s':>8}{'overhead':>9}")
    overheads = []
    for kind in before:
        b, a = before[kind], after[kind]
        overhead = (b["per_s"] / a["per_s"] - 1) * 100
        overheads.append(overhead)
        print(f"{kind:<48}{b['p50']:>9.2f}ms{a['p50']:>8.2f}ms{b['p95']:>9.2f}ms"
              f"{a['p95']:>8.2f}ms{b['per_s']:>9.0f}{a['per_s']:>8.0f}{overhead:>8.1f}%")
    print(f"mean overhead (time per request): {statistics.mean(overheads):.1f}%")


if __name__ == "__main__":
    main()
