"""Parses 835 remittance advice (005010X221A1) and checks that its money balances."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from chartkeeper.x12.errors import X12Error
from chartkeeper.x12.segments import Segment, TransactionSet, transaction_sets

REMITTANCE_VERSIONS = frozenset({"005010X221A1"})
#: CAS01 claim adjustment group codes.
ADJUSTMENT_GROUPS = frozenset({"CO", "OA", "PI", "PR"})


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One CAS triplet: group (CO, OA, PI, PR), CARC reason code, amount and quantity."""

    group: str
    reason: str
    amount: Decimal
    quantity: Decimal | None


@dataclass(frozen=True, slots=True)
class ServicePayment:
    """One SVC loop (2110): the procedure, billed and paid amounts and their adjustments."""

    procedure_qualifier: str
    procedure_code: str
    modifiers: tuple[str, ...]
    billed: Decimal
    paid: Decimal
    units: Decimal | None
    service_date: date | None
    adjustments: tuple[Adjustment, ...]


@dataclass(frozen=True, slots=True)
class ClaimPayment:
    """One CLP loop (2100): what the payer did with one claim."""

    patient_control_number: str
    status_code: str
    billed: Decimal
    paid: Decimal
    patient_responsibility: Decimal
    claim_filing_indicator: str
    payer_claim_control_number: str
    adjustments: tuple[Adjustment, ...]
    services: tuple[ServicePayment, ...]
    #: CLP11: the DRG the payer paid on (inpatient claims), "" when not sent.
    drg: str = ""

    @property
    def denied(self) -> bool:
        """CLP02 4: denied."""
        return self.status_code == "4"


@dataclass(frozen=True, slots=True)
class ProviderAdjustment:
    """One PLB adjustment: positive amounts reduce the payment, negative ones add to it."""

    provider_id: str
    fiscal_period_end: date
    reason_code: str
    reference_id: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Remittance:
    """An 835: the payment (BPR/TRN), payer, payee, the claims paid and provider adjustments."""

    payer_name: str
    payer_id: str
    payee_name: str
    payee_id: str
    transaction_handling: str
    total_paid: Decimal
    payment_method: str
    payment_date: date
    trace_number: str
    claims: tuple[ClaimPayment, ...]
    provider_adjustments: tuple[ProviderAdjustment, ...]

    def claim(self, patient_control_number: str) -> ClaimPayment:
        """The payment of the claim with this patient control number (the first if repeated)."""
        for claim in self.claims:
            if claim.patient_control_number == patient_control_number:
                return claim
        raise KeyError(f"the 835 pays no claim {patient_control_number!r}")


def parse_835(text: str) -> Remittance:
    """The single 835 in ``text``; X12Error when it is malformed or its sums do not balance."""
    remittances = parse_835_all(text)
    if len(remittances) != 1:
        raise X12Error(f"expected one 835 transaction set, found {len(remittances)}; "
                       "use parse_835_all")
    return remittances[0]


def parse_835_all(text: str) -> list[Remittance]:
    """Every 835 in ``text`` (a payer may send one per payment in the same interchange)."""
    return [
        _remittance(transaction)
        for transaction in transaction_sets(text, "835", REMITTANCE_VERSIONS, "HP")
    ]


def _one(segments: list[Segment], segment_id: str, qualifier: str | None = None) -> Segment:
    for segment in segments:
        if segment.segment_id == segment_id and qualifier in (None, segment.element(1)):
            return segment
    named = segment_id if qualifier is None else f"{segment_id}*{qualifier}"
    raise X12Error(f"835 has no {named} segment, which the 005010X221A1 guide requires")


def _remittance(transaction: TransactionSet) -> Remittance:
    segments = list(transaction.segments)
    bpr = _one(segments, "BPR")
    trn = _one(segments, "TRN")
    header_end = next((i for i, s in enumerate(segments) if s.segment_id == "LX"), len(segments))
    header = segments[:header_end]
    payer, payee = _one(header, "N1", "PR"), _one(header, "N1", "PE")
    if not trn.element(2):
        raise X12Error(f"{trn.where()}: TRN02 (check or EFT trace number) is empty")
    footer = next((i for i, s in enumerate(segments) if s.segment_id == "PLB"), len(segments))
    claims = tuple(_claims(segments[header_end:footer]))
    adjustments = tuple(_provider_adjustments(segments))
    remittance = Remittance(
        payer_name=payer.element(2), payer_id=_payer_id(header, payer, trn),
        payee_name=payee.element(2), payee_id=payee.element(4),
        transaction_handling=bpr.element(1), total_paid=bpr.amount(2),
        payment_method=bpr.element(4), payment_date=bpr.date(16), trace_number=trn.element(2),
        claims=claims, provider_adjustments=adjustments,
    )
    _check_balance(remittance, bpr, transaction.control_number)
    return remittance


def _payer_id(header: list[Segment], payer: Segment, trn: Segment) -> str:
    """N104, else the REF*2U payer identification, else TRN03 (1 and the payer's EIN)."""
    if payer.element(4):
        return payer.element(4)
    refs = [s.element(2) for s in header if s.segment_id == "REF" and s.element(1) == "2U"]
    return refs[0] if refs else trn.element(3)


def _adjustments(cas: Segment) -> Iterator[Adjustment]:
    group = cas.element(1)
    if group not in ADJUSTMENT_GROUPS:
        raise X12Error(f"{cas.where()}: CAS01 {group!r} is not an adjustment group "
                       f"({', '.join(sorted(ADJUSTMENT_GROUPS))})")
    # CAS02-04, 05-07 ... 17-19: up to six (reason, amount, quantity) triplets.
    for start in range(2, 20, 3):
        reason = cas.element(start)
        if not reason:
            continue
        quantity = cas.amount(start + 2) if cas.element(start + 2) else None
        yield Adjustment(group, reason, cas.amount(start + 1), quantity)


def _claims(segments: list[Segment]) -> Iterator[ClaimPayment]:
    starts = [i for i, segment in enumerate(segments) if segment.segment_id == "CLP"]
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(segments)
        yield _claim(segments[start:end])


def _claim(loop: list[Segment]) -> ClaimPayment:
    clp = loop[0]
    if not clp.element(1):
        raise X12Error(f"{clp.where()}: CLP01 (patient control number) is empty")
    service_starts = [i for i, segment in enumerate(loop) if segment.segment_id == "SVC"]
    claim_part = loop[: service_starts[0]] if service_starts else loop
    services = []
    for number, start in enumerate(service_starts):
        end = service_starts[number + 1] if number + 1 < len(service_starts) else len(loop)
        services.append(_service(loop[start:end]))
    adjustments = [adj for s in claim_part if s.segment_id == "CAS" for adj in _adjustments(s)]
    claim = ClaimPayment(
        patient_control_number=clp.element(1), status_code=clp.element(2),
        billed=clp.amount(3), paid=clp.amount(4),
        patient_responsibility=clp.amount(5, required=False),
        claim_filing_indicator=clp.element(6), payer_claim_control_number=clp.element(7),
        adjustments=tuple(adjustments), services=tuple(services), drg=clp.element(11),
    )
    _check_claim_balance(claim, clp)
    return claim


def _service(loop: list[Segment]) -> ServicePayment:
    svc = loop[0]
    code = (*svc.components(1), "", "")
    dates = [s for s in loop if s.segment_id == "DTM" and s.element(1) in ("472", "150")]
    service = ServicePayment(
        procedure_qualifier=code[0], procedure_code=code[1],
        modifiers=tuple(modifier for modifier in code[2:6] if modifier),
        billed=svc.amount(2), paid=svc.amount(3),
        units=svc.amount(5) if svc.element(5) else None,
        service_date=dates[0].date(2) if dates else None,
        adjustments=tuple(a for s in loop if s.segment_id == "CAS" for a in _adjustments(s)),
    )
    adjusted = sum((adjustment.amount for adjustment in service.adjustments), Decimal(0))
    if service.billed - service.paid != adjusted:
        raise X12Error(f"{svc.where()}: service {service.procedure_code} does not balance: "
                       f"billed {service.billed} - paid {service.paid} != adjustments {adjusted}")
    return service


def _provider_adjustments(segments: list[Segment]) -> Iterator[ProviderAdjustment]:
    for plb in (segment for segment in segments if segment.segment_id == "PLB"):
        # PLB03-04, 05-06 ... 13-14: up to six (reason:reference, amount) pairs.
        for start in range(3, 15, 2):
            if not plb.element(start):
                continue
            reason = (*plb.components(start), "")
            yield ProviderAdjustment(plb.element(1), plb.date(2), reason[0], reason[1],
                                     plb.amount(start + 1))


def _check_claim_balance(claim: ClaimPayment, clp: Segment) -> None:
    """CLP03 - CLP04 must equal all claim and service adjustments (the guide's balancing)."""
    adjusted = sum((adj.amount for adj in claim.adjustments), Decimal(0)) + sum(
        (adj.amount for service in claim.services for adj in service.adjustments), Decimal(0)
    )
    if claim.billed - claim.paid != adjusted:
        raise X12Error(
            f"{clp.where()}: claim {claim.patient_control_number} does not balance: billed "
            f"{claim.billed} - paid {claim.paid} != adjustments {adjusted}"
        )


def _check_balance(remittance: Remittance, bpr: Segment, control_number: str) -> None:
    """BPR02 must equal the sum of CLP04 minus the PLB adjustments."""
    paid = sum((claim.paid for claim in remittance.claims), Decimal(0))
    withheld = sum((plb.amount for plb in remittance.provider_adjustments), Decimal(0))
    if remittance.total_paid != paid - withheld:
        raise X12Error(
            f"835 {control_number} does not balance: BPR02 total {remittance.total_paid} != "
            f"claim payments {paid} - provider adjustments {withheld} = {paid - withheld}"
        )
