"""Credentials (azure-identity). The composition root (shared/bootstrap.py) builds each once
per process, on first use.

In Azure (the platform sets IDENTITY_ENDPOINT for the app's managed identity) the app uses
ManagedIdentityCredential with the configured client id. Outside Azure it uses
DefaultAzureCredential with the managed-identity probe turned off, so no credential ever calls
the instance metadata endpoint from a developer machine.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from shared.config import StorageConnection

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential

# Set by App Service / Functions when a managed identity is enabled (also by the local sandbox,
# which serves the same protocol).
PLATFORM_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def running_with_platform_identity() -> bool:
    """True where the hosting platform offers a managed identity endpoint."""
    return any(os.environ.get(name) for name in PLATFORM_IDENTITY_VARIABLES)


class OneRequestAtATime:
    """A credential whose token requests for the same scopes wait for each other.

    azure-core caches a token per SDK client, so a cold instance whose start task fans out on
    dozens of threads asked the identity endpoint for the same token dozens of times at once
    (and overflowed the identity client's connection pool). Here the first request fetches;
    the ones that waited get the token from the identity library's own cache.
    """

    def __init__(self, inner: TokenCredential) -> None:
        self._inner = inner
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The inner credential's token, one request per scope set at a time."""
        with self._guard:
            lock = self._locks.setdefault(tuple(sorted(scopes)), threading.Lock())
        with lock:
            return self._inner.get_token(*scopes, **kwargs)


def _managed_identity(client_id: str | None) -> TokenCredential:
    from azure.identity import ManagedIdentityCredential

    return OneRequestAtATime(ManagedIdentityCredential(client_id=client_id))


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
