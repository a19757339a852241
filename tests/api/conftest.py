"""Fixtures for the API tests: the real app on a fresh store, in-process and over a socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from chartkeeper.api.app import create_app
from chartkeeper.security.identity import Role, UserExists
from chartkeeper.security.services import SecurityServices
from chartkeeper.settings import Settings
from chartkeeper.store import Store

BASE = "http://testserver/fhir"
FHIR = "application/fhir+json"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    yield store
    store.dispose()


def make_settings(tmp_path: Path, database_url: str, base_url: str = BASE, **kw: Any) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, base_url=base_url, **kw)


# argon2id at its cheapest: the tests exercise the flow, not the cost.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def make_security(settings: Settings, store: Store) -> SecurityServices:
    return SecurityServices.build(settings, store.engine, hasher=CHEAP_HASHER)


def issue_token(security: SecurityServices, user: str = "fixture-admin",
                role: Role = Role.administrator, scopes: str = "user/*.cruds",
                patient: str | None = None, minutes: int = 60) -> str:
    """A bearer token for ``user`` (created with ``role`` if missing)."""
    try:
        security.directory.add_user(user, role, f"pw-{user}-long-enough-{role.value}")
    except UserExists:
        pass
    return security.issuer.issue(user, role, scopes, patient=patient, minutes=minutes)


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_client(settings: Settings, store: Store, security: SecurityServices | None = None,
                token: str | None = None) -> TestClient:
    """A TestClient on a new app; with an administrator's token unless one is given."""
    security = security or make_security(settings, store)
    app = create_app(settings, store, security)
    test_client = TestClient(app, base_url="http://testserver")
    test_client.headers["Content-Type"] = FHIR
    test_client.headers["Authorization"] = f"Bearer {token or issue_token(security)}"
    return test_client


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(make_settings(tmp_path, store.url), store) as test_client:
        yield test_client


@dataclass
class LiveServer:
    url: str
    store: Store
    token: str
    security: SecurityServices


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served_on(app: Any, port: int) -> Iterator[None]:
    """Serve ``app`` with uvicorn on a loopback port in a background thread, until exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(store: Store, tmp_path: Path) -> Iterator[LiveServer]:
    """The app served by uvicorn on a loopback port in a background thread."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(tmp_path, store.url, base_url=f"{base}/fhir")
    security = make_security(settings, store)
    with served_on(create_app(settings, store, security), port):
        yield LiveServer(base, store, issue_token(security), security)


def fhir_client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Content-Type": FHIR, "Accept": FHIR,
                                                **auth_header(token)}, timeout=60)
