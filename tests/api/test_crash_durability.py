"""kill -9 of the server during a stream of writes loses no acknowledged write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from chartkeeper.settings import Settings
from chartkeeper.store import Store
from tests.api.conftest import auth_header, free_port, issue_token, make_security


def start_server(database_url: str, home: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CHARTKEEPER_DATABASE_URL=database_url, CHARTKEEPER_HOME=str(home),
               CHARTKEEPER_BASE_URL=f"http://127.0.0.1:{port}/fhir")
    process = subprocess.Popen(
        [sys.executable, "-m", "chartkeeper.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def test_kill_9_keeps_every_acknowledged_write(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.create_schema()
    port = free_port()
    security = make_security(Settings(home=tmp_path / "home", database_url=database_url,
                                      base_url=f"http://127.0.0.1:{port}/fhir"), store)
    token = issue_token(security)
    security.close()
    store.dispose()
    process = start_server(database_url, tmp_path / "home", port)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          headers={"Content-Type": "application/fhir+json",
                                   **auth_header(token)}) as http:
            i = 0
            while not stop.is_set():
                i += 1
                body = {"resourceType": "Patient", "name": [{"text": f"crash {n}-{i}"}]}
                try:
                    response = http.post("/fhir/Patient", json=body)
                except httpx.HTTPError:
                    return
                if response.status_code == 201:
                    with lock:
                        acknowledged.append(response.json()["id"])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    assert len(acknowledged) > 20, "too few writes were acknowledged to test anything"

    if database_url.startswith("sqlite"):
        engine = create_engine(database_url)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert conn.execute(text("PRAGMA foreign_key_check")).first() is None
        engine.dispose()
    store = Store(database_url)
    with store.read() as txn:
        for rid in acknowledged:
            assert txn.read("Patient", rid)["id"] == rid
    counts = store.row_counts()
    # Each stored Patient has its one version, and nothing half-written is left behind.
    assert counts["resource"] == counts["resource_version"] >= len(acknowledged)
    store.dispose()
