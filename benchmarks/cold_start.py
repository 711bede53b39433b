"""Cold start: time to import function_app and index its functions, against a bare app.

Each sample is a fresh interpreter (what a new worker does). The bare app is one queue-triggered
function that imports only azure.functions. Rounds alternate the two to spread machine noise.

    .venv/bin/python -m benchmarks.cold_start [--rounds 21]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21)
    rounds = min(max(parser.parse_args().rounds, 3), 200)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
