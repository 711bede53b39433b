"""The ledger's reads at 100 and at 100,000 runs: `GET /api/runs` pages, a single-run report,
reconcile ticks and the retention, timed and counted in storage requests, against Azurite.

Building 100,000 runs through Azurite's HTTP API takes about two hours (Azurite checks every
inserted row by running a query over its whole collection), so each history is built fast and
honestly instead:

- the rows are the app's own: `run_entity` for every run row and `_index_operations` for its
  index rows (what `save_run` writes), serialized by the Tables SDK's own entity serializer to
  the JSON body it would send;
- they go into a table Azurite created over HTTP, through Azurite's own server and store code
  (`azurite_seeded_table.js`: the steps of Azurite's insertEntity, in bulk);
- a sample of the rows is also written over HTTP into a control table, and every one reads back
  through the SDK exactly as its seeded twin does (values, types, keys);
- the runs a read touches are then saved once more through the app (`find_run` + `save_run`), so
  their index rows carry their run row's version as the app's would.

Then, through the app's own code (`run_queries`, `Reconciler`, `TableRunLedger`), with
azure-core's raw request/response hooks counting storage requests and timing the wait for each
answer (the rest is client-side time: the SDK's parsing and the app's own work):

- `GET /api/runs`: first page (50), third page (following continuation tokens), a configuration
  filter, a status filter, and a date range;
- the single-run report of a run in the middle of the history (`find_runs` + `run_document`,
  with 40 machine rows);
- a reconcile tick with no platform change, one where the 5 open runs changed on the platform,
  and one that removes a retention batch of old runs (50; checked gone, rows and all).

Beside them, Azurite's own cost of a query: a raw SDK read of one row by its keys and of a
51-row key range, outside the app, at both sizes.

Each read is checked (page sizes, newest first, the filter honoured, the right run found).
Medians of 15 repetitions (the retention tick: one). Loopback only; history size capped at
200,000.

    .venv/bin/python -m benchmarks.ledger [--sizes 100 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import TableClient, TableServiceClient
from azure.data.tables._serialize import _add_entity_properties

from sandbox.azurite import DEV_ACCOUNT, DEV_KEY
from shared.adapters.table_ledger import TableRunLedger
from shared.adapters.table_rows import partition_key, run_entity
from shared.adapters.table_run_index import (
    INDEX_CONFIGURATION,
    INDEX_DONE,
    INDEX_PARTITION,
    all_row_key,
)
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.platform import PlatformRun
from shared.domain.policy import OrchestrationPolicy
from shared.domain.runs import MachineAction, MachineKind, MachineRecord, Run, RunStatus
from shared.services import run_queries
from shared.services.reconcile import RETENTION_BATCH, Reconciler
from shared.services.run_queries import RunFilter

REPEATS = 15
CONFIGURATIONS = 2  # so a configuration's page is full (50) at 100 runs as at 100,000
OPEN_RUNS = 5
SUBSCRIPTION = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
PAGE = 50
CONTROL_SAMPLE = 200
SEEDER = Path(__file__).with_name("azurite_seeded_table.js")
# Runs are 50 minutes apart from a day before NOW: two days keeps the 28 newest, so a retention
# batch is full at 100 runs as at 100,000.
RETENTION_FOR_REMOVAL = timedelta(days=2)
NO_RETENTION = timedelta(days=365 * 30)


@dataclasses.dataclass
class StorageMeter:
    """Counts storage requests and sums the time spent waiting for their answers."""

    count: int = 0
    waited: float = 0.0
    _sent: dict[int, float] = dataclasses.field(default_factory=dict)

    def reset(self) -> None:
        self.count, self.waited = 0, 0.0

    def on_request(self, request: Any) -> None:
        self.count += 1
        self._sent[id(request.http_request)] = time.perf_counter()

    def on_response(self, response: Any) -> None:
        sent = self._sent.pop(id(response.http_request), None)
        if sent is not None:
            self.waited += time.perf_counter() - sent


@dataclasses.dataclass(frozen=True)
class Measured:
    seconds: float
    storage_seconds: float
    requests: int

    @property
    def client_seconds(self) -> float:
        """The time not spent waiting for storage: the SDK's parsing and the app's own work."""
        return self.seconds - self.storage_seconds


class NoPlatformChanges:
    """Resource Graph with nothing new (the tick's own storage cost is what is measured)."""

    def list_runs(self, configurations: Any, subscriptions: Any) -> list[Any]:
        return []


class OpenRunsChanging:
    """Resource Graph where every open run's status changes at every tick (Pending, InProgress,
    Pending, ...): the tick's cost with that many changes."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs, self.ticks = runs, 0

    def list_runs(self, configurations: Any, subscriptions: Any) -> list[PlatformRun]:
        self.ticks += 1
        status = "Pending" if self.ticks % 2 else "InProgress"
        return [PlatformRun(r.run_id, status, None, None, None) for r in self.runs]


class NoQueue:
    def send(self, task: Any, delay: Any = None) -> None:
        raise AssertionError("these ticks hand nothing to wrap-up and re-drive nothing")


class FixedNow:
    @staticmethod
    def now() -> datetime:
        return NOW


def configuration(n: int) -> ConfigurationId:
    return ConfigurationId.parse(
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
        f"Microsoft.Maintenance/maintenanceConfigurations/cfg-{n:02d}"
    )


def history(count: int) -> list[Run]:
    """`count` runs, newest a day before NOW, one every 50 minutes backwards (3.5 days of them
    at 100 runs, 9.5 years at 100,000)."""
    runs = []
    for n in range(count):
        start = (NOW - timedelta(days=1, minutes=50 * n)).replace(second=0, microsecond=0)
        run_id = RunId.of(configuration(n % CONFIGURATIONS), start.strftime("%Y%m%d%H%M%S"))
        # The newest few are under way; the rest of the history is done.
        under_way = n < OPEN_RUNS
        run = dataclasses.replace(
            Run.first_seen(run_id, start - timedelta(days=2)),
            pre_event_at=start - timedelta(minutes=30),
            status=RunStatus.PREPARED if under_way else RunStatus.COMPLETED,
            platform_status="InProgress" if under_way else "Succeeded",
        )
        runs.append(run)
    return runs


def ledger_rows(ledger: TableRunLedger, runs: list[Run]) -> Iterator[dict[str, Any]]:
    """Every row `save_run` writes for these runs (run rows, index rows), then the index's
    configuration rows and its marker."""
    configurations: dict[str, dict[str, Any]] = {}
    for run in runs:
        yield run_entity(run)
        for operation in ledger._index_operations(run, None):
            kind, row = operation[0], operation[1]
            assert kind in ("create", "upsert"), kind  # a new run's rows are all inserts
            if row["RowKey"].startswith(INDEX_CONFIGURATION):
                configurations[row["RowKey"]] = row
            else:
                yield row
    yield from configurations.values()
    yield {"PartitionKey": INDEX_PARTITION, "RowKey": INDEX_DONE, "Kind": "runindex"}


class SeededAzurite:
    """Azurite's table service (in memory) started by azurite_seeded_table.js."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is needed (Azurite runs on it)")
        self.workdir = workdir
        self.process = subprocess.Popen(
            [node, "--max-old-space-size=12288", str(SEEDER), str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._answer()  # {"port": ...}: listening

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{DEV_ACCOUNT};"
        )

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the seeded Azurite exited ({self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def seed(self, table: str, rows: Iterator[dict[str, Any]]) -> int:
        """Insert the rows (as the SDK would send them) into `table`, which must exist."""
        path = self.workdir / f"{table}.ndjson"
        keys: set[tuple[str, str]] = set()
        with path.open("w") as out:
            for row in rows:
                key = (row["PartitionKey"], row["RowKey"])
                assert key not in keys, f"two rows with the keys {key}"
                keys.add(key)
                out.write(json.dumps(_add_entity_properties(row)) + "\n")
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"table": table, "rows": str(path)}) + "\n")
        self.process.stdin.flush()
        seeded = int(self._answer()["seeded"])
        path.unlink()
        assert seeded == len(keys), (seeded, len(keys))
        return seeded

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


def check_against_http(service: TableServiceClient, table: str, rows: list[dict[str, Any]]) -> None:
    """Write `rows` over HTTP into a control table; each must read back as its seeded twin."""
    control = service.create_table(f"{table}control")
    seeded = service.get_table_client(table)
    for row in rows:
        control.create_entity(row)
    for row in rows:
        keys = (row["PartitionKey"], row["RowKey"])
        over_http, in_bulk = control.get_entity(*keys), seeded.get_entity(*keys)
        assert dict(over_http) == dict(in_bulk), keys
        assert {k: type(v) for k, v in over_http.items()} == {
            k: type(v) for k, v in in_bulk.items()
        }, keys
    service.delete_table(control.table_name)


def build(
    azurite: SeededAzurite, service: TableServiceClient, table: str, runs: list[Run]
) -> tuple[float, int]:
    """The history in `table` (created over HTTP); seconds taken and rows written."""
    started = time.perf_counter()
    service.create_table(table)
    ledger = TableRunLedger(service, table)
    seeded = azurite.seed(table, ledger_rows(ledger, runs))
    step = max(1, seeded // CONTROL_SAMPLE)
    sample = [row for n, row in enumerate(ledger_rows(ledger, runs)) if n % step == 0]
    check_against_http(service, table, sample)
    return time.perf_counter() - started, seeded


def timed(
    action: Callable[[], Any], meter: StorageMeter, repeats: int = REPEATS
) -> tuple[Measured, Any]:
    times, waits, requests, result = [], [], 0, None
    for _ in range(repeats):
        meter.reset()
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
        waits.append(meter.waited)
        requests = meter.count
    return Measured(statistics.median(times), statistics.median(waits), requests), result


def raw_reads(table: TableClient, target: Run, meter: StorageMeter) -> dict[str, Measured]:
    """Azurite's own query cost, outside the app: one row by its keys, one 51-row key range."""
    results: dict[str, Measured] = {}

    def by_keys() -> Any:
        return table.get_entity(INDEX_PARTITION, all_row_key(target))

    measured, _ = timed(by_keys, meter)
    results["raw SDK: one row by PartitionKey + RowKey"] = measured

    def key_range() -> list[Any]:
        pages = table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": INDEX_PARTITION, "lo": "all|", "hi": "all}"},
            results_per_page=PAGE + 1,
        ).by_page()
        return list(next(pages))

    measured, rows = timed(key_range, meter)
    assert len(rows) == PAGE + 1
    results["raw SDK: a 51-row key range"] = measured
    return results


def page_reads(ledger: TableRunLedger, runs: list[Run], meter: StorageMeter) -> dict[str, Any]:
    size = len(runs)
    results: dict[str, Measured] = {}

    measured, page = timed(lambda: run_queries.list_runs(ledger, RunFilter(), PAGE, None), meter)
    assert len(page.runs) == PAGE
    assert page.next_token
    assert page.runs[0]["correlationId"] == runs[0].run_id.text
    results["GET /api/runs (first page of 50)"] = measured

    def third_page() -> run_queries.RunPage:
        token = None
        for _ in range(3):
            page = run_queries.list_runs(ledger, RunFilter(), PAGE, token)
            token = page.next_token
        return page

    measured, page = timed(third_page, meter)
    # Fewer than three pages: the last one ended the listing and the third read started over.
    third = runs[2 * PAGE : 3 * PAGE] if size >= 3 * PAGE else runs[:PAGE]
    assert [r["correlationId"] for r in page.runs] == [r.run_id.text for r in third]
    results["GET /api/runs (pages 1-3, following tokens)"] = measured

    wanted = RunFilter(configuration="cfg-01")
    measured, page = timed(lambda: run_queries.list_runs(ledger, wanted, PAGE, None), meter)
    assert page.runs
    newest_of_cfg_01 = [r.run_id.text for r in runs if r.run_id.configuration.name == "cfg-01"]
    assert [r["correlationId"] for r in page.runs] == newest_of_cfg_01[:PAGE]
    results["GET /api/runs?configuration=cfg-01"] = measured

    wanted = RunFilter(status="Prepared")
    measured, page = timed(lambda: run_queries.list_runs(ledger, wanted, PAGE, None), meter)
    assert len(page.runs) == OPEN_RUNS
    assert all(r["status"] == "Prepared" for r in page.runs)
    results["GET /api/runs?status=Prepared"] = measured

    window = RunFilter(start_from=runs[min(size, 60) - 1].scheduled_start, start_to=NOW)
    measured, page = timed(lambda: run_queries.list_runs(ledger, window, PAGE, None), meter)
    assert len(page.runs) == min(PAGE, size)
    results["GET /api/runs?from=..&to=.. (a window)"] = measured
    return results


def report_read(ledger: TableRunLedger, target: Run, meter: StorageMeter) -> Measured:
    class NoReports:
        def get_report(self, run_id: Any) -> None:
            return None

    def report() -> Mapping[str, Any]:
        [found] = run_queries.find_runs(
            ledger, target.run_id.configuration.name, target.run_id.run_name
        )
        return run_queries.run_document(found, ledger, NoReports())  # type: ignore[arg-type]

    measured, document = timed(report, meter)
    assert document["run"]["correlationId"] == target.run_id.text
    assert len(document["machines"]) == 40
    return measured


def reconciler(ledger: TableRunLedger, graph: Any, retention: timedelta) -> Reconciler:
    return Reconciler(
        ledger=ledger,
        graph=graph,
        queue=NoQueue(),
        clock=FixedNow(),
        policy=OrchestrationPolicy(),
        retention=retention,
    )


def ticks(ledger: TableRunLedger, runs: list[Run], meter: StorageMeter) -> dict[str, Measured]:
    results: dict[str, Measured] = {}
    quiet = reconciler(ledger, NoPlatformChanges(), NO_RETENTION)
    measured, summary = timed(quiet.tick, meter)
    assert not summary.skipped
    assert summary.updated == []
    assert summary.removed == []
    results["reconcile tick (no platform change)"] = measured

    changing = reconciler(ledger, OpenRunsChanging(runs[:OPEN_RUNS]), NO_RETENTION)
    measured, summary = timed(changing.tick, meter)
    assert sorted(summary.updated) == sorted(r.run_id.text for r in runs[:OPEN_RUNS])
    results[f"reconcile tick ({OPEN_RUNS} open runs changed on the platform)"] = measured

    removing = reconciler(ledger, NoPlatformChanges(), RETENTION_FOR_REMOVAL)
    measured, summary = timed(removing.tick, meter, repeats=1)
    cutoff = NOW - RETENTION_FOR_REMOVAL
    old = [r.run_id.text for r in runs if r.scheduled_start < cutoff]
    assert summary.removed == old[:RETENTION_BATCH], "the newest old runs, one batch"
    for text in summary.removed:
        [run] = [r for r in runs if r.run_id.text == text]
        assert ledger.find_run(run.run_id) is None
        assert not list(
            ledger.table.query_entities(f"PartitionKey eq '{partition_key(run.run_id)}'")
        )
        assert (
            run_queries.find_runs(ledger, run.run_id.configuration.name, run.run_id.run_name) == []
        )
    results[f"reconcile tick removing a retention batch ({RETENTION_BATCH} runs)"] = measured
    return results


def resave(ledger: TableRunLedger, runs: list[Run]) -> None:
    """Save these runs once through the app, so their index rows carry their version."""
    for run in runs:
        stored = ledger.find_run(run.run_id)
        assert stored is not None
        ledger.save_run(stored)


def measure(azurite: SeededAzurite, size: int) -> dict[str, Measured]:
    meter = StorageMeter()
    service = TableServiceClient.from_connection_string(
        azurite.connection_string,
        raw_request_hook=meter.on_request,
        raw_response_hook=meter.on_response,
    )
    table = f"bench{size}"
    runs = history(size)
    built, rows = build(azurite, service, table, runs)
    ledger = TableRunLedger(service, table)
    target = runs[size // 2]
    resave(ledger, [*runs[:OPEN_RUNS], target])
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
    print(f"  {size} runs ({rows} rows) built in {built:.1f} s", flush=True)
    # The history list is the benchmark's, not the app's: keep the collector from walking its
    # objects at every full collection during the reads.
    gc.collect()
    gc.freeze()
    raw_meter = StorageMeter()
    plain = TableServiceClient.from_connection_string(
        azurite.connection_string,
        raw_request_hook=raw_meter.on_request,
        raw_response_hook=raw_meter.on_response,
    )
    results = raw_reads(plain.get_table_client(table), target, raw_meter)
    results |= page_reads(ledger, runs, meter)
    name = "GET /api/runs/{configuration}/{runName} (40 machines)"
    results[name] = report_read(ledger, target, meter)
    results |= ticks(ledger, runs, meter)
    service.delete_table(table)
    gc.unfreeze()
    return results


def print_comparison(sizes: list[int], measured: dict[int, dict[str, Measured]]) -> None:
    small, large = measured[sizes[0]], measured[sizes[-1]]
    print(
        f"\n{'read':62} {'total ms':>17} {'storage wait ms':>17} {'client ms':>15}"
        f" {'ratio':>6} {'requests':>9}"
    )
    worst = 0.0
    for name, a in small.items():
        b = large[name]
        ratio = b.seconds / a.seconds
        if not name.startswith("raw"):
            worst = max(worst, ratio)
        print(
            f"{name:62} {a.seconds * 1e3:8.1f} {b.seconds * 1e3:8.1f}"
            f" {a.storage_seconds * 1e3:8.1f} {b.storage_seconds * 1e3:8.1f}"
            f" {a.client_seconds * 1e3:7.1f} {b.client_seconds * 1e3:7.1f}"
            f" {ratio:6.2f} {a.requests:>4}->{b.requests}"
        )
    print(f"\nworst ratio of the app's reads {worst:.2f} (target <= 1.5)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000])
    sizes = [min(max(s, 2 * PAGE), 200_000) for s in parser.parse_args().sizes]
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as workdir:
        measured = {}
        for size in sizes:
            # A fresh Azurite per size: the small history is not read beside the large one.
            azurite = SeededAzurite(Path(workdir))
            try:
                print(f"history of {size} runs", flush=True)
                measured[size] = measure(azurite, size)
            finally:
                azurite.close()
    print_comparison(sizes, measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
