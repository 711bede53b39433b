"""The fake is as strict as Azure by default: ARM's read and write token buckets per subscription
and principal, Compute's "Update VM" budgets per subscription and per VM, and the remaining
budget reported on every answer (learn.microsoft.com: "Understand how Azure Resource Manager
throttles requests", "Compute throttling limits", "Troubleshooting API throttling errors")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from sandbox.fake_azure import FakeAzure, PowerState, VmSpec
from sandbox.fake_azure.scenario import Scenario

from .conftest import CLIENT_ID, OTHER_SUBSCRIPTION, SUBSCRIPTION, vm_id

API = {"api-version": "2026-04-01"}
WEB_01 = vm_id(SUBSCRIPTION, "rg-web", "web-01")
BATCH_01 = vm_id(SUBSCRIPTION, "rg-batch", "batch-01")
DEV_01 = vm_id(OTHER_SUBSCRIPTION, "rg-dev", "dev-01")


@pytest.fixture
def session(fake: FakeAzure) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.verify = str(fake.ca_path)
        http.headers["Authorization"] = f"Bearer {fake.issue_token(client_id=CLIENT_ID)}"
        yield http


def post(http: requests.Session, fake: FakeAzure, vm: str, action: str) -> requests.Response:
    return http.post(f"{fake.url}{vm}/{action}", params=API, timeout=5)


def test_the_documented_limits_are_on_by_default(fake: FakeAzure) -> None:
    arm, compute = fake.faults.arm_limits, fake.faults.compute_limits
    assert arm.enabled and compute.enabled
    assert (arm.reads.capacity, arm.reads.refill_per_second) == (250, 25.0)
    assert (arm.writes.capacity, arm.writes.refill_per_second) == (200, 10.0)
    assert (compute.per_subscription.capacity, compute.per_subscription.refill_per_second) == (
        1500,
        500 / 60,
    )
    assert (compute.per_vm.capacity, compute.per_vm.refill_per_second) == (12, 4 / 60)


def test_every_answer_reports_what_is_left_of_arms_and_computes_budgets(
    fake: FakeAzure, session: requests.Session
) -> None:
    read = session.get(f"{fake.url}{WEB_01}", params=API, timeout=5)
    again = session.get(f"{fake.url}{WEB_01}", params=API, timeout=5)
    start = post(session, fake, BATCH_01, "start")
    assert read.status_code == again.status_code == 200
    assert read.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
    # 25 tokens a second come back: on a slow machine one may be back already.
    assert again.headers["x-ms-ratelimit-remaining-subscription-reads"] in ("248", "249")
    assert start.status_code == 202
    assert start.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
    assert start.headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/UpdateVMSubscription;1499,Microsoft.Compute/UpdateVMResource;11"
    )
    # The operation poll is a read too.
    poll = session.get(start.headers["Azure-AsyncOperation"], timeout=5)
    assert int(poll.headers["x-ms-ratelimit-remaining-subscription-reads"]) in range(247, 250)


def test_a_burst_of_reads_beyond_the_bucket_is_throttled_with_arms_answer(
    fake: FakeAzure, session: requests.Session
) -> None:
    # The documented bucket (250), refilled slower than ARM's 25/s so that a slow machine still
    # empties it within the burst.
    fake.faults.set_arm_limits(reads=(250, 1.0))
    statuses = [
        session.get(f"{fake.url}{WEB_01}", params=API, timeout=5).status_code for _ in range(320)
    ]
    refused = session.get(f"{fake.url}{WEB_01}", params=API, timeout=5)
    assert statuses[:250] == [200] * 250  # the full bucket
    assert 429 in statuses  # 320 reads in well under 70 s cannot all be served at 1/s
    assert refused.status_code == 429
    assert refused.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert error["code"] == "SubscriptionRequestsThrottled"
    assert "'read' requests" in error["message"]


def test_buckets_are_kept_per_subscription_and_per_principal(
    fake: FakeAzure, session: requests.Session
) -> None:
    fake.faults.set_arm_limits(writes=(2, 0.01))
    assert [post(session, fake, BATCH_01, "start").status_code for _ in range(3)] == [
        202,
        202,
        429,
    ]
    # Another subscription: a bucket of its own.
    assert post(session, fake, DEV_01, "start").status_code == 202
    # Another principal in the same subscription: a bucket of its own.
    other = requests.post(
        f"{fake.url}{BATCH_01}/deallocate",
        params=API,
        headers={"Authorization": f"Bearer {fake.issue_token()}"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert other.status_code == 202
    assert other.headers["x-ms-ratelimit-remaining-subscription-writes"] == "1"


@pytest.mark.alone
def test_a_refused_bucket_refills_at_its_rate(fake: FakeAzure, session: requests.Session) -> None:
    fake.faults.set_arm_limits(reads=(1, 5.0))
    url = f"{fake.url}{WEB_01}"
    first, second = (session.get(url, params=API, timeout=5) for _ in range(2))
    assert (first.status_code, second.status_code) == (200, 429)
    time.sleep(0.25)  # 5 tokens a second: one is back
    assert session.get(url, params=API, timeout=5).status_code == 200


def test_a_vm_takes_twelve_update_requests_then_computes_own_429(
    fake: FakeAzure, session: requests.Session
) -> None:
    actions = ["start", "deallocate"] * 6
    answers = [post(session, fake, BATCH_01, action) for action in actions]
    assert [a.status_code for a in answers] == [202] * 12
    assert (
        answers[-1]
        .headers["x-ms-ratelimit-remaining-resource"]
        .endswith("Microsoft.Compute/UpdateVMResource;0")
    )
    refused = post(session, fake, BATCH_01, "start")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "OperationNotAllowed"
    assert error["details"][0]["code"] == "TooManyRequests"
    assert json.loads(error["details"][0]["message"])["operationGroup"] == "UpdateVMResource"
    # 4 tokens a minute: the next one is up to 15 s away.
    assert 1 <= int(refused.headers["Retry-After"]) <= 15
    subscription_part, vm_part = refused.headers["x-ms-ratelimit-remaining-resource"].split(",")
    assert vm_part == "Microsoft.Compute/UpdateVMResource;0"
    # 12 of 1,500 spent (the refused one took none back); 500 a minute come back meanwhile.
    policy, remaining = subscription_part.split(";")
    assert policy == "Microsoft.Compute/UpdateVMSubscription"
    assert 1488 <= int(remaining) <= 1500
    # The subscription's budget is shared by its VMs; another VM still has its own twelve.
    assert post(session, fake, WEB_01, "deallocate").status_code == 202


def test_computes_subscription_budget_is_kept_per_region(
    fake: FakeAzure, session: requests.Session
) -> None:
    fake.faults.set_compute_limits(per_subscription=(1, 0.01))
    assert post(session, fake, BATCH_01, "start").status_code == 202
    refused = post(session, fake, WEB_01, "deallocate")
    assert refused.status_code == 429
    assert json.loads(refused.json()["error"]["details"][0]["message"])["operationGroup"] == (
        "UpdateVMSubscription"
    )
    # Same subscription, another region: another budget.
    fake.model.add_vms(
        [VmSpec(SUBSCRIPTION, "rg-north", "north-01", "northeurope", PowerState.DEALLOCATED)]
    )
    north = vm_id(SUBSCRIPTION, "rg-north", "north-01")
    assert post(session, fake, north, "start").status_code == 202


def test_a_test_that_needs_a_bigger_burst_turns_the_limits_off_explicitly(
    fake: FakeAzure, session: requests.Session
) -> None:
    fake.faults.set_arm_limits(enabled=False)
    fake.faults.set_compute_limits(enabled=False)
    answers = [post(session, fake, BATCH_01, "start") for _ in range(15)]
    assert {a.status_code for a in answers} == {202}
    assert "x-ms-ratelimit-remaining-resource" not in answers[-1].headers


def test_boot_and_deallocation_times_are_scenario_settings() -> None:
    settings = Scenario.from_dict(
        {"name": "boots", "settings": {"start_seconds": [30, 90], "deallocate_seconds": 45}}
    ).model_settings()
    assert settings.start_seconds == (30.0, 90.0)
    assert settings.deallocate_seconds == 45.0


def test_each_vm_boots_within_the_scenarios_range_and_the_same_way_every_time(
    fake: FakeAzure,
) -> None:
    fake.model.settings.start_seconds = (30.0, 90.0)
    fake.model.settings.deallocate_seconds = 45.0
    starting = fake.model.begin_power_operation(BATCH_01, "start")
    boot = (starting.completes_at - starting.started_at).total_seconds()
    assert 30.0 <= boot <= 90.0
    stopping = fake.model.begin_power_operation(WEB_01, "deallocate")
    assert (stopping.completes_at - stopping.started_at).total_seconds() == 45.0
    again = fake.model._transition_seconds(BATCH_01, "start")
    assert again == pytest.approx(boot)
    others = {fake.model._transition_seconds(f"{BATCH_01}-{n}", "start") for n in range(20)}
    assert len(others) > 10 and all(30.0 <= s <= 90.0 for s in others)
