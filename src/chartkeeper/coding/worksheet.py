"""The coder's worksheet: the code systems, codings and tags it reads and writes, its errors,
the coder and a decision, and the ids of what a finalization stores.

The worksheet is built in layers, each in its own module:

- ``worksheet_text``: the encounter's current documents as the one text the engine reads;
- ``worksheet_view``: ``worksheet`` suggests codes for that text (re-ranked by what coders
  decided before, ``feedback.rerank``) and shows what was decided already;
- ``worksheet_decisions`` (with ``worksheet_codes``): ``prepare`` checks the coder's decision
  on each suggestion (accept, reject, edit to another code, add one the engine missed) and
  every final code against the code-set release in force on the date of service;
- ``worksheet_write``: ``decide`` writes in one store transaction a Condition per diagnosis,
  the Encounter's billing diagnoses, a Procedure per procedure code, a draft Claim, one
  Provenance naming all of them, the feedback rows and (with a trail or hook) the audit entry.
  Anything invalid raises before a single row is written;
- ``worksheet_queue``: ``queue`` is the coders' work list: finished encounters with no coded
  Claim, oldest discharge first.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from chartkeeper.store.errors import Conflict, InvalidRequest

Resource = dict[str, Any]
Setting = Literal["inpatient", "outpatient"]
Action = Literal["accept", "reject", "edit", "add"]
ACTIONS: tuple[Action, ...] = ("accept", "reject", "edit", "add")

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
PROCEDURE_SYSTEMS = {"icd10pcs": "http://www.cms.gov/Medicare/Coding/ICD10",
                     "hcpcs": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                     "cpt": "http://www.ama-assn.org/go/cpt"}
PROCEDURE_NAMES = {"icd10pcs": "ICD-10-PCS", "hcpcs": "HCPCS Level II", "cpt": "CPT"}
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})  # v3-ActCode inpatient encounters
# Present on admission (UB-04 / 837I): Y, N, U, W in FHIR's own example code system (lower
# case there), and with "1" (exempt from reporting, not in that code system) in the NUBC's.
POA_INDICATORS = {"Y": "Yes", "N": "No", "U": "Unknown", "W": "Clinically undetermined",
                  "1": "Exempt from POA reporting"}
POA_FHIR = "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission"
POA_NUBC = "https://www.nubc.org/CodeSystem/PresentOnAdmissionIndicators"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
# Everything a finalization writes carries this tag (a Claim also carries the flags billing
# must clear before it sends the claim, ``worksheet_write``).
TAG_SYSTEM = "urn:chartkeeper:coding"
CODED = {"system": TAG_SYSTEM, "code": "coded", "display": "Final codes from the worksheet"}
# Claim.identifier: the encounter a coded Claim bills (the claim's patient control number).
ENCOUNTER_SYSTEM = "urn:chartkeeper:encounter"
_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:chartkeeper:coding")


# ------------------------------------------------------------------------------- errors
class CodingError(InvalidRequest, ValueError):
    """A worksheet request that cannot be carried out; the message names what and why."""


class InvalidCode(CodingError):
    """A final code is not a valid, billable code of the release in force on the date."""

    issue_code = "code-invalid"


class NoCodeSet(CodingError):
    """No release of a code system is in force on the date of service."""

    issue_code = "not-supported"


class DecisionError(CodingError):
    """The decisions do not make a coded encounter (unknown suggestion, missing POA...)."""


class NotCodable(CodingError):
    """The encounter cannot be coded as it stands (not finished, no patient, bad dates)."""


class AlreadyBilled(Conflict, ValueError):
    """The encounter's Claim is no longer a draft: re-coding would change a submitted claim."""


# ---------------------------------------------------------------------- who and what
@dataclass(frozen=True)
class Coder:
    """The person deciding: recorded on the Provenance, the audit entry and the feedback."""

    user: str
    role: str

    def __post_init__(self) -> None:
        if not self.user.strip() or len(self.user) > 128:
            raise CodingError(f"the coder's user name must be 1 to 128 characters, got "
                              f"{self.user!r}")
        if not self.role.strip() or len(self.role) > 64:
            raise CodingError(f"the coder's role must be 1 to 64 characters, got {self.role!r}")


@dataclass(frozen=True)
class Decision:
    """One decision on the worksheet.

    ``accept``/``reject``/``edit`` name a suggestion by its code; ``edit`` replaces it by
    ``replacement`` and needs a ``reason``; ``add`` is a code the engine did not suggest.
    ``system`` None is an ICD-10-CM diagnosis; ``icd10pcs`` (inpatient), ``hcpcs`` or ``cpt``
    (outpatient) a procedure, performed on ``performed`` (default: the date of service for
    outpatient). ``poa`` is the present-on-admission indicator every inpatient diagnosis
    needs (Y, N, U, W or 1). Final diagnoses are sequenced in the order of the decisions:
    the first is the principal (inpatient) or first-listed (outpatient) diagnosis.
    """

    action: Action
    code: str
    replacement: str | None = None
    reason: str | None = None
    poa: str | None = None
    system: str | None = None
    performed: date | None = None
    units: int = 1

    @classmethod
    def accept(cls, code: str, *, poa: str | None = None, system: str | None = None,
               performed: date | None = None, units: int = 1) -> Decision:
        return cls("accept", code, poa=poa, system=system, performed=performed, units=units)

    @classmethod
    def reject(cls, code: str, *, reason: str | None = None,
               system: str | None = None) -> Decision:
        return cls("reject", code, reason=reason, system=system)

    @classmethod
    def edit(cls, code: str, to: str, *, reason: str, poa: str | None = None,
             system: str | None = None, performed: date | None = None,
             units: int = 1) -> Decision:
        return cls("edit", code, replacement=to, reason=reason, poa=poa, system=system,
                   performed=performed, units=units)

    @classmethod
    def add(cls, code: str, *, poa: str | None = None, system: str | None = None,
            performed: date | None = None, units: int = 1,
            reason: str | None = None) -> Decision:
        return cls("add", code, reason=reason, poa=poa, system=system, performed=performed,
                   units=units)

    @property
    def kind(self) -> str:
        return "diagnosis" if self.system is None else "procedure"

    @property
    def final_code(self) -> str | None:
        if self.action == "reject":
            return None
        return self.replacement if self.action == "edit" else self.code


# ------------------------------------------------------------------ what a coding stores
def claim_id(encounter_id: str) -> str:
    """The id of the Claim that bills an encounter (one per encounter, re-coded in place)."""
    return str(uuid.uuid5(_IDS, f"Encounter/{encounter_id}/Claim"))


def resource_id(encounter_id: str, kind: str, key: str) -> str:
    """The id of a Condition or Procedure a coding of the encounter stores for ``key``."""
    return str(uuid.uuid5(_IDS, f"Encounter/{encounter_id}/{kind}/{key}"))


def version_body(resource: Resource) -> Resource:
    """A stored version as the body of a new version: less what the store stamps."""
    body = copy.deepcopy(resource)
    meta = {k: v for k, v in body.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return body
