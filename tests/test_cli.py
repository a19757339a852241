"""The chartkeeper command line, run as a real process: import, export, init-demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chartkeeper.store import Store


def chartkeeper(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHARTKEEPER_HOME=str(home))
    env.pop("CHARTKEEPER_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "chartkeeper.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def store_of(home: Path) -> Store:
    return Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")


@pytest.mark.slow
def test_import_ndjson_directory_and_bundles_then_export(tmp_path: Path,
                                                         shared_data: Path) -> None:
    home = tmp_path / "home"
    ndjson_dir = tmp_path / "ndjson"
    ndjson_dir.mkdir()
    for path in (shared_data / "synthea" / "bulk_ndjson_10_patients").glob("*.000.ndjson"):
        (ndjson_dir / path.name).write_bytes(path.read_bytes())
    result = chartkeeper(home, "import", str(ndjson_dir))
    assert result.returncode == 0, result.stderr
    expected = sum(len(p.read_text().splitlines()) for p in ndjson_dir.glob("*.ndjson"))
    assert f"created={expected} updated=0 rejected=0" in result.stdout

    again = chartkeeper(home, "import", str(ndjson_dir))  # the same file again: no change
    assert "created=0 updated=0 rejected=0" in again.stdout

    hospital = next((shared_data / "synthea" / "r4_transaction_bundles_subset")
                    .glob("hospitalInformation*.json"))
    bundle = chartkeeper(home, "import", str(hospital))
    assert bundle.returncode == 0, bundle.stderr
    assert "rejected=0" in bundle.stdout

    out = tmp_path / "export"
    exported = chartkeeper(home, "export", "--out", str(out), "--type", "Patient,Encounter")
    assert exported.returncode == 0, exported.stderr
    patients = (out / "Patient.ndjson").read_text().splitlines()
    assert len(patients) == len((ndjson_dir / "Patient.000.ndjson").read_text().splitlines())
    assert all(json.loads(line)["resourceType"] == "Patient" for line in patients)
    assert sorted(p.name for p in out.iterdir()) == ["Encounter.ndjson", "Patient.ndjson"]


def test_import_reports_rejections_and_stores_nothing_from_a_bad_bundle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = tmp_path / "good.ndjson"
    good.write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n"
                    + "{broken json\n"
                    + json.dumps({"resourceType": "Patient", "id": "p2", "gender": 7}) + "\n")
    bad_bundle = tmp_path / "bundle.json"
    bad_bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation"},
         "request": {"method": "POST", "url": "Observation"}},
    ]}))
    not_fhir = tmp_path / "not-fhir.json"
    not_fhir.write_text("[1, 2]")
    result = chartkeeper(home, "import", str(good), str(bad_bundle), str(not_fhir))
    assert result.returncode == 1
    assert "created=1 updated=0 rejected=4" in result.stdout
    assert "line 2" in result.stderr and "not valid JSON" in result.stderr
    store = store_of(home)
    with store.read() as txn:
        assert txn.read("Patient", "p1")["id"] == "p1"
    with store.read() as txn:
        [provenance] = txn.search_params("Provenance", []).matches
    assert provenance["target"] == [{"reference": "Patient/p1/_history/1"}]
    assert store.row_counts()["resource"] == 2  # p1 and the Provenance of its chunk
    store.dispose()


def test_import_of_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    result = chartkeeper(tmp_path / "home", "import", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_init_demo_creates_the_store_and_a_one_time_admin_password_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = chartkeeper(home, "init-demo")
    assert first.returncode == 0, first.stderr
    assert (home / "chartkeeper.sqlite").exists()
    assert "one-time password: " in first.stdout
    password = first.stdout.split("one-time password: ")[1].split()[0]
    assert len(password) >= 12
    assert password.encode() not in (home / "chartkeeper.sqlite").read_bytes()
    # The demo hospital is generated and imported once; its answer key stays out of the store.
    assert "created=" in first.stderr and "rejected=0" in first.stderr
    store = store_of(home)
    with store.read() as txn:
        patients = txn.search_params("Patient", [("_summary", "count")]).total
    store.dispose()
    key = [json.loads(line) for line in
           (home / "demo" / "answer-key.ndjson").read_text().splitlines()]
    assert len(key) == 500
    # Every person once, plus the second registrations kept for patient matching.
    assert patients == 500 + sum(len(t["duplicates"]) for t in key)
    second = chartkeeper(home, "init-demo")
    assert second.returncode == 0, second.stderr
    assert "one-time password" not in second.stdout
    assert "already holds data" in second.stderr


def test_completion_run_updates_the_worklist_once_and_checks_the_rules(tmp_path: Path) -> None:
    home = tmp_path / "home"
    hospital = tmp_path / "hospital"
    assert chartkeeper(home, "generate", "--patients", "25", "--out", str(hospital),
                       "--seed", "3").returncode == 0
    assert chartkeeper(home, "import", str(hospital / "bundles")).returncode == 0
    first = chartkeeper(home, "completion", "run", "--as-of", "2026-01-01", "--json")
    assert first.returncode == 0, first.stderr
    figures = json.loads(first.stdout)
    assert figures["tasks"]["created"] == figures["openDeficiencies"] > 0
    again = chartkeeper(home, "completion", "run", "--as-of", "2026-01-01")
    assert again.returncode == 0 and "0 created, 0 updated" in again.stdout
    bad = tmp_path / "rules.toml"
    bad.write_text("[delinquency]\nthreshold_days = -3\n")
    refused = chartkeeper(home, "completion", "rules", "--rules", str(bad))
    assert refused.returncode == 2 and "threshold_days" in refused.stderr
    assert "threshold_days = 30" in chartkeeper(home, "completion", "rules").stdout


def test_mpi_dedupe_refuses_thresholds_out_of_order(tmp_path: Path) -> None:
    result = chartkeeper(tmp_path / "home", "mpi", "dedupe", "--auto-link", "0.4",
                         "--review", "0.9")
    assert result.returncode == 2 and "review <= auto_link" in result.stderr
