"""The whole product on one machine: Azurite, the fake Azure, and the local host serving
function_app — driven over HTTP exactly as Event Grid and an operator drive the deployed app.

Used by the end-to-end tests, the fan-out benchmark and `make run` / `make serve`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from sandbox.azurite import running_azurite
from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.model import MaintenanceRun
from sandbox.local_host import LocalHost
from shared.domain.tasks import TASK_QUEUE

WEBHOOK_SINK = "/_sandbox/webhook/notifications"
EVENTS_QUEUE = "maintenance-events"  # shared/entrypoints/events.py
PRE = "Microsoft.Maintenance.PreMaintenanceEvent"
POST = "Microsoft.Maintenance.PostMaintenanceEvent"
# The sandbox's managed identity and workspace (see sandbox/scenarios/*.json).
CLIENT_ID = "5f3c1a2b-9d8e-4f70-a1b2-c3d4e5f60718"
WORKSPACE_ID = "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
APP_QUEUES = (EVENTS_QUEUE, f"{EVENTS_QUEUE}-poison", TASK_QUEUE, f"{TASK_QUEUE}-poison")
# Short waits so a whole run plays in seconds; production defaults are in shared/config.py.
FAST_SETTINGS = {
    "VERIFY_INTERVAL_SECONDS": "1",
    "ARG_RETRY_SECONDS": "1",
    "OPERATION_WAIT_SECONDS": "60",
    "WRAP_UP_WAIT_MINUTES": "5",
    "HEALTH_WAIT_MINUTES": "0",
    "START_BATCH_SIZE": "10",
    "START_CONCURRENCY": "8",
    # Far in the future: the tests and the demo tick the timer through the admin API.
    "RECONCILE_SCHEDULE": "0 0 0 1 1 *",
}
HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "extensions": {
        "queues": {
            "batchSize": 16,
            "newBatchThreshold": 8,
            "maxDequeueCount": 5,
            "visibilityTimeout": "00:00:02",
            "maxPollingInterval": "00:00:01",
            "messageEncoding": "base64",
        }
    },
}


@dataclass
class Stack:
    """A running stack and the calls Event Grid and an operator would make."""

    fake: FakeAzure
    host: LocalHost
    storage_connection_string: str
    ledger_table: str
    session: requests.Session

    # Event Grid ---------------------------------------------------------------------------

    def event(
        self,
        kind: str,
        run: MaintenanceRun,
        *,
        schema: str = "EventGrid",
        key_case: str = "pascal",
        **data: Any,
    ) -> dict[str, Any]:
        """The pre or post event of a run as the platform sends it (the fake plays the
        scenario's variants); `data` replaces fields, named in PascalCase."""
        envelope = self.fake.model.maintenance_event(
            run.correlation_id,
            "pre" if kind == PRE else "post",
            schema=schema,
            key_case=key_case,
            now=datetime.now(UTC),
        )
        by_lower = {k.lower(): k for k in envelope["data"]}
        for name, value in data.items():
            envelope["data"][by_lower.get(name.lower(), name)] = value
        return envelope

    def deliver(
        self,
        kind: str,
        run: MaintenanceRun,
        *,
        schema: str = "EventGrid",
        key_case: str = "pascal",
        envelope: Mapping[str, Any] | None = None,
        **data: Any,
    ) -> requests.Response:
        """POST the event to its function's webhook, as an Event Grid subscription does: an
        array for the Event Grid schema, one structured-mode event for CloudEvents."""
        function = "on_pre_maintenance_event" if kind == PRE else "on_post_maintenance_event"
        event = dict(envelope or self.event(kind, run, schema=schema, key_case=key_case, **data))
        cloud = "specversion" in event
        return self.session.post(
            self.host.webhook_url(function),
            data=json.dumps(event if cloud else [event]).encode("utf-8"),
            headers={
                "aeg-event-type": "Notification",
                "Content-Type": (
                    "application/cloudevents+json; charset=utf-8"
                    if cloud
                    else "application/json; charset=utf-8"
                ),
            },
            timeout=30,
        )

    def deliver_to_queue(self, envelope: Mapping[str, Any]) -> None:
        """Put the event on the events queue, as a Storage-queue event subscription does
        (base64 text, as host.json's messageEncoding expects)."""
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self.storage_connection_string, EVENTS_QUEUE)
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        text = json.dumps(envelope)
        client.send_message(base64.b64encode(text.encode("utf-8")).decode("ascii"))

    def refused_events(self) -> list[dict[str, Any]]:
        """GET /api/events/refused."""
        answer = self.session.get(
            f"{self.host.url}/api/events/refused",
            headers={"x-functions-key": self.host.function_key},
            timeout=30,
        )
        answer.raise_for_status()
        refused: list[dict[str, Any]] = answer.json()["refusedEvents"]
        return refused

    # Operator API -------------------------------------------------------------------------

    def cancel(
        self,
        correlation_id: str,
        reason: str = "operator request",
        dry_run: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST /api/runs/cancel with the function key."""
        return self.session.post(
            f"{self.host.url}/api/runs/cancel",
            json={"correlationId": correlation_id, "reason": reason, "dryRun": dry_run},
            headers={"x-functions-key": self.host.function_key, **(headers or {})},
            timeout=60,
        )

    def run_report(self, run: MaintenanceRun) -> dict[str, Any]:
        """GET /api/runs/{configuration}/{runName}."""
        configuration = run.configuration_id.rsplit("/", 1)[-1]
        answer = self.session.get(
            f"{self.host.url}/api/runs/{configuration}/{run.name}",
            headers={"x-functions-key": self.host.function_key},
            timeout=30,
        )
        answer.raise_for_status()
        report: dict[str, Any] = answer.json()
        return report

    def tick_reconciler(self) -> None:
        """Run the reconcile timer now (the host's admin API, as `func` offers)."""
        answer = self.session.post(
            f"{self.host.url}/admin/functions/reconcile_runs",
            json={"input": ""},
            headers={"x-functions-key": self.host.master_key},
            timeout=30,
        )
        answer.raise_for_status()

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until every queue is empty and nothing runs (delayed tasks included)."""
        if not self.host.wait_idle(timeout):
            raise TimeoutError(f"the stack did not settle within {timeout} s")

    # The fake's side ----------------------------------------------------------------------

    def schedule(
        self, configuration: str, machines: list[str], start_in: timedelta, **options: Any
    ) -> MaintenanceRun:
        """Create a run of `configuration` (a name) starting `start_in` from now."""
        config = next(c for c in self.fake.model.configurations if c.name == configuration)
        start = (datetime.now(UTC) + start_in).replace(microsecond=0)
        options.setdefault("arg_lag", 0)
        return self.fake.model.create_run(config.id, start, machines, **options)


@contextlib.contextmanager
def running_stack(
    scenario: str | Mapping[str, Any] = "minimal",
    *,
    settings: Mapping[str, str] | None = None,
    storage_connection_string: str | None = None,
    notify_webhook: bool = False,
) -> Iterator[Stack]:
    """Start the fake Azure (and Azurite, unless given) and the local host serving the app.

    With `notify_webhook` the app's NOTIFY_WEBHOOK_URL is the fake's webhook sink
    (`fake.requests_matching("POST", "webhook")` shows what the app sent).
    """
    with contextlib.ExitStack() as stack:
        if storage_connection_string is None:
            storage_connection_string = stack.enter_context(running_azurite()).connection_string
        fake = FakeAzure.start(scenario)
        stack.callback(fake.stop)
        # The app's queue names are fixed, so stacks sharing an Azurite one after another
        # share its queues: start empty (a task delayed until T−40 by an earlier stack stays
        # hidden in the queue), and leave nothing behind once the host has stopped.
        clear_app_queues(storage_connection_string)
        stack.callback(clear_app_queues, storage_connection_string)
        table = "ledger" + uuid.uuid4().hex[:12]
        env = app_environment(fake, storage_connection_string, table, settings)
        if notify_webhook:
            env["NOTIFY_WEBHOOK_URL"] = f"{fake.url}{WEBHOOK_SINK}"
            env.update(settings or {})
        _reset_container()
        host = LocalHost.start("function_app:app", port=0, env=env, host_json=HOST_JSON)
        stack.callback(_reset_container)
        stack.callback(host.stop)
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment; the host is plain http
        stack.callback(session.close)
        yield Stack(
            fake=fake,
            host=host,
            storage_connection_string=storage_connection_string,
            ledger_table=table,
            session=session,
        )


def clear_app_queues(storage_connection_string: str) -> None:
    """Empty the app's queues and their poison queues, delayed and leased messages included
    (Clear Messages takes them all)."""
    from azure.storage.queue import QueueClient

    for name in APP_QUEUES:
        queue = QueueClient.from_connection_string(storage_connection_string, name)
        with contextlib.suppress(ResourceNotFoundError):
            queue.clear_messages()


def app_environment(
    fake: FakeAzure,
    storage_connection_string: str,
    ledger_table: str,
    settings: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The app's settings for a stack on `fake` and the given storage."""
    return {
        "AzureWebJobsStorage": storage_connection_string,
        "LEDGER_TABLE_NAME": ledger_table,
        "REPORT_CONTAINER": "reports-" + uuid.uuid4().hex[:12],
        "ARM_ENDPOINT": fake.url,
        "AZURE_AUTHORITY_HOST": fake.url,
        "LOG_ANALYTICS_ENDPOINT": fake.url,
        "LOG_ANALYTICS_WORKSPACE_ID": WORKSPACE_ID,
        "MANAGED_IDENTITY_CLIENT_ID": CLIENT_ID,
        # The worker's thread pool as infra/ sizes it (README: "Threads and queue concurrency").
        "PYTHON_THREADPOOL_THREAD_COUNT": "32",
        # Loopback only: no proxy may send the SDKs' traffic elsewhere.
        "NO_PROXY": "127.0.0.1,localhost,::1",
        **fake.environment(),
        **FAST_SETTINGS,
        **(settings or {}),
    }


class HostProcess:
    """The local host as its own process (`python -m sandbox.local_host`), so it can be
    killed the way a Functions instance dies: at once, with messages in flight."""

    def __init__(self, env: Mapping[str, str], host_json: Mapping[str, Any] = HOST_JSON) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="host-process-"))
        self._host_json = self._folder / "host.json"
        self._host_json.write_text(json.dumps(host_json), encoding="utf-8")
        self.function_key = secrets.token_urlsafe(24)
        self.master_key = secrets.token_urlsafe(24)
        self.system_key = secrets.token_urlsafe(24)
        self._env = {
            **os.environ,
            **env,
            "LOCAL_HOST_FUNCTION_KEY": self.function_key,
            "LOCAL_HOST_MASTER_KEY": self.master_key,
            "LOCAL_HOST_EVENTGRID_KEY": self.system_key,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start a host (again) and wait until it listens."""
        ready = self._folder / f"ready-{self.starts}.json"
        self.starts += 1
        log_file = (self._folder / f"host-{self.starts}.log").open("wb")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.local_host",
                "--port",
                "0",
                "--host-json",
                str(self._host_json),
                "--ready-file",
                str(ready),
                "--drain-timeout",
                "5",
            ],
            env=self._env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while not ready.is_file():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the host did not start; see {self._folder}")
            time.sleep(0.1)
        self.url = json.loads(ready.read_text(encoding="utf-8"))["url"]

    @property
    def log_folder(self) -> Path:
        """Where the host's logs (host-1.log, one per start) and host.json are kept."""
        return self._folder

    @property
    def pid(self) -> int | None:
        """The running host's process id (None before start)."""
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, messages in flight stay leased."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait (the host drains briefly)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once the task queue has held no message (visible or leased) for a second."""
        from azure.storage.queue import QueueClient

        queue = QueueClient.from_connection_string(
            self._env["AzureWebJobsStorage"], TASK_QUEUE, retry_total=1
        )
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while time.monotonic() < deadline:
            count = queue.get_queue_properties().approximate_message_count
            now = time.monotonic()
            if count:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= 1.0:
                return True
            time.sleep(0.2)
        return False

    def webhook_url(self, function_name: str) -> str:
        """The Event Grid webhook of one function."""
        return (
            f"{self.url}/runtime/webhooks/eventgrid?functionName={function_name}"
            f"&code={self.system_key}"
        )


def _reset_container() -> None:
    """The app builds its adapters from the environment on first use: start afresh."""
    from shared import bootstrap

    bootstrap.use(None)
