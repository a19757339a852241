"""The history of the MPI's decisions: merges, links and their undos, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chartkeeper.mpi.merge import UNDO, USER_SYSTEM, activity_of, undo_of
from chartkeeper.store.service import Txn

Resource = dict[str, Any]


@dataclass(frozen=True)
class DecisionRow:
    """One merge, link or undo as the history lists it."""

    provenance: Resource
    activity: str  # merge, link, unmerge, unlink
    recorded: str
    user: str
    role: str
    reason: str
    patients: list[str]  # the Patient ids it wrote
    undone_by: str | None = None  # for a merge or link: the Provenance that undid it
    undoes: str | None = None  # for an undo: the decision it undid

    @property
    def can_undo(self) -> bool:
        return self.activity in UNDO and self.undone_by is None


def _decision_row(provenance: Resource, activity: str, undone: str | None) -> DecisionRow:
    agent = (provenance.get("agent") or [{}])[0]
    who = agent.get("who") or {}
    patients = []
    for target in provenance.get("target") or []:
        parts = str(target.get("reference", "")).split("/")
        if parts[0] == "Patient" and len(parts) > 1 and parts[1] not in patients:
            patients.append(parts[1])
    entity = next((str(e["what"].get("reference", "")).removeprefix("Provenance/")
                   for e in provenance.get("entity") or []
                   if e.get("role") == "revision" and "what" in e), None)
    return DecisionRow(
        provenance, activity, str(provenance.get("recorded", "")),
        str((who.get("identifier") or {}).get("value") or who.get("display") or ""),
        str(((agent.get("role") or [{}])[0]).get("text", "")),
        str(((provenance.get("reason") or [{}])[0]).get("text", "")), patients,
        undone, entity)


def recent_decisions(txn: Txn, count: int = 50, offset: int = 0
                     ) -> tuple[list[DecisionRow], bool]:
    """The merges, links and their undos people and batch runs made, newest first, and
    whether there are more. (R4 has no ``activity`` search parameter on Provenance: the
    decisions are the Provenances whose agent is a Chartkeeper user, less any other kind.)"""
    page = txn.search_params("Provenance", [
        ("agent:identifier", f"{USER_SYSTEM}|"), ("_sort", "-recorded"),
        ("_count", str(count)), ("_offset", str(offset)), ("_total", "none")])
    decisions = [(p, a) for p in page.matches if (a := activity_of(p)) is not None]
    undone = undo_of(txn, [str(p["id"]) for p, a in decisions if a in UNDO])
    rows = [_decision_row(p, a, undone.get(str(p["id"]))) for p, a in decisions]
    return rows, len(page.matches) == count
