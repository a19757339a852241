"""The decisions of the worksheet API as JSON: ``decisions_from_json`` turns the body into
``Decision``s, reporting every problem at once with its place (``decisions[2].units``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from chartkeeper.coding.worksheet import (
    ACTIONS,
    POA_INDICATORS,
    PROCEDURE_SYSTEMS,
    Action,
    Decision,
)
from chartkeeper.coding.worksheet_service import discharge_status_of
from chartkeeper.store.errors import InvalidRequest, OutcomeIssue

MAX_DECISIONS = 300
MAX_CODE = 16  # the longest ICD-10-CM code is 8 characters with its dot, PCS 7
MAX_UNITS = 9999
_DECISION_KEYS = frozenset({"action", "code", "replacement", "reason", "poa", "system",
                            "performed", "units"})
_BODY_KEYS = frozenset({"decisions", "reason", "dischargeStatus"})


@dataclass(frozen=True)
class DecisionsBody:
    decisions: list[Decision]
    reason: str | None
    discharge_status: str | None


class _Issues:
    def __init__(self) -> None:
        self.found: list[OutcomeIssue] = []

    def add(self, expression: str, message: str) -> None:
        self.found.append(OutcomeIssue("invalid", f"{expression}: {message}", expression))

    def raise_any(self) -> None:
        if self.found:
            raise InvalidRequest("; ".join(i.diagnostics for i in self.found), self.found)


def _text(value: Any, where: str, issues: _Issues, limit: int, *, required: bool = False
          ) -> str | None:
    if value is None:
        if required:
            issues.add(where, "is required")
        return None
    if not isinstance(value, str):
        issues.add(where, f"must be text, got {type(value).__name__}")
        return None
    if len(value) > limit:
        issues.add(where, f"is {len(value)} characters long; at most {limit}")
        return None
    if required and not value.strip():
        issues.add(where, "must not be empty")
        return None
    return value


def decisions_from_json(fields: dict[str, Any]) -> DecisionsBody:
    """``{"decisions": [...], "reason", "dischargeStatus"?}``; every problem is reported at
    once, with its place (``decisions[2].units``)."""
    issues = _Issues()
    for key in sorted(set(fields) - _BODY_KEYS):
        issues.add(key[:40], "is not a field of the body (expected "
                             f"{', '.join(sorted(_BODY_KEYS))})")
    reason = _text(fields.get("reason"), "reason", issues, 500)
    status = _text(fields.get("dischargeStatus"), "dischargeStatus", issues, 2)
    listed = fields.get("decisions")
    decisions: list[Decision] = []
    if not isinstance(listed, list) or not listed:
        issues.add("decisions", "must be a non-empty list of decisions")
    elif len(listed) > MAX_DECISIONS:
        issues.add("decisions", f"has {len(listed)} entries; at most {MAX_DECISIONS}")
    else:
        for number, entry in enumerate(listed):
            decision = _decision(entry, f"decisions[{number}]", issues)
            if decision is not None:
                decisions.append(decision)
    issues.raise_any()
    try:
        checked_status = discharge_status_of(status)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.diagnostics, [OutcomeIssue("invalid", exc.diagnostics,
                                                            "dischargeStatus")]) from None
    return DecisionsBody(decisions, reason, checked_status)


def _decision(entry: Any, where: str, issues: _Issues) -> Decision | None:
    if not isinstance(entry, dict):
        issues.add(where, f"must be an object, got {type(entry).__name__}")
        return None
    before = len(issues.found)
    for key in sorted(set(entry) - _DECISION_KEYS):
        issues.add(f"{where}.{key[:40]}", f"is not a field of a decision (expected "
                                         f"{', '.join(sorted(_DECISION_KEYS))})")
    action: Action | None = next((a for a in ACTIONS if a == entry.get("action")), None)
    if action is None:
        issues.add(f"{where}.action", f"must be one of {', '.join(ACTIONS)}, got "
                                      f"{str(entry.get('action'))[:20]!r}")
    code = _text(entry.get("code"), f"{where}.code", issues, MAX_CODE, required=True)
    replacement = _text(entry.get("replacement"), f"{where}.replacement", issues, MAX_CODE)
    reason = _text(entry.get("reason"), f"{where}.reason", issues, 500)
    poa = _text(entry.get("poa"), f"{where}.poa", issues, 1)
    if poa is not None and poa not in POA_INDICATORS:
        issues.add(f"{where}.poa", f"must be one of {', '.join(POA_INDICATORS)}, got {poa!r}")
    system = _text(entry.get("system"), f"{where}.system", issues, 16)
    if system is not None and system not in PROCEDURE_SYSTEMS:
        issues.add(f"{where}.system", f"must be one of {', '.join(PROCEDURE_SYSTEMS)} (or "
                                      f"absent for an ICD-10-CM diagnosis), got {system!r}")
    performed_text = _text(entry.get("performed"), f"{where}.performed", issues, 10)
    performed = None
    if performed_text is not None:
        try:
            performed = date.fromisoformat(performed_text)
        except ValueError:
            issues.add(f"{where}.performed", f"must be a date as YYYY-MM-DD, got "
                                             f"{performed_text!r}")
    units = entry.get("units", 1)
    if type(units) is not int or not 1 <= units <= MAX_UNITS:
        issues.add(f"{where}.units", f"must be a whole number from 1 to {MAX_UNITS}, got "
                                     f"{str(units)[:20]!r}")
    if len(issues.found) > before:
        return None
    assert code is not None and action is not None
    return Decision(action, code.strip(), replacement=replacement, reason=reason, poa=poa,
                    system=system, performed=performed, units=units)
