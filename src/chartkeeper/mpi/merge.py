"""The MPI's decisions on two patient records: merge and link, and their exact undo.

**Merge** (two registrations of one person, one to keep): both Patients stay. The prior one
becomes inactive with ``link`` *replaced-by* the survivor, the survivor gets *replaces*; with
``mode="repoint"`` (the default) every resource that refers to the prior Patient (encounters,
results, documents, claims, tasks...) is changed to refer to the survivor; with
``mode="federate"`` the clinical records stay where they are and readers follow the links.
**Link** (the same person, both records kept in use, e.g. two facilities' registrations): each
Patient gets *seealso* the other.

Every decision is one ``Provenance`` in the same transaction: its activity is the ISO 21089
lifecycle event (``merge``, ``link``; ``unmerge``, ``unlink`` for an undo), its ``target``
the exact version each write produced, its agent the user and role, its ``reason`` why.
Provenance, AuditEvent and the MPI's own review Tasks are records of what happened and are
never re-pointed.

**Undo** reads the decision's Provenance: a resource not changed since is put back to its
version before the decision, element for element; one changed since keeps the later change
and only loses what the decision did (the references it re-pointed, the links it added). The
undo is a Provenance of its own whose ``entity`` (role *revision*) names the decision; a
decision is undone at most once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from chartkeeper.store.errors import Conflict, Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Txn, new_id, now_instant, referencing

Resource = dict[str, Any]
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
USER_SYSTEM = "urn:chartkeeper:user"
DECISIONS = {"merge": "Merge Record Lifecycle Event", "link": "Link Record Lifecycle Event",
             "unmerge": "Unmerge Record Lifecycle Event",
             "unlink": "Unlink Record Lifecycle Event"}
UNDO = {"merge": "unmerge", "link": "unlink"}
REVIEW_TASK_CODE = ("urn:chartkeeper:him-task", "duplicate-review")
# Records of what happened: they keep naming the patient they named.
NOT_REPOINTED = frozenset({"Patient", "Provenance", "AuditEvent"})
MergeMode = Literal["repoint", "federate"]


class DecisionRefused(Conflict):
    """The decision contradicts the records as they stand (already merged, undone...)."""

    issue_code = "business-rule"


@dataclass(frozen=True)
class Decider:
    """Who decides and why: recorded on the decision's Provenance."""

    user: str
    role: str
    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise InvalidRequest("a merge, link or undo needs a reason")
        if len(self.reason) > 1000:
            raise InvalidRequest("the reason is longer than 1,000 characters")


@dataclass
class Outcome:
    """What a decision wrote: its Provenance and the versions it produced."""

    activity: str
    provenance_id: str
    targets: list[str] = field(default_factory=list)  # Type/id/_history/n
    repointed: int = 0  # resources re-pointed (merge) or put back (unmerge)
    kept_later_changes: list[str] = field(default_factory=list)  # Type/id changed since


# ----------------------------------------------------------------------------- helpers
def _patient(txn: Txn, patient_id: str) -> Resource:
    try:
        return txn.read("Patient", patient_id)
    except NotFound:
        raise NotFound(f"Patient/{patient_id} is not known") from None
    except Gone:
        raise DecisionRefused(f"Patient/{patient_id} was deleted") from None


def _links(patient: Resource, kind: str) -> list[str]:
    return [link["other"].get("reference", "") for link in patient.get("link", [])
            if link.get("type") == kind]


def _content(resource: Resource) -> Resource:
    """A stored version as the body of a new version: less what the store stamps."""
    body = copy.deepcopy(resource)
    meta = {k: v for k, v in body.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return body


def _is_review_task(resource: Resource) -> bool:
    return resource["resourceType"] == "Task" and any(
        (c.get("system"), c.get("code")) == REVIEW_TASK_CODE
        for c in (resource.get("code") or {}).get("coding", []))


def _replace_references(node: Any, old: str, new: str) -> int:
    """Change every ``reference`` equal to ``old`` to ``new`` in place; returns how many."""
    count = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and value == old:
                node[key] = new
                count += 1
            else:
                count += _replace_references(value, old, new)
    elif isinstance(node, list):
        for item in node:
            count += _replace_references(item, old, new)
    return count


def _write(txn: Txn, resource: Resource, outcome: Outcome) -> None:
    result = txn.update(resource["resourceType"], resource["id"], resource)
    if not result.unchanged:
        outcome.targets.append(
            f"{result.resource_type}/{result.resource_id}/_history/{result.version_id}")


def _provenance(txn: Txn, outcome: Outcome, decider: Decider,
                undone: str | None = None) -> None:
    provenance: Resource = {
        "resourceType": "Provenance", "id": outcome.provenance_id,
        "target": [{"reference": t} for t in outcome.targets],
        "recorded": now_instant(),
        "activity": {"coding": [{"system": LIFECYCLE, "code": outcome.activity,
                                 "display": DECISIONS[outcome.activity]}]},
        "reason": [{"text": decider.reason}],
        "agent": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author", "display": "Author"}]},
            "role": [{"text": decider.role}],
            "who": {"identifier": {"system": USER_SYSTEM, "value": decider.user},
                    "display": decider.user}}],
    }
    if undone is not None:
        provenance["entity"] = [{"role": "revision",
                                 "what": {"reference": f"Provenance/{undone}"}}]
    txn.create(provenance, resource_id=outcome.provenance_id)


def replaced_by(patient: Resource) -> str | None:
    """The id of the Patient this one was merged into, if it was."""
    targets = _links(patient, "replaced-by")
    return targets[0].split("/", 1)[1] if targets else None


# ------------------------------------------------------------------------------ decisions
def merge(txn: Txn, survivor_id: str, prior_id: str, decider: Decider, *,
          mode: MergeMode = "repoint") -> Outcome:
    """Merge Patient ``prior_id`` into ``survivor_id`` (see the module's description)."""
    if mode not in ("repoint", "federate"):
        raise InvalidRequest(f"unknown merge mode {mode!r}: expected repoint or federate")
    if survivor_id == prior_id:
        raise InvalidRequest("a patient cannot be merged with itself")
    survivor, prior = _patient(txn, survivor_id), _patient(txn, prior_id)
    for patient, role in ((survivor, "surviving"), (prior, "prior")):
        merged_into = replaced_by(patient)
        if merged_into is not None:
            raise DecisionRefused(
                f"the {role} Patient/{patient['id']} was already merged into "
                f"Patient/{merged_into}; undo that merge first or merge into that record")
    outcome = Outcome("merge", new_id())
    old, new = f"Patient/{prior_id}", f"Patient/{survivor_id}"
    if mode == "repoint":
        for resource in referencing(txn, "Patient", prior_id):
            if resource["resourceType"] in NOT_REPOINTED or _is_review_task(resource):
                continue
            body = _content(resource)
            if _replace_references(body, old, new):
                _write(txn, body, outcome)
                outcome.repointed += 1
    prior_body = _content(prior)
    prior_body["active"] = False
    prior_body["link"] = [link for link in prior_body.get("link", [])
                          if link["other"].get("reference") != new] + [
        {"other": {"reference": new}, "type": "replaced-by"}]
    survivor_body = _content(survivor)
    survivor_body["link"] = [link for link in survivor_body.get("link", [])
                             if link["other"].get("reference") != old] + [
        {"other": {"reference": old}, "type": "replaces"}]
    _write(txn, prior_body, outcome)
    _write(txn, survivor_body, outcome)
    _provenance(txn, outcome, decider)
    return outcome


def link(txn: Txn, first_id: str, second_id: str, decider: Decider) -> Outcome:
    """Link two Patients of the same person, both kept in use (*seealso* each other)."""
    if first_id == second_id:
        raise InvalidRequest("a patient cannot be linked with itself")
    first, second = _patient(txn, first_id), _patient(txn, second_id)
    for patient in (first, second):
        if replaced_by(patient) is not None:
            raise DecisionRefused(f"Patient/{patient['id']} was merged into "
                                  f"Patient/{replaced_by(patient)}: link that record instead")
    outcome = Outcome("link", new_id())
    for patient, other in ((first, second_id), (second, first_id)):
        reference = f"Patient/{other}"
        if any(link["other"].get("reference") == reference for link in patient.get("link", [])):
            continue  # linked (or merged) already
        body = _content(patient)
        body["link"] = [*body.get("link", []),
                        {"other": {"reference": reference}, "type": "seealso"}]
        _write(txn, body, outcome)
    if not outcome.targets:
        raise DecisionRefused(f"Patient/{first_id} and Patient/{second_id} are linked already")
    _provenance(txn, outcome, decider)
    return outcome


def decision(txn: Txn, provenance_id: str) -> tuple[Resource, str]:
    """The decision's Provenance and its activity (merge, link, unmerge, unlink)."""
    try:
        provenance = txn.read("Provenance", provenance_id)
    except (NotFound, Gone):
        raise NotFound(f"no merge or link decision Provenance/{provenance_id}") from None
    activity = activity_of(provenance)
    if activity is None:
        raise InvalidRequest(f"Provenance/{provenance_id} records no merge or link decision")
    return provenance, activity


def activity_of(provenance: Resource) -> str | None:
    """The decision a Provenance records (merge, link, unmerge, unlink), or None."""
    codes = [c.get("code") for c in (provenance.get("activity") or {}).get("coding") or []
             if c.get("system") == LIFECYCLE]
    return str(codes[0]) if codes and codes[0] in DECISIONS else None


def undo_of(txn: Txn, decision_ids: list[str]) -> dict[str, str]:
    """For each decision id: the id of the Provenance that undid it, when one did."""
    found: dict[str, str] = {}
    for start in range(0, len(decision_ids), 100):
        chunk = decision_ids[start:start + 100]
        page = txn.search_params("Provenance", [
            ("entity", ",".join(f"Provenance/{d}" for d in chunk)),
            ("_count", str(2 * len(chunk))), ("_total", "none")])
        for provenance in page.matches:
            if activity_of(provenance) in UNDO.values():
                for entity in provenance.get("entity") or []:
                    what = str((entity.get("what") or {}).get("reference", ""))
                    found.setdefault(what.removeprefix("Provenance/"), str(provenance["id"]))
    return found


def undone_by(txn: Txn, provenance_id: str) -> str | None:
    """The id of the Provenance that undid this decision, if one did."""
    return undo_of(txn, [provenance_id]).get(provenance_id)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))
    else:
        yield path, node


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def _revert_later(current: Resource, before: Resource, after: Resource) -> Resource:
    """``current`` (changed since the decision) less what the decision did: references it
    changed go back where they still hold its value; links it added go; ``active`` returns."""
    body = _content(current)
    after_values = dict(_paths(after))
    for path, old in _paths(before):
        if path and path[-1] == "reference" and after_values.get(path) not in (None, old) \
                and _get(body, path) == after_values[path]:
            _set(body, path, old)
    if body["resourceType"] == "Patient":
        before_links = [(lk["other"].get("reference"), lk.get("type"))
                        for lk in before.get("link", [])]
        added = {(lk["other"].get("reference"), lk.get("type")) for lk in after.get("link", [])
                 } - set(before_links)
        links = [lk for lk in body.get("link", [])
                 if (lk["other"].get("reference"), lk.get("type")) not in added]
        if links:
            body["link"] = links
        else:
            body.pop("link", None)
        if before.get("active") != after.get("active") and \
                body.get("active") == after.get("active"):
            if "active" in before:
                body["active"] = before["active"]
            else:
                body.pop("active", None)
    return body


def undo(txn: Txn, provenance_id: str, decider: Decider) -> Outcome:
    """Undo a merge or link exactly (see the module's description)."""
    provenance, activity = decision(txn, provenance_id)
    if activity not in UNDO:
        raise DecisionRefused(f"Provenance/{provenance_id} is an {activity}: it cannot be undone "
                              "in turn; merge or link again instead")
    later = undone_by(txn, provenance_id)
    if later is not None:
        raise DecisionRefused(f"the {activity} Provenance/{provenance_id} was undone already "
                              f"(Provenance/{later})")
    outcome = Outcome(UNDO[activity], new_id())
    for target in provenance.get("target", []):
        rtype, resource_id, _, version = target["reference"].split("/")
        after = txn.vread(rtype, resource_id, version)
        try:
            before = txn.vread(rtype, resource_id, str(int(version) - 1))
        except (NotFound, Gone):
            raise DecisionRefused(f"{rtype}/{resource_id} has no version before the "
                                  f"{activity}") from None
        try:
            current = txn.read(rtype, resource_id)
        except Gone:
            raise DecisionRefused(f"{rtype}/{resource_id} was deleted after the {activity}; "
                                  "restore it first") from None
        if current["meta"]["versionId"] == version:
            body = _content(before)
        else:
            body = _revert_later(current, before, after)
            outcome.kept_later_changes.append(f"{rtype}/{resource_id}")
        _write(txn, body, outcome)
        if rtype != "Patient":
            outcome.repointed += 1
    _provenance(txn, outcome, decider, undone=provenance_id)
    return outcome


def decisions_of(txn: Txn, patient_id: str, count: int = 100) -> list[Resource]:
    """The merge, link and undo Provenances that wrote this Patient, newest first."""
    page = txn.search_params("Provenance", [("target", f"Patient/{patient_id}"),
                                            ("_sort", "-recorded"), ("_count", str(count))])
    return [p for p in page.matches
            if any(c.get("system") == LIFECYCLE
                   for c in (p.get("activity") or {}).get("coding", []))]
