"""The release-of-information packet as a PDF: cover letter, documents, then record summaries.

Pure rendering (no database): ``roi.release`` gathers the facts into a ``PacketContent`` and
stores the bytes. The PDF uses the standard Helvetica font with the cp1252 encoding so that
it needs no font file; characters outside cp1252 are reduced to their base letter or "?".
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

Resource = dict[str, Any]
Progress = Callable[[int, int], None]

LOINC = "http://loinc.org"
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"

# 45 CFR 164.508(c)(2)(iii): the authorization warns that what it releases may be redisclosed.
REDISCLOSURE_NOTICE = (
    "This information has been disclosed to you from confidential health records. Once "
    "disclosed, it may be redisclosed by the recipient and may then no longer be protected by "
    "the federal Privacy Rule (45 CFR 164.508(c)(2)(iii)).")
# 42 CFR 2.32(a)(2), the short form of the statement that must accompany each disclosure of
# Part 2 records made with the patient's consent (as amended in 2024; the long form,
# 2.32(a)(1), may be used instead). 2.32(b) also wants the consent or its scope enclosed: the
# letter lists the authorization's scope when Part 2 records are included.
PART2_NOTICE = "42 CFR part 2 prohibits unauthorized use or disclosure of these records."

# The order of the summary tables after the documents, and what goes in each.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Problems", ("Condition",)),
    ("Allergies", ("AllergyIntolerance",)),
    ("Medications", ("MedicationRequest", "MedicationStatement", "MedicationAdministration")),
    ("Results", ("Observation",)),
    ("Reports", ("DiagnosticReport",)),
    ("Procedures", ("Procedure",)),
    ("Immunizations", ("Immunization",)),
    ("Encounters", ("Encounter",)),
)
DOCUMENT_TYPES = ("DocumentReference",)
MAX_CELL_LINES = 30  # a table cell longer than this is cut (the record itself is enclosed)
# Where a record's clinical date lives, most specific first (service date before filing date).
DATE_PATHS: tuple[tuple[str, ...], ...] = (
    ("effectiveDateTime",), ("effectivePeriod", "start"), ("onsetDateTime",),
    ("onsetPeriod", "start"), ("performedDateTime",), ("performedPeriod", "start"),
    ("occurrenceDateTime",), ("context", "period", "start"), ("period", "start"),
    ("billablePeriod", "start"), ("authoredOn",), ("issued",), ("recordedDate",), ("date",),
    ("created",), ("dateAsserted",), ("effectiveInstant",),
)


@dataclass(frozen=True)
class Facility:
    """The releasing facility, as the letterhead shows it."""

    name: str
    address: str = ""
    phone: str = ""


@dataclass(frozen=True)
class PacketContent:
    """Everything the packet prints, already decided by the ROI workflow."""

    facility: Facility
    letter_date: date
    recipient: list[str]  # address block: name, organisation, address lines
    patient_name: str
    birth_date: str
    mrn: str
    purpose: str
    basis: list[str]  # the authorization (reference, signed, expiry) or the legal basis
    scope: list[str]  # what the authorization or request covers, in words
    specialist: str
    request_id: str
    records: list[Resource]
    part2: bool  # 42 CFR Part 2 records enclosed: their notice is printed
    limited_to: str = "what was requested"  # how the enclosures were chosen, in words


# ------------------------------------------------------------------------------ reading records
def fhir_date(value: Any) -> date | None:
    """The calendar date of a FHIR date, dateTime or instant (a partial date: its first day)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return date(int(value), 1, 1)
        if len(value) == 7:
            return date(int(value[:4]), int(value[5:7]), 1)
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def record_date(resource: Resource) -> date | None:
    """When the care a record describes happened (its service date), if it says."""
    for path in DATE_PATHS:
        node: Any = resource
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        found = fhir_date(node)
        if found is not None:
            return found
    return None


def concept_text(value: Any) -> str:
    """A CodeableConcept (or Coding) as people read it: its text, else a display, else code."""
    if not isinstance(value, dict):
        return ""
    if value.get("text"):
        return str(value["text"])
    codings = value.get("coding") if "coding" in value else [value]
    for key in ("display", "code"):
        for coding in codings or []:
            if isinstance(coding, dict) and coding.get(key):
                return str(coding[key])
    return ""


def human_name(patient: Resource) -> str:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("text"):
        return str(name["text"])
    given = " ".join(str(g) for g in name.get("given") or [])
    return " ".join(p for p in (given, str(name.get("family", ""))) if p) or "(no name)"


def medical_record_number(patient: Resource) -> str:
    """The identifier typed MR (HL7 v2 table 0203), else the first identifier's value."""
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict)]
    for identifier in identifiers:
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if coding.get("system") == V2_IDENTIFIER_TYPE and coding.get("code") == "MR":
                return str(identifier.get("value", ""))
    return str(identifiers[0].get("value", "")) if identifiers else ""


def quantity_text(value: Any) -> str:
    if not isinstance(value, dict) or value.get("value") is None:
        return ""
    unit = value.get("unit") or value.get("code") or ""
    return f"{value.get('comparator', '')}{value['value']} {unit}".strip()


def value_text(resource: Resource) -> str:
    """An Observation's (or component's) value with its unit."""
    if "valueQuantity" in resource:
        return quantity_text(resource["valueQuantity"])
    if "valueCodeableConcept" in resource:
        return concept_text(resource["valueCodeableConcept"])
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if key in resource:
            return str(resource[key])
    parts = [f"{concept_text(c.get('code'))} {value_text(c)}".strip()
             for c in resource.get("component") or [] if isinstance(c, dict)]
    return "; ".join(p for p in parts if p)


def record_title(resource: Resource) -> str:
    """What a record is, in a few words (its code, type or description)."""
    for key in ("code", "type", "medicationCodeableConcept", "vaccineCode"):
        value = resource.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        text = concept_text(value)
        if text:
            return text
    for key in ("description", "title"):
        if isinstance(resource.get(key), str):
            return str(resource[key])
    medication = resource.get("medicationReference")
    if isinstance(medication, dict) and medication.get("display"):
        return str(medication["display"])
    return str(resource.get("resourceType", "record"))


def document_texts(document: Resource) -> list[str]:
    """The printable text of a DocumentReference's inline attachments (a note for others)."""
    texts = []
    for content in document.get("content") or []:
        attachment = (content.get("attachment") or {}) if isinstance(content, dict) else {}
        kind = str(attachment.get("contentType", "text/plain"))
        data = attachment.get("data")
        if not isinstance(data, str):
            where = attachment.get("url", "no inline data")
            texts.append(f"[{kind} content held at {where}: not reproduced in this packet]")
            continue
        if not kind.startswith("text/"):
            texts.append(f"[{kind} attachment of {len(data) * 3 // 4} bytes: not reproducible "
                         "as text; enclosed separately if requested]")
            continue
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            texts.append("[the attachment is not valid base64 and could not be reproduced]")
            continue
        texts.append(raw.decode("utf-8", "replace"))
    return texts


def _interpretation(resource: Resource) -> str:
    return ", ".join(concept_text(i) for i in resource.get("interpretation") or [])


def _range(resource: Resource) -> str:
    ranges = resource.get("referenceRange") or []
    if not ranges or not isinstance(ranges[0], dict):
        return ""
    low, high = quantity_text(ranges[0].get("low")), quantity_text(ranges[0].get("high"))
    return ranges[0].get("text") or (f"{low} - {high}" if low or high else "")


def _status(resource: Resource) -> str:
    return concept_text(resource.get("clinicalStatus")) or str(resource.get("status", ""))


def _day(resource: Resource) -> str:
    found = record_date(resource)
    return found.isoformat() if found else ""


def summary_row(resource: Resource) -> tuple[str, ...]:
    """One table row for a record, matching ``summary_headings`` of its type."""
    kind = resource.get("resourceType")
    title = record_title(resource)
    if kind == "Condition":
        return (title, _status(resource), _day(resource),
                str(resource.get("recordedDate", ""))[:10])
    if kind == "Observation":
        return (title, value_text(resource), _range(resource), _interpretation(resource),
                _day(resource))
    if kind in ("MedicationRequest", "MedicationStatement", "MedicationAdministration"):
        dosages = resource.get("dosageInstruction") or resource.get("dosage") or []
        dosage = dosages[0] if isinstance(dosages, list) and dosages else dosages
        dose_text = str(dosage.get("text", "")) if isinstance(dosage, dict) else ""
        return (title, dose_text, _status(resource), _day(resource))
    if kind == "DiagnosticReport":
        return (title, str(resource.get("conclusion", "")), _status(resource), _day(resource))
    if kind == "Encounter":
        reason = ", ".join(concept_text(r) for r in resource.get("reasonCode") or [])
        kind_text = title if title != "Encounter" else concept_text(resource.get("class"))
        end = fhir_date((resource.get("period") or {}).get("end"))
        start = _day(resource)
        return (kind_text, reason, _status(resource),
                start + (f" to {end.isoformat()}" if end and end.isoformat() != start else ""))
    if kind in ("Procedure", "Immunization", "AllergyIntolerance"):
        return (title, _status(resource), _day(resource))
    return (str(kind), title, _day(resource))


def summary_headings(resource_type: str) -> tuple[str, ...]:
    if resource_type == "Condition":
        return ("Problem", "Status", "Onset", "Recorded")
    if resource_type == "Observation":
        return ("Test", "Result", "Reference range", "Flag", "Date")
    if resource_type.startswith("Medication"):
        return ("Medication", "Dosage", "Status", "Date")
    if resource_type == "DiagnosticReport":
        return ("Report", "Conclusion", "Status", "Date")
    if resource_type == "Encounter":
        return ("Encounter", "Reason", "Status", "Dates")
    if resource_type in ("Procedure", "Immunization", "AllergyIntolerance"):
        return ("Item", "Status", "Date")
    return ("Record type", "Description", "Date")


def enclosure_lines(records: Iterable[Resource]) -> list[str]:
    """The letter's list of enclosures: each document with its date, then counts by type."""
    lines: list[str] = []
    dates: dict[str, list[date]] = {}
    counts: Counter[str] = Counter()
    for record in records:
        kind = str(record.get("resourceType"))
        if kind in DOCUMENT_TYPES:
            lines.append(f"{_day(record) or 'undated'}  {record_title(record)}")
            continue
        counts[kind] += 1
        found = record_date(record)
        if found is not None:
            dates.setdefault(kind, []).append(found)
    titles = {kind: title for title, kinds in SECTIONS for kind in kinds}
    for kind, count in sorted(counts.items()):
        span = sorted(dates.get(kind, []))
        when = (f", {span[0]}" + (f" to {span[-1]}" if span[-1] != span[0] else "")
                if span else "")
        name = f"{titles[kind]} ({kind})" if kind in titles else kind
        lines.append(f"{name}: {count} record{'s' if count != 1 else ''}{when}")
    return lines


# ------------------------------------------------------------------------------ the PDF
_CONTROL_CHARACTERS = {code: None for code in range(32) if code != 10}


def printable(text: str) -> str:
    """Text the standard PDF fonts can show (cp1252): accents kept where possible."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        text = "".join(_cp1252(ch) for ch in text)
    return text.translate(_CONTROL_CHARACTERS)


def _cp1252(ch: str) -> str:
    try:
        ch.encode("cp1252")
        return ch
    except UnicodeEncodeError:
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        try:
            return base.encode("cp1252").decode("cp1252") if base else "?"
        except UnicodeEncodeError:
            return "?"


class _PacketPDF(FPDF):
    """Letter-size pages with the patient's name, MRN and the page number on each."""

    def __init__(self, content: PacketContent) -> None:
        super().__init__(format="Letter")
        self.content = content
        self.core_fonts_encoding = "cp1252"
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(True, margin=18)
        self.alias_nb_pages()
        self.set_title(printable(f"Release of information - {content.patient_name}"))
        self.set_author(printable(content.facility.name))
        self.set_creator("Chartkeeper")
        self._widths: dict[tuple[str, float], dict[str, float]] = {}

    def header(self) -> None:
        c = self.content
        self.set_font("Helvetica", "B", 8)
        self.cell(0, 4, printable(f"{c.patient_name}   MRN {c.mrn or 'unknown'}   "
                                  f"DOB {c.birth_date or 'unknown'}"))
        self.set_x(self.l_margin)
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="R",
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font("Helvetica", "", 7)
        self.cell(0, 4, printable(f"{c.facility.name} - Confidential health information - "
                                  f"release {c.request_id}"),
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(4)

    def para(self, text: str, size: float = 10, style: str = "", gap: float = 1.5) -> None:
        self.set_font("Helvetica", style, size)
        for line in self.wrap(printable(text), self.epw - 2 * self.c_margin):
            self.cell(0, size * 0.45, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(gap)

    def heading(self, text: str, size: float = 13) -> None:
        self.para(text, size, "B", gap=2)

    def wrap(self, text: str, width: float) -> list[str]:
        """Greedy word wrap with word widths cached: fpdf2's multi_cell measures each line
        again for every character, which made a 50-document packet take seconds."""
        widths = self._widths.setdefault((self.font_style, self.font_size_pt), {})

        def measure(word: str) -> float:
            if word not in widths:
                widths[word] = self.get_string_width(word)
            return widths[word]

        space = measure(" ")
        lines: list[str] = []
        for raw in text.split("\n"):
            line: list[str] = []
            used = 0.0
            for word in raw.split(" "):
                while measure(word) > width and len(word) > 1:  # a word wider than a line
                    cut = max(1, int(len(word) * width / measure(word)) - 1)
                    if line:
                        lines.append(" ".join(line))
                        line, used = [], 0.0
                    lines.append(word[:cut])
                    word = word[cut:]
                extra = measure(word) + (space if line else 0.0)
                if line and used + extra > width:
                    lines.append(" ".join(line))
                    line, used, extra = [], 0.0, measure(word)
                line.append(word)
                used += extra
            lines.append(" ".join(line))
        return lines

    def table_of(self, headings: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        """A plain table: bold headings repeated on each page, wrapped cells, rules between."""
        size, height = 8.0, 3.6
        weights = [2.0 if i == 0 else 1.0 for i in range(len(headings))]
        widths = [self.epw * w / sum(weights) for w in weights]

        def row(values: tuple[str, ...], bold: bool) -> None:
            self.set_font("Helvetica", "B" if bold else "", size)
            cells = [self.wrap(printable(v), w - 2 - 2 * self.c_margin)[:MAX_CELL_LINES]
                     for v, w in zip(values, widths, strict=True)]
            lines = max(len(c) for c in cells)
            if self.get_y() + lines * height + 1 > self.page_break_trigger:
                self.add_page()
                if not bold:
                    row(headings, True)
                    self.set_font("Helvetica", "", size)
            top, x = self.get_y(), self.l_margin
            for cell_lines, w in zip(cells, widths, strict=True):
                for i, line in enumerate(cell_lines):
                    self.set_xy(x + 1, top + i * height)
                    self.cell(w - 2, height, line)
                x += w
            bottom = top + lines * height + 0.8
            self.line(self.l_margin, bottom, self.l_margin + self.epw, bottom)
            self.set_xy(self.l_margin, bottom + 0.6)

        row(headings, True)
        for values in rows:
            row(values, False)
        self.ln(3)


def _cover_letter(pdf: _PacketPDF) -> None:
    c = pdf.content
    pdf.add_page()
    pdf.heading(c.facility.name, 15)
    for line in (c.facility.address, c.facility.phone):
        if line:
            pdf.para(line, 9, gap=0)
    pdf.ln(4)
    pdf.para(c.letter_date.strftime("%B %d, %Y").replace(" 0", " "))
    pdf.para("\n".join(line for line in c.recipient if line), gap=4)
    pdf.heading("Release of health information", 12)
    pdf.para(f"Patient: {c.patient_name}\nDate of birth: {c.birth_date or 'unknown'}\n"
             f"Medical record number: {c.mrn or 'unknown'}\nPurpose of the disclosure: "
             f"{c.purpose}\nRequest: {c.request_id}", gap=3)
    pdf.para("\n".join(c.basis), gap=3)
    if c.scope:
        pdf.para("Scope of this release:\n" + "\n".join(f"- {s}" for s in c.scope), gap=3)
    pdf.para(f"Enclosed are the following {len(c.records)} record(s), limited to "
             f"{c.limited_to}:", gap=1)
    pdf.para("\n".join(f"- {line}" for line in enclosure_lines(c.records)), 9, gap=4)
    pdf.para(f"Released by: {c.specialist}, Health Information Management, {c.facility.name}",
             gap=4)
    pdf.heading("Notice to the recipient", 11)
    pdf.para(REDISCLOSURE_NOTICE, 9)
    if c.part2:
        pdf.para(PART2_NOTICE, 10, "B")


def build_packet(content: PacketContent, on_progress: Progress | None = None) -> bytes:
    """The packet's PDF bytes. ``on_progress(done, total)`` is called as parts are laid out."""
    documents = [r for r in content.records if r.get("resourceType") in DOCUMENT_TYPES]
    by_section: list[tuple[str, list[Resource]]] = []
    placed = {t for _, types in SECTIONS for t in types} | set(DOCUMENT_TYPES)
    for title, types in SECTIONS:
        members = [r for r in content.records if r.get("resourceType") in types]
        if members:
            by_section.append((title, members))
    others = [r for r in content.records if r.get("resourceType") not in placed]
    if others:
        by_section.append(("Other records", others))
    total = 1 + len(documents) + len(by_section)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    pdf = _PacketPDF(content)
    _cover_letter(pdf)
    step()
    for document in sorted(documents, key=lambda d: (_day(d), record_title(d))):
        pdf.add_page()
        pdf.heading(record_title(document))
        author = ", ".join(str(a.get("display", "")) for a in document.get("author") or []
                           if isinstance(a, dict) and a.get("display"))
        pdf.para(f"Date: {_day(document) or 'undated'}"
                 + (f"    Author: {author}" if author else "")
                 + f"    Document: DocumentReference/{document.get('id', '')}", 8, gap=3)
        for text in document_texts(document):
            pdf.para(text, 10, gap=3)
        step()
    for title, members in by_section:
        if pdf.get_y() > pdf.h * 0.7:
            pdf.add_page()
        else:
            pdf.ln(4)
        pdf.heading(title)
        groups: dict[str, list[Resource]] = {}
        for record in sorted(members, key=lambda r: (_day(r), record_title(r))):
            groups.setdefault(str(record.get("resourceType")), []).append(record)
        for kind, records in groups.items():
            pdf.table_of(summary_headings(kind), [summary_row(r) for r in records])
        step()
    return bytes(pdf.output())
