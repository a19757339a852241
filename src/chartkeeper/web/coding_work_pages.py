"""The coder's work in the workbench: the queue of unbilled encounters, an encounter's coding
worksheet (its notes with every suggestion's evidence marked, the decisions, sequencing, present
on admission, procedures, the edits check and finalization) and the coding reports.

The worksheet is one form whose fields hold the coder's work in progress: every button (find a
code, add it, move a diagnosis up, check the edits, finalize) posts the whole form and the page
comes back with the change made, so it works without JavaScript; htmx only fills the code
search's results as the coder types. Nothing is stored until "Finalize": the decisions are
checked, the claim must pass the edits, and the codes are written with the request's audit
entry in one transaction. Every page that shows a patient is audited like the read or search it
stands for; the reports name coders, not patients, and are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine

from chartkeeper.api.auth import RequestAccess, access_of
from chartkeeper.coding import codesets, feedback, grouper, service
from chartkeeper.coding.cac import Suggestion
from chartkeeper.coding.cpt import CPT_CODE
from chartkeeper.coding.edits import Edit, errors
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.icd10cm import dotted
from chartkeeper.coding.search import Hit
from chartkeeper.coding.worksheet import (
    POA_INDICATORS,
    POA_NUBC,
    PROCEDURE_NAMES,
    PROCEDURE_SYSTEMS,
    TAG_SYSTEM,
    Decision,
)
from chartkeeper.coding.worksheet_json import MAX_CODE, MAX_UNITS
from chartkeeper.coding.worksheet_service import (
    QUEUE_SETTINGS,
    EditsFailed,
    GuardedWorksheet,
    audit_finalization,
    check_decisions,
    coder_of,
    discharge_status_of,
    finalize,
    guarded_queue,
    guarded_worksheet,
    nubc_discharge_status,
    report_period,
    unbilled,
)
from chartkeeper.coding.worksheet_view import Worksheet
from chartkeeper.security.access import ROLE_POLICIES, Capability, Forbidden
from chartkeeper.security.audit import AuditAction
from chartkeeper.security.identity import Role
from chartkeeper.store.errors import Conflict, InvalidRequest
from chartkeeper.store.service import Resource
from chartkeeper.web.chart import human_name
from chartkeeper.web.pages import (
    PAGE,
    PAGE_READ,
    PAGE_SEARCH,
    PageRule,
    read_form,
    render,
    store_of,
)

router = APIRouter(include_in_schema=False)
PAGE_WORKSHEET = PageRule("page-coding-worksheet", AuditAction.READ)
QUEUE_PAGE = 25
MAX_ROWS = 300
MAX_QUERY = 200  # as the encoder's search
MAX_TEXT = 500  # a reason, as the worksheet's own limit
SEARCH_RESULTS = 15
EVIDENCE_LINKS = 6
# v3 ActCode encounter classes, in the words the queue shows.
CLASS_NAMES = {"IMP": "inpatient", "ACUTE": "inpatient acute", "NONAC": "inpatient non-acute",
               "AMB": "ambulatory", "EMER": "emergency", "OBSENC": "observation",
               "SS": "short stay", "HH": "home health", "VR": "virtual", "FLD": "field",
               "PRENC": "pre-admission"}
ROW_ACTIONS = {"suggested": ("accept", "reject", "edit", "leave"), "added": ("add",)}
ACTION_WORDS = {"accept": "Accept", "reject": "Reject", "edit": "Edit", "leave": "Not coded"}
KINDS = ("diagnosis", "procedure")
_ROW_FIELD = re.compile(r"n-(\d{1,4})-(kind|code|origin|system|action|to|reason|poa|"
                        r"performed|units)")


# ------------------------------------------------------------------------------ access
def _require_coding(access: RequestAccess) -> None:
    principal = access.who()
    if not principal.has(Capability.coding):
        allowed = ", ".join(role.value.replace("_", " ") for role, policy in ROLE_POLICIES.items()
                            if Capability.coding in policy.capabilities
                            and role is not Role.service)
        raise Forbidden(f"coding is for: {allowed}; the role "
                        f"{principal.role.value.replace('_', ' ')} does not code")


def _page_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"page {value[:20]!r} is not a page number") from None
    if not 1 <= number <= 100_000:
        raise InvalidRequest(f"page {number} is out of range (1 to 100000)")
    return number


# ------------------------------------------------------------------------------ the queue
@router.get("/coding", dependencies=[Depends(PAGE_SEARCH)])
def coding_queue(request: Request, page: str = "1", setting: str = "") -> Response:
    """Unbilled encounters, oldest discharge first, 25 a page; inpatient or outpatient only
    with ``setting``. Restricted records are listed without the patient's name."""
    access = access_of(request)
    _require_coding(access)
    access.target("Encounter")
    access.details["page"] = "coding queue"
    number = _page_number(page)
    if setting not in ("", *QUEUE_SETTINGS):
        raise InvalidRequest(f"setting must be one of {', '.join(QUEUE_SETTINGS)}, got "
                             f"{setting[:20]!r}")
    store = store_of(request)
    items = unbilled(store, setting=setting)
    rows = guarded_queue(access, store, items[(number - 1) * QUEUE_PAGE:number * QUEUE_PAGE])
    return render(request, "coding_queue.html", {
        "tab": "queue", "rows": rows, "total": len(items), "page": number,
        "pages": max((len(items) + QUEUE_PAGE - 1) // QUEUE_PAGE, 1), "setting": setting,
        "settings": QUEUE_SETTINGS, "classes": CLASS_NAMES,
        "restricted": sum(1 for row in rows if not row.visible)})


# ------------------------------------------------------------------ the worksheet's state
@dataclass
class Row:
    """One line of the worksheet as the coder left it: a suggestion and the decision on it,
    or a code the coder added."""

    kind: str  # diagnosis or procedure
    code: str
    origin: str  # suggested or added
    action: str  # accept, reject, edit, leave (suggested); add (added)
    system: str = ""  # "" for ICD-10-CM, else icd10pcs, hcpcs or cpt
    to: str = ""  # the code an edit replaces it with
    reason: str = ""
    poa: str = ""
    performed: str = ""  # YYYY-MM-DD
    units: str = "1"


@dataclass
class State:
    """The whole form: the rows in sequence (diagnoses, then procedures) and the panels."""

    rows: list[Row]
    query: str = ""
    search_for: int | None = None  # the row a search finds a replacement for
    discharge_status: str = ""
    reason: str = ""
    notice: str | None = None


def _procedure_system(setting: str, code: str) -> str:
    if setting == "inpatient":
        return "icd10pcs"
    return "cpt" if CPT_CODE.fullmatch(code) else "hcpcs"


def _suggested_row(kind: str, suggestion: Suggestion, setting: str) -> Row:
    system = "" if kind == "diagnosis" else _procedure_system(setting, suggestion.code)
    return Row(kind, suggestion.code, "suggested",
               "accept" if suggestion.proposed else "leave", system)


def initial_state(guarded: GuardedWorksheet) -> State:
    """The worksheet as the engine proposes it: its principal first, then the diagnoses in
    the order of the ranking; proposed codes accepted, the others offered."""
    sheet = guarded.sheet
    setting = sheet.documents.setting
    diagnoses = list(sheet.suggestions.diagnoses)
    principal = sheet.suggestions.principal
    diagnoses.sort(key=lambda s: s.code != principal)  # stable: the rest keep their rank
    rows = [_suggested_row("diagnosis", s, setting) for s in diagnoses]
    rows += [_suggested_row("procedure", s, setting) for s in sheet.suggestions.procedures]
    return State(rows, discharge_status=nubc_discharge_status(guarded.encounter) or "")


def recorded_state(guarded: GuardedWorksheet) -> State | None:
    """The worksheet as it was last finalized (the decisions recorded and the stored Claim's
    sequence, POA, dates and units), so that a re-coding starts from it; None when the
    encounter was never coded."""
    sheet = guarded.sheet
    claim = sheet.claim
    if claim is None or not sheet.recorded:
        return None
    setting = sheet.documents.setting
    sequence: dict[str, int] = {}
    poa: dict[str, str] = {}
    for entry in claim.get("diagnosis") or []:
        code = str(_coding(entry.get("diagnosisCodeableConcept") or {}).get("code", ""))
        sequence[code] = int(entry.get("sequence", 0))
        poa[code] = next((str(c.get("code")) for c in (entry.get("onAdmission") or {}).get(
            "coding") or [] if c.get("system") == POA_NUBC), "")
    recorded = {(r.kind, r.suggested_code): r for r in sheet.recorded if r.suggested_code}
    rows: list[Row] = []
    for suggestion in sheet.suggestions.diagnoses:
        row = _suggested_row("diagnosis", suggestion, setting)
        decided = recorded.get(("diagnosis", suggestion.code))
        if decided is not None and decided.explicit:
            row.action = {"accepted": "accept", "edited": "edit"}.get(decided.outcome, "reject")
            row.to = (decided.final_code or "") if decided.outcome == "edited" else ""
            row.reason = decided.reason or ""
        rows.append(row)
    by_code = {row.code: row for row in rows}
    for added in sheet.recorded:
        if added.outcome != "added" or added.kind != "diagnosis" or not added.final_code:
            continue
        if added.final_code in by_code:  # suggested now (learned from such additions)
            by_code[added.final_code].action = "accept"
        else:
            rows.append(Row("diagnosis", added.final_code, "added", "add",
                            reason=added.reason or ""))
    for row in rows:
        final = row.to if row.action == "edit" else row.code
        row.poa = poa.get(final, "") if setting == "inpatient" else ""
    coded = [r for r in rows if r.action in ("accept", "edit", "add")]
    coded.sort(key=lambda r: sequence.get(r.to if r.action == "edit" else r.code, 10**6))
    rows = coded + [r for r in rows if r.action not in ("accept", "edit", "add")]
    systems = {url: name for name, url in PROCEDURE_SYSTEMS.items()}
    offered = {s.code for s in sheet.suggestions.procedures}
    for entry in [*(claim.get("procedure") or []), *(claim.get("item") or [])]:
        coding = _coding(entry.get("procedureCodeableConcept") or
                         entry.get("productOrService") or {})
        code, system = str(coding.get("code", "")), systems.get(str(coding.get("system")), "")
        if not code or not system:
            continue
        rows.append(Row("procedure", code, "suggested" if code in offered else "added",
                        "accept" if code in offered else "add", system,
                        performed=str(entry.get("date") or entry.get("servicedDate") or "")[:10],
                        units=str((entry.get("quantity") or {}).get("value", 1))))
    listed = {r.code for r in rows if r.kind == "procedure"}
    rows += [_suggested_row("procedure", s, setting) for s in sheet.suggestions.procedures
             if s.code not in listed]
    return State(rows, discharge_status=nubc_discharge_status(guarded.encounter) or "")


def _field(fields: dict[str, str], name: str, limit: int) -> str:
    value = fields.get(name, "")
    if len(value) > limit:
        raise InvalidRequest(f"the field {name} has {len(value)} characters; at most {limit}")
    return value


def state_from_form(fields: dict[str, str], sheet: Worksheet) -> State:
    """The posted worksheet; suggestions the form does not hold come back in their default
    state. A field no form of this page sends is refused (400)."""
    try:
        count = int(fields.get("rows", "0"))
    except ValueError:
        raise InvalidRequest("the worksheet form is damaged (rows is not a number); open the "
                             "worksheet again") from None
    if not 0 <= count <= MAX_ROWS:
        raise InvalidRequest(f"the worksheet holds at most {MAX_ROWS} codes, got {count}")
    rows = []
    for number in range(count):
        def value(name: str, limit: int = MAX_CODE, number: int = number) -> str:
            return _field(fields, f"n-{number}-{name}", limit).strip()

        kind, origin, code = value("kind"), value("origin"), value("code")
        system, action = value("system"), value("action")
        if kind not in KINDS or origin not in ROW_ACTIONS or not code:
            raise InvalidRequest(f"the worksheet form is damaged at line {number + 1}; open "
                                 "the worksheet again")
        if action not in ROW_ACTIONS[origin]:
            raise InvalidRequest(f"line {number + 1} ({code}): choose accept, reject or edit, "
                                 f"not {action[:20]!r}")
        if system not in ("", *PROCEDURE_SYSTEMS) or (kind == "procedure") != bool(system):
            raise InvalidRequest(f"line {number + 1} ({code}): code system {system[:20]!r} "
                                 f"does not fit a {kind}")
        rows.append(Row(kind, code, origin, action, system, value("to"),
                        value("reason", MAX_TEXT), value("poa", 1), value("performed", 10),
                        value("units", 6) or "1"))
    listed = {(row.kind, row.code) for row in rows if row.origin == "suggested"}
    setting = sheet.documents.setting
    for kind, suggestions in (("diagnosis", sheet.suggestions.diagnoses),
                              ("procedure", sheet.suggestions.procedures)):
        for suggestion in suggestions:
            if (kind, suggestion.code) not in listed:
                rows.append(_suggested_row(kind, suggestion, setting))
    search_for = fields.get("search-for", "").strip()
    target = int(search_for) if search_for.isdigit() and int(search_for) < len(rows) else None
    return State(_in_sequence(rows), _field(fields, "search-q", MAX_QUERY).strip(), target,
                 _field(fields, "discharge-status", 2).strip(),
                 _field(fields, "reason", MAX_TEXT))


def _in_sequence(rows: list[Row]) -> list[Row]:
    """Diagnoses first, then procedures, each in the order the coder gave them."""
    return [r for r in rows if r.kind == "diagnosis"] + [r for r in rows if r.kind != "diagnosis"]


# ------------------------------------------------------------------- the worksheet's buttons
def _row(state: State, argument: str) -> int:
    if not argument.isdigit() or int(argument) >= len(state.rows):
        raise InvalidRequest(f"line {argument[:10]!r} is not on the worksheet; open it again")
    return int(argument)


def _move(state: State, index: int, where: str) -> None:
    """Up, down or first among the rows of its kind (diagnoses and procedures apart)."""
    kind = state.rows[index].kind
    same = [i for i, row in enumerate(state.rows) if row.kind == kind]
    position = same.index(index)
    target = {"up": max(position - 1, 0), "down": min(position + 1, len(same) - 1),
              "first": 0}[where]
    moving = state.rows.pop(index)
    state.rows.insert(same[target], moving)


def _add(state: State, row: Row) -> str:
    """Add a code; one the engine suggested is that suggestion accepted instead."""
    same = [r for r in state.rows if r.kind == row.kind and r.code.upper() == row.code.upper()]
    if any(r.origin == "added" for r in same):
        raise InvalidRequest(f"{row.code} is on the worksheet already")
    if same:
        same[0].action = "accept"
        if row.kind == "procedure":
            same[0].performed, same[0].units = row.performed, row.units
        return f"{row.code} is one of the suggestions: it is accepted"
    if len(state.rows) >= MAX_ROWS:
        raise InvalidRequest(f"the worksheet holds at most {MAX_ROWS} codes")
    state.rows.append(row)
    state.rows = _in_sequence(state.rows)
    return f"{row.code} added"


def _added_procedure(fields: dict[str, str], setting: str) -> Row:
    code = _field(fields, "proc-code", MAX_CODE).strip().upper()
    system = _field(fields, "proc-system", 16).strip()
    if not code:
        raise InvalidRequest("type the procedure code to add")
    allowed = ("icd10pcs",) if setting == "inpatient" else ("hcpcs", "cpt")
    if system not in allowed:
        names = " or ".join(PROCEDURE_NAMES[s] for s in allowed)
        raise InvalidRequest(f"procedures of this encounter are coded in {names}, not "
                             f"{system[:20]!r}")
    return Row("procedure", code, "added", "add", system,
               performed=_field(fields, "proc-date", 10).strip(),
               units=_field(fields, "proc-units", 6).strip() or "1")


def apply_button(state: State, verb: str, argument: str, fields: dict[str, str],
                 sheet: Worksheet) -> None:
    """Carry out a button other than check and finalize on the state (nothing is stored)."""
    if verb in ("refresh", "search"):
        return
    if verb in ("up", "down", "first"):
        _move(state, _row(state, argument), verb)
    elif verb == "remove":
        index = _row(state, argument)
        if state.rows[index].origin != "added":
            raise InvalidRequest(f"{state.rows[index].code} is a suggestion: reject it instead")
        del state.rows[index]
    elif verb == "find":
        index = _row(state, argument)
        state.search_for = index
        state.query = _suggestion_title(sheet, state.rows[index]) or state.rows[index].code
    elif verb == "replace":
        index_text, _, code = argument.partition(":")
        index = _row(state, index_text)
        if not code or len(code) > MAX_CODE:
            raise InvalidRequest("choose the code that replaces it")
        row = state.rows[index]
        if row.origin != "suggested":
            raise InvalidRequest(f"{row.code} was added by hand: remove it and add the other "
                                 "code instead")
        row.action, row.to = "edit", code
        state.query, state.search_for = "", None
        state.notice = f"{row.code} is to be replaced by {code}: say why in its reason"
    elif verb in ("add", "add-typed"):
        code = (argument if verb == "add" else state.query).strip()
        if not code or len(code) > MAX_CODE:
            raise InvalidRequest("type the ICD-10-CM code to add (for example E11.9) or "
                                 "search for it by its words")
        state.notice = _add(state, Row("diagnosis", dotted(code), "added", "add"))
        state.query, state.search_for = "", None
    elif verb == "add-procedure":
        state.notice = _add(state, _added_procedure(fields, sheet.documents.setting))
    elif verb == "poa-all":
        indicator = _field(fields, "poa-all", 1).strip()
        if indicator not in POA_INDICATORS:
            raise InvalidRequest(f"choose a present-on-admission indicator "
                                 f"({', '.join(POA_INDICATORS)})")
        for row in state.rows:
            if row.kind == "diagnosis" and not row.poa and row.action not in ("reject", "leave"):
                row.poa = indicator
    else:
        raise InvalidRequest(f"the worksheet has no button {verb[:20]!r}")


def decisions_of(state: State, inpatient: bool) -> list[Decision]:
    """The rows as the slice's decisions, in sequence; a suggestion left alone is none."""
    decisions = []
    for number, row in enumerate(state.rows, start=1):
        if row.action == "leave":
            continue
        where = f"line {number} ({row.code})"
        performed = None
        if row.kind == "procedure" and row.performed:
            try:
                performed = date.fromisoformat(row.performed)
            except ValueError:
                raise InvalidRequest(f"{where}: the date performed {row.performed!r} is not "
                                     "a date (YYYY-MM-DD)") from None
        units = 1
        if row.kind == "procedure":
            if not row.units.isdigit() or not 1 <= int(row.units) <= MAX_UNITS:
                raise InvalidRequest(f"{where}: units must be a whole number from 1 to "
                                     f"{MAX_UNITS}, got {row.units!r}")
            units = int(row.units)
        poa = (row.poa or None) if row.kind == "diagnosis" and inpatient else None
        system = row.system or None
        reason = row.reason.strip() or None
        if row.origin == "added":
            decisions.append(Decision("add", row.code, reason=reason, poa=poa, system=system,
                                      performed=performed, units=units))
        elif row.action == "reject":
            decisions.append(Decision("reject", row.code, reason=reason, system=system))
        elif row.action == "edit":
            decisions.append(Decision("edit", row.code, replacement=row.to or None,
                                      reason=reason, poa=poa, system=system,
                                      performed=performed, units=units))
        else:
            decisions.append(Decision("accept", row.code, poa=poa, system=system,
                                      performed=performed, units=units))
    return decisions


# ------------------------------------------------------------------ what the page shows
@dataclass(frozen=True)
class Segment:
    """A piece of a document's text; with codes, evidence of those suggestions."""

    text: str
    codes: tuple[str, ...]
    anchor: str | None  # the id an evidence link scrolls to (an evidence span starts here)


@dataclass(frozen=True)
class DocumentView:
    id: str
    type: str
    date: str | None
    doc_status: str | None
    segments: list[Segment]


def _anchor(offset: int) -> str:
    return f"ev-{offset}"


def document_views(sheet: Worksheet) -> list[DocumentView]:
    """Each document's text cut at every evidence span's ends, so that overlapping spans of
    several suggestions are all marked; a span starts at a segment that carries its anchor."""
    text = sheet.documents.text
    spans = [(e.start, e.end, s.code) for s in [*sheet.suggestions.diagnoses,
                                                  *sheet.suggestions.procedures]
             for e in s.evidence if e.end > e.start]
    views = []
    for document in sheet.documents.documents:
        inside = [(s, e, c) for s, e, c in spans if document.start <= s and e <= document.end]
        starts = {s for s, _, _ in inside}
        cuts = sorted({document.start, document.end, *starts, *(e for _, e, _ in inside)})
        segments = []
        for start, end in zip(cuts, cuts[1:], strict=False):
            codes = tuple(sorted({c for s, e, c in inside if s <= start and end <= e}))
            segments.append(Segment(text[start:end], codes,
                                    _anchor(start) if start in starts else None))
        views.append(DocumentView(document.id, document.type, document.date,
                                  document.doc_status, segments))
    return views


@dataclass(frozen=True)
class EvidenceLink:
    anchor: str
    text: str
    section: str


@dataclass(frozen=True)
class RowView:
    """A row with what the page shows beside it."""

    index: int
    row: Row
    position: int  # 1-based among the rows of its kind: the sequence
    last: bool
    suggestion: Suggestion | None
    title: str  # the code's title (the suggestion's, or looked up for an added code)
    to_title: str  # the replacement's title, for an edit
    explanation: str | None
    evidence: list[EvidenceLink] = field(default_factory=list)


def _suggestion_title(sheet: Worksheet, row: Row) -> str | None:
    listed = sheet.suggestions.diagnoses if row.kind == "diagnosis" else \
        sheet.suggestions.procedures
    return next((s.display for s in listed if s.code == row.code), None)


class _Titles:
    """Code titles in the releases in force on the date of service (blank when not a code)."""

    def __init__(self, engine: Engine, on: date) -> None:
        self.engine = engine
        self.on = on
        self._pcs: Any = None
        self._pcs_loaded = False

    def diagnosis(self, code: str) -> str:
        if not code:
            return ""
        table = service.tabular(self.engine, self.on)
        normal = dotted(code)
        return table.title(normal) if normal in table else ""

    def procedure(self, system: str, code: str) -> str:
        if system != "icd10pcs" or not code:
            return ""  # HCPCS and CPT titles come with the claim, once checked
        if not self._pcs_loaded:
            self._pcs_loaded = True
            try:
                release = codesets.release_for(self.engine, "icd10pcs", self.on)
            except codesets.NoRelease:
                return ""  # no tables to name it from; finalizing says so
            self._pcs = codesets.model(self.engine, release)
        if self._pcs is None or not self._pcs.is_valid(code.upper()):
            return ""
        return str(self._pcs.title(code.upper()))


def row_views(state: State, sheet: Worksheet, engine: Engine) -> list[RowView]:
    titles = _Titles(engine, sheet.documents.date_of_service)
    suggestions = {("diagnosis", s.code): s for s in sheet.suggestions.diagnoses}
    suggestions.update({("procedure", s.code): s for s in sheet.suggestions.procedures})
    anchors = {segment.anchor for view in document_views(sheet) for segment in view.segments}
    counts = {kind: sum(1 for row in state.rows if row.kind == kind) for kind in KINDS}
    seen = dict.fromkeys(KINDS, 0)
    views = []
    for index, row in enumerate(state.rows):
        seen[row.kind] += 1
        suggestion = suggestions.get((row.kind, row.code)) if row.origin == "suggested" else None
        if suggestion is not None:
            title = suggestion.display
        elif row.kind == "diagnosis":
            title = titles.diagnosis(row.code)
        else:
            title = titles.procedure(row.system, row.code)
        to_title = ""
        if row.action == "edit" and row.to:
            to_title = titles.diagnosis(row.to) if row.kind == "diagnosis" else \
                titles.procedure(row.system, row.to)
        links: list[EvidenceLink] = []
        for evidence in suggestion.evidence if suggestion is not None else []:
            anchor = _anchor(evidence.start)
            if anchor in anchors and all(link.anchor != anchor for link in links):
                links.append(EvidenceLink(anchor, evidence.text,
                                          evidence.section.replace("_", " ")))
        views.append(RowView(index, row, seen[row.kind], seen[row.kind] == counts[row.kind],
                             suggestion, title, to_title,
                             sheet.explanations.get(row.code) if suggestion else None,
                             links[:EVIDENCE_LINKS]))
    return views


@dataclass(frozen=True)
class ClaimLine:
    sequence: int
    code: str
    display: str
    detail: str  # POA (diagnoses), date performed and units (procedures)
    principal: bool = False


@dataclass(frozen=True)
class ClaimView:
    """The stored Claim as the worksheet shows it after finalizing."""

    id: str
    version: str
    status: str
    kind: str
    diagnoses: list[ClaimLine]
    procedures: list[ClaimLine]
    flags: list[str]


def _coding(concept: dict[str, Any]) -> dict[str, Any]:
    codings = concept.get("coding") or [{}]
    return dict(codings[0])


def claim_view(claim: Resource) -> ClaimView:
    diagnoses = []
    for entry in claim.get("diagnosis") or []:
        coding = _coding(entry.get("diagnosisCodeableConcept") or {})
        poa = next((str(c.get("code")) for c in (entry.get("onAdmission") or {}).get("coding")
                    or [] if c.get("system") == POA_NUBC), "")
        principal = any(c.get("code") == "principal" for t in entry.get("type") or []
                        for c in t.get("coding") or [])
        diagnoses.append(ClaimLine(int(entry.get("sequence", 0)), str(coding.get("code", "")),
                                   str(coding.get("display", "")),
                                   f"POA {poa} ({POA_INDICATORS.get(poa, poa)})" if poa else "",
                                   principal))
    procedures = []
    for entry in claim.get("procedure") or []:
        coding = _coding(entry.get("procedureCodeableConcept") or {})
        procedures.append(ClaimLine(int(entry.get("sequence", 0)), str(coding.get("code", "")),
                                    str(coding.get("display", "")),
                                    f"performed {str(entry.get('date', ''))[:10]}"))
    for entry in claim.get("item") or []:
        coding = _coding(entry.get("productOrService") or {})
        units = (entry.get("quantity") or {}).get("value", 1)
        procedures.append(ClaimLine(int(entry.get("sequence", 0)), str(coding.get("code", "")),
                                    str(coding.get("display", "")),
                                    f"on {entry.get('servicedDate', '')}, {units} unit"
                                    f"{'s' if units != 1 else ''}"))
    flags = [str(tag.get("display") or tag.get("code")) for tag in
             (claim.get("meta") or {}).get("tag") or []
             if tag.get("system") == TAG_SYSTEM and tag.get("code") != "coded"]
    kind = _coding(claim.get("type") or {}).get("display", "")
    return ClaimView(str(claim["id"]), str((claim.get("meta") or {}).get("versionId", "")),
                     str(claim.get("status", "")), str(kind), diagnoses, procedures, flags)


def _search(engine: Engine, query: str, on: date | None) -> list[Hit]:
    """The best hit of each code (a code matched by its title and an inclusion term is
    one line with one Add button)."""
    try:
        hits = service.search(engine, query, limit=SEARCH_RESULTS * 2, on=on)
    except CodeSetError as exc:
        raise InvalidRequest(str(exc)) from None
    best: dict[str, Hit] = {}
    for hit in hits:
        best.setdefault(hit.code, hit)
    return list(best.values())[:SEARCH_RESULTS]


def worksheet_context(guarded: GuardedWorksheet, state: State, engine: Engine
                      ) -> dict[str, Any]:
    """Everything the worksheet page shows for a state of the form."""
    sheet = guarded.sheet
    documents = sheet.documents
    views = row_views(state, sheet, engine)
    hits: list[Hit] = []
    search_error = None
    if state.query:
        try:
            hits = _search(engine, state.query, documents.date_of_service)
        except InvalidRequest as exc:
            search_error = exc.diagnostics
    disposition = (guarded.encounter.get("hospitalization") or {}).get(
        "dischargeDisposition") or {}
    replacing = state.rows[state.search_for].code if state.search_for is not None else ""
    return {
        "tab": None, "sheet": sheet, "documents": documents, "encounter": guarded.encounter,
        "encounter_id": documents.encounter_id, "patient": guarded.patient,
        "patient_name": human_name(guarded.patient),
        "class_name": CLASS_NAMES.get(documents.encounter_class, documents.encounter_class),
        "inpatient": documents.setting == "inpatient",
        "disposition": disposition.get("text") or _coding(disposition).get("display", ""),
        "views": document_views(sheet),
        "diagnoses": [v for v in views if v.row.kind == "diagnosis"],
        "procedures": [v for v in views if v.row.kind == "procedure"],
        "row_count": len(state.rows), "state": state, "hits": hits,
        "search_error": search_error, "replacing": replacing, "limit": SEARCH_RESULTS,
        "actions": ROW_ACTIONS, "action_words": ACTION_WORDS, "poa_choices": POA_INDICATORS,
        "statuses": grouper.DISCHARGE_STATUSES, "procedure_names": PROCEDURE_NAMES,
        "claim": claim_view(sheet.claim) if sheet.claim is not None else None,
        "edits": None, "edit_errors": 0, "error": None, "issues": [], "finalized": None}


# -------------------------------------------------------------------------- the worksheet
@router.get("/coding/encounters/{encounter_id}", dependencies=[Depends(PAGE_READ)])
def worksheet_page(request: Request, encounter_id: str, finalized: str = "") -> Response:
    """The worksheet as the engine proposes it, or as it was finalized (with the stored
    Claim) when the encounter was coded before."""
    access = access_of(request)
    _require_coding(access)
    access.details["page"] = "coding worksheet"
    store = store_of(request)
    guarded = guarded_worksheet(access, store, encounter_id)
    state = recorded_state(guarded) or initial_state(guarded)
    context = worksheet_context(guarded, state, store.engine)
    if finalized and context["claim"] is not None:
        context["finalized"] = finalized[:64]
    return render(request, "coding_worksheet.html", context)


@router.post("/coding/encounters/{encounter_id}", dependencies=[Depends(PAGE_WORKSHEET)])
async def worksheet_action(request: Request, encounter_id: str) -> Response:
    """A button of the worksheet: the page again with the change made, the edits checked,
    or (finalize) the codes stored and the page with the Claim. A refusal shows the page with
    the message, as the coder left it, and stores nothing."""
    access = access_of(request)
    fields = await read_form(request)
    _require_coding(access)
    access.details["page"] = "coding worksheet"
    store = store_of(request)
    verb, _, argument = fields.get("do", "refresh").partition(":")
    source = request.client.host if request.client else None

    def work() -> tuple[dict[str, Any] | None, int, str | None]:
        guarded = guarded_worksheet(access, store, encounter_id)
        state = state_from_form(fields, guarded.sheet)
        inpatient = guarded.sheet.documents.setting == "inpatient"
        status, error, issues = 200, None, []
        found: list[Edit] | None = None
        try:
            if verb not in ("check", "finalize"):
                apply_button(state, verb, argument, fields, guarded.sheet)
            elif verb == "check":
                _plan, found = check_decisions(
                    store, guarded, decisions_of(state, inpatient), coder_of(access),
                    discharge_status=_discharge(state, inpatient))
            else:
                for resource_type in ("Condition", "Procedure", "Claim"):
                    access.permit(resource_type, "c")
                    access.permit(resource_type, "u")
                access.permit("Encounter", "u")
                access.action = AuditAction.UPDATE  # a refused attempt is audited as one
                finalized, _found = finalize(
                    store, guarded, decisions_of(state, inpatient), coder_of(access),
                    reason=state.reason, discharge_status=_discharge(state, inpatient),
                    before_commit=audit_finalization(access, source))
                return None, 303, (f"/coding/encounters/{encounter_id}?finalized="
                                   f"{finalized.provenance_id}#stored-claim")
        except (InvalidRequest, Conflict) as exc:
            status, error = exc.status, exc.diagnostics
            issues = [i.diagnostics for i in exc.issues] if len(exc.issues) > 1 else []
            if isinstance(exc, EditsFailed):
                found = exc.edits
        context = worksheet_context(guarded, state, store.engine)
        context.update(error=error, issues=issues, edits=found,
                       edit_errors=len(errors(found or [])))
        return context, status, None

    context, status, location = await run_in_threadpool(work)
    if location is not None:
        return RedirectResponse(location, status_code=303)
    assert context is not None
    return render(request, "coding_worksheet.html", context, status)


def _discharge(state: State, inpatient: bool) -> str | None:
    return discharge_status_of(state.discharge_status) if inpatient else None


@router.get("/coding/worksheet-search", dependencies=[Depends(PAGE)])
def worksheet_search(request: Request) -> Response:
    """The code search's results inside the worksheet as the coder types (htmx): reference
    data only, so not audited. Problems are said in the results, answered 200 so that htmx
    shows them where the results go."""
    access = access_of(request)
    _require_coding(access)
    params = request.query_params
    query = params.get("search-q", "").strip()
    search_for = params.get("search-for", "").strip()
    replacing = params.get("search-replacing", "").strip()[:MAX_CODE]
    hits: list[Hit] = []
    error = None
    try:
        if len(query) > MAX_QUERY:
            raise InvalidRequest(f"the search has {len(query)} characters; at most {MAX_QUERY} "
                                 "are accepted")
        on_text = params.get("search-date", "").strip()
        try:
            on = date.fromisoformat(on_text) if on_text else None
        except ValueError:
            raise InvalidRequest(f"search-date {on_text[:20]!r} is not a date") from None
        if query:
            hits = _search(store_of(request).engine, query, on)
    except InvalidRequest as exc:
        error = exc.diagnostics
    return render(request, "coding_ws_search.html", {
        "hits": hits, "state": State([], query[:MAX_QUERY],
                                     int(search_for) if search_for.isdigit() else None),
        "replacing": replacing if search_for.isdigit() else "", "search_error": error,
        "limit": SEARCH_RESULTS})


# ----------------------------------------------------------------------------- the reports
@dataclass(frozen=True)
class Reports:
    productivity: list[feedback.Productivity]
    accuracy: feedback.AccuracyReport


@router.get("/coding/reports", dependencies=[Depends(PAGE)])
def coding_reports(request: Request, since: str = "", until: str = "") -> Response:
    """Productivity and accuracy per coder over a period (the last 30 days by default)."""
    access = access_of(request)
    _require_coding(access)
    engine = store_of(request).engine
    today = datetime.now(UTC).date()
    context: dict[str, Any] = {"tab": "reports", "since": since[:10], "until": until[:10],
                               "reports": None, "error": None}
    try:
        start, end = report_period(since[:20] or None, until[:20] or None, today=today)
    except InvalidRequest as exc:
        context["error"] = exc.diagnostics
        return render(request, "coding_reports.html", context, exc.status)
    context.update(since=start.isoformat(), until=end.isoformat(), reports=Reports(
        feedback.productivity(engine, since=start, until=end),
        feedback.accuracy(engine, since=start, until=end)))
    return render(request, "coding_reports.html", context)
