"""Duplicate registrations: the same person registered again under a new MRN, with the errors
registration desks really make (typos, nicknames, transposed dates, an old or new address).

Hospitals' master patient indexes commonly hold duplicate records for several percent of
patients (AHIMA puts typical rates at 8-12%); the generator registers ``DUPLICATE_RATE`` of its
patients twice, so that patient matching has true pairs to find and the answer key says which.
"""

from __future__ import annotations

import dataclasses
import random
import string
from datetime import date

from chartkeeper.synth.people import STATES, Person, make_mrn

DUPLICATE_RATE = 0.04

NICKNAMES = {
    "William": "Bill", "Robert": "Bob", "Richard": "Rick", "James": "Jim", "John": "Jack",
    "Michael": "Mike", "Joseph": "Joe", "Thomas": "Tom", "Charles": "Chuck",
    "Christopher": "Chris", "Daniel": "Dan", "Matthew": "Matt", "Anthony": "Tony",
    "Steven": "Steve", "Andrew": "Andy", "Kenneth": "Ken", "Edward": "Ed", "Timothy": "Tim",
    "Jeffrey": "Jeff", "Gregory": "Greg", "Benjamin": "Ben", "Samuel": "Sam",
    "Alexander": "Alex", "Nicholas": "Nick", "Jonathan": "Jon", "Patrick": "Pat",
    "Elizabeth": "Liz", "Jennifer": "Jen", "Patricia": "Pat", "Margaret": "Peggy",
    "Katherine": "Kate", "Kathleen": "Kathy", "Deborah": "Debbie", "Rebecca": "Becky",
    "Jessica": "Jess", "Susan": "Sue", "Barbara": "Barb", "Cynthia": "Cindy",
    "Samantha": "Sam", "Victoria": "Vicky", "Christine": "Chris", "Pamela": "Pam",
    "Abigail": "Abby", "Catherine": "Cathy", "Theresa": "Terri", "Judith": "Judy",
}
# Letters next to each other on a QWERTY keyboard, for substitution typos.
_NEAR = {a: b for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
         for a, b in zip(row, row[1:] + row[-2], strict=True)}


def misspell(rng: random.Random, word: str) -> str:
    """One keying error: adjacent letters swapped, a letter dropped or doubled, or a
    neighbouring key struck."""
    if len(word) < 3:
        return word + word[-1]
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _NEAR.get(word[i].lower(), rng.choice(string.ascii_lowercase))
    return word[:i] + (near.upper() if word[i].isupper() else near) + word[i + 1:]


def transpose_date(rng: random.Random, day: date) -> date:
    """A birth date keyed wrongly: month and day swapped, or two digits of the day or the
    year's last two digits swapped; the date itself if no such error gives a real date."""
    candidates = []
    if day.day <= 12 and day.day != day.month:
        candidates.append((day.year, day.day, day.month))
    dd = f"{day.day:02d}"
    if dd[0] != dd[1]:
        candidates.append((day.year, day.month, int(dd[::-1])))
    yy = f"{day.year % 100:02d}"
    if yy[0] != yy[1]:
        candidates.append((day.year - day.year % 100 + int(yy[::-1]), day.month, day.day))
    rng.shuffle(candidates)
    for year, month, dom in candidates:
        try:
            changed = date(year, month, dom)
        except ValueError:
            continue
        if changed != day and changed.year > 1900:
            return changed
    return day


def register_again(rng: random.Random, person: Person, as_of: date) -> tuple[Person, list[str]]:
    """The same person as registered a second time, and what differs (for the answer key)."""
    changes: list[str] = []
    given, family, birth_date = person.given, person.family, person.birth_date
    line, city, state, postal_code, phone = (person.line, person.city, person.state,
                                            person.postal_code, person.phone)
    kinds = rng.sample(("given", "family", "birth-date", "address", "phone"),
                       k=rng.choice((1, 2, 2, 3)))
    for kind in kinds:
        if kind == "given":
            if given in NICKNAMES and rng.random() < 0.5:
                given = NICKNAMES[given]
                changes.append("nickname")
            else:
                given = misspell(rng, given)
                changes.append("given-name-typo")
        elif kind == "family":
            family = misspell(rng, family)
            changes.append("family-name-typo")
        elif kind == "birth-date":
            changed = transpose_date(rng, birth_date)
            if changed != birth_date:
                birth_date = changed
                changes.append("birth-date-transposed")
        elif kind == "address":
            state, _, cities = rng.choice(STATES)
            city, zip3 = rng.choice(cities)
            line = f"{rng.randrange(1, 9900)} {person.line.split(' ', 1)[1]}"
            postal_code = f"{zip3}{rng.randrange(0, 100):02d}"
            changes.append("address-changed")
        else:
            phone = f"{rng.randrange(201, 990)}-555-01{rng.randrange(0, 100):02d}"
            changes.append("phone-changed")
    if not changes:  # every drawn change turned out a no-op: at least move them
        line = f"{rng.randrange(1, 9900)} {person.line.split(' ', 1)[1]}"
        changes.append("address-changed")
    again = dataclasses.replace(person, given=given, family=family, birth_date=birth_date,
                                line=line, city=city, state=state, postal_code=postal_code,
                                phone=phone, mrn=make_mrn(rng))
    return again, changes
