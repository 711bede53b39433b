"""How a run's own record moves with the orchestration's steps, as pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from shared.domain.runs import Run, RunStatus
from shared.domain.vocabulary import GateOutcome, PlatformStatus

# The watch loops, in the order a run goes through them (see the steps' `_take_round`).
WATCH_STEPS = ("verify", "gate", "finish")


def to_preparing(run: Run) -> Run:
    """A run whose pre event was taken in is being prepared now."""
    if run.status is not RunStatus.PRE_EVENT_RECEIVED:
        return run
    return replace(run, status=RunStatus.PREPARING)


def with_gate(run: Run, outcome: GateOutcome, detail: str) -> Run:
    """Record the gate's decision; a run being prepared is prepared now (a cancelled one stays
    cancelled: the cancel already moved it)."""
    status = run.status
    if status in (RunStatus.PREPARING, RunStatus.PRE_EVENT_RECEIVED):
        status = RunStatus.PREPARED
    return replace(run, status=status, gate_outcome=outcome, gate_detail=detail)


def round_is_new(current: str | None, step: str, round_: int, dead_before: datetime) -> bool:
    """Whether round `round_` of `step` comes after the recorded `current` round
    ("<step>:<round>:<ISO time>"); a recorded round older than `dead_before` is a dead loop's."""
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


def still_patching(word: str | None) -> bool:
    """A machine whose Resource Graph status is this word is still being patched."""
    status = PlatformStatus.of(word)
    return isinstance(status, PlatformStatus) and status.machine_unfinished
