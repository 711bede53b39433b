"""Compute: virtual machines, their power operations and snapshots."""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from .model_state import ModelState
from .records import (
    AsyncOperation,
    ModelError,
    OperationStatus,
    PowerState,
    PowerTransition,
    Snapshot,
    VirtualMachine,
    VmSpec,
    iso_time,
    key,
)


class ComputeModel(ModelState):
    """Compute: virtual machines, their power operations and snapshots."""

    # -- virtual machines ----------------------------------------------------------------------
    def add_vm(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        power_state: PowerState | str = PowerState.RUNNING,
        tags: Mapping[str, str] | None = None,
        os_type: str = "Linux",
        size: str = "Standard_D2s_v5",
    ) -> VirtualMachine:
        """Create a VM and return it (read its fields; change it through model methods)."""
        return self.add_vms(
            [
                VmSpec(
                    subscription_id,
                    resource_group,
                    name,
                    location,
                    power_state,
                    tags or {},
                    os_type,
                    size,
                )
            ]
        )[0]

    def add_vms(self, specs: Iterable[VmSpec]) -> list[VirtualMachine]:
        """Create many VMs under one lock acquisition (3,000 in a few milliseconds)."""
        created: list[VirtualMachine] = []
        now = self.now()
        with self._lock:
            for spec in specs:
                vm = VirtualMachine(
                    subscription_id=spec.subscription_id,
                    resource_group=spec.resource_group,
                    name=spec.name,
                    location=spec.location,
                    power_state=PowerState(spec.power_state),
                    tags=dict(spec.tags),
                    os_type=spec.os_type,
                    size=spec.size,
                    time_created=now,
                )
                if vm.power_state == PowerState.RUNNING:
                    vm.running_since = now
                if key(vm.id) in self._vms:
                    raise ValueError(f"VM already exists: {vm.id}")
                self._register_group(spec.subscription_id, spec.resource_group)
                self._vms[key(vm.id)] = vm
                self._disk_owners[key(vm.os_disk_id)] = key(vm.id)
                created.append(vm)
            self._changed()
        return created

    def get_vm(self, vm_id: str) -> VirtualMachine:
        """The VM with that id (case-insensitive); raises KeyError when unknown."""
        with self._lock:
            self._settle()
            return self._vms[key(vm_id)]

    def find_vm(self, vm_id: str) -> VirtualMachine | None:
        """The VM with that id, or None."""
        with self._lock:
            self._settle()
            return self._vms.get(key(vm_id))

    @property
    def vms(self) -> list[VirtualMachine]:
        """All VMs (settled to the current time)."""
        with self._lock:
            self._settle()
            return list(self._vms.values())

    def power_state(self, vm_id: str) -> PowerState:
        """Current power state of a VM."""
        return self.get_vm(vm_id).power_state

    def set_power_state(self, vm_id: str, state: PowerState | str) -> None:
        """Force a power state (drops any transition in flight)."""
        with self._lock:
            vm = self._vms[key(vm_id)]
            self._set_state(vm, PowerState(state), self.now())
            vm.transition = None  # its heap entry is now stale and skipped when popped
            self._changed()

    def set_vm_tags(self, vm_id: str, tags: Mapping[str, str]) -> None:
        """Replace a VM's tags."""
        with self._lock:
            self._vms[key(vm_id)].tags = dict(tags)
            self._changed()

    def remove_vm(self, vm_id: str) -> None:
        """Delete a VM (later GETs answer 404)."""
        with self._lock:
            vm = self._vms.pop(key(vm_id))
            self._disk_owners.pop(key(vm.os_disk_id), None)
            self._changed()

    def begin_power_operation(
        self,
        vm_id: str,
        operation: str,
        *,
        api_location: str | None = None,
        failure: Mapping[str, str] | None = None,
    ) -> AsyncOperation:
        """Start ``start``/``deallocate``/``powerOff`` on a VM and return the async operation.

        The VM moves to the in-between state at once and to the end state after
        ``settings.power_transition_seconds``. With ``failure`` ({code, message}) the operation ends
        Failed and the VM falls back to where it was. A different operation in flight is preempted,
        as ARM does, and ends Failed with OperationPreempted.
        """
        plans = {
            "start": (PowerState.STARTING, PowerState.RUNNING),
            "deallocate": (PowerState.DEALLOCATING, PowerState.DEALLOCATED),
            "powerOff": (PowerState.STOPPING, PowerState.STOPPED),
        }
        if operation not in plans:
            raise ValueError(f"unknown power operation {operation!r}")
        between, target = plans[operation]
        with self._lock:
            self._settle()
            vm = self._vms.get(key(vm_id))
            if vm is None:
                raise KeyError(vm_id)
            now = self.now()
            op = AsyncOperation(
                operation_id=str(uuid.uuid4()),
                subscription_id=vm.subscription_id,
                location=api_location or vm.location,
                kind=operation,
                resource_id=vm.id,
                started_at=now,
                completes_at=now,
            )
            self._operations[op.operation_id] = op
            current = vm.transition
            if current is not None and current.operation == operation and failure is None:
                # Same operation already running: this request rides along and ends with it.
                op.completes_at = current.completes_at
                op.error = current.failure
                current.operation_ids.append(op.operation_id)
                return op
            if current is not None:
                for earlier_id in current.operation_ids:
                    earlier = self._operations[earlier_id]
                    earlier.completes_at = now
                    earlier.error = {
                        "code": "OperationPreempted",
                        "message": "Operation execution has been preempted by a more recent "
                        "operation.",
                    }
                self._set_state(vm, current.fallback, now)
                vm.transition = None
            if vm.power_state == target and failure is None:
                return op  # nothing to do: Azure answers 202 and the operation succeeds at once
            delay = dt.timedelta(seconds=self._transition_seconds(vm.id, operation))
            op.completes_at = now + delay
            op.error = dict(failure) if failure else None
            vm.transition = PowerTransition(
                operation=operation,
                target=target,
                fallback=vm.power_state,
                completes_at=op.completes_at,
                operation_ids=[op.operation_id],
                failure=op.error,
            )
            self._set_state(vm, between, now)
            vm.failure = None
            self._due_sequence += 1
            heapq.heappush(self._due, (op.completes_at, self._due_sequence, key(vm.id)))
            self._changed()
            return op

    def operation_status(self, operation_id: str) -> OperationStatus | None:
        """Status of an async operation now, or None when unknown."""
        with self._lock:
            self._settle()
            op = self._operations.get(operation_id)
            if op is None:
                return None
            if self.now() < op.completes_at:
                return OperationStatus(op, "InProgress")
            return OperationStatus(op, "Failed" if op.error else "Succeeded")

    @property
    def operations(self) -> list[AsyncOperation]:
        """All async operations started so far."""
        with self._lock:
            return list(self._operations.values())

    def _transition_seconds(self, vm_id: str, operation: str) -> float:
        """How long this VM takes to start or deallocate (settings; fixed per VM)."""
        wanted = {"start": self.settings.start_seconds}.get(
            operation, self.settings.deallocate_seconds if operation == "deallocate" else None
        )
        if wanted is None:
            return self.settings.power_transition_seconds
        if isinstance(wanted, int | float):
            return float(wanted)
        low, high = float(wanted[0]), float(wanted[1])
        digest = hashlib.sha256(f"{key(vm_id)}|{operation}".encode()).digest()
        return low + (high - low) * int.from_bytes(digest[:4], "big") / 0xFFFFFFFF

    def _settle(self) -> None:
        """Finish transitions whose time has come (called under the lock)."""
        if not self._due:
            return
        now = self.now()
        settled = False
        while self._due and self._due[0][0] <= now:
            completes_at, _, vm_key = heapq.heappop(self._due)
            vm = self._vms.get(vm_key)
            transition = vm.transition if vm is not None else None
            if vm is None or transition is None or transition.completes_at != completes_at:
                continue  # stale: the VM was removed, forced, or its transition preempted
            end_state = transition.fallback if transition.failure else transition.target
            self._set_state(vm, end_state, completes_at)
            vm.transition = None
            vm.failure = (
                {**transition.failure, "time": iso_time(completes_at) or ""}
                if transition.failure
                else None
            )
            settled = True
        if settled:
            self._changed()

    @staticmethod
    def _set_state(vm: VirtualMachine, state: PowerState, when: dt.datetime) -> None:
        if state == PowerState.RUNNING and vm.power_state != PowerState.RUNNING:
            vm.running_since = when
        elif state != PowerState.RUNNING:
            vm.running_since = None
        vm.power_state = state

    # -- snapshots -----------------------------------------------------------------------------
    def create_snapshot(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str,
        source_resource_id: str,
        incremental: bool,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[Snapshot, AsyncOperation]:
        """Create (or replace) a snapshot of a known OS disk; the copy completes after a delay."""
        with self._lock:
            owner_key = self._disk_owners.get(key(source_resource_id))
            disk_owner = self._vms.get(owner_key) if owner_key else None
            if disk_owner is None:
                raise ModelError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{source_resource_id}' was not found "
                    f"(source disk of snapshot '{name}').",
                )
            now = self.now()
            op = AsyncOperation(
                operation_id=str(uuid.uuid4()),
                subscription_id=subscription_id,
                location=location,
                kind="snapshot",
                resource_id="",
                started_at=now,
                completes_at=now + dt.timedelta(seconds=self.settings.snapshot_seconds),
            )
            snapshot = Snapshot(
                subscription_id=subscription_id,
                resource_group=resource_group,
                name=name,
                location=location,
                source_resource_id=disk_owner.os_disk_id,
                incremental=incremental,
                tags=dict(tags or {}),
                time_created=now,
                completes_at=op.completes_at,
                operation_id=op.operation_id,
            )
            op.resource_id = snapshot.id
            self._register_group(subscription_id, resource_group)
            self._snapshots[key(snapshot.id)] = snapshot
            self._operations[op.operation_id] = op
            self._changed()
            return snapshot, op

    def find_snapshot(self, snapshot_id: str) -> Snapshot | None:
        """The snapshot with that id, or None."""
        with self._lock:
            return self._snapshots.get(key(snapshot_id))

    @property
    def snapshots(self) -> list[Snapshot]:
        """All snapshots created through the API."""
        with self._lock:
            return list(self._snapshots.values())

    def _vm_record(self, vm: VirtualMachine) -> dict[str, Any]:
        return self._record(
            id=vm.id,
            name=vm.name,
            type="microsoft.compute/virtualmachines",
            location=vm.location,
            resourceGroup=vm.resource_group.lower(),
            subscriptionId=vm.subscription_id,
            tags=dict(vm.tags),
            properties={
                "vmId": vm.vm_id,
                "hardwareProfile": {"vmSize": vm.size},
                "storageProfile": {
                    "osDisk": {
                        "osType": vm.os_type,
                        "name": vm.os_disk_name,
                        "createOption": "FromImage",
                        "managedDisk": {"id": vm.os_disk_id, "storageAccountType": "Premium_LRS"},
                    }
                },
                "osProfile": {"computerName": vm.name},
                "provisioningState": "Updating" if vm.transition else "Succeeded",
                "timeCreated": iso_time(vm.time_created),
                "extended": {
                    "instanceView": {
                        "computerName": vm.name,
                        "osName": "ubuntu"
                        if vm.os_type.lower() == "linux"
                        else "Windows Server 2022 Datacenter",
                        "powerState": {
                            "code": f"PowerState/{vm.power_state.value}",
                            "displayStatus": vm.power_state.display,
                            "level": "Info",
                        },
                    }
                },
            },
        )

    # -- ARM-shaped documents ------------------------------------------------------------------
    def vm_document(self, vm: VirtualMachine, *, with_instance_view: bool) -> dict[str, Any]:
        """The JSON a Compute GET answers for ``vm``."""
        with self._lock:
            record = self._vm_record(vm)
            properties = dict(record["properties"])
            properties.pop("extended", None)
            document: dict[str, Any] = {
                "name": vm.name,
                "id": vm.id,
                "type": "Microsoft.Compute/virtualMachines",
                "location": vm.location,
                "tags": dict(vm.tags),
                "properties": properties,
            }
            if with_instance_view:
                properties["instanceView"] = self.instance_view_document(vm)
            return document

    def instance_view_document(self, vm: VirtualMachine) -> dict[str, Any]:
        """The JSON of ``.../instanceView``."""
        with self._lock:
            provisioning: dict[str, Any] = (
                {"code": "ProvisioningState/updating", "level": "Info", "displayStatus": "Updating"}
                if vm.transition
                else {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                    "time": iso_time(vm.time_created),
                }
            )
            if vm.failure and not vm.transition:
                # How Compute shows a failed operation (e.g. a start that found no capacity).
                provisioning = {
                    "code": f"ProvisioningState/failed/{vm.failure['code']}",
                    "level": "Error",
                    "displayStatus": "Provisioning failed",
                    "message": vm.failure["message"],
                    "time": vm.failure.get("time"),
                }
            return {
                "computerName": vm.name,
                "osName": "ubuntu"
                if vm.os_type.lower() == "linux"
                else "Windows Server 2022 Datacenter",
                "vmAgent": {"vmAgentVersion": "2.10.0.8", "statuses": []},
                "statuses": [
                    provisioning,
                    {
                        "code": f"PowerState/{vm.power_state.value}",
                        "level": "Info",
                        "displayStatus": vm.power_state.display,
                    },
                ],
            }

    def vm_list_page(
        self, subscription_id: str, offset: int, *, status_only: bool
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of Compute's list of a subscription's VMs from `offset` (ordered by id), and
        the next page's offset (None: last page). `status_only` answers `statusOnly=true`:
        each VM's identity and its instance view instead of its model."""
        with self._lock:
            self._settle()
            vms = sorted(
                (
                    vm
                    for vm in self._vms.values()
                    if vm.subscription_id.lower() == subscription_id.lower()
                ),
                key=lambda vm: vm.id.lower(),
            )
            size = max(1, int(self.settings.vm_list_page_size))
            page = vms[offset : offset + size]
            if not status_only:
                documents = [self.vm_document(vm, with_instance_view=False) for vm in page]
            else:
                documents = [
                    {
                        "name": vm.name,
                        "id": vm.id,
                        "type": "Microsoft.Compute/virtualMachines",
                        "location": vm.location,
                        "properties": {
                            "vmId": vm.vm_id,
                            "instanceView": self.instance_view_document(vm),
                        },
                    }
                    for vm in page
                ]
            following = offset + size
            return documents, (following if following < len(vms) else None)

    def snapshot_document(self, snapshot: Snapshot) -> dict[str, Any]:
        """The JSON a snapshot GET/PUT answers."""
        done = self.now() >= snapshot.completes_at
        return {
            "name": snapshot.name,
            "id": snapshot.id,
            "type": "Microsoft.Compute/snapshots",
            "location": snapshot.location,
            "tags": dict(snapshot.tags),
            "sku": {"name": "Standard_ZRS", "tier": "Standard"},
            "properties": {
                "creationData": {
                    "createOption": "Copy",
                    "sourceResourceId": snapshot.source_resource_id,
                },
                "incremental": snapshot.incremental,
                "provisioningState": "Succeeded" if done else "Creating",
                "timeCreated": iso_time(snapshot.time_created),
                "diskSizeGB": 30,
                "diskState": "Unattached",
                "completionPercent": 100.0 if done else 0.0,
            },
        }
