"""Quantitative analysis of discharged records: which documents are missing, late or
unsigned, who must complete them, and whether the record is delinquent.

``analyze`` reads the store in batches (``scan``); ``check_encounter`` applies the rule set to
one encounter's record. A deficiency is *actionable* when a physician can resolve it (dictate
the missing document, sign the unsigned one); a late H&P is reported but cannot be undone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from chartkeeper.chart.completion.rules import CompletionRules, pcs_matches
from chartkeeper.chart.completion.scan import (
    EncounterRecord,
    coded,
    discharged_in,
    encounters_by_reference,
    parse_datetime,
    reference_key,
)
from chartkeeper.store import Store

Resource = dict[str, Any]
LOINC = "http://loinc.org"
# ICD-10-PCS: the URI FHIR (terminology.hl7.org) gives it, and its OID.
ICD10PCS_SYSTEMS = ("http://www.cms.gov/Medicare/Coding/ICD10", "urn:oid:2.16.840.1.113883.6.4")
AGE_BANDS = ((0, 7, "0-7"), (8, 14, "8-14"), (15, 30, "15-30"))
OVER_30 = ">30"
# What a physician is asked to do about each rule's deficiency (Task.code).
TASK_CODES = {
    "authentication": ("sign", "Sign document"),
    "discharge-summary": ("dictate-discharge-summary", "Dictate discharge summary"),
    "history-and-physical": ("dictate-history-and-physical", "Dictate history and physical"),
    "operative-report": ("dictate-operative-report", "Dictate operative report"),
    "pathology-report": ("pathology-report", "Complete pathology report"),
}
IGNORED_PROCEDURE_STATUSES = ("not-done", "entered-in-error", "preparation")


@dataclass(frozen=True)
class Deficiency:
    """One thing a discharged record lacks.

    ``rule`` is a rule name (``RULE_NAMES``); ``kind`` is ``missing`` (no such document),
    ``unsigned`` (the document is not authenticated) or ``late`` (an H&P written after the
    allowed hours). References are ``Type/id``; ``physician`` is who must act (None when the
    record names nobody); ``procedure`` is the operation an operative or pathology report
    is owed for.
    """

    rule: str
    kind: str
    encounter: str
    patient: str | None
    physician: str | None
    document: str | None
    procedure: str | None
    encounter_class: str | None
    discharged: date
    days_since_discharge: int
    delinquent: bool
    detail: str

    @property
    def actionable(self) -> bool:
        return self.kind in ("missing", "unsigned")

    @property
    def task_code(self) -> str | None:
        return TASK_CODES[self.rule][0] if self.actionable else None

    @property
    def target(self) -> str:
        """The resource the deficiency is about: the document, the operation, the stay."""
        return self.document or self.procedure or self.encounter

    @property
    def key(self) -> str:
        """A deterministic business key: the same deficiency always has the same key."""
        return f"{self.task_code or self.kind}/{self.target}"

    @property
    def age_band(self) -> str:
        return age_band(self.days_since_discharge)


def age_band(days: int) -> str:
    """The dashboard's band for days since discharge: 0-7, 8-14, 15-30 or >30."""
    for low, high, label in AGE_BANDS:
        if low <= days <= high:
            return label
    return OVER_30 if days > 30 else AGE_BANDS[0][2]


# ---------------------------------------------------------------------- one record
def _current(documents: list[Resource]) -> list[Resource]:
    """Documents that stand in the record (superseded and erroneous ones do not)."""
    return [d for d in documents if d.get("status", "current") == "current"]


def _of_type(documents: list[Resource], loinc: tuple[str, ...]) -> list[Resource]:
    return [d for d in documents if set(coded(d.get("type"), LOINC)) & set(loinc)]


def written_at(document: Resource) -> datetime | None:
    """When a document was written: its attachment's ``creation``, else its ``date``."""
    for content in document.get("content") or []:
        creation = parse_datetime((content.get("attachment") or {}).get("creation"))
        if creation is not None:
            return creation
    return parse_datetime(document.get("date"))


def _author(document: Resource) -> str | None:
    for author in document.get("author") or []:
        key = reference_key(author)
        if key and key.startswith(("Practitioner/", "PractitionerRole/")):
            return key
    return None


def _title(document: Resource) -> str:
    concept = document.get("type") or {}
    codings = concept.get("coding") or [{}]
    return str(document.get("description") or concept.get("text")
               or codings[0].get("display") or "document")


def _performed(procedure: Resource) -> datetime | None:
    return (parse_datetime(procedure.get("performedDateTime"))
            or parse_datetime((procedure.get("performedPeriod") or {}).get("start")))


def _performer(procedure: Resource) -> str | None:
    for performer in procedure.get("performer") or []:
        key = reference_key(performer.get("actor"))
        if key and key.startswith(("Practitioner/", "PractitionerRole/")):
            return key
    return None


def _operations(procedures: list[Resource], patterns: tuple[str, ...], fallback: date
                ) -> list[tuple[date, list[Resource]]]:
    """Procedures whose ICD-10-PCS code matches ``patterns``, grouped by day (one operation
    per day), earliest first."""
    by_day: dict[date, list[Resource]] = {}
    for procedure in procedures:
        if procedure.get("status") in IGNORED_PROCEDURE_STATUSES:
            continue
        codes = [c for system in ICD10PCS_SYSTEMS for c in coded(procedure.get("code"), system)]
        if any(pcs_matches(code, patterns) for code in codes):
            performed = _performed(procedure)
            by_day.setdefault(performed.date() if performed else fallback, []).append(procedure)
    return sorted(by_day.items(), key=lambda item: item[0])


def _unreported(operations: list[tuple[date, list[Resource]]], reports: list[Resource]
                ) -> list[tuple[date, list[Resource]]]:
    """Operations no report answers for: each report (earliest first) answers for the
    earliest operation on or before its date that is still open."""
    dated = sorted((written_at(r) for r in reports), key=lambda m: (m is None, m))
    open_operations = list(operations)
    for moment in dated:
        for index, (day, _) in enumerate(open_operations):
            if moment is None or day <= moment.date():
                del open_operations[index]
                break
    return open_operations


class _Finder:
    """Collects one encounter's deficiencies with the fields they share."""

    def __init__(self, record: EncounterRecord, rules: CompletionRules, as_of: date,
                 discharged: date) -> None:
        self.record = record
        self.days = (as_of - discharged).days
        self.delinquent = self.days > rules.delinquency.threshold_days
        self.discharged = discharged
        self.found: list[Deficiency] = []

    def add(self, rule: str, kind: str, physician: str | None, detail: str,
            document: str | None = None, procedure: str | None = None) -> None:
        record = self.record
        self.found.append(Deficiency(
            rule=rule, kind=kind, encounter=record.reference, patient=record.patient,
            physician=physician, document=document, procedure=procedure,
            encounter_class=record.encounter_class, discharged=self.discharged,
            days_since_discharge=self.days,
            delinquent=self.delinquent and kind in ("missing", "unsigned"), detail=detail))


def check_encounter(record: EncounterRecord, rules: CompletionRules, as_of: date
                    ) -> list[Deficiency]:
    """The deficiencies of one encounter's record as of ``as_of``; none unless the encounter
    was discharged (finished, with an end) on or before ``as_of``."""
    discharged_at = record.discharged
    if discharged_at is None or discharged_at.date() > as_of:
        return []
    finder = _Finder(record, rules, as_of, discharged_at.date())
    klass = record.encounter_class
    documents = _current(record.documents)
    attending = record.attending()

    hp = rules.history_and_physical
    if hp.enabled and klass in hp.encounter_classes:
        _check_history_and_physical(finder, _of_type(documents, hp.loinc), rules, attending)
    summary = rules.discharge_summary
    if summary.enabled and klass in summary.encounter_classes and not _of_type(
            documents, summary.loinc):
        finder.add("discharge-summary", "missing", attending, "No discharge summary")
    for name, patterns, loinc in (
            ("operative-report", rules.operative_report.operating_room_pcs,
             rules.operative_report.loinc),
            ("pathology-report", rules.pathology_report.tissue_pcs,
             rules.pathology_report.loinc)):
        rule = rules.rule(name)
        if not rule.enabled or klass not in rule.encounter_classes:
            continue
        operations = _operations(record.procedures, patterns, discharged_at.date())
        for day, procedures in _unreported(operations, _of_type(documents, loinc)):
            what = "operative report" if name == "operative-report" else "pathology report"
            surgeon = next((p for p in map(_performer, procedures) if p), attending)
            finder.add(name, "missing", surgeon,
                       f"No {what} for the operation of {day.isoformat()}",
                       procedure=f"Procedure/{procedures[0]['id']}")
    signing = rules.authentication
    if signing.enabled and klass in signing.encounter_classes:
        for document in documents:
            if (document.get("docStatus") in signing.signed_statuses
                    and reference_key(document.get("authenticator"))):
                continue
            if document.get("author") and _author(document) is None:
                continue  # not a clinician's (a patient's statement of disagreement)
            finder.add("authentication", "unsigned", _author(document) or attending,
                       f"{_title(document)} not signed",
                       document=f"DocumentReference/{document['id']}")
    return finder.found


def _check_history_and_physical(finder: _Finder, reports: list[Resource],
                                rules: CompletionRules, attending: str | None) -> None:
    rule = rules.history_and_physical
    if not reports:
        finder.add("history-and-physical", "missing", attending, "No history and physical")
        return
    admitted = finder.record.admitted
    if admitted is None:
        return
    earliest = admitted - timedelta(days=rule.days_before_admission)
    latest = admitted + timedelta(hours=rule.hours_after_admission)
    dated = [(written_at(r), r) for r in reports]
    if any(moment is None or earliest <= moment <= latest for moment, _ in dated):
        return
    moment, first = min(((m, r) for m, r in dated if m is not None), key=lambda item: item[0])
    hours = (moment - admitted).total_seconds() / 3600
    when = (f"{hours:.0f} hours after admission" if hours > 0
            else f"{-hours / 24:.0f} days before admission")
    finder.add("history-and-physical", "late", _author(first) or attending,
               f"History and physical written {when}",
               document=f"DocumentReference/{first['id']}")


# ---------------------------------------------------------------------- the store
def analysis_start(rules: CompletionRules, as_of: date) -> date | None:
    """The earliest discharge date the analysis looks at (None: the whole record)."""
    days = rules.analysis.lookback_days
    return as_of - timedelta(days=days) if days else None


def records_to_analyze(store: Store, rules: CompletionRules, as_of: date,
                       encounters: Iterable[str] | None = None
                       ) -> Iterator[list[EncounterRecord]]:
    """Batches of the encounter records an analysis reads."""
    if encounters is not None:
        return encounters_by_reference(store, encounters)
    return discharged_in(store, analysis_start(rules, as_of), as_of)


def analyze(store: Store, rules: CompletionRules | None = None, as_of: date | None = None,
            encounters: Iterable[str] | None = None) -> list[Deficiency]:
    """Every deficiency of the records discharged on or before ``as_of`` (default today),
    or of just ``encounters`` (``Encounter/id`` references) when given; sorted by discharge
    date, encounter, rule and target."""
    rules = rules or CompletionRules()
    as_of = as_of or date.today()
    classes = rules.analysed_classes()
    found: list[Deficiency] = []
    for batch in records_to_analyze(store, rules, as_of, encounters):
        for record in batch:
            if record.encounter_class in classes:
                found.extend(check_encounter(record, rules, as_of))
    found.sort(key=lambda d: (d.discharged, d.encounter, d.rule, d.target))
    return found
