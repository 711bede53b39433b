"""Pacing ARM calls: the budgets with an injected clock (no wall-clock timing), then the real
Compute SDK client against the strict fake Azure."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.identity import ManagedIdentityCredential

from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.model import VmSpec
from shared.adapters.arm_pacing import (
    ARM_BUCKETS,
    READS,
    WRITES,
    ArmBudgets,
    ArmThrottled,
    operation_type,
)
from shared.adapters.azure_errors import translated
from shared.adapters.compute import ComputeMachines
from shared.domain.errors import AzureCallFailed
from shared.domain.ids import MachineId
from tests.fake_azure import CLIENT_ID, FAST_RETRIES, SUBSCRIPTION, vm_id

SUB = "00000000-0000-4000-8000-000000000001"
OTHER_SUB = "00000000-0000-4000-8000-000000000002"


class SteppedClock:
    """A monotonic clock that moves only when someone sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budgets_on(clock: SteppedClock, max_wait: float = 3.0) -> ArmBudgets:
    # The bucket itself: a full bucket spent as fast as it is asked (the spending pace is
    # tested apart, below).
    return ArmBudgets(
        max_wait=max_wait, monotonic=clock.monotonic, sleep=clock.sleep, spend_over_refill=None
    )


def compute_budget_ran_dry(budgets: ArmBudgets, subscription: str) -> None:
    """A Compute 429 for a start: its budget ran dry, come back in 20 s."""
    budgets.observe(
        subscription,
        WRITES,
        429,
        {"Retry-After": "20", "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;0"},
        compute=True,
    )


def test_get_and_head_are_reads_delete_is_a_delete_and_other_methods_are_writes() -> None:
    assert [operation_type(m) for m in ("GET", "head", "POST", "PUT", "PATCH", "DELETE")] == [
        "reads",
        "reads",
        "writes",
        "writes",
        "writes",
        "deletes",
    ]


def test_the_documented_burst_is_sent_at_once_then_callers_are_served_at_the_refill_rate() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    capacity, refill = ARM_BUCKETS[WRITES]
    for _ in range(capacity):
        assert budgets.acquire(SUB, WRITES) == 0.0
    # Nobody sleeps the others' time: the bucket refills while the first waiter sleeps.
    assert budgets.acquire(SUB, WRITES) == pytest.approx(1 / refill)
    assert budgets.acquire(SUB, WRITES) == pytest.approx(1 / refill)
    assert clock.slept == pytest.approx([0.1, 0.1])


def test_waiting_callers_are_given_places_in_line_not_the_same_moment() -> None:
    clock = SteppedClock()
    budgets = ArmBudgets(
        max_wait=3.0, monotonic=clock.monotonic, sleep=lambda _: None, spend_over_refill=None
    )
    for _ in range(200):
        budgets.acquire(SUB, WRITES)
    waits = [budgets.acquire(SUB, WRITES) for _ in range(5)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_a_place_further_than_the_allowed_wait_is_refused_as_a_429_and_takes_no_token() -> None:
    clock = SteppedClock()
    budgets = ArmBudgets(
        max_wait=1.0, monotonic=clock.monotonic, sleep=lambda _: None, spend_over_refill=None
    )
    for _ in range(210):
        budgets.acquire(SUB, WRITES)
    level = budgets.level(SUB, WRITES)
    with pytest.raises(ArmThrottled) as refused:
        budgets.acquire(SUB, WRITES)
    assert refused.value.status_code == 429
    assert refused.value.retry_after == pytest.approx(1.1)
    assert budgets.level(SUB, WRITES) == level
    # A caller that may wait longer (a cancel) still gets its place.
    assert budgets.acquire(SUB, WRITES, max_wait=5.0) == pytest.approx(1.1)


def test_a_full_bucket_is_spent_at_one_and_a_half_times_its_refill_and_loses_no_token() -> None:
    clock = SteppedClock()
    budgets = ArmBudgets(max_wait=3.0, monotonic=clock.monotonic, sleep=clock.sleep)
    capacity, refill = ARM_BUCKETS[WRITES]
    sent_at = []
    while clock.now - 1000.0 < 130.0:
        budgets.acquire(SUB, WRITES)
        sent_at.append(clock.now - 1000.0)
    # 15 a second while the bucket lasts (it lasts 40 s: 200 + 10/s spent at 15/s)...
    assert sent_at[:4] == pytest.approx([0.0, 1 / 15, 2 / 15, 3 / 15])
    assert sent_at[500] == pytest.approx(500 / 15)
    # ...then the refill's 10 a second: by 130 s as many as spending the bucket at once gives
    # (200 + 10/s: the 1,500th write at 130 s), so a large fleet is no slower.
    assert sent_at[700] - sent_at[699] == pytest.approx(1 / refill)
    assert len([t for t in sent_at if t <= 130.0 + 1e-9]) == capacity + int(130 * refill)
    assert budgets.level(SUB, WRITES) <= 0.0


def test_a_refused_call_reads_as_arms_own_throttling_to_the_domain() -> None:
    with pytest.raises(AzureCallFailed) as failed, translated("Compute"):
        raise ArmThrottled(SUB, WRITES, 2.0)
    assert failed.value.status == 429
    assert failed.value.is_transient
    assert failed.value.code == "ThrottledBeforeSending"


def test_a_held_turn_is_the_next_requests_place_and_is_not_taken_twice() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    for _ in range(200):
        budgets.acquire(SUB, WRITES)
    with budgets.hold(SUB, WRITES) as wait:
        assert wait == 0.0
        assert budgets.level(SUB, WRITES) == pytest.approx(-1.0)
        # The request sent while the turn is held sleeps until it and takes nothing more.
        assert budgets.acquire(SUB, WRITES) == pytest.approx(0.1)
        assert budgets.level(SUB, WRITES) == pytest.approx(0.0)
        # A second request from the same thread queues as any other.
        assert budgets.acquire(SUB, WRITES) == pytest.approx(0.1)
    assert budgets.level(SUB, WRITES) == pytest.approx(0.0)


def test_a_held_turn_no_request_used_is_given_back() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    with budgets.hold(SUB, WRITES) as wait:
        assert wait == 0.0
        assert budgets.level(SUB, WRITES) == pytest.approx(199.0)
    assert budgets.level(SUB, WRITES) == pytest.approx(200.0)


def test_a_turn_further_than_the_allowed_wait_is_not_held_and_says_how_far() -> None:
    clock = SteppedClock()
    budgets = ArmBudgets(
        max_wait=1.0, monotonic=clock.monotonic, sleep=lambda _: None, spend_over_refill=None
    )
    for _ in range(210):
        budgets.acquire(SUB, WRITES)
    level = budgets.level(SUB, WRITES)
    with budgets.hold(SUB, WRITES) as wait:
        assert wait == pytest.approx(1.1)
        assert budgets.level(SUB, WRITES) == level
        # Nothing is held: a request sent anyway queues (and is refused) as any other.
        with pytest.raises(ArmThrottled):
            budgets.acquire(SUB, WRITES)
    assert budgets.level(SUB, WRITES) == level


def test_asking_how_far_a_turn_is_takes_nothing_and_agrees_with_holding_one() -> None:
    clock = SteppedClock()
    paced = ArmBudgets(max_wait=1.0, monotonic=clock.monotonic, sleep=clock.sleep)
    for _ in range(50):  # asking is free: the level and the spending pace do not move
        assert paced.turn_wait(SUB, WRITES) == 0.0
    assert paced.level(SUB, WRITES) == pytest.approx(200.0)
    assert paced.acquire(SUB, WRITES) == 0.0  # the first token is still now
    assert paced.turn_wait(SUB, WRITES) == 0.0  # the next is 1/15 s on: within the wait
    budgets = ArmBudgets(
        max_wait=1.0, monotonic=clock.monotonic, sleep=lambda _: None, spend_over_refill=None
    )
    for _ in range(210):
        budgets.acquire(SUB, WRITES)
    far = budgets.turn_wait(SUB, WRITES)
    assert far == pytest.approx(1.1)
    with budgets.hold(SUB, WRITES) as wait:
        assert wait == pytest.approx(far)
    # A Compute hold makes power operations' turns far, and only theirs.
    compute_budget_ran_dry(budgets, OTHER_SUB)
    assert budgets.turn_wait(OTHER_SUB, WRITES, compute_write=True) == pytest.approx(20.0)
    assert budgets.turn_wait(OTHER_SUB, WRITES) == 0.0
    assert budgets.turn_wait(OTHER_SUB, WRITES, max_wait=0.5) == 0.0


def test_a_held_turn_a_429_voided_is_taken_again_behind_the_pause() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock, max_wait=10.0)
    with budgets.hold(SUB, WRITES) as wait:
        assert wait == 0.0
        budgets.observe(
            SUB,
            WRITES,
            429,
            {"Retry-After": "4", "x-ms-ratelimit-remaining-subscription-writes": "0"},
        )
        # The held token was never there: the request waits out the pause for a new one.
        assert budgets.acquire(SUB, WRITES) == pytest.approx(4.1)
    # Nothing is given back for a turn the 429 voided.
    # The pause's first token went to that request; nothing was given back for the void one.
    assert budgets.level(SUB, WRITES) == pytest.approx(0.0)


def test_a_compute_hold_is_a_turn_too_far_for_power_operations_only() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    compute_budget_ran_dry(budgets, SUB)
    with budgets.hold(SUB, WRITES, compute_write=True) as wait:
        assert wait == pytest.approx(20.0)
    with budgets.hold(SUB, WRITES) as wait:
        assert wait == 0.0


def test_put_off_work_is_promised_turns_after_earlier_promises_at_the_pace_they_come() -> None:
    clock = SteppedClock()
    budgets = ArmBudgets(max_wait=3.0, monotonic=clock.monotonic, sleep=clock.sleep)
    # A full bucket hands out 15 a second for 40 s (200 + 10/s), then the refill's 10.
    starts = [budgets.appoint(SUB, WRITES, 30) for _ in range(50)]  # 1,500 turns promised
    assert starts[:3] == pytest.approx([0.0, 2.0, 4.0])
    assert starts[20] == pytest.approx(40.0)  # the 601st turn: the bucket is just empty
    assert starts[21] - starts[20] == pytest.approx(3.0)  # 30 turns at 10 a second
    assert starts[-1] == pytest.approx((49 * 30 - 200) / 10)
    # Promises are per subscription, and nothing was taken by them.
    assert budgets.appoint(OTHER_SUB, WRITES, 30) == 0.0
    assert budgets.turn_wait(SUB, WRITES) == 0.0


def test_turns_held_count_promised_turns_as_taken_and_forgotten_promises_lapse() -> None:
    clock = SteppedClock()
    budgets = ArmBudgets(max_wait=3.0, monotonic=clock.monotonic, sleep=clock.sleep)
    budgets.appoint(SUB, WRITES, 30)
    for _ in range(30):  # the promised work comes and holds its turns, as power calls do
        with budgets.hold(SUB, WRITES) as wait:
            assert wait == 0.0
            budgets.acquire(SUB, WRITES)
    # Its 30 turns are taken: the next promise starts at the next turn, not 30 turns on.
    next_turn = budgets.turn_wait(SUB, WRITES, max_wait=0.0)
    assert 0.0 < next_turn < 0.1
    assert budgets.appoint(SUB, WRITES, 10) == pytest.approx(next_turn)
    # Work promised 1,000 turns never comes (its run ended): once the last was due
    # (100 s) and the grace has passed, the promise no longer pushes anyone back.
    budgets.appoint(SUB, WRITES, 1000)
    assert budgets.appoint(SUB, WRITES, 1) > 60.0
    clock.now += 200.0
    assert budgets.appoint(SUB, WRITES, 1) == 0.0


def test_a_promise_waits_for_a_compute_hold() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    compute_budget_ran_dry(budgets, SUB)
    assert budgets.appoint(SUB, WRITES, 5, compute_write=True) == pytest.approx(20.0)
    assert budgets.appoint(SUB, WRITES, 5) == 0.0


def test_what_arm_says_remains_lowers_the_level_for_budget_spent_by_other_instances() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    budgets.acquire(SUB, WRITES)
    budgets.observe(SUB, WRITES, 202, {"x-ms-ratelimit-remaining-subscription-writes": "12"})
    assert budgets.level(SUB, WRITES) == 12
    # ... and refills from there at ARM's rate.
    clock.now += 1.0
    assert budgets.level(SUB, WRITES) == pytest.approx(22)


def test_calls_still_on_their_way_are_taken_off_what_arm_reports_left() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    for _ in range(3):
        budgets.acquire(SUB, WRITES)
    budgets.observe(SUB, WRITES, 202, {"x-ms-ratelimit-remaining-subscription-writes": "100"})
    # Two of this process's calls are not answered yet: ARM will count them too.
    assert budgets.level(SUB, WRITES) == 98
    budgets.unanswered(SUB, WRITES)
    budgets.observe(SUB, WRITES, 202, {"x-ms-ratelimit-remaining-subscription-writes": "90"})
    assert budgets.level(SUB, WRITES) == 90


def test_a_remaining_count_above_the_model_never_raises_the_level() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    for _ in range(50):
        budgets.acquire(SUB, WRITES)
    budgets.observe(SUB, WRITES, 202, {"x-ms-ratelimit-remaining-subscription-writes": "1199"})
    assert budgets.level(SUB, WRITES) == 150


def test_the_global_budget_of_all_principals_counts_when_it_is_the_lower() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock)
    budgets.observe(
        SUB,
        READS,
        200,
        {
            "x-ms-ratelimit-remaining-subscription-reads": "240",
            "x-ms-ratelimit-remaining-subscription-global-reads": "7",
        },
    )
    assert budgets.level(SUB, READS) == 7


def test_a_429_empties_the_bucket_until_its_retry_after() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock, max_wait=10.0)
    budgets.observe(
        SUB,
        WRITES,
        429,
        {"x-ms-ratelimit-remaining-subscription-writes": "0", "Retry-After": "4"},
    )
    assert budgets.level(SUB, WRITES) == 0
    clock.now += 3.9
    assert budgets.level(SUB, WRITES) == 0
    # The first token after the pause: Retry-After, then one refill step.
    assert budgets.acquire(SUB, WRITES) == pytest.approx(0.1 + 0.1)


def test_a_place_in_line_given_before_a_429_is_taken_again_behind_the_pause() -> None:
    clock = SteppedClock()
    throttled_meanwhile: list[ArmBudgets] = []

    def sleep_while_another_call_is_throttled(seconds: float) -> None:
        clock.slept.append(seconds)
        if throttled_meanwhile:
            throttled_meanwhile.pop().observe(SUB, WRITES, 429, {"Retry-After": "2"})
        clock.now += seconds

    budgets = ArmBudgets(
        max_wait=10.0,
        monotonic=clock.monotonic,
        sleep=sleep_while_another_call_is_throttled,
        spend_over_refill=None,
    )
    for _ in range(200):
        budgets.acquire(SUB, WRITES)
    throttled_meanwhile.append(budgets)
    slept = budgets.acquire(SUB, WRITES)
    # 0.1 s for the first place, then a new one after the pause: 2 s from the 429, plus 0.1 s.
    assert clock.slept == pytest.approx([0.1, 2.0])
    assert slept == pytest.approx(2.1)


def test_a_compute_429_holds_compute_writes_but_not_reads_or_other_subscriptions() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock, max_wait=1.0)
    budgets.observe(
        SUB,
        WRITES,
        429,
        {
            "x-ms-ratelimit-remaining-subscription-writes": "150",
            "x-ms-ratelimit-remaining-resource": (
                "Microsoft.Compute/PutVM3Min;0,Microsoft.Compute/PutVM30Min;820"
            ),
            "Retry-After": "20",
        },
        compute=True,
    )
    with pytest.raises(ArmThrottled):
        budgets.acquire(SUB, WRITES, compute_write=True)
    assert budgets.acquire(SUB, READS) == 0.0
    assert budgets.acquire(SUB, WRITES) == 0.0  # another provider's write: ARM still has tokens
    assert budgets.acquire("another-subscription", WRITES, compute_write=True) == 0.0
    clock.now += 20.0
    assert budgets.acquire(SUB, WRITES, compute_write=True) == 0.0


def test_reads_writes_and_each_subscription_have_buckets_of_their_own() -> None:
    clock = SteppedClock()
    budgets = budgets_on(clock, max_wait=0.0)
    for _ in range(200):
        budgets.acquire(SUB, WRITES)
    with pytest.raises(ArmThrottled):
        budgets.acquire(SUB, WRITES)
    assert budgets.acquire(SUB, READS) == 0.0
    assert budgets.acquire(SUB.upper().replace("0", "0"), READS) == 0.0
    assert budgets.acquire("00000000-0000-4000-8000-000000000002", WRITES) == 0.0


# Against the strict fake Azure ------------------------------------------------------------

FLEET = 400
# A small, fast bucket so that the test is quick; the fake and the app's model agree on it, as
# they do on ARM's documented sizes in production.
BUCKET = (40, 100.0)


@pytest.fixture
def fleet(fake: FakeAzure) -> list[MachineId]:
    fake.model.add_vms(
        [
            VmSpec(
                subscription_id=SUBSCRIPTION,
                resource_group="rg-fleet",
                name=f"vm-{i:04d}",
                power_state="deallocated",
            )
            for i in range(FLEET)
        ]
    )
    fake.faults.set_arm_limits(writes=BUCKET)
    fake.clear_requests()
    return [MachineId.parse(vm_id(SUBSCRIPTION, "rg-fleet", f"vm-{i:04d}")) for i in range(FLEET)]


def instance(fake: FakeAzure, budgets: ArmBudgets) -> ComputeMachines:
    return ComputeMachines.build(
        ManagedIdentityCredential(client_id=CLIENT_ID),
        fake.url,
        arm_budgets=budgets,
        **FAST_RETRIES,
    )


def start_all(instances: list[ComputeMachines], machines: list[MachineId]) -> list[int | None]:
    """Start every machine from 32 threads, spread over the instances; the 429 statuses."""

    def start(index: int) -> int | None:
        try:
            instances[index % len(instances)].start(machines[index])
        except AzureCallFailed as failed:
            return failed.status
        return None

    with ThreadPoolExecutor(32) as threads:
        return list(threads.map(start, range(len(machines))))


def test_400_starts_in_one_subscription_are_paced_to_arms_bucket_with_almost_no_429(
    fake: FakeAzure, fleet: list[MachineId]
) -> None:
    budgets = ArmBudgets(buckets={**ARM_BUCKETS, WRITES: BUCKET}, max_wait=30.0)
    outcomes = start_all([instance(fake, budgets)], fleet)
    assert outcomes == [None] * FLEET
    answers = [r.status for r in fake.requests_matching("POST", r"/start$")]
    assert answers.count(202) == FLEET
    assert answers.count(429) <= 10


def test_two_instances_sharing_the_budget_keep_to_it_through_the_remaining_headers(
    fake: FakeAzure, fleet: list[MachineId]
) -> None:
    # Each instance has its own view; only ARM's answers tell one what the other spent.
    views = [ArmBudgets(buckets={**ARM_BUCKETS, WRITES: BUCKET}, max_wait=30.0) for _ in range(2)]
    outcomes = start_all([instance(fake, view) for view in views], fleet)
    assert outcomes.count(None) + outcomes.count(429) == FLEET
    answers = [r.status for r in fake.requests_matching("POST", r"/start$")]
    assert answers.count(202) == outcomes.count(None)
    # Unpaced, 32 threads would meet a 429 on most of the 400 starts. Paced, what the answers
    # say (a 429 empties the instance's bucket until Retry-After; the remaining headers lower
    # it) keeps two instances' refusals to a few percent: 13-22 seen. (A variant that ignored
    # the remaining headers, measured once, saw 13-15: here ARM's own 429s carry most of the
    # lesson; what the headers alone do is shown with an injected clock above.)
    assert answers.count(429) <= FLEET * 0.1


def test_a_power_turn_held_through_compute_is_what_the_start_uses(
    fake: FakeAzure, fleet: list[MachineId]
) -> None:
    budgets = ArmBudgets(
        buckets={**ARM_BUCKETS, WRITES: (40, 1.0)}, max_wait=0.5, spend_over_refill=None
    )
    fake.faults.set_arm_limits(writes=(40, 1.0))
    compute = instance(fake, budgets)
    for machine in fleet[:39]:
        compute.start(machine)
    with compute.power_turn(fleet[39]) as wait:
        assert wait == 0.0

        # The last token is this thread's: another thread's turn is too far now.
        def other_turn() -> float:
            with compute.power_turn(fleet[40]) as elsewhere:
                return elsewhere

        with ThreadPoolExecutor(1) as other:
            assert 0.5 < other.submit(other_turn).result() <= 1.0
        compute.start(fleet[39])
    with compute.power_turn(fleet[40]) as wait:
        # The bucket refills 1 a second: the next turn is further than the allowed 0.5 s.
        assert 0.5 < wait <= 1.0
    assert [r.status for r in fake.requests_matching("POST", r"/start$")] == [202] * 40


def test_a_start_that_would_wait_too_long_is_refused_unsent_and_reads_as_throttled(
    fake: FakeAzure, fleet: list[MachineId]
) -> None:
    budgets = ArmBudgets(
        buckets={**ARM_BUCKETS, WRITES: (40, 1.0)}, max_wait=0.5, spend_over_refill=None
    )
    fake.faults.set_arm_limits(writes=(40, 1.0))
    compute = instance(fake, budgets)
    for machine in fleet[:40]:
        compute.start(machine)
    with pytest.raises(AzureCallFailed) as refused:
        compute.start(fleet[40])
    assert refused.value.status == 429
    assert [r.status for r in fake.requests_matching("POST", r"/start$")] == [202] * 40
