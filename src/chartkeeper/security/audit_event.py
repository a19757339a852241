"""Audit entries as FHIR R4 ``AuditEvent`` resources, shaped after IHE Basic Audit Log Patterns."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import Any

from chartkeeper.security.audit_records import AuditEntry

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

Coding = dict[str, str]


def _coding(system: str, code: str, display: str) -> Coding:
    return {"system": system, "code": code, "display": display}


_REST = _coding(EVENT_TYPE, "rest", "Restful Operation")
_SOURCE_ROLE = _coding(DCM, "110153", "Source Role ID")
_DESTINATION_ROLE = _coding(DCM, "110152", "Destination Role ID")
_APPLICATION = _coding(DCM, "110150", "Application")
_CUSTODIAN = _coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                     "custodian", "Custodian")
_RECIPIENT = _coding(PARTICIPATION, "IRCP", "information recipient")
_AUTHOR = _coding(PARTICIPATION, "AUT", "author (originator)")
_EXPORT = _coding(DCM, "110106", "Export")
_SECURITY_ALERT = _coding(DCM, "110113", "Security Alert")
_USER_AUTHENTICATION = _coding(DCM, "110114", "User Authentication")


@dataclass(frozen=True)
class _EventShape:
    """How one audit action reads in AuditEvent: codes, agent roles and the BALP profile."""

    type: Coding
    subtype: Coding
    action: str  # AuditEvent.action: C R U D E
    client: Coding
    server: Coding
    user: Coding | None
    profile: str | None = None  # BALP profile for a success, "Patient" prefixed with a patient


_SHAPES: dict[str, _EventShape] = {
    "read": _EventShape(_REST, _coding(RESTFUL, "read", "read"), "R",
                        _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT, "Read"),
    "search": _EventShape(_REST, _coding(RESTFUL, "search-type", "search type"), "E",
                          _SOURCE_ROLE, _DESTINATION_ROLE, _RECIPIENT, "Query"),
    "create": _EventShape(_REST, _coding(RESTFUL, "create", "create"), "C",
                          _SOURCE_ROLE, _DESTINATION_ROLE, _AUTHOR, "Create"),
    "update": _EventShape(_REST, _coding(RESTFUL, "update", "update"), "U",
                          _SOURCE_ROLE, _DESTINATION_ROLE, _AUTHOR, "Update"),
    "delete": _EventShape(_REST, _coding(RESTFUL, "delete", "delete"), "D",
                          _APPLICATION, _CUSTODIAN, _AUTHOR, "Delete"),
    "print": _EventShape(_EXPORT, _coding(LIFECYCLE, "report", "Report (Output) Record "
                                          "Lifecycle Event"), "R",
                         _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT),
    "export": _EventShape(_EXPORT, _coding(LIFECYCLE, "extract", "Extract Record Lifecycle "
                                           "Event"), "R",
                          _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT),
    "disclosure": _EventShape(_EXPORT, _coding(LIFECYCLE, "disclose", "Disclose Record "
                                               "Lifecycle Event"), "R",
                              _DESTINATION_ROLE, _SOURCE_ROLE, _RECIPIENT),
    "login": _EventShape(_USER_AUTHENTICATION, _coding(DCM, "110122", "Login"), "E",
                         _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "login-failure": _EventShape(_USER_AUTHENTICATION, _coding(DCM, "110122", "Login"), "E",
                                 _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "logout": _EventShape(_USER_AUTHENTICATION, _coding(DCM, "110123", "Logout"), "E",
                          _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "privilege-change": _EventShape(_SECURITY_ALERT, _coding(
        DCM, "110137", "User Security Attributes Changed"), "U",
        _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "audit-setting-change": _EventShape(_SECURITY_ALERT, _coding(
        DCM, "110129", "Security Configuration"), "U", _SOURCE_ROLE, _DESTINATION_ROLE, None),
    "audit-log-access": _EventShape(_coding(DCM, "110101", "Audit Log Used"), _coding(
        RESTFUL, "search-type", "search type"), "R", _DESTINATION_ROLE, _SOURCE_ROLE,
        _RECIPIENT),
    "break-the-glass": _EventShape(_SECURITY_ALERT, _coding(
        DCM, "110127", "Emergency Override Started"), "E", _SOURCE_ROLE, _DESTINATION_ROLE,
        None),
}

# FHIR R4 AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure.
_OUTCOMES = {"success": "0", "failure": "4", "denied": "8"}
_OUTCOME_TEXT = {"failure": "the operation failed", "denied": "access was denied"}


def _network(address: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        kind = "5" if "://" in address else "1"  # URI, else machine name
    else:
        kind = "2"  # IP address
    return {"address": address, "type": kind}


def audit_event(entry: AuditEntry, *, observer: str = "chartkeeper",
                server_url: str = "http://127.0.0.1:8000/fhir") -> dict[str, Any]:
    """A FHIR R4 AuditEvent for ``entry``, shaped after the IHE BALP profiles.

    Successful REST events (read, search, create, update, delete) claim the matching BALP
    profile (``IHE.BasicAudit.Read``, ``PatientRead``...). Other events use the DICOM event
    types that the R4 AuditEvent value set includes and claim no profile.
    """
    shape = _SHAPES[entry.action]
    subtype = shape.subtype
    if entry.action == "search" and entry.resource_type is None:
        subtype = _coding(RESTFUL, "search-system", "search system")
    client: dict[str, Any] = {
        "type": {"coding": [shape.client]},
        "who": {"display": entry.source_address or "unknown client"},
        "requestor": False,
    }
    if entry.source_address:
        client["network"] = _network(entry.source_address)
    server = {
        "type": {"coding": [shape.server]},
        "who": {"display": observer},
        "requestor": False,
        "network": _network(server_url),
    }
    user: dict[str, Any] = {"type": {"coding": [shape.user]}} if shape.user else {}
    user |= {
        "who": {"identifier": {"value": entry.user_id}},
        "requestor": True,
        "role": [{"text": entry.role}],
    }
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": str(entry.seq)}
    if shape.profile is not None and entry.outcome == "success":
        name = ("Patient" + shape.profile) if entry.patient_id else shape.profile
        event["meta"] = {"profile": [BALP_PROFILE + name]}
    event |= {
        "type": shape.type,
        "subtype": [subtype],
        "action": shape.action,
        "recorded": entry.recorded,
        "outcome": _OUTCOMES[entry.outcome],
    }
    if entry.outcome in _OUTCOME_TEXT:
        event["outcomeDesc"] = _OUTCOME_TEXT[entry.outcome]
    if entry.action == "break-the-glass":
        event["purposeOfEvent"] = [{"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/v3-ActReason", "ETREAT",
            "Emergency Treatment")]}]
    event["agent"] = [user, client, server]
    event["source"] = {
        "site": observer,
        "observer": {"display": observer},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }
    entities: list[dict[str, Any]] = []
    if entry.patient_id:
        entities.append({
            "what": {"reference": f"Patient/{entry.patient_id}"},
            "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient"),
        })
    if entry.action in ("search", "audit-log-access"):
        # The stored details carry the cleaned query (parameter names), never raw values.
        query = str(entry.details.get("query") or f"{entry.resource_type or ''}?")
        entities.append({
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "24", "Query"),
            "description": query,
            "query": base64.b64encode(query.encode()).decode(),
        })
    elif entry.resource_type and entry.resource_id:
        entities.append({
            "what": {"reference": f"{entry.resource_type}/{entry.resource_id}"},
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
        })
    request_id = entry.details.get("request_id")
    if isinstance(request_id, str) and request_id:
        entities.append({
            "what": {"identifier": {"value": request_id}},
            "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"},
        })
    if entities:
        event["entity"] = entities
    return event
