"""The encoder in the workbench: ICD-10-CM search and code details, and the ICD-10-PCS builder.

The encoder shows reference data (the code sets), never a patient, so its pages are not
audited when they answer (like ``/home``); a refusal is audited as every refusal is. Only
roles with the coding capability may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Engine

from chartkeeper.api.auth import access_of
from chartkeeper.coding import codesets, service
from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.coding.pcs import PcsCodeError
from chartkeeper.coding.search import Hit
from chartkeeper.security.access import ROLE_POLICIES, Capability, Forbidden
from chartkeeper.security.identity import Role
from chartkeeper.store.errors import InvalidRequest, NotFound
from chartkeeper.web.pages import PAGE, render, store_of

router = APIRouter(include_in_schema=False)
MAX_QUERY = 200  # as the coding API's search
MAX_CODE = 16  # the longest ICD-10-CM code is 8 characters; a block range is 7
PCS_LENGTH = 7  # characters of an ICD-10-PCS code, and of a complete ICD-10-CM code
RESULTS = 25
# The kinds of instructional notes in the order a coder reads them, with their printed names.
NOTE_GROUPS = (
    ("excludes1", "Excludes1"), ("excludes2", "Excludes2"), ("includes", "Includes"),
    ("inclusionTerm", "Inclusion terms"), ("codeFirst", "Code first"),
    ("useAdditionalCode", "Use additional code"), ("codeAlso", "Code also"),
    ("notes", "Notes"), ("sevenChrNote", "7th character"),
)


def _coding_engine(request: Request) -> Engine:
    """The store's engine, once the caller's role is known to have the coding capability."""
    principal = access_of(request).who()
    if not principal.has(Capability.coding):
        allowed = ", ".join(role.value.replace("_", " ") for role, policy in ROLE_POLICIES.items()
                            if Capability.coding in policy.capabilities
                            and role is not Role.service)
        raise Forbidden(f"the encoder is for: {allowed}; the role "
                        f"{principal.role.value.replace('_', ' ')} does not code")
    engine: Engine = store_of(request).engine
    return engine


# ------------------------------------------------------------------------ ICD-10-CM codes
@dataclass(frozen=True)
class NoteShown:
    text: str
    origin: str  # the code the note is written at
    origin_title: str
    own: bool  # written at the code shown itself


@dataclass(frozen=True)
class NoteGroup:
    kind: str
    label: str
    notes: list[NoteShown]


@dataclass(frozen=True)
class SeventhShown:
    character: str
    meaning: str
    code: str | None  # the complete code, when the tabular lists it


@dataclass(frozen=True)
class CodePage:
    """One ICD-10-CM code as the encoder shows it."""

    detail: service.CodeDetail
    hierarchy: list[tuple[str, str]]  # (code, link text) chapter first
    notes: list[NoteGroup]
    seventh: list[SeventhShown]
    status: str  # whether it can be reported, in words


def _link_text(code: str, title: str) -> str:
    if code.isdigit():
        return f"Chapter {code}: {title}"
    if "-" in code:
        return title  # a block's title already ends with its range
    return f"{code} {title}"


def _complete_codes(detail: service.CodeDetail) -> dict[str, str]:
    """The complete codes one 7th character away (placeholder X's filled in), by that
    character: S72.001 -> {"A": "S72.001A", ...}, S02.0 -> {"A": "S02.0XXA", ...}."""
    complete = {}
    for child, _title in detail.children:
        filler = child[len(detail.code):-1]
        if (child.startswith(detail.code) and len(child.replace(".", "")) == PCS_LENGTH
                and set(filler) <= {"X"}):
            complete[child[-1]] = child
    return complete


def _status(detail: service.CodeDetail, one_character_away: bool) -> str:
    if detail.billable:
        return "Billable: a complete code that can be reported"
    if detail.kind == "chapter":
        return "A chapter: not a code that can be reported"
    if detail.kind == "block":
        return "A block of categories: not a code that can be reported"
    if detail.seventh and one_character_away:
        return "Not billable: add a 7th character"
    if detail.seventh:
        return "Not billable: choose a more specific code below, then add a 7th character"
    return "Not billable: a header; choose one of the codes below it"


def _seventh_note(engine: Engine, detail: service.CodeDetail) -> NoteShown | None:
    """The tabular's 7th-character instruction in force at the code, with the code where it
    is written (the model repeats it on every code below that one)."""
    table = service.tabular(engine)
    chain = [detail.code, *(code for code, _title in reversed(detail.ancestors))]
    written = [(code, table.get(code).seven_chr_note) for code in chain]
    found = [(code, note) for code, note in written if note]
    if not found:
        return None
    text = found[0][1]
    assert text is not None
    origin = [code for code, note in found if note == text][-1]
    return NoteShown(text, origin, table.get(origin).title, origin == detail.code)


def code_page(engine: Engine, code: str) -> CodePage:
    """A code with its hierarchy, its notes grouped by kind and its 7th characters."""
    detail = service.detail(engine, code)
    titles = dict(detail.ancestors)
    titles[detail.code] = detail.title
    shown: dict[str, list[NoteShown]] = {kind: [] for kind, _label in NOTE_GROUPS}
    for note in detail.notes:
        origin = note["from"]
        shown.setdefault(note["kind"], []).append(NoteShown(
            note["text"], origin, titles.get(origin, ""), origin == detail.code))
    seventh_note = _seventh_note(engine, detail)
    if seventh_note is not None:
        shown["sevenChrNote"].append(seventh_note)
    labels = dict(NOTE_GROUPS)
    groups = [NoteGroup(kind, labels.get(kind, kind), notes)
              for kind, notes in shown.items() if notes]
    complete = _complete_codes(detail)
    seventh = [SeventhShown(character, meaning, complete.get(character))
               for character, meaning in detail.seventh.items()]
    hierarchy = [(c, _link_text(c, t)) for c, t in detail.ancestors]
    return CodePage(detail, hierarchy, groups, seventh, _status(detail, bool(complete)))


def _query(value: str, name: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidRequest(f"the {name} has {len(value)} characters; at most {limit} are "
                             "accepted")
    return value


@router.get("/coding/encoder", dependencies=[Depends(PAGE)])
def encoder(request: Request, q: str = "", code: str = "") -> Response:
    """ICD-10-CM search (results as the coder types) and, with ``code``, that code's page.

    A search too long or a code that does not exist answers 400 or 404 with the encoder
    itself, so that the coder can search again at once."""
    engine = _coding_engine(request)
    partial = bool(request.headers.get("hx-request"))
    context: dict[str, Any] = {"q": q.strip()[:MAX_QUERY], "hits": [], "limit": RESULTS,
                               "collapsed": False, "code": "", "page": None, "error": None}
    try:
        context["q"] = _query(q, "search", MAX_QUERY)
        context["code"] = _query(code, "code", MAX_CODE)
        if context["q"]:
            context["hits"] = _search(engine, context["q"])
        if context["code"] and not partial:
            context["page"] = _code_page(engine, context["code"])
            context["code"] = context["page"].detail.code
            context["collapsed"] = True
    except (InvalidRequest, NotFound) as exc:
        context.update(error=exc.diagnostics, code="")
        return render(request, "coding_results.html" if partial else "coding_encoder.html",
                      context, exc.status)
    return render(request, "coding_results.html" if partial else "coding_encoder.html",
                  context)


def _search(engine: Engine, query: str) -> list[Hit]:
    try:
        return service.search(engine, query, limit=RESULTS)
    except CodeSetError as exc:
        raise InvalidRequest(str(exc)) from None


def _code_page(engine: Engine, code: str) -> CodePage:
    try:
        return code_page(engine, code)
    except UnknownCode as exc:
        raise NotFound(f"{exc}; search for it by its words instead") from None
    except CodeSetError as exc:
        raise InvalidRequest(str(exc)) from None


# ------------------------------------------------------------------------ ICD-10-PCS builder
def _import_year(engine: Engine) -> int:
    """The fiscal year whose PCS tables match the ICD-10-CM release in use (the packaged one
    when none is imported yet): the year the import command's example names."""
    imported = [r for r in codesets.releases(engine, "icd10cm") if r.effective_to]
    if imported:
        newest = max(imported, key=lambda r: r.effective_from)
        assert newest.effective_to is not None
        return newest.effective_to.year
    return codesets.PACKAGED_ICD10CM_DATES[1].year


@router.get("/coding/encoder/pcs", dependencies=[Depends(PAGE)])
def pcs_builder(request: Request, prefix: str = "") -> Response:
    """The ICD-10-PCS builder: the characters chosen so far, the valid values for the next
    one, and the code with its title once all seven are chosen."""
    engine = _coding_engine(request)
    prefix = _query(prefix, "ICD-10-PCS code", PCS_LENGTH).upper()
    error = None
    status = 200
    try:
        step = service.pcs_step(engine, prefix)
    except codesets.NoRelease:
        year = _import_year(engine)
        return render(request, "coding_pcs.html", {"step": None, "year": year, "error": None})
    except PcsCodeError as exc:
        # Show the builder at the characters that are allowed, and say which one is not.
        error, status = str(exc), 400
        allowed = prefix[:exc.position - 1] if exc.position else ""
        step = service.pcs_step(engine, allowed)
    except CodeSetError as exc:
        raise InvalidRequest(str(exc)) from None
    return render(request, "coding_pcs.html", {"step": step, "error": error,
                                               "year": None}, status)
