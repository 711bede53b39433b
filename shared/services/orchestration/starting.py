"""The first steps of a run: prepare (find its machines in Resource Graph, record them, fan the
starts out) and start (one batch of VMs: read, decide, record the intent, send the start; nothing
waits for a VM to boot)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import MachineId, RunId
from shared.domain.machine_steps import (
    START_ACCEPTED,
    Next,
    answer_lost,
    start_after_reading,
    start_before_reading,
)
from shared.domain.machines import OperationOutcome, OperationResult
from shared.domain.run_steps import to_preparing, with_gate
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    NoteLevel,
    Run,
    RunStatus,
)
from shared.domain.tasks import MAX_TASK_DELAY, Task, TaskKind
from shared.domain.timeline import machines_running_deadline, preparation_due
from shared.domain.vocabulary import GateOutcome
from shared.services.orchestration.base import Deferred
from shared.services.orchestration.fan_out import chunks, on_first_use, parallel
from shared.services.orchestration.intent_renewer import IntentRenewer
from shared.services.orchestration.ownership import Ownership

log = logging.getLogger(__name__)


class Starting(Ownership):
    """prepare and start."""

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
                lambda r: with_gate(
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
                run.run_id,
                lambda r: with_gate(r, GateOutcome.NOTHING_TO_START, "no machines listed"),
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
        self._update_run(run.run_id, to_preparing)
        if created == len(listed):
            to_start = [m.machine for m in listed]  # every row is new: all Planned
        else:
            # Another delivery got here first: its rows say what is left to look at.
            to_start = [
                MachineId.parse(r.resource_id)
                for r in self.ledger.list_machines(run.run_id)
                if r.action in (MachineAction.PLANNED, MachineAction.STARTING)
            ]
        # Cut in the ledger's order, so that each start task reads its rows as one short range.
        to_start = self.ledger.in_storage_order(to_start)
        # Verify first: it is also the fan-out's watchdog, should this host die while sending.
        self.queue.send(Task(TaskKind.VERIFY, run.run_id), self.policy.verify_interval)
        self._send_all(
            Task(TaskKind.START, run.run_id, tuple(batch))
            for batch in chunks(to_start, self.policy.start_batch_size)
        )
        log.info(
            "Run %s: %d machines listed (%d new), %d to look at in %d start tasks",
            run.run_id.text,
            len(listed),
            created,
            len(to_start),
            -(-len(to_start) // self.policy.start_batch_size),
        )

    def start(self, task: Task) -> None:
        """Start the stopped VMs of one batch, with bounded concurrency. A task whose write
        turns are all far goes back to the queue before reading anything: the delivery that
        finds a turn near reads the run (and stops if it no longer prepares)."""
        if self._turns_all_far(task):
            return
        run = self._run(task)
        if run is None or run.status is not RunStatus.PREPARING:
            return
        with self._renewing() as renewer:
            self._start_batch(task, run, renewer)

    def _start_batch(self, task: Task, run: Run, renewer: IntentRenewer) -> None:
        """Send the starts; nothing waits for a VM to boot: verify's bulk reads settle them.
        The batch's rows are read once, together, when the first machine's write turn comes
        (a task whose turns are all far off reads nothing; see `_start_one` for why a row read
        then is safe to act on later)."""
        rows = on_first_use(lambda: self.ledger.find_machines(run.run_id, task.machines))
        results = parallel(
            self.policy.start_concurrency,
            lambda m: self._in_turn(
                m,
                lambda: self._unless_taken(
                    run.run_id, m, lambda: self._start_one(run, m, rows().get(m), renewer)
                ),
            ),
            task.machines,
        )
        deferred = [r for r in results if isinstance(r, Deferred)]
        retry = [
            row
            for row in results
            if isinstance(row, MachineRecord)
            and (
                row.action is MachineAction.PLANNED
                or (row.action is MachineAction.STARTING and answer_lost(row))
            )
        ]
        # Machines only put off until their write turn go back on the queue without reading the
        # run again (most deliveries of a large fan-out end so): the next delivery reads it
        # first anyway. Throttled or unanswered starts are sent again only if still wanted.
        if retry and not self._still_starting(run.run_id):
            return
        self._retry_later(task, run, retry, deferred)

    def _start_one(
        self,
        run: Run,
        machine: MachineId,
        read: MachineRecord | None,
        renewer: IntentRenewer,
    ) -> MachineRecord:
        """Read one VM, decide (shared/domain/machine_steps), and start it if that is the
        decision. `read` is the VM's row as its task read the batch's rows, when the batch's
        first write turn came (None: it had no row; one is created, and a row another worker
        created meanwhile makes that a conflict).

        That row may be tens of seconds old by now (the machine waited for its own turn), and
        that is safe: every step that changes anything writes the row first, ETag-checked
        against the version read, and the start is sent only after the intent is stored. A
        row another worker changed meanwhile makes that write a conflict, and `_unless_taken`
        lets the current row decide, as when two deliveries of one task race. What a stale
        row can still cost is only what such a race costs: a read of the VM, the claim
        written for this same run again, a snapshot taken twice (when snapshots are on), or a
        row returned unchanged (a machine another worker holds) whose retry a later task or
        verify's orphaned-start check decides from the current row."""
        now = self.clock.now()
        row = read or self.ledger.save_machine(MachineRecord.planned(run.run_id, machine.text, now))
        decision = start_before_reading(row, now, self.policy.task_lease)
        if decision is None:
            try:
                facts = self.machines.get_machine(machine)
            except AzureCallFailed as e:
                if e.is_transient:
                    return row  # still Planned: retried in a later task
                return self._save_failure(row, MachineAction.START_FAILED, e)
            decision = start_after_reading(
                row, facts, run.run_id.text, run.scheduled_start, now, self.policy.opt_out_tag
            )
        if decision.next is Next.LEAVE:
            return row
        if decision.next is Next.RECORD:
            return self.ledger.save_machine(decision.applied_to(row, now))
        if decision.next is Next.ALREADY_UP:
            return self._already_up(run, row, machine, decision.changes, now)
        return self._send_start(run, row, machine, decision.changes, renewer)

    def _send_start(
        self,
        run: Run,
        row: MachineRecord,
        machine: MachineId,
        seen: Mapping[str, str],
        renewer: IntentRenewer,
    ) -> MachineRecord:
        """Claim the VM, take its snapshot if asked, record the intent, send the start."""
        now = self.clock.now()
        if not self._claim_for_start(run.run_id, machine):
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.SHARED_WITH_RUN, now, "another run is starting it", **seen
                )
            )
        if self.policy.snapshot_before_start:
            snapshot = self._snapshot(run.run_id, machine)
            if not snapshot.succeeded:
                return self.ledger.save_machine(
                    row.moved_to(
                        MachineAction.START_FAILED,
                        now,
                        "OS disk snapshot failed; not started",
                        prior_power_state=seen["prior_power_state"],
                        error_code=snapshot.code,
                        error_message=snapshot.message,
                    )
                )
        # Written before calling Azure: a retry finds it and checks instead of starting again.
        row = self.ledger.save_machine(
            row.moved_to(
                MachineAction.STARTING, now, "start requested", owner_run=run.run_id.text, **seen
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
            )
        return self._call(
            row,
            lambda: self.machines.start(machine, lambda: self._still_starting(run.run_id)),
            MachineAction.PLANNED,
            MachineAction.START_FAILED,
            START_ACCEPTED,
            renewer,
        )

    def _still_starting(self, run_id: RunId) -> bool:
        """The run still wants its machines started (no cancel, no wrap-up yet)."""
        current = self.ledger.find_run(run_id)
        return current is not None and current.status is RunStatus.PREPARING

    def _snapshot(self, run_id: RunId, machine: MachineId) -> OperationResult:
        name = f"{machine.name}-osdisk-um-{run_id.run_name}"[:80]
        try:
            return self.machines.begin_snapshot_os_disk(machine, name).wait(
                self.policy.operation_wait_seconds
            )
        except AzureCallFailed as e:
            return OperationResult(OperationOutcome.FAILED, e.code, e.message)
