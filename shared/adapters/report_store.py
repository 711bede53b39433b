"""Run reports as JSON blobs in the app's storage account (azure-storage-blob).

One blob per run: `<subscription>/<resource group>/<configuration>/<run name>.json`, lower case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from shared.adapters.created_once import CreatedOnce
from shared.config import StorageConnection
from shared.domain.errors import StorageUnavailable
from shared.domain.ids import RunId

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.adapters.http_transport import EndpointTransports

# The storage SDK's own retry policy (ExponentialRetry) waits 15 s, then 18 s by default; here
# two retries 1.5 s and 2.25 s apart (0 + 1.5^n, n from 1) and 3 s to connect, so a worker
# fails fast and its queue message is retried. An upload may take longer to answer.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "initial_backoff": 0,
    "increment_base": 1.5,
    "random_jitter_range": 0.5,
    "connection_timeout": 3,
    "read_timeout": 30,
}


def report_blob_name(run_id: RunId) -> str:
    """Where a run's report lives in the container."""
    c = run_id.configuration
    return f"{c.subscription_id}/{c.resource_group}/{c.name}/{run_id.run_name}.json".lower()


def build_container_client(
    storage: StorageConnection,
    container: str,
    credential: TokenCredential | None = None,
    transports: EndpointTransports | None = None,
) -> ContainerClient:
    """A client for the report container, on the process's pooled transport for the blob
    endpoint when `transports` is given."""
    options = (
        dict(CLIENT_OPTIONS)
        if transports is None
        else transports.storage_options("blob", CLIENT_OPTIONS)
    )
    if storage.connection_string:
        service = BlobServiceClient.from_connection_string(storage.connection_string, **options)
    elif storage.blob_endpoint is not None and credential is not None:
        service = BlobServiceClient(storage.blob_endpoint, credential=credential, **options)
    else:
        raise ValueError("an identity-based connection needs a blob endpoint and a credential")
    return service.get_container_client(container)


class BlobReportStore:
    """ReportStore on a blob container, created on first use."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container
        self._created = CreatedOnce(self._container.create_container)

    def save_report(self, run_id: RunId, report: Mapping[str, Any]) -> str:
        """Write (or overwrite) the run's report; returns its URL."""
        blob = self._container.get_blob_client(report_blob_name(run_id))
        try:
            self._created.ensure()
            blob.upload_blob(
                json.dumps(report, indent=2, default=str).encode(),
                overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
            )
        except AzureError as e:
            raise StorageUnavailable(f"could not save the report of {run_id.text}: {e}") from e
        return str(blob.url)

    def get_report(self, run_id: RunId) -> Mapping[str, Any] | None:
        """The stored report, or None."""
        blob = self._container.get_blob_client(report_blob_name(run_id))
        try:
            document: Mapping[str, Any] = json.loads(blob.download_blob().readall())
        except ResourceNotFoundError:
            return None
        except AzureError as e:
            raise StorageUnavailable(f"could not read the report of {run_id.text}: {e}") from e
        return document
