"""The last steps: finish (settle the deallocations, name any VM left running, health check,
patch results, the report), notify, and the record of a task that went to the poison queue."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import MachineId
from shared.domain.machine_steps import (
    accepted,
    answer_lost,
    machine_of,
)
from shared.domain.machines import MachinePower, PowerState
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    NoteLevel,
    Run,
    RunStatus,
)
from shared.domain.tasks import Task, TaskKind
from shared.services.orchestration.fan_out import chunks, parallel
from shared.services.orchestration.wrapping_up import WrappingUp, carried_word
from shared.services.reporting import build_report, matched_patch_results, summary_message

log = logging.getLogger(__name__)


class Finishing(WrappingUp):
    """finish, notify, note_poisoned."""

    def finish(self, task: Task) -> None:
        """Once the stops are done: health check, patch results, the report."""
        run = self._run(task)
        if run is None or run.status is not RunStatus.WRAPPING_UP:
            return
        # The next round is sent before the work, as verify does: a host dying mid-round does
        # not end the loop.
        if not self._begin_round(run, "finish", task, self.policy.arg_retry):
            return
        rows = list(self.ledger.list_machines(run.run_id))
        # Not from wrap-up's list: a start that landed after it (or a lost answer) shows here.
        busy = [
            r for r in rows if r.owned_by_run and r.action is not MachineAction.DEALLOCATE_FAILED
        ]
        now = self.clock.now()
        started = run.wrap_up_started_at or now
        if busy and now - started < self.policy.wrap_up_wait:
            last_moved = max(r.updated_at for r in rows)
            if self._still_stopping(run, busy, started, task.round, last_moved):
                return
            rows = list(self.ledger.list_machines(run.run_id))
        if not self._still_latest_round(run, task):
            return  # a slow round: a later one took over and ends the run
        checked = self._health(run, rows, now)
        if checked is None:
            return  # the next round asks again
        health, health_notes = checked
        # Only the round that moves the run to Completed goes on: notes, report and summary
        # are written once, however the rounds overlapped.
        final = self._complete(run, now)
        if final is None:
            return
        if self._note_left_running(run, rows):
            rows = list(self.ledger.list_machines(run.run_id))
        for level, text in health_notes:
            self._note(run.run_id, level, "health", text)
        patches = matched_patch_results(self.graph, run, rows)
        report = build_report(final, rows, self.ledger, patches=patches, health=health)
        location = self.reports.save_report(run.run_id, report)
        self._update_run(run.run_id, lambda r: replace(r, report_location=location))
        self.queue.send(Task(TaskKind.NOTIFY, run.run_id))
        log.info("Run %s completed; report at %s", run.run_id.text, location)

    def _still_latest_round(self, run: Run, task: Task) -> bool:
        """No later finish round has begun while this one worked (rounds overlap when one
        takes longer than the interval): only the latest goes on to end the run."""
        current = self.ledger.find_watch_round(run.run_id)
        mark = f"finish:{task.round}:"
        if current is None or not (current.mark or "").startswith(mark):
            log.info("Run %s: finish round %d overtaken", run.run_id.text, task.round)
            return False
        return True

    def _complete(self, run: Run, now: datetime) -> Run | None:
        """Mark the run Completed; None when another round did first (it writes the report
        and sends the summary, once)."""
        moved: list[bool] = []

        def complete(current: Run) -> Run:
            moved.clear()
            if current.status is not RunStatus.WRAPPING_UP:
                return current
            moved.append(True)
            return replace(current, status=RunStatus.COMPLETED, completed_at=now, updated_at=now)

        final = self._update_run(run.run_id, complete)
        if not moved:
            log.info("Run %s: completed by another finish round", run.run_id.text)
            return None
        return final

    def _still_stopping(
        self,
        run: Run,
        busy: Sequence[MachineRecord],
        started: datetime,
        round_: int,
        last_moved: datetime,
    ) -> bool:
        """One bulk read settles the deallocations Azure accepted; what is left gets a stop
        task when no worker is known to be handling it. True while any is still on its way."""
        read_at = self.clock.now()
        powers = self._read_power(machine_of(r) for r in busy)

        def done(row: MachineRecord) -> bool:
            """An accepted deallocate, and the VM is down (its claim went at acceptance)."""
            power = powers.get(machine_of(row))
            return (
                row.action is MachineAction.DEALLOCATING
                and accepted(row)
                and power is not None
                and power.state is PowerState.DEALLOCATED
            )

        def settle(row: MachineRecord) -> MachineRecord:
            power = powers.get(machine_of(row))
            if row.action is MachineAction.DEALLOCATING and power is not None:
                return self._settle_deallocation(row, power)
            return row

        # The usual news, many rows in one write each; the rest (failures, lost answers, each
        # a few ledger writes) in parallel, so that a round over thousands of VMs ends well
        # within the round interval.
        settled = self._move_together(
            [r for r in busy if done(r)],
            MachineAction.DEALLOCATED,
            "seen deallocated",
            (MachineAction.DEALLOCATING,),
            last_power_state=str(PowerState.DEALLOCATED),
        )
        settled += parallel(self.policy.start_concurrency, settle, [r for r in busy if not done(r)])
        left = [
            r
            for r in settled
            if r.action.owned_by_run and r.action is not MachineAction.DEALLOCATE_FAILED
        ]
        # Stop tasks waiting in the queue for their write turns touch no row: while rows keep
        # moving, the ones still waiting are theirs, not orphans.
        quiet = self.clock.now() - max(
            [last_moved, *(r.updated_at for r in settled)]
        ) >= self.policy.task_lease and self._turns_near(map(machine_of, left))
        again = self.ledger.in_storage_order(
            machine_of(r)
            for r in left
            if self._needs_stop_task(r, powers.get(machine_of(r)), started, quiet)
        )
        for batch in chunks(again, self.policy.start_batch_size):
            self.queue.send(
                Task(
                    TaskKind.STOP,
                    run.run_id,
                    tuple(batch),
                    round_,
                    powers=tuple(carried_word(powers.get(m)) for m in batch),
                    read_at=read_at,
                )
            )
        return bool(left)

    def _needs_stop_task(
        self,
        row: MachineRecord,
        power: MachinePower | None,
        wrap_up_started: datetime,
        quiet: bool,
    ) -> bool:
        """An owned machine no stop task is known to be handling: started (or its answer
        lost) after wrap-up listed the machines, waiting longer than a stop task takes to be
        picked up once the stops went quiet, a deallocate whose worker is gone, or one Azure
        accepted a lease ago that the VM shows no sign of."""
        if row.action is MachineAction.DEALLOCATING:
            if accepted(row):
                under_way = power is not None and power.state is PowerState.DEALLOCATING
                return not under_way and not self._awaiting_power(row)
            return not self._intent_is_fresh(row)
        if answer_lost(row) or row.updated_at >= wrap_up_started:
            return True
        return quiet and self.clock.now() - row.updated_at >= self.policy.task_lease

    def _note_left_running(self, run: Run, rows: Sequence[MachineRecord]) -> bool:
        """Wrap-up is over: name every VM the run owns that may still run, loudly. A failed
        deallocate is read again first (it may have worked). True if a row changed."""
        changed = False
        left = []
        owned = [r for r in rows if r.owned_by_run]
        powers = self._read_power(
            machine_of(r) for r in owned if r.action is MachineAction.DEALLOCATE_FAILED
        )
        for row in owned:
            if row.action is MachineAction.DEALLOCATE_FAILED:
                power = powers.get(machine_of(row))
                state = power.state if power is not None else None
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
    ) -> tuple[dict[str, object], list[tuple[NoteLevel, str]]] | None:
        """Heartbeats of the machines that should be up, and the notes they call for (written
        by the round that completes the run); None means "wait and ask again"."""
        workspace = self.policy.log_analytics_workspace_id
        if workspace is None or self.heartbeats is None:
            return {"checked": False, "reason": "no Log Analytics workspace configured"}, []
        expected = [
            MachineId.parse(r.resource_id)
            for r in rows
            if r.prior_power_state == PowerState.RUNNING
            or r.action in (MachineAction.HANDED_OVER, MachineAction.SHARED_WITH_RUN)
        ]
        if not expected:
            return {"checked": True, "expected": 0, "missing": []}, []
        since = run.post_event_at or run.wrap_up_started_at or now
        try:
            answer = self.heartbeats.list_last_heartbeats(workspace, expected, since, now)
        except AzureCallFailed as e:
            failed = f"heartbeat query failed: {e}"
            return {"checked": False, "reason": str(e)}, [(NoteLevel.WARNING, failed)]
        missing = [m.text for m in expected if m not in answer.last_seen]
        waited = now - (run.wrap_up_started_at or now)
        if missing and waited < self.policy.health_wait:
            return None
        notes = (
            [(NoteLevel.ERROR, f"{len(missing)} machines sent no heartbeat after the run")]
            if missing
            else []
        )
        health = {
            "checked": True,
            "expected": len(expected),
            "missing": missing,
            "complete": answer.complete,
            "partialErrors": list(answer.partial_errors),
        }
        return health, notes

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
        note = self._note(task.run_id, NoteLevel.ERROR, "poison", message)
        self._amend_report(task.run_id, [note])
