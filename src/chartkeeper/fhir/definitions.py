"""The compiled FHIR R4 definitions: structure definitions, search parameters, compartments."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from chartkeeper.fhir.package import COMPILED_PATH


class DefinitionsMissingError(RuntimeError):
    """The compiled definitions file has not been built (run ``make`` or the package module)."""


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    resource_type: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    expression: str | None  # FHIRPath restricted to this resource type; None if not indexable
    url: str
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # (definition url, relative expression)
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()


@dataclass
class Definitions:
    fhir_version: str
    structure_definitions: dict[str, dict[str, Any]]
    search_params: dict[str, dict[str, SearchParam]]  # resource type -> code -> param
    search_params_by_url: dict[str, dict[str, Any]]
    compartments: dict[str, dict[str, list[str]]]
    resource_types: frozenset[str] = field(default_factory=frozenset)

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        return self.search_params.get(resource_type, {})


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on top-level ``|`` (outside parentheses and strings)."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _leading_type(part: str) -> str:
    text = part.lstrip("(").strip()
    head = ""
    for ch in text:
        if ch.isalnum() or ch == "_":
            head += ch
        else:
            break
    return head


def expression_for_type(expression: str, resource_type: str, bases: list[str]) -> str | None:
    """Keep the parts of a multi-base expression that start at ``resource_type``."""
    parts = split_union(expression)
    own = [
        p for p in parts
        if _leading_type(p) == resource_type or _leading_type(p) in ("Resource", "DomainResource")
    ]
    if own:
        return " | ".join(own)
    if len(bases) == 1:
        return expression
    return None


@cache
def load() -> Definitions:
    """Load the compiled definitions once per process."""
    if not COMPILED_PATH.exists():
        raise DefinitionsMissingError(
            f"{COMPILED_PATH} is missing: run `python -m chartkeeper.fhir.package` (make does this)"
        )
    with gzip.open(COMPILED_PATH, "rb") as fh:
        raw = json.loads(fh.read())
    sds: dict[str, dict[str, Any]] = raw["structureDefinitions"]
    resource_types = frozenset(
        name for name, sd in sds.items() if sd["kind"] == "resource" and not sd["abstract"]
    )
    by_type: dict[str, dict[str, SearchParam]] = {}
    by_url: dict[str, dict[str, Any]] = {}
    for sp in raw["searchParameters"]:
        by_url[sp["url"]] = sp
    for sp in raw["searchParameters"]:
        if "base" not in sp:
            continue  # a few extension parameters in the package name no base: not applicable
        bases = list(sp["base"])
        expanded = sorted(resource_types) if bases == ["Resource"] or bases == ["DomainResource"] \
            else bases
        for rtype in expanded:
            expr = sp.get("expression")
            type_expr = expression_for_type(expr, rtype, bases) if expr else None
            components: tuple[tuple[str, str], ...] = tuple(
                (c["definition"], c["expression"]) for c in sp.get("component", [])
            )
            existing = by_type.get(rtype, {}).get(sp["code"])
            if existing is not None and "-extensions-" not in existing.url:
                continue  # core parameters win over extension parameters with the same code
            by_type.setdefault(rtype, {})[sp["code"]] = SearchParam(
                code=sp["code"],
                resource_type=rtype,
                type=sp["type"],
                expression=type_expr,
                url=sp["url"],
                targets=tuple(sp.get("target", [])),
                components=components,
                modifiers=tuple(sp.get("modifier", [])),
                comparators=tuple(sp.get("comparator", [])),
            )
    return Definitions(
        fhir_version=raw["fhirVersion"],
        structure_definitions=sds,
        search_params=by_type,
        search_params_by_url=by_url,
        compartments=raw["compartments"],
        resource_types=resource_types,
    )


@cache
def summary_elements(resource_type: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """Top-level summary elements of a type: (names, choice prefixes such as ``deceased``)."""
    names: set[str] = set()
    choices: list[str] = []
    for element in load().structure_definitions.get(resource_type, {}).get("elements", []):
        parts = element["path"].split(".")
        if len(parts) != 2 or not element.get("summary"):
            continue
        if parts[1].endswith("[x]"):
            choices.append(parts[1][:-3])
        else:
            names.add(parts[1])
    return frozenset(names), tuple(choices)
