"""The fake Azure's state: subscriptions, machines, maintenance runs, patch results, heartbeats.

One :class:`AzureModel` holds everything behind one re-entrant lock; the HTTP handlers and the
tests both go through its methods. Time-driven changes (a VM that finishes starting, a run that
begins, a record that becomes visible in Resource Graph) are settled lazily against the model's
clock whenever state is read, so there are no timer threads and a :class:`ManualClock` makes
tests deterministic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import threading
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .query_engine import Table, format_datetime

UTC = dt.UTC
DEFAULT_TENANT_ID = "8f0c6a54-5a6e-4d38-9bd2-1a2b3c4d5e6f"

# Column order of Resource Graph's resource-shaped tables; every record carries all of them.
ARG_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "type",
    "tenantId",
    "kind",
    "location",
    "resourceGroup",
    "subscriptionId",
    "managedBy",
    "sku",
    "plan",
    "properties",
    "tags",
    "identity",
    "zones",
    "extendedLocation",
)
HEARTBEAT_COLUMNS: tuple[str, ...] = (
    "TenantId",
    "SourceSystem",
    "TimeGenerated",
    "SourceComputerId",
    "ComputerIP",
    "Computer",
    "Category",
    "OSType",
    "OSName",
    "Version",
    "SubscriptionId",
    "ResourceGroup",
    "ResourceProvider",
    "Resource",
    "ResourceId",
    "ResourceType",
    "ComputerEnvironment",
    "Type",
    "_ResourceId",
)
USER_CANCEL_MESSAGE = "Maintenance cancelled using cancellation API"
PLATFORM_CANCEL_MESSAGE = "Maintenance cancelled due to internal platform failure"
# The platform freezes a run's scope at T−40; what the run record says from then until T is
# undocumented (see README "Variants").
SCOPE_FROZEN_BEFORE_START = dt.timedelta(minutes=40)
# Variants the scenario's settings choose between; the first of each is the default.
MACHINE_STATUS_FIELD_VARIANTS = ("absent", "present")
MAINTENANCE_RUN_ID_VARIANTS = ("timestamp", "correlation_id", "run_name", "absent")
# Run names in UTC (the Event Grid schema example) or in the configuration's time zone.
RUN_NAME_CLOCKS = ("utc", "configuration")
# ResourceSubscriptionIds as the schema example's array, or as the schema table's string.
EVENT_SUBSCRIPTION_IDS = ("array", "string", "comma", "json-string", "empty")
# Maintenance configurations name their time zone the Windows way; the few the sandbox plays.
WINDOWS_TIME_ZONES = {
    "UTC": "UTC",
    "W. Europe Standard Time": "Europe/Berlin",
    "Pacific Standard Time": "America/Los_Angeles",
    "Tokyo Standard Time": "Asia/Tokyo",
    "India Standard Time": "Asia/Kolkata",
    "AUS Eastern Standard Time": "Australia/Sydney",
}
MAINTENANCE_EVENT_TYPES = {
    "pre": "Microsoft.Maintenance.PreMaintenanceEvent",
    "post": "Microsoft.Maintenance.PostMaintenanceEvent",
}


def time_zone_of(name: str) -> dt.tzinfo:
    """A configuration's time zone: a Windows name the sandbox knows, or an IANA name."""
    try:
        return zoneinfo.ZoneInfo(WINDOWS_TIME_ZONES.get(name, name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error


class Clock(Protocol):
    """Source of the current time (aware UTC)."""

    def now(self) -> dt.datetime:
        """Return the current time."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> dt.datetime:
        """Return the current UTC time."""
        return dt.datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; for deterministic tests."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """Return the frozen time."""
        with self._lock:
            return self._now

    def advance(self, delta: dt.timedelta | float) -> dt.datetime:
        """Move time forward by ``delta`` (seconds when a number) and return the new time."""
        step = delta if isinstance(delta, dt.timedelta) else dt.timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when``."""
        with self._lock:
            self._now = when


class PowerState(StrEnum):
    """VM power states as the ``PowerState/<x>`` instance-view codes spell them."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    STOPPING = "stopping"
    DEALLOCATED = "deallocated"
    DEALLOCATING = "deallocating"

    @property
    def display(self) -> str:
        """The instance view's displayStatus, e.g. "VM running"."""
        return f"VM {self.value}"


class ModelError(Exception):
    """A model operation that Azure would refuse; ``status``/``code`` become the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ResourceId:
    """The parts of an ARM resource id the fake needs."""

    subscription_id: str
    resource_group: str
    provider: str
    resource_type: str
    name: str

    @property
    def text(self) -> str:
        """The canonical id text."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{self.provider}/{self.resource_type}/{self.name}"
        )


def parse_resource_id(resource_id: str) -> ResourceId:
    """Split ``/subscriptions/s/resourceGroups/rg/providers/P/T/n`` (segments case-insensitive)."""
    parts = resource_id.strip("/").split("/")
    if (
        len(parts) < 8
        or parts[0].lower() != "subscriptions"
        or parts[2].lower() != "resourcegroups"
        or parts[4].lower() != "providers"
    ):
        raise ValueError(f"not an ARM resource id: {resource_id!r}")
    return ResourceId(parts[1], parts[3], parts[5], parts[6], parts[7])


def key(resource_id: str) -> str:
    """Lookup key of an ARM id: ARM ids compare case-insensitively."""
    return resource_id.strip().rstrip("/").lower()


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else format_datetime(value)


@dataclass
class Subscription:
    """A subscription the fake knows."""

    subscription_id: str
    display_name: str


@dataclass
class PowerTransition:
    """A start/deallocate/powerOff in flight on one VM."""

    operation: str
    target: PowerState
    fallback: PowerState
    completes_at: dt.datetime
    operation_ids: list[str]
    failure: dict[str, str] | None = None


@dataclass
class VirtualMachine:
    """A Microsoft.Compute/virtualMachines resource."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    power_state: PowerState
    tags: dict[str, str] = field(default_factory=dict)
    os_type: str = "Linux"
    size: str = "Standard_D2s_v5"
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time_created: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))
    transition: PowerTransition | None = None
    running_since: dt.datetime | None = None
    # {code, message, time} of the last power operation when it failed: its instance view reads
    # ProvisioningState/failed/<code> until the next operation.
    failure: dict[str, str] | None = None

    @property
    def id(self) -> str:
        """ARM id with the casing ARM returns."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def os_disk_name(self) -> str:
        """Name of the managed OS disk."""
        return f"{self.name}_OsDisk_1_{self.vm_id.replace('-', '')[:32]}"

    @property
    def os_disk_id(self) -> str:
        """ARM id of the managed OS disk (Compute uppercases the resource group in disk ids)."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group.upper()}"
            f"/providers/Microsoft.Compute/disks/{self.os_disk_name}"
        )


@dataclass
class ArcMachine:
    """A Microsoft.HybridCompute/machines resource (Azure Arc server)."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    status: str = "Connected"
    tags: dict[str, str] = field(default_factory=dict)
    os_type: str = "linux"
    vm_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    connected_since: dt.datetime | None = None

    @property
    def id(self) -> str:
        """ARM id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.HybridCompute/machines/{self.name}"
        )


@dataclass
class MaintenanceConfiguration:
    """A Microsoft.Maintenance/maintenanceConfigurations resource (InGuestPatch schedule)."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    start_date_time: str = "2025-01-04 03:00"
    duration: str = "03:55"
    time_zone: str = "UTC"
    recur_every: str = "1Week Saturday"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """ARM id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Maintenance/maintenanceConfigurations/{self.name}"
        )


@dataclass
class ConfigurationAssignment:
    """A static assignment (machine -> configuration) or a dynamic scope (subscription + filter)."""

    name: str
    configuration_id: str
    resource_id: str
    filter: dict[str, Any] | None = None
    location: str = "global"

    @property
    def id(self) -> str:
        """ARM id of the assignment, under the machine or the subscription it targets."""
        return (
            f"{self.resource_id}/providers/Microsoft.Maintenance/configurationAssignments/"
            f"{self.name}"
        )


@dataclass
class PatchResult:
    """One machine's patch installation result in a run (``patchinstallationresources``)."""

    machine_id: str
    correlation_id: str
    status: str = "Succeeded"
    installed_patch_count: int = 3
    failed_patch_count: int = 0
    pending_patch_count: int = 0
    excluded_patch_count: int = 0
    not_selected_patch_count: int = 0
    reboot_status: str = "NotNeeded"
    maintenance_window_exceeded: bool = False
    start_date_time: dt.datetime | None = None
    last_modified_date_time: dt.datetime | None = None
    error: dict[str, Any] | None = None
    result_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    visible_at: dt.datetime | None = None


@dataclass
class MaintenanceRun:
    """One scheduled run of a configuration; ``correlation_id`` is also its ARM id."""

    correlation_id: str
    configuration_id: str
    scheduled_start: dt.datetime
    scheduled_end: dt.datetime
    cancellation_cutoff: dt.datetime
    machine_ids: list[str]
    subscription_ids: list[str]
    created_at: dt.datetime
    visible_at: dt.datetime
    machine_visible_at: dt.datetime
    final_status: str | None = None
    completed_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    cancelled_by: str | None = None
    message: str | None = None

    @property
    def name(self) -> str:
        """The yyyyMMddHHmmss segment."""
        return self.correlation_id.rstrip("/").split("/")[-1]

    def status(self, now: dt.datetime, before_start: str = "Pending") -> str:
        """Status as Resource Graph reports it at ``now``; ``before_start`` from T−40 to T."""
        if self.cancelled_at is not None:
            return "Cancelled"
        if self.final_status is not None:
            return self.final_status
        if now >= self.scheduled_start:
            return "InProgress"
        return (
            before_start if now >= self.scheduled_start - SCOPE_FROZEN_BEFORE_START else "Pending"
        )


@dataclass
class Heartbeat:
    """One Log Analytics ``Heartbeat`` row."""

    computer: str
    resource_id: str
    time_generated: dt.datetime
    workspace_id: str | None = None
    category: str = "Azure Monitor Agent"
    os_type: str = "Linux"


@dataclass
class Snapshot:
    """A Microsoft.Compute/snapshots resource created through the API."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    source_resource_id: str
    incremental: bool
    tags: dict[str, str]
    time_created: dt.datetime
    completes_at: dt.datetime
    operation_id: str

    @property
    def id(self) -> str:
        """ARM id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/snapshots/{self.name}"
        )


@dataclass
class AsyncOperation:
    """A Compute long-running operation, polled through Azure-AsyncOperation / Location."""

    operation_id: str
    subscription_id: str
    location: str
    kind: str
    resource_id: str
    started_at: dt.datetime
    completes_at: dt.datetime
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class OperationStatus:
    """Status of an :class:`AsyncOperation` at some moment."""

    operation: AsyncOperation
    status: str  # InProgress | Succeeded | Failed

    @property
    def done(self) -> bool:
        """True once the operation has ended."""
        return self.status != "InProgress"


@dataclass(frozen=True)
class VmSpec:
    """Input for :meth:`AzureModel.add_vms` (bulk creation for benchmarks)."""

    subscription_id: str
    resource_group: str
    name: str
    location: str = "westeurope"
    power_state: PowerState | str = PowerState.RUNNING
    tags: Mapping[str, str] = field(default_factory=dict)
    os_type: str = "Linux"
    size: str = "Standard_D2s_v5"


@dataclass
class ModelSettings:
    """Timings of simulated Azure behaviour (seconds)."""

    power_transition_seconds: float = 1.0
    # Boot and deallocation times, each a number or a [min, max] range spread over the VMs (a
    # VM's time is fixed by its id, so a run replays). None: ``power_transition_seconds``.
    start_seconds: float | tuple[float, float] | None = None
    deallocate_seconds: float | tuple[float, float] | None = None
    snapshot_seconds: float = 0.5
    arg_lag_seconds: float = 0.0
    # VMs per page of Compute's subscription-wide VM list (statusOnly or not). Undocumented; a
    # user reported pages of 50 (Azure/azure-sdk-for-node#4769), so that is the default.
    vm_list_page_size: float = 50
    cancellation_cutoff_minutes: float = 10.0
    default_run_minutes: float = 235.0
    # When > 0, every running VM and connected Arc machine "sends" a Heartbeat this often, the
    # first one an interval after it started running (the agent has to boot).
    auto_heartbeat_seconds: float = 0.0
    # Undocumented behaviour, played as variants (defaults: the most hostile plausible one).
    # Run-level status from T−40 until T: "InProgress" (default), "Pending", or any word.
    status_before_start: str = "InProgress"
    # Per-machine applyupdates records: "absent" (default: only correlationId and resourceId
    # are documented) or "present" (the run's status, or the machine's patch result).
    machine_status_field: str = MACHINE_STATUS_FIELD_VARIANTS[0]
    # patchinstallationresources' maintenanceRunId: "timestamp" (default: the one public
    # sample), "correlation_id", "run_name" or "absent".
    maintenance_run_id: str = MAINTENANCE_RUN_ID_VARIANTS[0]
    # Undocumented: which clock a run name (yyyyMMddHHmmss) is written in. "utc" (as every
    # published example) or "configuration" (the configuration's own time zone).
    run_name_clock: str = "utc"
    # How events carry ResourceSubscriptionIds: the schema table says a string, its examples an
    # array. "array" (the examples), "string" (one id, or the first), "comma" (ids joined by
    # commas), "json-string" (a JSON array inside a string) or "empty".
    event_subscription_ids: str = "array"

    def __post_init__(self) -> None:
        if self.run_name_clock not in RUN_NAME_CLOCKS:
            raise ValueError(f"run_name_clock must be one of {RUN_NAME_CLOCKS}")
        if self.event_subscription_ids not in EVENT_SUBSCRIPTION_IDS:
            raise ValueError(f"event_subscription_ids must be one of {EVENT_SUBSCRIPTION_IDS}")


class AzureModel:
    """Thread-safe state of the fake Azure, with a public API for tests to read and mutate it."""

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

    # -- virtual machines ----------------------------------------------------------------------
    def add_vm(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        power_state: PowerState | str = PowerState.RUNNING,
        tags: Mapping[str, str] | None = None,
        os_type: str = "Linux",
        size: str = "Standard_D2s_v5",
    ) -> VirtualMachine:
        """Create a VM and return it (read its fields; change it through model methods)."""
        return self.add_vms(
            [
                VmSpec(
                    subscription_id,
                    resource_group,
                    name,
                    location,
                    power_state,
                    tags or {},
                    os_type,
                    size,
                )
            ]
        )[0]

    def add_vms(self, specs: Iterable[VmSpec]) -> list[VirtualMachine]:
        """Create many VMs under one lock acquisition (3,000 in a few milliseconds)."""
        created: list[VirtualMachine] = []
        now = self.now()
        with self._lock:
            for spec in specs:
                vm = VirtualMachine(
                    subscription_id=spec.subscription_id,
                    resource_group=spec.resource_group,
                    name=spec.name,
                    location=spec.location,
                    power_state=PowerState(spec.power_state),
                    tags=dict(spec.tags),
                    os_type=spec.os_type,
                    size=spec.size,
                    time_created=now,
                )
                if vm.power_state == PowerState.RUNNING:
                    vm.running_since = now
                if key(vm.id) in self._vms:
                    raise ValueError(f"VM already exists: {vm.id}")
                self._register_group(spec.subscription_id, spec.resource_group)
                self._vms[key(vm.id)] = vm
                self._disk_owners[key(vm.os_disk_id)] = key(vm.id)
                created.append(vm)
            self._changed()
        return created

    def get_vm(self, vm_id: str) -> VirtualMachine:
        """The VM with that id (case-insensitive); raises KeyError when unknown."""
        with self._lock:
            self._settle()
            return self._vms[key(vm_id)]

    def find_vm(self, vm_id: str) -> VirtualMachine | None:
        """The VM with that id, or None."""
        with self._lock:
            self._settle()
            return self._vms.get(key(vm_id))

    @property
    def vms(self) -> list[VirtualMachine]:
        """All VMs (settled to the current time)."""
        with self._lock:
            self._settle()
            return list(self._vms.values())

    def power_state(self, vm_id: str) -> PowerState:
        """Current power state of a VM."""
        return self.get_vm(vm_id).power_state

    def set_power_state(self, vm_id: str, state: PowerState | str) -> None:
        """Force a power state (drops any transition in flight)."""
        with self._lock:
            vm = self._vms[key(vm_id)]
            self._set_state(vm, PowerState(state), self.now())
            vm.transition = None  # its heap entry is now stale and skipped when popped
            self._changed()

    def set_vm_tags(self, vm_id: str, tags: Mapping[str, str]) -> None:
        """Replace a VM's tags."""
        with self._lock:
            self._vms[key(vm_id)].tags = dict(tags)
            self._changed()

    def remove_vm(self, vm_id: str) -> None:
        """Delete a VM (later GETs answer 404)."""
        with self._lock:
            vm = self._vms.pop(key(vm_id))
            self._disk_owners.pop(key(vm.os_disk_id), None)
            self._changed()

    def begin_power_operation(
        self,
        vm_id: str,
        operation: str,
        *,
        api_location: str | None = None,
        failure: Mapping[str, str] | None = None,
    ) -> AsyncOperation:
        """Start ``start``/``deallocate``/``powerOff`` on a VM and return the async operation.

        The VM moves to the in-between state at once and to the end state after
        ``settings.power_transition_seconds``. With ``failure`` ({code, message}) the operation ends
        Failed and the VM falls back to where it was. A different operation in flight is preempted,
        as ARM does, and ends Failed with OperationPreempted.
        """
        plans = {
            "start": (PowerState.STARTING, PowerState.RUNNING),
            "deallocate": (PowerState.DEALLOCATING, PowerState.DEALLOCATED),
            "powerOff": (PowerState.STOPPING, PowerState.STOPPED),
        }
        if operation not in plans:
            raise ValueError(f"unknown power operation {operation!r}")
        between, target = plans[operation]
        with self._lock:
            self._settle()
            vm = self._vms.get(key(vm_id))
            if vm is None:
                raise KeyError(vm_id)
            now = self.now()
            op = AsyncOperation(
                operation_id=str(uuid.uuid4()),
                subscription_id=vm.subscription_id,
                location=api_location or vm.location,
                kind=operation,
                resource_id=vm.id,
                started_at=now,
                completes_at=now,
            )
            self._operations[op.operation_id] = op
            current = vm.transition
            if current is not None and current.operation == operation and failure is None:
                # Same operation already running: this request rides along and ends with it.
                op.completes_at = current.completes_at
                op.error = current.failure
                current.operation_ids.append(op.operation_id)
                return op
            if current is not None:
                for earlier_id in current.operation_ids:
                    earlier = self._operations[earlier_id]
                    earlier.completes_at = now
                    earlier.error = {
                        "code": "OperationPreempted",
                        "message": "Operation execution has been preempted by a more recent "
                        "operation.",
                    }
                self._set_state(vm, current.fallback, now)
                vm.transition = None
            if vm.power_state == target and failure is None:
                return op  # nothing to do: Azure answers 202 and the operation succeeds at once
            delay = dt.timedelta(seconds=self._transition_seconds(vm.id, operation))
            op.completes_at = now + delay
            op.error = dict(failure) if failure else None
            vm.transition = PowerTransition(
                operation=operation,
                target=target,
                fallback=vm.power_state,
                completes_at=op.completes_at,
                operation_ids=[op.operation_id],
                failure=op.error,
            )
            self._set_state(vm, between, now)
            vm.failure = None
            self._due_sequence += 1
            heapq.heappush(self._due, (op.completes_at, self._due_sequence, key(vm.id)))
            self._changed()
            return op

    def operation_status(self, operation_id: str) -> OperationStatus | None:
        """Status of an async operation now, or None when unknown."""
        with self._lock:
            self._settle()
            op = self._operations.get(operation_id)
            if op is None:
                return None
            if self.now() < op.completes_at:
                return OperationStatus(op, "InProgress")
            return OperationStatus(op, "Failed" if op.error else "Succeeded")

    @property
    def operations(self) -> list[AsyncOperation]:
        """All async operations started so far."""
        with self._lock:
            return list(self._operations.values())

    def _transition_seconds(self, vm_id: str, operation: str) -> float:
        """How long this VM takes to start or deallocate (settings; fixed per VM)."""
        wanted = {"start": self.settings.start_seconds}.get(
            operation, self.settings.deallocate_seconds if operation == "deallocate" else None
        )
        if wanted is None:
            return self.settings.power_transition_seconds
        if isinstance(wanted, int | float):
            return float(wanted)
        low, high = float(wanted[0]), float(wanted[1])
        digest = hashlib.sha256(f"{key(vm_id)}|{operation}".encode()).digest()
        return low + (high - low) * int.from_bytes(digest[:4], "big") / 0xFFFFFFFF

    def _settle(self) -> None:
        """Finish transitions whose time has come (called under the lock)."""
        if not self._due:
            return
        now = self.now()
        settled = False
        while self._due and self._due[0][0] <= now:
            completes_at, _, vm_key = heapq.heappop(self._due)
            vm = self._vms.get(vm_key)
            transition = vm.transition if vm is not None else None
            if vm is None or transition is None or transition.completes_at != completes_at:
                continue  # stale: the VM was removed, forced, or its transition preempted
            end_state = transition.fallback if transition.failure else transition.target
            self._set_state(vm, end_state, completes_at)
            vm.transition = None
            vm.failure = (
                {**transition.failure, "time": _iso(completes_at) or ""}
                if transition.failure
                else None
            )
            settled = True
        if settled:
            self._changed()

    @staticmethod
    def _set_state(vm: VirtualMachine, state: PowerState, when: dt.datetime) -> None:
        if state == PowerState.RUNNING and vm.power_state != PowerState.RUNNING:
            vm.running_since = when
        elif state != PowerState.RUNNING:
            vm.running_since = None
        vm.power_state = state

    # -- snapshots -----------------------------------------------------------------------------
    def create_snapshot(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str,
        source_resource_id: str,
        incremental: bool,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[Snapshot, AsyncOperation]:
        """Create (or replace) a snapshot of a known OS disk; the copy completes after a delay."""
        with self._lock:
            owner_key = self._disk_owners.get(key(source_resource_id))
            disk_owner = self._vms.get(owner_key) if owner_key else None
            if disk_owner is None:
                raise ModelError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{source_resource_id}' was not found "
                    f"(source disk of snapshot '{name}').",
                )
            now = self.now()
            op = AsyncOperation(
                operation_id=str(uuid.uuid4()),
                subscription_id=subscription_id,
                location=location,
                kind="snapshot",
                resource_id="",
                started_at=now,
                completes_at=now + dt.timedelta(seconds=self.settings.snapshot_seconds),
            )
            snapshot = Snapshot(
                subscription_id=subscription_id,
                resource_group=resource_group,
                name=name,
                location=location,
                source_resource_id=disk_owner.os_disk_id,
                incremental=incremental,
                tags=dict(tags or {}),
                time_created=now,
                completes_at=op.completes_at,
                operation_id=op.operation_id,
            )
            op.resource_id = snapshot.id
            self._register_group(subscription_id, resource_group)
            self._snapshots[key(snapshot.id)] = snapshot
            self._operations[op.operation_id] = op
            self._changed()
            return snapshot, op

    def find_snapshot(self, snapshot_id: str) -> Snapshot | None:
        """The snapshot with that id, or None."""
        with self._lock:
            return self._snapshots.get(key(snapshot_id))

    @property
    def snapshots(self) -> list[Snapshot]:
        """All snapshots created through the API."""
        with self._lock:
            return list(self._snapshots.values())

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

    def machine_location(self, machine_id: str) -> tuple[str, str, str] | None:
        """(subscription, resource group, location) of a VM or Arc machine."""
        with self._lock:
            machine: VirtualMachine | ArcMachine | None = self._vms.get(
                key(machine_id)
            ) or self._arc.get(key(machine_id))
            if machine is None:
                return None
            return machine.subscription_id, machine.resource_group, machine.location

    # -- maintenance configurations and assignments --------------------------------------------
    def add_maintenance_configuration(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        start_date_time: str = "2025-01-04 03:00",
        duration: str = "03:55",
        time_zone: str = "UTC",
        recur_every: str = "1Week Saturday",
        tags: Mapping[str, str] | None = None,
    ) -> MaintenanceConfiguration:
        """Create a maintenance configuration (InGuestPatch)."""
        with self._lock:
            configuration = MaintenanceConfiguration(
                subscription_id,
                resource_group,
                name,
                location,
                start_date_time,
                duration,
                time_zone,
                recur_every,
                dict(tags or {}),
            )
            self._register_group(subscription_id, resource_group)
            self._configurations[key(configuration.id)] = configuration
            self._changed()
            return configuration

    def find_configuration(self, configuration_id: str) -> MaintenanceConfiguration | None:
        """The configuration with that id, or None."""
        with self._lock:
            return self._configurations.get(key(configuration_id))

    @property
    def configurations(self) -> list[MaintenanceConfiguration]:
        """All maintenance configurations."""
        with self._lock:
            return list(self._configurations.values())

    def assign_configuration(
        self, configuration_id: str, machine_id: str, *, name: str | None = None
    ) -> ConfigurationAssignment:
        """Statically assign a machine to a configuration."""
        with self._lock:
            if key(configuration_id) not in self._configurations:
                raise KeyError(configuration_id)
            configuration = self._configurations[key(configuration_id)]
            assignment = ConfigurationAssignment(
                name=name or f"{configuration.name}-{machine_id.rstrip('/').split('/')[-1]}",
                configuration_id=configuration.id,
                resource_id=machine_id,
                location=configuration.location,
            )
            self._assignments[key(assignment.id)] = assignment
            self._changed()
            return assignment

    def add_dynamic_scope(
        self,
        configuration_id: str,
        subscription_id: str,
        filter: Mapping[str, Any],
        *,
        name: str | None = None,
    ) -> ConfigurationAssignment:
        """Add a dynamic scope: a subscription-level assignment with a filter."""
        with self._lock:
            configuration = self._configurations[key(configuration_id)]
            assignment = ConfigurationAssignment(
                name=name or f"{configuration.name}-dynamic-{subscription_id[:8]}",
                configuration_id=configuration.id,
                resource_id=f"/subscriptions/{subscription_id}",
                filter=dict(filter),
            )
            self.add_subscription(subscription_id)
            self._assignments[key(assignment.id)] = assignment
            self._changed()
            return assignment

    def assigned_machines(self, configuration_id: str) -> list[str]:
        """Machines statically assigned to a configuration (ids)."""
        with self._lock:
            return [
                a.resource_id
                for a in self._assignments.values()
                if a.filter is None and key(a.configuration_id) == key(configuration_id)
            ]

    # -- runs ----------------------------------------------------------------------------------
    def create_run(
        self,
        configuration_id: str,
        scheduled_start: dt.datetime,
        machine_ids: Sequence[str],
        *,
        duration: dt.timedelta | None = None,
        cancellation_cutoff: dt.datetime | None = None,
        arg_lag: dt.timedelta | float | None = None,
        machines_lag: dt.timedelta | float | None = None,
        correlation_id_style: str = "lower",
        run_name_clock: str | None = None,
    ) -> MaintenanceRun:
        """Create a run of a configuration for ``machine_ids`` starting at ``scheduled_start``.

        ``arg_lag`` delays the run record in Resource Graph, ``machines_lag`` the per-machine
        records (defaults: ``settings.arg_lag_seconds``). ``correlation_id_style`` "lower" writes
        ``microsoft.maintenance/applyupdates`` as the platform's events do; "pascal" writes
        ``Microsoft.Maintenance/applyUpdates``. ``run_name_clock`` overrides the setting of the
        same name: "configuration" names the run in the configuration's time zone.
        """
        with self._lock:
            configuration = self._configurations.get(key(configuration_id))
            if configuration is None:
                raise KeyError(configuration_id)
            start = scheduled_start.astimezone(UTC).replace(microsecond=0)
            segment = (
                "providers/microsoft.maintenance/applyupdates"
                if correlation_id_style == "lower"
                else "providers/Microsoft.Maintenance/applyUpdates"
            )
            clock = run_name_clock or self.settings.run_name_clock
            if clock not in RUN_NAME_CLOCKS:
                raise ValueError(f"run_name_clock must be one of {RUN_NAME_CLOCKS}")
            named_at = start
            if clock == "configuration":
                named_at = start.astimezone(time_zone_of(configuration.time_zone))
            correlation_id = f"{configuration.id}/{segment}/{named_at.strftime('%Y%m%d%H%M%S')}"
            if key(correlation_id) in self._runs:
                raise ValueError(f"run already exists: {correlation_id}")
            now = self.now()
            default_lag = dt.timedelta(seconds=self.settings.arg_lag_seconds)
            run_lag = _as_delta(arg_lag, default_lag)
            machine_lag = _as_delta(machines_lag, run_lag)
            machines = list(machine_ids)
            unknown = [m for m in machines if key(m) not in self._vms and key(m) not in self._arc]
            if unknown:
                raise KeyError(f"unknown machines: {unknown[:3]}")
            subscription_ids: list[str] = []
            for machine_id in machines:
                sub = parse_resource_id(machine_id).subscription_id
                if sub.lower() not in (s.lower() for s in subscription_ids):
                    subscription_ids.append(sub)
            run = MaintenanceRun(
                correlation_id=correlation_id,
                configuration_id=configuration.id,
                scheduled_start=start,
                scheduled_end=start
                + (duration or dt.timedelta(minutes=self.settings.default_run_minutes)),
                cancellation_cutoff=cancellation_cutoff
                or start - dt.timedelta(minutes=self.settings.cancellation_cutoff_minutes),
                machine_ids=machines,
                subscription_ids=subscription_ids,
                created_at=now,
                visible_at=now + run_lag,
                machine_visible_at=now + machine_lag,
            )
            self._runs[key(correlation_id)] = run
            return run

    def find_run(self, correlation_id: str) -> MaintenanceRun | None:
        """The run with that CorrelationId (case-insensitive), or None."""
        with self._lock:
            return self._runs.get(key(correlation_id))

    def maintenance_event(
        self,
        correlation_id: str,
        kind: str,
        *,
        schema: str = "EventGrid",
        key_case: str = "pascal",
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The pre or post event the platform sends for a run, as the scenario plays it.

        ``kind`` is "pre" or "post"; ``schema`` "EventGrid" or "CloudEvents"; ``key_case`` the
        letter case of the ``data`` keys: "pascal" (the English schema page), "camel" (a
        translated page), "lower" or "upper".
        """
        run = self.get_run(correlation_id)
        event_type = MAINTENANCE_EVENT_TYPES[kind]
        data: dict[str, Any] = {
            "CorrelationId": run.correlation_id,
            "MaintenanceConfigurationId": run.configuration_id,
            "StartDateTime": _event_time(run.scheduled_start),
            "EndDateTime": _event_time(run.scheduled_end),
            "ResourceSubscriptionIds": _subscriptions_as(
                run.subscription_ids, self.settings.event_subscription_ids
            ),
        }
        if kind == "pre":
            data["CancellationCutOffDateTime"] = _event_time(run.cancellation_cutoff)
        else:
            data["Status"] = run.final_status or "Succeeded"
        data = {_key_in_case(k, key_case): v for k, v in data.items()}
        sent_at = _event_time(now or self.now())
        subject = run.configuration_id.rsplit("/", 1)[-1]
        if schema == "CloudEvents":
            return {
                "specversion": "1.0",
                "id": run.correlation_id,
                "source": run.configuration_id,
                "subject": subject,
                "type": event_type,
                "time": sent_at,
                "data": data,
            }
        if schema != "EventGrid":
            raise ValueError("schema must be EventGrid or CloudEvents")
        return {
            "id": run.correlation_id,
            "topic": run.configuration_id,
            "subject": subject,
            "eventType": event_type,
            "eventTime": sent_at,
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "data": data,
        }

    def get_run(self, correlation_id: str) -> MaintenanceRun:
        """The run with that CorrelationId; raises KeyError when unknown."""
        run = self.find_run(correlation_id)
        if run is None:
            raise KeyError(correlation_id)
        return run

    @property
    def runs(self) -> list[MaintenanceRun]:
        """All runs."""
        with self._lock:
            return list(self._runs.values())

    def run_status(self, correlation_id: str) -> str:
        """A run's status now."""
        return self.get_run(correlation_id).status(self.now(), self.settings.status_before_start)

    def cancel_run(
        self, correlation_id: str, *, by: str = "user", message: str | None = None
    ) -> MaintenanceRun:
        """Mark a run cancelled (``by`` "user" or "platform"); no window checks here."""
        with self._lock:
            run = self.get_run(correlation_id)
            if run.cancelled_at is None:
                run.cancelled_at = self.now()
                run.cancelled_by = by
                run.message = message or (
                    USER_CANCEL_MESSAGE if by == "user" else PLATFORM_CANCEL_MESSAGE
                )
            return run

    def complete_run(
        self,
        correlation_id: str,
        *,
        status: str = "Succeeded",
        results: Mapping[str, PatchResult | Mapping[str, Any]] | None = None,
        default_result: Mapping[str, Any] | None = None,
        message: str | None = None,
        results_lag: dt.timedelta | float | None = None,
    ) -> MaintenanceRun:
        """End a run with ``status`` and record per-machine patch results.

        ``results`` maps machine id -> PatchResult (or its fields); machines not in it get
        ``default_result`` fields (status Succeeded unless said otherwise).
        """
        with self._lock:
            run = self.get_run(correlation_id)
            now = self.now()
            run.final_status = status
            run.completed_at = now
            if message:
                run.message = message
            lag = _as_delta(results_lag, dt.timedelta(seconds=self.settings.arg_lag_seconds))
            given = {key(k): v for k, v in (results or {}).items()}
            recorded: list[PatchResult] = []
            for machine_id in run.machine_ids:
                provided = given.get(key(machine_id))
                if isinstance(provided, PatchResult):
                    result = provided
                else:
                    fields: dict[str, Any] = dict(default_result or {})
                    fields.update(provided or {})
                    result = PatchResult(
                        machine_id=machine_id, correlation_id=run.correlation_id, **fields
                    )
                result.machine_id = machine_id
                result.correlation_id = run.correlation_id
                result.start_date_time = result.start_date_time or run.scheduled_start
                result.last_modified_date_time = result.last_modified_date_time or now
                result.visible_at = result.visible_at or now + lag
                recorded.append(result)
            self._patch_results[key(run.correlation_id)] = recorded
            return run

    def patch_results(self, correlation_id: str) -> list[PatchResult]:
        """Patch results recorded for a run."""
        with self._lock:
            return list(self._patch_results.get(key(correlation_id), []))

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
                    properties=_configuration_properties(configuration),
                )
            )
        self._resources_cache = (self._version, rows)
        return rows

    def _vm_record(self, vm: VirtualMachine) -> dict[str, Any]:
        return self._record(
            id=vm.id,
            name=vm.name,
            type="microsoft.compute/virtualmachines",
            location=vm.location,
            resourceGroup=vm.resource_group.lower(),
            subscriptionId=vm.subscription_id,
            tags=dict(vm.tags),
            properties={
                "vmId": vm.vm_id,
                "hardwareProfile": {"vmSize": vm.size},
                "storageProfile": {
                    "osDisk": {
                        "osType": vm.os_type,
                        "name": vm.os_disk_name,
                        "createOption": "FromImage",
                        "managedDisk": {"id": vm.os_disk_id, "storageAccountType": "Premium_LRS"},
                    }
                },
                "osProfile": {"computerName": vm.name},
                "provisioningState": "Updating" if vm.transition else "Succeeded",
                "timeCreated": _iso(vm.time_created),
                "extended": {
                    "instanceView": {
                        "computerName": vm.name,
                        "osName": "ubuntu"
                        if vm.os_type.lower() == "linux"
                        else "Windows Server 2022 Datacenter",
                        "powerState": {
                            "code": f"PowerState/{vm.power_state.value}",
                            "displayStatus": vm.power_state.display,
                            "level": "Info",
                        },
                    }
                },
            },
        )

    def _maintenance_rows(self, now: dt.datetime) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for assignment in self._assignments.values():
            try:
                parts: ResourceId | None = parse_resource_id(assignment.resource_id)
            except ValueError:
                parts = None
            subscription = assignment.resource_id.strip("/").split("/")[1]
            properties: dict[str, Any] = {
                "maintenanceConfigurationId": assignment.configuration_id,
                "resourceId": assignment.resource_id,
            }
            if assignment.filter is not None:
                properties["filter"] = assignment.filter
            rows.append(
                self._record(
                    id=assignment.id,
                    name=assignment.name,
                    type="microsoft.maintenance/configurationassignments",
                    location=assignment.location,
                    resourceGroup=parts.resource_group.lower() if parts else "",
                    subscriptionId=subscription,
                    properties=properties,
                )
            )
        for run in self._runs.values():
            if now < run.visible_at:
                continue
            configuration = self._configurations.get(key(run.configuration_id))
            status = run.status(now, self.settings.status_before_start)
            run_properties: dict[str, Any] = {
                "correlationId": run.correlation_id,
                "maintenanceConfigurationId": run.configuration_id,
                "resourceId": run.configuration_id,
                "status": status,
                "startDateTime": _iso(run.scheduled_start),
                "endDateTime": _iso(run.completed_at or run.cancelled_at or run.scheduled_end),
                "lastUpdateTime": _iso(run.cancelled_at or run.completed_at or run.created_at),
                "maintenanceScope": "InGuestPatch",
                "resourceSubscriptionIds": list(run.subscription_ids),
            }
            if run.message:
                run_properties["error"] = {
                    "code": "MaintenanceCancelled" if run.cancelled_at else "MaintenanceRunMessage",
                    "message": run.message,
                }
            config_parts = parse_resource_id(run.configuration_id)
            rows.append(
                self._record(
                    id=run.correlation_id,
                    name=run.name,
                    type="microsoft.maintenance/maintenanceconfigurations/applyupdates",
                    location=configuration.location if configuration else "",
                    resourceGroup=config_parts.resource_group.lower(),
                    subscriptionId=config_parts.subscription_id,
                    properties=run_properties,
                )
            )
            if now < run.machine_visible_at:
                continue
            results = {
                key(r.machine_id): r for r in self._patch_results.get(key(run.correlation_id), [])
            }
            for machine_id in run.machine_ids:
                machine_parts = parse_resource_id(machine_id)
                machine = self._vms.get(key(machine_id)) or self._arc.get(key(machine_id))
                result = results.get(key(machine_id))
                machine_status = status
                if result is not None and run.cancelled_at is None:
                    machine_status = result.status
                machine_properties: dict[str, Any] = {
                    "correlationId": run.correlation_id,
                    "resourceId": machine_id,
                    "maintenanceConfigurationId": run.configuration_id,
                    "startDateTime": _iso(run.scheduled_start),
                    "endDateTime": _iso(run.completed_at or run.scheduled_end),
                    "lastUpdateTime": _iso(run.cancelled_at or run.completed_at or run.created_at),
                }
                if self.settings.machine_status_field == "present":
                    machine_properties["status"] = machine_status
                rows.append(
                    self._record(
                        id=f"{machine_id}/providers/microsoft.maintenance/applyupdates/{run.name}",
                        name=run.name,
                        type="microsoft.maintenance/applyupdates",
                        location=machine.location if machine else "",
                        resourceGroup=machine_parts.resource_group.lower(),
                        subscriptionId=machine_parts.subscription_id,
                        properties=machine_properties,
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
                            "startDateTime": _iso(result.start_date_time),
                            "lastModifiedDateTime": _iso(result.last_modified_date_time),
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
        return {"maintenanceRunId": _iso(result.start_date_time) or ""}

    # -- ARM-shaped documents ------------------------------------------------------------------
    def vm_document(self, vm: VirtualMachine, *, with_instance_view: bool) -> dict[str, Any]:
        """The JSON a Compute GET answers for ``vm``."""
        with self._lock:
            record = self._vm_record(vm)
            properties = dict(record["properties"])
            properties.pop("extended", None)
            document: dict[str, Any] = {
                "name": vm.name,
                "id": vm.id,
                "type": "Microsoft.Compute/virtualMachines",
                "location": vm.location,
                "tags": dict(vm.tags),
                "properties": properties,
            }
            if with_instance_view:
                properties["instanceView"] = self.instance_view_document(vm)
            return document

    def instance_view_document(self, vm: VirtualMachine) -> dict[str, Any]:
        """The JSON of ``.../instanceView``."""
        with self._lock:
            provisioning: dict[str, Any] = (
                {"code": "ProvisioningState/updating", "level": "Info", "displayStatus": "Updating"}
                if vm.transition
                else {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                    "time": _iso(vm.time_created),
                }
            )
            if vm.failure and not vm.transition:
                # How Compute shows a failed operation (e.g. a start that found no capacity).
                provisioning = {
                    "code": f"ProvisioningState/failed/{vm.failure['code']}",
                    "level": "Error",
                    "displayStatus": "Provisioning failed",
                    "message": vm.failure["message"],
                    "time": vm.failure.get("time"),
                }
            return {
                "computerName": vm.name,
                "osName": "ubuntu"
                if vm.os_type.lower() == "linux"
                else "Windows Server 2022 Datacenter",
                "vmAgent": {"vmAgentVersion": "2.10.0.8", "statuses": []},
                "statuses": [
                    provisioning,
                    {
                        "code": f"PowerState/{vm.power_state.value}",
                        "level": "Info",
                        "displayStatus": vm.power_state.display,
                    },
                ],
            }

    def vm_list_page(
        self, subscription_id: str, offset: int, *, status_only: bool
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of Compute's list of a subscription's VMs from `offset` (ordered by id), and
        the next page's offset (None: last page). `status_only` answers `statusOnly=true`:
        each VM's identity and its instance view instead of its model."""
        with self._lock:
            self._settle()
            vms = sorted(
                (
                    vm
                    for vm in self._vms.values()
                    if vm.subscription_id.lower() == subscription_id.lower()
                ),
                key=lambda vm: vm.id.lower(),
            )
            size = max(1, int(self.settings.vm_list_page_size))
            page = vms[offset : offset + size]
            if not status_only:
                documents = [self.vm_document(vm, with_instance_view=False) for vm in page]
            else:
                documents = [
                    {
                        "name": vm.name,
                        "id": vm.id,
                        "type": "Microsoft.Compute/virtualMachines",
                        "location": vm.location,
                        "properties": {
                            "vmId": vm.vm_id,
                            "instanceView": self.instance_view_document(vm),
                        },
                    }
                    for vm in page
                ]
            following = offset + size
            return documents, (following if following < len(vms) else None)

    def configuration_document(self, configuration: MaintenanceConfiguration) -> dict[str, Any]:
        """The JSON a maintenance configuration GET answers."""
        return {
            "id": configuration.id,
            "name": configuration.name,
            "type": "Microsoft.Maintenance/maintenanceConfigurations",
            "location": configuration.location,
            "tags": dict(configuration.tags),
            "properties": _configuration_properties(configuration),
        }

    def snapshot_document(self, snapshot: Snapshot) -> dict[str, Any]:
        """The JSON a snapshot GET/PUT answers."""
        done = self.now() >= snapshot.completes_at
        return {
            "name": snapshot.name,
            "id": snapshot.id,
            "type": "Microsoft.Compute/snapshots",
            "location": snapshot.location,
            "tags": dict(snapshot.tags),
            "sku": {"name": "Standard_ZRS", "tier": "Standard"},
            "properties": {
                "creationData": {
                    "createOption": "Copy",
                    "sourceResourceId": snapshot.source_resource_id,
                },
                "incremental": snapshot.incremental,
                "provisioningState": "Succeeded" if done else "Creating",
                "timeCreated": _iso(snapshot.time_created),
                "diskSizeGB": 30,
                "diskState": "Unattached",
                "completionPercent": 100.0 if done else 0.0,
            },
        }

    def run_document(self, run: MaintenanceRun) -> dict[str, Any]:
        """The JSON the Maintenance RP answers for a run (GET / cancel PUT)."""
        with self._lock:
            status = run.status(self.now(), self.settings.status_before_start)
            # The RP's ApplyUpdate vocabulary: Succeeded runs read as Completed there.
            rp_status = {"Succeeded": "Completed"}.get(status, status)
            return {
                "id": run.correlation_id,
                "name": run.name,
                "type": "Microsoft.Maintenance/applyUpdates",
                "properties": {
                    "status": rp_status,
                    "resourceId": run.configuration_id,
                    "lastUpdateTime": _iso(run.cancelled_at or run.completed_at or run.created_at),
                },
            }

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


def _configuration_properties(configuration: MaintenanceConfiguration) -> dict[str, Any]:
    return {
        "namespace": "Microsoft.Maintenance",
        "maintenanceScope": "InGuestPatch",
        "visibility": "Custom",
        "extensionProperties": {"InGuestPatchMode": "User"},
        "maintenanceWindow": {
            "startDateTime": configuration.start_date_time,
            "duration": configuration.duration,
            "timeZone": configuration.time_zone,
            "recurEvery": configuration.recur_every,
        },
        "installPatches": {"rebootSetting": "IfRequired"},
    }


def _as_delta(value: dt.timedelta | float | None, default: dt.timedelta) -> dt.timedelta:
    if value is None:
        return default
    return value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)


def _event_time(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subscriptions_as(subscription_ids: Sequence[str], style: str) -> Any:
    if style == "array":
        return list(subscription_ids)
    if style == "string":
        return subscription_ids[0] if subscription_ids else ""
    if style == "comma":
        return ",".join(subscription_ids)
    if style == "json-string":
        return json.dumps(list(subscription_ids))
    if style == "empty":
        return []
    raise ValueError(f"event_subscription_ids must be one of {EVENT_SUBSCRIPTION_IDS}")


def _key_in_case(name: str, case: str) -> str:
    if case == "pascal":
        return name
    if case == "camel":
        return name[0].lower() + name[1:]
    if case == "lower":
        return name.lower()
    if case == "upper":
        return name.upper()
    raise ValueError("key_case must be pascal, camel, lower or upper")
