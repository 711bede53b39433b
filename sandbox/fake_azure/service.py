"""Request handling of the fake Azure: routes, auth, faults and the Azure-shaped answers.

This module knows nothing about sockets; :mod:`sandbox.fake_azure.server` feeds it parsed
requests. Paths, api-versions, status codes, headers and JSON shapes follow what the Azure
services answer (see the package README for what is modelled and what is invented).

One mixin per Azure service (compute_routes, maintenance_routes, resource_graph_routes,
log_analytics_routes, identity_routes) adds its handlers and routes; throttling holds the
buckets and injected faults; service_base the shapes and checks they share.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import cached_property

from .compute_routes import ComputeRoutes
from .faults import COMPUTE_UPDATE_VM_ENDPOINTS
from .identity_routes import IdentityRoutes
from .log_analytics_routes import LogAnalyticsRoutes
from .maintenance_routes import MaintenanceRoutes
from .request_log import RecordedRequest, redact_headers
from .resource_graph_routes import ResourceGraphRoutes
from .service_base import Request, Response, Route, arm_error
from .throttling import Throttling

__all__ = ["FakeAzureService", "Request", "Response"]

log = logging.getLogger(__name__)


class FakeAzureService(
    IdentityRoutes,
    ResourceGraphRoutes,
    ComputeRoutes,
    MaintenanceRoutes,
    LogAnalyticsRoutes,
    Throttling,
):
    """Routes requests to handlers and applies auth, faults, throttles and the request log."""

    # -- routing -------------------------------------------------------------------------------
    @cached_property
    def routes(self) -> list[Route]:
        """Every service's routes; the order decides nothing (patterns do not overlap)."""
        return [
            *self.identity_routes(),
            *self.resource_graph_routes(),
            *self.compute_routes(),
            *self.maintenance_routes(),
            *self.log_analytics_routes(),
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
        limit_headers: dict[str, str] = {}
        refused = self._admit(request, route, limit_headers)
        if refused is not None:
            return refused
        rule = self.faults.pick_error(route.endpoint, request.method, request.path)
        if rule is not None and not rule.after_applying:
            return _with_headers(
                self._injected_error(route.endpoint, rule, request), request, limit_headers
            )
        if route.endpoint in COMPUTE_UPDATE_VM_ENDPOINTS:
            subscription = request.params.get("sub") or self._subscription_of(request)
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
            return _with_headers(lost_answer, request, limit_headers)
        _with_headers(response, request, limit_headers)
        lost = (
            self.faults.pick_lost_answer(route.endpoint, request.path)
            if response.status < 400
            else None
        )
        return response if lost is None else self._lost_answer(lost)

    def _admit(
        self, request: Request, route: Route, limit_headers: dict[str, str]
    ) -> Response | None:
        """Latency, authentication, then ARM's and Resource Graph's budgets: a refusal or None."""
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
        subscription = request.params.get("sub") or self._subscription_of(request)
        if subscription:
            # ARM throttles before the request reaches the resource provider.
            return self._spend_arm_budget(request, subscription, limit_headers)
        return None

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


def _with_headers(response: Response, request: Request, limit_headers: dict[str, str]) -> Response:
    """The budgets' headers on an answer, without overriding the ones it set itself."""
    for name, value in {**limit_headers, **request.quota_headers}.items():
        response.headers.setdefault(name, value)
    return response
