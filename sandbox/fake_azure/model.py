"""The fake Azure's state: subscriptions, machines, maintenance runs, patch results, heartbeats.

One :class:`AzureModel` holds everything behind one re-entrant lock; the HTTP handlers and the
tests both go through its methods. Time-driven changes (a VM that finishes starting, a run that
begins, a record that becomes visible in Resource Graph) are settled lazily against the model's
clock whenever state is read, so there are no timer threads and a :class:`ManualClock` makes
tests deterministic.

The model is one facade over one module per Azure service (compute_model, hybrid_compute_model,
maintenance_model, log_analytics_model, resource_graph_model), all sharing model_state's stores;
records and settings live in records.py and are re-exported here so callers import one module.
"""

from __future__ import annotations

from shared.domain.timeline import Clock, SystemClock

from .log_analytics_model import LogAnalyticsModel
from .records import (
    EVENT_SUBSCRIPTION_IDS,
    HEARTBEAT_COLUMNS,
    MACHINE_STATUS_FIELD_VARIANTS,
    MAINTENANCE_RUN_ID_VARIANTS,
    RUN_NAME_CLOCKS,
    ArcMachine,
    Heartbeat,
    MaintenanceConfiguration,
    MaintenanceRun,
    ManualClock,
    ModelError,
    ModelSettings,
    PatchResult,
    PowerState,
    Snapshot,
    VirtualMachine,
    VmSpec,
    key,
    parse_resource_id,
)
from .resource_graph_model import ResourceGraphModel

__all__ = [
    "EVENT_SUBSCRIPTION_IDS",
    "HEARTBEAT_COLUMNS",
    "MACHINE_STATUS_FIELD_VARIANTS",
    "MAINTENANCE_RUN_ID_VARIANTS",
    "RUN_NAME_CLOCKS",
    "ArcMachine",
    "AzureModel",
    "Clock",
    "Heartbeat",
    "MaintenanceConfiguration",
    "MaintenanceRun",
    "ManualClock",
    "ModelError",
    "ModelSettings",
    "PatchResult",
    "PowerState",
    "Snapshot",
    "SystemClock",
    "VirtualMachine",
    "VmSpec",
    "key",
    "parse_resource_id",
]


class AzureModel(ResourceGraphModel, LogAnalyticsModel):
    """Thread-safe state of the fake Azure, with a public API for tests to read and mutate it."""

    def summary(self) -> dict[str, int]:
        """Counts of everything, for logs and the standalone banner."""
        with self._lock:
            return {
                "subscriptions": len(self._subscriptions),
                "vms": len(self._vms),
                "arc_machines": len(self._arc),
                "configurations": len(self._configurations),
                "runs": len(self._runs),
                "heartbeats": len(self._heartbeats),
            }
