"""Fixtures for the API tests: the real app on a fresh store, in-process and over a socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from chartkeeper.api.app import create_app
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


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path, store.url), store)
    with TestClient(app, base_url="http://testserver") as test_client:
        test_client.headers["Content-Type"] = FHIR
        yield test_client


@dataclass
class LiveServer:
    url: str
    store: Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def live_server(store: Store, tmp_path: Path) -> Iterator[LiveServer]:
    """The app served by uvicorn on a loopback port in a background thread."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(tmp_path, store.url, base_url=f"{base}/fhir"), store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield LiveServer(base, store)
    server.should_exit = True
    thread.join(timeout=10)


def fhir_client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Content-Type": FHIR, "Accept": FHIR},
                        timeout=60)
