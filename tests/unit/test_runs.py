import dataclasses
from datetime import timedelta

from shared.domain.events import EventKind, parse_event
from shared.domain.ids import RunId
from shared.domain.runs import MachineKind, Run, RunStatus
from tests.builders import CORRELATION_ID, OTHER_SUBSCRIPTION, POST, PRE, START, event_grid_event

ANY = frozenset(EventKind)
RUN = RunId.parse(CORRELATION_ID)
NOW = START - timedelta(minutes=30)


def test_post_event_does_not_move_a_run_back_from_wrap_up_or_cancel() -> None:
    post = parse_event(event_grid_event(POST), ANY)
    for status in (RunStatus.WRAPPING_UP, RunStatus.COMPLETED, RunStatus.CANCELLED):
        run = dataclasses.replace(Run.first_seen(RUN, NOW), status=status)
        assert run.after_event(post, NOW).status is status


def test_pre_event_after_progress_keeps_the_status_but_records_the_time() -> None:
    pre = parse_event(event_grid_event(PRE), ANY)
    run = dataclasses.replace(Run.first_seen(RUN, NOW), status=RunStatus.PREPARED)
    later = run.after_event(pre, NOW)
    assert later.status is RunStatus.PREPARED
    assert later.pre_event_at == NOW


def test_subscriptions_of_both_events_are_kept() -> None:
    pre = parse_event(event_grid_event(PRE, ResourceSubscriptionIds=[OTHER_SUBSCRIPTION]), ANY)
    post = parse_event(event_grid_event(POST), ANY)
    run = Run.first_seen(RUN, NOW).after_event(pre, NOW).after_event(post, NOW)
    assert set(run.subscription_ids) == set(post.subscription_ids) | {OTHER_SUBSCRIPTION}
    assert run.cancellation_cutoff == pre.cancellation_cutoff


def test_machine_kind_is_told_from_the_resource_type() -> None:
    base = "/subscriptions/s/resourceGroups/rg/providers/"
    assert (
        MachineKind.of(base + "Microsoft.Compute/virtualMachines/vm1")
        is MachineKind.VIRTUAL_MACHINE
    )
    assert MachineKind.of(base + "microsoft.hybridcompute/machines/arc1") is MachineKind.ARC_SERVER
    assert MachineKind.of(base + "Microsoft.Web/sites/x") is MachineKind.OTHER


LOCAL_NAME = CORRELATION_ID.replace("20261201030000", "20261201040000")


def test_t_is_the_run_name_until_an_event_gives_start_date_time() -> None:
    local = RunId.parse(LOCAL_NAME)
    run = Run.first_seen(local, NOW)
    assert run.scheduled_start == START + timedelta(hours=1)  # the name, read as UTC
    pre = parse_event(event_grid_event(PRE, CorrelationId=LOCAL_NAME), ANY)
    assert run.after_event(pre, NOW).scheduled_start == START


def test_the_pre_event_s_start_wins_over_a_post_event_s() -> None:
    pre = parse_event(event_grid_event(PRE), ANY)
    post = parse_event(event_grid_event(POST, StartDateTime="2026-12-01T03:05:00Z"), ANY)
    after_post = Run.first_seen(RUN, NOW).after_event(post, NOW)
    assert after_post.scheduled_start == START + timedelta(minutes=5)
    assert after_post.after_event(pre, NOW).scheduled_start == START
    assert after_post.after_event(pre, NOW).after_event(post, NOW).scheduled_start == START
