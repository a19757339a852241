"""The coder's worksheet: suggestions, the coder's decisions, final codes as FHIR, the queue.

``worksheet`` reads the encounter's current documents, suggests codes for them (re-ranked by
what coders decided before, ``feedback.rerank``) and shows what was decided already. ``decide``
takes the coder's decision on each suggestion (accept, reject, edit to another code, add one
the engine missed), checks every final code against the code-set release in force on the date
of service, and writes in one store transaction: a Condition per diagnosis, the Encounter's
billing diagnoses, a Procedure per procedure code, a draft Claim, one Provenance naming all of
them, the feedback rows and (with a trail or hook) the audit entry. Anything invalid raises
before a single row is written. ``queue`` is the coders' work list: finished encounters with no
coded Claim, oldest discharge first.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import copy
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import Engine

from chartkeeper.coding import cac, codesets, feedback, service
from chartkeeper.coding.cac import Suggestion, Suggestions
from chartkeeper.coding.cpt import CPT_CODE
from chartkeeper.coding.errors import UnknownCode
from chartkeeper.coding.icd10cm import Tabular, dotted
from chartkeeper.security.audit import AuditAction, AuditRecord, AuditTrail
from chartkeeper.store.errors import Conflict, Gone, InvalidRequest, NotFound, OutcomeIssue
from chartkeeper.store.service import Store, Txn, new_id, now_instant, search_all

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
CODABLE_STATUS = "finished"
# Present on admission (UB-04 / 837I): Y, N, U, W in FHIR's own example code system (lower
# case there), and with "1" (exempt from reporting, not in that code system) in the NUBC's.
POA_INDICATORS = {"Y": "Yes", "N": "No", "U": "Unknown", "W": "Clinically undetermined",
                  "1": "Exempt from POA reporting"}
POA_FHIR = "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission"
POA_NUBC = "https://www.nubc.org/CodeSystem/PresentOnAdmissionIndicators"
CONDITION_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                      "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}
BILLING_ROLE = {"system": "http://terminology.hl7.org/CodeSystem/diagnosis-role",
                "code": "billing", "display": "Billing"}
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PRINCIPAL_DIAGNOSIS = {"system": "http://terminology.hl7.org/CodeSystem/ex-diagnosistype",
                       "code": "principal", "display": "Principal Diagnosis"}
PRIMARY_PROCEDURE = {"system": "http://terminology.hl7.org/CodeSystem/ex-procedure-type",
                     "code": "primary", "display": "Primary procedure"}
NORMAL_PRIORITY = {"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                   "code": "normal", "display": "Normal"}
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
ACTIVITIES = {"CREATE": "create", "UPDATE": "revise"}
HEALTHCARE_PAYMENT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                      "code": "HPAYMT", "display": "healthcare payment"}
AUTHOR = {"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
          "code": "author", "display": "Author"}
USER_SYSTEM = "urn:chartkeeper:user"
# Everything a finalization writes carries this tag; a Claim also carries the flags billing
# must clear before it sends the claim.
TAG_SYSTEM = "urn:chartkeeper:coding"
CODED = {"system": TAG_SYSTEM, "code": "coded", "display": "Final codes from the worksheet"}
NO_COVERAGE = {"system": TAG_SYSTEM, "code": "no-coverage",
               "display": "No active Coverage on the date of service"}
NO_PROVIDER = {"system": TAG_SYSTEM, "code": "no-provider",
               "display": "The encounter names no service provider"}
# Claim.identifier: the encounter a coded Claim bills (the claim's patient control number).
ENCOUNTER_SYSTEM = "urn:chartkeeper:encounter"
_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:chartkeeper:coding")
# Between two documents in the text the engine reads: no words, so nothing in it is coded.
SEPARATOR = "\n\n" + "=" * 72 + "\n\n"
_HCPCS = re.compile(r"[A-Z][0-9]{4}")
MAX_REASON = 500


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


# ------------------------------------------------------------------- the encounter's text
@dataclass(frozen=True)
class EncounterDocument:
    """One text/plain attachment of a DocumentReference, at [start, end) of the joined text."""

    id: str
    version: str
    attachment: int
    type: str
    date: str | None
    doc_status: str | None
    start: int
    end: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "attachment": self.attachment,
                "type": self.type, "date": self.date, "docStatus": self.doc_status,
                "start": self.start, "end": self.end}


@dataclass(frozen=True)
class EncounterDocuments:
    """What the engine reads for an encounter, and what the worksheet needs to know of it."""

    encounter: Resource
    patient_id: str
    encounter_class: str
    setting: Setting
    age: int | None
    start: date
    date_of_service: date
    documents: tuple[EncounterDocument, ...]
    text: str
    skipped: tuple[str, ...]  # DocumentReference/id: why its content was not read

    @property
    def encounter_id(self) -> str:
        return str(self.encounter["id"])

    def locate(self, offset: int) -> tuple[EncounterDocument, int]:
        """The document an offset of the joined text falls in, and the offset within it."""
        for document in self.documents:
            if document.start <= offset < document.end:
                return document, offset - document.start
        raise CodingError(f"offset {offset} of Encounter/{self.encounter_id}'s text is in no "
                          f"document (the text is {len(self.text)} characters)")

    def to_json(self) -> dict[str, Any]:
        return {"encounter": self.encounter_id, "patient": self.patient_id,
                "class": self.encounter_class, "setting": self.setting, "age": self.age,
                "start": self.start.isoformat(),
                "dateOfService": self.date_of_service.isoformat(),
                "documents": [d.to_json() for d in self.documents], "text": self.text,
                "skipped": list(self.skipped)}


def encounter_text(txn: Txn, encounter_id: str) -> EncounterDocuments:
    """The encounter's current documents' text/plain content, in date order, joined by
    ``SEPARATOR``; with the setting, the patient's age at the start and the date of service
    (the end of the period, else its start)."""
    encounter = _read(txn, "Encounter", encounter_id)
    patient_id = _patient_id(encounter)
    klass = str((encounter.get("class") or {}).get("code") or "")
    setting: Setting = "inpatient" if klass in INPATIENT_CLASSES else "outpatient"
    period = encounter.get("period") or {}
    if not period.get("start") and not period.get("end"):
        raise NotCodable(f"Encounter/{encounter_id} has no period: no date of service")
    start = _day(str(period.get("start") or period["end"]), f"Encounter/{encounter_id}",
                 "period.start")
    service_day = _day(str(period.get("end") or period["start"]), f"Encounter/{encounter_id}",
                       "period.end")
    patient = _read(txn, "Patient", patient_id)
    birth = patient.get("birthDate")
    age = _age(str(birth), start) if birth else None
    documents: list[EncounterDocument] = []
    skipped: list[str] = []
    parts: list[str] = []
    offset = 0
    for reference in sorted(search_all(txn, "DocumentReference", [
            ("encounter", f"Encounter/{encounter_id}"), ("status", "current")]),
            key=_document_order):
        for number, content in enumerate(reference.get("content") or [], start=1):
            text, problem = _attachment_text(content.get("attachment") or {})
            if problem is not None:
                skipped.append(f"DocumentReference/{reference['id']} attachment {number}: "
                               f"{problem}")
                continue
            assert text is not None
            if parts:
                parts.append(SEPARATOR)
                offset += len(SEPARATOR)
            documents.append(EncounterDocument(
                str(reference["id"]), str((reference.get("meta") or {}).get("versionId", "")),
                number, _document_type(reference), reference.get("date"),
                reference.get("docStatus"), offset, offset + len(text)))
            parts.append(text)
            offset += len(text)
    return EncounterDocuments(encounter, patient_id, klass, setting, age, start, service_day,
                              tuple(documents), "".join(parts), tuple(skipped))


def _read(txn: Txn, resource_type: str, resource_id: str) -> Resource:
    try:
        return txn.read(resource_type, resource_id)
    except NotFound:
        raise NotFound(f"{resource_type}/{resource_id} is not known") from None
    except Gone:
        raise NotCodable(f"{resource_type}/{resource_id} was deleted") from None


def _patient_id(encounter: Resource) -> str:
    reference = str((encounter.get("subject") or {}).get("reference") or "")
    kind, _, rest = reference.partition("/")
    if kind != "Patient" or not rest:
        raise NotCodable(f"Encounter/{encounter['id']} has no Patient subject (subject "
                         f"{reference or 'missing'})")
    return rest.split("/_history/")[0]


def _day(value: str, where: str, element: str) -> date:
    """The calendar day a FHIR date or dateTime names, as written (no time-zone shift)."""
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise NotCodable(f"{where}: {element} {value!r} is not a full date (YYYY-MM-DD...)") \
            from None


def _age(birth: str, on: date) -> int | None:
    """Completed years on ``on``; a partial birth date counts from its last possible day."""
    parts = birth.split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 12
        day = int(parts[2][:2]) if len(parts) > 2 else calendar.monthrange(year, month)[1]
    except (ValueError, IndexError):
        return None  # the store validated the format; nothing else can be said of the age
    return max(0, on.year - year - ((on.month, on.day) < (month, day)))


def _document_order(reference: Resource) -> tuple[datetime, str]:
    moment = reference.get("date") or ((reference.get("context") or {}).get("period") or {}
                                       ).get("start") or ""
    try:
        parsed = datetime.fromisoformat(str(moment))
    except ValueError:
        parsed = datetime.min
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed, str(reference["id"])


def _document_type(reference: Resource) -> str:
    kind = reference.get("type") or {}
    codings = kind.get("coding") or [{}]
    return str(kind.get("text") or codings[0].get("display") or codings[0].get("code") or
               reference.get("description") or "document")


def _attachment_text(attachment: Resource) -> tuple[str | None, str | None]:
    """(text, None) for a text/plain attachment with data, else (None, why it is not read)."""
    content_type = str(attachment.get("contentType") or "")
    media, _, parameters = content_type.partition(";")
    if media.strip().lower() != "text/plain":
        return None, f"{content_type or 'no content type'}: only text/plain is read"
    if "data" not in attachment:
        return None, "text/plain without inline data (url only): not read"
    charset = "utf-8"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return base64.b64decode(str(attachment["data"]), validate=True).decode(charset), None
    except (binascii.Error, UnicodeDecodeError, LookupError) as exc:
        return None, f"data is not base64 {charset} text ({type(exc).__name__})"


# -------------------------------------------------------------------------- the worksheet
@dataclass
class Worksheet:
    """What the coder works from: the notes, the suggestions (re-ranked by what coders decided
    before), the engine's own suggestions, and what was decided on this encounter already."""

    documents: EncounterDocuments
    release: str
    suggestions: Suggestions
    engine_suggestions: Suggestions
    recorded: list[feedback.FeedbackRow]
    claim: Resource | None
    explanations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        suggestions = self.suggestions.to_json()
        for item in [*suggestions["diagnoses"], *suggestions["procedures"]]:
            item["explanation"] = self.explanations.get(item["code"])
            for evidence in item["evidence"]:
                document, local = self.documents.locate(evidence["start"])
                evidence.update(document=f"DocumentReference/{document.id}",
                                documentStart=local,
                                documentEnd=local + evidence["end"] - evidence["start"])
        return {**self.documents.to_json(), "release": self.release,
                "suggestions": suggestions,
                "recorded": [row.to_json() for row in self.recorded],
                "claim": None if self.claim is None else {
                    "id": self.claim["id"], "version": self.claim["meta"]["versionId"],
                    "status": self.claim.get("status")}}


def worksheet(store: Store, encounter_id: str) -> Worksheet:
    """An encounter's worksheet: its text, the suggestions and the decisions recorded."""
    with store.read() as txn:
        documents = encounter_text(txn, encounter_id)
        claim = _current_claim(txn, encounter_id)
    release, _ = _icd10cm(store.engine, documents)
    raw, shown, model = _suggest(store.engine, documents)
    explanations = {}
    prior = {s.code: s.confidence for s in [*raw.diagnoses, *raw.procedures]}
    for suggestion in [*shown.diagnoses, *shown.procedures]:
        if suggestion.code in prior:
            section = suggestion.evidence[0].section if suggestion.evidence else None
            explanations[suggestion.code] = model.explain(suggestion.code, section,
                                                          prior[suggestion.code])
    with store.engine.connect() as conn:
        recorded = feedback.decisions_for(conn, encounter_id)
    return Worksheet(documents, release.version, shown, raw, recorded, claim, explanations)


def _suggest(engine: Engine, documents: EncounterDocuments
             ) -> tuple[Suggestions, Suggestions, feedback.RankingModel]:
    if documents.text.strip():
        raw = service.suggest(engine, documents.text, documents.setting, age=documents.age,
                              on=documents.date_of_service)
    else:
        raw = Suggestions([], None, [])  # nothing to read: the coder adds codes by hand
    model = feedback.load_model(engine)
    return raw, feedback.rerank(engine, raw, model=model), model


def _icd10cm(engine: Engine, documents: EncounterDocuments) -> tuple[codesets.Release, Tabular]:
    codesets.ensure_packaged(engine)
    on = documents.date_of_service
    try:
        release = codesets.release_for(engine, "icd10cm", on)
    except codesets.NoRelease as exc:
        fiscal_year = on.year + 1 if on.month >= 10 else on.year
        raise NoCodeSet(
            f"Encounter/{documents.encounter_id}: no ICD-10-CM release is in force on its date "
            f"of service {on.isoformat()} ({exc}); import the CMS ICD-10-CM tabular of fiscal "
            f"year {fiscal_year} with `chartkeeper codes import --system icd10cm "
            f"--fiscal-year {fiscal_year} FILE`") from None
    table: Tabular = codesets.model(engine, release)
    return release, table


def _current_claim(txn: Txn, encounter_id: str) -> Resource | None:
    try:
        return txn.read("Claim", claim_id(encounter_id))
    except (NotFound, Gone):
        return None


def claim_id(encounter_id: str) -> str:
    """The id of the Claim that bills an encounter (one per encounter, re-coded in place)."""
    return str(uuid.uuid5(_IDS, f"Encounter/{encounter_id}/Claim"))


def _resource_id(encounter_id: str, kind: str, key: str) -> str:
    return str(uuid.uuid5(_IDS, f"Encounter/{encounter_id}/{kind}/{key}"))


# -------------------------------------------------------------------------- the decisions
@dataclass(frozen=True)
class FinalDiagnosis:
    code: str
    display: str
    poa: str | None


@dataclass(frozen=True)
class FinalProcedure:
    system: str
    code: str
    display: str | None
    performed: date
    units: int


@dataclass
class Plan:
    """Decisions checked against the encounter, its suggestions and the code sets: what
    ``write`` stores. Built with reads only, so that nothing is locked while it is checked."""

    documents: EncounterDocuments
    coder: Coder
    reason: str | None
    diagnoses: list[FinalDiagnosis]
    procedures: list[FinalProcedure]
    feedback: list[feedback.FeedbackRow]  # provenance id and time filled in by ``write``
    releases: dict[str, str]
    warnings: list[str]


@dataclass
class Finalized:
    """What a finalization wrote: versioned references (``Type/id/_history/n``)."""

    encounter_id: str
    patient_id: str
    provenance_id: str
    activity: str  # CREATE (first coding of the encounter) or UPDATE
    claim: str
    conditions: list[str]
    procedures: list[str]
    removed: list[str]  # Conditions and Procedures of an earlier coding, now deleted
    encounter: str
    targets: list[str]
    flags: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"encounter": self.encounter_id, "patient": self.patient_id,
                "provenance": self.provenance_id, "activity": self.activity,
                "claim": self.claim, "conditions": self.conditions,
                "procedures": self.procedures, "removed": self.removed,
                "encounterVersion": self.encounter, "targets": self.targets,
                "flags": self.flags, "warnings": self.warnings}


class _Problems:
    """Problems found while checking, reported together as one error of the right kind."""

    def __init__(self) -> None:
        self.found: list[tuple[type[CodingError], OutcomeIssue]] = []

    def add(self, kind: type[CodingError], expression: str, message: str) -> None:
        self.found.append((kind, OutcomeIssue(kind.issue_code, message, expression)))

    def raise_any(self, encounter_id: str) -> None:
        if not self.found:
            return
        kinds = [kind for kind, _ in self.found]
        # One exception class says what to fix first: a missing code set, then bad codes.
        kind = next((k for k in (NoCodeSet, InvalidCode, DecisionError) if k in kinds),
                    kinds[0])
        issues = [issue for _, issue in self.found]
        raise kind(f"Encounter/{encounter_id}: " + "; ".join(i.diagnostics for i in issues),
                   issues)


def prepare(store: Store, encounter_id: str, decisions: Sequence[Decision], coder: Coder,
            *, reason: str | None = None) -> Plan:
    """Check the decisions; every problem is reported at once and nothing is written."""
    if reason is not None and len(reason) > MAX_REASON:
        raise DecisionError(f"the reason is longer than {MAX_REASON} characters")
    with store.read() as txn:
        documents = encounter_text(txn, encounter_id)
    status = documents.encounter.get("status")
    if status != CODABLE_STATUS:
        raise NotCodable(f"Encounter/{encounter_id} is {status}: final codes are assigned "
                         f"once the encounter is {CODABLE_STATUS}")
    release, table = _icd10cm(store.engine, documents)
    raw, shown, _ = _suggest(store.engine, documents)
    feedback.create_feedback_schema(store.engine)
    problems = _Problems()
    releases = {"icd10cm": release.version}
    warnings = list(documents.skipped)
    checker = _CodeChecker(store.engine, documents, table, release, problems, releases,
                           warnings)
    plan = Plan(documents, coder, reason, [], [], [], releases, warnings)
    _apply_decisions(plan, decisions, raw, shown, checker, problems)
    problems.raise_any(encounter_id)
    return plan


def _apply_decisions(plan: Plan, decisions: Sequence[Decision], raw: Suggestions,
                     shown: Suggestions, checker: _CodeChecker, problems: _Problems) -> None:
    documents = plan.documents
    inpatient = documents.setting == "inpatient"
    offered: dict[tuple[str, str], tuple[int, Suggestion]] = {}
    for kind, listed in (("diagnosis", shown.diagnoses), ("procedure", shown.procedures)):
        for rank, suggestion in enumerate(listed, start=1):
            system = None if kind == "diagnosis" else "procedure"
            offered[(kind, _normal(suggestion.code, system))] = (rank, suggestion)
    engine_confidence = {(s.code): s.confidence for s in [*raw.diagnoses, *raw.procedures]}
    decided: dict[tuple[str, str], Decision] = {}
    added: list[Decision] = []
    finals: set[tuple[str | None, str]] = set()
    for number, decision in enumerate(decisions):
        where = f"decisions[{number}]"
        if not _decision_shape(decision, where, inpatient, problems):
            continue
        code = _normal(decision.code, decision.system)
        key = (decision.kind, code)
        if decision.action == "add" and key in offered:
            # Added by hand but on the list (a learned suggestion the coder had not seen):
            # that is accepting the suggestion.
            decision = replace(decision, action="accept")
        if decision.action != "add":
            if key not in offered:
                problems.add(DecisionError, f"{where}.code",
                             f"{decision.action} {decision.code}: not among the suggestions; "
                             "add it instead")
                continue
            if key in decided:
                problems.add(DecisionError, f"{where}.code",
                             f"{decision.code} is decided twice")
                continue
            decided[key] = decision
        else:
            added.append(decision)
        final = decision.final_code
        if final is None:
            continue
        final = _normal(final, decision.system)
        if (decision.system, final) in finals:
            problems.add(DecisionError, f"{where}.code", f"{final} is coded twice")
            continue
        finals.add((decision.system, final))
        if decision.kind == "diagnosis":
            display = checker.diagnosis(final, where)
            if display is not None:
                plan.diagnoses.append(FinalDiagnosis(final, display,
                                                     decision.poa if inpatient else None))
        else:
            assert decision.system is not None
            performed = decision.performed or documents.date_of_service
            if not documents.start <= performed <= documents.date_of_service:
                problems.add(DecisionError, f"{where}.performed",
                             f"{final}: performed on {performed}, outside the encounter "
                             f"({documents.start}..{documents.date_of_service})")
                continue
            checked = checker.procedure(decision.system, final, where)
            if checked is not None:
                plan.procedures.append(FinalProcedure(decision.system, final, checked[0],
                                                      performed, decision.units))
    undecided = [code for (kind, code), (_, s) in offered.items()
                 if s.proposed and (kind, code) not in decided]
    if undecided:
        problems.add(DecisionError, "decisions",
                     f"no decision on the proposed suggestion(s) {', '.join(undecided)}: "
                     "accept, edit or reject each")
    if not any(d.kind == "diagnosis" and d.action != "reject" for d in decisions):
        problems.add(DecisionError, "decisions",
                     "no final diagnosis: a coded encounter needs at least one")
    elif plan.diagnoses and inpatient and not cac._may_be_principal(plan.diagnoses[0].code):
        problems.add(DecisionError, "decisions",
                     f"{plan.diagnoses[0].code} cannot be the principal diagnosis (external "
                     "causes and birth outcomes never are, guidelines I.C.20.a, I.C.15.b.5): "
                     "put another diagnosis first")
    plan.feedback = _feedback_rows(plan, added, offered, decided, engine_confidence)


def _decision_shape(decision: Decision, where: str, inpatient: bool,
                    problems: _Problems) -> bool:
    """Reports what is incomplete or does not fit the setting; False when the decision is
    too broken to check further (no action, no code, an unknown code system)."""
    if decision.action not in ACTIONS:
        problems.add(DecisionError, f"{where}.action",
                     f"{decision.action!r} is not one of {', '.join(ACTIONS)}")
        return False
    if not decision.code or not decision.code.strip():
        problems.add(DecisionError, f"{where}.code", "a decision needs a code")
        return False
    if decision.action == "edit":
        if not decision.replacement or not decision.replacement.strip():
            problems.add(DecisionError, f"{where}.replacement",
                         f"edit {decision.code}: the code it becomes is missing")
        elif _normal(decision.replacement, decision.system) == _normal(decision.code,
                                                                        decision.system):
            problems.add(DecisionError, f"{where}.replacement",
                         f"edit {decision.code} to itself: accept it instead")
        if not decision.reason or not decision.reason.strip():
            problems.add(DecisionError, f"{where}.reason",
                         f"edit {decision.code}: say why the code changes")
    elif decision.replacement is not None:
        problems.add(DecisionError, f"{where}.replacement",
                     f"{decision.action} {decision.code}: only an edit has a replacement")
    if decision.reason is not None and len(decision.reason) > MAX_REASON:
        problems.add(DecisionError, f"{where}.reason",
                     f"the reason is longer than {MAX_REASON} characters")
    if decision.system is not None and decision.system not in PROCEDURE_SYSTEMS:
        problems.add(DecisionError, f"{where}.system",
                     f"{decision.system!r} is not one of {', '.join(PROCEDURE_SYSTEMS)} "
                     "(leave it empty for an ICD-10-CM diagnosis)")
        return False
    if decision.action != "reject":
        _setting_fits(decision, where, inpatient, problems)
    return True


def _setting_fits(decision: Decision, where: str, inpatient: bool,
                  problems: _Problems) -> None:
    if decision.kind == "diagnosis":
        if inpatient and decision.poa not in POA_INDICATORS:
            problems.add(DecisionError, f"{where}.poa",
                         f"{decision.code}: an inpatient diagnosis needs its present-on-"
                         f"admission indicator, one of {', '.join(POA_INDICATORS)} (got "
                         f"{decision.poa!r})")
        elif not inpatient and decision.poa is not None:
            problems.add(DecisionError, f"{where}.poa",
                         f"{decision.code}: present on admission is reported for inpatient "
                         "stays only")
        if decision.performed is not None or decision.units != 1:
            problems.add(DecisionError, f"{where}",
                         f"{decision.code}: a diagnosis has no performed date or units")
        return
    if inpatient and decision.system != "icd10pcs":
        problems.add(DecisionError, f"{where}.system",
                     f"{decision.code}: procedures of an inpatient stay are coded in "
                     f"ICD-10-PCS, not {PROCEDURE_NAMES[str(decision.system)]}")
    if not inpatient and decision.system == "icd10pcs":
        problems.add(DecisionError, f"{where}.system",
                     f"{decision.code}: outpatient procedures are coded in HCPCS or CPT, not "
                     "ICD-10-PCS")
    if inpatient and decision.performed is None:
        problems.add(DecisionError, f"{where}.performed",
                     f"{decision.code}: an ICD-10-PCS procedure needs the date performed")
    if decision.poa is not None:
        problems.add(DecisionError, f"{where}.poa",
                     f"{decision.code}: present on admission is for diagnoses")
    if decision.units < 1 or (decision.system == "icd10pcs" and decision.units != 1):
        problems.add(DecisionError, f"{where}.units",
                     f"{decision.code}: units must be 1 or more (1 for ICD-10-PCS), got "
                     f"{decision.units}")


def _normal(code: str, system: str | None) -> str:
    """A code as stored: ICD-10-CM dotted, the others upper case."""
    return dotted(code) if system is None else code.strip().upper()


class _CodeChecker:
    """Checks final codes against the releases in force on the date of service."""

    def __init__(self, engine: Engine, documents: EncounterDocuments, table: Tabular,
                 release: codesets.Release, problems: _Problems, releases: dict[str, str],
                 warnings: list[str]) -> None:
        self.engine = engine
        self.documents = documents
        self.table = table
        self.release = release
        self.problems = problems
        self.releases = releases
        self.warnings = warnings
        self._models: dict[str, Any] = {}
        self._missing: dict[str, str] = {}
        self._reported: set[str] = set()

    def diagnosis(self, code: str, where: str) -> str | None:
        """The code's title when it is a billable code of the release; else reports why."""
        on = self.documents.date_of_service.isoformat()
        release = f"ICD-10-CM {self.release.version} (in force {self.release.effective_from}.." \
                  f"{self.release.effective_to or 'open'}, the date of service being {on})"
        if code not in self.table:
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a code of {release}")
            return None
        if not self.table.is_billable(code):
            children = ", ".join(c.code for c in self.table.children(code)[:4])
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not billable in {release}: it has subdivisions "
                              f"({children}...); code to the highest specificity")
            return None
        return self.table.title(code)

    def procedure(self, system: str, code: str, where: str) -> tuple[str | None] | None:
        """(display,) when the code is valid for the date; else reports why."""
        if system == "hcpcs" and not _HCPCS.fullmatch(code):
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a HCPCS Level II code (a letter and 4 digits)")
            return None
        if system == "cpt" and not CPT_CODE.fullmatch(code):
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a CPT code (5 digits, or 4 digits + A/M/F/T/U)")
            return None
        if system == "icd10pcs" and not re.fullmatch(r"[0-9A-HJ-NP-Z]{7}", code):
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not an ICD-10-PCS code (7 characters, digits and "
                              "letters other than I and O)")
            return None
        checked, model = self._model(system, where)
        if not checked:
            return None
        if model is None:
            return (None,)  # no release of HCPCS or CPT at all: a warning says so
        version = self.releases[system]
        on = self.documents.date_of_service
        if system == "icd10pcs":
            if not model.is_valid(code):
                self.problems.add(InvalidCode, f"{where}.code",
                                  f"{code} is not a valid code of ICD-10-PCS {version}")
                return None
            return (str(model.title(code)),)
        if system == "hcpcs":
            if not model.is_valid(code, on):
                self.problems.add(InvalidCode, f"{where}.code",
                                  f"{code} is not a HCPCS code in force on {on} in HCPCS "
                                  f"{version}")
                return None
            found = model.get(code)
            return (str(found.long or found.short),)
        try:
            return (str(model.descriptor(code)),)
        except UnknownCode:
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a code of the site's CPT file {version}")
            return None

    def _model(self, system: str, where: str) -> tuple[bool, Any]:
        """(whether codes of the system can be accepted, the release in force or None).

        ICD-10-PCS codes need a release in force on the date of service. HCPCS and CPT codes
        are checked against one when the site imported any (CPT is licensed and many sites
        have no file): with none at all they pass on their form, with a warning."""
        if system in self._models:
            return True, self._models[system]
        on = self.documents.date_of_service
        name = PROCEDURE_NAMES[system]
        problem = self._missing.get(system)
        if problem is None:
            problem = self._missing[system] = self._release(system, name, on)
        if problem == "":
            return True, None
        if problem == "loaded":
            return True, self._models[system]
        if system not in self._reported:  # once, however many codes of the system
            self._reported.add(system)
            self.problems.add(NoCodeSet, f"{where}.system", problem)
        return False, None

    def _release(self, system: str, name: str, on: date) -> str:
        """Loads the release in force into ``_models``; returns the problem, "" for none."""
        fiscal_year = on.year + 1 if on.month >= 10 else on.year
        if not codesets.releases(self.engine, system):
            if system == "icd10pcs":
                return (f"no ICD-10-PCS release is imported, so ICD-10-PCS codes cannot be "
                        f"checked and are refused; import the CMS ICD-10-PCS tables with "
                        f"`chartkeeper codes import --system icd10pcs --fiscal-year "
                        f"{fiscal_year} FILE`")
            self.warnings.append(f"{name} codes were checked for their form only: no {name} "
                                 f"release is imported (`chartkeeper codes import --system "
                                 f"{system} FILE`)")
            return ""
        try:
            release = codesets.release_for(self.engine, system, on)
        except codesets.NoRelease as exc:
            return f"{name}: {exc}"
        self.releases[system] = release.version
        self._models[system] = codesets.model(self.engine, release)
        return "loaded"


def _feedback_rows(plan: Plan, added: Sequence[Decision],
                   offered: dict[tuple[str, str], tuple[int, Suggestion]],
                   decided: dict[tuple[str, str], Decision],
                   engine_confidence: dict[str, float]) -> list[feedback.FeedbackRow]:
    documents, coder = plan.documents, plan.coder
    stamp = datetime.now(UTC)
    rows = []
    outcome_of: dict[Action, feedback.Outcome] = {
        "accept": "accepted", "reject": "rejected", "edit": "edited", "add": "added"}
    titles = {d.code: d.display for d in plan.diagnoses}
    titles.update({p.code: p.display or p.code for p in plan.procedures})
    coded = {("diagnosis", d.code) for d in plan.diagnoses} | {
        ("procedure", p.code) for p in plan.procedures}
    for (kind, code), (rank, suggestion) in offered.items():
        decision = decided.get((kind, code))
        final = None
        outcome: feedback.Outcome = "rejected"
        if decision is not None:
            outcome = outcome_of[decision.action]
            if decision.final_code is not None:
                final = _normal(decision.final_code, decision.system)
        elif (kind, code) in coded:
            # Left alone, yet coded through another decision (an edit to this very code).
            outcome, final = "accepted", code
        rows.append(feedback.FeedbackRow(
            documents.encounter_id, documents.setting, kind, outcome,
            coder.user, coder.role, stamp, "", suggested_code=code,
            confidence=engine_confidence.get(suggestion.code), score=suggestion.confidence,
            rank=rank, proposed=suggestion.proposed,
            section=suggestion.evidence[0].section if suggestion.evidence else None,
            final_code=final, final_display=titles.get(final or ""),
            explicit=decision is not None,
            reason=decision.reason if decision is not None else None))
    for decision in added:
        code = _normal(decision.code, decision.system)
        rows.append(feedback.FeedbackRow(
            documents.encounter_id, documents.setting, decision.kind, "added", coder.user,
            coder.role, stamp, "", final_code=code, final_display=titles.get(code),
            reason=decision.reason))
    return rows


# ------------------------------------------------------------------------------- writing
BeforeCommit = Callable[[Txn], None] | None


def decide(store: Store, encounter_id: str, decisions: Sequence[Decision], coder: Coder, *,
           reason: str | None = None, audit: AuditTrail | None = None, via: str = "api",
           source_address: str | None = None, before_commit: BeforeCommit = None
           ) -> Finalized:
    """Check the coder's decisions and store the final codes in one transaction.

    With ``audit`` the entry is appended inside that transaction when the trail shares the
    store's database (else made durable just before the commit, as the API does);
    ``before_commit`` is the hook a page passes to append its request's own entry.
    """
    plan = prepare(store, encounter_id, decisions, coder, reason=reason)
    with store.write() as txn:
        finalized = write(txn, plan)
        if audit is not None:
            record = audit_record(finalized, coder, via=via, source_address=source_address)
            if str(audit.engine.url) == str(store.engine.url):
                audit.append(txn.conn, record)
            else:
                audit.append_many(None, [record], durable=True)
        if before_commit is not None:
            before_commit(txn)
    return finalized


def write(txn: Txn, plan: Plan) -> Finalized:
    """Store a checked plan inside the caller's write transaction (see ``decide``)."""
    documents = plan.documents
    encounter_id, patient_id = documents.encounter_id, documents.patient_id
    encounter = _read(txn, "Encounter", encounter_id)
    read_version = documents.encounter["meta"]["versionId"]
    if encounter["meta"]["versionId"] != read_version:
        raise Conflict(f"Encounter/{encounter_id} changed (version {read_version} became "
                       f"{encounter['meta']['versionId']}) since its decisions were checked; "
                       "open the worksheet again")
    existing_claim = _current_claim(txn, encounter_id)
    if existing_claim is not None and existing_claim.get("status") != "draft":
        raise AlreadyBilled(f"Claim/{existing_claim['id']} of Encounter/{encounter_id} is "
                            f"{existing_claim.get('status')}, no longer a draft: re-coding "
                            "would change a claim billing has taken; ask billing to void it")
    targets: list[str] = []
    conditions = _write_conditions(txn, plan, targets)
    procedures = _write_procedures(txn, plan, targets)
    removed = _remove_stale(txn, encounter_id, set(conditions + procedures), targets)
    body = version_body(encounter)
    body["diagnosis"] = [entry for entry in body.get("diagnosis") or []
                         if not _is_billing(entry)] + [
        {"condition": {"reference": f"Condition/{condition_id}"},
         "use": {"coding": [BILLING_ROLE]}, "rank": rank}
        for rank, condition_id in enumerate(conditions, start=1)]
    encounter_written = _store(txn, body, targets)
    flags: list[str] = []
    claim = _claim(txn, plan, encounter, conditions, flags)
    claim_written = _store(txn, claim, targets)
    warnings = list(plan.warnings)
    if "no-coverage" in flags:
        warnings.append(f"Patient/{patient_id} has no active Coverage on "
                        f"{documents.date_of_service}: the Claim is stored as a draft tagged "
                        "no-coverage, and billing will refuse it until coverage is recorded")
    if "no-provider" in flags:
        warnings.append(f"Encounter/{encounter_id} names no serviceProvider: the Claim's "
                        "provider is a placeholder, tagged no-provider")
    activity = "UPDATE" if existing_claim is not None else "CREATE"
    provenance_id = new_id()
    txn.create(_provenance(plan, targets, activity), resource_id=provenance_id)
    rows = [_with(row, provenance_id) for row in plan.feedback]
    feedback.record(txn.conn, rows)
    return Finalized(encounter_id, patient_id, provenance_id, activity, claim_written,
                     [t for t in targets if t.startswith("Condition/") and t not in removed],
                     [t for t in targets if t.startswith("Procedure/") and t not in removed],
                     removed, encounter_written, targets, flags, warnings)


def _with(row: feedback.FeedbackRow, provenance_id: str) -> feedback.FeedbackRow:
    return replace(row, provenance_id=provenance_id, decided_at=datetime.now(UTC))


def version_body(resource: Resource) -> Resource:
    """A stored version as the body of a new version: less what the store stamps."""
    body = copy.deepcopy(resource)
    meta = {k: v for k, v in body.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return body


def _is_billing(entry: Resource) -> bool:
    return any(c.get("system") == BILLING_ROLE["system"] and c.get("code") == "billing"
               for c in (entry.get("use") or {}).get("coding") or [])


def _store(txn: Txn, resource: Resource, targets: list[str]) -> str:
    """Write (or leave, when identical) a resource; its current version joins the targets."""
    result = txn.update(resource["resourceType"], resource["id"], resource)
    location = f"{result.resource_type}/{result.resource_id}/_history/{result.version_id}"
    targets.append(location)
    return location


def _write_conditions(txn: Txn, plan: Plan, targets: list[str]) -> list[str]:
    encounter_id = plan.documents.encounter_id
    ids = []
    for diagnosis in plan.diagnoses:
        condition_id = _resource_id(encounter_id, "Condition", diagnosis.code)
        _store(txn, {
            "resourceType": "Condition", "id": condition_id, "meta": {"tag": [CODED]},
            "category": [{"coding": [CONDITION_CATEGORY]}],
            "code": {"coding": [{"system": ICD10CM, "code": diagnosis.code,
                                 "display": diagnosis.display}], "text": diagnosis.display},
            "subject": {"reference": f"Patient/{plan.documents.patient_id}"},
            "encounter": {"reference": f"Encounter/{encounter_id}"},
        }, targets)
        ids.append(condition_id)
    return ids


def _write_procedures(txn: Txn, plan: Plan, targets: list[str]) -> list[str]:
    encounter_id = plan.documents.encounter_id
    ids = []
    seen: dict[str, int] = {}
    for procedure in plan.procedures:
        key = f"{procedure.system}|{procedure.code}"
        seen[key] = seen.get(key, 0) + 1
        procedure_id = _resource_id(encounter_id, "Procedure", f"{key}|{seen[key]}")
        coding = {"system": PROCEDURE_SYSTEMS[procedure.system], "code": procedure.code}
        if procedure.display:
            coding["display"] = procedure.display
        _store(txn, {
            "resourceType": "Procedure", "id": procedure_id, "meta": {"tag": [CODED]},
            "status": "completed", "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/{plan.documents.patient_id}"},
            "encounter": {"reference": f"Encounter/{encounter_id}"},
            "performedDateTime": procedure.performed.isoformat(),
        }, targets)
        ids.append(procedure_id)
    return ids


def _remove_stale(txn: Txn, encounter_id: str, keep: set[str], targets: list[str]
                  ) -> list[str]:
    """Delete the Conditions and Procedures of an earlier coding that this one dropped."""
    removed = []
    for resource_type in ("Condition", "Procedure"):
        for resource in search_all(txn, resource_type, [
                ("encounter", f"Encounter/{encounter_id}"),
                ("_tag", f"{TAG_SYSTEM}|{CODED['code']}")]):
            if resource["id"] in keep:
                continue
            result = txn.delete(resource_type, resource["id"])
            location = f"{resource_type}/{resource['id']}/_history/{result.version_id}"
            targets.append(location)
            removed.append(location)
    return removed


def _claim(txn: Txn, plan: Plan, encounter: Resource, condition_ids: list[str],
           flags: list[str]) -> Resource:
    documents = plan.documents
    encounter_id, inpatient = documents.encounter_id, documents.setting == "inpatient"
    tags = [CODED]
    provider = encounter.get("serviceProvider")
    if not (provider or {}).get("reference"):
        provider = {"type": "Organization",
                    "display": "Service provider not recorded on the encounter"}
        tags.append(NO_PROVIDER)
        flags.append("no-provider")
    coverages = _active_coverages(txn, documents.patient_id, documents.date_of_service)
    if coverages:
        insurance = [{"sequence": n, "focal": n == 1,
                      "coverage": {"reference": f"Coverage/{coverage['id']}"}}
                     for n, coverage in enumerate(coverages, start=1)]
    else:
        insurance = [{"sequence": 1, "focal": True, "coverage": {
            "type": "Coverage", "display": "No active coverage on the date of service"}}]
        tags.append(NO_COVERAGE)
        flags.append("no-coverage")
    claim: Resource = {
        "resourceType": "Claim", "id": claim_id(encounter_id), "meta": {"tag": tags},
        "identifier": [{"system": ENCOUNTER_SYSTEM, "value": encounter_id}],
        "status": "draft",
        "type": {"coding": [{"system": CLAIM_TYPE,
                             "code": "institutional" if inpatient else "professional",
                             "display": "Institutional" if inpatient else "Professional"}]},
        "use": "claim", "patient": {"reference": f"Patient/{documents.patient_id}"},
        "billablePeriod": {k: v for k, v in (encounter.get("period") or {}).items()
                           if k in ("start", "end")},
        "created": now_instant(), "provider": provider,
        "priority": {"coding": [NORMAL_PRIORITY]},
        "diagnosis": [_claim_diagnosis(n, diagnosis, inpatient)
                      for n, diagnosis in enumerate(plan.diagnoses, start=1)],
        "insurance": insurance,
    }
    if inpatient and plan.procedures:
        claim["procedure"] = [
            {"sequence": n, **({"type": [{"coding": [PRIMARY_PROCEDURE]}]} if n == 1 else {}),
             "date": procedure.performed.isoformat(),
             "procedureCodeableConcept": {"coding": [_procedure_coding(procedure)]}}
            for n, procedure in enumerate(plan.procedures, start=1)]
    if not inpatient and plan.procedures:
        pointers = list(range(1, min(4, len(plan.diagnoses)) + 1))
        claim["item"] = [
            {"sequence": n, "diagnosisSequence": pointers,
             "productOrService": {"coding": [_procedure_coding(procedure)]},
             "servicedDate": procedure.performed.isoformat(),
             "quantity": {"value": procedure.units},
             "encounter": [{"reference": f"Encounter/{encounter_id}"}]}
            for n, procedure in enumerate(plan.procedures, start=1)]
    return claim


def _claim_diagnosis(sequence: int, diagnosis: FinalDiagnosis, inpatient: bool) -> Resource:
    entry: Resource = {"sequence": sequence, "diagnosisCodeableConcept": {"coding": [
        {"system": ICD10CM, "code": diagnosis.code, "display": diagnosis.display}]}}
    if inpatient and sequence == 1:
        entry["type"] = [{"coding": [PRINCIPAL_DIAGNOSIS]}]
    if diagnosis.poa is not None:
        entry["onAdmission"] = poa_concept(diagnosis.poa)
    return entry


def poa_concept(indicator: str) -> Resource:
    """Claim.diagnosis.onAdmission for a UB-04 present-on-admission indicator."""
    display = POA_INDICATORS[indicator]
    codings = [{"system": POA_NUBC, "code": indicator, "display": display}]
    if indicator != "1":
        codings.insert(0, {"system": POA_FHIR, "code": indicator.lower(), "display": display})
    return {"coding": codings, "text": display}


def _procedure_coding(procedure: FinalProcedure) -> Resource:
    coding = {"system": PROCEDURE_SYSTEMS[procedure.system], "code": procedure.code}
    if procedure.display:
        coding["display"] = procedure.display
    return coding


def _active_coverages(txn: Txn, patient_id: str, on: date) -> list[Resource]:
    """The patient's active Coverages in force on the day, in their order of benefits."""
    found = []
    for coverage in search_all(txn, "Coverage", [("beneficiary", f"Patient/{patient_id}"),
                                                  ("status", "active")]):
        period = coverage.get("period") or {}
        if period.get("start") and str(period["start"])[:10] > on.isoformat():
            continue
        if period.get("end") and str(period["end"])[:10] < on.isoformat():
            continue
        found.append(coverage)
    return sorted(found, key=lambda c: (int(c.get("order") or 10**6), str(c["id"])))


def _provenance(plan: Plan, targets: list[str], activity: str) -> Resource:
    documents, coder = plan.documents, plan.coder
    reason: Resource = {"coding": [HEALTHCARE_PAYMENT]}
    if plan.reason and plan.reason.strip():
        reason["text"] = plan.reason.strip()
    provenance: Resource = {
        "resourceType": "Provenance", "target": [{"reference": t} for t in targets],
        "recorded": now_instant(),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": activity,
                                 "display": ACTIVITIES[activity]}],
                     "text": "final codes assigned from the coder's worksheet"},
        "reason": [reason],
        "agent": [{"type": {"coding": [AUTHOR]}, "role": [{"text": coder.role}],
                   "who": {"identifier": {"system": USER_SYSTEM, "value": coder.user},
                           "display": coder.user}}],
    }
    sources = {(d.id, d.version) for d in documents.documents}
    if sources:
        provenance["entity"] = [
            {"role": "source",
             "what": {"reference": f"DocumentReference/{doc_id}/_history/{version}"}}
            for doc_id, version in sorted(sources)]
    return provenance


def audit_record(finalized: Finalized, coder: Coder, *, via: str = "api",
                 source_address: str | None = None) -> AuditRecord:
    """The audit entry of a finalization: who, which encounter, what was written (references
    and counts only: never a code or a word of the notes)."""
    return AuditRecord(
        user_id=coder.user, role=coder.role,
        action=AuditAction.CREATE if finalized.activity == "CREATE" else AuditAction.UPDATE,
        patient_id=finalized.patient_id, resource_type="Encounter",
        resource_id=finalized.encounter_id, source_address=source_address,
        details={"via": via, "change": "final codes assigned",
                 "provenance": finalized.provenance_id, "claim": finalized.claim,
                 "diagnoses": len(finalized.conditions),
                 "procedures": len(finalized.procedures), "removed": len(finalized.removed),
                 "flags": finalized.flags, "versions": finalized.targets[:50]})


# ------------------------------------------------------------------------------ the queue
@dataclass(frozen=True)
class QueueItem:
    """A finished encounter waiting for its codes."""

    encounter_id: str
    patient_id: str
    patient_name: str
    encounter_class: str
    setting: Setting
    discharged: date
    age_days: int

    def to_json(self) -> dict[str, Any]:
        return {"encounter": self.encounter_id, "patient": self.patient_id,
                "patientName": self.patient_name, "class": self.encounter_class,
                "setting": self.setting, "discharged": self.discharged.isoformat(),
                "ageDays": self.age_days}


def queue(store: Store, *, as_of: date | None = None, limit: int | None = None
          ) -> list[QueueItem]:
    """Unbilled encounters: finished, with no coded Claim (one not entered in error), oldest
    discharge first (age in days on ``as_of``, today in UTC by default)."""
    today = as_of or datetime.now(UTC).date()
    with store.read() as txn:
        coded = _coded_encounters(txn)
        items = []
        names: dict[str, str] = {}
        for encounter in search_all(txn, "Encounter", [("status", "finished")]):
            if encounter["id"] in coded:
                continue
            period = encounter.get("period") or {}
            moment = period.get("end") or period.get("start")
            reference = str((encounter.get("subject") or {}).get("reference") or "")
            if not moment or not reference.startswith("Patient/"):
                continue  # no date or no patient: not billable, and not the coders' to fix
            patient_id = reference.split("/")[1]
            if patient_id not in names:
                names[patient_id] = _patient_name(txn, patient_id)
            discharged = _queue_day(str(moment))
            klass = str((encounter.get("class") or {}).get("code") or "")
            items.append(QueueItem(
                str(encounter["id"]), patient_id, names[patient_id], klass,
                "inpatient" if klass in INPATIENT_CLASSES else "outpatient", discharged,
                (today - discharged).days))
    items.sort(key=lambda item: (-item.age_days, item.encounter_id))
    return items if limit is None else items[:limit]


def _queue_day(value: str) -> date:
    """The day of a FHIR date or dateTime; a month or a year alone counts from its first day
    (the queue orders by it, it assigns nothing)."""
    year, month, day = (value[:10].split("-") + ["01", "01"])[:3]
    return date(int(year), int(month), int(day))


def _coded_encounters(txn: Txn) -> set[str]:
    found = set()
    for claim in search_all(txn, "Claim", [("_tag", f"{TAG_SYSTEM}|{CODED['code']}")]):
        if claim.get("status") == "entered-in-error":
            continue
        found.update(_encounters_billed(claim.get("identifier") or []))
    return found


def _encounters_billed(identifiers: Iterable[Resource]) -> set[str]:
    return {str(i["value"]) for i in identifiers
            if i.get("system") == ENCOUNTER_SYSTEM and i.get("value")}


def _patient_name(txn: Txn, patient_id: str) -> str:
    try:
        patient = txn.read("Patient", patient_id)
    except (NotFound, Gone):
        return ""
    names = patient.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if chosen.get("text"):
        return str(chosen["text"])
    return " ".join([*chosen.get("given", []), chosen.get("family", "")]).strip()
