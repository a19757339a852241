"""Merge, unmerge, link and unlink on a store holding whole synthetic records, on SQLite and
PostgreSQL: the merge re-points the prior patient's records, and the undo returns every
resource to its exact previous content while the history keeps every version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chartkeeper.mpi.merge import (
    Decider,
    DecisionRefused,
    decisions_of,
    link,
    merge,
    replaced_by,
    undo,
    undone_by,
)
from chartkeeper.store import Store
from chartkeeper.store.errors import InvalidRequest, NotFound
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.store.service import everything, referencing
from chartkeeper.synth.generate import generate

HIM = Decider("tech", "him-technician", "same SSN, birth date and address; nickname")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("merge")
    generate(root / "h", 6, 11, output_format="ndjson")
    return root / "h" / "ndjson"


@pytest.fixture
def store(database_url: str, records: Path) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    Importer(store).import_files(find_files([records]))
    yield store
    store.dispose()


def snapshot(store: Store) -> dict[tuple[str, str], Any]:
    """Every current resource, less what the store stamps, and every version's content."""
    current: dict[tuple[str, str], Any] = {}
    with store.read() as txn:
        offset = 0
        while True:
            page = txn.history(count=1000, offset=offset)
            for entry in page.entries:
                key = (entry.resource_type, entry.resource_id)
                current.setdefault(key, {})[entry.version_id] = entry.resource
            offset += 1000
            if offset >= page.total:
                return current


def content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in resource.get("meta", {}).items()
            if k not in ("versionId", "lastUpdated")}
    body = {k: v for k, v in resource.items() if k != "meta"}
    return {**body, "meta": meta} if meta else body


def two_patients(store: Store) -> tuple[str, str]:
    with store.read() as txn:
        ids = sorted(p["id"] for p in txn.search_params("Patient", [("_count", "50")]).matches)
    return ids[0], ids[1]


def test_merge_repoints_and_unmerge_restores_every_resource(store: Store) -> None:
    survivor, prior = two_patients(store)
    before = snapshot(store)
    with store.read() as txn:
        prior_records = {(r["resourceType"], r["id"]) for r in referencing(txn, "Patient", prior)
                         if r["resourceType"] != "Provenance"}
        survivor_count = len(everything(txn, survivor))
    assert len(prior_records) >= 10  # a whole record: encounters, results, documents, claims

    with store.write() as txn:
        merged = merge(txn, survivor, prior, HIM)
    assert merged.repointed == len(prior_records)
    with store.read() as txn:
        assert not [r for r in referencing(txn, "Patient", prior)
                    if r["resourceType"] not in ("Provenance", "Patient")]
        chart = {(r["resourceType"], r["id"]) for r in everything(txn, survivor)}
        assert prior_records <= chart and len(chart) > survivor_count
        old, new = txn.read("Patient", prior), txn.read("Patient", survivor)
        assert old["active"] is False
        assert {"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"} in \
            old["link"]
        assert {"other": {"reference": f"Patient/{prior}"}, "type": "replaces"} in new["link"]
        provenance = txn.read("Provenance", merged.provenance_id)
        assert provenance["reason"] == [{"text": HIM.reason}]
        assert provenance["agent"][0]["who"]["identifier"]["value"] == "tech"
        assert len(provenance["target"]) == merged.repointed + 2
        assert [p["id"] for p in decisions_of(txn, prior)] == [merged.provenance_id]

    with store.write() as txn:
        undone = undo(txn, merged.provenance_id, Decider("tech", "him-technician",
                                                         "different people: twins"))
    assert undone.activity == "unmerge" and not undone.kept_later_changes
    after = snapshot(store)
    for key, versions in before.items():
        # every old version is still there, unchanged, and the current content is as before
        assert {v: after[key][v] for v in versions} == versions, key
        latest_before = versions[max(versions)]
        latest_after = after[key][max(after[key])]
        assert content(latest_after) == content(latest_before), key
    new_keys = set(after) - set(before)
    assert new_keys == {("Provenance", merged.provenance_id),
                        ("Provenance", undone.provenance_id)}
    with store.read() as txn:
        assert undone_by(txn, merged.provenance_id) == undone.provenance_id
        assert len(decisions_of(txn, prior)) == 2
        # the merge and its undo, each a version of each resource it wrote
        assert all(len(after[key]) == len(before[key]) + 2 for key in prior_records)
    with store.write() as txn, pytest.raises(DecisionRefused, match="undone already"):
        undo(txn, merged.provenance_id, HIM)


def test_unmerge_keeps_later_changes(store: Store) -> None:
    survivor, prior = two_patients(store)
    with store.write() as txn:
        merged = merge(txn, survivor, prior, HIM)
    with store.write() as txn:  # a later edit of a re-pointed record and of the prior patient
        rtype, rid = next(
            t["reference"].split("/")[:2]
             for t in txn.read("Provenance", merged.provenance_id)["target"]
             if t["reference"].startswith("Encounter/"))
        encounter = txn.read(rtype, rid)
        encounter["status"] = "entered-in-error"
        txn.update(rtype, rid, encounter)
        patient = txn.read("Patient", prior)
        patient["telecom"] = [{"system": "phone", "value": "555-0100"}]
        txn.update("Patient", prior, patient)
    with store.write() as txn:
        undone = undo(txn, merged.provenance_id, HIM)
    assert {f"Encounter/{rid}", f"Patient/{prior}"} <= set(undone.kept_later_changes)
    with store.read() as txn:
        kept = txn.read("Encounter", rid)
        assert kept["status"] == "entered-in-error"
        assert kept["subject"]["reference"] == f"Patient/{prior}"
        restored = txn.read("Patient", prior)
        assert restored["telecom"] == [{"system": "phone", "value": "555-0100"}]
        assert "link" not in restored or all(
            lk["other"]["reference"] != f"Patient/{survivor}" for lk in restored["link"])
        assert restored.get("active") is not False


def test_link_and_unlink_keep_both_records_in_use(store: Store) -> None:
    first, second = two_patients(store)
    with store.write() as txn:
        linked = link(txn, first, second, HIM)
    with store.read() as txn:
        a, b = txn.read("Patient", first), txn.read("Patient", second)
        assert {"other": {"reference": f"Patient/{second}"}, "type": "seealso"} in a["link"]
        assert {"other": {"reference": f"Patient/{first}"}, "type": "seealso"} in b["link"]
        assert a.get("active") is not False and b.get("active") is not False
        assert txn.read("Provenance", linked.provenance_id)["activity"]["coding"][0][
            "code"] == "link"
    with store.write() as txn, pytest.raises(DecisionRefused, match="linked already"):
        link(txn, second, first, HIM)
    with store.write() as txn:
        assert undo(txn, linked.provenance_id, HIM).activity == "unlink"
    with store.read() as txn:
        assert "link" not in txn.read("Patient", first)


def test_refusals_change_nothing(store: Store) -> None:
    survivor, prior = two_patients(store)
    before = snapshot(store)
    refused: list[tuple[Any, str]] = [
        (lambda txn: merge(txn, survivor, survivor, HIM), "itself"),
        (lambda txn: merge(txn, survivor, "no-such-patient", HIM), "not known"),
        (lambda txn: merge(txn, survivor, prior, HIM, mode="glue"), "unknown merge mode"),
        (lambda txn: undo(txn, "no-such-provenance", HIM), "no merge or link"),
    ]
    for action, message in refused:
        with store.write() as txn, pytest.raises((InvalidRequest, NotFound), match=message):
            action(txn)
    with pytest.raises(InvalidRequest, match="reason"):
        Decider("tech", "him-technician", "  ")
    with store.write() as txn:
        merge(txn, survivor, prior, HIM)
    with store.write() as txn, pytest.raises(DecisionRefused, match="already merged"):
        merge(txn, prior, survivor, HIM)
    with store.write() as txn, pytest.raises(DecisionRefused, match="was merged into"):
        link(txn, prior, survivor, HIM)
    assert set(snapshot(store)) - set(before) != set()  # the merge itself landed


def test_the_sites_merge_mode_is_a_setting(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from chartkeeper.settings import Settings

    with pytest.raises(ValueError, match="repoint or federate"):
        Settings(mpi_merge_mode="glue")
    home = tmp_path / "home"
    home.mkdir()
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    store.create_schema()
    with store.write() as txn:
        for pid in ("keep", "old"):
            txn.update("Patient", pid, {"resourceType": "Patient", "id": pid,
                                        "name": [{"family": "Vale", "given": ["Ada"]}]})
        txn.create({"resourceType": "Encounter", "status": "finished",
                    "class": {"code": "AMB"}, "subject": {"reference": "Patient/old"}})
    env = dict(os.environ, CHARTKEEPER_HOME=str(home), CHARTKEEPER_MPI_MERGE_MODE="federate")
    env.pop("CHARTKEEPER_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "chartkeeper.cli", "mpi", "merge", "keep",
                           "old", "--reason", "one person"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "0 re-pointed" in done.stdout
    with store.read() as txn:
        assert [e["subject"]["reference"] for e in
                txn.search_params("Encounter", []).matches] == ["Patient/old"]
        assert replaced_by(txn.read("Patient", "old")) == "keep"
    store.dispose()
