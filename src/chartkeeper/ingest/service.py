"""Store HL7 v2 messages: map, write in one transaction, and acknowledge duplicates."""

from __future__ import annotations

import copy
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

from chartkeeper.ingest.hl7v2 import HL7Error, Message, parse, split_batch, to_bundle
from chartkeeper.store.errors import Gone, NotFound, PreconditionFailed, StoreError
from chartkeeper.store.importer import ImportSummary
from chartkeeper.store.service import Store, Txn, new_id, validate_for_store

Resource = dict[str, Any]

metadata = MetaData()  # the ingest slice's own tables: the HL7 and C-CDA logs

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
    """Create the ingest slice's own tables (idempotent), on SQLite or PostgreSQL."""
    from chartkeeper.ingest import ccda_service  # noqa: F401 - defines its table on metadata

    metadata.create_all(engine)


@dataclass(frozen=True)
class IngestResult:
    """What storing one message or document did. ``source_id`` names it: the HL7 message
    control id (MSH-10), or the C-CDA document's id."""

    status: Literal["stored", "duplicate"]
    source_id: str
    created: int
    updated: int


class Hl7Ingestor:
    """Maps each HL7 v2 message to FHIR and stores it whole, or not at all."""

    def __init__(self, store: Store, merge_mode: str = "repoint") -> None:
        self.store = store
        self.merge_mode = merge_mode  # for ADT merges: the site's CHARTKEEPER_MPI_MERGE_MODE

    def ingest(self, text: str, received: datetime | None = None) -> IngestResult:
        """Store one message; raises ``HL7Error`` for a message we refuse (nothing stored).

        A control id (MSH-10) seen before from the same sender is a duplicate when the content
        is the same (a resend), and refused when it differs: the sender reused the id.
        """
        message = parse(text)
        received = received or datetime.now(UTC)
        bundle = to_bundle(message, received)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        sender = (message.sending_application, message.sending_facility)
        try:
            with self.store.write() as txn:
                if self._check_resent(txn, sender, message.control_id, digest):
                    return IngestResult("duplicate", message.control_id, 0, 0)
                merging = take_merge(bundle)
                ids: dict[str, str] = {}
                new_patients: list[Resource] = []
                created, updated = store_transaction(txn, bundle, ids, new_patients)
                if merging is not None:
                    done = merge_records(txn, message, ids[merging[0]], ids[merging[1]],
                                         self.merge_mode)
                    created += done.created
                    updated += done.updated
                else:
                    for patient in new_patients:
                        created += screen_registration(txn, message, patient)
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
                if self._check_resent(txn, sender, message.control_id, digest):
                    return IngestResult("duplicate", message.control_id, 0, 0)
            raise
        except StoreError as exc:
            # The mapped resources were refused: our mapping's fault, not the sender's.
            raise HL7Error(None, "207", f"message {message.control_id} could not be stored: "
                                        f"{exc.diagnostics}") from exc
        return IngestResult("stored", message.control_id, created, updated)

    @classmethod
    def _check_resent(cls, txn: Txn, sender: tuple[str, str], control_id: str,
                      digest: str) -> bool:
        """True for a resend of a stored message; ``HL7Error`` when the id was reused."""
        stored = cls._stored_digest(txn, sender, control_id)
        if stored is None:
            return False
        if stored != digest:
            raise HL7Error("MSH-10", "207",
                           f"message control id {control_id!r} was reused with different "
                           f"content: {' / '.join(p for p in sender if p) or 'this sender'} "
                           "already sent a different message under it")
        return True

    @staticmethod
    def _stored_digest(txn: Txn, sender: tuple[str, str], control_id: str) -> str | None:
        """The SHA-256 of the message stored under this sender's control id, if any."""
        digest = txn.conn.execute(
            select(hl7_message.c.sha256).where(
                hl7_message.c.sending_application == sender[0],
                hl7_message.c.sending_facility == sender[1],
                hl7_message.c.control_id == control_id)
        ).scalar()
        return str(digest) if digest is not None else None


def rewrite_references(node: Any, ids: dict[str, str]) -> None:
    """Point every ``reference`` found in ``ids`` (a temporary one) at its stored id, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in ids:
                node[key] = ids[value]
            else:
                rewrite_references(value, ids)
    elif isinstance(node, list):
        for item in node:
            rewrite_references(item, ids)


def take_merge(bundle: Resource) -> tuple[str, str] | None:
    """A merge message's bundle less its merge (the links and the prior's ``active``), and
    the survivor's and the prior's fullUrls: the MPI's merge does those (``merge_records``)."""
    patients = {e["fullUrl"]: e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Patient"}
    for url, patient in patients.items():
        replaced = [lk["other"]["reference"] for lk in patient.get("link", [])
                    if lk.get("type") == "replaces" and lk["other"].get("reference") in patients]
        if not replaced:
            continue
        prior = patients[replaced[0]]
        patient["link"] = [lk for lk in patient["link"] if lk["other"]["reference"] != replaced[0]]
        prior["link"] = [lk for lk in prior.get("link", []) if lk["other"]["reference"] != url]
        for resource in (patient, prior):
            if not resource["link"]:
                del resource["link"]
        prior.pop("active", None)
        return url, replaced[0]
    return None


@dataclass(frozen=True)
class _Written:
    created: int
    updated: int


def merge_records(txn: Txn, message: Message, survivor: str, prior: str,
                  mode: str = "repoint") -> _Written:
    """ADT^A34/A39/A40 through the MPI's merge: the prior Patient's records move to the
    survivor, the sender is the decider and the message the reason. A prior merged into this
    survivor already (the merge sent again under another control id) is left as it is."""
    from chartkeeper.mpi.service import Decider, merge, replaced_by

    survivor_id, prior_id = survivor.split("/", 1)[1], prior.split("/", 1)[1]
    if survivor_id == prior_id:
        raise PreconditionFailed(
            f"the merge links Patient/{prior_id} to itself: the surviving and the prior patient "
            "identifiers (PID-3, MRG-1) name the same stored Patient")
    if replaced_by(txn.read("Patient", prior_id)) == survivor_id:
        return _Written(0, 0)
    decider = Decider(_sender(message), "interface",
                      f"ADT^{message.trigger} message {message.control_id}")
    outcome = merge(txn, survivor_id, prior_id, decider,
                    mode="federate" if mode == "federate" else "repoint")
    return _Written(1, len(outcome.targets))


def screen_registration(txn: Txn, message: Message, patient: Resource) -> int:
    """The MPI's check on a Patient a message created: a certain duplicate is linked, a
    probable one queued for review. Returns how many review Tasks it created."""
    from chartkeeper.mpi.service import Decider, screen_new_patient

    decider = Decider(_sender(message), "interface",
                      f"duplicate check on ADT^{message.trigger} message {message.control_id}"
                      if message.message_code == "ADT" else
                      f"duplicate check on {message.message_code}^{message.trigger} message "
                      f"{message.control_id}")
    return screen_new_patient(txn, patient, decider).queued


def _sender(message: Message) -> str:
    sender = "@".join(p for p in (message.sending_application, message.sending_facility) if p)
    return f"hl7:{sender or 'unknown'}"[:128]


def store_transaction(txn: Txn, bundle: Resource, ids: dict[str, str] | None = None,
                      new_patients: list[Resource] | None = None) -> tuple[int, int]:
    """Write a mapped transaction Bundle (conditional PUTs and POSTs) inside ``txn``.

    The store's ``BundleProcessor`` resolves ``urn:uuid`` references only to POST entries and
    opens its own transaction; here the conditional PUTs (Patient, Encounter...) are resolved
    first, so that the other entries can point at them, and the message log row commits with
    the resources. A Patient already stored is merged with the incoming one (see
    ``merge_patient``); conditional references (``DocumentReference?identifier=...``) are
    resolved against the store. Returns (created, updated); ``ids`` gets each entry's
    ``fullUrl`` -> ``Type/id``, ``new_patients`` the Patients the message created.
    """
    ids = {} if ids is None else ids
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
        resource = copy.deepcopy(entry["resource"])
        rewrite_references(resource, ids)
        _resolve_conditional_references(txn, resource)
        rtype, resource_id = ids[entry["fullUrl"]].split("/")
        resource["id"] = resource_id
        if entry["request"]["method"] == "PUT":
            if rtype == "Patient":
                stored = _current(txn, rtype, resource_id)
                if stored is not None:
                    resource = merge_patient(stored, resource)
            result = txn.update(rtype, resource_id, resource)
            created += result.created
            if result.created and rtype == "Patient" and new_patients is not None \
                    and result.resource is not None:
                new_patients.append(result.resource)
            updated += not result.created and not result.unchanged
        else:
            new_resources.append(validate_for_store(resource, rtype))
        if rtype == "DocumentReference":
            updated += _supersede_replaced(txn, resource)
    txn.create_many(new_resources)
    return created + len(new_resources), updated


def _current(txn: Txn, resource_type: str, resource_id: str) -> Resource | None:
    """The resource as stored in this transaction (earlier entries' writes included)."""
    try:
        return txn.read(resource_type, resource_id)
    except (NotFound, Gone):  # not stored yet (or deleted): the update creates it
        return None


# Choice elements: the stored value stays only when the incoming has none of the choices.
CHOICE_PREFIXES = ("deceased", "multipleBirth")


def merge_patient(stored: Resource, incoming: Resource) -> Resource:
    """The incoming Patient over the stored one: an element the message leaves empty keeps
    its stored value (an ORU's PID with only an id and a name does not wipe the address an
    ADT stored); identifiers and links are the union of both."""
    merged = dict(incoming)
    for element, value in stored.items():
        if element in ("id", "meta", "text") or element in merged:
            continue
        prefix = next((p for p in CHOICE_PREFIXES if element.startswith(p)), None)
        if prefix is not None and any(k.startswith(prefix) for k in incoming):
            continue
        merged[element] = value
    for element in ("identifier", "link"):
        items = list(incoming.get(element, []))
        seen = {_list_key(element, item) for item in items}
        items += [item for item in stored.get(element, [])
                  if _list_key(element, item) not in seen]
        if items:
            merged[element] = items
    return merged


def _list_key(element: str, item: Resource) -> tuple[Any, Any]:
    if element == "link":
        return item["other"].get("reference"), item.get("type")
    return item.get("system"), item.get("value")


def _resolve_conditional_references(txn: Txn, node: Any) -> None:
    """``Type?criteria`` references to the one stored match; with none, the reference goes
    and its identifier stays (a replaced document we never received)."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and "?" in reference and "/" not in reference.split(
                "?", 1)[0]:
            rtype, _, criteria = reference.partition("?")
            matches = txn.match(rtype, criteria)
            if len(matches) > 1:
                raise PreconditionFailed(
                    f"Conditional reference '{reference}' matched {len(matches)} resources")
            if matches:
                node["reference"] = f"{rtype}/{matches[0]['id']}"
            else:
                del node["reference"]
        for value in node.values():
            _resolve_conditional_references(txn, value)
    elif isinstance(node, list):
        for item in node:
            _resolve_conditional_references(txn, item)


def _supersede_replaced(txn: Txn, document: Resource) -> int:
    """Mark the documents a DocumentReference replaces as superseded; returns how many."""
    count = 0
    for relation in document.get("relatesTo", []):
        target = relation["target"].get("reference", "")
        if relation["code"] != "replaces" or not target.startswith("DocumentReference/"):
            continue
        replaced_id = target.split("/", 1)[1]
        replaced = _current(txn, "DocumentReference", replaced_id)
        if replaced is None or replaced_id == document["id"] or \
                replaced.get("status") == "superseded":
            continue
        txn.update("DocumentReference", replaced_id, dict(replaced, status="superseded"))
        count += 1
    return count


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
        summary.skipped += result.status == "duplicate"
