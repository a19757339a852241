"""The batch run's outcome in the store: automatic links, the review queue with its evidence,
people's decisions, the trained model as data; and the ``chartkeeper mpi`` commands."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chartkeeper.mpi.dedupe import DedupeResult, Thresholds, dedupe_rows, patient_rows
from chartkeeper.mpi.merge import Decider, DecisionRefused
from chartkeeper.mpi.service import (
    apply,
    decide,
    decided_reviews,
    get_review,
    load_model,
    open_reviews,
    review_task_id,
    undo_decision,
)
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest
from tests.mpi.conftest import store_copy

SYSTEM = Decider("batch", "him-technician", "automatic link")
TECH = Decider("tech", "him-technician", "reviewed both charts")


@pytest.fixture
def home(patients_file: Path, tmp_path: Path) -> Path:
    """A site's home whose store holds the hospital's patients (each test its own)."""
    home = tmp_path / "home"
    store_copy(patients_file, home).dispose()
    return home


def strict(batch: DedupeResult) -> Thresholds:
    """A stricter site: the weaker half of the batch run's links goes to a person instead."""
    ranked = sorted(p.probability for p in batch.links)
    return Thresholds(auto_link=ranked[len(ranked) // 2], review=0.5)


def chartkeeper(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHARTKEEPER_HOME=str(home))
    env.pop("CHARTKEEPER_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "chartkeeper.cli", *args], env=env,
                          input=stdin, capture_output=True, text=True, timeout=600)


def rescore(store: Store, model: dict[str, Any], thresholds: Thresholds) -> DedupeResult:
    """The store's patients scored with a trained model (no training)."""
    return dedupe_rows(list(patient_rows(store)), thresholds, model=model)


def test_links_queue_and_decisions(home: Path, batch: DedupeResult) -> None:
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    assert len(batch.links) > 10
    result = rescore(store, batch.model, strict(batch))
    assert result.review and result.links
    written = apply(store, result, SYSTEM)
    assert (written.linked, written.queued) == (len(result.links), len(result.review))
    with store.read() as txn:
        assert load_model(txn) == result.model
        reviews, total = open_reviews(txn, count=100)
        assert total == len(result.review)
        first = reviews[0]
        assert {e[0] for e in first.evidence} >= {"first_name", "surname", "dob", "ssn"}
        # the evidence adds up to the pair's weight: the prior odds plus each field's weight
        prior = result.model["probability_two_random_records_match"]
        assert sum(e[2] for e in first.evidence) + math.log2(prior / (1 - prior)) == \
            pytest.approx(first.weight, abs=0.02)
        linked = txn.read("Patient", result.links[0].left)
        assert {"other": {"reference": f"Patient/{result.links[0].right}"},
                "type": "seealso"} in linked["link"]

    again = apply(store, result, SYSTEM)  # a second run writes nothing new
    assert (again.linked, again.queued, again.unchanged) == (
        0, 0, len(result.links) + len(result.review))

    merge_pair, apart_pair = result.review[0], result.review[1]
    with store.write() as txn:
        outcome = decide(txn, review_task_id(merge_pair.left, merge_pair.right), "merge", TECH,
                         survivor=merge_pair.left)
        assert outcome is not None and outcome.activity == "merge"
        assert decide(txn, review_task_id(apart_pair.left, apart_pair.right),
                      "not-duplicate", TECH) is None
    with store.read() as txn:
        done = get_review(txn, review_task_id(merge_pair.left, merge_pair.right))
        assert done.verdict == "merge" and not done.open
        assert done.task["owner"]["display"] == "tech"
        assert done.task["note"][-1]["text"] == TECH.reason
        assert len(decided_reviews(txn)) == 2
        assert open_reviews(txn)[1] == len(result.review) - 2

    # A pair kept apart is never linked, not even above the automatic threshold; a merged
    # patient is no longer matched at all.
    forced = DedupeResult(2, links=[apart_pair])
    assert apply(store, forced, SYSTEM).kept_apart == 1
    rerun = rescore(store, batch.model, strict(batch))
    assert rerun.patients == result.patients - 1
    assert merge_pair.right not in {p for pair in rerun.links + rerun.review
                                    for p in (pair.left, pair.right)}

    refused = [
        (lambda txn: decide(txn, review_task_id(apart_pair.left, apart_pair.right), "link",
                            TECH), DecisionRefused, "decided already"),
        (lambda txn: decide(txn, review_task_id(result.review[2].left,
                                                result.review[2].right), "merge", TECH,
                            survivor="someone-else"), InvalidRequest, "surviving patient"),
        (lambda txn: decide(txn, review_task_id(result.review[2].left,
                                                result.review[2].right),
                            "maybe", TECH),  # type: ignore[arg-type]
         InvalidRequest, "unknown decision"),
    ]
    for action, error, message in refused:
        with store.write() as txn, pytest.raises(error, match=message):
            action(txn)

    # Undoing the merge puts the pair back in the queue, with who undid it and why.
    assert outcome is not None
    with store.write() as txn:
        undo_decision(txn, outcome.provenance_id, Decider("lead", "him-technician",
                                                          "merged the wrong pair"))
    with store.read() as txn:
        back = get_review(txn, review_task_id(merge_pair.left, merge_pair.right))
        assert back.open and back.verdict is None
        assert back.task["note"][-1]["text"] == "decision undone: merged the wrong pair"
        assert txn.read("Patient", merge_pair.right).get("active") is not False
    store.dispose()


def test_commands(home: Path, batch: DedupeResult) -> None:
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    apply(store, rescore(store, batch.model, strict(batch)), SYSTEM)
    store.dispose()
    listed = chartkeeper(home, "mpi", "review", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    task = listed.stdout.split("Task/")[1].split()[0]
    assert "first_name" in listed.stdout and "open duplicate reviews" in listed.stdout

    no_reason = chartkeeper(home, "mpi", "decide", task, "link", "--reason", " ")
    assert no_reason.returncode == 2 and "reason" in no_reason.stderr
    decided = chartkeeper(home, "mpi", "decide", task, "link", "--reason", "two facilities")
    assert decided.returncode == 0, decided.stderr
    provenance = decided.stdout.split("Provenance/")[1].split(":")[0]
    patient = decided.stdout and chartkeeper(home, "mpi", "review", "--limit", "1")
    assert patient.returncode == 0

    undone = chartkeeper(home, "mpi", "undo", provenance, "--reason", "linked in error")
    assert undone.returncode == 0 and "unlink" in undone.stdout, undone.stderr
    twice = chartkeeper(home, "mpi", "undo", provenance, "--reason", "again")
    assert twice.returncode == 1 and "undone already" in " ".join(twice.stderr.split())

    # The stored model on Spark (local mode) gives the links DuckDB gives with it.
    spark = chartkeeper(home, "mpi", "dedupe", "--engine", "spark", "--dry-run", "--json")
    assert spark.returncode == 0, spark.stderr
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    with store.read() as txn:
        model = load_model(txn)
    assert model is not None
    duck = rescore(store, model, Thresholds())
    store.dispose()
    assert {(p["left"], p["right"]) for p in json.loads(spark.stdout)["links"]} == {
        (p.left, p.right) for p in duck.links}

    dry = chartkeeper(home, "mpi", "dedupe", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["written"] is None

    trail = chartkeeper(home, "audit", "verify")
    assert trail.returncode == 0, trail.stdout + trail.stderr
