"""The operator API, called with real func.HttpRequest objects; the ports behind it are our
in-memory fakes (the same API runs end to end over HTTP in tests/e2e)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from shared import bootstrap
from shared.config import Settings
from shared.domain.errors import AzureCallFailed, LedgerUnavailable
from shared.domain.ids import RunId
from shared.domain.platform import PlatformRun
from shared.domain.runs import RefusedEvent, Run, RunStatus
from shared.entrypoints.http_api import (
    cancel_run,
    get_run,
    list_refused_events,
    list_runs,
    openapi,
)
from tests.builders import CORRELATION_ID, PRE, START, FixedClock, InMemoryRunLedger
from tests.fakes import FakeCanceller, FakeGraph, FakeReports, ScheduledQueue
from tests.unit.test_orchestration import World

RUN = RunId.parse(CORRELATION_ID)
OPS_OID = "6a0c3a43-1b7e-4a39-9e2b-0c6f0f1b2a3d"


class Api:
    def __init__(self, **settings: str) -> None:
        self.clock = FixedClock(START - timedelta(minutes=30))
        self.ledger = InMemoryRunLedger()
        self.graph = FakeGraph()
        self.canceller = FakeCanceller()
        self.queue = ScheduledQueue(self.clock)
        self.reports = FakeReports()
        env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", **settings}
        container = bootstrap.Container(settings=Settings.from_environ(env), clock=self.clock)
        for name, adapter in (
            ("ledger", self.ledger),
            ("resource_graph", self.graph),
            ("maintenance", self.canceller),
            ("task_queue", self.queue),
            ("reports", self.reports),
        ):
            container.built[name] = adapter
        bootstrap.use(container)

    def cancel(self, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = func.HttpRequest(
            "POST",
            "http://localhost/api/runs/cancel",
            body=raw,
            headers={"content-type": "application/json", **(headers or {})},
        )
        response: func.HttpResponse = cancel_run(request)
        return response


@pytest.fixture
def api() -> Iterator[Api]:
    yield Api()
    bootstrap.use(None)


def document(response: func.HttpResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.get_body())
    return body


def assert_problem(response: func.HttpResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = document(response)
    assert body["status"] == status
    assert body["title"]
    return body


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ((202, "Cancel"), "CancelRequested"),  # the REST spec's own example
        ((204, None), "CancelRequested"),
        ((200, "Cancelled"), "Cancelled"),
        ((201, "Canceled"), "Cancelled"),
    ],
)
def test_cancel_inside_the_window_calls_azure_once(
    api: Api, answer: tuple[int, str | None], outcome: str
) -> None:
    api.canceller.answer = answer
    response = api.cancel({"correlationId": CORRELATION_ID, "reason": "bad KB"})
    assert response.status_code == 200
    body = document(response)
    assert body["outcome"] == outcome
    assert body["runStatus"] == "Cancelled"
    assert body["windowClosesAt"] == "2026-12-01T02:49:00+00:00"
    assert api.canceller.cancelled == [RUN.key]
    [audit] = api.ledger.cancels
    assert audit.reason == "bad KB"
    assert audit.requested_by.startswith("function key")


def test_a_repeated_cancel_is_200_without_a_second_call(api: Api) -> None:
    api.cancel({"correlationId": CORRELATION_ID})
    again = api.cancel({"correlationId": CORRELATION_ID})
    assert again.status_code == 200
    assert document(again)["outcome"] == "AlreadyCancelled"
    assert api.canceller.cancelled == [RUN.key]


@pytest.mark.parametrize(
    ("minutes_before", "title"), [(41, "Too early"), (10, "Too late"), (11, "Too late")]
)
def test_outside_the_window_is_409_with_the_bounds_and_now(
    api: Api, minutes_before: int, title: str
) -> None:
    api.clock.current = START - timedelta(minutes=minutes_before)
    body = assert_problem(api.cancel({"correlationId": CORRELATION_ID}), 409)
    assert body["title"].startswith(title)
    assert body["windowOpensAt"] == "2026-12-01T02:20:00+00:00"
    assert body["windowClosesAt"] == "2026-12-01T02:49:00+00:00"
    assert body["now"] == api.clock.now().isoformat()
    assert api.canceller.cancelled == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        {"reason": "x"},
        {"correlationId": 5},
        {"correlationId": CORRELATION_ID + "'"},
        {"correlationId": "/subscriptions/x"},
        {"correlationId": CORRELATION_ID, "dryRun": "yes"},
        {"correlationId": CORRELATION_ID, "reason": "x" * 501},
        {"correlationId": CORRELATION_ID, "reason": "line\nbreak"},
    ],
)
def test_invalid_requests_are_400_problems(api: Api, body: Any) -> None:
    assert_problem(api.cancel(body), 400)
    assert api.canceller.cancelled == []
    assert api.ledger.cancels == []


def test_dry_run_says_what_would_happen(api: Api) -> None:
    response = api.cancel({"correlationId": CORRELATION_ID, "dryRun": True})
    assert document(response)["outcome"] == "WouldCancel"
    assert api.canceller.cancelled == []


def test_a_run_shown_in_progress_before_t_is_cancelled_inside_the_window(api: Api) -> None:
    api.graph.runs = [PlatformRun(RUN, "InProgress", None, None, None)]
    response = api.cancel({"correlationId": CORRELATION_ID})
    assert response.status_code == 200
    assert document(response)["outcome"] == "CancelRequested"
    assert api.canceller.cancelled == [RUN.key]


def test_a_run_under_way_after_t_is_409(api: Api) -> None:
    api.clock.current = START + timedelta(minutes=1)
    api.graph.runs = [PlatformRun(RUN, "InProgress", None, None, None)]
    body = assert_problem(api.cancel({"correlationId": CORRELATION_ID}), 409)
    assert body["title"] == "The run cannot be cancelled"
    assert "under way" in body["detail"]
    assert body["platformStatus"] == "InProgress"
    assert api.canceller.cancelled == []


def test_a_lost_answer_that_cannot_be_read_back_is_502_and_sends_nothing_more(
    api: Api,
) -> None:
    api.canceller.lose_answer = AzureCallFailed("Maintenance", None, None, "connection reset")
    api.canceller.fail_reads = True
    api.graph.runs = [PlatformRun(RUN, "Pending", None, None, None)]
    body = assert_problem(api.cancel({"correlationId": CORRELATION_ID}), 502)
    assert body["outcome"] == "CancelUnconfirmed"
    again = assert_problem(api.cancel({"correlationId": CORRELATION_ID}), 409)
    assert again["outcome"] == "CancelInFlight"
    assert api.canceller.puts == [RUN.key]


def test_azure_refusing_is_502_with_its_code_and_message(api: Api) -> None:
    api.canceller.refuse = ("Conflict", "The run cannot be cancelled now")
    body = assert_problem(api.cancel({"correlationId": CORRELATION_ID}), 502)
    assert body["serviceCode"] == "Conflict"
    assert body["serviceMessage"] == "The run cannot be cancelled now"


def principal(oid: str, name: str = "ops@contoso.example") -> str:
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "name", "val": name},
    ]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


AUTH_ON = {"WEBSITE_AUTH_ENABLED": "True"}


def forged_headers(oid: str) -> list[dict[str, str]]:
    """Every way a client could claim to be `oid` when nothing in front checks it."""
    return [
        {"x-ms-client-principal-id": oid},
        {"x-ms-client-principal-id": oid, "x-ms-client-principal-name": "ops@contoso.example"},
        {"x-ms-client-principal-id": oid, "x-ms-client-principal-idp": "aad"},
        {"x-ms-client-principal": principal(oid)},
        {"x-ms-client-principal": principal(oid), "x-ms-client-principal-id": oid},
        {"x-ms-client-principal": "not base64 at all!"},
        {"x-ms-client-principal": base64.b64encode(b"[" * 5000).decode()},
        {"X-MS-CLIENT-PRINCIPAL-ID": oid.upper()},
    ]


def test_the_callers_identity_goes_into_the_audit_when_the_platform_authenticates() -> None:
    api = Api(**AUTH_ON)
    try:
        api.cancel(
            {"correlationId": CORRELATION_ID, "reason": "r"},
            {"x-ms-client-principal": principal(OPS_OID)},
        )
        [audit] = api.ledger.cancels
        assert OPS_OID in audit.requested_by
        assert "ops@contoso.example" in audit.requested_by
    finally:
        bootstrap.use(None)


def test_principal_headers_are_ignored_for_the_audit_when_authentication_is_off(api: Api) -> None:
    api.cancel(
        {"correlationId": CORRELATION_ID, "reason": "r"},
        {"x-ms-client-principal": principal(OPS_OID), "x-ms-client-principal-id": OPS_OID},
    )
    [audit] = api.ledger.cancels
    assert OPS_OID not in audit.requested_by
    assert audit.requested_by == "function key (App Service authentication off)"


def test_the_allow_list_refuses_other_callers_with_403() -> None:
    api = Api(CANCEL_ALLOWED_CALLERS=OPS_OID, **AUTH_ON)
    try:
        body = assert_problem(api.cancel({"correlationId": CORRELATION_ID}), 403)
        assert "no signed-in caller" in body["detail"]
        other = principal("11111111-2222-4333-8444-555555555555")
        assert_problem(
            api.cancel({"correlationId": CORRELATION_ID}, {"x-ms-client-principal": other}), 403
        )
        ok = api.cancel(
            {"correlationId": CORRELATION_ID}, {"x-ms-client-principal": principal(OPS_OID)}
        )
        assert ok.status_code == 200
    finally:
        bootstrap.use(None)


@pytest.mark.parametrize("auth_setting", [None, "False", "false", "0", "yes", "Enabled"])
def test_every_forged_principal_header_is_refused_when_the_platform_does_not_authenticate(
    auth_setting: str | None,
) -> None:
    settings = {"CANCEL_ALLOWED_CALLERS": OPS_OID}
    if auth_setting is not None:
        settings["WEBSITE_AUTH_ENABLED"] = auth_setting
    api = Api(**settings)
    try:
        for headers in forged_headers(OPS_OID):
            body = assert_problem(api.cancel({"correlationId": CORRELATION_ID}, headers), 403)
            assert "App Service authentication is off" in body["detail"], headers
            assert "WEBSITE_AUTH_ENABLED" in body["detail"]
        assert api.canceller.cancelled == []
        assert api.ledger.cancels == []
    finally:
        bootstrap.use(None)


def test_a_malformed_allow_list_refuses_every_cancel_and_says_which_setting() -> None:
    api = Api(CANCEL_ALLOWED_CALLERS="not-a-guid", **AUTH_ON)
    try:
        body = assert_problem(
            api.cancel(
                {"correlationId": CORRELATION_ID}, {"x-ms-client-principal": principal(OPS_OID)}
            ),
            403,
        )
        assert "CANCEL_ALLOWED_CALLERS" in body["detail"]
        assert api.canceller.cancelled == []
    finally:
        bootstrap.use(None)


@pytest.mark.parametrize(("failure", "status"), [(RuntimeError, 500), (LedgerUnavailable, 503)])
def test_a_5xx_is_logged_without_the_query_string_and_its_key(
    caplog: pytest.LogCaptureFixture, failure: type[Exception], status: int
) -> None:
    Api()
    try:
        request = func.HttpRequest(
            "GET",
            "http://localhost/api/runs?code=SECRET-FUNCTION-KEY&top=5",
            body=b"",
            params={"top": "5", "code": "SECRET-FUNCTION-KEY"},
        )

        class Broken:
            def __getattr__(self, name: str) -> Any:
                raise failure("the ledger fell over")

        bootstrap.container().built["ledger"] = Broken()
        with caplog.at_level("DEBUG"):
            response = list_runs(request)
        assert response.status_code == status
        assert "/api/runs" in caplog.text
        assert "SECRET-FUNCTION-KEY" not in caplog.text
        assert "SECRET-FUNCTION-KEY" not in response.get_body().decode()
    finally:
        bootstrap.use(None)


def get(
    function: Any,
    url: str,
    params: dict[str, str] | None = None,
    route: dict[str, str] | None = None,
) -> func.HttpResponse:
    request = func.HttpRequest("GET", url, body=b"", params=params or {}, route_params=route or {})
    response: func.HttpResponse = function(request)
    return response


def test_runs_are_listed_filtered_and_paged() -> None:
    world = World()
    world.deliver(PRE)
    for days in range(1, 4):
        later = RunId.parse(CORRELATION_ID.replace("20261201", f"2026120{1 + days}"))
        world.ledger.save_run(Run.first_seen(later, START))
    api = Api()
    api.ledger.runs = world.ledger.runs
    try:
        first = document(get(list_runs, "http://localhost/api/runs", {"top": "3"}))
        assert [r["runName"][:8] for r in first["runs"]] == ["20261204", "20261203", "20261202"]
        rest = document(
            get(
                list_runs,
                "http://localhost/api/runs",
                {"top": "3", "continuationToken": first["continuationToken"]},
            )
        )
        assert [r["runName"] for r in rest["runs"]] == ["20261201030000"]
        assert rest["continuationToken"] is None
        pre = document(get(list_runs, "http://localhost/api/runs", {"status": "PreEventReceived"}))
        assert [r["runName"] for r in pre["runs"]] == ["20261201030000"]
        window = document(
            get(
                list_runs,
                "http://localhost/api/runs",
                {"from": "2026-12-02T00:00:00Z", "to": "2026-12-03T00:00:00Z"},
            )
        )
        assert [r["runName"] for r in window["runs"]] == ["20261202030000"]
        for bad in ({"top": "0"}, {"top": "x"}, {"continuationToken": "!!"}, {"from": "yesterday"}):
            assert_problem(get(list_runs, "http://localhost/api/runs", bad), 400)
    finally:
        bootstrap.use(None)


def test_one_run_is_its_report_and_unknown_runs_are_404(api: Api) -> None:
    world = World()
    world.deliver(PRE)
    api.ledger.runs = world.ledger.runs
    found = get(
        get_run,
        "http://localhost/api/runs/weekly-linux/20261201030000",
        route={"configuration": "weekly-linux", "runName": "20261201030000"},
    )
    assert found.status_code == 200
    report = document(found)
    assert report["run"]["correlationId"] == CORRELATION_ID
    assert report["timeline"]["preEventReceivedAt"]
    assert_problem(
        get(
            get_run,
            "http://localhost/api/runs/weekly-linux/20261208030000",
            route={"configuration": "weekly-linux", "runName": "20261208030000"},
        ),
        404,
    )
    assert_problem(
        get(
            get_run,
            "http://localhost/api/runs/weekly-linux/2026",
            route={"configuration": "weekly-linux", "runName": "2026"},
        ),
        400,
    )


def test_the_openapi_document_is_served_and_lists_every_route() -> None:
    response = get(openapi, "http://localhost/api/openapi.json")
    spec = document(response)
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/runs/cancel",
        "/runs",
        "/runs/{configuration}/{runName}",
        "/events/refused",
        "/openapi.json",
    }


def test_refused_events_are_listed_newest_first_with_their_reason(api: Api) -> None:
    for minutes, reason in ((1, "first"), (2, "second"), (3, "third")):
        api.ledger.add_refused_event(
            RefusedEvent(
                refused_at=START + timedelta(minutes=minutes),
                channel="Event Grid (pre)",
                reason=reason,
                event_id=f"id-{minutes}",
                excerpt="{}",
            )
        )
    response = get(list_refused_events, "http://localhost/api/events/refused", {"top": "2"})
    assert response.status_code == 200
    refused = document(response)["refusedEvents"]
    assert [r["reason"] for r in refused] == ["third", "second"]
    assert refused[0] == {
        "id": "r3",
        "refusedAt": (START + timedelta(minutes=3)).isoformat(),
        "channel": "Event Grid (pre)",
        "reason": "third",
        "eventId": "id-3",
        "excerpt": "{}",
    }


@pytest.mark.parametrize("top", ["0", "201", "x", "-3", "1.5", ""])
def test_a_bad_page_size_for_refused_events_is_a_400_problem(api: Api, top: str) -> None:
    response = get(list_refused_events, "http://localhost/api/events/refused", {"top": top})
    assert "top" in assert_problem(response, 400)["detail"]


def test_the_cancel_window_comes_from_the_run_s_start_not_its_name(api: Api) -> None:
    # The run name reads 04:00 (the configuration's time zone); StartDateTime said 03:00 UTC.
    local = RunId.parse(CORRELATION_ID.replace("20261201030000", "20261201040000"))
    api.ledger.save_run(
        Run(
            run_id=local,
            status=RunStatus.PREPARED,
            created_at=START - timedelta(hours=1),
            updated_at=START - timedelta(hours=1),
            start=START,
        )
    )
    body = document(api.cancel({"correlationId": local.text}))
    # The fake answers as the spec's example does (202 "Cancel"): an accepted cancel.
    assert body["outcome"] == "CancelRequested", body
    assert body["windowOpensAt"] == "2026-12-01T02:20:00+00:00"
    assert body["windowClosesAt"] == "2026-12-01T02:49:00+00:00"


@pytest.mark.parametrize(
    "encoded",
    [
        "%%% not base64 %%%",
        base64.b64encode(b"[" * 5000).decode(),
        base64.b64encode(b'{"claims": 5}').decode(),
        base64.b64encode(b'{"claims": [{"typ": [1], "val": 2}]}').decode(),
        base64.b64encode(b"\xff\xfe not utf-8").decode(),
    ],
)
def test_a_malformed_principal_is_a_400_when_the_platform_authenticates(encoded: str) -> None:
    api = Api(CANCEL_ALLOWED_CALLERS=OPS_OID, **AUTH_ON)
    try:
        response = api.cancel({"correlationId": CORRELATION_ID}, {"x-ms-client-principal": encoded})
        assert_problem(response, 400)
        assert api.canceller.cancelled == []
    finally:
        bootstrap.use(None)
