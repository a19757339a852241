"""Releasing a coded Claim: the release gate, the interchange control numbers and the stored
837 batches.

``release_claims`` runs the coding edits and the X12 release gate (our checks and pyx12) on
each claim; those that pass go into one 837 per transaction kind, which takes the next control
number (``next_control_number``, a counter row in the store's database), and become active
with the 837 stored as a DocumentReference and written into the outbox. ``release_claim``
releases one claim; ``write_batch`` writes a stored batch again.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from chartkeeper import x12
from chartkeeper.coding import edits
from chartkeeper.coding.claims import (
    BATCH_TAG,
    CONTROL_SYSTEM,
    PCN_SYSTEM,
    REJECTED_CODE,
    TAG_SYSTEM,
    TRANSACTION_SYSTEM,
    X12_MEDIA_TYPE,
    ClaimChanged,
    ClaimIncomplete,
    ClaimsError,
    OutboxError,
    Prepared,
    ReleaseRefused,
    Resource,
    identifier_of,
    patient_control_number,
    prepare,
    read_resource,
    require_draft,
    usd,
)
from chartkeeper.coding.worksheet import version_body
from chartkeeper.store.service import Store, Txn, now_instant, search_all

CONTROL_NUMBER_MAX = 999_999_999  # ISA13 is nine digits
COUNTER_NAME = "x12-interchange"
_COUNTER_READY: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines whose table exists

metadata = MetaData()
#: The last control number each counter handed out (one row: the interchange counter).
control_counter = Table(
    "x12_control_counter",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Parties:
    """Who sends the interchange and who receives it (ISA06/ISA08, GS02/GS03, loops 1000A/B),
    and whether it is a test (T) or production (P) interchange."""

    submitter: x12.Submitter
    receiver: x12.Receiver
    usage: Literal["P", "T"] = "P"


@dataclass(frozen=True)
class Released:
    """A released claim: the Claim's new version, the stored batch and the file written."""

    claim_id: str
    claim_version: str
    patient_control_number: str
    transaction: str  # 837I or 837P
    control_number: int
    document_reference: str
    path: Path
    text: str
    warnings: list[str]


def release_claim(store: Store, claim_ref: str, parties: Parties, outbox: Path, *,
                  created: datetime | None = None) -> Released:
    """Check a draft Claim (coding edits, our X12 checks, pyx12) and release it alone.

    ``release_claims`` with one claim: raises its ReleaseRefused when it does not pass.
    """
    batch = release_claims(store, [claim_ref], parties, outbox, created=created)
    if batch.refused:
        raise batch.refused[0]
    return batch.released[0]


@dataclass(frozen=True)
class ReleasedBatch:
    """What ``release_claims`` did: the claims released (each naming its batch) and the
    refusals of those that were not (unchanged)."""

    released: list[Released]
    refused: list[ReleaseRefused]


@dataclass(frozen=True)
class _Checked:
    claim: Resource
    prepared: Prepared
    pcn: str
    kind: str
    warnings: list[str]


def release_claims(store: Store, claim_refs: Sequence[str], parties: Parties, outbox: Path, *,
                   created: datetime | None = None) -> ReleasedBatch:
    """Check draft Claims and release those that pass, in one 837 per kind (837I, 837P).

    Each claim is checked on its own (coding edits, our X12 checks, pyx12); one that fails is
    refused with every issue found and left as it was, and does not hold back the others.
    The claims that pass go into one interchange per transaction kind, each taking the next
    control number once the batch passes the gate as a whole; then, in one store
    transaction, they all become active (with their patient control number, insurer, priced
    lines and total) and each batch is stored as a DocumentReference naming its claims, and
    the files are written into ``outbox`` (temporary files renamed into place). A failure to
    write a file after the commit raises OutboxError naming the stored batch.
    """
    outbox = _checked_outbox(outbox)
    moment = created or datetime.now(UTC)
    passed: list[_Checked] = []
    refused: list[ReleaseRefused] = []
    for claim_ref in dict.fromkeys(claim_refs):
        try:
            checked = _check(store, claim_ref, parties, moment)
        except ReleaseRefused as refusal:
            refused.append(refusal)
            continue
        twin = next((c for c in passed if c.pcn == checked.pcn), None)
        if twin is not None:
            refused.append(ReleaseRefused(f"Claim/{claim_ref}", [
                f"patient control number {checked.pcn} is also Claim/{twin.claim['id']}'s, "
                "released in this batch"]))
            continue
        passed.append(checked)
    batches: list[tuple[str, int, str, list[_Checked]]] = []
    for kind in ("837I", "837P"):
        members = [c for c in passed if c.kind == kind]
        if not members:
            continue
        control = next_control_number(store)
        text = x12.release([c.prepared.x12_claim for c in members],
                           _envelope(parties, control, moment))
        batches.append((kind, control, text, members))
    targets = {control: outbox / f"{kind}-{control:09d}.x12" for kind, control, _, _ in batches}
    for target in targets.values():
        if target.exists():
            raise OutboxError(f"{target} exists already: nothing was released; move it away")
    released: list[Released] = []
    documents: dict[int, str] = {}
    with store.write() as txn:
        for kind, control, text, members in batches:
            for checked in members:
                claim_ref = str(checked.claim["id"])
                current = txn.read("Claim", claim_ref)
                was = checked.claim["meta"]["versionId"]
                if current["meta"]["versionId"] != was:
                    raise ClaimChanged(f"Claim/{claim_ref} changed (version {was} became "
                                       f"{current['meta']['versionId']}) while it was "
                                       "checked; release it again")
                written = txn.update("Claim", claim_ref,
                                     _released(current, checked.prepared, checked.pcn))
                released.append(Released(claim_ref, str(written.version_id), checked.pcn,
                                         kind, control, "", targets[control], text,
                                         checked.warnings))
            document = txn.create(_batch([c.prepared for c in members], kind, control,
                                         targets[control].name, text))
            documents[control] = document.resource_id
    released = [dataclasses.replace(r, document_reference=documents[r.control_number])
                for r in released]
    for _, control, text, _ in batches:
        target = targets[control]
        try:
            _write_atomically(target, text)
        except OSError as problem:
            sent = [r for r in released if r.control_number == control]
            done = (f"Claim/{sent[0].claim_id} was released (version "
                    f"{sent[0].claim_version}) and its 837" if len(sent) == 1 else
                    ", ".join(f"Claim/{r.claim_id} (version {r.claim_version})"
                              for r in sent) + " were released and their 837")
            raise OutboxError(
                f"{done} stored as DocumentReference/{documents[control]}, but {target} could "
                "not be written: "
                f"{problem.strerror or problem}; write it again with `chartkeeper claims "
                f"write-batch {documents[control]} --outbox DIR`") from problem
    return ReleasedBatch(released, refused)


def _check(store: Store, claim_ref: str, parties: Parties, moment: datetime) -> _Checked:
    """Everything the release of one claim needs, or ReleaseRefused with every issue found.

    The 837 is checked with a stand-in control number, so that a refused claim takes none.
    """
    with store.read() as txn:
        claim = read_resource(txn, "Claim", claim_ref, "the claim")
        require_draft(claim, "release")
        pcn = patient_control_number(claim_ref)
        holders = [c["id"] for c in txn.search_params("Claim", [
            ("identifier", f"{PCN_SYSTEM}|{pcn}")]).matches if c["id"] != claim_ref]
        if holders:
            raise ReleaseRefused(f"Claim/{claim_ref}", [
                f"patient control number {pcn} is already Claim/{holders[0]}'s"])
        prepared: Prepared | None = None
        missing: list[str] = []
        try:
            prepared = prepare(txn, claim_ref)
            coded: edits.CodedClaim | None = prepared.coded
        except ClaimIncomplete as incomplete:
            missing, coded = list(incomplete.missing), incomplete.coded
    problems = list(missing)
    edit_errors: list[edits.Edit] = []
    warnings: list[str] = []
    if coded is not None:  # the edits run even when pieces are missing: every issue at once
        found = edits.check(store.engine, coded)
        edit_errors = edits.errors(found)
        problems += [f"coding edit {e.rule}: {e.message}" for e in edit_errors]
        warnings += [f"coding edit {e.rule}: {e.message}" for e in found if e not in edit_errors]
    if prepared is None:
        raise ReleaseRefused(f"Claim/{claim_ref}", problems, edit_errors=edit_errors,
                             missing=missing)
    warnings += prepared.warnings
    kind = "837I" if isinstance(prepared.x12_claim, x12.InstitutionalClaim) else "837P"
    x12_issues: list[x12.X12Issue] = []
    try:
        x12.release([prepared.x12_claim], _envelope(parties, 1, moment))
    except x12.ClaimRejected as rejected:
        x12_issues = list(rejected.issues)
        problems += [str(issue) for issue in x12_issues]
    except x12.ClaimBuildError as unbuildable:
        problems.append(f"the 837 cannot be written: {unbuildable}")
    if problems:
        raise ReleaseRefused(f"Claim/{claim_ref}", problems, edit_errors=edit_errors,
                             x12_issues=x12_issues)
    return _Checked(claim, prepared, pcn, kind, warnings)


def _envelope(parties: Parties, control: int, created: datetime) -> x12.Envelope:
    """ISA13, GS06 and ST02 all carry the control number, so that a 999 names its batch
    whichever it echoes."""
    return x12.Envelope(parties.submitter, parties.receiver, control, control, control,
                        f"CK{control}", created, parties.usage)


def _checked_outbox(outbox: Path) -> Path:
    if not outbox.is_dir():
        raise OutboxError(f"outbox {outbox} is not a directory: nothing was released")
    if not os.access(outbox, os.W_OK | os.X_OK):
        raise OutboxError(f"outbox {outbox} is not writable: nothing was released")
    return outbox


def next_control_number(store: Store) -> int:
    """Take the next interchange control number, in a transaction of its own.

    The counter row is updated under the database's write lock (SQLite) or row lock
    (PostgreSQL), so concurrent releases never share a number; a number taken by a release
    that then fails is not reused (X12 asks for unique control numbers, not gapless ones). The
    first use starts after the highest number of the batches already stored.
    """
    _create_counter(store)
    try:
        taken = _take(store)
    except IntegrityError:  # PostgreSQL: another release made the row at the same moment
        taken = _take(store)
    if taken > CONTROL_NUMBER_MAX:
        raise ClaimsError(f"the interchange control numbers are used up ({CONTROL_NUMBER_MAX})")
    return int(taken)


def _create_counter(store: Store) -> None:
    """Create the counter table if missing, in a write transaction (on SQLite it holds the
    write lock from BEGIN, so racing creators wait their turn); on PostgreSQL two may still
    race, and the loser finds the table there."""
    engine = store.engine
    if engine in _COUNTER_READY:
        return
    try:
        with store.write() as txn:
            control_counter.create(txn.conn, checkfirst=True)
    except DBAPIError:
        if not inspect(engine).has_table(control_counter.name):
            raise
    _COUNTER_READY.add(engine)


def _take(store: Store) -> int:
    with store.write() as txn:
        taken = txn.conn.execute(update(control_counter)
                                 .where(control_counter.c.name == COUNTER_NAME)
                                 .values(value=control_counter.c.value + 1)
                                 .returning(control_counter.c.value)).scalar()
        if taken is None:
            taken = _highest_stored(txn) + 1
            txn.conn.execute(insert(control_counter).values(name=COUNTER_NAME, value=taken))
    return int(taken)


def _highest_stored(txn: Txn) -> int:
    used = [int(value) for batch in search_all(txn, "DocumentReference", [
        ("_tag", f"{TAG_SYSTEM}|{BATCH_TAG['code']}")])
        if (value := identifier_of(batch, CONTROL_SYSTEM)) is not None and value.isdigit()]
    return max(used, default=0)


def _released(current: Resource, prepared: Prepared, pcn: str) -> Resource:
    body = version_body(current)
    body["status"] = "active"
    tags = [t for t in (body.get("meta") or {}).get("tag") or []
            if not (t.get("system") == TAG_SYSTEM and t.get("code") == REJECTED_CODE)]
    body.setdefault("meta", {})["tag"] = tags
    if not tags:
        del body["meta"]["tag"]
    identifiers = [i for i in body.get("identifier") or [] if i.get("system") != PCN_SYSTEM]
    body["identifier"] = [*identifiers, {"system": PCN_SYSTEM, "value": pcn}]
    body["insurer"] = {"reference": prepared.payer}
    body["item"] = prepared.items
    body["total"] = usd(prepared.total)
    return body


def _batch(prepared: Sequence[Prepared], kind: str, control: int, name: str, text: str
           ) -> Resource:
    """The outbound 837 as a DocumentReference with no subject: a billing transmission, kept
    out of the chart, the worksheet and release-of-information packets, found from its Claims
    (``related``) or from a 999 (its control number)."""
    data = text.encode("ascii")
    stamp = now_instant()
    title = {"837I": "Health Care Claim: Institutional (005010X223A2)",
             "837P": "Health Care Claim: Professional (005010X222A1)"}[kind]
    return {
        "resourceType": "DocumentReference", "meta": {"tag": [BATCH_TAG]},
        "identifier": [{"system": CONTROL_SYSTEM, "value": str(control)}],
        "status": "current", "docStatus": "final",
        "type": {"coding": [{"system": TRANSACTION_SYSTEM, "code": kind, "display": title}],
                 "text": title},
        "date": stamp, "description": f"{kind} batch {control} ({name})",
        "content": [{"attachment": {
            "contentType": X12_MEDIA_TYPE, "data": base64.b64encode(data).decode("ascii"),
            "size": len(data), "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
            "title": name, "creation": stamp}}],
        "context": {"related": [{"reference": f"Claim/{p.claim['id']}"} for p in prepared]},
    }


def _write_atomically(target: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                         dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="ascii", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def batch_text(txn: Txn, document_id: str) -> tuple[str, str]:
    """(file name, 837 text) of a stored outbound batch."""
    document = read_resource(txn, "DocumentReference", document_id, "the batch")
    if not any(t.get("system") == TAG_SYSTEM and t.get("code") == BATCH_TAG["code"]
               for t in (document.get("meta") or {}).get("tag") or []):
        raise ClaimsError(f"DocumentReference/{document_id} is not an outbound 837 batch")
    attachment = document["content"][0]["attachment"]
    return (str(attachment.get("title") or f"{document_id}.x12"),
            base64.b64decode(attachment["data"]).decode("ascii"))


def write_batch(store: Store, document_id: str, outbox: Path) -> Path:
    """Write a stored batch into the outbox again (after a failed write); never overwrites."""
    outbox = _checked_outbox(outbox)
    with store.read() as txn:
        name, text = batch_text(txn, document_id)
    target = outbox / name
    if target.exists():
        raise OutboxError(f"{target} exists already; it was not overwritten")
    _write_atomically(target, text)
    return target
