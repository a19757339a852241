"""Who may do what to which record: the role matrix, patient compartments and sensitive records.

One decision path for every route (the API's ``AccessRule`` calls into this module):

1. **Role x action.** ``ROLE_POLICIES`` says which FHIR interactions (SMART letters c, r, u, d,
   s) each HIM role has on which resource types, and which HIM capabilities (bulk export,
   audit reports, break-the-glass, disclosures...) it holds.
2. **Token scopes.** What the role allows is cut down to what the bearer token's SMART scopes
   allow. A ``user/`` or ``system/`` scope opens what the role may see; a ``patient/`` scope
   opens only the token's patient compartment.
3. **Patient compartment.** A principal limited to patient A may touch only resources in A's
   compartment (by the R4 CompartmentDefinition) and shared, non-clinical resources
   (practitioners, organizations, terminology). Everything else is 403, whether or not it
   exists.
4. **Sensitive records.** Resources labelled (``meta.security``) as substance-use (42 CFR
   Part 2), behavioural/mental health, or restricted confidentiality, and every resource of a
   patient labelled VIP (celebrity, employee), are closed to everyone until a permitted user
   breaks the glass for that patient with a stated reason, for a limited time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any, Final, Literal

import orjson

from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.fhir.indexing import extract
from chartkeeper.security.identity import Role, SecurityError
from chartkeeper.security.tokens import ScopeContext, ScopeSet
from chartkeeper.store.errors import StoreError

Interaction = Literal["c", "r", "u", "d", "s"]
INTERACTION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


class Sensitivity(StrEnum):
    substance_use = "substance-use"  # 42 CFR Part 2
    behavioral_health = "behavioral-health"
    psychotherapy_notes = "psychotherapy-notes"  # 45 CFR 164.501, 164.508(a)(2)
    hiv = "hiv"
    sexual_health = "sexual-health"
    vip = "vip"
    restricted = "restricted"


# (system, code) of meta.security labels -> what they mark. Codes from HL7 v3 ActCode
# (InformationSensitivityPolicy, ActPrivacyLaw) and v3 Confidentiality.
SENSITIVE_LABELS: Mapping[tuple[str, str], Sensitivity] = {
    (ACT_CODE, "42CFRPart2"): Sensitivity.substance_use,
    (ACT_CODE, "ETH"): Sensitivity.substance_use,
    (ACT_CODE, "SUD"): Sensitivity.substance_use,
    (ACT_CODE, "BH"): Sensitivity.behavioral_health,
    (ACT_CODE, "MH"): Sensitivity.behavioral_health,
    (ACT_CODE, "PSY"): Sensitivity.behavioral_health,
    (ACT_CODE, "PSYTHPN"): Sensitivity.psychotherapy_notes,
    (ACT_CODE, "HIV"): Sensitivity.hiv,
    (ACT_CODE, "SEX"): Sensitivity.sexual_health,
    (ACT_CODE, "STD"): Sensitivity.sexual_health,
    (ACT_CODE, "CEL"): Sensitivity.vip,
    (ACT_CODE, "EMP"): Sensitivity.vip,
    (CONFIDENTIALITY, "R"): Sensitivity.restricted,
    (CONFIDENTIALITY, "V"): Sensitivity.restricted,
}
# On a Patient these labels restrict the whole compartment (the chart of a VIP, or a patient
# whose record the privacy office has restricted).
PATIENT_WIDE = frozenset({Sensitivity.vip, Sensitivity.restricted})


class Capability(StrEnum):
    """HIM actions outside the FHIR interactions."""

    bulk_export = "bulk-export"
    deid_export = "deid-export"
    break_glass = "break-glass"
    break_glass_report = "break-glass-report"
    audit_report = "audit-report"
    disclosure_record = "disclosure-record"
    disclosure_report = "disclosure-report"
    user_admin = "user-admin"
    coding = "coding"  # the encoder and computer-assisted coding


ALL_TYPES: Final = "*"
TypeSet = frozenset[str] | Literal["*"]

# Resource types that hold no patient's data: a patient-limited principal may read them.
SHARED_TYPES = frozenset({
    "Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService",
    "Endpoint", "Medication", "MedicationKnowledge", "Substance", "InsurancePlan",
    "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem", "StructureDefinition",
    "SearchParameter", "OperationDefinition", "CapabilityStatement", "Questionnaire",
    "ActivityDefinition", "PlanDefinition", "Library", "ObservationDefinition",
    "SpecimenDefinition",
})
DOCUMENT_TYPES = frozenset({"DocumentReference", "Binary", "Composition", "DiagnosticReport"})
TRANSCRIPTION_READS = DOCUMENT_TYPES | {"Patient", "Encounter", "Practitioner",
                                       "PractitionerRole", "Organization", "Location"}
CODING_TYPES = frozenset({"Claim", "ClaimResponse", "Coverage", "Account", "ChargeItem",
                          "ExplanationOfBenefit", "Condition", "Procedure", "Encounter"})
# Release of information: requests are Tasks, authorizations Consents (the packet itself is
# written by the release service, not through the API).
ROI_TYPES = frozenset({"Task", "Consent"})
REGISTRY_TYPES = frozenset({"Condition", "Observation", "Procedure", "DiagnosticReport",
                            "Composition", "List", "CarePlan", "DocumentReference"})


@dataclass(frozen=True)
class RolePolicy:
    """What one role may do: FHIR interactions by resource type, and HIM capabilities."""

    read: TypeSet = frozenset()  # r and s
    write: TypeSet = frozenset()  # c and u
    delete: TypeSet = frozenset()
    capabilities: frozenset[Capability] = frozenset()

    def allows(self, resource_type: str, interaction: str) -> bool:
        types = {"r": self.read, "s": self.read, "c": self.write, "u": self.write,
                 "d": self.delete}[interaction]
        return types == ALL_TYPES or resource_type in types


C = Capability
ROLE_POLICIES: Mapping[Role, RolePolicy] = {
    Role.him_technician: RolePolicy(
        ALL_TYPES, ALL_TYPES, ALL_TYPES,
        frozenset({C.break_glass, C.disclosure_record, C.disclosure_report, C.coding})),
    Role.coder: RolePolicy(ALL_TYPES, CODING_TYPES, frozenset(),
                           frozenset({C.break_glass, C.coding})),
    Role.transcriptionist: RolePolicy(TRANSCRIPTION_READS, DOCUMENT_TYPES),
    Role.cancer_registrar: RolePolicy(ALL_TYPES, REGISTRY_TYPES, frozenset(),
                                      frozenset({C.break_glass})),
    Role.physician: RolePolicy(ALL_TYPES, ALL_TYPES, frozenset(),
                               frozenset({C.break_glass, C.coding})),
    Role.analyst: RolePolicy(ALL_TYPES, frozenset(), frozenset(),
                             frozenset({C.bulk_export, C.deid_export})),
    Role.roi_specialist: RolePolicy(
        ALL_TYPES, ROI_TYPES, frozenset(),
        frozenset({C.break_glass, C.disclosure_record, C.disclosure_report})),
    Role.privacy_officer: RolePolicy(
        ALL_TYPES, frozenset(), frozenset(),
        frozenset({C.break_glass, C.break_glass_report, C.audit_report, C.disclosure_report,
                   C.deid_export})),
    Role.administrator: RolePolicy(
        ALL_TYPES, ALL_TYPES, ALL_TYPES,
        frozenset({C.bulk_export, C.deid_export, C.audit_report, C.user_admin})),
    Role.service: RolePolicy(ALL_TYPES, ALL_TYPES, ALL_TYPES,
                             frozenset({C.bulk_export, C.coding})),
}


# ------------------------------------------------------------------------------- refusals
class Forbidden(SecurityError, StoreError):
    """Authenticated, but not allowed. The message never says whether the data exists.

    Also a StoreError, so a refused entry of a batch Bundle answers 403 in its own entry.
    """

    status = 403
    issue_code = "forbidden"

    def __init__(self, message: str) -> None:
        StoreError.__init__(self, message)


class BreakGlassRequired(Forbidden):
    """The record is restricted; a permitted user may break the glass for the patient."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is a restricted record; access needs break-the-glass "
                         "(POST /security/break-the-glass with the patient and a reason)")


# ------------------------------------------------------------------------------- compartments
@cache
def compartment_params() -> Mapping[str, frozenset[str]]:
    """Resource type -> the search parameters that place it in a Patient compartment."""
    return {rtype: frozenset(params)
            for rtype, params in load_definitions().compartments.get("Patient", {}).items()
            if params}


def in_patient_compartment_type(resource_type: str) -> bool:
    return resource_type == "Patient" or resource_type in compartment_params()


def patients_of(resource: Mapping[str, Any]) -> frozenset[str]:
    """The patients whose compartment holds ``resource`` (by the R4 CompartmentDefinition)."""
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        rid = resource.get("id")
        return frozenset({rid}) if isinstance(rid, str) else frozenset()
    params = compartment_params().get(str(resource_type))
    if not params:
        return frozenset()
    found = set()
    for param, target_type, target_id, _url in extract(dict(resource)).references:
        if param in params and target_type == "Patient" and target_id:
            found.add(target_id)
    return frozenset(found)


# "reference": "Patient/id", "Patient/id/_history/2" or an absolute URL ending so. Matching
# the serialized resource is several times faster than walking it in Python.
_PATIENT_REFERENCE = re.compile(
    rb'"reference":"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^"]*)?"')


def referenced_patients(value: Any) -> set[str]:
    """Every ``Patient/<id>`` a resource refers to anywhere (for sensitivity, stricter than
    the compartment: a resource that names a VIP patient anywhere is the VIP's record)."""
    return {m.decode() for m in _PATIENT_REFERENCE.findall(orjson.dumps(value))}


def sensitivities(resource: Mapping[str, Any]) -> frozenset[Sensitivity]:
    """The sensitive-record labels on a resource's ``meta.security``."""
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    if not labels:
        return frozenset()
    found = set()
    for label in labels:
        if isinstance(label, dict):
            kind = SENSITIVE_LABELS.get((label.get("system", ""), label.get("code", "")))
            if kind is not None:
                found.add(kind)
    return frozenset(found)


def exportable(record: list[dict[str, Any]], patient_id: str) -> list[dict[str, Any]]:
    """What of a patient's record may go into a de-identified extract: nothing labelled
    sensitive (42 CFR Part 2, behavioural health, restricted confidentiality) and nothing that
    names another patient (a Group, a cited Patient): one patient per extract."""
    return [r for r in record if not sensitivities(r)
            and referenced_patients(r) <= {patient_id}
            and (r["resourceType"] != "Patient" or r.get("id") == patient_id)]


def sensitive_label_tokens() -> list[tuple[str, str]]:
    """(system, code) pairs to look up restricted patients in the ``_security`` index."""
    return [key for key, kind in SENSITIVE_LABELS.items() if kind in PATIENT_WIDE]


# ------------------------------------------------------------------------------- principal
@dataclass(frozen=True)
class Grant:
    """An allowed interaction; ``compartment`` is the one patient it is limited to, if any."""

    compartment: str | None = None


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user (session or token) or a service, with the token's scopes."""

    user_id: str
    role: Role
    scopes: ScopeSet
    patient: str | None = None
    client_id: str | None = None
    via: str = "token"

    @property
    def policy(self) -> RolePolicy:
        return ROLE_POLICIES[self.role]

    def has(self, capability: Capability) -> bool:
        return capability in self.policy.capabilities

    def require(self, capability: Capability) -> None:
        if not self.has(capability):
            raise Forbidden(f"role {self.role.value} does not have the {capability.value} "
                            "capability")

    @property
    def compartment_limited(self) -> bool:
        """Whether no scope opens more than the token's patient."""
        return all(s.context is ScopeContext.patient for s in self.scopes.resources)

    def permit(self, resource_type: str, interaction: Interaction) -> Grant:
        """Allow ``interaction`` on ``resource_type`` (and say how far), or raise Forbidden."""
        name = INTERACTION_NAMES[interaction]
        if not self.policy.allows(resource_type, interaction):
            raise Forbidden(f"role {self.role.value} may not {name} {resource_type}")
        compartment_only = False
        for scope in self.scopes.resources:
            if scope.allows(resource_type, interaction):
                if scope.context is not ScopeContext.patient:
                    return Grant(None)
                compartment_only = True
        if compartment_only and self.patient is not None:
            return Grant(self.patient)
        raise Forbidden(f"the token's scopes do not allow {name} on {resource_type}")


# ------------------------------------------------------------------------------- the guard
@dataclass
class RecordGuard:
    """The per-request check of every resource that leaves the store.

    ``restricted_patients`` and ``glass_broken_for`` are looked up lazily (once per request)
    through the callables, so requests that touch no patient data cost nothing.
    """

    principal: Principal
    restricted_patient_lookup: Callable[[], frozenset[str]]
    break_glass_lookup: Callable[[], frozenset[str]]
    patients_seen: set[str] = field(default_factory=set)
    withheld: int = 0
    broke_glass_for: set[str] = field(default_factory=set)
    _restricted: frozenset[str] | None = None
    _glass: frozenset[str] | None = None

    @property
    def restricted_patients(self) -> frozenset[str]:
        if self._restricted is None:
            self._restricted = self.restricted_patient_lookup()
        return self._restricted

    @property
    def glass_broken(self) -> frozenset[str]:
        if self._glass is None:
            self._glass = self.break_glass_lookup()
        return self._glass

    def compartment_check(self, resource: Mapping[str, Any], grant: Grant) -> bool:
        """Whether a compartment-limited grant covers ``resource``."""
        if grant.compartment is None:
            return True
        resource_type = str(resource.get("resourceType"))
        if resource_type in SHARED_TYPES:
            return True
        # In the patient's compartment, and naming no other patient anywhere (a Group of
        # several patients, an Observation whose focus is someone else).
        return grant.compartment in patients_of(resource) and \
            referenced_patients(resource) <= {grant.compartment}

    def restriction(self, resource: Mapping[str, Any]) -> tuple[bool, frozenset[str]]:
        """(restricted?, the patients it belongs to) for the sensitive-record rule."""
        patients = (frozenset({str(resource.get("id"))})
                    if resource.get("resourceType") == "Patient"
                    else frozenset(referenced_patients(resource)))
        labels = sensitivities(resource)
        restricted = bool(labels) or bool(patients & self.restricted_patients)
        return restricted, patients

    def visible(self, resource: Mapping[str, Any], grant: Grant) -> bool:
        """Whether the resource may be shown; records the patients seen for the audit."""
        if not self.compartment_check(resource, grant):
            return False
        restricted, patients = self.restriction(resource)
        if restricted:
            if not patients or not patients <= self.glass_broken:
                return False
            self.broke_glass_for.update(patients)
        self.patients_seen.update(patients)
        return True

    def check(self, resource: Mapping[str, Any], grant: Grant, what: str) -> None:
        """Raise Forbidden (or BreakGlassRequired) unless ``resource`` may be shown."""
        if not self.compartment_check(resource, grant):
            raise Forbidden(f"access to {what} is not permitted")
        restricted, patients = self.restriction(resource)
        if restricted and (not patients or not patients <= self.glass_broken):
            raise BreakGlassRequired(what)
        if restricted:
            self.broke_glass_for.update(patients)
        self.patients_seen.update(patients)

    def filter(self, resources: Iterable[dict[str, Any]], grant: Grant
               ) -> Iterator[dict[str, Any]]:
        """The visible resources; counts what was withheld."""
        for resource in resources:
            if self.visible(resource, grant):
                yield resource
            else:
                self.withheld += 1
