"""Map parsed HL7 v2 messages to FHIR R4 transaction Bundles (HL7 V2-to-FHIR IG segment maps).

ADT and ORU^R01: PID→Patient, PV1→Encounter, NK1→RelatedPerson, AL1→AllergyIntolerance,
DG1→Condition, IN1→Coverage, OBR→DiagnosticReport, OBX→Observation. ADT^A34/A39/A40: MRG→the
prior Patient, kept inactive and linked ("replaced-by"/"replaces") to the survivor. MDM
T02/T04/T08/T10: TXA + OBX text→DocumentReference. VXU^V04: RXA→Immunization. SIU S12–S15:
SCH/AIS/AIP/AIL→Appointment. Every message: MSH→Provenance. Only the fields listed in each
function are mapped.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from chartkeeper.ingest.hl7v2 import (
    GENDER,
    LOCAL_SYSTEM_BASE,
    SUPPORTED_EVENTS,
    TS,
    UCUM,
    V2_0203,
    HL7Error,
    Message,
    Resource,
    Segment,
    _date_only,
    _leaf,
    address,
    codeable,
    coding_system,
    human_name,
    identifier,
    identifier_system,
    telecom,
    to_datetime,
)


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
                                       f"supported yet (supported: {', '.join(SUPPORTED_EVENTS)})")
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


MERGE_EVENTS = ("A34", "A39", "A40")
# The segments mapped along with each PID, by message type: an MDM's OBX is the note's text,
# a VXU's OBX describes the dose (VIS, funding), an SIU's PV1/DG1 the visit to come.
GROUP_SEGMENTS = {
    "ADT": frozenset({"PV1", "NK1", "AL1", "DG1", "IN1", "OBR", "OBX"}),
    "ORU": frozenset({"PV1", "NK1", "AL1", "DG1", "IN1", "OBR", "OBX"}),
    "MDM": frozenset({"PV1"}),
    "VXU": frozenset({"PV1", "NK1", "AL1", "IN1"}),
    "SIU": frozenset(),
}


def to_bundle(message: Message, received: datetime | None = None) -> Resource:
    """Map a supported message to a FHIR R4 transaction Bundle with its Provenance."""
    _check_supported(message)
    builder = _Builder(message)
    merge = message.message_code == "ADT" and message.trigger in MERGE_EVENTS
    segments = frozenset() if merge else GROUP_SEGMENTS[message.message_code]
    patient_refs: list[str] = []
    for group in _patient_groups(message):
        patient, key, patient_ref, encounter_ref = _map_patient_group(
            group, message, builder, segments)
        patient_refs.append(patient_ref)
        if merge:
            _map_merge(group, message, builder, patient, key, patient_ref)
        elif message.message_code == "MDM":
            _map_document(group, message, builder, patient_ref, encounter_ref)
        elif message.message_code == "VXU":
            _map_immunizations(group, message, builder, patient_ref)
    if message.message_code == "SIU":
        _map_appointment(message, builder, patient_refs[0])
    targets = [{"reference": e["fullUrl"]} for e in builder.entries]
    builder.add(provenance(message, targets, received or datetime.now(UTC)), "Provenance")
    return {"resourceType": "Bundle", "type": "transaction", "entry": builder.entries}


def _map_patient_group(group: list[Segment], message: Message, builder: _Builder,
                       segments: frozenset[str]
                       ) -> tuple[Resource, Resource, str, str | None]:
    """The Patient and the group's ``segments``; returns the Patient, its key and references."""
    patient, key = map_patient(group[0], message)
    patient_ref = builder.add(patient, _conditional_url("Patient", key), "PUT")
    encounter_ref: str | None = None
    pv1 = next((s for s in group if s.name == "PV1"), None)
    if "PV1" in segments and pv1 is not None and (pv1.value(2) not in ("", "N")
                                                   or pv1.reps(19)):
        encounter, visit = map_encounter(pv1, message, builder, patient_ref)
        if visit is not None:
            encounter_ref = builder.add(encounter, _conditional_url("Encounter", visit), "PUT")
        else:
            encounter_ref = builder.add(encounter, "Encounter")
    report: Resource | None = None
    for segment in group[1:]:
        if segment.name not in segments:
            continue
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
    return patient, key, patient_ref, encounter_ref


# ------------------------------------------------------------------------------ merges
def _map_merge(group: list[Segment], message: Message, builder: _Builder, survivor: Resource,
               survivor_key: Resource, survivor_ref: str) -> None:
    """MRG to the prior Patient: kept (inactive, "replaced-by" the survivor), never deleted.

    The prior Patient is a conditional update on its MRG-1 identifier: stored already, the
    service merges these elements into it; not stored yet, it is created with them.
    """
    mrg = next((s for s in group[1:] if s.name == "MRG"), None)
    if mrg is None:
        raise HL7Error("MRG", "100", f"ADT^{message.trigger} needs an MRG segment after the PID "
                                     "of the surviving patient")
    facility = message.sending_facility
    valued = [r for r in mrg.reps(1) if _leaf(r, 1).strip()]
    if not valued:
        raise HL7Error("MRG-1", "101", "the prior patient identifier list is required")
    key_rep = next((r for r in valued if _leaf(r, 5) == "MR"), valued[0])
    key = identifier(key_rep, facility)
    assert key is not None  # valued above
    if (key["system"], key["value"]) == (survivor_key["system"], survivor_key["value"]):
        raise HL7Error("MRG-1", "205", f"the prior patient identifier {key['value']!r} is the "
                                       "surviving patient's own (PID-3)")
    identifiers = [i for i in (identifier(r, facility) for r in valued) if i]
    prior: Resource = {"resourceType": "Patient", "identifier": identifiers, "active": False,
                       "link": [{"other": {"reference": survivor_ref}, "type": "replaced-by"}]}
    names = [n for n in (human_name(r) for r in mrg.reps(7)) if n]
    if names:
        prior["name"] = names
    prior_ref = builder.add(prior, _conditional_url("Patient", key), "PUT")
    survivor["active"] = True
    survivor.setdefault("link", []).append({"other": {"reference": prior_ref},
                                            "type": "replaces"})


# ------------------------------------------------------------------------------ documents
# Table 0271 document completion status to DocumentReference.docStatus.
DOC_STATUS = {"AU": "final", "LA": "final", "DI": "preliminary", "DO": "preliminary",
              "IN": "preliminary", "IP": "preliminary", "PA": "preliminary"}
# Table 0273 document availability status to DocumentReference.status.
DOC_AVAILABILITY = {"AV": "current", "UN": "current", "CA": "entered-in-error",
                    "OB": "superseded"}
NPI = "http://hl7.org/fhir/sid/us-npi"


def entity_identifier(rep: list[list[str]], facility: str) -> Resource | None:
    """EI to Identifier: value EI-1, system from the namespace EI-2 or universal id EI-3/4."""
    value = _leaf(rep, 1).strip()
    if not value:
        return None
    authority = [[_leaf(rep, 2), _leaf(rep, 3), _leaf(rep, 4)]]
    return {"system": identifier_system([[value], [""], [""], *authority], facility),
            "value": value}


def practitioner_reference(rep: list[list[str]]) -> Resource | None:
    """XCN to a Reference by identifier (XCN-1, NPI when XCN-9 says so) and display name."""
    display = " ".join(p for p in (_leaf(rep, 3), _leaf(rep, 2, 1)) if p.strip())
    reference: Resource = {}
    if _leaf(rep, 1):
        ident: Resource = {"value": _leaf(rep, 1)}
        if _leaf(rep, 9, 1).upper() == "NPI" or _leaf(rep, 13).upper() == "NPI":
            ident["system"] = NPI
        reference["identifier"] = ident
    if display:
        reference["display"] = display.strip()
    return reference or None


def document_text(obxs: list[Segment]) -> str:
    """The note: the OBX-5 text values (TX, FT, ST), each repetition a line."""
    lines = []
    for obx in obxs:
        if obx.value(2) in ("TX", "FT", "ST"):
            lines += [_leaf(rep, 1) for rep in obx.fields[5]] if len(obx.fields) > 5 else []
    return "\n".join(lines).strip("\n")


def encapsulated(obx: Segment) -> Resource:
    """An ED OBX-5 to an Attachment: type/subtype ED-2/3, data ED-5 by its encoding ED-4."""
    rep = obx.reps(5)[0] if obx.reps(5) else []
    media, subtype, encoding = _leaf(rep, 2), _leaf(rep, 3), _leaf(rep, 4).upper()
    data = re.sub(r"\s+", "", _leaf(rep, 5)) if encoding != "A" else _leaf(rep, 5)
    if not data:
        raise HL7Error("OBX-5", "101", f"the encapsulated document in OBX {obx.value(1)} has "
                                       "no data (OBX-5.5)")
    try:
        raw = base64.b64decode(data, validate=True) if encoding == "BASE64" else \
            bytes.fromhex(data) if encoding == "HEX" else data.encode("utf-8")
    except ValueError as exc:
        raise HL7Error("OBX-5", "102", f"the encapsulated data in OBX {obx.value(1)} is not "
                                       f"valid {encoding or 'text'}: {exc}") from exc
    attachment: Resource = {"data": base64.b64encode(raw).decode("ascii")}
    if media and subtype:
        attachment["contentType"] = f"{media.lower()}/{subtype.lower()}"
    return attachment


def document_content(obxs: list[Segment], trigger: str) -> list[Resource]:
    """DocumentReference.content: the OBX text as one text/plain attachment, then each ED."""
    content = []
    text = document_text(obxs)
    if text:
        content.append({"attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}})
    content += [{"attachment": encapsulated(obx)} for obx in obxs if obx.value(2) == "ED"]
    if not content:
        raise HL7Error("OBX-5", "101", f"MDM^{trigger} carries a document: its text (TX, FT, "
                                       "ST) or encapsulated data (ED) is required in OBX-5")
    return content


def _map_document(group: list[Segment], message: Message, builder: _Builder,
                  patient_ref: str, encounter_ref: str | None) -> None:
    txa = next((s for s in group[1:] if s.name == "TXA"), None)
    if txa is None:
        raise HL7Error("TXA", "100", f"MDM^{message.trigger} needs a TXA segment after the PID")
    obxs = [s for s in group[1:] if s.name == "OBX"]
    document, key = map_document(txa, obxs, message, builder, patient_ref, encounter_ref)
    builder.add(document, _conditional_url("DocumentReference", key), "PUT")


def map_document(txa: Segment, obxs: list[Segment], message: Message, builder: _Builder,
                 patient_ref: str, encounter_ref: str | None) -> tuple[Resource, Resource]:
    """TXA + OBX to DocumentReference: type TXA-2, date TXA-4, author TXA-9 (or TXA-22),
    number TXA-12, parent TXA-13 (T10), docStatus TXA-17, status TXA-19, title TXA-25;
    the OBX text (or ED data) as attachments. Returns it and the TXA-12 key."""
    doc_type = codeable(txa.reps(2)[0]) if txa.reps(2) else None
    if doc_type is None:
        raise HL7Error("TXA-2", "101", "the document type is required")
    key = entity_identifier(txa.reps(12)[0], message.sending_facility) \
        if txa.reps(12) else None
    if key is None:
        raise HL7Error("TXA-12", "101", "the unique document number is required")
    completion = txa.value(17)
    if not completion:
        raise HL7Error("TXA-17", "101", "the document completion status is required")
    if completion not in DOC_STATUS:
        raise HL7Error("TXA-17", "103", f"completion status {completion!r} is not in table "
                                        f"0271 ({', '.join(DOC_STATUS)})")
    content = document_content(obxs, message.trigger)
    doc_status = DOC_STATUS[completion]
    if doc_status == "final" and message.trigger == "T08":
        doc_status = "amended"
    document: Resource = {
        "resourceType": "DocumentReference",
        "masterIdentifier": key,
        "identifier": [dict(key)],
        "status": DOC_AVAILABILITY.get(txa.value(19), "current"),
        "docStatus": doc_status,
        "type": doc_type,
        "subject": {"reference": patient_ref},
    }
    if txa.value(16):
        document["identifier"].append({"system": "urn:ietf:rfc:3986",
                                       "value": f"urn:chartkeeper:hl7v2:file:"
                                                f"{quote(txa.value(16), safe='')}"})
    context: Resource = {}
    when = builder.dt(txa.value(4)) or builder.dt(txa.value(6))
    if when and "T" in when:
        document["date"] = when
    elif when:
        # DocumentReference.date is an instant: without a zone, the day goes to the context.
        context["period"] = {"start": when}
    authors = [r for r in (practitioner_reference(rep) for rep in txa.reps(9)) if r]
    authenticators = [r for r in (practitioner_reference(rep) for rep in txa.reps(22)) if r]
    if authors or authenticators:
        document["author"] = authors or authenticators
    if authenticators:
        document["authenticator"] = authenticators[0]
    if txa.value(25):
        document["description"] = txa.value(25)
    title = txa.value(25) or doc_type.get("text") or \
        (doc_type.get("coding") or [{}])[0].get("display")
    if title:
        content[0]["attachment"]["title"] = title
    document["content"] = content
    if encounter_ref:
        context["encounter"] = [{"reference": encounter_ref}]
    if context:
        document["context"] = context
    if message.trigger == "T10":
        parent = entity_identifier(txa.reps(13)[0], message.sending_facility) \
            if txa.reps(13) else None
        if parent is None:
            raise HL7Error("TXA-13", "101", "a replacement (T10) needs the parent document "
                                            "number of the document it replaces")
        # A conditional reference: the service points it at the stored document (and marks
        # that one superseded), or keeps only the identifier when it was never received.
        document["relatesTo"] = [{"code": "replaces", "target": {
            "reference": _conditional_url("DocumentReference", parent), "identifier": parent}}]
    return document, key


# ------------------------------------------------------------------------------ immunizations
# Table 0322 completion status to Immunization.status (the IG's CompletionStatus map).
IMMUNIZATION_STATUS = {"CP": "completed", "PA": "completed", "RE": "not-done",
                       "NA": "not-done"}
V2_0163 = "http://terminology.hl7.org/CodeSystem/v2-0163"


def _map_immunizations(group: list[Segment], message: Message, builder: _Builder,
                       patient_ref: str) -> None:
    order: Segment | None = None
    for number, segment in enumerate(group):
        if segment.name == "ORC":
            order = segment
        elif segment.name == "RXA":
            rxr = group[number + 1] if number + 1 < len(group) and \
                group[number + 1].name == "RXR" else None
            immunization, key = map_immunization(segment, rxr, order, message, builder,
                                                 patient_ref)
            if key is not None:
                builder.add(immunization, _conditional_url("Immunization", key), "PUT")
            else:
                builder.add(immunization, "Immunization")
            order = None


def map_immunization(rxa: Segment, rxr: Segment | None, orc: Segment | None, message: Message,
                     builder: _Builder, patient_ref: str
                     ) -> tuple[Resource, Resource | None]:
    """RXA to Immunization: occurrence RXA-3, vaccineCode RXA-5, dose RXA-6/7, source RXA-9,
    performer RXA-10, lot RXA-15, expiry RXA-16, manufacturer RXA-17, status RXA-20/21;
    route and site RXR-1/2; identifier ORC-3 (the key, when given)."""
    vaccine = codeable(rxa.reps(5)[0]) if rxa.reps(5) else None
    if vaccine is None:
        raise HL7Error("RXA-5", "101", "the administered vaccine code is required")
    occurrence = builder.dt(rxa.value(3))
    if occurrence is None:
        raise HL7Error("RXA-3", "101" if not rxa.value(3) else "102",
                       f"the administration date/time is required, got {rxa.value(3)!r}")
    status = IMMUNIZATION_STATUS.get(rxa.value(20), "completed")
    if rxa.value(21) == "D":
        status = "entered-in-error"
    immunization: Resource = {"resourceType": "Immunization", "status": status,
                              "vaccineCode": vaccine, "patient": {"reference": patient_ref},
                              "occurrenceDateTime": occurrence}
    key = entity_identifier(orc.reps(3)[0], message.sending_facility) \
        if orc is not None and orc.reps(3) else None
    if key is not None:
        immunization["identifier"] = [key]
    source = rxa.value(9)
    if source in ("00", "01"):
        immunization["primarySource"] = source == "00"
    dose = _decimal(rxa.value(6))
    if dose is not None and dose != 999:  # 999: amount unknown (CDC IG)
        immunization["doseQuantity"] = quantity(dose, rxa.reps(7)[0] if rxa.reps(7) else None)
    performers = [r for r in (practitioner_reference(rep) for rep in rxa.reps(10)) if r]
    if performers:
        immunization["performer"] = [{"function": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "AP"}]},
            "actor": actor} for actor in performers]
    if rxa.value(15):
        immunization["lotNumber"] = rxa.value(15)
    expiry = _date_only(rxa.value(16))
    if expiry:
        immunization["expirationDate"] = expiry
    if rxa.value(17, 2) or rxa.value(17):
        immunization["manufacturer"] = {"display": rxa.value(17, 2) or rxa.value(17)}
    refusal = codeable(rxa.reps(18)[0]) if rxa.reps(18) else None
    if refusal and status == "not-done":
        immunization["statusReason"] = refusal
    if rxr is not None:
        route = codeable(rxr.reps(1)[0]) if rxr.reps(1) else None
        if route:
            immunization["route"] = route
        site = codeable(rxr.reps(2)[0]) if rxr.reps(2) else None
        if site:
            immunization["site"] = _with_default_system(site, V2_0163)
    return immunization, key


# ------------------------------------------------------------------------------ appointments
# Table 0278 filler status to Appointment.status (the IG's FillerStatusCodes map).
APPOINTMENT_STATUS = {"pending": "pending", "waitlist": "waitlist", "booked": "booked",
                      "started": "checked-in", "complete": "fulfilled",
                      "cancelled": "cancelled", "deleted": "entered-in-error",
                      "noshow": "noshow"}
MINUTES = ("M", "MIN", "MINS", "MINUTE", "MINUTES")


def _map_appointment(message: Message, builder: _Builder, patient_ref: str) -> None:
    sch = message.first("SCH")
    if sch is None:
        raise HL7Error("SCH", "100", f"SIU^{message.trigger} needs an SCH segment")
    appointment, key = map_appointment(sch, message, builder, patient_ref)
    builder.add(appointment, _conditional_url("Appointment", key), "PUT")


def map_appointment(sch: Segment, message: Message, builder: _Builder, patient_ref: str
                    ) -> tuple[Resource, Resource]:
    """SCH (+ TQ1, AIS, AIP, AIL) to Appointment: ids SCH-1/2 (the filler's is the key),
    reason SCH-6/7, type SCH-8, duration SCH-9/10, start/end SCH-11.4/5 or TQ1-7/8 or AIS-4,
    status SCH-25 (else the event: S15 cancels), service AIS-3, people AIP-3, places AIL-3."""
    facility = message.sending_facility
    placer = entity_identifier(sch.reps(1)[0], facility) if sch.reps(1) else None
    filler = entity_identifier(sch.reps(2)[0], facility) if sch.reps(2) else None
    key = filler or placer
    if key is None:
        raise HL7Error("SCH-2", "101", "the filler appointment ID (or SCH-1, the placer's) is "
                                       "required to follow the appointment")
    status = APPOINTMENT_STATUS.get(sch.value(25).lower(), "booked")
    if message.trigger == "S15":
        status = "cancelled"
    appointment: Resource = {"resourceType": "Appointment", "status": status,
                             "identifier": [i for i in (placer, filler) if i]}
    reason = codeable(sch.reps(7)[0]) if sch.reps(7) else None
    if reason:
        appointment["reasonCode"] = [reason]
    kind = codeable(sch.reps(8)[0]) if sch.reps(8) else None
    if kind:
        appointment["appointmentType"] = kind
    cancel = codeable(sch.reps(6)[0]) if sch.reps(6) else None
    if cancel and status == "cancelled":
        appointment["cancelationReason"] = cancel
    minutes = sch.value(9) if sch.value(10, 1).upper() in MINUTES else ""
    if minutes.isdigit() and int(minutes) > 0:
        appointment["minutesDuration"] = int(minutes)
    tq1, ais = message.first("TQ1"), message.first("AIS")
    start_text = (tq1.value(7) if tq1 else "") or sch.value(11, 4) or (ais.value(4) if ais else "")
    end_text = (tq1.value(8) if tq1 else "") or sch.value(11, 5)
    start, end = builder.dt(start_text), builder.dt(end_text)
    if start and "T" not in start or end and "T" not in end:
        # start and end are instants: without a zone the day is kept as requested, and the
        # time as the sender gave it in the comment.
        appointment["requestedPeriod"] = [{k: v[:10] for k, v in (("start", start),
                                                                 ("end", end)) if v}]
        appointment["comment"] = "Scheduled for " + " to ".join(
            _local_time(t) for t in (start_text, end_text) if t) + " (sender's local time)"
    else:
        if start and not end and "minutesDuration" in appointment:
            end = (datetime.fromisoformat(start) + timedelta(
                minutes=appointment["minutesDuration"])).isoformat()
        if start:
            appointment["start"] = start
        if end:
            appointment["end"] = end
    if ais is not None and ais.reps(3):
        service = codeable(ais.reps(3)[0])
        if service:
            appointment["serviceType"] = [service]
    participants: list[Resource] = [{"actor": {"reference": patient_ref},
                                     "status": "accepted"}]
    for aip in message.all("AIP"):
        for rep in aip.reps(3):
            person = practitioner_reference(rep)
            if person:
                participants.append({"actor": person, "status": "accepted"})
    for ail in message.all("AIL"):
        for rep in ail.reps(3):
            place = " ".join(p for p in (_leaf(rep, 9), _leaf(rep, 4), _leaf(rep, 1)) if p)
            if place:
                participants.append({"actor": {"display": place}, "status": "accepted"})
    appointment["participant"] = participants
    return appointment, key


def _local_time(value: str) -> str:
    match = TS.match(value.strip())
    if not match or not match.group(4):
        return value
    year, month, day, hour, minute = match.groups()[:5]
    return f"{year}-{month}-{day} {hour}:{minute or '00'}"


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
