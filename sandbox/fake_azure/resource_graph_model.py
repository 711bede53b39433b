"""Resource Graph: the resources, maintenanceresources and patchinstallationresources tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .maintenance_model import MaintenanceModel, configuration_properties
from .query_engine import Table
from .records import (
    ARG_COLUMNS,
    ConfigurationAssignment,
    MaintenanceRun,
    PatchResult,
    iso_time,
    key,
    parse_resource_id,
)


class ResourceGraphModel(MaintenanceModel):
    """Resource Graph: the resources, maintenanceresources and patchinstallationresources tables."""

    # -- Resource Graph ------------------------------------------------------------------------
    def arg_table(self, name: str, subscription_ids: Sequence[str] | None = None) -> Table | None:
        """A Resource Graph table's rows visible now, limited to ``subscription_ids`` when given."""
        lowered = name.lower()
        with self._lock:
            self._settle()
            now = self.now()
            if lowered == "resources":
                rows = self._resources_rows()
            elif lowered == "maintenanceresources":
                rows = self._maintenance_rows(now)
            elif lowered == "patchinstallationresources":
                rows = self._patch_rows(now)
            else:
                return None
        if subscription_ids:
            allowed = {s.lower() for s in subscription_ids}
            rows = [r for r in rows if str(r["subscriptionId"]).lower() in allowed]
        return Table(lowered, ARG_COLUMNS, rows)

    def _resources_rows(self) -> list[dict[str, Any]]:
        if self._resources_cache is not None and self._resources_cache[0] == self._version:
            return self._resources_cache[1]
        rows: list[dict[str, Any]] = []
        for vm in self._vms.values():
            rows.append(self._vm_record(vm))
        for machine in self._arc.values():
            rows.append(
                self._record(
                    id=machine.id,
                    name=machine.name,
                    type="microsoft.hybridcompute/machines",
                    kind="",
                    location=machine.location,
                    resourceGroup=machine.resource_group.lower(),
                    subscriptionId=machine.subscription_id,
                    tags=dict(machine.tags),
                    identity={"type": "SystemAssigned"},
                    properties={
                        "status": machine.status,
                        "osType": machine.os_type,
                        "osName": machine.os_type,
                        "vmUuid": machine.vm_uuid,
                        "provisioningState": "Succeeded",
                        "agentVersion": "1.45.02669.1678",
                        "machineFqdn": f"{machine.name}.contoso.local",
                    },
                )
            )
        for configuration in self._configurations.values():
            rows.append(
                self._record(
                    id=configuration.id,
                    name=configuration.name,
                    type="microsoft.maintenance/maintenanceconfigurations",
                    location=configuration.location,
                    resourceGroup=configuration.resource_group.lower(),
                    subscriptionId=configuration.subscription_id,
                    tags=dict(configuration.tags),
                    properties=configuration_properties(configuration),
                )
            )
        self._resources_cache = (self._version, rows)
        return rows

    def _maintenance_rows(self, now: dt.datetime) -> list[dict[str, Any]]:
        rows = [self._assignment_row(a) for a in self._assignments.values()]
        for run in self._runs.values():
            if now < run.visible_at:
                continue
            status = run.status(now, self.settings.status_before_start)
            rows.append(self._run_row(run, status))
            if now >= run.machine_visible_at:
                rows.extend(self._machine_run_rows(run, status))
        return rows

    def _assignment_row(self, assignment: ConfigurationAssignment) -> dict[str, Any]:
        try:
            resource_group = parse_resource_id(assignment.resource_id).resource_group.lower()
        except ValueError:
            resource_group = ""
        properties: dict[str, Any] = {
            "maintenanceConfigurationId": assignment.configuration_id,
            "resourceId": assignment.resource_id,
        }
        if assignment.filter is not None:
            properties["filter"] = assignment.filter
        return self._record(
            id=assignment.id,
            name=assignment.name,
            type="microsoft.maintenance/configurationassignments",
            location=assignment.location,
            resourceGroup=resource_group,
            subscriptionId=assignment.resource_id.strip("/").split("/")[1],
            properties=properties,
        )

    def _run_row(self, run: MaintenanceRun, status: str) -> dict[str, Any]:
        configuration = self._configurations.get(key(run.configuration_id))
        properties: dict[str, Any] = {
            "correlationId": run.correlation_id,
            "maintenanceConfigurationId": run.configuration_id,
            "resourceId": run.configuration_id,
            "status": status,
            "startDateTime": iso_time(run.scheduled_start),
            "endDateTime": iso_time(run.completed_at or run.cancelled_at or run.scheduled_end),
            "lastUpdateTime": iso_time(run.cancelled_at or run.completed_at or run.created_at),
            "maintenanceScope": "InGuestPatch",
            "resourceSubscriptionIds": list(run.subscription_ids),
        }
        if run.message:
            properties["error"] = {
                "code": "MaintenanceCancelled" if run.cancelled_at else "MaintenanceRunMessage",
                "message": run.message,
            }
        parts = parse_resource_id(run.configuration_id)
        return self._record(
            id=run.correlation_id,
            name=run.name,
            type="microsoft.maintenance/maintenanceconfigurations/applyupdates",
            location=configuration.location if configuration else "",
            resourceGroup=parts.resource_group.lower(),
            subscriptionId=parts.subscription_id,
            properties=properties,
        )

    def _machine_run_rows(self, run: MaintenanceRun, status: str) -> list[dict[str, Any]]:
        results = {
            key(r.machine_id): r for r in self._patch_results.get(key(run.correlation_id), [])
        }
        rows = []
        for machine_id in run.machine_ids:
            parts = parse_resource_id(machine_id)
            machine = self._vms.get(key(machine_id)) or self._arc.get(key(machine_id))
            result = results.get(key(machine_id))
            properties: dict[str, Any] = {
                "correlationId": run.correlation_id,
                "resourceId": machine_id,
                "maintenanceConfigurationId": run.configuration_id,
                "startDateTime": iso_time(run.scheduled_start),
                "endDateTime": iso_time(run.completed_at or run.scheduled_end),
                "lastUpdateTime": iso_time(run.cancelled_at or run.completed_at or run.created_at),
            }
            if self.settings.machine_status_field == "present":
                finished = result is not None and run.cancelled_at is None
                properties["status"] = result.status if finished and result else status
            rows.append(
                self._record(
                    id=f"{machine_id}/providers/microsoft.maintenance/applyupdates/{run.name}",
                    name=run.name,
                    type="microsoft.maintenance/applyupdates",
                    location=machine.location if machine else "",
                    resourceGroup=parts.resource_group.lower(),
                    subscriptionId=parts.subscription_id,
                    properties=properties,
                )
            )
        return rows

    def _patch_rows(self, now: dt.datetime) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for results in self._patch_results.values():
            for result in results:
                if result.visible_at is not None and now < result.visible_at:
                    continue
                parts = parse_resource_id(result.machine_id)
                machine = self._vms.get(key(result.machine_id)) or self._arc.get(
                    key(result.machine_id)
                )
                is_arc = parts.provider.lower() == "microsoft.hybridcompute"
                os_type = machine.os_type if machine else "Linux"
                rows.append(
                    self._record(
                        id=f"{result.machine_id}/patchInstallationResults/{result.result_id}",
                        name=result.result_id,
                        type=(
                            "microsoft.hybridcompute/machines/patchinstallationresults"
                            if is_arc
                            else "microsoft.compute/virtualmachines/patchinstallationresults"
                        ),
                        location=machine.location if machine else "",
                        resourceGroup=parts.resource_group.lower(),
                        subscriptionId=parts.subscription_id,
                        properties={
                            "status": result.status,
                            "startedBy": "Platform",
                            "installedPatchCount": result.installed_patch_count,
                            "failedPatchCount": result.failed_patch_count,
                            "pendingPatchCount": result.pending_patch_count,
                            "excludedPatchCount": result.excluded_patch_count,
                            "notSelectedPatchCount": result.not_selected_patch_count,
                            "rebootStatus": result.reboot_status,
                            "maintenanceWindowExceeded": result.maintenance_window_exceeded,
                            "startDateTime": iso_time(result.start_date_time),
                            "lastModifiedDateTime": iso_time(result.last_modified_date_time),
                            "osType": os_type,
                            "patchServiceUsed": "APT" if os_type.lower() == "linux" else "WU",
                            "errorDetails": result.error,
                        }
                        | self._maintenance_run_id(result),
                    )
                )
        return rows

    def _maintenance_run_id(self, result: PatchResult) -> dict[str, str]:
        """The ``maintenanceRunId`` field in the scenario's variant (nothing when "absent")."""
        variant = self.settings.maintenance_run_id
        if variant == "absent":
            return {}
        if variant == "correlation_id":
            return {"maintenanceRunId": result.correlation_id}
        if variant == "run_name":
            return {"maintenanceRunId": result.correlation_id.rstrip("/").split("/")[-1]}
        # The public sample's shape: a bare UTC timestamp (here, when the machine's patching
        # began), tied to the run by nothing but time.
        return {"maintenanceRunId": iso_time(result.start_date_time) or ""}
