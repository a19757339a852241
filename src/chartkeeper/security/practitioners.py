"""Which Practitioner a user is: the link between a sign-in account and the clinician the
record names as author, attending or owner of a deficiency.

The link lives in the record itself, as an identifier of the Practitioner resource
(``urn:chartkeeper:user|<username>``), so any FHIR client sees it and it is versioned and
audited like every other change.
"""

from __future__ import annotations

from chartkeeper.security.identity import SecurityError, normalize_username
from chartkeeper.store import Store
from chartkeeper.store.errors import Gone, NotFound
from chartkeeper.store.service import Txn

USER_SYSTEM = "urn:chartkeeper:user"


class PractitionerLinkError(SecurityError, ValueError):
    """The practitioner does not exist, or the user is already linked to another one."""


def practitioner_of(txn: Txn, username: str) -> str | None:
    """The id of the Practitioner linked to ``username``, if any."""
    page = txn.search_params("Practitioner", [
        ("identifier", f"{USER_SYSTEM}|{normalize_username(username)}"), ("_count", "2")])
    return str(page.matches[0]["id"]) if page.matches else None


def link_practitioner(store: Store, username: str, practitioner_id: str) -> bool:
    """Record that ``username`` is Practitioner/``practitioner_id``; False if it already was."""
    name = normalize_username(username)
    with store.write() as txn:
        current = practitioner_of(txn, name)
        if current == practitioner_id:
            return False
        if current is not None:
            raise PractitionerLinkError(
                f"{name} is already linked to Practitioner/{current}; unlink it first")
        try:
            practitioner = txn.read("Practitioner", practitioner_id)
        except (NotFound, Gone):
            raise PractitionerLinkError(
                f"Practitioner/{practitioner_id} does not exist") from None
        others = [i for i in practitioner.get("identifier") or []
                  if i.get("system") == USER_SYSTEM]
        if others:
            raise PractitionerLinkError(
                f"Practitioner/{practitioner_id} is already linked to user {others[0]['value']}")
        practitioner["identifier"] = [*(practitioner.get("identifier") or []),
                                      {"system": USER_SYSTEM, "value": name}]
        txn.update("Practitioner", practitioner_id, practitioner)
    return True
