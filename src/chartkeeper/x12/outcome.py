"""Puts 277CA statuses and 835 payments back onto the claims they answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chartkeeper.x12.claim import Claim
from chartkeeper.x12.errors import X12Error
from chartkeeper.x12.remittance import ClaimPayment, Remittance
from chartkeeper.x12.responses import ClaimStatus


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """What became of one claim: its latest 277CA status and its 835 payments, if any yet."""

    claim: Claim
    statuses: tuple[ClaimStatus, ...]
    payments: tuple[ClaimPayment, ...]

    @property
    def rejected(self) -> bool:
        """The last 277CA status rejected the claim (a corrected claim is needed)."""
        return bool(self.statuses) and self.statuses[-1].rejected

    @property
    def paid(self) -> bool:
        return any(payment.paid > 0 for payment in self.payments)


def reconcile(
    claims: Sequence[Claim],
    statuses: Sequence[ClaimStatus] = (),
    remittances: Sequence[Remittance] = (),
) -> list[ClaimOutcome]:
    """One outcome per claim, in the claims' order; X12Error for an answer to an unknown claim.

    Answers are matched on the patient control number (CLM01, echoed in 277CA TRN02 and 835
    CLP01); a billed amount that differs from the claim's total is an error too, since it means
    the answer is for another claim with the same number.
    """
    by_number = {claim.patient_control_number: claim for claim in claims}
    found_statuses: dict[str, list[ClaimStatus]] = {number: [] for number in by_number}
    found_payments: dict[str, list[ClaimPayment]] = {number: [] for number in by_number}
    for status in statuses:
        claim = _claim_for(by_number, status.patient_control_number, "277CA status")
        if status.billed is not None and abs(status.billed) != claim.total_charge:
            raise X12Error(f"277CA status for claim {status.patient_control_number!r} reports "
                           f"{status.billed} billed; the claim's total is {claim.total_charge}")
        found_statuses[claim.patient_control_number].append(status)
    for remittance in remittances:
        for payment in remittance.claims:
            claim = _claim_for(by_number, payment.patient_control_number, "835 payment")
            if abs(payment.billed) != claim.total_charge:
                raise X12Error(f"835 {remittance.trace_number} pays claim "
                               f"{payment.patient_control_number!r} billed at {payment.billed}; "
                               f"the claim's total is {claim.total_charge}")
            found_payments[claim.patient_control_number].append(payment)
    return [
        ClaimOutcome(claim, tuple(found_statuses[number]), tuple(found_payments[number]))
        for number, claim in by_number.items()
    ]


def _claim_for(by_number: dict[str, Claim], number: str, what: str) -> Claim:
    if number not in by_number:
        known = ", ".join(sorted(by_number)) or "none"
        raise X12Error(f"{what} for claim {number!r}, which is not among the claims ({known})")
    return by_number[number]
