"""Hybrid compute: Azure Arc machines."""

from __future__ import annotations

from collections.abc import Mapping

from .model_state import ModelState
from .records import ArcMachine, key


class HybridComputeModel(ModelState):
    """Hybrid compute: Azure Arc machines."""

    # -- Arc machines --------------------------------------------------------------------------
    def add_arc_machine(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        status: str = "Connected",
        tags: Mapping[str, str] | None = None,
        os_type: str = "linux",
    ) -> ArcMachine:
        """Create an Arc-enabled server."""
        with self._lock:
            machine = ArcMachine(
                subscription_id, resource_group, name, location, status, dict(tags or {}), os_type
            )
            if status.lower() == "connected":
                machine.connected_since = self.now()
            self._register_group(subscription_id, resource_group)
            self._arc[key(machine.id)] = machine
            self._changed()
            return machine

    def set_arc_status(self, machine_id: str, status: str) -> None:
        """Set Connected / Disconnected / Expired."""
        with self._lock:
            machine = self._arc[key(machine_id)]
            if status.lower() != "connected":
                machine.connected_since = None
            elif machine.connected_since is None:
                machine.connected_since = self.now()
            machine.status = status
            self._changed()

    @property
    def arc_machines(self) -> list[ArcMachine]:
        """All Arc machines."""
        with self._lock:
            return list(self._arc.values())
