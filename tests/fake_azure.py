"""Fixtures around the sandbox fake Azure, shared by tests/sandbox, tests/adapters and the
scenario tests: a running fake, the environment that points azure-identity and requests at it,
a managed-identity credential, and fast SDK retry options."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential

from sandbox.fake_azure import FakeAzure

SUBSCRIPTION = "1b7a0c4e-5d2f-4e8a-9c31-0a6f2b7d9e10"
OTHER_SUBSCRIPTION = "c0de5a1e-7b3c-4d9f-8e2a-6f1b0c9d8e27"
CLIENT_ID = "5f3c1a2b-9d8e-4f70-a1b2-c3d4e5f60718"
WORKSPACE_ID = "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
# SDK clients retry fast against the fake; Retry-After headers still win over these.
FAST_RETRIES: dict[str, Any] = {
    "retry_total": 4,
    "retry_status": 3,
    "retry_backoff_factor": 0.01,
    "retry_backoff_max": 0.05,
}

SMALL_SCENARIO: dict[str, Any] = {
    "name": "tests",
    "settings": {"power_transition_seconds": 0.3, "snapshot_seconds": 0.1},
    "identities": [{"client_id": CLIENT_ID}],
    "workspaces": [WORKSPACE_ID],
    "subscriptions": [
        {"id": SUBSCRIPTION, "name": "prod"},
        {"id": OTHER_SUBSCRIPTION, "name": "dev"},
    ],
    "vms": [
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-web",
            "name": "web-01",
            "power_state": "running",
            "tags": {"always-on": "true", "patch-group": "weekly"},
        },
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-batch",
            "name": "batch-01",
            "power_state": "deallocated",
            "tags": {"patch-group": "weekly"},
        },
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-batch",
            "name": "batch-02",
            "power_state": "stopped",
            "tags": {"patch-group": "weekly"},
        },
        {
            "subscription": OTHER_SUBSCRIPTION,
            "resource_group": "rg-dev",
            "name": "dev-01",
            "power_state": "deallocated",
            "location": "northeurope",
            "tags": {"patch-group": "weekly"},
        },
    ],
    "arc_machines": [
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-onprem",
            "name": "onprem-01",
            "tags": {"patch-group": "weekly"},
        }
    ],
    "maintenance_configurations": [
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-maintenance",
            "name": "weekly",
            "assign": {"tag": {"patch-group": "weekly"}},
        }
    ],
    "runs": [{"key": "weekly", "configuration": "weekly", "start_in_minutes": 32}],
    "heartbeats": [{"machines": "running", "minutes_ago": 2}],
}


def vm_id(subscription: str, resource_group: str, name: str) -> str:
    """ARM id of a VM."""
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def small_scenario() -> dict[str, Any]:
    """A fresh copy of the small scenario, safe to edit in a test."""
    return copy.deepcopy(SMALL_SCENARIO)


@pytest.fixture
def start_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeAzure]]:
    """Start a fake Azure (stopped after the test) and point the process environment at it."""
    started: list[FakeAzure] = []

    def start(scenario: Any = None, **options: Any) -> FakeAzure:
        fake = FakeAzure.start(small_scenario() if scenario is None else scenario, **options)
        started.append(fake)
        for name, value in fake.environment().items():
            monkeypatch.setenv(name, value)
        # Loopback only: never let a proxy setting send the SDKs' traffic elsewhere.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
        for name in (
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
            "MSI_ENDPOINT",
            "MSI_SECRET",
            "IMDS_ENDPOINT",
            "IDENTITY_SERVER_THUMBPRINT",
            "HTTPS_PROXY",
            "https_proxy",
        ):
            monkeypatch.delenv(name, raising=False)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def fake(start_fake: Callable[..., FakeAzure]) -> FakeAzure:
    """The small scenario, served."""
    return start_fake()


@pytest.fixture
def credential(fake: FakeAzure) -> Iterator[ManagedIdentityCredential]:
    """The real azure-identity managed-identity credential, talking to the fake's MI endpoint."""
    with ManagedIdentityCredential(client_id=CLIENT_ID) as managed_identity:
        yield managed_identity
