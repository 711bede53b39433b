"""Stop-back under races: a cancel in the middle of a large fan-out, and a host crash.

Two measurements over the whole product (local host serving function_app, Azurite, the fake
Azure over HTTPS with ARM's write throttle, all on loopback):

1. **VMs left running after a cancel at 50% of the fan-out.** A run of N deallocated VMs (and
   some running ones); once half of them have accepted start calls, the operator's cancel API is
   called. Counted once the run is Completed: VMs the app started that still run (target 0),
   VMs that ran before and got a power call (target 0), VMs with two accepted starts or two
   accepted deallocations (target 0), and how long wrap-up took.
2. **Fan-out delay after a host crash.** The same fleet is started twice with production
   timings (VERIFY_INTERVAL_SECONDS 60, TASK_LEASE_SECONDS 45): once undisturbed, once with the
   host SIGKILLed when a third of the VMs have accepted starts and a new host started at once.
   The delay is the difference of the two times to "every VM running" (target <= 2 min; the
   messages the dead host held stay invisible for its 10-minute lease).

    .venv/bin/python -m benchmarks.stopback [--vms 3000] [--crash-vms 1000]

Bounded: each phase gives up after MAX_SECONDS.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import requests

from sandbox.azurite import running_azurite
from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.model import MaintenanceRun
from sandbox.fake_azure.scenario import fleet_scenario
from sandbox.local_host import LocalHost
from sandbox.stack import CLIENT_ID, PRE, HostProcess, Stack, app_environment, running_stack

MAX_SECONDS = 900
PRODUCTION_TIMINGS = {
    "VERIFY_INTERVAL_SECONDS": "60",
    "ARG_RETRY_SECONDS": "30",
    "TASK_LEASE_SECONDS": "45",
    "OPERATION_WAIT_SECONDS": "240",
    "START_BATCH_SIZE": "50",
    "START_CONCURRENCY": "16",
}


def scenario(vms: int, running_fraction: float, capacity: int, refill: float) -> dict[str, Any]:
    built: dict[str, Any] = fleet_scenario(
        vms,
        subscriptions=2,
        running_fraction=running_fraction,
        run_start_in_minutes=35,
        power_transition_seconds=2,
    )
    built["settings"]["lro_retry_after_seconds"] = 1
    built["identities"] = [{"client_id": CLIENT_ID}]
    built["faults"] = {
        "write_throttle": {"capacity": capacity, "refill_per_second": refill},
        "latency": {"compute.*": 0.02, "arg": 0.02},
    }
    return built


def accepted(fake: FakeAzure, verb: str) -> collections.Counter[str]:
    """Per VM id, the `verb` calls Azure acted on."""
    return collections.Counter(
        r.path.rsplit("/", 1)[0].lower()
        for r in fake.requests_matching("POST", rf"/{verb}$")
        if r.status == 202 or r.answer_lost
    )


def wait_for(condition: Callable[[], bool], what: str) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > MAX_SECONDS:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.5)
    return time.perf_counter() - started


def the_run(fake: FakeAzure) -> MaintenanceRun:
    return fake.model.get_run(fake.run_id(next(iter(fake.applied.runs))))


def cancel_at_half(vms: int, capacity: int, refill: float) -> bool:
    settings = {"START_BATCH_SIZE": "50", "START_CONCURRENCY": "16", "VERIFY_INTERVAL_SECONDS": "5"}
    with running_stack(scenario(vms, 0.1, capacity, refill), settings=settings) as stack:
        fake, model = stack.fake, stack.fake.model
        run = the_run(fake)
        stopped = [m for m in run.machine_ids if str(model.power_state(m)) == "deallocated"]
        running_before = [m for m in run.machine_ids if m not in stopped]
        print(
            f"cancel at 50%: {len(stopped)} deallocated and {len(running_before)} running VMs; "
            f"write bucket {capacity} + {refill}/s per subscription",
            flush=True,
        )
        began = time.perf_counter()
        stack.deliver(PRE, run).raise_for_status()
        wait_for(lambda: len(accepted(fake, "start")) >= len(stopped) // 2, "half the starts")
        at_cancel = len(accepted(fake, "start"))
        answer = stack.cancel(run.correlation_id, "benchmark: cancel at 50% of the fan-out")
        cancelled_at = time.perf_counter()
        print(
            f"  cancel sent {cancelled_at - began:.1f} s after the pre event, with {at_cancel} "
            f"starts accepted; answer {answer.status_code}",
            flush=True,
        )
        wrap_up = wait_for(
            lambda: stack.run_report(run)["run"]["status"] == "Completed", "the run's end"
        )
        starts, stops = accepted(fake, "start"), accepted(fake, "deallocate")
        left_running = [m for m in starts if str(model.power_state(m)) != "deallocated"]
        touched = [m for m in running_before if m.lower() in starts or m.lower() in stops]
        twice = [m for m, n in starts.items() if n > 1] + [m for m, n in stops.items() if n > 1]
        late = len(starts) - at_cancel
        print(
            f"  started by the app: {len(starts)} ({late} accepted after the cancel was sent); "
            f"**left running: {len(left_running)}**; running-before VMs touched: {len(touched)}; "
            f"double actions: {len(twice)}; cancel -> run Completed {wrap_up:.1f} s",
            flush=True,
        )
        return not left_running and not touched and not twice


def fan_out_time(azurite: str, vms: int, capacity: int, refill: float, crash: bool) -> float:
    fake = FakeAzure.start(scenario(vms, 0.0, capacity, refill))
    env = app_environment(fake, azurite, "ledger" + uuid.uuid4().hex[:12], PRODUCTION_TIMINGS)
    host = HostProcess(env)
    session = requests.Session()
    session.trust_env = False
    try:
        host.start()
        run = the_run(fake)
        machines = list(run.machine_ids)
        # HostProcess answers every call Stack makes of a host.
        stack = Stack(fake, cast(LocalHost, host), azurite, env["LEDGER_TABLE_NAME"], session)
        began = time.perf_counter()
        stack.deliver(PRE, run).raise_for_status()
        if crash:
            wait_for(lambda: len(accepted(fake, "start")) >= len(machines) // 3, "a third")
            host.kill()
            print(
                f"  host killed {time.perf_counter() - began:.1f} s in, with "
                f"{len(accepted(fake, 'start'))} starts accepted; a new host starts now",
                flush=True,
            )
            host.start()
        wait_for(
            lambda: all(str(fake.model.power_state(m)) == "running" for m in machines),
            "every VM running",
        )
        elapsed = time.perf_counter() - began
        twice = [m for m, n in accepted(fake, "start").items() if n > 1]
        print(
            f"  {'with' if crash else 'without'} a crash: all {len(machines)} running after "
            f"{elapsed:.1f} s; started twice: {len(twice)}",
            flush=True,
        )
        if twice:
            raise AssertionError(f"{len(twice)} VMs started twice")
        return elapsed
    finally:
        host.stop()
        session.close()
        fake.stop()
        _clear_task_queue(azurite)


def _clear_task_queue(connection_string: str) -> None:
    from azure.storage.queue import QueueClient

    QueueClient.from_connection_string(connection_string, "maintenance-tasks").clear_messages()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=3000)
    parser.add_argument("--crash-vms", type=int, default=1000)
    parser.add_argument("--capacity", type=int, default=100)
    parser.add_argument("--refill", type=float, default=10.0)
    parser.add_argument("--skip-cancel", action="store_true")
    parser.add_argument("--skip-crash", action="store_true")
    args = parser.parse_args()
    kept = True
    if not args.skip_cancel:
        kept = cancel_at_half(min(max(args.vms, 20), 10000), args.capacity, args.refill)
    if not args.skip_crash:
        vms = min(max(args.crash_vms, 20), 5000)
        print(f"crash delay: {vms} deallocated VMs, production timings", flush=True)
        with running_azurite() as azurite:
            calm = fan_out_time(azurite.connection_string, vms, args.capacity, args.refill, False)
            hit = fan_out_time(azurite.connection_string, vms, args.capacity, args.refill, True)
        print(f"  **fan-out delay after a host crash: {hit - calm:.1f} s**", flush=True)
        kept = kept and hit - calm <= 120
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
