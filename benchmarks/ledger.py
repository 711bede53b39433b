"""The ledger's reads at 100 and at 100,000 runs: `GET /api/runs` pages, a single-run report and
a reconcile tick, timed and counted in storage requests, against Azurite.

For each history size a fresh table gets the runs as the app writes them (the run row in the
run's partition, its index rows in the index partition), built fast: index rows go in
entity-group transactions of 100 straight into Azurite, run rows of a sample of the runs (every
run a read below touches, plus 1 in 50) from a pool of threads. The runs are weekly-ish runs of
20 configurations over the years, the newest 5 under way and the rest completed. Then, through
the app's own code (`run_queries`, `Reconciler`, `TableRunLedger` with azure-core's
`raw_request_hook` counting requests):

- `GET /api/runs`: first page (50), third page (following continuation tokens), a configuration
  filter, a status filter, and a date range;
- the single-run report of a run in the middle of the history (`find_runs` + `run_document`,
  with 40 machine rows);
- a reconcile tick with no platform change (the storage requests it makes).

Each read is checked (page sizes, newest first, the filter honoured, the right run found).
Medians of 15 repetitions. Loopback only; bounded by the history size cap (200,000).

    .venv/bin/python -m benchmarks.ledger [--sizes 100 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import TableServiceClient

from sandbox.azurite import running_azurite
from shared.adapters.table_ledger import TableRunLedger
from shared.adapters.table_rows import TRANSACTION_LIMIT, run_entity
from shared.adapters.table_run_index import INDEX_PARTITION
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.policy import OrchestrationPolicy
from shared.domain.runs import MachineAction, MachineKind, MachineRecord, Run, RunStatus
from shared.services import run_queries
from shared.services.reconcile import Reconciler
from shared.services.run_queries import RunFilter

REPEATS = 15
CONFIGURATIONS = 20
SUBSCRIPTION = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
PAGE = 50


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: Any) -> None:
        self.count += 1


class NoPlatformChanges:
    """Resource Graph with nothing new (the tick's own storage cost is what is measured)."""

    def list_runs(self, configurations: Any, subscriptions: Any) -> list[Any]:
        return []


class NoQueue:
    def send(self, task: Any, delay: Any = None) -> None:
        raise AssertionError("a tick without platform changes sends no task")


def configuration(n: int) -> ConfigurationId:
    return ConfigurationId.parse(
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
        f"Microsoft.Maintenance/maintenanceConfigurations/cfg-{n:02d}"
    )


def history(count: int) -> list[Run]:
    """`count` runs, newest a day before NOW, one every 50 minutes backwards (all within the
    retention when count is 100; years of them when 100,000; the retention is set above them)."""
    runs = []
    for n in range(count):
        start = (NOW - timedelta(days=1, minutes=50 * n)).replace(second=0, microsecond=0)
        run_id = RunId.of(configuration(n % CONFIGURATIONS), start.strftime("%Y%m%d%H%M%S"))
        # The newest few are under way; the rest of the history is done.
        under_way = n < 5
        run = dataclasses.replace(
            Run.first_seen(run_id, NOW),
            status=RunStatus.PREPARED if under_way else RunStatus.COMPLETED,
            platform_status="InProgress" if under_way else "Succeeded",
        )
        runs.append(run)
    return runs


def build(table: Any, ledger: TableRunLedger, runs: list[Run], touched: set[int]) -> float:
    started = time.perf_counter()
    operations: list[Any] = []
    configurations: dict[str, Any] = {}
    for run in runs:
        for operation in ledger._index_operations(run, None):
            if operation[1]["RowKey"].startswith("configuration|"):
                configurations[operation[1]["RowKey"]] = operation
            else:
                operations.append(operation)
    operations.extend(configurations.values())
    for start in range(0, len(operations), TRANSACTION_LIMIT):
        table.submit_transaction(operations[start : start + TRANSACTION_LIMIT])
    sample = [r for n, r in enumerate(runs) if n in touched or n % 50 == 0]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda r: table.create_entity(run_entity(r)), sample))
    return time.perf_counter() - started


def timed(action: Any, counter: Counter) -> tuple[float, int, Any]:
    times, requests, result = [], 0, None
    for _ in range(REPEATS):
        counter.count = 0
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
        requests = counter.count
    return statistics.median(times), requests, result


def measure(connection_string: str, size: int) -> dict[str, tuple[float, int]]:
    counter = Counter()
    service = TableServiceClient.from_connection_string(connection_string, raw_request_hook=counter)
    table_name = f"bench{size}"
    service.create_table_if_not_exists(table_name)
    ledger = TableRunLedger(service, table_name)
    runs = history(size)
    middle = size // 2
    built = build(service.get_table_client(table_name), ledger, runs, {middle})
    target = runs[middle]
    ledger.add_machines(
        MachineRecord(
            run_id=target.run_id,
            resource_id=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/"
            f"Microsoft.Compute/virtualMachines/vm-{n:03d}",
            kind=MachineKind.VIRTUAL_MACHINE,
            prior_power_state="deallocated",
            action=MachineAction.PLANNED,
            updated_at=NOW,
        )
        for n in range(40)
    )
    # Existing runs are indexed already (built above): the marker says so.
    service.get_table_client(table_name).upsert_entity(
        {"PartitionKey": INDEX_PARTITION, "RowKey": "indexed", "Kind": "runindex", "Runs": size}
    )
    print(f"  {size} runs built in {built:.1f} s", flush=True)
    results: dict[str, tuple[float, int]] = {}

    def first_page() -> run_queries.RunPage:
        return run_queries.list_runs(ledger, RunFilter(), PAGE, None)

    elapsed, requests, page = timed(first_page, counter)
    assert len(page.runs) == PAGE
    assert page.next_token
    assert page.runs[0]["correlationId"] == runs[0].run_id.text
    results["GET /api/runs (first page of 50)"] = (elapsed, requests)

    def third_page() -> run_queries.RunPage:
        token = None
        for _ in range(3):
            page = run_queries.list_runs(ledger, RunFilter(), PAGE, token)
            token = page.next_token
        return page

    elapsed, requests, page = timed(third_page, counter)
    expected = [r.run_id.text for r in runs[2 * PAGE : 3 * PAGE]] if size >= 3 * PAGE else None
    assert expected is None or [r["correlationId"] for r in page.runs] == expected
    results["GET /api/runs (pages 1-3, following tokens)"] = (elapsed, requests)

    wanted = RunFilter(configuration="cfg-07")
    elapsed, requests, page = timed(
        lambda: run_queries.list_runs(ledger, wanted, PAGE, None), counter
    )
    assert page.runs
    assert all(r["configuration"] == "cfg-07" for r in page.runs)
    results["GET /api/runs?configuration=cfg-07"] = (elapsed, requests)

    wanted = RunFilter(status="Prepared")
    elapsed, requests, page = timed(
        lambda: run_queries.list_runs(ledger, wanted, PAGE, None), counter
    )
    assert page.runs
    assert all(r["status"] == "Prepared" for r in page.runs)
    results["GET /api/runs?status=Prepared"] = (elapsed, requests)

    window = RunFilter(start_from=runs[min(size, 60) - 1].scheduled_start, start_to=NOW)
    elapsed, requests, page = timed(
        lambda: run_queries.list_runs(ledger, window, PAGE, None), counter
    )
    assert len(page.runs) == min(PAGE, size)
    results["GET /api/runs?from=..&to=.. (a window)"] = (elapsed, requests)

    class NoReports:
        def get_report(self, run_id: Any) -> None:
            return None

    def report() -> Any:
        [found] = run_queries.find_runs(
            ledger, target.run_id.configuration.name, target.run_id.run_name
        )
        return run_queries.run_document(found, ledger, NoReports())  # type: ignore[arg-type]

    elapsed, requests, document = timed(report, counter)
    assert document["run"]["correlationId"] == target.run_id.text
    assert len(document["machines"]) == 40
    results["GET /api/runs/{configuration}/{runName} (40 machines)"] = (elapsed, requests)

    reconciler = Reconciler(
        ledger=ledger,
        graph=NoPlatformChanges(),  # type: ignore[arg-type]
        queue=NoQueue(),
        clock=type("Clock", (), {"now": staticmethod(lambda: NOW)})(),
        policy=OrchestrationPolicy(),
        retention=timedelta(days=365 * 30),  # nothing is old enough to remove here
    )
    elapsed, requests, summary = timed(reconciler.tick, counter)
    assert not summary.skipped
    assert summary.removed == []
    results["reconcile tick (no platform change)"] = (elapsed, requests)
    service.delete_table(table_name)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000])
    sizes = [min(max(s, 100), 200_000) for s in parser.parse_args().sizes]
    with running_azurite(in_memory=True) as azurite:
        measured = {}
        for size in sizes:
            print(f"history of {size} runs", flush=True)
            measured[size] = measure(azurite.connection_string, size)
    small, large = measured[sizes[0]], measured[sizes[-1]]
    print(f"\n{'read':58} {sizes[0]:>9} runs {sizes[-1]:>9} runs  ratio  requests")
    worst = 0.0
    for name, (time_small, requests_small) in small.items():
        time_large, requests_large = large[name]
        ratio = time_large / time_small
        worst = max(worst, ratio)
        print(
            f"{name:58} {time_small * 1000:9.1f} ms {time_large * 1000:9.1f} ms  {ratio:5.2f}  "
            f"{requests_small} -> {requests_large}"
        )
    print(f"\nworst ratio {worst:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
