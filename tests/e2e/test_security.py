"""End to end over the local host, the fake Azure and Azurite: the cancel allow-list trusts only
the platform's word (issue 12 §1), and no secret leaves through a log line, an exception chain,
an answer or a report, failures included (issue 12 §2)."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests

from sandbox.stack import POST, PRE, Stack, running_stack
from shared import bootstrap
from tests.e2e.test_maintenance_runs import (
    BATCH_1,
    FLEET,
    STOPPED,
    deliver_ok,
    e2e_scenario,
    finish_in_azure,
    power,
)

OPS_OID = "6a0c3a43-1b7e-4a39-9e2b-0c6f0f1b2a3d"
OTHER_OID = "11111111-2222-4333-8444-555555555555"


def principal(oid: str, name: str = "ops@contoso.example") -> str:
    """An x-ms-client-principal as App Service authentication writes it."""
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "name", "val": name},
    ]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()


FORGED_HEADERS: list[dict[str, str]] = [
    {"x-ms-client-principal-id": OPS_OID},
    {"x-ms-client-principal-id": OPS_OID, "x-ms-client-principal-name": "ops@contoso.example"},
    {"x-ms-client-principal-id": OPS_OID, "x-ms-client-principal-idp": "aad"},
    {
        "x-ms-client-principal-id": OPS_OID,
        "x-ms-client-principal-name": "ops@contoso.example",
        "x-ms-client-principal-idp": "aad",
    },
    {"x-ms-client-principal": principal(OPS_OID)},
    {"x-ms-client-principal": principal(OPS_OID), "x-ms-client-principal-id": OPS_OID},
    {"x-ms-client-principal": "%%% not base64 %%%"},
    {"x-ms-client-principal": base64.b64encode(b"{" * 3000).decode()},
    {"x-ms-client-principal": base64.b64encode(b'{"claims": 42}').decode()},
    {"X-MS-CLIENT-PRINCIPAL-ID": OPS_OID.upper()},
]


def _stack(azurite: str, **settings: str) -> Iterator[Stack]:
    with running_stack(e2e_scenario(), settings=settings, storage_connection_string=azurite) as s:
        yield s


@pytest.fixture
def stack_without_authentication(azurite_connection_string: str) -> Iterator[Stack]:
    yield from _stack(azurite_connection_string, CANCEL_ALLOWED_CALLERS=OPS_OID)


@pytest.fixture
def stack_with_authentication(azurite_connection_string: str) -> Iterator[Stack]:
    # The platform's own variable, as App Service sets it when its authentication is on.
    yield from _stack(
        azurite_connection_string, CANCEL_ALLOWED_CALLERS=OPS_OID, WEBSITE_AUTH_ENABLED="True"
    )


def test_every_forged_principal_header_is_refused_when_the_platform_does_not_authenticate(
    stack_without_authentication: Stack,
) -> None:
    stack = stack_without_authentication
    run = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    for headers in FORGED_HEADERS:
        answer = stack.cancel(run.correlation_id, "forged", headers=headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        detail = answer.json()["detail"]
        assert "App Service authentication is off" in detail
        assert "WEBSITE_AUTH_ENABLED" in detail
    assert stack.fake.requests_matching("PUT", "applyUpdates") == []
    assert stack.fake.model.run_status(run.correlation_id) != "Cancelled"
    assert stack.run_report(run)["cancel"]["requests"] == []


def test_with_platform_authentication_only_an_allowed_signed_in_caller_cancels(
    stack_with_authentication: Stack,
) -> None:
    stack = stack_with_authentication
    run = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    anonymous = stack.cancel(run.correlation_id, "no token")
    assert anonymous.status_code == 403, anonymous.text
    assert "no signed-in caller" in anonymous.json()["detail"]
    other = stack.cancel(
        run.correlation_id, "not allowed", headers={"x-ms-client-principal": principal(OTHER_OID)}
    )
    assert other.status_code == 403, other.text
    assert stack.fake.requests_matching("PUT", "applyUpdates") == []
    allowed = stack.cancel(
        run.correlation_id, "allowed", headers={"x-ms-client-principal": principal(OPS_OID)}
    )
    assert allowed.status_code == 200, allowed.text
    assert len(stack.fake.requests_matching("PUT", "applyUpdates")) == 1
    stack.settle()
    [request] = [r for r in stack.run_report(run)["cancel"]["requests"] if not r["dryRun"]]
    assert OPS_OID in request["requestedBy"]
    assert "ops@contoso.example" in request["requestedBy"]


# --- No secret leaves -----------------------------------------------------------------------


class Answers:
    """Every HTTP answer the test's session received: status, headers and body."""

    def __init__(self, session: requests.Session) -> None:
        self.texts: list[str] = []
        session.hooks["response"].append(self._keep)

    def _keep(self, answer: requests.Response, *args: Any, **kwargs: Any) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        self.texts.append(f"{answer.status_code}\n{headers}\n{answer.text}")


def _secrets(stack: Stack, webhook_secret: str) -> dict[str, str]:
    keys = stack.host.keys.as_document()
    account_key = re.search(r"AccountKey=([^;]+)", stack.storage_connection_string)
    found = {
        "function key": keys["function"],
        "master key": keys["master"],
        "event grid system key": keys["eventgrid_extension"],
        "webhook secret path": webhook_secret,
        "storage account key": account_key.group(1) if account_key else "",
    }
    for i, grant in enumerate(stack.fake.tokens.grants):
        found[f"bearer token {i}"] = grant.token
        # The signature part alone must not leak either.
        found[f"bearer token {i} signature"] = grant.token.rsplit(".", 1)[-1]
    return {name: value for name, value in found.items() if value}


def app_and_host_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log line, formatted with its traceback and exception chain, except the
    lines of the other parties: this test's own HTTP client (urllib3 on the test's thread) is
    the caller (Event Grid, the operator) holding its keys, and the fake Azure plays the remote
    services (it also receives the webhook call here)."""
    caller = threading.get_ident()
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(
        formatter.format(record)
        for record in caplog.records
        if not (record.name.startswith("urllib3") and record.thread == caller)
        and not record.name.startswith("sandbox.fake_azure")
    )


def _assert_nowhere(secrets: dict[str, str], places: dict[str, str]) -> None:
    for secret_name, secret in secrets.items():
        for place_name, text in places.items():
            assert secret not in text, f"the {secret_name} appears in {place_name}"


@pytest.fixture
def webhook_secret() -> str:
    return "SECRET" + uuid.uuid4().hex


@pytest.fixture
def stack_with_failing_webhook(
    azurite_connection_string: str, webhook_secret: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    # A well-formed https webhook whose receiver refuses every call (the fake Azure knows no
    # such path): notifications fail, are retried by the queue, and end in the poison queue.
    with running_stack(e2e_scenario(), storage_connection_string=azurite_connection_string) as s:
        # The URL needs the fake's port, known only once it runs: the app's settings are read
        # again with the webhook set, as an app setting change restarts the app in Azure.
        url = f"{s.fake.url}/webhookb2/{webhook_secret}/IncomingWebhook/x?sig={webhook_secret}"
        monkeypatch.setenv("NOTIFY_WEBHOOK_URL", url)
        bootstrap.use(None)
        yield s


def test_no_secret_reaches_a_log_line_exception_or_answer_in_a_whole_run_with_failures(
    stack_with_failing_webhook: Stack,
    webhook_secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = stack_with_failing_webhook
    answers = Answers(stack.session)
    caplog.set_level(logging.DEBUG)  # every level: an operator may lower it to troubleshoot
    host = stack.host
    # A whole run: pre event over the webhook URL with its system key, starts, post, wrap-up,
    # stops, the report, and a notification that keeps failing.
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["running"] * 3
    # Keys in the query string, right and wrong, on every kind of route.
    key = host.function_key
    assert stack.session.get(f"{host.url}/api/runs?code={key}", timeout=30).status_code == 200
    assert (
        stack.session.get(f"{host.url}/api/runs?code={host.master_key}", timeout=30).status_code
        == 200
    )
    wrong = stack.session.get(f"{host.url}/api/runs?code={key[::-1]}", timeout=30)
    assert wrong.status_code == 401
    wrong_header = stack.session.get(
        f"{host.url}/api/runs", headers={"x-functions-key": host.master_key[::-1]}, timeout=30
    )
    assert wrong_header.status_code == 401
    bad_webhook_key = stack.session.post(
        host.webhook_url("on_pre_maintenance_event").replace(host.system_key, key),
        json=[stack.event(PRE, run)],
        headers={"aeg-event-type": "Notification"},
        timeout=30,
    )
    assert bad_webhook_key.status_code == 401
    # Azure answers 5xx: the API answers 502 and logs the failure, with the key in the URL.
    rule = stack.fake.faults.add_error("maintenance.cancel", 500)
    failed = stack.session.post(
        f"{host.url}/api/runs/cancel?code={key}",
        json={"correlationId": run.correlation_id, "reason": "while Azure fails"},
        timeout=60,
    )
    assert failed.status_code >= 500, failed.text
    stack.fake.faults.remove_error(rule)
    # Resource Graph fails too while the reconciler runs (its tick through the admin API).
    arg_rule = stack.fake.faults.add_error("arg", 503, times=2)
    tick = stack.session.post(
        f"{host.url}/admin/functions/reconcile_runs?code={host.master_key}",
        json={"input": ""},
        timeout=30,
    )
    assert tick.status_code == 202
    stack.settle()
    stack.fake.faults.remove_error(arg_rule)
    # The run ends; wrap-up, the report and the failing notification follow.
    finish_in_azure(stack, run)
    deliver_ok(stack, POST, run)
    stack.settle(timeout=180)
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    report = stack.run_report(run)
    assert report["run"]["status"] == "Completed"
    # The notification did fail, and said so by host only.
    assert stack.fake.requests_matching("POST", "webhookb2"), "the webhook was never called"
    log_text = app_and_host_logs(caplog)
    secrets = _secrets(stack, webhook_secret)
    assert len([s for s in secrets if s.startswith("bearer token")]) >= 2
    places = {"the logs": log_text, **{f"answer {i}": t for i, t in enumerate(answers.texts)}}
    _assert_nowhere(secrets, places)
    # ... while the failures themselves were logged: by host, and by path without the query.
    assert "webhook at 127.0.0.1 answered" in log_text
    assert "NotificationFailed" in log_text
    assert "/api/runs/cancel failed" in log_text


@pytest.fixture
def stack_with_malformed_optional_settings(
    azurite_connection_string: str, webhook_secret: str
) -> Iterator[Stack]:
    yield from _stack(
        azurite_connection_string,
        NOTIFY_WEBHOOK_URL=f"https://hooks.example.com/webhookb2/{webhook_secret} oops",
        LOG_ANALYTICS_WORKSPACE_ID="my-workspace",
    )


def test_a_malformed_webhook_or_workspace_turns_off_only_its_feature_and_is_never_echoed(
    stack_with_malformed_optional_settings: Stack,
    webhook_secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = stack_with_malformed_optional_settings
    answers = Answers(stack.session)
    caplog.set_level(logging.DEBUG)
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    # Event intake and the task worker work.
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["running"] * 3
    # The cancel API works.
    dry_run = stack.cancel(run.correlation_id, "checking", dry_run=True)
    assert dry_run.status_code == 200, dry_run.text
    assert dry_run.json()["outcome"] == "WouldCancel"
    finish_in_azure(stack, run)
    deliver_ok(stack, POST, run)
    stack.settle()
    report = stack.run_report(run)
    assert report["run"]["status"] == "Completed"
    assert report["health"]["checked"] is False
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("Run notifications: off, because setting NOTIFY_WEBHOOK_URL" in e for e in errors)
    assert any("setting LOG_ANALYTICS_WORKSPACE_ID" in e for e in errors)
    assert any("'my-workspace'" in e for e in errors)  # not a secret: shown to help
    _assert_nowhere(
        {"webhook secret path": webhook_secret, "webhook host": "hooks.example.com"},
        {
            "the logs": app_and_host_logs(caplog),
            **{f"answer {i}": t for i, t in enumerate(answers.texts)},
        },
    )
