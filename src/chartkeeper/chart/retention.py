"""Records retention: which patients' records are past their retention period, legal holds
that stop destruction, and destruction documented by a certificate.

A patient's record is past retention when every record in the patient's compartment is past
the period the site's schedule (``retention_rules.py``) gives it. Dates are counted
conservatively: a partial date counts as its last possible day, a record's own date as the
latest clinical date it carries, and a patient whose birth date is unknown is never past
retention (the minors rule cannot be checked). A legal hold is a FHIR ``Flag`` (category
``admin``, code ``urn:chartkeeper:retention|legal-hold``); while one is active nothing of
the patient's record can be destroyed (``retention_holds.py``; re-exported here, so this
module is the one public surface of records retention).
"""

from __future__ import annotations

import base64
import calendar
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from chartkeeper.chart.packet import human_name, medical_record_number
from chartkeeper.chart.retention_holds import (
    LEGAL_HOLD,
    RETENTION_SYSTEM,
    BeforeCommit,
    LegalHold,
    active_holds,
    holds_for,
    is_legal_hold,
    place_hold,
    release_hold,
    required_text,
)
from chartkeeper.chart.retention_rules import (
    RetentionPeriod,
    RetentionRules,
    load_retention_rules,
)
from chartkeeper.security.access import patients_of
from chartkeeper.store import Store
from chartkeeper.store.errors import Conflict, InvalidRequest
from chartkeeper.store.service import (
    Resource,
    Txn,
    everything,
    new_id,
    now_instant,
    provenance_of,
)

CERTIFICATE = {"system": RETENTION_SYSTEM, "code": "certificate-of-destruction",
               "display": "Certificate of destruction"}
SCAN_BATCH = 200
# Records about the record, not of it: they go with the patient but set no retention date.
_ADMINISTRATIVE = frozenset({"Provenance", "AuditEvent"})
# Elements that date a record, by their FHIR names; the latest one present counts.
_DATE_ELEMENTS = (
    "effectiveDateTime", "effectivePeriod", "effectiveInstant", "performedDateTime",
    "performedPeriod", "occurrenceDateTime", "occurrencePeriod", "onsetDateTime", "onsetPeriod",
    "abatementDateTime", "recordedDate", "authoredOn", "issued", "date", "created", "period",
    "billablePeriod", "executionPeriod", "whenHandedOver", "dateAsserted", "started",
)

__all__ = [
    "CERTIFICATE", "LEGAL_HOLD", "RETENTION_SYSTEM", "DestructionCertificate",
    "DestructionRefused", "LegalHold", "LegalHoldActive", "PatientRetention", "RetentionNotEnded",
    "RetentionPeriod", "RetentionRules", "ReviewItem", "active_holds", "certificates", "destroy",
    "holds_for", "load_retention_rules", "past_retention", "patient_records", "place_hold",
    "release_hold", "retention_of",
]


class DestructionRefused(Conflict):
    """The patient's records may not be destroyed; nothing was changed."""

    issue_code = "business-rule"


class LegalHoldActive(DestructionRefused):
    """A legal hold is active on the patient."""


class RetentionNotEnded(DestructionRefused):
    """Some record of the patient is still inside its retention period (or its end is not
    known)."""


# ---------------------------------------------------------------------- dates
def add_years(day: date, years: int) -> date:
    """``day`` ``years`` later; 29 February becomes 1 March (the later day: keep, not lose)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 3, 1)


def latest_day(value: Any) -> date | None:
    """The last calendar day a FHIR date, dateTime or instant can mean (``2001`` is
    2001-12-31, ``2001-05`` is 2001-05-31); a Period by its end, else its start."""
    if isinstance(value, dict):
        return latest_day(value.get("end")) or latest_day(value.get("start"))
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return date(int(value), 12, 31)
        if len(value) == 7:
            year, month = int(value[:4]), int(value[5:7])
            return date(year, month, calendar.monthrange(year, month)[1])
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def record_day(record: Mapping[str, Any]) -> date | None:
    """The latest clinical date ``record`` carries (None: it has none)."""
    days = [latest_day(record.get(name)) for name in _DATE_ELEMENTS]
    context = record.get("context")
    if isinstance(context, dict):
        days.append(latest_day(context.get("period")))
    found = [d for d in days if d is not None]
    return max(found) if found else None


# ---------------------------------------------------------------------- retention
@dataclass(frozen=True)
class PatientRetention:
    """When the last of a patient's records leaves its retention period, and why.

    ``ends`` is None when it cannot be known (``basis`` says why); the records are then kept.
    """

    patient_id: str
    ends: date | None
    basis: str
    last_encounter: date | None
    first_record: date | None
    last_record: date | None
    record_count: int
    counts: Mapping[str, int] = field(default_factory=dict)

    def past(self, as_of: date) -> bool:
        return self.ends is not None and self.ends <= as_of


def patient_records(txn: Txn, patient_id: str) -> list[Resource]:
    """The Patient and every record in its compartment (not the shared resources they cite:
    practitioners, organizations, medications)."""
    return [r for r in everything(txn, patient_id)
            if (r["resourceType"] == "Patient" and r["id"] == patient_id)
            or (r["resourceType"] != "Patient" and patient_id in patients_of(r))]


def retention_of(patient: Resource, records: Iterable[Resource], rules: RetentionRules
                 ) -> PatientRetention:
    """When the patient's records (the Patient among them, or not) are all past retention."""
    patient_id = str(patient["id"])
    dated: list[tuple[Resource, date | None]] = [
        (r, record_day(r)) for r in records
        if r["resourceType"] not in _ADMINISTRATIVE and not is_legal_hold(r)
        and not (r["resourceType"] == "Patient" and r.get("id") == patient_id)]
    days = [d for _, d in dated if d is not None]
    encounters = [d for r, d in dated if r["resourceType"] == "Encounter" and d is not None]
    last_encounter = max(encounters) if encounters else None
    # Without an encounter the period counts from the last record; without either, from
    # when the Patient itself was last written.
    last_activity = last_encounter or (max(days) if days else None) or latest_day(
        (patient.get("meta") or {}).get("lastUpdated"))
    born = latest_day(patient.get("birthDate"))
    ends: date | None = None
    basis = ""
    if rules.minors.enabled and born is None:
        basis = "the birth date is not recorded, so the minors rule cannot be checked"
    elif last_activity is None:
        basis = "no record carries a date"
    else:
        counted = "last encounter" if last_encounter else "last dated record"
        for record, day in [(patient, None), *dated]:
            end, why = _record_end(record, day, (last_activity, counted),
                                   born if rules.minors.enabled else None, rules)
            if ends is None or end > ends:
                ends, basis = end, why
    counts = Counter(str(r["resourceType"]) for r, _ in dated)
    counts["Patient"] += 1
    return PatientRetention(patient_id, ends, basis, last_encounter,
                            min(days) if days else None, max(days) if days else None,
                            len(dated) + 1, dict(sorted(counts.items())))


def _record_end(record: Resource, day: date | None, last_activity: tuple[date, str],
                born: date | None, rules: RetentionRules) -> tuple[date, str]:
    """When ``record`` (dated ``day``) leaves retention, and the rule that says so."""
    chosen_by, period = rules.period_for(record)
    start, counted = last_activity
    if period.counted_from == "record-date" and day is not None:
        start, counted = day, "record date"
    end = add_years(start, period.years)
    basis = f"{record['resourceType']}: {chosen_by}, {period.years} years after the {counted}"
    if born is not None:
        majority = add_years(born, rules.minors.age_of_majority)
        if (day or start) < majority:
            minor_end = add_years(max(majority, start), rules.minors.years_after_majority)
            if minor_end > end:
                end = minor_end
                basis = (f"{record['resourceType']}: minor, {rules.minors.years_after_majority}"
                         f" years after the later of majority ({majority}) and the {counted}")
    return end, basis


# ---------------------------------------------------------------------- review
@dataclass(frozen=True)
class ReviewItem:
    """A patient whose records are all past retention, for the HIM review."""

    patient: Resource
    name: str
    mrn: str
    retention: PatientRetention
    holds: list[LegalHold]

    @property
    def patient_id(self) -> str:
        return str(self.patient["id"])

    @property
    def retention_ended(self) -> date:
        assert self.retention.ends is not None
        return self.retention.ends

    @property
    def held(self) -> bool:
        return any(h.active for h in self.holds)


def past_retention(store: Store, rules: RetentionRules, as_of: date, limit: int = 50,
                   offset: int = 0) -> list[ReviewItem]:
    """Patients whose records are all past retention on ``as_of`` (held ones included, marked),
    in Patient id order: results ``offset`` to ``offset + limit``.

    Patients are paged through the store's search, ``SCAN_BATCH`` at a time; one with an
    encounter inside the shortest retention period is passed over on an index-only count,
    and only the others have their whole record read. The cost grows with the patients
    scanned, never with the store loaded at once.
    """
    if limit < 1 or offset < 0:
        raise InvalidRequest(f"limit must be at least 1 and offset not negative, got {limit}, "
                             f"{offset}")
    recent = add_years(as_of, -rules.shortest_years()) + timedelta(days=1)
    found: list[ReviewItem] = []
    skipped = 0
    scanned = 0
    while len(found) < limit:
        with store.read() as txn:
            patients = txn.search_params("Patient", [
                ("_sort", "_id"), ("_count", str(SCAN_BATCH)), ("_offset", str(scanned))]
            ).matches
            for patient in patients:
                item = _review(txn, patient, rules, as_of, recent)
                if item is None:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(item)
                if len(found) == limit:
                    break
        scanned += len(patients)
        if len(patients) < SCAN_BATCH:
            break
    return found


def _review(txn: Txn, patient: Resource, rules: RetentionRules, as_of: date, recent: date
            ) -> ReviewItem | None:
    patient_id = str(patient["id"])
    seen_lately = txn.search_params("Encounter", [
        ("patient", f"Patient/{patient_id}"), ("date", f"ge{recent.isoformat()}"),
        ("_summary", "count")]).total
    if seen_lately:
        return None
    retention = retention_of(patient, patient_records(txn, patient_id), rules)
    if not retention.past(as_of):
        return None
    return ReviewItem(patient, human_name(patient), medical_record_number(patient), retention,
                      holds_for(txn, patient_id))


# ---------------------------------------------------------------------- destruction
@dataclass(frozen=True)
class DestructionCertificate:
    """What was destroyed, whose, when, how and on whose authority; ``reference`` is the
    certificate's DocumentReference, which outlives the record."""

    reference: str
    patient_id: str
    name: str
    mrn: str
    records_destroyed: int
    first_record: date | None
    last_record: date | None
    retention_ended: date
    method: str
    authorised_by: str
    destroyed_at: str
    text: str


def destroy(store: Store, patient_id: str, rules: RetentionRules, as_of: date,
            authorised_by: str, method: str, before_commit: BeforeCommit = None,
            certificate_id: str | None = None) -> DestructionCertificate:
    """Destroy the patient's record, once it is all past retention and under no legal hold,
    and document it with a certificate of destruction, in one transaction.

    Refused (``LegalHoldActive``, ``RetentionNotEnded``; nothing changes) while a hold is
    active or any record is inside its period. Deleted: the Patient, every record in its
    compartment (legal-hold Flags included) and the Provenances about those records only.
    Shared resources the records cite (practitioners, organizations) stay.

    This is the store's delete: a record is gone from reads, searches and the chart, but
    the store keeps every version of it (history, vread). A purge of those prior versions
    is not implemented; the certificate says so, so that the versions can be purged by a
    database task later and nobody takes the record for erased from the database.

    The certificate is a DocumentReference with no subject: it names the patient by name and
    MRN as text, the minimum an HIM director needs to answer later "was this record destroyed,
    when, how, under which policy and on whose authority" (AHIMA's certificate elements),
    and keeps nothing clinical: counts by resource type and the date range, not titles,
    diagnoses, birth date or address. It is signed (``docStatus`` final and an
    authenticator), so the API refuses to change it. ``certificate_id`` names it in advance
    (a caller's audit entry, appended in ``before_commit``, can then point to it).
    """
    authorised_by = required_text("who authorised the destruction", authorised_by)
    method = required_text("the method of destruction", method)
    with store.write() as txn:
        patient = txn.read("Patient", patient_id)
        holds = holds_for(txn, patient_id)
        active = [h for h in holds if h.active]
        if active:
            raise LegalHoldActive(
                f"Patient/{patient_id} is under legal hold ({', '.join(h.matter for h in active)}"
                "): nothing may be destroyed until the hold is released")
        records = patient_records(txn, patient_id)
        retention = retention_of(patient, records, rules)
        if retention.ends is None:
            raise RetentionNotEnded(f"Patient/{patient_id}: the end of retention is not known "
                                    f"({retention.basis}); the records are kept")
        if not retention.past(as_of):
            raise RetentionNotEnded(f"Patient/{patient_id} is inside its retention period until "
                                    f"{retention.ends} ({retention.basis})")
        keys = {(str(r["resourceType"]), str(r["id"])) for r in records}
        about_records = _provenances_only_about(txn, keys)
        for resource_type, resource_id in sorted(keys - {("Patient", patient_id)}):
            txn.delete(resource_type, resource_id)
        txn.delete("Patient", patient_id)
        for provenance_id in about_records:
            txn.delete("Provenance", provenance_id)
        destroyed_at = now_instant()
        name, mrn = human_name(patient), medical_record_number(patient)
        destroyed = Counter(kind for kind, _ in keys)
        destroyed["Provenance"] += len(about_records)
        text = certificate_text(patient_id, name, mrn, retention, destroyed, holds, method,
                                authorised_by, destroyed_at, as_of)
        document = txn.create(_certificate(name, mrn, retention, authorised_by, destroyed_at,
                                           text), resource_id=certificate_id or new_id())
        if before_commit is not None:
            before_commit(txn)
    assert retention.ends is not None
    return DestructionCertificate(
        document.location.split("/_history/")[0], patient_id, name, mrn,
        sum(destroyed.values()), retention.first_record, retention.last_record, retention.ends,
        method, authorised_by, destroyed_at, text)


def _provenances_only_about(txn: Txn, keys: set[tuple[str, str]]) -> list[str]:
    """Provenances every target of which is one of ``keys`` (an import's Provenance that also
    names other patients' records stays)."""
    found: dict[str, Resource] = {}
    for provenances in provenance_of(txn, keys).values():
        for provenance in provenances:
            found[str(provenance["id"])] = provenance
    only = []
    for provenance_id, provenance in found.items():
        targets = {tuple(str(t.get("reference", "")).split("/_history/")[0].split("/")[-2:])
                   for t in provenance.get("target") or []}
        if targets <= keys and ("Provenance", provenance_id) not in keys:
            only.append(provenance_id)
    return sorted(only)


def certificate_text(patient_id: str, name: str, mrn: str, retention: PatientRetention,
                     destroyed: Mapping[str, int], holds: list[LegalHold], method: str,
                     authorised_by: str, destroyed_at: str, as_of: date) -> str:
    """The certificate as people read and print it."""
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(destroyed.items()) if n)
    if holds:
        last = max((h.released or "" for h in holds), default="")
        hold_line = (f"{len(holds)} legal hold(s) had been placed, all released before "
                     f"destruction (the last on {last or 'an unrecorded date'})")
    else:
        hold_line = "none was ever placed"
    return "\n".join([
        "CERTIFICATE OF DESTRUCTION",
        "",
        f"Health record of: {name}",
        f"Medical record number: {mrn or '(none recorded)'}",
        f"Record store id: Patient/{patient_id}",
        f"Records destroyed: {sum(destroyed.values())} ({counts})",
        f"Date range of the records: {retention.first_record or 'not dated'} to "
        f"{retention.last_record or 'not dated'}",
        f"Last encounter: {retention.last_encounter or 'none recorded'}",
        f"Retention period ended: {retention.ends} ({retention.basis}), checked as of {as_of}",
        f"Legal holds: {hold_line}",
        f"Method of destruction: {method}",
        f"Authorised by: {authorised_by}",
        f"Destroyed: {destroyed_at}",
        "",
        "The records were deleted from the Chartkeeper record store: they no longer appear in",
        "reads, searches or the chart. The store keeps prior versions of every record for its",
        "history; a purge of those versions is not implemented, so they remain in the",
        "database's version history until purged by a separate database task.",
    ]) + "\n"


def _certificate(name: str, mrn: str, retention: PatientRetention, authorised_by: str,
                 destroyed_at: str, text: str) -> Resource:
    context: Resource = {}
    if retention.first_record and retention.last_record:
        context = {"context": {"period": {"start": retention.first_record.isoformat(),
                                          "end": retention.last_record.isoformat()}}}
    return {
        "resourceType": "DocumentReference",
        "meta": {"tag": [{"system": RETENTION_SYSTEM, "code": CERTIFICATE["code"]}]},
        "status": "current", "docStatus": "final",
        "type": {"coding": [CERTIFICATE], "text": "Certificate of destruction"},
        "date": destroyed_at,
        "author": [{"display": authorised_by}],
        "authenticator": {"display": authorised_by},
        "description": f"Certificate of destruction: health record of {name}, MRN "
                       f"{mrn or '(none recorded)'}",
        "content": [{"attachment": {
            "contentType": "text/plain; charset=utf-8", "language": "en",
            "title": "Certificate of destruction", "creation": destroyed_at,
            "data": base64.b64encode(text.encode()).decode()}}],
        **context,
    }


def certificates(txn: Txn, mrn: str = "", limit: int = 20) -> list[Resource]:
    """Certificates of destruction, the newest first; with ``mrn``, those naming it."""
    params = [("type", f"{RETENTION_SYSTEM}|{CERTIFICATE['code']}"), ("_sort", "-date"),
              ("_count", str(limit))]
    if mrn.strip():
        params.append(("description:contains", f"MRN {mrn.strip()}"))
    return txn.search_params("DocumentReference", params).matches
