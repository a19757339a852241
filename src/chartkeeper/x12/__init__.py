"""X12 5010 claims: the 837P/837I builder, the pyx12 release gate and 999/277CA/835 parsers."""

from chartkeeper.x12.build import build_837i, build_837p
from chartkeeper.x12.checks import check_claim, check_claims, npi_is_valid
from chartkeeper.x12.claim import (
    Address,
    BillingProvider,
    Diagnosis,
    Envelope,
    InstitutionalClaim,
    InstitutionalServiceLine,
    Patient,
    Payer,
    Procedure,
    ProfessionalClaim,
    ProfessionalServiceLine,
    Provider,
    Receiver,
    Submitter,
    Subscriber,
)
from chartkeeper.x12.errors import ClaimBuildError, ClaimRejected, X12Error, X12Issue
from chartkeeper.x12.outcome import ClaimOutcome, reconcile
from chartkeeper.x12.remittance import Remittance, parse_835, parse_835_all
from chartkeeper.x12.responses import Ack999, ClaimStatus, parse_277ca, parse_999
from chartkeeper.x12.validate import release, release_text, validate

__all__ = [
    "Ack999",
    "Address",
    "BillingProvider",
    "ClaimBuildError",
    "ClaimOutcome",
    "ClaimRejected",
    "ClaimStatus",
    "Diagnosis",
    "Envelope",
    "InstitutionalClaim",
    "InstitutionalServiceLine",
    "Patient",
    "Payer",
    "Procedure",
    "ProfessionalClaim",
    "ProfessionalServiceLine",
    "Provider",
    "Receiver",
    "Remittance",
    "Submitter",
    "Subscriber",
    "X12Error",
    "X12Issue",
    "build_837i",
    "build_837p",
    "check_claim",
    "check_claims",
    "npi_is_valid",
    "parse_277ca",
    "parse_835",
    "parse_835_all",
    "parse_999",
    "reconcile",
    "release",
    "release_text",
    "validate",
]
