"""FHIR search: parse query parameters into SQL over the search index, run them, page them."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.engine import Connection

from chartkeeper.fhir import indexing
from chartkeeper.fhir.definitions import SearchParam
from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.store import schema
from chartkeeper.store.errors import InvalidRequest

R = schema.resource
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = {
    "_count", "_offset", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
    "_format", "_pretty", "_include:iterate", "_revinclude:iterate",
}
COMMON_PARAMS = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
TOP = "\U0010ffff"
MAX_INCLUDE_DEPTH = 4  # the first round plus three :iterate rounds


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str  # "*" for every reference parameter
    target_type: str | None = None
    iterate: bool = False


@dataclass
class SearchQuery:
    resource_type: str | None
    conditions: list[Condition] = field(default_factory=list)
    count: int | None = None
    offset: int = 0
    sort: list[tuple[SearchParam | str, bool]] = field(default_factory=list)  # (param, desc)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "accurate"
    types: list[str] | None = None  # _type for system-level search


@dataclass
class SearchPage:
    total: int | None
    matches: list[dict[str, Any]]
    included: list[dict[str, Any]]
    offset: int
    count: int


def split_unescaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash, then unescape ``\\,`` ``\\$`` ``\\|``."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            current.append(value[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([,$|\\])", r"\1", value)


def _split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-+."):
        return value[:2], value[2:]
    return "eq", value


def _params_for(resource_type: str | None) -> dict[str, SearchParam]:
    defs = load_definitions()
    if resource_type is None:
        base = defs.params_for("Patient")
        return {code: base[code] for code in COMMON_PARAMS if code in base}
    return defs.params_for(resource_type)


def _lookup(resource_type: str | None, code: str) -> SearchParam:
    params = _params_for(resource_type)
    param = params.get(code)
    searchable = code == "_id" or (
        param is not None and code in indexing.searchable_codes(param.resource_type))
    if param is None or not searchable:
        where = resource_type or "a system-level search"
        raise InvalidRequest(f"Unknown or unsupported search parameter '{code}' for {where}")
    return param


def _index_subquery(table: Any, resource_type: str | None, param: str,
                    condition: ColumnElement[bool]) -> Select[Any]:
    conds = [table.c.param == param, condition]
    if resource_type is not None:
        conds.insert(0, table.c.resource_type == resource_type)
    return select(table.c.resource_pk).where(*conds)


def _prefix_match(column: Any, value: str) -> ColumnElement[bool]:
    return and_(column >= value, column < value + TOP)


def _string_condition(modifier: str | None, value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_string
    if modifier == "exact":
        return t, t.c.value_exact == value[:255]
    normalized = indexing.normalize_string(value)[:255]
    if modifier == "contains":
        return t, t.c.value_norm.contains(normalized, autoescape=True)
    if modifier is None:
        return t, _prefix_match(t.c.value_norm, normalized)
    raise InvalidRequest(f"Modifier ':{modifier}' is not supported on string parameters")


def _token_value_condition(table: Any, value: str, system_col: Any, code_col: Any
                           ) -> ColumnElement[bool]:
    parts = split_unescaped(value, "|")
    if len(parts) == 1:
        return code_col == unescape(parts[0])  # type: ignore[no-any-return]
    if len(parts) != 2:
        raise InvalidRequest(f"Token value '{value}' has more than one '|'")
    system, code = unescape(parts[0]), unescape(parts[1])
    if system == "":
        return and_(system_col.is_(None), code_col == code)
    if code == "":
        return system_col == system  # type: ignore[no-any-return]
    return and_(system_col == system, code_col == code)


def _token_condition(modifier: str | None, value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_token
    if modifier == "text":
        return t, _prefix_match(t.c.text, indexing.normalize_string(value)[:255])
    if modifier in (None, "not"):
        return t, _token_value_condition(t, value, t.c.system, t.c.code)
    raise InvalidRequest(f"Modifier ':{modifier}' is not supported on token parameters")


def _number_bounds(text: str) -> tuple[float, float, float]:
    try:
        number = float(text)
    except ValueError as exc:
        raise InvalidRequest(f"'{text}' is not a number") from exc
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    half = 0.5 * 10 ** (exponent - decimals)
    return number, number - half, number + half


def _ordered_condition(prefix: str, value_col: Any, low: float, high: float, number: float
                       ) -> ColumnElement[bool]:
    if prefix == "eq":
        return and_(value_col >= low, value_col < high)
    if prefix == "ne":
        return or_(value_col < low, value_col >= high)
    if prefix == "gt":
        return value_col > number  # type: ignore[no-any-return]
    if prefix == "lt":
        return value_col < number  # type: ignore[no-any-return]
    if prefix == "ge":
        return value_col >= number  # type: ignore[no-any-return]
    if prefix == "le":
        return value_col <= number  # type: ignore[no-any-return]
    if prefix == "sa":
        return value_col > high  # type: ignore[no-any-return]
    if prefix == "eb":
        return value_col < low  # type: ignore[no-any-return]
    # ap: within 10% of the value
    margin = abs(number) * 0.1
    return and_(value_col >= number - margin, value_col <= number + margin)


def _number_condition(value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_number
    prefix, text = _split_prefix(value)
    number, low, high = _number_bounds(text)
    return t, _ordered_condition(prefix, t.c.value, low, high, number)


def _quantity_condition(value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_quantity
    parts = split_unescaped(value, "|")
    if len(parts) not in (1, 3):
        raise InvalidRequest(
            f"Quantity value '{value}' must be [prefix]number or [prefix]number|system|code"
        )
    prefix, text = _split_prefix(parts[0])
    number, low, high = _number_bounds(text)
    conds = [_ordered_condition(prefix, t.c.value, low, high, number)]
    if len(parts) == 3:
        system, code = unescape(parts[1]), unescape(parts[2])
        if system:
            conds.append(t.c.system == system)
        if code:
            conds.append(t.c.code == code)
    return t, and_(*conds)


def _date_condition(value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_date
    prefix, text = _split_prefix(value)
    try:
        low, high = indexing.date_range(text)
    except ValueError as exc:
        raise InvalidRequest(f"'{text}' is not a valid FHIR date: {exc}") from exc
    if prefix == "eq":
        # low <= high on every row, so the value's range bounds low on both sides: the
        # redundant upper bound lets the (param, low) index scan just that range.
        cond = and_(t.c.low >= low, t.c.low <= high, t.c.high <= high)
    elif prefix == "ne":
        cond = or_(t.c.low < low, t.c.high > high)
    elif prefix == "gt":
        cond = t.c.high > high
    elif prefix == "lt":
        cond = t.c.low < low
    elif prefix == "ge":
        cond = t.c.high >= low
    elif prefix == "le":
        cond = t.c.low <= high
    elif prefix == "sa":
        cond = t.c.low > high
    elif prefix == "eb":
        cond = t.c.high < low
    else:  # ap: overlap with the value widened by 10% of its distance from now
        now = int(time.time() * 1_000_000)
        gap = int(abs(now - low) * 0.1)
        cond = and_(t.c.low <= high + gap, t.c.high >= low - gap)
    return t, cond


def _uri_condition(modifier: str | None, value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_uri
    if modifier is None:
        return t, t.c.uri == value
    if modifier == "below":
        return t, _prefix_match(t.c.uri, value)
    raise InvalidRequest(f"Modifier ':{modifier}' is not supported on uri parameters")


def _parse_reference_value(value: str, type_modifier: str | None, param: SearchParam
                           ) -> tuple[str | None, str | None, str | None]:
    """(target_type, target_id, url) a reference search value asks for."""
    value = value.split("/_history/")[0]
    if "://" in value or value.startswith("urn:"):
        tail = value.rstrip("/").split("/")
        types = load_definitions().resource_types
        if len(tail) >= 2 and tail[-2] in types:
            return tail[-2], tail[-1], value
        return None, None, value
    if "/" in value:
        rtype, _, rid = value.partition("/")
        if rtype not in load_definitions().resource_types or not rid:
            raise InvalidRequest(f"Reference value '{value}' is not Type/id")
        if type_modifier and type_modifier != rtype:
            raise InvalidRequest(f"Reference value '{value}' contradicts modifier :{type_modifier}")
        return rtype, rid, None
    if type_modifier:
        return type_modifier, value, None
    if len(param.targets) == 1:
        return param.targets[0], value, None
    return None, value, None


def _reference_condition(param: SearchParam, modifier: str | None, value: str
                         ) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_reference
    rtype, rid, url = _parse_reference_value(value, modifier, param)
    if rid is None:
        return t, t.c.url == url
    cond = t.c.target_id == rid
    if rtype is not None:
        cond = and_(cond, t.c.target_type == rtype)
    if url is not None:
        cond = or_(cond, t.c.url == url)
    return t, cond


def _composite_condition(param: SearchParam, value: str) -> tuple[Any, ColumnElement[bool]]:
    t = schema.idx_composite
    parts = split_unescaped(value, "$")
    if len(parts) != 2 or len(param.components) != 2:
        raise InvalidRequest(
            f"Composite parameter '{param.code}' takes two values joined by '$', got '{value}'"
        )
    by_url = load_definitions().search_params_by_url
    second_type = by_url.get(param.components[1][0], {}).get("type")
    cond1 = _token_value_condition(t, parts[0], t.c.c1_system, t.c.c1_code)
    second = parts[1]
    if second_type == "token":
        cond2 = _token_value_condition(t, second, t.c.c2_system, t.c.c2_code)
    elif second_type in ("quantity", "number"):
        pieces = split_unescaped(second, "|")
        prefix, text = _split_prefix(pieces[0])
        number, low, high = _number_bounds(text)
        # c2_low/c2_high bracket the stored value; compare with its midpoint.
        midpoint = (t.c.c2_low + t.c.c2_high) / 2
        cond2 = _ordered_condition(prefix, midpoint, low, high, number)
        if len(pieces) == 3 and pieces[2]:
            cond2 = and_(cond2, t.c.c2_code == unescape(pieces[2]))
        if len(pieces) == 3 and pieces[1]:
            cond2 = and_(cond2, t.c.c2_system == unescape(pieces[1]))
    elif second_type == "date":
        prefix, text = _split_prefix(second)
        try:
            low, high = indexing.date_range(text)
        except ValueError as exc:
            raise InvalidRequest(f"'{text}' is not a valid FHIR date: {exc}") from exc
        cond2 = and_(t.c.c2_low >= low, t.c.c2_high <= high) if prefix == "eq" else \
            _ordered_condition(prefix, t.c.c2_low, low, high, low)
    elif second_type == "string":
        cond2 = _prefix_match(t.c.c2_text, indexing.normalize_string(unescape(second)))
    else:
        raise InvalidRequest(f"Composite parameter '{param.code}' is not searchable here")
    return t, and_(cond1, cond2)


TABLE_FOR_TYPE = {
    "string": schema.idx_string, "token": schema.idx_token, "date": schema.idx_date,
    "reference": schema.idx_reference, "quantity": schema.idx_quantity,
    "number": schema.idx_number, "uri": schema.idx_uri, "composite": schema.idx_composite,
}


def _value_condition(param: SearchParam, modifier: str | None, value: str
                     ) -> tuple[Any, ColumnElement[bool]]:
    if param.type == "string":
        return _string_condition(modifier, unescape(value))
    if param.type == "token":
        return _token_condition(modifier, value)
    if param.type == "date":
        if modifier:
            raise InvalidRequest(f"Modifier ':{modifier}' is not supported on date parameters")
        return _date_condition(value)
    if param.type == "number":
        return _number_condition(value)
    if param.type == "quantity":
        return _quantity_condition(value)
    if param.type == "uri":
        return _uri_condition(modifier, unescape(value))
    if param.type == "reference":
        return _reference_condition(param, modifier, unescape(value))
    if param.type == "composite":
        return _composite_condition(param, value)
    raise InvalidRequest(f"Search parameter '{param.code}' of type {param.type} is not supported")


RANK = {"reference": 1, "token": 2, "uri": 3, "composite": 3, "string": 4, "number": 6,
        "quantity": 6, "date": 7}


@dataclass(frozen=True)
class Membership:
    """"resource.pk has index rows matching ``subquery``": usable as IN or as EXISTS.

    The most selective membership of a search drives the query as ``pk IN (...)``; the others
    become correlated EXISTS probes on the few index rows of each candidate, so a broad date
    range never materialises hundreds of thousands of rows.
    """

    table: Any
    subquery: Select[Any]
    negate: bool
    rank: int

    def as_in(self) -> ColumnElement[bool]:
        return R.c.pk.not_in(self.subquery) if self.negate else R.c.pk.in_(self.subquery)

    def as_exists(self) -> ColumnElement[bool]:
        # Probe this candidate's own index rows; without the hint SQLite (lacking statistics)
        # may walk every row with the same code instead.
        probe = exists(
            self.subquery.where(self.table.c.resource_pk == R.c.pk)
            .with_hint(self.table, f"INDEXED BY ix_{self.table.name}_pk", "sqlite")
        )
        return not_(probe) if self.negate else probe


Condition = ColumnElement[bool] | Membership


def as_column(condition: Condition) -> ColumnElement[bool]:
    return condition.as_in() if isinstance(condition, Membership) else condition


def _pk_condition(resource_type: str | None, code: str, modifier: str | None, raw: str
                  ) -> Condition:
    """The condition on resource.pk for one parameter occurrence (values OR'ed)."""
    if code.startswith("_has:"):
        return _has_condition(resource_type, code, raw)
    chain_rest = None
    if "." in code:
        code, _, chain_rest = code.partition(".")
        if ":" in code:
            code, _, modifier = code.partition(":")
    param = _lookup(resource_type, code)
    if chain_rest is not None:
        return _chain_condition(resource_type, param, modifier, chain_rest, raw)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise InvalidRequest(f"':missing' takes true or false, got '{raw}'")
        table = TABLE_FOR_TYPE.get(param.type)
        if table is None:
            raise InvalidRequest(f"':missing' is not supported on '{code}'")
        present = _index_subquery(table, resource_type, code, true())
        return Membership(table, present, negate=raw == "true", rank=8)
    values = split_unescaped(raw, ",")
    if any(v == "" for v in values):
        raise InvalidRequest(f"Search parameter '{code}' has an empty value")
    if code == "_id":
        if modifier not in (None, "not"):
            raise InvalidRequest(f"Modifier ':{modifier}' is not supported on _id")
        ids = [unescape(v) for v in values]
        cond = R.c.resource_id.in_(ids)
        return not_(cond) if modifier == "not" else cond
    if param.type == "reference" and modifier == "identifier":
        t = schema.idx_token
        identifiers = [_token_value_condition(t, v, t.c.system, t.c.code) for v in values]
        return Membership(t, _index_subquery(t, resource_type, f"{code}:identifier",
                                             or_(*identifiers)), negate=False, rank=2)
    if param.type == "reference" and modifier is not None and \
            modifier not in load_definitions().resource_types:
        raise InvalidRequest(f"Modifier ':{modifier}' is not supported on reference parameters")
    table = None
    alternatives: list[ColumnElement[bool]] = []
    for v in values:
        table, value_cond = _value_condition(param, modifier, v)
        alternatives.append(value_cond)
    subquery = _index_subquery(table, resource_type, code, or_(*alternatives))
    rank = RANK.get(param.type, 5) + (5 if modifier in ("contains", "text") else 0)
    return Membership(table, subquery, negate=modifier == "not", rank=rank)


def _chain_condition(resource_type: str | None, param: SearchParam, type_modifier: str | None,
                     rest: str, raw: str) -> ColumnElement[bool]:
    if param.type != "reference":
        raise InvalidRequest(f"'{param.code}' is not a reference parameter and cannot be chained")
    if "." in rest.split(":")[0]:
        raise InvalidRequest("Chained parameters are supported one level deep")
    inner_code, _, inner_modifier = rest.partition(":")
    targets = [type_modifier] if type_modifier else list(param.targets)
    targets = [t for t in targets if inner_code in load_definitions().params_for(t)]
    if not targets:
        raise InvalidRequest(
            f"No target type of '{param.code}' has a search parameter '{inner_code}'"
        )
    t = schema.idx_reference
    alternatives = []
    for target in targets:
        inner = as_column(_pk_condition(target, inner_code, inner_modifier or None, raw))
        target_ids = select(R.c.resource_id).where(
            R.c.resource_type == target, R.c.deleted == false(), inner
        )
        alternatives.append(and_(t.c.target_type == target, t.c.target_id.in_(target_ids)))
    return R.c.pk.in_(_index_subquery(t, resource_type, param.code, or_(*alternatives)))


def _has_condition(resource_type: str | None, code: str, raw: str) -> ColumnElement[bool]:
    parts = code.split(":")
    # _has:Observation:patient:code  (a further _has nests)
    if len(parts) < 4 or resource_type is None:
        raise InvalidRequest(f"'{code}' must be _has:Type:referenceParam:searchParam")
    _, source_type, ref_param, *rest = parts
    if source_type not in load_definitions().resource_types:
        raise InvalidRequest(f"Unknown resource type '{source_type}' in '{code}'")
    ref = _lookup(source_type, ref_param)
    if ref.type != "reference":
        raise InvalidRequest(f"'{ref_param}' of {source_type} is not a reference parameter")
    inner_code = ":".join(rest)
    modifier = None
    if not inner_code.startswith("_has:") and ":" in inner_code:
        inner_code, _, modifier = inner_code.partition(":")
    inner = as_column(_pk_condition(source_type, inner_code, modifier, raw))
    t = schema.idx_reference
    source_pks = select(R.c.pk).where(R.c.resource_type == source_type, inner)
    target_ids = select(t.c.target_id).where(
        t.c.resource_type == source_type, t.c.param == ref_param,
        t.c.target_type == resource_type, t.c.resource_pk.in_(source_pks),
    )
    return R.c.resource_id.in_(target_ids)


def _parse_include(value: str, iterate: bool) -> Include:
    if value == "*":
        return Include("*", "*", iterate=iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InvalidRequest(f"'{value}' must be SourceType:searchParam[:TargetType]")
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in load_definitions().resource_types:
        raise InvalidRequest(f"Unknown resource type '{source}' in include '{value}'")
    if param != "*":
        sp = _lookup(source, param)
        if sp.type != "reference":
            raise InvalidRequest(f"'{param}' of {source} is not a reference parameter")
    if target is not None and target not in load_definitions().resource_types:
        raise InvalidRequest(f"Unknown target type '{target}' in include '{value}'")
    return Include(source, param, target, iterate)


MAX_PAGING_INT = 1_000_000_000  # _count and _offset above this are refused, not overflowed


def parse_int(name: str, value: str, minimum: int = 0, maximum: int = MAX_PAGING_INT) -> int:
    """A paging integer (ASCII digits only) within bounds, or InvalidRequest (400)."""
    if not value.isascii() or not value.isdigit() or not minimum <= int(value) <= maximum:
        raise InvalidRequest(f"{name} must be an integer from {minimum} to {maximum}, "
                             f"got '{value[:40]}'")
    return int(value)


def parse_query(resource_type: str | None, params: Sequence[tuple[str, str]]) -> SearchQuery:
    """Parse FHIR search parameters; raises InvalidRequest naming the offending parameter."""
    query = SearchQuery(resource_type)
    for name, value in params:
        if name in ("_format", "_pretty"):
            continue
        if name == "_count":
            query.count = parse_int("_count", value, 0)
        elif name == "_offset":
            query.offset = parse_int("_offset", value, 0)
        elif name == "_sort":
            for item in value.split(","):
                desc = item.startswith("-")
                code = item.lstrip("-")
                if code == "_lastUpdated" or code == "_id":
                    query.sort.append((code, desc))
                else:
                    sp = _lookup(resource_type, code)
                    if sp.type not in TABLE_FOR_TYPE or sp.type == "composite":
                        raise InvalidRequest(f"Cannot sort by '{code}' ({sp.type})")
                    query.sort.append((sp, desc))
        elif name in ("_include", "_include:iterate"):
            query.includes.append(_parse_include(value, name.endswith(":iterate")))
        elif name in ("_revinclude", "_revinclude:iterate"):
            query.revincludes.append(_parse_include(value, name.endswith(":iterate")))
        elif name == "_summary":
            if value not in ("true", "false", "text", "data", "count"):
                raise InvalidRequest(
                    f"_summary must be true, false, text, data or count: '{value}'")
            query.summary = value
        elif name == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise InvalidRequest(f"_total must be none, estimate or accurate: '{value}'")
            query.total = value
        elif name == "_type" and resource_type is None:
            types = value.split(",")
            for t in types:
                if t not in load_definitions().resource_types:
                    raise InvalidRequest(f"Unknown resource type '{t}' in _type")
            query.types = (query.types or []) + types
        else:
            code, modifier = name, None
            if not name.startswith("_has:") and "." not in name and ":" in name:
                code, _, modifier = name.partition(":")
            query.conditions.append(_pk_condition(resource_type, code, modifier, value))
    return query


def _sort_expression(resource_type: str | None, param: SearchParam | str, desc: bool) -> Any:
    if param == "_id":
        return R.c.resource_id
    if param == "_lastUpdated":
        return R.c.last_updated
    assert isinstance(param, SearchParam)
    table = TABLE_FOR_TYPE[param.type]
    column = {
        "string": "value_norm", "token": "code", "date": "high" if desc else "low",
        "reference": "target_id", "quantity": "value", "number": "value", "uri": "uri",
    }[param.type]
    aggregate = func.max if desc else func.min
    return (
        select(aggregate(table.c[column]))
        .where(table.c.resource_pk == R.c.pk, table.c.param == param.code)
        .scalar_subquery()
    )


def _base_conditions(query: SearchQuery) -> tuple[list[ColumnElement[bool]], bool]:
    """The WHERE clause, and whether an index membership drives it (pk IN ...)."""
    conds: list[ColumnElement[bool]] = [R.c.deleted == false()]
    if query.resource_type is not None:
        conds.append(R.c.resource_type == query.resource_type)
    if query.types:
        conds.append(R.c.resource_type.in_(query.types))
    memberships = sorted((c for c in query.conditions if isinstance(c, Membership)),
                         key=lambda m: (m.negate, m.rank))
    driver_used = False
    for membership in memberships:
        if not driver_used and not membership.negate:
            conds.append(membership.as_in())
            driver_used = True
        else:
            conds.append(membership.as_exists())
    conds.extend(c for c in query.conditions if not isinstance(c, Membership))
    return conds, driver_used


def restrict_to_patient(query: SearchQuery, patient_id: str,
                        params: dict[str, list[str]] | frozenset[str] | list[str]) -> None:
    """AND the search with "in the compartment of Patient/``patient_id``".

    ``params`` are the parameters that place the searched type in a Patient compartment
    (from the CompartmentDefinition). The condition ranks first, so a patient's few hundred
    resources drive the query rather than the other parameters.
    """
    rtype = query.resource_type
    if rtype == "Patient":
        query.conditions.append(R.c.resource_id == patient_id)
        return
    ref = schema.idx_reference
    subquery = select(ref.c.resource_pk).where(
        ref.c.target_id == patient_id, ref.c.target_type == "Patient",
        ref.c.resource_type == rtype, ref.c.param.in_(sorted(params)))
    query.conditions.append(Membership(ref, subquery, negate=False, rank=0))


def _only_membership(query: SearchQuery) -> Membership | None:
    """The one positive index membership of a typed search that has nothing else, if so."""
    if query.resource_type is None or query.types or len(query.conditions) != 1:
        return None
    (condition,) = query.conditions
    if isinstance(condition, Membership) and not condition.negate:
        return condition
    return None


def run_search(conn: Connection, resource_type: str | None, query: SearchQuery,
               default_count: int = 50, max_count: int = 1000) -> SearchPage:
    if conn.dialect.name == "postgresql":
        # psycopg prepares a statement after five runs, and PostgreSQL may then switch to a
        # generic plan that ignores the searched values (a patient's 60 observations became a
        # hash join over millions of index rows). Plan each search for its values.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    conds, driven = _base_conditions(query)
    # With a pk IN (...) driver, look resources up by rowid rather than scanning a type.
    hint = "NOT INDEXED" if driven else ""
    count = min(query.count if query.count is not None else default_count, max_count)
    only = _only_membership(query)
    total: int | None = None
    if query.total != "none" or query.summary == "count" or count == 0:
        if only is not None:
            # Index rows exist only for current, undeleted resources: count them alone.
            counted = select(func.count()).select_from(only.subquery.distinct().subquery())
        else:
            counted = select(func.count()).select_from(R).where(*conds).with_hint(
                R, hint, "sqlite")
        total = int(conn.execute(counted).scalar() or 0)
    if query.summary == "count" or count == 0:
        return SearchPage(total, [], [], query.offset, count)
    order = []
    for param, desc in query.sort:
        expr = _sort_expression(resource_type, param, desc)
        order.append(expr.desc().nulls_last() if desc else expr.asc().nulls_last())
    order.append(R.c.pk)
    offset = query.offset
    if only is not None and not query.sort:
        # One parameter in the default order: page through the index, then fetch that page.
        conds = [R.c.pk.in_(only.subquery.distinct().order_by(only.table.c.resource_pk)
                            .limit(count).offset(query.offset))]
        offset = 0
    rows = conn.execute(
        select(R.c.pk, R.c.resource_type, R.c.resource_id, R.c.content)
        .where(*conds).with_hint(R, hint, "sqlite")
        .order_by(*order).limit(count).offset(offset)
    ).all()
    matches = [orjson.loads(r.content) for r in rows]
    included = _includes(conn, query, [(r.pk, r.resource_type, r.resource_id) for r in rows])
    return SearchPage(total, matches, included, query.offset, count)


def _includes(conn: Connection, query: SearchQuery, found: list[tuple[int, str, str]]
              ) -> list[dict[str, Any]]:
    """_include and _revinclude; the ``:iterate`` ones are applied again to what they added."""
    if not found or not (query.includes or query.revincludes):
        return []
    seen = {(rtype, rid) for _, rtype, rid in found}
    included: list[dict[str, Any]] = []
    frontier = found
    for depth in range(MAX_INCLUDE_DEPTH):
        includes = [i for i in query.includes if depth == 0 or i.iterate]
        revincludes = [i for i in query.revincludes if depth == 0 or i.iterate]
        if not frontier or not (includes or revincludes):
            break
        added = _include_round(conn, includes, revincludes, frontier, seen)
        included.extend(orjson.loads(content) for _, _, _, content in added)
        frontier = [(pk, rtype, rid) for pk, rtype, rid, _ in added]
    return included


def _include_round(conn: Connection, includes: list[Include], revincludes: list[Include],
                   found: list[tuple[int, str, str]], seen: set[tuple[str, str]]
                   ) -> list[tuple[int, str, str, str]]:
    t = schema.idx_reference
    pks = [pk for pk, _, _ in found]
    wanted: list[tuple[str, str]] = []
    for inc in includes:
        conds: list[ColumnElement[bool]] = [
            t.c.resource_pk.in_(pks), t.c.target_id.is_not(None), t.c.target_type.is_not(None)]
        if inc.source_type != "*":
            conds.append(t.c.resource_type == inc.source_type)
        if inc.param != "*":
            conds.append(t.c.param == inc.param)
        if inc.target_type:
            conds.append(t.c.target_type == inc.target_type)
        for target_type, target_id in conn.execute(select(t.c.target_type, t.c.target_id)
                                                   .where(*conds).distinct()):
            if (target_type, target_id) not in seen:
                seen.add((target_type, target_id))
                wanted.append((target_type, target_id))
    added: list[tuple[int, str, str, str]] = []
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(R.c.pk, R.c.resource_type, R.c.resource_id, R.c.content).where(
                tuple_(R.c.resource_type, R.c.resource_id).in_(wanted[start:start + 500]),
                R.c.deleted == false())
        ).all()
        added.extend((r.pk, r.resource_type, r.resource_id, r.content) for r in rows)
    found_keys = [(rtype, rid) for _, rtype, rid in found]
    for inc in revincludes:
        rev_conds: list[ColumnElement[bool]] = [
            tuple_(t.c.target_type, t.c.target_id).in_(found_keys)]
        if inc.source_type != "*":
            rev_conds.append(t.c.resource_type == inc.source_type)
        if inc.param != "*":
            rev_conds.append(t.c.param == inc.param)
        rows = conn.execute(
            select(R.c.pk, R.c.resource_type, R.c.resource_id, R.c.content).where(
                R.c.pk.in_(select(t.c.resource_pk).where(*rev_conds)), R.c.deleted == false())
        ).all()
        for r in rows:
            if (r.resource_type, r.resource_id) not in seen:
                seen.add((r.resource_type, r.resource_id))
                added.append((r.pk, r.resource_type, r.resource_id, r.content))
    return added
