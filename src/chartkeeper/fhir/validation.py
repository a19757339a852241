"""Structural validation of FHIR R4 JSON resources against the core StructureDefinitions.

The definitions are compiled once into per-type tables (child name -> rule) so that
validating a resource is a single recursive walk with dictionary lookups. Invariants
(FHIRPath constraints) and terminology bindings are not evaluated here.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from chartkeeper.fhir.definitions import load

__all__ = [
    "DefinitionsError", "Issue", "ValidationError", "check_resource", "validate_resource",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a resource, shaped like an OperationOutcome issue."""

    severity: str  # FHIR IssueSeverity: "error" | "warning"
    code: str  # FHIR IssueType: "structure", "required", "value", "invalid", ...
    expression: str  # FHIRPath-style location, e.g. "Patient.name[0].given[1]"
    diagnostics: str


class ValidationError(ValueError):
    """A resource has at least one error-severity issue; ``issues`` lists all of them."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        errors = [i for i in issues if i.severity == "error"]
        shown = "; ".join(f"{i.expression}: {i.diagnostics}" for i in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"{len(errors)} validation error(s): {shown}{more}")


# --- primitive types -------------------------------------------------------------------------

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_ID = r"[A-Za-z0-9\-\.]{1,64}"
_UUID = r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_OID = r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"
# The FHIR regexes are XML Schema regexes, where \s is only space, tab, CR and LF
# (not Python's Unicode whitespace, which would reject a no-break space).
_WS = r"[ \t\r\n]"
_NON_WS = r"[^ \t\r\n]"

# The published R4 regexes (http://hl7.org/fhir/R4/datatypes.html), except base64Binary:
# the published expression omits "/" by mistake; this one takes whole 4-character groups
# (whitespace between them is allowed but only warned about, see _pattern_problem).
_PATTERNS: dict[str, str] = {
    "id": _ID,
    "code": rf"{_NON_WS}+({_WS}{_NON_WS}+)*",
    "uri": f"{_NON_WS}+",
    "url": f"{_NON_WS}+",
    "canonical": f"{_NON_WS}+",
    "oid": _OID,
    "uuid": _UUID,
    "date": f"{_YEAR}(-{_MONTH}(-{_DAY})?)?",
    "dateTime": f"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?",
    "instant": f"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}",
    "time": _TIME,
    "base64Binary": r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
}
_EXPECTED: dict[str, str] = {
    "id": "1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
    "code": "non-empty text with no leading, trailing or doubled whitespace",
    "uri": "a URI without whitespace",
    "url": "a URL without whitespace",
    "canonical": "a canonical URL without whitespace",
    "oid": "urn:oid: followed by a dotted OID",
    "uuid": "urn:uuid: followed by a lower-case UUID",
    "date": "YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)+zz:zz",
    "instant": "YYYY-MM-DDThh:mm:ss(.sss) with a timezone (Z or +zz:zz)",
    "time": "hh:mm:ss(.sss)",
    "base64Binary": "base64-encoded data",
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "integer": (-2147483648, 2147483647),
    "positiveInt": (1, 2147483647),
    "unsignedInt": (0, 2147483647),
}
_MAX_STRING = 1024 * 1024  # R4: strings SHALL NOT exceed 1MB
_WHITESPACE = re.compile(_WS + "+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ID_CHARS = re.compile(r"[A-Za-z0-9\-\.]+").fullmatch

_JSON_STRING, _JSON_BOOLEAN, _JSON_INTEGER, _JSON_DECIMAL = 0, 1, 2, 3


class _Primitive:
    """How one FHIR primitive type is represented and checked in JSON."""

    __slots__ = ("code", "json", "match", "low", "high", "text")

    def __init__(self, code: str) -> None:
        self.code = code
        self.match: Callable[[str], re.Match[str] | None] | None = None
        self.low = 0
        self.high = 0
        self.text = code in ("string", "markdown")
        if code == "boolean":
            self.json = _JSON_BOOLEAN
        elif code in _INT_RANGES:
            self.json = _JSON_INTEGER
            self.low, self.high = _INT_RANGES[code]
        elif code == "decimal":
            self.json = _JSON_DECIMAL
        else:
            self.json = _JSON_STRING
            if code in _PATTERNS:
                self.match = re.compile(_PATTERNS[code]).fullmatch


# A problem with a primitive value: (severity, IssueType code, diagnostics).
_Problem = tuple[str, str, str]


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _impossible_day(text: str) -> bool:
    """True when a regex-valid date names a day its month does not have (e.g. 2021-02-30)."""
    day = int(text[8:10])
    if day <= 28:
        return False
    return day > calendar.monthrange(int(text[0:4]), int(text[5:7]))[1]


def _primitive_problem(value: object, prim: _Primitive) -> _Problem | None:
    """Check one primitive JSON value; None when it is valid."""
    kind = prim.json
    if kind == _JSON_STRING:
        if type(value) is not str and not isinstance(value, str):
            return ("error", "structure",
                    f"{prim.code} must be a JSON string, got {_json_kind(value)} {_show(value)}")
        if not value:
            return ("error", "value", f"{prim.code} must not be an empty string")
        match = prim.match
        if match is not None:
            if match(value) is None:
                return _pattern_problem(value, prim)
            if len(value) >= 10 and prim.code in ("date", "dateTime", "instant") \
                    and _impossible_day(value):
                return ("error", "value", f"{_show(value)} is not a calendar date")
            return None
        if prim.code == "xhtml":
            if not value.startswith("<div"):
                return ("error", "value", f"xhtml must be a <div> element, got {_show(value)}")
            return None
        if prim.text:
            if not value.strip(" \t\r\n"):
                return ("error", "value", f"{prim.code} must have non-whitespace content")
            if len(value) > _MAX_STRING:
                return ("error", "too-long",
                        f"{prim.code} is {len(value)} characters; the limit is {_MAX_STRING}")
            if _CONTROL.search(value) is not None:
                return ("warning", "value",
                        f"{prim.code} {_show(value)} contains control characters")
        return None
    if kind == _JSON_BOOLEAN:
        if type(value) is not bool:
            return ("error", "structure",
                    f"boolean must be JSON true or false, got {_json_kind(value)} {_show(value)}")
        return None
    if kind == _JSON_INTEGER:
        if type(value) is not int:
            return ("error", "structure",
                    f"{prim.code} must be a JSON integer, got {_json_kind(value)} {_show(value)}")
        if value < prim.low or value > prim.high:
            return ("error", "value",
                    f"{prim.code} {value} is outside {prim.low}..{prim.high}")
        return None
    # decimal
    if type(value) is int:
        return None
    if type(value) is not float:
        return ("error", "structure",
                f"decimal must be a JSON number, got {_json_kind(value)} {_show(value)}")
    if not math.isfinite(value):
        return ("error", "value", f"decimal must be finite, got {value}")
    return None


def _pattern_problem(value: str, prim: _Primitive) -> _Problem:
    code = prim.code
    if code == "base64Binary":
        compact = _WHITESPACE.sub("", value)
        if prim.match is not None and prim.match(compact) is not None:
            return ("warning", "value", "base64Binary contains whitespace")
        return ("error", "value", f"base64Binary is not valid base64: {_show(value)}")
    if code == "id" and len(value) > 64 and _ID_CHARS(value) is not None:
        return ("error", "too-long", f"id {_show(value)} is {len(value)} characters; at most 64")
    return ("error", "value", f"{_show(value)} is not a valid {code}: expected {_EXPECTED[code]}")


# --- the compiled model ----------------------------------------------------------------------

_PRIMITIVE, _COMPLEX, _RESOURCE = 0, 1, 2


class _Node:
    """The children allowed in one object: a datatype, a resource, or a BackboneElement."""

    __slots__ = ("name", "rules", "required", "is_resource", "is_extension")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.rules: dict[str, _Rule] = {}
        # (display name, JSON keys any one of which satisfies it)
        self.required: tuple[tuple[str, tuple[str, ...]], ...] = ()
        self.is_resource = is_resource
        self.is_extension = name == "Extension"


class _Rule:
    """One allowed child of a node, for one JSON property name."""

    __slots__ = ("name", "kind", "type_code", "array", "choice", "prim", "node", "targets",
                 "is_reference", "shadowable")

    def __init__(self, name: str, type_code: str, array: bool, choice: str | None) -> None:
        self.name = name
        self.type_code = type_code
        self.array = array
        self.choice = choice  # the choice element's base name ("value" for valueQuantity)
        self.kind = _COMPLEX
        self.prim: _Primitive | None = None
        self.node: _Node | None = None
        self.targets: frozenset[str] | None = None  # allowed Reference targets; None: any
        self.is_reference = type_code == "Reference"
        # whether ``_name`` (the primitive's id/extensions) may accompany it
        self.shadowable = False


class DefinitionsError(RuntimeError):
    """The StructureDefinitions contain something this validator does not understand."""


class _Model:
    __slots__ = ("nodes", "resource_types", "element_node")

    def __init__(self, nodes: dict[str, _Node], resource_types: frozenset[str]) -> None:
        self.nodes = nodes
        self.resource_types = resource_types
        self.element_node = nodes["Element"]


_SYSTEM_STRING = "http://hl7.org/fhirpath/System.String"
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


@cache
def _model() -> _Model:
    """Compile the StructureDefinitions into node tables (once per process)."""
    definitions = load()
    sds = definitions.structure_definitions
    resource_types = definitions.resource_types
    primitives = {
        name: _Primitive(name) for name, sd in sds.items() if sd["kind"] == "primitive-type"
    }
    nodes: dict[str, _Node] = {}
    # First pass: one node per datatype/resource and per inline (backbone) element.
    for type_name, sd in sds.items():
        if sd["kind"] == "primitive-type":
            continue
        nodes[type_name] = _Node(type_name, sd["kind"] == "resource")
        parents = {el["path"].rsplit(".", 1)[0] for el in sd["elements"] if "." in el["path"]}
        for path in parents:
            if path != type_name:
                nodes[path] = _Node(path, False)
    # Second pass: fill each node's rules.
    for sd in sds.values():
        if sd["kind"] == "primitive-type":
            continue
        by_path = {el["path"]: el for el in sd["elements"]}
        for el in sd["elements"]:
            path = el["path"]
            if "." not in path or el["max"] == "0":
                continue
            parent, name = path.rsplit(".", 1)
            node = nodes[parent]
            target_path = path
            if "contentReference" in el:
                target_path = el["contentReference"].lstrip("#")
                if target_path not in by_path:
                    raise DefinitionsError(f"{path}: contentReference {target_path} not found")
            types = by_path[target_path].get("types", [])
            if not types:
                raise DefinitionsError(f"{path} has no type")
            array = el["max"] != "1"
            if name.endswith("[x]"):
                base = name[:-3]
                choice_keys: list[str] = []
                for t in types:
                    key = base + t["code"][0].upper() + t["code"][1:]
                    node.rules[key] = _make_rule(key, t, array, base, target_path, sd,
                                                 nodes, primitives, resource_types)
                    choice_keys.append(key)
                    if t["code"] in primitives:
                        choice_keys.append("_" + key)
                if el["min"] > 0:
                    node.required += ((name, tuple(choice_keys)),)
                continue
            if len(types) != 1:
                raise DefinitionsError(f"{path} has {len(types)} types but is not a choice")
            rule = _make_rule(name, types[0], array, None, target_path, sd, nodes, primitives,
                              resource_types)
            node.rules[name] = rule
            if el["min"] > 0:
                keys = (name, "_" + name) if rule.kind == _PRIMITIVE else (name,)
                node.required += ((name, keys),)
    return _Model(nodes, resource_types)


def _make_rule(name: str, type_ref: dict[str, Any], array: bool, choice: str | None,
               path: str, sd: dict[str, Any], nodes: dict[str, _Node],
               primitives: dict[str, _Primitive], resource_types: frozenset[str]) -> _Rule:
    code: str = type_ref["code"]
    if code == _SYSTEM_STRING:
        # Resource.id is an id; Extension.url is a uri; every other Element.id is a string.
        if sd["kind"] == "resource" and path == f"{sd['type']}.id":
            code = "id"
        elif path == "Extension.url":
            code = "uri"
        else:
            code = "string"
    rule = _Rule(name, code, array, choice)
    if code in primitives:
        rule.kind = _PRIMITIVE
        rule.prim = primitives[code]
        # Element.id and Extension.url are XML attributes: they cannot carry extensions.
        rule.shadowable = type_ref["code"] != _SYSTEM_STRING or code == "id"
    elif code == "Resource":
        rule.kind = _RESOURCE
    elif path in nodes:  # BackboneElement / Element defined inline
        rule.node = nodes[path]
    elif code in nodes:
        rule.node = nodes[code]
    else:
        raise DefinitionsError(f"{path}: type {code} has no definition")
    if code == "Reference":
        targets = {p.removeprefix(_SD_PREFIX) for p in type_ref.get("targetProfile", [])}
        if targets and targets <= resource_types:
            rule.targets = frozenset(targets)
    return rule


# --- references ------------------------------------------------------------------------------

_RELATIVE_REF = re.compile(rf"([A-Z][A-Za-z]+)/{_ID}(/_history/{_ID})?").fullmatch
_CONDITIONAL_REF = re.compile(r"([A-Z][A-Za-z]+)\?\S+").fullmatch
_ABSOLUTE_REF = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s?#]+([/?#]\S*)?").fullmatch
_URN_REF = re.compile(f"{_UUID}|{_OID}").fullmatch
_LOCAL_ID = re.compile(_ID).fullmatch
_REFERENCE_FORMS = (
    "Type/id (optionally /_history/vid), Type?query (conditional), an absolute URL, "
    "urn:uuid:, urn:oid: or #id of a contained resource"
)


def _reference_problem(reference: str, targets: frozenset[str] | None,
                       resource_types: frozenset[str]) -> tuple[str, str] | None:
    """Check a Reference.reference string; (IssueType code, diagnostics) when wrong."""
    match = _RELATIVE_REF(reference) or _CONDITIONAL_REF(reference)
    if match is not None:
        type_name = match.group(1)
        if type_name not in resource_types:
            return ("value", f"reference {_show(reference)} names an unknown resource type "
                             f"{type_name!r}")
        if targets is not None and type_name not in targets:
            return ("invalid", f"reference {_show(reference)} targets {type_name}; allowed "
                               f"target types here: {', '.join(sorted(targets))}")
        return None
    if reference.startswith("#"):
        if reference == "#" or _LOCAL_ID(reference[1:]) is not None:
            return None
    elif reference.startswith("urn:"):
        if _URN_REF(reference) is not None:
            return None
    elif _ABSOLUTE_REF(reference) is not None:
        return None
    return ("value", f"reference {_show(reference)} is malformed: expected {_REFERENCE_FORMS}")


# --- the walk --------------------------------------------------------------------------------


def _error(issues: list[Issue], code: str, expression: str, diagnostics: str) -> None:
    issues.append(Issue("error", code, expression, diagnostics))


def _walk(obj: dict[str, Any], node: _Node, path: str, model: _Model,
          issues: list[Issue]) -> None:
    """Validate the properties of one JSON object against ``node``."""
    rules = node.rules
    choices: dict[str, str] | None = None
    for key, value in obj.items():
        rule = rules.get(key)
        if rule is None:
            shadowed = rules.get(key[1:]) if type(key) is str and key.startswith("_") else None
            if shadowed is None or not shadowed.shadowable:
                _check_other_property(key, value, node, path, issues)
                continue
            if shadowed.choice is not None:
                # ``_valueString`` alone is a value (with extensions but no plain value)
                if choices is None:
                    choices = {}
                seen = choices.setdefault(shadowed.choice, key[1:])
                if seen != key[1:]:
                    _error(issues, "structure", f"{path}.{key[1:]}",
                           f"{shadowed.choice}[x] is given twice, as {seen} and {key[1:]}")
            _check_primitive_element(obj, key[1:], value, shadowed, path, model, issues)
            continue
        if rule.choice is not None:
            if choices is None:
                choices = {}
            seen = choices.setdefault(rule.choice, key)
            if seen != key:
                _error(issues, "structure", f"{path}.{key}",
                       f"{rule.choice}[x] is given twice, as {seen} and {key}")
        kind = rule.kind
        if rule.array:
            if type(value) is not list and not isinstance(value, list):
                _error(issues, "structure", f"{path}.{key}",
                       f"{key} repeats (max *) and must be a JSON array, "
                       f"got {_json_kind(value)}")
                if value is not None:
                    _check_item(value, rule, f"{path}.{key}", model, issues)
                continue
            if not value:
                _error(issues, "structure", f"{path}.{key}", f"{key} must not be an empty array")
                continue
            if kind == _PRIMITIVE:
                prim = rule.prim
                assert prim is not None
                for i, item in enumerate(value):
                    if item is None:
                        _check_null_item(obj, key, i, path, issues)
                        continue
                    problem = _primitive_problem(item, prim)
                    if problem is not None:
                        issues.append(Issue(problem[0], problem[1], f"{path}.{key}[{i}]",
                                            problem[2]))
            else:
                for i, item in enumerate(value):
                    _check_item(item, rule, f"{path}.{key}[{i}]", model, issues)
        elif kind == _PRIMITIVE:
            prim = rule.prim
            assert prim is not None
            problem = _primitive_problem(value, prim)
            if problem is not None:
                if isinstance(value, list):
                    _error(issues, "structure", f"{path}.{key}",
                           f"{key} does not repeat (max 1) but an array was given")
                elif value is None:
                    _error(issues, "structure", f"{path}.{key}",
                           f"{key} is null; omit the property instead")
                else:
                    issues.append(Issue(problem[0], problem[1], f"{path}.{key}", problem[2]))
        elif isinstance(value, list):
            _error(issues, "structure", f"{path}.{key}",
                   f"{key} does not repeat (max 1) but an array was given")
        else:
            _check_item(value, rule, f"{path}.{key}", model, issues)
    for name, keys in node.required:
        for key in keys:
            if key in obj:
                break
        else:
            _error(issues, "required", f"{path}.{name}",
                   f"{name} is required (min 1) in {node.name} but is missing")
    if node.is_extension:
        has_value = choices is not None and "value" in choices
        if has_value == ("extension" in obj):
            _error(issues, "invalid", path,
                   "an extension must have either a value[x] or nested extensions, not "
                   + ("both" if has_value else "neither"))


def _check_item(value: object, rule: _Rule, path: str, model: _Model,
                issues: list[Issue]) -> None:
    """Check one complex or resource value (a single value or one array entry)."""
    if type(value) is not dict and not isinstance(value, dict):
        if rule.kind == _PRIMITIVE:
            assert rule.prim is not None
            problem = _primitive_problem(value, rule.prim)
            if problem is not None:
                issues.append(Issue(problem[0], problem[1], path, problem[2]))
            return
        what = "null; omit the property instead" if value is None else \
            f"{_json_kind(value)} {_show(value)} where a JSON object ({rule.type_code}) is expected"
        _error(issues, "structure", path, f"{rule.name} is {what}")
        return
    if not value:
        _error(issues, "structure", path, f"{rule.name} must not be an empty object")
        return
    if rule.kind == _RESOURCE:
        _walk_resource(value, path, model, issues)
        return
    node = rule.node
    assert node is not None
    _walk(value, node, path, model, issues)
    if rule.is_reference:
        reference = value.get("reference")
        if type(reference) is str and reference:
            wrong = _reference_problem(reference, rule.targets, model.resource_types)
            if wrong is not None:
                _error(issues, wrong[0], f"{path}.reference", wrong[1])


def _check_null_item(obj: dict[str, Any], key: str, index: int, path: str,
                     issues: list[Issue]) -> None:
    """A null in a primitive array is allowed only where ``_key`` carries that entry."""
    shadow = obj.get("_" + key)
    if isinstance(shadow, list) and index < len(shadow) and shadow[index] is not None:
        return
    _error(issues, "structure", f"{path}.{key}[{index}]",
           f"{key}[{index}] is null without a matching non-null _{key}[{index}]")


def _check_other_property(key: str, value: object, node: _Node, path: str,
                          issues: list[Issue]) -> None:
    """A property with no rule: resourceType at the top of a resource, or an unknown one."""
    if key == "resourceType":
        if not node.is_resource:
            _error(issues, "structure", f"{path}.resourceType",
                   f"resourceType {_show(value)} is not allowed inside {node.name} "
                   "(only at the top of a resource)")
        return
    _error(issues, "structure", f"{path}.{key}",
           f"unknown element {key!r} in {node.name}"
           + (f" (value {_show(value)})" if not isinstance(value, dict | list) else ""))


def _check_primitive_element(obj: dict[str, Any], name: str, shadow: object, rule: _Rule,
                             path: str, model: _Model, issues: list[Issue]) -> None:
    """Check ``_name``: the id/extensions of a primitive, aligned with ``name`` if an array."""
    element_node = model.element_node
    if rule.array:
        if not isinstance(shadow, list):
            _error(issues, "structure", f"{path}._{name}",
                   f"_{name} must be a JSON array aligned with {name}, got {_json_kind(shadow)}")
            return
        values = obj.get(name)
        if isinstance(values, list) and len(values) != len(shadow):
            _error(issues, "structure", f"{path}._{name}",
                   f"_{name} has {len(shadow)} entries but {name} has {len(values)}")
        if not shadow:
            _error(issues, "structure", f"{path}._{name}", f"_{name} must not be an empty array")
        for i, item in enumerate(shadow):
            item_path = f"{path}.{name}[{i}]"
            if item is None:
                if not (isinstance(values, list) and i < len(values) and values[i] is not None):
                    _error(issues, "structure", f"{path}._{name}[{i}]",
                           f"_{name}[{i}] and {name}[{i}] are both null")
            elif not isinstance(item, dict) or not item:
                _error(issues, "structure", f"{path}._{name}[{i}]",
                       f"_{name}[{i}] must be a non-empty object (id, extension), "
                       f"got {_json_kind(item)}")
            else:
                _walk(item, element_node, item_path, model, issues)
        return
    if not isinstance(shadow, dict) or not shadow:
        _error(issues, "structure", f"{path}._{name}",
               f"_{name} must be a non-empty object (id, extension), got {_json_kind(shadow)}")
        return
    _walk(shadow, element_node, f"{path}.{name}", model, issues)


def _walk_resource(resource: dict[str, Any], path: str | None, model: _Model,
                   issues: list[Issue]) -> None:
    """Check a whole resource; ``path`` is where it sits inside a container, if anywhere."""
    resource_type = resource.get("resourceType")
    type_path = "resourceType" if path is None else f"{path}.resourceType"
    if resource_type is None:
        _error(issues, "required", type_path, "resourceType is missing")
        return
    if type(resource_type) is not str or resource_type not in model.resource_types:
        _error(issues, "not-supported", type_path,
               f"resourceType {_show(resource_type)} is not a concrete FHIR R4 resource type")
        return
    _walk(resource, model.nodes[resource_type], resource_type if path is None else path,
          model, issues)


# --- public API ------------------------------------------------------------------------------


def validate_resource(resource: object) -> list[Issue]:
    """Check a parsed JSON resource against the R4 structure; return every issue found."""
    model = _model()
    issues: list[Issue] = []
    if not isinstance(resource, dict):
        _error(issues, "structure", "$this",
               f"a resource must be a JSON object, got {_json_kind(resource)}")
        return issues
    try:
        _walk_resource(resource, None, model, issues)
    except RecursionError:
        _error(issues, "too-costly", "$this",
               "the resource is nested too deeply to validate (more than several hundred levels)")
    return issues


def check_resource(resource: object) -> None:
    """Raise ValidationError listing every issue if the resource has any error."""
    issues = validate_resource(resource)
    for issue in issues:
        if issue.severity == "error":
            raise ValidationError(issues)
