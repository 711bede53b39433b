"""Test data builders and small fakes of our own ports."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.errors import DuplicateEvent, LedgerConflict
from shared.domain.ids import ConfigurationId, MachineId, RunId
from shared.domain.machine_steps import seen_running
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineClaim,
    MachineRecord,
    RefusedEvent,
    Run,
    RunNote,
    RunStatus,
    WatchRound,
    check_saved_together,
)

SUBSCRIPTION = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
OTHER_SUBSCRIPTION = "c0de0000-1111-4222-8333-444455556666"
CONFIGURATION = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly-linux"
)
RUN_NAME = "20261201030000"
START = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
CORRELATION_ID = f"{CONFIGURATION}/providers/microsoft.maintenance/applyupdates/{RUN_NAME}"
PRE = "Microsoft.Maintenance.PreMaintenanceEvent"
POST = "Microsoft.Maintenance.PostMaintenanceEvent"


class FixedClock:
    """A clock that stays where the test puts it."""

    def __init__(self, now: datetime = START - timedelta(minutes=30)) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


def event_grid_event(kind: str = PRE, **data_overrides: Any) -> dict[str, Any]:
    """An Event Grid schema maintenance event, as the reference §1 shows it."""
    data: dict[str, Any] = {
        "CorrelationId": CORRELATION_ID,
        "MaintenanceConfigurationId": CONFIGURATION,
        "StartDateTime": "2026-12-01T03:00:00Z",
        "EndDateTime": "2026-12-01T06:55:00Z",
        "ResourceSubscriptionIds": [SUBSCRIPTION, OTHER_SUBSCRIPTION],
    }
    if kind == PRE:
        data["CancellationCutOffDateTime"] = "2026-12-01T02:50:00Z"
    else:
        data["Status"] = "Succeeded"
    data.update(data_overrides)
    data = {k: v for k, v in data.items() if v is not None}
    return {
        "id": data.get("CorrelationId", CORRELATION_ID),
        "topic": CONFIGURATION,
        "subject": "weekly-linux",
        "eventType": kind,
        "eventTime": "2026-12-01T02:25:04.1234567Z",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "data": data,
    }


def cloud_event(kind: str = PRE, **data_overrides: Any) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema, with camelCase data keys."""
    grid = event_grid_event(kind, **data_overrides)
    data = {k[0].lower() + k[1:]: v for k, v in grid["data"].items()}
    return {
        "specversion": "1.0",
        "id": grid["id"],
        "source": CONFIGURATION,
        "type": kind,
        "time": grid["eventTime"],
        "subject": "weekly-linux",
        "data": data,
    }


def as_json(document: Any) -> str:
    return json.dumps(document)


class InMemoryRunLedger:
    """RunLedger in memory, with the same version (ETag) rules as the table adapter."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.events: dict[tuple[str, str, str], EventRecord] = {}
        self.machines: dict[tuple[str, str], MachineRecord] = {}
        self.cancels: list[CancelRequest] = []
        self.claims: dict[str, MachineClaim] = {}
        self.watch_rounds: dict[str, WatchRound] = {}
        self.notes: list[RunNote] = []
        self.refused: list[RefusedEvent] = []
        self.leases: dict[str, tuple[str, datetime]] = {}
        self._counter = 0
        # Writers on several threads (tests of races) must see check-and-write as one step,
        # as the real table's ETag check is.
        self._lock = threading.RLock()
        # A hook for tests: called before each record_event commit.
        self.before_commit: list[Any] = []

    def _next_version(self) -> str:
        self._counter += 1
        return f"v{self._counter}"

    def find_run(self, run_id: RunId) -> Run | None:
        return self.runs.get(run_id.key)

    def save_run(self, run: Run) -> Run:
        with self._lock:
            return self._save_run_unlocked(run)

    def record_event(self, event: EventRecord, run: Run) -> Run:
        with self._lock:
            return self._record_event_unlocked(event, run)

    def save_machine(self, machine: MachineRecord) -> MachineRecord:
        with self._lock:
            return self._save_machine_unlocked(machine)

    def save_claim(self, claim: MachineClaim) -> MachineClaim:
        with self._lock:
            return self._save_claim_unlocked(claim)

    def _save_run_unlocked(self, run: Run) -> Run:
        self._check(self.runs.get(run_id_key := run.run_id.key), run.version)
        stored = dataclasses.replace(run, version=self._next_version())
        self.runs[run_id_key] = stored
        return stored

    def _record_event_unlocked(self, event: EventRecord, run: Run) -> Run:
        for hook in list(self.before_commit):
            hook()
        key = (event.run_id.key, event.kind.value, event.event_id)
        if key in self.events:
            raise DuplicateEvent(event.event_id)
        self._check(self.runs.get(run.run_id.key), run.version)
        self.events[key] = event
        stored = dataclasses.replace(run, version=self._next_version())
        self.runs[run.run_id.key] = stored
        return stored

    def list_events(self, run_id: RunId) -> Iterator[EventRecord]:
        return iter([e for (k, _, _), e in self.events.items() if k == run_id.key])

    def find_machine(self, run_id: RunId, resource_id: str) -> MachineRecord | None:
        return self.machines.get((run_id.key, resource_id.lower()))

    def _save_machine_unlocked(self, machine: MachineRecord) -> MachineRecord:
        key = (machine.run_id.key, machine.resource_id.lower())
        self._check(self.machines.get(key), machine.version)
        stored = dataclasses.replace(machine, version=self._next_version())
        self.machines[key] = stored
        return stored

    def list_machines(self, run_id: RunId) -> Iterator[MachineRecord]:
        return iter([m for (k, _), m in self.machines.items() if k == run_id.key])

    def list_machines_not_seen_running(self, run_id: RunId) -> Iterator[MachineRecord]:
        return iter([m for m in self.list_machines(run_id) if not seen_running(m)])

    def find_machines(
        self, run_id: RunId, machines: Iterable[MachineId]
    ) -> dict[MachineId, MachineRecord]:
        found = {m: self.machines.get((run_id.key, m.key)) for m in machines}
        return {m: row for m, row in found.items() if row is not None}

    def in_storage_order(self, machines: Iterable[MachineId]) -> list[MachineId]:
        # Its own order (by the id, lower case), not the table's: callers must not rely on one.
        return sorted(machines, key=lambda m: m.key)

    def save_machines(self, machines: Sequence[MachineRecord]) -> list[MachineRecord]:
        check_saved_together(machines)
        with self._lock:
            for machine in machines:  # every check before any write: all or nothing
                self._check(
                    self.machines.get((machine.run_id.key, machine.resource_id.lower())),
                    machine.version,
                )
            return [self._save_machine_unlocked(machine) for machine in machines]

    def add_machines(self, machines: Any) -> int:
        created = 0
        for machine in machines:
            if (machine.run_id.key, machine.resource_id.lower()) not in self.machines:
                self.save_machine(machine)
                created += 1
        return created

    def list_runs(self) -> Iterator[Run]:
        return iter(list(self.runs.values()))

    def _newest_first(self) -> list[Run]:
        return sorted(
            self.runs.values(), key=lambda r: (r.scheduled_start, r.run_id.key), reverse=True
        )

    def list_runs_page(
        self,
        *,
        configuration: str | None,
        status: str | None,
        start_from: datetime | None,
        start_to: datetime | None,
        top: int,
        after: str | None,
    ) -> tuple[list[Run], str | None]:
        def wanted(run: Run) -> bool:
            c = run.run_id.configuration
            if configuration and configuration.lower() not in (c.name.lower(), c.key):
                return False
            if status and status.lower() not in (
                run.status.value.lower(),
                (run.platform_status or "").lower(),
            ):
                return False
            if start_from and run.scheduled_start < start_from:
                return False
            return not (start_to and run.scheduled_start >= start_to)

        # As the Table ledger's: a continuation names the listing and the last run given, so a
        # run written between two pages neither repeats nor shifts the next page.
        listing = f"{(status or configuration or '').lower()}|"
        matching = [r for r in self._newest_first() if wanted(r)]
        if after is not None:
            if not after.startswith(listing) or after.count("|") < 2:
                raise ValueError("continuation does not belong to this listing")
            start_text, key = after.removeprefix(listing).split("|", 1)
            last = (datetime.fromisoformat(start_text), key)
            matching = [r for r in matching if (r.scheduled_start, r.run_id.key) < last]
        page = matching[:top]
        if len(matching) <= top:
            return page, None
        final = page[-1]
        return page, f"{listing}{final.scheduled_start.isoformat()}|{final.run_id.key}"

    def find_runs_named(self, configuration_name: str, run_name: str) -> list[Run]:
        return [
            r
            for r in self.runs.values()
            if r.run_id.configuration.name.lower() == configuration_name.lower()
            and r.run_id.run_name == run_name
        ]

    def list_open_runs(self) -> Iterator[Run]:
        return iter([r for r in self._newest_first() if r.status is not RunStatus.COMPLETED])

    def list_known_configurations(self) -> list[ConfigurationId]:
        return list(
            {
                r.run_id.configuration.key: r.run_id.configuration for r in self.runs.values()
            }.values()
        )

    def ensure_indexed(self) -> int:
        return 0

    def remove_runs_before(self, cutoff: datetime, limit: int) -> list[RunId]:
        old = [r for r in reversed(self._newest_first()) if r.scheduled_start < cutoff][:limit]
        for run in old:
            del self.runs[run.run_id.key]
            for key in [k for k in self.machines if k[0] == run.run_id.key]:
                del self.machines[key]
            for event_key in [k for k in self.events if k[0] == run.run_id.key]:
                del self.events[event_key]
            self.notes = [n for n in self.notes if n.run_id != run.run_id]
            self.cancels = [c for c in self.cancels if c.run_id != run.run_id]
            self.watch_rounds.pop(run.run_id.key, None)
        return [r.run_id for r in old]

    def find_watch_round(self, run_id: RunId) -> WatchRound | None:
        return self.watch_rounds.get(run_id.key)

    def save_watch_round(self, watch: WatchRound) -> WatchRound:
        with self._lock:
            self._check(self.watch_rounds.get(watch.run_id.key), watch.version)
            stored = dataclasses.replace(watch, version=self._next_version())
            self.watch_rounds[watch.run_id.key] = stored
            return stored

    def find_claim(self, machine: MachineId) -> MachineClaim | None:
        return self.claims.get(machine.key)

    def delete_claim(self, claim: MachineClaim) -> None:
        with self._lock:
            key = claim.resource_id.lower()
            stored = self.claims.get(key)
            if stored is None:
                return
            if claim.version is None or stored.version != claim.version:
                raise LedgerConflict("changed")
            del self.claims[key]

    def _save_claim_unlocked(self, claim: MachineClaim) -> MachineClaim:
        key = claim.resource_id.lower()
        self._check(self.claims.get(key), claim.version)
        stored = dataclasses.replace(claim, version=self._next_version())
        self.claims[key] = stored
        return stored

    def acquire_lease(self, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
        current = self.leases.get(name)
        if current and current[0] != holder and current[1] > now:
            return False
        self.leases[name] = (holder, now + duration)
        return True

    def release_lease(self, name: str, holder: str) -> None:
        if self.leases.get(name, ("",))[0] == holder:
            del self.leases[name]

    def add_note(self, note: RunNote) -> None:
        self.notes.append(note)

    def list_notes(self, run_id: RunId) -> Iterator[RunNote]:
        return iter(sorted((n for n in self.notes if n.run_id == run_id), key=lambda n: n.at))

    def add_cancel_request(self, request: CancelRequest) -> None:
        self.cancels.append(copy.copy(request))

    def list_cancel_requests(self, run_id: RunId) -> Iterator[CancelRequest]:
        mine = (c for c in self.cancels if c.run_id == run_id)
        return iter(sorted(mine, key=lambda c: c.requested_at))

    def add_refused_event(self, refusal: RefusedEvent) -> RefusedEvent:
        stored = dataclasses.replace(refusal, record_id=f"r{len(self.refused) + 1}")
        self.refused.append(stored)
        return stored

    def list_refused_events(self, limit: int) -> list[RefusedEvent]:
        newest_first = sorted(self.refused, key=lambda r: r.refused_at, reverse=True)
        return newest_first[:limit]

    @staticmethod
    def _check(
        stored: Run | MachineRecord | MachineClaim | WatchRound | None, version: str | None
    ) -> None:
        if version is None and stored is not None:
            raise LedgerConflict("exists")
        if version is not None and (stored is None or stored.version != version):
            raise LedgerConflict("changed")
