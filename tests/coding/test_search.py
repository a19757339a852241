"""The encoder's search: words, abbreviations, misspellings, prefixes and codes."""

from __future__ import annotations

import pytest

from chartkeeper.coding.search import SearchIndex
from chartkeeper.coding.service import _entries
from tests.coding.packaged import packaged_tabular


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex(_entries(packaged_tabular(), []))


def codes(index: SearchIndex, query: str, limit: int = 5) -> list[str]:
    return [hit.code for hit in index.search(query, limit)]


@pytest.mark.parametrize(("query", "expected"), [
    ("essential hypertension", "I10"),
    ("htn", "I10"),                      # abbreviation
    ("hypertention", "I10"),             # misspelling
    ("hypert", "I10"),                   # prefix as typed
    ("diabetis type 2", "E11.9"),
    ("copd exacerbation", "J44.1"),      # inclusion term "Decompensated COPD" and title
    ("pneumonia", "J18.9"),
    ("chf", "I50.9"),
])
def test_queries_find_the_code_a_coder_wants_near_the_top(index: SearchIndex, query: str,
                                                          expected: str) -> None:
    assert expected in codes(index, query)


def test_a_code_finds_itself_first_then_its_extensions(index: SearchIndex) -> None:
    found = codes(index, "s72.00", 4)
    assert found[0] == "S72.00"
    assert all(code.startswith("S72.00") for code in found)
    assert codes(index, "E119")[0] == "E11.9"


def test_inclusion_terms_say_where_they_come_from(index: SearchIndex) -> None:
    hits = index.search("decompensated copd", 5)
    assert any(h.code == "J44.1" and h.source == "inclusion term" for h in hits)


def test_nothing_matching_gives_nothing(index: SearchIndex) -> None:
    assert index.search("", 5) == []
    assert index.search("qqqzzzxx", 5) == []
