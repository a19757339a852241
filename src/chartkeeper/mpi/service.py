"""The MPI's work in the store: the trained model, the review queue and people's decisions.

- The trained model (splink's JSON) is a ``Library`` of type *model-definition*, so every
  worker and either engine scores with the same parameters, and each training is a version.
- A pair in the uncertain band is a review ``Task`` (code ``duplicate-review`` of
  ``urn:chartkeeper:him-task``) with the evidence: each compared field's agreement level and
  match weight, the pair's probability and weight. Its id is derived from the pair, so a
  second run never queues a pair twice and a pair a person decided stays decided.
- An automatic link is a *seealso* ``link`` (``merge.link``); a person's decision on a Task is
  a merge, a link, or "not a duplicate", which keeps the pair out of every later link.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from chartkeeper.mpi.dedupe import DedupeResult, Pair, Thresholds
from chartkeeper.mpi.merge import (
    REVIEW_TASK_CODE,
    Decider,
    DecisionRefused,
    MergeMode,
    Outcome,
    link,
    merge,
    replaced_by,
    undo,
)
from chartkeeper.store import Store
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound
from chartkeeper.store.service import Txn, now_instant

__all__ = ["Applied", "Decider", "DecisionRefused", "Outcome", "Review", "apply", "decide",
           "decided_reviews", "get_review", "link", "load_model", "merge", "open_reviews",
           "replaced_by", "review_task", "save_model", "screen_new_patient", "undo_decision"]
Resource = dict[str, Any]
MODEL_ID = "chartkeeper-mpi-model"
LIBRARY_TYPE = "http://terminology.hl7.org/CodeSystem/library-type"
PAIR_SYSTEM = "urn:chartkeeper:duplicate-pair"  # Task.identifier: "left|right"
FIELD_SYSTEM = "urn:chartkeeper:mpi-field"  # Task.input.type: one compared field
OPEN = ("requested", "ready", "in-progress", "on-hold")
BATCH = 200
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, PAIR_SYSTEM)
Verdict = Literal["merge", "link", "not-duplicate"]
VERDICTS: dict[str, str] = {"merge": "merged", "link": "linked",
                            "not-duplicate": "not a duplicate"}


# ------------------------------------------------------------------------------- the model
def save_model(txn: Txn, model: dict[str, Any]) -> None:
    """Keep the trained model as the store's MPI model Library (a new version each time)."""
    data = json.dumps(model, sort_keys=True).encode()
    txn.update("Library", MODEL_ID, {
        "resourceType": "Library", "id": MODEL_ID, "name": "ChartkeeperMpiModel",
        "title": "Master patient index matching model (splink, Fellegi-Sunter)",
        "status": "active", "date": now_instant(),
        "type": {"coding": [{"system": LIBRARY_TYPE, "code": "model-definition"}]},
        "content": [{"contentType": "application/json",
                     "data": base64.b64encode(data).decode()}]})


def load_model(txn: Txn) -> dict[str, Any] | None:
    """The trained model, or None when no batch run has trained one yet."""
    try:
        library = txn.read("Library", MODEL_ID)
    except (NotFound, Gone):
        return None
    model: dict[str, Any] = json.loads(base64.b64decode(library["content"][0]["data"]))
    return model


# ------------------------------------------------------------------------ the review queue
def pair_key(first: str, second: str) -> str:
    left, right = sorted((first, second))
    return f"{left}|{right}"


def review_task_id(first: str, second: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, pair_key(first, second)))


def review_task(pair: Pair) -> Resource:
    """A new review Task for ``pair`` with its evidence."""
    stamp = now_instant()
    left, right = sorted((pair.left, pair.right))
    return {
        "resourceType": "Task", "id": review_task_id(left, right),
        "identifier": [{"system": PAIR_SYSTEM, "value": pair_key(left, right)}],
        "status": "ready", "intent": "proposal", "priority": "routine",
        "code": {"coding": [{"system": REVIEW_TASK_CODE[0], "code": REVIEW_TASK_CODE[1],
                             "display": "Possible duplicate patient"}],
                 "text": "Possible duplicate patient"},
        "focus": {"reference": f"Patient/{left}"}, "for": {"reference": f"Patient/{left}"},
        "authoredOn": stamp, "lastModified": stamp,
        "input": [
            {"type": {"text": "patient"}, "valueReference": {"reference": f"Patient/{left}"}},
            {"type": {"text": "patient"}, "valueReference": {"reference": f"Patient/{right}"}},
            {"type": {"text": "match-probability"}, "valueDecimal": round(pair.probability, 6)},
            {"type": {"text": "match-weight"}, "valueDecimal": round(pair.weight, 3)},
            *({"type": {"coding": [{"system": FIELD_SYSTEM, "code": e.field}],
                        "text": e.level},
               "valueDecimal": e.weight} for e in pair.evidence)],
    }


@dataclass(frozen=True)
class Review:
    """A review Task read back: the two patients and the evidence."""

    task: Resource
    left: str
    right: str
    probability: float
    weight: float
    evidence: list[tuple[str, str, float]]  # field, agreement level, match weight

    @property
    def open(self) -> bool:
        return self.task["status"] in OPEN

    @property
    def verdict(self) -> str | None:
        return next((o.get("valueCode") for o in self.task.get("output", [])
                     if o["type"].get("text") == "decision"), None)


def read_review(task: Resource) -> Review:
    inputs = task.get("input", [])
    patients = [i["valueReference"]["reference"].split("/", 1)[1] for i in inputs
                if i["type"].get("text") == "patient"]
    values = {i["type"].get("text"): i.get("valueDecimal") for i in inputs}
    evidence = [(i["type"]["coding"][0]["code"], i["type"].get("text", ""),
                 float(i.get("valueDecimal", 0))) for i in inputs
                if i["type"].get("coding", [{}])[0].get("system") == FIELD_SYSTEM]
    if len(patients) != 2:
        raise InvalidRequest(f"Task/{task['id']} is not a duplicate review: it names "
                             f"{len(patients)} patients")
    return Review(task, patients[0], patients[1], float(values.get("match-probability") or 0),
                  float(values.get("match-weight") or 0), evidence)


def get_review(txn: Txn, task_id: str) -> Review:
    try:
        task = txn.read("Task", task_id)
    except (NotFound, Gone):
        raise NotFound(f"no duplicate review Task/{task_id}") from None
    if not any((c.get("system"), c.get("code")) == REVIEW_TASK_CODE
               for c in task.get("code", {}).get("coding", [])):
        raise NotFound(f"Task/{task_id} is not a duplicate review")
    return read_review(task)


def open_reviews(txn: Txn, count: int = 50, offset: int = 0) -> tuple[list[Review], int]:
    """The open review Tasks, oldest first, and how many there are."""
    page = txn.search_params("Task", [
        ("code", f"{REVIEW_TASK_CODE[0]}|{REVIEW_TASK_CODE[1]}"), ("status", ",".join(OPEN)),
        ("_sort", "authored-on"), ("_count", str(count)), ("_offset", str(offset)),
        ("_total", "accurate")])
    return [read_review(t) for t in page.matches], int(page.total or 0)


def decided_reviews(txn: Txn, count: int = 50) -> list[Review]:
    """The latest decided review Tasks, newest first."""
    page = txn.search_params("Task", [
        ("code", f"{REVIEW_TASK_CODE[0]}|{REVIEW_TASK_CODE[1]}"),
        ("status", "completed,cancelled"), ("_sort", "-modified"), ("_count", str(count))])
    return [read_review(t) for t in page.matches]


# ------------------------------------------------------------------------------- decisions
def decide(txn: Txn, task_id: str, verdict: Verdict, decider: Decider, *,
           survivor: str | None = None, mode: MergeMode = "repoint") -> Outcome | None:
    """A person's decision on a review Task: merge (into ``survivor``, one of the two), link,
    or not a duplicate. The Task is completed with the decision, who and why."""
    if verdict not in VERDICTS:
        raise InvalidRequest(f"unknown decision {verdict!r}: expected merge, link or "
                             "not-duplicate")
    review = get_review(txn, task_id)
    if not review.open:
        raise DecisionRefused(f"the review Task/{task_id} was decided already "
                              f"({review.verdict or review.task['status']})")
    outcome: Outcome | None = None
    if verdict == "merge":
        if survivor not in (review.left, review.right):
            raise InvalidRequest("a merge needs the surviving patient: one of "
                                 f"{review.left} and {review.right}")
        prior = review.right if survivor == review.left else review.left
        outcome = merge(txn, survivor, prior, decider, mode=mode)
    elif verdict == "link":
        outcome = link(txn, review.left, review.right, decider)
    task = dict(review.task)
    task.update({
        "status": "completed", "lastModified": now_instant(),
        "businessStatus": {"text": VERDICTS[verdict]},
        "owner": {"identifier": {"system": "urn:chartkeeper:user", "value": decider.user},
                  "display": decider.user},
        "note": [*task.get("note", []), {"authorString": decider.user, "time": now_instant(),
                                         "text": decider.reason}],
        "output": [{"type": {"text": "decision"}, "valueCode": verdict}]})
    if outcome is not None:
        task["output"].append({"type": {"text": "provenance"}, "valueReference": {
            "reference": f"Provenance/{outcome.provenance_id}"}})
    txn.update("Task", task_id, task)
    return outcome


# --------------------------------------------------------------------- the batch's outcome
@dataclass
class Applied:
    """What ``apply`` wrote, by pair."""

    linked: int = 0
    queued: int = 0
    unchanged: int = 0  # linked or queued already
    kept_apart: int = 0  # a person said "not a duplicate", or one of them was merged


def _linked(patient: Resource, other: str) -> bool:
    return any(lk["other"].get("reference") == f"Patient/{other}"
               for lk in patient.get("link", []))


def _apply_pair(txn: Txn, pair: Pair, automatic: bool, decider: Decider,
                applied: Applied) -> None:
    try:
        existing: Resource | None = txn.read("Task", review_task_id(pair.left, pair.right))
    except (NotFound, Gone):
        existing = None
    if existing is not None and read_review(existing).verdict == "not-duplicate":
        applied.kept_apart += 1
        return
    try:
        left, right = txn.read("Patient", pair.left), txn.read("Patient", pair.right)
    except (NotFound, Gone):
        applied.kept_apart += 1  # deleted since the batch read it
        return
    if replaced_by(left) or replaced_by(right):
        applied.kept_apart += 1
        return
    if _linked(left, pair.right):
        applied.unchanged += 1
    elif automatic:
        try:
            link(txn, pair.left, pair.right, decider)
            applied.linked += 1
        except DecisionRefused:
            applied.unchanged += 1
    elif existing is None:
        txn.create(review_task(pair), resource_id=review_task_id(pair.left, pair.right))
        applied.queued += 1
    else:
        applied.unchanged += 1


def apply(store: Store, result: DedupeResult, decider: Decider,
          on_progress: Callable[[str], None] | None = None) -> Applied:
    """Write a batch run's outcome: the model, a link for each automatic link, a review Task
    for each uncertain pair; pairs a person kept apart stay apart."""
    say = on_progress or (lambda _message: None)
    applied = Applied()
    if result.model:
        with store.write() as txn:
            save_model(txn, result.model)
    work: list[tuple[Pair, bool]] = [(p, True) for p in result.links] + [
        (p, False) for p in result.review]
    for start in range(0, len(work), BATCH):
        with store.write() as txn:
            for pair, automatic in work[start:start + BATCH]:
                _apply_pair(txn, pair, automatic, decider, applied)
        say(f"{min(start + BATCH, len(work))} of {len(work)} pairs written")
    return applied


def pairs_of(reviews: Iterable[Review]) -> set[frozenset[str]]:
    return {frozenset((r.left, r.right)) for r in reviews}


# ------------------------------------------------------------------ the check at registration
def screen_new_patient(txn: Txn, patient: Resource, decider: Decider,
                       thresholds: Thresholds | None = None) -> Applied:
    """The real-time check on a Patient just created (API create, HL7 ADT): the same three
    outcomes as the batch run, in the creating transaction. A certain match is linked, a
    probable one queued for review with its evidence."""
    from chartkeeper.mpi.match import match

    thresholds = thresholds or Thresholds()
    if load_model(txn) is None:
        return Applied()  # no trained model yet: untrained scores are no grounds for either
    found = match(txn, patient, count=20, thresholds=thresholds, minimum=thresholds.review)
    result = DedupeResult(len(found) + 1)
    for item in found:
        if item.grade == "certain":
            result.links.append(item.pair)
        elif item.grade == "probable":
            result.review.append(item.pair)
    applied = Applied()
    for pair in result.links:
        _apply_pair(txn, pair, True, decider, applied)
    for pair in result.review:
        _apply_pair(txn, pair, False, decider, applied)
    return applied


def undo_decision(txn: Txn, provenance_id: str, decider: Decider) -> Outcome:
    """Undo a merge or link (``merge.undo``); the review it settled, if one did, goes back to
    the queue with a note of who undid it and why."""
    outcome = undo(txn, provenance_id, decider)
    patients = sorted({t.split("/")[1] for t in outcome.targets if t.startswith("Patient/")})
    if len(patients) != 2:
        return outcome
    try:
        task = txn.read("Task", review_task_id(*patients))
    except (NotFound, Gone):
        return outcome
    settled_by = [o.get("valueReference", {}).get("reference") for o in task.get("output", [])]
    if f"Provenance/{provenance_id}" not in settled_by:
        return outcome
    reopened = {k: v for k, v in task.items() if k not in ("output", "businessStatus", "owner")}
    reopened.update({"status": "ready", "lastModified": now_instant(), "note": [
        *task.get("note", []), {"authorString": decider.user, "time": now_instant(),
                                "text": f"decision undone: {decider.reason}"}]})
    txn.update("Task", task["id"], reopened)
    return outcome
