"""The assembled chart: a patient's record, read once and arranged the way HIM staff read it.

``assemble`` takes what ``$everything`` returns (already filtered by the caller's access
rules) and the Provenances of those records, and arranges them in sections: demographics
and identifiers, problems and allergies, encounters with the services rendered at each,
results grouped by test with reference ranges, abnormal flags and trends, vital signs,
treatments, documents, and a timeline. Every item carries its source.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from markupsafe import Markup, escape

Resource = dict[str, Any]

ABNORMAL = {"H": "high", "HH": "critical high", "L": "low", "LL": "critical low",
            "A": "abnormal", "AA": "critical", "HU": "very high", "LU": "very low",
            "POS": "positive", "DET": "detected", "R": "resistant"}
ENCOUNTER_CLASSES = {"AMB": "Ambulatory", "EMER": "Emergency", "IMP": "Inpatient",
                     "OBSENC": "Observation", "ACUTE": "Inpatient acute", "HH": "Home health",
                     "VR": "Virtual", "SS": "Short stay", "PRENC": "Pre-admission"}
TREATMENT_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration",
                   "Procedure", "CarePlan", "Immunization")
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
TIMELINE_LIMIT = 400  # the newest items; the rest of the record is in its sections


@dataclass
class Item:
    """One record on the chart: what it is, when, its state and where it came from."""

    resource_type: str
    resource_id: str
    title: str
    when: str = ""
    status: str = ""
    detail: str = ""
    source: str = ""
    encounter: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass
class ResultRow:
    """One test's results, newest first, with its trend when it has several numbers."""

    code: str
    title: str
    unit: str
    points: list[tuple[str, float]] = field(default_factory=list)
    latest: str = ""
    latest_when: str = ""
    reference_range: str = ""
    low: float | None = None
    high: float | None = None
    flag: str = ""
    count: int = 0
    source: str = ""

    def trend(self) -> Markup:
        return trend_svg(self.points, self.low, self.high, self.title)


@dataclass
class EncounterView:
    item: Item
    services: list[Item] = field(default_factory=list)
    documents: list[Item] = field(default_factory=list)


@dataclass
class Chart:
    patient: Resource
    name: str
    birth_date: str
    gender: str
    identifiers: list[tuple[str, str]]
    contacts: list[str]
    deceased: str
    problems: list[Item]
    allergies: list[Item]
    encounters: list[EncounterView]
    results: list[ResultRow]
    vitals: list[ResultRow]
    treatments: list[Item]
    documents: list[Item]
    timeline: list[Item]
    resource_count: int
    withheld: int = 0


# ------------------------------------------------------------------------------ text helpers
def concept_text(value: Any) -> str:
    """A CodeableConcept (or Coding) as people read it: its text, else a display, else code."""
    if not isinstance(value, dict):
        return ""
    if value.get("text"):
        return str(value["text"])
    codings = value.get("coding") if "coding" in value else [value]
    for coding in codings or []:
        if isinstance(coding, dict) and coding.get("display"):
            return str(coding["display"])
    for coding in codings or []:
        if isinstance(coding, dict) and coding.get("code"):
            return str(coding["code"])
    return ""


def first_code(value: Any) -> str:
    for coding in (value or {}).get("coding") or []:
        if coding.get("code"):
            return f"{coding.get('system', '')}|{coding['code']}"
    return concept_text(value)


def human_name(resource: Resource) -> str:
    names = resource.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if official.get("text"):
        return str(official["text"])
    given = " ".join(official.get("given") or [])
    return " ".join(p for p in (given, official.get("family", "")) if p) or "(no name)"


def day(value: Any) -> str:
    """The date part of a FHIR date/dateTime/instant, or ''."""
    return str(value)[:10] if isinstance(value, str) else ""


def moment(value: Any) -> str:
    """A FHIR dateTime shown to the minute (its zone as written)."""
    if not isinstance(value, str):
        return ""
    return value[:16].replace("T", " ") if len(value) > 10 else value


def quantity_text(value: Any) -> str:
    if not isinstance(value, dict) or value.get("value") is None:
        return ""
    unit = value.get("unit") or value.get("code") or ""
    comparator = value.get("comparator", "")
    return f"{comparator}{value['value']} {unit}".strip()


def when_of(resource: Resource) -> str:
    for key in ("effectiveDateTime", "occurrenceDateTime", "performedDateTime", "onsetDateTime",
                "recordedDate", "authoredOn", "issued", "date", "dateAsserted", "created"):
        if isinstance(resource.get(key), str):
            return str(resource[key])
    for key in ("period", "effectivePeriod", "performedPeriod", "onsetPeriod"):
        period = resource.get(key)
        if isinstance(period, dict) and (period.get("start") or period.get("end")):
            return str(period.get("start") or period.get("end"))
    return ""


def value_text(resource: Resource) -> str:
    for key, value in resource.items():
        if not key.startswith("value"):
            continue
        if key == "valueQuantity":
            return quantity_text(value)
        if key == "valueCodeableConcept":
            return concept_text(value)
        if key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
            return str(value)
    return ""


def status_of(resource: Resource) -> str:
    for key in ("clinicalStatus", "verificationStatus"):
        if resource.get(key):
            return concept_text(resource[key])
    return str(resource.get("status", ""))


def encounter_of(resource: Resource) -> str | None:
    ref = resource.get("encounter") or (resource.get("context") or {}).get("encounter")
    if isinstance(ref, list):
        ref = ref[0] if ref else None
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        return str(ref["reference"]).split("/_history/")[0]
    return None


def document_text(resource: Resource) -> tuple[str, str]:
    """(content type, text) of a DocumentReference's first inline attachment."""
    for content in resource.get("content") or []:
        attachment = content.get("attachment") or {}
        data = attachment.get("data")
        if isinstance(data, str):
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return "", "(the attachment is not valid base64)"
            return str(attachment.get("contentType", "")), raw.decode("utf-8", "replace")
    return "", ""


def source_text(provenances: list[Resource], resource: Resource) -> str:
    """Where a record came from: its Provenance's source entity and agent, else meta.source."""
    for provenance in provenances:
        parts = []
        for entity in provenance.get("entity") or []:
            display = (entity.get("what") or {}).get("display")
            if display:
                parts.append(str(display))
        for agent in provenance.get("agent") or []:
            display = (agent.get("who") or {}).get("display")
            if display and display not in parts:
                parts.append(str(display))
        if parts:
            return f"{' · '.join(parts)} ({day(provenance.get('recorded'))})"
    source = (resource.get("meta") or {}).get("source")
    return str(source) if source else "entered here"


# ------------------------------------------------------------------------------- the trend
def trend_svg(points: list[tuple[str, float]], low: float | None, high: float | None,
              title: str, width: int = 220, height: int = 48) -> Markup:
    """A small line chart of dated values (oldest left) with the reference range shaded."""
    if len(points) < 2:
        return Markup("")
    ordered = sorted(points)
    values = [v for _, v in ordered]
    bounds = values + [b for b in (low, high) if b is not None]
    bottom, top = min(bounds), max(bounds)
    span = (top - bottom) or 1.0
    pad = 4

    def y(value: float) -> float:
        return round(height - pad - (value - bottom) / span * (height - 2 * pad), 1)

    step = (width - 2 * pad) / (len(ordered) - 1)
    coords = " ".join(f"{round(pad + i * step, 1)},{y(v)}" for i, v in enumerate(values))
    band = ""
    if low is not None and high is not None:
        band = (f'<rect class="range" x="0" y="{y(high)}" width="{width}" '
                f'height="{max(y(low) - y(high), 1)}"/>')
    label = escape(f"{title}: {len(values)} results from {ordered[0][0][:10]} to "
                   f"{ordered[-1][0][:10]}, latest {values[-1]:g}")
    dots = "".join(f'<circle cx="{round(pad + i * step, 1)}" cy="{y(v)}" r="2"/>'
                   for i, v in enumerate(values))
    return Markup(f'<svg class="trend" role="img" aria-label="{label}" width="{width}" '
                  f'height="{height}" viewBox="0 0 {width} {height}"><title>{label}</title>'
                  f'{band}<polyline points="{coords}"/>{dots}</svg>')


# ----------------------------------------------------------------------------- the assembly
def _results(observations: list[Resource], sources: dict[str, str]) -> list[ResultRow]:
    rows: dict[str, ResultRow] = {}
    for obs in sorted(observations, key=when_of, reverse=True):
        code = first_code(obs.get("code"))
        quantity = obs.get("valueQuantity") or {}
        row = rows.get(code)
        if row is None:
            row = rows[code] = ResultRow(code, concept_text(obs.get("code")) or code,
                                         str(quantity.get("unit", "")))
            row.latest = value_text(obs) or "(no value)"
            row.latest_when = moment(when_of(obs))
            row.source = sources.get(f"Observation/{obs.get('id')}", "")
            for rng in obs.get("referenceRange") or []:
                row.low = (rng.get("low") or {}).get("value")
                row.high = (rng.get("high") or {}).get("value")
                row.reference_range = rng.get("text") or " – ".join(
                    quantity_text(rng.get(k)) or "" for k in ("low", "high") if rng.get(k))
                break
            flags = [c.get("code", "") for i in obs.get("interpretation") or []
                     for c in i.get("coding") or []]
            row.flag = next((ABNORMAL[f] for f in flags if f in ABNORMAL), "")
        row.count += 1
        if isinstance(quantity.get("value"), int | float) and when_of(obs):
            row.points.append((when_of(obs), float(quantity["value"])))
    return sorted(rows.values(), key=lambda r: r.latest_when, reverse=True)


def _is_category(resource: Resource, code: str) -> bool:
    return any(c.get("code") == code for cat in resource.get("category") or []
               for c in cat.get("coding") or [])


def item_of(resource: Resource, sources: dict[str, str]) -> Item:
    rtype = str(resource["resourceType"])
    rid = str(resource.get("id"))
    title = ""
    detail = ""
    if rtype == "Encounter":
        kinds = ", ".join(concept_text(t) for t in resource.get("type") or [])
        klass = resource.get("class") or {}
        code = str(klass.get("code", ""))
        label = klass.get("display") or ENCOUNTER_CLASSES.get(code, code)
        title = f"{label or 'encounter'}: {kinds}" if kinds else str(label or "encounter")
        reasons = ", ".join(concept_text(r) for r in resource.get("reasonCode") or [])
        disposition = concept_text((resource.get("hospitalization") or {})
                                   .get("dischargeDisposition"))
        period = resource.get("period") or {}
        detail = "; ".join(p for p in (
            f"{moment(period.get('start'))} → {moment(period.get('end'))}" if period else "",
            reasons, f"discharged: {disposition}" if disposition else "") if p)
    elif rtype == "DocumentReference":
        title = concept_text(resource.get("type")) or str(resource.get("description", "document"))
        signed = resource.get("authenticator") and resource.get("docStatus") == "final"
        detail = "signed" if signed else "not signed"
    elif rtype in ("MedicationRequest", "MedicationStatement", "MedicationAdministration"):
        title = concept_text(resource.get("medicationCodeableConcept")) or "medication"
        detail = "; ".join(str(d.get("text")) for d in resource.get("dosageInstruction") or []
                           if d.get("text"))
    elif rtype == "Immunization":
        title = concept_text(resource.get("vaccineCode"))
    elif rtype == "AllergyIntolerance":
        title = concept_text(resource.get("code"))
        detail = ", ".join(concept_text(m) for r in resource.get("reaction") or []
                           for m in r.get("manifestation") or [])
    elif rtype == "CarePlan":
        title = str(resource.get("title") or concept_text((resource.get("category") or [{}])[0])
                    or "care plan")
    elif rtype == "Observation":
        title = concept_text(resource.get("code"))
        detail = value_text(resource)
    else:
        title = concept_text(resource.get("code")) or concept_text(resource.get("type")) or rtype
    return Item(rtype, rid, title or rtype, when_of(resource), status_of(resource), detail,
                sources.get(f"{rtype}/{rid}", ""), encounter_of(resource))


def assemble(patient: Resource, resources: list[Resource],
             provenance: dict[tuple[str, str], list[Resource]], withheld: int = 0) -> Chart:
    """Arrange a patient's records (``$everything``, already access-checked) into the chart."""
    by_type: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        by_type[str(resource.get("resourceType"))].append(resource)
    described: dict[int, str] = {}  # one import's Provenance names hundreds of records

    def source_of(rtype: str, resource: Resource) -> str:
        provenances = provenance.get((rtype, str(resource.get("id"))), [])
        if not provenances:
            return source_text([], resource)
        key = id(provenances[0])
        if key not in described:
            described[key] = source_text(provenances, resource)
        return described[key]

    sources = {f"{rtype}/{r.get('id')}": source_of(rtype, r)
               for rtype, group in by_type.items() for r in group}
    items = {ref: item_of(r, sources) for rtype, group in by_type.items() if rtype != "Patient"
             for r in group for ref in [f"{rtype}/{r.get('id')}"]}

    encounters = {ref: EncounterView(items[ref]) for ref in items
                  if ref.startswith("Encounter/")}
    for item in items.values():
        if item.encounter in encounters:
            view = encounters[item.encounter]
            if item.resource_type == "DocumentReference":
                view.documents.append(item)
            elif item.resource_type in ("Procedure", "Immunization", "MedicationAdministration"):
                view.services.append(item)
    observations = by_type.get("Observation", [])
    vitals = [o for o in observations if _is_category(o, "vital-signs")]
    labs = [o for o in observations if not _is_category(o, "vital-signs")]

    def newest(kind: str | tuple[str, ...]) -> list[Item]:
        kinds = (kind,) if isinstance(kind, str) else kind
        return sorted((i for i in items.values() if i.resource_type in kinds),
                      key=lambda i: i.when, reverse=True)

    timeline = sorted((i for i in items.values() if i.when and i.resource_type not in
                       ("Provenance", "Practitioner", "Organization", "Location")),
                      key=lambda i: i.when, reverse=True)[:TIMELINE_LIMIT]
    telecom = [f"{t.get('system', '')}: {t.get('value', '')}" for t in patient.get("telecom") or []]
    addresses = [", ".join([*a.get("line", []), a.get("city", ""), a.get("state", ""),
                            a.get("postalCode", "")]).strip(", ")
                 for a in patient.get("address") or []]
    identifiers = [(concept_text(i.get("type")) or str(i.get("system", "")),
                    masked(i)) for i in patient.get("identifier") or []]
    deceased = patient.get("deceasedDateTime") or ("yes" if patient.get("deceasedBoolean")
                                                   else "")
    return Chart(
        patient=patient, name=human_name(patient), birth_date=str(patient.get("birthDate", "")),
        gender=str(patient.get("gender", "")), identifiers=identifiers,
        contacts=addresses + telecom, deceased=day(deceased) or str(deceased),
        problems=newest("Condition"), allergies=newest("AllergyIntolerance"),
        encounters=sorted(encounters.values(), key=lambda e: e.item.when, reverse=True),
        results=_results(labs, sources), vitals=_results(vitals, sources),
        treatments=newest(TREATMENT_TYPES), documents=newest("DocumentReference"),
        timeline=timeline, resource_count=len(resources), withheld=withheld)


def masked(identifier: Resource) -> str:
    """An identifier's value as the chart shows it: a Social Security number only by its last
    four digits (the full number is for registration, not for reading the record)."""
    value = str(identifier.get("value", ""))
    if identifier.get("system") == SSN_SYSTEM:
        return f"***-**-{value[-4:]}"
    return value


def age(birth_date: str, today: date | None = None) -> str:
    try:
        born = date.fromisoformat(birth_date[:10])
    except ValueError:
        return ""
    today = today or datetime.now().date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return f"{years} y"
