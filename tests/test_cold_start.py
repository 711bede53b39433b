"""Importing function_app (what the worker does to index functions) stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_wiring import EXPECTED

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
    # So do the console's pages and the run model they (and the use cases) are built on.
    assert [m for m in loaded if m.startswith("shared.entrypoints.console_")] == []
    assert "shared.domain.runs" not in loaded


# Run in a clean interpreter: an audit hook (PEP 578) records every file opened, directory
# listed, socket and process touched while function_app is imported and its functions indexed.
AUDITED_INDEXING = """
import json, sys

seen = []

def audit(event, args):
    if event == "open":
        path, mode, flags = args
        seen.append(["open", str(path), str(mode), flags])
    elif event.startswith(("socket.", "subprocess.", "os.", "shutil.", "http.", "urllib.")):
        seen.append([event, repr(args)[:300], None, None])

sys.addaudithook(audit)
import function_app

count = len(function_app.app.get_functions())
sys.stdout.write(json.dumps({"functions": count, "seen": seen}))
"""
CODE_FILES = (".py", ".pyc", ".so")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def test_importing_function_app_does_no_io_and_needs_no_settings() -> None:
    # No settings at all in the environment (indexing must still work), and no bytecode
    # written: what is left is the import system reading code.
    out = subprocess.run(
        [sys.executable, "-B", "-c", AUDITED_INDEXING],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    audit = json.loads(out.stdout)
    assert audit["functions"] == len(EXPECTED)  # every function indexed
    seen = audit["seen"]
    opened = [e for e in seen if e[0] == "open"]
    assert opened  # the hook saw the imports (it would see any other open too)
    not_code = [e[1] for e in opened if not e[1].endswith(CODE_FILES)]
    assert not_code == []  # no settings file, no OpenAPI document, no static file
    written = [e[1] for e in opened if e[2] not in ("r", "rb") or (e[3] or 0) & WRITE_FLAGS]
    assert written == []
    # Directory listings are the import system finding modules; nothing else touched.
    other = [e[:2] for e in seen if e[0] not in ("open", "os.listdir")]
    assert other == []  # no socket, no process, no file created, renamed or removed
