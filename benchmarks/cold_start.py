"""Cold start: time to import function_app and index its functions, against a bare app.

Each sample is a fresh interpreter (what a new worker does). The bare app is one queue-triggered
function that imports only azure.functions. Rounds alternate the two to spread machine noise.

Then the first invocation's cost: in fresh interpreters again, import and index function_app,
then time its first pre event (what indexing deferred: the use cases, the settings, the Table
SDK, the ledger client, creating the table on Azurite) and a second one for a new run.

    .venv/bin/python -m benchmarks.cold_start [--rounds 21] [--first-calls 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE_APP = """
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="message", queue_name="q", connection="AzureWebJobsStorage")
def only(message: func.QueueMessage) -> None:
    return None
"""
PROBE = (
    "import time, sys; t = time.perf_counter(); import {module} as m; m.app.get_functions(); "
    "sys.stdout.write(repr(time.perf_counter() - t))"
)


def sample(module: str, cwd: Path) -> tuple[float, float]:
    """(import + index seconds inside the process, whole process seconds)."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout), time.perf_counter() - started


FIRST_CALL_PROBE = """
import json, sys, time
from datetime import UTC, datetime, timedelta
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

SUB = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
MC = f"/subscriptions/{SUB}/resourceGroups/ops/providers/Microsoft.Maintenance/" \
    "maintenanceConfigurations/weekly-linux"

def event(start):
    run = f"{MC}/providers/microsoft.maintenance/applyupdates/{start:%Y%m%d%H%M%S}"
    data = {"CorrelationId": run, "MaintenanceConfigurationId": MC,
            "StartDateTime": start.isoformat(),
            "EndDateTime": (start + timedelta(hours=3)).isoformat(),
            "CancellationCutOffDateTime": (start - timedelta(minutes=10)).isoformat(),
            "ResourceSubscriptionIds": [SUB]}
    envelope = {"id": run, "topic": MC, "subject": "weekly-linux",
                "eventType": "Microsoft.Maintenance.PreMaintenanceEvent",
                "eventTime": (start - timedelta(minutes=35)).isoformat(),
                "dataVersion": "1.0", "data": data}
    return EventGridEventInConverter.decode(
        meta.Datum(type="json", value=json.dumps(envelope)), trigger_metadata={}
    )

base = datetime(2026, 12, 1, 3, 0, tzinfo=UTC) + timedelta(days=int(sys.argv[1]))
first_event, second_event = event(base), event(base + timedelta(minutes=1))
t = time.perf_counter()
import function_app
function_app.app.get_functions()
indexed = time.perf_counter() - t
from shared.entrypoints.events import on_pre_maintenance_event
t = time.perf_counter()
on_pre_maintenance_event(first_event)
first = time.perf_counter() - t
t = time.perf_counter()
on_pre_maintenance_event(second_event)
second = time.perf_counter() - t
sys.stdout.write(repr((indexed, first, second)))
"""


def first_calls(count: int) -> list[tuple[float, float, float]]:
    """(import + index, first pre event, second pre event) seconds, one fresh process each."""
    import os

    from sandbox.azurite import running_azurite

    samples = []
    with running_azurite() as azurite:
        env = {
            **os.environ,
            "AzureWebJobsStorage": azurite.connection_string,
            "LEDGER_TABLE_NAME": "coldstart",
        }
        for n in range(count):
            out = subprocess.run(
                [sys.executable, "-c", FIRST_CALL_PROBE, str(n)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            samples.append(tuple(float(v) for v in out.stdout.strip("()").split(",")))
    return samples  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--first-calls", type=int, default=7)
    args = parser.parse_args()
    rounds = min(max(args.rounds, 3), 200)
    with tempfile.TemporaryDirectory() as tmp:
        bare_dir = Path(tmp)
        (bare_dir / "bare_app.py").write_text(BARE_APP)
        # Warm the OS file cache once for both, then measure.
        sample("function_app", ROOT)
        sample("bare_app", bare_dir)
        ours: list[tuple[float, float]] = []
        bare: list[tuple[float, float]] = []
        for i in range(rounds):
            pair = [("function_app", ROOT, ours), ("bare_app", bare_dir, bare)]
            for module, cwd, into in pair if i % 2 == 0 else reversed(pair):
                into.append(sample(module, cwd))
    ours_import = statistics.median(s[0] for s in ours)
    bare_import = statistics.median(s[0] for s in bare)
    ours_process = statistics.median(s[1] for s in ours)
    bare_process = statistics.median(s[1] for s in bare)
    print(f"rounds: {rounds}")
    print(
        f"import + index, median: function_app {ours_import * 1000:.1f} ms, "
        f"bare app {bare_import * 1000:.1f} ms, ratio {ours_import / bare_import:.2f}x"
    )
    print(
        f"whole process, median: function_app {ours_process * 1000:.1f} ms, "
        f"bare app {bare_process * 1000:.1f} ms, ratio {ours_process / bare_process:.2f}x"
    )
    calls = first_calls(min(max(args.first_calls, 1), 50))
    # The first process also creates the table; the median is of processes that find it.
    print(
        f"first invocation (pre event, Azurite), median of {len(calls)} fresh processes: "
        f"import + index {statistics.median(c[0] for c in calls) * 1000:.1f} ms, first call "
        f"{statistics.median(c[1] for c in calls) * 1000:.1f} ms (the first process, creating "
        f"the table: {calls[0][1] * 1000:.1f} ms), second call "
        f"{statistics.median(c[2] for c in calls) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
