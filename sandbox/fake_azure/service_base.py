"""ARM's request and answer shapes, and the checks every fake Azure service shares."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .faults import FaultPlan
from .identity import TokenGrant, TokenStore
from .model import AzureModel
from .request_log import RequestLog

SUB = r"(?P<sub>[^/]+)"
RG = r"(?P<rg>[^/]+)"


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


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def hhmmss(seconds: float) -> str:
    whole = max(round(seconds), 0)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def route(
    method: str,
    pattern: str,
    endpoint: str,
    handler: Callable[[Request], Response],
    auth: str | None = "arm",
) -> Route:
    """A route; Azure matches segments (resourceGroups, Microsoft.Compute) in any case."""
    return Route(method, re.compile(f"^{pattern}/?$", re.IGNORECASE), endpoint, handler, auth)


class ServiceBase:
    """What every service's handlers share: the model, faults, tokens, and ARM's checks."""

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

    @staticmethod
    def _subscription_of(request: Request) -> str:
        parts = request.path.strip("/").split("/")
        return parts[1] if len(parts) > 1 and parts[0].lower() == "subscriptions" else ""
