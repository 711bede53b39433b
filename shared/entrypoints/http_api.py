"""The operator API (auth level FUNCTION, never anonymous): cancel a run, list runs, show one,
list the events the app refused, and the OpenAPI document. Every error is
application/problem+json, from one table."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared import bootstrap
from shared.domain.errors import (
    AzureCallFailed,
    LedgerConflict,
    LedgerUnavailable,
    StorageUnavailable,
)
from shared.domain.events import InvalidEvent, parse_time
from shared.domain.ids import InvalidId, RunId, describe_for_log, parse_run_name
from shared.domain.json_input import UnreadableJson, load_json
from shared.domain.vocabulary import CancelSource, CancelVerdict

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.services import cancellation

# The use cases (shared.services) are imported where first used, not when the worker indexes
# the functions: a cold start pays only for what indexing needs.

log = logging.getLogger(__name__)

bp = func.Blueprint()

JSON = "application/json"
PROBLEM = "application/problem+json"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
MAX_BODY_BYTES = 16 * 1024
MAX_REASON = 500
MAX_REFUSED_PAGE = 200
OID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
NAME_CLAIMS = (
    "name",
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
)


class BadRequest(ValueError):
    """The request itself is wrong (400)."""


class Forbidden(Exception):
    """The caller may not do this (403)."""


@cache
def errors() -> tuple[tuple[type[BaseException], HTTPStatus, str], ...]:
    """One table: domain error → HTTP status and title."""
    from shared.config import ConfigError
    from shared.services import run_queries

    return (
        (BadRequest, HTTPStatus.BAD_REQUEST, "Bad request"),
        (InvalidId, HTTPStatus.BAD_REQUEST, "Invalid id"),
        (run_queries.InvalidQuery, HTTPStatus.BAD_REQUEST, "Invalid query"),
        (Forbidden, HTTPStatus.FORBIDDEN, "Not allowed"),
        (LedgerConflict, HTTPStatus.CONFLICT, "The run kept changing; try again"),
        (AzureCallFailed, HTTPStatus.BAD_GATEWAY, "Azure call failed"),
        (LedgerUnavailable, HTTPStatus.SERVICE_UNAVAILABLE, "Run ledger unavailable"),
        (StorageUnavailable, HTTPStatus.SERVICE_UNAVAILABLE, "Storage unavailable"),
        (ConfigError, HTTPStatus.INTERNAL_SERVER_ERROR, "The app is misconfigured"),
    )


def problem(status: HTTPStatus, title: str, detail: str, **extra: Any) -> func.HttpResponse:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": title, "status": int(status), "detail": detail, **extra}
    return func.HttpResponse(json.dumps(body), status_code=int(status), mimetype=PROBLEM)


def answer(document: Mapping[str, Any], status: HTTPStatus = HTTPStatus.OK) -> func.HttpResponse:
    """A JSON answer."""
    return func.HttpResponse(
        json.dumps(document, default=str), status_code=int(status), mimetype=JSON
    )


def _guarded(
    handler: Callable[[func.HttpRequest], func.HttpResponse], request: func.HttpRequest
) -> func.HttpResponse:
    try:
        return handler(request)
    except Exception as error:
        for kind, status, title in errors():
            if isinstance(error, kind):
                if status >= 500:
                    log.error(
                        "%s %s failed: %s", request.method, _without_query(request.url), error
                    )
                return problem(status, title, str(error))
        log.exception("%s %s failed unexpectedly", request.method, _without_query(request.url))
        return problem(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "Unexpected error",
            "the request failed; the function logs have the details",
        )


def _without_query(url: str) -> str:
    """A request URL fit for a log line: the query may carry a key (`?code=`)."""
    return url.split("?", 1)[0].split("#", 1)[0]


# POST /api/runs/cancel ------------------------------------------------------------------


@bp.function_name("cancel_run")
@bp.route(route="runs/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
    """Cancel a run inside its window; explain the answer."""
    return _guarded(_cancel, req)


def cancel_for_console(
    req: func.HttpRequest, correlation_id: str, reason: str, dry_run: bool
) -> func.HttpResponse:
    """POST /api/runs/cancel's own handling and answer for a cancel that came another way (the
    console's form): the same caller checks, window rules, audit and answer."""
    fields = {"correlationId": correlation_id, "reason": reason, "dryRun": dry_run}
    return _guarded(lambda request: _cancel_fields(request, fields), req)


def _cancel(req: func.HttpRequest) -> func.HttpResponse:
    return _cancel_fields(req, _json_body(req))


def _cancel_fields(req: func.HttpRequest, body: Mapping[str, Any]) -> func.HttpResponse:
    from shared.services import cancellation, run_queries

    correlation_id = body.get("correlationId")
    if not isinstance(correlation_id, str):
        raise BadRequest("correlationId (string) is required")
    run_id = RunId.parse(correlation_id)
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        raise BadRequest(f"reason must be a printable string of at most {MAX_REASON} characters")
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dryRun must be true or false")
    services = bootstrap.container()
    caller = _caller(req, services.settings)
    run_queries.resolve_for_cancel(run_id, services.ledger, services.resource_graph, services.clock)
    result = cancellation.cancel_run(
        run_id,
        services.orchestrator.cancel_context(),
        requested_by=caller,
        reason=reason or "(no reason given)",
        source=CancelSource.USER,
        dry_run=dry_run,
    )
    return _cancel_answer(result)


def _cancel_answer(result: cancellation.CancelAnswer) -> func.HttpResponse:
    verdict = CancelVerdict
    facts: dict[str, Any] = {
        "correlationId": result.run_id.text,
        "outcome": result.verdict.value,
        "now": result.now.isoformat(),
        "windowOpensAt": result.window.opens_at.isoformat(),
        "windowClosesAt": result.window.closes_at.isoformat(),
        "windowClosesBecause": result.window.closes_because,
        "runStatus": result.run_status,
        "platformStatus": result.platform_status,
    }
    if result.verdict.accepted or result.verdict in (
        verdict.ALREADY_CANCELLED,
        verdict.WOULD_CANCEL,
    ):
        return answer({**facts, "detail": result.explanation})
    if result.verdict is verdict.UNCONFIRMED:
        return problem(
            HTTPStatus.BAD_GATEWAY,
            "Azure's answer to the cancel was lost",
            result.explanation,
            **facts,
        )
    if result.verdict is verdict.REFUSED_BY_AZURE:
        extra = {
            **facts,
            "serviceCode": result.service_code,
            "serviceMessage": result.service_message,
        }
        if result.service_status == HTTPStatus.NOT_FOUND:
            return problem(
                HTTPStatus.NOT_FOUND, "The run does not exist in Azure", result.explanation, **extra
            )
        return problem(
            HTTPStatus.BAD_GATEWAY, "Azure refused the cancel", result.explanation, **extra
        )
    titles = {
        verdict.TOO_EARLY: "Too early to cancel",
        verdict.TOO_LATE: "Too late to cancel",
        verdict.NOT_CANCELLABLE: "The run cannot be cancelled",
        verdict.IN_FLIGHT: "A cancel is already being sent",
    }
    return problem(
        HTTPStatus.CONFLICT,
        titles.get(result.verdict, "Cannot cancel"),
        result.explanation,
        **facts,
    )


def _json_body(req: func.HttpRequest) -> dict[str, Any]:
    raw = req.get_body() or b""
    try:
        body = load_json(raw, max_bytes=MAX_BODY_BYTES)
    except UnreadableJson as e:
        raise BadRequest(f"the body is not JSON this API reads: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _caller(req: func.HttpRequest, settings: Settings) -> str:
    """Who is asking. The x-ms-client-principal* headers are believed only when the platform
    says App Service authentication is on: then it has stripped any a client sent and set its
    own. Otherwise anyone can write them, so with an allow-list set every cancel is refused."""
    allowed = settings.cancel_allowed_callers
    broken = settings.disabled("CANCEL_ALLOWED_CALLERS")
    if broken is not None:
        raise Forbidden(f"{broken.describe()}: every cancel is refused")
    if not settings.platform_authentication:
        if allowed is not None:
            raise Forbidden(
                "CANCEL_ALLOWED_CALLERS is set but App Service authentication is off "
                "(WEBSITE_AUTH_ENABLED is not True), so the caller cannot be identified and "
                "every cancel is refused; turn on App Service authentication (see the README)"
            )
        return "function key (App Service authentication off)"
    oid, name = _platform_principal(req)
    if allowed is not None and (oid is None or oid.lower() not in allowed):
        if oid is None:
            raise Forbidden(
                "the request carries no signed-in caller; send a Microsoft Entra ID bearer "
                "token for the app as well as the function key"
            )
        raise Forbidden("the caller's object id is not in CANCEL_ALLOWED_CALLERS")
    if oid is None:
        return "function key (no signed-in caller)"
    return describe_for_log(f"{name or 'unknown'} ({oid})").strip("'\"")


def _platform_principal(req: func.HttpRequest) -> tuple[str | None, str | None]:
    """(object id, name) from the headers App Service authentication set."""
    oid, name = None, None
    encoded = req.headers.get("x-ms-client-principal")
    if encoded:
        try:
            principal = load_json(
                base64.b64decode(encoded, validate=True), max_bytes=MAX_BODY_BYTES
            )
            claims = {c.get("typ"): c.get("val") for c in principal.get("claims", [])}
        except (ValueError, binascii.Error, AttributeError, TypeError) as e:
            raise BadRequest("x-ms-client-principal is not a principal document") from e
        oid = next((str(claims[c]) for c in OID_CLAIMS if claims.get(c)), None)
        name = next((str(claims[c]) for c in NAME_CLAIMS if claims.get(c)), None)
    oid = oid or req.headers.get("x-ms-client-principal-id")
    name = name or req.headers.get("x-ms-client-principal-name")
    return oid, name


# GET /api/runs and GET /api/runs/{configuration}/{runName} --------------------------------


@bp.function_name("list_runs")
@bp.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Runs known to the ledger, filtered and paged."""
    return _guarded(_list, req)


def _list(req: func.HttpRequest) -> func.HttpResponse:
    from shared.services import run_queries

    params = req.params
    try:
        top = int(params.get("top", "50"))
    except ValueError as e:
        raise BadRequest("top must be a whole number") from e
    wanted = run_queries.RunFilter(
        configuration=params.get("configuration") or None,
        status=params.get("status") or None,
        start_from=_time_param(params, "from"),
        start_to=_time_param(params, "to"),
    )
    services = bootstrap.container()
    page = run_queries.list_runs(services.ledger, wanted, top, params.get("continuationToken"))
    return answer({"runs": page.runs, "continuationToken": page.next_token})


def _time_param(params: Mapping[str, str], name: str) -> datetime | None:
    value = params.get(name)
    if not value:
        return None
    try:
        return parse_time(value, name)
    except InvalidEvent as e:
        raise BadRequest(f"{name} is not an ISO 8601 time") from e


@bp.function_name("get_run")
@bp.route(
    route="runs/{configuration}/{runName}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """One run's report: timeline, machines, actions, gate, cancel and errors."""
    return _guarded(_get, req)


def _get(req: func.HttpRequest) -> func.HttpResponse:
    from shared.services import run_queries

    configuration = req.route_params.get("configuration", "")
    run_name = req.route_params.get("runName", "")
    parse_run_name(run_name)
    services = bootstrap.container()
    found = run_queries.find_runs(
        services.ledger,
        configuration,
        run_name,
        req.params.get("subscriptionId"),
        req.params.get("resourceGroup"),
    )
    if not found:
        return problem(
            HTTPStatus.NOT_FOUND,
            "Run not found",
            f"the ledger has no run {run_name} of a configuration named "
            f"{describe_for_log(configuration)}",
        )
    if len(found) > 1:
        return problem(
            HTTPStatus.CONFLICT,
            "Several runs match",
            "configurations with this name exist in several resource groups; add "
            "subscriptionId and resourceGroup",
            matches=[r.run_id.text for r in found],
        )
    return answer(run_queries.run_document(found[0], services.ledger, services.reports))


# GET /api/events/refused -------------------------------------------------------------------


@bp.function_name("list_refused_events")
@bp.route(route="events/refused", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_refused_events(req: func.HttpRequest) -> func.HttpResponse:
    """Maintenance events the app refused (newest first), with the reason for each."""
    return _guarded(_list_refused, req)


def _list_refused(req: func.HttpRequest) -> func.HttpResponse:
    from shared.services.intake import refusal_document

    raw = req.params.get("top", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REFUSED_PAGE:
        raise BadRequest(f"top must be a whole number from 1 to {MAX_REFUSED_PAGE}")
    services = bootstrap.container()
    refused = services.ledger.list_refused_events(int(raw))
    return answer({"refusedEvents": [refusal_document(r) for r in refused]})


# GET /api/openapi.json ---------------------------------------------------------------------


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3 document of this API."""
    return func.HttpResponse(OPENAPI_PATH.read_bytes(), status_code=200, mimetype=JSON)
