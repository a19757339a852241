"""The link between a user and the Practitioner the record names, kept in the record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chartkeeper.security.practitioners import (
    USER_SYSTEM,
    PractitionerLinkError,
    link_practitioner,
    practitioner_of,
)
from chartkeeper.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    with store.write() as txn:
        for pid in ("dr-a", "dr-b"):
            txn.update("Practitioner", pid, {"resourceType": "Practitioner", "id": pid,
                                             "identifier": [{"system": "http://hl7.org/fhir/"
                                                             "sid/us-npi", "value": pid}]})
    yield store
    store.dispose()


def test_link_once_and_look_up(store: Store) -> None:
    assert link_practitioner(store, "DrSmith", "dr-a")
    assert not link_practitioner(store, "drsmith", "dr-a")  # already: nothing written
    with store.read() as txn:
        assert practitioner_of(txn, "drsmith") == "dr-a"
        assert practitioner_of(txn, "nobody") is None
        identifiers = txn.read("Practitioner", "dr-a")["identifier"]
        assert {"system": USER_SYSTEM, "value": "drsmith"} in identifiers
        assert len(identifiers) == 2 and txn.read("Practitioner", "dr-a")["meta"][
            "versionId"] == "2"


@pytest.mark.parametrize(("user", "practitioner", "message"), [
    ("drsmith", "dr-b", "already linked to Practitioner/dr-a"),
    ("drjones", "dr-a", "already linked to user drsmith"),
    ("drjones", "no-such", "does not exist"),
])
def test_conflicting_links_are_refused(store: Store, user: str, practitioner: str,
                                       message: str) -> None:
    link_practitioner(store, "drsmith", "dr-a")
    with pytest.raises(PractitionerLinkError, match=message):
        link_practitioner(store, user, practitioner)
