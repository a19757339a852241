"""Helpers the workbench tests share: pick patients from the store, misspell names, sign in."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from chartkeeper.store import Store
from tests.web.conftest import Account


def misspell(name: str) -> str:
    """The name with two inner letters swapped (a typing slip), or one doubled if short."""
    if len(name) >= 5:
        return name[:2] + name[3] + name[2] + name[4:]
    return name + name[-1]


def patient_with_lab_trend(store: Store) -> tuple[dict[str, Any], str]:
    """A patient with at least two numeric results of one laboratory test, and that test."""
    with store.read() as txn:
        observations = txn.search_params("Observation", [
            ("category", "laboratory"), ("_count", "1000")]).matches
    counts = Counter((o["subject"]["reference"], o["code"]["coding"][0]["code"])
                     for o in observations if "valueQuantity" in o)
    (subject, code), number = counts.most_common(1)[0]
    assert number >= 2, "the synthetic hospital has no repeated laboratory test"
    with store.read() as txn:
        patient = txn.read("Patient", subject.split("/")[1])
    return patient, code


def sign_in_http(url: str, account: Account) -> httpx.Client:
    """An HTTP client signed in through the sign-in form (with its CSRF token)."""
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    form = client.get("/sign-in")
    token = csrf_of(form.text)
    fields = {"csrf_token": token, "username": account.username, "password": account.password,
              "next": "/home"}
    if account.totp_secret:
        fields["totp"] = account.code()
    answer = client.post("/sign-in", data=fields)
    assert answer.status_code == 303, answer.text[:500]
    return client


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]
