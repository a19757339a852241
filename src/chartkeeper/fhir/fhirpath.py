"""A compiled evaluator for the FHIRPath subset that the FHIR R4 search parameters use.

An expression is compiled once, against the R4 structure definitions, into *branches*: one
closure per statically known result type (``Observation.value`` is one branch per choice type,
``valueQuantity``, ``valueCodeableConcept``...). The search indexer needs that type to know how
to index a value (a ``Reference`` and a ``CodeableConcept`` are both JSON objects). Anything
outside the subset raises :class:`UnsupportedExpressionError` at compile time, so callers can
fall back to a general evaluator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from chartkeeper.fhir.definitions import Definitions, load

# (focus collection, root resource) -> result collection
Evaluator = Callable[[list[Any], dict[str, Any]], list[Any]]

# FHIRPath system types used as element types in the R4 snapshots (``Resource.id`` etc.).
_SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Integer": "integer",
}
_INLINE_TYPES = frozenset({"BackboneElement", "Element"})
_ROOT_VARIABLES = frozenset({"%resource", "%rootResource", "%context"})
_CONSTANT_VARIABLES = {"%ucum": "http://unitsofmeasure.org"}


class FhirPathSyntaxError(ValueError):
    """The text is not a FHIRPath expression this parser can read."""


class UnsupportedExpressionError(ValueError):
    """The expression is valid FHIRPath but outside the compiled subset."""


class FhirPathEvaluationError(ValueError):
    """Evaluating a compiled expression on a resource hit a FHIRPath error."""


@dataclass(frozen=True, slots=True)
class ElementType:
    """The static type of a branch's values and where its child elements are declared."""

    name: str  # FHIR type code: CodeableConcept, string, BackboneElement, Patient, Resource...
    definition: str  # the structure definition that declares its children
    path: str  # the element path inside that definition

    @classmethod
    def of(cls, type_code: str) -> ElementType:
        return cls(type_code, type_code, type_code)

    @property
    def is_primitive(self) -> bool:
        return self.name[:1].islower()


@dataclass(frozen=True, slots=True)
class Branch:
    """One statically typed part of a compiled expression."""

    evaluate: Evaluator
    type: ElementType
    keys: tuple[str, ...] | None = None  # set when the branch is a plain member path
    root_key: str | None = None  # a focus key without which the branch is always empty


# ---------------------------------------------------------------------------------------------
# References: what ``resolve() is Type`` can know without a database.


@cache
def _resource_types() -> frozenset[str]:
    return load().resource_types


def parse_reference(reference: str) -> tuple[str | None, str | None, str | None] | None:
    """Split a ``Reference.reference`` into (type, id, url); None for a contained ``#id``.

    ``Type/id`` and ``Type/id/_history/v`` give (Type, id, None); an absolute URL ending in
    ``Type/id`` gives (Type, id, url); a conditional ``Type?search`` gives (Type, None, text);
    anything else (``urn:uuid:...``, unknown types) gives (None, None, text).
    """
    if not reference or reference[0] == "#":
        return None
    known = _resource_types()
    if "?" in reference:
        head = reference.split("?", 1)[0]
        return (head if head in known else None), None, reference
    absolute = "://" in reference
    if not absolute and reference.startswith("urn:"):
        return None, None, reference
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2] in known and parts[-1]:
        if absolute:
            return parts[-2], parts[-1], reference
        if len(parts) == 2:
            return parts[0], parts[1], None
    return None, None, reference


def reference_type(value: Any) -> str | None:
    """The resource type a Reference (or canonical/uri text) points at, when it can be told."""
    if value.__class__ is dict:
        text = value.get("reference")
        if text.__class__ is str:
            parsed = parse_reference(text)
            if parsed is not None and parsed[0] is not None:
                return parsed[0]
            if parsed is None:
                return None
        declared = value.get("type")
        if declared.__class__ is str and declared in _resource_types():
            return str(declared)
        return None
    if value.__class__ is str:
        parsed = parse_reference(value)
        return parsed[0] if parsed is not None else None
    return None


# ---------------------------------------------------------------------------------------------
# The type model: element types from the R4 structure definitions.


class TypeModel:
    """Element lookups over the R4 structure definitions, indexed once."""

    def __init__(self, definitions: Definitions) -> None:
        self._sds = definitions.structure_definitions
        self._elements: dict[str, dict[str, dict[str, Any]]] = {}
        self.resource_types = definitions.resource_types
        self._by_lower = {name.lower(): name for name in self._sds}
        # JSON choice suffix (``valueString`` -> "String") back to the type code.
        self._by_suffix = {name[:1].upper() + name[1:]: name for name in self._sds}

    def elements(self, definition: str) -> dict[str, dict[str, Any]]:
        found = self._elements.get(definition)
        if found is None:
            sd = self._sds.get(definition)
            found = {} if sd is None else {el["path"]: el for el in sd["elements"]}
            self._elements[definition] = found
        return found

    def canonical_type(self, name: str) -> str | None:
        """The type code for a FHIRPath type specifier (``FHIR.Quantity``, ``DateTime``)."""
        bare = name.split(".", 1)[1] if name.startswith(("FHIR.", "System.")) else name
        if bare in self._sds:
            return bare
        return self._by_lower.get(bare.lower())

    def type_for_suffix(self, suffix: str) -> str | None:
        return self._by_suffix.get(suffix)

    def is_a(self, type_code: str, target: str) -> bool:
        """Whether ``type_code`` is ``target`` or specializes it (Age is a Quantity)."""
        seen = 0
        current: str | None = type_code
        while current is not None and seen < 16:
            if current == target:
                return True
            sd = self._sds.get(current)
            base = sd.get("baseDefinition") if sd is not None else None
            current = base.rsplit("/", 1)[-1] if isinstance(base, str) else None
            seen += 1
        return False

    def children(self, parent: ElementType, name: str) -> list[tuple[str, ElementType]]:
        """(JSON key, type) for each way element ``name`` of ``parent`` can appear."""
        elements = self.elements(parent.definition)
        path = f"{parent.path}.{name}"
        element = elements.get(path)
        choice = False
        if element is None:
            element = elements.get(path + "[x]")
            choice = True
        if element is None:
            return []
        reference = element.get("contentReference")
        if isinstance(reference, str):
            target = reference.split("#", 1)[-1]
            target_el = elements.get(target, {})
            codes = [t["code"] for t in target_el.get("types", [])] or ["BackboneElement"]
            return [(name, ElementType(codes[0], parent.definition, target))]
        found: list[tuple[str, ElementType]] = []
        for declared in element.get("types", []):
            code = _SYSTEM_TYPES.get(declared["code"], declared["code"])
            key = name + code[:1].upper() + code[1:] if choice else name
            if code in _INLINE_TYPES:
                found.append((key, ElementType(code, parent.definition, path)))
            else:
                found.append((key, ElementType.of(code)))
        return found


@cache
def type_model() -> TypeModel:
    return TypeModel(load())


# ---------------------------------------------------------------------------------------------
# Parsing


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
     |(?P<number>\d+(?:\.\d+)?)
     |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
     |(?P<quoted>`[^`]*`)
     |(?P<var>%[A-Za-z_][A-Za-z0-9_]*|%`[^`]*`)
     |(?P<this>\$this|\$index|\$total)
     |(?P<op><=|>=|!=|!~|[.,()\[\]|=<>~+\-*/&{}])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}
_BINARY_PRECEDENCE = {
    "implies": 1, "or": 2, "xor": 2, "and": 3, "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5, "<": 6, ">": 6, "<=": 6, ">=": 6,
    "|": 7, "is": 8, "as": 8, "+": 9, "-": 9, "&": 9, "*": 10, "/": 10, "div": 10, "mod": 10,
}

# AST nodes are tuples: ("ident", name), ("member", base, name), ("call", base|None, name,
# args), ("index", base, expr), ("literal", value), ("var", name), ("this",), ("empty",),
# ("binary", op, left, right), ("typeop", "is"|"as", expr, type name).
Node = tuple[Any, ...]


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and i + 5 < len(text):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(expression: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    end = len(expression.rstrip())
    while pos < end:
        match = _TOKEN.match(expression, pos)
        if match is None or match.end() == pos:
            raise FhirPathSyntaxError(
                f"unexpected text at offset {pos} of FHIRPath {expression!r}: "
                f"{expression[pos:pos + 20]!r}"
            )
        kind = match.lastgroup
        assert kind is not None
        text = match.group(kind)
        if kind == "string":
            tokens.append(("string", _unescape(text[1:-1])))
        elif kind == "quoted":
            tokens.append(("ident", text[1:-1]))
        else:
            tokens.append((kind, text))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.pos = 0

    def fail(self, expected: str) -> FhirPathSyntaxError:
        got = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of text"
        return FhirPathSyntaxError(
            f"expected {expected} but found {got!r} in FHIRPath {self.expression!r}"
        )

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == text and token[0] in ("op", "ident"):
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            raise self.fail(repr(text))

    def identifier(self) -> str:
        token = self.peek()
        if token is None or token[0] != "ident":
            raise self.fail("an identifier")
        self.pos += 1
        return token[1]

    def parse(self) -> Node:
        node = self.expr(0)
        if self.pos != len(self.tokens):
            raise self.fail("an operator")
        return node

    def expr(self, min_precedence: int) -> Node:
        left = self.unary()
        while True:
            token = self.peek()
            if token is None or token[0] not in ("op", "ident"):
                return left
            precedence = _BINARY_PRECEDENCE.get(token[1])
            if precedence is None or precedence < min_precedence:
                return left
            self.pos += 1
            op = token[1]
            if op in ("is", "as"):
                name = self.identifier()
                while self.take("."):
                    name += "." + self.identifier()
                left = ("typeop", op, left, name)
            else:
                left = ("binary", op, left, self.expr(precedence + 1))

    def unary(self) -> Node:
        if self.take("-"):
            return ("negate", self.unary())
        self.take("+")
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.take("."):
                name = self.identifier()
                if self.take("("):
                    node = ("call", node, name, self.arguments())
                else:
                    node = ("member", node, name)
            elif self.take("["):
                index = self.expr(0)
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def arguments(self) -> tuple[Node, ...]:
        args: list[Node] = []
        if self.take(")"):
            return ()
        while True:
            args.append(self.expr(0))
            if self.take(")"):
                return tuple(args)
            self.expect(",")

    def term(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.fail("a term")
        kind, text = token
        self.pos += 1
        if kind == "string":
            return ("literal", text)
        if kind == "number":
            return ("literal", float(text) if "." in text else int(text))
        if kind == "var":
            return ("var", text)
        if kind == "this":
            if text != "$this":
                raise UnsupportedExpressionError(f"{text} is not supported")
            return ("this",)
        if kind == "ident":
            if text in ("true", "false"):
                return ("literal", text == "true")
            if self.take("("):
                return ("call", None, text, self.arguments())
            return ("ident", text)
        if text == "(":
            inner = self.expr(0)
            self.expect(")")
            return inner
        if text == "{":
            self.expect("}")
            return ("empty",)
        self.pos -= 1
        raise self.fail("a term")


def parse(expression: str) -> Node:
    """Parse FHIRPath text into a tuple tree; raise FhirPathSyntaxError on bad text."""
    return _Parser(expression).parse()


# ---------------------------------------------------------------------------------------------
# Evaluation helpers


def _walker(keys: tuple[str, ...]) -> Evaluator:
    """Member navigation over dicts, flattening arrays (a chain of ``.name`` steps)."""
    if not keys:
        return _identity
    if len(keys) == 1:
        key = keys[0]

        def walk_one(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            out: list[Any] = []
            for node in focus:
                if node.__class__ is dict:
                    value = node.get(key)
                    if value is None:
                        continue
                    if value.__class__ is list:
                        out.extend(value)
                    else:
                        out.append(value)
            return out

        return walk_one

    def walk(focus: list[Any], root: dict[str, Any]) -> list[Any]:
        nodes = focus
        for key in keys:
            out: list[Any] = []
            for node in nodes:
                if node.__class__ is dict:
                    value = node.get(key)
                    if value is None:
                        continue
                    if value.__class__ is list:
                        out.extend(value)
                    else:
                        out.append(value)
            if not out:
                return out
            nodes = out
        return nodes

    return walk


def _identity(focus: list[Any], root: dict[str, Any]) -> list[Any]:
    return focus


def _then_member(base: Evaluator, key: str) -> Evaluator:
    step = _walker((key,))

    def member(focus: list[Any], root: dict[str, Any]) -> list[Any]:
        nodes = base(focus, root)
        return step(nodes, root) if nodes else nodes

    return member


def _concat(evaluators: list[Evaluator]) -> Evaluator:
    if len(evaluators) == 1:
        return evaluators[0]

    def union(focus: list[Any], root: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for evaluate in evaluators:
            out.extend(evaluate(focus, root))
        return out

    return union


def _singleton_truth(values: list[Any]) -> bool | None:
    """FHIRPath singleton evaluation of a collection as a boolean (None: empty)."""
    if not values:
        return None
    if len(values) == 1:
        value = values[0]
        return value if value.__class__ is bool else True
    raise FhirPathEvaluationError(
        f"a boolean operator got a collection of {len(values)} items where one was expected"
    )


def _fhirpath_equal(left: Any, right: Any) -> bool:
    if left.__class__ is bool or right.__class__ is bool:
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return bool(left.__class__ is right.__class__ and left == right)


# ---------------------------------------------------------------------------------------------
# Compilation


_BOOLEAN = ElementType.of("boolean")


class _Compiler:
    def __init__(self, model: TypeModel, root: ElementType, expression: str) -> None:
        self.model = model
        self.root = root
        self.expression = expression

    def unsupported(self, why: str) -> UnsupportedExpressionError:
        return UnsupportedExpressionError(f"{why} in FHIRPath {self.expression!r}")

    def compile(self, node: Node, focus: ElementType) -> list[Branch]:
        kind = node[0]
        if kind == "ident":
            return self.identifier(node[1], focus)
        if kind == "member":
            return self.member(self.compile(node[1], focus), node[2])
        if kind == "call":
            base = (
                [Branch(_identity, focus, (), None)] if node[1] is None
                else self.compile(node[1], focus)
            )
            return self.call(base, node[2], node[3], focus)
        if kind == "typeop":
            return self.type_operator(node[1], node[2], node[3], focus)
        if kind == "binary":
            return self.binary(node[1], node[2], node[3], focus)
        if kind == "index":
            return self.index(self.compile(node[1], focus), node[2])
        if kind == "literal":
            return [self.literal(node[1])]
        if kind == "var":
            return [self.variable(node[1])]
        if kind == "this":
            return [Branch(_identity, focus, (), None)]
        if kind == "empty":
            return []
        raise self.unsupported(f"{kind} expressions are not supported")

    def identifier(self, name: str, focus: ElementType) -> list[Branch]:
        is_type_name = name[:1].isupper() and (
            name == focus.name
            or (name in ("Resource", "DomainResource") and focus.name in self.model.resource_types)
        )
        if is_type_name:
            return [Branch(_identity, focus, (), None)]
        return self.member([Branch(_identity, focus, (), None)], name)

    def member(self, bases: list[Branch], name: str) -> list[Branch]:
        found: list[Branch] = []
        for base in bases:
            if base.type.is_primitive:
                raise self.unsupported(f"navigation into primitive {base.type.name} ('{name}')")
            if base.type.name == "Resource":
                raise self.unsupported(f"navigation into an untyped resource ('{name}')")
            for key, child in self.model.children(base.type, name):
                if base.keys is not None:
                    keys = (*base.keys, key)
                    found.append(Branch(_walker(keys), child, keys, keys[0]))
                else:
                    found.append(
                        Branch(_then_member(base.evaluate, key), child, None, base.root_key)
                    )
        if bases and not found:
            names = ", ".join(sorted({b.type.path for b in bases}))
            raise self.unsupported(f"'{name}' is not an element of {names}")
        return found

    def literal(self, value: Any) -> Branch:
        if value.__class__ is bool:
            type_code = "boolean"
        elif value.__class__ is int:
            type_code = "integer"
        elif value.__class__ is float:
            type_code = "decimal"
        else:
            type_code = "string"
        constant = [value]
        return Branch(lambda focus, root: constant, ElementType.of(type_code))

    def variable(self, name: str) -> Branch:
        if name in _ROOT_VARIABLES:
            return Branch(lambda focus, root: [root], self.root)
        if name in _CONSTANT_VARIABLES:
            return self.literal(_CONSTANT_VARIABLES[name])
        raise self.unsupported(f"variable {name}")

    def type_name(self, args: tuple[Node, ...], function: str) -> str:
        if len(args) != 1:
            raise self.unsupported(f"{function}() takes one type name")
        arg = args[0]
        if arg[0] == "ident":
            return str(arg[1])
        if arg[0] == "member" and arg[1][0] == "ident":
            return f"{arg[1][1]}.{arg[2]}"
        raise self.unsupported(f"{function}() argument is not a type name")

    def string_argument(self, args: tuple[Node, ...], function: str) -> str:
        if len(args) != 1 or args[0][0] != "literal" or args[0][1].__class__ is not str:
            raise self.unsupported(f"{function}() takes one string literal")
        return str(args[0][1])

    def call(
        self, bases: list[Branch], name: str, args: tuple[Node, ...], focus: ElementType
    ) -> list[Branch]:
        if name == "where":
            if len(args) != 1:
                raise self.unsupported("where() takes one criterion")
            return [self.where(base, args[0]) for base in bases]
        if name in ("as", "ofType"):
            return self.cast(bases, self.type_name(args, name))
        if name == "is":
            return self.type_test(bases, self.type_name(args, name))
        if name == "extension":
            url = self.string_argument(args, name)
            return [self.where_extension(b, url) for b in self.member(bases, "extension")]
        if name == "hasExtension":
            url = self.string_argument(args, name)
            return [self.has_extension(bases, url)]
        if name in ("exists", "empty"):
            if args:
                bases = [self.where(base, args[0]) for base in bases]
            return [self.existence(bases, name == "exists")]
        if name == "not" and not args:
            return [self.negation(bases)]
        if name == "first" and not args:
            return self.index(bases, ("literal", 0))
        if name == "resolve":
            raise self.unsupported("resolve() outside 'resolve() is Type'")
        raise self.unsupported(f"function {name}()")

    def where(self, base: Branch, criterion: Node) -> Branch:
        test = _concat([b.evaluate for b in self.compile(criterion, base.type)] or [
            lambda focus, root: []
        ])
        source = base.evaluate

        def where(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            kept: list[Any] = []
            for item in source(focus, root):
                result = test([item], root)
                if len(result) == 1 and result[0] is not False:
                    kept.append(item)
            return kept

        return Branch(where, base.type, None, base.root_key)

    def where_extension(self, base: Branch, url: str) -> Branch:
        source = base.evaluate

        def extension(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            return [
                ext for ext in source(focus, root)
                if ext.__class__ is dict and ext.get("url") == url
            ]

        return Branch(extension, base.type, None, base.root_key)

    def has_extension(self, bases: list[Branch], url: str) -> Branch:
        source = _concat([b.evaluate for b in bases])

        def has_extension(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            items = source(focus, root)
            if not items:
                return []
            for item in items:
                if item.__class__ is dict:
                    for ext in item.get("extension") or ():
                        if ext.__class__ is dict and ext.get("url") == url:
                            return [True]
            return [False]

        return Branch(has_extension, _BOOLEAN)

    def existence(self, bases: list[Branch], exists: bool) -> Branch:
        evaluators = [b.evaluate for b in bases]

        def existence(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            found = any(evaluate(focus, root) for evaluate in evaluators)
            return [found is exists]

        return Branch(existence, _BOOLEAN)

    def negation(self, bases: list[Branch]) -> Branch:
        source = _concat([b.evaluate for b in bases])

        def negation(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            truth = _singleton_truth(source(focus, root))
            return [] if truth is None else [not truth]

        return Branch(negation, _BOOLEAN)

    def resolve_type(self, name: str) -> str:
        resolved = self.model.canonical_type(name)
        if resolved is None:
            raise self.unsupported(f"unknown type {name}")
        return resolved

    def cast(self, bases: list[Branch], type_name: str) -> list[Branch]:
        target = self.resolve_type(type_name)
        kept: list[Branch] = []
        for base in bases:
            if self.model.is_a(base.type.name, target):
                kept.append(base)
            elif base.type.name == "Resource" and target in self.model.resource_types:
                kept.append(self.resource_of_type(base, target))
        return kept

    def resource_of_type(self, base: Branch, target: str) -> Branch:
        source = base.evaluate

        def of_type(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            return [
                r for r in source(focus, root)
                if r.__class__ is dict and r.get("resourceType") == target
            ]

        return Branch(of_type, ElementType.of(target), None, base.root_key)

    def type_test(self, bases: list[Branch], type_name: str) -> list[Branch]:
        target = self.resolve_type(type_name)
        matching = [b.evaluate for b in bases if self.model.is_a(b.type.name, target)]
        others = [b.evaluate for b in bases if not self.model.is_a(b.type.name, target)]
        if any(b.type.name == "Resource" for b in bases):
            raise self.unsupported("a type test on an untyped resource")

        def type_test(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            if any(evaluate(focus, root) for evaluate in matching):
                return [True]
            if any(evaluate(focus, root) for evaluate in others):
                return [False]
            return []

        return [Branch(type_test, _BOOLEAN)]

    def type_operator(
        self, op: str, operand: Node, type_name: str, focus: ElementType
    ) -> list[Branch]:
        if op == "is" and operand[0] == "call" and operand[2] == "resolve" and not operand[3]:
            bases = (
                [Branch(_identity, focus, (), None)] if operand[1] is None
                else self.compile(operand[1], focus)
            )
            return [self.resolves_to(bases, self.resolve_type(type_name))]
        bases = self.compile(operand, focus)
        if op == "as":
            return self.cast(bases, type_name)
        return self.type_test(bases, type_name)

    def resolves_to(self, bases: list[Branch], target: str) -> Branch:
        source = _concat([b.evaluate for b in bases])

        def resolves_to(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            return [reference_type(ref) == target for ref in source(focus, root)]

        return Branch(resolves_to, _BOOLEAN)

    def binary(self, op: str, left: Node, right: Node, focus: ElementType) -> list[Branch]:
        if op == "|":
            return self.compile(left, focus) + self.compile(right, focus)
        lhs = _concat([b.evaluate for b in self.compile(left, focus)] or [lambda f, r: []])
        rhs = _concat([b.evaluate for b in self.compile(right, focus)] or [lambda f, r: []])
        if op in ("=", "!="):
            return [self.equality(lhs, rhs, op == "=")]
        if op in ("and", "or", "xor", "implies"):
            return [self.logic(op, lhs, rhs)]
        raise self.unsupported(f"operator {op}")

    def equality(self, lhs: Evaluator, rhs: Evaluator, equal: bool) -> Branch:
        def equality(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            left = lhs(focus, root)
            if not left:
                return []
            right = rhs(focus, root)
            if not right:
                return []
            same = len(left) == len(right) and all(
                _fhirpath_equal(a, b) for a, b in zip(left, right, strict=True)
            )
            return [same is equal]

        return Branch(equality, _BOOLEAN)

    def logic(self, op: str, lhs: Evaluator, rhs: Evaluator) -> Branch:
        def logic(focus: list[Any], root: dict[str, Any]) -> list[Any]:
            a = _singleton_truth(lhs(focus, root))
            b = _singleton_truth(rhs(focus, root))
            result: bool | None
            if op == "and":
                result = False if a is False or b is False else (
                    None if a is None or b is None else True)
            elif op == "or":
                result = True if a is True or b is True else (
                    None if a is None or b is None else False)
            elif op == "xor":
                result = None if a is None or b is None else a is not b
            else:  # implies
                result = True if a is False or b is True else (
                    None if a is None or b is None else False)
            return [] if result is None else [result]

        return Branch(logic, _BOOLEAN)

    def index(self, bases: list[Branch], index: Node) -> list[Branch]:
        if index[0] != "literal" or index[1].__class__ is not int:
            raise self.unsupported("an index that is not an integer literal")
        if len(bases) > 1:
            raise self.unsupported("indexing a collection of several types")
        position: int = index[1]
        indexed: list[Branch] = []
        for base in bases:
            source = base.evaluate

            def at(
                focus: list[Any], root: dict[str, Any], source: Evaluator = source
            ) -> list[Any]:
                return source(focus, root)[position : position + 1]

            indexed.append(Branch(at, base.type, None, base.root_key))
        return indexed


def compile_expression(
    expression: str, resource_type: str, focus: ElementType | None = None
) -> list[Branch]:
    """Compile ``expression`` for resources of ``resource_type`` into typed branches.

    ``focus`` is the type of the input collection when it is not the resource itself (the
    relative component expressions of a composite parameter). Each branch's evaluator takes
    ``(focus collection, resource)``.
    """
    model = type_model()
    if resource_type not in model.resource_types:
        raise UnsupportedExpressionError(f"{resource_type!r} is not an R4 resource type")
    root = ElementType.of(resource_type)
    compiler = _Compiler(model, root, expression)
    return compiler.compile(parse(expression), focus or root)
