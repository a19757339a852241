"""Synthetic people for the MPI benchmarks: N Patient registrations, a known share of them a
second registration of someone already registered, deterministic by seed.

People come from the synthetic hospital's own generator (``chartkeeper.synth.people.
make_person``) and second registrations from its ``register_again`` (typos, nicknames,
transposed birth dates, a new address or phone). On top of those, every registration may lack
what registration desks often leave empty, and a second registration may carry two errors
``register_again`` does not make; the rates are this benchmark's choice, not measurements:

* no SSN on the registration: ``SSN_MISSING`` (20%);
* no phone: ``PHONE_MISSING`` (10%);
* on a second registration, the SSN keyed wrongly (one digit struck wrong, or two neighbouring
  digits swapped): ``SSN_TYPO`` (2%), and given and family name swapped: ``NAMES_SWAPPED`` (1%).

Record ``n`` is the same for a seed whatever the count asked for (each person has its own
random stream), so 100,000 records are the first 100,000 of the 1,000,000. The synthetic name
lists are short (about 240 family names, 100 given names a sex), so at a million records names
and names with birth dates collide far more often than in a real population: blocking counts
and precision at that size are on the pessimistic side.

    .venv/bin/python bench/mpi_people.py --patients 100000 --out var/mpi-people
      # var/mpi-people/Patient.ndjson (to import) and answer-key.ndjson (the truth, apart)

``bench/mpi_dedupe.py`` uses ``registrations`` and ``rows_and_truth`` from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from chartkeeper.synth import DEFAULT_AS_OF  # noqa: E402
from chartkeeper.synth.duplicates import DUPLICATE_RATE, register_again  # noqa: E402
from chartkeeper.synth.people import (  # noqa: E402
    MRN_SYSTEM,
    SSN_SYSTEM,
    Person,
    make_person,
)

SSN_MISSING = 0.20
PHONE_MISSING = 0.10
SSN_TYPO = 0.02
NAMES_SWAPPED = 0.01


@dataclass(frozen=True)
class Registration:
    """One Patient registration and the truth about it (never shown to the matcher)."""

    patient: dict[str, Any]  # FHIR R4 Patient
    person: int  # which person: registrations of one person share it
    changes: tuple[str, ...] = ()  # on a second registration, what differs from the first


def _mistype_ssn(rng: random.Random, ssn: str) -> str:
    digits = [c for c in ssn if c.isdigit()]
    i = rng.randrange(len(digits) - 1)
    if rng.random() < 0.5 and digits[i] != digits[i + 1]:
        digits[i], digits[i + 1] = digits[i + 1], digits[i]
    else:
        digits[i] = rng.choice([d for d in "0123456789" if d != digits[i]])
    text = "".join(digits)
    return f"{text[:3]}-{text[3:5]}-{text[5:]}"


def patient(person: Person, patient_id: str, *, ssn: bool, phone: bool) -> dict[str, Any]:
    """``person``'s registration as a FHIR Patient (the synthetic hospital's shape)."""
    identifiers = [{"use": "usual", "system": MRN_SYSTEM, "value": person.mrn}]
    if ssn:
        identifiers.append({"use": "official", "system": SSN_SYSTEM, "value": person.ssn})
    resource: dict[str, Any] = {
        "resourceType": "Patient", "id": patient_id, "identifier": identifiers,
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "gender": person.gender,
        "birthDate": person.birth_date.isoformat(),
        "address": [{"use": "home", "line": [person.line], "city": person.city,
                     "state": person.state, "postalCode": person.postal_code,
                     "country": "US"}],
    }
    if phone:
        resource["telecom"] = [{"system": "phone", "value": person.phone, "use": "home"}]
    return resource


@dataclass(frozen=True)
class Registered:
    """A person as registered once: what the desk keyed, and what it left empty."""

    person: Person
    changes: tuple[str, ...]  # on a second registration, what differs from the first
    ssn: bool
    phone: bool


def person_registrations(seed: int, index: int, duplicate_rate: float,
                         as_of: date = DEFAULT_AS_OF) -> list[Registered]:
    """Person ``index``'s one or two registrations."""
    rng = random.Random(f"chartkeeper-mpi-people:{seed}:{index}")
    person = make_person(rng, as_of)
    registered = [Registered(person, (), rng.random() >= SSN_MISSING,
                             rng.random() >= PHONE_MISSING)]
    if rng.random() < duplicate_rate:
        again, changes = register_again(rng, person, as_of)
        if rng.random() < SSN_TYPO:
            again = dataclasses.replace(again, ssn=_mistype_ssn(rng, again.ssn))
            changes.append("ssn-typo")
        if rng.random() < NAMES_SWAPPED:
            again = dataclasses.replace(again, given=again.family, family=again.given)
            changes.append("names-swapped")
        registered.append(Registered(again, tuple(changes), rng.random() >= SSN_MISSING,
                                     rng.random() >= PHONE_MISSING))
    return registered


def registrations(records: int, seed: int = 1, duplicate_rate: float = DUPLICATE_RATE
                  ) -> Iterator[Registration]:
    """``records`` registrations of people, a second registration right after the first."""
    if records < 0 or not 0 <= duplicate_rate <= 1:
        raise ValueError(f"need records >= 0 and 0 <= duplicate_rate <= 1, got {records}, "
                         f"{duplicate_rate}")
    made = 0
    index = 0
    while made < records:
        for registered in person_registrations(seed, index, duplicate_rate):
            if made == records:
                return
            yield Registration(patient(registered.person, f"p{made:08d}", ssn=registered.ssn,
                                       phone=registered.phone), index, registered.changes)
            made += 1
        index += 1


def rows_and_truth(records: int, seed: int = 1, duplicate_rate: float = DUPLICATE_RATE
                   ) -> tuple[list[dict[str, Any]], set[frozenset[str]]]:
    """The registrations as the matcher's rows (``patient_row``) and the true pairs."""
    from chartkeeper.mpi.dedupe import patient_row

    rows: list[dict[str, Any]] = []
    truth: set[frozenset[str]] = set()
    first: tuple[int, str] | None = None
    for registration in registrations(records, seed, duplicate_rate):
        row = patient_row(registration.patient)
        rows.append(row)
        if first is not None and first[0] == registration.person:
            truth.add(frozenset((first[1], row["unique_id"])))
        first = (registration.person, row["unique_id"])
    return rows, truth


def write_ndjson(out: Path, records: int, seed: int = 1,
                 duplicate_rate: float = DUPLICATE_RATE) -> int:
    """``out/Patient.ndjson`` (to import into a store) and ``out/answer-key.ndjson`` (one
    line a person: its Patient ids, and what changed on a second registration)."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with (out / "Patient.ndjson").open("w", encoding="utf-8", newline="\n") as patients, \
            (out / "answer-key.ndjson").open("w", encoding="utf-8", newline="\n") as key:
        person: dict[str, Any] | None = None
        for registration in registrations(records, seed, duplicate_rate):
            patients.write(json.dumps(registration.patient, separators=(",", ":")) + "\n")
            written += 1
            if person is not None and person["person"] == registration.person:
                person["patients"].append(registration.patient["id"])
                person["changes"] = list(registration.changes)
                continue
            if person is not None:
                key.write(json.dumps(person) + "\n")
            person = {"person": registration.person, "patients": [registration.patient["id"]]}
        if person is not None:
            key.write(json.dumps(person) + "\n")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, required=True, help="registrations to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duplicate-rate", type=float, default=DUPLICATE_RATE,
                        help="share of people registered twice (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write to")
    args = parser.parse_args()
    started = time.perf_counter()
    written = write_ndjson(args.out, args.patients, args.seed, args.duplicate_rate)
    print(f"{written:,} Patients in {args.out / 'Patient.ndjson'}, the truth in "
          f"{args.out / 'answer-key.ndjson'} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
