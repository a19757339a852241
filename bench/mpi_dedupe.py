"""Batch deduplication of the MPI at scale (issue 7): time per phase and peak memory for
``--patients`` registrations, the candidate comparisons its blocking rules make, and pairwise
precision, recall and F1 against the generator's truth.

The registrations come from ``bench/mpi_people.py`` (the synthetic hospital's people, a share
of them registered twice with the usual errors). Each size runs in its own child process, so
that its peak RSS (``getrusage``'s ``ru_maxrss``) is its own: it covers generating the rows
(``patient_row``, as the product's ``dedupe`` builds them from the store: a list in memory)
and ``dedupe_rows``. Phases: rows (generate and flatten), load (rows into DuckDB), train (EM),
score (blocking, comparisons, match probabilities, the pairs back in Python). After the peak is
taken, splink's ``count_comparisons_from_blocking_rules`` counts the candidate pairs each
blocking rule adds (exactly with ``--count-sample 1``, otherwise estimated from a sample).

    .venv/bin/python bench/mpi_dedupe.py --patients 100000 1000000
    .venv/bin/python bench/mpi_dedupe.py --patients 1000000 --count-only   # blocking counts
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.mpi_people import DUPLICATE_RATE, rows_and_truth  # noqa: E402
from chartkeeper.mpi.dedupe import Thresholds, dedupe_rows, settings  # noqa: E402


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_comparisons(rows: list[dict[str, Any]], sample: float) -> list[dict[str, Any]]:
    """Pairs each blocking rule of ``settings()`` adds to the ones before it."""
    import duckdb
    import pyarrow as pa
    from splink import DuckDBAPI
    from splink.blocking_analysis import count_comparisons_from_blocking_rules

    rules = settings().get_settings("duckdb").as_dict()["blocking_rules_to_generate_predictions"]
    con = duckdb.connect()
    try:
        con.register("patient_rows", pa.Table.from_pylist(rows))
        con.execute("create table patients as select * from patient_rows")
        con.unregister("patient_rows")
        counted = count_comparisons_from_blocking_rules(
            DuckDBAPI(connection=con).register("patients"), blocking_rules=rules,
            link_type="dedupe_only", record_sample_proportion=sample)
    finally:
        con.close()
    return [{"rule": c["blocking_rule"], "marginal": c["marginal_comparison_count"],
             "cumulative": c["cumulative_comparison_count"]} for c in counted]


def child(patients: int, seed: int, duplicate_rate: float, thresholds: Thresholds,
          count_sample: float, count_only: bool) -> dict[str, Any]:
    import logging

    logging.getLogger("splink").setLevel(logging.ERROR)  # EM's per-iteration chatter
    phases: dict[str, float] = {}
    started = time.perf_counter()
    rows, truth = rows_and_truth(patients, seed, duplicate_rate)
    phases["rows"] = time.perf_counter() - started
    print(f"  [{phases['rows']:7.1f} s] {len(rows):,} rows", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"patients": len(rows), "true_pairs": len(truth)}
    if not count_only:
        marks: list[tuple[str, float]] = [("load", time.perf_counter())]

        def progress(message: str) -> None:
            print(f"  [{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr,
                  flush=True)
            if message == "training":
                marks.append(("train", time.perf_counter()))
            elif message == "scoring candidate pairs":
                marks.append(("score", time.perf_counter()))

        result = dedupe_rows(rows, thresholds, on_progress=progress)
        marks.append(("end", time.perf_counter()))
        for (phase, began), (_, ended) in zip(marks, marks[1:], strict=False):
            phases[phase] = ended - began
        links = {frozenset((p.left, p.right)) for p in result.links}
        true_links = len(links & truth)
        precision = true_links / len(links) if links else 1.0
        recall = true_links / len(truth) if truth else 1.0
        report.update(
            links=len(links), false_links=len(links) - true_links, review=len(result.review),
            review_true=len({frozenset((p.left, p.right)) for p in result.review} & truth),
            precision=precision, recall=recall,
            f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            note=result.note)
        del result
    report["peak_rss_mib"] = _peak_rss_mib()
    counting = time.perf_counter()
    report["blocking"] = count_comparisons(rows, count_sample)
    phases["count (not in the peak)"] = time.perf_counter() - counting
    report["phases"] = phases
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['patients']:,} registrations, {report['true_pairs']:,} true pairs")
    for phase, seconds in report["phases"].items():
        print(f"  {phase:<24}{seconds:>9.1f} s")
    dedupe_seconds = sum(s for p, s in report["phases"].items() if p in ("load", "train",
                                                                          "score"))
    if dedupe_seconds:
        print(f"  {'dedupe_rows in all':<24}{dedupe_seconds:>9.1f} s")
    print(f"  peak RSS {report['peak_rss_mib']:,.0f} MiB")
    print("  candidate pairs by blocking rule (added, cumulative):")
    for rule in report["blocking"]:
        print(f"    {rule['marginal']:>14,}{rule['cumulative']:>15,}  {rule['rule']}")
    if "links" in report:
        print(f"  links {report['links']:,} (false {report['false_links']:,}), to review "
              f"{report['review']:,} (true {report['review_true']:,})")
        print(f"  precision {report['precision']:.4f}  recall {report['recall']:.4f}  "
              f"F1 {report['f1']:.4f}" + (f"  note: {report['note']}" if report["note"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[100_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duplicate-rate", type=float, default=DUPLICATE_RATE)
    parser.add_argument("--auto-link", type=float, default=Thresholds.auto_link)
    parser.add_argument("--review", type=float, default=Thresholds.review)
    parser.add_argument("--count-sample", type=float, default=1.0,
                        help="share of records each side of the blocking join when counting "
                             "candidate pairs (1: exact; default %(default)s)")
    parser.add_argument("--count-only", action="store_true",
                        help="only count the candidate pairs (no deduplication)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    thresholds = Thresholds(auto_link=args.auto_link, review=args.review)
    if args.child:
        print(json.dumps(child(args.patients[0], args.seed, args.duplicate_rate, thresholds,
                               args.count_sample, args.count_only)))
        return
    print("command:", " ".join([".venv/bin/python", "bench/mpi_dedupe.py", *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; thresholds: "
          f"auto-link {thresholds.auto_link}, review {thresholds.review}")
    for patients in args.patients:
        command = [sys.executable, __file__, "--child", "--patients", str(patients),
                   "--seed", str(args.seed), "--duplicate-rate", str(args.duplicate_rate),
                   "--auto-link", str(args.auto_link), "--review", str(args.review),
                   "--count-sample", str(args.count_sample)]
        if args.count_only:
            command.append("--count-only")
        # The child's progress goes to stderr as it happens; its report comes on stdout.
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"{patients:,} patients failed (exit {done.returncode})")
        print_report(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
