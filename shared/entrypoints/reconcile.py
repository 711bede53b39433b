"""The reconcile timer: brings the ledger in line with Resource Graph, on a schedule."""

from __future__ import annotations

import azure.functions as func

from shared import bootstrap

bp = func.Blueprint()


@bp.function_name("reconcile_runs")
@bp.timer_trigger(arg_name="timer", schedule="%RECONCILE_SCHEDULE%", use_monitor=True)
def reconcile_runs(timer: func.TimerRequest) -> None:
    """One reconcile pass; a lease in the ledger keeps overlapping ticks apart."""
    bootstrap.container().reconciler.tick(past_due=bool(timer.past_due))
