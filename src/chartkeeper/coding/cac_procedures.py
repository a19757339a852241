"""Procedure suggestions. ICD-10-PCS: the procedure named in a note, looked up in the PCS
Index, and the code finished axis by axis from the Tables with the words the operative text
uses. HCPCS Level II: drugs given at the visit (J codes).

A coder reads "Cesarean section" in the Index ("see Extraction, Products of Conception
10D0"), then picks each remaining character in the table from what the report says: the
approach, the device, the qualifier ("low transverse hysterotomy": Low). This does the same,
offering only values the Tables allow; a character the text says nothing about takes the
table's first value, and the suggestion's confidence says how much was read, how much taken.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from chartkeeper.coding.hcpcs import HcpcsRelease
from chartkeeper.coding.pcs import PcsTables
from chartkeeper.coding.pcs_index import PcsIndex
from chartkeeper.coding.terms import Match, Term, TermIndex, term, word_set

# Words of an obstetric record a PCS index path needs ("Delivery, Products of Conception").
OBSTETRIC_WORDS = frozenset({"product", "conception"})


@dataclass(frozen=True)
class Completed:
    """A finished code, and how many of its characters after the Index entry the text chose."""

    code: str
    title: str
    read: int
    defaulted: int


class ProcedureCoder:
    """PCS Index entries as terms over one release of the Tables."""

    def __init__(self, tables: PcsTables, index: PcsIndex) -> None:
        self.tables = tables
        terms: list[Term] = []
        for entry in index.entries:
            if entry.code is None or not _starts_valid(tables, entry.code):
                continue
            made = term(entry.code, " ".join(entry.path))
            if made is not None:
                terms.append(made)
        self.index = TermIndex(terms)

    def find(self, present: frozenset[str]) -> list[Match]:
        """Index entries whose words are all in a clause, the most specific first."""
        chosen: list[Match] = []
        for match in self.index.matches(present):
            if any(match.covered <= better.covered for better in chosen):
                continue
            chosen.append(match)
        return chosen

    def complete(self, partial: str, context: frozenset[str]) -> Completed:
        """The partial code finished with the values whose labels the context names."""
        code, read, defaulted = partial, 0, 0
        while len(code) < 7:
            choices = self.tables.choices(code)
            # Unread, the table's "No Device" / "No Qualifier" comes first, then its order.
            scored = [(len(word_set(choice.label) & context),
                       choice.label.startswith("No "), -number, choice)
                      for number, choice in enumerate(choices)]
            best_overlap, _, _, best = max(scored, key=lambda item: item[:3])
            if len(choices) == 1 or best_overlap > 0:
                read += 1
            else:
                defaulted += 1
            code += best.value
        return Completed(code, self.tables.title(code), read, defaulted)


def _starts_valid(tables: PcsTables, code: str) -> bool:
    try:
        if len(code) == 7:
            return tables.is_valid(code)
        tables.choices(code)
    except ValueError:
        return False
    return True


def context_words(texts: Iterable[str]) -> frozenset[str]:
    found: set[str] = set()
    for text in texts:
        found |= word_set(text)
    return frozenset(found)


# How a note says a drug was given, and the HCPCS route word it stands for.
_ROUTE_CUES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bneb(?:s|ulizer|ulized|ulization)?\b|\binhal", re.I), "inhalation"),
    (re.compile(r"\b(?:IV|IM|SC|SQ|injection|injected|infusion|intravenous(?:ly)?|"
                r"intramuscular(?:ly)?)\b", re.I), "injection"),
)
_GIVEN_NOW = re.compile(r"\b(?:given|gave|administered|start(?:ed)?|begin|began|now|stat|"
                        r"x\s?\d|every \d+ minutes)\b", re.I)
# A prescription or a home regimen ("2 puffs inhaled q4-6h PRN", "Rx ...", "1 g IV q24h"): the
# drug is ordered, not given at the visit.
_PRESCRIBED = re.compile(r"\b(?:prn|rx|q\s?\d+(?:-\d+)?\s?h|qd|bid|tid|qid|daily|puffs?|mdi|"
                         r"inhaler|tablets?|tabs?|capsules?|refills?|dispense)\b", re.I)
# Doses given there and then, even when written as an order ("Rx albuterol ... by nebulizer
# every 20 minutes for 3 doses").
_ACUTE_DOSES = re.compile(r"\bevery \d+ minutes\b|\bstat\b|\bx\s?\d\b", re.I)
# A cycle of a systemic regimen ("FOLFOX (oxaliplatin, leucovorin, fluorouracil), cycle 3 of
# 12"); the drugs given now come before any "then" (the regimen's next phase).
REGIMEN_CYCLE = re.compile(r"\bcycle \d+\b", re.I)  # "of 12." may end the clause
# Regimens written by their acronym, as their drugs.
_REGIMEN_DRUGS = {
    "folfox": "oxaliplatin, leucovorin, fluorouracil",
    "folfiri": "irinotecan, leucovorin, fluorouracil",
    "folfirinox": "oxaliplatin, irinotecan, leucovorin, fluorouracil",
}
_SALTS = frozenset({"sodium", "hydrochloride", "hcl", "acetate", "sulfate", "phosphate",
                    "calcium", "citrate", "mesylate", "tartrate"})


@dataclass(frozen=True)
class DrugCode:
    """A HCPCS Level II drug code: the drug's words and the route it is billed for."""

    code: str
    title: str
    drug: frozenset[str]
    route: str


class DrugCoder:
    """HCPCS Level II drug codes (J codes) for drugs a visit's plan says were given.

    A J code's descriptor names the drug and the route ("Albuterol, inhalation solution, ...",
    "Injection, ceftriaxone sodium, per 250 mg"); a clause matches when it names the drug,
    says how it was given (nebulizer, IV, IM) and that it was given now, not prescribed.
    """

    def __init__(self, release: HcpcsRelease, on: date | None = None) -> None:
        self.codes: list[DrugCode] = []
        for found in release.codes.values():
            if not found.code.startswith("J") or found.kind != "procedure":
                continue
            if on is not None and not release.is_valid(found.code, on):
                continue
            if found.termination_date is not None and on is None:
                continue
            drug = _drug_code(found.code, found.long)
            if drug is not None:
                self.codes.append(drug)
        self._by_word: dict[str, list[DrugCode]] = {}
        for drug in self.codes:
            for word in drug.drug:
                self._by_word.setdefault(word, []).append(drug)

    def find(self, clause: str) -> list[DrugCode]:
        """The drug given now that ``clause`` names by route, if any (one code)."""
        routes = {route for cue, route in _ROUTE_CUES if cue.search(clause)}
        if not routes or not _GIVEN_NOW.search(clause) or (
                _PRESCRIBED.search(clause) and not _ACUTE_DOSES.search(clause)):
            return []
        return self._best(clause, routes)[:1]

    def regimen(self, clause: str) -> list[DrugCode]:
        """The drugs of a regimen's cycle given at a visit (``REGIMEN_CYCLE``): chemotherapy
        and immunotherapy are infused, one code for each drug named before any "then"."""
        current = re.split(r"\bthen\b", clause, maxsplit=1, flags=re.I)[0]
        for acronym, drugs in _REGIMEN_DRUGS.items():
            current = re.sub(rf"\b{acronym}\b", drugs, current, flags=re.I)
        chosen: dict[frozenset[str], DrugCode] = {}
        for drug in self._best(current, {"injection"}):
            if not any(drug.drug <= other for other in chosen):
                chosen[drug.drug] = drug
        return list(chosen.values())

    def _best(self, clause: str, routes: set[str]) -> list[DrugCode]:
        """The codes of the drugs ``clause`` names by ``routes``, most likely first."""
        present = word_set(clause)
        found = {drug.code: drug for word in present for drug in self._by_word.get(word, ())
                 if drug.route in routes and drug.drug <= present}
        said = clause.lower()

        def unlikely(drug: DrugCode) -> int:
            # A descriptor's form the note does not state is the less likely one: compounded
            # preparations and concentrates are the exception, the FDA-approved unit dose the
            # rule.
            title = drug.title.lower()
            return sum(1 for form in ("compounded", "concentrated")
                       if re.search(rf"(?<!non-){form}", title) and form not in said)

        return sorted(found.values(),
                      key=lambda d: (unlikely(d), -len(d.drug), len(d.title), d.code))


def _drug_code(code: str, descriptor: str) -> DrugCode | None:
    parts = [re.sub(r"\([^)]*\)", " ", part).strip() for part in descriptor.split(",")]
    if len(parts) < 2:
        return None
    if parts[0].lower() in ("injection", "infusion"):
        route, name = "injection", parts[1]
    elif "inhalation" in descriptor.lower():
        route, name = "inhalation", parts[0]
    elif code.startswith("J9"):  # chemotherapy drugs, given other than by mouth
        route, name = "injection", parts[0]
    else:
        return None
    drug = word_set(name) - _SALTS
    if not drug or len(drug) > 3:
        return None  # combinations and compounded preparations need a coder
    return DrugCode(code, descriptor, drug, route)
