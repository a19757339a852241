"""Store C-CDA documents: one transaction per document, reconciled, logged for idempotency."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from chartkeeper.ingest.ccda import CDA_FORMAT, SHA256_SYSTEM, CcdaDocument, CcdaError, parse
from chartkeeper.ingest.ccda_map import Entry, Resource, reconcile_key
from chartkeeper.ingest.service import IngestResult, metadata, rewrite_references
from chartkeeper.store.errors import StoreError
from chartkeeper.store.importer import ImportSummary
from chartkeeper.store.service import Store, Txn, new_id, validate_for_store

# One row per stored document: the same id with the same bytes is imported once. (The
# same id with other bytes is stored too: published examples reuse ids.)
ccda_document = Table(
    "ccda_document",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("id_system", String(255), nullable=False),
    Column("id_value", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("document_reference_id", String(64), nullable=False),
    Column("received", DateTime(timezone=True), nullable=False),
    UniqueConstraint("id_system", "id_value", "sha256", name="uq_ccda_document_id_sha256"),
)


class CcdaIngestor:
    """Maps each C-CDA document to FHIR and stores it whole, or not at all."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ingest(self, raw: bytes, received: datetime | None = None) -> IngestResult:
        """Store one document; raises ``CcdaError`` for one we refuse (nothing stored)."""
        document = parse(raw)
        received = received or datetime.now(UTC)
        label = "|".join(document.document_key)
        try:
            with self.store.write() as txn:
                if self._seen(txn, document):
                    return IngestResult("duplicate", label, 0, 0)
                writer = _DocumentWriter(txn, document, received)
                writer.write()
                txn.conn.execute(insert(ccda_document), {
                    "id_system": document.document_key[0],
                    "id_value": document.document_key[1],
                    "sha256": document.sha256, "patient_id": writer.patient_id,
                    "document_reference_id": writer.document_reference_id,
                    "received": received,
                })
        except IntegrityError:
            with self.store.read() as txn:  # stored meanwhile by another connection
                if self._seen(txn, document):
                    return IngestResult("duplicate", label, 0, 0)
            raise
        except StoreError as exc:
            raise CcdaError(f"document {label} could not be stored: {exc.diagnostics}"
                            ) from exc
        return IngestResult("stored", label, writer.created, writer.updated)

    @staticmethod
    def _seen(txn: Txn, document: CcdaDocument) -> bool:
        return txn.conn.execute(
            select(ccda_document.c.pk).where(
                ccda_document.c.id_system == document.document_key[0],
                ccda_document.c.id_value == document.document_key[1],
                ccda_document.c.sha256 == document.sha256)
        ).first() is not None


def _token(identifier: Resource) -> str:
    return f"{identifier.get('system', '')}|{identifier['value']}"


def _merge_identifiers(target: Resource, extra: list[Resource]) -> None:
    known = {_token(i) for i in target.get("identifier", [])}
    for item in extra:
        if _token(item) not in known:
            target.setdefault("identifier", []).append(item)
            known.add(_token(item))


class _DocumentWriter:
    """Writes one mapped document inside ``txn``: the patient by conditional update, each
    entry matched to what the patient's record already holds, then the Composition, Binary,
    DocumentReference and Provenance."""

    def __init__(self, txn: Txn, document: CcdaDocument, received: datetime) -> None:
        self.txn, self.document, self.received = txn, document, received
        self.ids: dict[str, str] = {}  # fullUrl → Type/id
        self.pending: dict[str, Resource] = {}  # Type/id → resource to write
        self.existing: set[str] = set()  # Type/id already in the store (an update)
        self.created = self.updated = 0
        self.patient_id = ""
        self.document_reference_id = ""

    def write(self) -> None:
        patient_known = self._resolve_patient()
        keys: dict[tuple[str, ...], str] = {}
        for entry in self.document.entries:
            self._resolve_entry(entry, keys, patient_known)
        for resource in self.pending.values():
            rewrite_references(resource, self.ids)
        self._add_document_resources()
        creates = []
        for ref, resource in self.pending.items():
            rtype, resource_id = ref.split("/")
            resource["id"] = resource_id
            if ref in self.existing:
                if not self.txn.update(rtype, resource_id, resource).unchanged:
                    self.updated += 1
            else:
                creates.append(validate_for_store(resource, rtype))
        self.txn.create_many(creates)
        self.created += len(creates)

    def _resolve_patient(self) -> bool:
        patient = dict(self.document.patient)
        criteria = urlencode({"identifier": _token(self.document.patient_identifier)})
        matches = self.txn.match("Patient", criteria)
        if len(matches) > 1:
            raise CcdaError(f"patient identifier {_token(self.document.patient_identifier)} "
                            f"matches {len(matches)} Patients; expected at most one")
        self.patient_id = matches[0]["id"] if matches else new_id()
        ref = f"Patient/{self.patient_id}"
        if matches:
            _merge_identifiers(patient, matches[0].get("identifier", []))
            self.existing.add(ref)
        self.ids["urn:uuid:patient"] = ref
        self.pending[ref] = patient
        return bool(matches)

    def _resolve_entry(self, entry: Entry, keys: dict[tuple[str, ...], str],
                       patient_known: bool) -> None:
        resource = entry.resource
        rtype = resource["resourceType"]
        if not entry.reconcile:  # kept per document: always a resource of its own
            own = f"{rtype}/{new_id()}"
            self.pending[own] = dict(resource)
            self.ids[entry.full_url] = own
            return
        entry_keys: list[tuple[str, ...]] = [(rtype, "id", _token(i))
                                             for i in resource.get("identifier", [])]
        code_key = reconcile_key(resource)
        if code_key is not None:
            entry_keys.append(("code", *code_key))
        ref = next((keys[k] for k in entry_keys if k in keys), None)
        if ref is not None:  # the same item twice in this document: one resource
            _merge_identifiers(self.pending[ref], resource.get("identifier", []))
        else:
            found = self._find_in_store(resource, code_key) if patient_known else None
            if found is not None:
                ref = f"{rtype}/{found['id']}"
                resource = dict(resource)
                _merge_identifiers(resource, found.get("identifier", []))
                self.existing.add(ref)
            else:
                ref = f"{rtype}/{new_id()}"
            self.pending[ref] = dict(resource)
        self.ids[entry.full_url] = ref
        for key in entry_keys:
            keys.setdefault(key, ref)

    def _find_in_store(self, resource: Resource, code_key: tuple[str, str] | None
                       ) -> Resource | None:
        rtype = resource["resourceType"]
        patient = f"Patient/{self.patient_id}"
        for ident in resource.get("identifier", []):
            matches = self.txn.match(rtype, urlencode(
                {"identifier": _token(ident), "patient": patient}))
            if matches:
                return matches[0]
        if code_key is None:
            return None
        system = code_key[0].split("|", 1)[1].removesuffix("#refuted")
        page = self.txn.search_params(rtype, [("code", f"{system}|{code_key[1]}"),
                                              ("patient", patient)])
        return next((m for m in page.matches if reconcile_key(m) == code_key), None)

    def _add_document_resources(self) -> None:
        doc = self.document
        subject = {"reference": f"Patient/{self.patient_id}"}
        composition_ref = f"Composition/{new_id()}"
        binary_ref = f"Binary/{new_id()}"
        self.document_reference_id = new_id()
        docref_ref = f"DocumentReference/{self.document_reference_id}"
        sections = []
        for title, code, entries in doc.sections:
            refs = list(dict.fromkeys(self.ids[e.full_url] for e in entries))
            section: Resource = {"title": title}
            if code:
                section["code"] = code
            if refs:
                section["entry"] = [{"reference": r} for r in refs]
            else:
                section["emptyReason"] = {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                    "code": "unavailable"}]}
            sections.append(section)
        received = self.received.astimezone(UTC).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
        composition: Resource = {
            "resourceType": "Composition", "identifier": doc.document_id, "status": "final",
            "type": doc.document_type, "subject": subject, "date": doc.date or received,
            "author": [{"display": doc.author}], "title": doc.title,
        }
        if sections:
            composition["section"] = sections
        self.pending[composition_ref] = composition
        self.pending[binary_ref] = {
            "resourceType": "Binary", "contentType": "text/xml",
            "data": base64.b64encode(doc.raw).decode("ascii"),
        }
        attachment: Resource = {"contentType": "text/xml", "url": binary_ref,
                                "size": len(doc.raw), "hash": doc.sha1_b64, "title": doc.title}
        if doc.date:
            attachment["creation"] = doc.date
        self.pending[docref_ref] = {
            "resourceType": "DocumentReference",
            "masterIdentifier": doc.document_id,
            "identifier": [{"system": SHA256_SYSTEM, "value": doc.sha256}],
            "status": "current", "type": doc.document_type, "subject": subject,
            "date": received,
            "content": [{"attachment": attachment, "format": CDA_FORMAT}],
            "context": {"related": [{"reference": composition_ref}]},
        }
        targets = [{"reference": ref} for ref in self.pending]
        self.pending[f"Provenance/{new_id()}"] = {
            "resourceType": "Provenance", "target": targets, "recorded": received,
            "activity": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                "code": "UPDATE"}]},
            "agent": [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "author"}]}, "who": {"display": doc.author}}],
            "entity": [{"role": "source", "what": {
                "reference": docref_ref, "identifier": doc.document_id,
                "display": f"C-CDA document {doc.title}"}}],
        }


def import_ccda_file(store: Store, path: Path, summary: ImportSummary) -> None:
    """``chartkeeper import`` of a C-CDA .xml file: stored whole or refused; a document
    already stored changes nothing."""
    summary.files += 1
    try:
        result = CcdaIngestor(store).ingest(path.read_bytes())
    except CcdaError as exc:
        summary.rejected += 1
        summary.problems.append(f"{path.name}: {exc}")
        return
    summary.created += result.created
    summary.updated += result.updated
    summary.skipped += result.status == "duplicate"
