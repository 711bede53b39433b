"""Request handling of the fake Azure: routes, auth, faults and the Azure-shaped answers.

This module knows nothing about sockets; :mod:`sandbox.fake_azure.server` feeds it parsed
requests. Paths, api-versions, status codes, headers and JSON shapes follow what the Azure
services answer (see the package README for what is modelled and what is invented).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .faults import (
    COMPUTE_UPDATE_VM_ENDPOINTS,
    COMPUTE_UPDATE_VM_RESOURCE_POLICY,
    COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY,
    CancelPolicy,
    ErrorRule,
    FaultPlan,
    LostAnswer,
    ThrottleDecision,
)
from .identity import ARM_AUDIENCES, LOG_ANALYTICS_AUDIENCES, TokenError, TokenGrant, TokenStore
from .kql_syntax import parse_datetime_literal
from .model import AzureModel, MaintenanceRun, ModelError, parse_resource_id
from .query_engine import (
    KqlError,
    KqlSyntaxError,
    QueryResult,
    Table,
    column_type,
    json_ready,
    run_query,
)
from .request_log import RecordedRequest, RequestLog, redact_headers

log = logging.getLogger(__name__)

# api-versions each service accepts. The defaults of the pinned SDKs are included:
# azure-mgmt-compute 39.0.0 sends 2026-04-01 (virtualMachines) and 2026-03-02 (snapshots),
# azure-mgmt-resourcegraph 8.0.1 sends 2021-03-01, azure-mgmt-maintenance 2.2.0b4
# 2025-10-01-preview.
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
ARG_API_VERSIONS = frozenset(
    [
        "2018-09-01-preview",
        "2019-04-01",
        "2020-04-01-preview",
        "2021-03-01",
        "2021-06-01-preview",
        "2022-10-01",
        "2024-04-01",
    ]
)
# Only these api-versions have ApplyUpdates_CreateOrUpdateOrCancel (reference §3).
MAINTENANCE_CANCEL_API_VERSIONS = frozenset(
    ["2023-09-01-preview", "2023-10-01-preview", "2025-10-01-preview", "2025-11-01"]
)
MAINTENANCE_READ_API_VERSIONS = MAINTENANCE_CANCEL_API_VERSIONS | frozenset(
    ["2021-05-01", "2021-09-01-preview", "2022-07-01-preview", "2022-11-01-preview", "2023-04-01"]
)
MSI_API_VERSION = "2019-08-01"
ARG_MAX_PAGE = 1000

_SUB = r"(?P<sub>[^/]+)"
_RG = r"(?P<rg>[^/]+)"
_VM_BASE = (
    rf"/subscriptions/{_SUB}/resourceGroups/{_RG}"
    r"/providers/Microsoft\.Compute/virtualMachines/(?P<vm>[^/]+)"
)
_MC_ID = (
    r"/subscriptions/[^/]+/resourceGroups/[^/]+"
    r"/providers/Microsoft\.Maintenance/maintenanceConfigurations/[^/]+"
)


@dataclass
class Request:
    """A parsed HTTP request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    params: dict[str, str] = field(default_factory=dict)
    grant: TokenGrant | None = None
    quota_headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """Header value, looked up case-insensitively."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    def param(self, name: str) -> str | None:
        """Query parameter, looked up case-insensitively (ARM ignores their case)."""
        lowered = name.lower()
        return next((v for k, v in self.query.items() if k.lower() == lowered), None)


@dataclass
class Response:
    """What to answer: status, JSON body (None: empty) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Set by a lost-answer fault: close the connection after this many seconds, answering
    # nothing. ``answer_lost`` marks a request that was applied but whose answer was lost.
    drop_after: float | None = None
    answer_lost: bool = False


@dataclass(frozen=True)
class ThrottleView:
    """A bucket's state when no token was taken from it (another bucket refused first)."""

    remaining: int
    allowed: bool = True
    retry_after: int = 0


@dataclass(frozen=True)
class Route:
    """A method + path pattern served by ``handler``; ``auth`` is "arm", "loganalytics" or None."""

    method: str
    pattern: re.Pattern[str]
    endpoint: str
    handler: Callable[[Request], Response]
    auth: str | None


def arm_error(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Response:
    """ARM's error envelope ``{"error": {"code", "message"[, "details"]}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return Response(status, {"error": error}, dict(headers or {}))


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _hhmmss(seconds: float) -> str:
    whole = max(round(seconds), 0)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


_ISO_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


def parse_iso_duration(text: str) -> dt.timedelta:
    """Parse an ISO 8601 duration such as ``PT3600.0S`` or ``P1DT2H``."""
    match = _ISO_DURATION.match(text.strip())
    if not match or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"invalid ISO 8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return dt.timedelta(**parts)


def parse_timespan(text: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """Log Analytics' ``timespan``: ``duration`` (ending now), ``start/end``, ``start/duration``
    or ``duration/end``."""
    if "/" not in text:
        return now - parse_iso_duration(text), now
    first, second = text.split("/", 1)
    if first.upper().startswith("P"):
        end = parse_datetime_literal(second)
        return end - parse_iso_duration(first), end
    start = parse_datetime_literal(first)
    if second.upper().startswith("P"):
        return start, start + parse_iso_duration(second)
    return start, parse_datetime_literal(second)


class FakeAzureService:
    """Routes requests to handlers and applies auth, faults, throttles and the request log."""

    def __init__(
        self,
        model: AzureModel,
        faults: FaultPlan,
        request_log: RequestLog,
        tokens: TokenStore,
        *,
        identity_header: str,
        allowed_client_ids: set[str] | None = None,
        check_audience: bool = True,
    ) -> None:
        self.model = model
        self.faults = faults
        self.request_log = request_log
        self.tokens = tokens
        self.identity_header = identity_header
        self.allowed_client_ids = (
            {c.lower() for c in allowed_client_ids} if allowed_client_ids else None
        )
        self.check_audience = check_audience
        self.base_url = ""
        self.routes = self._build_routes()

    # -- routing -------------------------------------------------------------------------------
    def _build_routes(self) -> list[Route]:
        def route(
            method: str,
            pattern: str,
            endpoint: str,
            handler: Callable[[Request], Response],
            auth: str | None = "arm",
        ) -> Route:
            # Azure matches segments like resourceGroups / Microsoft.Compute case-insensitively.
            return Route(
                method, re.compile(f"^{pattern}/?$", re.IGNORECASE), endpoint, handler, auth
            )

        return [
            route("GET", r"/_sandbox/health", "sandbox.health", self.health, auth=None),
            route("GET", r"/msi/token", "token", self.msi_token, auth=None),
            route(
                "POST",
                r"/_sandbox/webhook/(?P<hook>[^/]+)",
                "sandbox.webhook",
                self.webhook_sink,
                auth=None,
            ),
            route(
                "POST", r"/providers/Microsoft\.ResourceGraph/resources", "arg", self.arg_resources
            ),
            route(
                "GET",
                rf"/subscriptions/{_SUB}/providers/Microsoft\.Compute/virtualMachines",
                "compute.list",
                self.vm_list_all,
            ),
            route("GET", _VM_BASE, "compute.get", self.vm_get),
            route("GET", rf"{_VM_BASE}/instanceView", "compute.get", self.vm_instance_view),
            route("POST", rf"{_VM_BASE}/start", "compute.start", self.vm_start),
            route("POST", rf"{_VM_BASE}/deallocate", "compute.deallocate", self.vm_deallocate),
            route("POST", rf"{_VM_BASE}/powerOff", "compute.poweroff", self.vm_power_off),
            route(
                "GET",
                rf"/subscriptions/{_SUB}/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)",
                "compute.operation",
                self.compute_operation,
            ),
            route(
                "PUT",
                rf"/subscriptions/{_SUB}/resourceGroups/{_RG}/providers/Microsoft\.Compute/snapshots/(?P<name>[^/]+)",
                "compute.snapshot.put",
                self.snapshot_put,
            ),
            route(
                "GET",
                rf"/subscriptions/{_SUB}/resourceGroups/{_RG}/providers/Microsoft\.Compute/snapshots/(?P<name>[^/]+)",
                "compute.snapshot.get",
                self.snapshot_get,
            ),
            route(
                "GET",
                rf"/subscriptions/{_SUB}/resourceGroups/{_RG}/providers/Microsoft\.Maintenance/maintenanceConfigurations/(?P<mc>[^/]+)",
                "maintenance.configuration.get",
                self.configuration_get,
            ),
            route(
                "PUT",
                rf"(?P<mcid>{_MC_ID})/providers/Microsoft\.Maintenance/applyUpdates/(?P<name>[^/]+)",
                "maintenance.cancel",
                self.apply_update_put,
            ),
            route(
                "GET",
                rf"(?P<mcid>{_MC_ID})/providers/Microsoft\.Maintenance/applyUpdates/(?P<name>[^/]+)",
                "maintenance.get",
                self.apply_update_get,
            ),
            route(
                "POST",
                r"/v1/workspaces/(?P<ws>[^/]+)/query",
                "loganalytics.query",
                self.la_query,
                auth="loganalytics",
            ),
        ]

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The route for a request, its path parameters, and whether the path exists at all."""
        path_known = False
        for candidate in self.routes:
            found = candidate.pattern.match(path)
            if not found:
                continue
            path_known = True
            if candidate.method == method:
                return (
                    candidate,
                    {k: v for k, v in found.groupdict().items() if v is not None},
                    True,
                )
        return None, {}, path_known

    # -- the request pipeline ------------------------------------------------------------------
    def serve(self, request: Request) -> Response:
        """Answer one request and record it in the request log."""
        started = time.perf_counter()
        route, params, path_known = self.match(request.method, request.path)
        endpoint = route.endpoint if route else "unrouted"
        request.params = params
        try:
            response = self._serve_routed(request, route, path_known)
        except Exception:
            # A bug in the fake must answer 500, like a service fault, not hang the client.
            log.exception("fake Azure failed on %s %s", request.method, request.path)
            response = arm_error(
                500, "InternalServerError", "The fake Azure failed on this request (see its log)."
            )
        self._add_standard_headers(request, response)
        grant = request.grant
        self.request_log.append(
            RecordedRequest(
                time=self.model.now(),
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=redact_headers(request.headers),
                body=request.body,
                status=response.status,
                endpoint=endpoint,
                duration_ms=(time.perf_counter() - started) * 1000.0,
                token_resource=grant.resource if grant else None,
                client_id=grant.client_id if grant else None,
                answer_lost=response.answer_lost,
            )
        )
        return response

    def _serve_routed(self, request: Request, route: Route | None, path_known: bool) -> Response:
        if route is None:
            if path_known:
                return arm_error(
                    405,
                    "MethodNotAllowed",
                    f"The requested resource does not support http method '{request.method}'.",
                )
            return arm_error(
                404, "NotFound", f"The fake Azure serves no '{request.method} {request.path}'."
            )
        delay = self.faults.latency_for(route.endpoint)
        if delay > 0:
            time.sleep(delay)
        if route.auth is not None:
            refused = self._authenticate(request, route.auth)
            if refused is not None:
                return refused
        if route.endpoint == "arg":
            # Every Resource Graph answer, errors included, reports the caller's quota.
            throttled = self._spend_arg_quota(request)
            if throttled is not None:
                return throttled
        limit_headers: dict[str, str] = {}
        subscription = request.params.get("sub") or self._subscription_of(request)
        if subscription:
            # ARM throttles before the request reaches the resource provider.
            refused = self._spend_arm_budget(request, subscription, limit_headers)
            if refused is not None:
                return refused
        rule = self.faults.pick_error(route.endpoint, request.method, request.path)
        if rule is not None and not rule.after_applying:
            injected = self._injected_error(route.endpoint, rule, request)
            for name, value in {**limit_headers, **request.quota_headers}.items():
                injected.headers.setdefault(name, value)
            return injected
        if route.endpoint in COMPUTE_UPDATE_VM_ENDPOINTS:
            refused = self._spend_compute_budget(request, subscription, limit_headers)
            if refused is not None:
                return refused
        response = route.handler(request)
        if rule is not None:
            # Azure did the work; the answer is lost on the way back (status 0: the connection
            # ends without any answer).
            if rule.status == 0:
                return Response(0, answer_lost=True)
            lost_answer = self._injected_error(route.endpoint, rule, request)
            lost_answer.answer_lost = True
            for name, value in {**limit_headers, **request.quota_headers}.items():
                lost_answer.headers.setdefault(name, value)
            return lost_answer
        for name, value in {**limit_headers, **request.quota_headers}.items():
            response.headers.setdefault(name, value)
        if response.status < 400:
            lost = self.faults.pick_lost_answer(route.endpoint, request.path)
            if lost is not None:
                return self._lost_answer(lost)
        return response

    def _spend_arm_budget(
        self, request: Request, subscription: str, headers: dict[str, str]
    ) -> Response | None:
        """Spend a token of ARM's subscription bucket for this operation type; 429 when empty.

        The bucket is per subscription and principal, as ARM keys it; the remaining count goes
        into ``x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}`` on every answer.
        """
        limits = self.faults.arm_limits
        kind, buckets = limits.buckets_for(request.method)
        if kind == "writes" and self.faults.write_throttle is not None:
            buckets = self.faults.write_throttle  # a test's own (usually tiny) write bucket
        elif not limits.enabled:
            return None
        grant = request.grant
        actor = (grant.object_id or grant.client_id or "unknown") if grant else "unknown"
        decision = buckets.take(f"{subscription}|{actor}")
        header = f"x-ms-ratelimit-remaining-subscription-{kind}"
        headers[header] = str(decision.remaining)
        if decision.allowed:
            return None
        operation = {"reads": "read", "writes": "write", "deletes": "delete"}[kind]
        return arm_error(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of '{operation}' requests for subscription '{subscription}' actor "
            f"'{actor}' exceeded. Please try again after '{decision.retry_after}' seconds after "
            "additional tokens are available. Refer to https://aka.ms/arm-throttling for "
            "additional information.",
            headers={header: "0", "Retry-After": str(decision.retry_after)},
        )

    def _spend_compute_budget(
        self, request: Request, subscription: str, headers: dict[str, str]
    ) -> Response | None:
        """Spend Compute's "Update VM" tokens: the subscription's (per region) and the VM's.

        Both remaining counts go into one ``x-ms-ratelimit-remaining-resource`` header in
        Compute's ``<provider>/<policy>;<count>`` form, comma-separated (as repeated headers
        fold). A refusal is Compute's 429 ``OperationNotAllowed`` with a ``TooManyRequests``
        detail naming the policy.
        """
        limits = self.faults.compute_limits
        if not limits.enabled:
            return None
        vm_path = request.path.rsplit("/", 1)[0]
        vm = self.model.find_vm(vm_path)
        region = vm.location.lower() if vm is not None else "unknown"
        subscription_scope = f"{subscription}|{region}"
        on_subscription: ThrottleDecision | ThrottleView = limits.per_subscription.take(
            subscription_scope
        )
        on_vm: ThrottleDecision | ThrottleView = (
            limits.per_vm.take(vm_path)
            if on_subscription.allowed
            else ThrottleView(limits.per_vm.remaining(vm_path))
        )
        if on_subscription.allowed and not on_vm.allowed:
            limits.per_subscription.give_back(subscription_scope)
            on_subscription = ThrottleView(limits.per_subscription.remaining(subscription_scope))
        headers["x-ms-ratelimit-remaining-resource"] = (
            f"{COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY};{on_subscription.remaining},"
            f"{COMPUTE_UPDATE_VM_RESOURCE_POLICY};{on_vm.remaining}"
        )
        if on_subscription.allowed and on_vm.allowed:
            return None
        refused_by, decision = (
            (COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY, on_subscription)
            if not on_subscription.allowed
            else (COMPUTE_UPDATE_VM_RESOURCE_POLICY, on_vm)
        )
        policy = refused_by.split("/", 1)[1]
        scope = (
            "subscription" if refused_by == COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY else "resource"
        )
        return arm_error(
            429,
            "OperationNotAllowed",
            "The server rejected the request because too many requests have been received for "
            f"this {scope}.",
            headers={**headers, "Retry-After": str(max(decision.retry_after, 1))},
            details=[
                {
                    "code": "TooManyRequests",
                    "target": policy,
                    "message": json.dumps(
                        {"operationGroup": policy, "retryAfterSeconds": decision.retry_after}
                    ),
                }
            ],
        )

    @staticmethod
    def _lost_answer(rule: LostAnswer) -> Response:
        """What the client gets once the request was applied and its answer lost."""
        if rule.mode == "drop":
            return Response(0, drop_after=0.0, answer_lost=True)
        if rule.mode == "timeout":
            return Response(0, drop_after=rule.seconds, answer_lost=True)
        status = int(rule.mode)
        words = {
            502: ("BadGateway", "The gateway did not receive a response from the service."),
            503: ("ServiceUnavailable", "The service is temporarily unavailable."),
            504: ("GatewayTimeout", "The gateway did not receive a response in time."),
        }
        code, message = words[status]
        lost = arm_error(status, code, message)
        lost.answer_lost = True
        return lost

    def _spend_arg_quota(self, request: Request) -> Response | None:
        grant = request.grant
        principal = (grant.client_id or grant.object_id) if grant else "anonymous"
        allowed, remaining, resets_after = self.faults.arg_quota.spend(principal)
        request.quota_headers = {
            "x-ms-user-quota-remaining": str(remaining),
            "x-ms-user-quota-resets-after": _hhmmss(resets_after),
        }
        if allowed:
            return None
        return arm_error(
            429,
            "RateLimiting",
            "Please provide below info when asking for support: "
            f"timestamp = {self.model.now().isoformat()}, correlationId = {uuid.uuid4()}.",
            headers={
                **request.quota_headers,
                "Retry-After": str(max(int(resets_after + 0.999), 1)),
            },
            details=[
                {
                    "code": "RateLimiting",
                    "message": "Client application has been throttled and should not "
                    "attempt to repeat the request until an amount of time has elapsed.",
                }
            ],
        )

    @staticmethod
    def _subscription_of(request: Request) -> str:
        parts = request.path.strip("/").split("/")
        return parts[1] if len(parts) > 1 and parts[0].lower() == "subscriptions" else ""

    def _authenticate(self, request: Request, audience_kind: str) -> Response | None:
        if self.check_audience:
            extra = ARM_AUDIENCES if audience_kind == "arm" else LOG_ANALYTICS_AUDIENCES
            # The fake's own URL, by the address it was started with or the one the client used.
            audiences: tuple[str, ...] | None = (self.base_url, self._base_url(request), *extra)
        else:
            audiences = None
        try:
            # Token expiry follows the wall clock, as the client's token cache does.
            request.grant = self.tokens.validate(
                request.header("Authorization"), audiences=audiences
            )
        except TokenError as refusal:
            challenge = (
                "Bearer authorization_uri="
                f'"https://login.microsoftonline.com/{self.tokens.tenant_id}", '
                f'error="invalid_token", error_description="{refusal.message}"'
            )
            if audience_kind == "loganalytics":
                return Response(
                    401,
                    {
                        "error": {
                            "code": "AuthorizationRequiredError",
                            "message": refusal.message,
                            "innererror": {"code": refusal.code},
                        }
                    },
                    {"WWW-Authenticate": challenge},
                )
            return arm_error(
                401, refusal.code, refusal.message, headers={"WWW-Authenticate": challenge}
            )
        return None

    def _injected_error(self, endpoint: str, rule: ErrorRule, request: Request) -> Response:
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = _format_seconds(rule.retry_after)
        status = rule.status
        if endpoint == "arg" and status == 429:
            headers["x-ms-user-quota-remaining"] = "0"
            headers["x-ms-user-quota-resets-after"] = _hhmmss(rule.retry_after or 5)
            return arm_error(
                429,
                rule.code or "RateLimiting",
                rule.message
                or "Please provide below info when asking for support: "
                f"timestamp = {self.model.now().isoformat()}, correlationId = {uuid.uuid4()}.",
                headers=headers,
                details=[
                    {
                        "code": "RateLimiting",
                        "message": "Client application has been throttled and should "
                        "not attempt to repeat the request until an amount of time has elapsed. "
                        "Please see https://aka.ms/resourcegraph-throttling for help.",
                    }
                ],
            )
        defaults = {
            429: (
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for this "
                "operation type. For more information, see https://aka.ms/arm-throttling",
            ),
            500: (
                "InternalServerError",
                "Encountered internal server error. Diagnostic information: "
                f"timestamp '{self.model.now():%Y%m%dT%H%M%SZ}', tracking id '{uuid.uuid4()}'.",
            ),
            502: ("BadGateway", "The gateway did not receive a response from the service."),
            503: (
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please try again later.",
            ),
            504: (
                "GatewayTimeout",
                "The gateway did not receive a response within the specified time period.",
            ),
        }
        code, message = defaults.get(
            status, ("InjectedFault", f"Injected fault answering {status}.")
        )
        if endpoint == "token":
            return Response(
                status,
                {
                    "statusCode": status,
                    "message": rule.message or message,
                    "correlationId": str(uuid.uuid4()),
                },
                headers,
            )
        return arm_error(status, rule.code or code, rule.message or message, headers=headers)

    def _add_standard_headers(self, request: Request, response: Response) -> None:
        request_id = str(uuid.uuid4())
        response.headers.setdefault("x-ms-request-id", request_id)
        response.headers.setdefault(
            "x-ms-correlation-request-id",
            request.header("x-ms-correlation-request-id") or request_id,
        )
        client_request_id = request.header("x-ms-client-request-id")
        if client_request_id:
            response.headers.setdefault("x-ms-client-request-id", client_request_id)
        response.headers.setdefault("Cache-Control", "no-cache")

    def _base_url(self, request: Request) -> str:
        host = request.header("Host")
        # Absolute URLs (LRO headers) use the host the client called, so TLS names match.
        return f"https://{host}" if host else self.base_url

    # -- api-version checks --------------------------------------------------------------------
    def _check_api_version(
        self, request: Request, supported: frozenset[str], resource_type: str
    ) -> Response | None:
        version = request.param("api-version")
        if not version:
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version in supported:
            return None
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha)?", version):
            return arm_error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(sorted(supported, reverse=True))}'.",
            )
        return arm_error(
            400,
            "NoRegisteredProviderFound",
            "No registered resource provider found for location 'global' and API version "
            f"'{version}' for type '{resource_type}'. The supported api-versions are "
            f"'{', '.join(sorted(supported))}'.",
        )

    def _check_scope(self, subscription_id: str, resource_group: str | None) -> Response | None:
        if not self.model.has_subscription(subscription_id):
            return arm_error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{subscription_id}' could not be found.",
            )
        if resource_group is not None and not self.model.has_resource_group(
            subscription_id, resource_group
        ):
            return arm_error(
                404,
                "ResourceGroupNotFound",
                f"Resource group '{resource_group}' could not be found.",
            )
        return None

    # -- sandbox + identity --------------------------------------------------------------------
    def health(self, request: Request) -> Response:
        """Readiness probe for scripts that start the fake in another process."""
        return Response(200, {"status": "ok", **self.model.summary()})

    def webhook_sink(self, request: Request) -> Response:
        """A Teams/Slack-style incoming webhook: accepts any JSON post; the request log keeps
        it, so tests read what the app notified (``requests_matching("POST", "webhook")``)."""
        return Response(200, {"accepted": True})

    def msi_token(self, request: Request) -> Response:
        """App Service managed identity protocol (api-version 2019-08-01, X-IDENTITY-HEADER)."""

        def refuse(status: int, message: str) -> Response:
            return Response(
                status,
                {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
            )

        if request.header("X-IDENTITY-HEADER") != self.identity_header:
            return refuse(401, "Unauthorized: the X-IDENTITY-HEADER header is missing or wrong.")
        if request.param("api-version") != MSI_API_VERSION:
            return refuse(
                400,
                f"Unsupported api-version '{request.param('api-version')}'; "
                f"expected {MSI_API_VERSION}.",
            )
        resource = request.param("resource")
        if not resource:
            return refuse(400, "The 'resource' parameter is required.")
        client_id = request.param("client_id")
        if request.param("mi_res_id") or request.param("object_id"):
            client_id = client_id or request.param("mi_res_id") or request.param("object_id")
        if (
            self.allowed_client_ids is not None
            and client_id
            and client_id.lower() not in self.allowed_client_ids
        ):
            return refuse(
                400,
                "No User Assigned or Delegated Managed Identity found for specified "
                "ClientId/ResourceId/PrincipalId.",
            )
        grant = self.tokens.issue(resource, client_id)
        request.grant = grant
        return Response(
            200,
            {
                "access_token": grant.token,
                "expires_on": str(int(grant.expires_at.timestamp())),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or grant.object_id,
            },
        )

    # -- Resource Graph ------------------------------------------------------------------------
    def arg_resources(self, request: Request) -> Response:
        """POST /providers/Microsoft.ResourceGraph/resources: KQL over the fake's tables, paged."""
        refused = self._check_api_version(request, ARG_API_VERSIONS, "resources")
        if refused:
            return refused
        quota_headers = dict(request.quota_headers)
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return arm_error(
                400,
                "BadRequest",
                "The request content was invalid: 'query' is required.",
                headers=quota_headers,
                details=[
                    {"code": "InvalidRequestContent", "message": "The request content was invalid."}
                ],
            )
        subscriptions = [s for s in body.get("subscriptions") or [] if isinstance(s, str)]
        options = body.get("options") or {}
        top = options.get("$top")
        skip = options.get("$skip")
        skip_token = options.get("$skipToken")
        result_format = str(options.get("resultFormat") or "objectArray")
        if top is not None and (not isinstance(top, int) or not 1 <= top <= ARG_MAX_PAGE):
            return self._arg_bad_request(
                f"$top must be between 1 and {ARG_MAX_PAGE}.", quota_headers, "InvalidTop"
            )
        if skip is not None and (not isinstance(skip, int) or skip < 0):
            return self._arg_bad_request(
                "$skip must be a non-negative integer.", quota_headers, "InvalidSkip"
            )
        if result_format.lower() not in ("objectarray", "table"):
            return self._arg_bad_request(
                f"Unknown resultFormat '{result_format}'.", quota_headers, "InvalidResultFormat"
            )

        query_text: str = body["query"]
        fingerprint = hashlib.sha256(
            json.dumps([query_text, sorted(s.lower() for s in subscriptions)]).encode()
        ).hexdigest()[:16]

        def resolve(name: str) -> Table | None:
            return self.model.arg_table(name, subscriptions or None)

        try:
            result = run_query(query_text, resolve, now=self.model.now())
        except KqlError as error:
            return self._arg_invalid_query(error, quota_headers)

        offset = 0
        if skip_token:
            decoded = self._decode_skip_token(str(skip_token), fingerprint)
            if decoded is None:
                return self._arg_bad_request(
                    "The $skipToken is invalid or belongs to another query.",
                    quota_headers,
                    "InvalidSkipToken",
                )
            offset = decoded
        elif skip and not result.limited:  # ARG ignores $skip when the query has take/limit
            offset = skip
        page_size = min(top or ARG_MAX_PAGE, ARG_MAX_PAGE)
        total = len(result.rows)
        page = result.rows[offset : offset + page_size]
        more = offset + len(page) < total
        response_body: dict[str, Any] = {
            "totalRecords": total,
            "count": len(page),
            "data": self._arg_data(result, page, result_format),
            "facets": [],
            "resultTruncated": "false",
        }
        if more:
            if result.limited or self._only_dynamic_columns(result):
                # Documented: no $skipToken when the query has take/limit or only dynamic columns.
                response_body["resultTruncated"] = "true"
            else:
                response_body["$skipToken"] = self._encode_skip_token(
                    offset + len(page), fingerprint
                )
        return Response(200, response_body, quota_headers)

    def _arg_bad_request(
        self, message: str, headers: Mapping[str, str], detail_code: str
    ) -> Response:
        return arm_error(
            400,
            "BadRequest",
            message,
            headers=headers,
            details=[{"code": detail_code, "message": message}],
        )

    def _arg_invalid_query(self, error: KqlError, headers: Mapping[str, str]) -> Response:
        details: list[dict[str, Any]] = [
            {
                "code": "InvalidQuery",
                "message": "Query is invalid. Please refer to the documentation for the Azure "
                "Resource Graph service and fix the error before retrying.",
            }
        ]
        detail: dict[str, Any] = {
            "code": "ParserFailure" if isinstance(error, KqlSyntaxError) else "FailedToResolve",
            "message": error.message,
        }
        if error.position is not None:
            detail["line"] = 1
            detail["characterPositionInLine"] = error.position
        if error.token is not None:
            detail["token"] = error.token
        details.append(detail)
        return arm_error(
            400,
            "BadRequest",
            "Please provide below info when asking for support: "
            f"timestamp = {self.model.now().isoformat()}, correlationId = {uuid.uuid4()}.",
            headers=headers,
            details=details,
        )

    @staticmethod
    def _only_dynamic_columns(result: QueryResult) -> bool:
        for column in result.columns:
            if any(
                row.get(column) is not None and not isinstance(row.get(column), dict | list)
                for row in result.rows
            ):
                return False
        return True

    @staticmethod
    def _arg_data(result: QueryResult, page: list[dict[str, Any]], result_format: str) -> Any:
        if result_format.lower() == "table":
            names = {"long": "integer", "real": "number", "bool": "boolean", "dynamic": "object"}
            columns = [
                {
                    "name": c,
                    "type": names.get(
                        column_type(r.get(c) for r in page), column_type(r.get(c) for r in page)
                    ),
                }
                for c in result.columns
            ]
            return {
                "columns": columns,
                "rows": [[json_ready(row.get(c)) for c in result.columns] for row in page],
            }
        return [{c: json_ready(row.get(c)) for c in result.columns} for row in page]

    @staticmethod
    def _encode_skip_token(offset: int, fingerprint: str) -> str:
        raw = json.dumps({"o": offset, "q": fingerprint}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_skip_token(token: str, fingerprint: str) -> int | None:
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        except (ValueError, TypeError):
            return None
        if (
            not isinstance(data, dict)
            or data.get("q") != fingerprint
            or not isinstance(data.get("o"), int)
        ):
            return None
        return int(data["o"])

    # -- Compute -------------------------------------------------------------------------------
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

    # -- Maintenance ---------------------------------------------------------------------------
    def configuration_get(self, request: Request) -> Response:
        """GET a maintenance configuration."""
        refused = self._check_api_version(
            request, MAINTENANCE_READ_API_VERSIONS, "maintenanceConfigurations"
        )
        if refused:
            return refused
        sub, rg, name = request.params["sub"], request.params["rg"], request.params["mc"]
        configuration = self.model.find_configuration(
            f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Maintenance/maintenanceConfigurations/{name}"
        )
        if configuration is None:
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Maintenance/maintenanceConfigurations/{name}' under "
                f"resource group '{rg}' was not found.",
            )
        return Response(200, self.model.configuration_document(configuration))

    def _find_run(self, request: Request) -> tuple[Any, Response | None]:
        mc_id, name = request.params["mcid"], request.params["name"]
        parts = parse_resource_id(mc_id)
        refused = self._check_scope(parts.subscription_id, parts.resource_group)
        if refused:
            return None, refused
        if self.model.find_configuration(mc_id) is None:
            return None, arm_error(
                404,
                "ResourceNotFound",
                "The Resource "
                f"'Microsoft.Maintenance/maintenanceConfigurations/{parts.name}' under "
                f"resource group '{parts.resource_group}' was not found.",
            )
        run = self.model.find_run(f"{mc_id}/providers/Microsoft.Maintenance/applyUpdates/{name}")
        if run is None:
            # Undocumented in Azure; the fake answers ARM's usual not-found shape.
            return None, arm_error(
                404,
                "NotFound",
                f"Maintenance run '{name}' of configuration '{parts.name}' was not found.",
            )
        return run, None

    def apply_update_get(self, request: Request) -> Response:
        """GET a run (ApplyUpdates_Get on the configuration)."""
        refused = self._check_api_version(request, MAINTENANCE_READ_API_VERSIONS, "applyUpdates")
        if refused:
            return refused
        run, refused = self._find_run(request)
        if refused:
            return refused
        return Response(200, self.model.run_document(run))

    def apply_update_put(self, request: Request) -> Response:
        """PUT ``{"properties": {"status": "Cancel"}}`` on a run (CreateOrUpdateOrCancel)."""
        refused = self._check_api_version(request, MAINTENANCE_CANCEL_API_VERSIONS, "applyUpdates")
        if refused:
            return refused
        body = request.body if isinstance(request.body, dict) else {}
        properties = next((v for k, v in body.items() if k.lower() == "properties"), None)
        status = None
        if isinstance(properties, dict):
            status = next((v for k, v in properties.items() if k.lower() == "status"), None)
        if not isinstance(status, str) or status.lower() != "cancel":
            return arm_error(
                400,
                "BadRequest",
                "The fake Maintenance RP only supports cancelling a scheduled run with "
                '{"properties": {"status": "Cancel"}}.',
            )
        run, refused = self._find_run(request)
        if refused:
            return refused
        policy = self.faults.cancel_policy
        if policy.refuse:
            return arm_error(
                int(policy.refuse.get("status", 409)),
                str(policy.refuse.get("code", "Conflict")),
                str(policy.refuse.get("message", "The maintenance run cannot be cancelled.")),
            )
        now = self.model.now()
        if run.cancelled_at is not None:
            if policy.already_cancelled == "conflict":
                return arm_error(
                    409,
                    "MaintenanceRunAlreadyCancelled",
                    f"Maintenance run '{run.name}' is already cancelled.",
                )
            return Response(200, self.model.run_document(run))
        if run.final_status is not None:
            return arm_error(
                policy.too_late_status,
                "CancellationNotAllowed",
                f"Maintenance run '{run.name}' has already finished with status "
                f"'{run.final_status}'.",
            )
        if policy.enforce_cutoff and now > run.cancellation_cutoff:
            return arm_error(
                policy.too_late_status,
                "CancellationNotAllowed",
                f"Maintenance run '{run.name}' cannot be cancelled after the cancellation cut-off "
                f"{run.cancellation_cutoff.isoformat()} "
                f"(scheduled start {run.scheduled_start.isoformat()}).",
            )
        self.model.cancel_run(run.correlation_id, by="user")
        return self._accepted_cancel(run, policy)

    def _accepted_cancel(self, run: MaintenanceRun, policy: CancelPolicy) -> Response:
        """The answer to an accepted cancel, as the scenario plays it (default: the spec's
        example, 202 with ``name``/``resourceId`` the configuration's name and "Cancel")."""
        if policy.answer_body == "none" or policy.answer_status == 204:
            return Response(policy.answer_status)
        if policy.answer_body == "run":
            document = self.model.run_document(run)
            document["properties"]["status"] = policy.answer_word
            return Response(policy.answer_status, document)
        configuration_name = run.configuration_id.rstrip("/").rsplit("/", 1)[-1]
        return Response(
            policy.answer_status,
            {
                "id": run.correlation_id.lower(),
                "name": configuration_name,
                "type": "Microsoft.Maintenance/applyUpdates",
                "properties": {"status": policy.answer_word, "resourceId": configuration_name},
            },
        )

    # -- Log Analytics -------------------------------------------------------------------------
    def la_query(self, request: Request) -> Response:
        """POST /v1/workspaces/{id}/query: KQL over the Heartbeat table."""
        workspace_id = request.params["ws"]

        def la_error(
            status: int, code: str, message: str, inner: dict[str, Any] | None = None
        ) -> Response:
            error: dict[str, Any] = {
                "message": message,
                "code": code,
                "correlationId": str(uuid.uuid4()),
            }
            if inner:
                error["innererror"] = inner
            return Response(status, {"error": error})

        if not self.model.has_workspace(workspace_id):
            return la_error(
                404, "WorkspaceNotFoundError", f"The workspace '{workspace_id}' could not be found."
            )
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return la_error(
                400,
                "BadArgumentError",
                "The request had some invalid properties",
                {"code": "QueryValidationError", "message": "'query' is required."},
            )
        now = self.model.now()
        window: tuple[dt.datetime, dt.datetime] | None = None
        if body.get("timespan"):
            try:
                window = parse_timespan(str(body["timespan"]), now)
            except ValueError as error:
                return la_error(
                    400,
                    "BadArgumentError",
                    "The request had some invalid properties",
                    {"code": "InvalidTimespan", "message": str(error)},
                )
        heartbeat = self.model.heartbeat_table(workspace_id)
        if window is not None:
            start, end = window
            heartbeat = Table(
                heartbeat.name,
                heartbeat.columns,
                [r for r in heartbeat.rows if start <= r["TimeGenerated"] <= end],
            )
        tables = {"Heartbeat": heartbeat}
        try:
            # Log Analytics table names are case-sensitive, unlike Resource Graph's.
            result = run_query(body["query"], tables.get, now=now)
        except KqlError as error:
            kind = "SyntaxError" if isinstance(error, KqlSyntaxError) else "SemanticError"
            return la_error(
                400,
                "BadArgumentError",
                "The request had some invalid properties",
                {
                    "code": kind,
                    "message": "A recognition error occurred in the query."
                    if kind == "SyntaxError"
                    else "A semantic error occurred.",
                    "innererror": {
                        "code": "SYN0002" if kind == "SyntaxError" else "SEM0100",
                        "message": error.message,
                        "pos": error.position,
                        "token": error.token,
                    },
                },
            )
        rows = result.rows
        partial = self.faults.log_analytics_partial
        if partial is not None and partial.keep_rows is not None:
            rows = rows[: partial.keep_rows]
        columns = [
            {"name": c, "type": column_type(r.get(c) for r in result.rows)} for c in result.columns
        ]
        document: dict[str, Any] = {
            "tables": [
                {
                    "name": "PrimaryResult",
                    "columns": columns,
                    "rows": [[json_ready(r.get(c)) for c in result.columns] for r in rows],
                }
            ]
        }
        if partial is not None:
            document["error"] = {
                "code": partial.code,
                "message": partial.message,
                "details": [
                    {
                        "code": "EngineError",
                        "message": "Something went wrong processing your query on the server.",
                        "innererror": {
                            "code": "-2133196797",
                            "message": "Partial query failure injected by the fake Azure.",
                            "severity": 2,
                            "severityName": "Error",
                        },
                    }
                ],
            }
        return Response(200, document)
