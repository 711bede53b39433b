"""Azure Maintenance (azure-mgmt-maintenance 2.2.0b4): cancel a run, read a run.

2.1.0, the latest stable release, has no cancel. 2.2.0b4's
apply_updates.create_or_update_or_cancel accepts only 200 and 201 and raises on the 202 of the
REST spec's own example (and on 204, and on a 200 without a body). So the cancel sends the same
documented PUT {CorrelationId}?api-version=... {"properties":{"status":"Cancel"}} through the
SDK client's own pipeline (`send_request`: its credential, logging and transport) and reads
the answer itself: strict in what it sends, any 2xx accepted. The api-version is a setting
(MAINTENANCE_API_VERSION).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.maintenance import MaintenanceManagementClient

from shared.adapters.arm_clients import PerSubscription
from shared.adapters.azure_errors import service_words, translated
from shared.domain.errors import AzureCallFailed, CancelRefused
from shared.domain.ids import RunId
from shared.domain.platform import CancelAcceptance, RunState

PROVIDER = "Microsoft.Maintenance"
PARENT_TYPE = "maintenanceConfigurations"
CANCEL_BODY = {"properties": {"status": "Cancel"}}
# ApplyUpdates_CreateOrUpdateOrCancel on a maintenance configuration (reference §3).
CANCEL_PATH = (
    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Maintenance/maintenanceConfigurations"
    "/{}/providers/Microsoft.Maintenance/applyUpdates/{}"
)
TOO_MANY_REQUESTS = 429
# A cancel ARM throttled (429: it did nothing) is sent again after Retry-After, this many times
# in all, waiting at most MAX_THROTTLE_WAIT_SECONDS each time: the app's own start fan-out can
# drain the subscription's write bucket just when a cancel is needed.
THROTTLED_CANCEL_TRIES = 6
MAX_THROTTLE_WAIT_SECONDS = 10.0


class MaintenanceRuns:
    """Cancel and read runs; one client per subscription, one transport."""

    def __init__(
        self, clients: PerSubscription[MaintenanceManagementClient], api_version: str
    ) -> None:
        self._clients = clients
        self._api_version = api_version

    @classmethod
    def build(
        cls, credential: TokenCredential, arm_endpoint: str, api_version: str, **client_options: Any
    ) -> MaintenanceRuns:
        """Clients on `arm_endpoint` speaking `api_version`."""
        return cls(
            PerSubscription(
                lambda **kw: MaintenanceManagementClient(
                    credential,
                    base_url=arm_endpoint,
                    api_version=api_version,
                    credential_scopes=[f"{arm_endpoint}/.default"],
                    **kw,
                ),
                **client_options,
            ),
            api_version,
        )

    def cancel_run(self, run: RunId | str) -> CancelAcceptance:
        """Ask the platform to cancel this run only, with exactly one PUT (no automatic
        re-send: an answer that never came is for the caller to read back). Any 2xx is
        accepted, with or without a body; a 4xx other than 429 raises CancelRefused with the
        service's code and message; anything else raises AzureCallFailed."""
        run_id = _run(run)
        configuration = run_id.configuration
        client = self._clients.for_subscription(configuration.subscription_id)
        segments = [
            quote(segment, safe="")
            for segment in (
                configuration.subscription_id,
                configuration.resource_group,
                configuration.name,
                run_id.run_name,
            )
        ]
        request = HttpRequest(
            "PUT",
            CANCEL_PATH.format(*segments),
            params={"api-version": self._api_version},
            headers={"Accept": "application/json"},
            json=CANCEL_BODY,
        )
        for attempt in range(1, THROTTLED_CANCEL_TRIES + 1):
            with translated("Maintenance"):
                # retry_total=0: a PUT re-sent after a lost answer is a second cancel; only a
                # 429, which ARM answers without acting, is sent again (below).
                # A cancel may wait longer than a start for its place in the write budget
                # (arm_pacing.MAX_WAIT_OPTION).
                response = client.send_request(
                    request, retry_total=0, pacing_max_wait=MAX_THROTTLE_WAIT_SECONDS
                )
            if response.status_code != TOO_MANY_REQUESTS or attempt == THROTTLED_CANCEL_TRIES:
                break
            time.sleep(_retry_after(response))
        if 200 <= response.status_code <= 299:
            return CancelAcceptance(run_id, response.status_code, _answer_status(response))
        status, code, message = service_words(HttpResponseError(response=response))
        refused = status is not None and 400 <= status < 500 and status != TOO_MANY_REQUESTS
        # A 429 is ARM's throttle: the cancel was not taken; asking later may work.
        raise (CancelRefused if refused else AzureCallFailed)("Maintenance", status, code, message)

    def get_run(self, run: RunId | str) -> RunState:
        """The run's status as the maintenance service reports it."""
        run_id = _run(run)
        configuration = run_id.configuration
        client = self._clients.for_subscription(configuration.subscription_id)
        with translated("Maintenance"):
            answer = client.apply_updates.get(
                configuration.resource_group,
                PROVIDER,
                PARENT_TYPE,
                configuration.name,
                run_id.run_name,
            )
        return RunState(run_id=run_id, status=_status(answer))


def _run(run: RunId | str) -> RunId:
    return run if isinstance(run, RunId) else RunId.parse(run)


def _retry_after(response: HttpResponse) -> float:
    """Seconds a 429 asks to wait (Retry-After in seconds), within (0, MAX_THROTTLE_WAIT]."""
    try:
        seconds = float(response.headers.get("Retry-After") or 1)
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.01), MAX_THROTTLE_WAIT_SECONDS)


def _answer_status(response: HttpResponse) -> str | None:
    """`properties.status` of a cancel answer, if it has a JSON body that says one."""
    try:
        body = json.loads(response.text() or "null")
    except ValueError:
        return None
    properties = _key(body, "properties")
    status = _key(properties, "status")
    return status if isinstance(status, str) and status.strip() else None


def _key(document: Any, name: str) -> Any:
    """A JSON object's member, its name matched case-insensitively (ARM's casing varies)."""
    if not isinstance(document, dict):
        return None
    return next((v for k, v in document.items() if k.lower() == name), None)


def _status(answer: Any) -> str | None:
    if answer is None:
        return None
    status = getattr(answer, "status", None)
    if status is None:
        return None
    # The SDK gives an UpdateStatus enum for known words and a plain string otherwise.
    return str(getattr(status, "value", status))
