"""The operator console's functions called with real func.HttpRequest objects; the ports behind
them are our in-memory fakes (the console runs in a real browser in tests/e2e)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import azure.functions as func
import pytest

from shared import bootstrap
from shared.domain.events import EnvelopeSchema, EventKind
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineAction,
    MachineRecord,
    NoteLevel,
    RefusedEvent,
    Run,
    RunNote,
    RunStatus,
)
from shared.domain.vocabulary import CancelOutcome, CancelSource, GateOutcome
from shared.entrypoints.console import (
    console_cancel,
    console_refused,
    console_report,
    console_run,
    console_runs,
    console_static,
)
from tests.builders import CORRELATION_ID, START
from tests.entrypoints.test_http_api import RUN, Api

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>&amp;'
KEY = "the-function-key"
TOKEN = "T" * 43
VM = (
    "/subscriptions/1b7a0c4e-5d2f-4e8a-9c31-0a6f2b7d9e10/resourceGroups/rg/providers/"
    "Microsoft.Compute/virtualMachines/vm-01"
)


@pytest.fixture
def api() -> Iterator[Api]:
    yield Api()
    bootstrap.use(None)


def get(function: object, path: str, **params: str) -> func.HttpResponse:
    query = urllib.parse.urlencode(params)
    request = func.HttpRequest(
        "GET", f"http://localhost/api/{path}?{query}", params=params, body=b"", headers={}
    )
    response: func.HttpResponse = function(request)  # type: ignore[operator]
    return response


def post_form(fields: dict[str, str], headers: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST",
        f"http://localhost/api/console/cancel?code={KEY}",
        params={"code": KEY},
        body=urllib.parse.urlencode(fields).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    response: func.HttpResponse = console_cancel(request)
    return response


def text(response: func.HttpResponse) -> str:
    return (response.get_body() or b"").decode()


def seed_hostile_run(api: Api) -> None:
    """A run where every string the ledger keeps carries markup."""
    at = START - timedelta(minutes=35)
    run = Run.first_seen(RUN, at)
    api.ledger.save_run(
        replace(
            run,
            status=RunStatus.PREPARED,
            end=START + timedelta(hours=2),
            pre_event_at=at,
            platform_status=HOSTILE,
            # Gate outcome and cancel source are enums: no text of anyone's can reach them.
            gate_outcome=GateOutcome.CANCEL_REFUSED,
            gate_detail=HOSTILE,
            cancel_source=CancelSource.UNKNOWN,
            post_event_status=HOSTILE,
        )
    )
    machine = MachineRecord.planned(RUN, VM + HOSTILE, at)
    machine = machine.moved_to(MachineAction.STARTING, at + timedelta(seconds=5), HOSTILE)
    api.ledger.add_machines(
        [
            replace(
                machine,
                prior_power_state=HOSTILE,
                last_power_state=HOSTILE,
                owner_run=HOSTILE,
                error_code=HOSTILE,
                error_message=HOSTILE,
            )
        ]
    )
    api.ledger.add_note(RunNote(RUN, at, NoteLevel.ERROR, HOSTILE, HOSTILE))
    api.ledger.add_cancel_request(
        CancelRequest(
            run_id=RUN,
            request_id="r1",
            requested_at=at,
            requested_by=HOSTILE,
            reason=HOSTILE,
            dry_run=False,
            outcome=CancelOutcome.REFUSED_RUN_STATE,
            window_opens_at=at,
            window_closes_at=at,
            detail=HOSTILE,
            service_code=HOSTILE,
            service_message=HOSTILE,
        )
    )
    api.ledger.record_event(
        EventRecord(
            run_id=RUN,
            kind=EventKind.PRE,
            event_id=HOSTILE,
            schema=EnvelopeSchema.EVENT_GRID,
            received_at=at,
            event_time=at,
            start=START,
            end=START + timedelta(hours=2),
            cancellation_cutoff=None,
            subscription_ids=(HOSTILE,),
            status=HOSTILE,
        ),
        api.ledger.find_run(RUN) or run,
    )


def assert_only_text(page: str) -> None:
    """No markup from the data: our one script tag, no img, no handler; the data escaped."""
    assert re.findall(r"<script\b[^>]*>", page) == [
        f'<script src="/api/console/static/console.js?code={KEY}" defer>'
    ]
    assert "<img" not in page
    assert "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_every_page_says_what_the_browser_may_run_and_embed(api: Api) -> None:
    response = get(console_runs, "console", code=KEY)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    for rule in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
        assert rule in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/api/console" in cookie


def test_links_carry_the_key_only_when_the_callers_url_did(api: Api) -> None:
    with_key = text(get(console_runs, "console", code=KEY))
    assert f'href="/api/console/refused?code={KEY}"' in with_key
    without = text(get(console_runs, "console"))
    assert 'href="/api/console/refused"' in without
    assert KEY not in without


def test_the_runs_page_counts_machines_and_marks_a_run_that_needs_attention(api: Api) -> None:
    seed_hostile_run(api)
    seeded = api.ledger.find_run(RUN)
    assert seeded is not None
    api.ledger.save_run(replace(seeded, pre_event_missed=True))
    api.ledger.add_refused_event(
        RefusedEvent(START, "Event Grid", "bad", None, f'{{"CorrelationId": "{CORRELATION_ID}"}}')
    )
    page = text(get(console_runs, "console", code=KEY))
    row = re.search(r'<tr class="run needs-attention".*?</tr>', page, re.S)
    assert row is not None
    assert "the pre event never came" in row.group(0)
    assert "1 error note(s)" in row.group(0)
    assert "1 refused event(s) name this run" in row.group(0)
    numbers = re.findall(r'<td class="num">(\d+)</td>', row.group(0))
    assert numbers == ["1", "1", "0", "0", "0", "0", "0"]
    assert "data-refresh-seconds" in page  # the run is under way
    assert_only_text(page)


def test_a_run_page_shows_every_ledger_string_as_text(api: Api) -> None:
    seed_hostile_run(api)
    response = get(console_run, "console/run", run=CORRELATION_ID, code=KEY)
    assert response.status_code == 200
    page = text(response)
    assert_only_text(page)
    assert '<svg class="timeline"' in page
    for mark in ("t-40", "pre-event", "start-batch-1", "t-15", "window-closes", "t", "end"):
        assert f'data-mark="{mark}"' in page


def test_the_refused_events_page_shows_what_came_as_text(api: Api) -> None:
    api.ledger.add_refused_event(RefusedEvent(START, HOSTILE, HOSTILE, HOSTILE, HOSTILE))
    page = text(get(console_refused, "console/refused", code=KEY))
    assert_only_text(page)
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4


def test_an_unknown_or_malformed_run_is_a_page_that_says_so(api: Api) -> None:
    missing = get(console_run, "console/run", run=CORRELATION_ID)
    assert missing.status_code == 404
    assert "Run not found" in text(missing)
    malformed = get(console_run, "console/run", run=HOSTILE, code=KEY)
    assert malformed.status_code == 400
    assert_only_text(text(malformed))


def test_the_report_downloads_as_a_json_attachment(api: Api) -> None:
    seed_hostile_run(api)
    response = get(console_report, "console/report", run=CORRELATION_ID)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="run-')


def test_only_the_consoles_own_files_are_served(api: Api) -> None:
    request = func.HttpRequest(
        "GET", "http://localhost/api/console/static/x", body=b"", route_params={"file": "x"}
    )
    assert console_static(request).status_code == 404
    request = func.HttpRequest(
        "GET",
        "http://localhost/api/console/static/console.js",
        body=b"",
        route_params={"file": "console.js"},
    )
    response = console_static(request)
    assert response.status_code == 200 and response.mimetype == "text/javascript"


def cancel_form(**changes: str) -> dict[str, str]:
    form = {
        "run": CORRELATION_ID,
        "intent": "cancel",
        "reason": "bad KB",
        "confirm": "yes",
        "csrf": TOKEN,
    }
    return {**form, **changes}


SAME_ORIGIN = {"Cookie": f"console_csrf={TOKEN}", "Sec-Fetch-Site": "same-origin"}


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        (cancel_form(), {}),
        (cancel_form(), {"Cookie": "console_csrf=" + "U" * 43}),
        (cancel_form(csrf=""), SAME_ORIGIN),
        (cancel_form(), {**SAME_ORIGIN, "Sec-Fetch-Site": "cross-site"}),
        (cancel_form(), {**SAME_ORIGIN, "Origin": "https://elsewhere.example"}),
        (cancel_form(), {**SAME_ORIGIN, "Origin": "null"}),
    ],
    ids=["no cookie", "other cookie", "no token", "cross-site", "other origin", "null origin"],
)
def test_a_cancel_failing_the_anti_forgery_check_never_reaches_azure(
    api: Api, form: dict[str, str], headers: dict[str, str]
) -> None:
    seed_hostile_run(api)
    response = post_form(form, headers)
    assert response.status_code == 403
    assert api.canceller.cancelled == []
    assert api.ledger.cancels[-1].reason == HOSTILE  # no new audit row either


def test_a_cancel_needs_a_reason_and_the_confirmation(api: Api) -> None:
    api.ledger.save_run(Run.first_seen(RUN, START - timedelta(minutes=35)))
    for form in (cancel_form(reason=""), cancel_form(confirm="")):
        response = post_form(form, SAME_ORIGIN)
        assert response.status_code == 400
    assert api.canceller.cancelled == []


def test_check_and_cancel_go_through_the_cancel_api_and_show_its_answer(api: Api) -> None:
    api.ledger.save_run(Run.first_seen(RUN, START - timedelta(minutes=35)))
    checked = text(
        post_form(
            cancel_form(intent="check", reason=""), {**SAME_ORIGIN, "Origin": "http://localhost"}
        )
    )
    assert 'data-outcome="WouldCancel"' in checked
    assert api.canceller.cancelled == []
    cancelled = post_form(cancel_form(reason="<b>bad</b> KB"), SAME_ORIGIN)
    assert cancelled.status_code == 200
    page = text(cancelled)
    outcome = re.search(
        r'id="cancel-answer" class="answer ok" data-status="200" '
        r'data-outcome="(\w+)"',
        page,
    )
    assert outcome is not None and outcome.group(1) in {"Cancelled", "CancelRequested"}
    assert api.canceller.cancelled == [RUN.key]
    assert [c.reason for c in api.ledger.cancels] == ["console check (dry run)", "<b>bad</b> KB"]
    assert "&lt;b&gt;bad&lt;/b&gt; KB" in page
    # A page that shows a cancel's answer never reloads itself (it would post again).
    assert "data-refresh-seconds" not in page


def test_a_refused_cancel_shows_the_problem_detail_in_words(api: Api) -> None:
    api.ledger.save_run(Run.first_seen(RUN, START - timedelta(minutes=35)))
    api.clock.advance(timedelta(minutes=25))  # T-5: past T-10
    response = post_form(cancel_form(), SAME_ORIGIN)
    page = text(response)
    assert 'class="answer refused" data-status="409" data-outcome="TooLate"' in page
    assert "Too late to cancel" in page
    assert "the cancel window closed at" in page
    assert api.canceller.cancelled == []


@pytest.mark.parametrize(
    ("function", "path", "params", "status"),
    [
        (console_runs, "console", {"continuationToken": "not-ours"}, 400),
        (console_runs, "console", {"status": "\x00" * 80, "configuration": "é" * 500}, 200),
        (console_run, "console/run", {}, 400),
        (console_run, "console/run", {"run": "/subscriptions/../x"}, 400),
        (console_report, "console/report", {"run": CORRELATION_ID}, 404),
    ],
    ids=["foreign token", "odd filters", "no run", "bad run id", "unknown run report"],
)
def test_bad_console_queries_get_a_4xx_page_never_a_5xx(
    api: Api, function: object, path: str, params: dict[str, str], status: int
) -> None:
    response = get(function, path, **params)
    assert response.status_code == status
    assert response.mimetype == "text/html"


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe", b"run=" + b"x" * 20000, b"&&&===", b"intent=other&csrf=" + TOKEN.encode()],
    ids=["not utf-8", "too large", "no fields", "unknown intent"],
)
def test_unreadable_cancel_forms_are_400s(api: Api, body: bytes) -> None:
    api.ledger.save_run(Run.first_seen(RUN, START - timedelta(minutes=35)))
    request = func.HttpRequest(
        "POST",
        "http://localhost/api/console/cancel",
        body=body if b"run=" in body else body + b"&run=" + CORRELATION_ID.encode(),
        headers={"Cookie": f"console_csrf={TOKEN}"},
    )
    response = console_cancel(request)
    assert response.status_code in (400, 403)
    assert api.canceller.cancelled == []


def test_a_misconfigured_app_says_so_in_a_page(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    bootstrap.use(None)
    response = get(console_runs, "console")
    assert response.status_code == 500
    assert "misconfigured" in text(response)
