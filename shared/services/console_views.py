"""What the operator console shows, read through the operator API's own read services
(run_queries, reporting): a page of runs with their machine counts and what needs attention,
and one run with its report and cancel window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain.ids import RunId
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    NoteLevel,
    RefusedEvent,
    Run,
    RunStatus,
)
from shared.domain.timeline import CancelWindow
from shared.services import run_queries
from shared.services.ports import ReportStore, RunLedger

# Statuses in which something is still going to happen to the run: the pages refresh then.
UNDER_WAY = frozenset(
    {
        RunStatus.PRE_EVENT_RECEIVED,
        RunStatus.PREPARING,
        RunStatus.PREPARED,
        RunStatus.CANCELLED,
        RunStatus.POST_EVENT_RECEIVED,
        RunStatus.WRAPPING_UP,
    }
)
STARTED_WORDS = frozenset({MachineAction.STARTED.value})
START_WORDS = frozenset(
    {MachineAction.STARTING.value, MachineAction.STARTED.value, MachineAction.START_FAILED.value}
)
LEFT_ALONE = frozenset({MachineAction.LEFT_ALONE, MachineAction.SHARED_WITH_RUN})
SKIPPED = frozenset(
    {
        MachineAction.SKIPPED_OPT_OUT,
        MachineAction.NOT_STARTABLE,
        MachineAction.TOO_LATE_TO_START,
    }
)
FAILED = frozenset({MachineAction.START_FAILED, MachineAction.DEALLOCATE_FAILED})
# An owned machine is still running after its run when wrap-up is over and it is in one of these.
STILL_OWNED = frozenset(
    {MachineAction.STARTING, MachineAction.STARTED, MachineAction.DEALLOCATE_FAILED}
)


@dataclass(frozen=True)
class MachineCounts:
    """How many machines of a run are in each of the console's columns."""

    machines: int = 0
    to_start: int = 0
    started: int = 0
    left_alone: int = 0
    skipped: int = 0
    failed: int = 0
    stopped: int = 0


@dataclass(frozen=True)
class RunRow:
    """One line of the runs page."""

    summary: Mapping[str, Any]
    counts: MachineCounts
    attention: tuple[str, ...]
    under_way: bool


@dataclass(frozen=True)
class RunsOverview:
    """One page of the runs page."""

    rows: list[RunRow]
    next_token: str | None
    refused_events: int


@dataclass(frozen=True)
class RunView:
    """One run: its report (stored, or built live) and its cancel window."""

    run: Run
    report: Mapping[str, Any]
    window: CancelWindow
    under_way: bool


def runs_overview(
    ledger: RunLedger,
    wanted: run_queries.RunFilter,
    top: int,
    token: str | None,
    now: datetime,
    refused: Sequence[RefusedEvent] = (),
) -> RunsOverview:
    """A page of runs as GET /api/runs lists them, each with its counts and attention marks."""
    page = run_queries.list_runs(ledger, wanted, top, token)
    rows = []
    for summary in page.runs:
        run_id = RunId.parse(summary["correlationId"])
        run = ledger.find_run(run_id)
        machines = list(ledger.list_machines(run_id))
        errors = sum(1 for n in ledger.list_notes(run_id) if n.level is NoteLevel.ERROR)
        rows.append(
            RunRow(
                summary=summary,
                counts=machine_counts(machines),
                attention=attention(run, summary, machines, errors, refused, now),
                under_way=run is not None and run.status in UNDER_WAY,
            )
        )
    return RunsOverview(rows=rows, next_token=page.next_token, refused_events=len(refused))


def machine_counts(machines: Sequence[MachineRecord]) -> MachineCounts:
    """Counts by what the app did: a machine it started and later stopped counts in both."""
    steps = [{entry[1] for entry in m.history} | {m.action.value} for m in machines]
    return MachineCounts(
        machines=len(machines),
        to_start=sum(1 for s in steps if s & START_WORDS),
        started=sum(1 for s in steps if s & STARTED_WORDS),
        left_alone=sum(1 for m in machines if m.action in LEFT_ALONE),
        skipped=sum(1 for m in machines if m.action in SKIPPED),
        failed=sum(1 for m in machines if m.action in FAILED),
        stopped=sum(1 for s in steps if MachineAction.DEALLOCATED.value in s),
    )


def attention(
    run: Run | None,
    summary: Mapping[str, Any],
    machines: Sequence[MachineRecord],
    error_notes: int,
    refused: Sequence[RefusedEvent],
    now: datetime,
) -> tuple[str, ...]:
    """Why an operator should look at this run (empty when nothing is wrong)."""
    reasons = []
    over = run is not None and (
        run.status is RunStatus.COMPLETED or (run.end is not None and now > run.end)
    )
    owned = [m for m in machines if m.action in STILL_OWNED]
    if over and owned:
        reasons.append(f"{len(owned)} VM(s) the app started may still be running")
    if summary.get("preEventMissed"):
        reasons.append("the pre event never came")
    if error_notes:
        reasons.append(f"{error_notes} error note(s)")
    correlation_id = str(summary.get("correlationId", "")).lower()
    mentions = sum(
        1
        for r in refused
        if correlation_id
        and (correlation_id in r.excerpt.lower() or correlation_id == (r.event_id or "").lower())
    )
    if mentions:
        reasons.append(f"{mentions} refused event(s) name this run")
    return tuple(reasons)


def refused_events(ledger: RunLedger, limit: int) -> Sequence[RefusedEvent]:
    """The newest refused events, as GET /api/events/refused lists them."""
    return ledger.list_refused_events(limit)


def run_view(
    run: Run, ledger: RunLedger, reports: ReportStore, safety_margin: timedelta
) -> RunView:
    """One run as GET /api/runs/{configuration}/{runName} shows it, and its cancel window."""
    return RunView(
        run=run,
        report=run_queries.run_document(run, ledger, reports),
        window=CancelWindow.for_run(run.scheduled_start, run.cancellation_cutoff, safety_margin),
        under_way=run.status in UNDER_WAY or run.status is RunStatus.SCHEDULED,
    )
