"""The OpenAPI document of the HIM and FHIR APIs: FastAPI's own, completed from the routes.

FastAPI sees little of these routes: the FHIR handlers read raw bodies and query strings, and
every error leaves through the app's exception handlers as an OperationOutcome. So the
document FastAPI generates has no request bodies, no query or header parameters, a 200 for
every route and a 422 that is never sent. ``build_openapi`` keeps FastAPI's paths and
operation ids and completes each operation from ``CONTRACTS`` (what its handler really reads
and answers) and from the route's ``AccessRule`` (401 and the bearer scheme unless public,
503 when the request touches the database or the audit trail).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from chartkeeper.api.auth import SESSION_COOKIE, AccessRule, ApiRoute, api_routes
from chartkeeper.fhir.definitions import load as load_definitions

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
FHIR_JSON_TYPES = (FHIR_JSON, JSON, "application/json+fhir")  # what read_json accepts
FHIR_ID_PATTERN = r"^[A-Za-z0-9\-\.]{1,64}$"
ETAG_PATTERN = r'^W/"[0-9]+"$'
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# --------------------------------------------------------------------------- schemas
def component_schemas() -> dict[str, Any]:
    """The shared schemas: FHIR shapes (loose, as the server validates the rest itself) and
    the JSON bodies of the HIM routes."""
    coding = {"type": "object", "properties": {
        "system": {"type": "string"}, "code": {"type": "string"},
        "display": {"type": "string"}}}
    return {
        "ResourceType": {"type": "string", "enum": sorted(load_definitions().resource_types),
                         "description": "A FHIR R4 resource type"},
        "Id": {"type": "string", "pattern": FHIR_ID_PATTERN, "description": "A FHIR id"},
        "Meta": {"type": "object", "properties": {
            "versionId": {"type": "string"}, "lastUpdated": {"type": "string"},
            "security": {"type": "array", "items": coding},
            "tag": {"type": "array", "items": coding}}},
        "Resource": {
            "type": "object", "required": ["resourceType"],
            "description": "Any FHIR R4 resource; the server validates it against its "
                           "StructureDefinition (422 with every problem when it fails)",
            "properties": {"resourceType": _ref("ResourceType"), "id": _ref("Id"),
                           "meta": _ref("Meta")},
            "additionalProperties": True},
        "StoredResource": {
            "type": "object", "required": ["resourceType", "id", "meta"],
            "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"},
                           "meta": {"type": "object",
                                    "required": ["versionId", "lastUpdated"]}},
            "additionalProperties": True},
        "BundleRequest": {
            "type": "object", "required": ["resourceType", "type"],
            "properties": {
                "resourceType": {"const": "Bundle"},
                "type": {"enum": ["batch", "transaction"]},
                "entry": {"type": "array", "items": {"type": "object", "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": _ref("Resource"),
                    "request": {
                        "type": "object", "required": ["method", "url"],
                        "properties": {
                            "method": {"enum": ["GET", "POST", "PUT", "DELETE"]},
                            "url": {"type": "string"},
                            "ifMatch": {"type": "string"},
                            "ifNoneExist": {"type": "string"}}}}}}}},
        "Bundle": {
            "type": "object", "required": ["resourceType", "type"],
            "properties": {
                "resourceType": {"const": "Bundle"},
                "type": {"enum": ["searchset", "history", "batch-response",
                                  "transaction-response"]},
                "total": {"type": "integer", "minimum": 0},
                "link": {"type": "array", "items": {
                    "type": "object", "required": ["relation", "url"]}},
                "entry": {"type": "array", "items": {"type": "object"}}}},
        "CapabilityStatement": {
            "type": "object", "required": ["resourceType", "fhirVersion", "rest"],
            "properties": {"resourceType": {"const": "CapabilityStatement"},
                           "fhirVersion": {"type": "string"},
                           "rest": {"type": "array", "minItems": 1}}},
        "OperationOutcome": {
            "type": "object", "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"const": "OperationOutcome"},
                "issue": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["severity", "code"],
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string"},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}}}}}}},
        "SearchForm": {
            "type": "object", "additionalProperties": {"type": "string"},
            "description": "FHIR search parameters, as in the query string"},
        "ExportManifest": {
            "type": "object", "required": ["transactionTime", "request", "output", "error"],
            "properties": {"transactionTime": {"type": "string"},
                           "request": {"type": "string"},
                           "requiresAccessToken": {"type": "boolean"},
                           "output": {"type": "array", "items": {
                               "type": "object", "required": ["type", "url"]}},
                           "error": {"type": "array"}}},
        "SignInRequest": {
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                           "totp": {"type": "string", "description": "one-time code"}}},
        "SignIn": {
            "type": "object", "required": ["user", "role", "idleMinutes"],
            "properties": {"user": {"type": "string"}, "role": {"type": "string"},
                           "idleMinutes": {"type": "integer"}}},
        "ChangePasswordRequest": {
            "type": "object", "required": ["username", "password", "newPassword"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                           "newPassword": {"type": "string"}, "totp": {"type": "string"}}},
        "WhoAmI": {
            "type": "object", "required": ["user", "role", "scope", "via", "capabilities"],
            "properties": {"user": {"type": "string"}, "role": {"type": "string"},
                           "scope": {"type": "string"},
                           "patient": {"type": ["string", "null"]},
                           "via": {"enum": ["token", "session"]},
                           "capabilities": {"type": "array", "items": {"type": "string"}}}},
        "TokenRequest": {
            "type": "object", "required": ["grant_type"],
            "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                           "client_id": {"type": "string"},
                           "client_secret": {"type": "string"},
                           "scope": {"type": "string"}}},
        "Token": {
            "type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
            "properties": {"access_token": {"type": "string"},
                           "token_type": {"const": "bearer"},
                           "expires_in": {"type": "integer"}, "scope": {"type": "string"}}},
        "OAuthError": {
            "type": "object", "required": ["error"],
            "description": "RFC 6749 section 5.2 error response",
            "properties": {
                "error": {"enum": ["invalid_request", "invalid_client", "invalid_grant",
                                   "unauthorized_client", "unsupported_grant_type",
                                   "invalid_scope"]},
                "error_description": {"type": "string"}}},
        "BreakTheGlassRequest": {
            "type": "object", "required": ["patient", "reason"],
            "properties": {"patient": {"type": "string",
                                       "description": "a Patient id or 'Patient/<id>'"},
                           "reason": {"type": "string", "minLength": 10, "maxLength": 2000},
                           # The maximum is the site's setting, filled in by build_openapi.
                           "minutes": {"type": "integer", "minimum": 1}},
            "additionalProperties": False},
        "GlassGrant": {
            "type": "object",
            "required": ["id", "user", "role", "patient", "reason", "granted", "expires"],
            "properties": {"id": {"type": "integer"}, "user": {"type": "string"},
                           "role": {"type": "string"}, "patient": {"type": "string"},
                           "reason": {"type": "string"}, "granted": {"type": "string"},
                           "expires": {"type": "string"}}},
        "GlassReport": {
            "type": "object", "required": ["grants"],
            "properties": {"grants": {"type": "array", "items": _ref("GlassGrant")}}},
        "AuditVerification": {
            "type": "object", "required": ["ok", "entries", "checkpoints"],
            "properties": {"ok": {"type": "boolean"}, "entries": {"type": "integer"},
                           "checkpoints": {"type": "integer"},
                           "firstBroken": {"type": ["integer", "null"]},
                           "reason": {"type": ["string", "null"]}}},
        "DisclosureRequest": {
            "type": "object", "required": ["patient", "recipient", "purpose", "description"],
            "additionalProperties": False,
            "properties": {"patient": _ref("Id"),
                           "recipient": {"type": "string", "minLength": 1, "maxLength": 2000},
                           "purpose": {"type": "string", "minLength": 1, "maxLength": 2000},
                           "description": {"type": "string", "minLength": 1,
                                           "maxLength": 2000},
                           "resources": {"type": "array", "items": {
                               "type": "string", "pattern": r"^[^/]+/[^/]+$",
                               "maxLength": 130}},
                           "date": {"type": "string", "format": "date-time"}}},
        "DeidExportRequest": {
            "type": "object", "required": ["patients"],
            "properties": {"patients": {"type": "array", "minItems": 1, "maxItems": 100,
                                        "items": _ref("Id")}}},
        "Disclosure": {
            "type": "object",
            "required": ["id", "date", "patient", "recipient", "purpose", "description",
                         "resources", "releasedBy"],
            "properties": {"id": {"type": "integer"}, "date": {"type": "string"},
                           "patient": {"type": "string"}, "recipient": {"type": "string"},
                           "purpose": {"type": "string"}, "description": {"type": "string"},
                           "resources": {"type": "array", "items": {"type": "string"}},
                           "releasedBy": {"type": "string"}}},
        "CodingSuggestRequest": {
            "type": "object", "required": ["text", "setting"],
            "properties": {"text": {"type": "string", "minLength": 1},
                           "setting": {"type": "string", "enum": ["inpatient", "outpatient"]},
                           "age": {"type": "integer", "minimum": 0, "maximum": 124},
                           "date": {"type": "string", "format": "date"}}},
        "CodingSuggestions": {
            "type": "object", "required": ["diagnoses", "principal", "procedures"],
            "properties": {"diagnoses": {"type": "array", "items": _ref("CodingSuggestion")},
                           "principal": {"type": ["string", "null"]},
                           "procedures": {"type": "array",
                                          "items": _ref("CodingSuggestion")}}},
        "CodingSuggestion": {
            "type": "object", "required": ["code", "display", "confidence", "evidence"],
            "properties": {"code": {"type": "string"}, "display": {"type": "string"},
                           "confidence": {"type": "number"}, "proposed": {"type": "boolean"},
                           "evidence": {"type": "array", "items": {
                               "type": "object", "required": ["start", "end", "text"],
                               "properties": {"start": {"type": "integer"},
                                              "end": {"type": "integer"},
                                              "text": {"type": "string"},
                                              "section": {"type": "string"}}}}}},
        "CodingDecisionsRequest": {
            "type": "object", "required": ["decisions"],
            "properties": {"decisions": {"type": "array", "items": {"type": "object"}},
                           "reason": {"type": "string"},
                           "dischargeStatus": {"type": "string"}}},
        "CodingAnswer": {"type": "object", "description": "see the coding slice's routes"},
        "Accounting": {
            "type": "object", "required": ["patient", "disclosures"],
            "properties": {"patient": {"type": "string"},
                           "disclosures": {"type": "array", "items": _ref("Disclosure")}}},
    }


# --------------------------------------------------------------------------- contracts
STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 304: "Not Modified",
    400: "The request is malformed", 401: "Not authenticated, or the token is invalid",
    403: "The caller's role, scopes or patient compartment do not allow this",
    404: "Unknown resource type, or no such resource", 405: "Needs search criteria",
    409: "Conflicts with stored data or a concurrent write", 410: "The resource was deleted",
    412: "If-Match did not match, or the criteria matched more than one resource",
    413: "The body exceeds the configured size limit",
    415: "The body is not FHIR JSON (or, for _search, not a form)",
    422: "The resource fails validation against its StructureDefinition",
    500: "The export job failed (Bulk Data: the job's OperationOutcome)",
    503: "The database is busy, or the access could not be audited; retry",
}


def header(description: str, schema: Mapping[str, Any] | None = None,
           required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required,
            "schema": dict(schema or {"type": "string"})}


ETAG_HEADER = header("The version's weak ETag", {"type": "string", "pattern": ETAG_PATTERN})
LAST_MODIFIED = header("When the version was stored (HTTP date)")
WRITE_HEADERS = {"ETag": ETAG_HEADER, "Last-Modified": LAST_MODIFIED,
                 "Location": header("The new version: <base>/<type>/<id>/_history/<vid>")}
READ_HEADERS = {"ETag": ETAG_HEADER, "Last-Modified": LAST_MODIFIED}


def content(schema: Mapping[str, Any], *media_types: str) -> dict[str, Any]:
    return {media_type: {"schema": dict(schema)} for media_type in media_types or (FHIR_JSON,)}


def answer(status: int, body: Mapping[str, Any] | None = None,
           headers: Mapping[str, Any] | None = None, description: str | None = None
           ) -> dict[str, Any]:
    """One documented response: ``body`` maps media types to schemas (None: no body)."""
    response: dict[str, Any] = {"description": description or STATUS_TEXT[status]}
    if body:
        response["content"] = dict(body)
    if headers:
        response["headers"] = dict(headers)
    return response


def outcome(status: int) -> dict[str, Any]:
    """An error answered as an OperationOutcome (the app's exception handlers)."""
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": header('Bearer realm="chartkeeper"[, error=...]')}
    return answer(status, content(_ref("OperationOutcome")), headers)


def query(name: str, schema: Mapping[str, Any], description: str = "",
          required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": dict(schema),
            "description": description}


def header_param(name: str, schema: Mapping[str, Any], description: str = "",
                 required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": dict(schema),
            "description": description}


STRING = {"type": "string"}
COUNT = {"type": "integer", "minimum": 0}
SEARCH_RESULT_PARAMS = (
    query("_count", COUNT, "page size (capped by the server)"),
    query("_offset", COUNT, "first match of the page"),
    query("_sort", STRING, "comma-separated search parameters, '-' for descending"),
    query("_summary", {"enum": ["true", "false", "text", "data", "count"]}),
    query("_elements", STRING, "comma-separated top-level elements to return"),
    query("_total", {"enum": ["none", "estimate", "accurate"]}),
    query("_include", STRING, "Type:param[:target]"),
    query("_revinclude", STRING, "Type:param[:target]"),
)
CRITERIA_PARAMS = (
    query("_id", STRING, "logical id(s), comma-separated"),
    query("_lastUpdated", STRING, "a FHIR date search value, e.g. ge2020-01-01"),
)
HISTORY_PARAMS = (
    query("_since", STRING, "only versions stored at or after this instant"),
    query("_count", COUNT, "page size (at most 1000)"),
    query("_offset", COUNT),
)
EXPORT_PARAMS = (
    query("_type", STRING, "comma-separated resource types"),
    query("_since", STRING, "only resources changed at or after this instant"),
    query("_outputFormat", STRING, "application/fhir+ndjson"),
)
RESPOND_ASYNC = header_param("Prefer", {"enum": ["respond-async"]},
                             "Bulk Data kick-off: must ask for an asynchronous answer",
                             required=True)
PREFER_RETURN = header_param(
    "Prefer", {"enum": ["return=representation", "return=minimal",
                        "return=OperationOutcome"]},
    "what a successful write answers with (minimal: no body)")
IF_MATCH = header_param("If-Match", {"type": "string", "pattern": ETAG_PATTERN},
                        "version-aware write: the version being replaced")
IF_NONE_EXIST = header_param("If-None-Exist", STRING,
                             "conditional create: search criteria (a query string)")
IF_NONE_MATCH = header_param("If-None-Match", {"type": "string", "pattern": ETAG_PATTERN},
                             "conditional read: 304 when the current version matches")
FHIR_RESOURCE_BODY = {"required": True,
                      "content": content(_ref("Resource"), *FHIR_JSON_TYPES)}
FIELDS_BODY = (JSON, FORM)  # read_fields: a JSON object or a urlencoded form


def fields_body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": content(_ref(schema_name), *FIELDS_BODY)}


def written() -> dict[int, dict[str, Any]]:
    """200/201 of a FHIR write: the resource, an OperationOutcome, or (minimal) no body."""
    body = content({"oneOf": [_ref("StoredResource"), _ref("OperationOutcome")]})
    return {200: answer(200, body, WRITE_HEADERS, "Updated (or matched, unchanged)"),
            201: answer(201, body, WRITE_HEADERS)}


@dataclass(frozen=True)
class Contract:
    """What one operation's handler really reads and answers, beyond its AccessRule."""

    answers: Mapping[int, dict[str, Any]]  # success, and errors with bodies of their own
    errors: Sequence[int] = ()  # answered as an OperationOutcome
    parameters: Sequence[dict[str, Any]] = ()
    body: dict[str, Any] | None = None
    summary: str | None = None


def _bundle() -> dict[int, dict[str, Any]]:
    return {200: answer(200, content(_ref("Bundle")))}


def _json(status: int, schema_name: str) -> dict[int, dict[str, Any]]:
    return {status: answer(status, content(_ref(schema_name), JSON))}


DATE_TIME = {"type": "string", "format": "date-time"}
NDJSON = "application/fhir+ndjson"
WRITE_ERRORS = (400, 403, 404, 409, 412, 413, 415, 422)
SYSTEM_SEARCH = Contract(
    _bundle(), (400, 403),
    (query("_type", STRING, "comma-separated resource types"), *SEARCH_RESULT_PARAMS),
    summary="search across all types")
TRANSACTION = Contract(
    _bundle(), (400, 403, 404, 409, 410, *WRITE_ERRORS[3:]),
    body={"required": True, "content": content(_ref("BundleRequest"), *FHIR_JSON_TYPES)},
    summary="batch or transaction")
EXPORT_KICKOFF = Contract(
    {202: answer(202, headers={"Content-Location": header("the status URL to poll")})},
    (400, 403), (RESPOND_ASYNC, *EXPORT_PARAMS), summary="Bulk Data $export kick-off")

# Keyed by "METHOD path" as FastAPI documents the route.
CONTRACTS: dict[str, Contract] = {
    # FHIR: system level
    "GET /fhir/metadata": Contract({200: answer(200, content(_ref("CapabilityStatement")))},
                                   summary="CapabilityStatement"),
    "GET /fhir": SYSTEM_SEARCH,
    "GET /fhir/": SYSTEM_SEARCH,
    "POST /fhir": TRANSACTION,
    "POST /fhir/": TRANSACTION,
    "GET /fhir/_history": Contract(_bundle(), (400, 403), HISTORY_PARAMS,
                                   summary="history of all types"),
    # FHIR: Bulk Data export
    "GET /fhir/$export": EXPORT_KICKOFF,
    "GET /fhir/Patient/$export": EXPORT_KICKOFF,
    "GET /fhir/Group/{group_id}/$export": Contract(
        EXPORT_KICKOFF.answers, (400, 403, 404), EXPORT_KICKOFF.parameters,
        summary="Bulk Data $export kick-off for a Group's members"),
    "GET /fhir/$export-poll-status/{job_id}": Contract(
        {200: answer(200, content(_ref("ExportManifest"), JSON), description="complete"),
         202: answer(202, headers={"X-Progress": header("how far the job is"),
                                   "Retry-After": header("seconds")},
                     description="in progress"),
         500: outcome(500)},
        (403,)),
    "DELETE /fhir/$export-poll-status/{job_id}": Contract(
        {202: answer(202, description="cancelled")}, (403,)),
    "GET /fhir/$export-file/{job_id}/{name}": Contract(
        {200: answer(200, content(STRING, NDJSON))}, (403, 404)),
    "GET /fhir/Patient/{patient_id}/$everything": Contract(
        _bundle(), (400, 403, 404, 410),
        (query("_type", STRING), query("_since", STRING), query("_count", COUNT)),
        summary="Patient $everything"),
    "POST /fhir/Patient/$match": Contract(
        _bundle(), (400, 403, 413, 415, 422), body=FHIR_RESOURCE_BODY,
        summary="Patient $match: the probable duplicates of a Patient (input Parameters: "
                "resource, count, onlyCertainMatches)"),
    # FHIR: type level
    "GET /fhir/{resource_type}/_history": Contract(_bundle(), (400, 403, 404),
                                                   HISTORY_PARAMS),
    "GET /fhir/{resource_type}": Contract(_bundle(), (400, 403, 404),
                                          (*CRITERIA_PARAMS, *SEARCH_RESULT_PARAMS)),
    "POST /fhir/{resource_type}/_search": Contract(
        _bundle(), (400, 403, 404, 415),
        body={"required": False, "content": content(_ref("SearchForm"), FORM)}),
    "POST /fhir/{resource_type}": Contract(
        written(), WRITE_ERRORS, (IF_NONE_EXIST, PREFER_RETURN), FHIR_RESOURCE_BODY),
    "PUT /fhir/{resource_type}": Contract(
        written(), (*WRITE_ERRORS, 405), (*CRITERIA_PARAMS, IF_MATCH, PREFER_RETURN),
        FHIR_RESOURCE_BODY, summary="conditional update"),
    "DELETE /fhir/{resource_type}": Contract(
        {204: answer(204)}, (400, 403, 404, 405, 409, 412), CRITERIA_PARAMS,
        summary="conditional delete"),
    # FHIR: instance level
    "GET /fhir/{resource_type}/{resource_id}": Contract(
        {200: answer(200, content(_ref("StoredResource")), READ_HEADERS),
         304: answer(304, headers=READ_HEADERS)},
        (400, 403, 404, 410),
        (query("_summary", {"enum": ["true", "false", "text", "data"]}),
         query("_elements", STRING), IF_NONE_MATCH)),
    "PUT /fhir/{resource_type}/{resource_id}": Contract(
        written(), WRITE_ERRORS, (IF_MATCH, PREFER_RETURN), FHIR_RESOURCE_BODY),
    "DELETE /fhir/{resource_type}/{resource_id}": Contract(
        {204: answer(204, headers={"ETag": header("the deletion's version", required=False)})},
        (400, 403, 404, 409, 412), (IF_MATCH,)),
    "GET /fhir/{resource_type}/{resource_id}/_history": Contract(
        _bundle(), (400, 403, 404, 410), HISTORY_PARAMS),
    "GET /fhir/{resource_type}/{resource_id}/_history/{version_id}": Contract(
        {200: answer(200, content(_ref("StoredResource")), READ_HEADERS)},
        (400, 403, 404, 410)),
    # HIM: sign-in and tokens
    "POST /auth/sign-in": Contract(
        {200: answer(200, content(_ref("SignIn"), JSON), {"Set-Cookie": header(
            f"{SESSION_COOKIE}=...; HttpOnly; SameSite=strict")})},
        (400, 401, 403), body=fields_body("SignInRequest")),
    "POST /auth/sign-out": Contract({204: answer(204)}),
    "POST /auth/change-password": Contract({204: answer(204)}, (400, 401, 403),
                                           body=fields_body("ChangePasswordRequest")),
    "GET /auth/whoami": Contract(_json(200, "WhoAmI")),
    "POST /auth/token": Contract(
        {**_json(200, "Token"), **_json(400, "OAuthError"),
         401: answer(401, content(_ref("OAuthError"), JSON),
                     {"WWW-Authenticate": header('Basic realm="chartkeeper"')},
                     "Client authentication failed")},
        body={"required": True, "content": content(_ref("TokenRequest"), FORM)},
        summary="OAuth 2.0 token endpoint (client_credentials)"),
    # HIM: privacy, audit, release of information
    "POST /security/break-the-glass": Contract(
        _json(201, "GlassGrant"), (400, 403), body=fields_body("BreakTheGlassRequest")),
    "GET /security/break-the-glass": Contract(
        _json(200, "GlassReport"), (400, 403),
        (query("since", DATE_TIME), query("until", DATE_TIME))),
    "GET /audit/entries": Contract(
        {200: answer(200, {**content(_ref("Bundle")), **content(STRING, "text/csv")})},
        (400, 403),
        (query("patient", STRING), query("user", STRING), query("action", STRING),
         query("since", DATE_TIME), query("until", DATE_TIME),
         query("_count", COUNT), query("_offset", COUNT),
         query("_format", {"enum": ["json", "csv"]}))),
    "GET /audit/verify": Contract(_json(200, "AuditVerification"), (403,)),
    "POST /him/disclosures": Contract(
        _json(201, "Disclosure"), (400, 403), body=fields_body("DisclosureRequest")),
    "GET /him/disclosures": Contract(
        _json(200, "Accounting"), (400, 403), (query("patient", _ref("Id"), required=True),)),
    "POST /him/deid-export": Contract(
        {200: answer(200, content(STRING, NDJSON), {"X-Withheld-Restricted": header(
            "how many records were left out", required=False)})},
        (400, 403), body=fields_body("DeidExportRequest"),
        summary="Safe Harbor de-identified extract of named patients"),
    # Coding: suggestions, the encoder, the worksheet, reports
    "POST /api/coding/suggest": Contract(
        _json(200, "CodingSuggestions"), (400, 403, 413),
        body={"required": True, "content": content(_ref("CodingSuggestRequest"), JSON)},
        summary="ICD-10-CM (and inpatient ICD-10-PCS) suggestions for a clinical text"),
    "GET /api/coding/search": Contract(
        _json(200, "CodingAnswer"), (400, 403),
        (query("q", {"type": "string", "minLength": 1, "maxLength": 200}, required=True),
         query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
         query("date", {"type": "string", "format": "date"})),
        summary="the encoder's search"),
    "GET /api/coding/codes/{code}": Contract(
        _json(200, "CodingAnswer"), (400, 403, 404),
        (query("date", {"type": "string", "format": "date"}),),
        summary="an ICD-10-CM code, its hierarchy and notes"),
    "GET /api/coding/pcs": Contract(
        _json(200, "CodingAnswer"), (400, 403),
        (query("prefix", {"type": "string", "maxLength": 7}),
         query("date", {"type": "string", "format": "date"})),
        summary="the ICD-10-PCS builder's next valid characters"),
    "GET /api/coding/releases": Contract(_json(200, "CodingAnswer"), (403,),
                                         summary="code-set releases"),
    "GET /api/coding/queue": Contract(
        _json(200, "CodingAnswer"), (400, 403),
        (query("setting", {"type": "string", "maxLength": 20}),
         query("count", {"type": "integer", "minimum": 1, "maximum": 500}),
         query("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000}),
         query("asOf", {"type": "string", "format": "date"})),
        summary="unbilled encounters, oldest discharge first"),
    "GET /api/coding/encounters/{encounter_id}/worksheet": Contract(
        _json(200, "CodingAnswer"), (400, 403, 404), summary="an encounter's worksheet"),
    "POST /api/coding/encounters/{encounter_id}/edits": Contract(
        _json(200, "CodingAnswer"), (400, 403, 404, 413),
        body={"required": True, "content": content(_ref("CodingDecisionsRequest"), JSON)},
        summary="the edits the decisions would meet (nothing stored)"),
    "POST /api/coding/encounters/{encounter_id}/decisions": Contract(
        {**_json(200, "CodingAnswer"), **_json(201, "CodingAnswer")},
        (400, 403, 404, 409, 413, 422),
        body={"required": True, "content": content(_ref("CodingDecisionsRequest"), JSON)},
        summary="finalize an encounter's codes"),
    "GET /api/coding/reports/productivity": Contract(
        _json(200, "CodingAnswer"), (400, 403),
        (query("since", {"type": "string", "format": "date"}),
         query("until", {"type": "string", "format": "date"})),
        summary="coding productivity"),
    "GET /api/coding/reports/accuracy": Contract(
        _json(200, "CodingAnswer"), (400, 403),
        (query("since", {"type": "string", "format": "date"}),
         query("until", {"type": "string", "format": "date"})),
        summary="coding accuracy"),
}
UNDOCUMENTED = Contract({200: answer(200)}, (400, 403))


# --------------------------------------------------------------------------- building
def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once and cached like FastAPI's own."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version,
                               openapi_version=app.openapi_version,
                               description=app.description, routes=app.routes,
                               tags=app.openapi_tags, servers=app.servers)
        complete_openapi(document, api_routes(app))
        glass = document["components"]["schemas"]["BreakTheGlassRequest"]
        glass["properties"]["minutes"]["maximum"] = app.state.settings.break_glass_max_minutes
        app.openapi_schema = document
    return app.openapi_schema


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (and to /docs)."""
    def openapi() -> dict[str, Any]:
        return build_openapi(app)
    app.openapi = openapi  # type: ignore[method-assign]


def operations_without_contract(app: FastAPI) -> list[str]:
    """Documented operations with no entry in CONTRACTS (documented from their rule only)."""
    paths = build_openapi(app)["paths"]
    return sorted(f"{method.upper()} {path}" for path, operations in paths.items()
                  for method in operations if f"{method.upper()} {path}" not in CONTRACTS)


def complete_openapi(document: dict[str, Any], routes: Iterable[ApiRoute]) -> None:
    """Complete FastAPI's ``document`` in place from the routes' contracts and rules."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # FastAPI's 422 validation body is never sent: the app answers 400 with an outcome.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(component_schemas())
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "an access token (POST /auth/token, or the CLI)"},
        "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                    "description": "the web session (POST /auth/sign-in)"},
    }
    for route in routes:
        operations = document["paths"].get(route.path, {})
        for method in route.methods:
            if method.lower() in operations:
                complete_operation(operations[method.lower()], route.path, route.rule,
                                   CONTRACTS.get(f"{method} {route.path}", UNDOCUMENTED))


def complete_operation(operation: dict[str, Any], path: str, rule: AccessRule | None,
                       contract: Contract) -> None:
    public = rule is not None and rule.public
    responses = {status: outcome(status) for status in contract.errors}
    if not public:
        responses[401] = outcome(401)
    # All but the public, unaudited routes (metadata) read the database or append to the
    # audit trail, and answer 503 when either is unavailable.
    if not public or rule is None or rule.audit is not None:
        responses[503] = outcome(503)
    responses.update(contract.answers)
    operation["responses"] = {str(status): responses[status] for status in sorted(responses)}
    parameters = [p for p in operation.get("parameters", []) if p.get("in") == "path"]
    for parameter in parameters:
        parameter["schema"] = PATH_PARAMETERS.get(parameter["name"], parameter["schema"])
    parameters.extend(dict(p) for p in contract.parameters)
    if parameters:
        operation["parameters"] = parameters
    if contract.body is not None:
        operation["requestBody"] = contract.body
    if not public:
        operation["security"] = SECURITY
    if contract.summary:
        operation["summary"] = contract.summary
    if path.startswith("/fhir") and not operation.get("tags"):
        operation["tags"] = ["fhir"]


PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "resource_type": _ref("ResourceType"),
    "resource_id": _ref("Id"), "patient_id": _ref("Id"), "group_id": _ref("Id"),
    "version_id": {"type": "string", "pattern": r"^[0-9]+$"},
}
