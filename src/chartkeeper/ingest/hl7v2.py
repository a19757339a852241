"""HL7 v2 ER7 messages: split batches, parse with clear errors, map to a FHIR R4 transaction.

ER7 parsing uses python-hl7 (``hl7``, pinned). Both it and hl7apy install here; hl7apy
(1.3.5, 2024-03) is the more recently released, but it validates segments against each
version's message structures and, measured on the shared sample messages, refused 10 of 153
well-formed ones (PRT segments in v2.5.1 messages, the v2.7+ fifth encoding character ``#``).
python-hl7 (0.4.5, 2022-03) is a small, lenient pure-Python parser that reads separators from
MSH, splits repetitions, components and subcomponents and unescapes ``\\F\\ \\S\\ \\T\\ \\R\\
\\E\\ \\X..\\``; the checks that matter to us (MSH-2, versions, required fields, segment order)
are ours, below, so that every refusal carries its HL7 table 0357 error code.

The mapping to FHIR is in ``hl7_map``; ``to_bundle`` here is its entry point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import hl7  # type: ignore[import-untyped]

Resource = dict[str, Any]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
                      "2.8.1", "2.8.2")
SUPPORTED_EVENTS = {
    "ADT": ("A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A34", "A39",
            "A40"),
    "ORU": ("R01",),
    "MDM": ("T02", "T04", "T08", "T10"),
    "VXU": ("V04",),
    "SIU": ("S12", "S13", "S14", "S15"),
}
BATCH_SEGMENTS = ("FHS", "BHS", "BTS", "FTS")
SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
# An identifier whose assigning authority has only a local namespace gets a system under this
# base; with no authority at all, the sending facility (MSH-4) is taken as the assigner.
LOCAL_SYSTEM_BASE = "urn:chartkeeper:hl7v2:assigning-authority:"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CODING_SYSTEMS = {
    "LN": "http://loinc.org", "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct", "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct", "SNOMEDCT": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10-cm", "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10": "http://hl7.org/fhir/sid/icd-10-cm", "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm", "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD9": "http://hl7.org/fhir/sid/icd-9-cm",
    "UCUM": "http://unitsofmeasure.org", "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CVX": "http://hl7.org/fhir/sid/cvx", "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt", "NDC": "http://hl7.org/fhir/sid/ndc",
}
UCUM = "http://unitsofmeasure.org"


class HL7Error(Exception):
    """A message we refuse: the field at fault (``PID-3``), its table 0357 code, and why."""

    def __init__(self, field: str | None, code: str, message: str) -> None:
        super().__init__(f"{field}: {message} (HL7 error {code})" if field
                         else f"{message} (HL7 error {code})")
        self.field = field
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------ splitting
def _segments_of(text: str) -> list[str]:
    text = text.lstrip("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    return [line for line in lines if line.strip()]


def split_batch(text: str) -> list[str]:
    """The messages of a file: one message, or an FHS/BHS batch; each joined with ``\\r``."""
    messages: list[list[str]] = []
    for line in _segments_of(text):
        name = line[:3]
        if name in BATCH_SEGMENTS:
            continue
        if name == "MSH" or not messages:
            messages.append([])
        messages[-1].append(line)
    return ["\r".join(segments) for segments in messages]


# ------------------------------------------------------------------------------ parsing
Reps = list[list[list[str]]]  # repetitions → components → subcomponents


@dataclass
class Segment:
    """One segment; fields numbered as in the standard (``pid.value(3)`` is PID-3.1)."""

    name: str
    fields: list[Reps]  # fields[0] is the segment name

    def reps(self, number: int) -> Reps:
        if number >= len(self.fields):
            return []
        return [rep for rep in self.fields[number] if any(any(s for s in c) for c in rep)]

    def value(self, number: int, component: int = 1, sub: int = 1, rep: int = 1) -> str:
        reps = self.reps(number)
        if len(reps) < rep:
            return ""
        return _leaf(reps[rep - 1], component, sub)


def _leaf(rep: list[list[str]], component: int = 1, sub: int = 1) -> str:
    if len(rep) < component or len(rep[component - 1]) < sub:
        return ""
    value = rep[component - 1][sub - 1]
    return "" if value == '""' else value  # "" is HL7's explicit null


@dataclass
class Message:
    """A parsed message: its segments in order and the MSH facts the mapping needs."""

    segments: list[Segment]
    version: str
    message_code: str
    trigger: str
    control_id: str
    sending_application: str
    sending_facility: str
    timestamp: str  # MSH-7, HL7 TS

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        found = self.all(name)
        return found[0] if found else None

    @property
    def msh(self) -> Segment:
        return self.segments[0]


def _normalize(field: Any, unescape: Any) -> Reps:
    """python-hl7 nests a field as str, Field[str], or Field[Repetition[Component]]: flatten."""
    if isinstance(field, str):
        return [[[unescape(field)]]]
    reps: Reps = []
    for child in field:
        if isinstance(child, str):
            reps.append([[unescape(child)]])
        else:
            reps.append([[unescape(c)] if isinstance(c, str) else [unescape(s) for s in c]
                         for c in child])
    return reps


def _check_encoding(first: str) -> None:
    if len(first) < 8 or not first.startswith("MSH"):
        raise HL7Error("MSH-2", "102", f"MSH is too short to hold its encoding characters: "
                                       f"{first[:20]!r}")
    separator = first[3]
    encoding = first[4:].split(separator, 1)[0]
    chars = separator + encoding
    if len(encoding) not in (4, 5) or len(set(chars)) != len(chars) or \
            any(c.isalnum() or c.isspace() for c in chars):
        raise HL7Error("MSH-2", "102",
                       f"encoding characters {encoding!r} with field separator {separator!r} "
                       "must be 4 (or 5 from v2.7) distinct punctuation characters, like ^~\\&")


def parse(text: str) -> Message:
    """Parse one ER7 message; raise ``HL7Error`` naming the field when it is malformed."""
    lines = _segments_of(text)
    if not lines:
        raise HL7Error(None, "100", "the message is empty")
    if not lines[0].startswith("MSH"):
        raise HL7Error("MSH", "100", f"a message must start with MSH, got {lines[0][:20]!r}")
    _check_encoding(lines[0])
    separator = lines[0][3]
    for number, line in enumerate(lines, start=1):
        name = line[:3]
        if not SEGMENT_ID.fullmatch(name) or (len(line) > 3 and line[3] != separator):
            raise HL7Error(f"segment {number}", "100",
                           f"{line[:20]!r} is not a segment (truncated or broken line?)")
        if number > 1 and name == "MSH":
            raise HL7Error(f"segment {number}", "100", "a second MSH: split batches first")
    try:
        parsed = hl7.parse("\r".join(lines))
    except Exception as exc:  # python-hl7 raises plain exceptions on broken structure
        raise HL7Error(None, "102", f"the message cannot be parsed: {exc}") from exc
    segments: list[Segment] = []
    for raw in parsed:
        name = str(raw[0])
        if name == "MSH":
            # python-hl7 keeps MSH-1 and MSH-2 verbatim; they must not be unescaped.
            fields = [[[[name]]], [[[separator]]], [[[str(raw[2])]]]]
            fields += [_normalize(raw[i], parsed.unescape) for i in range(3, len(raw))]
        else:
            fields = [_normalize(f, parsed.unescape) for f in raw]
        segments.append(Segment(name, fields))
    msh = segments[0]
    for number, label in ((9, "message type"), (10, "message control id"), (12, "version id")):
        if not msh.value(number):
            raise HL7Error(f"MSH-{number}", "101", f"the {label} is required")
    version = msh.value(12)
    if version not in SUPPORTED_VERSIONS:
        raise HL7Error("MSH-12", "203", f"version {version!r} is not supported "
                                         f"(supported: 2.3 to 2.8)")
    for pid in (s for s in segments if s.name == "PID"):
        if not pid.value(3).strip():
            raise HL7Error("PID-3", "101", "the patient identifier list is required")
    return Message(segments, version, msh.value(9, 1), msh.value(9, 2), msh.value(10),
                   msh.value(3), msh.value(4), msh.value(7))


# ------------------------------------------------------------------------------ data types
TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


def to_datetime(value: str, fallback_offset: str | None = None) -> str | None:
    """HL7 DT/TS/DTM to FHIR date/dateTime at the value's own precision.

    FHIR wants seconds and a time zone once a time is given: minutes are padded with ``:00``
    and a missing zone comes from MSH-7 (``fallback_offset``); with neither, the value is kept
    to the day rather than given a zone it never had.
    """
    match = TS.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if month and not 1 <= int(month) <= 12 or day and not 1 <= int(day) <= 31:
        return None
    date = "-".join(p for p in (year, month, day) if p)
    offset = offset or fallback_offset
    if not (day and hour) or offset is None:
        return date
    if int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59:
        return None
    time = f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
    zone = "Z" if offset in ("+0000", "-0000") else f"{offset[:3]}:{offset[3:]}"
    return f"{date}T{time}{zone}"


def _date_only(value: str) -> str | None:
    converted = to_datetime(value)
    return converted[:10] if converted else None


def coding_system(name: str) -> str | None:
    upper = name.upper()
    if upper in CODING_SYSTEMS:
        return CODING_SYSTEMS[upper]
    if re.fullmatch(r"HL7\d{4}", upper):
        return f"http://terminology.hl7.org/CodeSystem/v2-{upper[3:]}"
    if name.startswith(("http://", "https://", "urn:")):
        return name
    return None


def codeable(rep: list[list[str]]) -> Resource | None:
    """CE/CWE/CNE to CodeableConcept: the primary and alternate triplets, original text."""
    codings = []
    for base in (1, 4):
        code, display, system = (_leaf(rep, base), _leaf(rep, base + 1), _leaf(rep, base + 2))
        if code:
            coding: Resource = {"code": code}
            uri = coding_system(system)
            if uri:
                coding["system"] = uri
            if display:
                coding["display"] = display
            codings.append(coding)
    text = _leaf(rep, 9) or (_leaf(rep, 2) if not codings else "")
    concept: Resource = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept or None


def identifier(rep: list[list[str]], facility: str, type_code: str | None = None
               ) -> Resource | None:
    """CX to Identifier: value CX-1, system from the assigning authority CX-4, type CX-5."""
    value = _leaf(rep, 1).strip()
    if not value:
        return None
    result: Resource = {"system": identifier_system(rep, facility), "value": value}
    code = type_code or _leaf(rep, 5)
    if code:
        result["type"] = {"coding": [{"system": V2_0203, "code": code}]}
    return result


def identifier_system(rep: list[list[str]], facility: str) -> str:
    namespace, universal, kind = _leaf(rep, 4, 1), _leaf(rep, 4, 2), _leaf(rep, 4, 3).upper()
    if universal and kind == "ISO":
        return f"urn:oid:{universal}"
    if universal and kind == "UUID":
        return f"urn:uuid:{universal}"
    if universal and kind in ("URI", "URL"):
        return universal
    authority = namespace or _leaf(rep, 6, 1) or facility or "unknown"
    return LOCAL_SYSTEM_BASE + quote(authority, safe="")


def human_name(rep: list[list[str]]) -> Resource | None:
    """XPN to HumanName: family XPN-1.1, given XPN-2 and XPN-3, prefix/suffix, use XPN-7."""
    name: Resource = {}
    family = _leaf(rep, 1, 1)
    if family:
        name["family"] = family
    given = [g for g in (_leaf(rep, 2), _leaf(rep, 3)) if g]
    if given:
        name["given"] = given
    if _leaf(rep, 5):
        name["prefix"] = [_leaf(rep, 5)]
    suffixes = [s for s in (_leaf(rep, 4), _leaf(rep, 6)) if s]
    if suffixes:
        name["suffix"] = suffixes
    if not name:
        return None
    use = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous",
           "B": "old", "C": "old", "U": "temp", "S": "anonymous"}.get(_leaf(rep, 7))
    if use:
        name["use"] = use
    return name


def address(rep: list[list[str]]) -> Resource | None:
    """XAD to Address: lines XAD-1.1 and XAD-2, city, state, postal code, country."""
    result: Resource = {}
    lines = [line for line in (_leaf(rep, 1, 1), _leaf(rep, 2)) if line]
    if lines:
        result["line"] = lines
    for part, key in ((3, "city"), (4, "state"), (5, "postalCode"), (6, "country"),
                      (9, "district")):
        if _leaf(rep, part):
            result[key] = _leaf(rep, part)
    use = {"H": "home", "O": "work", "B": "work", "C": "temp", "M": "home", "BA": "old"}.get(
        _leaf(rep, 7))
    if result and use:
        result["use"] = use
    return result or None


def telecom(rep: list[list[str]], use: str | None) -> Resource | None:
    """XTN to ContactPoint: XTN-4 e-mail, XTN-12 or XTN-1 number, equipment type XTN-3."""
    email = _leaf(rep, 4)
    number = _leaf(rep, 12) or _leaf(rep, 1)
    if not number:
        parts = [_leaf(rep, 5), _leaf(rep, 6), _leaf(rep, 7)]
        number = " ".join(p for p in parts if p)
    equipment = _leaf(rep, 3)
    if email and (equipment in ("Internet", "X.400") or not number):
        return {"system": "email", "value": email, **({"use": use} if use else {})}
    if not number:
        return None
    system = {"FX": "fax", "BP": "pager", "Internet": "url"}.get(equipment, "phone")
    result: Resource = {"system": system, "value": number}
    if equipment == "CP":
        result["use"] = "mobile"
    elif use:
        result["use"] = use
    return result


GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "N": "other", "U": "unknown"}



def to_bundle(message: Message, received: datetime | None = None) -> Resource:
    """Map a supported message to a FHIR R4 transaction Bundle (see ``hl7_map.to_bundle``)."""
    # Imported here: hl7_map builds on this module's parser and data types.
    from chartkeeper.ingest.hl7_map import to_bundle as map_to_bundle

    return map_to_bundle(message, received)
