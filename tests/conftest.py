"""Shared fixtures: Azurite (started once per session unless `make test` already runs one),
a fresh ledger table per test, a fixed clock, and event builders."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from sandbox.azurite import ENV_CONNECTION_STRING, running_azurite
from tests.builders import FixedClock
from tests.fake_azure import credential, fake, start_fake

__all__ = ["credential", "fake", "start_fake"]  # fixtures shared by every test folder


@pytest.fixture(scope="session")
def azurite_connection_string() -> Iterator[str]:
    """Connection string of a running Azurite (the one `make test` started, or our own)."""
    existing = os.environ.get(ENV_CONNECTION_STRING)
    if existing:
        yield existing
        return
    with running_azurite() as endpoints:
        yield endpoints.connection_string


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return "t" + uuid.uuid4().hex[:20]


@pytest.fixture
def clock() -> FixedClock:
    """A clock the test moves by hand."""
    return FixedClock()
