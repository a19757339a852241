"""OAuth2 bearer tokens (JWT, HS256) carrying SMART on FHIR v2 scopes; client credentials."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.security.identity import (
    KEY_BYTES,
    AuthenticationError,
    Role,
    SecurityError,
    default_password_hasher,
    load_or_create_key,
    parse_role,
    require_aware,
    service_client,
    verify_secret,
    write_transaction,
)
from chartkeeper.settings import Settings

log = logging.getLogger(__name__)

INTERACTIONS = "cruds"  # create, read, update, delete, search: SMART v2 order
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
# Scopes that name no resource but that SMART clients ask for; they ride along in the token.
NON_RESOURCE_SCOPES = frozenset({
    "openid", "fhirUser", "profile", "offline_access", "online_access",
    "launch", "launch/patient", "launch/encounter",
})
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068: an access token, not an ID token or anything else
MAX_TOKEN_MINUTES = 24 * 60
CLIENT_TOKEN_MINUTES = 5  # SMART Backend Services: at most five minutes
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_RESOURCE_NAME = re.compile(r"[A-Z][A-Za-z]*")
BAD_CLIENT_MESSAGE = "invalid client id or secret"


class ScopeContext(StrEnum):
    patient = "patient"  # the patient compartment of the token's ``patient``
    user = "user"  # whatever the user may see
    system = "system"  # a backend service, no user


# ------------------------------------------------------------------------------- exceptions
class InvalidScope(SecurityError, ValueError):
    """A scope string that is not SMART v1/v2 syntax (or names an unknown resource type)."""

    def __init__(self, scope: str, problem: str) -> None:
        super().__init__(f"invalid scope {scope!r}: {problem}")
        self.scope = scope
        self.problem = problem


class TokenRequestError(SecurityError, ValueError):
    """A token was asked for with arguments that cannot make a valid token."""


class TokenError(AuthenticationError):
    """A bearer token was refused."""


class TokenExpired(TokenError):
    def __init__(self, message: str = "token expired") -> None:
        super().__init__(message)


class TokenInvalid(TokenError):
    """Not a token we issued, or not valid here; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid token: {reason}")
        self.reason = reason


class InvalidClient(AuthenticationError):
    """Unknown client, wrong secret or disabled client: one message for all three."""

    def __init__(self) -> None:
        super().__init__(BAD_CLIENT_MESSAGE)


class ScopeNotGranted(SecurityError):
    status = 403


class ClientExists(SecurityError):
    status = 409

    def __init__(self, client_id: str) -> None:
        super().__init__(f"a service client {client_id!r} already exists")
        self.client_id = client_id


class ClientNotFound(SecurityError, LookupError):
    status = 404

    def __init__(self, client_id: str) -> None:
        super().__init__(f"no service client {client_id!r}")
        self.client_id = client_id


# ------------------------------------------------------------------------------- scopes
@cache
def _resource_types() -> frozenset[str]:
    return load_definitions().resource_types


@dataclass(frozen=True)
class Scope:
    """One SMART resource scope, e.g. ``patient/Observation.rs`` (``*`` for every type)."""

    context: ScopeContext
    resource_type: str
    interactions: frozenset[str]

    def __str__(self) -> str:
        permissions = "".join(c for c in INTERACTIONS if c in self.interactions)
        return f"{self.context.value}/{self.resource_type}.{permissions}"

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether this scope permits ``interaction`` (one of c, r, u, d, s) on the type.

        Whose data (the patient compartment for ``patient/``) is the authorization layer's
        decision, made with the token's ``patient``; this answers only type and interaction.
        """
        if interaction not in INTERACTIONS or len(interaction) != 1:
            raise ValueError(f"interaction must be one of c, r, u, d, s; got {interaction!r}")
        return (self.resource_type in ("*", resource_type)
                and interaction in self.interactions)

    def intersection(self, other: Scope) -> Scope | None:
        """What both scopes allow, or None (different context, type or no common interaction)."""
        if self.context != other.context:
            return None
        if self.resource_type == "*":
            resource_type = other.resource_type
        elif other.resource_type in ("*", self.resource_type):
            resource_type = self.resource_type
        else:
            return None
        common = self.interactions & other.interactions
        return Scope(self.context, resource_type, common) if common else None


def parse_scope(text: str) -> Scope:
    """Parse one SMART resource scope: v2 (``user/*.cruds``) or v1 (``patient/*.read``).

    v1 permissions map to v2: ``read`` -> ``rs``, ``write`` -> ``cud``, ``*`` -> ``cruds``.
    """
    if not text:
        raise InvalidScope(text, "empty scope")
    if any(ch.isspace() for ch in text):
        raise InvalidScope(text, "a scope contains no whitespace (separate scopes by spaces "
                                 "and parse them with parse_scopes)")
    context_text, slash, rest = text.partition("/")
    if not slash:
        raise InvalidScope(text, "expected <context>/<resource type>.<permissions>, "
                                 "e.g. patient/Observation.rs")
    try:
        context = ScopeContext(context_text)
    except ValueError:
        raise InvalidScope(text, f"unknown context {context_text!r}; expected patient, user "
                                 "or system") from None
    if "?" in rest:
        raise InvalidScope(text, "granular scopes with search parameters are not supported")
    resource_type, dot, permissions = rest.rpartition(".")
    if not dot:
        raise InvalidScope(text, "missing '.<permissions>' (e.g. '.rs' or '.read')")
    if resource_type != "*" and not (_RESOURCE_NAME.fullmatch(resource_type)
                                     and resource_type in _resource_types()):
        raise InvalidScope(text, f"{resource_type!r} is not a FHIR R4 resource type or '*'")
    permissions = V1_PERMISSIONS.get(permissions, permissions)
    if not permissions:
        raise InvalidScope(text, "no permissions after '.'")
    if not _is_ordered_subset(permissions):
        raise InvalidScope(text, f"permissions {permissions!r} must be letters of 'cruds', "
                                 "each at most once and in that order, or v1 "
                                 "'read', 'write' or '*'")
    return Scope(context, resource_type, frozenset(permissions))


def _is_ordered_subset(permissions: str) -> bool:
    position = 0
    for letter in permissions:
        found = INTERACTIONS.find(letter, position)
        if found < 0:
            return False
        position = found + 1
    return True


@dataclass(frozen=True)
class ScopeSet:
    """The scopes of a request or token: resource scopes plus known non-resource ones."""

    resources: tuple[Scope, ...] = ()
    others: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join([*(str(s) for s in self.resources), *self.others])

    def allows(self, resource_type: str, interaction: str) -> bool:
        return any(scope.allows(resource_type, interaction) for scope in self.resources)

    def __bool__(self) -> bool:
        return bool(self.resources or self.others)


def parse_scopes(scopes: str | Iterable[str | Scope]) -> ScopeSet:
    """Parse a space-separated scope string (or a list), dropping exact duplicates."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    resources: list[Scope] = []
    others: list[str] = []
    for item in items:
        if isinstance(item, Scope):
            scope: Scope | None = item
        elif item in NON_RESOURCE_SCOPES:
            scope = None
            if item not in others:
                others.append(item)
        elif "/" in item:
            scope = parse_scope(item)
        else:
            raise InvalidScope(item, "not a SMART resource scope (context/Type.permissions) "
                                     f"nor one of {', '.join(sorted(NON_RESOURCE_SCOPES))}")
        if scope is not None and scope not in resources:
            resources.append(scope)
    return ScopeSet(tuple(resources), tuple(others))


# ------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class TokenClaims:
    """What a verified access token says."""

    subject: str
    role: Role
    scopes: ScopeSet
    patient: str | None
    issued_at: datetime
    expires_at: datetime
    token_id: str
    client_id: str | None = None

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.scopes.allows(resource_type, interaction)


def signing_key_path(home: Path) -> Path:
    """Where the token signing key lives: next to the audit key, outside the database."""
    return home / "token-signing.key"


class TokenIssuer:
    """Issues and verifies HS256-signed access tokens for one issuer and audience.

    Only HS256 with this issuer's key is accepted: ``none``, other HMAC sizes and public-key
    algorithms are refused before any signature check, so no algorithm confusion is possible.
    """

    algorithm = "HS256"

    def __init__(self, signing_key: bytes, issuer: str, audience: str, *,
                 leeway_seconds: int = 30) -> None:
        if len(signing_key) < KEY_BYTES:
            raise TokenRequestError(f"the signing key must be at least {KEY_BYTES} bytes, "
                                    f"got {len(signing_key)}")
        if not issuer or not audience:
            raise TokenRequestError("issuer and audience must be non-empty")
        self._key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.leeway = timedelta(seconds=leeway_seconds)

    @classmethod
    def from_key_file(cls, path: Path, issuer: str, audience: str) -> TokenIssuer:
        """Use the key in ``path`` (created with mode 0600 if missing)."""
        return cls(load_or_create_key(path), issuer, audience)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenIssuer:
        """The server's issuer: key in ``$CHARTKEEPER_HOME``, iss = aud = the FHIR base URL."""
        return cls.from_key_file(signing_key_path(settings.home), settings.base_url,
                                 settings.base_url)

    def issue(self, subject: str, role: Role | str, scopes: str | Iterable[str | Scope],
              patient: str | None = None, minutes: int = 60, *, client_id: str | None = None,
              now: datetime | None = None) -> str:
        """A signed bearer token. ``patient/`` scopes need ``patient``; ``system/`` scopes
        are for the ``service`` role only."""
        checked_role = parse_role(role)
        scope_set = parse_scopes(scopes)
        if not scope_set:
            raise TokenRequestError("a token needs at least one scope")
        _check_scope_context(scope_set, checked_role, patient, TokenRequestError)
        if not subject:
            raise TokenRequestError("a token needs a subject")
        if not 0 < minutes <= MAX_TOKEN_MINUTES:
            raise TokenRequestError(f"minutes must be between 1 and {MAX_TOKEN_MINUTES}, "
                                    f"got {minutes}")
        moment = require_aware(now)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": int(moment.timestamp()),
            "nbf": int(moment.timestamp()),
            "exp": int((moment + timedelta(minutes=minutes)).timestamp()),
            "jti": str(uuid.uuid4()),
            "scope": str(scope_set),
            "role": checked_role.value,
        }
        if patient is not None:
            payload["patient"] = patient
        if client_id is not None:
            payload["client_id"] = client_id
        token = jwt.encode(payload, self._key, algorithm=self.algorithm,
                           headers={"typ": ACCESS_TOKEN_TYPE})
        log.info("issued token %s to %r (role %s, scope %r, %d minutes)", payload["jti"],
                 subject, checked_role.value, payload["scope"], minutes)
        return token

    def verify(self, token: str) -> TokenClaims:
        """The claims of a token this issuer signed, or TokenExpired / TokenInvalid."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"not a JWT ({exc})") from exc
        algorithm = header.get("alg")
        if algorithm != self.algorithm:
            raise TokenInvalid(f"algorithm {algorithm!r} is not accepted; expected "
                               f"{self.algorithm}")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenInvalid(f"token type {header.get('typ')!r} is not {ACCESS_TOKEN_TYPE!r}")
        try:
            payload = jwt.decode(
                token, self._key, algorithms=[self.algorithm], audience=self.audience,
                issuer=self.issuer, leeway=self.leeway,
                options={"require": ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired() from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenInvalid("signature does not verify") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenInvalid(f"wrong audience (expected {self.audience!r})") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenInvalid(f"wrong issuer (expected {self.issuer!r})") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenInvalid("not valid yet (nbf in the future)") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalid(f"missing claim {exc.claim!r}") from exc
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from exc
        return self._claims(payload)

    def _claims(self, payload: dict[str, Any]) -> TokenClaims:
        for name in ("sub", "jti", "scope", "role"):
            if not isinstance(payload.get(name), str):
                raise TokenInvalid(f"claim {name!r} is missing or not a string")
        patient = payload.get("patient")
        client_id = payload.get("client_id")
        if patient is not None and not isinstance(patient, str):
            raise TokenInvalid("claim 'patient' is not a string")
        if client_id is not None and not isinstance(client_id, str):
            raise TokenInvalid("claim 'client_id' is not a string")
        try:
            role = Role(payload["role"])
        except ValueError:
            raise TokenInvalid(f"unknown role {payload['role']!r}") from None
        try:
            scope_set = parse_scopes(payload["scope"])
        except InvalidScope as exc:
            raise TokenInvalid(f"malformed scope: {exc}") from exc
        _check_scope_context(scope_set, role, patient, TokenInvalid)
        return TokenClaims(
            subject=payload["sub"],
            role=role,
            scopes=scope_set,
            patient=patient,
            issued_at=datetime.fromtimestamp(payload["iat"], UTC),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
            token_id=payload["jti"],
            client_id=client_id,
        )


def _check_scope_context(scope_set: ScopeSet, role: Role, patient: str | None,
                         error: type[TokenRequestError] | type[TokenInvalid]) -> None:
    contexts = {scope.context for scope in scope_set.resources}
    if ScopeContext.patient in contexts and patient is None:
        raise error("patient/ scopes need a patient (the patient compartment they open)")
    if patient is not None and not _FHIR_ID.fullmatch(patient):
        raise error(f"patient {patient!r} is not a FHIR id")
    if ScopeContext.system in contexts and role is not Role.service:
        raise error(f"system/ scopes are for the service role only, not {role.value}")


# ------------------------------------------------------------------------------- clients
def grant(allowed: Iterable[Scope], requested: Iterable[Scope]) -> tuple[Scope, ...]:
    """The intersection: every part of a requested scope that some allowed scope covers."""
    granted: list[Scope] = []
    allowed = list(allowed)
    for want in requested:
        for have in allowed:
            common = want.intersection(have)
            if common is not None and common not in granted:
                granted.append(common)
    return tuple(granted)


@dataclass(frozen=True)
class ServiceClient:
    client_id: str
    scopes: tuple[Scope, ...]
    active: bool


class ServiceClientRegistry:
    """Backend services (OAuth2 client credentials): ids, argon2id-hashed secrets, and the
    ``system/`` scopes each may be granted."""

    def __init__(self, engine: Engine, issuer: TokenIssuer, hasher: PasswordHasher | None = None,
                 *, token_minutes: int = CLIENT_TOKEN_MINUTES) -> None:
        self.engine = engine
        self.issuer = issuer
        self.hasher = hasher or default_password_hasher()
        self.token_minutes = token_minutes
        self._dummy_hash: str | None = None
        self.changes = 0  # counts this process's client changes (they end cached checks)

    def register(self, client_id: str, allowed_scopes: str | Iterable[str | Scope],
                 now: datetime | None = None) -> str:
        """Add a client; return its generated secret (shown once, stored only as a hash)."""
        if not _CLIENT_ID.fullmatch(client_id):
            raise TokenRequestError(f"client id {client_id!r} is not valid: expected 1-128 "
                                    "characters of letters, digits, '.', '_', ':' or '-'")
        scopes = parse_scopes(allowed_scopes)
        if not scopes.resources or scopes.others:
            raise TokenRequestError("a service client is allowed system/ resource scopes only")
        for scope in scopes.resources:
            if scope.context is not ScopeContext.system:
                raise InvalidScope(str(scope), "a service client is allowed system/ scopes only")
        secret = secrets.token_urlsafe(32)
        moment = require_aware(now)
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(insert(service_client).values(
                    client_id=client_id, secret_hash=self.hasher.hash(secret),
                    scopes=str(scopes), active=True, created_at=moment, updated_at=moment,
                ))
        except IntegrityError as exc:
            raise ClientExists(client_id) from exc
        self.changes += 1
        log.info("service client %r registered with scopes %r", client_id, str(scopes))
        return secret

    def get(self, client_id: str) -> ServiceClient:
        with self.engine.connect() as conn:
            row = conn.execute(select(service_client)
                               .where(service_client.c.client_id == client_id)).first()
        if row is None:
            raise ClientNotFound(client_id)
        return ServiceClient(row.client_id, parse_scopes(row.scopes).resources, bool(row.active))

    def disable(self, client_id: str, now: datetime | None = None) -> None:
        with write_transaction(self.engine) as conn:
            result = conn.execute(update(service_client)
                                  .where(service_client.c.client_id == client_id)
                                  .values(active=False, updated_at=require_aware(now)))
            if result.rowcount == 0:
                raise ClientNotFound(client_id)
        self.changes += 1
        log.info("service client %r disabled", client_id)

    def token_for_client(self, client_id: str, secret: str,
                         requested_scopes: str | Iterable[str | Scope] = "",
                         now: datetime | None = None) -> str:
        """A client-credentials token with the requested scopes the client is allowed.

        No scopes requested means all the client's scopes. Raises InvalidClient (one message
        for unknown id, wrong secret or disabled client), InvalidScope for malformed
        requests, ScopeNotGranted when nothing requested is allowed.
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(service_client)
                               .where(service_client.c.client_id == client_id)).first()
        if row is None:
            verify_secret(self.hasher, self.dummy_hash, secret)
            log.warning("client credentials refused: unknown client id")
            raise InvalidClient()
        if not verify_secret(self.hasher, row.secret_hash, secret):
            log.warning("client credentials refused: wrong secret for %r", client_id)
            raise InvalidClient()
        if not row.active:
            log.warning("client credentials refused: client %r is disabled", client_id)
            raise InvalidClient()
        if self.hasher.check_needs_rehash(row.secret_hash):
            self._rehash(row.client_id, row.secret_hash, secret)
        allowed = parse_scopes(row.scopes).resources
        requested = parse_scopes(requested_scopes)
        granted = grant(allowed, requested.resources) if requested else allowed
        if not granted:
            raise ScopeNotGranted(f"client {client_id!r} may not have any of the requested "
                                  f"scopes {str(requested)!r}")
        return self.issuer.issue(client_id, Role.service, granted, minutes=self.token_minutes,
                                 client_id=client_id, now=now)

    @property
    def dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(32))
        return self._dummy_hash

    def _rehash(self, client_id: str, old_hash: str, secret: str) -> None:
        new_hash = self.hasher.hash(secret)
        with write_transaction(self.engine) as conn:
            conn.execute(update(service_client).where(
                service_client.c.client_id == client_id,
                service_client.c.secret_hash == old_hash,
            ).values(secret_hash=new_hash))
