"""Who may sign in: user accounts, argon2id passwords, TOTP second factor, lockout, idle timeout."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import pyotp
from argon2 import PasswordHasher, profiles
from argon2.exceptions import VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from chartkeeper.store.engine import WRITE_OPTION

log = logging.getLogger(__name__)

BAD_CREDENTIALS_MESSAGE = "invalid username or password"
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
TOTP_INTERVAL_SECONDS = 30
TOTP_DIGITS = 6
# Codes from one step either side of now are accepted, for clock drift and typing time.
TOTP_WINDOW_STEPS = 1
KEY_BYTES = 32
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_TOTP_CIPHERTEXT_VERSION = "v1"


class Role(StrEnum):
    """What a user does in the HIM department; authorization decisions start from it."""

    him_technician = "him_technician"
    coder = "coder"
    transcriptionist = "transcriptionist"
    cancer_registrar = "cancer_registrar"
    physician = "physician"
    analyst = "analyst"
    roi_specialist = "roi_specialist"
    privacy_officer = "privacy_officer"
    administrator = "administrator"
    service = "service"  # system accounts: HL7 feeds, API clients

    @property
    def requires_second_factor(self) -> bool:
        return self in PRIVILEGED_ROLES


PRIVILEGED_ROLES = frozenset(
    {Role.administrator, Role.privacy_officer, Role.physician, Role.roi_specialist}
)


# ------------------------------------------------------------------------------- exceptions
class SecurityError(Exception):
    """Base class of the security layer's refusals; ``status`` is the HTTP status to answer."""

    status = 400


class AuthenticationError(SecurityError):
    """A sign-in was refused."""

    status = 401


class BadCredentials(AuthenticationError):
    """Wrong password. The message is the same as for an unknown user, on purpose."""

    def __init__(self) -> None:
        super().__init__(BAD_CREDENTIALS_MESSAGE)


class UnknownUser(BadCredentials):
    """No such user. Indistinguishable from ``BadCredentials`` for the caller."""


class AccountLocked(AuthenticationError):
    """Too many consecutive failures: no attempt is checked until ``until``."""

    def __init__(self, until: datetime) -> None:
        super().__init__(
            f"account locked after repeated failed sign-ins until {until.isoformat()}"
        )
        self.until = until


class AccountDisabled(AuthenticationError):
    """The password was right but the account has been disabled."""

    status = 403

    def __init__(self, username: str) -> None:
        super().__init__(f"account {username!r} is disabled")
        self.username = username


class SecondFactorRequired(AuthenticationError):
    """The password was right; a TOTP code is needed (``enrolled`` False: none is set up yet)."""

    def __init__(self, username: str, enrolled: bool) -> None:
        if enrolled:
            message = f"a one-time code from the authenticator app is required for {username!r}"
        else:
            message = (f"{username!r} must enroll an authenticator app before signing in "
                       "(an administrator runs `chartkeeper users enroll-totp`)")
        super().__init__(message)
        self.username = username
        self.enrolled = enrolled


class BadSecondFactor(AuthenticationError):
    """The one-time code is wrong (or malformed, or from outside the accepted window)."""

    def __init__(self, message: str = "invalid one-time code") -> None:
        super().__init__(message)


class ReplayedSecondFactor(BadSecondFactor):
    """The one-time code was right but already used: each time step signs in at most once."""

    def __init__(self) -> None:
        super().__init__("this one-time code was already used; wait for the next one")


class UserNotFound(SecurityError, LookupError):
    """An administrative operation named a user that does not exist."""

    status = 404

    def __init__(self, username: str) -> None:
        super().__init__(f"no user named {username!r}")
        self.username = username


class UserExists(SecurityError):
    status = 409

    def __init__(self, username: str) -> None:
        super().__init__(f"a user named {username!r} already exists")
        self.username = username


class InvalidUsername(SecurityError, ValueError):
    def __init__(self, username: str) -> None:
        super().__init__(
            f"username {username!r} is not valid: expected 1-64 characters of a-z, 0-9, "
            "'.', '_', '@' or '-', starting with a letter or digit"
        )
        self.username = username


class InvalidRole(SecurityError, ValueError):
    def __init__(self, role: str) -> None:
        super().__init__(
            f"unknown role {role!r}; expected one of: {', '.join(r.value for r in Role)}"
        )
        self.role = role


class WeakPassword(SecurityError, ValueError):
    """The password breaks the policy. The message never contains the password."""


class KeyFileError(SecurityError):
    """A key file is missing, unreadable, too short, or readable by other users."""


class SecondFactorKeyMissing(SecurityError):
    """TOTP secrets are stored encrypted; this directory was given no key to do it with."""

    def __init__(self) -> None:
        super().__init__("no TOTP encryption key configured (UserDirectory(totp_key=...))")


# ------------------------------------------------------------------------------- key files
def load_or_create_key(path: Path, size: int = KEY_BYTES) -> bytes:
    """Read a secret key file, creating it (mode 0600, random bytes) if it does not exist.

    Keys live outside the database, so a copy of the database alone reveals nothing they
    protect. A file that other users may read is refused rather than silently used.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        _create_key_file(path, size)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"key file {path} has mode {mode:04o}; expected 0600 "
                           f"(run: chmod 600 {path})")
    key = path.read_bytes()
    if len(key) < size:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes; expected at least {size}")
    return key


def totp_key_path(home: Path) -> Path:
    """Where the key that encrypts TOTP secrets lives: next to the audit key."""
    return home / "totp-secrets.key"


def _create_key_file(path: Path, size: int) -> None:
    # Written in full under a temporary name, then linked into place: a process racing this
    # one either wins the link or reads the finished key, never a half-written file.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
        with suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


# ------------------------------------------------------------------------------- schema
metadata = MetaData()

app_user = Table(
    "app_user",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(512), nullable=False),  # argon2id, PHC string format
    Column("active", Boolean, nullable=False),
    Column("must_change_password", Boolean, nullable=False),
    Column("failed_attempts", Integer, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("totp_secret", String(255), nullable=True),  # AES-GCM ciphertext, never the secret
    Column("totp_last_step", BigInteger, nullable=True),  # highest time step used: no replay
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True), nullable=True),
)

service_client = Table(
    "service_client",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(128), nullable=False, unique=True),
    Column("secret_hash", String(512), nullable=False),  # argon2id of the client secret
    Column("scopes", Text, nullable=False),  # allowed system/ scopes, space-separated
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Failed sign-ins under names that have no account, counted like real accounts' failures so
# that the lockout answers the same for both. Only the count and the lock: never a password.
unknown_sign_in = Table(
    "unknown_sign_in",
    metadata,
    Column("username", String(64), primary_key=True),  # HMAC-SHA256 of the name, hex
    Column("failed_attempts", Integer, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
)

user_session = Table(
    "user_session",
    metadata,
    # SHA-256 of the session cookie: a copy of this table does not sign anyone in.
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("role", String(32), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
)


def create_identity_schema(engine: Engine) -> None:
    """Create the identity tables (users, service clients, sessions) if they do not exist."""
    metadata.create_all(engine)


def default_password_hasher() -> PasswordHasher:
    """argon2id with RFC 9106's second recommended (low-memory) profile: t=3, 64 MiB, p=4."""
    return PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction (SQLite takes its write lock at BEGIN, as the store's writers do)."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        yield conn


def verify_secret(hasher: PasswordHasher, hashed: str, secret: str) -> bool:
    """True when ``secret`` matches the argon2 hash; a malformed hash raises, never passes."""
    try:
        return hasher.verify(hashed, secret)
    except VerifyMismatchError:
        return False


def utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; naive values (SQLite gives them back) are taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def require_aware(moment: datetime | None, name: str = "now") -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment!r}")
    return moment.astimezone(UTC)


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else utc(moment)


# ------------------------------------------------------------------------------- policy
def normalize_username(username: str) -> str:
    return username.lower()


def check_username(username: str) -> str:
    """The stored form of a username (lower case), or ``InvalidUsername``."""
    normalized = normalize_username(username)
    if not _USERNAME.fullmatch(normalized):
        raise InvalidUsername(username)
    return normalized


def check_password_policy(username: str, password: str) -> None:
    """Raise ``WeakPassword`` unless the password has 12-1024 characters and is not the name."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD_LENGTH} characters "
                           f"(got {len(password)})")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD_LENGTH} characters "
                           f"(got {len(password)})")
    if password.casefold() == username.casefold():
        raise WeakPassword("password must not be the username")
    if not password.strip():
        raise WeakPassword("password must not be only whitespace")


@dataclass(frozen=True)
class LockoutPolicy:
    """After ``threshold`` consecutive failures, lock for ``first_lock``, doubling per further
    failure up to ``max_lock``. A success resets the count."""

    threshold: int = 5
    first_lock: timedelta = timedelta(minutes=1)
    max_lock: timedelta = timedelta(hours=1)

    def lock_duration(self, consecutive_failures: int) -> timedelta | None:
        if consecutive_failures < self.threshold:
            return None
        doublings = min(consecutive_failures - self.threshold, 32)
        return min(self.first_lock * (1 << doublings), self.max_lock)


# ------------------------------------------------------------------------------- users
@dataclass(frozen=True)
class User:
    """A user account as callers see it: no password hash, no TOTP secret."""

    username: str
    role: Role
    active: bool
    must_change_password: bool
    totp_enrolled: bool
    failed_attempts: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None

    @property
    def requires_second_factor(self) -> bool:
        return self.role.requires_second_factor or self.totp_enrolled

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > require_aware(now)


def _user_from_row(row: Row[Any]) -> User:
    return User(
        username=row.username,
        role=Role(row.role),
        active=bool(row.active),
        must_change_password=bool(row.must_change_password),
        totp_enrolled=row.totp_secret is not None,
        failed_attempts=int(row.failed_attempts),
        locked_until=_utc_or_none(row.locked_until),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        last_login_at=_utc_or_none(row.last_login_at),
    )


def parse_role(role: Role | str) -> Role:
    if isinstance(role, Role):
        return role
    try:
        return Role(role)
    except ValueError:
        raise InvalidRole(role) from None


class UserDirectory:
    """User accounts in the ``app_user`` table and the sign-in rules that guard them.

    ``hasher`` sets the argon2id parameters (production: ``default_password_hasher()``);
    ``totp_key`` (32 bytes, from a key file outside the database) encrypts TOTP secrets.
    """

    def __init__(
        self,
        engine: Engine,
        hasher: PasswordHasher | None = None,
        *,
        totp_key: bytes | None = None,
        totp_issuer: str = "Chartkeeper",
        lockout: LockoutPolicy | None = None,
    ) -> None:
        if totp_key is not None and len(totp_key) != KEY_BYTES:
            raise KeyFileError(f"the TOTP key must be {KEY_BYTES} bytes, got {len(totp_key)}")
        self.engine = engine
        self.hasher = hasher or default_password_hasher()
        self.lockout = lockout or LockoutPolicy()
        self.totp_issuer = totp_issuer
        self._totp_cipher = AESGCM(totp_key) if totp_key is not None else None
        # Keys the hashes of names tried without an account (a per-process key without one).
        self._name_key = hmac.digest(totp_key or secrets.token_bytes(KEY_BYTES),
                                     b"chartkeeper unknown sign-in names", "sha256")
        self._dummy_hash: str | None = None
        self.changes = 0  # counts this process's account changes (they end cached checks)

    # ----------------------------------------------------------------- administration
    def add_user(self, username: str, role: Role | str, password: str, *,
                 must_change_password: bool = False, now: datetime | None = None) -> User:
        """Create an account. Raises InvalidUsername, InvalidRole, WeakPassword, UserExists."""
        name = check_username(username)
        checked_role = parse_role(role)
        check_password_policy(name, password)
        moment = require_aware(now)
        hashed = self.hasher.hash(password)
        try:
            with write_transaction(self.engine) as conn:
                if self._row(conn, name) is not None:
                    raise UserExists(name)
                conn.execute(insert(app_user).values(
                    username=name, role=checked_role.value, password_hash=hashed, active=True,
                    must_change_password=must_change_password, failed_attempts=0,
                    locked_until=None, totp_secret=None, totp_last_step=None,
                    created_at=moment, updated_at=moment, password_changed_at=moment,
                    last_login_at=None,
                ))
        except IntegrityError as exc:  # another process added the same name meanwhile
            raise UserExists(name) from exc
        self.changes += 1
        log.info("user %r added with role %s", name, checked_role.value)
        return self.get_user(name)

    def get_user(self, username: str) -> User:
        with self.engine.connect() as conn:
            row = self._row(conn, normalize_username(username))
        if row is None:
            raise UserNotFound(username)
        return _user_from_row(row)

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(app_user).order_by(app_user.c.username)).all()
        return [_user_from_row(row) for row in rows]

    def count_users(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(app_user)).scalar_one())

    def disable(self, username: str, now: datetime | None = None) -> User:
        """Refuse every further sign-in of this account (its history stays)."""
        user = self._change(username, now, active=False)
        log.info("user %r disabled", user.username)
        return user

    def enable(self, username: str, now: datetime | None = None) -> User:
        user = self._change(username, now, active=True)
        log.info("user %r enabled", user.username)
        return user

    def unlock(self, username: str, now: datetime | None = None) -> User:
        """Clear a lockout and the failure count (an administrator's decision)."""
        user = self._change(username, now, failed_attempts=0, locked_until=None)
        log.info("user %r unlocked", user.username)
        return user

    def set_password(self, username: str, password: str, *, must_change_password: bool = False,
                     now: datetime | None = None) -> User:
        """Replace the password (policy checked); ``must_change_password`` for a reset."""
        name = normalize_username(username)
        check_password_policy(name, password)
        moment = require_aware(now)
        user = self._change(name, moment, password_hash=self.hasher.hash(password),
                            must_change_password=must_change_password,
                            password_changed_at=moment)
        log.info("password of user %r changed", user.username)
        return user

    def enroll_totp(self, username: str, now: datetime | None = None) -> str:
        """Give the user a new TOTP secret; return the ``otpauth://`` URI for the app's QR code.

        The URI carries the secret: show it to the user once, never log or store it.
        Enrolling again replaces the secret, so codes from the old one stop working.
        """
        if self._totp_cipher is None:
            raise SecondFactorKeyMissing()
        name = normalize_username(username)
        secret = pyotp.random_base32()
        self._change(name, now, totp_secret=self._encrypt_totp(name, secret),
                     totp_last_step=None)
        log.info("user %r enrolled a TOTP authenticator", name)
        return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL_SECONDS
                          ).provisioning_uri(name=name, issuer_name=self.totp_issuer)

    def _change(self, username: str, now: datetime | None, **values: Any) -> User:
        name = normalize_username(username)
        values["updated_at"] = require_aware(now)
        with write_transaction(self.engine) as conn:
            result = conn.execute(update(app_user).where(app_user.c.username == name)
                                  .values(**values))
            if result.rowcount == 0:
                raise UserNotFound(username)
        self.changes += 1
        return self.get_user(name)

    @staticmethod
    def _row(conn: Connection, name: str) -> Row[Any] | None:
        return conn.execute(select(app_user).where(app_user.c.username == name)).first()

    # ----------------------------------------------------------------- sign-in
    def authenticate(self, username: str, password: str, totp_code: str | None = None,
                     now: datetime | None = None) -> User:
        """Check a sign-in and return the user, or raise the AuthenticationError that says why.

        Order: lockout, password, disabled, second factor. The password is checked before
        anything about the account is revealed, so a wrong password always reads
        "invalid username or password", whether or not the user exists.
        """
        moment = require_aware(now)
        name = normalize_username(username)
        row = None
        if _USERNAME.fullmatch(name):
            with self.engine.connect() as conn:
                row = self._row(conn, name)
        if row is None:
            self._refuse_unknown(name, password, moment)
        locked_until = _utc_or_none(row.locked_until)
        if locked_until is not None and locked_until > moment:
            log.warning("sign-in refused: user %r is locked until %s", name,
                        locked_until.isoformat())
            raise AccountLocked(locked_until)
        if not verify_secret(self.hasher, row.password_hash, password):
            self._record_failure(row, moment, "wrong password")
            raise BadCredentials()
        if not row.active:
            log.warning("sign-in refused: user %r is disabled", name)
            raise AccountDisabled(name)
        step = None
        if Role(row.role).requires_second_factor or row.totp_secret is not None:
            step = self._matching_totp_step(row, totp_code, moment)
        self._record_success(row, password, step, moment)
        return self.get_user(name)

    def _refuse_unknown(self, name: str, password: str, moment: datetime) -> NoReturn:
        """Refuse a name with no account exactly as a real one would be refused: the same
        argon2 time, the same message, and the same lockout after repeated failures (else
        "account locked" would tell which names exist)."""
        known_shape = _USERNAME.fullmatch(name) is not None
        # Counted under a keyed hash: a password typed into the name field must not be
        # stored (and an unkeyed hash of it could be guessed offline).
        name = hmac.new(self._name_key, name.encode(), hashlib.sha256).hexdigest()
        if known_shape:
            with self.engine.connect() as conn:
                tried = conn.execute(select(unknown_sign_in).where(
                    unknown_sign_in.c.username == name)).first()
            locked_until = _utc_or_none(tried.locked_until) if tried is not None else None
            if locked_until is not None and locked_until > moment:
                raise AccountLocked(locked_until)
        # Spend the time of a real verification, so response time reveals nothing.
        verify_secret(self.hasher, self.dummy_hash, password)
        log.warning("sign-in refused: unknown username")
        if known_shape:
            with write_transaction(self.engine) as conn:
                updated = conn.execute(update(unknown_sign_in).where(
                    unknown_sign_in.c.username == name).values(
                    failed_attempts=unknown_sign_in.c.failed_attempts + 1)).rowcount
                if not updated:
                    try:
                        with conn.begin_nested():  # a concurrent first failure may win
                            conn.execute(insert(unknown_sign_in).values(
                                username=name, failed_attempts=1, locked_until=None))
                    except IntegrityError:
                        conn.execute(update(unknown_sign_in).where(
                            unknown_sign_in.c.username == name).values(
                            failed_attempts=unknown_sign_in.c.failed_attempts + 1))
                failures = int(conn.execute(select(unknown_sign_in.c.failed_attempts).where(
                    unknown_sign_in.c.username == name)).scalar_one())
                lock = self.lockout.lock_duration(failures)
                if lock is not None:
                    conn.execute(update(unknown_sign_in).where(
                        unknown_sign_in.c.username == name).values(locked_until=moment + lock))
        raise UnknownUser()

    @property
    def dummy_hash(self) -> str:
        """A hash of a random secret with this directory's parameters, for unknown users."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(32))
        return self._dummy_hash

    def _matching_totp_step(self, row: Row[Any], code: str | None, now: datetime) -> int:
        name = row.username
        if row.totp_secret is None:
            log.warning("sign-in refused: user %r has no authenticator enrolled", name)
            raise SecondFactorRequired(name, enrolled=False)
        if code is None or not code.strip():
            raise SecondFactorRequired(name, enrolled=True)
        code = code.strip().replace(" ", "")
        if len(code) != TOTP_DIGITS or not code.isdigit():
            self._record_failure(row, now, "malformed one-time code")
            raise BadSecondFactor(f"a one-time code is {TOTP_DIGITS} digits")
        totp = pyotp.TOTP(self._decrypt_totp(name, row.totp_secret), digits=TOTP_DIGITS,
                          interval=TOTP_INTERVAL_SECONDS)
        current = int(now.timestamp()) // TOTP_INTERVAL_SECONDS
        matched = None
        for step in range(current - TOTP_WINDOW_STEPS, current + TOTP_WINDOW_STEPS + 1):
            if hmac.compare_digest(totp.generate_otp(step), code) and matched is None:
                matched = step
        if matched is None:
            self._record_failure(row, now, "wrong one-time code")
            raise BadSecondFactor()
        return matched

    def _record_failure(self, row: Row[Any], now: datetime, reason: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(update(app_user).where(app_user.c.id == row.id)
                         .values(failed_attempts=app_user.c.failed_attempts + 1))
            failures = int(conn.execute(select(app_user.c.failed_attempts)
                                        .where(app_user.c.id == row.id)).scalar_one())
            lock = self.lockout.lock_duration(failures)
            if lock is not None:
                conn.execute(update(app_user).where(app_user.c.id == row.id)
                             .values(locked_until=now + lock))
        log.warning("sign-in refused: %s for user %r (%d consecutive failures)", reason,
                    row.username, failures)
        if lock is not None:
            log.warning("user %r locked for %s after %d consecutive failures", row.username,
                        lock, failures)

    def _record_success(self, row: Row[Any], password: str, totp_step: int | None,
                        now: datetime) -> None:
        # Hash outside the transaction: argon2 is slow on purpose, the write lock is not.
        new_hash = (self.hasher.hash(password)
                    if self.hasher.check_needs_rehash(row.password_hash) else None)
        replayed = False
        with write_transaction(self.engine) as conn:
            if totp_step is not None:
                # One conditional update decides replay, so two concurrent sign-ins with the
                # same code cannot both pass.
                replayed = conn.execute(
                    update(app_user)
                    .where(app_user.c.id == row.id,
                           or_(app_user.c.totp_last_step.is_(None),
                               app_user.c.totp_last_step < totp_step))
                    .values(totp_last_step=totp_step)
                ).rowcount == 0
            if not replayed:
                conn.execute(update(app_user).where(app_user.c.id == row.id)
                             .values(failed_attempts=0, locked_until=None, last_login_at=now))
                if new_hash is not None:
                    conn.execute(update(app_user).where(
                        app_user.c.id == row.id,
                        app_user.c.password_hash == row.password_hash,
                    ).values(password_hash=new_hash))
        if replayed:
            self._record_failure(row, now, "replayed one-time code")
            raise ReplayedSecondFactor()
        if new_hash is not None:
            log.info("password hash of user %r upgraded to the current argon2 parameters",
                     row.username)
        log.info("user %r signed in", row.username)

    # ----------------------------------------------------------------- TOTP secrets at rest
    def _encrypt_totp(self, name: str, secret: str) -> str:
        if self._totp_cipher is None:
            raise SecondFactorKeyMissing()
        nonce = secrets.token_bytes(12)
        sealed = self._totp_cipher.encrypt(nonce, secret.encode(), _totp_aad(name))
        return f"{_TOTP_CIPHERTEXT_VERSION}:{base64.b64encode(nonce + sealed).decode()}"

    def _decrypt_totp(self, name: str, stored: str) -> str:
        if self._totp_cipher is None:
            raise SecondFactorKeyMissing()
        version, _, payload = stored.partition(":")
        if version != _TOTP_CIPHERTEXT_VERSION:
            raise KeyFileError(f"TOTP secret of {name!r} is in unknown format {version!r}")
        raw = base64.b64decode(payload)
        try:
            return self._totp_cipher.decrypt(raw[:12], raw[12:], _totp_aad(name)).decode()
        except InvalidTag as exc:
            raise KeyFileError(f"TOTP secret of {name!r} does not decrypt with the configured "
                               "key (wrong key file?)") from exc


def _totp_aad(name: str) -> bytes:
    # Bound to the user: a ciphertext copied onto another row does not decrypt.
    return f"chartkeeper-totp:{name}".encode()


def ensure_initial_admin(directory: UserDirectory) -> str | None:
    """On first start (no users at all) create ``admin`` with a random one-time password.

    Returns that password, once, for the caller to show; the account must change it and
    (as an administrator) enroll TOTP before it can sign in. Returns None when users exist.
    """
    if directory.count_users() > 0:
        return None
    password = secrets.token_urlsafe(18)
    try:
        directory.add_user("admin", Role.administrator, password, must_change_password=True)
    except UserExists:  # another process got there first
        return None
    return password


# ------------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class Session:
    """A signed-in user's web session (the web layer stores it and calls ``touched``)."""

    session_id: str
    username: str
    role: Role
    started_at: datetime
    last_seen: datetime

    @classmethod
    def start(cls, user: User, now: datetime | None = None) -> Session:
        moment = require_aware(now)
        return cls(secrets.token_urlsafe(32), user.username, user.role, moment, moment)

    def touched(self, now: datetime | None = None) -> Session:
        return replace(self, last_seen=require_aware(now))


@dataclass(frozen=True)
class SessionPolicy:
    """Automatic logoff (HIPAA 164.312(a)(2)(iii)): a session idle this long is over."""

    idle_minutes: int = 15

    def __post_init__(self) -> None:
        if self.idle_minutes <= 0:
            raise ValueError(f"idle_minutes must be positive, got {self.idle_minutes}")

    @property
    def idle_timeout(self) -> timedelta:
        return timedelta(minutes=self.idle_minutes)

    def is_expired(self, last_seen: datetime, now: datetime | None = None) -> bool:
        return require_aware(now) - require_aware(last_seen, "last_seen") >= self.idle_timeout


class SessionExpired(AuthenticationError):
    def __init__(self) -> None:
        super().__init__("the session ended (signed out or idle too long); sign in again")


# last_seen is written at most this often, so an active session is not one write per request.
SESSION_TOUCH_SECONDS = 30


def _session_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Web sessions in the database: opaque random cookies, idle timeout, sign-out."""

    def __init__(self, engine: Engine, policy: SessionPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or SessionPolicy()

    def start(self, user: User, now: datetime | None = None) -> str:
        """Open a session for a signed-in user; the returned token goes in the cookie only."""
        session = Session.start(user, now)
        with write_transaction(self.engine) as conn:
            conn.execute(insert(user_session).values(
                token_hash=_session_hash(session.session_id), username=user.username,
                role=user.role.value, started_at=session.started_at,
                last_seen=session.last_seen))
        return session.session_id

    def resume(self, token: str, now: datetime | None = None) -> Session:
        """The live session of ``token`` (its idle clock restarted), or SessionExpired."""
        moment = require_aware(now)
        key = _session_hash(token)
        with self.engine.connect() as conn:
            row = conn.execute(select(user_session).where(user_session.c.token_hash == key)
                               ).first()
        if row is None or row.ended_at is not None:
            raise SessionExpired()
        last_seen = utc(row.last_seen)
        if self.policy.is_expired(last_seen, moment):
            self.end(token, moment)
            raise SessionExpired()
        if (moment - last_seen).total_seconds() >= SESSION_TOUCH_SECONDS:
            with write_transaction(self.engine) as conn:
                conn.execute(update(user_session).where(user_session.c.token_hash == key)
                             .values(last_seen=moment))
            last_seen = moment
        return Session(token, row.username, Role(row.role), utc(row.started_at), last_seen)

    def end(self, token: str, now: datetime | None = None) -> bool:
        """Sign out: the session is over. False when it was not open."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(update(user_session).where(
                user_session.c.token_hash == _session_hash(token),
                user_session.c.ended_at.is_(None)).values(ended_at=require_aware(now)))
        return bool(result.rowcount)

    def end_all(self, username: str, now: datetime | None = None) -> int:
        """End every open session of a user (disabled account, password change)."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(update(user_session).where(
                user_session.c.username == username,
                user_session.c.ended_at.is_(None)).values(ended_at=require_aware(now)))
        return int(result.rowcount)
