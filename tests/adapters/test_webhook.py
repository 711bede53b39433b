"""The webhook notifier against a local HTTP endpoint: retries on 5xx, gives up with an error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.adapters.webhook import WebhookNotifier
from shared.domain.errors import NotificationFailed


class Endpoint:
    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.received: list[Any] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                endpoint.received.append(json.loads(self.rfile.read(length)))
                status = endpoint.answers.pop(0) if endpoint.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    created = Endpoint([503, 503])
    yield created
    created.server.shutdown()


def test_the_summary_is_posted_and_5xx_answers_are_retried(endpoint: Endpoint) -> None:
    WebhookNotifier(endpoint.url, attempts=3, backoff=0.01).send({"text": "run done"})
    assert endpoint.received == [{"text": "run done"}] * 3


def test_a_webhook_that_keeps_failing_raises(endpoint: Endpoint) -> None:
    endpoint.answers[:] = [500, 500, 500]
    with pytest.raises(NotificationFailed):
        WebhookNotifier(endpoint.url, attempts=3, backoff=0.01).send({"text": "x"})
    assert len(endpoint.received) == 3


SECRET_PATH = "/webhookb2/SECRET-0123456789abcdef/IncomingWebhook/xyz"


def test_failures_name_the_host_only_and_carry_no_cause_quoting_the_url(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.answers[:] = [500, 500, 500]
    url = endpoint.url.replace("/hook", SECRET_PATH)
    with caplog.at_level("DEBUG"), pytest.raises(NotificationFailed) as caught:
        WebhookNotifier(url, attempts=3, backoff=0.01).send({"text": "x"})
    assert "127.0.0.1" in str(caught.value)
    assert "answered 500" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "SECRET" not in caplog.text


def test_an_unreachable_webhook_fails_without_the_url_anywhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    with caplog.at_level("DEBUG"), pytest.raises(NotificationFailed) as caught:
        WebhookNotifier(
            f"http://127.0.0.1:{port}{SECRET_PATH}", attempts=2, backoff=0.01, timeout=2
        ).send({"text": "x"})
    assert "unreachable (ConnectionError)" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in caplog.text


def test_a_4xx_other_than_429_is_not_retried(endpoint: Endpoint) -> None:
    waits: list[float] = []
    endpoint.answers[:] = [404]
    with pytest.raises(NotificationFailed, match="answered 404 \\(attempt 1 of 3\\)"):
        WebhookNotifier(endpoint.url, attempts=3, backoff=0.01, sleep=waits.append).send({})
    assert len(endpoint.received) == 1 and waits == []
