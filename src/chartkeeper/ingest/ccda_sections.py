"""C-CDA Social History and Plan of Treatment entries to FHIR R4 (Observation, ServiceRequest,
MedicationRequest, Goal), after HL7's C-CDA on FHIR mapping conventions.

Both sections are kept per document: their entries are neither merged with each other nor
matched to earlier documents (``Entry.reconcile`` is False), so each entry is one resource.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from chartkeeper.ingest.ccda_map import (
    NS,
    PLAN_OF_TREATMENT_CATEGORY,
    REQUEST_STATUS,
    CcdaError,
    Entry,
    Resource,
    author_time,
    clean,
    concept,
    dosage_of,
    effective,
    has_template,
    identifiers,
    map_observation,
    medication_code,
    negated,
    observation_value,
    q,
    statements,
    status_code,
    template_ids,
    text_of,
    timestamp,
)

SOCIAL_HISTORY = "2.16.840.1.113883.10.20.22.2.17"
# R2.1's Plan of Treatment (extension 2014-06-09) and R1.1's Plan of Care share this root.
PLAN_OF_TREATMENT = "2.16.840.1.113883.10.20.22.2.10"

SMOKING_STATUS = "2.16.840.1.113883.10.20.22.4.78"
TOBACCO_USE = "2.16.840.1.113883.10.20.22.4.85"
BIRTH_SEX = "2.16.840.1.113883.10.20.22.4.200"
PREGNANCY = "2.16.840.1.113883.10.20.15.3.8"
INSTRUCTION = "2.16.840.1.113883.10.20.22.4.20"

# Templates that fix their observation's code. The fixed LOINC code stands in when the
# document leaves the code out or sends R1.1's placeholder ASSERTION (C-CDA on FHIR maps the
# pregnancy observation's ASSERTION to 82810-3; ASSERTION says nothing as an Observation.code).
_FIXED_CODES = {
    SMOKING_STATUS: ("72166-2", "Tobacco smoking status"),
    TOBACCO_USE: ("11367-0", "History of Tobacco use"),
    BIRTH_SEX: ("76689-9", "Sex assigned at birth"),
    PREGNANCY: ("82810-3", "Pregnancy status"),
}


def map_social_history(section: Element, subject: Resource) -> list[Entry]:
    """Every Social History observation (smoking status, tobacco use, birth sex, pregnancy and
    the generic Social History Observation alike) → Observation, category social-history.

    Birth sex becomes an Observation too, although C-CDA on FHIR prefers the US Core birthsex
    extension on Patient: the Patient is merged across documents, the Observation is not."""
    entries = []
    for number, statement in enumerate(statements(section), start=1):
        if statement.tag != q("observation"):
            continue  # R2.1 allows only observations here
        resource = map_observation(statement, subject, "social-history")
        resource["code"] = social_history_code(statement, number)
        entries.append(Entry("social-history", resource, reconcile=False))
    return entries


def social_history_code(obs: Element, number: int) -> Resource:
    """The observation's code, the template's fixed code in place of a missing one or of
    ASSERTION; an observation with neither is refused: its value ("3 per day", "Yes") cannot
    be read without knowing what was observed, and a registrar would send it back rather than
    file an unlabelled fact in the chart."""
    element = obs.find("h:code", NS)
    code = concept(element)
    fixed = next((_FIXED_CODES[t] for t in sorted(template_ids(obs)) if t in _FIXED_CODES), None)
    placeholder = element is not None and element.get("code") == "ASSERTION"
    if fixed and (code is None or placeholder):
        return {"coding": [{"system": "http://loinc.org", "code": fixed[0],
                            "display": fixed[1]}], "text": fixed[1]}
    if code is None:
        ids = identifiers(obs)
        label = f"{ids[0]['system']}|{ids[0]['value']}" if ids else "without an id"
        raise CcdaError(f"Social History entry {number} (observation {label}) has no code; "
                        "expected observation/code with a code or originalText naming what "
                        "was observed")
    return code


# moodCode → FHIR request intent. An appointment request, appointment or promise (ARQ, APT,
# PRMS) is a plan, not yet an order.
_INTENT = {"INT": "plan", "RQO": "order", "PRP": "proposal", "ARQ": "plan", "PRMS": "plan",
           "APT": "plan"}
_SERVICE_STATUS = {"active": "active", "completed": "completed", "aborted": "revoked",
                   "cancelled": "revoked", "suspended": "on-hold", "held": "on-hold",
                   "new": "draft", "nullified": "entered-in-error"}
_GOAL_STATUS = {"completed": "completed", "cancelled": "cancelled", "aborted": "cancelled"}
_GOAL_DETAIL = {"valueQuantity": "detailQuantity", "valueRange": "detailRange",
                "valueCodeableConcept": "detailCodeableConcept", "valueString": "detailString",
                "valueBoolean": "detailBoolean", "valueInteger": "detailInteger"}


def map_plan_of_treatment(section: Element, subject: Resource) -> list[Entry]:
    """Plan of Treatment entries: Goal Observation (moodCode GOL) → Goal; Planned Medication
    and Planned Immunization Activity → MedicationRequest; Planned Act, Encounter, Procedure and
    Observation (and Nutrition Recommendation, a planned act) → ServiceRequest.

    Skipped: Instructions (patient guidance, no request or goal), Planned Supply (a
    SupplyRequest or DeviceRequest, not mapped yet) and entries in event mood such as Handoff
    Communication (who receives the handoff, not a planned activity)."""
    entries = []
    for statement in statements(section):
        resource = planned_resource(statement, subject)
        if resource is not None:
            entries.append(Entry("plan-of-treatment", resource, reconcile=False))
    return entries


def planned_resource(statement: Element, subject: Resource) -> Resource | None:
    """The FHIR resource for one Plan of Treatment entry, or None for one we skip."""
    mood = statement.get("moodCode", "")
    if has_template(statement, INSTRUCTION):
        return None
    if statement.tag == q("observation") and mood == "GOL":
        # Goal Observation, and R1.1's Plan of Care Activity Observation in goal mood
        return goal(statement, subject)
    if mood not in _INTENT:
        return None
    if statement.tag == q("substanceAdministration"):
        return planned_medication(statement, subject)
    if statement.tag in (q("act"), q("encounter"), q("procedure"), q("observation")):
        return service_request(statement, subject)
    return None


def service_request(statement: Element, subject: Resource) -> Resource:
    when = effective(statement)
    return clean({
        "resourceType": "ServiceRequest",
        "identifier": identifiers(statement),
        "status": _SERVICE_STATUS.get(status_code(statement), "unknown"),
        "intent": _INTENT[statement.get("moodCode", "")],
        "code": concept(statement.find("h:code", NS)),
        "doNotPerform": True if negated(statement) else None,
        "subject": subject,
        "occurrenceDateTime": when.get("dateTime"),
        "occurrencePeriod": when.get("period"),
        "authoredOn": author_time(statement),
    })


def planned_medication(admin: Element, subject: Resource) -> Resource:
    """Planned Medication or Immunization Activity → MedicationRequest. A planned vaccine is a
    MedicationRequest too, as in the ccda-to-fhir converters (C-CDA on FHIR maps no planned
    immunization): ImmunizationRecommendation is a forecaster's output (forecastStatus, dose
    series), not a clinician's plan to give a vaccine."""
    dosage = dosage_of(admin)
    timing = _timing(admin)
    if timing:
        dosage["timing"] = timing
    return clean({
        "resourceType": "MedicationRequest",
        "identifier": identifiers(admin),
        "status": REQUEST_STATUS.get(status_code(admin), "unknown"),
        "intent": _INTENT[admin.get("moodCode", "")],
        "category": [PLAN_OF_TREATMENT_CATEGORY],
        "doNotPerform": True if negated(admin) else None,
        "medicationCodeableConcept": medication_code(admin),
        "subject": subject,
        "authoredOn": author_time(admin),
        "dosageInstruction": [dosage] if dosage else None,
    })


def _timing(admin: Element) -> Resource | None:
    """The first effectiveTime as C-CDA on FHIR maps it: a value → timing.event, low/high →
    timing.repeat.boundsPeriod."""
    time = admin.find("h:effectiveTime", NS)
    if time is None:
        return None
    event = timestamp(time.get("value"))
    if event:
        return {"event": [event]}
    bounds = {key: stamp for key, path in (("start", "h:low"), ("end", "h:high"))
              if (stamp := _bound(time, path))}
    return {"repeat": {"boundsPeriod": bounds}} if bounds else None


def goal(obs: Element, subject: Resource) -> Resource:
    """Goal Observation → Goal: described by its code (what is to be achieved or measured),
    or by its value when uncoded; a coded goal's value is the target. A single effectiveTime
    (or an interval's center) is when the goal is to be met (target.dueDate); an interval's
    low is its start date, its high the due date."""
    code = concept(obs.find("h:code", NS))
    value = observation_value(obs)
    text = text_of(obs.find("h:text", NS))
    description = code or value.get("valueCodeableConcept") \
        or {"text": text or "unspecified goal"}
    target: Resource = {}
    if code is not None:
        detail = next(((_GOAL_DETAIL[k], v) for k, v in value.items() if k in _GOAL_DETAIL),
                      None)
        if detail is not None:
            target.update({"measure": code, detail[0]: detail[1]})
    time = obs.find("h:effectiveTime", NS)
    start = due = None
    if time is not None:
        due = timestamp(time.get("value")) or _bound(time, "h:center") or _bound(time, "h:high")
        start = _bound(time, "h:low")
    if due:
        target["dueDate"] = due[:10]
    return clean({
        "resourceType": "Goal",
        "identifier": identifiers(obs),
        "lifecycleStatus": _GOAL_STATUS.get(status_code(obs), "active"),
        "description": description,
        "subject": subject,
        "startDate": start[:10] if start else None,
        "target": [target] if target else None,
    })


def _bound(time: Element, path: str) -> str | None:
    found = time.find(path, NS)
    return timestamp(found.get("value")) if found is not None else None
