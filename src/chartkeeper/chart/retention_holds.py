"""Legal holds on patient records: a hold (litigation, investigation) stops destruction of the
patient's record until it is released.

A hold is a FHIR R4 ``Flag``: status active (released: inactive, with ``period.end``),
category ``admin``, code ``urn:chartkeeper:retention|legal-hold`` with the matter in
``code.text``, the Patient as subject, who placed it as ``author.display``. A Flag has no
element for who released it, so a release also writes a ``Provenance`` (activity
``legal-hold-release``, the releaser as ``agent.who.display``). Each hold Flag carries the
``meta.tag`` ``urn:chartkeeper:retention|legal-hold`` as well, because R4 defines no ``code``
search parameter on Flag: the tag is how holds are found through the search index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from chartkeeper.store import Store
from chartkeeper.store.errors import Conflict, Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Resource, Txn, now_instant, provenance_of

RETENTION_SYSTEM = "urn:chartkeeper:retention"
LEGAL_HOLD = {"system": RETENTION_SYSTEM, "code": "legal-hold", "display": "Legal hold"}
HOLD_RELEASE = {"system": RETENTION_SYSTEM, "code": "legal-hold-release",
                "display": "Legal hold released"}
HOLD_TAG = f"{RETENTION_SYSTEM}|legal-hold"
FLAG_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                 "code": "admin", "display": "Administrative"}
MAX_TEXT = 500
# Runs inside the write transaction just before it commits (the web appends its audit entry
# there, so the change and its entry land together).
BeforeCommit = Callable[[Txn], None] | None


def required_text(name: str, value: str) -> str:
    """``value`` with its white space collapsed; InvalidRequest when empty or too long."""
    value = " ".join(value.split())
    if not value:
        raise InvalidRequest(f"{name} is required")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"{name} is {len(value)} characters; at most {MAX_TEXT}")
    return value


def fhir_moment(as_of: date) -> str:
    """A FHIR dateTime for ``as_of`` (a datetime without a time zone is taken as UTC)."""
    if isinstance(as_of, datetime):
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return as_of.isoformat()


def is_legal_hold(resource: Mapping[str, Any]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return resource.get("resourceType") == "Flag" and any(
        c.get("system") == RETENTION_SYSTEM and c.get("code") == LEGAL_HOLD["code"]
        for c in codings if isinstance(c, dict))


@dataclass(frozen=True)
class LegalHold:
    """A legal hold (litigation, investigation) on a patient's record."""

    id: str
    patient_id: str
    matter: str
    placed_by: str
    placed: str
    active: bool
    released: str | None = None
    released_by: str | None = None


def _hold_of(flag: Resource, released_by: str | None = None) -> LegalHold:
    period = flag.get("period") or {}
    return LegalHold(
        id=str(flag["id"]),
        patient_id=str((flag.get("subject") or {}).get("reference", "")).removeprefix(
            "Patient/"),
        matter=str((flag.get("code") or {}).get("text", "")),
        placed_by=str((flag.get("author") or {}).get("display", "")),
        placed=str(period.get("start", "")), active=flag.get("status") == "active",
        released=period.get("end"), released_by=released_by)


def holds_for(txn: Txn, patient_id: str) -> list[LegalHold]:
    """The patient's legal holds, active and released, the newest first."""
    flags = [f for f in txn.search_params("Flag", [
        ("subject", f"Patient/{patient_id}"), ("_tag", HOLD_TAG),
        ("_count", "1000")]).matches if is_legal_hold(f)]
    return _holds(txn, flags)


def active_holds(txn: Txn, limit: int = 500) -> list[LegalHold]:
    """Active legal holds on any patient, the newest first (at most ``limit``)."""
    flags: list[Resource] = []
    offset = 0
    while len(flags) < limit:
        page = txn.search_params("Flag", [("_tag", HOLD_TAG), ("_sort", "-date"),
                                          ("_count", "500"), ("_offset", str(offset))]).matches
        flags += [f for f in page if is_legal_hold(f) and f.get("status") == "active"]
        offset += len(page)
        if len(page) < 500:
            break
    return _holds(txn, flags[:limit])


def _holds(txn: Txn, flags: list[Resource]) -> list[LegalHold]:
    released = provenance_of(txn, [("Flag", str(f["id"])) for f in flags
                                   if f.get("status") != "active"])
    holds = []
    for flag in flags:
        who = [a["who"].get("display") for p in released.get(("Flag", str(flag["id"])), [])
               for a in p.get("agent") or [] if _is_release(p)]
        holds.append(_hold_of(flag, next((w for w in who if w), None)))
    return sorted(holds, key=lambda h: h.placed, reverse=True)


def _is_release(provenance: Resource) -> bool:
    return any(c.get("code") == HOLD_RELEASE["code"]
               for c in (provenance.get("activity") or {}).get("coding") or [])


def place_hold(store: Store, patient_id: str, matter: str, placed_by: str, as_of: date,
               before_commit: BeforeCommit = None) -> LegalHold:
    """Put the patient's record on legal hold for ``matter`` (the case or investigation)."""
    matter = required_text("the matter", matter)
    placed_by = required_text("who placed the hold", placed_by)
    with store.write() as txn:
        txn.read("Patient", patient_id)  # NotFound / Gone
        flag = txn.create({
            "resourceType": "Flag",
            "meta": {"tag": [{"system": RETENTION_SYSTEM, "code": "legal-hold"}]},
            "status": "active", "category": [{"coding": [FLAG_CATEGORY]}],
            "code": {"coding": [LEGAL_HOLD], "text": matter},
            "subject": {"reference": f"Patient/{patient_id}"},
            "period": {"start": fhir_moment(as_of)}, "author": {"display": placed_by},
        }).resource
        if before_commit is not None:
            before_commit(txn)
    assert flag is not None
    return _hold_of(flag)


def release_hold(store: Store, flag_id: str, released_by: str, as_of: date,
                 before_commit: BeforeCommit = None) -> LegalHold:
    """Release a legal hold: the Flag becomes inactive with its period ended, and a
    Provenance records who released it (a Flag has no element for that)."""
    released_by = required_text("who released the hold", released_by)
    with store.write() as txn:
        try:
            flag = txn.read("Flag", flag_id)
        except (NotFound, Gone):
            raise NotFound(f"Flag/{flag_id} is not a legal hold") from None
        if not is_legal_hold(flag):
            raise NotFound(f"Flag/{flag_id} is not a legal hold")
        if flag.get("status") != "active":
            raise Conflict(f"the legal hold Flag/{flag_id} was released already "
                           f"({(flag.get('period') or {}).get('end', 'date unknown')})")
        end = fhir_moment(as_of)
        start = str((flag.get("period") or {}).get("start", ""))
        if start and end[:10] < start[:10]:
            raise InvalidRequest(f"a hold placed on {start} cannot be released on {end}")
        flag = dict(flag, status="inactive", period={**(flag.get("period") or {}), "end": end})
        result = txn.update("Flag", flag_id, flag)
        txn.create({
            "resourceType": "Provenance", "target": [{"reference": result.location}],
            "recorded": now_instant(), "activity": {"coding": [HOLD_RELEASE]},
            "agent": [{"who": {"display": released_by}}],
        })
        if before_commit is not None:
            before_commit(txn)
    assert result.resource is not None
    return _hold_of(result.resource, released_by)


