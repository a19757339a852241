"""Store exceptions; each carries the HTTP status and FHIR issue code the API reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutcomeIssue:
    """One OperationOutcome.issue: severity, FHIR issue type, where, and what went wrong."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"


class StoreError(Exception):
    """Base class: a request the store refused, with the issues that explain why."""

    status = 400
    issue_code = "processing"

    def __init__(self, diagnostics: str, issues: list[OutcomeIssue] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.issues = issues or [OutcomeIssue(self.issue_code, diagnostics)]


class InvalidRequest(StoreError):
    """The request itself is malformed (bad search parameter, bad bundle, bad header)."""

    status = 400
    issue_code = "invalid"


class InvalidResource(StoreError):
    """The resource fails structural validation; every problem is listed."""

    status = 422
    issue_code = "structure"


class NotFound(StoreError):
    status = 404
    issue_code = "not-found"


class Gone(StoreError):
    """The resource existed and was deleted."""

    status = 410
    issue_code = "deleted"


class Conflict(StoreError):
    status = 409
    issue_code = "conflict"


class PreconditionFailed(StoreError):
    """If-Match did not match, or a conditional operation matched more than one resource."""

    status = 412
    issue_code = "conflict"


class MethodNotAllowed(StoreError):
    status = 405
    issue_code = "not-supported"


class PayloadTooLarge(StoreError):
    """The request body is larger than the configured limit."""

    status = 413
    issue_code = "too-long"


class UnsupportedMediaType(StoreError):
    """The request body is not FHIR JSON."""

    status = 415
    issue_code = "not-supported"
