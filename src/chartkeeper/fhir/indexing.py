"""Search-index rows for one FHIR R4 resource, driven by the official SearchParameters.

Each (resource type, search parameter) is compiled once into evaluators from
:mod:`chartkeeper.fhir.fhirpath` (falling back to ``fhirpathpy`` for expressions outside that
subset) and an emitter chosen by the parameter type and the element type found, following
http://hl7.org/fhir/R4/search.html: a token parameter indexes a ``CodeableConcept`` one row per
coding, a date parameter indexes a ``Period`` as one range, and so on.
"""

from __future__ import annotations

import math
import re
import unicodedata
from calendar import monthrange
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import Any, Literal

from chartkeeper.fhir.definitions import SearchParam, load
from chartkeeper.fhir.fhirpath import (
    Branch,
    ElementType,
    Evaluator,
    FhirPathSyntaxError,
    UnsupportedExpressionError,
    compile_expression,
    parse_reference,
    type_model,
)

STRING_LIMIT = 255

CompositeRow = tuple[
    str, str | None, str | None, str | None, str | None, float | None, float | None, str | None
]


@dataclass(slots=True)
class IndexRows:
    """The index rows of one resource, one list per search parameter type."""

    strings: list[tuple[str, str, str]] = field(default_factory=list)
    tokens: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    references: list[tuple[str, str | None, str | None, str | None]] = field(
        default_factory=list
    )
    quantities: list[tuple[str, str | None, str | None, float, float, float]] = field(
        default_factory=list
    )
    numbers: list[tuple[str, float, float, float]] = field(default_factory=list)
    uris: list[tuple[str, str]] = field(default_factory=list)
    composites: list[CompositeRow] = field(default_factory=list)


class UnknownResourceTypeError(ValueError):
    """The resource has no ``resourceType`` or one that is not an R4 resource type."""


class SearchExpressionError(RuntimeError):
    """A search parameter's expression could not be evaluated on a resource."""


class InvalidSearchValueError(ValueError):
    """A value at a search parameter's path cannot be indexed (e.g. a malformed date)."""


# ---------------------------------------------------------------------------------------------
# Strings


def _normalize(value: str) -> str:
    if value.isascii():
        return " ".join(value.lower().split())
    # casefold, not lower: "Straße" must match "strasse"; NFKD again after it because
    # case folding can produce new composed characters.
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", value).casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.split())


_normalize_cached = lru_cache(maxsize=1 << 16)(_normalize)


def normalize_string(value: str) -> str:
    """Case-folded, accents removed (NFKD, combining marks dropped), whitespace collapsed."""
    return _normalize_cached(value)


def _text_or_none(value: Any) -> str | None:
    if value.__class__ is str and value:
        return _normalize_cached(value)[:STRING_LIMIT].rstrip()
    return None


def _str_or_none(value: Any) -> str | None:
    return value if value.__class__ is str else None


# ---------------------------------------------------------------------------------------------
# Dates

_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000


def _day_us(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * _DAY_US


def date_range(value: str) -> tuple[int, int]:
    """The inclusive [low, high] epoch-microsecond range a FHIR date/dateTime/instant covers.

    The range follows the precision written: ``2013`` is the whole year, ``2013-01-14`` the
    whole day, ``10:00:00.123`` the whole millisecond. Text without a time zone is taken as
    UTC. Raises ValueError on text that is not a FHIR date, dateTime or instant.
    """
    if value.__class__ is not str:
        raise ValueError(f"{value!r} is not a FHIR date, dateTime or instant")
    return _date_range_cached(value)


@lru_cache(maxsize=1 << 14)
def _date_range_cached(value: str) -> tuple[int, int]:
    match = _DATE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a FHIR date, dateTime or instant")
    year_text, month_text, day_text, hour_text, minute_text, second_text, fraction, zone = (
        match.groups()
    )
    year = int(year_text)
    try:
        if month_text is None:
            low = _day_us(year, 1, 1)
            return low, low + (366 if _is_leap(year) else 365) * _DAY_US - 1
        month = int(month_text)
        if day_text is None:
            low = _day_us(year, month, 1)
            return low, low + monthrange(year, month)[1] * _DAY_US - 1
        low = _day_us(year, month, int(day_text))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a FHIR date, dateTime or instant: {exc}") from None
    if hour_text is None:
        return low, low + _DAY_US - 1
    hour, minute = int(hour_text), int(minute_text)
    second = int(second_text) if second_text is not None else 0
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"{value!r} has a time of day out of range")
    second = min(second, 59)  # a leap second is indexed as the second before it
    offset = 0
    if zone is not None and zone != "Z":
        zone_hours, zone_minutes = int(zone[1:3]), int(zone[4:6])
        if zone_hours > 14 or zone_minutes > 59:
            raise ValueError(f"{value!r} has a time-zone offset out of range")
        offset = (zone_hours * 3600 + zone_minutes * 60) * (1 if zone[0] == "+" else -1)
    low += (hour * 3600 + minute * 60 + second - offset) * 1_000_000
    if second_text is None:
        return low, low + 60_000_000 - 1
    if fraction is None:
        return low, low + 1_000_000 - 1
    digits = min(len(fraction), 6)
    low += int(fraction[:digits].ljust(6, "0"))
    return low, low + 10 ** (6 - digits) - 1


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


MIN_DATE_US: int = date_range("0001")[0]
MAX_DATE_US: int = date_range("9999")[1]


def _checked_range(code: str, value: str) -> tuple[int, int]:
    try:
        return _date_range_cached(value)
    except ValueError as exc:
        raise InvalidSearchValueError(f"search parameter {code!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Numbers: FHIR's implicit precision (5.4 means 5.35 <= x < 5.45)

_HALF_UNITS = [0.5 * 10.0**-n for n in range(20)]


def _number_bounds(value: Any) -> tuple[float, float, float] | None:
    """(value, low, high): value plus or minus half a unit in its last written digit."""
    cls = value.__class__
    if cls is int:
        number = float(value)
        return number, number - 0.5, number + 0.5
    if cls is float:
        if not math.isfinite(value):
            return None
        text = repr(value)
        if "e" not in text and "E" not in text:
            point = text.find(".")
            places = 0 if point < 0 else len(text) - point - 1
            if places >= len(_HALF_UNITS):
                return value, value, value
            half = _HALF_UNITS[places]
            # round() drops the binary noise of the subtraction (5.4 - 0.05 = 5.3500000000000005)
            return value, round(value - half, places + 1), round(value + half, places + 1)
        return _decimal_bounds(Decimal(text))
    if cls is Decimal:
        return _decimal_bounds(value)
    return None


def _decimal_bounds(value: Decimal) -> tuple[float, float, float] | None:
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        return None
    try:
        half = Decimal(5).scaleb(exponent - 1)
    except InvalidOperation:
        return None
    return float(value), float(value - half), float(value + half)


# ---------------------------------------------------------------------------------------------
# Emitters: (parameter code, value found at the path, rows) -> rows appended

Emitter = Callable[[str, Any, IndexRows], None]

_STRING_PRIMITIVES = frozenset(
    {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid"}
)
_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
)
_NUMBER_TYPES = frozenset({"integer", "decimal", "positiveInt", "unsignedInt"})
_DATE_TYPES = frozenset({"date", "dateTime", "instant"})
_URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid"})
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_NOT_TEXT = frozenset({"id", "extension", "modifierExtension", "url", "resourceType"})


def _emit_string(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is str and value:
        rows.strings.append(
            (code, _normalize_cached(value)[:STRING_LIMIT].rstrip(), value[:STRING_LIMIT])
        )


def _string_parts(parts: tuple[str, ...]) -> Emitter:
    def emit(code: str, value: Any, rows: IndexRows) -> None:
        if value.__class__ is not dict:
            return
        for part in parts:
            found = value.get(part)
            if found.__class__ is list:
                for item in found:
                    _emit_string(code, item, rows)
            else:
                _emit_string(code, found, rows)

    return emit


def _emit_string_leaves(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is str:
        _emit_string(code, value, rows)
    elif value.__class__ is list:
        for item in value:
            _emit_string_leaves(code, item, rows)
    elif value.__class__ is dict:
        for key, item in value.items():
            if key not in _NOT_TEXT and key[:1] != "_":
                _emit_string_leaves(code, item, rows)


def _emit_token_coding(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is dict:
        system, token = _str_or_none(value.get("system")), _str_or_none(value.get("code"))
        display = _text_or_none(value.get("display"))
        if system is not None or token is not None or display is not None:
            rows.tokens.append((code, system, token, display))


def _emit_token_concept(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is not dict:
        return
    text = _text_or_none(value.get("text"))
    for coding in value.get("coding") or ():
        if coding.__class__ is dict:
            system, token = _str_or_none(coding.get("system")), _str_or_none(coding.get("code"))
            display = _text_or_none(coding.get("display")) or text
            if system is not None or token is not None or display is not None:
                rows.tokens.append((code, system, token, display))
    if text is not None:
        rows.tokens.append((code, None, None, text))


def _emit_token_identifier(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is not dict:
        return
    system, token = _str_or_none(value.get("system")), _str_or_none(value.get("value"))
    if system is None and token is None:
        return
    kind = value.get("type")
    text = _text_or_none(kind.get("text")) if kind.__class__ is dict else None
    rows.tokens.append((code, system, token, text))


def _emit_token_contact(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is dict:
        token = _str_or_none(value.get("value"))
        if token is not None:
            rows.tokens.append((code, None, token, None))


def _emit_token_primitive(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is str and value:
        rows.tokens.append((code, None, value, None))
    elif value.__class__ is bool:
        rows.tokens.append((code, None, "true" if value else "false", None))


def _emit_reference(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is not dict:
        return
    text = value.get("reference")
    if text.__class__ is str:
        parsed = parse_reference(text)
        if parsed is not None:
            rows.references.append((code, *parsed))
    identifier = value.get("identifier")
    if identifier.__class__ is dict:
        system, token = _str_or_none(identifier.get("system")), _str_or_none(
            identifier.get("value")
        )
        if system is not None or token is not None:
            rows.tokens.append((code + ":identifier", system, token, None))


def _emit_reference_url(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is str and value:
        rows.references.append((code, None, None, value))


def _emit_reference_resource(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is dict:
        kind, ident = _str_or_none(value.get("resourceType")), _str_or_none(value.get("id"))
        if kind is not None and ident is not None:
            rows.references.append((code, kind, ident, None))


def _emit_date(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is str:
        low, high = _checked_range(code, value)
        rows.dates.append((code, low, high))


def _period_range(code: str, value: Any) -> tuple[int, int] | None:
    if value.__class__ is not dict:
        return None
    start, end = value.get("start"), value.get("end")
    if start.__class__ is not str and end.__class__ is not str:
        return None
    low = _checked_range(code, start)[0] if start.__class__ is str else MIN_DATE_US
    high = _checked_range(code, end)[1] if end.__class__ is str else MAX_DATE_US
    return low, high


def _emit_date_period(code: str, value: Any, rows: IndexRows) -> None:
    found = _period_range(code, value)
    if found is not None:
        rows.dates.append((code, *found))


def _emit_date_timing(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is not dict:
        return
    events = [e for e in value.get("event") or () if e.__class__ is str]
    if events:
        ranges = [_checked_range(code, e) for e in events]
        rows.dates.append((code, min(r[0] for r in ranges), max(r[1] for r in ranges)))
        return
    repeat = value.get("repeat")
    if repeat.__class__ is dict:
        _emit_date_period(code, repeat.get("boundsPeriod"), rows)


def _emit_quantity(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is not dict:
        return
    bounds = _number_bounds(value.get("value"))
    if bounds is None:
        return
    unit = _str_or_none(value.get("code")) or _str_or_none(value.get("unit"))
    rows.quantities.append((code, _str_or_none(value.get("system")), unit, *bounds))


def _emit_money(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is not dict:
        return
    bounds = _number_bounds(value.get("value"))
    if bounds is not None:
        rows.quantities.append((code, None, _str_or_none(value.get("currency")), *bounds))


def _range_bounds(value: Any) -> tuple[dict[str, Any], float, float, float] | None:
    """(a bound carrying the unit, value, low, high) of a Range; open ends are infinite."""
    if value.__class__ is not dict:
        return None
    low_q: Any = value.get("low")
    high_q: Any = value.get("high")
    low_v = low_q.get("value") if low_q.__class__ is dict else None
    high_v = high_q.get("value") if high_q.__class__ is dict else None
    low = _number_bounds(low_v)
    high = _number_bounds(high_v)
    if low is None and high is None:
        return None
    low_f = low[0] if low is not None else -math.inf
    high_f = high[0] if high is not None else math.inf
    if low is not None and high is not None:
        middle = (low_f + high_f) / 2
    else:
        middle = low_f if low is not None else high_f
    unit_from: dict[str, Any] = low_q if low is not None else high_q
    return unit_from, middle, low_f, high_f


def _emit_quantity_range(code: str, value: Any, rows: IndexRows) -> None:
    found = _range_bounds(value)
    if found is not None:
        bound, middle, low, high = found
        unit = _str_or_none(bound.get("code")) or _str_or_none(bound.get("unit"))
        rows.quantities.append((code, _str_or_none(bound.get("system")), unit, middle, low, high))


def _emit_number(code: str, value: Any, rows: IndexRows) -> None:
    bounds = _number_bounds(value)
    if bounds is not None:
        rows.numbers.append((code, *bounds))


def _emit_number_range(code: str, value: Any, rows: IndexRows) -> None:
    found = _range_bounds(value)
    if found is not None:
        rows.numbers.append((code, *found[1:]))


def _emit_uri(code: str, value: Any, rows: IndexRows) -> None:
    if value.__class__ is str and value:
        rows.uris.append((code, value))


def _emit_composite_row(code: str, value: Any, rows: IndexRows) -> None:
    rows.composites.append((code, *value))


def _extension_emitter(param_type: str) -> Emitter:
    """Index an Extension by its ``value[x]``, typed by the JSON suffix."""
    model = type_model()

    def emit(code: str, value: Any, rows: IndexRows) -> None:
        if value.__class__ is not dict:
            return
        for key, found in value.items():
            if key.startswith("value") and len(key) > 5:
                type_name = model.type_for_suffix(key[5:])
                inner = _emitter(param_type, type_name) if type_name else None
                if inner is not None:
                    inner(code, found, rows)
                return

    return emit


@cache
def _emitter(param_type: str, type_name: str) -> Emitter | None:
    """How a parameter of ``param_type`` indexes an element of ``type_name``; None: it doesn't."""
    if type_name == "Extension":
        return _extension_emitter(param_type)
    if param_type == "string":
        if type_name in _STRING_PRIMITIVES:
            return _emit_string
        if type_name == "HumanName":
            return _string_parts(_NAME_PARTS)
        if type_name == "Address":
            return _string_parts(_ADDRESS_PARTS)
        if type_name[:1].isupper() and type_name not in load().resource_types:
            return _emit_string_leaves
        return None
    if param_type == "token":
        return {
            "Coding": _emit_token_coding,
            "CodeableConcept": _emit_token_concept,
            "Identifier": _emit_token_identifier,
            "ContactPoint": _emit_token_contact,
            "boolean": _emit_token_primitive,
        }.get(type_name, _emit_token_primitive if type_name in _STRING_PRIMITIVES else None)
    if param_type == "reference":
        if type_name == "Reference":
            return _emit_reference
        if type_name in _URI_TYPES:
            return _emit_reference_url
        if type_name == "Resource" or type_name in load().resource_types:
            return _emit_reference_resource
        return None
    if param_type == "date":
        if type_name in _DATE_TYPES:
            return _emit_date
        return {"Period": _emit_date_period, "Timing": _emit_date_timing}.get(type_name)
    if param_type == "quantity":
        if type_name in _QUANTITY_TYPES:
            return _emit_quantity
        return {"Money": _emit_money, "Range": _emit_quantity_range}.get(type_name)
    if param_type == "number":
        if type_name in _NUMBER_TYPES:
            return _emit_number
        return _emit_number_range if type_name == "Range" else None
    if param_type == "uri":
        return _emit_uri if type_name in _URI_TYPES else None
    return None


# ---------------------------------------------------------------------------------------------
# Composites: component 1 (a token) crossed with component 2

ComponentValue = tuple[str | None, str | None, float | None, float | None, str | None]


def _second_component_values(param_type: str, scratch: IndexRows) -> list[ComponentValue]:
    if param_type == "token":
        return [(s, c, None, None, None) for _, s, c, _ in scratch.tokens if s or c]
    if param_type == "quantity":
        return [(s, c, low, high, None) for _, s, c, _, low, high in scratch.quantities]
    if param_type == "date":
        return [(None, None, float(low), float(high), None) for _, low, high in scratch.dates]
    if param_type == "string":
        return [(None, None, None, None, norm) for _, norm, _ in scratch.strings]
    if param_type == "number":
        return [(None, None, low, high, None) for _, _, low, high in scratch.numbers]
    if param_type == "uri":
        return [(None, uri, None, None, None) for _, uri in scratch.uris]
    return [(t, i, None, None, url) for _, t, i, url in scratch.references]


@dataclass(frozen=True, slots=True)
class _Component:
    param_type: str
    parts: tuple[tuple[Evaluator, Emitter], ...]

    def scratch(self, node: Any, root: dict[str, Any]) -> IndexRows:
        rows = IndexRows()
        focus = [node]
        for evaluate, emit in self.parts:
            for value in evaluate(focus, root):
                emit("", value, rows)
        return rows


def _composite_evaluator(base: Evaluator, first: _Component, second: _Component) -> Evaluator:
    def composite(focus: list[Any], root: dict[str, Any]) -> list[Any]:
        found: list[Any] = []
        for node in base(focus, root):
            codes = [(s, c) for _, s, c, _ in first.scratch(node, root).tokens if s or c]
            if not codes:
                continue
            values = _second_component_values(second.param_type, second.scratch(node, root))
            for system, token in codes:
                for value in values:
                    found.append((system, token, *value))
        return found

    return composite


# ---------------------------------------------------------------------------------------------
# Fallback: fhirpathpy for expressions outside the compiled subset

_RESOLVE_IS = re.compile(r"resolve\(\)\s+is\s+([A-Za-z]+)")


def _fallback_text(expression: str) -> str:
    # fhirpathpy has no resolve(); a reference "resolves to" Type when it names Type/...
    return _RESOLVE_IS.sub(
        r"(reference.startsWith('\1/') or reference.contains('/\1/'))", expression
    )


def _infer_type(node: Any, param_type: str) -> tuple[Any, str | None]:
    """(plain value, FHIR type name) for one fhirpathpy result."""
    from fhirpathpy.engine.nodes import ResourceNode

    model = type_model()
    if isinstance(node, ResourceNode):
        data = node.data
        path = node.path if isinstance(node.path, str) else ""
        named = model.canonical_type(path) if "." not in path else None
        if named is not None:
            return data, named
        node = data
    if node.__class__ is bool:
        return node, "boolean"
    if node.__class__ in (int, float) or isinstance(node, Decimal):
        return node, "decimal"
    if isinstance(node, str):
        by_param = {"date": "dateTime", "uri": "uri", "reference": "canonical",
                    "token": "code", "string": "string"}
        return str(node), by_param.get(param_type, "string")
    if node.__class__ is dict:
        if "resourceType" in node:
            return node, "Resource"
        if "url" in node and any(k.startswith("value") for k in node):
            return node, "Extension"
        if "reference" in node or "identifier" in node:
            return node, "Reference"
        if "coding" in node:
            return node, "CodeableConcept"
        if "start" in node or "end" in node:
            return node, "Period"
        if "value" in node and ("unit" in node or "code" in node or "system" in node):
            return node, "Quantity"
        if "code" in node:
            return node, "Coding"
        return node, "Element"
    return node, None


def _fallback_evaluator(expression: str, param_type: str, resource_type: str) -> Evaluator:
    """A fhirpathpy evaluator, tried once on an empty resource so bad text fails here."""
    import fhirpathpy
    from fhirpathpy.models import models

    compiled = fhirpathpy.compile(_fallback_text(expression), models["r4"], {"returnRawData": True})

    def evaluate(focus: list[Any], root: dict[str, Any]) -> list[Any]:
        try:
            found = compiled(root, None)
        except Exception as exc:  # fhirpathpy raises bare Exceptions
            raise SearchExpressionError(
                f"FHIRPath {expression!r} failed on {root.get('resourceType')}/"
                f"{root.get('id')}: {exc}"
            ) from exc
        return [_infer_type(node, param_type) for node in found]

    evaluate([], {"resourceType": resource_type})
    return evaluate


def _emit_inferred(param_type: str) -> Emitter:
    def emit(code: str, value: Any, rows: IndexRows) -> None:
        data, type_name = value
        inner = _emitter(param_type, type_name) if type_name else None
        if inner is not None:
            inner(code, data, rows)

    return emit


# ---------------------------------------------------------------------------------------------
# Compiling parameters

Route = Literal["fast", "fallback", "skipped"]
_NOT_INDEXED = frozenset({"_text", "_content", "_query", "_filter", "_list", "_has", "_type"})
_INDEXED_TYPES = frozenset({"number", "date", "string", "token", "reference", "composite",
                            "quantity", "uri"})

# (root key the entry needs, or None; evaluator over ([resource], resource); emitter)
Entry = tuple[str | None, Evaluator, Emitter]


@dataclass(frozen=True, slots=True)
class CompiledParam:
    """One search parameter of one resource type, ready to index resources."""

    param: SearchParam
    route: Route  # fast: compiled evaluator; fallback: fhirpathpy; skipped: not indexed
    reason: str  # why the parameter fell back or is skipped; "" on the fast path
    entries: tuple[Entry, ...] = ()

    def index(self, resource: dict[str, Any], rows: IndexRows) -> None:
        """Append this parameter's rows for ``resource`` to ``rows``."""
        focus = [resource]
        code = self.param.code
        for key, evaluate, emit in self.entries:
            if key is not None and key not in resource:
                continue
            for value in evaluate(focus, resource):
                emit(code, value, rows)


def _entries_for(branches: list[Branch], param_type: str) -> tuple[Entry, ...]:
    entries: list[Entry] = []
    for branch in branches:
        emit = _emitter(param_type, branch.type.name)
        if emit is not None:
            entries.append((branch.root_key, branch.evaluate, emit))
    return tuple(entries)


def _component(
    url: str, expression: str, resource_type: str, focus: ElementType
) -> _Component:
    definition = load().search_params_by_url.get(url)
    if definition is None:
        raise UnsupportedExpressionError(f"composite component {url} is not a known parameter")
    param_type = str(definition["type"])
    branches = compile_expression(expression, resource_type, focus)
    parts = tuple((evaluate, emit) for _, evaluate, emit in _entries_for(branches, param_type))
    return _Component(param_type, parts)


def _compile_composite(param: SearchParam, expression: str) -> CompiledParam:
    if len(param.components) < 2:
        return CompiledParam(param, "skipped", "composite with fewer than two components")
    first_def = load().search_params_by_url.get(param.components[0][0], {})
    if first_def.get("type") != "token":
        return CompiledParam(param, "skipped", "composite whose first component is not a token")
    entries: list[Entry] = []
    for base in compile_expression(expression, param.resource_type):
        first = _component(*param.components[0], param.resource_type, base.type)
        second = _component(*param.components[1], param.resource_type, base.type)
        evaluate = _composite_evaluator(base.evaluate, first, second)
        entries.append((base.root_key, evaluate, _emit_composite_row))
    return CompiledParam(param, "fast", "", tuple(entries))


def compile_param(param: SearchParam) -> CompiledParam:
    """Compile one search parameter; never raises for a parameter with a bad expression."""
    expression = param.expression
    if param.type not in _INDEXED_TYPES:
        return CompiledParam(param, "skipped", f"{param.type} parameters are not indexed")
    if param.code in _NOT_INDEXED:
        return CompiledParam(param, "skipped", f"{param.code} is answered without an index")
    if not expression:
        return CompiledParam(param, "skipped", "no FHIRPath expression")
    try:
        if param.type == "composite":
            return _compile_composite(param, expression)
        branches = compile_expression(expression, param.resource_type)
        return CompiledParam(param, "fast", "", _entries_for(branches, param.type))
    except (UnsupportedExpressionError, FhirPathSyntaxError) as exc:
        reason = str(exc)
    if param.type == "composite":
        return CompiledParam(param, "skipped", f"composite outside the compiled subset: {reason}")
    try:
        evaluate = _fallback_evaluator(expression, param.type, param.resource_type)
    except Exception as exc:  # fhirpathpy raises bare Exceptions on bad text
        # Reported through the route and reason (compiled_params), not raised: one bad
        # definition must not stop every write of its resource type.
        return CompiledParam(param, "skipped", f"neither evaluator reads it: {reason}; {exc}")
    return CompiledParam(
        param, "fallback", reason, ((None, evaluate, _emit_inferred(param.type)),)
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    params: tuple[CompiledParam, ...]
    by_key: dict[str, tuple[tuple[str, Evaluator, Emitter], ...]]
    always: tuple[tuple[str, Evaluator, Emitter], ...]


_PLANS: dict[str, _Plan] = {}


def _plan(resource_type: str) -> _Plan:
    plan = _PLANS.get(resource_type)
    if plan is not None:
        return plan
    definitions = load()
    if resource_type not in definitions.resource_types:
        raise UnknownResourceTypeError(f"{resource_type!r} is not an R4 resource type")
    compiled = tuple(compile_param(p) for p in definitions.params_for(resource_type).values())
    by_key: dict[str, list[tuple[str, Evaluator, Emitter]]] = {}
    always: list[tuple[str, Evaluator, Emitter]] = []
    for param in compiled:
        for key, evaluate, emit in param.entries:
            target = always if key is None else by_key.setdefault(key, [])
            target.append((param.param.code, evaluate, emit))
    plan = _Plan(compiled, {k: tuple(v) for k, v in by_key.items()}, tuple(always))
    _PLANS[resource_type] = plan
    return plan


def compiled_params(resource_type: str) -> tuple[CompiledParam, ...]:
    """Every search parameter of ``resource_type`` with how it is indexed."""
    return _plan(resource_type).params


def searchable_codes(resource_type: str) -> frozenset[str]:
    """The parameter codes of a type that the index can answer (not skipped)."""
    return frozenset(c.param.code for c in compiled_params(resource_type) if c.route != "skipped")


def extract(resource: dict[str, Any]) -> IndexRows:
    """The search-index rows of one resource under the R4 search parameters of its type."""
    resource_type = resource.get("resourceType") if resource.__class__ is dict else None
    if resource_type.__class__ is not str:
        raise UnknownResourceTypeError(f"a resource needs a resourceType, got {resource!r:.80}")
    plan = _PLANS.get(resource_type) or _plan(resource_type)
    rows = IndexRows()
    focus = [resource]
    by_key = plan.by_key
    for key in resource:
        entries = by_key.get(key)
        if entries is None:
            continue
        for code, evaluate, emit in entries:
            for value in evaluate(focus, resource):
                emit(code, value, rows)
    for code, evaluate, emit in plan.always:
        for value in evaluate(focus, resource):
            emit(code, value, rows)
    return rows
