"""`make run`'s four runs, played on the same stack with faster VMs: every expectation holds."""

from __future__ import annotations

from sandbox.demo import DEMO_SETTINGS, Timeline, demo_scenario, play
from sandbox.stack import running_stack


def test_the_demo_runs_meet_every_expectation(azurite_connection_string: str) -> None:
    timeline = Timeline()
    with running_stack(
        demo_scenario(power_seconds=0.3),
        settings=DEMO_SETTINGS,
        storage_connection_string=azurite_connection_string,
    ) as stack:
        play(stack, timeline)
    failed = [what for what, held in timeline.results if not held]
    assert failed == []
    assert len(timeline.results) >= 12
