"""What the Azure side reports, as plain values: run records, machines of a run, patch results,
assignments, heartbeats, a VM's facts. Adapters build them; services read them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain.ids import MachineId, RunId
from shared.domain.machines import MachinePower


@dataclass(frozen=True)
class RunMachine:
    """One machine of a run, as Resource Graph lists it (a per-machine applyupdates record)."""

    record_id: str
    machine: MachineId
    status: str | None


@dataclass(frozen=True)
class PlatformRun:
    """A run-level applyupdates record."""

    run_id: RunId
    status: str | None
    start: str | None
    end: str | None
    message: str | None


@dataclass(frozen=True)
class Assignment:
    """A configuration assignment: a static machine, or a dynamic scope (filter)."""

    record_id: str
    subscription_id: str | None
    machine: MachineId | None
    dynamic_filter: Mapping[str, Any] | None


@dataclass(frozen=True)
class PatchResult:
    """One machine's patch installation result for a run."""

    machine: MachineId
    status: str | None
    installed: int | None
    failed: int | None
    reboot_status: str | None
    window_exceeded: bool | None
    last_modified: str | None


@dataclass(frozen=True)
class RunState:
    """A run as the maintenance service reports it."""

    run_id: RunId
    status: str | None


CANCELLED_STATUS_WORDS = frozenset({"cancelled", "canceled"})


@dataclass(frozen=True)
class CancelAcceptance:
    """Azure accepted a cancel: its HTTP status (any 2xx) and the status word of its answer,
    when the answer had a body that said one."""

    run_id: RunId
    http_status: int
    status: str | None

    @property
    def confirmed(self) -> bool:
        """Azure said the run is cancelled (200/201 "Cancelled"), not only that it accepted
        the request (202, 204, "Cancel", no word or an unknown one): confirm it later."""
        word = (self.status or "").replace(" ", "").lower()
        return self.http_status in (200, 201) and word in CANCELLED_STATUS_WORDS


@dataclass(frozen=True)
class MachineFacts:
    """A VM's power and tags, read together."""

    machine: MachineId
    power: MachinePower
    tags: Mapping[str, str] = field(default_factory=dict)
    location: str | None = None


@dataclass(frozen=True)
class HeartbeatReport:
    """Last heartbeat per machine (machines with none are absent), and any partial errors."""

    last_seen: dict[MachineId, datetime] = field(default_factory=dict)
    partial_errors: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every query answered in full."""
        return not self.partial_errors
