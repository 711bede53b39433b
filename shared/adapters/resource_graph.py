"""Azure Resource Graph (azure-mgmt-resourcegraph): machines and runs of maintenance
configurations, patch results.

Pages with the skip token (1,000 rows a page) until done. Throttling is azure-core's retry policy:
it honours a 429's Retry-After on any method, and retries a 429 without one (exponential back-off,
a bounded number of times) once POST is among the methods it may retry, which a Resource Graph
query (a read sent as POST) is. Between pages the adapter waits out ARG's user quota
(x-ms-user-quota-remaining = 0) rather than spend a query on a certain 429.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from azure.core.credentials import TokenCredential
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, QueryResponse

from shared.adapters import kql
from shared.adapters.azure_errors import translated
from shared.domain.errors import ResourceGraphQueryRefused
from shared.domain.ids import ConfigurationId, InvalidId, MachineId, RunId, parse_subscription_id
from shared.domain.platform import PatchResult, PlatformRun, RunMachine

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
# ARG scopes a query to at most 1,000 subscriptions per request.
MAX_SUBSCRIPTIONS_PER_QUERY = 1000
MAX_QUOTA_WAIT_SECONDS = 30.0
# azure-core retries these methods on a 429 or 5xx without Retry-After: its defaults, and POST.
RETRIED_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})
# Up to five retries of a throttled (or failed) query: when ARG names no Retry-After, the first
# at once, then 2, 4, 8 and 16 s apart. Client options given to build() override these.
RETRY_OPTIONS: dict[str, Any] = {
    "retry_status": 5,
    "retry_backoff_factor": 1.0,
    "retry_backoff_max": 16,
}


class ResourceGraphMachines:
    """Queries ARG; one client per process."""

    def __init__(
        self, client: ResourceGraphClient, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._client = client
        self._sleep = sleep

    @classmethod
    def build(
        cls, credential: TokenCredential, arm_endpoint: str, **client_options: Any
    ) -> ResourceGraphMachines:
        """A ResourceGraphClient on `arm_endpoint`; options tune azure-core's retry policy
        (retry_total, retry_status, retry_backoff_factor, ...) and its transport."""
        client = ResourceGraphClient(
            credential,
            base_url=arm_endpoint,
            credential_scopes=[f"{arm_endpoint}/.default"],
            **{**RETRY_OPTIONS, **client_options},
        )
        return cls(client)

    def list_run_machines(
        self, run: RunId | str, subscriptions: Sequence[str]
    ) -> Iterator[RunMachine]:
        """Machines of a run (per-machine applyupdates records), scoped to its subscriptions."""
        run_id = run if isinstance(run, RunId) else RunId.parse(run)
        query = kql.machines_of_run(run_id)
        for row in self._rows(query, subscriptions):
            try:
                machine = MachineId.parse(row.get("resourceId"))
            except InvalidId:
                log.warning(
                    "Run %s lists a resource that is not a VM or Arc machine: %r",
                    run_id.text,
                    row.get("resourceId"),
                )
                continue
            yield RunMachine(
                record_id=str(row.get("id")), machine=machine, status=_text(row.get("status"))
            )

    def list_runs(
        self, configurations: Sequence[ConfigurationId | str], subscriptions: Sequence[str]
    ) -> Iterator[PlatformRun]:
        """Run-level records of these configurations (only these), in one query."""
        parsed = [
            c if isinstance(c, ConfigurationId) else ConfigurationId.parse(c)
            for c in configurations
        ]
        for row in self._rows(kql.runs_of_configurations(parsed), subscriptions):
            try:
                run_id = RunId.parse(row.get("id"))
            except InvalidId:
                continue
            properties = row.get("properties") or {}
            yield PlatformRun(
                run_id=run_id,
                status=_text(properties.get("status")),
                start=_text(properties.get("startDateTime")),
                end=_text(properties.get("endDateTime")),
                message=_message_of(properties),
            )

    def list_patch_results(
        self, run: RunId | str, subscriptions: Sequence[str], since: datetime, until: datetime
    ) -> Iterator[PatchResult]:
        """Patch installation results that may belong to a run: those naming it, and those of
        the span `since`..`until` (the caller matches them to the run's machines)."""
        run_id = run if isinstance(run, RunId) else RunId.parse(run)
        for row in self._rows(kql.patch_results_of_run(run_id, since, until), subscriptions):
            record_id = str(row.get("id", ""))
            cut = record_id.lower().find("/patchinstallationresults/")
            machine_text = record_id[:cut] if cut >= 0 else record_id
            try:
                machine = MachineId.parse(machine_text)
            except InvalidId:
                continue
            p = row.get("properties") or {}
            yield PatchResult(
                machine=machine,
                status=_text(p.get("status")),
                installed=_int(p.get("installedPatchCount")),
                failed=_int(p.get("failedPatchCount")),
                reboot_status=_text(p.get("rebootStatus")),
                window_exceeded=_bool(p.get("maintenanceWindowExceeded")),
                last_modified=_text(p.get("lastModifiedDateTime")),
                maintenance_run_id=_text(p.get("maintenanceRunId")),
                started=_text(p.get("startDateTime")),
            )

    def _rows(self, query: str, subscriptions: Sequence[str]) -> Iterator[Mapping[str, Any]]:
        scoped = sorted({parse_subscription_id(s) for s in subscriptions})
        if not scoped:
            return
        for start in range(0, len(scoped), MAX_SUBSCRIPTIONS_PER_QUERY):
            yield from self._pages(query, scoped[start : start + MAX_SUBSCRIPTIONS_PER_QUERY])

    def _pages(self, query: str, subscriptions: list[str]) -> Iterator[Mapping[str, Any]]:
        skip_token: str | None = None
        while True:
            request = QueryRequest(
                subscriptions=subscriptions,
                query=query,
                options=QueryRequestOptions(
                    top=PAGE_SIZE, skip_token=skip_token, result_format="objectArray"
                ),
            )
            response, headers = self._query(request)
            # objectArray format: data is a list of row objects.
            rows: list[Mapping[str, Any]] = response.data if isinstance(response.data, list) else []
            yield from rows
            skip_token = response.skip_token
            if not skip_token:
                return
            self._respect_quota(headers)

    def _query(self, request: QueryRequest) -> tuple[QueryResponse, Mapping[str, str]]:
        with translated("Resource Graph", ResourceGraphQueryRefused):
            return cast(
                tuple[QueryResponse, Mapping[str, str]],
                self._client.resources(
                    request, cls=_with_headers, retry_on_methods=RETRIED_METHODS
                ),
            )

    def _respect_quota(self, headers: Mapping[str, str]) -> None:
        remaining = headers.get("x-ms-user-quota-remaining")
        if remaining is None or _int(remaining) != 0:
            return
        wait = _seconds(headers.get("x-ms-user-quota-resets-after"))
        if wait:
            log.info("Resource Graph quota used up; waiting %.1f s before the next page", wait)
            self._sleep(min(wait, MAX_QUOTA_WAIT_SECONDS))


def _with_headers(
    pipeline_response: Any, deserialized: Any, headers: Mapping[str, str]
) -> tuple[Any, Mapping[str, str]]:
    raw = pipeline_response.http_response.headers
    return deserialized, {k.lower(): v for k, v in raw.items()}


def _seconds(value: str | None) -> float:
    """ARG writes quota resets as hh:mm:ss."""
    if not value:
        return 0.0
    try:
        hours, minutes, seconds = value.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _message_of(properties: Mapping[str, Any]) -> str | None:
    # The field's name is undocumented; the platform has used these.
    for key in ("error", "errorMessage", "message", "details", "statusMessage"):
        value = properties.get(key)
        if isinstance(value, Mapping):
            value = value.get("message") or value.get("details")
        if value:
            return str(value)
    return None
