"""Interchange control numbers: unique under concurrent releases, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chartkeeper.coding.claim_release import next_control_number
from chartkeeper.coding.claims import BATCH_TAG, CONTROL_SYSTEM
from chartkeeper.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    yield store
    store.dispose()


def test_concurrent_releases_never_share_a_control_number(store: Store) -> None:
    taken: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def release_many() -> None:
        try:
            for _ in range(15):
                number = next_control_number(store)
                with lock:
                    taken.append(number)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=release_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(taken) == list(range(1, 91))


def test_the_counter_starts_after_the_batches_already_stored(store: Store) -> None:
    with store.write() as txn:
        for control in ("41", "7"):
            txn.create({"resourceType": "DocumentReference", "meta": {"tag": [BATCH_TAG]},
                        "identifier": [{"system": CONTROL_SYSTEM, "value": control}],
                        "status": "current",
                        "content": [{"attachment": {"contentType": "application/EDI-X12",
                                                    "data": "SVNBKg=="}}]})
    assert [next_control_number(store) for _ in range(3)] == [42, 43, 44]
