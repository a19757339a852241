"""Shared fixtures of the security tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from chartkeeper.security.audit import create_audit_schema
from chartkeeper.security.identity import create_identity_schema
from chartkeeper.store.engine import make_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_identity_schema(engine)
    create_audit_schema(engine)
    yield engine
    engine.dispose()
