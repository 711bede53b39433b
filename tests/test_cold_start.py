"""Importing function_app (what the worker does to index functions) stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "azure.mgmt",
    "azure.identity",
    "azure.storage",
    "azure.monitor",
    "azure.data.tables",
    "msal",
    "requests",
)


def test_importing_function_app_imports_no_heavy_sdk() -> None:
    code = "import json, sys; import function_app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    loaded = json.loads(out.stdout)
    heavy = [m for m in loaded if m.startswith(HEAVY)]
    assert heavy == []
    assert "shared.entrypoints.events" in loaded
    # The use cases, the settings and the adapters load with the first invocation, not at
    # indexing (benchmarks/cold_start.py measures both).
    deferred = [m for m in loaded if m.startswith(("shared.services", "shared.adapters"))]
    assert deferred == []
    assert "shared.config" not in loaded


def test_importing_function_app_does_no_io_and_needs_no_settings() -> None:
    # No settings at all in the environment: indexing must still work.
    code = "import function_app; print(len(function_app.app.get_functions()))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert int(out.stdout.strip()) >= 3
