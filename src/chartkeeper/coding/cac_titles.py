"""A Coder's term index built from the code titles of one code-set release: the terms each
title and inclusion term gives, less those that name an organ alone."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from spacy.language import Language

from chartkeeper.coding.terms import Term, TermIndex, words

if TYPE_CHECKING:
    from chartkeeper.coding.cac import Coder


def coder_from_titles(entries: Iterable[tuple[str, str, Iterable[str]]],
                      nlp: Language | None = None,
                      excludes1: Callable[[str, str], str | None] | None = None) -> Coder:
    """A Coder over billable codes given as (code, title, inclusion terms)."""
    from chartkeeper.coding.cac import Coder
    from chartkeeper.coding.terms import term

    listed = [(code, title, tuple(inclusion)) for code, title, inclusion in entries]
    sites = body_sites(title for _, title, _ in listed)
    terms = []
    displays: dict[str, str] = {}
    for code, title, inclusion in listed:
        displays[code] = title
        if "in diseases classified elsewhere" in title.lower():
            # Manifestation codes are reached from the underlying disease's "use additional
            # code" note, never coded alone (guideline I.A.13).
            continue
        for text in (title, *inclusion, *_colon_forms(title)):
            made = term(code, text)
            if made is not None and not _organ_only(made, sites):
                terms.append(made)
    return Coder(TermIndex(terms), displays, nlp, excludes1)


def _colon_forms(title: str) -> list[str]:
    """The classification's "large intestine" as notes write it: "Personal history of ...
    of large intestine" is a history of colon cancer, "Diverticulosis of large intestine" is
    diverticulosis of the colon. (Not a word form for everything: the procedure tables name
    the large intestine and each part of the colon as body parts of their own.)"""
    found = re.sub(r"\blarge intestine\b", "colon", title, flags=re.I)
    return [found] if found != title else []


_NEOPLASM_SITE = re.compile(r"^(?:malignant|benign) neoplasm of (.+)$")
_GENERIC_HEAD = re.compile(r"\b(?:disorders?|diseases?|conditions?)\b")


def body_sites(titles: Iterable[str]) -> frozenset[str]:
    """The words that name body sites, from the classification's own neoplasm titles
    ("Malignant neoplasm of prostate")."""
    found: set[str] = set()
    for title in titles:
        site = _NEOPLASM_SITE.match(title.lower())
        if site is not None:
            found |= {w.text for w in words(site.group(1))}
    return frozenset(found)


def _organ_only(made: Term, sites: frozenset[str]) -> bool:
    """A title that says only "a disorder of" an organ ("Disorder of prostate, unspecified",
    "Other disorders of lung", "Liver disease, unspecified"): "disorder", "disease" and
    "condition" are no words to match, so the term would be the organ's name alone and be
    proposed for any mention of the organ ("prostate cancer"). Not a term for suggestion."""
    return (len(made.essential) == 1 and not made.choices and made.essential <= sites
            and _GENERIC_HEAD.search(made.text.lower()) is not None)
