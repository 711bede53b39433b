"""Use case: orchestrate a run, one queued task at a time.

prepare → start (batches) → verify (until every VM runs or T−15) → gate (cancel if too many
failed and the window is open) … post event or cancel → wrap-up → stop (batches) → finish
(health check, patch results, report) → notify.

Invariants (ARCHITECTURE.md), whatever the order or number of deliveries:
1. A VM that was running before the run is never stopped by this app: only machines whose row
   says the app started them (`MachineAction.owned_by_run`) are ever deallocated.
2. Every VM the app started is deallocated after its run ends, unless another active run still
   needs it; then ownership passes to that run (the machine's claim row).
3. No action twice for one delivery repeated: each step reads the machine's row first and writes
   what it is about to do *before* calling Azure; a retry that finds "Starting" checks the VM's
   power state instead of starting it again.
4. A cancel is sent only inside the window (shared with the cancel API: services/cancellation).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from shared.domain.errors import AzureCallFailed, CallWithdrawn, LedgerConflict
from shared.domain.ids import InvalidId, MachineId, RunId
from shared.domain.machines import OperationOutcome, OperationResult, PowerState
from shared.domain.policy import GateCount, OrchestrationPolicy
from shared.domain.runs import (
    NOTHING_TO_STOP,
    REFUSED,
    MachineAction,
    MachineClaim,
    MachineKind,
    MachineRecord,
    NoteLevel,
    Run,
    RunNote,
    RunStatus,
)
from shared.domain.tasks import MAX_TASK_DELAY, Task, TaskKind
from shared.domain.timeline import Clock, machines_running_deadline, preparation_due
from shared.domain.vocabulary import CancelSource, CancelVerdict, GateOutcome, PlatformStatus
from shared.services import cancellation
from shared.services.ports import (
    Heartbeats,
    Machines,
    Notifier,
    PowerOperationHandle,
    ReportStore,
    RunCanceller,
    RunLedger,
    RunMachinesSource,
    TaskQueue,
)
from shared.services.reporting import build_report, matched_patch_results, summary_message

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
MAX_CONFLICT_RETRIES = 8
WATCHED = (MachineAction.STARTING, MachineAction.STARTED)
GATE_COUNTED = (
    MachineAction.STARTING,
    MachineAction.STARTED,
    MachineAction.START_FAILED,
    MachineAction.PLANNED,
)
# The history detail of a start or deallocate whose answer was lost (a 5xx, a dropped
# connection, a timeout, an unreadable operation status): the call is over, but whether Azure
# applied it is unknown, so the VM's power state decides and no worker is waiting on it.
ANSWER_LOST = "answer lost"
# Throttled or unanswered machines go into a new task this much later, at most this often.
TRANSIENT_RETRY = timedelta(seconds=3)
# The watch loops, in the order a run goes through them (see Orchestrator._take_round).
WATCH_STEPS = ("verify", "gate", "finish")
MAX_TRANSIENT_ROUNDS = 200


@dataclass
class Orchestrator:
    """The task worker's use cases, with their ports."""

    ledger: RunLedger
    queue: TaskQueue
    graph: RunMachinesSource
    machines: Machines
    canceller: RunCanceller
    reports: ReportStore
    clock: Clock
    policy: OrchestrationPolicy
    heartbeats: Heartbeats | None = None
    notifier: Notifier | None = None

    def handle(self, task: Task) -> None:
        """Run one task. Raises on infrastructure failures, so the queue retries it."""
        steps: dict[TaskKind, Callable[[Task], None]] = {
            TaskKind.PREPARE: self.prepare,
            TaskKind.START: self.start,
            TaskKind.VERIFY: self.verify,
            TaskKind.GATE: self.gate,
            TaskKind.WRAP_UP: self.wrap_up,
            TaskKind.STOP: self.stop,
            TaskKind.FINISH: self.finish,
            TaskKind.NOTIFY: self.notify,
            TaskKind.CONFIRM_CANCEL: self.confirm_cancel,
        }
        step = steps.get(task.kind)
        if step is None:
            log.info("Task %s for run %s is handled elsewhere", task.kind, task.run_id.text)
            return
        step(task)

    # prepare ------------------------------------------------------------------------------

    def prepare(self, task: Task) -> None:
        """Find the run's machines in ARG, record them, fan the starts out in batches."""
        run = self._run(task)
        if run is None or run.status not in (RunStatus.PRE_EVENT_RECEIVED, RunStatus.PREPARING):
            return
        now = self.clock.now()
        due = preparation_due(run.scheduled_start)
        if now < due:
            # A pre event far ahead of its run: nothing is asked of Azure before T−40 (the scope
            # is not frozen before then); the step comes back at T−40, in hops of at most
            # MAX_TASK_DELAY.
            wait = min(due - now, MAX_TASK_DELAY)
            self.queue.send(task, wait)
            log.info(
                "Run %s: preparation is due at %s; put off by %s",
                run.run_id.text,
                due.isoformat(),
                wait,
            )
            return
        deadline = machines_running_deadline(run.scheduled_start)
        if now >= run.scheduled_start:
            self._note(
                run.run_id,
                NoteLevel.WARNING,
                "prepare",
                f"pre event handled at {now.isoformat()}, after patching began at "
                f"{run.scheduled_start.isoformat()}: no machine was started",
            )
            self._update_run(
                run.run_id,
                lambda r: _gate(
                    r, GateOutcome.SKIPPED_LATE_PRE_EVENT, "pre event came after patching began"
                ),
            )
            return
        listed = list(self.graph.list_run_machines(run.run_id, run.subscription_ids))
        if not listed:
            if now < deadline:
                log.info(
                    "Run %s: ARG lists no machines yet (round %d); asking again in %s",
                    run.run_id.text,
                    task.round,
                    self.policy.arg_retry,
                )
                self.queue.send(task.next_round(), self.policy.arg_retry)
                return
            self._note(
                run.run_id,
                NoteLevel.WARNING,
                "prepare",
                "Resource Graph listed no machines for this run by T-15",
            )
            self._update_run(
                run.run_id, lambda r: _gate(r, GateOutcome.NOTHING_TO_START, "no machines listed")
            )
            return
        created = self.ledger.add_machines(
            MachineRecord.planned(run.run_id, m.machine.text, now) for m in listed
        )
        if now >= deadline:
            self._note(
                run.run_id,
                NoteLevel.WARNING,
                "prepare",
                f"pre event handled after the T-15 deadline ({deadline.isoformat()}): "
                "starting stopped VMs anyway; they may be too late for patching",
            )
        self._update_run(run.run_id, _to_preparing)
        to_start = [
            MachineId.parse(r.resource_id)
            for r in self.ledger.list_machines(run.run_id)
            if r.action in (MachineAction.PLANNED, MachineAction.STARTING)
        ]
        # Verify first: it is also the fan-out's watchdog, should this host die while sending.
        self.queue.send(Task(TaskKind.VERIFY, run.run_id), self.policy.verify_interval)
        for batch in _chunks(to_start, self.policy.start_batch_size):
            self.queue.send(Task(TaskKind.START, run.run_id, tuple(batch)))
        log.info(
            "Run %s: %d machines listed (%d new), %d to look at in %d start tasks",
            run.run_id.text,
            len(listed),
            created,
            len(to_start),
            -(-len(to_start) // self.policy.start_batch_size),
        )

    # start --------------------------------------------------------------------------------

    def start(self, task: Task) -> None:
        """Start the stopped VMs of one batch, with bounded concurrency."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.PREPARING:
            return
        with self._renewing() as renewer:
            self._start_batch(task, run, renewer)

    def _start_batch(self, task: Task, run: Run, renewer: _IntentRenewer) -> None:
        started = _parallel(
            self.policy.start_concurrency,
            lambda m: self._unless_taken(run.run_id, m, lambda: self._start_one(run, m, renewer)),
            task.machines,
        )
        retry = [
            row
            for row, op in started
            if op is None
            and (
                row.action is MachineAction.PLANNED
                or (row.action is MachineAction.STARTING and _answer_lost(row))
            )
        ]
        if retry and self._still_starting(run.run_id):
            self._retry_later(task, run, retry)
        finished = self._wait_all(started)
        for row, result in finished:
            self._record_start(row, result)

    def _retry_later(self, task: Task, run: Run, rows: Sequence[MachineRecord]) -> None:
        """Machines whose calls were throttled or failed transiently: another task, later."""
        if not rows:
            return
        if task.round >= MAX_TRANSIENT_ROUNDS:
            for row in rows:
                self._note(
                    run.run_id,
                    NoteLevel.ERROR,
                    task.kind.value,
                    f"{row.resource_id}: Azure kept throttling or failing; gave up "
                    f"after {task.round} rounds",
                )
            return
        machines = tuple(MachineId.parse(r.resource_id) for r in rows)
        self.queue.send(Task(task.kind, run.run_id, machines, task.round + 1), TRANSIENT_RETRY)
        log.info(
            "Run %s: %d machines throttled or unanswered; %s again in %s",
            run.run_id.text,
            len(machines),
            task.kind.value,
            TRANSIENT_RETRY,
        )

    def _start_one(
        self, run: Run, machine: MachineId, renewer: _IntentRenewer
    ) -> tuple[MachineRecord, PowerOperationHandle | None]:
        now = self.clock.now()
        row = self.ledger.find_machine(run.run_id, machine.text) or self.ledger.save_machine(
            MachineRecord.planned(run.run_id, machine.text, now)
        )
        if row.action not in (MachineAction.PLANNED, MachineAction.STARTING):
            return row, None  # handled by an earlier delivery
        if row.action is MachineAction.STARTING and self._intent_is_fresh(row):
            # Another worker wrote "Starting" moments ago and may be calling Azure right now;
            # verify settles it. Only an intent older than any call can take is a dead worker's.
            return row, None
        if row.kind is not MachineKind.VIRTUAL_MACHINE:
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.NOT_STARTABLE,
                    now,
                    "Arc-enabled server: the app does not manage its power",
                )
            ), None
        try:
            facts = self.machines.get_machine(machine)
        except AzureCallFailed as e:
            if e.is_transient:
                return row, None  # still Planned: retried in a later task
            return self._save_failure(row, MachineAction.START_FAILED, e), None
        state = facts.power.state
        prior = row.prior_power_state or str(state)
        if row.start_was_sent and state in (PowerState.RUNNING, PowerState.STARTING):
            # A start went out before (a crash, or an answer that was lost): the VM is up
            # because of it, so it is the run's. Never sent again, never "LeftAlone".
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.STARTED,
                    now,
                    f"found {state} on retry; not started again",
                    owner_run=run.run_id.text,
                    last_power_state=str(state),
                )
            ), None
        if self.policy.opt_out_tag.matches(facts.tags):
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.SKIPPED_OPT_OUT,
                    now,
                    "carries the opt-out tag",
                    prior_power_state=prior,
                    last_power_state=str(state),
                )
            ), None
        if state in (PowerState.RUNNING, PowerState.STARTING):
            return self._already_up(run, row, machine, prior, str(state), now), None
        if not (isinstance(state, PowerState) and state.startable):
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.LEFT_ALONE,
                    now,
                    f"power state {state}: not started",
                    prior_power_state=prior,
                    last_power_state=str(state),
                )
            ), None
        if now >= run.scheduled_start:
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.TOO_LATE_TO_START,
                    now,
                    "patching has begun",
                    prior_power_state=prior,
                    last_power_state=str(state),
                )
            ), None
        if not self._claim_for_start(run.run_id, machine):
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.SHARED_WITH_RUN,
                    now,
                    "another run is starting it",
                    prior_power_state=prior,
                    last_power_state=str(state),
                )
            ), None
        if self.policy.snapshot_before_start:
            snapshot = self._snapshot(run.run_id, machine)
            if not snapshot.succeeded:
                return self.ledger.save_machine(
                    row.moved_to(
                        MachineAction.START_FAILED,
                        now,
                        "OS disk snapshot failed; not started",
                        prior_power_state=prior,
                        error_code=snapshot.code,
                        error_message=snapshot.message,
                    )
                ), None
        # Written before calling Azure: a retry finds it and checks instead of starting again.
        row = self.ledger.save_machine(
            row.moved_to(
                MachineAction.STARTING,
                now,
                "start requested",
                prior_power_state=prior,
                owner_run=run.run_id.text,
                last_power_state=str(state),
            )
        )
        renewer.hold(row)
        # Read after the intent is stored: a wrap-up that began before this read lists this
        # row as Starting (and stops the VM); one that began later is seen here.
        if not self._still_starting(run.run_id):
            return self._save_latest(
                row,
                lambda r: (
                    r.moved_to(
                        MachineAction.PLANNED, self.clock.now(), "the run stopped starting machines"
                    )
                    if r.action is MachineAction.STARTING
                    else r
                ),
            ), None
        return self._call(
            row,
            lambda: self.machines.begin_start(machine, lambda: self._still_starting(run.run_id)),
            MachineAction.PLANNED,
            MachineAction.START_FAILED,
        )

    def _still_starting(self, run_id: RunId) -> bool:
        """The run still wants its machines started (no cancel, no wrap-up yet)."""
        current = self.ledger.find_run(run_id)
        return current is not None and current.status is RunStatus.PREPARING

    def _already_up(
        self,
        run: Run,
        row: MachineRecord,
        machine: MachineId,
        prior: str,
        state: str,
        now: datetime,
    ) -> MachineRecord:
        claim = self.ledger.find_claim(machine)
        owner = claim.owner_run if claim else None
        if owner and owner.lower() != run.run_id.key and self._is_active(owner):
            self._need(run.run_id, machine)
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.SHARED_WITH_RUN,
                    now,
                    f"started by the app for run {owner}",
                    prior_power_state=prior,
                    last_power_state=state,
                )
            )
        return self.ledger.save_machine(
            row.moved_to(
                MachineAction.LEFT_ALONE,
                now,
                "already running: never stopped by the app",
                prior_power_state=prior,
                last_power_state=state,
            )
        )

    def _record_start(self, row: MachineRecord, result: OperationResult) -> None:
        self._record_result(
            row,
            result,
            MachineAction.STARTED,
            MachineAction.START_FAILED,
            PowerState.RUNNING,
            "start",
        )

    def _record_result(
        self,
        row: MachineRecord,
        result: OperationResult,
        done: MachineAction,
        failed: MachineAction,
        state: PowerState,
        verb: str,
    ) -> bool:
        """Record how a start or deallocate ended; True when it succeeded. Only a row still
        waiting for this answer takes it: a wrap-up that began meanwhile is not undone."""
        if result.outcome is OperationOutcome.STILL_RUNNING:
            return False  # verify (or the next stop task) settles it from the power state
        waiting = (row.action,)
        if result.outcome is OperationOutcome.UNKNOWN:
            # The operation may have worked: its power state decides (verify, or finish's
            # next stop task), as for a call whose answer was lost.
            self._mark_answer_lost(row, f"{verb} status unreadable ({result.code})")
            return False
        if result.succeeded:
            self._move(row, done, f"{verb} succeeded", waiting, last_power_state=state.value)
            return True
        if done is MachineAction.STARTED and self._came_up(row):
            # Azure called the start failed, yet the VM is coming up: no "start failed".
            self._mark_answer_lost(row, f"start reported {result.code}, but the VM is up")
            return False
        recorded = self._move(
            row,
            failed,
            f"{verb} failed: {result.code}",
            waiting,
            error_code=result.code,
            error_message=result.message,
        )
        if recorded.action is not failed:
            return False  # the row moved on meanwhile (a wrap-up preempted the start)
        self._note(
            row.run_id,
            NoteLevel.ERROR,
            verb,
            f"{row.resource_id}: {verb} failed: {result.code}: {result.message}",
        )
        return False

    def _came_up(self, row: MachineRecord) -> bool:
        try:
            power = self.machines.get_power(MachineId.parse(row.resource_id))
        except AzureCallFailed:
            return False
        return power.state in (PowerState.RUNNING, PowerState.STARTING)

    def _snapshot(self, run_id: RunId, machine: MachineId) -> OperationResult:
        name = f"{machine.name}-osdisk-um-{run_id.run_name}"[:80]
        try:
            return self.machines.begin_snapshot_os_disk(machine, name).wait(
                self.policy.operation_wait_seconds
            )
        except AzureCallFailed as e:
            return OperationResult(OperationOutcome.FAILED, e.code, e.message)

    # verify and gate ----------------------------------------------------------------------

    def verify(self, task: Task) -> None:
        """Re-read power states until every VM the app started runs, or T−15 passes."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.PREPARING:
            return
        if not self._take_round(run.run_id, "verify", task.round):
            log.info("Run %s: verify round %d ran already", run.run_id.text, task.round)
            return
        now = self.clock.now()
        deadline = machines_running_deadline(run.scheduled_start)
        delay = min(self.policy.verify_interval, max(deadline - now, timedelta(seconds=1)))
        if now < deadline:
            # Sent before the work: if this host dies mid-round, the loop still goes on (a
            # message in flight on a dead host stays invisible for minutes).
            self.queue.send(task.next_round(), delay)
        rows = list(self.ledger.list_machines(run.run_id))
        self._restart_stalled_fan_out(run, rows, task.round)
        # A start Azure reported failed is read again too: it may have come up after all.
        watched = [r for r in rows if r.action in WATCHED or r.owned_by_run]
        updated = _parallel(self.policy.start_concurrency, self._refresh, watched)
        unsettled = [r for r in rows if r.action is MachineAction.PLANNED]
        unsettled += [
            r
            for r in updated
            if r.last_power_state != PowerState.RUNNING
            and r.action is not MachineAction.START_FAILED
        ]
        now = self.clock.now()
        orphaned = [
            MachineId.parse(r.resource_id)
            for r in updated
            if r.action is MachineAction.STARTING
            and not self._intent_is_fresh(r)
            and r.last_power_state in (PowerState.DEALLOCATED, PowerState.STOPPED)
        ]
        if orphaned and now < run.scheduled_start:
            # Their worker died before its start call reached Azure: start them again.
            self.queue.send(Task(TaskKind.START, run.run_id, tuple(orphaned), task.round))
        if not unsettled or now >= deadline:
            # Once: the verify rounds already queued end when they see the gate's turn.
            if self._take_round(run.run_id, "gate", 0):
                self.queue.send(Task(TaskKind.GATE, run.run_id))
            return
        log.info(
            "Run %s: %d machines not running yet; checking again in %s",
            run.run_id.text,
            len(unsettled),
            delay,
        )

    def _restart_stalled_fan_out(
        self, run: Run, rows: Sequence[MachineRecord], round_: int
    ) -> None:
        """Machines not looked at yet while nothing in the run has moved for a task lease
        (no step, no renewal): their start tasks died with a host. Send them again; a start
        task that is merely late finds their rows taken and does nothing twice."""
        planned = [r for r in rows if r.action is MachineAction.PLANNED]
        now = self.clock.now()
        if not planned or now >= run.scheduled_start:
            return
        quiet_for = now - max(r.updated_at for r in rows)
        if quiet_for < self.policy.task_lease:
            return
        log.warning(
            "Run %s: the fan-out has not moved for %s; %d machines get new start tasks",
            run.run_id.text,
            quiet_for,
            len(planned),
        )
        machines = [MachineId.parse(r.resource_id) for r in planned]
        for batch in _chunks(machines, self.policy.start_batch_size):
            self.queue.send(Task(TaskKind.START, run.run_id, tuple(batch), round_))

    def _refresh(self, row: MachineRecord) -> MachineRecord:
        try:
            power = self.machines.get_power(MachineId.parse(row.resource_id))
        except AzureCallFailed as e:
            log.warning("Power state of %s unreadable: %s", row.resource_id, e)
            return row
        state = str(power.state)
        if row.action is MachineAction.STARTING and power.state is PowerState.RUNNING:
            return self._move(row, MachineAction.STARTED, "seen running", last_power_state=state)
        if row.action is MachineAction.START_FAILED and power.state is PowerState.RUNNING:
            self._note(
                row.run_id,
                NoteLevel.INFO,
                "start",
                f"{row.resource_id}: running after all, although its start was reported failed",
            )
            return self._move(
                row,
                MachineAction.STARTED,
                "seen running after a failed start answer",
                (MachineAction.START_FAILED,),
                last_power_state=state,
            )
        if row.last_power_state == state:
            return row
        # updated_at is left alone: it dates the app's own steps and their leases.
        return self._save_latest(row, lambda r: replace(r, last_power_state=state))

    def gate(self, task: Task) -> None:
        """Decide: good enough, or cancel (inside the window), or report it is too late."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.PREPARING:
            return
        rows = [r for r in self.ledger.list_machines(run.run_id) if r.action in GATE_COUNTED]
        never_started = [r for r in rows if r.action is MachineAction.PLANNED]
        # What verify saw last may be stale or missing (a throttled read leaves the old word):
        # the rest are read once more now, and a VM Azure will not describe is not a failure.
        doubtful = [
            r
            for r in rows
            if r.action is not MachineAction.PLANNED
            and not (r.action is MachineAction.STARTED and r.last_power_state == PowerState.RUNNING)
        ]
        readings = _parallel(self.policy.start_concurrency, self._power_at_gate, doubtful)
        count = GateCount(
            attempted=len(rows),
            not_running=len(never_started)
            + sum(1 for state in readings if state is not None and state is not PowerState.RUNNING),
            unknown=sum(1 for state in readings if state is None),
        )
        detail = count.describe(self.policy.failure_budget_percent)
        if count.unknown:
            self._note(
                run.run_id,
                NoteLevel.WARNING,
                "gate",
                f"{count.unknown} machines' power state could not be read at the gate; they are "
                "not counted as failures",
            )
        if not count.exceeds(self.policy.failure_budget_percent):
            self._update_run(run.run_id, lambda r: _gate(r, GateOutcome.PASSED, detail))
            log.info("Run %s: gate passed: %s", run.run_id.text, detail)
            return
        try:
            answer = cancellation.cancel_run(
                run.run_id,
                self.cancel_context(),
                requested_by="app:gate",
                reason=f"failure budget exceeded: {detail}",
                source=CancelSource.GATE,
            )
        except AzureCallFailed as e:
            # One PUT per run from the gate: a cancel that failed is reported, never re-sent
            # by a retried gate task.
            failed = f"{detail}; the cancel failed: {e}"
            self._note(run.run_id, NoteLevel.ERROR, "gate", failed)
            self._update_run(run.run_id, lambda r: _gate(r, GateOutcome.CANCEL_FAILED, failed))
            return
        if answer.verdict is CancelVerdict.TOO_EARLY:
            # Verify finished before T−40 (the pre event can come a few minutes early).
            self.queue.send(task.next_round(), answer.window.opens_at - answer.now)
            return
        outcome = answer.verdict.gate_outcome
        level = NoteLevel.WARNING if outcome is GateOutcome.CANCELLED else NoteLevel.ERROR
        self._note(run.run_id, level, "gate", f"{detail}; {answer.explanation}")
        self._update_run(run.run_id, lambda r: _gate(r, outcome, f"{detail}; {answer.explanation}"))

    def _power_at_gate(self, row: MachineRecord) -> PowerState | str | None:
        """The VM's power state now (a word Azure gave, or "unknown" when it gave none), or
        None when Azure would not answer (throttled, failing)."""
        try:
            state = self.machines.get_power(MachineId.parse(row.resource_id)).state
        except AzureCallFailed as e:
            log.warning(
                "Run %s: power of %s unreadable at the gate: %s",
                row.run_id.text,
                row.resource_id,
                e,
            )
            return None
        return "unknown" if state is None else state

    def confirm_cancel(self, task: Task) -> None:
        """Read back a run whose cancel Azure only accepted (or whose answer was lost); a
        report already written gets what Azure finally said."""
        notes = cancellation.confirm_cancel(task, self.cancel_context())
        run = self.ledger.find_run(task.run_id)
        if not notes or run is None or run.report_location is None:
            return
        report = self.reports.get_report(task.run_id)
        if report is None:
            return
        amended = dict(report)
        amended["run"] = {**report.get("run", {}), "platformStatus": run.platform_status}
        amended["notes"] = [
            *report.get("notes", []),
            *(
                {
                    "at": n.at.isoformat(),
                    "level": n.level.value,
                    "source": n.source,
                    "message": n.message,
                }
                for n in notes
            ),
        ]
        self.reports.save_report(task.run_id, amended)

    def cancel_context(self) -> cancellation.CancelContext:
        """The ports and rules a cancel needs (the gate's and the operator API's)."""
        return cancellation.CancelContext(
            ledger=self.ledger,
            canceller=self.canceller,
            queue=self.queue,
            clock=self.clock,
            safety_margin=self.policy.cancel_safety_margin,
            graph=self.graph,
            confirm_after=self.policy.arg_retry,
        )

    # wrap-up ------------------------------------------------------------------------------

    def wrap_up(self, task: Task) -> None:
        """After the post event or a cancel: stop exactly the VMs this run owns."""
        run = self._run(task)
        if run is None or run.status is RunStatus.COMPLETED:
            return
        now = self.clock.now()
        run = self._update_run(
            run.run_id,
            lambda r: (
                r
                if r.status is RunStatus.WRAPPING_UP or r.status is RunStatus.COMPLETED
                else replace(
                    r, status=RunStatus.WRAPPING_UP, wrap_up_started_at=now, updated_at=now
                )
            ),
        )
        if run.status is RunStatus.COMPLETED:
            return
        if run.cancel_source is None and not self._machines_finished(run, task):
            return
        owned = [r for r in self.ledger.list_machines(run.run_id) if r.owned_by_run]
        to_stop = [
            MachineId.parse(r.resource_id) for r in owned if not self._hand_over(run.run_id, r)
        ]
        for batch in _chunks(to_stop, self.policy.start_batch_size):
            self.queue.send(Task(TaskKind.STOP, run.run_id, tuple(batch)))
        self.queue.send(
            Task(TaskKind.FINISH, run.run_id), self.policy.arg_retry if to_stop else timedelta(0)
        )
        log.info(
            "Run %s: wrap-up: %d machines to stop, %d handed over",
            run.run_id.text,
            len(to_stop),
            len(owned) - len(to_stop),
        )

    def _machines_finished(self, run: Run, task: Task) -> bool:
        listed = list(self.graph.list_run_machines(run.run_id, run.subscription_ids))
        run_level = (
            self._run_level_status(run) if any(not (m.status or "").strip() for m in listed) else ""
        )
        # A missing per-machine status is not "unfinished": the field is undocumented, so
        # the run-level status stands in for it.
        unfinished = [m for m in listed if _still_patching(m.status or run_level)]
        if not unfinished:
            return True
        started = run.wrap_up_started_at or self.clock.now()
        if self.clock.now() - started < self.policy.wrap_up_wait:
            log.info(
                "Run %s: ARG shows %d machines unfinished; waiting",
                run.run_id.text,
                len(unfinished),
            )
            self.queue.send(task.next_round(), self.policy.arg_retry)
            return False
        self._note(
            run.run_id,
            NoteLevel.WARNING,
            "wrap-up",
            f"{len(unfinished)} machines still unfinished in ARG after "
            f"{self.policy.wrap_up_wait}; wrapping up anyway",
        )
        return True

    def _run_level_status(self, run: Run) -> str:
        """For machines whose record has no status: the post event's status, else the run's
        record in Resource Graph now; "" when neither says (the post event, or the reconciler
        that started wrap-up, already said the run ended: do not wait on a missing field)."""
        if (run.post_event_status or "").strip():
            return run.post_event_status or ""
        configuration = run.run_id.configuration
        for record in self.graph.list_runs([configuration], [configuration.subscription_id]):
            if record.run_id == run.run_id:
                return record.status or ""
        return ""

    def _hand_over(self, run_id: RunId, row: MachineRecord) -> bool:
        """Pass a VM this run started to another active run that needs it; True if passed."""
        machine = MachineId.parse(row.resource_id)
        for _ in range(MAX_CONFLICT_RETRIES):
            claim = self.ledger.find_claim(machine)
            if claim is None:
                return False
            heirs = [r for r in claim.needed_by if r.lower() != run_id.key and self._is_active(r)]
            if not heirs:
                return False
            heir = RunId.parse(heirs[0])
            try:
                self.ledger.save_claim(replace(claim.released_by(run_id.text), owner_run=heir.text))
            except LedgerConflict:
                continue
            self._move(
                row,
                MachineAction.HANDED_OVER,
                f"still needed by run {heir.text}",
                owner_run=heir.text,
            )
            heir_row = self.ledger.find_machine(heir, machine.text)
            if heir_row is not None and not heir_row.action.owned_by_run:
                self._move(
                    heir_row,
                    MachineAction.STARTED,
                    f"ownership passed from run {run_id.text}",
                    owner_run=heir.text,
                )
            self._note(
                run_id, NoteLevel.INFO, "wrap-up", f"{machine.text} handed over to run {heir.text}"
            )
            return True
        raise LedgerConflict(f"claim of {machine.text} kept changing")

    def stop(self, task: Task) -> None:
        """Deallocate one batch of VMs the run owns, unless another run now needs them."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.WRAPPING_UP:
            return
        with self._renewing() as renewer:
            self._stop_batch(task, run, renewer)

    def _stop_batch(self, task: Task, run: Run, renewer: _IntentRenewer) -> None:
        started = _parallel(
            self.policy.start_concurrency,
            lambda m: self._unless_taken(
                run.run_id, m, lambda: self._stop_one(run.run_id, m, renewer)
            ),
            task.machines,
        )
        self._retry_later(
            task, run, [row for row, op in started if op is None and row.action in WATCHED]
        )
        finished = self._wait_all(started)
        for row, result in finished:
            if self._record_result(
                row,
                result,
                MachineAction.DEALLOCATED,
                MachineAction.DEALLOCATE_FAILED,
                PowerState.DEALLOCATED,
                "deallocate",
            ):
                self._release(run.run_id, MachineId.parse(row.resource_id))

    def _stop_one(
        self, run_id: RunId, machine: MachineId, renewer: _IntentRenewer
    ) -> tuple[MachineRecord, PowerOperationHandle | None]:
        row = self.ledger.find_machine(run_id, machine.text)
        if row is None or not row.owned_by_run:
            return row or MachineRecord.planned(run_id, machine.text, self.clock.now()), None
        if row.action is MachineAction.DEALLOCATING and self._intent_is_fresh(row):
            return row, None  # another worker is deallocating it; finish waits for it
        if self._hand_over(run_id, row):
            return self.ledger.find_machine(run_id, machine.text) or row, None
        now = self.clock.now()
        try:
            power = self.machines.get_power(machine)
        except AzureCallFailed as e:
            if e.is_transient:
                return row, None  # retried in a later stop task
            return self._save_failure(row, MachineAction.DEALLOCATE_FAILED, e), None
        if row.action is MachineAction.STARTING and power.state in (
            PowerState.DEALLOCATED,
            PowerState.STOPPED,
        ):
            if self._intent_is_fresh(row):
                # Its start call may still be on its way to Azure: look again shortly.
                return row, None
            self._release(run_id, machine)
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.ALREADY_STOPPED,
                    now,
                    f"found {power.state}: the app's start never took effect",
                    last_power_state=str(power.state),
                )
            ), None
        if row.action is MachineAction.START_FAILED and power.state not in (
            PowerState.RUNNING,
            PowerState.STARTING,
        ):
            # Its start failed and it did not come up: it stays "StartFailed" in the report.
            self._release(run_id, machine)
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.START_FAILED,
                    now,
                    NOTHING_TO_STOP,
                    last_power_state=str(power.state),
                )
            ), None
        if row.action is MachineAction.DEALLOCATING and power.state is PowerState.DEALLOCATING:
            return row, None  # the app's deallocate is under way; finish looks again
        if row.action is MachineAction.DEALLOCATING and power.state is PowerState.DEALLOCATED:
            # A deallocate sent before (its worker died, or its answer was lost) did it.
            self._release(run_id, machine)
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.DEALLOCATED,
                    now,
                    "found deallocated after the app's deallocate",
                    last_power_state=str(power.state),
                )
            ), None
        if power.state not in (
            PowerState.RUNNING,
            PowerState.STARTING,
            PowerState.STOPPED,
            PowerState.STOPPING,
        ):
            self._release(run_id, machine)
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.ALREADY_STOPPED,
                    now,
                    f"found {power.state}",
                    last_power_state=str(power.state),
                )
            ), None
        # "stopped" still bills for compute: deallocate it too.
        row = self.ledger.save_machine(
            row.moved_to(MachineAction.DEALLOCATING, now, "deallocate requested")
        )
        renewer.hold(row)
        return self._call(
            row,
            lambda: self.machines.begin_deallocate(machine),
            MachineAction.STARTED,
            MachineAction.DEALLOCATE_FAILED,
        )

    def _release(self, run_id: RunId, machine: MachineId) -> None:
        for _ in range(MAX_CONFLICT_RETRIES):
            claim = self.ledger.find_claim(machine)
            if claim is None:
                return
            try:
                self.ledger.save_claim(claim.released_by(run_id.text))
                return
            except LedgerConflict:
                continue

    def finish(self, task: Task) -> None:
        """Once the stops are done: health check, patch results, the report."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.WRAPPING_UP:
            return
        if not self._take_round(run.run_id, "finish", task.round):
            log.info("Run %s: finish round %d ran already", run.run_id.text, task.round)
            return
        # Sent before the work, as verify does: a host dying mid-round does not end the loop.
        self.queue.send(task.next_round(), self.policy.arg_retry)
        rows = list(self.ledger.list_machines(run.run_id))
        # Not from wrap-up's list: a start that landed after it (or a lost answer) shows here.
        busy = [
            r for r in rows if r.owned_by_run and r.action is not MachineAction.DEALLOCATE_FAILED
        ]
        now = self.clock.now()
        started = run.wrap_up_started_at or now
        if busy and now - started < self.policy.wrap_up_wait:
            again = tuple(
                MachineId.parse(r.resource_id) for r in busy if self._needs_stop_task(r, started)
            )
            for batch in _chunks(again, self.policy.start_batch_size):
                self.queue.send(Task(TaskKind.STOP, run.run_id, tuple(batch), task.round))
            return
        if self._note_left_running(run, rows):
            rows = list(self.ledger.list_machines(run.run_id))
        health = self._health(run, rows, now)
        if health is None:
            return  # the next round asks again
        patches = matched_patch_results(self.graph, run, rows)
        final = self._update_run(
            run.run_id,
            lambda r: replace(r, status=RunStatus.COMPLETED, completed_at=now, updated_at=now),
        )
        report = build_report(final, rows, self.ledger, patches=patches, health=health)
        location = self.reports.save_report(run.run_id, report)
        self._update_run(run.run_id, lambda r: replace(r, report_location=location))
        self.queue.send(Task(TaskKind.NOTIFY, run.run_id))
        log.info("Run %s completed; report at %s", run.run_id.text, location)

    def _needs_stop_task(self, row: MachineRecord, wrap_up_started: datetime) -> bool:
        """An owned machine no stop task is known to be handling: started (or its answer
        lost) after wrap-up listed the machines, waiting longer than a stop task takes to be
        picked up, or a deallocate whose worker is gone."""
        if row.action is MachineAction.DEALLOCATING:
            return not self._intent_is_fresh(row)
        if _answer_lost(row) or row.updated_at >= wrap_up_started:
            return True
        return self.clock.now() - row.updated_at >= self.policy.task_lease

    def _note_left_running(self, run: Run, rows: Sequence[MachineRecord]) -> bool:
        """Wrap-up is over: name every VM the run owns that may still run, loudly. A failed
        deallocate is read again first (it may have worked). True if a row changed."""
        changed = False
        left = []
        for row in (r for r in rows if r.owned_by_run):
            if row.action is MachineAction.DEALLOCATE_FAILED:
                try:
                    state = self.machines.get_power(MachineId.parse(row.resource_id)).state
                except AzureCallFailed:
                    state = None
                if state is PowerState.DEALLOCATED:
                    self._move(
                        row,
                        MachineAction.DEALLOCATED,
                        "found deallocated after a failed deallocate answer",
                        (MachineAction.DEALLOCATE_FAILED,),
                        last_power_state=str(state),
                    )
                    changed = True
                    continue
            left.append(row.resource_id)
        if not left:
            return changed
        self._note(
            run.run_id,
            NoteLevel.ERROR,
            "wrap-up",
            f"{len(left)} VMs the app started may still be running after "
            f"{self.policy.wrap_up_wait} of wrap-up; stop them by hand: " + ", ".join(left),
        )
        return changed

    def _health(
        self, run: Run, rows: Sequence[MachineRecord], now: datetime
    ) -> dict[str, object] | None:
        """Heartbeats of the machines that should be up; None means "wait and ask again"."""
        workspace = self.policy.log_analytics_workspace_id
        if workspace is None or self.heartbeats is None:
            return {"checked": False, "reason": "no Log Analytics workspace configured"}
        expected = [
            MachineId.parse(r.resource_id)
            for r in rows
            if r.prior_power_state == PowerState.RUNNING
            or r.action in (MachineAction.HANDED_OVER, MachineAction.SHARED_WITH_RUN)
        ]
        if not expected:
            return {"checked": True, "expected": 0, "missing": []}
        since = run.post_event_at or run.wrap_up_started_at or now
        try:
            answer = self.heartbeats.list_last_heartbeats(workspace, expected, since, now)
        except AzureCallFailed as e:
            self._note(run.run_id, NoteLevel.WARNING, "health", f"heartbeat query failed: {e}")
            return {"checked": False, "reason": str(e)}
        missing = [m.text for m in expected if m not in answer.last_seen]
        waited = now - (run.wrap_up_started_at or now)
        if missing and waited < self.policy.health_wait:
            return None
        if missing:
            self._note(
                run.run_id,
                NoteLevel.ERROR,
                "health",
                f"{len(missing)} machines sent no heartbeat after the run",
            )
        return {
            "checked": True,
            "expected": len(expected),
            "missing": missing,
            "complete": answer.complete,
            "partialErrors": list(answer.partial_errors),
        }

    def notify(self, task: Task) -> None:
        """Send the finished run's summary to the webhook; a failure raises (queue retries)."""
        if self.notifier is None:
            return
        run = self._run(task)
        if run is None or run.status is not RunStatus.COMPLETED:
            return
        report = self.reports.get_report(run.run_id)
        self.notifier.send(summary_message(run, report))
        log.info("Run %s: report sent to the webhook", run.run_id.text)

    def note_poisoned(self, task: Task, dequeue_count: int) -> None:
        """A task failed `dequeue_count` times and went to the poison queue: say so in the
        run's record and its report (if written), so nothing is lost silently."""
        message = (
            f"task {task.kind.value} (round {task.round}, {len(task.machines)} machines) "
            f"failed {dequeue_count} times and was moved to the poison queue"
        )
        self._note(task.run_id, NoteLevel.ERROR, "poison", message)
        report = self.reports.get_report(task.run_id)
        if report is not None:
            amended = dict(report)
            amended["notes"] = [
                *report.get("notes", []),
                {
                    "at": self.clock.now().isoformat(),
                    "level": NoteLevel.ERROR.value,
                    "source": "poison",
                    "message": message,
                },
            ]
            self.reports.save_report(task.run_id, amended)

    # shared -------------------------------------------------------------------------------

    def _run(self, task: Task) -> Run | None:
        run = self.ledger.find_run(task.run_id)
        if run is None:
            log.warning("Task %s for unknown run %s dropped", task.kind, task.run_id.text)
        return run

    def _is_active(self, run_text: str) -> bool:
        try:
            other = self.ledger.find_run(RunId.parse(run_text))
        except InvalidId:
            return False
        return other is not None and other.is_active

    def _claim_for_start(self, run_id: RunId, machine: MachineId) -> bool:
        """Make this run the VM's owner unless another active run already is."""
        for _ in range(MAX_CONFLICT_RETRIES):
            claim = self.ledger.find_claim(machine) or MachineClaim(resource_id=machine.text)
            owner = claim.owner_run
            mine = owner is None or owner.lower() == run_id.key or not self._is_active(owner)
            updated = claim.needing(run_id.text)
            if mine:
                updated = replace(updated, owner_run=run_id.text)
            try:
                self.ledger.save_claim(updated)
            except LedgerConflict:
                continue
            return mine
        raise LedgerConflict(f"claim of {machine.text} kept changing")

    def _need(self, run_id: RunId, machine: MachineId) -> None:
        for _ in range(MAX_CONFLICT_RETRIES):
            claim = self.ledger.find_claim(machine) or MachineClaim(resource_id=machine.text)
            try:
                self.ledger.save_claim(claim.needing(run_id.text))
                return
            except LedgerConflict:
                continue

    def _unless_taken(
        self,
        run_id: RunId,
        machine: MachineId,
        step: Callable[[], tuple[MachineRecord, PowerOperationHandle | None]],
    ) -> tuple[MachineRecord, PowerOperationHandle | None]:
        """Run a start or stop step for one machine; if another delivery of the same work wrote
        the machine's row first (a version conflict), its row decides and nothing was sent."""
        try:
            return step()
        except LedgerConflict:
            log.info("Run %s: %s is being handled by another worker", run_id.text, machine.text)
            row = self.ledger.find_machine(run_id, machine.text)
            return (row or MachineRecord.planned(run_id, machine.text, self.clock.now())), None

    def _call(
        self,
        row: MachineRecord,
        call: Callable[[], PowerOperationHandle],
        retry_as: MachineAction,
        failed_as: MachineAction,
    ) -> tuple[MachineRecord, PowerOperationHandle | None]:
        """Send a power operation whose intent is recorded; a throttled or unanswered call
        puts the row back (`retry_as`) for a later task, a refusal records the failure."""
        try:
            return row, call()
        except AzureCallFailed as e:
            if isinstance(e, CallWithdrawn):
                # Only ever throttled, and the run stopped wanting it meanwhile: never sent.
                return self._move(row, retry_as, "throttled, then withdrawn: not sent"), None
            if e.status == 429:
                # Throttled: ARM refused the call before acting on it.
                detail = f"{e.service} answered {e.status}: will retry"
                return self._move(row, retry_as, detail), None
            if e.is_transient:
                # A 5xx or no answer after the call went out: Azure may have applied it. The
                # intent stays (the VM stays the run's); its power state decides on retry.
                return self._mark_answer_lost(
                    row, f"{e.service} answered {e.status or 'nothing'} {e.code or ''}".rstrip()
                ), None
            return self._save_failure(row, failed_as, e, refused=True), None

    def _mark_answer_lost(self, row: MachineRecord, why: str) -> MachineRecord:
        """Keep the row's intent (Starting/Deallocating), noting that no worker waits on it."""
        waiting = row.action
        return self._save_latest(
            row,
            lambda r: (
                r.moved_to(waiting, self.clock.now(), f"{ANSWER_LOST}: {why}")
                if r.action is waiting
                else r
            ),
        )

    def _wait_all(
        self, started: Sequence[tuple[MachineRecord, PowerOperationHandle | None]]
    ) -> list[tuple[MachineRecord, OperationResult]]:
        """Wait for the started operations together (each polls on its own thread)."""
        waiting = [(row, op) for row, op in started if op is not None]
        timeout = self.policy.operation_wait_seconds
        return _parallel(
            max(1, len(waiting)), lambda pair: (pair[0], pair[1].wait(timeout)), waiting
        )

    def _move(
        self,
        row: MachineRecord,
        action: MachineAction,
        detail: str,
        only_from: tuple[MachineAction, ...] = (),
        **changes: Any,
    ) -> MachineRecord:
        """Record `action` on the freshest copy of the machine's row, unless another worker
        recorded it already (a step seen twice is recorded once) or, with `only_from`, the row
        has moved on from those actions meanwhile (an answer that came too late to matter)."""
        now = self.clock.now()

        def change(current: MachineRecord) -> MachineRecord:
            if current.action is action or (only_from and current.action not in only_from):
                return current
            return current.moved_to(action, now, detail, **changes)

        return self._save_latest(row, change)

    def _save_failure(
        self,
        row: MachineRecord,
        action: MachineAction,
        error: AzureCallFailed,
        *,
        refused: bool = False,
    ) -> MachineRecord:
        self._note(
            row.run_id,
            NoteLevel.ERROR,
            action.value,
            f"{row.resource_id}: {error.code}: {error.message}",
        )
        return self._save_latest(
            row,
            lambda r: r.moved_to(
                action,
                self.clock.now(),
                f"{REFUSED if refused else ''}{error.service} answered {error.code}",
                error_code=error.code,
                error_message=error.message,
            ),
        )

    def _intent_is_fresh(self, row: MachineRecord) -> bool:
        """Written so recently that its worker may still be calling Azure (no call, throttle
        retries included, outlasts OPERATION_WAIT_SECONDS plus a minute)."""
        if _answer_lost(row):
            return False
        return self.clock.now() - row.updated_at < self.policy.task_lease

    def _renewing(self) -> _IntentRenewer:
        return _IntentRenewer(self._renew, self.policy.task_lease.total_seconds() / 3)

    def _renew(self, held: MachineRecord) -> None:
        """Refresh the lease of an intent this worker still holds (nothing else changes)."""
        row = self.ledger.find_machine(held.run_id, held.resource_id)
        if row is None:
            return

        def touch(current: MachineRecord) -> MachineRecord:
            if current.action is not held.action or _answer_lost(current):
                return current  # settled meanwhile: nothing of ours to keep alive
            return replace(current, updated_at=self.clock.now())

        self._save_latest(row, touch)

    def _take_round(self, run_id: RunId, step: str, round_: int) -> bool:
        """Make this delivery the watch loop's round `round_` of `step`; False when a later
        round (or step) already ran, or this round did: a duplicate leaves at once. A loop
        silent for three intervals and a lease is dead, and any round takes it over."""
        now = self.clock.now()
        silent_for = 3 * max(self.policy.verify_interval, self.policy.arg_retry)
        silent_for += self.policy.task_lease
        taken: list[bool] = []

        def claim(run: Run) -> Run:
            taken.clear()
            if not _round_is_new(run.watch_round, step, round_, now - silent_for):
                taken.append(False)
                return run
            taken.append(True)
            return replace(run, watch_round=f"{step}:{round_}:{now.isoformat()}")

        self._update_run(run_id, claim)
        return bool(taken and taken[0])

    def _save_latest(
        self, row: MachineRecord, change: Callable[[MachineRecord], MachineRecord]
    ) -> MachineRecord:
        """Apply `change` to the freshest copy of the row (re-read on a version conflict)."""
        current = row
        for _ in range(MAX_CONFLICT_RETRIES):
            updated = change(current)
            if updated is current:
                return current  # nothing to record
            try:
                return self.ledger.save_machine(updated)
            except LedgerConflict:
                fresh = self.ledger.find_machine(row.run_id, row.resource_id)
                if fresh is None:
                    raise
                current = fresh
        raise LedgerConflict(f"machine {row.resource_id} kept changing")

    def _update_run(self, run_id: RunId, change: Callable[[Run], Run]) -> Run:
        for _ in range(MAX_CONFLICT_RETRIES):
            current = self.ledger.find_run(run_id)
            if current is None:
                raise LedgerConflict(f"run {run_id.text} vanished")
            updated = change(current)
            if updated is current:
                return current
            try:
                return self.ledger.save_run(updated)
            except LedgerConflict:
                continue
        raise LedgerConflict(f"run {run_id.text} kept changing")

    def _note(self, run_id: RunId, level: NoteLevel, source: str, message: str) -> None:
        log.log(
            logging.ERROR
            if level is NoteLevel.ERROR
            else logging.WARNING
            if level is NoteLevel.WARNING
            else logging.INFO,
            "Run %s [%s]: %s",
            run_id.text,
            source,
            message,
        )
        self.ledger.add_note(
            RunNote(run_id=run_id, at=self.clock.now(), level=level, source=source, message=message)
        )


class _IntentRenewer:
    """Keeps the Starting/Deallocating intents a task holds fresh while it works, so a lapsed
    intent means a dead worker (TASK_LEASE_SECONDS) rather than a slow one."""

    def __init__(self, renew: Callable[[MachineRecord], None], every_seconds: float) -> None:
        self._renew = renew
        self._every = max(every_seconds, 0.5)
        self._held: dict[str, MachineRecord] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="intent-renewer", daemon=True)

    def hold(self, row: MachineRecord) -> None:
        """Renew this row's intent until the task ends."""
        with self._lock:
            self._held[row.resource_id.lower()] = row

    def __enter__(self) -> _IntentRenewer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=self._every + 5)

    def _loop(self) -> None:
        while not self._done.wait(self._every):
            with self._lock:
                rows = list(self._held.values())
            for row in rows:
                if self._done.is_set():
                    return
                try:
                    self._renew(row)
                except Exception as e:  # a missed renewal only shortens the lease
                    log.warning("Could not renew the intent on %s: %s", row.resource_id, e)


def _round_is_new(current: str | None, step: str, round_: int, dead_before: datetime) -> bool:
    """Whether round `round_` of `step` comes after the recorded `current` round."""
    if not current:
        return True
    try:
        recorded_step, recorded_round, at = current.split(":", 2)
        recorded_at = datetime.fromisoformat(at)
        recorded_order = WATCH_STEPS.index(recorded_step)
        recorded = int(recorded_round)
    except ValueError:
        return True
    if recorded_at < dead_before:
        return True
    order = WATCH_STEPS.index(step)
    if order != recorded_order:
        return order > recorded_order
    return round_ > recorded


def _still_patching(word: str | None) -> bool:
    status = PlatformStatus.of(word)
    return isinstance(status, PlatformStatus) and status.machine_unfinished


def _answer_lost(row: MachineRecord) -> bool:
    """The row's last step is a call whose answer was lost (no worker is waiting on it)."""
    return bool(row.history) and row.history[-1][2].startswith(ANSWER_LOST)


def _to_preparing(run: Run) -> Run:
    if run.status is RunStatus.PREPARING:
        return run
    if run.status is not RunStatus.PRE_EVENT_RECEIVED:
        return run
    return replace(run, status=RunStatus.PREPARING)


def _gate(run: Run, outcome: GateOutcome, detail: str) -> Run:
    """Record the gate's decision; a run being prepared is prepared now (a cancelled one stays
    cancelled: the cancel already moved it)."""
    status = run.status
    if status in (RunStatus.PREPARING, RunStatus.PRE_EVENT_RECEIVED):
        status = RunStatus.PREPARED
    return replace(run, status=status, gate_outcome=outcome, gate_detail=detail)


def _chunks(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + max(1, size)])


def _parallel(workers: int, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Run `work` on each item with at most `workers` at once; exceptions propagate."""
    listed = list(items)
    if not listed:
        return []
    if workers <= 1 or len(listed) == 1:
        return [work(item) for item in listed]
    with ThreadPoolExecutor(max_workers=min(workers, len(listed))) as pool:
        return list(pool.map(work, listed))
