"""Compute: virtual machines, power operations, their async operations, snapshots."""

from __future__ import annotations

import uuid
from typing import Any

from .model import ModelError
from .service_base import RG, SUB, Request, Response, Route, ServiceBase, arm_error, route

COMPUTE_API_VERSIONS = frozenset(
    [
        "2021-03-01",
        "2021-04-01",
        "2021-07-01",
        "2021-11-01",
        "2022-03-01",
        "2022-08-01",
        "2022-11-01",
        "2023-03-01",
        "2023-07-01",
        "2023-09-01",
        "2024-03-01",
        "2024-07-01",
        "2024-11-01",
        "2025-04-01",
        "2025-11-01",
        "2026-04-01",
    ]
)
DISK_API_VERSIONS = frozenset(
    [
        "2021-04-01",
        "2021-08-01",
        "2021-12-01",
        "2022-03-02",
        "2022-07-02",
        "2023-01-02",
        "2023-04-02",
        "2023-10-02",
        "2024-03-02",
        "2025-01-02",
        "2026-03-02",
    ]
)
VM_BASE = (
    rf"/subscriptions/{SUB}/resourceGroups/{RG}"
    r"/providers/Microsoft\.Compute/virtualMachines/(?P<vm>[^/]+)"
)
SNAPSHOT = (
    rf"/subscriptions/{SUB}/resourceGroups/{RG}"
    r"/providers/Microsoft\.Compute/snapshots/(?P<name>[^/]+)"
)


class ComputeRoutes(ServiceBase):
    """Compute: virtual machines, power operations, their async operations, snapshots."""

    def compute_routes(self) -> list[Route]:
        """This service's routes."""
        return [
            route(
                "GET",
                rf"/subscriptions/{SUB}/providers/Microsoft\.Compute/virtualMachines",
                "compute.list",
                self.vm_list_all,
            ),
            route("GET", VM_BASE, "compute.get", self.vm_get),
            route("GET", rf"{VM_BASE}/instanceView", "compute.get", self.vm_instance_view),
            route("POST", rf"{VM_BASE}/start", "compute.start", self.vm_start),
            route("POST", rf"{VM_BASE}/deallocate", "compute.deallocate", self.vm_deallocate),
            route("POST", rf"{VM_BASE}/powerOff", "compute.poweroff", self.vm_power_off),
            route(
                "GET",
                rf"/subscriptions/{SUB}/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)",
                "compute.operation",
                self.compute_operation,
            ),
            route("PUT", SNAPSHOT, "compute.snapshot.put", self.snapshot_put),
            route("GET", SNAPSHOT, "compute.snapshot.get", self.snapshot_get),
        ]

    def _find_vm(self, request: Request) -> tuple[Any, Response | None]:
        refused = self._check_api_version(request, COMPUTE_API_VERSIONS, "virtualMachines")
        if refused:
            return None, refused
        sub, rg, name = request.params["sub"], request.params["rg"], request.params["vm"]
        refused = self._check_scope(sub, rg)
        if refused:
            return None, refused
        vm = self.model.find_vm(
            f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        )
        if vm is None:
            return None, arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
                f"'{rg}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        return vm, None

    def vm_get(self, request: Request) -> Response:
        """GET a VM (``$expand=instanceView`` adds the power state)."""
        vm, refused = self._find_vm(request)
        if refused:
            return refused
        expand = (request.param("$expand") or "").lower()
        return Response(
            200, self.model.vm_document(vm, with_instance_view=expand == "instanceview")
        )

    def vm_list_all(self, request: Request) -> Response:
        """GET a subscription's VMs (VirtualMachines_ListAll), a page at a time with nextLink;
        `statusOnly=true` lists each VM's instance view (its power state) instead of its model.
        Each page is one ARM read."""
        refused = self._check_api_version(request, COMPUTE_API_VERSIONS, "virtualMachines")
        if refused:
            return refused
        sub = request.params["sub"]
        refused = self._check_scope(sub, None)
        if refused:
            return refused
        if request.param("$filter") or request.param("$expand"):
            return arm_error(
                400, "InvalidParameter", "The fake lists VMs without $filter or $expand."
            )
        status_only = (request.param("statusOnly") or "").lower() == "true"
        token = request.param("$skiptoken") or "0"
        if not token.isdigit():
            return arm_error(400, "InvalidParameter", "The $skiptoken is not valid.")
        documents, following = self.model.vm_list_page(sub, int(token), status_only=status_only)
        body: dict[str, Any] = {"value": documents}
        if following is not None:
            query = {k: v for k, v in request.query.items() if k.lower() != "$skiptoken"}
            query["$skiptoken"] = str(following)
            body["nextLink"] = f"{self._base_url(request)}{request.path}?" + "&".join(
                f"{k}={v}" for k, v in query.items()
            )
        return Response(200, body)

    def vm_instance_view(self, request: Request) -> Response:
        """GET .../instanceView."""
        vm, refused = self._find_vm(request)
        if refused:
            return refused
        return Response(200, self.model.instance_view_document(vm))

    def vm_start(self, request: Request) -> Response:
        """POST .../start (long-running)."""
        return self._power_operation(request, "start")

    def vm_deallocate(self, request: Request) -> Response:
        """POST .../deallocate (long-running)."""
        return self._power_operation(request, "deallocate")

    def vm_power_off(self, request: Request) -> Response:
        """POST .../powerOff (long-running)."""
        return self._power_operation(request, "powerOff")

    def _power_operation(self, request: Request, operation: str) -> Response:
        vm, refused = self._find_vm(request)
        if refused:
            return refused
        failure = self.faults.lro_failure_for(vm.id, operation)
        op = self.model.begin_power_operation(vm.id, operation, failure=failure)
        return Response(
            202, None, self._lro_headers(request, op.subscription_id, op.location, op.operation_id)
        )

    def _lro_headers(
        self, request: Request, subscription_id: str, location: str, operation_id: str
    ) -> dict[str, str]:
        version = request.param("api-version") or ""
        base = (
            f"{self._base_url(request)}/subscriptions/{subscription_id}/providers/Microsoft.Compute/locations/"
            f"{location}/operations/{operation_id}"
        )
        return {
            "Azure-AsyncOperation": f"{base}?p={uuid.uuid4()}&api-version={version}",
            "Location": f"{base}?p={uuid.uuid4()}&monitor=true&api-version={version}",
            "Retry-After": str(self.faults.lro_retry_after_seconds),
            "Azure-AsyncNotification": "Enabled",
        }

    def compute_operation(self, request: Request) -> Response:
        """Poll an operation: Azure-AsyncOperation (status JSON) or Location (?monitor=true)."""
        refused = self._check_api_version(
            request, COMPUTE_API_VERSIONS | DISK_API_VERSIONS, "locations/operations"
        )
        if refused:
            return refused
        status = self.model.operation_status(request.params["op"])
        if (
            status is None
            or status.operation.subscription_id.lower() != request.params["sub"].lower()
        ):
            return arm_error(
                404, "NotFound", f"The operation '{request.params['op']}' was not found."
            )
        op = status.operation
        retry = {"Retry-After": str(self.faults.lro_retry_after_seconds)}
        if (request.param("monitor") or "").lower() == "true":
            if not status.done:
                return Response(
                    202,
                    None,
                    {
                        **retry,
                        "Location": f"{self._base_url(request)}{request.path}?"
                        + "&".join(f"{k}={v}" for k, v in request.query.items()),
                    },
                )
            if op.error:
                return arm_error(409, op.error["code"], op.error["message"])
            if op.kind == "snapshot":
                snapshot = self.model.find_snapshot(op.resource_id)
                return Response(200, self.model.snapshot_document(snapshot) if snapshot else None)
            return Response(200, None)
        document: dict[str, Any] = {
            "startTime": op.started_at.isoformat(),
            "status": status.status,
            "name": op.operation_id,
        }
        if status.done:
            document["endTime"] = op.completes_at.isoformat()
        if status.status == "Failed" and op.error:
            document["error"] = {"code": op.error["code"], "message": op.error["message"]}
        return Response(200, document, {} if status.done else retry)

    def snapshot_put(self, request: Request) -> Response:
        """PUT a snapshot of a VM's OS disk (long-running)."""
        refused = self._check_api_version(request, DISK_API_VERSIONS, "snapshots")
        if refused:
            return refused
        sub, rg, name = request.params["sub"], request.params["rg"], request.params["name"]
        refused = self._check_scope(sub, rg)
        if refused:
            return refused
        body = request.body if isinstance(request.body, dict) else None
        if body is None:
            return arm_error(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized.",
            )
        location = body.get("location")
        properties = body.get("properties") or {}
        creation = properties.get("creationData") or {}
        source = creation.get("sourceResourceId")
        if not location:
            return arm_error(
                400, "LocationRequired", "The location property is required for this definition."
            )
        if str(creation.get("createOption", "")).lower() != "copy" or not source:
            return arm_error(
                400,
                "InvalidParameter",
                "The fake supports snapshots with creationData.createOption 'Copy' and a "
                "sourceResourceId.",
            )
        try:
            snapshot, op = self.model.create_snapshot(
                sub,
                rg,
                name,
                location=str(location),
                source_resource_id=str(source),
                incremental=bool(properties.get("incremental", False)),
                tags=body.get("tags") or {},
            )
        except ModelError as error:
            return arm_error(error.status, error.code, error.message)
        return Response(
            202, None, self._lro_headers(request, sub, snapshot.location, op.operation_id)
        )

    def snapshot_get(self, request: Request) -> Response:
        """GET a snapshot."""
        refused = self._check_api_version(request, DISK_API_VERSIONS, "snapshots")
        if refused:
            return refused
        sub, rg, name = request.params["sub"], request.params["rg"], request.params["name"]
        snapshot = self.model.find_snapshot(
            f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{name}"
        )
        if snapshot is None:
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/snapshots/{name}' under resource group '{rg}' "
                "was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        return Response(200, self.model.snapshot_document(snapshot))
