"""Resources per second for structural validation and search-index extraction, on one core.

Measured over the Synthea bulk NDJSON and transaction-bundle entries (13,232 resources),
already parsed, after a warm-up pass that compiles the definitions.

    .venv/bin/python bench/fhir_throughput.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chartkeeper.fhir import indexing, validation  # noqa: E402

SYNTHEA = REPO.parent / "shared" / "data" / "synthea"


def synthea_resources() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for path in sorted((SYNTHEA / "bulk_ndjson_10_patients").glob("*.000.ndjson")):
        resources.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    for path in sorted((SYNTHEA / "r4_transaction_bundles_subset").glob("*.json")):
        resources.extend(e["resource"] for e in json.loads(path.read_text())["entry"])
    return resources


def rate(function: Callable[[dict[str, Any]], object], resources: list[dict[str, Any]],
         rounds: int) -> list[float]:
    for resource in resources:
        function(resource)  # warm-up: compile definitions and plans
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for resource in resources:
            function(resource)
        rates.append(len(resources) / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", "bench/fhir_throughput.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    resources = synthea_resources()
    print(f"resources: {len(resources):,} (Synthea NDJSON + transaction-bundle entries)")
    for name, function in (("validate_resource", validation.validate_resource),
                           ("indexing.extract", indexing.extract)):
        rates = rate(function, resources, args.rounds)
        print(f"{name:<18} median {statistics.median(rates):9,.0f} resources/s  "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
