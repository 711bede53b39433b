"""End to end: every answer Azure may give to a cancel, and every run status it may show before
T, played by the fake Azure and driven over HTTP through the local host, with Azurite.

The variants (issue 10 §1, §2, §7; issue 12 §5): the cancel answered 200, 201, 202 or 204, with
the spec's example body, the run's document or no body, and the words Cancel, Cancelled,
Canceled or an unknown one; an answer lost after Azure applied the cancel (502, or the
connection dropped), with the run read back through the applyUpdates GET or Resource Graph, or
not at all; the run shown Pending or InProgress between T-40 and T; a run id Azure does not know.
One stack serves the module; each test resets the fake's faults.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sandbox.fake_azure.faults import CancelPolicy
from sandbox.fake_azure.model import MaintenanceRun
from sandbox.stack import PRE, Stack, running_stack
from tests.e2e.test_maintenance_runs import (
    BATCH_1,
    BATCH_2,
    WEB,
    deliver_ok,
    e2e_scenario,
    power,
)


@pytest.fixture(scope="module")
def module_stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(e2e_scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


@pytest.fixture
def stack(module_stack: Stack) -> Iterator[Stack]:
    module_stack.fake.faults.clear()
    module_stack.fake.model.settings.status_before_start = "Pending"
    module_stack.fake.clear_requests()
    yield module_stack
    module_stack.settle()
    module_stack.fake.faults.clear()
    module_stack.fake.model.settings.status_before_start = "Pending"


def schedule(stack: Stack, machines: list[str], start_in: timedelta) -> MaintenanceRun:
    """A run of "weekly"; runs share the module's fake, and a run name is unique per second."""
    for second in range(120):
        try:
            return stack.schedule("weekly", machines, start_in + timedelta(seconds=second))
        except ValueError:
            continue
    raise AssertionError("no free run name")


def answer_with(stack: Stack, status: int, body: str, word: str) -> None:
    stack.fake.faults.cancel_policy = CancelPolicy(
        answer_status=status, answer_body=body, answer_word=word
    )


def puts(stack: Stack, run: MaintenanceRun) -> int:
    return len(stack.fake.requests_matching("PUT", rf"/applyUpdates/{run.name}$"))


def cancel_outcomes(report: dict[str, Any]) -> list[str]:
    return [r["outcome"] for r in report["cancel"]["requests"]]


def listed_runs(stack: Stack) -> list[dict[str, Any]]:
    answer = stack.session.get(
        f"{stack.host.url}/api/runs",
        params={"top": "200"},
        headers={"x-functions-key": stack.host.function_key},
        timeout=30,
    )
    answer.raise_for_status()
    runs: list[dict[str, Any]] = answer.json()["runs"]
    return runs


ANSWERS = [
    # (status, body, word) as Azure answers; the outcome the operator API gives
    ((202, "spec", "Cancel"), "CancelRequested"),  # the REST spec's example: the default
    ((202, "none", "Cancel"), "CancelRequested"),
    ((204, "none", "Cancel"), "CancelRequested"),
    ((200, "run", "Cancelled"), "Cancelled"),  # later spec revisions
    ((201, "run", "Cancelled"), "Cancelled"),
    ((200, "spec", "Canceled"), "Cancelled"),
    ((200, "none", "Cancelled"), "CancelRequested"),  # no body: nothing says it is done
    ((200, "spec", "Unheard"), "CancelRequested"),  # a word nobody documented
    ((202, "run", "Cancelled"), "CancelRequested"),  # accepted, not done
]


@pytest.mark.parametrize(("answer", "outcome"), ANSWERS, ids=lambda v: str(v))
def test_every_2xx_answer_is_an_accepted_cancel_sent_once_and_confirmed_later(
    stack: Stack, answer: tuple[int, str, str], outcome: str
) -> None:
    answer_with(stack, *answer)
    run = schedule(stack, [WEB], timedelta(minutes=30))
    response = stack.cancel(run.correlation_id, "bad patch")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["outcome"], body["runStatus"]) == (outcome, "Cancelled")
    assert stack.fake.model.run_status(run.correlation_id) == "Cancelled"
    again = stack.cancel(run.correlation_id, "bad patch")
    assert (again.status_code, again.json()["outcome"]) == (200, "AlreadyCancelled")
    assert puts(stack, run) == 1
    stack.settle()
    report = stack.run_report(run)
    assert cancel_outcomes(report) == ["Accepted", "AlreadyCancelled"]
    assert str(answer[0]) in report["cancel"]["requests"][0]["detail"]
    assert report["cancel"]["source"] == "User"
    # Wrap-up ran, and what Azure finally said is recorded.
    assert report["run"]["status"] == "Completed"
    assert report["run"]["platformStatus"] == "Cancelled"


@pytest.mark.parametrize(
    "answer",
    [(202, "spec", "Cancel"), (204, "none", "Cancel"), (200, "run", "Cancelled")],
    ids=lambda v: str(v),
)
def test_the_gate_sends_one_cancel_whatever_the_answer_and_hands_the_run_to_wrap_up(
    stack: Stack, answer: tuple[int, str, str]
) -> None:
    answer_with(stack, *answer)
    stack.fake.faults.fail_lro("batch-02", "start")
    run = schedule(stack, [BATCH_1, BATCH_2, WEB], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    report = stack.run_report(run)
    assert report["gate"]["outcome"] == "Cancelled"
    assert puts(stack, run) == 1
    assert [(r["requestedBy"], r["outcome"]) for r in report["cancel"]["requests"]] == [
        ("app:gate", "Accepted")
    ]
    assert report["run"]["status"] == "Completed"
    assert report["run"]["platformStatus"] == "Cancelled"
    assert power(stack, BATCH_1) == "deallocated"  # started for the run, stopped again
    assert power(stack, WEB) == "running"
    assert not [n for n in report["notes"] if n["source"] == "poison"]


@pytest.mark.parametrize("lost", [502, 0], ids=["502-after-applying", "connection-dropped"])
def test_a_lost_answer_is_read_back_and_never_sent_twice(stack: Stack, lost: int) -> None:
    stack.fake.faults.add_error("maintenance.cancel", lost, times=1, after_applying=True)
    run = schedule(stack, [WEB], timedelta(minutes=30))
    response = stack.cancel(run.correlation_id, "bad patch")
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "Cancelled"
    assert "lost" in response.json()["detail"]
    assert stack.fake.requests_matching("GET", rf"/applyUpdates/{run.name}$")
    assert stack.cancel(run.correlation_id).json()["outcome"] == "AlreadyCancelled"
    assert puts(stack, run) == 1
    stack.settle()
    assert cancel_outcomes(stack.run_report(run))[0] == "Accepted"


def test_a_lost_answer_is_read_back_through_resource_graph_when_the_get_fails(
    stack: Stack,
) -> None:
    stack.fake.faults.add_error("maintenance.cancel", 502, times=1, after_applying=True)
    stack.fake.faults.add_error("maintenance.get", 403, code="AuthorizationFailed")
    run = schedule(stack, [WEB], timedelta(minutes=30))
    deliver_ok(stack, PRE, run)
    stack.settle()
    response = stack.cancel(run.correlation_id, "bad patch")
    assert (response.status_code, response.json()["outcome"]) == (200, "Cancelled")
    assert puts(stack, run) == 1


def test_a_lost_answer_that_cannot_be_read_back_waits_for_azure_instead_of_a_second_put(
    stack: Stack,
) -> None:
    run = schedule(stack, [WEB], timedelta(minutes=30))
    deliver_ok(stack, PRE, run)
    stack.settle()
    stack.fake.faults.add_error("maintenance.cancel", 0, times=1, after_applying=True)
    unreadable = [
        stack.fake.faults.add_error("maintenance.get", 403, code="AuthorizationFailed"),
        stack.fake.faults.add_error("arg", 403, code="AuthorizationFailed"),
    ]
    response = stack.cancel(run.correlation_id, "bad patch")
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["outcome"] == "CancelUnconfirmed"
    repeat = stack.cancel(run.correlation_id, "bad patch")
    assert (repeat.status_code, repeat.json()["outcome"]) == (409, "CancelInFlight")
    assert puts(stack, run) == 1
    # Azure can be read again: the confirm task finds the run cancelled and records it.
    for rule in unreadable:
        stack.fake.faults.remove_error(rule)
    stack.settle()
    report = stack.run_report(run)
    assert cancel_outcomes(report)[:2] == ["Unconfirmed", "RefusedRunState"]
    assert cancel_outcomes(report)[-1] == "Accepted"
    assert report["run"]["status"] == "Completed"
    assert report["run"]["platformStatus"] == "Cancelled"
    assert puts(stack, run) == 1


def test_a_gate_cancel_whose_answer_is_lost_is_sent_once(stack: Stack) -> None:
    stack.fake.faults.add_error("maintenance.cancel", 502, times=1, after_applying=True)
    stack.fake.faults.fail_lro("batch-02", "start")
    run = schedule(stack, [BATCH_1, BATCH_2], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    report = stack.run_report(run)
    assert report["gate"]["outcome"] == "Cancelled"
    assert puts(stack, run) == 1
    assert report["run"]["status"] == "Completed"
    assert power(stack, BATCH_1) == "deallocated"


def test_a_gate_cancel_that_fails_is_reported_and_not_resent(stack: Stack) -> None:
    stack.fake.faults.add_error("maintenance.cancel", 503, code="ServerBusy")
    stack.fake.faults.fail_lro("batch-02", "start")
    run = schedule(stack, [BATCH_1, BATCH_2], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    report = stack.run_report(run)
    assert report["gate"]["outcome"] == "CancelFailed"
    assert puts(stack, run) == 1
    assert any(n["level"] == "Error" and n["source"] == "gate" for n in report["notes"])
    assert not [n for n in report["notes"] if n["source"] == "poison"]


@pytest.mark.parametrize("word", ["Pending", "InProgress"])
def test_before_t_the_window_decides_whatever_status_the_platform_shows(
    stack: Stack, word: str
) -> None:
    stack.fake.model.settings.status_before_start = word
    run = schedule(stack, [WEB], timedelta(minutes=30))
    deliver_ok(stack, PRE, run)
    stack.settle()
    stack.tick_reconciler()  # the ledger now holds the platform's word
    stack.settle()
    assert stack.run_report(run)["run"]["platformStatus"] == word
    response = stack.cancel(run.correlation_id, "bad patch")
    assert (response.status_code, response.json()["outcome"]) == (200, "CancelRequested")
    assert puts(stack, run) == 1


@pytest.mark.parametrize("word", ["Pending", "InProgress"])
def test_before_t_but_outside_the_window_the_cancel_is_refused_with_the_window(
    stack: Stack, word: str
) -> None:
    stack.fake.model.settings.status_before_start = word
    run = schedule(stack, [WEB], timedelta(minutes=5))
    refused = stack.cancel(run.correlation_id)
    assert refused.status_code == 409
    assert refused.json()["title"] == "Too late to cancel"
    assert puts(stack, run) == 0


def test_after_t_the_run_is_under_way_and_a_cancel_is_refused(stack: Stack) -> None:
    run = schedule(stack, [WEB], timedelta(minutes=-2))
    refused = stack.cancel(run.correlation_id)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["title"] == "The run cannot be cancelled"
    assert "under way" in body["detail"]
    assert puts(stack, run) == 0


def test_a_cancel_for_a_run_azure_does_not_know_leaves_no_run_and_no_wider_queries(
    stack: Stack,
) -> None:
    known = schedule(stack, [WEB], timedelta(minutes=30))
    ghost_subscription = str(uuid.uuid4())
    # Well formed, inside its window, but not a run Azure has.
    # A second no other run of the module's fake took (runs share it, one name a second).
    unknown_run = next(
        name
        for name in (
            known.correlation_id.replace(
                known.name,
                (known.scheduled_start + timedelta(seconds=s)).strftime("%Y%m%d%H%M%S"),
            )
            for s in range(30, 300)
        )
        if stack.fake.model.find_run(name) is None
    )
    ghost_run = (
        f"/subscriptions/{ghost_subscription}/resourceGroups/rg-ghost/providers/"
        "Microsoft.Maintenance/maintenanceConfigurations/ghost/providers/"
        f"microsoft.maintenance/applyupdates/{known.name}"
    )
    for correlation_id in (unknown_run, ghost_run):
        missing = stack.cancel(correlation_id, "typo")
        assert missing.status_code == 404, missing.text
        assert missing.headers["content-type"].startswith("application/problem+json")
    assert stack.fake.requests_matching("PUT", "applyUpdates") == []
    listed = {r["correlationId"].lower() for r in listed_runs(stack)}
    assert unknown_run.lower() not in listed
    assert ghost_run.lower() not in listed
    stack.fake.clear_requests()
    stack.tick_reconciler()
    stack.settle()
    queries = stack.fake.requests_matching("POST", "ResourceGraph")
    assert queries
    sent = json.dumps([q.body for q in queries]).lower()
    assert ghost_subscription not in sent
    assert "ghost" not in sent
    assert unknown_run.lower() not in {r["correlationId"].lower() for r in listed_runs(stack)}


def test_the_sandbox_default_is_the_spec_example(stack: Stack) -> None:
    run = schedule(stack, [WEB], timedelta(minutes=30))
    stack.cancel(run.correlation_id)
    [put] = stack.fake.requests_matching("PUT", rf"/applyUpdates/{run.name}$")
    assert put.status == 202
    assert put.body == {"properties": {"status": "Cancel"}}
