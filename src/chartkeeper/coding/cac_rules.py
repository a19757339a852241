"""The guideline and text helpers computer-assisted coding applies: clauses, the spans and
facts a note states, and which codes give way to others or may be principal."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from spacy.tokens import Doc

from chartkeeper.coding.cac_results import Suggestion
from chartkeeper.coding.terms import Match, Word

_CLAUSE_BREAK = re.compile(r"[;:#\n]|(?<!\d)\.(?!\d)|\s-\s|^\s*-\s|\b\d{1,2}\.\s", re.M)
_INFANT_AGE = re.compile(r"\b\d{1,2}[- ]?(?:months?|mos?|weeks?|wks?|days?)[- ]old\b", re.I)
_AGE = re.compile(r"\b(\d{1,3})[- ]?(?:years?[- ]old|year-old|yo|y/o|y\.o\.)", re.I)
_GRAVIDA = re.compile(r"\bG(\d{1,2})\s?P\d", re.I)
_WEEKS = re.compile(r"\b(\d{1,2})\s*(?:weeks|wks|w)\b(?!\s*ago)", re.I)
_UNSPECIFIED = re.compile(r"\bunspecified\b", re.I)
_SITE_NOT_SPECIFIED = re.compile(r"\b(?:site not specified|unspecified site)\b", re.I)


def _end_char(doc: Doc, token_end: int) -> int:
    return doc[token_end - 1].idx + len(doc[token_end - 1].text) if token_end > 0 else 0


def _site_documented(code: str, codes: set[str]) -> bool:
    """Whether ``code`` is a neoplasm code of unspecified site beside a proposed code of a
    documented site (guideline I.C.2.d: C80.1 only when no primary site can be determined;
    likewise C77.9 beside another node group, C79.9 beside a named secondary site). Codes
    titled "unspecified" give way to a specific code of their category (``_gives_way``)."""
    if code == "C80.1":
        return any("C00" <= other[:3] <= "C75" for other in codes)
    if code == "C77.9":
        return any(other[:3] == "C77" and other != code for other in codes)
    if code == "C79.9":
        return any(other[:3] in ("C77", "C78", "C79") and other != code for other in codes)
    return False


def _site_named_beside(weaker: Suggestion, proposed: list[Suggestion],
                       clauses: Mapping[str, set[int]]) -> bool:
    """Whether ``weaker`` is a "site not specified" code ("Urinary tract infection, site not
    specified") and the same clause of the note names the site with a code of the same
    chapter ("upper UTI (acute pyelonephritis)": N10, not N39.0 beside it)."""
    if not _SITE_NOT_SPECIFIED.search(weaker.display):
        return False
    return any(other is not weaker and other.proposed and other.code[0] == weaker.code[0]
               and not _SITE_NOT_SPECIFIED.search(other.display)
               and clauses.get(other.code, set()) & clauses.get(weaker.code, set())
               for other in proposed)


def _may_be_principal(code: str) -> bool:
    return not (code[0] in "VWXY" or code.startswith("Z37"))


def _clauses(text: str, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """Clauses of a section body as (start, end, is a "- " bullet), list markers left out."""
    clause_start, bullet = start, False
    for cut in _CLAUSE_BREAK.finditer(text, start, end):
        yield clause_start, cut.start(), bullet
        clause_start = cut.end()
        bullet = cut.group(0).strip() == "-" or (bullet and cut.group(0) not in "\n;")
    yield clause_start, end, bullet


def _distinct(matches: list[Match]) -> Iterator[Match]:
    """The matches that each explain words no better match explained (the most specific)."""
    chosen: list[Match] = []
    for match in matches:
        if any(match.covered <= better.covered for better in chosen):
            continue
        chosen.append(match)
        yield match


def _span_of(found: list[Word], covered: frozenset[str]) -> tuple[int, int] | None:
    positions = [w for w in found if w.text in covered]
    if not positions:
        return None
    return min(w.start for w in positions), max(w.end for w in positions)


def _document_facts(text: str, age: int | None) -> frozenset[str]:
    """Words a title may need that the note states once, not in every clause: the patient's
    age group, the pregnancy's order and trimester, and whether an injury is in follow-up."""
    facts: set[str] = set()
    if age is None:
        found = _AGE.search(text)
        age = int(found.group(1)) if found else (0 if _INFANT_AGE.search(text) else None)
    # The index makes "adult" a nonessential modifier of a medical examination: with no age
    # stated, an examination is an adult's (a child's is written as a well-child visit).
    facts.add("adult" if age is None or age >= 18 else "child")
    gravida = _GRAVIDA.search(text)
    if gravida:
        facts.add("first" if gravida.group(1) == "1" else "other")
    weeks = _WEEKS.search(text)
    if weeks:
        week = int(weeks.group(1))
        facts.update(("trimester", "first" if week < 14 else "second" if week < 28 else "third"))
    if gravida or re.search(r"\b(?:pregnan\w*|labou?r|deliver\w*|cesarean|breech|IUP|prenatal)\b",
                            text, re.I):
        facts.update(("maternal", "care", "obstetric"))
    if re.search(r"\b(?:s/p|status post)\b|\bpost-?op(?:erative)?\s+(?:f/u|follow|visit|check)",
                 text, re.I):
        facts.update(("subsequent", "routine", "healing"))
    return frozenset(facts)


def _facts_for(present: frozenset[str], facts: frozenset[str]) -> frozenset[str]:
    """Document facts join a clause only where they can qualify what it says."""
    if "examination" in present:
        if "child" in present:  # "well child": a child's examination, whatever the age said
            return frozenset()
        return facts & {"adult", "child"}
    if "pregnancy" in present:
        return facts & {"first", "second", "third", "trimester", "other"}
    if present & {"presentation", "labor", "delivery", "breech"}:
        return facts & {"maternal", "care"}
    if "fracture" in present:
        return facts & {"subsequent", "routine", "healing"}
    return frozenset()
