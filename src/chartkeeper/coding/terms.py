"""Words of code titles and clinical text on one footing, and the index that matches them.

A code matches a stretch of text when every essential word of its title (or of one of its
inclusion terms) is there; the title's default words ("unspecified", "initial encounter",
parenthesised nonessential modifiers) may be missing at a small cost. Of the codes that
match, the one that explains the most words of the text is the most specific.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from chartkeeper.coding.lexicon import (
    ABBREVIATIONS,
    DEFAULT_SEGMENTS,
    DEFAULT_WORDS,
    ENCOUNTER_REASONS,
    STOPWORDS,
    WORD_FORMS,
)

_QUALIFIERS = frozenset({"type", "stage", "grade", "class", "step"})
_QUALIFIER_VALUE = re.compile(r"^(?:[0-9]{1,2}[a-z]?|i{1,3}|iv|v|vi{0,3}|[a-d])$")
_RAW_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[/'-][A-Za-z0-9]+)*")
_COSTLY_DEFAULTS = frozenset({"other", "specified"})
_PHRASES = {**{k: v for k, v in ABBREVIATIONS.items() if " " in k}, **ENCOUNTER_REASONS}
_MAX_PHRASE = max(len(k.split()) for k in _PHRASES)


@dataclass(frozen=True)
class Word:
    """A normalised word of a text and the characters it came from."""

    text: str
    start: int
    end: int


def normalise(word: str) -> str:
    """One word as the index keeps it: lower case, singular, the titles' form."""
    word = word.lower().strip("'")
    word = WORD_FORMS.get(word, word)
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif (len(word) > 3 and word.endswith("s")
          and not word.endswith(("ss", "us", "is", "ous", "sis", "xis"))):
        word = word[:-1]
    return WORD_FORMS.get(word, word)


def words(text: str, offset: int = 0) -> list[Word]:
    """The content words of ``text`` with character offsets, abbreviations expanded."""
    raw = [(m.group(0).lower(), m.start() + offset, m.end() + offset)
           for m in _RAW_TOKEN.finditer(text)]
    out: list[Word] = []
    index = 0
    while index < len(raw):
        for size in range(min(_MAX_PHRASE, len(raw) - index), 1, -1):
            phrase = " ".join(token for token, _, _ in raw[index:index + size])
            if phrase in _PHRASES:
                start, end = raw[index][1], raw[index + size - 1][2]
                out.extend(_expanded(_PHRASES[phrase], start, end))
                index += size
                break
        else:
            token, start, end = raw[index]
            if token in ABBREVIATIONS:
                out.extend(_expanded(ABBREVIATIONS[token], start, end))
            elif "-" in token or "/" in token:
                for part in re.split(r"[-/]", token):
                    out.extend(_expanded(part, start, end))
            else:
                out.extend(_expanded(token, start, end))
            index += 1
    return _qualified(out)


def _qualified(found: list[Word]) -> list[Word]:
    """"type 2", "stage 3a", "grade 1" as one word each, so that a stray number ("A1c 7.1")
    never stands for a type or a stage."""
    out: list[Word] = []
    index = 0
    while index < len(found):
        word = found[index]
        following = found[index + 1] if index + 1 < len(found) else None
        if word.text in _QUALIFIERS:
            if following is not None and _QUALIFIER_VALUE.match(following.text):
                out.append(Word(word.text + following.text, word.start, following.end))
                index += 2
                continue
            index += 1  # the bare word says nothing
            continue
        out.append(word)
        index += 1
    return out


def _expanded(text: str, start: int, end: int) -> Iterator[Word]:
    for part in text.split():
        for piece in re.split(r"[-/]", part):
            word = normalise(piece)
            for single in word.split():
                if single and single not in STOPWORDS:
                    yield Word(single, start, end)


def word_set(text: str) -> frozenset[str]:
    return frozenset(word.text for word in words(text))


@dataclass(frozen=True)
class Term:
    """A code title or inclusion term as sets of words: all essential ones must be present,
    and of each group of ``choices`` one alternative ("bronchus or lung": either word; a
    neoplasm "of liver and intrahepatic bile duct": either site)."""

    code: str
    text: str
    essential: frozenset[str]
    optional: frozenset[str]
    choices: tuple[tuple[frozenset[str], ...], ...] = ()


# A neoplasm title's closing list of sites, "of A, B, and C" (or "of A, B and C").
_SITE_LIST = re.compile(r"\bof ((?:(?!of\b)[a-z]+ )*[a-z]+(?:, (?:(?!of\b)[a-z]+ )*[a-z]+)+"
                        r",? and (?:(?!of\b)[a-z]+ ?)+)\s*$")
_EITHER_WORD = re.compile(r"\b([a-z]+) or ([a-z]+)\b")
# A neoplasm title's last "of A and B" names the sites the code covers: either is enough.
_EITHER_SITE = re.compile(r"\bof ((?:(?!\bof\b)[a-z]+ )*?[a-z]+) and ((?:[a-z]+ ?)+)$")
# "skin" is left unsaid for melanoma and skin carcinomas ("melanoma of the back"), not for
# other neoplasms ("breast cancer" is no cancer of the skin of the breast).
_SKIN_TITLES = ("melanoma", "cell carcinoma")


def term(code: str, text: str) -> Term | None:
    """Split a title into essential and default words and groups of alternatives; None when
    it has no essential word."""
    optional: set[str] = set()
    for nonessential in re.findall(r"\(([^)]*)\)", text):
        optional |= word_set(nonessential)  # "(primary)"
    # Bracketed text restates the title ("[ER+]"); it is optional unless the title would be
    # left one word: "Unspecified mood [affective] disorder" is no code for any "mood".
    bracketed: set[str] = set()
    for restated in re.findall(r"\[([^\]]*)\]", text):
        bracketed |= word_set(restated)
    essential: set[str] = set()
    choices: list[tuple[frozenset[str], ...]] = []
    neoplasm = "neoplasm" in text.lower()
    body = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text)
    listed = _SITE_LIST.search(body.lower()) if neoplasm else None
    if listed is not None:  # "of rectum, rectosigmoid junction, and anus": any one of them
        sites = tuple(word_set(site) for site in re.split(r",\s*(?:and\s+)?|\s+and\s+",
                                                          listed.group(1)))
        if all(sites):
            choices.append(sites)
            body = body[:listed.start()]
    for segment in body.split(","):
        segment = " ".join(segment.lower().split())
        if not segment:
            continue
        if segment in DEFAULT_SEGMENTS or segment.startswith(("without ", "not ")):
            optional |= word_set(segment)
            continue
        head, *rest = re.split(r"\bwithout\b", segment)
        for first, second in _EITHER_WORD.findall(head):
            either = (word_set(first), word_set(second))
            if all(either):
                choices.append(either)
                head = head.replace(f"{first} or {second}", " ", 1)
        site = _EITHER_SITE.search(head) if neoplasm else None
        if site is not None:
            either = (word_set(site.group(1)), word_set(site.group(2)))
            if all(either):
                choices.append(either)
                head = head[:site.start()]
        essential |= word_set(head)
        for tail in rest:
            optional |= word_set(tail)
    if "lobe" in essential:  # "lower lobe, right bronchus or lung": a lobe is the lung's
        choices = [group for group in choices if frozenset({"lung"}) not in group]
    skin_free = any(kind in text.lower() for kind in _SKIN_TITLES)
    moved = {word for word in essential
             if word in DEFAULT_WORDS or (word == "skin" and skin_free)}
    essential -= moved
    optional |= moved
    if len(essential) + len(choices) < 2:
        essential |= bracketed - moved
    else:
        optional |= bracketed
    optional -= essential
    if not essential:
        return None
    return Term(code, text, frozenset(essential), frozenset(optional), tuple(choices))


@dataclass(frozen=True)
class Match:
    """A term found in a stretch of text, with the words it explained."""

    term: Term
    score: float
    covered: frozenset[str]
    missing_defaults: int


class TermIndex:
    """Terms keyed by their rarest essential word, so a text looks up only what it could match."""

    def __init__(self, terms: Iterable[Term]) -> None:
        self.terms = list(terms)
        frequency: Counter[str] = Counter()
        for entry in self.terms:
            frequency.update(entry.essential)
        self._by_rarest: dict[str, list[Term]] = defaultdict(list)
        for entry in self.terms:
            rarest = min(entry.essential, key=lambda word: (frequency[word], word))
            self._by_rarest[rarest].append(entry)

    def __len__(self) -> int:
        return len(self.terms)

    def matches(self, present: frozenset[str]) -> list[Match]:
        """Every term whose essential words (and one alternative of each of its choices) are
        all in ``present``, best first."""
        found: dict[str, Match] = {}
        for word in present:
            for entry in self._by_rarest.get(word, ()):
                if not entry.essential <= present:
                    continue
                if entry.choices and not all(any(alternative <= present
                                                 for alternative in group)
                                             for group in entry.choices):
                    continue
                if _COSTLY_DEFAULTS <= entry.optional - present:
                    continue  # "other specified ...": a residual code is never a guess
                match = _score(entry, present)
                best = found.get(entry.code)
                if best is None or match.score > best.score:
                    found[entry.code] = match
        return sorted(found.values(), key=lambda m: (-m.score, m.missing_defaults, m.term.code))


def _score(entry: Term, present: frozenset[str]) -> Match:
    covered_optional = entry.optional & present
    missing = entry.optional - present
    cost = sum(0.45 if word in _COSTLY_DEFAULTS else 0.08 for word in missing)
    chosen: frozenset[str] = frozenset().union(*(
        max((alternative for alternative in group if alternative <= present), key=len)
        for group in entry.choices)) if entry.choices else frozenset()
    score = len(entry.essential) + len(chosen) + 0.6 * len(covered_optional) - cost
    return Match(entry, score, entry.essential | chosen | covered_optional, len(missing))
