"""The claim data model that the 837P and 837I builders write: frozen, typed dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Literal

Sex = Literal["M", "F", "U"]
#: SBR01: whose turn it is to pay (primary, secondary, tertiary).
PayerResponsibility = Literal["P", "S", "T"]
#: CLM07 (837P) / CLM07 (837I): assignment accepted, assigned for lab services only, not accepted.
Assignment = Literal["A", "B", "C"]
#: CLM08: benefits assigned to the provider (W: not applicable, the patient refused to assign).
BenefitsAssigned = Literal["Y", "N", "W"]
#: CLM09: release of information (I: informed consent limited to what the claim needs).
ReleaseOfInformation = Literal["I", "Y"]
UnitBasis = Literal["UN", "DA"]


@dataclass(frozen=True, slots=True)
class Address:
    """A US postal address; ``postal_code`` holds 5 or 9 digits without a hyphen."""

    line1: str
    city: str
    state: str
    postal_code: str
    line2: str | None = None


@dataclass(frozen=True, slots=True)
class Submitter:
    """Who sends the interchange (ISA06, GS02, loop 1000A) and whom to call about it."""

    name: str
    edi_id: str
    contact_name: str
    contact_phone: str
    id_qualifier: str = "ZZ"


@dataclass(frozen=True, slots=True)
class Receiver:
    """Who receives the interchange (ISA08, GS03, loop 1000B), usually a clearinghouse."""

    name: str
    edi_id: str
    id_qualifier: str = "ZZ"


@dataclass(frozen=True, slots=True)
class Envelope:
    """ISA / GS / ST / BHT data; passed in so that the same claims always give the same text."""

    submitter: Submitter
    receiver: Receiver
    interchange_control_number: int
    group_control_number: int
    transaction_control_number: int
    batch_id: str
    created: datetime
    usage: Literal["P", "T"] = "P"
    acknowledgment_requested: bool = False


@dataclass(frozen=True, slots=True)
class BillingProvider:
    """The billing provider (loop 2010AA): an organisation with an NPI and an EIN."""

    name: str
    npi: str
    tax_id: str
    address: Address
    taxonomy: str | None = None


@dataclass(frozen=True, slots=True)
class Subscriber:
    """The insured person (loop 2000B / 2010BA)."""

    member_id: str
    last_name: str
    first_name: str
    birth_date: date
    sex: Sex
    address: Address
    group_number: str | None = None
    payer_responsibility: PayerResponsibility = "P"
    #: SBR09, e.g. CI commercial, MA Medicare Part A, MB Medicare Part B, MC Medicaid.
    claim_filing_indicator: str = "CI"


@dataclass(frozen=True, slots=True)
class Patient:
    """A patient who is not the subscriber (loop 2000C / 2010CA).

    ``relationship`` is PAT01: 01 spouse, 19 child, 20 employee, 21 unknown, 39 organ donor,
    40 cadaver donor, 53 life partner, G8 other relationship.
    """

    relationship: str
    last_name: str
    first_name: str
    birth_date: date
    sex: Sex
    address: Address


@dataclass(frozen=True, slots=True)
class Payer:
    """The payer the claim is sent to (loop 2010BB)."""

    name: str
    payer_id: str


@dataclass(frozen=True, slots=True)
class Provider:
    """A clinician on the claim (attending, operating, rendering), identified by NPI."""

    last_name: str
    first_name: str
    npi: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """An ICD-10-CM code without the dot; ``poa`` (Y N U W 1) is for institutional claims only."""

    code: str
    poa: str | None = None


@dataclass(frozen=True, slots=True)
class Procedure:
    """An ICD-10-PCS procedure and the date it was performed (837I HI BBR / BBQ)."""

    code: str
    performed: date


@dataclass(frozen=True, slots=True)
class ProfessionalServiceLine:
    """One 837P service line (loop 2400, SV1).

    ``diagnosis_pointers`` are 1-based positions in the claim's ``diagnoses`` (at most 4);
    ``place_of_service`` is only for a line whose place differs from the claim's.
    """

    procedure_code: str
    charge: Decimal
    units: Decimal
    service_date: date
    diagnosis_pointers: tuple[int, ...]
    modifiers: tuple[str, ...] = ()
    place_of_service: str | None = None


@dataclass(frozen=True, slots=True)
class InstitutionalServiceLine:
    """One 837I service line (loop 2400, SV2): a revenue code with an optional HCPCS code."""

    revenue_code: str
    charge: Decimal
    units: Decimal
    service_date: date | None = None
    procedure_code: str | None = None
    modifiers: tuple[str, ...] = ()
    unit_basis: UnitBasis = "UN"


@dataclass(frozen=True, slots=True)
class ProfessionalClaim:
    """An 837P claim; ``payer`` may be missing in the data, and the release gate refuses it."""

    patient_control_number: str
    billing_provider: BillingProvider
    subscriber: Subscriber
    payer: Payer | None
    total_charge: Decimal
    place_of_service: str
    diagnoses: tuple[Diagnosis, ...]
    lines: tuple[ProfessionalServiceLine, ...]
    frequency_code: str = "1"
    provider_signature: bool = True
    assignment: Assignment = "A"
    benefits_assigned: BenefitsAssigned = "Y"
    release_of_information: ReleaseOfInformation = "Y"
    patient: Patient | None = None
    rendering_provider: Provider | None = None


@dataclass(frozen=True, slots=True)
class InstitutionalClaim:
    """An 837I claim: ``facility_code`` is the first two digits of the type of bill (11: inpatient).

    ``statement_to`` is the discharge date of a discharged inpatient; ``drg`` the MS-DRG, if the
    payer wants it on the claim.
    """

    patient_control_number: str
    billing_provider: BillingProvider
    subscriber: Subscriber
    payer: Payer | None
    total_charge: Decimal
    facility_code: str
    statement_from: date
    statement_to: date
    admission_type: str
    discharge_status: str
    principal_diagnosis: Diagnosis
    lines: tuple[InstitutionalServiceLine, ...]
    admission_source: str | None = None
    admission_date: date | None = None
    admission_hour: time | None = None
    discharge_hour: time | None = None
    admitting_diagnosis: str | None = None
    other_diagnoses: tuple[Diagnosis, ...] = ()
    principal_procedure: Procedure | None = None
    other_procedures: tuple[Procedure, ...] = ()
    attending_provider: Provider | None = None
    operating_provider: Provider | None = None
    rendering_provider: Provider | None = None
    drg: str | None = None
    frequency_code: str = "1"
    assignment: Assignment = "A"
    benefits_assigned: BenefitsAssigned = "Y"
    release_of_information: ReleaseOfInformation = "Y"
    patient: Patient | None = None


Claim = ProfessionalClaim | InstitutionalClaim

#: Facility type codes (first two digits of the type of bill) of inpatient stays, which need an
#: admission date, type and source: hospital, swing bed, skilled nursing, religious nonmedical.
INPATIENT_FACILITY_CODES = frozenset({"11", "18", "21", "41"})
#: Acute hospital inpatient bills, on which every diagnosis needs a present-on-admission value.
POA_FACILITY_CODES = frozenset({"11"})
