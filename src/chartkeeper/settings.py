"""One settings object, read from ``CHARTKEEPER_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _default_home() -> Path:
    return Path(os.environ.get("CHARTKEEPER_HOME", "var")).resolve()


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Every field has a ``CHARTKEEPER_<NAME>`` variable."""

    home: Path = field(default_factory=_default_home)
    database_url: str = ""
    base_url: str = "http://127.0.0.1:8000/fhir"
    max_body_bytes: int = 64 * 1024 * 1024
    default_page_size: int = 50
    max_page_size: int = 1000
    session_idle_minutes: int = 15  # automatic log-off (HIPAA 164.312(a)(2)(iii))
    break_glass_max_minutes: int = 240
    audit_checkpoint_every: int = 10_000  # sign a checkpoint of the audit chain this often
    # Where the audit trail lives; empty: the store's PostgreSQL database, or for an SQLite
    # store its own file (see audit_url).
    audit_database_url: str = ""
    # The site's record-completion rules (a TOML file); empty: the defaults.
    completion_rules: str = ""
    # The site's retention periods (a TOML file); empty: the defaults.
    retention_rules: str = ""
    # What a merge does with the prior patient's records: "repoint" them to the survivor, or
    # "federate" (leave them; the chart follows the link).
    mpi_merge_mode: str = "repoint"

    def __post_init__(self) -> None:
        if self.mpi_merge_mode not in ("repoint", "federate"):
            raise ValueError("CHARTKEEPER_MPI_MERGE_MODE must be repoint or federate, got "
                             f"{self.mpi_merge_mode!r}")

    @property
    def audit_url(self) -> str:
        """The audit trail's database. With SQLite it is a file of its own, audit.sqlite:
        every read request appends an entry, and a write to the store's file would make
        every reader's page cache start cold (a search took three times as long)."""
        if self.audit_database_url:
            return self.audit_database_url
        if self.database_url.startswith("sqlite"):
            return f"sqlite:///{self.home / 'audit.sqlite'}"
        return self.database_url

    @classmethod
    def from_env(cls) -> Settings:
        home = _default_home()
        database_url = os.environ.get("CHARTKEEPER_DATABASE_URL") or (
            f"sqlite:///{home / 'chartkeeper.sqlite'}"
        )
        return cls(
            home=home,
            database_url=database_url,
            base_url=os.environ.get("CHARTKEEPER_BASE_URL", cls.base_url).rstrip("/"),
            max_body_bytes=int(os.environ.get("CHARTKEEPER_MAX_BODY_BYTES", cls.max_body_bytes)),
            default_page_size=int(
                os.environ.get("CHARTKEEPER_DEFAULT_PAGE_SIZE", cls.default_page_size)
            ),
            max_page_size=int(os.environ.get("CHARTKEEPER_MAX_PAGE_SIZE", cls.max_page_size)),
            session_idle_minutes=int(os.environ.get("CHARTKEEPER_SESSION_IDLE_MINUTES",
                                                    cls.session_idle_minutes)),
            break_glass_max_minutes=int(os.environ.get("CHARTKEEPER_BREAK_GLASS_MAX_MINUTES",
                                                       cls.break_glass_max_minutes)),
            audit_checkpoint_every=int(os.environ.get("CHARTKEEPER_AUDIT_CHECKPOINT_EVERY",
                                                      cls.audit_checkpoint_every)),
            audit_database_url=os.environ.get("CHARTKEEPER_AUDIT_DATABASE_URL", ""),
            completion_rules=os.environ.get("CHARTKEEPER_COMPLETION_RULES", ""),
            retention_rules=os.environ.get("CHARTKEEPER_RETENTION_RULES", ""),
            mpi_merge_mode=os.environ.get("CHARTKEEPER_MPI_MERGE_MODE", cls.mpi_merge_mode),
        )
