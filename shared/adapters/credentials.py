"""Credentials (azure-identity), built on first use, one per process and identity."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from shared.config import StorageConnection

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


@functools.cache
def _managed_identity(client_id: str | None) -> TokenCredential:
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id)


def storage_credential(storage: StorageConnection) -> TokenCredential:
    """The managed identity of an identity-based storage connection."""
    return _managed_identity(storage.managed_identity_client_id)
