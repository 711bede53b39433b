"""The whole product on one machine: Azurite, the fake Azure, and the local host serving
function_app — driven over HTTP exactly as Event Grid and an operator drive the deployed app.

Used by the end-to-end tests, the fan-out benchmark and `make run` / `make serve`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from azure.core.exceptions import ResourceExistsError

from sandbox.azurite import running_azurite
from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.model import MaintenanceRun
from sandbox.local_host import LocalHost

WEBHOOK_SINK = "/_sandbox/webhook/notifications"
EVENTS_QUEUE = "maintenance-events"  # shared/entrypoints/events.py
PRE = "Microsoft.Maintenance.PreMaintenanceEvent"
POST = "Microsoft.Maintenance.PostMaintenanceEvent"
# The sandbox's managed identity and workspace (see sandbox/scenarios/*.json).
CLIENT_ID = "5f3c1a2b-9d8e-4f70-a1b2-c3d4e5f60718"
WORKSPACE_ID = "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
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
        table = "ledger" + uuid.uuid4().hex[:12]
        env = {
            "AzureWebJobsStorage": storage_connection_string,
            "LEDGER_TABLE_NAME": table,
            "REPORT_CONTAINER": "reports-" + uuid.uuid4().hex[:12],
            "ARM_ENDPOINT": fake.url,
            "AZURE_AUTHORITY_HOST": fake.url,
            "LOG_ANALYTICS_ENDPOINT": fake.url,
            "LOG_ANALYTICS_WORKSPACE_ID": WORKSPACE_ID,
            "MANAGED_IDENTITY_CLIENT_ID": CLIENT_ID,
            # Loopback only: no proxy may send the SDKs' traffic elsewhere.
            "NO_PROXY": "127.0.0.1,localhost,::1",
            **fake.environment(),
            **FAST_SETTINGS,
            **({"NOTIFY_WEBHOOK_URL": f"{fake.url}{WEBHOOK_SINK}"} if notify_webhook else {}),
            **(settings or {}),
        }
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


def _reset_container() -> None:
    """The app builds its adapters from the environment on first use: start afresh."""
    from shared import bootstrap

    bootstrap.use(None)
