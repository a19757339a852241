"""Synthetic hospital generation speed and memory (issue 4).

Generates ``--patients`` patients into a scratch folder in a child process per size, and
prints patients per second, resources per second, bytes written and the child's peak RSS.
Several sizes show whether memory stays bounded as the hospital grows (the generator streams
one patient at a time, so peak RSS should not grow with the count).

    .venv/bin/python bench/synth.py --patients 1000 10000 100000 [--format bundles|ndjson]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(patients: int, output_format: str, seed: int) -> dict[str, float]:
    from chartkeeper.synth import generate

    with tempfile.TemporaryDirectory(dir=REPO / "var") as scratch:
        out = Path(scratch) / "hospital"
        started = time.perf_counter()
        summary = generate(out, patients, seed, output_format=output_format)
        elapsed = time.perf_counter() - started
        written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"patients": patients, "resources": summary.resources, "seconds": elapsed,
            "bytes": written, "peak_rss_mib": peak_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--format", default="bundles", choices=("bundles", "ndjson"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.patients[0], args.format, args.seed)))
        return
    print("command:", " ".join([".venv/bin/python", "bench/synth.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    (REPO / "var").mkdir(exist_ok=True)
    print(f"{'patients':>9}{'resources':>11}{'seconds':>9}{'patients/s':>11}"
          f"{'resources/s':>12}{'MB written':>11}{'peak RSS MiB':>13}")
    for patients in args.patients:
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--patients", str(patients),
             "--format", args.format, "--seed", str(args.seed)],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['patients']:>9}{r['resources']:>11}{r['seconds']:>9.1f}"
              f"{r['patients'] / r['seconds']:>11.0f}{r['resources'] / r['seconds']:>12.0f}"
              f"{r['bytes'] / 1e6:>11.0f}{r['peak_rss_mib']:>13.0f}")


if __name__ == "__main__":
    main()
