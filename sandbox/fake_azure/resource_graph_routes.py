"""Resource Graph: POST /providers/Microsoft.ResourceGraph/resources, paged."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from .query_engine import KqlError, KqlSyntaxError, QueryResult, column_type, json_ready, run_query
from .service_base import Request, Response, Route, ServiceBase, arm_error, route

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
ARG_MAX_PAGE = 1000


class ResourceGraphRoutes(ServiceBase):
    """Resource Graph: POST /providers/Microsoft.ResourceGraph/resources, paged."""

    def resource_graph_routes(self) -> list[Route]:
        """This service's routes."""
        return [
            route(
                "POST", r"/providers/Microsoft\.ResourceGraph/resources", "arg", self.arg_resources
            ),
        ]

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
        refused = self._arg_bad_options(options, quota_headers)
        if refused:
            return refused
        query_text: str = body["query"]
        fingerprint = hashlib.sha256(
            json.dumps([query_text, sorted(s.lower() for s in subscriptions)]).encode()
        ).hexdigest()[:16]
        try:
            result = run_query(
                query_text,
                lambda name: self.model.arg_table(name, subscriptions or None),
                now=self.model.now(),
            )
        except KqlError as error:
            return self._arg_invalid_query(error, quota_headers)
        offset = 0
        if options.get("$skipToken"):
            decoded = self._decode_skip_token(str(options["$skipToken"]), fingerprint)
            if decoded is None:
                return self._arg_bad_request(
                    "The $skipToken is invalid or belongs to another query.",
                    quota_headers,
                    "InvalidSkipToken",
                )
            offset = decoded
        elif options.get("$skip") and not result.limited:  # ARG ignores $skip with take/limit
            offset = options["$skip"]
        page_size = min(options.get("$top") or ARG_MAX_PAGE, ARG_MAX_PAGE)
        return Response(
            200,
            self._arg_page(result, offset, page_size, options, fingerprint),
            quota_headers,
        )

    def _arg_bad_options(
        self, options: dict[str, Any], quota_headers: Mapping[str, str]
    ) -> Response | None:
        top, skip = options.get("$top"), options.get("$skip")
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
        return None

    def _arg_page(
        self,
        result: QueryResult,
        offset: int,
        page_size: int,
        options: dict[str, Any],
        fingerprint: str,
    ) -> dict[str, Any]:
        total = len(result.rows)
        page = result.rows[offset : offset + page_size]
        body: dict[str, Any] = {
            "totalRecords": total,
            "count": len(page),
            "data": self._arg_data(result, page, str(options.get("resultFormat") or "objectArray")),
            "facets": [],
            "resultTruncated": "false",
        }
        if offset + len(page) < total:
            if result.limited or self._only_dynamic_columns(result):
                # Documented: no $skipToken when the query has take/limit or only dynamic columns.
                body["resultTruncated"] = "true"
            else:
                body["$skipToken"] = self._encode_skip_token(offset + len(page), fingerprint)
        return body

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
