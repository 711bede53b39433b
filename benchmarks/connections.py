"""Connection reuse: CPU per VM started by the app's Compute adapter, with a CPU profile.

The fake Azure runs in a process of its own (so its CPU is not counted), the app's
`ComputeMachines` in this one, driven from as many threads as one instance has start calls in
flight. Each VM is started and waited for (its LRO polls included), then its power read once, as
the start task does. Two transports are compared on the same load:

- ``default``: azure-core's own RequestsTransport (a requests.Session with a 10-connection pool),
  what the app used before;
- ``pooled``: the app's transport now (`shared/adapters/http_transport.py`), sized by
  `http_pool_size` for the default settings and shared by the endpoint's clients.

Reported per transport: CPU seconds per VM (this process, `time.process_time`), the
"Connection pool is full" warnings, new TCP/TLS connections opened, and a profile by thread CPU
time (cProfile with `time.thread_time` in every worker thread) summarised by library. Outcomes
are checked: every VM must end running, started once. ARM's and Compute's limits are turned off
explicitly in the fake: this measures the client's cost per call, not pacing (that is
`benchmarks/fanout.py`).

    .venv/bin/python -m benchmarks.connections [--vms 600] [--threads 256]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox.fake_azure.scenario import fleet_scenario

MAX_SECONDS = 300  # bounded: each pass gives up rather than run on
CATEGORIES = (
    ("file stat (CA bundle checks)", ("posix.stat", "genericpath")),
    ("TLS (ssl)", ("ssl.py", "_ssl.", "ssl.SSLSocket", "ssl._SSLSocket")),
    ("new connections (socket/connect)", ("socket.py", "_socket", "connection.py:")),
    ("urllib3", ("urllib3",)),
    ("requests", ("requests",)),
    ("http.client", ("http/client.py",)),
    ("azure-core pipeline", ("azure/core",)),
    ("azure-mgmt-compute (serialisation)", ("azure/mgmt",)),
    ("identity", ("azure/identity", "msal")),
    ("json/email header parsing", ("json/", "email/")),
    ("threading/locks", ("threading.py", "queue.py", "lock")),
)


class PoolWarnings(logging.Handler):
    """Counts urllib3's "Connection pool is full" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "pool is full" in record.getMessage():
            self.count += 1


def category_of(where: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in where for needle in needles):
            return name
    return "other (app, stdlib)"


def summarise(
    stats: pstats.Stats, top: int = 8
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Own CPU time by library, and the functions with the most own CPU time."""
    by_category: collections.Counter[str] = collections.Counter()
    functions: list[tuple[str, float]] = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, _nc, own, _cum, _callers) in raw.items():
        where = f"{filename}:{line}({name})" if filename != "~" else name
        by_category[category_of(where)] += own
        functions.append((where.replace(str(Path(sys.prefix)), "…"), own))
    functions.sort(key=lambda item: -item[1])
    return dict(by_category), functions[:top]


def start_fake(
    scenario: dict[str, Any], workdir: Path
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    scenario_file = workdir / "scenario.json"
    scenario_file.write_text(json.dumps(scenario), encoding="utf-8")
    ready = workdir / "ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.fake_azure",
            "--scenario",
            str(scenario_file),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("the fake Azure did not start")
        time.sleep(0.05)
    time.sleep(0.05)
    return process, json.loads(ready.read_text(encoding="utf-8"))


def run_pass(kind: str, fake: dict[str, Any], machines: list[str], threads: int) -> dict[str, Any]:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.identity import ManagedIdentityCredential

    from shared.adapters.compute import ComputeMachines
    from shared.adapters.http_transport import EndpointTransports
    from shared.bootstrap import http_pool_size
    from shared.config import Settings
    from shared.domain.ids import MachineId
    from shared.domain.machines import PowerState

    if kind == "default":
        transport: Any = RequestsTransport()
    else:
        settings = Settings.from_environ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
        transport = EndpointTransports(http_pool_size(settings)).for_endpoint(fake["url"])
    credential = ManagedIdentityCredential(client_id=fake.get("client_id"))
    compute = ComputeMachines.build(credential, fake["url"], transport=transport)
    # Token cached and SDK modules loaded before timing (the first pass would pay for both).
    compute.get_power(MachineId.parse(machines[-1]))

    warnings = PoolWarnings()
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    urllib3_log.setLevel(logging.WARNING)
    urllib3_log.addHandler(warnings)
    profiles: list[cProfile.Profile] = []
    profiles_lock = threading.Lock()
    local = threading.local()

    def start_one(vm: str) -> bool:
        profile = getattr(local, "profile", None)
        if profile is None:
            profile = local.profile = cProfile.Profile(time.thread_time)
            with profiles_lock:
                profiles.append(profile)
        profile.enable()
        try:
            machine = MachineId.parse(vm)
            compute.start(machine)  # sent, not waited on: the power read tells the end
            deadline = time.monotonic() + 120
            while (power := compute.get_power(machine)).state is not PowerState.RUNNING:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            profile.disable()
        return power.state == PowerState.RUNNING

    cpu_started, wall_started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(start_one, machines, timeout=MAX_SECONDS))
    cpu = time.process_time() - cpu_started
    wall = time.perf_counter() - wall_started
    urllib3_log.removeHandler(warnings)

    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    by_category, top = summarise(stats)
    session = transport.session
    pools = list(session.get_adapter(fake["url"]).poolmanager.pools._container.values())
    return {
        "kind": kind,
        "ok": sum(outcomes),
        "cpu": cpu,
        "wall": wall,
        "warnings": warnings.count,
        "connections": sum(p.num_connections for p in pools),
        "profiled": sum(by_category.values()),
        "by_category": by_category,
        "top": top,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=600, help="VMs started per pass")
    parser.add_argument("--threads", type=int, default=256, help="calls in flight")
    args = parser.parse_args()
    vms = min(max(args.vms, 20), 3000)
    threads = min(max(args.threads, 1), 512)

    scenario = fleet_scenario(2 * vms, subscriptions=1, running_fraction=0.0)
    scenario["settings"].update({"start_seconds": 2.0, "lro_retry_after_seconds": 1})
    scenario["faults"] = {"arm_limits": {"enabled": False}, "compute_limits": {"enabled": False}}
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as workdir:
        process, fake = start_fake(scenario, Path(workdir))
        try:
            os.environ.update(
                {
                    "IDENTITY_ENDPOINT": fake["identity_endpoint"],
                    "IDENTITY_HEADER": fake["identity_header"],
                    "REQUESTS_CA_BUNDLE": fake["ca_path"],
                    "NO_PROXY": "127.0.0.1,localhost",
                }
            )
            sub = "00000001-0000-4000-8000-000000000001"
            ids = [
                f"/subscriptions/{sub}/resourceGroups/rg-fleet/providers/Microsoft.Compute/"
                f"virtualMachines/vm-{n:05d}"
                for n in range(1, 2 * vms + 1)
            ]
            results = [
                run_pass("default", fake, ids[:vms], threads),
                run_pass("pooled", fake, ids[vms:], threads),
            ]
        finally:
            process.terminate()
            process.wait(10)

    print(f"{vms} VMs per pass, {threads} threads, fake Azure in its own process")
    for r in results:
        print(
            f"\n{r['kind']}: {r['ok']}/{vms} running; {r['wall']:.1f} s; "
            f"CPU {r['cpu'] / vms * 1000:.1f} ms per VM; {r['warnings']} 'pool is full' "
            f"warnings; {r['connections']} connections opened"
        )
        total = r["profiled"] or 1.0
        for name, own in sorted(r["by_category"].items(), key=lambda item: -item[1]):
            print(f"  {own / total * 100:5.1f}%  {name}")
        print("  top functions (own CPU):")
        for where, own in r["top"]:
            print(f"  {own / total * 100:5.1f}%  {where}")
    before, after = results
    print(
        f"\nCPU per VM: {before['cpu'] / vms * 1000:.1f} ms -> {after['cpu'] / vms * 1000:.1f} ms "
        f"({after['cpu'] / before['cpu']:.2f}x)"
    )
    return 0 if all(r["ok"] == vms for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
