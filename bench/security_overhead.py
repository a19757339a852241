"""What authorization and auditing cost on the record store's read and search benchmarks.

Runs the same requests through the real app (in-process, Starlette's TestClient) on the same
store with two versions of the code: a baseline commit from before the authorization layer
(no token, no audit) and the working tree (bearer token, role and compartment checks, the
record guard, one durable audit entry per request). The baseline is checked out with
``git worktree`` into a temporary folder.

Each side is a long-lived child process that has loaded its app and warmed its caches. The
parent sends both the same block of requests in turn, in random order, for every kind and
round, so a block of one side always has a neighbour of the other side measured seconds
apart: drift of a busy machine (the reason single-pass figures swung by ±15 points) falls on
both. The overhead of a kind is the median, over its blocks, of after/before time, with a
bootstrap 95 % interval; the mean of the kinds is the headline figure.

    .venv/bin/python bench/ingest.py --resources 1000000      # builds var/bench/ingest.sqlite
    .venv/bin/python bench/security_overhead.py [--baseline bcb4130] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BASELINE = "bcb4130"  # the last commit before the authorization layer
Call = tuple[str, list[tuple[str, str]]]


def build_requests(store: Any, n: int) -> dict[str, list[Call]]:
    from bench.search import queries, sample

    requests: dict[str, list[Call]] = {
        "read Patient by id": [(f"/fhir/Patient/{p['id']}", []) for p in
                               sample(store, "Patient", n, 11)],
        "read Observation by id": [(f"/fhir/Observation/{o['id']}", []) for o in
                                   sample(store, "Observation", n, 12)],
    }
    for kind, params_list in queries(store, n).items():
        rtype = ("Patient" if "patient by" in kind else
                 "Observation" if "observ" in kind else "Condition")
        requests[f"search {kind}"] = [(f"/fhir/{rtype}", params) for params in params_list]
    return requests


def serve(database_url: str, n: int, commands: IO[str], replies: IO[str]) -> None:
    """The child: load the app, then time the blocks of requests the parent asks for."""
    sys.path.insert(0, str(REPO))
    from fastapi.testclient import TestClient

    from chartkeeper.api.app import create_app
    from chartkeeper.settings import Settings
    from chartkeeper.store import Store

    store = Store(database_url)
    settings = Settings(home=REPO / "var" / "bench" / "home", database_url=database_url)
    app = create_app(settings, store)
    requests = build_requests(store, n)
    with TestClient(app) as client:
        if hasattr(app.state, "security"):
            from bench.search import bench_token
            client.headers["Authorization"] = f"Bearer {bench_token(app)}"
        for calls in requests.values():
            for path, params in calls:  # warm caches, pages and compiled statements
                response = client.get(path, params=params)
                assert response.status_code == 200, (path, response.text[:300])
        # The same garbage-collector settings on both sides (the app has done this at start-up
        # since the chart page's tuning; the baseline has not): the comparison is of the
        # security layer, not of the collector.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        replies.write(json.dumps({"ready": sorted(requests)}) + "\n")
        replies.flush()
        for line in commands:
            command = json.loads(line)
            calls = requests[command["kind"]][command["start"]:command["stop"]]
            times = []
            for path, params in calls:
                t0 = time.perf_counter()
                response = client.get(path, params=params)
                times.append(time.perf_counter() - t0)
                assert response.status_code == 200, (path, response.text[:300])
            replies.write(json.dumps(times) + "\n")
            replies.flush()
    store.dispose()


class Side:
    def __init__(self, name: str, src: Path, database_url: str, n: int) -> None:
        self.name = name
        env = dict(os.environ, PYTHONPATH=str(src))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", database_url, "--queries", str(n)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ready(self) -> list[str]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} side failed to start")
        kinds: list[str] = json.loads(line)["ready"]
        return kinds

    def run(self, kind: str, start: int, stop: int) -> list[float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"kind": kind, "start": start, "stop": stop}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} side failed")
        times: list[float] = json.loads(line)
        return times

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=120)


def bootstrap(ratios: list[float], rng: random.Random, draws: int = 2000) -> tuple[float, float]:
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios)))
                     for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url",
                        default=f"sqlite:///{REPO / 'var' / 'bench' / 'ingest.sqlite'}")
    parser.add_argument("--queries", type=int, default=200, help="distinct requests per kind")
    parser.add_argument("--block", type=int, default=20, help="requests per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="passes over every request")
    parser.add_argument("--baseline", default=BASELINE, help="git ref without the layer")
    parser.add_argument("--child", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve(args.child, args.queries, sys.stdin, sys.stdout)
        return
    print("command:", " ".join([".venv/bin/python", "bench/security_overhead.py",
                                *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"baseline {args.baseline}")
    print(f"store: {args.database_url}")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree),
                        args.baseline], check=True, capture_output=True)
        # The compiled FHIR definitions are built at install time and not in git.
        definitions = "src/chartkeeper/fhir/definitions"
        for compiled in (REPO / definitions).glob("*.json.gz"):
            (worktree / definitions).mkdir(parents=True, exist_ok=True)
            (worktree / definitions / compiled.name).symlink_to(compiled)
        sides = [Side("before", worktree / "src", args.database_url, args.queries),
                 Side("after", REPO / "src", args.database_url, args.queries)]
        try:
            kinds = sides[0].ready()
            if sides[1].ready() != kinds:
                raise SystemExit("the two sides built different requests")
            times: dict[str, dict[str, list[float]]] = {
                k: {"before": [], "after": []} for k in kinds}
            ratios: dict[str, list[float]] = {k: [] for k in kinds}
            blocks = [(start, min(start + args.block, args.queries))
                      for start in range(0, args.queries, args.block)]
            for _ in range(args.rounds):
                for start, stop in blocks:
                    for kind in kinds:
                        order = sides[:] if rng.random() < 0.5 else sides[::-1]
                        block = {side.name: side.run(kind, start, stop) for side in order}
                        for name, values in block.items():
                            times[kind][name].extend(values)
                        ratios[kind].append(statistics.median(block["after"])
                                            / statistics.median(block["before"]))
        finally:
            for side in sides:
                side.close()
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(worktree)], check=False, capture_output=True)
    print(f"{'':<48}{'before p50':>11}{'after p50':>10}{'before p95':>11}{'after p95':>10}"
          f"{'overhead':>10}{'95% interval':>18}")
    overheads = []
    for kind in kinds:
        before = sorted(times[kind]["before"])
        after = sorted(times[kind]["after"])
        overhead = (statistics.median(ratios[kind]) - 1) * 100
        low, high = bootstrap(ratios[kind], rng)
        overheads.append(overhead)
        print(f"{kind:<48}{statistics.median(before) * 1000:>9.2f}ms"
              f"{statistics.median(after) * 1000:>8.2f}ms"
              f"{before[int(0.95 * (len(before) - 1))] * 1000:>9.2f}ms"
              f"{after[int(0.95 * (len(after) - 1))] * 1000:>8.2f}ms"
              f"{overhead:>9.1f}%{(low - 1) * 100:>9.1f}% to {(high - 1) * 100:.1f}%")
    print(f"blocks of {args.block} requests, {len(ratios[kinds[0]])} pairs a kind; "
          f"mean overhead of the kinds: {statistics.mean(overheads):.1f}%")


if __name__ == "__main__":
    main()
