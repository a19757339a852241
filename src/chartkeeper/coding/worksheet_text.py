"""The text the coding engine reads for an encounter: its current documents' text/plain
attachments, in date order, with where each one lies in the joined text."""

from __future__ import annotations

import base64
import binascii
import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from chartkeeper.coding.worksheet import (
    INPATIENT_CLASSES,
    CodingError,
    NotCodable,
    Resource,
    Setting,
)
from chartkeeper.store.errors import Gone, NotFound
from chartkeeper.store.service import Txn, search_all

# Between two documents in the text the engine reads: no words, so nothing in it is coded.
SEPARATOR = "\n\n" + "=" * 72 + "\n\n"


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
    encounter = read_resource(txn, "Encounter", encounter_id)
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
    patient = read_resource(txn, "Patient", patient_id)
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


def read_resource(txn: Txn, resource_type: str, resource_id: str) -> Resource:
    """A resource the coding needs: NotFound when unknown, NotCodable when deleted."""
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
