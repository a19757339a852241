"""``chartkeeper audit`` against a real SQLite file and a real PostgreSQL.

Most tests invoke the real command-line app in this process (typer's runner); the first runs
it as a separate process, the way an operator or a cron job does. Tampering is done as in
test_audit.py: drop the append-only triggers, change rows with SQL.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, update
from typer.testing import CliRunner

from chartkeeper.cli import app
from chartkeeper.fhir.validation import validate_resource
from chartkeeper.security.audit import (
    CSV_COLUMNS,
    AuditAction,
    AuditKey,
    AuditTrail,
    audit_checkpoint,
    audit_entry,
    audit_patient,
    create_audit_schema,
)
from chartkeeper.store.engine import make_engine
from tests.security.audit_support import FakeClock, plain_sha256, record, stored, tamper


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def audit_cli(home: Path, database_url: str, *args: str) -> Completed:
    """``chartkeeper audit ARGS`` through the real command-line app, in this process."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CHARTKEEPER_")}
    env.update(CHARTKEEPER_HOME=str(home), CHARTKEEPER_DATABASE_URL=database_url,
               CHARTKEEPER_AUDIT_DATABASE_URL=database_url)
    result = CliRunner().invoke(app, ["audit", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Completed(result.exit_code, result.stdout, result.stderr)


def audit_process(home: Path, database_url: str, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    """``python -m chartkeeper.cli audit ARGS`` as a separate process, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTKEEPER_")}
    env.update(CHARTKEEPER_HOME=str(home), CHARTKEEPER_DATABASE_URL=database_url,
               CHARTKEEPER_AUDIT_DATABASE_URL=database_url)
    return subprocess.run([sys.executable, "-m", "chartkeeper.cli", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def trail(engine: Engine, home: Path) -> AuditTrail:
    """The trail the application wrote, with the key in the home the CLI is pointed at."""
    return AuditTrail(engine, AuditKey.in_home(home), clock=FakeClock())


def fill(trail: AuditTrail, count: int) -> None:
    trail.append_many(None, [record(n) for n in range(count)])


# --------------------------------------------------------------------------- verify


def test_verify_as_a_process_exits_0_when_intact_and_1_when_broken(
        trail: AuditTrail, engine: Engine, home: Path, database_url: str) -> None:
    fill(trail, 6)
    trail.checkpoint()
    fill(trail, 2)

    result = audit_process(home, database_url, "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "audit trail intact: 8 entries, 1 checkpoints\n"
    assert result.stderr == ""

    tamper(engine, update(audit_entry).where(audit_entry.c.seq == 7).values(role="admin"))
    result = audit_process(home, database_url, "verify")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("audit trail BROKEN at entry 7: entry 7's contents do not "
                                    "match its entry_hash")


def _edit_a_field(engine: Engine) -> int:
    tamper(engine, update(audit_entry).where(audit_entry.c.seq == 3)
           .values(patient_id="pat-other"))
    return 3


def _delete_a_middle_entry(engine: Engine) -> int:
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq == 4))
    return 4


def _swap_two_entries(engine: Engine) -> int:
    second, fifth = stored(engine, 2), stored(engine, 5)
    tamper(engine,
           update(audit_entry).where(audit_entry.c.seq == 2)
           .values(**{k: v for k, v in fifth.items() if k != "seq"}),
           update(audit_entry).where(audit_entry.c.seq == 5)
           .values(**{k: v for k, v in second.items() if k != "seq"}))
    return 2


def _truncate_past_the_checkpoint(engine: Engine) -> int:
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq >= 5))  # checkpoint covers 6
    return 5


def _forge_an_entry(engine: Engine) -> int:
    head = stored(engine, 8)
    forged: dict[str, Any] = {**head, "seq": 9, "patient_id": "pat-2", "details": "{}",
                              "prev_hash": head["entry_hash"]}
    forged["entry_hash"] = plain_sha256(head["entry_hash"], forged)
    tamper(engine, insert(audit_entry).values(**forged))
    return 9


@pytest.mark.parametrize(
    ("tampering", "reason"),
    [
        pytest.param(_edit_a_field, "edited or forged", id="edited-field"),
        pytest.param(_delete_a_middle_entry, "entry 4 is missing", id="deleted-middle"),
        pytest.param(_swap_two_entries, "prev_hash", id="swapped"),
        pytest.param(_truncate_past_the_checkpoint, "truncated", id="truncated-tail"),
        pytest.param(_forge_an_entry, "edited or forged", id="forged-entry"),
    ],
)
def test_verify_exits_1_and_names_the_first_broken_entry(
        trail: AuditTrail, engine: Engine, home: Path, database_url: str,
        tampering: Callable[[Engine], int], reason: str) -> None:
    fill(trail, 6)
    trail.checkpoint()
    fill(trail, 2)
    broken_seq = tampering(engine)

    result = audit_cli(home, database_url, "verify")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"audit trail BROKEN at entry {broken_seq}: ")
    assert reason in result.stderr


def test_an_outside_anchor_catches_a_truncation_that_deleted_the_checkpoints(
        trail: AuditTrail, engine: Engine, home: Path, database_url: str,
        tmp_path: Path) -> None:
    fill(trail, 6)
    anchor = tmp_path / "shipped-off-server" / "anchor.json"
    anchor.parent.mkdir()
    signed = audit_cli(home, database_url, "checkpoint", "--out", str(anchor))
    assert signed.returncode == 0, signed.stderr
    printed = json.loads(signed.stdout)
    assert printed == json.loads(anchor.read_text())
    assert sorted(printed) == ["entry_hash", "seq", "signature", "signed_at"]
    assert printed["seq"] == 6 and printed["entry_hash"] == stored(engine, 6)["entry_hash"]

    intact = audit_cli(home, database_url, "verify", "--anchor", str(anchor))
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.splitlines() == [
        "audit trail intact: 6 entries, 1 checkpoints",
        f"anchor for entry 6 signed at {printed['signed_at']} matches"]

    tamper(engine, delete(audit_entry).where(audit_entry.c.seq >= 4),
           delete(audit_patient).where(audit_patient.c.seq >= 4), delete(audit_checkpoint))
    # Without the anchor, a clean cut with its checkpoints gone looks like a shorter chain...
    assert audit_cli(home, database_url, "verify").returncode == 0
    # ...the copy kept off the server names an entry that is no longer there.
    caught = audit_cli(home, database_url, "verify", "--anchor", str(anchor))
    assert caught.returncode == 1
    assert caught.stderr.startswith("audit trail BROKEN at entry 4: ")
    assert "truncated" in caught.stderr


def test_a_forged_anchor_is_reported_as_broken(trail: AuditTrail, home: Path,
                                               database_url: str, tmp_path: Path) -> None:
    fill(trail, 3)
    real = trail.checkpoint()
    anchor = tmp_path / "anchor.json"
    anchor.write_text(json.dumps({"seq": real.seq, "entry_hash": real.entry_hash,
                                  "signed_at": real.signed_at, "signature": "0" * 64}))
    result = audit_cli(home, database_url, "verify", "--anchor", str(anchor))
    assert result.returncode == 1 and "invalid signature" in result.stderr


# --------------------------------------------------------------------------- refusals


def test_missing_or_unsafe_key_and_bad_anchors_exit_2(tmp_path: Path, sqlite_url: str) -> None:
    home = tmp_path / "home"
    engine = make_engine(sqlite_url)
    try:
        create_audit_schema(engine)
        fresh = audit_cli(home, sqlite_url, "verify")
        assert fresh.returncode == 2
        assert "audit.key does not exist; verifying needs the key" in fresh.stderr
        assert not (home / "audit.key").exists()  # verify never makes a key

        fill(AuditTrail(engine, AuditKey.in_home(home)), 3)
        (home / "audit.key").rename(tmp_path / "elsewhere.key")
        for command in ("verify", "checkpoint", "report"):
            result = audit_cli(home, sqlite_url, command)
            assert result.returncode == 2, command
            assert "audit.key does not exist" in result.stderr
            assert result.stdout == ""
        assert not (home / "audit.key").exists()  # no new key for an existing trail

        (tmp_path / "elsewhere.key").rename(home / "audit.key")
        (home / "audit.key").chmod(0o644)
        loose = audit_cli(home, sqlite_url, "verify")
        assert loose.returncode == 2 and "0600" in loose.stderr
        (home / "audit.key").chmod(0o600)

        other_key = tmp_path / "other" / "audit.key"
        AuditKey(other_key)
        wrong = audit_cli(other_key.parent, sqlite_url, "verify")
        assert wrong.returncode == 1 and "BROKEN at entry 1" in wrong.stderr

        for content, message in (("{not json", "is not JSON"),
                                 ('{"seq": "6"}', "is not a checkpoint"),
                                 ('[1, 2]', "is not a checkpoint")):
            bad = tmp_path / "bad-anchor.json"
            bad.write_text(content)
            result = audit_cli(home, sqlite_url, "verify", "--anchor", str(bad))
            assert result.returncode == 2 and message in result.stderr, content
        missing = audit_cli(home, sqlite_url, "verify", "--anchor", str(tmp_path / "nope.json"))
        assert missing.returncode == 2 and "cannot read anchor" in missing.stderr

        assert audit_cli(home, sqlite_url, "verify").returncode == 0
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- report


def _fill_for_reports(trail: AuditTrail) -> None:
    trail.append_many(None, [
        record(0, patient_id="pat-1", user_id="dr-a"),
        record(1, patient_id="pat-2", user_id="dr-a"),
        record(2, patient_id="pat-2", user_id="dr-b", action=AuditAction.UPDATE),
        record(3, patient_id=None, user_id="dr-b", action=AuditAction.LOGIN,
               resource_type=None, resource_id=None),
        record(4, patient_id="pat-2", user_id="dr-a", action=AuditAction.SEARCH,
               resource_id=None, details={"query": "Observation?patient=&code="}),
    ])  # FakeClock: recorded 08:00:01 ... 08:00:05 on 2026-03-01


def _rows(stdout: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]


def test_report_csv_filters_and_the_reading_is_audited(
        trail: AuditTrail, home: Path, database_url: str) -> None:
    _fill_for_reports(trail)

    filtered = audit_cli(home, database_url, "report", "--patient", "pat-2", "--user", "dr-a",
                         "--since", "2026-03-01T08:00:02Z", "--until", "2026-03-01T09:00:00Z")
    assert filtered.returncode == 0, filtered.stderr
    assert [(r["seq"], r["patient_id"], r["user_id"], r["action"])
            for r in _rows(filtered.stdout)] == [("2", "pat-2", "dr-a", "read"),
                                                 ("5", "pat-2", "dr-a", "search")]

    access = trail.entries(action="audit-log-access")
    assert len(access) == 1
    assert (access[0].seq, access[0].user_id, access[0].role, access[0].patient_id) == (
        6, getpass.getuser(), "administrator", "pat-2")
    assert access[0].details == {
        "via": "cli", "format": "csv", "patient": "pat-2", "user": "dr-a",
        "since": "2026-03-01T08:00:02Z", "until": "2026-03-01T09:00:00Z",
        "query": "AuditEvent?patient=&agent=&date=&date="}

    # Unfiltered, the report shows everything, its own reading last (recorded before output).
    everything = audit_cli(home, database_url, "report")
    assert everything.returncode == 0, everything.stderr
    rows = _rows(everything.stdout)
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    assert rows[-1]["action"] == "audit-log-access" and rows[-1]["patient_id"] == ""
    assert json.loads(rows[-1]["details"]) == {"via": "cli", "format": "csv",
                                               "query": "AuditEvent?"}
    assert trail.verify().ok


def test_report_fhir_is_a_searchset_bundle_of_balp_audit_events(
        trail: AuditTrail, home: Path, database_url: str) -> None:
    _fill_for_reports(trail)

    result = audit_cli(home, database_url, "report", "--format", "fhir", "--patient", "pat-2")
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "searchset")
    events = [e["resource"] for e in bundle["entry"]]
    # pat-2's entries and the reading of this report, which is about pat-2 too.
    assert [e["id"] for e in events] == ["2", "3", "5", "6"]
    assert bundle["total"] == 4
    assert all(e["search"] == {"mode": "match"} for e in bundle["entry"])
    assert bundle["entry"][0]["fullUrl"].endswith("/AuditEvent/2")
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    assert events[0]["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]
    reading = events[-1]
    assert reading["type"]["code"] == "110101"  # Audit Log Used
    assert any(a.get("who", {}).get("identifier", {}).get("value") == getpass.getuser()
               for a in reading["agent"])
    assert [i for i in validate_resource(bundle) if i.severity == "error"] == []

    nobody = audit_cli(home, database_url, "report", "--format", "fhir", "--user", "nobody")
    assert nobody.returncode == 0, nobody.stderr
    empty = json.loads(nobody.stdout)
    assert empty["total"] == 0 and "entry" not in empty  # FHIR JSON has no empty arrays
    assert [i for i in validate_resource(empty) if i.severity == "error"] == []
    assert trail.verify().ok


def test_report_refuses_bad_filters_and_records_nothing(
        trail: AuditTrail, home: Path, database_url: str) -> None:
    fill(trail, 2)
    for args, message in ((("--since", "last tuesday"), "not an ISO 8601 instant"),
                          (("--until", "2026-03-01T08:00:00"), "no time zone"),
                          (("--format", "xml"), "xml")):
        result = audit_cli(home, database_url, "report", *args)
        assert result.returncode == 2, args
        assert message in result.stderr and result.stdout == ""
    assert len(trail.entries()) == 2


def test_an_unreachable_database_exits_2_without_showing_its_password(tmp_path: Path) -> None:
    url = "postgresql://auditor:s3cret-pw@/chartkeeper?host=/nonexistent-socket-dir"
    for command in ("verify", "checkpoint", "report"):
        result = audit_cli(tmp_path / "home", url, command)
        assert result.returncode == 2, command
        assert result.stderr.startswith("error: database postgresql://auditor:***@/chartkeeper")
        assert "s3cret-pw" not in result.stderr + result.stdout
