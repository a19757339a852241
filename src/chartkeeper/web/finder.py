"""Find a patient the way a technician types: a name (misspelled or not), a birth date, an MRN
or any identifier, in any order.

Candidates come from the store's own indexes (FHIR string search is a case- and
accent-insensitive prefix match, so the first letters of each word find the names however the
rest is spelled; identifiers and birth dates match exactly), and are then ranked by how close
the whole name is (rapidfuzz). A birth date in the query narrows every name search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from rapidfuzz import fuzz

from chartkeeper.store.service import Resource, Txn
from chartkeeper.web.chart import human_name

CANDIDATES_PER_SEARCH = 300
MIN_SCORE = 60.0
MAX_RESULTS = 25
DATE_PATTERNS = (
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), (1, 2, 3)),
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$"), (3, 1, 2)),  # US month/day/year
)


@dataclass
class Query:
    names: list[str]
    birth_date: str | None
    identifiers: list[str]

    @property
    def empty(self) -> bool:
        return not (self.names or self.birth_date or self.identifiers)


@dataclass
class Found:
    patient: Resource
    name: str
    score: float
    why: str


def parse_query(text: str) -> Query:
    names: list[str] = []
    identifiers: list[str] = []
    birth_date = None
    for word in re.split(r"[\s,;]+", text.strip())[:8]:
        if not word:
            continue
        parsed = _date(word)
        if parsed:
            birth_date = parsed
        elif any(ch.isdigit() for ch in word):
            identifiers.append(word[:64])
        else:
            cleaned = re.sub(r"[^\w'\-]", "", word)
            if cleaned:
                names.append(cleaned[:40])
    return Query(names[:4], birth_date, identifiers[:3])


def _date(word: str) -> str | None:
    for pattern, (y, m, d) in DATE_PATTERNS:
        match = pattern.match(word)
        if match:
            try:
                return date(int(match[y]), int(match[m]), int(match[d])).isoformat()
            except ValueError:
                return None
    return None


def find_patients(txn: Txn, text: str) -> list[Found]:
    query = parse_query(text)
    if query.empty:
        return []
    found: dict[str, Found] = {}
    for identifier in query.identifiers:
        for patient in _search(txn, [("identifier", identifier)]):
            found[str(patient["id"])] = Found(patient, human_name(patient), 100.0,
                                              f"identifier {identifier}")
    extra = [("birthdate", query.birth_date)] if query.birth_date else []
    if query.names:
        candidates: dict[str, Resource] = {}
        for word in query.names:
            prefixes = {word[:3], word[:2]} if len(word) >= 3 else {word}
            for prefix in prefixes:
                for patient in _search(txn, [("name", prefix), *extra]):
                    candidates[str(patient["id"])] = patient
        typed = " ".join(query.names).lower()
        for pid, patient in candidates.items():
            score = _name_score(typed, patient)
            if score >= MIN_SCORE and (pid not in found or found[pid].score < score):
                why = "name" + (" and birth date" if query.birth_date else "")
                found[pid] = Found(patient, human_name(patient), score, why)
    elif query.birth_date and not query.identifiers:
        for patient in _search(txn, extra):
            found[str(patient["id"])] = Found(patient, human_name(patient), 100.0, "birth date")
    ranked = sorted(found.values(), key=lambda f: (-f.score, f.name))
    return ranked[:MAX_RESULTS]


def _name_score(typed: str, patient: Resource) -> float:
    best = 0.0
    for name in patient.get("name") or []:
        given = " ".join(name.get("given") or [])
        full = f"{given} {name.get('family', '')}".strip().lower()
        if not full:
            continue
        best = max(best, fuzz.token_sort_ratio(typed, full),
                   fuzz.token_set_ratio(typed, full) - 5.0)
    return float(best)


def _search(txn: Txn, params: list[tuple[str, str]]) -> list[Resource]:
    page = txn.search_params("Patient", [*params, ("_count", str(CANDIDATES_PER_SEARCH))])
    return page.matches
