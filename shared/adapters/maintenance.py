"""Azure Maintenance (azure-mgmt-maintenance 2.2.0b4): cancel a run, read a run.

2.1.0, the latest stable release, has no cancel; 2.2.0b4's apply_updates.create_or_update_or_cancel
sends exactly the documented PUT {CorrelationId}?api-version=... {"properties":{"status":"Cancel"}}.
The api-version is a setting (MAINTENANCE_API_VERSION), passed to the client.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.maintenance import MaintenanceManagementClient
from azure.mgmt.maintenance.models import ApplyUpdate, ApplyUpdateProperties

from shared.adapters.arm_clients import PerSubscription
from shared.adapters.azure_errors import translated
from shared.domain.errors import CancelRefused
from shared.domain.ids import RunId
from shared.domain.platform import RunState

PROVIDER = "Microsoft.Maintenance"
PARENT_TYPE = "maintenanceConfigurations"


class MaintenanceRuns:
    """Cancel and read runs; one client per subscription, one transport."""

    def __init__(self, clients: PerSubscription[MaintenanceManagementClient]) -> None:
        self._clients = clients

    @classmethod
    def build(
        cls, credential: TokenCredential, arm_endpoint: str, api_version: str, **client_options: Any
    ) -> MaintenanceRuns:
        """Clients on `arm_endpoint` speaking `api_version`."""
        return cls(
            PerSubscription(
                lambda **kw: MaintenanceManagementClient(
                    credential,
                    base_url=arm_endpoint,
                    api_version=api_version,
                    credential_scopes=[f"{arm_endpoint}/.default"],
                    **kw,
                ),
                **client_options,
            )
        )

    def cancel_run(self, run: RunId | str) -> RunState:
        """Ask the platform to cancel this run only. A 4xx raises CancelRefused with the
        service's code and message; any 2xx is accepted, with the status word it returns."""
        run_id = _run(run)
        configuration = run_id.configuration
        client = self._clients.for_subscription(configuration.subscription_id)
        with translated("Maintenance", CancelRefused):
            answer = client.apply_updates.create_or_update_or_cancel(
                configuration.resource_group,
                PROVIDER,
                PARENT_TYPE,
                configuration.name,
                run_id.run_name,
                ApplyUpdate(properties=ApplyUpdateProperties(status="Cancel")),
            )
        return RunState(run_id=run_id, status=_status(answer))

    def get_run(self, run: RunId | str) -> RunState:
        """The run's status as the maintenance service reports it."""
        run_id = _run(run)
        configuration = run_id.configuration
        client = self._clients.for_subscription(configuration.subscription_id)
        with translated("Maintenance"):
            answer = client.apply_updates.get(
                configuration.resource_group,
                PROVIDER,
                PARENT_TYPE,
                configuration.name,
                run_id.run_name,
            )
        return RunState(run_id=run_id, status=_status(answer))


def _run(run: RunId | str) -> RunId:
    return run if isinstance(run, RunId) else RunId.parse(run)


def _status(answer: Any) -> str | None:
    if answer is None:
        return None
    status = getattr(answer, "status", None)
    if status is None:
        return None
    # The SDK gives an UpdateStatus enum for known words and a plain string otherwise.
    return str(getattr(status, "value", status))
