"""The record-completion rule set: which documents a discharged record needs, and by when.

Defaults follow CMS 482.22(c)(5) and 482.24(c) and the Joint Commission RC standards; a site
changes them in a TOML file (``load_rules``). Every setting is checked on load and a bad one
is refused with ``RulesError`` naming it, so a typo never silently switches a rule off.

Operating-room procedures and tissue removal are recognised from ICD-10-PCS, the code set a
hospital assigns to inpatient procedures. A PCS code has seven characters: section, body
system, root operation, body part, approach, device, qualifier. Patterns here have one item
per character: ``?`` (any), a character, or a ``[...]`` class, e.g. ``0?[BT]????`` is every
Medical and Surgical excision or resection.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

PCS_LENGTH = 7
_PCS_CHAR = re.compile(r"[0-9A-HJ-NP-Z]")  # ICD-10-PCS uses digits and letters except I and O
_LOINC = re.compile(r"\d{1,7}-\d")
# v3 ActEncounterCode (Encounter.class in R4).
ENCOUNTER_CLASSES = frozenset({"AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC",
                               "PRENC", "SS", "VR"})
DOC_STATUSES = frozenset({"preliminary", "final", "amended", "entered-in-error"})


class RulesError(ValueError):
    """A rule set that cannot be used; ``setting`` names the offending entry."""

    def __init__(self, setting: str, message: str, source: str = "rules") -> None:
        self.setting = setting
        self.source = source
        super().__init__(f"{source}: {setting}: {message}")


@dataclass(frozen=True)
class HistoryAndPhysicalRule:
    """(a) An H&P for each stay, no more than ``days_before_admission`` before admission and
    no later than ``hours_after_admission`` after it (CMS 482.22(c)(5)(i)). Observation
    stays are included: CMS counts from "admission or registration", and an observation
    patient is in a hospital bed like an inpatient."""

    enabled: bool = True
    loinc: tuple[str, ...] = ("34117-2",)
    encounter_classes: tuple[str, ...] = ("IMP", "OBSENC")
    hours_after_admission: int = 24
    days_before_admission: int = 30


@dataclass(frozen=True)
class OperativeReportRule:
    """(b) An operative report for each operation of a stay. Procedures coded on the same day
    with operating-room ICD-10-PCS codes are one operation (a lobectomy and its node
    sampling share one report); a report dated on or after that day answers for it.

    Default OR codes: Medical and Surgical (section 0) by an open, percutaneous endoscopic or
    natural-opening-with-endoscopic-assistance approach (5th character 0, 4, F); fracture
    and joint work done percutaneously (reposition, replacement, fusion, reattachment,
    transplantation with approach 3: an intramedullary nail); and open Obstetrics (section 1,
    approach 0: a cesarean). Not: vaginal delivery (10E0XZZ), robotic assistance (8E0...),
    imaging or bedside percutaneous procedures."""

    enabled: bool = True
    loinc: tuple[str, ...] = ("11504-8",)
    encounter_classes: tuple[str, ...] = ("IMP", "OBSENC")
    operating_room_pcs: tuple[str, ...] = (
        "0???0??", "0???4??", "0???F??", "0?[GMRSY]?3??", "1???0??")


@dataclass(frozen=True)
class DischargeSummaryRule:
    """(c) A discharge summary for every inpatient stay (CMS 482.24(c)(4)(vii))."""

    enabled: bool = True
    loinc: tuple[str, ...] = ("18842-5",)
    encounter_classes: tuple[str, ...] = ("IMP",)


@dataclass(frozen=True)
class AuthenticationRule:
    """(d) Every current document authenticated: a signed ``docStatus`` and an
    ``authenticator`` (CMS 482.24(c)(1)). Clinic and emergency notes are records too."""

    enabled: bool = True
    encounter_classes: tuple[str, ...] = ("IMP", "OBSENC", "EMER", "AMB")
    signed_statuses: tuple[str, ...] = ("final", "amended")


@dataclass(frozen=True)
class PathologyReportRule:
    """(e) A pathology report when tissue was removed: Medical and Surgical excision (3rd
    character B), resection (T) or extraction (D); one report per operation, as for (b)."""

    enabled: bool = True
    loinc: tuple[str, ...] = ("11526-1",)
    encounter_classes: tuple[str, ...] = ("IMP", "OBSENC")
    tissue_pcs: tuple[str, ...] = ("0?B????", "0?T????", "0?D????")


@dataclass(frozen=True)
class Delinquency:
    """When an incomplete record becomes delinquent, and the Joint Commission rate: delinquent
    records over the average monthly discharges of the last ``average_months`` months, which
    must not exceed ``rate_limit`` (50%). ``rate_classes`` are the records the rate counts."""

    threshold_days: int = 30
    rate_classes: tuple[str, ...] = ("IMP", "OBSENC")
    average_months: int = 12
    rate_limit: float = 0.5


@dataclass(frozen=True)
class AnalysisScope:
    """How far back the analysis looks for discharges; 0 means the whole record."""

    lookback_days: int = 0


RULE_NAMES = ("history-and-physical", "operative-report", "discharge-summary",
              "authentication", "pathology-report")
DocumentRule = (HistoryAndPhysicalRule | OperativeReportRule | DischargeSummaryRule
                | AuthenticationRule | PathologyReportRule)


@dataclass(frozen=True)
class CompletionRules:
    """The whole rule set; ``CompletionRules()`` is the default."""

    history_and_physical: HistoryAndPhysicalRule = field(default_factory=HistoryAndPhysicalRule)
    operative_report: OperativeReportRule = field(default_factory=OperativeReportRule)
    discharge_summary: DischargeSummaryRule = field(default_factory=DischargeSummaryRule)
    authentication: AuthenticationRule = field(default_factory=AuthenticationRule)
    pathology_report: PathologyReportRule = field(default_factory=PathologyReportRule)
    delinquency: Delinquency = field(default_factory=Delinquency)
    analysis: AnalysisScope = field(default_factory=AnalysisScope)

    def rule(self, name: str) -> DocumentRule:
        """The document rule called ``name`` (one of ``RULE_NAMES``)."""
        if name not in RULE_NAMES:
            raise KeyError(name)
        value: DocumentRule = getattr(self, name.replace("-", "_"))
        return value

    def enabled(self, name: str) -> bool:
        return self.rule(name).enabled

    def analysed_classes(self) -> frozenset[str]:
        """Encounter classes some enabled rule looks at."""
        return frozenset(c for name in RULE_NAMES if self.enabled(name)
                         for c in self.rule(name).encounter_classes)


_TABLES = {"history-and-physical": "history_and_physical", "operative-report": "operative_report",
           "discharge-summary": "discharge_summary", "authentication": "authentication",
           "pathology-report": "pathology_report", "delinquency": "delinquency",
           "analysis": "analysis"}


# ---------------------------------------------------------------------- ICD-10-PCS patterns
def pcs_pattern_items(pattern: str) -> list[str]:
    """The pattern's items, one per code character; raises ValueError if it is not one."""
    items: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "[":
            end = pattern.find("]", position)
            if end == -1:
                raise ValueError(f"'[' at position {position + 1} is never closed")
            members = pattern[position + 1:end]
            if not members or not all(_PCS_CHAR.fullmatch(m) for m in members):
                raise ValueError(f"class [{members}] must list ICD-10-PCS characters "
                                 "(digits, letters other than I and O)")
            items.append(members)
            position = end + 1
        elif char == "?" or _PCS_CHAR.fullmatch(char):
            items.append(char)
            position += 1
        else:
            raise ValueError(f"character {char!r} is not an ICD-10-PCS character, '?' or "
                             "a [...] class")
    if len(items) != PCS_LENGTH:
        raise ValueError(f"has {len(items)} positions; an ICD-10-PCS code has {PCS_LENGTH}")
    return items


def pcs_matches(code: str, patterns: tuple[str, ...]) -> bool:
    """Whether the ICD-10-PCS ``code`` matches any of ``patterns``."""
    code = code.strip().upper()
    if len(code) != PCS_LENGTH:
        return False
    for pattern in patterns:
        items = pcs_pattern_items(pattern)
        if all(item == "?" or char in item for char, item in zip(code, items, strict=True)):
            return True
    return False


# ---------------------------------------------------------------------- loading
def read_toml_file(path: Path | str) -> tuple[dict[str, Any], str]:
    """A site's TOML settings file, parsed, and its name for error messages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError("file", f"cannot be read: {exc.strerror or exc}", str(path)) from exc
    return parse_toml(text, str(path)), str(path)


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError("TOML", f"is not valid TOML: {exc}", source) from exc


def load_rules(path: Path | str) -> CompletionRules:
    """The rule set in the TOML file at ``path`` (settings it omits keep their defaults)."""
    return rules_from_mapping(*read_toml_file(path))


def parse_rules(text: str, source: str = "rules") -> CompletionRules:
    """The rule set written in TOML ``text``."""
    return rules_from_mapping(parse_toml(text, source), source)


def rules_from_mapping(data: Mapping[str, Any], source: str = "rules") -> CompletionRules:
    """The rule set from parsed TOML: one table per rule, plus ``delinquency``/``analysis``."""
    rules = CompletionRules()
    changes: dict[str, Any] = {}
    for name, table in data.items():
        if name not in _TABLES:
            raise RulesError(name, "unknown rule or table; expected one of "
                             + ", ".join(_TABLES), source)
        if not isinstance(table, Mapping):
            raise RulesError(name, f"must be a table ([{name}]), got {_kind(table)}", source)
        attribute = _TABLES[name]
        changes[attribute] = _section(getattr(rules, attribute), name, table, source)
    return replace(rules, **changes)


def _section(default: Any, name: str, table: Mapping[str, Any], source: str) -> Any:
    hints = get_type_hints(type(default))
    known = {f.name for f in fields(default)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        setting = f"{name}.{key}"
        if key not in known:
            raise RulesError(setting, "unknown setting; expected one of "
                             + ", ".join(sorted(known)), source)
        values[key] = _convert(setting, raw, hints[key], source)
        _check(setting, key, values[key], source)
    return replace(default, **values)


def _convert(setting: str, raw: Any, expected: Any, source: str) -> Any:
    if expected is bool:
        if not isinstance(raw, bool):
            raise RulesError(setting, f"must be true or false, got {_kind(raw)}", source)
        return raw
    if expected is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise RulesError(setting, f"must be an integer, got {_kind(raw)}", source)
        return raw
    if expected is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise RulesError(setting, f"must be a number, got {_kind(raw)}", source)
        return float(raw)
    # tuple[str, ...]: a TOML array of strings.
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise RulesError(setting, f"must be an array of strings, got {_kind(raw)}", source)
    return tuple(raw)


def _check(setting: str, key: str, value: Any, source: str) -> None:
    """Range and vocabulary checks of one converted setting."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise RulesError(setting, f"must not be negative, got {value}", source)
    if key == "loinc":
        if not value:
            raise RulesError(setting, "must name at least one LOINC code", source)
        for code in value:
            if not _LOINC.fullmatch(code):
                raise RulesError(setting, f"{code!r} is not a LOINC code (like 18842-5)",
                                 source)
    elif key in ("encounter_classes", "rate_classes"):
        for code in value:
            if code not in ENCOUNTER_CLASSES:
                raise RulesError(setting, f"{code!r} is not an Encounter.class code; expected "
                                 "one of " + ", ".join(sorted(ENCOUNTER_CLASSES)), source)
    elif key == "signed_statuses":
        for status in value:
            if status not in DOC_STATUSES:
                raise RulesError(setting, f"{status!r} is not a DocumentReference.docStatus",
                                 source)
    elif key in ("operating_room_pcs", "tissue_pcs"):
        for number, pattern in enumerate(value):
            try:
                pcs_pattern_items(pattern)
            except ValueError as exc:
                raise RulesError(f"{setting}[{number}]", f"{pattern!r} {exc}", source) from exc
    elif key == "average_months" and value < 1:
        raise RulesError(setting, f"must be at least 1, got {value}", source)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def rules_to_toml(rules: CompletionRules) -> str:
    """``rules`` as a TOML file a site can edit (``parse_rules`` reads it back)."""
    lines = ["# Chartkeeper record-completion rules (HIM quantitative analysis)."]
    for name, attribute in _TABLES.items():
        lines += ["", f"[{name}]"]
        section = getattr(rules, attribute)
        for item in fields(section):
            lines.append(f"{item.name} = {_toml_value(getattr(section, item.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "[" + ", ".join(f'"{item}"' for item in value) + "]"
