"""Fault knobs on their own (seeded randomness, token bucket, latency), scenario files, and the
standalone `python -m sandbox.fake_azure` entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from sandbox.fake_azure import FakeAzure, PowerState, Scenario, ScenarioError, fleet_scenario
from sandbox.fake_azure.faults import FaultPlan, WriteThrottle
from sandbox.fake_azure.model import (
    EVENT_SUBSCRIPTION_IDS,
    MACHINE_STATUS_FIELD_VARIANTS,
    MAINTENANCE_RUN_ID_VARIANTS,
    RUN_NAME_CLOCKS,
)
from sandbox.fake_azure.scenario import SCENARIO_SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def test_probabilistic_faults_replay_with_the_same_seed() -> None:
    def decisions(seed: int) -> list[bool]:
        plan = FaultPlan(seed)
        plan.add_error("compute.*", 500, probability=0.3)
        return [plan.pick_error("compute.start", "POST", "/x") is not None for _ in range(200)]

    first = decisions(7)
    assert first == decisions(7)
    assert first != decisions(8)
    assert 30 < sum(first) < 90


def test_an_error_rule_fires_only_as_often_as_told_and_only_where_it_matches() -> None:
    plan = FaultPlan()
    rule = plan.add_error("compute.start", 503, times=2, path_regex="batch-01")
    assert plan.pick_error("compute.start", "POST", "/vm/web-01/start") is None
    assert plan.pick_error("compute.deallocate", "POST", "/vm/batch-01/deallocate") is None
    fired = [plan.pick_error("compute.start", "POST", "/vm/BATCH-01/start") for _ in range(3)]
    assert fired == [rule, rule, None]


def test_a_fault_for_an_endpoint_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="matches no endpoint"):
        FaultPlan().add_error("compute.strat", 503)


def test_a_scenario_plays_the_cancel_answer_lost_answers_and_the_status_before_t() -> None:
    scenario = Scenario.from_dict(
        {
            "settings": {"status_before_start": "InProgress"},
            "faults": {
                "cancel": {"answer_status": 204, "answer_body": "none", "answer_word": "Cancel"},
                "errors": [{"endpoint": "maintenance.cancel", "status": 0, "after_applying": True}],
            },
        }
    )
    assert scenario.model_settings().status_before_start == "InProgress"
    plan = FaultPlan()
    plan.configure(scenario.data["faults"])
    assert (plan.cancel_policy.answer_status, plan.cancel_policy.answer_body) == (204, "none")
    rule = plan.pick_error("maintenance.cancel", "PUT", "/x")
    assert rule is not None and rule.after_applying and rule.status == 0
    with pytest.raises(ValueError, match="after_applying"):
        FaultPlan().add_error("maintenance.cancel", 0)


def test_the_default_cancel_answer_is_the_spec_example() -> None:
    policy = FaultPlan().cancel_policy
    assert (policy.answer_status, policy.answer_body, policy.answer_word) == (202, "spec", "Cancel")


def test_the_token_bucket_refills_at_its_rate() -> None:
    bucket = WriteThrottle(capacity=3, refill_per_second=0.5)
    taken = [bucket.take("sub", now=100.0) for _ in range(4)]
    assert [t.allowed for t in taken] == [True, True, True, False]
    assert taken[3].retry_after == 2
    assert not bucket.take("sub", now=101.0).allowed
    assert bucket.take("SUB", now=102.1).allowed  # subscription ids compare case-insensitively
    assert bucket.take("other", now=102.1).remaining == 2


def test_latency_uses_the_most_specific_pattern(fake: FakeAzure) -> None:
    fake.faults.set_latency("compute.*", 0.01)
    fake.faults.set_latency("compute.start", 0.3)
    assert fake.faults.latency_for("compute.get") == 0.01
    assert fake.faults.latency_for("compute.start") == 0.3
    assert fake.faults.latency_for("arg") == 0.0


def test_latency_delays_the_answer_of_its_endpoint(fake: FakeAzure) -> None:
    fake.faults.set_latency("compute.get", 0.3)
    started = time.monotonic()
    answer = requests.get(
        f"{fake.url}{fake.model.vms[0].id}",
        params={"api-version": "2026-04-01"},
        headers={"Authorization": f"Bearer {fake.issue_token()}"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.3
    [entry] = fake.requests_matching("GET", "virtualMachines")
    assert entry.duration_ms >= 300


def test_the_demo_scenario_describes_two_subscriptions_twenty_vms_an_arc_server_and_two_runs(
    start_fake: Callable[..., FakeAzure],
) -> None:
    fake = start_fake("demo")
    model = fake.model
    assert model.summary()["vms"] == 20
    assert {s.display_name for s in model.subscriptions} == {"contoso-prod", "contoso-dev"}
    assert [m.name for m in model.arc_machines] == ["onprem-sql-01"]
    states = {vm.power_state for vm in model.vms}
    assert {PowerState.RUNNING, PowerState.DEALLOCATED, PowerState.STOPPED} <= states
    linux = model.get_run(fake.run_id("linux"))
    assert len(linux.machine_ids) == 17  # 16 Linux VMs and the Arc server
    lead = linux.scheduled_start - model.now()
    assert 31 * 60 < lead.total_seconds() <= 32 * 60
    assert fake.faults.lro_failure_for(
        next(v.id for v in model.vms if v.name == "dev-gpu-02"), "start"
    )


def test_the_minimal_scenario_loads(start_fake: Callable[..., FakeAzure]) -> None:
    fake = start_fake("minimal")
    assert [vm.name for vm in fake.model.vms] == ["app-01", "app-02"]
    assert len(fake.model.get_run(fake.run_id("weekly")).machine_ids) == 2


def test_a_generated_fleet_of_3000_vms_spreads_its_power_states(
    start_fake: Callable[..., FakeAzure],
) -> None:
    fake = start_fake(fleet_scenario(3000, subscriptions=3, running_fraction=0.3))
    vms = fake.model.vms
    assert len(vms) == 3000
    assert sum(vm.power_state == PowerState.RUNNING for vm in vms) == 900
    first_hundred = vms[:100]
    assert sum(vm.power_state == PowerState.RUNNING for vm in first_hundred) == 30
    assert len(fake.model.get_run(fake.run_id("fleet")).machine_ids) == 3000


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ({"vms": [{"subscription": "s", "name": "x"}]}, "resource_group"),
        ({"runs": [{"configuration": "nope"}]}, "unknown configuration"),
        ({"unknown_key": 1}, "unknown scenario keys"),
        ({"faults": {"latenzy": {}}}, "unknown fault settings"),
        ({"heartbeats": [{"machine": "ghost"}]}, "ghost"),
        ({"settings": {"maintenance_run_id": "guid"}}, "maintenance_run_id must be one of"),
        ({"settings": {"machine_status_field": "sometimes"}}, "must be one of"),
    ],
)
def test_a_broken_scenario_is_refused_with_the_reason(
    scenario: dict[str, object], message: str
) -> None:
    with pytest.raises(ScenarioError, match=message):
        FakeAzure(Scenario.from_dict(scenario))


def test_the_module_runs_standalone_and_writes_the_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.fake_azure",
            "--scenario",
            "sandbox/scenarios/minimal.json",
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        details = json.loads(ready.read_text())
        assert details["url"].startswith("https://127.0.0.1:")
        health = requests.get(
            f"{details['url']}/_sandbox/health", verify=details["ca_path"], timeout=5
        )
        assert health.json()["vms"] == 2
        assert list(details["runs"]) == ["weekly"]
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "fake Azure listening on https://127.0.0.1:" in stdout
    assert not ready.exists()


def test_variant_settings_default_to_the_most_hostile_and_a_scenario_can_choose_each() -> None:
    defaults = FakeAzure(Scenario.from_dict({})).model.settings
    assert (
        defaults.status_before_start,
        defaults.machine_status_field,
        defaults.maintenance_run_id,
    ) == ("InProgress", "absent", "timestamp")
    chosen = {
        "status_before_start": "Pending",
        "machine_status_field": "present",
        "maintenance_run_id": "run_name",
    }
    settings = FakeAzure(Scenario.from_dict({"settings": chosen})).model.settings
    assert (
        settings.status_before_start,
        settings.machine_status_field,
        settings.maintenance_run_id,
    ) == ("Pending", "present", "run_name")


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (
            {"vms": [{"subscription": "s", "resource_group": "rg", "name": "x", "colour": "red"}]},
            r"vms\[0\]: unknown keys \['colour'\]; allowed: \[.*'power_state'.*\]",
        ),
        (
            {
                "vms": [
                    {"subscription": "s", "resource_group": "rg", "name": "x", "power_state": "on"}
                ]
            },
            r"vms\[0\]\.power_state must be one of \['running', .*'deallocated'.*\], not 'on'",
        ),
        (
            {"settings": {"power_transition_seconds": "fast"}},
            r"settings\.power_transition_seconds: 'fast' is not of type 'number'",
        ),
        (
            {"settings": {"start_seconds": -1}},
            r"settings\.start_seconds: -1 is none of the allowed forms: seconds \| array",
        ),
        (
            {
                "maintenance_configurations": [
                    {"subscription": "s", "resource_group": "rg", "name": "mc", "assign": "some"}
                ]
            },
            r"maintenance_configurations\[0\]\.assign: 'some' is none of the allowed forms: "
            r"'all' or 'running' \| array \| an object with \['tag'\]",
        ),
        (
            {"runs": [{"start_in_minutes": 5}]},
            r"runs\[0\]: 'configuration' is a required property",
        ),
        (
            {"heartbeats": [{"minutes_ago": 5}]},
            r"heartbeats\[0\]: .* is none of the allowed forms: an object with \['machine'\] \| "
            r"an object with \['machines'\]",
        ),
        (
            {"faults": {"arm_limits": {"writes": [200]}}},
            r"faults\.arm_limits\.writes: \[200\] is none of the allowed forms: array \| "
            r"an object with \['capacity', 'refill_per_second'\]",
        ),
    ],
)
def test_a_scenario_that_breaks_the_schema_names_the_key_the_problem_and_what_is_allowed(
    scenario: dict[str, object], message: str
) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict(scenario)


def test_every_problem_of_a_scenario_is_reported_at_once() -> None:
    with pytest.raises(ScenarioError) as refused:
        Scenario.from_dict({"nmae": "typo", "settings": {"run_name_clock": "local"}})
    assert "scenario: unknown scenario keys ['nmae']" in str(refused.value)
    assert "settings.run_name_clock must be one of ['utc', 'configuration']" in str(refused.value)


def test_the_schema_allows_exactly_the_variants_the_model_plays() -> None:
    settings = SCENARIO_SCHEMA["$defs"]["settings"]["properties"]
    assert settings["machine_status_field"]["enum"] == list(MACHINE_STATUS_FIELD_VARIANTS)
    assert settings["maintenance_run_id"]["enum"] == list(MAINTENANCE_RUN_ID_VARIANTS)
    assert settings["run_name_clock"]["enum"] == list(RUN_NAME_CLOCKS)
    assert settings["event_subscription_ids"]["enum"] == list(EVENT_SUBSCRIPTION_IDS)
    assert SCENARIO_SCHEMA["$defs"]["power_state"]["enum"] == [s.value for s in PowerState]
