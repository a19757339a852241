"""C-CDA import: documents per second from the 105 Synthea documents into a SQLite store.

Each document is parsed, mapped, reconciled and stored in its own transaction by
``CcdaIngestor`` (the path ``chartkeeper import some.xml`` takes), into a fresh SQLite file.

    .venv/bin/python bench/ingest_ccda.py
    .venv/bin/python bench/ingest_ccda.py --documents 20 --database-url sqlite:///var/c.sqlite
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from chartkeeper.ingest.ccda_service import CcdaIngestor
from chartkeeper.ingest.service import create_ingest_schema
from chartkeeper.store import Store

ARCHIVE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
           / "ccda_2024-04_105docs" / "synthea_sample_data_ccda_latest.zip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=105, help="documents to import")
    parser.add_argument("--database-url", help="store URL (default: a fresh temp SQLite)")
    args = parser.parse_args()
    with zipfile.ZipFile(ARCHIVE) as zipped:
        documents = [zipped.read(n) for n in sorted(zipped.namelist())][:args.documents]
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(args.database_url or f"sqlite:///{scratch}/bench.sqlite")
        store.create_schema()
        create_ingest_schema(store.engine)
        ingestor = CcdaIngestor(store)
        created = 0
        started = time.perf_counter()
        for raw in documents:
            created += ingestor.ingest(raw).created
        elapsed = time.perf_counter() - started
        megabytes = sum(len(d) for d in documents) / 1e6
        print("command: " + shlex.join([sys.executable, *sys.argv]))
        print(f"documents={len(documents)} ({megabytes:.1f} MB) resources={created} "
              f"seconds={elapsed:.2f}")
        print(f"{len(documents) / elapsed:.1f} documents/s, {created / elapsed:.0f} resources/s")
        store.dispose()


if __name__ == "__main__":
    main()
