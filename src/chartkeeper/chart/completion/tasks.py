"""Deficiencies as FHIR R4 ``Task``s: the physicians' chart-completion worklist.

One Task per actionable deficiency, with a deterministic business identifier (task code and
target) and a resource id derived from it, so re-running never duplicates a Task and, with
nothing changed, writes nothing (the store keeps no new version of identical content). An
open Task whose deficiency is gone (the document was signed or dictated) is completed; one
whose rule a site switched off is cancelled. A Task that HIM cancelled or a physician
rejected is left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from chartkeeper.chart.completion.analysis import TASK_CODES, Deficiency, analyze
from chartkeeper.chart.completion.rules import RULE_NAMES, AuthenticationRule, CompletionRules
from chartkeeper.chart.completion.scan import reference_key
from chartkeeper.store import Store
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Txn, now_instant

Resource = dict[str, Any]
DEFICIENCY_SYSTEM = "urn:chartkeeper:deficiency"  # Task.code
TASK_IDENTIFIER_SYSTEM = "urn:chartkeeper:deficiency-task"  # Task.identifier
OPEN_STATUSES = ("draft", "requested", "received", "accepted", "ready", "in-progress",
                 "on-hold")
RULE_OF_CODE = {code: rule for rule, (code, _) in TASK_CODES.items()}
BATCH = 200
ASSIGNED = "assigned by HIM"  # Task.businessStatus of a deficiency HIM gave to someone
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, TASK_IDENTIFIER_SYSTEM)


@dataclass
class TaskSync:
    """What ``sync_tasks`` did, by count of Tasks."""

    created: int = 0
    updated: int = 0
    reopened: int = 0
    unchanged: int = 0
    completed: int = 0
    cancelled: int = 0
    left_alone: int = 0  # cancelled, rejected or failed by a person: not touched

    @property
    def written(self) -> int:
        return self.created + self.updated + self.reopened + self.completed + self.cancelled


def task_id(key: str) -> str:
    """The Task id for a deficiency key: the same key always gives the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def due_date(deficiency: Deficiency, rules: CompletionRules) -> date:
    """When the record must be complete: discharge plus the delinquency threshold."""
    return deficiency.discharged + timedelta(days=rules.delinquency.threshold_days)


def deficiency_task(deficiency: Deficiency, rules: CompletionRules, as_of: date,
                    existing: Resource | None = None) -> Resource:
    """The Task for an actionable ``deficiency``, merged into ``existing`` (whose other
    elements, authoredOn and open status are kept)."""
    code = deficiency.task_code
    if code is None:
        raise ValueError(f"a {deficiency.kind} {deficiency.rule} deficiency is not actionable "
                         "and gets no Task")
    display = TASK_CODES[deficiency.rule][1]
    task: Resource = {k: v for k, v in (existing or {}).items()
                      if k not in ("owner", "reasonReference", "for", "statusReason")}
    task.update({
        "resourceType": "Task", "id": task_id(deficiency.key),
        "identifier": [{"system": TASK_IDENTIFIER_SYSTEM, "value": deficiency.key}],
        "status": task.get("status", "requested"), "intent": "order",
        "code": {"coding": [{"system": DEFICIENCY_SYSTEM, "code": code, "display": display}],
                 "text": display},
        "description": f"{deficiency.detail} (discharged {deficiency.discharged.isoformat()})",
        "focus": {"reference": deficiency.document or deficiency.encounter},
        "encounter": {"reference": deficiency.encounter},
        "authoredOn": task.get("authoredOn", as_of.isoformat()),
        "restriction": {"period": {"end": due_date(deficiency, rules).isoformat()}},
    })
    if task["status"] not in OPEN_STATUSES:  # a completed Task whose deficiency came back
        task["status"] = "requested"
        task["lastModified"] = as_of.isoformat()
    if deficiency.patient:
        task["for"] = {"reference": deficiency.patient}
    if existing is not None and _assigned(existing):
        task["owner"] = existing["owner"]  # HIM assigned it to someone: that stands
    elif deficiency.physician:
        task["owner"] = {"reference": deficiency.physician}
    if deficiency.procedure:
        task["reasonReference"] = {"reference": deficiency.procedure}
    return task


def _assigned(task: Resource) -> bool:
    return (task.get("businessStatus") or {}).get("text") == ASSIGNED and bool(task.get("owner"))


def assign_task(store: Store, task_identifier: str, practitioner_id: str, assigned_by: str,
                before_commit: Callable[[Txn], None] | None = None) -> Resource:
    """HIM assigns an open deficiency to a physician (say a resident's unsigned note to the
    attending); later analyses keep that owner. Returns the Task as stored."""
    owner = f"Practitioner/{practitioner_id}"
    with store.write() as txn:
        try:
            task = txn.read("Task", task_identifier)
        except (NotFound, Gone):
            raise NotFound(f"Task/{task_identifier} does not exist") from None
        if _task_rule(task) is None:
            raise InvalidRequest(f"Task/{task_identifier} is not a record-completion deficiency")
        if task.get("status") not in OPEN_STATUSES:
            raise InvalidRequest(f"Task/{task_identifier} is {task.get('status')}: only open "
                                 "deficiencies can be assigned")
        try:
            txn.read("Practitioner", practitioner_id)
        except (NotFound, Gone):
            raise InvalidRequest(f"{owner} does not exist") from None
        now = now_instant()
        assigned = dict(task, owner={"reference": owner}, lastModified=now,
                        businessStatus={"text": ASSIGNED},
                        note=[*(task.get("note") or []), {
                            "authorString": assigned_by, "time": now,
                            "text": f"Assigned to {owner} by {assigned_by}"}])
        txn.update("Task", task_identifier, assigned)
        stored: Resource = txn.read("Task", task_identifier)
        if before_commit is not None:
            before_commit(txn)
    return stored


def write_missing_document(store: Store, task_identifier: str, practitioner_id: str, text: str,
                           rules: CompletionRules | None = None,
                           before_commit: Callable[[Txn], None] | None = None) -> str:
    """The physician writes (dictates, types) the document a "missing" deficiency asks for:
    a signed DocumentReference of the rule's type in the encounter, by its owner; the Task is
    completed with it as output, in one transaction. Returns the document's reference."""
    from chartkeeper.chart.signing import signed_document

    rules = rules or CompletionRules()
    text = text.strip()
    if not text:
        raise InvalidRequest("the document needs its text")
    with store.write() as txn:
        try:
            task = txn.read("Task", task_identifier)
        except (NotFound, Gone):
            raise NotFound(f"Task/{task_identifier} does not exist") from None
        rule = _task_rule(task)
        wanted = rules.rule(rule) if rule is not None else None
        if rule is None or wanted is None or isinstance(wanted, AuthenticationRule):
            raise InvalidRequest(f"Task/{task_identifier} does not ask for a document")
        if task.get("status") not in OPEN_STATUSES:
            raise InvalidRequest(f"Task/{task_identifier} is {task.get('status')} already")
        owner = reference_key(task.get("owner"))
        if owner != f"Practitioner/{practitioner_id}":
            raise InvalidRequest(f"Task/{task_identifier} is assigned to {owner or 'no one'}, "
                                 "not to you")
        loinc = wanted.loinc[0]
        title = TASK_CODES[rule][1].removeprefix("Dictate ").removeprefix("Complete ")
        reference = signed_document(
            txn, patient=reference_key(task.get("for")) or "",
            encounter=reference_key(task.get("encounter")), loinc=loinc,
            title=title[:1].upper() + title[1:], author=owner, text=text)
        now = now_instant()
        txn.update("Task", task_identifier, dict(
            task, status="completed", lastModified=now,
            output=[{"type": {"text": "document"}, "valueReference": {"reference": reference}}]))
        if before_commit is not None:
            before_commit(txn)
    return reference


def _batches(items: list[Any], size: int = BATCH) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _read_tasks(store: Store, ids: list[str]) -> dict[str, Resource]:
    found: dict[str, Resource] = {}
    for chunk in _batches(ids):
        with store.read() as txn:
            page = txn.search_params("Task", [("_id", ",".join(chunk)),
                                              ("_count", str(len(chunk))), ("_total", "none")])
        found.update((task["id"], task) for task in page.matches)
    return found


def open_deficiency_tasks(store: Store, page_size: int = 500) -> list[Resource]:
    """Every open Task of the deficiency worklist."""
    tasks: list[Resource] = []
    offset = 0
    while True:
        with store.read() as txn:
            page = txn.search_params("Task", [
                ("code", f"{DEFICIENCY_SYSTEM}|"), ("status", ",".join(OPEN_STATUSES)),
                ("_count", str(page_size)), ("_offset", str(offset)), ("_total", "none")])
        tasks.extend(page.matches)
        if len(page.matches) < page_size:
            return tasks
        offset += page_size


def _task_key(task: Resource) -> str | None:
    for identifier in task.get("identifier") or []:
        if identifier.get("system") == TASK_IDENTIFIER_SYSTEM:
            value = identifier.get("value")
            return value if isinstance(value, str) else None
    return None


def _task_rule(task: Resource) -> str | None:
    for coding in (task.get("code") or {}).get("coding") or []:
        if coding.get("system") == DEFICIENCY_SYSTEM:
            return RULE_OF_CODE.get(coding.get("code", ""))
    return None


def _write(store: Store, tasks: list[Resource]) -> list[bool]:
    """Write Tasks in batches (one transaction each); whether each made a new version. A
    Task read earlier is written only over the version read (If-Match): one a person
    changed meanwhile fails the batch with ``PreconditionFailed`` rather than losing it."""
    changed: list[bool] = []
    for chunk in _batches(tasks):
        with store.write() as txn:
            for task in chunk:
                version = (task.get("meta") or {}).get("versionId")
                result = txn.update("Task", task["id"], task,
                                    if_match=int(version) if version else None)
                changed.append(not result.unchanged)
    return changed


def sync_tasks(store: Store, deficiencies: Iterable[Deficiency], as_of: date,
               rules: CompletionRules | None = None) -> TaskSync:
    """Bring the deficiency worklist in line with ``deficiencies`` (from ``analyze`` with the
    same ``rules`` and ``as_of``). Open Tasks missing from them are analysed again by their
    encounter before they are closed, so a partial analysis never closes what it did not
    look at."""
    rules = rules or CompletionRules()
    result = TaskSync()
    wanted: dict[str, Deficiency] = {}
    for deficiency in deficiencies:
        if deficiency.actionable:
            wanted.setdefault(deficiency.key, deficiency)
    stale = [t for t in open_deficiency_tasks(store) if _task_key(t) not in wanted]
    if stale:
        encounters = {ref for t in stale if (ref := reference_key(t.get("encounter")))}
        stale_keys = {_task_key(t) for t in stale}
        for deficiency in analyze(store, rules, as_of, encounters=sorted(encounters)):
            if deficiency.actionable and deficiency.key in stale_keys:
                wanted.setdefault(deficiency.key, deficiency)
        stale = [t for t in stale if _task_key(t) not in wanted]

    existing = _read_tasks(store, [task_id(key) for key in wanted])
    writes: list[tuple[str, Resource]] = []
    for key, deficiency in wanted.items():
        current = existing.get(task_id(key))
        if current is not None and current.get("status") not in (*OPEN_STATUSES, "completed"):
            result.left_alone += 1
            continue
        kind = ("created" if current is None else "reopened"
                if current.get("status") == "completed" else "updated")
        writes.append((kind, deficiency_task(deficiency, rules, as_of, current)))
    for task in stale:
        rule = _task_rule(task)
        closed = dict(task, lastModified=as_of.isoformat())
        if rule is not None and rule in RULE_NAMES and not rules.enabled(rule):
            closed.update(status="cancelled", statusReason={
                "text": f"The {rule} rule is switched off in the site's completion rules"})
            writes.append(("cancelled", closed))
        else:
            closed["status"] = "completed"
            writes.append(("completed", closed))

    changed = _write(store, [task for _, task in writes])
    for (kind, _), was_changed in zip(writes, changed, strict=True):
        if not was_changed:
            result.unchanged += 1
        else:
            setattr(result, kind, getattr(result, kind) + 1)
    return result
