"""The product on one machine, with nothing from Azure: `make run`, `make serve`, `make event`.

`run` plays four maintenance runs over HTTP against the local host, the fake Azure (the demo
fleet: 20 VMs in two subscriptions, 24/7 machines, deallocated ones, an Arc server, a VM that
cannot start) and Azurite, as Event Grid and an operator would, prints a timeline, checks every
expectation, and exits 0 only if all held. `serve` keeps the same stack up for manual use;
`event` sends a pre or post event to a served stack.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests

from sandbox.stack import POST, PRE, Stack, running_stack

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "sandbox" / "scenarios" / "demo.json"
READY_FILE = ROOT / ".sandbox" / "stack.json"
# The demo keeps the AllocationFailed VM inside the gate's budget, so run 1 shows an operator's
# cancel (the gate's own cancel is shown by the tests).
DEMO_SETTINGS = {"FAILURE_BUDGET_PERCENT": "20"}


def demo_scenario(power_seconds: float) -> dict[str, Any]:
    """The demo fleet without its pre-made runs (the demo makes its own), VMs changing power
    state in `power_seconds`."""
    scenario: dict[str, Any] = json.loads(SCENARIO.read_text())
    scenario["runs"] = []
    scenario["settings"]["power_transition_seconds"] = power_seconds
    scenario["settings"]["arg_lag_seconds"] = 0
    return scenario


@dataclass
class Timeline:
    """Prints what happens, with the time since the start, and keeps the expectations."""

    started: float = field(default_factory=time.monotonic)
    results: list[tuple[str, bool]] = field(default_factory=list)

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {text}", flush=True)

    def expect(self, what: str, held: bool) -> None:
        self.results.append((what, held))
        self.say(f"  {'✔' if held else '✘'} {what}")

    @property
    def all_held(self) -> bool:
        return all(held for _, held in self.results)


def names(stack: Stack, machines: list[str], state: str) -> list[str]:
    return sorted(
        m.rsplit("/", 1)[-1] for m in machines if str(stack.fake.model.power_state(m)) == state
    )


def vms_of(stack: Stack, configuration: str) -> list[str]:
    """The machines the demo fleet assigns to a configuration (by its patch-group tag)."""
    model = stack.fake.model
    vms = [m.id for m in model.vms if m.tags.get("patch-group") == configuration]
    arc = [m.id for m in model.arc_machines if m.tags.get("patch-group") == configuration]
    return vms + arc


def play(stack: Stack, timeline: Timeline) -> None:
    """The four runs of `make run`; the end-to-end test plays the same."""
    linux = vms_of(stack, "weekly-linux")
    windows = vms_of(stack, "weekly-windows")
    vms = [m for m in linux if "/virtualmachines/" in m.lower()]
    stopped = [m for m in vms if str(stack.fake.model.power_state(m)) != "running"]
    running = [m for m in vms if m not in stopped]
    _cancelled_run(stack, timeline, linux, stopped, running)
    win_stopped = [m for m in windows if "prod-win-01" not in m]
    _run_with_a_post_event(stack, timeline, windows, win_stopped)
    _cancel_too_late(stack, timeline, linux)
    _run_without_a_post_event(stack, timeline, windows, win_stopped)


def _cancelled_run(
    stack: Stack, timeline: Timeline, linux: list[str], stopped: list[str], running: list[str]
) -> None:
    say, expect = timeline.say, timeline.expect
    say("Run 1 — weekly-linux, starting in 32 minutes: the pre event arrives")
    run1 = stack.schedule("weekly-linux", linux, timedelta(minutes=32))
    answer = stack.deliver(PRE, run1)
    say(
        f"  pre event delivered to the webhook: HTTP {answer.status_code} in "
        f"{answer.elapsed.total_seconds() * 1000:.0f} ms; the worker takes over"
    )
    stack.settle(timeout=180)
    started = names(stack, stopped, "running")
    say(f"  started: {', '.join(started)}")
    say(f"  left alone (running 24/7): {', '.join(names(stack, running, 'running'))}")
    report = stack.run_report(run1)
    actions = {m["resourceId"].rsplit("/", 1)[-1]: m for m in report["machines"]}
    expect(
        "every stopped VM but the one without capacity was started",
        started == sorted(m.rsplit("/", 1)[-1] for m in stopped if "dev-gpu-02" not in m),
    )
    expect(
        "dev-gpu-02 is reported StartFailed with Azure's AllocationFailed",
        actions["dev-gpu-02"]["action"] == "StartFailed"
        and (actions["dev-gpu-02"]["error"] or {}).get("code") == "AllocationFailed",
    )
    expect(
        "the VMs running before the run were not touched",
        all(actions[m.rsplit("/", 1)[-1]]["action"] == "LeftAlone" for m in running),
    )
    expect(
        "the Arc server is reported not startable",
        actions["onprem-sql-01"]["action"] == "NotStartable",
    )
    expect(f"the gate passed ({report['gate']['detail']})", report["gate"]["outcome"] == "Passed")
    say("  the operator cancels run 1 (the window T-40 … T-11 is open)")
    cancel = stack.cancel(run1.correlation_id, "demo: a bad patch was published")
    body = cancel.json()
    say(
        f"  POST /api/runs/cancel → {cancel.status_code} {body.get('outcome')}: "
        f"{body.get('detail')}"
    )
    expect(
        'Azure answered as the REST spec\'s example (202 "Cancel"): the cancel is accepted '
        "as CancelRequested and Azure shows the run Cancelled",
        cancel.status_code == 200
        and body.get("outcome") == "CancelRequested"
        and stack.fake.model.run_status(run1.correlation_id) == "Cancelled",
    )
    stack.settle(timeout=180)
    expect(
        "the app read the run back and recorded what Azure finally said (Cancelled)",
        stack.run_report(run1)["run"]["platformStatus"] == "Cancelled",
    )
    expect(
        "after the cancel, the VMs the app started are deallocated again",
        names(stack, stopped, "deallocated") == sorted(m.rsplit("/", 1)[-1] for m in stopped),
    )
    expect(
        "the 24/7 VMs still run",
        names(stack, running, "running") == sorted(m.rsplit("/", 1)[-1] for m in running),
    )


def _run_with_a_post_event(
    stack: Stack, timeline: Timeline, windows: list[str], win_stopped: list[str]
) -> None:
    say, expect = timeline.say, timeline.expect
    say("Run 2 — weekly-windows: pre event, then patching finishes early and the post event comes")
    run2 = stack.schedule("weekly-windows", windows, timedelta(minutes=33))
    stack.deliver(PRE, run2)
    stack.settle(timeout=180)
    say(f"  started: {', '.join(names(stack, win_stopped, 'running'))}")
    stack.fake.model.complete_run(run2.correlation_id, status="Succeeded", results_lag=0)
    say("  the platform finished patching; the post event arrives")
    stack.deliver(POST, run2)
    stack.settle(timeout=180)
    report = stack.run_report(run2)
    after = {m["resourceId"].rsplit("/", 1)[-1]: m for m in report["machines"]}
    for name, machine in sorted(after.items()):
        say(
            f"  {name:<12} before {machine['powerStateBefore']:<12} after "
            f"{machine['powerStateAfter'] or '-':<12} {machine['action']}"
        )
    expect(
        "the post event deallocated exactly the VMs the app started",
        names(stack, win_stopped, "deallocated")
        == sorted(m.rsplit("/", 1)[-1] for m in win_stopped),
    )
    expect(
        "prod-win-01, running before the run, still runs",
        names(stack, windows, "running") == ["prod-win-01"],
    )
    expect(
        "the report holds the patch results", all(m["patch"] is not None for m in after.values())
    )


def _cancel_too_late(stack: Stack, timeline: Timeline, linux: list[str]) -> None:
    say, expect = timeline.say, timeline.expect
    say("Run 3 — weekly-linux, starting in 5 minutes: an operator tries to cancel")
    run3 = stack.schedule("weekly-linux", linux[:1], timedelta(minutes=5))
    refused = stack.cancel(run3.correlation_id, "demo: too late?")
    problem = refused.json()
    say(
        f"  POST /api/runs/cancel → {refused.status_code} {problem.get('title')}: "
        f"window {problem.get('windowOpensAt')} … {problem.get('windowClosesAt')}, "
        f"now {problem.get('now')}"
    )
    expect(
        "the cancel is refused with the window's bounds",
        refused.status_code == 409
        and "windowClosesAt" in problem
        and refused.headers.get("content-type", "").startswith("application/problem+json"),
    )


def _run_without_a_post_event(
    stack: Stack, timeline: Timeline, windows: list[str], win_stopped: list[str]
) -> None:
    say, expect = timeline.say, timeline.expect
    say("Run 4 — weekly-windows: the post event is lost; the reconcile timer wraps the run up")
    run4 = stack.schedule("weekly-windows", windows, timedelta(minutes=34))
    stack.deliver(PRE, run4)
    stack.settle(timeout=180)
    stack.fake.model.complete_run(run4.correlation_id, status="Succeeded", results_lag=0)
    say("  patching done, no post event; the timer ticks")
    stack.tick_reconciler()
    stack.settle(timeout=180)
    report = stack.run_report(run4)
    expect(
        "the timer wrapped the run up and deallocated what the app had started",
        report["run"]["status"] == "Completed"
        and names(stack, win_stopped, "deallocated")
        == sorted(m.rsplit("/", 1)[-1] for m in win_stopped),
    )
    expect(
        "the report says the post event never came",
        any("no post event" in n["message"] for n in report["notes"]),
    )


def run_demo(power_seconds: float) -> int:
    """`make run`: play the four runs, print the summary, exit 0 only if all held."""
    timeline = Timeline()
    timeline.say("Starting Azurite, the fake Azure (demo fleet) and the local host ...")
    with running_stack(demo_scenario(power_seconds), settings=DEMO_SETTINGS) as stack:
        timeline.say(f"  app at {stack.host.url}, fake Azure at {stack.fake.url}")
        try:
            play(stack, timeline)
        except (requests.RequestException, TimeoutError, KeyError, ValueError) as problem:
            timeline.expect(f"the demo ran to the end ({type(problem).__name__}: {problem})", False)
    held = sum(1 for _, ok in timeline.results if ok)
    timeline.say(
        f"Summary: {held} of {len(timeline.results)} expectations held; everything "
        "started has been stopped"
    )
    for what, ok in timeline.results:
        if not ok:
            print(f"  failed: {what}")
    return 0 if timeline.all_held else 1


def serve(power_seconds: float) -> int:
    """`make serve`: keep the stack up until Ctrl+C; write how to reach it to .sandbox/."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with running_stack(demo_scenario(power_seconds), settings=DEMO_SETTINGS) as stack:
        runs = {
            "linux": stack.schedule(
                "weekly-linux", vms_of(stack, "weekly-linux"), timedelta(minutes=32)
            ),
            "windows": stack.schedule(
                "weekly-windows", vms_of(stack, "weekly-windows"), timedelta(minutes=75)
            ),
        }
        READY_FILE.parent.mkdir(exist_ok=True)
        READY_FILE.write_text(
            json.dumps(
                {
                    "url": stack.host.url,
                    "functionKey": stack.host.function_key,
                    "systemKey": stack.host.system_key,
                    "masterKey": stack.host.master_key,
                    "runs": {
                        key: {"event": stack.event(PRE, run), "post": stack.event(POST, run)}
                        for key, run in runs.items()
                    },
                },
                indent=2,
            )
        )
        print(
            f"""
The app is served at {stack.host.url} (fake Azure at {stack.fake.url}).
Runs waiting for their events: linux ({runs["linux"].correlation_id}, in 32 min)
                               windows ({runs["windows"].correlation_id}, in 75 min)

  make event KIND=pre RUN=linux         # deliver the pre event, as Event Grid would
  make event KIND=post RUN=linux        # and the post event
  curl -s {stack.host.url}/api/runs -H 'x-functions-key: {stack.host.function_key}'
  curl -s -X POST {stack.host.url}/api/runs/cancel \\
       -H 'x-functions-key: {stack.host.function_key}' \\
       -d '{{"correlationId": "{runs["linux"].correlation_id}", "dryRun": true}}'

Operator console (open it in a browser; the key in `code` opens the console's other pages too):
  {stack.host.url}/api/console?code={stack.host.function_key}

OpenAPI: {stack.host.url}/api/openapi.json. Ctrl+C stops everything.""",
            flush=True,
        )
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        READY_FILE.unlink(missing_ok=True)
    return 0


def send_event(kind: str, run_key: str) -> int:
    """`make event`: deliver a run's pre or post event to the served stack."""
    if not READY_FILE.exists():
        print("No served stack: start one with `make serve` first.", file=sys.stderr)
        return 2
    ready = json.loads(READY_FILE.read_text())
    run = ready["runs"].get(run_key)
    if run is None:
        print(f"Unknown run {run_key!r}; known: {', '.join(ready['runs'])}", file=sys.stderr)
        return 2
    event = run["event"] if kind == "pre" else run["post"]
    function = "on_pre_maintenance_event" if kind == "pre" else "on_post_maintenance_event"
    with requests.Session() as session:
        session.trust_env = False
        answer = session.post(
            f"{ready['url']}/runtime/webhooks/eventgrid?functionName={function}"
            f"&code={ready['systemKey']}",
            json=[event],
            headers={"aeg-event-type": "Notification"},
            timeout=30,
        )
    print(f"{kind} event for run {run_key}: HTTP {answer.status_code}")
    return 0 if answer.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--power-seconds",
        type=float,
        default=2.0,
        help="how long the fake VMs take to start or stop",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="play the demo runs and check every expectation")
    commands.add_parser("serve", help="keep the stack up for manual use")
    event = commands.add_parser("event", help="send an event to a served stack")
    event.add_argument("kind", choices=["pre", "post"])
    event.add_argument("run", help="linux or windows")
    args = parser.parse_args(argv)
    actions: dict[str, Callable[[], int]] = {
        "run": lambda: run_demo(args.power_seconds),
        "serve": lambda: serve(args.power_seconds),
        "event": lambda: send_event(args.kind, args.run),
    }
    return actions[args.command]()


if __name__ == "__main__":
    sys.exit(main())
