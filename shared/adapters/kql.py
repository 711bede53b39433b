"""The only place query text is built (Resource Graph and Log Analytics KQL).

Neither service binds parameters, so every value that enters a query is first validated into a
domain id (RunId, ConfigurationId, MachineId, subscription GUID) and then written as a literal
by `_literal`, which quotes it with KQL's own string-literal escaping: a backslash and a single
quote are escaped, so no value can end the literal early, whatever ARM lets a name hold (letters
outside ASCII, dots, parentheses). Control and other non-printable characters are refused: no id
holds them, and a value that fails never reaches a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from shared.domain.ids import ConfigurationId, InvalidId, MachineId, RunId

RUN_TYPE = "microsoft.maintenance/maintenanceconfigurations/applyupdates"
MACHINE_RUN_TYPE = "microsoft.maintenance/applyupdates"
MAX_LITERAL_LENGTH = 2048
# KQL's escapes inside a '...' literal; everything else printable stands for itself.
_KQL_ESCAPES = {"\\": "\\\\", "'": "\\'"}


def _literal(value: str) -> str:
    """A single-quoted KQL string literal holding exactly `value` (KQL escaping rules)."""
    if not value or len(value) > MAX_LITERAL_LENGTH:
        raise InvalidId(f"a query value must be 1..{MAX_LITERAL_LENGTH} characters")
    if not value.isprintable():
        raise InvalidId("a query value must not hold control or other non-printable characters")
    return "'" + "".join(_KQL_ESCAPES.get(ch, ch) for ch in value) + "'"


def _literal_list(values: Sequence[str]) -> str:
    if not values:
        raise InvalidId("an empty list cannot be queried")
    return "(" + ", ".join(_literal(v) for v in values) + ")"


def machines_of_run(run: RunId) -> str:
    """Per-machine applyupdates records of one run (the official tutorials' query)."""
    return "\n".join(
        (
            "maintenanceresources",
            f"| where type =~ {_literal(MACHINE_RUN_TYPE)}",
            f"| where properties.correlationId =~ {_literal(run.text)}",
            "| project id, resourceId = tostring(properties.resourceId), "
            "status = tostring(properties.status)",
            "| order by id asc",
        )
    )


def runs_of_configurations(configurations: Sequence[ConfigurationId]) -> str:
    """Run-level applyupdates records of the given configurations only, in one query.

    Never "every configuration in the subscriptions": the subscriptions say where machines may
    be, not which runs are this app's (other teams' configurations live there too)."""
    ids = _literal_list([c.text for c in configurations])
    return "\n".join(
        (
            "maintenanceresources",
            f"| where type =~ {_literal(RUN_TYPE)}",
            f"| where properties.maintenanceConfigurationId in~ {ids}",
            "| project id, name, properties",
            "| order by id asc",
        )
    )


def patch_results_of_run(run: RunId, since: datetime, until: datetime) -> str:
    """Patch installation results that may belong to one run: `maintenanceRunId` equal to the
    CorrelationId or to the run name, or a result that started (or last changed) between `since`
    and `until`. The format of `maintenanceRunId` is undocumented (the one public sample is a
    timestamp), so the caller keeps time-window rows only for the run's own machines."""
    start, end = _datetime(since), _datetime(until)
    window = f"between (datetime({start}) .. datetime({end}))"
    return "\n".join(
        (
            "patchinstallationresources",
            "| where type has 'patchinstallationresults'",
            "| extend runId = tostring(properties.maintenanceRunId)",
            f"| where runId =~ {_literal(run.text)} or runId =~ {_literal(run.run_name)}"
            f" or todatetime(properties.startDateTime) {window}"
            f" or todatetime(properties.lastModifiedDateTime) {window}",
            "| project id, properties",
            "| order by id asc",
        )
    )


def heartbeats_since(machines: Sequence[MachineId], since: datetime) -> str:
    """Log Analytics: the last heartbeat of each machine after `since`."""
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    moment = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "\n".join(
        (
            "Heartbeat",
            f"| where TimeGenerated > datetime({moment})",
            f"| where _ResourceId in~ {_literal_list([m.text for m in machines])}",
            "| summarize LastHeartbeat = max(TimeGenerated) by _ResourceId",
        )
    )


def _datetime(moment: datetime) -> str:
    """The text of a KQL datetime literal, in UTC."""
    if moment.tzinfo is None:
        raise ValueError("a query time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
