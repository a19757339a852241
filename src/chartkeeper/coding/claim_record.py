"""The claim's record as billing reads it: the errors every step raises, the reading helpers
(references, codings, identifiers, dates) and the coded Claim with its Encounter and Patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from chartkeeper.coding.worksheet import CLAIM_TYPE, ENCOUNTER_SYSTEM
from chartkeeper.store.errors import Conflict, Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Txn

Resource = dict[str, Any]


# ------------------------------------------------------------------------------- errors
class ClaimsError(InvalidRequest, ValueError):
    """A billing request that cannot be carried out; the message says what and why."""


class StayError(ClaimsError):
    """The record does not give the grouper its inputs (no POA, an unmapped discharge...)."""


class AlreadyReleased(Conflict, ValueError):
    """The Claim is no longer a draft: it was released (or cancelled) already."""


class ClaimChanged(Conflict, ValueError):
    """The Claim (or the batch numbering) changed while it was checked: do it again."""


class UnknownResource(NotFound, ValueError):
    """A resource the claim needs is not in the store."""


# ---------------------------------------------------------------------- reading the record
def read_resource(txn: Txn, resource_type: str, resource_id: str, what: str) -> Resource:
    try:
        return txn.read(resource_type, resource_id)
    except NotFound:
        raise UnknownResource(f"{what}: {resource_type}/{resource_id} is not known") from None
    except Gone:
        raise ClaimsError(f"{what}: {resource_type}/{resource_id} was deleted") from None


def target_of(reference: Resource | None, *kinds: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference to one of ``kinds``; None for none or a display."""
    text = str((reference or {}).get("reference") or "")
    kind, _, rest = text.partition("/")
    if kind not in kinds or not rest:
        return None
    return kind, rest.split("/_history/")[0]


def code_of(concept: Resource | None, system: str) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def identifier_of(resource: Resource, system: str) -> str | None:
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None


def day_of(value: object) -> date | None:
    """The calendar day a FHIR date or dateTime names, as written; None when not a full date."""
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


@dataclass
class Record:
    """A coded Claim with the Encounter and Patient it bills; ``gaps`` collects what is
    missing, so that every problem is reported at once."""

    claim: Resource
    encounter: Resource
    patient: Resource
    gaps: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"Claim/{self.claim['id']}"

    @property
    def institutional(self) -> bool:
        return code_of(self.claim.get("type"), CLAIM_TYPE) == "institutional"


def read_record(txn: Txn, claim_ref: str) -> Record:
    claim = read_resource(txn, "Claim", claim_ref, "the claim")
    encounter_id = identifier_of(claim, ENCOUNTER_SYSTEM)
    if encounter_id is None:
        raise ClaimsError(f"Claim/{claim_ref} names no encounter (identifier "
                          f"{ENCOUNTER_SYSTEM}); only coded Claims are billed here")
    kind = code_of(claim.get("type"), CLAIM_TYPE)
    if kind not in ("institutional", "professional"):
        raise ClaimsError(f"Claim/{claim_ref} is of type {kind!r}: only institutional (837I) "
                          "and professional (837P) claims are written")
    encounter = read_resource(txn, "Encounter", encounter_id, f"Claim/{claim_ref}")
    patient_ref = target_of(claim.get("patient"), "Patient")
    if patient_ref is None:
        raise ClaimsError(f"Claim/{claim_ref} has no Patient")
    patient = read_resource(txn, "Patient", patient_ref[1], f"Claim/{claim_ref}")
    return Record(claim, encounter, patient)


def birth_and_sex(record: Record) -> tuple[date | None, str]:
    patient = record.patient
    birth = day_of(patient.get("birthDate")) if len(str(patient.get("birthDate"))) == 10 \
        else None
    if birth is None:
        record.gaps.append(f"Patient/{patient['id']} has no full birth date (birthDate "
                           f"{patient.get('birthDate')!r}): the age and the 837 need it")
    gender = patient.get("gender")
    return birth, gender if gender in ("male", "female") else "unknown"


def require_draft(claim: Resource, action: str) -> None:
    if claim.get("status") != "draft":
        raise AlreadyReleased(f"Claim/{claim['id']} is {claim.get('status')}, not a draft: "
                              f"cannot {action} it (it was released, or cancelled)")
