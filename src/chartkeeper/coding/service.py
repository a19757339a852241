"""The coding slice's public functions: suggestions, the encoder's search and code details.

Everything reads the code-set releases in the store's database (``codesets``); the parsed
releases, the suggestion engine and the search index are built once per process and release.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine

from chartkeeper.coding import codesets
from chartkeeper.coding.cac import (
    Coder,
    Suggestions,
    build_pipeline,
    coder_from_titles,
    with_evidence_text,
)
from chartkeeper.coding.cac_procedures import DrugCoder, ProcedureCoder
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.icd10cm import Tabular
from chartkeeper.coding.search import Entry, Hit, SearchIndex

_LOCK = threading.Lock()
_CODERS: dict[str, Coder] = {}
_SEARCH: dict[tuple[str, ...], SearchIndex] = {}


def tabular(engine: Engine, on: date | None = None) -> Tabular:
    """The ICD-10-CM release in force on a date (the newest without one)."""
    codesets.ensure_packaged(engine)
    release = codesets.release_for(engine, "icd10cm", on)
    parsed: Tabular = codesets.model(engine, release)
    return parsed


def coder(engine: Engine, on: date | None = None) -> Coder:
    """The suggestion engine for a date: ICD-10-CM; ICD-10-PCS when the site imported the
    Tables and the Index in force then; HCPCS drug codes when it imported a HCPCS file."""
    codesets.ensure_packaged(engine)
    release = codesets.release_for(engine, "icd10cm", on)
    pcs = []
    for system in ("icd10pcs", "icd10pcs-index"):
        try:
            pcs.append(codesets.release_for(engine, system, on))
        except codesets.NoRelease:
            break
    try:
        hcpcs = [codesets.release_for(engine, "hcpcs", on)]
    except codesets.NoRelease:
        hcpcs = []
    key = ":".join(r.sha256 for r in (release, *pcs, *hcpcs))
    with _LOCK:
        found = _CODERS.get(key)
        if found is None:
            base = _CODERS.get(release.sha256)
            if base is None:
                base = _CODERS[release.sha256] = coder_for(codesets.model(engine, release))
            procedures = (ProcedureCoder(codesets.model(engine, pcs[0]),
                                         codesets.model(engine, pcs[1]))
                          if len(pcs) == 2 else None)
            drugs = DrugCoder(codesets.model(engine, hcpcs[0]), on) if hcpcs else None
            found = Coder(base.diagnoses, base.displays, base.nlp, base.excludes1,
                          procedures, drugs)
            _CODERS[key] = found
        return found


def coder_for(table: Tabular) -> Coder:
    """A suggestion engine over one ICD-10-CM release's billable codes and inclusion terms."""
    def entries() -> Any:
        for code, title in table.billable_codes():
            node = table.get(code)
            inclusion = [note.text for note in node.notes if note.kind == "inclusionTerm"]
            yield code, title, inclusion

    return coder_from_titles(entries(), build_pipeline(), table.excludes1_conflict)


def suggest(engine: Engine, text: str, setting: str, *, age: int | None = None,
            on: date | None = None) -> Suggestions:
    """ICD-10-CM suggestions for a clinical text, ranked best first, with evidence."""
    return with_evidence_text(coder(engine, on).suggest(text, setting, age=age), text)


def search_index(engine: Engine, on: date | None = None) -> SearchIndex:
    """The encoder's index over the ICD-10-CM release (and its index tables when imported)."""
    codesets.ensure_packaged(engine)
    release = codesets.release_for(engine, "icd10cm", on)
    extras = []
    for system in ("icd10cm-index", "icd10cm-neoplasm", "icd10cm-drug", "icd10cm-eindex"):
        try:
            extras.append(codesets.release_for(engine, system, on))
        except codesets.NoRelease:
            continue
    key = (release.sha256, *(extra.sha256 for extra in extras))
    with _LOCK:
        found = _SEARCH.get(key)
        if found is None:
            table: Tabular = codesets.model(engine, release)
            index_models = [(extra.system, codesets.model(engine, extra)) for extra in extras]
            found = _SEARCH[key] = SearchIndex(_entries(table, index_models))
        return found


def _entries(table: Tabular, indexes: list[tuple[str, Any]]) -> Any:
    for node in table.codes():
        billable = not node.children
        yield Entry(node.code, node.title, "title", billable)
        for note in node.notes:
            if note.kind == "inclusionTerm":
                yield Entry(node.code, note.text, "inclusion term", billable)
    for system, index in indexes:
        source = {"icd10cm-index": "index", "icd10cm-neoplasm": "neoplasm table",
                  "icd10cm-drug": "drug table", "icd10cm-eindex": "external cause index"}[system]
        for term in index.terms:
            text = " ".join(term.path)
            codes = [term.code] if term.code else [c for c in term.cells.values() if c]
            for code in codes:
                normal = code.rstrip("-").strip()
                yield Entry(normal, text, source, table.is_billable(normal))


def search(engine: Engine, query: str, *, limit: int = 25, on: date | None = None) -> list[Hit]:
    return search_index(engine, on).search(query, limit)


@dataclass(frozen=True)
class CodeDetail:
    code: str
    title: str
    kind: str
    billable: bool
    ancestors: list[tuple[str, str]]
    children: list[tuple[str, str]]
    notes: list[dict[str, str]]
    seventh: dict[str, str]
    release: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "title": self.title, "kind": self.kind,
                "billable": self.billable,
                "ancestors": [{"code": c, "title": t} for c, t in self.ancestors],
                "children": [{"code": c, "title": t} for c, t in self.children],
                "notes": self.notes, "seventhCharacters": self.seventh,
                "release": self.release}


def detail(engine: Engine, code: str, on: date | None = None) -> CodeDetail:
    """A code with its hierarchy and every instructional note that applies to it."""
    table = tabular(engine, on)
    node = table.get(code)
    return CodeDetail(
        node.code, node.title, node.kind, table.is_billable(node.code),
        [(a.code, a.title) for a in reversed(table.ancestors(node.code))],
        [(c.code, c.title) for c in table.children(node.code)],
        [{"from": origin, "kind": note.kind, "text": note.text}
         for origin, note in table.notes_applying(node.code)],
        dict(node.seven_chr), table.version)


def pcs_step(engine: Engine, prefix: str, on: date | None = None) -> dict[str, Any]:
    """One step of the ICD-10-PCS builder: what the characters so far mean, and the valid
    values for the next one (or the finished code with its title)."""
    release = codesets.release_for(engine, "icd10pcs", on)
    tables = codesets.model(engine, release)
    choices = tables.choices(prefix) if len(prefix) < 7 else []
    chosen = []
    if prefix:
        # Explain the characters chosen so far from the first code they lead to.
        example = prefix if len(prefix) == 7 else _first_code(tables, prefix)
        chosen = [{"position": a.position, "title": a.title, "value": a.value,
                   "label": a.label} for a in tables.axes(example)[:len(prefix)]]
    step: dict[str, Any] = {
        "prefix": prefix, "release": release.version, "chosen": chosen,
        "choices": [{"position": c.position, "title": c.title, "value": c.value,
                     "label": c.label} for c in choices]}
    if len(prefix) == 7:
        if not tables.is_valid(prefix):
            raise CodeSetError(f"{prefix!r} is not a valid ICD-10-PCS code in "
                                f"release {release.version}")
        step["code"] = {"code": prefix, "title": tables.title(prefix)}
    return step


def _first_code(tables: Any, prefix: str) -> str:
    code = prefix
    while len(code) < 7:
        code += tables.choices(code)[0].value
    return code
