"""Shared fixtures: Azurite (started once per session and test worker unless one is given),
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
    """Connection string of a running Azurite: with parallel workers (pytest-xdist), each
    worker's own, so no queue is shared between workers (the app's queue names are fixed);
    otherwise the one `sandbox.azurite --` started, or our own."""
    existing = os.environ.get(ENV_CONNECTION_STRING)
    if existing and not os.environ.get("PYTEST_XDIST_WORKER"):
        yield existing
        return
    # In memory: the on-disk store rewrites its whole file as a session's tables grow.
    with running_azurite(in_memory=True) as endpoints:
        yield endpoints.connection_string


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return "t" + uuid.uuid4().hex[:20]


@pytest.fixture
def clock() -> FixedClock:
    """A clock the test moves by hand."""
    return FixedClock()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: depends on real wall-clock timings (a host killed at a moment the fan-out sets, "
        "a token bucket's refill); `make test` runs these in a process of their own after the "
        "parallel run, so the other tests' CPU does not shift them",
    )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For parallel runs (`pytest -n N --dist loadgroup`): the tests of a module that share a
    module-scoped fixture (one stack for the module) run together on one worker, in their
    order; every other test may run on any worker. The end-to-end modules go first, so the
    long ones do not start last."""
    for item in items:
        if _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=lambda item: not item.nodeid.startswith("tests/e2e/"))  # stable sort


def _uses_module_fixture(item: pytest.Item) -> bool:
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return False
    return any(
        definition.scope in ("module", "class", "package")
        for definitions in fixture_info.name2fixturedefs.values()
        for definition in definitions
    )
