"""Answer time of the pre event function: parse, validate, record in the ledger (Azurite).

Event Grid waits 30 s for an answer; the function must answer in well under a second. Each call
is a new run (a new partition), as in production; the first call includes creating the table.

    .venv/bin/python -m benchmarks.intake [--events 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from sandbox.azurite import running_azurite
from shared import bootstrap
from shared.config import Settings
from shared.entrypoints.events import on_pre_maintenance_event

SUBSCRIPTION = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
CONFIGURATION = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly-linux"
)


def pre_event(start: datetime) -> str:
    run = f"{CONFIGURATION}/providers/microsoft.maintenance/applyupdates/{start:%Y%m%d%H%M%S}"
    return json.dumps(
        {
            "id": run,
            "topic": CONFIGURATION,
            "subject": "weekly-linux",
            "eventType": "Microsoft.Maintenance.PreMaintenanceEvent",
            "eventTime": (start - timedelta(minutes=35)).isoformat(),
            "dataVersion": "1.0",
            "data": {
                "CorrelationId": run,
                "MaintenanceConfigurationId": CONFIGURATION,
                "StartDateTime": start.isoformat(),
                "EndDateTime": (start + timedelta(hours=3)).isoformat(),
                "CancellationCutOffDateTime": (start - timedelta(minutes=10)).isoformat(),
                "ResourceSubscriptionIds": [SUBSCRIPTION],
            },
        }
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    count = min(max(parser.parse_args().events, 10), 5000)
    base = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    with running_azurite() as azurite:
        settings = Settings.from_environ(
            {"AzureWebJobsStorage": azurite.connection_string, "LEDGER_TABLE_NAME": "benchintake"}
        )
        bootstrap.use(bootstrap.Container(settings=settings))
        timings = []
        for i in range(count):
            event = EventGridEventInConverter.decode(
                meta.Datum(type="json", value=pre_event(base + timedelta(minutes=i))),
                trigger_metadata={},
            )
            started = time.perf_counter()
            on_pre_maintenance_event(event)
            timings.append(time.perf_counter() - started)
        redelivery = []
        for i in range(min(count, 100)):
            event = EventGridEventInConverter.decode(
                meta.Datum(type="json", value=pre_event(base + timedelta(minutes=i))),
                trigger_metadata={},
            )
            started = time.perf_counter()
            on_pre_maintenance_event(event)
            redelivery.append(time.perf_counter() - started)
        bootstrap.use(None)
    warm = timings[1:]
    print(f"events: {count} new runs, then {len(redelivery)} redeliveries")
    print(f"first call (creates the table): {timings[0] * 1000:.1f} ms")
    print(
        f"new event: p50 {statistics.median(warm) * 1000:.1f} ms, "
        f"p99 {percentile(warm, 0.99) * 1000:.1f} ms, max {max(warm) * 1000:.1f} ms"
    )
    print(
        f"redelivered event: p50 {statistics.median(redelivery) * 1000:.1f} ms, "
        f"p99 {percentile(redelivery, 0.99) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
