"""State shared by the fake Azure's services: stores, lock, clock, subscriptions."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from shared.domain.timeline import Clock, SystemClock

from .records import (
    DEFAULT_TENANT_ID,
    ArcMachine,
    AsyncOperation,
    ConfigurationAssignment,
    Heartbeat,
    MaintenanceConfiguration,
    MaintenanceRun,
    ModelSettings,
    PatchResult,
    Snapshot,
    Subscription,
    VirtualMachine,
)


class ModelState:
    """The stores every service of the fake shares, one re-entrant lock, the clock, and the
    subscriptions and resource groups every ARM resource lives in."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        settings: ModelSettings | None = None,
        tenant_id: str = DEFAULT_TENANT_ID,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.settings = settings or ModelSettings()
        self.tenant_id = tenant_id
        self._lock = threading.RLock()
        self._subscriptions: dict[str, Subscription] = {}
        self._vms: dict[str, VirtualMachine] = {}
        self._arc: dict[str, ArcMachine] = {}
        self._configurations: dict[str, MaintenanceConfiguration] = {}
        self._assignments: dict[str, ConfigurationAssignment] = {}
        self._runs: dict[str, MaintenanceRun] = {}
        self._patch_results: dict[str, list[PatchResult]] = {}
        self._heartbeats: list[Heartbeat] = []
        self._snapshots: dict[str, Snapshot] = {}
        self._operations: dict[str, AsyncOperation] = {}
        # Transitions due, as a heap of (completes_at, sequence, vm key): settling pops only what is
        # due, so 3,000 VMs starting at once cost O(log n) a request, not O(n).
        self._due: list[tuple[dt.datetime, int, str]] = []
        self._due_sequence = 0
        self._disk_owners: dict[str, str] = {}
        self._resource_groups: set[tuple[str, str]] = set()
        self._workspaces: set[str] = set()
        # Resource Graph's `resources` rows are rebuilt only after a change (3,000 VMs per query
        # otherwise); the version counts changes.
        self._version = 0
        self._resources_cache: tuple[int, list[dict[str, Any]]] | None = None

    # -- helpers -------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        """The model's current time."""
        return self.clock.now()

    def _changed(self) -> None:
        self._version += 1

    def _register_group(self, subscription_id: str, resource_group: str) -> None:
        self.add_subscription(subscription_id)
        self._resource_groups.add((subscription_id.lower(), resource_group.lower()))

    # -- subscriptions and groups --------------------------------------------------------------
    def add_subscription(
        self, subscription_id: str, display_name: str | None = None
    ) -> Subscription:
        """Register a subscription (idempotent)."""
        with self._lock:
            existing = self._subscriptions.get(subscription_id.lower())
            if existing is not None:
                if display_name:
                    existing.display_name = display_name
                return existing
            subscription = Subscription(
                subscription_id, display_name or f"sandbox-{subscription_id[:8]}"
            )
            self._subscriptions[subscription_id.lower()] = subscription
            return subscription

    def has_subscription(self, subscription_id: str) -> bool:
        """True when the subscription exists."""
        with self._lock:
            return subscription_id.lower() in self._subscriptions

    def has_resource_group(self, subscription_id: str, resource_group: str) -> bool:
        """True when some resource was created in that group."""
        with self._lock:
            return (subscription_id.lower(), resource_group.lower()) in self._resource_groups

    @property
    def subscriptions(self) -> list[Subscription]:
        """All subscriptions."""
        with self._lock:
            return list(self._subscriptions.values())

    def _record(self, **values: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": "",
            "name": "",
            "type": "",
            "tenantId": self.tenant_id,
            "kind": "",
            "location": "",
            "resourceGroup": "",
            "subscriptionId": "",
            "managedBy": "",
            "sku": None,
            "plan": None,
            "properties": {},
            "tags": {},
            "identity": None,
            "zones": None,
            "extendedLocation": None,
        }
        record.update(values)
        return record
