"""`python -m sandbox.local_host`: settings, banner, ready file, keys, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.local_host.keys import ENV_FUNCTION_KEY, ENV_MASTER_KEY
from tests.local_host.conftest import HOST_JSON, ONCE_A_YEAR
from tests.local_host.http_calls import send

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = "tests.local_host.sample_function_app:app"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def run_host(tmp_path: Path, *arguments: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sandbox.local_host", "--app", SAMPLE_APP, *arguments]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_HOST_")}
    with (tmp_path / "stdout").open("wb") as stdout, (tmp_path / "stderr").open("wb") as stderr:
        return subprocess.Popen(
            command, cwd=ROOT, env={**clean_env, **env}, stdout=stdout, stderr=stderr
        )


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float) -> Any:
    """The ready file's JSON once the host writes it; fails if the host exits or is too slow."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"host exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise AssertionError(f"no ready file within {timeout} s")
        # Nothing to wait on across processes: look again shortly.
        threading.Event().wait(0.05)
    return json.loads(path.read_text())


@pytest.fixture
def settings_file(tmp_path: Path, azurite_connection_string: str) -> Path:
    path = tmp_path / "local.settings.json"
    values = {
        "AzureWebJobsStorage": azurite_connection_string,
        "WORK_QUEUE": "from-settings-file",
        "TICK_SCHEDULE": ONCE_A_YEAR,
    }
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


@pytest.fixture
def host_json(tmp_path: Path) -> Path:
    path = tmp_path / "host.json"
    path.write_text(json.dumps(HOST_JSON))
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)


def test_command_line_host_serves_the_app_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
    settings_file: Path,
    host_json: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    ready_file = tmp_path / "ready.json"
    queue = f"from-env-{uuid.uuid4().hex[:12]}"
    process = run_host(
        tmp_path,
        *("--port", "0", "--settings", str(settings_file), "--host-json", str(host_json)),
        *("--ready-file", str(ready_file)),
        env={"WORK_QUEUE": queue, ENV_MASTER_KEY: "master-from-env"},
    )
    processes.append(process)
    ready = wait_for_file(ready_file, process, START_TIMEOUT)
    url = ready["url"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert ready["keys"]["master"] == "master-from-env"
    assert send("GET", f"{url}/api/health").status == 200
    items = f"{url}/api/items/a/b"
    assert send("GET", items).status == 401
    assert send("GET", items, headers={"x-functions-key": ready["keys"]["function"]}).status == 200

    process.send_signal(signal.SIGTERM)
    assert process.wait(STOP_TIMEOUT) == 0
    assert not ready_file.exists()
    stdout = (tmp_path / "stdout").read_text()
    stderr = (tmp_path / "stderr").read_text()
    assert f"Listening on {url}" in stdout
    assert f"get_item: [GET,POST] {url}/api/items/{{category}}/{{item_id}} (function key)" in stdout
    # The environment wins over local.settings.json.
    assert f"on_work_item: queueTrigger on queue {queue}" in stdout
    assert f"function: {ready['keys']['function']}" in stdout
    assert "master: (from LOCAL_HOST_MASTER_KEY)" in stdout
    assert re.search(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} INFO .*Executed 'Functions\.health' \(Succeeded",
        stderr,
        re.MULTILINE,
    )


def test_command_line_host_refuses_to_start_with_a_bad_schedule(
    tmp_path: Path,
    settings_file: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    process = run_host(
        tmp_path,
        *("--port", "0", "--settings", str(settings_file)),
        env={"TICK_SCHEDULE": "sometimes", ENV_FUNCTION_KEY: "k"},
    )
    processes.append(process)
    assert process.wait(START_TIMEOUT) == 1
    assert "on_tick" in (tmp_path / "stderr").read_text()
