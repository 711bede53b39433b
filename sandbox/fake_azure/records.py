"""Records, settings and clocks shared by the fake Azure's services (see model.py)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .query_engine import format_datetime

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


def iso_time(value: dt.datetime | None) -> str | None:
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
