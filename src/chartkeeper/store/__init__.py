"""The versioned FHIR R4 record store (SQLAlchemy Core over SQLite or PostgreSQL)."""

from chartkeeper.store.errors import (
    Conflict,
    Gone,
    InvalidRequest,
    InvalidResource,
    NotFound,
    PreconditionFailed,
    StoreError,
)
from chartkeeper.store.service import Store, WriteResult

__all__ = [
    "Conflict",
    "Gone",
    "InvalidRequest",
    "InvalidResource",
    "NotFound",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "WriteResult",
]
