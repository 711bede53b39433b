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

from jsonschema import Draft202012Validator, ValidationError

from .faults import FaultPlan
from .model import AzureModel, ModelSettings, PowerState, VmSpec, key

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

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
# The scenario format as a JSON Schema: every key, its type and the words allowed.
SCENARIO_SCHEMA = json.loads(Path(__file__).with_name("scenario.schema.json").read_text("utf-8"))
_VALIDATOR = Draft202012Validator(SCENARIO_SCHEMA)
_UNKNOWN_KEYS_NOUN = {"": "scenario keys", "settings": "settings", "faults": "fault settings"}


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
        """Validate a scenario dict against the schema; the error names each key and why."""
        plain = json.loads(json.dumps(data))  # tuples become arrays, as in a file
        problems = schema_problems(plain)
        if problems:
            raise ScenarioError(f"{source}: " + "; ".join(problems))
        return cls(plain, source)

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


def schema_problems(data: Any) -> list[str]:
    """What is wrong with a scenario, one sentence per problem: where, what, what is allowed."""
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(error) for error in errors]


def _describe(error: ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    where = where.lstrip(".")
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        noun = _UNKNOWN_KEYS_NOUN.get(where, "keys")
        return f"{where or 'scenario'}: unknown {noun} {unknown}; allowed: {allowed}"
    if error.validator == "enum":
        return f"{where} must be one of {error.validator_value}, not {error.instance!r}"
    if error.validator in ("oneOf", "anyOf"):
        forms = " | ".join(_form(schema) for schema in error.validator_value)
        return f"{where}: {error.instance!r} is none of the allowed forms: {forms}"
    return f"{where or 'scenario'}: {error.message}"


def _form(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " or ".join(repr(word) for word in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    if "required" in schema:
        return f"an object with {schema['required']}"
    return str(schema.get("type", "any value"))


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


def _vm_specs(data: Mapping[str, Any]) -> Iterable[VmSpec]:
    for vm in data.get("vms") or []:
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
    for index, vm_set in enumerate(data.get("vm_sets") or []):
        yield from _vm_set_specs(vm_set, f"vm_sets[{index}]")


def _vm_set_specs(vm_set: Mapping[str, Any], where: str) -> Iterable[VmSpec]:
    count, prefix = int(vm_set["count"]), vm_set["name_prefix"]
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


def apply_scenario(scenario: Scenario, model: AzureModel, faults: FaultPlan) -> AppliedScenario:
    """Create the scenario's fleet, configurations, runs and heartbeats; configure its faults.

    The shape was checked against the schema when the scenario was read; what is left to refuse
    here is what only the model knows (a machine or configuration name that does not exist)."""
    data = scenario.data
    _add_fleet(data, model)
    names = _MachineNames(model)
    configurations = _add_configurations(data, model, names)
    applied = AppliedScenario()
    now = model.now()
    for index, run_spec in enumerate(data.get("runs") or []):
        run_id = _add_run(run_spec, f"runs[{index}]", model, names, configurations, now)
        applied.runs[str(run_spec.get("key", index))] = run_id
    for index, heartbeat in enumerate(data.get("heartbeats") or []):
        selector = heartbeat.get("machines", [heartbeat.get("machine")])
        when = now - dt.timedelta(minutes=float(heartbeat.get("minutes_ago", 1)))
        for machine_id in names.select(selector, f"heartbeats[{index}]"):
            model.add_heartbeat(machine_id, when, workspace_id=heartbeat.get("workspace"))
    try:
        faults.configure(data.get("faults") or {})
        if "lro_retry_after_seconds" in (data.get("settings") or {}):
            faults.lro_retry_after_seconds = int(data["settings"]["lro_retry_after_seconds"])
    except (TypeError, ValueError) as error:
        raise ScenarioError(f"faults: {error}") from error
    return applied


def _add_fleet(data: Mapping[str, Any], model: AzureModel) -> None:
    for sub in data.get("subscriptions") or []:
        if isinstance(sub, str):
            model.add_subscription(sub)
        else:
            model.add_subscription(sub["id"], sub.get("name"))
    for workspace in data.get("workspaces") or []:
        model.add_workspace(str(workspace))
    try:
        model.add_vms(_vm_specs(data))
    except ValueError as error:
        raise ScenarioError(str(error)) from error
    for arc in data.get("arc_machines") or []:
        model.add_arc_machine(
            arc["subscription"],
            arc["resource_group"],
            arc["name"],
            location=arc.get("location", "westeurope"),
            status=arc.get("status", "Connected"),
            tags=arc.get("tags") or {},
            os_type=arc.get("os_type", "linux"),
        )


def _add_configurations(
    data: Mapping[str, Any], model: AzureModel, names: _MachineNames
) -> dict[str, str]:
    """Create the configurations; answers their ids by lower-case name and by id key."""
    configurations: dict[str, str] = {}
    for index, mc in enumerate(data.get("maintenance_configurations") or []):
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
        configurations[configuration.name.lower()] = configuration.id
        configurations[key(configuration.id)] = configuration.id
        if "assign" in mc:
            where = f"maintenance_configurations[{index}].assign"
            for machine_id in names.select(mc["assign"], where):
                model.assign_configuration(configuration.id, machine_id)
        for scope_index, scope in enumerate(mc.get("dynamic_scopes") or []):
            model.add_dynamic_scope(
                configuration.id,
                scope["subscription"],
                scope.get("filter") or {},
                name=scope.get("name") or f"{configuration.name}-dynamic-{scope_index}",
            )
    return configurations


def _add_run(
    run_spec: Mapping[str, Any],
    where: str,
    model: AzureModel,
    names: _MachineNames,
    configurations: Mapping[str, str],
    now: dt.datetime,
) -> str:
    """Create one run (cancelled or completed when the scenario says so); answers its id."""
    reference = str(run_spec["configuration"])
    configuration_id = configurations.get(reference.lower()) or configurations.get(key(reference))
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
    before_start = run_spec.get("cancellation_cutoff_minutes_before_start")
    minutes = run_spec.get("duration_minutes")
    run = model.create_run(
        configuration_id,
        start,
        machines,
        duration=None if minutes is None else dt.timedelta(minutes=float(minutes)),
        cancellation_cutoff=None
        if before_start is None
        else start - dt.timedelta(minutes=float(before_start)),
        arg_lag=run_spec.get("arg_lag_seconds"),
        machines_lag=run_spec.get("machines_lag_seconds"),
    )
    if run_spec.get("cancelled"):
        model.cancel_run(run.correlation_id, by=str(run_spec.get("cancelled_by", "user")))
    complete = run_spec.get("complete")
    if complete:
        model.complete_run(
            run.correlation_id,
            status=complete.get("status", "Succeeded"),
            results={
                names.resolve(ref, f"{where}.complete.results"): fields
                for ref, fields in (complete.get("results") or {}).items()
            },
            default_result=complete.get("default_result"),
        )
    return run.correlation_id


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
