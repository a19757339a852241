"""HL7 v2 ER7 messages: split batches, parse with clear errors, map to a FHIR R4 transaction.

ER7 parsing uses python-hl7 (``hl7``, pinned). Both it and hl7apy install here; hl7apy
(1.3.5, 2024-03) is the more recently released, but it validates segments against each
version's message structures and, measured on the shared sample messages, refused 10 of 153
well-formed ones (PRT segments in v2.5.1 messages, the v2.7+ fifth encoding character ``#``).
python-hl7 (0.4.5, 2022-03) is a small, lenient pure-Python parser that reads separators from
MSH, splits repetitions, components and subcomponents and unescapes ``\\F\\ \\S\\ \\T\\ \\R\\
\\E\\ \\X..\\``; the checks that matter to us (MSH-2, versions, required fields, segment order)
are ours, below, so that every refusal carries its HL7 table 0357 error code.

The mapping follows the HL7 V2-to-FHIR IG segment maps (PID→Patient, PV1→Encounter,
NK1→RelatedPerson, AL1→AllergyIntolerance, DG1→Condition, IN1→Coverage,
OBR→DiagnosticReport, OBX→Observation, MSH→Provenance) for the fields listed in each
function; fields not listed are not mapped yet.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import hl7  # type: ignore[import-untyped]

Resource = dict[str, Any]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
                      "2.8.1", "2.8.2")
SUPPORTED_EVENTS = {
    "ADT": ("A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31"),
    "ORU": ("R01",),
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


# ------------------------------------------------------------------------------ mapping
class _Builder:
    """Collects the transaction's entries; every resource gets a urn:uuid fullUrl."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.entries: list[Resource] = []
        offset = TS.match(message.timestamp.strip())
        self.offset = offset.group(8) if offset else None

    def add(self, resource: Resource, url: str, method: str = "POST") -> str:
        full_url = f"urn:uuid:{uuid.uuid4()}"
        self.entries.append({"fullUrl": full_url, "resource": resource,
                             "request": {"method": method, "url": url}})
        return full_url

    def dt(self, value: str) -> str | None:
        return to_datetime(value, self.offset) if value else None


def _conditional_url(resource_type: str, ident: Resource) -> str:
    return (f"{resource_type}?identifier={quote(ident['system'], safe='')}"
            f"|{quote(ident['value'], safe='')}")


def map_patient(pid: Segment, message: Message) -> tuple[Resource, Resource]:
    """PID to Patient; also returns the PID-3 identifier the conditional update keys on."""
    facility = message.sending_facility
    identifiers = [i for i in (identifier(r, facility) for r in pid.reps(3)) if i]
    # The medical record number is the key when PID-3 carries one; otherwise its first id.
    valued = [r for r in pid.reps(3) if _leaf(r, 1).strip()]
    key_rep = next((r for r in valued if _leaf(r, 5) == "MR"), valued[0] if valued else None)
    key = identifier(key_rep, facility) if key_rep is not None else None
    if key is None:
        raise HL7Error("PID-3", "101", "the patient identifier has no ID number (PID-3.1)")
    for number, code in ((2, None), (4, None), (19, "SS")):
        for rep in pid.reps(number):
            extra = identifier(rep, facility, code)
            if extra is not None and number == 19:
                extra["system"] = "http://hl7.org/fhir/sid/us-ssn"
            if extra is not None and extra not in identifiers:
                identifiers.append(extra)
    patient: Resource = {"resourceType": "Patient", "identifier": identifiers}
    names = [n for n in (human_name(r) for r in pid.reps(5) + pid.reps(9)) if n]
    if names:
        patient["name"] = names
    telecoms = [t for t in (telecom(r, "home") for r in pid.reps(13)) if t]
    telecoms += [t for t in (telecom(r, "work") for r in pid.reps(14)) if t]
    if telecoms:
        patient["telecom"] = telecoms
    if pid.value(8) in GENDER:
        patient["gender"] = GENDER[pid.value(8)]
    birth = _date_only(pid.value(7))
    if birth:
        patient["birthDate"] = birth
    if pid.value(30) in ("Y", "N"):
        patient["deceasedBoolean"] = pid.value(30) == "Y"
    deceased = to_datetime(pid.value(29))
    if deceased:
        patient.pop("deceasedBoolean", None)
        patient["deceasedDateTime"] = deceased
    addresses = [a for a in (address(r) for r in pid.reps(11)) if a]
    if addresses:
        patient["address"] = addresses
    marital = codeable(pid.reps(16)[0]) if pid.reps(16) else None
    if marital:
        marital = _with_default_system(marital, "http://terminology.hl7.org/CodeSystem/v3-"
                                                "MaritalStatus")
        patient["maritalStatus"] = marital
    # The birth order (PID-25) says more than the indicator (PID-24); FHIR takes only one.
    if pid.value(24) == "Y" and pid.value(25).isdigit():
        patient["multipleBirthInteger"] = int(pid.value(25))
    elif pid.value(24) in ("Y", "N"):
        patient["multipleBirthBoolean"] = pid.value(24) == "Y"
    language = codeable(pid.reps(15)[0]) if pid.reps(15) else None
    if language:
        patient["communication"] = [{"language": language}]
    return patient, key


def _with_default_system(concept: Resource, system: str) -> Resource:
    for coding in concept.get("coding", []):
        coding.setdefault("system", system)
    return concept


ENCOUNTER_CLASS = {
    "E": ("EMER", "emergency"), "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"), "P": ("PRENC", "pre-admission"), "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"), "C": ("AMB", "ambulatory"),
}
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def encounter_status(trigger: str, pv1: Segment) -> str:
    if trigger == "A11":
        return "cancelled"
    if trigger == "A13":
        return "in-progress"
    if trigger == "A03" or pv1.value(45):
        return "finished"
    if trigger == "A05" or pv1.value(2) == "P":
        return "planned"
    return "in-progress"


def map_encounter(pv1: Segment, message: Message, builder: _Builder, patient_ref: str
                  ) -> tuple[Resource, Resource | None]:
    """PV1 to Encounter: class PV1-2, type PV1-4, visit number PV1-19, period PV1-44/45."""
    code, display = ENCOUNTER_CLASS.get(pv1.value(2), ("AMB", "ambulatory")) \
        if pv1.value(2) != "U" else ("AMB", "ambulatory")
    encounter: Resource = {
        "resourceType": "Encounter",
        "status": encounter_status(message.trigger, pv1),
        "class": {"system": V3_ACT_CODE, "code": code, "display": display},
        "subject": {"reference": patient_ref},
    }
    visit = identifier(pv1.reps(19)[0], message.sending_facility, "VN") \
        if pv1.reps(19) else None
    if visit is not None:
        visit["type"]["text"] = "visit number"
        encounter["identifier"] = [visit]
    admission = codeable(pv1.reps(4)[0]) if pv1.reps(4) else None
    if admission:
        encounter["type"] = [admission]
    service = codeable(pv1.reps(10)[0]) if pv1.reps(10) else None
    if service:
        encounter["serviceType"] = service
    # A13 cancels the discharge: the encounter goes on, whatever PV1-45 still says.
    end = builder.dt(pv1.value(45)) if message.trigger != "A13" else None
    period = {k: v for k, v in (("start", builder.dt(pv1.value(44))), ("end", end)) if v}
    if period:
        encounter["period"] = period
    participants = []
    for number, role, text in ((7, "ATND", "attender"), (8, "REF", "referrer"),
                               (9, "CON", "consultant"), (17, "ADM", "admitter")):
        for rep in pv1.reps(number):
            name = " ".join(p for p in (_leaf(rep, 3), _leaf(rep, 2, 1)) if p)
            if name or _leaf(rep, 1):
                participants.append({
                    "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                    "v3-ParticipationType", "code": role}],
                              "text": text}],
                    "individual": {"display": name or _leaf(rep, 1)},
                })
    if participants:
        encounter["participant"] = participants
    location = pv1.reps(3)
    if location:
        parts = [_leaf(location[0], i) for i in (4, 1, 2, 3)]
        label = " ".join(p for p in parts if p)
        if label:
            encounter["location"] = [{"location": {"display": label}, "status": "active"}]
    return encounter, visit


def map_related_person(nk1: Segment, patient_ref: str) -> Resource | None:
    """NK1 to RelatedPerson: name NK1-2, relationship NK1-3, address NK1-4, phones NK1-5/6."""
    person: Resource = {"resourceType": "RelatedPerson", "patient": {"reference": patient_ref}}
    names = [n for n in (human_name(r) for r in nk1.reps(2)) if n]
    if names:
        person["name"] = names
    relationship = codeable(nk1.reps(3)[0]) if nk1.reps(3) else None
    if relationship:
        person["relationship"] = [relationship]
    addresses = [a for a in (address(r) for r in nk1.reps(4)) if a]
    if addresses:
        person["address"] = addresses
    telecoms = [t for t in (telecom(r, "home") for r in nk1.reps(5)) if t]
    telecoms += [t for t in (telecom(r, "work") for r in nk1.reps(6)) if t]
    if telecoms:
        person["telecom"] = telecoms
    if nk1.value(15) in GENDER:
        person["gender"] = GENDER[nk1.value(15)]
    birth = _date_only(nk1.value(16))
    if birth:
        person["birthDate"] = birth
    return person if len(person) > 2 else None


ALLERGY_CATEGORY = {"DA": "medication", "MA": "medication", "FA": "food", "EA": "environment",
                    "AA": "environment", "PA": "environment", "LA": "environment"}
CRITICALITY = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}


def map_allergy(al1: Segment, patient_ref: str) -> Resource | None:
    """AL1 to AllergyIntolerance: type AL1-2, code AL1-3, severity AL1-4, reaction AL1-5."""
    code = codeable(al1.reps(3)[0]) if al1.reps(3) else None
    if code is None:
        return None
    allergy: Resource = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "code": "active"}]},
        "code": code,
        "patient": {"reference": patient_ref},
    }
    category = ALLERGY_CATEGORY.get(al1.value(2))
    if category:
        allergy["category"] = [category]
    if al1.value(2) in ("DA", "FA", "EA", "AA", "PA", "LA", "MA"):
        allergy["type"] = "allergy"
    criticality = CRITICALITY.get(al1.value(4))
    if criticality:
        allergy["criticality"] = criticality
    reactions = [{"text": _leaf(r, 1)} for r in al1.reps(5) if _leaf(r, 1)]
    if reactions:
        allergy["reaction"] = [{"manifestation": reactions}]
    onset = _date_only(al1.value(6))
    if onset:
        allergy["onsetDateTime"] = onset
    return allergy


def map_condition(dg1: Segment, builder: _Builder, patient_ref: str,
                  encounter_ref: str | None) -> Resource | None:
    """DG1 to Condition: code DG1-3 (or DG1-4 text), onset DG1-5, recorded DG1-19."""
    code = codeable(dg1.reps(3)[0]) if dg1.reps(3) else None
    if code is not None and "coding" in code and dg1.value(2):
        system = coding_system(dg1.value(2))
        for coding in code["coding"]:
            if system:
                coding.setdefault("system", system)
    if dg1.value(4):
        code = dict(code or {}, text=dg1.value(4))
    if code is None:
        return None
    condition: Resource = {
        "resourceType": "Condition",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "encounter-diagnosis"}]}],
        "code": code,
        "subject": {"reference": patient_ref},
    }
    if encounter_ref:
        condition["encounter"] = {"reference": encounter_ref}
    onset = builder.dt(dg1.value(5))
    if onset:
        condition["onsetDateTime"] = onset
    recorded = builder.dt(dg1.value(19))
    if recorded:
        condition["recordedDate"] = recorded
    return condition


def map_coverage(in1: Segment, message: Message, builder: _Builder, patient_ref: str
                 ) -> Resource | None:
    """IN1 to Coverage: plan IN1-2, payor IN1-3/4, period IN1-12/13, type IN1-15."""
    payor_name = in1.value(4)
    payor_id = identifier(in1.reps(3)[0], message.sending_facility) if in1.reps(3) else None
    if not payor_name and payor_id is None:
        return None
    payor: Resource = {}
    if payor_name:
        payor["display"] = payor_name
    if payor_id is not None:
        payor["identifier"] = payor_id
    coverage: Resource = {"resourceType": "Coverage", "status": "active",
                          "beneficiary": {"reference": patient_ref}, "payor": [payor]}
    plan = codeable(in1.reps(2)[0]) if in1.reps(2) else None
    if plan and "coding" in plan:
        coverage["identifier"] = [{"value": plan["coding"][0]["code"]}]
    period = {k: v for k, v in (("start", _date_only(in1.value(12))),
                                ("end", _date_only(in1.value(13)))) if v}
    if period:
        coverage["period"] = period
    plan_type = codeable(in1.reps(15)[0]) if in1.reps(15) else None
    if plan_type:
        coverage["type"] = plan_type
    if in1.value(36):
        coverage["subscriberId"] = in1.value(36)
    relationship = codeable(in1.reps(17)[0]) if in1.reps(17) else None
    if relationship:
        coverage["relationship"] = relationship
    return coverage


OBSERVATION_STATUS = {"C": "corrected", "D": "entered-in-error", "F": "final",
                      "I": "registered", "P": "preliminary", "R": "preliminary",
                      "S": "preliminary", "U": "final", "W": "entered-in-error",
                      "X": "cancelled", "A": "amended"}
REPORT_STATUS = {"O": "registered", "I": "registered", "S": "partial", "A": "partial",
                 "P": "preliminary", "C": "corrected", "R": "partial", "F": "final",
                 "X": "cancelled", "M": "amended"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() and "." not in str(value) \
        else float(value)


def quantity(value: Decimal, unit_rep: list[list[str]] | None) -> Resource:
    """A Quantity; OBX-6 gives the unit, and the UCUM system when it names UCUM (or ISO+)."""
    result: Resource = {"value": _number(value)}
    if unit_rep:
        code, text, system = _leaf(unit_rep, 1), _leaf(unit_rep, 2), _leaf(unit_rep, 3)
        if code or text:
            result["unit"] = text or code
        if code and system.upper() in ("UCUM", "ANSI+", "ISO+", ""):
            result["system"] = UCUM
            result["code"] = code
    return result


def observation_value(obx: Segment) -> tuple[str, Any] | None:
    """OBX-5 by its OBX-2 value type; None when the type is not mapped yet (ED, RP...)."""
    kind = obx.value(2)
    reps = obx.reps(5)
    if not reps:
        return None
    first = reps[0]
    units = obx.reps(6)[0] if obx.reps(6) else None
    if kind == "NM":
        number = _decimal(_leaf(first, 1))
        if number is None:
            return "valueString", _leaf(first, 1)
        return "valueQuantity", quantity(number, units)
    if kind == "SN":
        comparator, low, separator, high = (_leaf(first, i) for i in (1, 2, 3, 4))
        low_number, high_number = _decimal(low), _decimal(high) if high else None
        if low_number is not None and not separator:
            q = quantity(low_number, units)
            if comparator in ("<", "<=", ">=", ">"):
                q["comparator"] = comparator
            return "valueQuantity", q
        if low_number is not None and high_number is not None and separator in ("-", "_"):
            return "valueRange", {"low": quantity(low_number, units),
                                  "high": quantity(high_number, units)}
        if low_number is not None and high_number is not None and separator in (":", "/"):
            return "valueRatio", {"numerator": {"value": _number(low_number)},
                                  "denominator": {"value": _number(high_number)}}
        return "valueString", "".join((comparator, low, separator, high))
    if kind in ("CE", "CWE", "CNE", "CF", "IS", "ID"):
        concept = codeable(first)
        return ("valueCodeableConcept", concept) if concept else None
    if kind in ("ST", "TX", "FT"):
        text = "\n".join(_leaf(r, 1) for r in reps)
        return ("valueString", text) if text else None
    if kind in ("DT", "TS", "DTM"):
        converted = to_datetime(_leaf(first, 1))
        return ("valueDateTime", converted) if converted else None
    if kind == "TM":
        match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.\d+)?(?:[+-]\d{4})?", _leaf(first, 1))
        if match:
            hh, mm, ss = match.groups()
            return "valueTime", f"{hh}:{mm or '00'}:{ss or '00'}"
    return None


def reference_range(text: str, units: list[list[str]] | None) -> Resource:
    """OBX-7 to referenceRange: the text, plus low/high when it reads ``low-high``."""
    result: Resource = {"text": text}
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*", text)
    if match:
        low, high = Decimal(match.group(1)), Decimal(match.group(2))
        result["low"] = quantity(low, units)
        result["high"] = quantity(high, units)
    return result


def map_observation(obx: Segment, builder: _Builder, patient_ref: str,
                    encounter_ref: str | None) -> Resource | None:
    """OBX to Observation: code OBX-3, value OBX-5/6, range OBX-7, flags OBX-8, status OBX-11."""
    code = codeable(obx.reps(3)[0]) if obx.reps(3) else None
    if code is None:
        return None
    observation: Resource = {
        "resourceType": "Observation",
        "status": OBSERVATION_STATUS.get(obx.value(11), "unknown"),
        "code": code,
        "subject": {"reference": patient_ref},
    }
    if encounter_ref:
        observation["encounter"] = {"reference": encounter_ref}
    value = observation_value(obx)
    if value is not None:
        observation[value[0]] = value[1]
    units = obx.reps(6)[0] if obx.reps(6) else None
    if obx.value(7):
        observation["referenceRange"] = [reference_range(obx.value(7), units)]
    flags = []
    for rep in obx.reps(8):
        flag = _leaf(rep, 1)
        if flag:
            flags.append({"coding": [{"system": INTERPRETATION, "code": flag}]})
    if flags:
        observation["interpretation"] = flags
    effective = builder.dt(obx.value(14))
    if effective:
        observation["effectiveDateTime"] = effective
    return observation


def map_report(obr: Segment, builder: _Builder, patient_ref: str,
               encounter_ref: str | None) -> Resource | None:
    """OBR to DiagnosticReport: ids OBR-2/3, code OBR-4, effective OBR-7, status OBR-25."""
    code = codeable(obr.reps(4)[0]) if obr.reps(4) else None
    if code is None:
        return None
    report: Resource = {
        "resourceType": "DiagnosticReport",
        "status": REPORT_STATUS.get(obr.value(25), "unknown"),
        "code": code,
        "subject": {"reference": patient_ref},
    }
    identifiers = []
    for number, kind in ((2, "PLAC"), (3, "FILL")):
        if obr.value(number):
            ident: Resource = {"value": obr.value(number),
                               "type": {"coding": [{"system": V2_0203, "code": kind}]}}
            if obr.value(number, 2):
                ident["system"] = LOCAL_SYSTEM_BASE + quote(obr.value(number, 2), safe="")
            identifiers.append(ident)
    if identifiers:
        report["identifier"] = identifiers
    if encounter_ref:
        report["encounter"] = {"reference": encounter_ref}
    start, end = builder.dt(obr.value(7)), builder.dt(obr.value(8))
    if start and end:
        report["effectivePeriod"] = {"start": start, "end": end}
    elif start:
        report["effectiveDateTime"] = start
    issued = builder.dt(obr.value(22))
    if issued and "T" in issued:
        report["issued"] = issued
    return report


def _check_supported(message: Message) -> None:
    events = SUPPORTED_EVENTS.get(message.message_code)
    if events is None:
        raise HL7Error("MSH-9", "200", f"message type {message.message_code!r} is not "
                                       "supported yet (ADT and ORU^R01 are)")
    if message.trigger not in events:
        raise HL7Error("MSH-9", "201", f"event {message.message_code}^{message.trigger} is "
                                       f"not supported yet (supported: {', '.join(events)})")
    if message.first("PID") is None:
        raise HL7Error("PID", "100", f"{message.message_code}^{message.trigger} needs a PID "
                                     "segment")


def _patient_groups(message: Message) -> Iterator[list[Segment]]:
    """The segments after each PID, up to the next PID (ORU^R01 may carry several patients)."""
    group: list[Segment] | None = None
    for segment in message.segments[1:]:
        if segment.name == "PID":
            if group is not None:
                yield group
            group = [segment]
        elif group is not None:
            group.append(segment)
    if group is not None:
        yield group


def to_bundle(message: Message, received: datetime | None = None) -> Resource:
    """Map a supported message to a FHIR R4 transaction Bundle with its Provenance."""
    _check_supported(message)
    builder = _Builder(message)
    for group in _patient_groups(message):
        _map_patient_group(group, message, builder)
    targets = [{"reference": e["fullUrl"]} for e in builder.entries]
    builder.add(provenance(message, targets, received or datetime.now(UTC)), "Provenance")
    return {"resourceType": "Bundle", "type": "transaction", "entry": builder.entries}


def _map_patient_group(group: list[Segment], message: Message, builder: _Builder) -> None:
    patient, key = map_patient(group[0], message)
    patient_ref = builder.add(patient, _conditional_url("Patient", key), "PUT")
    encounter_ref: str | None = None
    pv1 = next((s for s in group if s.name == "PV1"), None)
    if pv1 is not None and (pv1.value(2) not in ("", "N") or pv1.reps(19)):
        encounter, visit = map_encounter(pv1, message, builder, patient_ref)
        if visit is not None:
            encounter_ref = builder.add(encounter, _conditional_url("Encounter", visit), "PUT")
        else:
            encounter_ref = builder.add(encounter, "Encounter")
    report: Resource | None = None
    for segment in group[1:]:
        mapped: Resource | None = None
        if segment.name == "NK1":
            mapped = map_related_person(segment, patient_ref)
        elif segment.name == "AL1":
            mapped = map_allergy(segment, patient_ref)
        elif segment.name == "DG1":
            mapped = map_condition(segment, builder, patient_ref, encounter_ref)
        elif segment.name == "IN1":
            mapped = map_coverage(segment, message, builder, patient_ref)
        elif segment.name == "OBR":
            report = map_report(segment, builder, patient_ref, encounter_ref)
            if report is not None:
                builder.add(report, "DiagnosticReport")
            continue
        elif segment.name == "OBX":
            mapped = map_observation(segment, builder, patient_ref, encounter_ref)
            if mapped is not None:
                url = builder.add(mapped, "Observation")
                if report is not None:
                    report.setdefault("result", []).append({"reference": url})
            continue
        if mapped is not None:
            builder.add(mapped, mapped["resourceType"])


def provenance(message: Message, targets: list[Resource], received: datetime) -> Resource:
    """MSH to Provenance: who sent it (MSH-3/4), when we received it, which message (MSH-10)."""
    msh = message.msh
    sender = " / ".join(p for p in (message.sending_application, message.sending_facility) if p)
    agent: Resource = {
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author"}]},
        "who": {"display": sender or "unknown sender"},
    }
    facility_rep = msh.reps(4)[0] if msh.reps(4) else None
    if facility_rep is not None and _leaf(facility_rep, 2):
        agent["who"]["identifier"] = {"system": "urn:ietf:rfc:3986",
                                      "value": f"urn:oid:{_leaf(facility_rep, 2)}"} \
            if _leaf(facility_rep, 3).upper() == "ISO" else {"value": _leaf(facility_rep, 2)}
    instant = received if received.tzinfo else received.replace(tzinfo=UTC)
    return {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": instant.astimezone(UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                           "v3-DataOperation", "code": "UPDATE"}]},
        "agent": [agent],
        "entity": [{"role": "source", "what": {
            "identifier": {"type": {"text": "message control id (MSH-10)"},
                           "value": message.control_id},
            "display": f"HL7 v2 {message.message_code}^{message.trigger} message "
                       f"{message.control_id}"}}],
    }
