"""Maintenance: configurations, assignments, runs (applyUpdates), their events and patch results."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .compute_model import ComputeModel
from .hybrid_compute_model import HybridComputeModel
from .records import (
    EVENT_SUBSCRIPTION_IDS,
    MAINTENANCE_EVENT_TYPES,
    PLATFORM_CANCEL_MESSAGE,
    RUN_NAME_CLOCKS,
    USER_CANCEL_MESSAGE,
    UTC,
    ConfigurationAssignment,
    MaintenanceConfiguration,
    MaintenanceRun,
    PatchResult,
    iso_time,
    key,
    parse_resource_id,
    time_zone_of,
)


class MaintenanceModel(ComputeModel, HybridComputeModel):
    """Maintenance: configurations, assignments, runs, their events and patch results."""

    # -- maintenance configurations and assignments --------------------------------------------
    def add_maintenance_configuration(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        start_date_time: str = "2025-01-04 03:00",
        duration: str = "03:55",
        time_zone: str = "UTC",
        recur_every: str = "1Week Saturday",
        tags: Mapping[str, str] | None = None,
    ) -> MaintenanceConfiguration:
        """Create a maintenance configuration (InGuestPatch)."""
        with self._lock:
            configuration = MaintenanceConfiguration(
                subscription_id,
                resource_group,
                name,
                location,
                start_date_time,
                duration,
                time_zone,
                recur_every,
                dict(tags or {}),
            )
            self._register_group(subscription_id, resource_group)
            self._configurations[key(configuration.id)] = configuration
            self._changed()
            return configuration

    def find_configuration(self, configuration_id: str) -> MaintenanceConfiguration | None:
        """The configuration with that id, or None."""
        with self._lock:
            return self._configurations.get(key(configuration_id))

    @property
    def configurations(self) -> list[MaintenanceConfiguration]:
        """All maintenance configurations."""
        with self._lock:
            return list(self._configurations.values())

    def assign_configuration(
        self, configuration_id: str, machine_id: str, *, name: str | None = None
    ) -> ConfigurationAssignment:
        """Statically assign a machine to a configuration."""
        with self._lock:
            if key(configuration_id) not in self._configurations:
                raise KeyError(configuration_id)
            configuration = self._configurations[key(configuration_id)]
            assignment = ConfigurationAssignment(
                name=name or f"{configuration.name}-{machine_id.rstrip('/').split('/')[-1]}",
                configuration_id=configuration.id,
                resource_id=machine_id,
                location=configuration.location,
            )
            self._assignments[key(assignment.id)] = assignment
            self._changed()
            return assignment

    def add_dynamic_scope(
        self,
        configuration_id: str,
        subscription_id: str,
        filter: Mapping[str, Any],
        *,
        name: str | None = None,
    ) -> ConfigurationAssignment:
        """Add a dynamic scope: a subscription-level assignment with a filter."""
        with self._lock:
            configuration = self._configurations[key(configuration_id)]
            assignment = ConfigurationAssignment(
                name=name or f"{configuration.name}-dynamic-{subscription_id[:8]}",
                configuration_id=configuration.id,
                resource_id=f"/subscriptions/{subscription_id}",
                filter=dict(filter),
            )
            self.add_subscription(subscription_id)
            self._assignments[key(assignment.id)] = assignment
            self._changed()
            return assignment

    def assigned_machines(self, configuration_id: str) -> list[str]:
        """Machines statically assigned to a configuration (ids)."""
        with self._lock:
            return [
                a.resource_id
                for a in self._assignments.values()
                if a.filter is None and key(a.configuration_id) == key(configuration_id)
            ]

    # -- runs ----------------------------------------------------------------------------------
    def create_run(
        self,
        configuration_id: str,
        scheduled_start: dt.datetime,
        machine_ids: Sequence[str],
        *,
        duration: dt.timedelta | None = None,
        cancellation_cutoff: dt.datetime | None = None,
        arg_lag: dt.timedelta | float | None = None,
        machines_lag: dt.timedelta | float | None = None,
        correlation_id_style: str = "lower",
        run_name_clock: str | None = None,
    ) -> MaintenanceRun:
        """Create a run of a configuration for ``machine_ids`` starting at ``scheduled_start``.

        ``arg_lag`` delays the run record in Resource Graph, ``machines_lag`` the per-machine
        records (defaults: ``settings.arg_lag_seconds``). ``correlation_id_style`` "lower" writes
        ``microsoft.maintenance/applyupdates`` as the platform's events do; "pascal" writes
        ``Microsoft.Maintenance/applyUpdates``. ``run_name_clock`` overrides the setting of the
        same name: "configuration" names the run in the configuration's time zone.
        """
        with self._lock:
            configuration = self._configurations.get(key(configuration_id))
            if configuration is None:
                raise KeyError(configuration_id)
            start = scheduled_start.astimezone(UTC).replace(microsecond=0)
            segment = (
                "providers/microsoft.maintenance/applyupdates"
                if correlation_id_style == "lower"
                else "providers/Microsoft.Maintenance/applyUpdates"
            )
            clock = run_name_clock or self.settings.run_name_clock
            if clock not in RUN_NAME_CLOCKS:
                raise ValueError(f"run_name_clock must be one of {RUN_NAME_CLOCKS}")
            named_at = start
            if clock == "configuration":
                named_at = start.astimezone(time_zone_of(configuration.time_zone))
            correlation_id = f"{configuration.id}/{segment}/{named_at.strftime('%Y%m%d%H%M%S')}"
            if key(correlation_id) in self._runs:
                raise ValueError(f"run already exists: {correlation_id}")
            now = self.now()
            default_lag = dt.timedelta(seconds=self.settings.arg_lag_seconds)
            run_lag = _as_delta(arg_lag, default_lag)
            machine_lag = _as_delta(machines_lag, run_lag)
            machines = list(machine_ids)
            unknown = [m for m in machines if key(m) not in self._vms and key(m) not in self._arc]
            if unknown:
                raise KeyError(f"unknown machines: {unknown[:3]}")
            subscription_ids: list[str] = []
            for machine_id in machines:
                sub = parse_resource_id(machine_id).subscription_id
                if sub.lower() not in (s.lower() for s in subscription_ids):
                    subscription_ids.append(sub)
            run = MaintenanceRun(
                correlation_id=correlation_id,
                configuration_id=configuration.id,
                scheduled_start=start,
                scheduled_end=start
                + (duration or dt.timedelta(minutes=self.settings.default_run_minutes)),
                cancellation_cutoff=cancellation_cutoff
                or start - dt.timedelta(minutes=self.settings.cancellation_cutoff_minutes),
                machine_ids=machines,
                subscription_ids=subscription_ids,
                created_at=now,
                visible_at=now + run_lag,
                machine_visible_at=now + machine_lag,
            )
            self._runs[key(correlation_id)] = run
            return run

    def find_run(self, correlation_id: str) -> MaintenanceRun | None:
        """The run with that CorrelationId (case-insensitive), or None."""
        with self._lock:
            return self._runs.get(key(correlation_id))

    def maintenance_event(
        self,
        correlation_id: str,
        kind: str,
        *,
        schema: str = "EventGrid",
        key_case: str = "pascal",
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The pre or post event the platform sends for a run, as the scenario plays it.

        ``kind`` is "pre" or "post"; ``schema`` "EventGrid" or "CloudEvents"; ``key_case`` the
        letter case of the ``data`` keys: "pascal" (the English schema page), "camel" (a
        translated page), "lower" or "upper".
        """
        run = self.get_run(correlation_id)
        event_type = MAINTENANCE_EVENT_TYPES[kind]
        data: dict[str, Any] = {
            "CorrelationId": run.correlation_id,
            "MaintenanceConfigurationId": run.configuration_id,
            "StartDateTime": _event_time(run.scheduled_start),
            "EndDateTime": _event_time(run.scheduled_end),
            "ResourceSubscriptionIds": _subscriptions_as(
                run.subscription_ids, self.settings.event_subscription_ids
            ),
        }
        if kind == "pre":
            data["CancellationCutOffDateTime"] = _event_time(run.cancellation_cutoff)
        else:
            data["Status"] = run.final_status or "Succeeded"
        data = {_key_in_case(k, key_case): v for k, v in data.items()}
        sent_at = _event_time(now or self.now())
        subject = run.configuration_id.rsplit("/", 1)[-1]
        if schema == "CloudEvents":
            return {
                "specversion": "1.0",
                "id": run.correlation_id,
                "source": run.configuration_id,
                "subject": subject,
                "type": event_type,
                "time": sent_at,
                "data": data,
            }
        if schema != "EventGrid":
            raise ValueError("schema must be EventGrid or CloudEvents")
        return {
            "id": run.correlation_id,
            "topic": run.configuration_id,
            "subject": subject,
            "eventType": event_type,
            "eventTime": sent_at,
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "data": data,
        }

    def get_run(self, correlation_id: str) -> MaintenanceRun:
        """The run with that CorrelationId; raises KeyError when unknown."""
        run = self.find_run(correlation_id)
        if run is None:
            raise KeyError(correlation_id)
        return run

    @property
    def runs(self) -> list[MaintenanceRun]:
        """All runs."""
        with self._lock:
            return list(self._runs.values())

    def run_status(self, correlation_id: str) -> str:
        """A run's status now."""
        return self.get_run(correlation_id).status(self.now(), self.settings.status_before_start)

    def cancel_run(
        self, correlation_id: str, *, by: str = "user", message: str | None = None
    ) -> MaintenanceRun:
        """Mark a run cancelled (``by`` "user" or "platform"); no window checks here."""
        with self._lock:
            run = self.get_run(correlation_id)
            if run.cancelled_at is None:
                run.cancelled_at = self.now()
                run.cancelled_by = by
                run.message = message or (
                    USER_CANCEL_MESSAGE if by == "user" else PLATFORM_CANCEL_MESSAGE
                )
            return run

    def complete_run(
        self,
        correlation_id: str,
        *,
        status: str = "Succeeded",
        results: Mapping[str, PatchResult | Mapping[str, Any]] | None = None,
        default_result: Mapping[str, Any] | None = None,
        message: str | None = None,
        results_lag: dt.timedelta | float | None = None,
    ) -> MaintenanceRun:
        """End a run with ``status`` and record per-machine patch results.

        ``results`` maps machine id -> PatchResult (or its fields); machines not in it get
        ``default_result`` fields (status Succeeded unless said otherwise).
        """
        with self._lock:
            run = self.get_run(correlation_id)
            now = self.now()
            run.final_status = status
            run.completed_at = now
            if message:
                run.message = message
            lag = _as_delta(results_lag, dt.timedelta(seconds=self.settings.arg_lag_seconds))
            given = {key(k): v for k, v in (results or {}).items()}
            recorded: list[PatchResult] = []
            for machine_id in run.machine_ids:
                provided = given.get(key(machine_id))
                if isinstance(provided, PatchResult):
                    result = provided
                else:
                    fields: dict[str, Any] = dict(default_result or {})
                    fields.update(provided or {})
                    result = PatchResult(
                        machine_id=machine_id, correlation_id=run.correlation_id, **fields
                    )
                result.machine_id = machine_id
                result.correlation_id = run.correlation_id
                result.start_date_time = result.start_date_time or run.scheduled_start
                result.last_modified_date_time = result.last_modified_date_time or now
                result.visible_at = result.visible_at or now + lag
                recorded.append(result)
            self._patch_results[key(run.correlation_id)] = recorded
            return run

    def patch_results(self, correlation_id: str) -> list[PatchResult]:
        """Patch results recorded for a run."""
        with self._lock:
            return list(self._patch_results.get(key(correlation_id), []))

    def configuration_document(self, configuration: MaintenanceConfiguration) -> dict[str, Any]:
        """The JSON a maintenance configuration GET answers."""
        return {
            "id": configuration.id,
            "name": configuration.name,
            "type": "Microsoft.Maintenance/maintenanceConfigurations",
            "location": configuration.location,
            "tags": dict(configuration.tags),
            "properties": configuration_properties(configuration),
        }

    def run_document(self, run: MaintenanceRun) -> dict[str, Any]:
        """The JSON the Maintenance RP answers for a run (GET / cancel PUT)."""
        with self._lock:
            status = run.status(self.now(), self.settings.status_before_start)
            # The RP's ApplyUpdate vocabulary: Succeeded runs read as Completed there.
            rp_status = {"Succeeded": "Completed"}.get(status, status)
            return {
                "id": run.correlation_id,
                "name": run.name,
                "type": "Microsoft.Maintenance/applyUpdates",
                "properties": {
                    "status": rp_status,
                    "resourceId": run.configuration_id,
                    "lastUpdateTime": iso_time(
                        run.cancelled_at or run.completed_at or run.created_at
                    ),
                },
            }


def configuration_properties(configuration: MaintenanceConfiguration) -> dict[str, Any]:
    return {
        "namespace": "Microsoft.Maintenance",
        "maintenanceScope": "InGuestPatch",
        "visibility": "Custom",
        "extensionProperties": {"InGuestPatchMode": "User"},
        "maintenanceWindow": {
            "startDateTime": configuration.start_date_time,
            "duration": configuration.duration,
            "timeZone": configuration.time_zone,
            "recurEvery": configuration.recur_every,
        },
        "installPatches": {"rebootSetting": "IfRequired"},
    }


def _as_delta(value: dt.timedelta | float | None, default: dt.timedelta) -> dt.timedelta:
    if value is None:
        return default
    return value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)


def _event_time(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subscriptions_as(subscription_ids: Sequence[str], style: str) -> Any:
    if style == "array":
        return list(subscription_ids)
    if style == "string":
        return subscription_ids[0] if subscription_ids else ""
    if style == "comma":
        return ",".join(subscription_ids)
    if style == "json-string":
        return json.dumps(list(subscription_ids))
    if style == "empty":
        return []
    raise ValueError(f"event_subscription_ids must be one of {EVENT_SUBSCRIPTION_IDS}")


def _key_in_case(name: str, case: str) -> str:
    if case == "pascal":
        return name
    if case == "camel":
        return name[0].lower() + name[1:]
    if case == "lower":
        return name.lower()
    if case == "upper":
        return name.upper()
    raise ValueError("key_case must be pascal, camel, lower or upper")
