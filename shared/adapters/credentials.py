"""Credentials (azure-identity). The composition root (shared/bootstrap.py) builds each once
per process, on first use.

In Azure (the platform sets IDENTITY_ENDPOINT for the app's managed identity) the app uses
ManagedIdentityCredential with the configured client id. Outside Azure it uses
DefaultAzureCredential with the managed-identity probe turned off, so no credential ever calls
the instance metadata endpoint from a developer machine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from shared.config import StorageConnection

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# Set by App Service / Functions when a managed identity is enabled (also by the local sandbox,
# which serves the same protocol).
PLATFORM_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def running_with_platform_identity() -> bool:
    """True where the hosting platform offers a managed identity endpoint."""
    return any(os.environ.get(name) for name in PLATFORM_IDENTITY_VARIABLES)


def _managed_identity(client_id: str | None) -> TokenCredential:
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id)


def _developer(authority_host: str) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        authority=authority_host,
        exclude_managed_identity_credential=True,
        exclude_workload_identity_credential=True,
    )


def azure_credential(client_id: str | None, authority_host: str) -> TokenCredential:
    """The credential for ARM, Resource Graph and Log Analytics."""
    if running_with_platform_identity():
        return _managed_identity(client_id)
    return _developer(authority_host)


def storage_credential(storage: StorageConnection) -> TokenCredential:
    """The managed identity of an identity-based storage connection."""
    return _managed_identity(storage.managed_identity_client_id)
