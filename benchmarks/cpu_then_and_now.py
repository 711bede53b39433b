"""CPU per VM started, then and now: the code issue 13 measured beside the current code.

This machine's speed varies by up to 60 % over a day, so CPU figures taken at different hours
do not compare. This script runs both fan-outs back to back, on the same machine, and splits
each one's CPU by thread: the fake Azure's threads, the benchmark's own main thread, and the
rest (the local host and the app).

- **then**: a `git worktree` of BASE (default b94bb56, the code as it stood when issue 13 was
  filed). It runs that commit's own `benchmarks/fanout.py`: 3,000 deallocated VMs in 2
  subscriptions, that fake's write bucket of 100 + 10/s, 0.5 s boots, and the app polling each
  start's operation. The sequential sample and the answer-time loop are cut to a few VMs; they
  come after the measured window.
- **now**: this checkout's `benchmarks/fanout.py --in-process --skip-wrap-up` without the probe's
  pre events. That is Azure's documented limits, 30-90 s boots and 100 running VMs, with the
  app in the same process as the fake, as the old harness ran it.
- **now, the old harness's boots**: the same, with 0.5 s boots and 1 running VM, which is as
  close as the current harness comes to the old one's conditions (its ARM limits stay Azure's).

Each fan-out runs under this file's `--account` mode. That mode wraps `threading.Thread.run` so
that every thread notes its native id and whose it is. A server thread is the fake's when its
request handler class comes from `sandbox.fake_azure`, and any other thread is the fake's when
its target does. Once a second it sums `/proc/self/task/<tid>/stat` per owner, adding the CPU
of threads that have ended, and it time-stamps stdout lines. The window runs from the line
that announces the ideal (printed as the pre event is sent) for the elapsed time the benchmark
prints ("all running after N s").

The new harness is harder on the app than the old one: its boots are 60 to 180 times longer,
so verify rounds run for the whole fan-out; it adds 100 running VMs to leave alone; and its
reads are budgeted. The second run is therefore conservative for the current code; the third
sets both codes under nearly the same conditions. Before each run a fixed piece of pure-Python
work is timed, so the machine's speed at the time is printed beside each figure.

    .venv/bin/python -m benchmarks.cpu_then_and_now [--base b94bb56] [--rounds 1]

A round is the three runs, about 17 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN_SECONDS = 1500  # bounded: a fan-out that takes longer is stopped
SAMPLE_SECONDS = 1.0
ELAPSED = re.compile(r"all running after ([\d.]+) s")
OWNERS = ("app", "fake", "benchmark")


# ---------------------------------------------------------------- inside a measured process


class _Accounts:
    """CPU per owner of threads in this process: live threads from /proc, ended ones summed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[int, str] = {}
        self.ended: dict[str, float] = {}
        self.tick = os.sysconf("SC_CLK_TCK")

    def started(self, owner: str) -> None:
        with self.lock:
            self.live[threading.get_native_id()] = owner

    def finished(self, owner: str) -> None:
        used = time.thread_time()
        with self.lock:
            self.live.pop(threading.get_native_id(), None)
            self.ended[owner] = self.ended.get(owner, 0.0) + used

    def _cpu(self, tid: int) -> float | None:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None  # ended between the listing and the read: counted in `ended`
        return (int(fields[11]) + int(fields[12])) / self.tick

    def totals(self) -> dict[str, float]:
        with self.lock:
            live = list(self.live.items())
            totals = dict(self.ended)
        for tid, owner in live:
            used = self._cpu(tid)
            if used is not None:
                totals[owner] = totals.get(owner, 0.0) + used
        main_id = threading.main_thread().native_id
        main = (self._cpu(main_id) if main_id is not None else None) or 0.0
        totals["benchmark"] = totals.get("benchmark", 0.0) + main
        times = os.times()
        totals["process"] = times.user + times.system
        return totals


def _owner(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    bound_to = getattr(target, "__self__", None)
    handler = getattr(bound_to, "RequestHandlerClass", None)
    if handler is not None:
        return "fake" if "fake_azure" in handler.__module__ else "app"
    modules = (type(bound_to).__module__ if bound_to is not None else "", target.__module__ or "")
    return "fake" if any("fake_azure" in m for m in modules if m) else "app"


class _StampedLines:
    """stdout that also keeps each line with the time it was written."""

    def __init__(self, inner: Any, lines: list[tuple[float, str]]) -> None:
        self.inner, self.lines, self.partial = inner, lines, ""

    def write(self, text: str) -> int:
        self.partial += text
        while "\n" in self.partial:
            line, self.partial = self.partial.split("\n", 1)
            self.lines.append((time.time(), line))
        return int(self.inner.write(text))

    def flush(self) -> None:
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def account(out: str, module: str, arguments: list[str]) -> None:
    """Run `module` as __main__ with its threads' CPU sampled; the record goes to `out`."""
    import runpy

    accounts = _Accounts()
    timeline: list[tuple[float, dict[str, float]]] = []
    lines: list[tuple[float, str]] = []
    plain_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        owner = _owner(self)
        accounts.started(owner)
        try:
            plain_run(self)
        finally:
            accounts.finished(owner)

    threading.Thread.run = run  # type: ignore[method-assign]

    def sample() -> None:
        while True:
            timeline.append((time.time(), accounts.totals()))
            time.sleep(SAMPLE_SECONDS)

    threading.Thread(target=sample, daemon=True).start()
    sys.stdout = _StampedLines(sys.stdout, lines)
    sys.argv = [module, *arguments]
    sys.path[0] = os.getcwd()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    finally:
        timeline.append((time.time(), accounts.totals()))
        Path(out).write_text(json.dumps({"timeline": timeline, "lines": lines}), "utf-8")
    sys.exit(code)


# ---------------------------------------------------------------- the comparison


def window(record: dict[str, Any], vms: int) -> dict[str, float]:
    """CPU per VM started (ms) per owner over the fan-out, and the fan-out's seconds."""
    lines: list[tuple[float, str]] = [(t, line) for t, line in record["lines"]]
    begin = next(t for t, line in lines if "ideal" in line)
    match = next(m for _, line in lines if (m := ELAPSED.search(line)))
    elapsed = float(match.group(1))
    timeline: list[tuple[float, dict[str, float]]] = [(t, c) for t, c in record["timeline"]]
    times = [t for t, _ in timeline]
    first = timeline[max(0, bisect.bisect_right(times, begin) - 1)][1]
    last = timeline[min(len(timeline) - 1, bisect.bisect_left(times, begin + elapsed))][1]
    result = {
        owner: (last.get(owner, 0.0) - first.get(owner, 0.0)) * 1000 / vms
        for owner in (*OWNERS, "process")
    }
    result["seconds"] = elapsed
    return result


def measure(label: str, cwd: Path, arguments: list[str], vms: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "record.json"
        log = Path(scratch) / "log.txt"
        command = [sys.executable, str(Path(__file__).resolve()), "--account", str(out)]
        with log.open("w", encoding="utf-8") as sink:
            finished = subprocess.run(
                [*command, "benchmarks.fanout", *arguments],
                cwd=cwd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=RUN_SECONDS,
                check=False,
            )
        text = log.read_text(encoding="utf-8")
        outcome = [line for line in text.splitlines() if ELAPSED.search(line)]
        outcome += [line for line in text.splitlines() if line.startswith("outcomes:")]
        print(f"{label}: exit {finished.returncode}; " + " | ".join(outcome), flush=True)
        if finished.returncode != 0 or not out.exists():
            print(text[-3000:], file=sys.stderr)
            raise SystemExit(f"{label}: the fan-out failed; nothing measured")
        return window(json.loads(out.read_text(encoding="utf-8")), vms)


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        raise SystemExit("git is needed to check out the 'then' commit")
    return git


def calibration() -> float:
    """CPU seconds of a fixed piece of pure-Python work (JSON, hashing, sorting): how fast this
    machine is right now, taken before each fan-out so the rounds can be set side by side."""
    import hashlib

    document = {"rows": [{"id": f"vm-{i}", "power": "running", "n": i} for i in range(400)]}
    started = time.process_time()
    for _ in range(1000):
        text = json.dumps(document, sort_keys=True)
        hashlib.sha256(text.encode()).hexdigest()
        sorted(json.loads(text)["rows"], key=lambda row: row["id"])
    return time.process_time() - started


def then_worktree(base: str, where: Path) -> Path:
    tree = where / "then"
    added = subprocess.run(
        [_git(), "worktree", "add", "--detach", "--force", str(tree), base],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise SystemExit(
            f"cannot check out {base!r} (a shallow clone lacks old commits: "
            f"git fetch --unshallow): "
            f"{added.stderr.strip()}"
        )
    for shared in (".venv", "node_modules"):
        (tree / shared).symlink_to(ROOT / shared)
    return tree


def report(label: str, figures: dict[str, float]) -> None:
    print(
        f"  {label}: fan-out {figures['seconds']:.1f} s; CPU per VM started: app (local host + "
        f"app) {figures['app']:.1f} ms, fake Azure {figures['fake']:.1f} ms, benchmark loop "
        f"{figures['benchmark']:.1f} ms, whole process {figures['process']:.1f} ms; the "
        f"calibration work took {figures['calibration'] * 1000:.0f} ms just before",
        flush=True,
    )


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--account":
        account(sys.argv[2], sys.argv[3], sys.argv[4:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="b94bb56", help="the 'then' commit")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of three runs (at most 5)")
    args = parser.parse_args()
    then_arguments = ["--vms", "3000", "--baseline", "3", "--answers", "5"]
    now_arguments = ["--vms", "3000", "--in-process", "--skip-wrap-up", "--event-interval", "1e5"]
    runs = {
        f"then ({args.base})": then_arguments,
        "now": now_arguments,
        "now, the old harness's boots": [*now_arguments, "--boot", "0.5", "0.5", "--running", "1"],
    }
    ratios: dict[str, list[float]] = {label: [] for label in runs}
    with tempfile.TemporaryDirectory() as where:
        tree = then_worktree(args.base, Path(where))
        try:
            for round_number in range(1, min(max(args.rounds, 1), 5) + 1):
                figures = {}
                for label, arguments in runs.items():
                    speed = calibration()
                    cwd = tree if label.startswith("then") else ROOT
                    figures[label] = measure(label, cwd, arguments, 3000)
                    figures[label]["calibration"] = speed
                print(f"round {round_number}:", flush=True)
                then = figures[f"then ({args.base})"]
                for label, measured in figures.items():
                    report(label, measured)
                    ratios[label].append(measured["app"] / then["app"])
        finally:
            subprocess.run(
                [_git(), "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    for label, values in ratios.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"the app's CPU per VM started, {label} / then, round by round: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
