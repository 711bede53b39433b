"""End to end over the local host, the fake Azure and Azurite, on each variant of what Azure
leaves undocumented: the run-level status between T−40 and T, per-machine records with or
without `status`, the format of `maintenanceRunId`; and other teams' configurations in the
target subscriptions, which the app must never adopt."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from sandbox.stack import POST, PRE, Stack, running_stack
from tests.e2e.test_maintenance_runs import (
    ARC,
    BATCH_1,
    DEV,
    FLEET,
    STOPPED,
    WEB,
    deliver_ok,
    e2e_scenario,
    machines_by_id,
    power,
)
from tests.fake_azure import OTHER_SUBSCRIPTION, SUBSCRIPTION

StackFactory = Callable[..., AbstractContextManager[Stack]]


@pytest.fixture
def stack_with(azurite_connection_string: str) -> StackFactory:
    """A stack whose fake Azure plays the given variant settings (and app settings)."""

    @contextmanager
    def start(
        settings: dict[str, Any] | None = None,
        app_settings: dict[str, str] | None = None,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Iterator[Stack]:
        scenario = e2e_scenario()
        scenario["settings"].update(settings or {})
        if edit is not None:
            edit(scenario)
        with running_stack(
            scenario, settings=app_settings, storage_connection_string=azurite_connection_string
        ) as stack:
            yield stack

    return start


def listed_runs(stack: Stack) -> list[dict[str, Any]]:
    answer = stack.session.get(
        f"{stack.host.url}/api/runs",
        params={"top": "100"},
        headers={"x-functions-key": stack.host.function_key},
        timeout=30,
    )
    answer.raise_for_status()
    runs: list[dict[str, Any]] = answer.json()["runs"]
    return runs


def by_name(stack: Stack, name: str) -> dict[str, Any]:
    [found] = [r for r in listed_runs(stack) if r["runName"] == name]
    return found


# The run-level status between T−40 and T --------------------------------------------------


@pytest.mark.parametrize("status_before_start", ["InProgress", "Pending"])
def test_a_pre_event_is_reported_missed_only_once_the_window_closed_whatever_the_status(
    stack_with: StackFactory, status_before_start: str
) -> None:
    with stack_with({"status_before_start": status_before_start}) as stack:
        known = stack.schedule("weekly", [WEB], timedelta(minutes=36))
        deliver_ok(stack, PRE, known)  # the ledger knows the configuration through this run
        stack.settle()
        coming = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
        closed = stack.schedule("weekly", [WEB], timedelta(minutes=9))
        stack.tick_reconciler()
        stack.settle()
        # T−32: the platform may already say InProgress; the pre event may still come.
        waiting = by_name(stack, coming.name)
        assert waiting["platformStatus"] == status_before_start
        assert waiting["preEventMissed"] is False
        # T−9: the window (T−10 minus the margin) has closed without a pre event.
        missed = by_name(stack, closed.name)
        assert missed["platformStatus"] == status_before_start
        assert missed["preEventMissed"] is True
        notes = [n["message"] for n in stack.run_report(closed)["notes"]]
        assert any("no pre event was received and the cancel window closed" in n for n in notes)
        # The pre event of the run the reconciler saw first is taken in and acted on.
        deliver_ok(stack, PRE, coming)
        stack.settle()
        assert power(stack, BATCH_1) == "running"
        report = stack.run_report(coming)
        assert report["gate"]["outcome"] == "Passed"
        assert not any("no pre event" in n["message"] for n in report["notes"])
        stack.tick_reconciler()
        stack.settle()
        assert by_name(stack, coming.name)["preEventMissed"] is False


# Per-machine records with or without status -----------------------------------------------


@pytest.mark.parametrize("machine_status_field", ["absent", "present"])
def test_wrap_up_does_not_wait_on_a_missing_machine_status(
    stack_with: StackFactory, machine_status_field: str
) -> None:
    # WRAP_UP_WAIT_MINUTES is 5 in the sandbox: waiting it out would outlast settle's timeout.
    with stack_with({"machine_status_field": machine_status_field}) as stack:
        run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
        deliver_ok(stack, PRE, run)
        stack.settle()
        assert [power(stack, m) for m in STOPPED] == ["running"] * 3
        stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
        deliver_ok(stack, POST, run)
        stack.settle(timeout=90)
        assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
        assert power(stack, WEB) == "running"
        report = stack.run_report(run)
        assert report["run"]["status"] == "Completed"
        assert not any("unfinished" in n["message"] for n in report["notes"])


# maintenanceRunId of patch results --------------------------------------------------------


@pytest.mark.parametrize(
    ("maintenance_run_id", "matched_by"),
    [
        ("timestamp", "MachineAndWindow"),
        ("correlation_id", "RunId"),
        ("run_name", "RunName"),
        ("absent", "MachineAndWindow"),
    ],
)
def test_patch_results_are_matched_whatever_the_maintenance_run_id_looks_like(
    stack_with: StackFactory, maintenance_run_id: str, matched_by: str
) -> None:
    with stack_with({"maintenance_run_id": maintenance_run_id}) as stack:
        run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
        deliver_ok(stack, PRE, run)
        stack.settle()
        stack.fake.model.complete_run(
            run.correlation_id,
            status="CompletedWithWarnings",
            results={BATCH_1: {"status": "Failed", "failed_patch_count": 2}},
            results_lag=0,
        )
        deliver_ok(stack, POST, run, Status="CompletedWithWarnings")
        stack.settle(timeout=90)
        report = stack.run_report(run)
        assert report["patchResults"] == {
            "lookedUp": True,
            "matched": len(FLEET),
            "matchedBy": {matched_by: len(FLEET)},
            "note": None,
        }
        machines = machines_by_id(report)
        assert machines[BATCH_1.lower()]["patch"]["status"] == "Failed"
        assert machines[BATCH_1.lower()]["patch"]["failed"] == 2
        assert machines[ARC.lower()]["patch"]["status"] == "Succeeded"
        assert report["summary"]["patchResults"] == {"Failed": 1, "Succeeded": len(FLEET) - 1}


def test_a_run_with_no_patch_results_says_so(stack_with: StackFactory) -> None:
    with stack_with() as stack:
        run = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
        deliver_ok(stack, PRE, run)
        stack.settle()
        # Patching ended, but Resource Graph shows no patch result yet (it lags).
        stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=3600)
        deliver_ok(stack, POST, run)
        stack.settle(timeout=90)
        report = stack.run_report(run)
        assert report["patchResults"]["matched"] == 0
        assert report["patchResults"]["note"].startswith("no patch results matched")
        assert machines_by_id(report)[BATCH_1.lower()]["patch"] is None


# Other teams' configurations in the same subscriptions ------------------------------------


class WebhookSink:
    """An HTTPS endpoint on loopback that records what the app's notifier posts."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                sink.received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        # Bound now (the app's setting needs the port); served once the fake's TLS exists.
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/hook"

    def serve(self, stack: Stack) -> None:
        context = stack.fake.tls.server_context()
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def add_foreign_configuration(scenario: dict[str, Any]) -> None:
    """Another team's configuration in our subscription, over our machines, with runs that
    were cancelled, failed, are under way without our pre event, or are still to come."""
    scenario["maintenance_configurations"].append(
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-other-team",
            "name": "theirs",
            "assign": ["web-01", "batch-02", "dev-01"],
        }
    )
    scenario["runs"] = [
        {"key": "cancelled", "configuration": "theirs", "start_in_minutes": -20, "cancelled": True},
        {
            "key": "platform-cancelled",
            "configuration": "theirs",
            "start_in_minutes": 25,
            "cancelled": True,
            "cancelled_by": "platform",
        },
        {
            "key": "failed",
            "configuration": "theirs",
            "start_in_minutes": -600,
            "complete": {"status": "Failed"},
        },
        {"key": "under-way", "configuration": "theirs", "start_in_minutes": -5},
        {"key": "coming", "configuration": "theirs", "start_in_minutes": 31},
    ]


def test_runs_of_other_configurations_in_the_target_subscriptions_are_never_adopted(
    stack_with: StackFactory,
) -> None:
    sink = WebhookSink()
    try:
        with stack_with(
            app_settings={
                "TARGET_SUBSCRIPTION_IDS": f"{SUBSCRIPTION},{OTHER_SUBSCRIPTION}",
                "NOTIFY_WEBHOOK_URL": sink.url,
            },
            edit=add_foreign_configuration,
        ) as stack:
            sink.serve(stack)
            ours = stack.schedule("weekly", [BATCH_1, DEV], timedelta(minutes=32))
            deliver_ok(stack, PRE, ours)
            stack.settle()
            for _ in range(2):
                stack.tick_reconciler()
                stack.settle()
            stack.fake.model.complete_run(ours.correlation_id, status="Succeeded", results_lag=0)
            deliver_ok(stack, POST, ours)
            stack.settle(timeout=90)
            stack.tick_reconciler()
            stack.settle()

            # The API lists only our run, and knows nothing of theirs.
            assert [r["runName"] for r in listed_runs(stack)] == [ours.name]
            theirs = stack.fake.applied.runs
            for key in ("cancelled", "failed", "under-way"):
                name = theirs[key].rsplit("/", 1)[-1]
                answer = stack.session.get(
                    f"{stack.host.url}/api/runs/theirs/{name}",
                    headers={"x-functions-key": stack.host.function_key},
                    timeout=30,
                )
                assert answer.status_code == 404, answer.text
            # Nothing of theirs in the ledger table, the report container or the webhook.
            tables = TableServiceClient.from_connection_string(stack.storage_connection_string)
            partitions = {
                e["PartitionKey"]
                for e in tables.get_table_client(stack.ledger_table).list_entities()
            }
            assert partitions and not any("theirs" in p for p in partitions)
            report = by_name(stack, ours.name)["report"]
            container = report.split("/")[-5]  # …/<container>/<sub>/<rg>/<configuration>/<run>.json
            blobs = BlobServiceClient.from_connection_string(
                stack.storage_connection_string
            ).get_container_client(container)
            assert [b.name.split("/")[2] for b in blobs.list_blobs()] == ["weekly"]
            assert len(sink.received) == 1
            assert "weekly" in sink.received[0]["text"]
            assert "theirs" not in json.dumps(sink.received)
            # Every runs query named our configuration only.
            queries = [
                r.body["query"]
                for r in stack.fake.requests_matching("POST", "Microsoft.ResourceGraph")
                if "maintenanceconfigurations/applyupdates" in r.body["query"]
            ]
            assert queries
            assert all(
                "theirs" not in q and "maintenanceConfigurations/weekly" in q for q in queries
            )
            # Their runs are untouched: nothing started or stopped for them, no cancel sent.
            assert stack.fake.requests_matching("PUT", "applyUpdates") == []
            assert power(stack, WEB) == "running"
    finally:
        sink.stop()
