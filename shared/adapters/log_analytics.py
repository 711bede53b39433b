"""Log Analytics (azure-monitor-query LogsQueryClient): the last heartbeat of machines.

A partial result (the service answers with some data and an error) is used for what it holds,
and the error is kept in the answer so the report can say the check was incomplete.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials import TokenCredential
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult

from shared.adapters import kql
from shared.adapters.azure_errors import translated
from shared.domain.ids import MachineId, parse_subscription_id
from shared.domain.platform import HeartbeatReport

log = logging.getLogger(__name__)

# Keeps each query well under the service's query-length limit.
MACHINES_PER_QUERY = 200


class LogAnalyticsHeartbeats:
    """Heartbeat queries; one client per process."""

    def __init__(self, client: LogsQueryClient) -> None:
        self._client = client

    @classmethod
    def build(
        cls, credential: TokenCredential, endpoint: str, **client_options: Any
    ) -> LogAnalyticsHeartbeats:
        """A LogsQueryClient on `endpoint` (its token audience too)."""
        return cls(LogsQueryClient(credential, endpoint=endpoint, **client_options))

    def list_last_heartbeats(
        self, workspace_id: str, machines: Sequence[MachineId], since: datetime, until: datetime
    ) -> HeartbeatReport:
        """When each machine last sent a heartbeat in (since, until]."""
        workspace = parse_subscription_id(workspace_id)  # a workspace id is a GUID too
        by_key = {m.key: m for m in machines}
        last_seen: dict[MachineId, datetime] = {}
        errors: list[str] = []
        ordered = list(by_key.values())
        for start in range(0, len(ordered), MACHINES_PER_QUERY):
            chunk = ordered[start : start + MACHINES_PER_QUERY]
            query = kql.heartbeats_since(chunk, since)
            with translated("Log Analytics"):
                answer = self._client.query_workspace(workspace, query, timespan=(since, until))
            if isinstance(answer, LogsQueryPartialResult):
                tables = answer.partial_data
                errors.append(str(getattr(answer.partial_error, "message", answer.partial_error)))
                log.warning(
                    "Heartbeat query on workspace %s answered in part: %s", workspace, errors[-1]
                )
            else:
                tables = answer.tables
            for table in tables:
                columns = list(table.columns)
                for row in table.rows:
                    record = dict(zip(columns, row, strict=False))
                    machine = by_key.get(str(record.get("_ResourceId", "")).lower())
                    when = _when(record.get("LastHeartbeat"))
                    if machine is not None and when is not None:
                        last_seen[machine] = max(when, last_seen.get(machine, when))
        return HeartbeatReport(last_seen=last_seen, partial_errors=tuple(errors))


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return None
    return None
