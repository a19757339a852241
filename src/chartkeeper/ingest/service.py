"""Store HL7 v2 messages: map, write in one transaction, and acknowledge duplicates."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from chartkeeper.ingest.hl7v2 import HL7Error, parse, split_batch, to_bundle
from chartkeeper.store.errors import PreconditionFailed, StoreError
from chartkeeper.store.importer import ImportSummary
from chartkeeper.store.service import Store, Txn, new_id, validate_for_store

Resource = dict[str, Any]

metadata = MetaData()

# One row per stored message: a sender's MSH-10 is seen once, whatever arrives after it.
hl7_message = Table(
    "hl7_message",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("sending_application", String(227), nullable=False),
    Column("sending_facility", String(227), nullable=False),
    Column("control_id", String(199), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("message_type", String(15), nullable=False),
    Column("received", DateTime(timezone=True), nullable=False),
    UniqueConstraint("sending_application", "sending_facility", "control_id",
                     name="uq_hl7_message_sender_control_id"),
)


def create_ingest_schema(engine: Engine) -> None:
    """Create the ingest slice's own table (idempotent), on SQLite or PostgreSQL."""
    metadata.create_all(engine)


@dataclass(frozen=True)
class IngestResult:
    status: Literal["stored", "duplicate"]
    control_id: str
    created: int
    updated: int


class Hl7Ingestor:
    """Maps each HL7 v2 message to FHIR and stores it whole, or not at all."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ingest(self, text: str, received: datetime | None = None) -> IngestResult:
        """Store one message; raises ``HL7Error`` for a message we refuse (nothing stored)."""
        message = parse(text)
        received = received or datetime.now(UTC)
        bundle = to_bundle(message, received)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        sender = (message.sending_application, message.sending_facility)
        try:
            with self.store.write() as txn:
                if self._seen(txn, sender, message.control_id):
                    return IngestResult("duplicate", message.control_id, 0, 0)
                created, updated = store_transaction(txn, bundle)
                txn.conn.execute(insert(hl7_message), {
                    "sending_application": sender[0], "sending_facility": sender[1],
                    "control_id": message.control_id, "sha256": digest,
                    "message_type": f"{message.message_code}^{message.trigger}",
                    "received": received,
                })
        except IntegrityError:
            # The same message stored meanwhile by another connection (two MLLP sessions):
            # our transaction rolled back whole; the message is a duplicate.
            with self.store.read() as txn:
                if self._seen(txn, sender, message.control_id):
                    return IngestResult("duplicate", message.control_id, 0, 0)
            raise
        except StoreError as exc:
            # The mapped resources were refused: our mapping's fault, not the sender's.
            raise HL7Error(None, "207", f"message {message.control_id} could not be stored: "
                                        f"{exc.diagnostics}") from exc
        return IngestResult("stored", message.control_id, created, updated)

    @staticmethod
    def _seen(txn: Txn, sender: tuple[str, str], control_id: str) -> bool:
        return txn.conn.execute(
            select(hl7_message.c.pk).where(
                hl7_message.c.sending_application == sender[0],
                hl7_message.c.sending_facility == sender[1],
                hl7_message.c.control_id == control_id)
        ).first() is not None


def _rewrite_references(node: Any, ids: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in ids:
                node[key] = ids[value]
            else:
                _rewrite_references(value, ids)
    elif isinstance(node, list):
        for item in node:
            _rewrite_references(item, ids)


def store_transaction(txn: Txn, bundle: Resource) -> tuple[int, int]:
    """Write a mapped transaction Bundle (conditional PUTs and POSTs) inside ``txn``.

    The store's ``BundleProcessor`` resolves ``urn:uuid`` references only to POST entries and
    opens its own transaction; here the conditional PUTs (Patient, Encounter) are resolved
    first, so that the other entries can point at them, and the message log row commits with
    the resources. Returns (created, updated).
    """
    ids: dict[str, str] = {}
    for entry in bundle["entry"]:
        method, url = entry["request"]["method"], entry["request"]["url"]
        rtype, _, criteria = url.partition("?")
        resource_id = new_id()
        if method == "PUT" and criteria:
            matches = txn.match(rtype, criteria)
            if len(matches) > 1:
                raise PreconditionFailed(
                    f"Conditional update '{url}' matched {len(matches)} {rtype} resources")
            if matches:
                resource_id = matches[0]["id"]
        ids[entry["fullUrl"]] = f"{rtype}/{resource_id}"
    created = updated = 0
    new_resources: list[Resource] = []
    for entry in bundle["entry"]:
        resource = dict(entry["resource"])
        _rewrite_references(resource, ids)
        rtype, resource_id = ids[entry["fullUrl"]].split("/")
        resource["id"] = resource_id
        if entry["request"]["method"] == "PUT":
            result = txn.update(rtype, resource_id, resource)
            created += result.created
            updated += not result.created
        else:
            new_resources.append(validate_for_store(resource, rtype))
    txn.create_many(new_resources)
    return created + len(new_resources), updated


def import_hl7_file(store: Store, path: Path, summary: ImportSummary) -> None:
    """``chartkeeper import`` of an .hl7 file (one message or an FHS/BHS batch): each message
    is stored whole or refused, and one already stored changes nothing."""
    name = path.name
    summary.files += 1
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        summary.rejected += 1
        summary.problems.append(f"{name}: not UTF-8 text ({exc.reason})")
        return
    ingestor = Hl7Ingestor(store)
    for number, message in enumerate(split_batch(text), start=1):
        try:
            result = ingestor.ingest(message)
        except HL7Error as exc:
            summary.rejected += 1
            summary.problems.append(f"{name} message {number}: {exc}")
            continue
        summary.created += result.created
        summary.updated += result.updated
