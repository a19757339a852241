"""The encoder's search: codes by words, abbreviations, misspellings or the code itself.

Every title and inclusion term (and, when a site imported them, the Alphabetic Index, the
Neoplasm Table and the Table of Drugs) is indexed by its normalised words (``terms.words``:
"HTN" finds hypertension). A query word the vocabulary lacks is taken as the nearest word
(rapidfuzz, edit distance) or as a prefix, so "diabetis" and "hypert" still find their codes.
"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from chartkeeper.coding.terms import term, words

_CODE_QUERY = re.compile(r"^[A-Za-z][0-9][0-9A-Za-z](?:\.?[0-9A-Za-z]{0,4})?$")


@dataclass(frozen=True)
class Entry:
    """A searchable line: the code it leads to, the text shown, where it comes from."""

    code: str
    text: str
    source: str  # "title", "inclusion term", "index", "neoplasm table", "drug table"
    billable: bool


@dataclass(frozen=True)
class Hit:
    code: str
    text: str
    source: str
    billable: bool
    score: float

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "text": self.text, "source": self.source,
                "billable": self.billable, "score": round(self.score, 3)}


class SearchIndex:
    """Entries by word; built once per code-set release."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries: list[Entry] = []
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._sizes: list[int] = []
        self._by_code: dict[str, list[int]] = defaultdict(list)
        for entry in entries:
            position = len(self.entries)
            self.entries.append(entry)
            found = {w.text for w in words(entry.text)}
            parts = term(entry.code, entry.text)
            # Default words ("unspecified", "(primary)") do not make a title a worse match.
            self._sizes.append(max(1, len(parts.essential) + len(parts.choices) if parts
                                   else len(found)))
            for word in found:
                self._postings[word].append(position)
            self._by_code[_plain(entry.code)].append(position)
        self._vocabulary = sorted(self._postings)
        self._codes = sorted(self._by_code)

    def __len__(self) -> int:
        return len(self.entries)

    def search(self, query: str, limit: int = 25) -> list[Hit]:
        query = query.strip()
        if not query:
            return []
        hits: list[Hit] = []
        if _CODE_QUERY.match(query.replace(" ", "")):
            hits = self._by_code_prefix(_plain(query), limit)
        wanted = [self._known(w.text) for w in words(query)]
        wanted_sets = [options for options in wanted if options]
        if wanted_sets:
            hits.extend(self._by_words(wanted_sets, limit))
        seen: set[tuple[str, str]] = set()
        unique: list[Hit] = []
        for hit in hits:
            if (hit.code, hit.text) not in seen:
                seen.add((hit.code, hit.text))
                unique.append(hit)
        return unique[:limit]

    def _by_code_prefix(self, prefix: str, limit: int) -> list[Hit]:
        import bisect

        start = bisect.bisect_left(self._codes, prefix)
        hits: list[Hit] = []
        for code in self._codes[start:start + limit * 4]:
            if not code.startswith(prefix):
                break
            entry = self.entries[self._by_code[code][0]]
            hits.append(Hit(entry.code, entry.text, entry.source, entry.billable,
                            2.0 if code == prefix else 1.5))
        return hits[:limit]

    def _known(self, word: str) -> set[str]:
        """The vocabulary words a query word stands for: itself, its prefix extensions, or
        the nearest spellings."""
        if word in self._postings:
            return {word}
        import bisect

        start = bisect.bisect_left(self._vocabulary, word)
        extensions = set()
        for candidate in self._vocabulary[start:start + 50]:
            if not candidate.startswith(word):
                break
            extensions.add(candidate)
        if extensions and len(word) >= 3:
            # A prefix stands for the words it most often begins ("hypert": hypertension).
            return set(sorted(extensions, key=lambda w: -len(self._postings[w]))[:3])
        if len(word) < 4:
            return set()
        near = process.extract(word, self._vocabulary, scorer=fuzz.ratio, limit=3,
                               score_cutoff=80)
        return {choice for choice, _, _ in near}

    def _by_words(self, wanted: list[set[str]], limit: int) -> list[Hit]:
        counts: dict[int, int] = defaultdict(int)
        for options in wanted:
            positions: set[int] = set()
            for word in options:
                positions.update(self._postings[word])
            for position in positions:
                counts[position] += 1
        if not counts:
            return []
        matched = max(counts.values())  # every query word where some entry has them all
        best = [p for p, c in counts.items() if c == matched]

        def rank(position: int) -> tuple[float, int, str]:
            entry = self.entries[position]
            # Fewer unmatched words first (the closest wording), billable codes, then shorter.
            return (-(matched / self._sizes[position]) - (0.2 if entry.billable else 0.0)
                    - (0.1 if entry.source == "title" else 0.0), len(entry.code) + len(entry.text),
                    entry.code)

        top = heapq.nsmallest(limit, best, key=rank)
        return [Hit(self.entries[p].code, self.entries[p].text, self.entries[p].source,
                    self.entries[p].billable, matched / self._sizes[p]) for p in top]


def _plain(code: str) -> str:
    return code.replace(".", "").replace(" ", "").upper()
