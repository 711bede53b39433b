"""Maintenance: configurations and applyUpdates (run reads and cancels)."""

from __future__ import annotations

from typing import Any

from .faults import CancelPolicy
from .model import MaintenanceRun, parse_resource_id
from .service_base import RG, SUB, Request, Response, Route, ServiceBase, arm_error, route

# Only these api-versions have ApplyUpdates_CreateOrUpdateOrCancel (reference §3).
MAINTENANCE_CANCEL_API_VERSIONS = frozenset(
    ["2023-09-01-preview", "2023-10-01-preview", "2025-10-01-preview", "2025-11-01"]
)
MAINTENANCE_READ_API_VERSIONS = MAINTENANCE_CANCEL_API_VERSIONS | frozenset(
    ["2021-05-01", "2021-09-01-preview", "2022-07-01-preview", "2022-11-01-preview", "2023-04-01"]
)
MC_ID = (
    r"/subscriptions/[^/]+/resourceGroups/[^/]+"
    r"/providers/Microsoft\.Maintenance/maintenanceConfigurations/[^/]+"
)
APPLY_UPDATE = rf"(?P<mcid>{MC_ID})/providers/Microsoft\.Maintenance/applyUpdates/(?P<name>[^/]+)"


class MaintenanceRoutes(ServiceBase):
    """Maintenance: configurations and applyUpdates (run reads and cancels)."""

    def maintenance_routes(self) -> list[Route]:
        """This service's routes."""
        return [
            route(
                "GET",
                rf"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft\.Maintenance/maintenanceConfigurations/(?P<mc>[^/]+)",
                "maintenance.configuration.get",
                self.configuration_get,
            ),
            route("PUT", APPLY_UPDATE, "maintenance.cancel", self.apply_update_put),
            route("GET", APPLY_UPDATE, "maintenance.get", self.apply_update_get),
        ]

    def configuration_get(self, request: Request) -> Response:
        """GET a maintenance configuration."""
        refused = self._check_api_version(
            request, MAINTENANCE_READ_API_VERSIONS, "maintenanceConfigurations"
        )
        if refused:
            return refused
        sub, rg, name = request.params["sub"], request.params["rg"], request.params["mc"]
        configuration = self.model.find_configuration(
            f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Maintenance/maintenanceConfigurations/{name}"
        )
        if configuration is None:
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Maintenance/maintenanceConfigurations/{name}' under "
                f"resource group '{rg}' was not found.",
            )
        return Response(200, self.model.configuration_document(configuration))

    def _find_run(self, request: Request) -> tuple[Any, Response | None]:
        mc_id, name = request.params["mcid"], request.params["name"]
        parts = parse_resource_id(mc_id)
        refused = self._check_scope(parts.subscription_id, parts.resource_group)
        if refused:
            return None, refused
        if self.model.find_configuration(mc_id) is None:
            return None, arm_error(
                404,
                "ResourceNotFound",
                "The Resource "
                f"'Microsoft.Maintenance/maintenanceConfigurations/{parts.name}' under "
                f"resource group '{parts.resource_group}' was not found.",
            )
        run = self.model.find_run(f"{mc_id}/providers/Microsoft.Maintenance/applyUpdates/{name}")
        if run is None:
            # Undocumented in Azure; the fake answers ARM's usual not-found shape.
            return None, arm_error(
                404,
                "NotFound",
                f"Maintenance run '{name}' of configuration '{parts.name}' was not found.",
            )
        return run, None

    def apply_update_get(self, request: Request) -> Response:
        """GET a run (ApplyUpdates_Get on the configuration)."""
        refused = self._check_api_version(request, MAINTENANCE_READ_API_VERSIONS, "applyUpdates")
        if refused:
            return refused
        run, refused = self._find_run(request)
        if refused:
            return refused
        return Response(200, self.model.run_document(run))

    def apply_update_put(self, request: Request) -> Response:
        """PUT ``{"properties": {"status": "Cancel"}}`` on a run (CreateOrUpdateOrCancel)."""
        refused = self._check_api_version(request, MAINTENANCE_CANCEL_API_VERSIONS, "applyUpdates")
        if refused:
            return refused
        body = request.body if isinstance(request.body, dict) else {}
        properties = next((v for k, v in body.items() if k.lower() == "properties"), None)
        status = None
        if isinstance(properties, dict):
            status = next((v for k, v in properties.items() if k.lower() == "status"), None)
        if not isinstance(status, str) or status.lower() != "cancel":
            return arm_error(
                400,
                "BadRequest",
                "The fake Maintenance RP only supports cancelling a scheduled run with "
                '{"properties": {"status": "Cancel"}}.',
            )
        run, refused = self._find_run(request)
        if refused:
            return refused
        policy = self.faults.cancel_policy
        if policy.refuse:
            return arm_error(
                int(policy.refuse.get("status", 409)),
                str(policy.refuse.get("code", "Conflict")),
                str(policy.refuse.get("message", "The maintenance run cannot be cancelled.")),
            )
        now = self.model.now()
        if run.cancelled_at is not None:
            if policy.already_cancelled == "conflict":
                return arm_error(
                    409,
                    "MaintenanceRunAlreadyCancelled",
                    f"Maintenance run '{run.name}' is already cancelled.",
                )
            return Response(200, self.model.run_document(run))
        if run.final_status is not None:
            return arm_error(
                policy.too_late_status,
                "CancellationNotAllowed",
                f"Maintenance run '{run.name}' has already finished with status "
                f"'{run.final_status}'.",
            )
        if policy.enforce_cutoff and now > run.cancellation_cutoff:
            return arm_error(
                policy.too_late_status,
                "CancellationNotAllowed",
                f"Maintenance run '{run.name}' cannot be cancelled after the cancellation cut-off "
                f"{run.cancellation_cutoff.isoformat()} "
                f"(scheduled start {run.scheduled_start.isoformat()}).",
            )
        self.model.cancel_run(run.correlation_id, by="user")
        return self._accepted_cancel(run, policy)

    def _accepted_cancel(self, run: MaintenanceRun, policy: CancelPolicy) -> Response:
        """The answer to an accepted cancel, as the scenario plays it (default: the spec's
        example, 202 with ``name``/``resourceId`` the configuration's name and "Cancel")."""
        if policy.answer_body == "none" or policy.answer_status == 204:
            return Response(policy.answer_status)
        if policy.answer_body == "run":
            document = self.model.run_document(run)
            document["properties"]["status"] = policy.answer_word
            return Response(policy.answer_status, document)
        configuration_name = run.configuration_id.rstrip("/").rsplit("/", 1)[-1]
        return Response(
            policy.answer_status,
            {
                "id": run.correlation_id.lower(),
                "name": configuration_name,
                "type": "Microsoft.Maintenance/applyUpdates",
                "properties": {"status": policy.answer_word, "resourceId": configuration_name},
            },
        )
