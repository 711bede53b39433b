"""Scenario files: a fleet, maintenance configurations, runs relative to "now", and faults.

A scenario is JSON (``sandbox/scenarios/*.json``) or the same structure as a dict. The format is
described in ``sandbox/fake_azure/README.md``; :func:`fleet_scenario` builds large fleets for
benchmarks without writing thousands of lines of JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .faults import FaultPlan
from .model import (
    EVENT_SUBSCRIPTION_IDS,
    MACHINE_STATUS_FIELD_VARIANTS,
    MAINTENANCE_RUN_ID_VARIANTS,
    RUN_NAME_CLOCKS,
    AzureModel,
    ModelSettings,
    PowerState,
    VmSpec,
    key,
)

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
DEMO_SUBSCRIPTION_A = "1b7a0c4e-5d2f-4e8a-9c31-0a6f2b7d9e10"
DEMO_SUBSCRIPTION_B = "c0de5a1e-7b3c-4d9f-8e2a-6f1b0c9d8e27"

_TOP_LEVEL_KEYS = {
    "name",
    "description",
    "tenant_id",
    "settings",
    "identities",
    "workspaces",
    "subscriptions",
    "vms",
    "vm_sets",
    "arc_machines",
    "maintenance_configurations",
    "runs",
    "heartbeats",
    "faults",
}
_MODEL_SETTINGS = {
    "auto_heartbeat_seconds",
    "power_transition_seconds",
    "start_seconds",
    "deallocate_seconds",
    "snapshot_seconds",
    "arg_lag_seconds",
    "cancellation_cutoff_minutes",
    "default_run_minutes",
    "vm_list_page_size",
}
# Words, not timings: kept as strings.
_MODEL_WORD_SETTINGS = {
    "status_before_start",
    "machine_status_field",
    "maintenance_run_id",
    "run_name_clock",
    "event_subscription_ids",
}
_SERVER_SETTINGS = {"token_lifetime_seconds", "lro_retry_after_seconds", "check_audience"}
# Word settings with a closed set of variants (README "Variants"): name -> the words allowed,
# the default first. The run status before T takes any word.
_VARIANT_SETTINGS = {
    "machine_status_field": MACHINE_STATUS_FIELD_VARIANTS,
    "maintenance_run_id": MAINTENANCE_RUN_ID_VARIANTS,
    "run_name_clock": RUN_NAME_CLOCKS,
    "event_subscription_ids": EVENT_SUBSCRIPTION_IDS,
}


class ScenarioError(ValueError):
    """A scenario that cannot be applied; the message says which entry and why."""


@dataclass
class Scenario:
    """A parsed scenario; ``data`` keeps the JSON structure."""

    data: dict[str, Any]
    source: str = "<dict>"

    @property
    def name(self) -> str:
        """The scenario's name (file stem when not given)."""
        return str(self.data.get("name") or Path(self.source).stem)

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Read a scenario JSON file."""
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ScenarioError(f"cannot read scenario {file}: {error}") from error
        return cls.from_dict(data, source=str(file))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Scenario:
        """Validate the top-level keys of a scenario dict."""
        if not isinstance(data, Mapping):
            raise ScenarioError("a scenario must be a JSON object")
        unknown = set(data) - _TOP_LEVEL_KEYS
        if unknown:
            raise ScenarioError(f"{source}: unknown scenario keys {sorted(unknown)}")
        settings = data.get("settings") or {}
        unknown_settings = set(settings) - _MODEL_SETTINGS - _MODEL_WORD_SETTINGS - _SERVER_SETTINGS
        if unknown_settings:
            raise ScenarioError(f"{source}: unknown settings {sorted(unknown_settings)}")
        for name, allowed in _VARIANT_SETTINGS.items():
            if name in settings and settings[name] not in allowed:
                raise ScenarioError(f"{source}: setting {name} must be one of {list(allowed)}")
        return cls(json.loads(json.dumps(data)), source)

    @classmethod
    def named(cls, name: str) -> Scenario:
        """A scenario shipped in ``sandbox/scenarios`` (``"demo"``, ``"minimal"``)."""
        return cls.from_file(SCENARIO_DIR / f"{name}.json")

    def model_settings(self) -> ModelSettings:
        """Timings for :class:`AzureModel`."""
        settings = self.data.get("settings") or {}
        values: dict[str, Any] = {
            k: _seconds(v) for k, v in settings.items() if k in _MODEL_SETTINGS
        }
        values.update({k: str(v) for k, v in settings.items() if k in _MODEL_WORD_SETTINGS})
        return ModelSettings(**values)

    def setting(self, name: str, default: Any) -> Any:
        """A server setting (token lifetime, LRO Retry-After, audience check)."""
        return (self.data.get("settings") or {}).get(name, default)


def _seconds(value: Any) -> float | tuple[float, float]:
    """A timing setting: a number, or a [min, max] range (boot and deallocation times)."""
    if isinstance(value, list | tuple):
        low, high = float(value[0]), float(value[1])
        if low < 0 or high < low:
            raise ScenarioError(f"a [min, max] range needs 0 <= min <= max, not {value}")
        return low, high
    return float(value)


def load_scenario(source: Scenario | Mapping[str, Any] | str | Path | None) -> Scenario:
    """Accept a Scenario, a dict, a path to JSON, a shipped scenario name, or None (empty)."""
    if source is None:
        return Scenario({"name": "empty"})
    if isinstance(source, Scenario):
        return source
    if isinstance(source, Mapping):
        return Scenario.from_dict(source)
    text = str(source)
    if text.endswith(".json") or "/" in text or Path(text).exists():
        return Scenario.from_file(text)
    return Scenario.named(text)


@dataclass
class AppliedScenario:
    """What applying a scenario created: run CorrelationIds by their ``key`` (or index)."""

    runs: dict[str, str] = field(default_factory=dict)


class _MachineNames:
    """Resolves machine references (name or full id) against the model."""

    def __init__(self, model: AzureModel) -> None:
        self.by_name: dict[str, list[str]] = {}
        self.ids: set[str] = set()
        for vm in model.vms:
            self.by_name.setdefault(vm.name.lower(), []).append(vm.id)
            self.ids.add(key(vm.id))
        for machine in model.arc_machines:
            self.by_name.setdefault(machine.name.lower(), []).append(machine.id)
            self.ids.add(key(machine.id))
        self.model = model

    def resolve(self, reference: str, where: str) -> str:
        if reference.startswith("/"):
            if key(reference) not in self.ids:
                raise ScenarioError(f"{where}: unknown machine id {reference}")
            return reference
        matches = self.by_name.get(reference.lower(), [])
        if len(matches) != 1:
            problem = "unknown" if not matches else "ambiguous (use the full id)"
            raise ScenarioError(f"{where}: machine name '{reference}' is {problem}")
        return matches[0]

    def select(self, selector: Any, where: str) -> list[str]:
        """A list of references, "all", "running", or {"tag": {k: v}}."""
        if isinstance(selector, list):
            return [self.resolve(str(r), where) for r in selector]
        if selector == "all":
            return [vm.id for vm in self.model.vms] + [m.id for m in self.model.arc_machines]
        if selector == "running":
            return [vm.id for vm in self.model.vms if vm.power_state == PowerState.RUNNING] + [
                m.id for m in self.model.arc_machines if m.status.lower() == "connected"
            ]
        if isinstance(selector, Mapping) and isinstance(selector.get("tag"), Mapping):
            wanted = {str(k).lower(): str(v).lower() for k, v in selector["tag"].items()}

            def tagged(tags: Mapping[str, str]) -> bool:
                lowered = {k.lower(): v.lower() for k, v in tags.items()}
                return all(lowered.get(k) == v for k, v in wanted.items())

            return [vm.id for vm in self.model.vms if tagged(vm.tags)] + [
                m.id for m in self.model.arc_machines if tagged(m.tags)
            ]
        raise ScenarioError(
            f"{where}: machine selector must be a list, 'all', 'running' or {{'tag': {{...}}}}"
        )


def _spread_power_states(spec: Any, count: int, where: str) -> list[PowerState]:
    """Deterministic power states for a VM set: one state, or weights spread evenly over the set."""
    if isinstance(spec, str):
        return [PowerState(spec)] * count
    if not isinstance(spec, Mapping) or not spec:
        raise ScenarioError(f"{where}: power_state must be a state or a mapping of state -> weight")
    weights = [(PowerState(state), float(weight)) for state, weight in spec.items()]
    total = sum(w for _, w in weights)
    states: list[PowerState] = []
    # Bresenham-style spreading: interleaves states so any slice of the set has the same mix.
    credit = [0.0] * len(weights)
    for _ in range(count):
        for i, (_, weight) in enumerate(weights):
            credit[i] += weight / total
        best = max(range(len(weights)), key=lambda i: credit[i])
        credit[best] -= 1.0
        states.append(weights[best][0])
    return states


def _vm_specs(scenario: Scenario) -> Iterable[VmSpec]:
    for index, vm in enumerate(scenario.data.get("vms") or []):
        where = f"vms[{index}]"
        try:
            yield VmSpec(
                subscription_id=vm["subscription"],
                resource_group=vm["resource_group"],
                name=vm["name"],
                location=vm.get("location", "westeurope"),
                power_state=PowerState(vm.get("power_state", "running")),
                tags=vm.get("tags") or {},
                os_type=vm.get("os_type", "Linux"),
                size=vm.get("size", "Standard_D2s_v5"),
            )
        except (KeyError, ValueError) as error:
            raise ScenarioError(f"{where}: {error}") from error
    for index, vm_set in enumerate(scenario.data.get("vm_sets") or []):
        where = f"vm_sets[{index}]"
        try:
            count = int(vm_set["count"])
            prefix = vm_set["name_prefix"]
            start = int(vm_set.get("start_index", 1))
            width = max(len(str(start + count - 1)), int(vm_set.get("digits", 4)))
            states = _spread_power_states(vm_set.get("power_state", "running"), count, where)
            locations = vm_set.get("locations") or [vm_set.get("location", "westeurope")]
            for offset in range(count):
                yield VmSpec(
                    subscription_id=vm_set["subscription"],
                    resource_group=vm_set["resource_group"],
                    name=f"{prefix}{start + offset:0{width}d}",
                    location=locations[offset % len(locations)],
                    power_state=states[offset],
                    tags=vm_set.get("tags") or {},
                    os_type=vm_set.get("os_type", "Linux"),
                    size=vm_set.get("size", "Standard_D2s_v5"),
                )
        except (KeyError, ValueError) as error:
            raise ScenarioError(f"{where}: {error}") from error


def apply_scenario(scenario: Scenario, model: AzureModel, faults: FaultPlan) -> AppliedScenario:
    """Create the scenario's fleet, configurations, runs and heartbeats; configure its faults."""
    data = scenario.data
    applied = AppliedScenario()
    for index, sub in enumerate(data.get("subscriptions") or []):
        if isinstance(sub, str):
            model.add_subscription(sub)
        elif isinstance(sub, Mapping) and "id" in sub:
            model.add_subscription(sub["id"], sub.get("name"))
        else:
            raise ScenarioError(f"subscriptions[{index}]: expected an id or {{'id', 'name'}}")
    for workspace in data.get("workspaces") or []:
        model.add_workspace(str(workspace))
    try:
        model.add_vms(_vm_specs(scenario))
    except ValueError as error:
        raise ScenarioError(str(error)) from error
    for index, arc in enumerate(data.get("arc_machines") or []):
        try:
            model.add_arc_machine(
                arc["subscription"],
                arc["resource_group"],
                arc["name"],
                location=arc.get("location", "westeurope"),
                status=arc.get("status", "Connected"),
                tags=arc.get("tags") or {},
                os_type=arc.get("os_type", "linux"),
            )
        except KeyError as error:
            raise ScenarioError(f"arc_machines[{index}]: missing {error}") from error

    names = _MachineNames(model)
    configurations: dict[str, str] = {}
    for index, mc in enumerate(data.get("maintenance_configurations") or []):
        where = f"maintenance_configurations[{index}]"
        try:
            configuration = model.add_maintenance_configuration(
                mc["subscription"],
                mc["resource_group"],
                mc["name"],
                location=mc.get("location", "westeurope"),
                start_date_time=mc.get("start_date_time", "2025-01-04 03:00"),
                duration=mc.get("duration", "03:55"),
                time_zone=mc.get("time_zone", "UTC"),
                recur_every=mc.get("recur_every", "1Week Saturday"),
                tags=mc.get("tags") or {},
            )
        except KeyError as error:
            raise ScenarioError(f"{where}: missing {error}") from error
        configurations[configuration.name.lower()] = configuration.id
        configurations[key(configuration.id)] = configuration.id
        if "assign" in mc:
            for machine_id in names.select(mc["assign"], f"{where}.assign"):
                model.assign_configuration(configuration.id, machine_id)
        for scope_index, scope in enumerate(mc.get("dynamic_scopes") or []):
            model.add_dynamic_scope(
                configuration.id,
                scope["subscription"],
                scope.get("filter") or {},
                name=scope.get("name") or f"{configuration.name}-dynamic-{scope_index}",
            )

    now = model.now()
    for index, run_spec in enumerate(data.get("runs") or []):
        where = f"runs[{index}]"
        reference = str(run_spec.get("configuration", ""))
        configuration_id = configurations.get(reference.lower()) or configurations.get(
            key(reference)
        )
        if configuration_id is None:
            raise ScenarioError(f"{where}: unknown configuration '{reference}'")
        if "start_at" in run_spec:
            start = dt.datetime.fromisoformat(str(run_spec["start_at"]).replace("Z", "+00:00"))
        else:
            start = now + dt.timedelta(minutes=float(run_spec.get("start_in_minutes", 32)))
            start = start.replace(microsecond=0)
        selector = run_spec.get("machines", "assigned")
        machines = (
            model.assigned_machines(configuration_id)
            if selector == "assigned"
            else names.select(selector, where)
        )
        cutoff = None
        if "cancellation_cutoff_minutes_before_start" in run_spec:
            cutoff = start - dt.timedelta(
                minutes=float(run_spec["cancellation_cutoff_minutes_before_start"])
            )
        run = model.create_run(
            configuration_id,
            start,
            machines,
            duration=dt.timedelta(minutes=float(run_spec["duration_minutes"]))
            if "duration_minutes" in run_spec
            else None,
            cancellation_cutoff=cutoff,
            arg_lag=run_spec.get("arg_lag_seconds"),
            machines_lag=run_spec.get("machines_lag_seconds"),
        )
        applied.runs[str(run_spec.get("key", index))] = run.correlation_id
        if run_spec.get("cancelled"):
            model.cancel_run(run.correlation_id, by=str(run_spec.get("cancelled_by", "user")))
        if run_spec.get("complete"):
            complete = run_spec["complete"]
            results = {
                names.resolve(ref, f"{where}.complete.results"): fields
                for ref, fields in (complete.get("results") or {}).items()
            }
            model.complete_run(
                run.correlation_id,
                status=complete.get("status", "Succeeded"),
                results=results,
                default_result=complete.get("default_result"),
            )

    for index, heartbeat in enumerate(data.get("heartbeats") or []):
        where = f"heartbeats[{index}]"
        selector = heartbeat.get(
            "machines", [heartbeat["machine"]] if "machine" in heartbeat else None
        )
        if selector is None:
            raise ScenarioError(f"{where}: needs 'machine' or 'machines'")
        when = now - dt.timedelta(minutes=float(heartbeat.get("minutes_ago", 1)))
        for machine_id in names.select(selector, where):
            model.add_heartbeat(machine_id, when, workspace_id=heartbeat.get("workspace"))

    try:
        faults.configure(data.get("faults") or {})
        if "lro_retry_after_seconds" in (data.get("settings") or {}):
            faults.lro_retry_after_seconds = int(data["settings"]["lro_retry_after_seconds"])
    except (TypeError, ValueError) as error:
        raise ScenarioError(f"faults: {error}") from error
    return applied


def fleet_scenario(
    vm_count: int = 3000,
    *,
    subscriptions: int = 2,
    running_fraction: float = 0.3,
    run_start_in_minutes: float = 32.0,
    power_transition_seconds: float = 0.2,
    start_seconds: float | tuple[float, float] | None = None,
    deallocate_seconds: float | tuple[float, float] | None = None,
    arc_count: int = 0,
    name: str = "fleet",
) -> dict[str, Any]:
    """A benchmark scenario: ``vm_count`` VMs over ``subscriptions``, one configuration, one run.

    ``running_fraction`` of the VMs run 24/7 (spread evenly), the rest are deallocated; every
    machine is assigned to the configuration and in the run.
    """
    if vm_count < 1 or subscriptions < 1:
        raise ValueError("vm_count and subscriptions must be >= 1")
    subscription_ids = [
        f"{index + 1:08x}-0000-4000-8000-{index + 1:012x}" for index in range(subscriptions)
    ]
    per_subscription = [
        vm_count // subscriptions + (1 if i < vm_count % subscriptions else 0)
        for i in range(subscriptions)
    ]
    vm_sets = []
    start_index = 1
    for sub_id, count in zip(subscription_ids, per_subscription, strict=True):
        if count == 0:
            continue
        vm_sets.append(
            {
                "subscription": sub_id,
                "resource_group": "rg-fleet",
                "name_prefix": "vm-",
                "start_index": start_index,
                "digits": 5,
                "count": count,
                "power_state": {"running": running_fraction, "deallocated": 1.0 - running_fraction}
                if 0.0 < running_fraction < 1.0
                else ("running" if running_fraction >= 1.0 else "deallocated"),
                "tags": {"patch-group": "fleet"},
                "locations": ["westeurope", "northeurope"],
            }
        )
        start_index += count
    arc = [
        {
            "subscription": subscription_ids[i % subscriptions],
            "resource_group": "rg-arc",
            "name": f"arc-{i + 1:04d}",
            "tags": {"patch-group": "fleet"},
        }
        for i in range(arc_count)
    ]
    settings: dict[str, Any] = {
        "power_transition_seconds": power_transition_seconds,
        "snapshot_seconds": 0.1,
    }
    if start_seconds is not None:
        settings["start_seconds"] = start_seconds
    if deallocate_seconds is not None:
        settings["deallocate_seconds"] = deallocate_seconds
    return {
        "name": name,
        "settings": settings,
        "subscriptions": [
            {"id": s, "name": f"fleet-{i + 1}"} for i, s in enumerate(subscription_ids)
        ],
        "vm_sets": vm_sets,
        "arc_machines": arc,
        "maintenance_configurations": [
            {
                "subscription": subscription_ids[0],
                "resource_group": "rg-maintenance",
                "name": "fleet-weekly",
                "assign": "all",
            }
        ],
        "runs": [
            {
                "key": "fleet",
                "configuration": "fleet-weekly",
                "start_in_minutes": run_start_in_minutes,
            }
        ],
    }
