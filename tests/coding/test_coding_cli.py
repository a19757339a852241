"""``chartkeeper code`` and ``chartkeeper codes`` as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.coding.test_codesets import PCS_2026

NOTE = ("PROGRESS NOTE\n\nSUBJECTIVE:\n58 y/o F here for f/u. Denies CP, SOB.\n\n"
        "ASSESSMENT:\n1. DM2 without complications\n2. essential HTN\n")


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARTKEEPER_HOME": str(home)}
    env.pop("CHARTKEEPER_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "chartkeeper.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli-home")
    home.mkdir(exist_ok=True)
    return home


def test_suggest_prints_the_json_the_issue_names(home: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text(NOTE, encoding="utf-8")
    done = run(home, "code", "suggest", str(note), "--setting", "outpatient", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [d["code"] for d in found["diagnoses"] if d["proposed"]] == ["E11.9", "I10"]
    assert found["principal"] == "E11.9"
    span = found["diagnoses"][1]["evidence"][0]
    assert NOTE[span["start"]:span["end"]] == span["text"] == "essential HTN"


def test_suggest_refuses_a_bad_setting_or_file(home: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_bytes(b"\xff\xfe not utf-8 \xff")
    bad = run(home, "code", "suggest", str(note), "--setting", "outpatient")
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    bad = run(home, "code", "suggest", str(note), "--setting", "emergency")
    assert bad.returncode == 2 and "--setting must be one of" in bad.stderr


def test_codes_import_and_list(home: Path) -> None:
    done = run(home, "codes", "import", "--system", "icd10pcs", "--fiscal-year", "2026",
               str(PCS_2026))
    assert done.returncode == 0, done.stderr
    assert "imported icd10pcs" in done.stdout and "79115 entries" in done.stdout
    again = run(home, "codes", "import", "--system", "icd10pcs", "--from", "2026-01-01",
                "--version", "other", str(PCS_2026))
    assert again.returncode == 1 and "overlaps release" in again.stderr
    listed = run(home, "codes", "list")
    assert "icd10cm" in listed.stdout and "icd10pcs" in listed.stdout
    missing = run(home, "codes", "import", "--system", "hcpcs", str(PCS_2026))
    assert missing.returncode == 2 and "--fiscal-year or --from" in missing.stderr


def test_show_prints_the_hierarchy_and_notes(home: Path) -> None:
    done = run(home, "code", "show", "I10")
    assert done.returncode == 0, done.stderr
    assert "Essential (primary) hypertension" in done.stdout and "excludes1" in done.stdout
    unknown = run(home, "code", "show", "I10.9")
    assert unknown.returncode == 1 and "is not a code in ICD-10-CM" in unknown.stderr
