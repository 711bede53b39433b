"""Azure Compute (azure-mgmt-compute): power states (one VM, or a subscription's in bulk), start
and deallocate sent without waiting, OS-disk snapshot.

Arc-enabled servers are recognised by their resource type and reported as not startable; no
request is sent for them.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    CreationData,
    InstanceViewStatus,
    Snapshot,
    SnapshotProperties,
)

from shared.adapters.arm_clients import PerSubscription
from shared.adapters.arm_pacing import WRITES
from shared.adapters.azure_errors import service_words, translated
from shared.domain.errors import AzureCallFailed, CallWithdrawn
from shared.domain.ids import MachineId
from shared.domain.machines import MachinePower, OperationOutcome, OperationResult, PowerState
from shared.domain.platform import MachineFacts

log = logging.getLogger(__name__)

WRITE_RETRIES = 30
# VirtualMachines_Get and _ListAll, read through the SDK's client (see list_power_states), in
# the API version the pinned azure-mgmt-compute speaks for its other VM calls.
VM_LIST_PATH = "/subscriptions/{}/providers/Microsoft.Compute/virtualMachines"
VM_PATH = "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/"
VM_API_VERSION = "2026-04-01"
ARC_NOTE = "Arc-enabled server: its power is not managed by Azure, so the app cannot start it"


STILL_WANTED = "still_wanted"


class _NoLongerWanted(Exception):
    """Raised by WithdrawWhileThrottled before an attempt nobody wants any more."""


class WithdrawWhileThrottled(SansIOHTTPPolicy[Any, Any]):
    """Before each retry of a power call that ARM has only throttled so far (every answer a
    429: nothing was done), ask the caller's `still_wanted` whether to go on; if not, the call
    is withdrawn unsent. Once any attempt may have reached the service (another status, no
    answer), the call is seen through."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        context = request.context
        if STILL_WANTED in context.options:
            context[STILL_WANTED] = context.options.pop(STILL_WANTED)
        still_wanted: Callable[[], bool] | None = context.get(STILL_WANTED)
        if still_wanted is None or request.http_request.method != "POST":
            return
        attempts = context.get("power_attempts", 0)
        context["power_attempts"] = attempts + 1
        if attempts and context.get("only_throttled", True) and not still_wanted():
            raise _NoLongerWanted

    def on_response(
        self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]
    ) -> None:
        if request.http_request.method == "POST" and response.http_response.status_code != 429:
            request.context["only_throttled"] = False

    def on_exception(self, request: PipelineRequest[Any]) -> None:
        request.context["only_throttled"] = False


class SnapshotOperation:
    """A started OS-disk snapshot (or an answer known at once), waited on before a start."""

    def __init__(
        self,
        machine: MachineId,
        poller: LROPoller[Any] | None,
        immediate: OperationResult | None = None,
    ) -> None:
        self.machine = machine
        self._poller = poller
        self._immediate = immediate

    def wait(self, timeout: float | None = None) -> OperationResult:
        """Wait up to `timeout` seconds (None: until done) for the snapshot to end."""
        if self._poller is None:
            return self._immediate or OperationResult(OperationOutcome.FAILED)
        try:
            self._poller.result(timeout=timeout)
        except HttpResponseError as e:
            status, code, message = service_words(e)
            if status is not None and (status == 429 or status >= 500):
                # The poll was refused, not the operation: it may well have succeeded.
                return OperationResult(OperationOutcome.UNKNOWN, code, message)
            return OperationResult(OperationOutcome.FAILED, code, message)
        except AzureError as e:
            # No answer at all (dropped connection, timeout): the operation's end is unknown.
            return OperationResult(OperationOutcome.UNKNOWN, type(e).__name__, str(e))
        if not self._poller.done():
            return OperationResult(OperationOutcome.STILL_RUNNING)
        return OperationResult(OperationOutcome.SUCCEEDED)


# A power operation's turn is held only this close: the thread holding it sleeps until then,
# and a worker's few threads are better spent on VMs whose turns have come.
POWER_TURN_WAIT_SECONDS = 1.0


class ComputeMachines:
    """VM power operations; one client per subscription, one transport."""

    def __init__(self, clients: PerSubscription[ComputeManagementClient]) -> None:
        self._clients = clients

    @classmethod
    def build(
        cls, credential: TokenCredential, arm_endpoint: str, **client_options: Any
    ) -> ComputeMachines:
        """Clients on `arm_endpoint`; options tune retries and polling (polling_interval)."""
        # ARM's write throttle answers 429 with Retry-After for as long as a fleet takes to
        # drain the subscription's bucket: keep waiting (as Retry-After says) instead of giving
        # the machine back to the queue after azure-core's default 10 tries.
        options = {
            "retry_total": WRITE_RETRIES,
            "per_retry_policies": [WithdrawWhileThrottled()],
            **client_options,
        }
        return cls(
            PerSubscription(
                lambda **kw: ComputeManagementClient(
                    credential,
                    base_url=arm_endpoint,
                    credential_scopes=[f"{arm_endpoint}/.default"],
                    **kw,
                ),
                **options,
            )
        )

    def get_power(self, machine: MachineId | str) -> MachinePower:
        """The machine's power state (instance view) and whether the app can start it."""
        target = _machine(machine)
        if target.is_arc:
            return MachinePower(state=None, startable=False, note=ARC_NOTE)
        client = self._clients.for_subscription(target.subscription_id)
        with translated("Compute"):
            view = client.virtual_machines.instance_view(target.resource_group, target.name)
        return _power_of(view.statuses)

    def get_machine(self, machine: MachineId | str) -> MachineFacts:
        """Power state and tags in one read (GET with the instance view)."""
        target = _machine(machine)
        if target.is_arc:
            return MachineFacts(
                machine=target, power=MachinePower(state=None, startable=False, note=ARC_NOTE)
            )
        client = self._clients.for_subscription(target.subscription_id)
        # Read as the bulk list is (see list_power_states): only the words needed are taken,
        # not a whole VirtualMachine model per VM started.
        path = VM_PATH.format(
            *(quote(part, safe="") for part in (target.subscription_id, target.resource_group))
        ) + quote(target.name, safe="")
        with translated("Compute"):
            response = client.send_request(
                HttpRequest(
                    "GET",
                    path,
                    params={"api-version": VM_API_VERSION, "$expand": "instanceView"},
                    headers={"Accept": "application/json"},
                )
            )
            response.raise_for_status()
            vm = _json_object(response.json())
        properties = _json_object(vm.get("properties"))
        tags = _json_object(vm.get("tags"))
        location = vm.get("location")
        return MachineFacts(
            machine=target,
            power=_power_from(
                _status_words(_json_object(properties.get("instanceView")).get("statuses"))
            ),
            tags={str(k): str(v) for k, v in tags.items() if v is not None},
            location=location if isinstance(location, str) else None,
        )

    def list_power_states(
        self, subscription_id: str, machines: Iterable[MachineId | str]
    ) -> Iterator[tuple[MachineId, MachinePower]]:
        """The power states of these machines of one subscription, from Compute's status-only
        list of the subscription's VMs (one ARM read per page; paging stops once every machine
        asked about was seen). Arc machines are answered not manageable without a request; a
        VM the list does not hold is left out."""
        wanted: dict[str, MachineId] = {}
        for machine in machines:
            target = _machine(machine)
            if target.is_arc:
                yield target, MachinePower(state=None, startable=False, note=ARC_NOTE)
            else:
                wanted[target.text.lower()] = target
        if not wanted:
            return
        client = self._clients.for_subscription(subscription_id)
        # The SDK's list_all builds a full VirtualMachine model of every VM on every page, and
        # verify reads thousands of VMs each round: the pages are read through the same client
        # (its pipeline: identity, pacing, retries) and only the words needed are taken.
        link: str | None = VM_LIST_PATH.format(quote(subscription_id, safe=""))
        params: dict[str, str] = {"api-version": VM_API_VERSION, "statusOnly": "true"}
        while link is not None and wanted:
            with translated("Compute"):
                response = client.send_request(
                    HttpRequest("GET", link, params=params, headers={"Accept": "application/json"})
                )
                response.raise_for_status()
                page = _json_object(response.json())
            for item in page.get("value") or []:
                vm = _json_object(item)
                listed = wanted.pop(str(vm.get("id") or "").lower(), None)
                if listed is not None:
                    view = _json_object(_json_object(vm.get("properties")).get("instanceView"))
                    yield listed, _power_from(_status_words(view.get("statuses")))
            next_link = page.get("nextLink")
            link = next_link if isinstance(next_link, str) and next_link else None
            params = {}  # a nextLink carries its own query

    def turn_wait(self, machine: MachineId | str) -> float:
        """0.0 when `power_turn` would hold a turn for `machine` now; else the seconds until
        one would come. Nothing is taken."""
        target = _machine(machine)
        if target.is_arc:
            return 0.0
        return self._clients.budgets.turn_wait(
            target.subscription_id, WRITES, compute_write=True, max_wait=POWER_TURN_WAIT_SECONDS
        )

    def turn_appointment(self, machines: Iterable[MachineId]) -> float:
        """Seconds until work put off for these machines' write turns should come back: the
        turns of their soonest subscription are promised to it, after those promised to other
        put-off work (ArmBudgets.appoint), and it comes back a turn's wait before the first,
        so that its turns are near when it does. Their other subscriptions' machines get
        theirs when it is back."""
        counts = Counter(m.subscription_id.lower() for m in machines if not m.is_arc)
        if not counts:
            return 0.0
        budgets = self._clients.budgets
        soonest = min(
            counts, key=lambda s: budgets.turn_wait(s, WRITES, compute_write=True, max_wait=0.0)
        )
        start = budgets.appoint(soonest, WRITES, counts[soonest], compute_write=True)
        return max(0.0, start - POWER_TURN_WAIT_SECONDS)

    @contextlib.contextmanager
    def power_turn(self, machine: MachineId | str) -> Iterator[float]:
        """Hold this thread's turn for a start or deallocate of `machine` in its subscription's
        ARM and Compute write budgets: 0.0 while held (the thread's next power operation uses
        it), else the seconds until a turn would come (nothing held; ask again later)."""
        target = _machine(machine)
        if target.is_arc:
            yield 0.0  # no Compute call is ever sent for it
            return
        budgets = self._clients.budgets
        with budgets.hold(
            target.subscription_id, WRITES, compute_write=True, max_wait=POWER_TURN_WAIT_SECONDS
        ) as wait:
            yield wait

    def start(
        self, machine: MachineId | str, still_wanted: Callable[[], bool] | None = None
    ) -> None:
        """Send a VM's start and return once Azure accepted it (200/202), without waiting for
        the VM to boot: a later read of its power state tells how it ended. While ARM only
        throttles the call, `still_wanted` is asked before each retry (CallWithdrawn)."""
        self._send_power(machine, "begin_start", still_wanted)

    def deallocate(self, machine: MachineId | str) -> None:
        """Send a VM's deallocate and return once Azure accepted it (no waiting)."""
        self._send_power(machine, "begin_deallocate")

    def _send_power(
        self,
        machine: MachineId | str,
        operation: str,
        still_wanted: Callable[[], bool] | None = None,
    ) -> None:
        target = _machine(machine)
        if target.is_arc:
            raise AzureCallFailed("Compute", None, "NotStartable", ARC_NOTE)
        client = self._clients.for_subscription(target.subscription_id)
        options = {} if still_wanted is None else {STILL_WANTED: still_wanted}
        try:
            with translated("Compute"):
                begin = getattr(client.virtual_machines, operation)
                # polling=False: the SDK sends the call and takes its first answer; nothing polls.
                begin(target.resource_group, target.name, polling=False, **options)
        except _NoLongerWanted as e:
            raise CallWithdrawn(
                "Compute", 429, "Withdrawn", "throttled until it was no longer wanted; not sent"
            ) from e

    def begin_snapshot_os_disk(
        self, machine: MachineId | str, snapshot_name: str
    ) -> SnapshotOperation:
        """Take an incremental snapshot of the VM's OS disk, in the VM's resource group."""
        target = _machine(machine)
        if target.is_arc:
            return SnapshotOperation(
                target, None, OperationResult(OperationOutcome.NOT_STARTABLE, None, ARC_NOTE)
            )
        client = self._clients.for_subscription(target.subscription_id)
        with translated("Compute"):
            vm = client.virtual_machines.get(target.resource_group, target.name)
            os_disk = vm.storage_profile.os_disk if vm.storage_profile else None
            disk_id = os_disk.managed_disk.id if os_disk and os_disk.managed_disk else None
            if not disk_id:
                return SnapshotOperation(
                    target,
                    None,
                    OperationResult(
                        OperationOutcome.FAILED, "NoManagedOsDisk", "the VM has no managed OS disk"
                    ),
                )
            snapshot = Snapshot(
                location=vm.location,
                properties=SnapshotProperties(
                    creation_data=CreationData(create_option="Copy", source_resource_id=disk_id),
                    incremental=True,
                ),
                tags={"createdBy": "update-manager-automation"},
            )
            poller = client.snapshots.begin_create_or_update(
                target.resource_group, snapshot_name, snapshot
            )
        return SnapshotOperation(target, poller)


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON object of an answer, or an empty one for anything else (a field Azure left out
    or sent null is no error: the VM then reads as unknown)."""
    return value if isinstance(value, dict) else {}


def _status_words(statuses: Any) -> list[tuple[str, str | None]]:
    """(code, message or display status) of each instance-view status in an answer's JSON."""
    words = []
    for status in statuses if isinstance(statuses, list) else []:
        fields = _json_object(status)
        text = fields.get("message") or fields.get("displayStatus")
        words.append((str(fields.get("code") or ""), str(text) if text else None))
    return words


def _power_of(statuses: Sequence[InstanceViewStatus] | None) -> MachinePower:
    return _power_from(
        [(status.code or "", status.message or status.display_status) for status in statuses or []]
    )


def _power_from(statuses: Sequence[tuple[str, str | None]]) -> MachinePower:
    """A VM's power from its instance view's (code, message) pairs."""
    state: PowerState | str = PowerState.UNKNOWN
    failed_code: str | None = None
    failed_message: str | None = None
    for code, text in statuses:
        words = code.split("/")
        if words[0].lower() == "powerstate" and len(words) > 1:
            state = PowerState.of(words[1])
        elif [w.lower() for w in words[:2]] == ["provisioningstate", "failed"]:
            # "ProvisioningState/failed/<code>": the VM's last operation failed.
            failed_code = words[2] if len(words) > 2 and words[2] else "ProvisioningFailed"
            failed_message = text or failed_code
    return MachinePower(
        state=state,
        startable=isinstance(state, PowerState) and state.startable,
        failed_code=failed_code,
        failed_message=failed_message,
    )


def _machine(machine: MachineId | str) -> MachineId:
    return machine if isinstance(machine, MachineId) else MachineId.parse(machine)
