"""Verification of the audit trail: the chain, its checkpoints and the patient index."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row

from chartkeeper.security.audit_key import canonical_entry
from chartkeeper.security.audit_records import Checkpoint, VerifyResult, entry_patients
from chartkeeper.security.audit_schema import (
    GENESIS_HASH,
    audit_checkpoint,
    audit_entry,
    audit_patient,
    audit_patient_mark,
)

if TYPE_CHECKING:
    from chartkeeper.security.audit import AuditTrail


def verify_chain(trail: AuditTrail, *, anchor: Checkpoint | None, batch_size: int
                 ) -> VerifyResult:
    """``AuditTrail.verify``: recompute ``trail``'s chain and check its checkpoints and index."""
    checked = 0
    checkpoints_checked = 0
    expected_seq = 1
    prev_hash = GENESIS_HASH
    anchor_hash: str | None = GENESIS_HASH if anchor is not None and anchor.seq == 0 else None

    def broken(seq: int, reason: str) -> VerifyResult:
        return VerifyResult(False, checked, seq, reason, checkpoints_checked)

    def check_signature(cp: Checkpoint | Row[Any], what: str) -> str | None:
        expected = trail.key.checkpoint_signature(cp.seq, cp.entry_hash, cp.signed_at)
        if not hmac.compare_digest(expected, cp.signature):
            return (f"{what} for entry {cp.seq} signed at {cp.signed_at} has an invalid "
                    "signature (forged, altered, or signed with another key)")
        return None

    if anchor is not None and (problem := check_signature(anchor, "anchor checkpoint")):
        return broken(anchor.seq, problem)
    with trail._snapshot() as conn:
        checkpoints = trail._stream(conn, audit_checkpoint, [], batch_size)
        pending = next(checkpoints, None)
        # A checkpoint of the empty chain (seq 0) vouches for the genesis hash.
        while pending is not None and pending.seq <= 0:
            if problem := check_signature(pending, "checkpoint"):
                return broken(pending.seq, problem)
            if pending.seq < 0 or pending.entry_hash != GENESIS_HASH:
                return broken(pending.seq, f"checkpoint for entry {pending.seq} is not "
                                           "a checkpoint of the empty chain")
            checkpoints_checked += 1
            pending = next(checkpoints, None)
        expected_index: dict[int, set[str]] = {}
        # Entries after the mark are not indexed yet: they must have no rows.
        indexed_through = int(conn.execute(
            select(func.coalesce(func.max(audit_patient_mark.c.indexed_through), 0))
        ).scalar_one())

        def index_problem() -> tuple[int, str] | None:
            """Compare the patient index with the entries of the window just read."""
            if not expected_index:
                return None
            low, high = min(expected_index), max(expected_index)
            stored: dict[int, set[str]] = {}
            for seq, pid in conn.execute(
                    select(audit_patient.c.seq, audit_patient.c.patient_id)
                    .where(audit_patient.c.seq >= low, audit_patient.c.seq <= high)):
                stored.setdefault(int(seq), set()).add(pid)
            for seq in sorted(set(expected_index) | set(stored)):
                if stored.get(seq, set()) != expected_index.get(seq, set()):
                    return seq, (f"the patient index of entry {seq} does not match the "
                                 "entry (rows added or removed: reports by patient would "
                                 "be wrong)")
            expected_index.clear()
            return None

        for row in trail._stream(conn, audit_entry, [], batch_size):
            if row.seq != expected_seq:
                return broken(expected_seq, f"entry {expected_seq} is missing: the entry "
                                            f"after {expected_seq - 1} is {row.seq}")
            if row.prev_hash != prev_hash:
                return broken(row.seq, f"entry {row.seq}'s prev_hash does not match the "
                                       f"hash of entry {row.seq - 1} (removed, reordered "
                                       "or replaced entries)")
            computed = trail.key.entry_hash(prev_hash, canonical_entry(row._mapping))
            if not hmac.compare_digest(computed, row.entry_hash):
                return broken(row.seq, f"entry {row.seq}'s contents do not match its "
                                       "entry_hash under this key (edited or forged)")
            while pending is not None and pending.seq <= row.seq:
                if problem := check_signature(pending, "checkpoint"):
                    return broken(pending.seq, problem)
                if pending.entry_hash != row.entry_hash:
                    return broken(row.seq, f"checkpoint for entry {row.seq} signed at "
                                           f"{pending.signed_at} names a different hash "
                                           "than the chain holds")
                checkpoints_checked += 1
                pending = next(checkpoints, None)
            if anchor is not None and row.seq == anchor.seq:
                anchor_hash = row.entry_hash
            expected_index[row.seq] = (entry_patients(row.patient_id, row.details)
                                       if row.seq <= indexed_through else set())
            if len(expected_index) >= batch_size and (problem_at := index_problem()):
                return broken(*problem_at)
            prev_hash = computed
            expected_seq += 1
            checked += 1
        if problem_at := index_problem():
            return broken(*problem_at)
        orphan = conn.execute(select(func.min(audit_patient.c.seq)).where(
            audit_patient.c.seq >= expected_seq)).scalar()
        if pending is not None:
            if problem := check_signature(pending, "checkpoint"):
                return broken(pending.seq, problem)
            return broken(expected_seq, f"the chain ends at entry {expected_seq - 1} but "
                                        f"a checkpoint signed at {pending.signed_at} covers "
                                        f"entry {pending.seq}: the tail was truncated")
    if orphan is not None:
        return broken(int(orphan), f"the patient index names entry {orphan}, past the end "
                                   f"of the chain at {expected_seq - 1} (the tail was "
                                   "truncated)")
    if indexed_through >= expected_seq:
        return broken(expected_seq, f"the patient index was written up to entry "
                                    f"{indexed_through}, past the end of the chain at "
                                    f"{expected_seq - 1} (the tail was truncated)")
    if anchor is not None:
        if anchor_hash is None:
            return broken(expected_seq, f"the chain ends at entry {expected_seq - 1} but "
                                        f"the anchor covers entry {anchor.seq}: the tail "
                                        "was truncated")
        if anchor_hash != anchor.entry_hash:
            return broken(anchor.seq, f"the anchor for entry {anchor.seq} names a "
                                      "different hash than the chain holds")
    return VerifyResult(True, checked, None, None, checkpoints_checked)
