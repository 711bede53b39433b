"""Fan-out: start thousands of stopped VMs for one run, under Azure's documented limits.

The whole product runs as in the end-to-end tests, the way the real worker runs it: the local
host serving function_app with the Python worker's thread pool (PYTHON_THREADPOOL_THREAD_COUNT
as infra/ sets it, 32; `--worker-threads 0` for the worker's own default, min(32, cores + 4)),
the pre event over its Event Grid webhook, the task worker on Azurite's queue, and the fake
Azure as strict as Azure by default (ARM: writes 200 refilled 10/s and reads 250 refilled 25/s
per subscription and principal; Compute's Update VM budgets), realistic boots (30 to 90 s, fixed
per VM) and a per-call latency. Reported:

- elapsed time from the pre event to every VM running, against the strict model's ideal (the
  k-th start can be accepted no earlier than ARM's write bucket and Compute's subscription
  budget allow, and the last VM accepted still has to boot: the slowest boot is assumed);
- the pre event's answer time, p50 and p99, over distinct pre events sent DURING the fan-out,
  and beside it the time storage (Azurite) takes to answer a process outside the app (a Table
  read and a queue message every half second), so a slow answer can be put on storage or on the
  app's own process; the host's log is kept (its folder is printed);
- answers of 429 per VM started, ARM reads (GETs under /subscriptions/) per VM started, and
  Resource Graph queries, from the fake's request log; CPU of this process (the host, the app
  and the fake Azure together) per VM started;
- outcomes: every stoppable VM got one accepted start and is running, the pre-running ones were
  left alone; the ledger says Started / LeftAlone; the gate passed and nothing was cancelled;
  then the platform ends the run, the post event comes, and wrap-up deallocates exactly the VMs
  the app started and none other;
- optionally (`--baseline N`) the Microsoft tutorial's real shape on N VMs, in the same process
  against the same fake: every VM's status read one after another, then the stopped ones
  started with Start-ThreadJob's default throttle of 5 jobs at a time, each waiting for its VM.

    .venv/bin/python -m benchmarks.fanout [--vms 3000] [--running 100] [--baseline 0]
        [--start-concurrency N] [--skip-wrap-up]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime as dt
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import requests

from benchmarks import storage_requests
from sandbox.azurite import running_azurite
from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.scenario import fleet_scenario
from sandbox.stack import (
    CLIENT_ID,
    HOST_JSON,
    POST,
    PRE,
    HostProcess,
    Stack,
    app_environment,
    running_stack,
)
from shared.domain.policy import OrchestrationPolicy

MAX_SECONDS = 1200  # bounded: the benchmark gives up rather than run on
ARM_WRITES = (200, 10.0)  # ARM's subscription write bucket (the fake's default)
COMPUTE_UPDATE_VM = (1500, 500.0 / 60.0)  # Compute's per-subscription "Update VM" budget
MAX_PRE_EVENTS = 400
APP_HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def app_in_its_own_process(
    scenario: Mapping[str, Any],
    settings: Mapping[str, str],
    queue_batch: int = 0,
    storage_log: str | None = None,
) -> Iterator[tuple[Stack, HostProcess]]:
    """The stack with the local host (and so the app) in a process of its own, as the Python
    worker is in Azure: the fake Azure, in this process, does not share the app's GIL."""
    with running_azurite(debug_log=storage_log) as azurite, requests.Session() as session:
        fake = FakeAzure.start(scenario)
        table = "ledger" + uuid.uuid4().hex[:12]
        # The tests' host.json (short visibility timeouts), with the app's own queue batch or
        # `queue_batch` (this many messages, fetched again at half of them left).
        host_json = copy.deepcopy(HOST_JSON)
        queues = host_json["extensions"]["queues"]
        if queue_batch:
            queues["batchSize"], queues["newBatchThreshold"] = queue_batch, queue_batch // 2
        else:
            app_queues = json.loads(APP_HOST_JSON.read_text(encoding="utf-8"))["extensions"]
            queues["batchSize"] = app_queues["queues"]["batchSize"]
            queues["newBatchThreshold"] = app_queues["queues"]["newBatchThreshold"]
        host = HostProcess(
            app_environment(fake, azurite.connection_string, table, settings), host_json
        )
        try:
            host.start()
            session.trust_env = False  # no proxy from the environment; the host is plain http
            # HostProcess offers what Stack uses of a host: url, keys, webhook_url, wait_idle.
            stack = Stack(fake, cast(Any, host), azurite.connection_string, table, session)
            yield stack, host
        finally:
            host.stop()
            fake.stop()


def cpu_seconds(pid: int | None) -> tuple[float, float] | None:
    """User and system CPU of a process so far (Linux /proc), or None where unreadable."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def ideal_seconds(per_subscription: collections.Counter[str], slowest_boot: float) -> float:
    """The strict model's ideal: the last start accepted as early as both budgets allow, plus
    the slowest boot."""
    last_accepted = 0.0
    for count in per_subscription.values():
        arm = max(0, count - ARM_WRITES[0]) / ARM_WRITES[1]
        compute = max(0, count - COMPUTE_UPDATE_VM[0]) / COMPUTE_UPDATE_VM[1]
        last_accepted = max(last_accepted, arm, compute)
    return last_accepted + slowest_boot


class PreEventProbe:
    """Sends distinct pre events (one small run each, of a VM already running) while the
    fan-out runs, and times each answer."""

    def __init__(self, stack: Stack, configuration: str, machine: str, interval: float) -> None:
        self.stack = stack
        self.configuration = configuration
        self.machine = machine
        self.interval = interval
        self.answers: list[float] = []
        self.sent_at: list[float] = []
        self._events: list[tuple[Any, dict[str, Any]]] = []
        self.origin = time.perf_counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pre-event-probe", daemon=True)

    def start(self) -> None:
        self.origin = time.perf_counter()
        self._thread.start()

    def slowest(self, count: int = 3) -> str:
        """The slowest answers, with when they were sent (seconds after the first)."""
        pairs = sorted(zip(self.answers, self.sent_at, strict=True), reverse=True)[:count]
        return ", ".join(f"{a * 1000:.0f} ms at {t:.0f} s" for a, t in pairs)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def prepare(self, count: int) -> None:
        """Create the small runs and their events beforehand: while the fan-out runs, the
        fake Azure (in this process) is busy, and only the app's answer is to be timed."""
        for index in range(count):
            small = self.stack.schedule(
                self.configuration, [self.machine], timedelta(minutes=40, seconds=index)
            )
            self._events.append((small, self.stack.event(PRE, small)))

    def _run(self) -> None:
        for small, envelope in self._events:
            if self._stop.is_set():
                break
            started = time.perf_counter()
            answer = self.stack.deliver(PRE, small, envelope=envelope)
            self.answers.append(time.perf_counter() - started)
            self.sent_at.append(started - self.origin)
            self.statuses[answer.status_code] += 1
            self._stop.wait(self.interval)


def time_storage_requests(
    connection_string: str, stop: Any, answers: Any, interval: float = 0.5
) -> None:
    """In a process of its own: one Table read and one queue message to the app's storage
    every `interval` seconds until `stop` is set; their times (ms) go to `answers`. Slow
    answers here mean storage itself is slow, not the app's process."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    name = "probe" + uuid.uuid4().hex[:10]
    table = TableServiceClient.from_connection_string(connection_string).create_table_if_not_exists(
        name
    )
    queue = QueueClient.from_connection_string(connection_string, name)
    queue.create_queue()
    table.upsert_entity({"PartitionKey": "probe", "RowKey": "probe"})
    timings: list[tuple[float, float]] = []
    while not stop.wait(interval):
        started = time.perf_counter()
        table.get_entity("probe", "probe")
        read = time.perf_counter()
        queue.send_message("probe")
        timings.append(((read - started) * 1000, (time.perf_counter() - read) * 1000))
    answers.put(timings)


class StorageProbe:
    """Times storage (Azurite) from outside the app while the fan-out runs."""

    def __init__(self, connection_string: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._answers: Any = context.Queue()
        self._process = context.Process(
            target=time_storage_requests,
            args=(connection_string, self._stop, self._answers),
            name="storage-probe",
            daemon=True,
        )
        self.timings: list[tuple[float, float]] = []

    def start(self) -> None:
        self._process.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.timings = self._answers.get(timeout=30)
        self._process.join(10)

    def summary(self) -> str:
        if not self.timings:
            return "storage probe: no answers"
        reads = [t[0] for t in self.timings]
        sends = [t[1] for t in self.timings]
        return (
            f"storage from outside the app ({len(self.timings)} rounds): Table read p50 "
            f"{statistics.median(reads):.0f} ms, p99 {percentile(reads, 0.99):.0f} ms, max "
            f"{max(reads):.0f} ms; queue send p50 {statistics.median(sends):.0f} ms, p99 "
            f"{percentile(sends, 0.99):.0f} ms, max {max(sends):.0f} ms"
        )


@dataclass
class Outcome:
    """What the run did, checked against what it must do."""

    pending: set[str] = field(default_factory=set)
    started_vms: set[str] = field(default_factory=set)
    twice: list[str] = field(default_factory=list)
    touched_running: list[str] = field(default_factory=list)
    ledger_ok: bool = False
    gate: str | None = None
    cancels: int = 0
    stopped_right: bool = False
    still_running: int = 0
    running: int = 0
    elapsed: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            not self.pending
            and not self.twice
            and not self.touched_running
            and self.ledger_ok
            and self.gate == "Passed"
            and not self.cancels
            and self.stopped_right
            and self.still_running == self.running
        )


def main() -> int:
    args = _arguments()
    scenario, settings = _scenario(args)
    threads = settings["PYTHON_THREADPOOL_THREAD_COUNT"]
    where = "beside the fake" if args.in_process else "in its own process"
    outcome = Outcome()
    with contextlib.ExitStack() as running:
        if args.in_process:
            stack = running.enter_context(running_stack(scenario, settings=settings))
            app_pid: int | None = None
        else:
            stack, host = running.enter_context(
                app_in_its_own_process(scenario, settings, args.queue_batch, args.storage_log)
            )
            app_pid = host.pid
            print(f"the host's log: {host.log_folder}", flush=True)
        model = stack.fake.model
        run = model.get_run(stack.fake.run_id(next(iter(stack.fake.applied.runs))))
        machines = list(run.machine_ids)
        before = {m: str(model.power_state(m)) for m in machines}
        to_start = [m for m in machines if before[m] != "running"]
        already_running = [m for m in machines if before[m] == "running"]
        outcome.running = len(already_running)
        per_subscription = collections.Counter(m.split("/")[2].lower() for m in to_start)
        ideal = ideal_seconds(per_subscription, args.boot[1])
        print(
            f"{len(to_start)} deallocated and {len(already_running)} running VMs in "
            f"{len(per_subscription)} subscriptions; Azure's default limits; boots "
            f"{args.boot[0]:.0f}-{args.boot[1]:.0f} s; {args.latency * 1000:.0f} ms per call; "
            f"PYTHON_THREADPOOL_THREAD_COUNT {threads or 'unset'}; START_CONCURRENCY "
            f"{settings['START_CONCURRENCY']}; "
            f"the app {where}; "
            "strict model's ideal "
            f"{ideal:.1f} s",
            flush=True,
        )
        probe = PreEventProbe(
            stack, model.configurations[0].name, already_running[0], args.event_interval
        )
        probe.prepare(min(MAX_PRE_EVENTS, int(2 * ideal / args.event_interval) + 30))
        _fan_out(stack, run, to_start, already_running, probe, app_pid, ideal, outcome)
        _check_ledger(stack, run, to_start, already_running, outcome)
        if args.skip_wrap_up:
            print("wrap-up skipped (--skip-wrap-up): outcomes cover the fan-out only", flush=True)
            outcome.stopped_right = True
            outcome.still_running = outcome.running
        else:
            _wrap_up(stack, run, already_running, outcome)
        if args.baseline > 0:
            baseline_rate = tutorial_baseline(stack, to_start[: args.baseline])
            print(
                f"tutorial baseline (sequential status reads, ThreadJob throttle 5): "
                f"{baseline_rate:.2f} VMs/s; the app is "
                f"{len(outcome.started_vms) / outcome.elapsed / baseline_rate:.1f}x faster",
                flush=True,
            )
    if args.storage_log:
        print(
            storage_requests.summary(
                storage_requests.count(args.storage_log), len(outcome.started_vms)
            ),
            flush=True,
        )
    print(
        "outcomes: all as expected" if outcome.passed else "outcomes: NOT as expected", flush=True
    )
    return 0 if outcome.passed else 1


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=3000, help="deallocated VMs to start")
    parser.add_argument("--running", type=int, default=100, help="VMs already running")
    parser.add_argument("--subscriptions", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per ARM call")
    parser.add_argument("--boot", type=float, nargs=2, default=[30.0, 90.0], help="boot seconds")
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=32,
        help="PYTHON_THREADPOOL_THREAD_COUNT (infra/ sets 32); 0: the worker's default",
    )
    parser.add_argument(
        "--start-concurrency",
        type=int,
        default=0,
        help="START_CONCURRENCY; 0: the app's default",
    )
    parser.add_argument(
        "--queue-batch",
        type=int,
        default=0,
        help="host.json queues batchSize (newBatchThreshold half of it); 0: the app's host.json",
    )
    parser.add_argument("--event-interval", type=float, default=1.0, help="s between pre events")
    parser.add_argument("--baseline", type=int, default=0, help="VMs in the tutorial baseline")
    parser.add_argument(
        "--skip-wrap-up",
        action="store_true",
        help="stop after the fan-out's checks (no post event, no wrap-up): for quick iterations",
    )
    parser.add_argument(
        "--storage-log",
        default=None,
        help="write Azurite's debug log here and print the storage requests per VM started "
        "(slows Azurite: not for timing runs)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="serve the app in this process, beside the fake Azure (one GIL for both)",
    )
    return parser.parse_args()


def _scenario(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    stoppable = min(max(args.vms, 10), 10000)
    running = min(max(args.running, 1), 1000)
    total = stoppable + running
    scenario: dict[str, Any] = fleet_scenario(
        total,
        subscriptions=args.subscriptions,
        running_fraction=running / total,
        run_start_in_minutes=35,
        power_transition_seconds=0.5,
        start_seconds=(args.boot[0], args.boot[1]),
        deallocate_seconds=(5.0, 15.0),
    )
    scenario["settings"]["lro_retry_after_seconds"] = 1
    scenario["identities"] = [{"client_id": CLIENT_ID}]
    # Azure's limits are the fake's defaults: only the latency is set here.
    scenario["faults"] = {"latency": {"compute.*": args.latency, "arg": args.latency}}
    settings = {
        "START_BATCH_SIZE": "50",
        "VERIFY_INTERVAL_SECONDS": "5",
        "OPERATION_WAIT_SECONDS": "240",
        "WRAP_UP_WAIT_MINUTES": "10",
        # Blank: unset, the worker's default.
        "PYTHON_THREADPOOL_THREAD_COUNT": str(args.worker_threads or ""),
    }
    # Set either way: the stack's fast test settings would otherwise set their own.
    settings["START_CONCURRENCY"] = str(
        args.start_concurrency or OrchestrationPolicy().start_concurrency
    )
    return scenario, settings


def _fan_out(
    stack: Stack,
    run: Any,
    to_start: list[str],
    already_running: list[str],
    probe: PreEventProbe,
    app_pid: int | None,
    ideal: float,
    outcome: Outcome,
) -> None:
    """The pre event, then every VM running: time, calls, CPU and the probe's answers."""
    model = stack.fake.model
    cpu_started = time.process_time()
    app_cpu_started = cpu_seconds(app_pid)
    started = time.perf_counter()
    storage_probe = StorageProbe(stack.storage_connection_string)
    storage_probe.start()
    stack.deliver(PRE, run).raise_for_status()
    probe.start()
    pending = set(to_start)
    while pending and time.perf_counter() - started < MAX_SECONDS:
        time.sleep(0.5)
        pending = {m for m in pending if str(model.power_state(m)) != "running"}
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    app_cpu_now = cpu_seconds(app_pid)
    probe.stop()
    storage_probe.stop()
    stack.settle(timeout=MAX_SECONDS)
    outcome.pending = pending
    outcome.elapsed = elapsed
    _count_calls(stack, already_running, elapsed, ideal, outcome)
    count = max(1, len(outcome.started_vms))
    if app_cpu_now is not None and app_cpu_started is not None:
        user = app_cpu_now[0] - app_cpu_started[0]
        system = app_cpu_now[1] - app_cpu_started[1]
        app_cpu = user + system
        print(
            f"CPU of the app's process (local host + app): {app_cpu:.1f} s (user {user:.1f} s, "
            f"system {system:.1f} s) = {app_cpu / count * 1000:.1f} ms per VM started; this "
            f"process (fake Azure, probes): {cpu:.1f} s",
            flush=True,
        )
    else:
        print(
            f"CPU (host, app and fake in one process): {cpu:.1f} s = "
            f"{cpu / count * 1000:.1f} ms per VM started",
            flush=True,
        )
    if probe.answers:
        print(
            f"pre events during the fan-out: {len(probe.answers)} (answers "
            f"{dict(probe.statuses)}), p50 {statistics.median(probe.answers) * 1000:.0f} ms, "
            f"p99 {percentile(probe.answers, 0.99) * 1000:.0f} ms, max "
            f"{max(probe.answers) * 1000:.0f} ms; slowest: {probe.slowest()}",
            flush=True,
        )
    print(storage_probe.summary(), flush=True)


def _count_calls(
    stack: Stack, already_running: list[str], elapsed: float, ideal: float, outcome: Outcome
) -> None:
    """Starts accepted (and twice), 429s, ARM reads and graph queries of the fan-out."""
    requests = stack.fake.requests
    accepted_starts = collections.Counter(
        r.path.rsplit("/", 1)[0].lower()
        for r in requests
        if r.method == "POST" and r.path.endswith("/start") and r.status == 202
    )
    outcome.started_vms = set(accepted_starts)
    outcome.twice = [vm for vm, count in accepted_starts.items() if count > 1]
    outcome.touched_running = [m for m in already_running if m.lower() in outcome.started_vms]
    throttled = sum(1 for r in requests if r.status == 429)
    arm_reads = sum(
        1 for r in requests if r.method == "GET" and r.path.lower().startswith("/subscriptions/")
    )
    graph_queries = sum(1 for r in requests if r.endpoint == "arg")
    count = max(1, len(outcome.started_vms))
    print(
        f"app: all running after {elapsed:.1f} s = {ideal / elapsed:.2f} of the ideal "
        f"({len(outcome.started_vms) / elapsed:.1f} VMs/s); {len(outcome.pending)} missed; "
        f"{len(outcome.twice)} started twice; {len(outcome.touched_running)} running VMs started",
        flush=True,
    )
    print(
        f"app: {throttled} answers of 429 = {throttled / count:.3f} per VM started; "
        f"{arm_reads} ARM reads = {arm_reads / count:.2f} per VM started; "
        f"{graph_queries} Resource Graph queries",
        flush=True,
    )


def _check_ledger(
    stack: Stack, run: Any, to_start: list[str], already_running: list[str], outcome: Outcome
) -> None:
    """The ledger says Started / LeftAlone, the gate passed, nothing was cancelled."""
    report = stack.run_report(run)
    actions = collections.Counter(m["action"] for m in report["machines"])
    by_id = {m["resourceId"].lower(): m["action"] for m in report["machines"]}
    outcome.ledger_ok = all(by_id.get(m.lower()) == "Started" for m in to_start) and all(
        by_id.get(m.lower()) == "LeftAlone" for m in already_running
    )
    outcome.gate = (report.get("gate") or {}).get("outcome")
    outcome.cancels = len(stack.fake.requests_matching("PUT", "applyUpdates"))
    print(
        f"ledger: {dict(actions)} ({'as expected' if outcome.ledger_ok else 'NOT as expected'}); "
        f"run {report['run']['status']}; gate {outcome.gate}; {outcome.cancels} cancel requests",
        flush=True,
    )


def _wrap_up(stack: Stack, run: Any, already_running: list[str], outcome: Outcome) -> None:
    """The platform ends the run; the post event makes the app stop what it started, only
    that."""
    model = stack.fake.model
    model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    stack.fake.clear_requests()
    wrap_started = time.perf_counter()
    post_sent = model.now()
    stack.deliver(POST, run).raise_for_status()
    stack.settle(timeout=MAX_SECONDS)
    accepted = [r for r in stack.fake.requests_matching("POST", r"/deallocate$") if r.status == 202]
    deallocated = collections.Counter(r.path.rsplit("/", 1)[0].lower() for r in accepted)
    _wrap_up_calls(stack, accepted, post_sent, len(deallocated))
    outcome.stopped_right = set(deallocated) == outcome.started_vms and all(
        n == 1 for n in deallocated.values()
    )
    outcome.still_running = sum(
        1 for m in already_running if str(model.power_state(m)) == "running"
    )
    final = stack.run_report(run)
    exactly = (
        "exactly the started ones" if outcome.stopped_right else "NOT exactly the started ones"
    )
    print(
        f"wrap-up: {len(deallocated)} VMs deallocated in "
        f"{time.perf_counter() - wrap_started:.1f} s ({exactly}); {outcome.still_running} of "
        f"{len(already_running)} pre-running VMs still running; run {final['run']['status']}",
        flush=True,
    )


def _wrap_up_calls(stack: Stack, accepted: list[Any], post_sent: dt.datetime, stopped: int) -> None:
    """When the last deallocate was accepted, against the write budget's ideal (a
    subscription's bucket of 200 spends at once, then 10 a second), and what wrap-up read."""
    if not accepted:
        return
    per_subscription = collections.Counter(r.path.split("/")[2].lower() for r in accepted)
    ideal = max(max(0, n - 200) / 10 for n in per_subscription.values())
    last = (max(r.time for r in accepted) - post_sent).total_seconds()
    requests = stack.fake.requests
    reads = sum(
        1 for r in requests if r.method == "GET" and r.path.lower().startswith("/subscriptions/")
    )
    throttled = sum(1 for r in requests if r.status == 429)
    print(
        f"wrap-up: last deallocate accepted {last:.1f} s after the post event (write-budget "
        f"ideal {ideal:.1f} s); {reads} ARM reads = {reads / max(1, stopped):.2f} per VM "
        f"stopped; {throttled} answers of 429",
        flush=True,
    )


def tutorial_baseline(stack: Stack, sample: list[str]) -> float:
    """The Microsoft tutorial's shape on `sample` (deallocated again first); VMs per second."""
    from concurrent.futures import ThreadPoolExecutor

    from azure.identity import ManagedIdentityCredential

    from shared.adapters.compute import ComputeMachines
    from shared.domain.ids import MachineId
    from shared.domain.machines import PowerState

    model = stack.fake.model
    compute = ComputeMachines.build(ManagedIdentityCredential(client_id=CLIENT_ID), stack.fake.url)
    for vm in sample:
        model.set_power_state(vm, "deallocated")
    began = time.perf_counter()
    stopped = [
        vm
        for vm in sample
        if compute.get_power(MachineId.parse(vm)).state is not PowerState.RUNNING
    ]

    def start_and_wait(vm: str) -> bool:
        # Start-AzVM sends the start and polls until the VM runs (every second, as ARM's
        # Retry-After asks); the app's adapter only sends, so the job reads the VM itself.
        machine = MachineId.parse(vm)
        compute.start(machine)
        deadline = time.monotonic() + 600
        while compute.get_power(machine).state is not PowerState.RUNNING:
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True

    with ThreadPoolExecutor(5) as jobs:
        outcomes = list(jobs.map(start_and_wait, stopped))
    assert all(outcomes)
    return len(sample) / (time.perf_counter() - began)


if __name__ == "__main__":
    sys.exit(main())
