"""What the Azure side reports, as plain values: run records, machines of a run, patch results,
assignments, heartbeats, a VM's facts. Adapters build them; services read them."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.domain.ids import InvalidId, MachineId, RunId
from shared.domain.machines import MachinePower
from shared.domain.vocabulary import is_confirmed_cancel


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
class PatchResult:
    """One machine's patch installation result for a run."""

    machine: MachineId
    status: str | None
    installed: int | None
    failed: int | None
    reboot_status: str | None
    window_exceeded: bool | None
    last_modified: str | None
    maintenance_run_id: str | None = None
    started: str | None = None


class PatchMatch(enum.StrEnum):
    """How a patch result was tied to a run (`maintenanceRunId`'s format is undocumented)."""

    RUN_ID = "RunId"
    RUN_NAME = "RunName"
    MACHINE_AND_WINDOW = "MachineAndWindow"


# Patch results are looked for from a little before T (clocks differ) until after the window
# (a run may overrun it); without a known end, the longest window a configuration allows.
PATCH_WINDOW_LEAD = timedelta(minutes=15)
PATCH_WINDOW_TRAIL = timedelta(hours=1)
LONGEST_MAINTENANCE_WINDOW = timedelta(hours=6)


def patch_window(start: datetime, end: datetime | None) -> tuple[datetime, datetime]:
    """The time span in which a run's patch results are looked for."""
    return (
        start - PATCH_WINDOW_LEAD,
        (end or start + LONGEST_MAINTENANCE_WINDOW) + PATCH_WINDOW_TRAIL,
    )


def match_patch_results(
    results: Iterable[PatchResult],
    run: RunId,
    machines: Collection[str],
    since: datetime,
    until: datetime,
) -> list[tuple[PatchResult, PatchMatch]]:
    """The results that belong to `run`, one per machine, and how each was matched.

    A result naming the run (its CorrelationId or run name) matches; one naming another run is
    left out; one with no usable name (absent, a bare timestamp) matches when its machine is one
    of `machines` (lower-cased ids) and it started, or last changed, between `since` and `until`.
    """
    best: dict[str, tuple[PatchResult, PatchMatch]] = {}
    for result in results:
        how = _match(result, run, machines, since, until)
        if how is None:
            continue
        current = best.get(result.machine.key)
        if current is None or _rank(result, how) > _rank(*current):
            best[result.machine.key] = (result, how)
    return [best[k] for k in sorted(best)]


def _match(
    result: PatchResult, run: RunId, machines: Collection[str], since: datetime, until: datetime
) -> PatchMatch | None:
    named = (result.maintenance_run_id or "").strip()
    if named.lower() == run.key:
        return PatchMatch.RUN_ID
    if named.lower() == run.run_name.lower():
        return PatchMatch.RUN_NAME
    if _names_a_run(named):
        return None  # another run's result on a shared machine
    if result.machine.key not in machines:
        return None
    for moment in (_moment(result.started), _moment(result.last_modified)):
        if moment is not None and since <= moment <= until:
            return PatchMatch.MACHINE_AND_WINDOW
    return None


def _names_a_run(text: str) -> bool:
    if len(text) == 14 and text.isdigit():
        return True
    try:
        RunId.parse(text)
    except InvalidId:
        return False
    return True


def _rank(result: PatchResult, how: PatchMatch) -> tuple[int, datetime]:
    order = (PatchMatch.MACHINE_AND_WINDOW, PatchMatch.RUN_NAME, PatchMatch.RUN_ID)
    return order.index(how), _moment(result.last_modified) or datetime.min.replace(tzinfo=UTC)


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunState:
    """A run as the maintenance service reports it."""

    run_id: RunId
    status: str | None


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
        return self.http_status in (200, 201) and is_confirmed_cancel(self.status)


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
