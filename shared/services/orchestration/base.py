"""The ports every step of a run uses, and the ledger writes they share: rows moved on their
freshest copy, intents and their leases, power operations sent and their answers recorded, the
watch loops' rounds, power states read in bulk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from shared.domain.errors import AzureCallFailed, CallWithdrawn, LedgerConflict
from shared.domain.ids import MachineId, RunId
from shared.domain.machine_steps import (
    ANSWER_LOST,
    NOT_LISTED,
    awaiting_power,
    call_over,
    intent_is_fresh,
    machine_of,
)
from shared.domain.machines import MachinePower
from shared.domain.policy import OrchestrationPolicy
from shared.domain.run_steps import round_is_new
from shared.domain.runs import (
    MAX_MACHINES_SAVED_TOGETHER,
    REFUSED,
    MachineAction,
    MachineRecord,
    NoteLevel,
    Run,
    RunNote,
    WatchRound,
)
from shared.domain.tasks import Task
from shared.domain.timeline import Clock
from shared.services import cancellation
from shared.services.conflicts import retry_on_conflict
from shared.services.orchestration.accepted_marks import MARK_WAIT_SECONDS, AcceptedMarks
from shared.services.orchestration.fan_out import chunks, parallel
from shared.services.orchestration.intent_renewer import IntentRenewer
from shared.services.ports import (
    Heartbeats,
    Machines,
    Notifier,
    ReportStore,
    RunCanceller,
    RunLedger,
    RunMachinesSource,
    TaskQueue,
)
from shared.services.reporting import note_entry

log = logging.getLogger(__name__)

# Throttled or unanswered machines go into a new task this much later, at most this often.
TRANSIENT_RETRY = timedelta(seconds=3)
MAX_TRANSIENT_ROUNDS = 200
# Queue messages a fan-out sends at once.
SEND_CONCURRENCY = 8
# Machines waiting for a write turn come back when it is near, but at least this often (the
# pacing's view of the budgets may improve: another instance stopped spending them), and not
# sooner than this (the queue's delays are whole seconds).
MAX_TURN_WAIT_SECONDS = 60.0
MIN_TURN_WAIT = timedelta(seconds=1)


@dataclass(frozen=True)
class Deferred:
    """A machine whose power operation was not attempted: its subscription's next write turn
    was further away than the pacing lets a thread wait, so nothing was read, written or sent
    for it; a later task takes it up, when turns promised to it come."""

    machine: MachineId


@dataclass
class StepsBase:
    """The task worker's ports and the writes its steps share."""

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

    def _run(self, task: Task) -> Run | None:
        run = self.ledger.find_run(task.run_id)
        if run is None:
            log.warning("Task %s for unknown run %s dropped", task.kind, task.run_id.text)
        return run

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

    def _in_turn(
        self, machine: MachineId, step: Callable[[], MachineRecord]
    ) -> MachineRecord | Deferred:
        """Run a start or stop step for one machine while holding its subscription's next write
        turn; when that turn is too far off, do nothing (Deferred)."""
        with self.machines.power_turn(machine) as wait:
            if wait > 0:
                return Deferred(machine)
            return step()

    def _send_all(self, tasks: Iterable[Task]) -> None:
        """Send a fan-out's tasks, several at a time (each is one queue request: thousands of
        VMs make dozens of them, and the first ones are already being worked on)."""
        parallel(SEND_CONCURRENCY, self.queue.send, list(tasks))

    def _turn_waits(self, machines: Iterable[MachineId]) -> list[float]:
        """For each subscription of these machines, 0.0 when its next write turn is within the
        pacing's wait, else the seconds until it comes (nothing is taken)."""
        first: dict[str, MachineId] = {}
        for machine in machines:
            first.setdefault(machine.subscription_id.lower(), machine)
        return [self.machines.turn_wait(machine) for machine in first.values()]

    def _turns_near(self, machines: Iterable[MachineId]) -> bool:
        """Every subscription of these machines has a write turn within the pacing's wait. When
        one has not, quiet rows are machines waiting in the queue for their turns, not work a
        dead host lost, and sending them again would only add to the wait."""
        return not any(self._turn_waits(machines))

    def _turns_all_far(self, task: Task) -> bool:
        """When no machine of the task has its write turn near, send the task back to come when
        its turns do, before anything is read or started (a large fan-out's tasks wait for
        their turns for minutes; each return then costs two queue requests, not the run's
        read, the task's threads and its rows)."""
        waits = self._turn_waits(task.machines)
        if not waits or not all(waits):
            return False
        self._send_back(task, list(task.machines))
        return True

    def _send_back(self, task: Task, machines: list[MachineId]) -> None:
        """The task again for `machines`, when their write turns are near, not sooner: nothing
        is read or sent meanwhile. Turns are promised to it (Machines.turn_appointment) unless
        it already holds a promise still to come: it came back early (a queue delay is capped
        at MAX_TURN_WAIT_SECONDS), or for some of its machines only."""
        now = self.clock.now()
        turn_at = task.turn_at
        if turn_at is None or turn_at <= now:
            turn_at = now + timedelta(seconds=self.machines.turn_appointment(machines))
        delay = min(max(turn_at - now, MIN_TURN_WAIT), timedelta(seconds=MAX_TURN_WAIT_SECONDS))
        self.queue.send(replace(task.with_machines(machines, task.round), turn_at=turn_at), delay)
        log.info(
            "Run %s: %d machines wait for their write turns (due in %s); %s again in %s",
            task.run_id.text,
            len(machines),
            turn_at - now,
            task.kind.value,
            delay,
        )

    def _retry_later(
        self,
        task: Task,
        run: Run,
        rows: Sequence[MachineRecord],
        deferred: Sequence[Deferred] = (),
    ) -> None:
        """Machines whose calls were throttled or failed transiently, and machines put off
        until their write turn: another task, later. Only rounds with throttled or failed
        calls count towards giving up; waiting for a turn is bounded by the run's own end
        (a start task stops with the run's preparation, a stop task with its wrap-up)."""
        if not rows and not deferred:
            return
        if not rows:
            self._send_back(task, [d.machine for d in deferred])
            return
        self._retry_failed(task, run, rows, deferred)

    def _retry_failed(
        self,
        task: Task,
        run: Run,
        rows: Sequence[MachineRecord],
        deferred: Sequence[Deferred],
    ) -> None:
        """Throttled or failed calls (with any machines put off): again soon, one round on."""
        if task.round >= MAX_TRANSIENT_ROUNDS:
            for row in rows:
                self._note(
                    run.run_id,
                    NoteLevel.ERROR,
                    task.kind.value,
                    f"{row.resource_id}: Azure kept throttling or failing; gave up "
                    f"after {task.round} rounds",
                )
            self._retry_later(task, run, (), deferred)
            return
        machines = [MachineId.parse(r.resource_id) for r in rows] + [d.machine for d in deferred]
        self.queue.send(task.with_machines(machines, task.round + 1), TRANSIENT_RETRY)
        log.info(
            "Run %s: %d machines throttled or unanswered; %s again in %s",
            run.run_id.text,
            len(machines),
            task.kind.value,
            TRANSIENT_RETRY,
        )

    def _unless_taken(
        self, run_id: RunId, machine: MachineId, step: Callable[[], MachineRecord]
    ) -> MachineRecord:
        """Run a start or stop step for one machine; if another delivery of the same work wrote
        the machine's row first (a version conflict), its row decides and nothing was sent."""
        try:
            return step()
        except LedgerConflict:
            log.info("Run %s: %s is being handled by another worker", run_id.text, machine.text)
            row = self.ledger.find_machine(run_id, machine.text)
            return row or MachineRecord.planned(run_id, machine.text, self.clock.now())

    def _call(
        self,
        row: MachineRecord,
        call: Callable[[], None],
        retry_as: MachineAction,
        failed_as: MachineAction,
        accepted: str,
        renewer: IntentRenewer,
    ) -> MachineRecord:
        """Send a power operation whose intent is recorded. Accepted: the row keeps its intent,
        marked `accepted` (no worker waits on it; a bulk read settles it); the mark is written
        with the task's other marks, within seconds (see accepted_marks: a host that dies
        before that leaves the intent unmarked, which verify and finish settle from the VM's
        power state once its lease lapses). A throttled or unanswered call puts the row back
        (`retry_as`) for a later task, a refusal records the failure."""
        try:
            call()
        except AzureCallFailed as e:
            if isinstance(e, CallWithdrawn):
                # Only ever throttled, and the run stopped wanting it meanwhile: never sent.
                return self._move(row, retry_as, "throttled, then withdrawn: not sent")
            if e.status == 429:
                # Throttled: ARM refused the call before acting on it.
                return self._move(row, retry_as, f"{e.service} answered {e.status}: will retry")
            if e.is_transient:
                # A 5xx or no answer after the call went out: Azure may have applied it. The
                # intent stays (the VM stays the run's); its power state decides on retry.
                return self._mark_answer_lost(
                    row, f"{e.service} answered {e.status or 'nothing'} {e.code or ''}".rstrip()
                )
            return self._save_failure(row, failed_as, e, refused=True)
        waiting = row.action
        answered_at = self.clock.now()
        return renewer.record_answer(
            row,
            lambda r: (
                r.answered(accepted, answered_at) if r.action is waiting and not call_over(r) else r
            ),
        )

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
        return self._save_latest(row, self._moving(action, detail, only_from, **changes))

    def _moving(
        self,
        action: MachineAction,
        detail: str,
        only_from: tuple[MachineAction, ...] = (),
        **changes: Any,
    ) -> Callable[[MachineRecord], MachineRecord]:
        """The change `_move` applies to a copy of a row."""
        now = self.clock.now()

        def change(current: MachineRecord) -> MachineRecord:
            if current.action is action or (only_from and current.action not in only_from):
                return current
            return current.moved_to(action, now, detail, **changes)

        return change

    def _move_together(
        self,
        rows: Sequence[MachineRecord],
        action: MachineAction,
        detail: str,
        only_from: tuple[MachineAction, ...] = (),
        *,
        leave_conflicted: bool = False,
        **changes: Any,
    ) -> list[MachineRecord]:
        """`_move` for many rows of one run at once, as a bulk read settles them: the rows as
        listed are written up to MAX_MACHINES_SAVED_TOGETHER to a ledger write (one storage
        request for each, instead of one per row). A write that another writer got into (one
        of its rows changed since it was listed: a mark, an overlapping round) stores nothing.
        With `leave_conflicted`, its rows are returned as listed, unmoved: a loop whose next
        round lists them afresh settles them then. Otherwise its rows are read again in one
        read and the write is tried once more on those copies (a row already moved drops out),
        and only if that fails too is each row moved alone on its freshest copy, exactly as
        `_move` does. Returned in `rows`' order."""
        change = self._moving(action, detail, only_from, **changes)
        moved: list[MachineRecord] = []
        for group in chunks(rows, MAX_MACHINES_SAVED_TOGETHER):
            moved += self._move_group(group, change, leave_conflicted)
        return moved

    def _move_group(
        self,
        rows: list[MachineRecord],
        change: Callable[[MachineRecord], MachineRecord],
        leave_conflicted: bool,
    ) -> list[MachineRecord]:
        """One ledger write of `_move_together`, with its fallbacks."""
        current = rows
        for _ in range(2):
            moved = [change(row) for row in current]
            writes = [new for row, new in zip(current, moved, strict=True) if new is not row]
            if not writes:
                return moved
            try:
                saved = iter(self.ledger.save_machines(writes))
            except LedgerConflict:
                if leave_conflicted:
                    log.info(
                        "Run %s: %d rows changed since they were listed; left to the next round",
                        rows[0].run_id.text,
                        len(rows),
                    )
                    return current
                fresh = self.ledger.find_machines(rows[0].run_id, map(machine_of, rows))
                current = [fresh.get(machine_of(row), row) for row in rows]
                continue
            return [
                next(saved) if new is not row else row
                for row, new in zip(current, moved, strict=True)
            ]
        return parallel(
            self.policy.start_concurrency, lambda row: self._save_latest(row, change), current
        )

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
        """Its worker may still be calling Azure (see machine_steps.intent_is_fresh)."""
        return intent_is_fresh(row, self.clock.now(), self.policy.task_lease)

    def _awaiting_power(self, row: MachineRecord) -> bool:
        """Azure accepted the row's call less than a lease ago: the VM may not show it yet."""
        return awaiting_power(row, self.clock.now(), self.policy.task_lease)

    def _read_power(self, machines: Iterable[MachineId]) -> dict[MachineId, MachinePower]:
        """Power states in bulk: one status-only listing per subscription the machines are in
        (no other subscription is read). A subscription whose listing failed leaves its
        machines out (unread); a VM its subscription does not list reads as state None."""
        wanted: dict[str, list[MachineId]] = {}
        for machine in machines:
            wanted.setdefault(machine.subscription_id, []).append(machine)
        powers: dict[MachineId, MachinePower] = {}
        for subscription, asked in wanted.items():
            try:
                found = dict(self.machines.list_power_states(subscription, asked))
            except AzureCallFailed as e:
                if not e.is_refusal:
                    log.warning("Power states of subscription %s unreadable: %s", subscription, e)
                    continue
                # Refused (e.g. 403: the app's role is assigned per resource group, and the
                # list is a subscription-wide read): one read per VM, as Azure allows.
                log.warning(
                    "Subscription %s refused its VM list (%s); reading %d VMs one by one",
                    subscription,
                    e,
                    len(asked),
                )
                powers.update(self._read_one_by_one(asked))
                continue
            for machine in asked:
                powers[machine] = found.get(machine) or MachinePower(
                    state=None, startable=False, note=NOT_LISTED
                )
        return powers

    def _read_one_by_one(self, machines: Sequence[MachineId]) -> dict[MachineId, MachinePower]:
        pairs = parallel(self.policy.start_concurrency, lambda m: (m, self._read_one(m)), machines)
        return {machine: power for machine, power in pairs if power is not None}

    def _read_one(self, machine: MachineId) -> MachinePower | None:
        """One VM's power state read alone; None when unread this time (throttled, no answer),
        state None when Azure refused (the VM is gone, or not the app's to read)."""
        try:
            return self.machines.get_machine(machine).power
        except AzureCallFailed as e:
            log.warning("Power state of %s unreadable: %s", machine.text, e)
            if e.is_transient:
                return None
            return MachinePower(state=None, startable=False, note=NOT_LISTED)

    def _renewing(self) -> IntentRenewer:
        """A task's keeper of its intents: renewed every third of a lease, and their accepted
        calls marked several rows to a write, each mark within a quarter of that interval (so
        a renewal seldom meets a mark still waiting)."""
        every = self.policy.task_lease.total_seconds() / 3
        marks = AcceptedMarks(
            self.ledger.save_machines,
            self._save_latest,
            longest_seconds=min(MARK_WAIT_SECONDS, every / 4),
        )
        return IntentRenewer(self._renew, every, marks)

    def _renew(self, held: MachineRecord) -> MachineRecord | None:
        """Refresh the lease of an intent this worker still holds (nothing else changes);
        returns the row as stored now (None: gone)."""
        row = self.ledger.find_machine(held.run_id, held.resource_id)
        if row is None:
            return None

        def touch(current: MachineRecord) -> MachineRecord:
            if current.action is not held.action or call_over(current):
                return current  # answered or settled meanwhile: nothing to keep alive
            return replace(current, updated_at=self.clock.now())

        return self._save_latest(row, touch)

    def _begin_round(self, run: Run, step: str, task: Task, next_delay: timedelta | None) -> bool:
        """Start round `task.round` of a watch loop: False when it ran already (a duplicate
        leaves at once). The next round is sent (after `next_delay`; None: no next round)
        before this round is recorded as taken, so that a host dying at any point after the
        send leaves the loop going; a duplicate next round this may leave finds its round
        taken and does nothing."""
        watch = self.ledger.find_watch_round(run.run_id)
        last = None if watch is None else watch.mark
        if not round_is_new(last, step, task.round, self.clock.now() - self._silent()):
            log.info("Run %s: %s round %d ran already", run.run_id.text, step, task.round)
            return False
        if next_delay is not None:
            self.queue.send(task.next_round(), next_delay)
        if not self._take_round(run.run_id, step, task.round, read=(watch,)):
            log.info("Run %s: %s round %d ran already", run.run_id.text, step, task.round)
            return False
        return True

    def _silent(self) -> timedelta:
        """How long a watch loop may be silent before it counts as dead (any round takes it
        over): three intervals and a lease."""
        return 3 * max(self.policy.verify_interval, self.policy.arg_retry) + self.policy.task_lease

    def _take_round(
        self,
        run_id: RunId,
        step: str,
        round_: int,
        *,
        read: tuple[WatchRound | None] | None = None,
    ) -> bool:
        """Make this delivery the watch loop's round `round_` of `step`; False when a later
        round (or step) already ran, or this round did: a duplicate leaves at once. A loop
        silent for three intervals and a lease is dead, and any round takes it over. `read`:
        the watch round as the caller just read it (None: read here); a conflict re-reads.
        The round is a row of its own (WatchRound): the run row is not written."""
        now = self.clock.now()
        silent_for = self._silent()
        tries: list[WatchRound | None] = []

        def attempt() -> bool:
            current = self.ledger.find_watch_round(run_id) if tries or read is None else read[0]
            tries.append(current)
            last = None if current is None else current.mark
            if not round_is_new(last, step, round_, now - silent_for):
                return False
            self.ledger.save_watch_round(
                replace(current or WatchRound(run_id), mark=f"{step}:{round_}:{now.isoformat()}")
            )
            return True

        return retry_on_conflict(attempt, what=f"watch round of run {run_id.text}")

    def _save_latest(
        self, row: MachineRecord, change: Callable[[MachineRecord], MachineRecord]
    ) -> MachineRecord:
        """Apply `change` to the freshest copy of the row (re-read on a version conflict)."""
        tries: list[MachineRecord | None] = []

        def attempt() -> MachineRecord:
            current = self.ledger.find_machine(row.run_id, row.resource_id) if tries else row
            tries.append(current)
            if current is None:
                raise LedgerConflict(f"machine {row.resource_id} vanished")
            updated = change(current)
            if updated is current:
                return current  # nothing to record
            return self.ledger.save_machine(updated)

        return retry_on_conflict(attempt, what=f"machine {row.resource_id}")

    def _update_run(self, run_id: RunId, change: Callable[[Run], Run]) -> Run:
        """Apply `change` to the freshest copy of the run (re-read on a version conflict)."""

        def attempt() -> Run:
            current = self.ledger.find_run(run_id)
            if current is None:
                raise LedgerConflict(f"run {run_id.text} vanished")
            updated = change(current)
            return current if updated is current else self.ledger.save_run(updated)

        return retry_on_conflict(attempt, what=f"run {run_id.text}")

    def _amend_report(self, run_id: RunId, notes: Sequence[RunNote], **run_fields: Any) -> None:
        """Add `notes` (and `run_fields` to its run section) to a report already written."""
        report = self.reports.get_report(run_id)
        if report is None:
            return
        amended = dict(report)
        if run_fields:
            amended["run"] = {**report.get("run", {}), **run_fields}
        amended["notes"] = [*report.get("notes", []), *(note_entry(n) for n in notes)]
        self.reports.save_report(run_id, amended)

    def _note(self, run_id: RunId, level: NoteLevel, source: str, message: str) -> RunNote:
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
        note = RunNote(
            run_id=run_id, at=self.clock.now(), level=level, source=source, message=message
        )
        self.ledger.add_note(note)
        return note
