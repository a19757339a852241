"""The tamper-evident audit trail on a real SQLite file and a real PostgreSQL.

Tampering is done the way an attacker with database access would: drop the append-only
triggers, then change rows with plain SQL. The product offers no way around its triggers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import stat
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from chartkeeper.fhir.validation import validate_resource
from chartkeeper.security.audit import (
    CSV_COLUMNS,
    AuditAction,
    AuditEntry,
    AuditKey,
    AuditKeyError,
    AuditOutcome,
    AuditTrail,
    AuditTransactionError,
    Checkpoint,
    InvalidAuditRecord,
    audit_checkpoint,
    audit_entry,
    audit_patient,
    audit_patient_mark,
    create_audit_schema,
)
from chartkeeper.store import Store
from chartkeeper.store.engine import WRITE_OPTION, make_engine
from tests.security.audit_support import (
    FakeClock,
    entry_count,
    plain_sha256,
    record,
    stored,
    tamper,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return AuditKey(tmp_path / "home" / "audit.key")


@pytest.fixture
def trail(engine: Engine, key: AuditKey) -> AuditTrail:
    return AuditTrail(engine, key, clock=FakeClock())


def fill(trail: AuditTrail, count: int) -> None:
    for n in range(count):
        trail.append(None, record(n))


# --------------------------------------------------------------------------- appending


def test_appended_entries_form_a_chain_that_verifies(trail: AuditTrail, engine: Engine) -> None:
    seqs = [trail.append(None, record(n)) for n in range(3)]
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        seqs.append(trail.append(conn, record(3, details={"before": "1", "after": "2"},
                                               action=AuditAction.UPDATE)))

    assert seqs == [1, 2, 3, 4]
    result = trail.verify()
    assert result.ok and result.entries_checked == 4 and result.first_broken_seq is None
    entries = trail.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.entry_hash
               for earlier, later in zip(entries, entries[1:], strict=False))
    assert entries[3].action == "update" and entries[3].details == {"before": "1", "after": "2"}
    assert entries[0].recorded.endswith("Z")


def test_append_many_writes_one_chained_run_and_returns_the_seqs(
        trail: AuditTrail, engine: Engine) -> None:
    assert trail.append(None, record(0)) == 1
    assert trail.append_many(None, [record(n) for n in range(1, 6)]) == [2, 3, 4, 5, 6]
    assert trail.append_many(None, []) == []

    entries = trail.entries()
    assert [e.resource_id for e in entries] == [f"obs-{n}" for n in range(6)]
    assert all(later.prev_hash == earlier.entry_hash
               for earlier, later in zip(entries, entries[1:], strict=False))
    result = trail.verify()
    assert result.ok and result.entries_checked == 6


def test_append_many_lands_whole_or_not_at_all(trail: AuditTrail, engine: Engine) -> None:
    trail.append(None, record(0))
    with pytest.raises(InvalidAuditRecord, match="not JSON-serializable"):
        trail.append_many(None, [record(1), record(2, details={"blob": object()}), record(3)])
    assert entry_count(engine) == 1

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            assert trail.append_many(conn, [record(1), record(2)]) == [2, 3]
            raise Refused
    assert entry_count(engine) == 1
    assert trail.verify().ok


@pytest.mark.parametrize("table", ["audit_entry", "audit_checkpoint"])
def test_triggers_refuse_update_and_delete(trail: AuditTrail, engine: Engine,
                                           table: str) -> None:
    fill(trail, 2)
    trail.checkpoint()
    create_audit_schema(engine)  # idempotent: a second run keeps tables, rows and triggers

    for statement in (f"UPDATE {table} SET seq = seq + 100", f"DELETE FROM {table}"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
                with conn.begin():
                    conn.exec_driver_sql(statement)
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {table}")

    assert entry_count(engine) == 2
    result = trail.verify()
    assert result.ok and result.checkpoints_checked == 1


def test_invalid_records_are_refused_and_nothing_is_stored(trail: AuditTrail,
                                                          engine: Engine) -> None:
    with pytest.raises(InvalidAuditRecord, match="unknown audit action 'peek'"):
        record(1, action="peek")
    with pytest.raises(InvalidAuditRecord, match="unknown audit outcome"):
        record(1, outcome="maybe")
    with pytest.raises(InvalidAuditRecord, match="non-empty user_id"):
        record(1, user_id="")
    with pytest.raises(InvalidAuditRecord, match="not JSON-serializable"):
        trail.append(None, record(1, details={"blob": object()}))
    assert entry_count(engine) == 0


# --------------------------------------------------------------------------- tampering


def test_edited_field_is_detected_at_its_seq(trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 5)
    tamper(engine, update(audit_entry).where(audit_entry.c.seq == 3)
           .values(user_id="someone-else"))

    result = trail.verify()
    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.reason is not None and "edited or forged" in result.reason
    assert result.entries_checked == 2


def test_deleted_middle_entry_is_detected(trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 5)
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq == 3))

    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 3
    assert result.reason is not None and "entry 3 is missing" in result.reason


def test_deleted_entry_with_renumbered_successors_is_detected(trail: AuditTrail,
                                                              engine: Engine) -> None:
    fill(trail, 5)
    # Close the gap: delete 3, then move 4 and 5 down so seq looks contiguous.
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq == 3),
           update(audit_entry).where(audit_entry.c.seq == 4).values(seq=3),
           update(audit_entry).where(audit_entry.c.seq == 5).values(seq=4))

    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 3
    assert result.reason is not None and "prev_hash" in result.reason


def test_swapped_entries_are_detected(trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 5)
    second, fourth = stored(engine, 2), stored(engine, 4)
    tamper(engine,
           update(audit_entry).where(audit_entry.c.seq == 2)
           .values(**{k: v for k, v in fourth.items() if k != "seq"}),
           update(audit_entry).where(audit_entry.c.seq == 4)
           .values(**{k: v for k, v in second.items() if k != "seq"}))

    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 2


def test_tail_truncated_past_a_checkpoint_is_detected(trail: AuditTrail,
                                                      engine: Engine) -> None:
    fill(trail, 6)
    checkpoint = trail.checkpoint()
    assert checkpoint.seq == 6
    fill(trail, 2)
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq >= 5))

    result = trail.verify()
    assert not result.ok
    assert result.first_broken_seq == 5
    assert result.reason is not None and "truncated" in result.reason
    assert result.entries_checked == 4


def test_truncation_that_also_deletes_checkpoints_needs_an_outside_anchor(
        trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 6)
    anchor = trail.checkpoint()  # the copy the operator shipped off the database server
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq >= 4),
           delete(audit_patient).where(audit_patient.c.seq >= 4), delete(audit_checkpoint))

    # With no checkpoint left in the database, a clean cut of the tail looks like a short chain:
    assert trail.verify().ok
    # ...but the anchor kept outside names an entry the chain no longer has.
    result = trail.verify(anchor=anchor)
    assert not result.ok and result.first_broken_seq == 4
    assert result.reason is not None and "truncated" in result.reason

    forged_anchor = Checkpoint(3, stored(engine, 3)["entry_hash"], anchor.signed_at, "0" * 64)
    result = trail.verify(anchor=forged_anchor)
    assert not result.ok and result.reason is not None and "invalid signature" in result.reason


def test_forged_entry_with_plain_sha256_is_detected(trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 4)
    head = stored(engine, 4)
    forged: dict[str, Any] = {
        **head, "seq": 5, "user_id": "dr-okafor", "action": "read", "patient_id": "pat-2",
        "resource_id": "obs-covering-up", "details": "{}", "prev_hash": head["entry_hash"],
    }
    forged["entry_hash"] = plain_sha256(head["entry_hash"], forged)
    tamper(engine, insert(audit_entry).values(**forged))

    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 5
    assert result.entries_checked == 4


def test_rewritten_chain_with_plain_sha256_is_detected(trail: AuditTrail,
                                                       engine: Engine) -> None:
    fill(trail, 5)
    # The classic attack on an unkeyed chain: edit entry 2, then rehash everything after it.
    prev_hash = stored(engine, 1)["entry_hash"]
    statements = []
    for seq in range(2, 6):
        row = stored(engine, seq)
        if seq == 2:
            row["patient_id"] = "pat-other"
        row["prev_hash"] = prev_hash
        row["entry_hash"] = prev_hash = plain_sha256(prev_hash, row)
        statements.append(update(audit_entry).where(audit_entry.c.seq == seq).values(**row))
    tamper(engine, *statements)

    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 2


def test_forged_checkpoints_are_detected(trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 3)
    real = trail.checkpoint()
    signed_at = "2026-03-01T09:00:00.000000Z"
    plain = hashlib.sha256(f"checkpoint{real.seq}{real.entry_hash}{signed_at}".encode())
    # An altered checkpoint (re-dated and "re-signed" without the key)...
    tamper(engine, update(audit_checkpoint).where(audit_checkpoint.c.seq == real.seq)
           .values(signed_at=signed_at, signature=plain.hexdigest()))
    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 3
    assert result.reason is not None and "invalid signature" in result.reason

    # ...and an invented one for an entry that never existed.
    tamper(engine, delete(audit_checkpoint),
           insert(audit_checkpoint).values(seq=9, entry_hash="ab" * 32, signed_at=signed_at,
                                           signature="cd" * 32))
    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 9
    assert result.reason is not None and "invalid signature" in result.reason


def test_verify_streams_in_batches_and_checks_every_checkpoint(trail: AuditTrail,
                                                               engine: Engine) -> None:
    for _ in range(3):
        fill(trail, 10)
        trail.checkpoint()
    assert trail.checkpoint().seq == 30  # signing an unchanged head again reuses the checkpoint

    result = trail.verify(batch_size=7)
    assert result.ok and result.entries_checked == 30 and result.checkpoints_checked == 3

    tamper(engine, update(audit_entry).where(audit_entry.c.seq == 22).values(role="admin"))
    result = trail.verify(batch_size=7)
    assert not result.ok and result.first_broken_seq == 22


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_produce_one_valid_chain(trail: AuditTrail, engine: Engine) -> None:
    threads, per_thread = 4, 50
    start = threading.Barrier(threads)
    seqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        try:
            start.wait()
            mine: list[int] = []
            if worker % 2 == 0:
                # Its own connection, one write transaction per append.
                with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
                    for n in range(per_thread):
                        with conn.begin():
                            mine.append(trail.append(conn, record(n, user_id=f"user-{worker}")))
            else:
                for n in range(per_thread):
                    mine.append(trail.append(None, record(n, user_id=f"user-{worker}")))
            with lock:
                seqs.extend(mine)
        except BaseException as exc:  # reported below, in the test's own thread
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=writer, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()

    assert errors == []
    assert sorted(seqs) == list(range(1, threads * per_thread + 1))
    result = trail.verify()
    assert result.ok and result.entries_checked == threads * per_thread
    for worker in range(threads):
        assert len(trail.entries(user_id=f"user-{worker}", limit=1000)) == per_thread


# --------------------------------------------------------------------------- transactions


def test_append_commits_and_rolls_back_with_the_callers_write(
        database_url: str, trail: AuditTrail, engine: Engine) -> None:
    store = Store(database_url)
    store.create_schema()
    try:
        trail.append(None, record(0))

        class Refused(Exception):
            pass

        with pytest.raises(Refused):
            with store.write() as txn:
                created = txn.create({"resourceType": "Patient", "gender": "female"})
                trail.append(txn.conn, record(1, action=AuditAction.CREATE,
                                              resource_type="Patient",
                                              resource_id=created.resource_id))
                raise Refused
        assert store.row_counts()["resource"] == 0
        assert entry_count(engine) == 1
        assert trail.verify().ok

        with store.write() as txn:
            created = txn.create({"resourceType": "Patient", "gender": "male"})
            seq = trail.append(txn.conn, record(2, action=AuditAction.CREATE,
                                                resource_type="Patient",
                                                resource_id=created.resource_id))
        assert seq == 2
        assert store.row_counts()["resource"] == 1
        assert trail.entries()[-1].resource_id == created.resource_id
        assert trail.verify().ok
    finally:
        store.dispose()


def test_append_refuses_a_connection_without_a_suitable_transaction(
        trail: AuditTrail, engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(AuditTransactionError, match="open transaction"):
            trail.append(conn, record(1))
        if engine.dialect.name == "sqlite":
            with conn.begin():
                with pytest.raises(AuditTransactionError, match="BEGIN IMMEDIATE"):
                    trail.append(conn, record(1))
    assert entry_count(engine) == 0


# --------------------------------------------------------------------------- key


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "audit.key"
    first = AuditKey(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_bytes()
    assert len(secret) == 32

    again = AuditKey(path)
    assert path.read_bytes() == secret
    assert again.entry_hash("0" * 64, b"x") == first.entry_hash("0" * 64, b"x")
    assert AuditKey(tmp_path / "other.key").entry_hash("0" * 64, b"x") != \
        first.entry_hash("0" * 64, b"x")
    assert "audit.key" in repr(first) and secret.hex() not in repr(first)


def test_key_file_readable_by_others_or_malformed_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes(b"k" * 32)
    loose.chmod(0o644)
    with pytest.raises(AuditKeyError, match="0600"):
        AuditKey(loose)

    short = tmp_path / "short.key"
    short.write_bytes(b"k" * 5)
    short.chmod(0o600)
    with pytest.raises(AuditKeyError, match="holds 5 bytes"):
        AuditKey(short)


def test_a_different_key_fails_verification(trail: AuditTrail, engine: Engine,
                                            tmp_path: Path) -> None:
    fill(trail, 3)
    trail.checkpoint()
    assert trail.verify().ok

    result = AuditTrail(engine, AuditKey(tmp_path / "stolen-db-only.key")).verify()
    assert not result.ok and result.first_broken_seq == 1


# --------------------------------------------------------------------------- reports


def test_entries_filter_by_patient_user_and_time(trail: AuditTrail) -> None:
    clock = FakeClock()
    trail = AuditTrail(trail.engine, trail.key, clock=clock)
    trail.append(None, record(0, patient_id="pat-1", user_id="dr-a"))
    trail.append(None, record(1, patient_id="pat-2", user_id="dr-a"))
    middle = clock.now
    trail.append(None, record(2, patient_id="pat-1", user_id="dr-b"))
    trail.append(None, record(3, patient_id=None, user_id="dr-b", action=AuditAction.LOGIN,
                              resource_type=None, resource_id=None))

    assert [e.seq for e in trail.entries(patient_id="pat-1")] == [1, 3]
    assert [e.seq for e in trail.entries(user_id="dr-b")] == [3, 4]
    assert [e.seq for e in trail.entries(action="login")] == [4]
    assert [e.seq for e in trail.entries(since=middle)] == [2, 3, 4]
    assert [e.seq for e in trail.entries(until=middle.isoformat())] == [1]
    assert [e.seq for e in trail.entries(limit=2, offset=1)] == [2, 3]
    with pytest.raises(InvalidAuditRecord, match="not an ISO 8601 instant"):
        trail.entries(since="last tuesday")
    with pytest.raises(InvalidAuditRecord, match="no time zone"):
        trail.entries(since=datetime(2026, 3, 1))


def test_csv_export_has_a_header_and_one_row_per_entry(trail: AuditTrail) -> None:
    trail.append(None, record(0, patient_id="pat-1"))
    trail.append(None, record(1, patient_id="pat-2", outcome=AuditOutcome.DENIED))
    trail.append(None, record(2, patient_id=None, action=AuditAction.LOGOUT,
                              resource_type=None, resource_id=None))

    out = io.StringIO()
    assert trail.export_csv(out, batch_size=2) == 3
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    by_name = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert by_name[1]["outcome"] == "denied" and by_name[1]["patient_id"] == "pat-2"
    assert by_name[2]["patient_id"] == "" and by_name[2]["action"] == "logout"
    assert by_name[0]["entry_hash"] == trail.entries()[0].entry_hash

    one = io.StringIO()
    assert trail.export_csv(one, patient_id="pat-2") == 1
    assert len(list(csv.reader(io.StringIO(one.getvalue())))) == 2


# --------------------------------------------------------------------------- AuditEvent


def _coding_of(event: dict[str, Any], *path: str) -> tuple[str, str]:
    value: Any = event
    for step in path:
        value = value[step]
    return value["system"], value["code"]


def _agent(event: dict[str, Any], code: str) -> dict[str, Any]:
    matches = [a for a in event["agent"]
               if any(c["code"] == code for c in a.get("type", {}).get("coding", []))]
    assert len(matches) == 1, f"expected one agent of type {code} in {event['agent']}"
    agent: dict[str, Any] = matches[0]
    return agent


def _entity(event: dict[str, Any], role: str) -> dict[str, Any]:
    matches = [e for e in event["entity"] if e.get("role", {}).get("code") == role]
    assert len(matches) == 1, f"expected one entity with role {role} in {event['entity']}"
    entity: dict[str, Any] = matches[0]
    return entity


def test_audit_event_for_a_patient_read_has_the_balp_elements(trail: AuditTrail) -> None:
    trail.append(None, record(7, details={"request_id": "req-42"}))
    entry = trail.entries()[0]
    event = trail.to_audit_event(entry)

    assert event["resourceType"] == "AuditEvent"
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]
    assert _coding_of(event, "type") == (
        "http://terminology.hl7.org/CodeSystem/audit-event-type", "rest")
    assert [(c["system"], c["code"]) for c in event["subtype"]] == [
        ("http://hl7.org/fhir/restful-interaction", "read")]
    assert event["action"] == "R"
    assert event["recorded"] == entry.recorded
    assert event["outcome"] == "0"
    user = _agent(event, "IRCP")
    assert user["requestor"] is True and user["who"]["identifier"]["value"] == "dr-okafor"
    assert user["role"] == [{"text": "physician"}]
    client = _agent(event, "110152")  # Destination Role ID: the reader receives the data
    assert client["network"] == {"address": "10.1.2.3", "type": "2"}
    server = _agent(event, "110153")
    assert server["requestor"] is False and "network" in server
    assert event["source"]["observer"] == {"display": "chartkeeper"}
    patient = _entity(event, "1")
    assert patient["what"] == {"reference": "Patient/pat-1"}
    assert patient["type"]["code"] == "1"
    data = _entity(event, "4")
    assert data["what"] == {"reference": "Observation/obs-7"}
    assert data["type"]["code"] == "2"
    transaction = [e for e in event["entity"] if e["type"]["code"] == "XrequestId"]
    assert transaction[0]["what"]["identifier"]["value"] == "req-42"
    assert [i for i in validate_resource(event) if i.severity == "error"] == []


@pytest.mark.parametrize(
    ("changes", "action", "event_type", "subtype", "profile", "outcome"),
    [
        ({"action": AuditAction.SEARCH, "resource_id": None,
          "details": {"query": "Observation?patient=&code="}},
         "E", "rest", "search-type", "PatientQuery", "0"),
        ({"action": AuditAction.CREATE, "patient_id": None, "resource_type": "Organization"},
         "C", "rest", "create", "Create", "0"),
        ({"action": AuditAction.UPDATE}, "U", "rest", "update", "PatientUpdate", "0"),
        ({"action": AuditAction.DELETE}, "D", "rest", "delete", "PatientDelete", "0"),
        ({"action": AuditAction.READ, "outcome": AuditOutcome.DENIED},
         "R", "rest", "read", None, "8"),
        ({"action": AuditAction.LOGIN_FAILURE, "outcome": AuditOutcome.FAILURE,
          "patient_id": None, "resource_type": None, "resource_id": None},
         "E", "110114", "110122", None, "4"),
        ({"action": AuditAction.BREAK_THE_GLASS}, "E", "110113", "110127", None, "0"),
        ({"action": AuditAction.DISCLOSURE}, "R", "110106", "disclose", None, "0"),
    ],
)
def test_audit_event_codes_follow_the_action(
        trail: AuditTrail, changes: dict[str, Any], action: str, event_type: str,
        subtype: str, profile: str | None, outcome: str) -> None:
    trail.append(None, record(1, **changes))
    entry: AuditEntry = trail.entries()[0]
    event = trail.to_audit_event(entry)

    assert event["action"] == action and event["outcome"] == outcome
    assert event["type"]["code"] == event_type
    assert [c["code"] for c in event["subtype"]] == [subtype]
    if profile is None:
        assert "meta" not in event
    else:
        assert event["meta"]["profile"][0].endswith(f"IHE.BasicAudit.{profile}")
    if entry.patient_id:
        assert _entity(event, "1")["what"] == {"reference": f"Patient/{entry.patient_id}"}
    if entry.action == "search":
        query = _entity(event, "24")
        assert query["description"] == "Observation?patient=&code="
        assert "what" not in query
    assert any(a["requestor"] is True for a in event["agent"])
    assert [i for i in validate_resource(event) if i.severity == "error"] == []


def test_reports_by_patient_find_multi_patient_entries_and_index_tampering_is_detected(
        trail: AuditTrail, engine: Engine) -> None:
    trail.append(None, record(1, patient_id=None,
                              details={"patients": ["pat-7", "pat-8"], "patientCount": 2}))
    trail.append(None, record(2, patient_id="pat-8"))
    trail.append(None, record(3, patient_id="pat-9"))
    assert [e.seq for e in trail.entries(patient_id="pat-8")] == [1, 2]
    assert [e.seq for e in trail.entries(patient_id="pat-7")] == [1]
    assert trail.verify().ok
    # Hiding an access from a patient's report by removing its index row is detected.
    tamper(engine, delete(audit_patient).where(audit_patient.c.seq == 1,
                                               audit_patient.c.patient_id == "pat-7"))
    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 1
    assert result.reason is not None and "patient index" in result.reason


def mark(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(audit_patient_mark.c.indexed_through)).scalar_one())


def index_rows(engine: Engine) -> set[tuple[int, str]]:
    with engine.connect() as conn:
        return {(int(seq), pid) for seq, pid in conn.execute(
            select(audit_patient.c.seq, audit_patient.c.patient_id))}


def test_the_patient_index_follows_the_chain_and_reports_catch_it_up(
        trail: AuditTrail, engine: Engine) -> None:
    trail.append(None, record(1, patient_id=None,
                              details={"patients": ["pat-7", "pat-8"], "patientCount": 2}))
    trail.append(None, record(2, patient_id="pat-8"))
    trail.append(None, record(3, patient_id=None))
    # Appending writes the entry alone: the index is behind, and that is not a break.
    assert index_rows(engine) == set() and mark(engine) == 0
    assert trail.verify().ok
    assert trail.index_patients() == 3
    assert index_rows(engine) == {(1, "pat-7"), (1, "pat-8"), (2, "pat-8")}
    assert mark(engine) == 3 and trail.index_patients() == 0
    # A report by patient catches up first, in batches of about max_rows rows.
    trail.append_many(None, [record(n, patient_id=f"pat-{n}") for n in range(4, 40)])
    assert [e.seq for e in trail.entries(patient_id="pat-39")] == [39]
    assert mark(engine) == 39 and trail.verify().ok
    trail.append_many(None, [record(n, patient_id=f"pat-{n}") for n in range(40, 60)])
    assert trail.index_patients(max_rows=10) == 20
    assert mark(engine) == 59 and len(index_rows(engine)) == 3 + 36 + 20


def test_the_mark_only_moves_forward(trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 3)
    trail.index_patients()
    for statement in (update(audit_patient_mark).values(indexed_through=1),
                      delete(audit_patient_mark)):
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, \
                pytest.raises(DBAPIError, match="only moves forward"), conn.begin():
            conn.execute(statement)
    assert mark(engine) == 3


def test_index_rows_above_the_mark_and_a_mark_past_the_end_are_detected(
        trail: AuditTrail, engine: Engine) -> None:
    fill(trail, 4)
    assert trail.index_patients() == 4
    fill(trail, 2)  # entries 5 and 6, not indexed yet
    # Rows for an entry the index has not reached: planted, not derived.
    tamper(engine, insert(audit_patient).values(seq=5, patient_id="pat-1"))
    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 5
    assert result.reason is not None and "patient index" in result.reason
    tamper(engine, delete(audit_patient).where(audit_patient.c.seq == 5))
    assert trail.verify().ok
    # Cutting indexed entries off the tail, rows and checkpoints too: the mark remembers.
    tamper(engine, delete(audit_entry).where(audit_entry.c.seq >= 3),
           delete(audit_patient).where(audit_patient.c.seq >= 3))
    result = trail.verify()
    assert not result.ok and result.first_broken_seq == 3
    assert result.reason is not None and "truncated" in result.reason


def test_a_trail_from_before_the_deferred_index_starts_indexed_to_its_head(
        tmp_path: Path, key: AuditKey) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        create_audit_schema(engine)
        old = AuditTrail(engine, key, clock=FakeClock())
        fill(old, 3)
        old.index_patients()
        # What an older version left: no mark, and an index on audit_entry.patient_id.
        tamper(engine, delete(audit_patient_mark))
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            conn.exec_driver_sql("DROP TABLE audit_patient_mark")
            conn.exec_driver_sql(
                "CREATE INDEX ix_audit_entry_patient ON audit_entry (patient_id, seq)")
        create_audit_schema(engine)
        assert mark(engine) == 3 and old.verify().ok
        with engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name = 'ix_audit_entry_patient'"
            ).first() is None
    finally:
        engine.dispose()
