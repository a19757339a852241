"""The security services of one running site, built once from the settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from argon2 import PasswordHasher
from sqlalchemy import Engine, select

from chartkeeper.security.audit import (
    RELAXED_ACTIONS,
    AuditAction,
    AuditKey,
    AuditRecord,
    AuditTrail,
    AuditWriter,
    audit_entry,
    create_audit_schema,
)
from chartkeeper.security.identity import (
    SessionPolicy,
    SessionStore,
    User,
    UserDirectory,
    UserNotFound,
    create_identity_schema,
    load_or_create_key,
    totp_key_path,
)
from chartkeeper.security.privacy import (
    BreakGlassRegistry,
    DisclosureLog,
    create_privacy_schema,
    restricted_patients,
)
from chartkeeper.security.tokens import (
    ClientNotFound,
    ServiceClient,
    ServiceClientRegistry,
    TokenClaims,
    TokenIssuer,
)
from chartkeeper.settings import Settings
from chartkeeper.store.engine import make_engine

RESTRICTED_CACHE_SECONDS = 1.0
# How long a request may rely on an account's last looked-up state (active, role). A change
# made by this process ends it at once; one made by another process (the command line) takes
# effect within this time.
ACCOUNT_RECHECK_SECONDS = 1.0
VERIFIED_TOKENS_KEPT = 4096


def open_audit_trail(settings: Settings) -> AuditTrail:
    """The site's audit trail for a command-line tool (its own engine; dispose it after)."""
    engine = make_engine(settings.audit_url)
    create_audit_schema(engine)
    return AuditTrail(engine, AuditKey.in_home(settings.home), server_url=settings.base_url)


@dataclass
class SecurityServices:
    engine: Engine
    directory: UserDirectory
    sessions: SessionStore
    issuer: TokenIssuer
    clients: ServiceClientRegistry
    trail: AuditTrail
    audit_checkpoint_every: int | None
    glass: BreakGlassRegistry
    disclosures: DisclosureLog
    clock: Callable[[], datetime]
    _restricted: tuple[float, frozenset[str]] | None = field(default=None, init=False,
                                                             repr=False)

    @classmethod
    def build(cls, settings: Settings, engine: Engine, *, hasher: PasswordHasher | None = None,
              clock: Callable[[], datetime] | None = None) -> SecurityServices:
        """Everything the API needs; key files are created in ``settings.home`` if missing."""
        settings.home.mkdir(parents=True, exist_ok=True)
        create_identity_schema(engine)
        create_privacy_schema(engine)
        audit_engine = (engine if settings.audit_url == settings.database_url
                        else make_engine(settings.audit_url))
        create_audit_schema(audit_engine)
        issuer = TokenIssuer.from_settings(settings)
        trail = AuditTrail(audit_engine, AuditKey.in_home(settings.home),
                           server_url=settings.base_url)
        return cls(
            engine=engine,
            directory=UserDirectory(engine, hasher=hasher,
                                    totp_key=load_or_create_key(totp_key_path(settings.home))),
            sessions=SessionStore(engine, SessionPolicy(settings.session_idle_minutes)),
            issuer=issuer,
            clients=ServiceClientRegistry(engine, issuer, hasher),
            trail=trail,
            audit_checkpoint_every=settings.audit_checkpoint_every,
            glass=BreakGlassRegistry(engine, settings.break_glass_max_minutes),
            disclosures=DisclosureLog(engine),
            clock=clock or (lambda: datetime.now(UTC)),
        )

    def now(self) -> datetime:
        return self.clock()

    def record_audit_settings(self, settings: Settings) -> bool:
        """Append an audit-setting-change entry when the settings that shape auditing and
        access differ from the last ones recorded (checked at every start). True if changed."""
        current = {
            "auditCheckpointEvery": settings.audit_checkpoint_every,
            "auditRelaxedSync": sorted(a.value for a in RELAXED_ACTIONS),
            "sessionIdleMinutes": settings.session_idle_minutes,
            "breakGlassMaxMinutes": settings.break_glass_max_minutes,
        }
        with self.trail.engine.connect() as conn:
            last = conn.execute(
                select(audit_entry.c.details)
                .where(audit_entry.c.action == AuditAction.AUDIT_SETTING_CHANGE.value)
                .order_by(audit_entry.c.seq.desc()).limit(1)).scalar()
        if last is not None and orjson.loads(last).get("settings") == current:
            return False
        self.audit(AuditRecord(user_id="chartkeeper", role="system",
                               action=AuditAction.AUDIT_SETTING_CHANGE,
                               details={"settings": current, "first": last is None}))
        return True

    def restricted_patients(self) -> frozenset[str]:
        """Patients whose whole chart is restricted (VIP, restricted confidentiality).

        Kept for ``RESTRICTED_CACHE_SECONDS`` (a query per request cost as much as the read
        it guards), and forgotten at once when this process writes a Patient; a label set by
        another process takes effect within that time.
        """
        now = time.monotonic()
        cached = self._restricted
        if cached is not None and now - cached[0] < RESTRICTED_CACHE_SECONDS:
            return cached[1]
        value = restricted_patients(self.engine)
        self._restricted = (now, value)
        return value

    def forget_restricted_patients(self) -> None:
        self._restricted = None

    # ------------------------------------------------------------ per-request checks
    def verify_token(self, token: str) -> TokenClaims:
        """The claims of a bearer token; a token that verified once is not decoded again
        until it expires (the exact signed text is the key, so nothing else can match)."""
        claims = self._verified.get(token)
        if claims is not None and claims.expires_at > datetime.now(UTC):
            return claims
        claims = self.issuer.verify(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def cached_user(self, username: str) -> tuple[bool, User | None]:
        """(known, user): the account as looked up within ``ACCOUNT_RECHECK_SECONDS``."""
        return self._cached(("user", username), self.directory.changes)

    def lookup_user(self, username: str) -> User | None:
        """The account from the database (None when there is none); remembered briefly."""
        generation = self.directory.changes
        try:
            user: User | None = self.directory.get_user(username)
        except UserNotFound:
            user = None
        self._accounts[("user", username)] = (time.monotonic(), generation, user)
        return user

    def cached_client(self, client_id: str) -> tuple[bool, ServiceClient | None]:
        return self._cached(("client", client_id), self.clients.changes)

    def lookup_client(self, client_id: str) -> ServiceClient | None:
        generation = self.clients.changes
        try:
            client: ServiceClient | None = self.clients.get(client_id)
        except ClientNotFound:
            client = None
        self._accounts[("client", client_id)] = (time.monotonic(), generation, client)
        return client

    def _cached(self, key: tuple[str, str], generation: int) -> tuple[bool, Any]:
        entry = self._accounts.get(key)
        if (entry is None or entry[1] != generation
                or time.monotonic() - entry[0] >= ACCOUNT_RECHECK_SECONDS):
            return False, None
        return True, entry[2]

    def __post_init__(self) -> None:
        self._restricted = None
        self._verified: dict[str, TokenClaims] = {}
        self._accounts: dict[tuple[str, str], tuple[float, int, Any]] = {}
        self._writer: AuditWriter | None = None
        self._writer_lock = threading.Lock()

    @property
    def audit_writer(self) -> AuditWriter:
        """The running group-commit writer, started on first use (after any fork: the app
        starts it from its lifespan) and again after ``close``."""
        with self._writer_lock:
            if self._writer is None or self._writer.closed:
                self._writer = AuditWriter(self.trail,
                                           checkpoint_every=self.audit_checkpoint_every)
            return self._writer

    def audit(self, record: AuditRecord) -> int:
        """Append one entry and wait until it is durable (the caller fails closed on error)."""
        return self.audit_writer.write(record)

    def close(self) -> None:
        """Flush and stop the audit writer (the app's shutdown); it restarts on next use."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.trail.close()

    @property
    def audit_shares_store(self) -> bool:
        """Whether the audit trail is in the store's database (PostgreSQL), so a change and
        its entry can commit in one transaction."""
        return self.trail.engine is self.engine
