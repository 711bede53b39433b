"""HTTP triggers: match the route, check the key, build `func.HttpRequest`, send the response."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import azure.functions as func
from azure.functions.http import HttpResponseConverter

from sandbox.local_host.http_messages import HostRequest, HostResponse
from sandbox.local_host.http_routes import RouteTemplate
from sandbox.local_host.invocation import FunctionInvocationError, FunctionInvoker
from sandbox.local_host.keys import AuthLevel, HostKeys
from sandbox.local_host.registry import IndexedFunction, resolve_binding_expression

log = logging.getLogger(__name__)

HTTP_REASON = "This function was programmatically called via the host APIs."


class RouteConflict(ValueError):
    """Two HTTP functions claim the same route and method."""


@dataclass(frozen=True)
class HttpRoute:
    """An HTTP trigger as the router needs it."""

    function: IndexedFunction
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    auth_level: AuthLevel

    @classmethod
    def of(cls, function: IndexedFunction, environ: Mapping[str, str]) -> HttpRoute:
        """Read the trigger binding: route (default the function name), methods, auth level."""
        trigger = function.trigger
        route = resolve_binding_expression(
            str(trigger.get("route") or function.name), environ, f"{function.name} route"
        )
        methods = trigger.get("methods")
        return cls(
            function=function,
            template=RouteTemplate.parse(route),
            methods=frozenset(str(m).upper() for m in methods) if methods else None,
            auth_level=AuthLevel(str(trigger.get("authLevel", AuthLevel.FUNCTION)).upper()),
        )

    def accepts(self, method: str) -> bool:
        """Whether the route answers this HTTP method."""
        return self.methods is None or method.upper() in self.methods

    def describe(self, base_url: str, route_prefix: str) -> str:
        """`GET,POST http://.../api/route (function key)` for the start-up banner."""
        methods = ",".join(sorted(self.methods)) if self.methods else "ANY"
        path = "/".join(p for p in (route_prefix, self.template.template) if p)
        needs = {
            AuthLevel.ANONYMOUS: "anonymous",
            AuthLevel.FUNCTION: "function key",
            AuthLevel.ADMIN: "master key",
        }[self.auth_level]
        return f"[{methods}] {base_url}/{path} ({needs})"


class HttpTriggers:
    """Serves the app's HTTP-triggered functions below the route prefix."""

    def __init__(
        self, routes: Sequence[HttpRoute], keys: HostKeys, invoker: FunctionInvoker
    ) -> None:
        _refuse_conflicts(routes)
        self.routes = sorted(routes, key=lambda r: r.template.sort_key)
        self._keys = keys
        self._invoker = invoker

    def handle(self, request: HostRequest, route_path: str) -> HostResponse:
        """Answer a request whose path below the route prefix is `route_path`."""
        matched = self._match(request.method, route_path)
        if matched is None:
            return HostResponse.text(404, "No function matches this route and method.")
        route, route_params = matched
        if not self._keys.allows(route.auth_level, request.presented_key):
            return HostResponse.text(401, "Missing or wrong key (x-functions-key or ?code=).")
        http_request = func.HttpRequest(
            method=request.method.upper(),
            url=request.url,
            headers=request.header_map(),
            params=request.query_params(),
            route_params=route_params,
            body=request.body,
        )
        try:
            result = self._invoker.invoke(route.function, http_request, HTTP_REASON)
        except FunctionInvocationError:
            return HostResponse.text(500, "The function failed; the host log has the traceback.")
        return response_from(route.function.name, result)

    def _match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            if not route.accepts(method):
                continue
            values = route.template.match(path)
            if values is not None:
                return route, values
        return None


def response_from(function_name: str, result: Any) -> HostResponse:
    """Translate what the function returned, with the worker's own converter."""
    if result is None:
        # The function set no response: nothing to send back.
        return HostResponse(204)
    try:
        datum = HttpResponseConverter.encode(result, expected_type=None)
    except NotImplementedError:
        log.error(
            "Function %s returned %s; an HTTP function returns func.HttpResponse or str",
            function_name,
            type(result).__name__,
        )
        return HostResponse.text(500, "The function returned something that is not a response.")
    if datum.type == "string":
        body = str(datum.value).encode()
        return HostResponse(200, (("Content-Type", "text/plain; charset=utf-8"),), body)
    value = datum.value
    headers = [(str(name), str(header.value)) for name, header in value["headers"].items()]
    for cookie in value.get("cookies") or []:
        headers.extend(_set_cookie_headers(cookie))
    body = value["body"].value
    return HostResponse(
        int(value["status_code"].value),
        tuple(headers),
        body if isinstance(body, bytes) else str(body).encode(),
    )


def _set_cookie_headers(cookie: SimpleCookie) -> list[tuple[str, str]]:
    return [("Set-Cookie", morsel.OutputString()) for morsel in cookie.values()]


def _refuse_conflicts(routes: Sequence[HttpRoute]) -> None:
    seen: dict[tuple[str, ...], list[HttpRoute]] = {}
    for route in routes:
        # Parameter names do not tell routes apart; literals (any case) and constraints do.
        shape = tuple(
            re.sub(r"\{\*?\w+", "{", segment).lower()
            for segment in route.template.template.split("/")
        )
        for other in seen.get(shape, []):
            overlap = (
                route.methods is None or other.methods is None or route.methods & other.methods
            )
            if overlap:
                raise RouteConflict(
                    f"{route.function.name} and {other.function.name} both serve route "
                    f"{route.template.template!r}"
                )
        seen.setdefault(shape, []).append(route)
