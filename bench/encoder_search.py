"""Encoder search latency (issue 8; goal p95 < 100 ms) over the ICD-10-CM release.

Queries as a coder types them, sampled with a fixed seed from the release itself:
* words: two or three words of a random billable code's title;
* misspelled: the same with one letter of the longest word dropped, doubled or swapped;
* prefix: the first four to six letters of a title word;
* code: a code or its first three to five characters, with or without the dot;
* abbreviation: the clinical abbreviations the search expands (HTN, CHF, COPD...).
Each query goes through ``coding.service.search`` (the function behind the page and the API)
on the packaged release in a fresh SQLite store; times are per call, after a warm-up.

    .venv/bin/python bench/encoder_search.py               # 2,000 queries, seed 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from chartkeeper.coding import service  # noqa: E402
from chartkeeper.coding.lexicon import ABBREVIATIONS  # noqa: E402
from chartkeeper.store.engine import make_engine  # noqa: E402


def queries(titles: list[tuple[str, str]], count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    kinds = ("words", "misspelled", "prefix", "code", "abbreviation")
    made: list[tuple[str, str]] = []
    abbreviations = sorted(k for k in ABBREVIATIONS if k.isalpha() and len(k) > 2)
    while len(made) < count:
        kind = kinds[len(made) % len(kinds)]
        code, title = rng.choice(titles)
        title_words = [w for w in title.replace(",", " ").split() if w.isalpha() and len(w) > 3]
        if kind == "abbreviation":
            made.append((kind, rng.choice(abbreviations).upper()))
        elif kind == "code":
            plain = code.replace(".", "")
            made.append((kind, rng.choice([code, plain[:rng.randint(3, min(5, len(plain)))]])))
        elif not title_words:
            continue
        elif kind == "prefix":
            word = rng.choice(title_words)
            made.append((kind, word[:rng.randint(4, min(6, len(word)))].lower()))
        else:
            chosen = rng.sample(title_words, min(len(title_words), rng.randint(2, 3)))
            if kind == "misspelled":
                longest = max(chosen, key=len)
                at = rng.randrange(1, len(longest) - 1)
                broken = rng.choice([longest[:at] + longest[at + 1:],
                                     longest[:at] + longest[at] + longest[at:],
                                     longest[:at - 1] + longest[at] + longest[at - 1]
                                     + longest[at + 1:]])
                chosen = [broken if w == longest else w for w in chosen]
            made.append((kind, " ".join(chosen).lower()))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp()) / 'store.sqlite'}")
    started = time.perf_counter()
    table = service.tabular(engine)
    service.search_index(engine)
    print(f"ICD-10-CM {table.version}: search index built in "
          f"{time.perf_counter() - started:.1f} s")
    titles = list(table.billable_codes())
    sample = queries(titles, args.queries, args.seed)
    for _, query in sample[:50]:
        service.search(engine, query)
    times: dict[str, list[float]] = {}
    empty = 0
    for kind, query in sample:
        started = time.perf_counter()
        hits = service.search(engine, query)
        times.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        empty += not hits
    everything = [t for values in times.values() for t in values]
    print("\n| queries | n | p50 | p95 | max |\n|---|---|---|---|---|")
    for kind, values in [*times.items(), ("all", everything)]:
        values = sorted(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        print(f"| {kind} | {len(values):,} | {statistics.median(values):.1f} ms | "
              f"{p95:.1f} ms | {values[-1]:.1f} ms |")
    print(f"\nqueries with no hit: {empty} of {len(sample)}")
    print(f"\n{dt.date.today()}  .venv/bin/python bench/encoder_search.py --queries "
          f"{args.queries} --seed {args.seed}")


if __name__ == "__main__":
    main()
