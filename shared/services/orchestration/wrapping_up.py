"""After the post event or a cancel: wrap-up (wait for patching to end, then list exactly the
VMs the run owns) and stop (one batch: read in bulk, decide, record the intent, send the
deallocate; nothing waits for it)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import MachineId, RunId
from shared.domain.machine_steps import (
    DEALLOCATE_ACCEPTED,
    UP,
    WATCHED,
    Next,
    accepted,
    carried_power_decides,
    machine_of,
    stop_after_reading,
)
from shared.domain.machines import MachinePower, PowerState
from shared.domain.run_steps import still_patching
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    NoteLevel,
    Run,
    RunStatus,
)
from shared.domain.tasks import Task, TaskKind
from shared.services.orchestration.base import Deferred
from shared.services.orchestration.fan_out import chunks, on_first_use, parallel
from shared.services.orchestration.intent_renewer import IntentRenewer
from shared.services.orchestration.ownership import ClaimRead, Ownership

log = logging.getLogger(__name__)


class WrappingUp(Ownership):
    """wrap_up and stop."""

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
        # Each stop task hands a VM over instead when another active run needs it (it looks at
        # the VM's claim just before deciding): no claim is read here, once per VM.
        rows = list(self.ledger.list_machines(run.run_id))
        # In the ledger's order, so that each stop task reads its rows as one short range.
        to_stop = self.ledger.in_storage_order(machine_of(r) for r in rows if r.owned_by_run)
        unvisited = [r for r in rows if r.action is MachineAction.PLANNED]
        # One bulk read for the whole wrap-up; the stop tasks carry it (none reads again).
        read_at = self.clock.now()
        wanted = [*to_stop, *map(machine_of, unvisited)]
        powers = self._read_power(wanted) if wanted else {}
        self._record_unvisited(unvisited, powers)
        self._send_all(
            Task(
                TaskKind.STOP,
                run.run_id,
                tuple(batch),
                powers=tuple(carried_word(powers.get(m)) for m in batch),
                read_at=read_at,
            )
            for batch in chunks(to_stop, self.policy.start_batch_size)
        )
        self.queue.send(
            Task(TaskKind.FINISH, run.run_id), self.policy.arg_retry if to_stop else timedelta(0)
        )
        log.info(
            "Run %s: wrap-up: %d machines to stop or hand over, in %d stop tasks",
            run.run_id.text,
            len(to_stop),
            -(-len(to_stop) // self.policy.start_batch_size),
        )

    def _record_unvisited(
        self, rows: Sequence[MachineRecord], powers: Mapping[MachineId, MachinePower]
    ) -> None:
        """VMs no start task looked at before the run stopped starting machines (a cancel came
        while they waited for their write turns): one found running was up before the app
        came and is left alone; one found down stays Planned (the app never started it)."""

        def record(row: MachineRecord) -> None:
            power = powers.get(machine_of(row))
            if power is None or power.state not in UP:
                return
            word = str(power.state)
            self._move(
                row,
                MachineAction.LEFT_ALONE,
                "already running when the run stopped starting machines: never touched",
                (MachineAction.PLANNED,),
                prior_power_state=word,
                last_power_state=word,
            )

        parallel(self.policy.start_concurrency, record, rows)

    def _machines_finished(self, run: Run, task: Task) -> bool:
        listed = list(self.graph.list_run_machines(run.run_id, run.subscription_ids))
        run_level = (
            self._run_level_status(run) if any(not (m.status or "").strip() for m in listed) else ""
        )
        # A missing per-machine status is not "unfinished": the field is undocumented, so
        # the run-level status stands in for it.
        unfinished = [m for m in listed if still_patching(m.status or run_level)]
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

    def stop(self, task: Task) -> None:
        """Deallocate one batch of VMs the run owns, unless another run now needs them (a task
        whose write turns are all far goes back to the queue before reading anything)."""
        if self._turns_all_far(task):
            return
        run = self._run(task)
        if run is None or run.status is not RunStatus.WRAPPING_UP:
            return
        with self._renewing() as renewer:
            self._stop_batch(task, run, renewer)

    def _stop_batch(self, task: Task, run: Run, renewer: IntentRenewer) -> None:
        """Send the deallocations, each in its write turn, deciding from the power states
        wrap-up read (a VM is read again alone only when that read cannot be trusted for it);
        nothing waits for them: finish's bulk reads settle them. The batch's rows are read
        once, together, when the first machine's write turn comes (see `_stop_one`)."""
        rows = on_first_use(lambda: self.ledger.find_machines(run.run_id, task.machines))
        results = parallel(
            self.policy.start_concurrency,
            lambda m: self._in_turn(
                m,
                lambda: self._unless_taken(
                    run.run_id,
                    m,
                    lambda: self._stop_one(run.run_id, m, rows().get(m), task, renewer),
                ),
            ),
            task.machines,
        )
        self._retry_later(
            task,
            run,
            [r for r in results if isinstance(r, MachineRecord) and r.action in WATCHED],
            [r for r in results if isinstance(r, Deferred)],
        )

    def _power_for_stop(
        self, row: MachineRecord, machine: MachineId, task: Task
    ) -> MachinePower | None:
        """The power state wrap-up carried for the VM when it can decide the stop (see
        `carried_power_decides`), else one read of the VM now (None: unreadable this time)."""
        carried = task.carried_power(machine)
        if task.read_at is not None and carried_power_decides(
            row, carried, task.read_at, self.clock.now()
        ):
            return MachinePower(PowerState.of(carried), startable=False)
        return self._read_one(machine)

    def _stop_one(
        self,
        run_id: RunId,
        machine: MachineId,
        read: MachineRecord | None,
        task: Task,
        renewer: IntentRenewer,
    ) -> MachineRecord:
        """Hand one VM over, or decide its stop and send the deallocate. `read` is its row as
        its task read the batch's rows, possibly tens of seconds ago (the machine waited for
        its write turn). Safe as in `Starting._start_one`: the deallocate is sent only after
        its intent is written ETag-checked against that version (a row changed meanwhile is
        a conflict, and `_unless_taken` lets the current row decide), and the other row
        writes go through `_save_latest`, which re-reads on a conflict. The claim writes that
        come before a row's (a hand-over, a release) are those a second delivery of the task
        racing this one makes. A row returned unchanged (not the run's, or another worker's
        deallocate under way) is what a read of its own would have found a little earlier; a
        VM it leaves owned and not stopped is given a stop task again by finish, which reads
        every row of the run."""
        row = read
        if row is None or not row.owned_by_run:
            return row or MachineRecord.planned(run_id, machine.text, self.clock.now())
        if row.action is MachineAction.DEALLOCATING and (
            self._intent_is_fresh(row) or self._awaiting_power(row)
        ):
            # Another worker is deallocating it, or Azure accepted the deallocate moments ago:
            # finish settles it.
            return row
        # Read once: it decides the hand-over, and the release starts from it.
        claim = ClaimRead(self.ledger.find_claim(machine))
        if self._hand_over(run_id, row, claim):
            return self.ledger.find_machine(run_id, machine.text) or row
        power = self._power_for_stop(row, machine, task)
        if power is None:
            return row  # unread: retried in a later stop task
        if power.state is None:
            error = AzureCallFailed("Compute", 404, "ResourceNotFound", power.note)
            return self._save_failure(row, MachineAction.DEALLOCATE_FAILED, error)
        if row.action is MachineAction.DEALLOCATING:
            settled = self._settle_deallocation(row, power)
            if settled.action is not MachineAction.DEALLOCATING:
                return settled
        now = self.clock.now()
        decision = stop_after_reading(row, power.state, now, self.policy.task_lease)
        if decision.next is Next.LEAVE:
            return row
        if decision.next is Next.RELEASE:
            self._release(run_id, machine, claim)
            return self.ledger.save_machine(decision.applied_to(row, now))
        row = self.ledger.save_machine(decision.applied_to(row, now))
        renewer.hold(row)
        sent = self._call(
            row,
            lambda: self.machines.deallocate(machine),
            MachineAction.STARTED,
            MachineAction.DEALLOCATE_FAILED,
            DEALLOCATE_ACCEPTED,
            renewer,
        )
        if accepted(sent):
            # Azure has the deallocate: no other run can be handed the VM any more, so the
            # claim goes now, from the read above (the settlement then has nothing to release).
            self._release(run_id, machine, claim)
        return sent

    def _settle_deallocation(self, row: MachineRecord, power: MachinePower) -> MachineRecord:
        """A Deallocating row as the VM's power state tells its end: deallocated (by the app's
        call, whoever's worker sent it), or failed (Azure's words, for an accepted call)."""
        if power.state is PowerState.DEALLOCATED:
            if not accepted(row):
                # The deallocate's answer was lost, or its worker died before the release that
                # follows an accepted answer.
                self._release(row.run_id, MachineId.parse(row.resource_id))
            return self._move(
                row,
                MachineAction.DEALLOCATED,
                "seen deallocated"
                if accepted(row)
                else "found deallocated after the app's deallocate",
                (MachineAction.DEALLOCATING,),
                last_power_state=str(power.state),
            )
        if accepted(row) and power.failed_code and power.state is not PowerState.DEALLOCATING:
            recorded = self._move(
                row,
                MachineAction.DEALLOCATE_FAILED,
                f"deallocate failed: {power.failed_code}",
                (MachineAction.DEALLOCATING,),
                error_code=power.failed_code,
                error_message=power.failed_message,
                last_power_state=str(power.state),
            )
            if recorded.action is MachineAction.DEALLOCATE_FAILED:
                self._note(
                    row.run_id,
                    NoteLevel.ERROR,
                    "deallocate",
                    f"{row.resource_id}: deallocate failed: {power.failed_code}: "
                    f"{power.failed_message}",
                )
            return recorded
        return row


def carried_word(power: MachinePower | None) -> str | None:
    """A power state as a stop task carries it (None: unread, or a VM Azure does not list)."""
    if power is None or power.state is None:
        return None
    return str(power.state)
