"""HL7 v2 ingest: parse ER7 messages, map them to FHIR R4 and store them once each."""

from chartkeeper.ingest.hl7v2 import HL7Error, Message, parse, split_batch, to_bundle
from chartkeeper.ingest.service import (
    Hl7Ingestor,
    IngestResult,
    create_ingest_schema,
)

__all__ = [
    "HL7Error",
    "Hl7Ingestor",
    "IngestResult",
    "Message",
    "create_ingest_schema",
    "parse",
    "split_batch",
    "to_bundle",
]
