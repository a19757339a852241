"""The audit trail's HMAC key, held in a file outside the database, and the bytes it signs."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from chartkeeper.security.audit_records import AuditKeyError
from chartkeeper.security.identity import KeyFileError, load_or_create_key

KEY_BYTES = 32


def audit_key_path(home: Path) -> Path:
    """Where the audit key lives: in ``$CHARTKEEPER_HOME``, outside the database."""
    return home / "audit.key"


class AuditKey:
    """The HMAC key, kept in a file outside the database (e.g. ``$CHARTKEEPER_HOME/audit.key``).

    A missing file is created with 32 random bytes and mode 0600; an existing one is reused.
    A key file that others may read, or that is not 32 bytes, is refused.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            secret = load_or_create_key(self.path, KEY_BYTES)
        except KeyFileError as exc:
            raise AuditKeyError(f"audit {exc}") from exc
        if len(secret) != KEY_BYTES:
            raise AuditKeyError(
                f"audit key {self.path} holds {len(secret)} bytes; expected {KEY_BYTES}")
        # Separate keys for entries and checkpoints, so one kind cannot stand in for the other.
        self._entry_key = hmac.digest(secret, b"chartkeeper audit entry", "sha256")
        self._checkpoint_key = hmac.digest(secret, b"chartkeeper audit checkpoint", "sha256")

    @classmethod
    def in_home(cls, home: Path) -> AuditKey:
        return cls(audit_key_path(home))

    def __repr__(self) -> str:
        return f"AuditKey({str(self.path)!r})"

    def entry_hash(self, prev_hash: str, canonical: bytes) -> str:
        return hmac.new(self._entry_key, prev_hash.encode("ascii") + canonical,
                        hashlib.sha256).hexdigest()

    def checkpoint_signature(self, seq: int, entry_hash: str, signed_at: str) -> str:
        message = b"\x1f".join(
            [b"checkpoint", str(seq).encode(), entry_hash.encode(), signed_at.encode()])
        return hmac.new(self._checkpoint_key, message, hashlib.sha256).hexdigest()


_HASHED_FIELDS = ("seq", "recorded", "user_id", "role", "patient_id", "action",
                  "resource_type", "resource_id", "outcome", "source_address", "details")


def canonical_entry(values: Mapping[Any, Any]) -> bytes:
    """The bytes an entry's hash covers: every stored field but the hashes, keys sorted."""
    return orjson.dumps(
        {name: values[name] for name in _HASHED_FIELDS}, option=orjson.OPT_SORT_KEYS)
