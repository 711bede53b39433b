"""Log Analytics: POST /v1/workspaces/{id}/query over the Heartbeat table."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from .kql_syntax import parse_datetime_literal
from .query_engine import KqlError, KqlSyntaxError, Table, column_type, json_ready, run_query
from .service_base import Request, Response, Route, ServiceBase, route

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


class LogAnalyticsRoutes(ServiceBase):
    """Log Analytics: POST /v1/workspaces/{id}/query over the Heartbeat table."""

    def log_analytics_routes(self) -> list[Route]:
        """This service's routes."""
        return [
            route(
                "POST",
                r"/v1/workspaces/(?P<ws>[^/]+)/query",
                "loganalytics.query",
                self.la_query,
                auth="loganalytics",
            ),
        ]

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
