"""The coder's decisions on a worksheet, checked against the encounter, its suggestions and
the code sets: ``prepare`` makes the ``Plan`` that ``worksheet_write`` stores, or reports
every problem at once with nothing written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

from chartkeeper.coding import cac, feedback
from chartkeeper.coding.cac import Suggestion, Suggestions
from chartkeeper.coding.icd10cm import dotted
from chartkeeper.coding.worksheet import (
    ACTIONS,
    POA_INDICATORS,
    PROCEDURE_NAMES,
    PROCEDURE_SYSTEMS,
    Action,
    Coder,
    Decision,
    DecisionError,
    NotCodable,
)
from chartkeeper.coding.worksheet_codes import CodeChecker, Problems
from chartkeeper.coding.worksheet_text import EncounterDocuments, encounter_text
from chartkeeper.coding.worksheet_view import icd10cm_release, suggestions_for
from chartkeeper.store.service import Store

CODABLE_STATUS = "finished"
MAX_REASON = 500


@dataclass(frozen=True)
class FinalDiagnosis:
    code: str
    display: str
    poa: str | None


@dataclass(frozen=True)
class FinalProcedure:
    system: str
    code: str
    display: str | None
    performed: date
    units: int


@dataclass
class Plan:
    """Decisions checked against the encounter, its suggestions and the code sets: what
    ``write`` stores. Built with reads only, so that nothing is locked while it is checked."""

    documents: EncounterDocuments
    coder: Coder
    reason: str | None
    diagnoses: list[FinalDiagnosis]
    procedures: list[FinalProcedure]
    feedback: list[feedback.FeedbackRow]  # provenance id and time filled in by ``write``
    releases: dict[str, str]
    warnings: list[str]


def prepare(store: Store, encounter_id: str, decisions: Sequence[Decision], coder: Coder,
            *, reason: str | None = None) -> Plan:
    """Check the decisions; every problem is reported at once and nothing is written."""
    if reason is not None and len(reason) > MAX_REASON:
        raise DecisionError(f"the reason is longer than {MAX_REASON} characters")
    with store.read() as txn:
        documents = encounter_text(txn, encounter_id)
    status = documents.encounter.get("status")
    if status != CODABLE_STATUS:
        raise NotCodable(f"Encounter/{encounter_id} is {status}: final codes are assigned "
                         f"once the encounter is {CODABLE_STATUS}")
    release, table = icd10cm_release(store.engine, documents)
    raw, shown, _ = suggestions_for(store.engine, documents)
    feedback.create_feedback_schema(store.engine)
    problems = Problems()
    releases = {"icd10cm": release.version}
    warnings = list(documents.skipped)
    checker = CodeChecker(store.engine, documents, table, release, problems, releases,
                          warnings)
    plan = Plan(documents, coder, reason, [], [], [], releases, warnings)
    _apply_decisions(plan, decisions, raw, shown, checker, problems)
    problems.raise_any(encounter_id)
    return plan


def _apply_decisions(plan: Plan, decisions: Sequence[Decision], raw: Suggestions,
                     shown: Suggestions, checker: CodeChecker, problems: Problems) -> None:
    documents = plan.documents
    inpatient = documents.setting == "inpatient"
    offered: dict[tuple[str, str], tuple[int, Suggestion]] = {}
    for kind, listed in (("diagnosis", shown.diagnoses), ("procedure", shown.procedures)):
        for rank, suggestion in enumerate(listed, start=1):
            system = None if kind == "diagnosis" else "procedure"
            offered[(kind, _normal(suggestion.code, system))] = (rank, suggestion)
    engine_confidence = {(s.code): s.confidence for s in [*raw.diagnoses, *raw.procedures]}
    decided: dict[tuple[str, str], Decision] = {}
    added: list[Decision] = []
    finals: set[tuple[str | None, str]] = set()
    for number, decision in enumerate(decisions):
        where = f"decisions[{number}]"
        if not _decision_shape(decision, where, inpatient, problems):
            continue
        code = _normal(decision.code, decision.system)
        key = (decision.kind, code)
        if decision.action == "add" and key in offered:
            # Added by hand but on the list (a learned suggestion the coder had not seen):
            # that is accepting the suggestion.
            decision = replace(decision, action="accept")
        if decision.action != "add":
            if key not in offered:
                problems.add(DecisionError, f"{where}.code",
                             f"{decision.action} {decision.code}: not among the suggestions; "
                             "add it instead")
                continue
            if key in decided:
                problems.add(DecisionError, f"{where}.code",
                             f"{decision.code} is decided twice")
                continue
            decided[key] = decision
        else:
            added.append(decision)
        final = decision.final_code
        if final is None:
            continue
        final = _normal(final, decision.system)
        if (decision.system, final) in finals:
            problems.add(DecisionError, f"{where}.code", f"{final} is coded twice")
            continue
        finals.add((decision.system, final))
        if decision.kind == "diagnosis":
            display = checker.diagnosis(final, where)
            if display is not None:
                plan.diagnoses.append(FinalDiagnosis(final, display,
                                                     decision.poa if inpatient else None))
        else:
            assert decision.system is not None
            performed = decision.performed or documents.date_of_service
            if not documents.start <= performed <= documents.date_of_service:
                problems.add(DecisionError, f"{where}.performed",
                             f"{final}: performed on {performed}, outside the encounter "
                             f"({documents.start}..{documents.date_of_service})")
                continue
            checked = checker.procedure(decision.system, final, where)
            if checked is not None:
                plan.procedures.append(FinalProcedure(decision.system, final, checked[0],
                                                      performed, decision.units))
    undecided = [code for (kind, code), (_, s) in offered.items()
                 if s.proposed and (kind, code) not in decided]
    if undecided:
        problems.add(DecisionError, "decisions",
                     f"no decision on the proposed suggestion(s) {', '.join(undecided)}: "
                     "accept, edit or reject each")
    if not any(d.kind == "diagnosis" and d.action != "reject" for d in decisions):
        problems.add(DecisionError, "decisions",
                     "no final diagnosis: a coded encounter needs at least one")
    elif plan.diagnoses and inpatient and not cac._may_be_principal(plan.diagnoses[0].code):
        problems.add(DecisionError, "decisions",
                     f"{plan.diagnoses[0].code} cannot be the principal diagnosis (external "
                     "causes and birth outcomes never are, guidelines I.C.20.a, I.C.15.b.5): "
                     "put another diagnosis first")
    plan.feedback = _feedback_rows(plan, added, offered, decided, engine_confidence)


def _decision_shape(decision: Decision, where: str, inpatient: bool,
                    problems: Problems) -> bool:
    """Reports what is incomplete or does not fit the setting; False when the decision is
    too broken to check further (no action, no code, an unknown code system)."""
    if decision.action not in ACTIONS:
        problems.add(DecisionError, f"{where}.action",
                     f"{decision.action!r} is not one of {', '.join(ACTIONS)}")
        return False
    if not decision.code or not decision.code.strip():
        problems.add(DecisionError, f"{where}.code", "a decision needs a code")
        return False
    if decision.action == "edit":
        if not decision.replacement or not decision.replacement.strip():
            problems.add(DecisionError, f"{where}.replacement",
                         f"edit {decision.code}: the code it becomes is missing")
        elif _normal(decision.replacement, decision.system) == _normal(decision.code,
                                                                        decision.system):
            problems.add(DecisionError, f"{where}.replacement",
                         f"edit {decision.code} to itself: accept it instead")
        if not decision.reason or not decision.reason.strip():
            problems.add(DecisionError, f"{where}.reason",
                         f"edit {decision.code}: say why the code changes")
    elif decision.replacement is not None:
        problems.add(DecisionError, f"{where}.replacement",
                     f"{decision.action} {decision.code}: only an edit has a replacement")
    if decision.reason is not None and len(decision.reason) > MAX_REASON:
        problems.add(DecisionError, f"{where}.reason",
                     f"the reason is longer than {MAX_REASON} characters")
    if decision.system is not None and decision.system not in PROCEDURE_SYSTEMS:
        problems.add(DecisionError, f"{where}.system",
                     f"{decision.system!r} is not one of {', '.join(PROCEDURE_SYSTEMS)} "
                     "(leave it empty for an ICD-10-CM diagnosis)")
        return False
    if decision.action != "reject":
        _setting_fits(decision, where, inpatient, problems)
    return True


def _setting_fits(decision: Decision, where: str, inpatient: bool,
                  problems: Problems) -> None:
    if decision.kind == "diagnosis":
        if inpatient and decision.poa not in POA_INDICATORS:
            problems.add(DecisionError, f"{where}.poa",
                         f"{decision.code}: an inpatient diagnosis needs its present-on-"
                         f"admission indicator, one of {', '.join(POA_INDICATORS)} (got "
                         f"{decision.poa!r})")
        elif not inpatient and decision.poa is not None:
            problems.add(DecisionError, f"{where}.poa",
                         f"{decision.code}: present on admission is reported for inpatient "
                         "stays only")
        if decision.performed is not None or decision.units != 1:
            problems.add(DecisionError, f"{where}",
                         f"{decision.code}: a diagnosis has no performed date or units")
        return
    if inpatient and decision.system != "icd10pcs":
        problems.add(DecisionError, f"{where}.system",
                     f"{decision.code}: procedures of an inpatient stay are coded in "
                     f"ICD-10-PCS, not {PROCEDURE_NAMES[str(decision.system)]}")
    if not inpatient and decision.system == "icd10pcs":
        problems.add(DecisionError, f"{where}.system",
                     f"{decision.code}: outpatient procedures are coded in HCPCS or CPT, not "
                     "ICD-10-PCS")
    if inpatient and decision.performed is None:
        problems.add(DecisionError, f"{where}.performed",
                     f"{decision.code}: an ICD-10-PCS procedure needs the date performed")
    if decision.poa is not None:
        problems.add(DecisionError, f"{where}.poa",
                     f"{decision.code}: present on admission is for diagnoses")
    if decision.units < 1 or (decision.system == "icd10pcs" and decision.units != 1):
        problems.add(DecisionError, f"{where}.units",
                     f"{decision.code}: units must be 1 or more (1 for ICD-10-PCS), got "
                     f"{decision.units}")


def _normal(code: str, system: str | None) -> str:
    """A code as stored: ICD-10-CM dotted, the others upper case."""
    return dotted(code) if system is None else code.strip().upper()


def _feedback_rows(plan: Plan, added: Sequence[Decision],
                   offered: dict[tuple[str, str], tuple[int, Suggestion]],
                   decided: dict[tuple[str, str], Decision],
                   engine_confidence: dict[str, float]) -> list[feedback.FeedbackRow]:
    documents, coder = plan.documents, plan.coder
    stamp = datetime.now(UTC)
    rows = []
    outcome_of: dict[Action, feedback.Outcome] = {
        "accept": "accepted", "reject": "rejected", "edit": "edited", "add": "added"}
    titles = {d.code: d.display for d in plan.diagnoses}
    titles.update({p.code: p.display or p.code for p in plan.procedures})
    coded = {("diagnosis", d.code) for d in plan.diagnoses} | {
        ("procedure", p.code) for p in plan.procedures}
    for (kind, code), (rank, suggestion) in offered.items():
        decision = decided.get((kind, code))
        final = None
        outcome: feedback.Outcome = "rejected"
        if decision is not None:
            outcome = outcome_of[decision.action]
            if decision.final_code is not None:
                final = _normal(decision.final_code, decision.system)
        elif (kind, code) in coded:
            # Left alone, yet coded through another decision (an edit to this very code).
            outcome, final = "accepted", code
        rows.append(feedback.FeedbackRow(
            documents.encounter_id, documents.setting, kind, outcome,
            coder.user, coder.role, stamp, "", suggested_code=code,
            confidence=engine_confidence.get(suggestion.code), score=suggestion.confidence,
            rank=rank, proposed=suggestion.proposed,
            section=suggestion.evidence[0].section if suggestion.evidence else None,
            final_code=final, final_display=titles.get(final or ""),
            explicit=decision is not None,
            reason=decision.reason if decision is not None else None))
    for decision in added:
        code = _normal(decision.code, decision.system)
        rows.append(feedback.FeedbackRow(
            documents.encounter_id, documents.setting, decision.kind, "added", coder.user,
            coder.role, stamp, "", final_code=code, final_display=titles.get(code),
            reason=decision.reason))
    return rows
