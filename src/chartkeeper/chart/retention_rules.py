"""The retention schedule: how long each kind of patient record is kept, from a site's TOML file.

Periods are law and policy, and they vary by state, so every one is configuration. The
defaults follow the usual AHIMA guidance: an adult's record 10 years after the last
encounter, a minor's until the age of majority (18) plus 10 years, counted from the later of
majority and the last encounter. A site adds longer (or shorter) periods by FHIR resource
type and by the LOINC type code of a DocumentReference::

    [default]
    years = 10
    counted_from = "last-encounter"   # or "record-date": the record's own clinical date

    [minors]
    age_of_majority = 18
    years_after_majority = 10

    [resource-types]
    Immunization = { years = 75 }
    ImagingStudy = { years = 5, counted_from = "record-date" }

    [document-types]
    "11526-1" = { years = 30 }        # pathology reports
    "18842-5" = 25                    # discharge summaries (a bare number is years)

Every setting is checked on load; a bad one is refused with ``RulesError`` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chartkeeper.chart.completion.rules import RulesError, parse_toml, read_toml_file
from chartkeeper.fhir.definitions import load as load_definitions

LOINC_SYSTEM = "http://loinc.org"
COUNTED_FROM = ("last-encounter", "record-date")
MAX_YEARS = 200  # a longer period is a typo (permanent retention: simply never destroy)
_LOINC = re.compile(r"\d{1,7}-\d")


@dataclass(frozen=True)
class RetentionPeriod:
    """Keep a record ``years`` after the patient's last encounter (``last-encounter``) or after
    the record's own clinical date (``record-date``)."""

    years: int = 10
    counted_from: str = "last-encounter"


@dataclass(frozen=True)
class MinorsRule:
    """A record made while the patient was a minor is kept until ``years_after_majority``
    after the later of the age of majority and the date its period counts from."""

    enabled: bool = True
    age_of_majority: int = 18
    years_after_majority: int = 10


@dataclass(frozen=True)
class RetentionRules:
    """The whole schedule; ``RetentionRules()`` is the default. ``resource_types`` maps a FHIR
    resource type, ``document_types`` a DocumentReference LOINC type code, to its period."""

    default: RetentionPeriod = field(default_factory=RetentionPeriod)
    minors: MinorsRule = field(default_factory=MinorsRule)
    resource_types: Mapping[str, RetentionPeriod] = field(default_factory=dict)
    document_types: Mapping[str, RetentionPeriod] = field(default_factory=dict)

    def period_for(self, record: Mapping[str, Any]) -> tuple[str, RetentionPeriod]:
        """The period that governs ``record`` and what it was chosen by: a DocumentReference's
        LOINC type (the longest when it has several), else its resource type, else the
        default."""
        kind = str(record.get("resourceType", ""))
        if kind == "DocumentReference" and self.document_types:
            matched = [(f"document type {code}", self.document_types[code])
                       for code in document_type_codes(record) if code in self.document_types]
            if matched:
                return max(matched, key=lambda item: item[1].years)
        if kind in self.resource_types:
            return f"resource type {kind}", self.resource_types[kind]
        return "default", self.default

    def shortest_years(self) -> int:
        """The shortest period of any record (the minors rule only lengthens one)."""
        return min([self.default.years, *(p.years for p in self.resource_types.values()),
                    *(p.years for p in self.document_types.values())])


def document_type_codes(record: Mapping[str, Any]) -> list[str]:
    """The LOINC codes of a DocumentReference's ``type`` (codings without a system count)."""
    codings = (record.get("type") or {}).get("coding") or []
    return [str(c["code"]) for c in codings if isinstance(c, dict) and c.get("code")
            and c.get("system", LOINC_SYSTEM) == LOINC_SYSTEM]


# ---------------------------------------------------------------------- loading
_TABLES = ("default", "minors", "resource-types", "document-types")


def load_retention_rules(path: Path | str | None) -> RetentionRules:
    """The schedule in the TOML file at ``path``; the defaults when ``path`` is None or empty
    (settings a file omits keep their defaults)."""
    if path is None or str(path) == "":
        return RetentionRules()
    return retention_rules_from_mapping(*read_toml_file(path))


def parse_retention_rules(text: str, source: str = "retention rules") -> RetentionRules:
    """The schedule written in TOML ``text``."""
    return retention_rules_from_mapping(parse_toml(text, source), source)


def retention_rules_from_mapping(data: Mapping[str, Any], source: str = "retention rules"
                                 ) -> RetentionRules:
    rules = RetentionRules()
    changes: dict[str, Any] = {}
    for name, table in data.items():
        if name not in _TABLES:
            raise RulesError(name, "unknown table; expected one of " + ", ".join(_TABLES),
                             source)
        if not isinstance(table, Mapping):
            raise RulesError(name, f"must be a table ([{name}]), got {_kind(table)}", source)
        if name == "default":
            changes["default"] = _period(name, table, rules.default, source)
        elif name == "minors":
            changes["minors"] = _minors(table, source)
        elif name == "resource-types":
            changes["resource_types"] = _periods(name, table, _check_resource_type, source)
        else:
            changes["document_types"] = _periods(name, table, _check_loinc, source)
    return replace(rules, **changes)


def _periods(name: str, table: Mapping[str, Any], check_key: Any, source: str
             ) -> dict[str, RetentionPeriod]:
    periods: dict[str, RetentionPeriod] = {}
    for key, raw in table.items():
        setting = f"{name}.{key}"
        check_key(setting, key, source)
        if isinstance(raw, int) and not isinstance(raw, bool):
            periods[key] = RetentionPeriod(years=_years(setting, raw, source))
        elif isinstance(raw, Mapping):
            periods[key] = _period(setting, raw, RetentionPeriod(), source)
        else:
            raise RulesError(setting, "must be a number of years or a table like "
                             f"{{ years = 10 }}, got {_kind(raw)}", source)
    return periods


def _period(name: str, table: Mapping[str, Any], default: RetentionPeriod, source: str
            ) -> RetentionPeriod:
    _known_keys(name, table, RetentionPeriod, source)
    values: dict[str, Any] = {}
    if "years" in table:
        values["years"] = _years(f"{name}.years", table["years"], source)
    if "counted_from" in table:
        value = table["counted_from"]
        if value not in COUNTED_FROM:
            raise RulesError(f"{name}.counted_from", f"must be one of {', '.join(COUNTED_FROM)}"
                             f", got {_kind(value)}", source)
        values["counted_from"] = value
    return replace(default, **values)


def _minors(table: Mapping[str, Any], source: str) -> MinorsRule:
    _known_keys("minors", table, MinorsRule, source)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        setting = f"minors.{key}"
        if key == "enabled":
            if not isinstance(raw, bool):
                raise RulesError(setting, f"must be true or false, got {_kind(raw)}", source)
            values[key] = raw
        elif key == "age_of_majority":
            values[key] = _integer(setting, raw, 1, 30, source)
        else:
            values[key] = _years(setting, raw, source)
    return replace(MinorsRule(), **values)


def _known_keys(name: str, table: Mapping[str, Any], kind: Any, source: str) -> None:
    known = {f.name for f in fields(kind)}
    for key in table:
        if key not in known:
            raise RulesError(f"{name}.{key}", "unknown setting; expected one of "
                             + ", ".join(sorted(known)), source)


def _years(setting: str, raw: Any, source: str) -> int:
    return _integer(setting, raw, 0, MAX_YEARS, source)


def _integer(setting: str, raw: Any, low: int, high: int, source: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RulesError(setting, f"must be an integer, got {_kind(raw)}", source)
    if raw < low:
        raise RulesError(setting, f"must be at least {low}, got {raw}", source)
    if raw > high:
        raise RulesError(setting, f"must be at most {high}, got {raw}", source)
    return raw


def _check_resource_type(setting: str, key: str, source: str) -> None:
    if key not in load_definitions().resource_types:
        raise RulesError(setting, f"{key!r} is not a FHIR R4 resource type", source)


def _check_loinc(setting: str, key: str, source: str) -> None:
    if not _LOINC.fullmatch(key):
        raise RulesError(setting, f"{key!r} is not a LOINC code (like 11526-1)", source)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def retention_rules_to_toml(rules: RetentionRules) -> str:
    """``rules`` as a TOML file a site can edit (``parse_retention_rules`` reads it back)."""
    def period(value: RetentionPeriod) -> str:
        return f'{{ years = {value.years}, counted_from = "{value.counted_from}" }}'

    lines = ["# Chartkeeper retention schedule (HIM records management).", "", "[default]",
             f"years = {rules.default.years}", f'counted_from = "{rules.default.counted_from}"',
             "", "[minors]", f"enabled = {'true' if rules.minors.enabled else 'false'}",
             f"age_of_majority = {rules.minors.age_of_majority}",
             f"years_after_majority = {rules.minors.years_after_majority}",
             "", "[resource-types]"]
    lines += [f"{key} = {period(value)}" for key, value in sorted(rules.resource_types.items())]
    lines += ["", "[document-types]"]
    lines += [f'"{key}" = {period(value)}' for key, value in sorted(rules.document_types.items())]
    return "\n".join(lines) + "\n"
