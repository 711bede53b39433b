"""Log Analytics: workspaces and the Heartbeat table."""

from __future__ import annotations

import datetime as dt

from .compute_model import ComputeModel
from .hybrid_compute_model import HybridComputeModel
from .query_engine import Table
from .records import HEARTBEAT_COLUMNS, UTC, Heartbeat, ResourceId, parse_resource_id


class LogAnalyticsModel(ComputeModel, HybridComputeModel):
    """Log Analytics: workspaces and the Heartbeat table."""

    # -- Log Analytics -------------------------------------------------------------------------
    def add_workspace(self, workspace_id: str) -> None:
        """Register a workspace id; once any is registered, queries to other ids answer 404."""
        with self._lock:
            self._workspaces.add(workspace_id.lower())

    def has_workspace(self, workspace_id: str) -> bool:
        """True when the workspace is known (or no workspace was registered at all)."""
        with self._lock:
            return not self._workspaces or workspace_id.lower() in self._workspaces

    def add_heartbeat(
        self,
        machine_id: str,
        time_generated: dt.datetime | None = None,
        *,
        computer: str | None = None,
        workspace_id: str | None = None,
    ) -> Heartbeat:
        """Add a Heartbeat row for a machine (time defaults to now)."""
        with self._lock:
            heartbeat = Heartbeat(
                computer=computer or machine_id.rstrip("/").split("/")[-1],
                resource_id=machine_id,
                time_generated=(time_generated or self.now()).astimezone(UTC),
                workspace_id=workspace_id,
            )
            self._heartbeats.append(heartbeat)
            return heartbeat

    def _synthetic_heartbeats(self) -> list[Heartbeat]:
        """Latest heartbeat of each machine running long enough (``auto_heartbeat_seconds``)."""
        interval = self.settings.auto_heartbeat_seconds
        if interval <= 0:
            return []
        self._settle()
        now = self.now()
        step = dt.timedelta(seconds=interval)
        beats: list[Heartbeat] = []
        machines: list[tuple[str, dt.datetime | None, str]] = [
            (vm.id, vm.running_since, vm.os_type) for vm in self._vms.values()
        ]
        machines += [(m.id, m.connected_since, m.os_type) for m in self._arc.values()]
        for machine_id, since, os_type in machines:
            if since is None:
                continue
            intervals = int((now - since) / step)
            if intervals >= 1:
                beats.append(
                    Heartbeat(
                        computer=machine_id.rsplit("/", 1)[-1],
                        resource_id=machine_id,
                        time_generated=since + step * intervals,
                        os_type="Linux" if os_type.lower() == "linux" else "Windows",
                    )
                )
        return beats

    def heartbeat_table(self, workspace_id: str | None = None) -> Table:
        """The ``Heartbeat`` table as Log Analytics exposes it (``_ResourceId`` lower-cased)."""
        with self._lock:
            rows = []
            for hb in [*self._heartbeats, *self._synthetic_heartbeats()]:
                if (
                    workspace_id
                    and hb.workspace_id
                    and hb.workspace_id.lower() != workspace_id.lower()
                ):
                    continue
                try:
                    parts: ResourceId | None = parse_resource_id(hb.resource_id)
                except ValueError:
                    parts = None
                rows.append(
                    {
                        "TenantId": workspace_id or hb.workspace_id or "",
                        "SourceSystem": "OpsManager",
                        "TimeGenerated": hb.time_generated,
                        "SourceComputerId": "",
                        "ComputerIP": "10.0.0.4",
                        "Computer": hb.computer,
                        "Category": hb.category,
                        "OSType": hb.os_type,
                        "OSName": "",
                        "Version": "1.0",
                        "SubscriptionId": parts.subscription_id if parts else "",
                        "ResourceGroup": parts.resource_group if parts else "",
                        "ResourceProvider": parts.provider if parts else "",
                        "Resource": parts.name if parts else hb.computer,
                        "ResourceId": hb.resource_id,
                        "ResourceType": parts.resource_type if parts else "",
                        "ComputerEnvironment": "Azure",
                        "Type": "Heartbeat",
                        "_ResourceId": hb.resource_id.lower(),
                    }
                )
            return Table("Heartbeat", HEARTBEAT_COLUMNS, rows)
