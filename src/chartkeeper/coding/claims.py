"""From a coded Claim to an X12 837 claim: the MS-DRG and the 837I/837P claim.

``stay_of`` builds the grouper's inputs from the record and ``drg`` records the MS-DRG on the
Claim. ``claim_to_x12`` and ``prepare`` read everything an 837 needs from the store (billing
provider, payer, subscriber, attending, charges) and list every missing piece at once. The
release is ``claim_release``; the answers to the 837 are posted by ``remittance_posting``.

This module is the public face: ``prepare`` and ``claim_to_x12``, the errors of the 837 and its
release, and the release's code systems. The record and the errors every step raises are in
:mod:`claim_record`, the stay and its MS-DRG in :mod:`claim_stay`, the billing provider, payer,
subscriber and clinicians in :mod:`claim_parties`, the charges and each claim type's part in
:mod:`claim_lines`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chartkeeper import x12
from chartkeeper.coding import edits
from chartkeeper.coding.claim_lines import institutional_part, professional_part, usd
from chartkeeper.coding.claim_parties import billing_provider, focal_coverage, insured
from chartkeeper.coding.claim_record import (
    ClaimChanged,
    ClaimsError,
    Resource,
    StayError,
    birth_and_sex,
    identifier_of,
    read_record,
    read_resource,
    require_draft,
)
from chartkeeper.coding.claim_stay import claim_diagnoses, discharge_status, drg
from chartkeeper.store.service import Txn
from chartkeeper.x12.checks import PATIENT_CONTROL_NUMBER_MAX
from chartkeeper.x12.claim import Claim as X12Claim

# Ours: the patient control number (CLM01) a Claim was sent with, and the control number
# (ISA13 = GS06 = ST02) of the batch that carried it.
PCN_SYSTEM = "urn:chartkeeper:patient-control-number"
CONTROL_SYSTEM = "urn:chartkeeper:x12:control-number"
TRANSACTION_SYSTEM = "urn:chartkeeper:x12:transaction"
TAG_SYSTEM = "urn:chartkeeper:claims"
BATCH_TAG = {"system": TAG_SYSTEM, "code": "x12-837", "display": "Outbound X12 837 claim batch"}
REJECTED_CODE = "rejected"
X12_MEDIA_TYPE = "application/EDI-X12"


# ------------------------------------------------------------------------------- errors
class ClaimIncomplete(ClaimsError):
    """The record lacks what the 837 needs; ``missing`` lists every piece at once.

    ``coded`` is the claim as the coding edits read it, when the record gives that much.
    """

    def __init__(self, claim: str, missing: Sequence[str],
                 coded: edits.CodedClaim | None = None) -> None:
        self.missing = tuple(missing)
        self.coded = coded
        lines = "\n".join(f"  - {item}" for item in self.missing)
        super().__init__(f"{claim} cannot be written as an 837 "
                         f"({_count(len(self.missing), 'piece')} missing):\n{lines}")


class ReleaseRefused(ClaimsError):
    """The edits or the X12 release gate refused the claim; nothing was stored or sent."""

    def __init__(self, claim: str, problems: Sequence[str], *,
                 edit_errors: Sequence[edits.Edit] = (),
                 x12_issues: Sequence[x12.X12Issue] = (),
                 missing: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        self.edit_errors = tuple(edit_errors)
        self.x12_issues = tuple(x12_issues)
        self.missing = tuple(missing)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{claim} was not released; nothing was stored or sent "
                         f"({_count(len(self.problems), 'problem')}):\n{lines}")


class OutboxError(ClaimsError):
    """The outbox cannot take the file (before the release), or the write failed (after)."""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# --------------------------------------------------------------------------- the 837 claim
def patient_control_number(claim_ref: str) -> str:
    """CLM01 for a Claim: its id's letters and digits, upper case, cut to the 20 characters
    payers keep (a UUID's first 80 bits). Stored on the released Claim as an identifier."""
    return re.sub(r"[^0-9A-Za-z]", "", claim_ref)[:PATIENT_CONTROL_NUMBER_MAX].upper()


@dataclass(frozen=True)
class Prepared:
    """A Claim as an X12 claim, with the priced lines to record on the released version."""

    claim: Resource
    x12_claim: X12Claim
    coded: edits.CodedClaim
    items: list[Resource]
    total: Decimal
    payer: str
    warnings: list[str]


def claim_to_x12(txn: Txn, claim_ref: str) -> X12Claim:
    """The 837I (institutional) or 837P (professional) claim model of a coded Claim.

    Raises ClaimIncomplete listing every missing piece (coverage, payer and its payer id,
    subscriber id, the billing provider's NPI, EIN and address, the attending's NPI, a
    placeholder provider, unpriced lines...)."""
    return prepare(txn, claim_ref).x12_claim


def prepare(txn: Txn, claim_ref: str) -> Prepared:
    """``claim_to_x12`` with what the release records: the edits' view, lines and total."""
    record = read_record(txn, claim_ref)
    birth, sex = birth_and_sex(record)
    billing = billing_provider(txn, record)
    coverage = focal_coverage(txn, record)
    subscriber, patient, payer, payer_ref = insured(txn, record, coverage, birth, sex)
    diagnoses = claim_diagnoses(record, with_poa=record.institutional)
    if record.institutional:
        built = institutional_part(txn, record, birth, sex, diagnoses)
    else:
        built = professional_part(txn, record, birth, sex, diagnoses)
    if record.gaps or built.coded is None:
        raise ClaimIncomplete(record.where, record.gaps, built.coded)
    assert billing is not None and subscriber is not None and payer_ref is not None
    common: dict[str, Any] = dict(
        patient_control_number=patient_control_number(str(record.claim["id"])),
        billing_provider=billing, subscriber=subscriber, payer=payer, total_charge=built.total,
        patient=patient)
    x12_claim: X12Claim
    if record.institutional:
        x12_claim = x12.InstitutionalClaim(**common, **built.fields)
    else:
        x12_claim = x12.ProfessionalClaim(**common, **built.fields)
    return Prepared(record.claim, x12_claim, built.coded, built.items, built.total, payer_ref,
                    built.warnings)


__all__ = [
    "BATCH_TAG",
    "CONTROL_SYSTEM",
    "PCN_SYSTEM",
    "REJECTED_CODE",
    "TAG_SYSTEM",
    "TRANSACTION_SYSTEM",
    "X12_MEDIA_TYPE",
    "ClaimChanged",
    "ClaimIncomplete",
    "ClaimsError",
    "OutboxError",
    "Prepared",
    "ReleaseRefused",
    "Resource",
    "StayError",
    "claim_to_x12",
    "discharge_status",
    "drg",
    "identifier_of",
    "patient_control_number",
    "prepare",
    "read_resource",
    "require_draft",
    "usd",
]
