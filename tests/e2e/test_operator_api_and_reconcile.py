"""End to end: the operator API and the reconcile timer on the local host, the fake Azure and
Azurite — lost post events, platform cancels, missed pre events, overlapping ticks, cancel races,
and a schemathesis run over the OpenAPI document."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.stack import PRE, Stack, running_stack
from tests.e2e.test_maintenance_runs import (
    BATCH_1,
    BATCH_2,
    FLEET,
    STOPPED,
    WEB,
    deliver_ok,
    e2e_scenario,
    power,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(e2e_scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


def test_the_timer_wraps_up_a_run_whose_post_event_was_lost(stack: Stack) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    # No post event arrives. The reconcile tick sees the run finished in Resource Graph.
    stack.tick_reconciler()
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    assert power(stack, WEB) == "running"
    report = stack.run_report(run)
    assert report["run"]["status"] == "Completed"
    assert report["run"]["platformStatus"] == "Succeeded"
    assert any("no post event" in n["message"] for n in report["notes"])


def test_a_run_cancelled_by_the_platform_is_wrapped_up_and_attributed(stack: Stack) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    stack.fake.model.cancel_run(run.correlation_id, by="platform")
    stack.tick_reconciler()
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    report = stack.run_report(run)
    assert report["cancel"]["source"] == "Platform"
    assert report["run"]["platformStatus"] == "Cancelled"


def test_a_run_whose_pre_event_never_came_is_reported(stack: Stack) -> None:
    stack.tick_reconciler()  # nothing known yet
    run = stack.schedule("weekly", [WEB, BATCH_1], timedelta(minutes=-5))
    # The ledger knows the configuration through an earlier run.
    earlier = stack.schedule("weekly", [WEB], timedelta(minutes=33))
    deliver_ok(stack, PRE, earlier)
    stack.settle()
    stack.tick_reconciler()
    stack.settle()
    listed = stack.session.get(
        f"{stack.host.url}/api/runs",
        headers={"x-functions-key": stack.host.function_key},
        timeout=30,
    ).json()["runs"]
    missed = [r for r in listed if r["runName"] == run.name]
    assert missed and missed[0]["preEventMissed"] is True
    assert missed[0]["platformStatus"] == "InProgress"
    assert power(stack, BATCH_1) == "deallocated"  # nothing was started for it


def test_overlapping_ticks_act_once(stack: Stack) -> None:
    earlier = stack.schedule("weekly", [WEB], timedelta(minutes=33))
    deliver_ok(stack, PRE, earlier)
    stack.settle()
    run = stack.schedule("weekly", [WEB], timedelta(minutes=-5))
    ticks = [threading.Thread(target=stack.tick_reconciler) for _ in range(3)]
    for t in ticks:
        t.start()
    for t in ticks:
        t.join()
    stack.settle()
    stack.tick_reconciler()
    stack.settle()
    notes = stack.run_report(run)["notes"]
    assert sum("no pre event" in n["message"] for n in notes) == 1


def test_an_operator_cancel_and_the_gates_cancel_send_one_request(stack: Stack) -> None:
    stack.fake.faults.fail_lro("batch-02", "start")
    run = stack.schedule("weekly", [BATCH_1, BATCH_2], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    answers: list[requests.Response] = []
    operator = threading.Thread(
        target=lambda: answers.append(
            stack.cancel(run.correlation_id, "operator saw the failure too")
        )
    )
    operator.start()
    operator.join()
    stack.settle()
    assert answers[0].status_code in (200, 409), answers[0].text
    assert len(stack.fake.requests_matching("PUT", "applyUpdates")) == 1
    assert stack.fake.model.run_status(run.correlation_id) == "Cancelled"
    report = stack.run_report(run)
    outcomes = sorted(r["outcome"] for r in report["cancel"]["requests"])
    assert "Accepted" in outcomes


def test_cancel_answers_over_http(stack: Stack) -> None:
    early = stack.schedule("weekly", [WEB], timedelta(minutes=45))
    too_early = stack.cancel(early.correlation_id)
    assert too_early.status_code == 409
    assert too_early.json()["title"] == "Too early to cancel"
    run = stack.schedule("weekly", [WEB], timedelta(minutes=30))
    dry = stack.cancel(run.correlation_id, dry_run=True)
    assert dry.json()["outcome"] == "WouldCancel"
    assert stack.fake.requests_matching("PUT", "applyUpdates") == []
    assert stack.cancel(run.correlation_id).json()["outcome"] == "CancelRequested"
    again = stack.cancel(run.correlation_id)
    assert (again.status_code, again.json()["outcome"]) == (200, "AlreadyCancelled")
    assert len(stack.fake.requests_matching("PUT", "applyUpdates")) == 1
    unknown = run.correlation_id.replace("weekly", "nosuchconfig")
    missing = stack.cancel(unknown)
    assert missing.status_code == 404, missing.text
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad = stack.cancel("/subscriptions/not-a-run")
    assert bad.status_code == 400
    without_key = stack.session.post(f"{stack.host.url}/api/runs/cancel", json={}, timeout=30)
    assert without_key.status_code == 401


# The answers match the OpenAPI document: no 5xx, only documented status codes, the documented
# content type (problem+json for errors), bodies and headers valid against their schemas.
SCHEMATHESIS_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def test_schemathesis_finds_answers_only_as_the_openapi_document_describes_them(
    stack: Stack,
) -> None:
    stack.schedule("weekly", [WEB], timedelta(minutes=30))
    env = {
        **os.environ,
        "NO_PROXY": "127.0.0.1,localhost",
        "HYPOTHESIS_STORAGE_DIRECTORY": str(ROOT / ".pytest_cache" / "hypothesis"),
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{stack.host.url}/api/openapi.json",
            "--url",
            f"{stack.host.url}/api",
            "--header",
            f"x-functions-key: {stack.host.function_key}",
            "--checks",
            ",".join(SCHEMATHESIS_CHECKS),
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--no-color",
            "--request-timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_answers_about_real_runs_match_the_openapi_document(stack: Stack) -> None:
    # schemathesis's own fuzzing rarely names a run that exists; here every operation is asked
    # about real ones (a run, its report, a dry-run cancel, a refused event) and about missing
    # and malformed ones, and each answer is checked against the document.
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    run = stack.schedule("weekly", [WEB], timedelta(minutes=30))
    deliver_ok(stack, PRE, run)
    stack.deliver(PRE, run, StartDateTime="not a time")  # refused, and kept as such
    stack.settle()
    key = {"x-functions-key": stack.host.function_key}
    document = stack.session.get(f"{stack.host.url}/api/openapi.json", headers=key, timeout=30)
    assert document.status_code == 200
    assert document.headers["Content-Type"].startswith("application/json")
    schema = schemathesis.openapi.from_dict(document.json())
    configuration = run.configuration_id.rsplit("/", 1)[-1]
    asked: list[tuple[str, str, dict[str, Any], int]] = [
        ("/runs", "GET", {}, 200),
        ("/runs", "GET", {"query": {"configuration": configuration, "top": 1}}, 200),
        ("/runs", "GET", {"query": {"top": "lots"}}, 400),
        (
            "/runs/{configuration}/{runName}",
            "GET",
            {"path_parameters": {"configuration": configuration, "runName": run.name}},
            200,
        ),
        (
            "/runs/{configuration}/{runName}",
            "GET",
            {"path_parameters": {"configuration": configuration, "runName": "20991231000000"}},
            404,
        ),
        (
            "/runs/{configuration}/{runName}",
            "GET",
            {"path_parameters": {"configuration": configuration, "runName": "yesterday"}},
            400,
        ),
        (
            "/runs/cancel",
            "POST",
            {"body": {"correlationId": run.correlation_id, "reason": "check", "dryRun": True}},
            200,
        ),
        ("/runs/cancel", "POST", {"body": {"reason": "no run named"}}, 400),
        ("/events/refused", "GET", {}, 200),
        ("/openapi.json", "GET", {}, 200),
    ]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    for path, method, parts, status in asked:
        case = schema[path][method].Case(**parts)
        answer = case.call(base_url=f"{stack.host.url}/api", headers=key, timeout=60)
        assert answer.status_code == status, (path, parts, answer.text)
        case.validate_response(answer, checks=checks, headers=key)
    refused = stack.refused_events()
    assert refused and "StartDateTime" in refused[0]["reason"]


def test_the_timer_removes_runs_older_than_run_retention_days(
    azurite_connection_string: str,
) -> None:
    import dataclasses
    from datetime import UTC, datetime

    from shared.adapters.table_ledger import TableRunLedger, build_table_service
    from shared.config import StorageConnection
    from shared.domain.ids import ConfigurationId, RunId
    from shared.domain.runs import Run, RunStatus

    with running_stack(
        e2e_scenario(),
        storage_connection_string=azurite_connection_string,
        settings={"RUN_RETENTION_DAYS": "2"},
    ) as stack:
        weekly = next(c for c in stack.fake.model.configurations if c.name == "weekly")
        ledger = TableRunLedger(
            build_table_service(StorageConnection(connection_string=azurite_connection_string)),
            stack.ledger_table,
        )
        now = datetime.now(UTC).replace(microsecond=0)
        # Completed runs the app handled 3, 4 and 5 days ago (older than 2 days, younger than
        # the default 90) and one a day ago.
        ages = {"old-3": 3, "old-4": 4, "old-5": 5, "recent": 1}
        names = {}
        for label, days in ages.items():
            start = now - timedelta(days=days)
            run_id = RunId.of(ConfigurationId.parse(weekly.id), start.strftime("%Y%m%d%H%M%S"))
            ledger.save_run(
                dataclasses.replace(Run.first_seen(run_id, start), status=RunStatus.COMPLETED)
            )
            names[label] = run_id.run_name
        stack.tick_reconciler()
        stack.settle()
        listed = stack.session.get(
            f"{stack.host.url}/api/runs",
            headers={"x-functions-key": stack.host.function_key},
            timeout=30,
        ).json()["runs"]
        assert [r["runName"] for r in listed] == [names["recent"]]
        gone = stack.session.get(
            f"{stack.host.url}/api/runs/weekly/{names['old-3']}",
            headers={"x-functions-key": stack.host.function_key},
            timeout=30,
        )
        assert gone.status_code == 404
