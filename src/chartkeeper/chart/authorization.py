"""HIPAA authorizations for release of information (45 CFR 164.508) and the check of a
request against one: who may receive what, for which purpose, until when.

An authorization is a ``Consent``: scope ``patient-privacy``, category LOINC 64292-6 (Release of
information consent), policyRule ``hipaa-auth``, ``dateTime`` (signed), ``sourceAttachment``
(the scanned form) or a ``verification`` as the signature evidence, and one permit
``provision``: ``period`` (until when), ``actor`` with role IRCP (the recipient), ``purpose``
(v3 PurposeOfUse), ``class`` (resource types) and ``code`` (LOINC document types) that may be
released, ``dataPeriod`` (the dates of care it covers) and ``securityLabel`` (its own or its
nested permit provisions'): the sensitive categories it explicitly authorizes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from chartkeeper.chart.packet import LOINC, fhir_date
from chartkeeper.security.access import (
    ACT_CODE,
    CONFIDENTIALITY,
    Sensitivity,
    compartment_params,
    sensitivities,
)
from chartkeeper.store import InvalidRequest, Store, StoreError
from chartkeeper.store.service import Resource

if TYPE_CHECKING:  # roi imports this module; the check only reads a Request's fields
    from chartkeeper.chart.roi import Request

PURPOSE_OF_USE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_POLICY = "http://terminology.hl7.org/CodeSystem/consentpolicycodes"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROI_CONSENT_LOINC = "64292-6"  # Release of information consent
RECIPIENT_ROLES = frozenset({"IRCP", "PRCP"})  # information recipient, primary recipient
OPEN_STATUSES = ("requested", "in-progress")

# v3 PurposeOfUse codes (CodeSystem v3-ActReason) an ROI request may carry, in words, with
# their parent: an authorization for a broader purpose covers its narrower ones. LEGAL is the
# ActReason code HL7 displays as "subpoena"; requests from attorneys and courts carry it.
PURPOSES: dict[str, tuple[str, str | None]] = {
    "TREAT": ("treatment", None), "ETREAT": ("emergency treatment", "TREAT"),
    "HPAYMT": ("healthcare payment", None), "CLMATTCH": ("claim attachment", "HPAYMT"),
    "COVERAGE": ("coverage under policy or program", "HPAYMT"),
    "COVAUTH": ("coverage authorization", "HPAYMT"),
    "HOPERAT": ("healthcare operations", None), "LEGAL": ("legal proceedings", None),
    "PATRQT": ("patient requested", None), "FAMRQT": ("family requested", "PATRQT"),
    "PWATRNY": ("power of attorney", "PATRQT"), "SUPNWK": ("support network", "PATRQT"),
    "HRESCH": ("healthcare research", None), "PUBHLTH": ("public health", None),
    "HMARKT": ("healthcare marketing", None),
}
# 164.506(c)(2)-(3): a provider may disclose for another provider's treatment and for the
# payment activities of the recipient without an authorization. Operations (HOPERAT) for
# another entity are allowed only in narrow cases (164.506(c)(4)), so they need one here.
TPO_WITHOUT_AUTHORIZATION = frozenset({"TREAT", "ETREAT", "HPAYMT", "CLMATTCH", "COVERAGE",
                                       "COVAUTH"})
# 164.524: the patient's own request (right of access) needs no authorization, only a
# verified identity (164.514(h)).
RIGHT_OF_ACCESS = "PATRQT"

# Sensitive categories: the words the letter and problems use, and the label a Consent or a
# request carries for each. VIP labels are left to the access layer: they limit who inside
# the hospital may open a chart, not what the patient may authorize to be released.
CATEGORIES: dict[str, tuple[str, str, str]] = {
    "substance-use": (ACT_CODE, "ETH", "substance use disorder (42 CFR Part 2)"),
    "behavioral-health": (ACT_CODE, "BH", "behavioural health"),
    "psychotherapy-notes": (ACT_CODE, "PSYTHPN", "psychotherapy notes"),
    "hiv": (ACT_CODE, "HIV", "HIV/AIDS"),
    "sexual-health": (ACT_CODE, "SEX", "sexuality and reproductive health"),
    "restricted": (CONFIDENTIALITY, "R", "restricted confidentiality"),
}
# The right of access reaches the patient's own sensitive records, except psychotherapy notes
# (164.524(a)(1)(i)), which always need an authorization of their own.
ACCESS_CATEGORIES = frozenset(CATEGORIES) - {"psychotherapy-notes"}
LOINC_CODE = re.compile(r"\d{1,7}-\d")
# In a patient's compartment but HIM's work about the chart, not the chart: never released.
NOT_RECORDS = frozenset({"Task", "Consent", "Provenance", "AuditEvent", "Flag", "Basic",
                         "Communication", "CommunicationRequest", "List"})


@dataclass(frozen=True)
class Problem:
    code: str  # expired, unsigned, wrong-patient, purpose-not-covered, ...
    message: str


@dataclass(frozen=True)
class Party:
    """A requester or recipient who is not the patient."""

    name: str
    organization: str = ""
    address: str = ""
    identifier: str = ""  # NPI, bar number, claim number: matched before the name

    @property
    def label(self) -> str:
        return ", ".join(p for p in (self.name, self.organization) if p)


@dataclass(frozen=True)
class DateRange:
    start: date | None = None
    end: date | None = None

    def contains(self, day: date) -> bool:
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)

    def within(self, outer: DateRange) -> bool:
        return ((outer.start is None or (self.start is not None and self.start >= outer.start))
                and (outer.end is None or (self.end is not None and self.end <= outer.end)))

    @property
    def text(self) -> str:
        return (f"{self.start.isoformat() if self.start else 'the beginning'} to "
                f"{self.end.isoformat() if self.end else 'now'}")

    def as_period(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in (("start", self.start), ("end", self.end)) if v}

    @classmethod
    def of(cls, period: Any) -> DateRange:
        period = period if isinstance(period, dict) else {}
        return cls(fhir_date(period.get("start")), fhir_date(period.get("end")))


# ------------------------------------------------------------------------------ sensitivity
def label_categories(labels: Iterable[Any]) -> frozenset[str]:
    """The sensitive categories that security labels (Codings) name."""
    codings = [c for c in labels if isinstance(c, dict)]
    found = {s.value for s in sensitivities({"meta": {"security": codings}})}
    found.discard(Sensitivity.vip.value)
    return frozenset(found)


def record_categories(resource: Resource) -> frozenset[str]:
    meta = resource.get("meta")
    return label_categories(meta.get("security") or [] if isinstance(meta, dict) else [])


def category_words(categories: Iterable[str]) -> str:
    return ", ".join(CATEGORIES[c][2] if c in CATEGORIES else c for c in sorted(categories))


# ------------------------------------------------------------------------------ vocabulary
def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def record_type_coding(value: str) -> dict[str, str]:
    if LOINC_CODE.fullmatch(value):
        return coding(LOINC, value)
    if value in compartment_params() and value not in NOT_RECORDS:
        return coding(RESOURCE_TYPES, value)
    raise InvalidRequest(f"record type {value!r} is neither a LOINC document type code "
                         "(like 18842-5) nor a resource type of a patient's record")


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise InvalidRequest(f"unknown purpose of use {purpose!r}; expected a v3 PurposeOfUse "
                             f"code: {', '.join(sorted(PURPOSES))}")
    return purpose


def check_categories(categories: Iterable[str]) -> list[str]:
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise InvalidRequest(f"unknown sensitive categories {unknown}; expected "
                             f"{sorted(CATEGORIES)}")
    return sorted(set(categories))


# ------------------------------------------------------------------------------ authorizations
def authorization_consent(patient_id: str, recipient: Party | None, purposes: Sequence[str], *,
                          signed: date, expires: date, valid_from: date | None = None,
                          record_types: Sequence[str] = (), dates: DateRange | None = None,
                          sensitive: Sequence[str] = (), form: bytes | None = None,
                          form_type: str = "application/pdf",
                          verified_on: date | None = None) -> Resource:
    """A HIPAA authorization as a Consent resource (``record_authorization`` stores it).
    ``recipient`` None: the patient. ``form``: the scanned signed form; ``verified_on``: the
    day staff verified the signature (one of them is the signature evidence)."""
    if form is None and verified_on is None:
        raise InvalidRequest("an authorization needs its signature evidence: the signed form "
                             "or the date its signature was verified")
    if not purposes:
        raise InvalidRequest("an authorization must state its purpose (164.508(c)(1)(iv))")
    start = valid_from or signed
    if expires < start:
        raise InvalidRequest(f"the authorization expires {expires}, before it starts {start}")
    actor = ({"reference": f"Patient/{patient_id}"} if recipient is None else
             {"display": recipient.label,
              **({"identifier": {"value": recipient.identifier}} if recipient.identifier
                 else {})})
    provision: Resource = {
        "type": "permit", "period": {"start": start.isoformat(), "end": expires.isoformat()},
        "actor": [{"role": {"coding": [coding(PARTICIPATION, "IRCP", "information recipient")]},
                   "reference": actor}],
        "purpose": [coding(PURPOSE_OF_USE, check_purpose(p)) for p in purposes]}
    types = [record_type_coding(t) for t in record_types]
    if classes := [c for c in types if c["system"] == RESOURCE_TYPES]:
        provision["class"] = classes
    if codes := [{"coding": [c]} for c in types if c["system"] == LOINC]:
        provision["code"] = codes
    if dates and (dates.start or dates.end):
        provision["dataPeriod"] = dates.as_period()
    if sensitive:
        provision["securityLabel"] = [coding(*CATEGORIES[c][:2])
                                      for c in check_categories(sensitive)]
    consent: Resource = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [coding(CONSENT_SCOPE, "patient-privacy")]},
        "category": [{"coding": [coding(LOINC, ROI_CONSENT_LOINC,
                                         "Release of information consent")]}],
        "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": signed.isoformat(),
        "policyRule": {"coding": [coding(CONSENT_POLICY, "hipaa-auth", "HIPAA Authorization")]},
        "provision": provision}
    if form is not None:
        consent["sourceAttachment"] = {"contentType": form_type, "title": "Signed authorization",
                                       "data": base64.b64encode(form).decode()}
    if verified_on is not None:
        consent["verification"] = [{"verified": True,
                                    "verificationDate": verified_on.isoformat()}]
    return consent


def record_authorization(store: Store, consent: Resource) -> str:
    """Store an authorization (see ``authorization_consent``); returns the Consent id."""
    patient = str((consent.get("patient") or {}).get("reference", "")).removeprefix("Patient/")
    with store.write() as txn:
        try:
            txn.read("Patient", patient)
        except StoreError as exc:
            raise InvalidRequest(f"the authorization's Patient/{patient} is not in the record "
                                 f"store: {exc.diagnostics}") from exc
        return txn.create(consent).resource_id


def authorizations_for(store: Store, patient_id: str) -> list[Resource]:
    """The patient's release-of-information authorizations, newest signed first."""
    with store.read() as txn:
        page = txn.search_params("Consent", [("patient", f"Patient/{patient_id}"),
                                             ("category", f"{LOINC}|{ROI_CONSENT_LOINC}"),
                                             ("_count", "1000")])
    return sorted(page.matches, key=lambda c: str(c.get("dateTime", "")), reverse=True)


def read_authorization(store: Store, consent_id: str) -> Resource:
    with store.read() as txn:
        try:
            return txn.read("Consent", consent_id)
        except StoreError as exc:
            raise InvalidRequest(f"no authorization Consent/{consent_id}: "
                                 f"{exc.diagnostics}") from exc


@dataclass(frozen=True)
class Scope:
    """What may be released: resource types, LOINC document types (both empty: any), the
    dates of care, and the sensitive categories explicitly authorized."""

    classes: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    dates: DateRange = DateRange()
    categories: frozenset[str] = frozenset()

    def covers(self, record_type: str, document_types: Iterable[str] = ()) -> bool:
        if not self.classes and not self.codes:
            return True
        if LOINC_CODE.fullmatch(record_type):
            return record_type in self.codes or "DocumentReference" in self.classes
        return record_type in self.classes or bool(self.codes.intersection(document_types))

    @property
    def text(self) -> str:
        return ", ".join(sorted(self.classes | self.codes)) or "the whole record"


def authorized_scope(request: Request, consent: Resource | None) -> Scope:
    implicit = ACCESS_CATEGORIES if request.purpose == RIGHT_OF_ACCESS else frozenset()
    if consent is None:
        return Scope(categories=implicit)
    provision = consent.get("provision") or {}
    # Sensitive categories may be authorized on the provision itself or on nested permits.
    permits = [provision, *(p for p in provision.get("provision") or []
                            if isinstance(p, dict) and p.get("type", "permit") == "permit")]
    return Scope(
        classes=frozenset(str(c.get("code")) for c in provision.get("class") or []),
        codes=frozenset(str(c.get("code")) for cc in provision.get("code") or []
                        for c in cc.get("coding") or [] if c.get("system") == LOINC),
        dates=DateRange.of(provision.get("dataPeriod")),
        categories=implicit | label_categories(
            label for p in permits for label in p.get("securityLabel") or []))


def _norm(text: Any) -> str:
    return " ".join(re.sub(r"[^\w&]+", " ", str(text or "")).casefold().split())


def _names_recipient(actor: Any, request: Request) -> bool:
    reference = actor.get("reference") if isinstance(actor, dict) else None
    if not isinstance(reference, dict):
        return False
    if request.recipient is None:
        return reference.get("reference") == f"Patient/{request.patient_id}"
    party = request.recipient
    identifier = (reference.get("identifier") or {}).get("value")
    if identifier and party.identifier:
        return bool(identifier == party.identifier)
    names = {_norm(party.label), _norm(party.name), _norm(party.organization)} - {""}
    return _norm(reference.get("display")) in names


def _covers_purpose(authorized: set[str], purpose: str) -> bool:
    while purpose:
        if purpose in authorized:
            return True
        purpose = PURPOSES.get(purpose, ("", None))[1] or ""
    return False


def check_authorization(consent: Resource | None, request: Request, today: date
                        ) -> list[Problem]:
    """Every reason the request cannot be released on this authorization (none: it can).
    ``consent`` None: no authorization, which treatment, payment (164.506(c)) and the patient's
    own request (164.524) do without."""
    problems: list[Problem] = []

    def problem(code: str, message: str) -> None:
        problems.append(Problem(code, message))

    if request.status not in OPEN_STATUSES:
        problem("request-closed", f"request Task/{request.id} is {request.status}, not open")
    if request.purpose == RIGHT_OF_ACCESS and not request.identity_verification:
        problem("identity-not-verified", "the patient's identity is not verified (45 CFR "
                "164.514(h)): record how it was checked before releasing to the patient")
    scope = authorized_scope(request, consent)
    if consent is not None:
        _check_consent(consent, request, scope, today, problem)
    elif request.needs_authorization:
        problem("no-authorization", f"purpose {request.purpose_text} needs a signed HIPAA "
                "authorization (45 CFR 164.508); none was given")
    missing = request.sensitive - scope.categories
    if missing:
        problem("sensitive-not-authorized", f"sensitive records requested but not explicitly "
                f"authorized: {category_words(missing)}")
    return problems


def _check_consent(consent: Resource, request: Request, scope: Scope, today: date,
                   problem: Callable[[str, str], None]) -> None:
    ref = f"Consent/{consent.get('id')}"
    category_codes = {c.get("code") for cc in consent.get("category") or []
                      for c in cc.get("coding") or []}
    if consent.get("resourceType") != "Consent" or ROI_CONSENT_LOINC not in category_codes:
        problem("not-an-authorization", f"{ref} is not a release-of-information authorization "
                f"(category LOINC {ROI_CONSENT_LOINC})")
    if consent.get("status") != "active":
        problem("not-active", f"authorization {ref} is {consent.get('status')}, not active")
    patient = str((consent.get("patient") or {}).get("reference", ""))
    if patient != f"Patient/{request.patient_id}":
        problem("wrong-patient", f"authorization {ref} is for {patient or 'no patient'}, the "
                f"request for Patient/{request.patient_id}")
    signed = fhir_date(consent.get("dateTime"))
    evidence = bool((consent.get("sourceAttachment") or {}).get("data")
                    or (consent.get("sourceAttachment") or {}).get("url")
                    or any(v.get("verified") is True for v in consent.get("verification") or []))
    if signed is None or not evidence:
        problem("unsigned", f"authorization {ref} is not signed: it needs a signature date and "
                "the signed form or a verified signature (164.508(c)(1)(vi))")
    elif signed > today:
        problem("unsigned", f"authorization {ref} is dated {signed}, after today ({today})")
    provision = consent.get("provision") or {}
    if provision.get("type", "permit") != "permit":
        problem("not-an-authorization", f"authorization {ref} permits nothing (its provision "
                f"is a {provision.get('type')})")
    valid = DateRange.of(provision.get("period"))
    if valid.end is None:
        problem("no-expiry", f"authorization {ref} has no expiration date (164.508(c)(1)(v))")
    elif valid.end < today:
        problem("expired", f"authorization {ref} expired on {valid.end}")
    if valid.start is not None and valid.start > today:
        problem("not-yet-valid", f"authorization {ref} is not valid before {valid.start}")
    recipients = [a for a in provision.get("actor") or [] if {
        c.get("code") for c in (a.get("role") or {}).get("coding") or []} & RECIPIENT_ROLES]
    if not any(_names_recipient(a, request) for a in recipients):
        named = "; ".join(str((a.get("reference") or {}).get("display")
                              or (a.get("reference") or {}).get("reference")) for a in recipients)
        problem("recipient-not-covered", f"recipient {_recipient_text(request)} is not named "
                f"in authorization {ref} (it names: {named or 'no recipient'})")
    purposes = {str(c.get("code")) for c in provision.get("purpose") or []}
    if not _covers_purpose(purposes, request.purpose):
        problem("purpose-not-covered", f"purpose {request.purpose_text} is not covered by "
                f"authorization {ref} (it covers: {', '.join(sorted(purposes)) or 'nothing'})")
    if not request.record_types and (scope.classes or scope.codes):
        problem("type-outside-scope", f"the request is for the whole record; authorization "
                f"{ref} covers only {scope.text}")
    outside = [t for t in request.record_types if not scope.covers(t)]
    if outside:
        problem("type-outside-scope", f"record types {', '.join(outside)} are outside "
                f"authorization {ref} (it covers {scope.text})")
    if not request.dates.within(scope.dates):
        problem("dates-outside-scope", f"requested dates {request.dates.text} fall outside "
                f"the dates authorization {ref} covers ({scope.dates.text})")


def _recipient_text(request: Request) -> str:
    return "the patient" if request.recipient is None else request.recipient.label

