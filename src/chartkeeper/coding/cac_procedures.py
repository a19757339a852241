"""ICD-10-PCS suggestions: the procedure named in a note, looked up in the PCS Index, and the
code finished axis by axis from the Tables with the words the operative text uses.

A coder reads "Cesarean section" in the Index ("see Extraction, Products of Conception
10D0"), then picks each remaining character in the table from what the report says: the
approach, the device, the qualifier ("low transverse hysterotomy": Low). This does the same,
offering only values the Tables allow; a character the text says nothing about takes the
table's first value, and the suggestion's confidence says how much was read, how much taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
