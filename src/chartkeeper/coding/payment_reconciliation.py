"""An 835 remittance as a whole: one FHIR R4 ``PaymentReconciliation`` per transaction set.

The ClaimResponses say what was paid on each claim; the PaymentReconciliation says what the
payment itself was: the payer, the date and amount of the check or EFT (BPR), its trace number
(TRN), one ``detail`` per claim paid (with its Claim and ClaimResponse), and the provider-level
adjustments of the PLB segment (interest paid, overpayments recovered, forwarding balances...)
that are no claim's. The details add up to the payment: the claims' amounts less the PLB
amounts, as X12 balances BPR02 (``x12.parse_835`` has checked that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chartkeeper.coding.claims import usd
from chartkeeper.x12.remittance import ClaimPayment, ProviderAdjustment, Remittance

Resource = dict[str, Any]

PAYMENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/payment-type"
PLB_REASON_SYSTEM = "https://x12.org/codes/provider-adjustment-reason-codes"
# Ours: the PLB03-2 reference of an adjustment (the claim or the recovery it concerns).
PLB_REFERENCE_SYSTEM = "urn:chartkeeper:x12:835-provider-adjustment-reference"
TRACE_SYSTEM = "urn:chartkeeper:x12:835-trace-number"

#: Common provider adjustment reason codes (X12 element 426) an 835 carries in PLB03-1.
PLB_REASONS = {
    "50": "Late Charge", "51": "Interest Penalty Charge", "72": "Authorized Return",
    "90": "Early Payment Allowance", "AP": "Acceleration of Benefits",
    "B2": "Rebate", "B3": "Recovery Allowance", "BD": "Bad Debt Adjustment",
    "C5": "Temporary Allowance", "CR": "Capitation Interest", "CS": "Adjustment",
    "CT": "Capitation Payment", "CV": "Capital Passthru", "E3": "Withholding",
    "FB": "Forwarding Balance", "FC": "Fund Allocation", "GO": "Garnishment",
    "IP": "Incentive Premium Payment", "IR": "Internal Revenue Service Withholding",
    "IS": "Interim Settlement", "J1": "Nonreimbursable", "L3": "Penalty",
    "L6": "Interest Owed", "LE": "Levy", "LS": "Lump Sum", "OA": "Organ Acquisition Passthru",
    "OB": "Offset for Affiliated Providers", "PI": "Periodic Interim Payment",
    "PL": "Payment Final", "RA": "Retro-activity Adjustment",
    "RE": "Return on Equity", "SL": "Student Loan Repayment", "TL": "Third Party Liability",
    "WO": "Overpayment Recovery", "WU": "Unspecified Recovery",
}


def payment_reconciliation(remittance: Remittance, reconciliation_id: str,
                           paid: Sequence[tuple[Resource, str, ClaimPayment]],
                           created: str) -> Resource:
    """The PaymentReconciliation of ``remittance``; ``paid`` holds, for each claim it pays,
    the stored Claim, the id of the ClaimResponse posted for it and its CLP payment."""
    insurers = {str((claim.get("insurer") or {}).get("reference")) for claim, _, _ in paid}
    issuer: Resource = {"display": remittance.payer_name}
    if len(insurers) == 1 and next(iter(insurers)) != "None":
        issuer["reference"] = next(iter(insurers))
    details: list[Resource] = [_claim_detail(claim, response_id, payment, remittance)
                               for claim, response_id, payment in paid]
    details += [_provider_adjustment(adjustment) for adjustment in
                remittance.provider_adjustments]
    resource: Resource = {
        "resourceType": "PaymentReconciliation", "id": reconciliation_id,
        "identifier": [{"system": TRACE_SYSTEM, "value": remittance.trace_number}],
        "status": "active", "created": created, "paymentIssuer": issuer,
        "outcome": "complete",
        "disposition": (f"{_method(remittance)} of {remittance.total_paid} USD from "
                        f"{remittance.payer_name}, trace {remittance.trace_number}"
                        + (f", with {len(remittance.provider_adjustments)} provider "
                           "adjustment(s)" if remittance.provider_adjustments else "")),
        "paymentDate": remittance.payment_date.isoformat(),
        "paymentAmount": usd(remittance.total_paid),
        "paymentIdentifier": {"system": TRACE_SYSTEM, "value": remittance.trace_number},
    }
    requestors = {str((claim.get("provider") or {}).get("reference")) for claim, _, _ in paid}
    if len(requestors) == 1 and next(iter(requestors)) != "None":
        resource["requestor"] = {"reference": next(iter(requestors))}
    if details:
        resource["detail"] = details
    return resource


def _method(remittance: Remittance) -> str:
    return {"ACH": "EFT", "CHK": "Check", "NON": "No payment", "FWT": "Wire transfer",
            "BOP": "Financial institution option"}.get(remittance.payment_method,
                                                        f"Payment ({remittance.payment_method})")


def _claim_detail(claim: Resource, response_id: str, payment: ClaimPayment,
                  remittance: Remittance) -> Resource:
    return {
        "type": {"coding": [{"system": PAYMENT_TYPE_SYSTEM, "code": "payment",
                             "display": "Payment"}]},
        "request": {"reference": f"Claim/{claim['id']}"},
        "response": {"reference": f"ClaimResponse/{response_id}"},
        "date": remittance.payment_date.isoformat(),
        "amount": usd(payment.paid),
    }


def _provider_adjustment(adjustment: ProviderAdjustment) -> Resource:
    """A PLB pair: a positive amount was withheld from the payment, a negative one added."""
    reason: Resource = {"system": PLB_REASON_SYSTEM, "code": adjustment.reason_code}
    if adjustment.reason_code in PLB_REASONS:
        reason["display"] = PLB_REASONS[adjustment.reason_code]
    detail: Resource = {
        "type": {"coding": [{"system": PAYMENT_TYPE_SYSTEM, "code": "adjustment",
                             "display": "Adjustment"}, reason]},
        "date": adjustment.fiscal_period_end.isoformat(),
        "amount": usd(-adjustment.amount),
    }
    if adjustment.reference_id:
        detail["identifier"] = {"system": PLB_REFERENCE_SYSTEM,
                                "value": adjustment.reference_id}
    return detail
