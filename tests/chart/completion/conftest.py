"""Fixtures of the record-completion tests: an empty SQLite store, and a chart-maker on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chartkeeper.store import Store
from tests.chart.completion.charts import Chart


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    store = Store(sqlite_url)
    store.create_schema()
    yield store
    store.dispose()


@pytest.fixture
def chart(store: Store) -> Chart:
    return Chart(store)
