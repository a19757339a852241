"""The batch run on Spark local mode against DuckDB, same model, same records (goal: the same
links).

Generates ``--patients`` registrations (``bench/mpi_people.py``), trains and scores on DuckDB
(``dedupe_rows``), scores the same rows with that model on Spark local mode
(``dedupe_rows_spark``), and prints both times, the links each found and whether they agree.

    .venv/bin/python bench/mpi_spark.py --patients 100000
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from bench.mpi_people import rows_and_truth
    from chartkeeper.mpi.dedupe import Thresholds, dedupe_rows
    from chartkeeper.mpi.spark import dedupe_rows_spark

    rows, truth = rows_and_truth(args.patients)
    started = time.perf_counter()
    duck = dedupe_rows(rows, Thresholds())
    duck_s = time.perf_counter() - started
    started = time.perf_counter()
    spark = dedupe_rows_spark(rows, duck.model, Thresholds())
    spark_s = time.perf_counter() - started
    duck_links = {(p.left, p.right) for p in duck.links}
    spark_links = {(p.left, p.right) for p in spark.links}
    duck_review = {(p.left, p.right) for p in duck.review}
    spark_review = {(p.left, p.right) for p in spark.review}
    print(f"{args.patients:,} registrations ({len(truth):,} true pairs)")
    print(f"DuckDB (train + score): {duck_s:.1f} s, {len(duck_links):,} links, "
          f"{len(duck_review):,} to review")
    print(f"Spark local mode (score with that model, JVM start included): {spark_s:.1f} s, "
          f"{len(spark_links):,} links, {len(spark_review):,} to review")
    print(f"same links: {duck_links == spark_links} (only DuckDB {len(duck_links - spark_links)}"
          f", only Spark {len(spark_links - duck_links)}); same review pairs: "
          f"{duck_review == spark_review}")
    print("reproduce: .venv/bin/python bench/mpi_spark.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
