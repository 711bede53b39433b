"""The reconcile tick with fakes of our ports: lost post events, platform cancels, missed pre
events, stuck tasks and overlapping ticks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from shared.domain.ids import ConfigurationId, RunId
from shared.domain.machines import PowerState
from shared.domain.platform import PlatformRun
from shared.domain.runs import MachineAction, RunStatus
from shared.domain.tasks import TaskKind
from shared.services.reconcile import (
    LEASE,
    Reconciler,
    cancel_source_of,
    normalise_status,
)
from tests.builders import CONFIGURATION, CORRELATION_ID, POST, PRE, START, SUBSCRIPTION
from tests.unit.test_orchestration import World

RUN = RunId.parse(CORRELATION_ID)


def reconciler(world: World, **kw: object) -> Reconciler:
    return Reconciler(
        ledger=world.ledger,
        graph=world.graph,
        queue=world.queue,
        clock=world.clock,
        policy=world.orchestrator.policy,
        **kw,  # type: ignore[arg-type]
    )


def platform(status: str, message: str | None = None, run: RunId = RUN) -> PlatformRun:
    return PlatformRun(run_id=run, status=status, start=None, end=None, message=message)


def test_status_words_are_normalised_and_unknown_words_kept() -> None:
    assert normalise_status("Canceled") == "Cancelled"
    assert normalise_status("in progress") == "InProgress"
    assert normalise_status("completedWithWarnings") == "CompletedWithWarnings"
    assert normalise_status("Frobnicated") == "Frobnicated"
    assert normalise_status("") is None


def test_cancel_source_is_read_loosely_from_the_message() -> None:
    assert (
        cancel_source_of("Maintenance canceled using cancellation API at 10:01") == "UserOutsideApp"
    )
    assert (
        cancel_source_of("Maintenance schedule cancelled due to internal platform failure")
        == "Platform"
    )
    assert cancel_source_of(None) == "Unknown"


def test_a_lost_post_event_is_made_up_for_by_wrap_up() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=2)
    world.graph.runs = [platform("Succeeded")]
    summary = reconciler(world).tick()
    assert summary.handed_to_wrap_up == [RUN.text]
    world.work()
    assert world.machines.count("deallocate", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert run.platform_status == "Succeeded"
    # The next tick does not hand it over again.
    assert reconciler(world).tick().handed_to_wrap_up == []


def test_a_platform_cancelled_run_is_wrapped_up_and_its_source_recorded() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.graph.runs = [
        platform("Canceled", "Maintenance schedule canceled due to internal platform failure")
    ]
    reconciler(world).tick()
    world.work()
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.cancel_source == "Platform"
    assert run.platform_status == "Cancelled"
    assert run.status is RunStatus.COMPLETED
    assert world.machines.count("deallocate", web) == 1


def test_a_run_under_way_without_a_pre_event_is_reported_once() -> None:
    world = World()
    world.clock.current = START + timedelta(minutes=5)
    world.graph.runs = [platform("InProgress")]
    first = reconciler(world, target_subscriptions=(SUBSCRIPTION,)).tick()
    assert first.missed_pre_events == [RUN.text]
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.pre_event_missed
    assert reconciler(world).tick().missed_pre_events == []
    assert sum("no pre event" in n.message for n in world.ledger.notes) == 1


def test_runs_of_known_configurations_are_read_in_one_query_scoped_to_them() -> None:
    world = World()
    world.deliver(PRE)
    calls: list[tuple[object, list[str]]] = []
    real = world.graph.list_runs

    def recorded(configurations: Any, subscriptions: Sequence[str]) -> Iterator[PlatformRun]:
        calls.append((configurations, list(subscriptions)))
        return real(configurations, subscriptions)

    world.graph.list_runs = recorded  # type: ignore[method-assign]
    other = ConfigurationId.parse(CONFIGURATION.replace("weekly-linux", "monthly"))
    reconciler(world, target_configurations=(other,)).tick()
    [(configurations, subscriptions)] = calls
    assert {c.key for c in configurations} == {RUN.configuration.key, other.key}  # type: ignore[attr-defined]
    assert subscriptions == [RUN.configuration.subscription_id]


def test_overlapping_ticks_do_not_both_act() -> None:
    world = World()
    world.deliver(PRE)
    world.clock.current = START + timedelta(hours=2)
    world.graph.runs = [platform("Succeeded")]
    assert world.ledger.acquire_lease(
        LEASE, "another tick", world.clock.now(), timedelta(minutes=4)
    )
    assert reconciler(world).tick(past_due=True).skipped
    assert world.queue.sent == [t for t in world.queue.sent if t.kind is TaskKind.PREPARE]
    world.ledger.release_lease(LEASE, "another tick")
    tick = reconciler(world)
    assert not tick.tick().skipped
    # The tick gave its lease back: the next one, of the same instance, runs too.
    assert not tick.tick().skipped


def test_a_stuck_task_is_re_driven_once_then_reported() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work(until_minutes_before_start=34.5)  # prepare and start ran; verify is lost
    world.queue._heap.clear()
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.PREPARING
    world.clock.current = START + timedelta(minutes=1)
    summary = reconciler(world).tick()
    assert summary.redriven == [RUN.text]
    assert [t.kind for t in world.queue.sent][-1] is TaskKind.GATE
    world.queue._heap.clear()  # the re-drive is lost too
    world.clock.current = START + timedelta(minutes=5)
    assert reconciler(world).tick().stuck == []  # not yet past the grace period
    world.clock.current = START + timedelta(minutes=20)
    assert reconciler(world).tick().stuck == [RUN.text]
    assert reconciler(world).tick().stuck == []  # reported once
    assert any(n.level.value == "Error" and "stuck" in n.message for n in world.ledger.notes)


def test_a_finished_run_that_owns_nothing_is_only_recorded() -> None:
    world = World()
    (db,) = world.fleet(db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    assert world.row(db).action is MachineAction.LEFT_ALONE
    world.clock.current = START + timedelta(hours=2)
    world.deliver(POST)
    world.work()
    world.graph.runs = [platform("Succeeded")]
    summary = reconciler(world).tick()
    assert summary.handed_to_wrap_up == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.platform_status == "Succeeded"
    assert dataclasses.replace(run).status is RunStatus.COMPLETED


def test_a_pre_event_far_ahead_is_not_stuck_while_it_waits_for_t_minus_40() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.clock.current = START - timedelta(days=20)
    world.deliver(PRE)
    world.queue._heap.clear()  # even with its delayed task lost, it waits until T−40
    world.clock.current = START - timedelta(days=1)
    assert reconciler(world).tick().redriven == []
    world.clock.current = START - timedelta(minutes=31)
    assert reconciler(world).tick().redriven == []  # due at T−40: 9 minutes is not stuck yet
    world.clock.current = START - timedelta(minutes=29)
    assert reconciler(world).tick().redriven == [RUN.text]
    assert [t.kind for t in world.queue.sent][-1] is TaskKind.PREPARE
