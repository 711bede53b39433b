"""Azure Compute (azure-mgmt-compute): power state, start, deallocate, OS-disk snapshot.

Arc-enabled servers are recognised by their resource type and reported as not startable; no
request is sent for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.polling import LROPoller
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    CreationData,
    InstanceViewStatus,
    Snapshot,
    SnapshotProperties,
)

from shared.adapters.arm_clients import PerSubscription
from shared.adapters.azure_errors import service_words, translated
from shared.domain.errors import CallWithdrawn
from shared.domain.ids import MachineId
from shared.domain.machines import MachinePower, OperationOutcome, OperationResult, PowerState
from shared.domain.platform import MachineFacts

log = logging.getLogger(__name__)

WRITE_RETRIES = 30
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


class PowerOperation:
    """A started long-running operation (or an answer known at once)."""

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
        """Wait up to `timeout` seconds (None: until done) for the operation to end."""
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
        with translated("Compute"):
            vm = client.virtual_machines.get(
                target.resource_group, target.name, expand="instanceView"
            )
        statuses = vm.instance_view.statuses if vm.instance_view else None
        return MachineFacts(
            machine=target,
            power=_power_of(statuses),
            tags=dict(vm.tags or {}),
            location=vm.location,
        )

    def begin_start(
        self, machine: MachineId | str, still_wanted: Callable[[], bool] | None = None
    ) -> PowerOperation:
        """Start a VM; an Arc machine is answered NotStartable without a request. While ARM
        only throttles the call, `still_wanted` is asked before each retry (CallWithdrawn)."""
        return self._begin_power(machine, "begin_start", still_wanted)

    def begin_deallocate(self, machine: MachineId | str) -> PowerOperation:
        """Deallocate a VM (stop and release compute); Arc machines are not touched."""
        return self._begin_power(machine, "begin_deallocate")

    def _begin_power(
        self,
        machine: MachineId | str,
        operation: str,
        still_wanted: Callable[[], bool] | None = None,
    ) -> PowerOperation:
        target = _machine(machine)
        if target.is_arc:
            return PowerOperation(
                target, None, OperationResult(OperationOutcome.NOT_STARTABLE, None, ARC_NOTE)
            )
        client = self._clients.for_subscription(target.subscription_id)
        options = {} if still_wanted is None else {STILL_WANTED: still_wanted}
        try:
            with translated("Compute"):
                begin = getattr(client.virtual_machines, operation)
                poller: LROPoller[Any] = begin(target.resource_group, target.name, **options)
        except _NoLongerWanted as e:
            raise CallWithdrawn(
                "Compute", 429, "Withdrawn", "throttled until it was no longer wanted; not sent"
            ) from e
        return PowerOperation(target, poller)

    def begin_snapshot_os_disk(
        self, machine: MachineId | str, snapshot_name: str
    ) -> PowerOperation:
        """Take an incremental snapshot of the VM's OS disk, in the VM's resource group."""
        target = _machine(machine)
        if target.is_arc:
            return PowerOperation(
                target, None, OperationResult(OperationOutcome.NOT_STARTABLE, None, ARC_NOTE)
            )
        client = self._clients.for_subscription(target.subscription_id)
        with translated("Compute"):
            vm = client.virtual_machines.get(target.resource_group, target.name)
            os_disk = vm.storage_profile.os_disk if vm.storage_profile else None
            disk_id = os_disk.managed_disk.id if os_disk and os_disk.managed_disk else None
            if not disk_id:
                return PowerOperation(
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
        return PowerOperation(target, poller)


def _power_of(statuses: Sequence[InstanceViewStatus] | None) -> MachinePower:
    state: PowerState | str = PowerState.UNKNOWN
    for status in statuses or []:
        code = status.code or ""
        if code.lower().startswith("powerstate/"):
            state = PowerState.of(code.split("/", 1)[1])
    return MachinePower(state=state, startable=isinstance(state, PowerState) and state.startable)


def _machine(machine: MachineId | str) -> MachineId:
    return machine if isinstance(machine, MachineId) else MachineId.parse(machine)
