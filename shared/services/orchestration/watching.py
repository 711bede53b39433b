"""The steps between the starts and T: verify (bulk power reads until every VM the app started
runs, or T-15) and the gate (good enough, or cancel inside the window), and the read-back of a
cancel Azure only accepted."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import MachineId
from shared.domain.machine_steps import (
    GATE_COUNTED,
    WATCHED,
    accepted,
    machine_of,
    not_running_yet,
    orphaned_start,
    seen_running,
)
from shared.domain.machines import MachinePower, PowerState
from shared.domain.policy import GateCount
from shared.domain.run_steps import with_gate
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    NoteLevel,
    Run,
    RunStatus,
)
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import machines_running_deadline
from shared.domain.vocabulary import CancelSource, CancelVerdict, GateOutcome
from shared.services import cancel_confirmation, cancellation
from shared.services.orchestration.base import StepsBase
from shared.services.orchestration.fan_out import chunks, parallel

log = logging.getLogger(__name__)


class Watching(StepsBase):
    """verify, gate, confirm_cancel."""

    def verify(self, task: Task) -> None:
        """Re-read power states until every VM the app started runs, or T−15 passes."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.PREPARING:
            return
        now = self.clock.now()
        deadline = machines_running_deadline(run.scheduled_start)
        delay = min(self.policy.verify_interval, max(deadline - now, timedelta(seconds=1)))
        # The next round is sent before the work: if this host dies mid-round, the loop still
        # goes on (a message in flight on a dead host stays invisible for minutes).
        if not self._begin_round(run, "verify", task, delay if now < deadline else None):
            return
        # Starts settled running are not read again: every round reads only what is left.
        rows = list(self.ledger.list_machines_not_seen_running(run.run_id))
        self._restart_stalled_fan_out(run, rows, task.round)
        updated, came_up = self._read_watched(rows)
        unsettled = [r for r in rows if r.action is MachineAction.PLANNED]
        unsettled += [r for r in updated if not_running_yet(r)]
        # A VM this round saw running is no orphan, even while its row waits to be settled.
        self._restart_orphans(run, [r for r in updated if r.resource_id not in came_up], task.round)
        if not unsettled or self.clock.now() >= deadline:
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

    def _read_watched(self, rows: Sequence[MachineRecord]) -> tuple[list[MachineRecord], set[str]]:
        """The rows verify watches, each as a bulk power read leaves it, and the resource ids
        of the starts this read saw come up. A start Azure reported failed is read again too
        (it may have come up after all); one seen running since it was started is settled and
        not read again."""
        watched = [r for r in rows if r.action in WATCHED or r.owned_by_run]
        to_read = [r for r in watched if not seen_running(r)]
        powers = self._read_power(machine_of(r) for r in to_read)
        updated = [r for r in watched if seen_running(r)]
        # The usual news, a start come up, is recorded for many rows in one write each. A
        # write another writer got into (most often an overlapping round, when a round takes
        # longer than the interval) is left to the next round, which lists its rows afresh:
        # reading them again here would read the run's key range from the group's first row
        # to its last, nearly the whole partition, since the rows one round settles are
        # spread over it. Until then they count as not running yet.
        up = [r for r in to_read if self._came_up(r, powers.get(machine_of(r)))]
        updated += self._move_together(
            up,
            MachineAction.STARTED,
            "seen running",
            leave_conflicted=True,
            last_power_state=str(PowerState.RUNNING),
        )
        updated += parallel(
            self.policy.start_concurrency,
            lambda r: self._refresh(r, powers.get(machine_of(r)), record_passing=False),
            [r for r in to_read if not self._came_up(r, powers.get(machine_of(r)))],
        )
        return updated, {r.resource_id for r in up}

    @staticmethod
    def _came_up(row: MachineRecord, power: MachinePower | None) -> bool:
        """A start the app sent, and the VM now runs."""
        return (
            row.action is MachineAction.STARTING
            and power is not None
            and power.state is PowerState.RUNNING
        )

    def _restart_orphans(self, run: Run, rows: Sequence[MachineRecord], round_: int) -> None:
        """Starts whose worker died before the call reached Azure: start them again."""
        now = self.clock.now()
        if now >= run.scheduled_start:
            return
        orphaned = self.ledger.in_storage_order(
            machine_of(r) for r in rows if orphaned_start(r, now, self.policy.task_lease)
        )
        if orphaned:
            self.queue.send(Task(TaskKind.START, run.run_id, tuple(orphaned), round_))

    def _restart_stalled_fan_out(
        self, run: Run, rows: Sequence[MachineRecord], round_: int
    ) -> None:
        """Machines not looked at yet while nothing in the run has moved for a task lease
        (no step, no renewal): their start tasks died with a host. Send them again; a start
        task that is merely late finds their rows taken and does nothing twice. `rows` are
        those verify still reads: a start verify itself settled (seen running) is not a sign
        of live start tasks, and is not among them."""
        planned = [r for r in rows if r.action is MachineAction.PLANNED]
        now = self.clock.now()
        if not planned or now >= run.scheduled_start:
            return
        quiet_for = now - max(r.updated_at for r in rows)
        if quiet_for < self.policy.task_lease or not self._turns_near(map(machine_of, planned)):
            return
        log.warning(
            "Run %s: the fan-out has not moved for %s; %d machines get new start tasks",
            run.run_id.text,
            quiet_for,
            len(planned),
        )
        machines = self.ledger.in_storage_order(MachineId.parse(r.resource_id) for r in planned)
        for batch in chunks(machines, self.policy.start_batch_size):
            self.queue.send(Task(TaskKind.START, run.run_id, tuple(batch), round_))

    def _refresh(
        self, row: MachineRecord, power: MachinePower | None, *, record_passing: bool = True
    ) -> MachineRecord:
        """Record what a bulk read says of a watched machine; a start Azure accepted is
        settled here: running, or failed (the VM's last operation failed, or it stayed down
        for a lease after the start was accepted). Without `record_passing`, the power state
        of a VM still starting (one row write per VM and verify round, for a word its next
        step replaces) is only returned, for this round's decisions: its end is recorded."""
        if power is None or power.state is None:
            return row  # unread this round, or Azure does not describe it
        state = str(power.state)
        if row.action is MachineAction.STARTING and power.state is PowerState.RUNNING:
            return self._move(row, MachineAction.STARTED, "seen running", last_power_state=state)
        if (
            row.action is MachineAction.STARTING
            and accepted(row)
            and power.state in (PowerState.DEALLOCATED, PowerState.STOPPED)
            and (power.failed_code or self.clock.now() - row.updated_at >= self.policy.task_lease)
        ):
            return self._start_failed(row, power)
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
        if not record_passing and row.action is MachineAction.STARTING:
            return replace(row, last_power_state=state)
        # updated_at is left alone: it dates the app's own steps and their leases.
        return self._save_latest(row, lambda r: replace(r, last_power_state=state))

    def _start_failed(self, row: MachineRecord, power: MachinePower) -> MachineRecord:
        """An accepted start whose VM did not come up: Azure's failure words when it has any."""
        code = power.failed_code or "NotStarted"
        message = power.failed_message or (
            f"the start was accepted, but the VM is still {power.state} a lease later"
        )
        recorded = self._move(
            row,
            MachineAction.START_FAILED,
            f"start failed: {code}",
            (MachineAction.STARTING,),
            error_code=code,
            error_message=message,
            last_power_state=str(power.state),
        )
        if recorded.action is MachineAction.START_FAILED:
            self._note(
                row.run_id,
                NoteLevel.ERROR,
                "start",
                f"{row.resource_id}: start failed: {code}: {message}",
            )
        return recorded

    def gate(self, task: Task) -> None:
        """Decide: good enough, or cancel (inside the window), or report it is too late."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.PREPARING:
            return
        count = self._count_at_gate(run)
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
            self._update_run(run.run_id, lambda r: with_gate(r, GateOutcome.PASSED, detail))
            log.info("Run %s: gate passed: %s", run.run_id.text, detail)
            return
        self._cancel_at_gate(run, task, detail)

    def _count_at_gate(self, run: Run) -> GateCount:
        """Machines the app had to start and how many of them are not running now. What
        verify saw last may be stale or missing (a throttled read leaves the old word): the rest
        are read once more, and a VM Azure will not describe is not a failure."""
        rows = [r for r in self.ledger.list_machines(run.run_id) if r.action in GATE_COUNTED]
        never_started = [r for r in rows if r.action is MachineAction.PLANNED]
        doubtful = [
            r for r in rows if r.action is not MachineAction.PLANNED and not seen_running(r)
        ]
        powers = self._read_power(machine_of(r) for r in doubtful)
        # Recorded too: a start seen running (or failed) reads so in the report.
        parallel(
            self.policy.start_concurrency,
            lambda r: self._refresh(r, powers.get(machine_of(r))),
            doubtful,
        )
        # None: Azure would not answer (throttled, failing) or does not list the VM.
        readings = [
            None if p is None or p.state is None else p.state
            for p in (powers.get(machine_of(r)) for r in doubtful)
        ]
        down = sum(1 for state in readings if state is not None and state is not PowerState.RUNNING)
        return GateCount(
            attempted=len(rows),
            not_running=len(never_started) + down,
            unknown=sum(1 for state in readings if state is None),
        )

    def _cancel_at_gate(self, run: Run, task: Task, detail: str) -> None:
        """Too many VMs are not running: cancel inside the window, and record the answer."""
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
            self._update_run(run.run_id, lambda r: with_gate(r, GateOutcome.CANCEL_FAILED, failed))
            return
        if answer.verdict is CancelVerdict.TOO_EARLY:
            # Verify finished before T−40 (the pre event can come a few minutes early).
            self.queue.send(task.next_round(), answer.window.opens_at - answer.now)
            return
        outcome = answer.verdict.gate_outcome
        level = NoteLevel.WARNING if outcome is GateOutcome.CANCELLED else NoteLevel.ERROR
        self._note(run.run_id, level, "gate", f"{detail}; {answer.explanation}")
        self._update_run(
            run.run_id, lambda r: with_gate(r, outcome, f"{detail}; {answer.explanation}")
        )

    def confirm_cancel(self, task: Task) -> None:
        """Read back a run whose cancel Azure only accepted (or whose answer was lost); a
        report already written gets what Azure finally said."""
        notes = cancel_confirmation.confirm_cancel(task, self.cancel_context())
        run = self.ledger.find_run(task.run_id)
        if not notes or run is None or run.report_location is None:
            return
        self._amend_report(run.run_id, notes, platformStatus=run.platform_status)
