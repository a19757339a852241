"""C-CDA R2.1 entries to FHIR R4: data types (CD, PQ, TS, II) and the mappers of the clinical
sections (problems to encounters); Social History and Plan of Treatment are in ``ccda_sections``.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element

Resource = dict[str, Any]

V3 = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
NS = {"h": V3, "sdtc": "urn:hl7-org:sdtc"}

# Code systems by OID (C-CDA) to their FHIR URIs; any other OID becomes urn:oid:<oid>.
CODE_SYSTEMS = {
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "2.16.840.1.113883.6.90": "http://hl7.org/fhir/sid/icd-10-cm",
    "2.16.840.1.113883.6.103": "http://hl7.org/fhir/sid/icd-9-cm",
    "2.16.840.1.113883.6.4": "http://www.cms.gov/Medicare/Coding/ICD10",
    "2.16.840.1.113883.6.12": "http://www.ama-assn.org/go/cpt",
    "2.16.840.1.113883.6.285": "urn:oid:2.16.840.1.113883.6.285",
    "2.16.840.1.113883.12.292": "http://hl7.org/fhir/sid/cvx",
    "2.16.840.1.113883.6.59": "http://hl7.org/fhir/sid/cvx",  # CVX's older OID, still common
    "2.16.840.1.113883.4.9": "http://fdasis.nlm.nih.gov",
    "2.16.840.1.113883.6.69": "http://hl7.org/fhir/sid/ndc",
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "2.16.840.1.113883.5.83": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "2.16.840.1.113883.5.4": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "2.16.840.1.113883.5.1": "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender",
    "2.16.840.1.113883.5.112": "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration",
    "2.16.840.1.113883.3.26.1.1": "http://ncimeta.nci.nih.gov",
}

# Section template roots (R2.1 "entries required"); the "entries optional" root is the same
# without the trailing ".1" and is accepted too, since many documents carry only one of them.
PROBLEMS = "2.16.840.1.113883.10.20.22.2.5.1"
MEDICATIONS = "2.16.840.1.113883.10.20.22.2.1.1"
ALLERGIES = "2.16.840.1.113883.10.20.22.2.6.1"
RESULTS = "2.16.840.1.113883.10.20.22.2.3.1"
VITAL_SIGNS = "2.16.840.1.113883.10.20.22.2.4.1"
PROCEDURES = "2.16.840.1.113883.10.20.22.2.7.1"
IMMUNIZATIONS = "2.16.840.1.113883.10.20.22.2.2.1"
ENCOUNTERS = "2.16.840.1.113883.10.20.22.2.22.1"

PROBLEM_OBSERVATION = "2.16.840.1.113883.10.20.22.4.4"
ALLERGY_OBSERVATION = "2.16.840.1.113883.10.20.22.4.7"
RESULT_ORGANIZER = "2.16.840.1.113883.10.20.22.4.1"
RESULT_OBSERVATION = "2.16.840.1.113883.10.20.22.4.2"
VITAL_SIGN_OBSERVATION = "2.16.840.1.113883.10.20.22.4.27"
REACTION_OBSERVATION = "2.16.840.1.113883.10.20.22.4.9"
SEVERITY_OBSERVATION = "2.16.840.1.113883.10.20.22.4.8"

NO_KNOWN_ALLERGY = {"system": "http://snomed.info/sct", "code": "716186003",
                    "display": "No known allergy (situation)"}
# Marks a MedicationRequest made from a Plan of Treatment entry (LOINC 18776-5, the section's
# code), so that reconciliation of the medication list never matches a planned medication.
PLAN_OF_TREATMENT_CATEGORY: Resource = {
    "coding": [{"system": "http://loinc.org", "code": "18776-5", "display": "Plan of care note"}],
    "text": "Plan of Treatment"}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4}|Z)?$")


class CcdaError(ValueError):
    """A document we refuse: unsafe or malformed XML, not a ClinicalDocument, no patient, or
    an entry that lacks what its template requires."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def q(name: str) -> str:
    """The Clark name of a CDA element."""
    return f"{{{V3}}}{name}"


def template_ids(element: Element) -> set[str]:
    return {t.get("root", "") for t in element.findall("h:templateId", NS)}


def has_template(element: Element, root: str) -> bool:
    return root in template_ids(element)


def code_system(oid: str) -> str:
    return CODE_SYSTEMS.get(oid, f"urn:oid:{oid}")


def coding(element: Element) -> Resource | None:
    code = element.get("code")
    if not code:
        return None
    result: Resource = {}
    if element.get("codeSystem"):
        result["system"] = code_system(element.get("codeSystem", ""))
    result["code"] = code.strip()
    if element.get("displayName"):
        result["display"] = element.get("displayName", "").strip()
    return result


def concept(element: Element | None) -> Resource | None:
    """CD/CE to CodeableConcept: the code, its translations, and the original text."""
    if element is None:
        return None
    codings = [c for c in [coding(element)] if c]
    codings += [c for t in element.findall("h:translation", NS) if (c := coding(t))]
    result: Resource = {}
    if codings:
        result["coding"] = codings
    original = element.find("h:originalText", NS)
    text = "".join(original.itertext()).strip() if original is not None else ""
    if text:
        result["text"] = text
    elif codings and codings[0].get("display"):
        result["text"] = codings[0]["display"]
    return result or None


def identifier(ii: Element) -> Resource | None:
    """II to Identifier: root+extension as urn:oid:<root>|extension, a bare root as a URI."""
    root = (ii.get("root") or "").strip()
    if not root or ii.get("nullFlavor"):
        return None
    extension = (ii.get("extension") or "").strip()
    scheme = "urn:uuid:" if _UUID.fullmatch(root) else "urn:oid:"
    if extension:
        return {"system": f"{scheme}{root.lower() if scheme == 'urn:uuid:' else root}",
                "value": extension}
    return {"system": "urn:ietf:rfc:3986",
            "value": f"{scheme}{root.lower() if scheme == 'urn:uuid:' else root}"}


def identifiers(element: Element) -> list[Resource]:
    return [i for ii in element.findall("h:id", NS) if (i := identifier(ii))]


def timestamp(value: str | None) -> str | None:
    """TS to a FHIR date/dateTime. A time without a zone is cut to its date: FHIR requires
    a zone with a time, and guessing one would invent data. So is a time that is no clock
    time, and a day that is not in its month (published examples carry 20100431) leaves the
    year and month: the precision the sender got right."""
    if not value:
        return None
    match = _TS.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if month is not None and not 1 <= int(month) <= 12:
        return year
    if day is not None and month is not None \
            and not 1 <= int(day) <= calendar.monthrange(int(year), int(month))[1]:
        return f"{year}-{month}"
    if hour is not None and (int(hour) > 23 or int(minute or 0) > 59
                             or int(second or 0) > 59):
        hour = None
    date = "-".join(p for p in (year, month, day) if p)
    if hour is None or zone is None or day is None:
        return date
    time = f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
    zone = "Z" if zone == "Z" else f"{zone[:3]}:{zone[3:]}"
    return f"{date}T{time}{zone}"


def effective(element: Element) -> Resource:
    """effectiveTime (TS or IVL_TS) as {'dateTime': ...} or {'period': {...}}; an interval given
    only by its center is that center's dateTime."""
    time = element.find("h:effectiveTime", NS)
    if time is None:
        return {}
    if time.get("value"):
        stamp = timestamp(time.get("value"))
        return {"dateTime": stamp} if stamp else {}
    low = timestamp(_attr(time, "h:low", "value"))
    high = timestamp(_attr(time, "h:high", "value"))
    if low and not high:
        return {"dateTime": low}
    center = timestamp(_attr(time, "h:center", "value"))
    if center and not high:
        return {"dateTime": center}
    period = {k: v for k, v in (("start", low), ("end", high)) if v}
    return {"period": period} if period else {}


def _attr(element: Element, path: str, name: str) -> str | None:
    found = element.find(path, NS)
    return found.get(name) if found is not None else None


def number(text: str | None) -> int | float | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return int(value) if value == value.to_integral_value() and "." not in text else float(value)


def quantity(element: Element | None) -> Resource | None:
    """PQ to Quantity (UCUM)."""
    if element is None:
        return None
    value = number(element.get("value"))
    if value is None:
        return None
    result: Resource = {"value": value}
    unit = element.get("unit")
    if unit and unit != "1":
        result.update(unit=unit, system="http://unitsofmeasure.org", code=unit)
    return result


def text_of(element: Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def negated(element: Element) -> bool:
    return element.get("negationInd", "").lower() == "true"


def status_code(element: Element) -> str:
    return _attr(element, "h:statusCode", "code") or ""


def author_time(element: Element) -> str | None:
    return timestamp(_attr(element, "h:author/h:time", "value"))


@dataclass
class Entry:
    """One mapped resource with what the store needs to find an earlier copy of it."""

    section: str
    resource: Resource
    full_url: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    # False for entries kept per document (social history, plan of treatment): neither
    # merged with another entry of the document nor matched to what the store holds.
    reconcile: bool = True

    @property
    def reconcile_key(self) -> tuple[str, str] | None:
        return reconcile_key(self.resource) if self.reconcile else None


def reconcile_key(resource: Resource) -> tuple[str, str] | None:
    """What makes a problem, medication or allergy "the same one" for a patient: its type,
    first coding and whether it is refuted. Other resources, and planned medications, are
    matched on identifiers only."""
    rtype = resource.get("resourceType", "")
    field_name = {"Condition": "code", "AllergyIntolerance": "code",
                  "MedicationStatement": "medicationCodeableConcept",
                  "MedicationRequest": "medicationCodeableConcept"}.get(rtype)
    code = resource.get(field_name) if field_name else None
    if not code or not code.get("coding") or _planned(resource):
        return None
    first = code["coding"][0]
    status = (resource.get("verificationStatus") or {}).get("coding") or [{}]
    refuted = "#refuted" if status[0].get("code") == "refuted" else ""
    return f"{rtype}|{first.get('system', '')}{refuted}", first["code"]


def _planned(resource: Resource) -> bool:
    marker = PLAN_OF_TREATMENT_CATEGORY["coding"][0]
    return any(c.get("system") == marker["system"] and c.get("code") == marker["code"]
               for category in resource.get("category", []) if isinstance(category, dict)
               for c in category.get("coding", []))


def statements(section: Element) -> Iterator[Element]:
    for entry in section.findall("h:entry", NS):
        for child in entry:
            if isinstance(child.tag, str) and child.tag.startswith(f"{{{V3}}}"):
                yield child


def _related(element: Element, template: str) -> list[Element]:
    return [o for o in element.findall("h:entryRelationship/h:*", NS) if has_template(o, template)]


def map_problems(section: Element, subject: Resource) -> list[Entry]:
    """Problem Concern Act → its Problem Observations → Condition (refuted when negated)."""
    entries = []
    for statement in statements(section):
        observations = ([statement] if has_template(statement, PROBLEM_OBSERVATION)
                        else _related(statement, PROBLEM_OBSERVATION))
        concern_status = status_code(statement)
        for obs in observations:
            code = concept(obs.find("h:value", NS))
            if code is None:
                code = {"text": text_of(obs.find("h:text", NS)) or "unspecified problem"}
            when = effective(obs)
            resolved = "end" in when.get("period", {}) or concern_status in ("completed",
                                                                               "aborted")
            refuted = negated(obs)
            condition: Resource = {
                "resourceType": "Condition",
                "identifier": identifiers(obs) or identifiers(statement),
                "clinicalStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "resolved" if resolved else "active"}]},
                "verificationStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "refuted" if refuted else "confirmed"}]},
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item"}]}],
                "code": code,
                "subject": subject,
            }
            if "dateTime" in when:
                condition["onsetDateTime"] = when["dateTime"]
            elif "period" in when:
                if "start" in when["period"]:
                    condition["onsetDateTime"] = when["period"]["start"]
                if "end" in when["period"]:
                    condition["abatementDateTime"] = when["period"]["end"]
            entries.append(Entry("problems", clean(condition)))
    return entries


_MED_STATUS = {"active": "active", "completed": "completed", "aborted": "stopped",
               "suspended": "on-hold", "cancelled": "stopped", "held": "on-hold"}
REQUEST_STATUS = {"active": "active", "completed": "completed", "aborted": "stopped",
                   "suspended": "on-hold", "cancelled": "cancelled", "new": "draft"}


def medication_code(admin: Element) -> Resource:
    material = admin.find("h:consumable/h:manufacturedProduct/h:manufacturedMaterial", NS)
    code = concept(material.find("h:code", NS)) if material is not None else None
    if code is None:
        name = text_of(material.find("h:name", NS)) if material is not None else ""
        code = {"text": name or "unspecified medication"}
    return code


def dosage_of(admin: Element) -> Resource:
    dosage: Resource = {}
    text = text_of(admin.find("h:text", NS))
    if text:
        dosage["text"] = text
    route = concept(admin.find("h:routeCode", NS))
    if route:
        dosage["route"] = route
    dose = quantity(admin.find("h:doseQuantity", NS))
    if dose:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    return dosage


def map_medications(section: Element, subject: Resource) -> list[Entry]:
    """Medication Activity: moodCode INT → MedicationRequest, otherwise MedicationStatement."""
    entries = []
    for admin in statements(section):
        if not admin.tag.endswith("substanceAdministration"):
            continue
        code = medication_code(admin)
        status = status_code(admin)
        times = [t for t in admin.findall("h:effectiveTime", NS)
                 if (t.get(XSI_TYPE) or "IVL_TS").endswith("IVL_TS")]
        when = effective(admin) if times and times[0] is admin.find("h:effectiveTime", NS) \
            else {}
        dosage = dosage_of(admin)
        if admin.get("moodCode") == "INT":
            resource: Resource = {
                "resourceType": "MedicationRequest",
                "identifier": identifiers(admin),
                "status": REQUEST_STATUS.get(status, "unknown"),
                "intent": "plan",
                "doNotPerform": True if negated(admin) else None,
                "medicationCodeableConcept": code,
                "subject": subject,
                "authoredOn": author_time(admin),
                "dosageInstruction": [dosage] if dosage else None,
            }
        else:
            resource = {
                "resourceType": "MedicationStatement",
                "identifier": identifiers(admin),
                "status": "not-taken" if negated(admin) else _MED_STATUS.get(status, "unknown"),
                "medicationCodeableConcept": code,
                "subject": subject,
                "effectiveDateTime": when.get("dateTime"),
                "effectivePeriod": when.get("period"),
                "dosage": [dosage] if dosage else None,
            }
        entries.append(Entry("medications", clean(resource)))
    return entries


_ALLERGY_CATEGORY = {"416098002": "medication", "419511003": "medication",
                     "59037007": "medication", "414285001": "food", "235719002": "food",
                     "418471000": "food", "426232007": "environment",
                     "232347008": "environment", "419199007": None, "420134006": None,
                     "418038007": None}
_SEVERITY = {"255604002": "mild", "6736007": "moderate", "24484000": "severe",
             "371923003": "mild", "371924009": "moderate"}


def map_allergies(section: Element, subject: Resource) -> list[Entry]:
    """Allergy Concern Act → Allergy Intolerance Observations → AllergyIntolerance."""
    entries = []
    for statement in statements(section):
        observations = ([statement] if has_template(statement, ALLERGY_OBSERVATION)
                        else _related(statement, ALLERGY_OBSERVATION))
        concern_status = status_code(statement)
        for obs in observations:
            entity = obs.find("h:participant/h:participantRole/h:playingEntity", NS)
            code = concept(entity.find("h:code", NS)) if entity is not None else None
            if code is None and entity is not None and text_of(entity.find("h:name", NS)):
                code = {"text": text_of(entity.find("h:name", NS))}
            refuted = negated(obs)
            if code is None and refuted:
                code, refuted = {"coding": [NO_KNOWN_ALLERGY], "text": "No known allergy"}, False
            elif code is None:
                code = concept(obs.find("h:value", NS)) or {"text": "unspecified allergy"}
            kind = _attr(obs, "h:value", "code") or ""
            category = _ALLERGY_CATEGORY.get(kind)
            reactions = []
            for reaction in _related(obs, REACTION_OBSERVATION):
                manifestation = concept(reaction.find("h:value", NS))
                if manifestation is None:
                    continue
                item: Resource = {"manifestation": [manifestation]}
                for severity in _related(reaction, SEVERITY_OBSERVATION):
                    level = _SEVERITY.get(_attr(severity, "h:value", "code") or "")
                    if level:
                        item["severity"] = level
                reactions.append(item)
            when = effective(obs)
            resource: Resource = {
                "resourceType": "AllergyIntolerance",
                "identifier": identifiers(obs) or identifiers(statement),
                "clinicalStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "resolved" if concern_status in ("completed", "aborted")
                    or "end" in when.get("period", {}) else "active"}]},
                "verificationStatus": {"coding": [{
                    "system":
                        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": "refuted" if refuted else "confirmed"}]},
                "category": [category] if category else None,
                "code": code,
                "patient": subject,
                "onsetDateTime": when.get("dateTime") or when.get("period", {}).get("start"),
                "reaction": reactions or None,
            }
            entries.append(Entry("allergies", clean(resource)))
    return entries


_OBS_STATUS = {"completed": "final", "active": "preliminary", "aborted": "cancelled",
               "cancelled": "cancelled", "held": "registered", "new": "registered"}


def observation_value(obs: Element) -> Resource:
    """The value[x] of an Observation from a CDA value of any xsi:type."""
    value = obs.find("h:value", NS)
    if value is None:
        return {}
    kind = (value.get(XSI_TYPE) or "").split(":")[-1]
    if kind == "PQ":
        found = quantity(value)
        return {"valueQuantity": found} if found else {}
    if kind in ("INT", "REAL"):
        n = number(value.get("value"))
        if n is None:
            return {}
        return {"valueInteger": n} if kind == "INT" and isinstance(n, int) else {
            "valueQuantity": {"value": n}}
    if kind in ("CD", "CE", "CO", "CV"):
        code = concept(value)
        return {"valueCodeableConcept": code} if code else {}
    if kind == "BL" and value.get("value") in ("true", "false"):
        return {"valueBoolean": value.get("value") == "true"}
    if kind == "TS":
        stamp = timestamp(value.get("value"))
        return {"valueDateTime": stamp} if stamp else {}
    if kind == "IVL_PQ":
        low = quantity(value.find("h:low", NS))
        high = quantity(value.find("h:high", NS))
        if low and high:
            return {"valueRange": {"low": low, "high": high}}
        if low or high:
            bound = value.find("h:low" if low else "h:high", NS)
            inclusive = bound is None or bound.get("inclusive", "true") != "false"
            comparator = (">=" if inclusive else ">") if low else ("<=" if inclusive else "<")
            return {"valueQuantity": dict(low or high or {}, comparator=comparator)}
        return {}
    text = text_of(value) or value.get("value") or ""
    return {"valueString": text} if text else {}


def _reference_ranges(obs: Element) -> list[Resource]:
    ranges = []
    for observation_range in obs.findall("h:referenceRange/h:observationRange", NS):
        item: Resource = {}
        value = observation_range.find("h:value", NS)
        if value is not None:
            low = quantity(value.find("h:low", NS))
            high = quantity(value.find("h:high", NS))
            if low:
                item["low"] = {k: v for k, v in low.items() if k != "comparator"}
            if high:
                item["high"] = {k: v for k, v in high.items() if k != "comparator"}
        text = text_of(observation_range.find("h:text", NS))
        if text:
            item["text"] = text
        if item:
            ranges.append(item)
    return ranges


def map_observation(obs: Element, subject: Resource, category: str) -> Resource:
    when = effective(obs)
    interpretation = [c for i in obs.findall("h:interpretationCode", NS) if (c := concept(i))]
    resource: Resource = {
        "resourceType": "Observation",
        "identifier": identifiers(obs),
        "status": _OBS_STATUS.get(status_code(obs), "final"),
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category}]}],
        "code": concept(obs.find("h:code", NS)) or {"text": "unspecified observation"},
        "subject": subject,
        "effectiveDateTime": when.get("dateTime"),
        "effectivePeriod": when.get("period"),
        **observation_value(obs),
        "interpretation": interpretation or None,
        "referenceRange": _reference_ranges(obs) or None,
    }
    if negated(obs):
        resource["dataAbsentReason"] = {"text": "not observed (negationInd)"}
    return clean(resource)


_REPORT_STATUS = {"completed": "final", "active": "partial", "aborted": "cancelled",
                  "cancelled": "cancelled"}


def map_results(section: Element, subject: Resource) -> list[Entry]:
    """Result Organizer → DiagnosticReport; its Result Observations → Observations."""
    entries = []
    for statement in statements(section):
        if has_template(statement, RESULT_OBSERVATION) or statement.tag == q("observation"):
            entries.append(Entry("results", map_observation(statement, subject, "laboratory")))
            continue
        observations = [Entry("results", map_observation(o, subject, "laboratory"))
                        for o in statement.findall("h:component/h:observation", NS)]
        when = effective(statement)
        status = status_code(statement)
        report: Resource = {
            "resourceType": "DiagnosticReport",
            "identifier": identifiers(statement),
            "status": _REPORT_STATUS.get(status, "final"),
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": concept(statement.find("h:code", NS)) or {"text": "result panel"},
            "subject": subject,
            "effectiveDateTime": when.get("dateTime"),
            "effectivePeriod": when.get("period"),
            "result": [{"reference": o.full_url} for o in observations] or None,
        }
        entries.append(Entry("results", clean(report)))
        entries.extend(observations)
    return entries


def map_vital_signs(section: Element, subject: Resource) -> list[Entry]:
    """Vital Signs Organizer → its Vital Sign Observations (category vital-signs)."""
    entries = []
    for statement in statements(section):
        observations = ([statement] if statement.tag == q("observation")
                        else statement.findall("h:component/h:observation", NS))
        entries += [Entry("vital-signs", map_observation(o, subject, "vital-signs"))
                    for o in observations]
    return entries


_PROCEDURE_STATUS = {"completed": "completed", "active": "in-progress", "aborted": "stopped",
                     "cancelled": "not-done", "new": "preparation", "held": "on-hold"}


def map_procedures(section: Element, subject: Resource) -> list[Entry]:
    """Procedure Activity procedure/observation/act → Procedure."""
    entries = []
    for statement in statements(section):
        when = effective(statement)
        resource: Resource = {
            "resourceType": "Procedure",
            "identifier": identifiers(statement),
            "status": "not-done" if negated(statement)
            else _PROCEDURE_STATUS.get(status_code(statement), "completed"),
            "code": concept(statement.find("h:code", NS)) or {"text": "unspecified procedure"},
            "subject": subject,
            "performedDateTime": when.get("dateTime"),
            "performedPeriod": when.get("period"),
        }
        entries.append(Entry("procedures", clean(resource)))
    return entries


def map_immunizations(section: Element, subject: Resource) -> list[Entry]:
    """Immunization Activity → Immunization (not-done when negated)."""
    entries = []
    for admin in statements(section):
        when = effective(admin)
        occurrence = when.get("dateTime") or when.get("period", {}).get("start")
        resource: Resource = {
            "resourceType": "Immunization",
            "identifier": identifiers(admin),
            "status": "not-done" if negated(admin) else "completed",
            "vaccineCode": medication_code(admin),
            "patient": subject,
            "occurrenceDateTime": occurrence,
            "occurrenceString": None if occurrence else "unknown",
        }
        entries.append(Entry("immunizations", clean(resource)))
    return entries


def map_encounters(section: Element, subject: Resource) -> list[Entry]:
    """Encounter Activity → Encounter (finished, ambulatory unless the code says otherwise)."""
    entries = []
    for encounter in statements(section):
        when = effective(encounter)
        period = when.get("period") or ({"start": when["dateTime"]} if "dateTime" in when
                                        else None)
        code = concept(encounter.find("h:code", NS))
        resource: Resource = {
            "resourceType": "Encounter",
            "identifier": identifiers(encounter),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "type": [code] if code else None,
            "subject": subject,
            "period": period,
        }
        entries.append(Entry("encounters", clean(resource)))
    return entries


def clean(resource: Resource) -> Resource:
    """Drop None values and empty lists, so that the resource validates."""
    return {k: v for k, v in resource.items() if v is not None and v != [] and v != {}}
