"""End to end: a corpus of bad input over the local host, each case with its expected answer.

Every way in is tried as an attacker and a careless caller would: the Event Grid webhook of the
pre and the post function, the events queue, the task queue, every HTTP route (cancel, list,
get, the OpenAPI document), the host's own admin API, and wrong keys. What must hold for each:
no 5xx, no function that crashed, an event refused loudly (one ERROR line with the reason) and
never retried, a queue message handled once and not sent to poison for being unreadable.

One stack serves the whole module; the queue cases are sent together and settled once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from sandbox.fake_azure.model import MaintenanceRun
from sandbox.stack import POST, PRE, Stack, running_stack
from shared.domain.tasks import TASK_QUEUE
from tests.e2e.test_maintenance_runs import WEB, e2e_scenario

EVENTS_QUEUE = "maintenance-events"
PROBLEM = "application/problem+json"
DEEP = 1000  # json.loads raises RecursionError about here
REFUSED_EVENT = "Refused maintenance event"
REFUSED_TASK = "Refused task message"


class LogRecords(logging.Handler):
    """Every log record of the process (the local host runs the app in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def since(self, mark: int) -> list[logging.LogRecord]:
        with self._lock_records:
            return list(self.records[mark:])

    @property
    def mark(self) -> int:
        with self._lock_records:
            return len(self.records)


def crashes(records: list[logging.LogRecord]) -> list[str]:
    """Functions that raised, and errors of the local host itself."""
    return [
        r.getMessage()
        for r in records
        if "(Failed," in r.getMessage() or "local host error" in r.getMessage().lower()
    ]


@dataclass
class Corpus:
    """The running stack, a run that exists in the fake, and every log record."""

    stack: Stack
    run: MaintenanceRun
    logs: LogRecords
    queue_outcomes: dict[str, QueueOutcome] = field(default_factory=dict)


@pytest.fixture(scope="module")
def corpus(azurite_connection_string: str) -> Iterator[Corpus]:
    logs = LogRecords()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    try:
        with running_stack(
            e2e_scenario(), storage_connection_string=azurite_connection_string
        ) as stack:
            run = stack.schedule("weekly", [WEB], timedelta(hours=3))
            yield Corpus(stack=stack, run=run, logs=logs)
    finally:
        root.removeHandler(logs)
        root.setLevel(previous_level)


# The Event Grid webhook ------------------------------------------------------------------


def nested(depth: int, leaf: object = "x") -> object:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


Change = Callable[[dict[str, Any]], None]


def data_set(**values: Any) -> Change:
    def change(envelope: dict[str, Any]) -> None:
        envelope["data"].update(values)

    return change


def data_drop(name: str) -> Change:
    def change(envelope: dict[str, Any]) -> None:
        envelope["data"].pop(name)

    return change


def envelope_set(**values: Any) -> Change:
    def change(envelope: dict[str, Any]) -> None:
        envelope.update(values)

    return change


def run_named(name: str) -> Change:
    """CorrelationId, id and StartDateTime for a run of the same configuration named `name`."""

    def change(envelope: dict[str, Any]) -> None:
        correlation_id = envelope["data"]["CorrelationId"].rsplit("/", 1)[0] + "/" + name
        envelope["id"] = correlation_id
        envelope["data"]["CorrelationId"] = correlation_id

    return change


def cloud_event_of(**values: Any) -> Change:
    def change(envelope: dict[str, Any]) -> None:
        kind = envelope.pop("eventType")
        envelope.pop("eventTime")
        envelope.pop("dataVersion")
        envelope.pop("metadataVersion")
        envelope.pop("topic")
        envelope.update({"specversion": "1.0", "type": kind, "source": "/subscriptions/x"} | values)

    return change


OTHER_CONFIGURATION = (
    "/subscriptions/1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/other"
)

# (case name, change to a valid event of the function's kind, words of the refusal's reason).
# The host decodes each of these; the app must refuse it: 200, one ERROR line, no run (only a
# refused-event record).
APP_REFUSES: list[tuple[str, Change, str]] = [
    ("no data", envelope_set(data=None), "no data object"),
    ("data is a string", envelope_set(data="CorrelationId"), "no data object"),
    ("data is an array", envelope_set(data=[1, 2]), "no data object"),
    ("no id", envelope_set(id=None), "no id"),
    ("id is an array", envelope_set(id=["a"]), "no id"),
    ("id is blank", envelope_set(id="   "), "no id"),
    ("id holds a newline", envelope_set(id="a\nb"), "control characters"),
    ("id is 600 characters", envelope_set(id="a" * 600), "too long"),
    ("a storage event", envelope_set(eventType="Microsoft.Storage.BlobCreated"), "not a mainte"),
    ("event type is null", envelope_set(eventType=None), "not a maintenance event"),
    ("event type is an object", envelope_set(eventType={"a": 1}), "not a maintenance event"),
    ("no CorrelationId", data_drop("CorrelationId"), "CorrelationId is missing"),
    ("CorrelationId is a number", data_set(CorrelationId=42), "must be a string"),
    (
        "CorrelationId is not a run",
        data_set(CorrelationId="/subscriptions/x/resourceGroups/y"),
        "not an applyupdates id",
    ),
    ("CorrelationId holds a quote", run_named("2026'1201"), "not an applyupdates id"),
    ("CorrelationId holds a pipe", run_named("20261201| take 1"), "not an applyupdates id"),
    ("CorrelationId holds ..", run_named("../../20261201030000"), "'..'"),
    ("run name in year 1", run_named("00010101000000"), "end of the calendar"),
    ("run name in year 9999", run_named("99991231235959"), "end of the calendar"),
    ("run name in month 13", run_named("20261301030000"), "not a real date"),
    (
        "configuration does not match",
        data_set(MaintenanceConfigurationId=OTHER_CONFIGURATION),
        "does not match the CorrelationId",
    ),
    ("configuration is not an id", data_set(MaintenanceConfigurationId="x"), "not a maintenan"),
    ("start is not a time", data_set(StartDateTime="soon"), "not an ISO 8601 time"),
    ("start is a number", data_set(StartDateTime=1733000000), "not a time string"),
    ("start is an object", data_set(StartDateTime={"t": 1}), "not a time string"),
    (
        "start is year 1 east of UTC",
        data_set(StartDateTime="0001-01-01T00:00:00+14:00"),
        "StartDateTime is not a real time",
    ),
    (
        "end is year 9999 west of UTC",
        data_set(EndDateTime="9999-12-31T23:59:59-14:00"),
        "EndDateTime is not a real time",
    ),
    (
        "end is the last second of the calendar",
        data_set(EndDateTime="9999-12-31T23:59:59Z"),
        "outside years",
    ),
    ("end is February 30th", data_set(EndDateTime="2026-02-30T00:00:00Z"), "not a real time"),
    ("end before start", data_set(EndDateTime="2020-01-01T00:00:00Z"), "not after Start"),
    ("no end", data_drop("EndDateTime"), "EndDateTime is missing"),
    (
        "cut-off is year 1 east of UTC",
        data_set(CancellationCutOffDateTime="0001-01-01T00:00:00+14:00"),
        "CancellationCutOffDateTime is not a real time",
    ),
    (
        "cut-off after start",
        data_set(CancellationCutOffDateTime="2099-01-01T00:00:00Z"),
        "after StartDateTime",
    ),
    ("subscriptions not GUIDs", data_set(ResourceSubscriptionIds=["x"]), "not a GUID"),
    # An empty or missing ResourceSubscriptionIds is taken in (the configuration's own
    # subscription is used; tests/e2e/test_event_variants.py), a number is not.
    (
        "subscriptions a number",
        data_set(ResourceSubscriptionIds=42),
        "neither an array nor a string",
    ),
    (
        "subscriptions nested",
        data_set(ResourceSubscriptionIds=[["1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"]]),
        "must be a string",
    ),
    (
        "1001 subscriptions",
        data_set(ResourceSubscriptionIds=["1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"] * 1001),
        "more than 1000",
    ),
    ("status is an object", data_set(Status={"a": "b"}), "Status is not a short string"),
    ("status is 100 characters", data_set(Status="S" * 100), "Status is not a short string"),
    ("data nested 500 deep", data_set(Extra=nested(500)), "nests deeper"),
    ("data nested 40 deep", data_set(Extra=nested(40)), "nests deeper"),
    (
        "the same key twice, different values",
        data_set(correlationid="/subscriptions/x"),
        "twice with different values",
    ),
    ("70 KB of data", data_set(Padding="p" * 70_000), "exceeds 65536"),
    ("CloudEvents 2.0", cloud_event_of(specversion="2.0"), "unsupported CloudEvents"),
    ("CloudEvents without type", cloud_event_of(type=None), "not a maintenance event"),
]


def valid_event(corpus: Corpus, kind: str) -> dict[str, Any]:
    return corpus.stack.event(kind, corpus.run)


def post_webhook(
    corpus: Corpus,
    function: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    url: str | None = None,
) -> requests.Response:
    return corpus.stack.session.post(
        url or corpus.stack.host.webhook_url(function),
        data=body,
        headers={"aeg-event-type": "Notification", "Content-Type": "application/json"}
        | (headers or {}),
        timeout=60,
    )


FUNCTIONS = {PRE: "on_pre_maintenance_event", POST: "on_post_maintenance_event"}


@pytest.mark.parametrize("kind", [PRE, POST], ids=["pre", "post"])
@pytest.mark.parametrize(
    ("change", "reason"), [(c, r) for _, c, r in APP_REFUSES], ids=[n for n, _, _ in APP_REFUSES]
)
def test_an_event_the_app_cannot_act_on_is_refused_loudly_once_and_answered_200(
    corpus: Corpus, kind: str, change: Change, reason: str
) -> None:
    envelope = valid_event(corpus, kind)
    change(envelope)
    mark = corpus.logs.mark
    answer = post_webhook(corpus, FUNCTIONS[kind], json.dumps([envelope]).encode())
    records = corpus.logs.since(mark)
    assert answer.status_code == 200, answer.text  # a 5xx would make Event Grid retry it
    refusals = [r for r in records if REFUSED_EVENT in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in records]
    assert refusals[0].levelno == logging.ERROR
    assert reason in refusals[0].getMessage()
    assert crashes(records) == []
    assert not any("Took in" in r.getMessage() for r in records)


def test_an_event_of_the_other_kind_is_refused_by_each_function(corpus: Corpus) -> None:
    for kind, other in ((PRE, POST), (POST, PRE)):
        mark = corpus.logs.mark
        body = json.dumps([valid_event(corpus, other)]).encode()
        assert post_webhook(corpus, FUNCTIONS[kind], body).status_code == 200
        [refusal] = [r for r in corpus.logs.since(mark) if REFUSED_EVENT in r.getMessage()]
        assert f"is not {kind} here" in refusal.getMessage()
        assert corpus.run.correlation_id in refusal.getMessage()  # the event id


# (case name, body, extra headers, expected status, words of the answer). The host refuses these
# before any function runs, as the Functions host does for what it cannot decode.
HOST_REFUSES: list[tuple[str, Callable[[Corpus], bytes], dict[str, str], int, str]] = [
    ("not JSON", lambda c: b"{not json", {}, 400, "not JSON"),
    ("not UTF-8", lambda c: b"\xff\xfe[{}]", {}, 400, "not JSON"),
    ("an empty body", lambda c: b"", {}, 400, "not JSON"),
    ("nested 1000 deep", lambda c: deep_text(DEEP).encode(), {}, 400, "not JSON"),
    (
        "an event nested 1000 deep",
        lambda c: b'[{"id": "x", "data": ' + deep_text(DEEP).encode() + b"}]",
        {},
        400,
        "not JSON",
    ),
    ("a 5000-digit number", lambda c: b"[" + b"9" * 5000 + b"]", {}, 400, "not JSON"),
    ("a JSON string", lambda c: b'"event"', {}, 400, "not an event"),
    ("a JSON number", lambda c: b"42", {}, 400, "not an event"),
    ("an array of numbers", lambda c: b"[1, 2]", {}, 400, "not an event"),
    (
        "event time is not a time",
        lambda c: event_body(c, eventTime="yesterday"),
        {},
        400,
        "cannot be decoded",
    ),
    (
        "event time is year 1 east of UTC",
        lambda c: event_body(c, eventTime="0001-01-01T00:00:00+14:00"),
        {},
        400,
        "cannot be decoded",
    ),
    (
        "event time is year 9999 west of UTC",
        lambda c: event_body(c, eventTime="9999-12-31T23:59:59-14:00"),
        {},
        400,
        "cannot be decoded",
    ),
    (
        "event time is a number",
        lambda c: event_body(c, eventTime=1733000000),
        {},
        400,
        "cannot be decoded",
    ),
    (
        "unknown aeg-event-type",
        lambda c: event_body(c),
        {"aeg-event-type": "Surprise"},
        400,
        "Unknown aeg-event-type",
    ),
    (
        "validation without a code",
        lambda c: b'[{"id": "v", "data": {}}]',
        {"aeg-event-type": "SubscriptionValidation"},
        400,
        "validationCode",
    ),
    (
        "validation nested 1000 deep",
        lambda c: deep_text(DEEP).encode(),
        {"aeg-event-type": "SubscriptionValidation"},
        400,
        "not JSON",
    ),
]


def event_body(corpus: Corpus, **envelope: Any) -> bytes:
    event = valid_event(corpus, PRE)
    event.update(envelope)
    return json.dumps([event]).encode()


@pytest.mark.parametrize("kind", [PRE, POST], ids=["pre", "post"])
@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [(b, h, s, w) for _, b, h, s, w in HOST_REFUSES],
    ids=[n for n, *_ in HOST_REFUSES],
)
def test_a_delivery_the_host_cannot_decode_is_a_400_before_the_app_runs(
    corpus: Corpus,
    kind: str,
    body: Callable[[Corpus], bytes],
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    mark = corpus.logs.mark
    answer = post_webhook(corpus, FUNCTIONS[kind], body(corpus), headers)
    records = corpus.logs.since(mark)
    assert (answer.status_code, words in answer.text) == (status, True), answer.text
    assert not any("Executing 'Functions." in r.getMessage() for r in records)
    assert crashes(records) == []


def test_an_empty_batch_is_answered_200_and_runs_nothing(corpus: Corpus) -> None:
    mark = corpus.logs.mark
    assert post_webhook(corpus, FUNCTIONS[PRE], b"[]").status_code == 200
    assert not any("Executing" in r.getMessage() for r in corpus.logs.since(mark))


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("{host}/runtime/webhooks/eventgrid?functionName=on_pre_maintenance_event", 401),
        ("{host}/runtime/webhooks/eventgrid?functionName=on_pre_maintenance_event&code=x", 401),
        ("{host}/runtime/webhooks/eventgrid?functionName=cancel_run&code={system}", 404),
        ("{host}/runtime/webhooks/eventgrid?functionName=nothing&code={system}", 404),
        ("{host}/runtime/webhooks/eventgrid?code={system}", 404),
        # The function key opens HTTP functions only, not the webhook.
        ("{host}/runtime/webhooks/eventgrid?functionName=on_pre_maintenance_event&code={fn}", 401),
    ],
    ids=["no key", "wrong key", "an HTTP function", "unknown", "no function", "function key"],
)
def test_the_webhook_with_a_wrong_key_or_function_is_a_4xx(
    corpus: Corpus, url: str, status: int
) -> None:
    host = corpus.stack.host
    target = url.format(host=host.url, system=host.system_key, fn=host.function_key)
    body = event_body(corpus)
    answer = post_webhook(corpus, "", body, url=target)
    assert answer.status_code == status, answer.text


# The queues ------------------------------------------------------------------------------


@dataclass
class QueueOutcome:
    """What became of one message: the refusal lines naming it, and the crashes meanwhile."""

    message_id: str
    refusals: list[logging.LogRecord]


def _queue(corpus: Corpus, name: str) -> QueueClient:
    # No encode policy: the test writes the base64 text itself, so it can also write bad text.
    return QueueClient.from_connection_string(corpus.stack.storage_connection_string, name)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def event_message(corpus: Corpus, change: Change) -> str:
    envelope = valid_event(corpus, PRE)
    change(envelope)
    return b64(json.dumps(envelope).encode())


# (case name, message text as it sits in the queue, words of the refusal).
def events_queue_cases(corpus: Corpus) -> list[tuple[str, str, str]]:
    valid = json.dumps(valid_event(corpus, PRE))
    return [
        ("not JSON", b64(b"{not json"), "not JSON"),
        ("not UTF-8", b64(b"\xff\xfe{}"), "not UTF-8"),
        ("nested 1000 deep", b64(deep_text(DEEP).encode()), "levels deep"),
        (
            "an event nested 1000 deep",
            b64(valid[:-1].encode() + b', "x": ' + deep_text(DEEP).encode() + b"}"),
            "levels deep",
        ),
        ("a JSON string", b64(b'"event"'), "not a JSON object"),
        ("an empty array", b64(b"[]"), "got 0"),
        ("two events", b64(f"[{valid}, {valid}]".encode()), "got 2"),
        (
            "start year 1 east",
            event_message(corpus, data_set(StartDateTime="0001-01-01T00:00:00+14:00")),
            "not a real time",
        ),
        (
            "end year 9999 west",
            event_message(corpus, data_set(EndDateTime="9999-12-31T23:59:59-14:00")),
            "not a real time",
        ),
        (
            "event time year 1 east",
            event_message(corpus, envelope_set(eventTime="0001-01-01T00:00:00+14:00")),
            "eventTime is not a real time",
        ),
        (
            "event time not a time",
            event_message(corpus, envelope_set(eventTime=17)),
            "eventTime is not a time string",
        ),
        ("no data", event_message(corpus, envelope_set(data=None)), "no data object"),
        (
            "a storage event",
            event_message(corpus, envelope_set(eventType="Microsoft.Storage.BlobCreated")),
            "not a maintenance event",
        ),
        (
            "CorrelationId with a pipe",
            event_message(corpus, run_named("2026| take 1")),
            "not an applyupdates id",
        ),
        (
            "run name in year 1",
            event_message(corpus, run_named("00010101000000")),
            "end of the calendar",
        ),
        (
            "subscriptions not GUIDs",
            event_message(corpus, data_set(ResourceSubscriptionIds=["x"])),
            "not a GUID",
        ),
        ("data nested 500 deep", event_message(corpus, data_set(Extra=nested(500))), "levels deep"),
    ]


# (case name, message text, words of the refusal; None: a well-formed task, handled once).
def task_queue_cases(corpus: Corpus) -> list[tuple[str, str, str | None]]:
    run = corpus.run.correlation_id
    unknown_run = run.rsplit("/", 1)[0] + "/20300101000000"

    def task(**values: Any) -> str:
        return b64(json.dumps({"kind": "prepare", "run": run, **values}).encode())

    return [
        ("not JSON", b64(b"prepare"), "not JSON"),
        ("not UTF-8", b64(b"\xff\xfe{}"), "not UTF-8"),
        ("nested 1000 deep", b64(deep_text(DEEP).encode()), "levels deep"),
        (
            "a task nested 1000 deep",
            b64(b'{"kind": "prepare", "x": ' + deep_text(DEEP).encode() + b"}"),
            "levels deep",
        ),
        ("an array", b64(b'["prepare"]'), "not a JSON object"),
        ("an unknown kind", task(kind="reboot"), "not a task"),
        ("no run", b64(b'{"kind": "prepare"}'), "not a task"),
        ("run with a quote", task(run=run + "'"), "not an applyupdates id"),
        (
            "run name in year 1",
            task(run=run.rsplit("/", 1)[0] + "/00010101000000"),
            "end of the calendar",
        ),
        ("machines is a string", task(machines="vm"), "machines is not an array"),
        ("a machine that is not an id", task(machines=["../vm"]), "not a task"),
        ("round is negative", task(round=-1), "round is not a whole number"),
        (
            "round is infinite",
            b64(b'{"kind": "prepare", "run": "x", "round": 1e999}'),
            "round is not a whole number",
        ),
        ("round is a string", task(round="3"), "round is not a whole number"),
        ("round is true", task(round=True), "round is not a whole number"),
        ("a run the ledger does not know", task(run=unknown_run), None),
    ]


def _send_all(client: QueueClient, cases: list[tuple[str, str, Any]]) -> dict[str, str]:
    ids = {}
    for name, text, _ in cases:
        ids[name] = client.send_message(text).id
    return ids


@pytest.fixture(scope="module")
def queue_outcomes(corpus: Corpus) -> dict[str, Any]:
    """Send every queue case at once, let the host work them off, and read what happened."""
    events = _queue(corpus, EVENTS_QUEUE)
    tasks = _queue(corpus, TASK_QUEUE)
    for client in (events, tasks):
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
    mark = corpus.logs.mark
    event_cases = events_queue_cases(corpus)
    task_cases = task_queue_cases(corpus)
    event_ids = _send_all(events, event_cases)
    task_ids = _send_all(tasks, task_cases)
    # Text that is not base64 at all: the host cannot decode it and poisons it unread.
    undecodable_event = events.send_message("%%% not base64 %%%").id
    corpus.stack.settle(timeout=120)
    records = corpus.logs.since(mark)
    return {
        "records": records,
        "events": {name: (event_ids[name], words) for name, _, words in event_cases},
        "tasks": {name: (task_ids[name], words) for name, _, words in task_cases},
        "undecodable_event": undecodable_event,
        "sent_texts": [text for _, text, _ in [*event_cases, *task_cases]],
        "poisoned_events": _peek_all(_queue(corpus, EVENTS_QUEUE + "-poison")),
        "poisoned_tasks": _peek_all(_queue(corpus, TASK_QUEUE + "-poison")),
    }


def _peek_all(client: QueueClient) -> list[str]:
    try:
        return [str(m.content) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def naming(records: list[logging.LogRecord], message_id: str, words: str) -> list[str]:
    return [
        r.getMessage() for r in records if message_id in r.getMessage() and words in r.getMessage()
    ]


EVENT_QUEUE_NAMES = [
    "not JSON",
    "not UTF-8",
    "nested 1000 deep",
    "an event nested 1000 deep",
    "a JSON string",
    "an empty array",
    "two events",
    "start year 1 east",
    "end year 9999 west",
    "event time year 1 east",
    "event time not a time",
    "no data",
    "a storage event",
    "CorrelationId with a pipe",
    "run name in year 1",
    "subscriptions not GUIDs",
    "data nested 500 deep",
]
TASK_QUEUE_NAMES = [
    "not JSON",
    "not UTF-8",
    "nested 1000 deep",
    "a task nested 1000 deep",
    "an array",
    "an unknown kind",
    "no run",
    "run with a quote",
    "run name in year 1",
    "machines is a string",
    "a machine that is not an id",
    "round is negative",
    "round is infinite",
    "round is a string",
    "round is true",
    "a run the ledger does not know",
]


@pytest.mark.parametrize("name", EVENT_QUEUE_NAMES)
def test_an_unreadable_event_message_is_refused_on_its_first_delivery(
    queue_outcomes: dict[str, Any], name: str
) -> None:
    message_id, words = queue_outcomes["events"][name]
    records = queue_outcomes["records"]
    refusals = [
        r for r in records if message_id in r.getMessage() and REFUSED_EVENT in r.getMessage()
    ]
    assert len(refusals) == 1, [r.getMessage() for r in records if message_id in r.getMessage()]
    assert refusals[0].levelno == logging.ERROR
    assert words in refusals[0].getMessage()


@pytest.mark.parametrize("name", TASK_QUEUE_NAMES)
def test_an_unreadable_task_message_is_refused_on_its_first_delivery(
    queue_outcomes: dict[str, Any], name: str
) -> None:
    message_id, words = queue_outcomes["tasks"][name]
    records = queue_outcomes["records"]
    if words is None:
        return
    refusals = [
        r for r in records if message_id in r.getMessage() and REFUSED_TASK in r.getMessage()
    ]
    assert len(refusals) == 1, [r.getMessage() for r in records if message_id in r.getMessage()]
    assert refusals[0].levelno == logging.ERROR
    assert words in refusals[0].getMessage()


def test_no_queue_message_crashed_was_retried_or_was_poisoned_for_being_unreadable(
    queue_outcomes: dict[str, Any],
) -> None:
    records = queue_outcomes["records"]
    assert crashes(records) == []
    # Every task the worker ran was on its first delivery.
    deliveries = [
        found[1]
        for r in records
        if (found := re.search(r"machines, delivery (\d+)\)", r.getMessage()))
    ]
    assert deliveries and set(deliveries) == {"1"}, deliveries
    # Only the text that is not base64 went to poison, unread by the app, as the host does.
    assert "%%% not base64 %%%" in queue_outcomes["poisoned_events"]
    sent = set(queue_outcomes["sent_texts"])
    assert sent.isdisjoint(queue_outcomes["poisoned_events"] + queue_outcomes["poisoned_tasks"])
    poisoned = [r.getMessage() for r in records if "Moving message to queue" in r.getMessage()]
    assert len(poisoned) == 1 and queue_outcomes["undecodable_event"] in poisoned[0]


# The operator API ------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request to an operator route and the answer it must get."""

    method: str
    path: str
    status: int | tuple[int, ...]
    body: bytes | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key: str = "function"  # function | none | wrong | master
    problem: bool = True  # a 4xx from the app is problem+json; the host's own are text


def principal(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def cancel_body(**values: Any) -> bytes:
    return json.dumps(
        {"correlationId": "{run}", "reason": "corpus", "dryRun": True} | values
    ).encode()


DEEP_PRINCIPAL = base64.b64encode(deep_text(DEEP).encode()).decode()
HTTP_CASES: dict[str, Call] = {
    # POST /api/runs/cancel
    "cancel: no body": Call("POST", "/api/runs/cancel", 400, b""),
    "cancel: not JSON": Call("POST", "/api/runs/cancel", 400, b"{correlationId"),
    "cancel: not UTF-8": Call("POST", "/api/runs/cancel", 400, b"\xff\xfe{}"),
    "cancel: nested 1000 deep": Call("POST", "/api/runs/cancel", 400, deep_text(DEEP).encode()),
    "cancel: a field nested 1000 deep": Call(
        "POST", "/api/runs/cancel", 400, b'{"correlationId": ' + deep_text(DEEP).encode() + b"}"
    ),
    "cancel: an array": Call("POST", "/api/runs/cancel", 400, b"[]"),
    "cancel: a string": Call("POST", "/api/runs/cancel", 400, b'"cancel"'),
    "cancel: 17 KB": Call("POST", "/api/runs/cancel", 400, cancel_body(reason="r" * 17_000)),
    "cancel: 1 MB": Call("POST", "/api/runs/cancel", 400, b" " * 1_000_000 + b"{}"),
    "cancel: no correlationId": Call("POST", "/api/runs/cancel", 400, b'{"reason": "x"}'),
    "cancel: correlationId a number": Call(
        "POST", "/api/runs/cancel", 400, cancel_body(correlationId=5)
    ),
    "cancel: correlationId an object": Call(
        "POST", "/api/runs/cancel", 400, cancel_body(correlationId={"a": 1})
    ),
    "cancel: correlationId not a run": Call(
        "POST", "/api/runs/cancel", 400, cancel_body(correlationId="/subscriptions/x")
    ),
    "cancel: correlationId with a quote": Call(
        "POST", "/api/runs/cancel", 400, cancel_body(correlationId="{run}'")
    ),
    "cancel: run name in year 1": Call(
        "POST",
        "/api/runs/cancel",
        400,
        cancel_body(
            correlationId="{configuration}/providers/microsoft.maintenance/applyupdates/00010101000000"
        ),
    ),
    "cancel: run name in year 9999": Call(
        "POST",
        "/api/runs/cancel",
        400,
        cancel_body(
            correlationId="{configuration}/providers/microsoft.maintenance/applyupdates/99991231235959"
        ),
    ),
    "cancel: reason a number": Call("POST", "/api/runs/cancel", 400, cancel_body(reason=5)),
    "cancel: reason with a newline": Call(
        "POST", "/api/runs/cancel", 400, cancel_body(reason="a\nb")
    ),
    "cancel: reason 600 characters": Call(
        "POST", "/api/runs/cancel", 400, cancel_body(reason="r" * 600)
    ),
    "cancel: dryRun a string": Call("POST", "/api/runs/cancel", 400, cancel_body(dryRun="yes")),
    "cancel: principal nested 1000 deep": Call(
        "POST",
        "/api/runs/cancel",
        (400, 403, 409),
        cancel_body(),
        headers={"x-ms-client-principal": DEEP_PRINCIPAL},
    ),
    "cancel: principal not base64": Call(
        "POST",
        "/api/runs/cancel",
        (400, 403, 409),
        cancel_body(),
        headers={"x-ms-client-principal": "%%%"},
    ),
    "cancel: principal an array": Call(
        "POST",
        "/api/runs/cancel",
        (400, 403, 409),
        cancel_body(),
        headers={"x-ms-client-principal": principal([1])},
    ),
    "cancel: principal claims not a list": Call(
        "POST",
        "/api/runs/cancel",
        (400, 403, 409),
        cancel_body(),
        headers={"x-ms-client-principal": principal({"claims": 5})},
    ),
    "cancel: principal claim types unhashable": Call(
        "POST",
        "/api/runs/cancel",
        (400, 403, 409),
        cancel_body(),
        headers={"x-ms-client-principal": principal({"claims": [{"typ": [1], "val": 2}]})},
    ),
    "cancel: principal 20 KB": Call(
        "POST",
        "/api/runs/cancel",
        (400, 403, 409),
        cancel_body(),
        headers={"x-ms-client-principal": principal({"claims": [], "pad": "p" * 20_000})},
    ),
    "cancel: too early, dry run": Call("POST", "/api/runs/cancel", 409, cancel_body()),
    "cancel: no key": Call(
        "POST", "/api/runs/cancel", 401, cancel_body(), key="none", problem=False
    ),
    "cancel: wrong key": Call(
        "POST", "/api/runs/cancel", 401, cancel_body(), key="wrong", problem=False
    ),
    "cancel: GET": Call("GET", "/api/runs/cancel", 404, problem=False),
    "cancel: PUT": Call("PUT", "/api/runs/cancel", 404, cancel_body(), problem=False),
    # GET /api/runs
    "list: from year 1 east of UTC": Call(
        "GET", "/api/runs", 400, params={"from": "0001-01-01T00:00:00+14:00"}
    ),
    "list: to year 9999 west of UTC": Call(
        "GET", "/api/runs", 400, params={"to": "9999-12-31T23:59:59-14:00"}
    ),
    "list: from the first second of the calendar": Call(
        "GET", "/api/runs", 400, params={"from": "0001-01-01T00:00:00Z"}
    ),
    "list: from not a time": Call("GET", "/api/runs", 400, params={"from": "last week"}),
    "list: to February 30th": Call("GET", "/api/runs", 400, params={"to": "2026-02-30T00:00:00Z"}),
    "list: from with a year 10000": Call(
        "GET", "/api/runs", 400, params={"from": "10000-01-01T00:00:00Z"}
    ),
    "list: top zero": Call("GET", "/api/runs", 400, params={"top": "0"}),
    "list: top 5000 digits": Call("GET", "/api/runs", 400, params={"top": "9" * 5000}),
    "list: top a word": Call("GET", "/api/runs", 400, params={"top": "all"}),
    "list: top negative": Call("GET", "/api/runs", 400, params={"top": "-1"}),
    "list: token not base64": Call("GET", "/api/runs", 400, params={"continuationToken": "%%%"}),
    "list: token of another API": Call(
        "GET",
        "/api/runs",
        400,
        params={"continuationToken": base64.urlsafe_b64encode(b"p:1").decode()},
    ),
    "list: token negative": Call(
        "GET",
        "/api/runs",
        400,
        params={"continuationToken": base64.urlsafe_b64encode(b"o:-5").decode()},
    ),
    "list: token not UTF-8": Call(
        "GET",
        "/api/runs",
        400,
        params={"continuationToken": base64.urlsafe_b64encode(b"\xff\xfe").decode()},
    ),
    "list: an odd status filter": Call("GET", "/api/runs", 200, params={"status": "'; drop table"}),
    "list: a long configuration filter": Call(
        "GET", "/api/runs", 200, params={"configuration": "c" * 5000}
    ),
    "list: no key": Call("GET", "/api/runs", 401, key="none", problem=False),
    "list: POST": Call("POST", "/api/runs", 404, b"{}", problem=False),
    # GET /api/runs/{configuration}/{runName}
    "get: run name not a time": Call("GET", "/api/runs/weekly/tomorrow", 400),
    "get: run name in year 1": Call("GET", "/api/runs/weekly/00010101000000", 400),
    "get: run name in year 9999": Call("GET", "/api/runs/weekly/99991231235959", 400),
    "get: run name in month 13": Call("GET", "/api/runs/weekly/20261301030000", 400),
    "get: run name 40 digits": Call("GET", "/api/runs/weekly/" + "1" * 40, 400),
    "get: unknown run": Call("GET", "/api/runs/weekly/20300101000000", 404),
    "get: encoded quote in the configuration": Call(
        "GET", "/api/runs/we%27ekly/20300101000000", 404
    ),
    "get: odd subscription filter": Call(
        "GET", "/api/runs/weekly/20300101000000", 404, params={"subscriptionId": "'"}
    ),
    "get: wrong key": Call(
        "GET", "/api/runs/weekly/20300101000000", 401, key="wrong", problem=False
    ),
    # The rest of the host
    "openapi: no key": Call("GET", "/api/openapi.json", 401, key="none", problem=False),
    "an unknown route": Call("GET", "/api/nothing/here", 404, problem=False),
    "admin: not JSON": Call(
        "POST", "/admin/functions/reconcile_runs", 400, b"{", key="master", problem=False
    ),
    "admin: nested 1000 deep": Call(
        "POST",
        "/admin/functions/reconcile_runs",
        400,
        deep_text(DEEP).encode(),
        key="master",
        problem=False,
    ),
    "admin: an event that cannot be decoded": Call(
        "POST",
        "/admin/functions/on_pre_maintenance_event",
        400,
        json.dumps(
            {"input": json.dumps({"id": "x", "eventTime": "0001-01-01T00:00:00+14:00"})}
        ).encode(),
        key="master",
        problem=False,
    ),
    "admin: an event nested 1000 deep": Call(
        "POST",
        "/admin/functions/on_pre_maintenance_event",
        400,
        json.dumps({"input": deep_text(DEEP)}).encode(),
        key="master",
        problem=False,
    ),
    "admin: function key": Call(
        "POST", "/admin/functions/reconcile_runs", 401, b'{"input": ""}', problem=False
    ),
}


def _request(corpus: Corpus, call: Call) -> requests.Response:
    host = corpus.stack.host
    keys = {
        "function": host.function_key,
        "master": host.master_key,
        "wrong": "wrong",
        "none": None,
    }
    key = keys[call.key]
    configuration = corpus.run.configuration_id
    body = call.body
    if body is not None:
        body = body.replace(b"{run}", corpus.run.correlation_id.encode()).replace(
            b"{configuration}", configuration.encode()
        )
    headers = dict(call.headers)
    if key is not None:
        headers["x-functions-key"] = key
    return corpus.stack.session.request(
        call.method,
        host.url + call.path,
        data=body,
        params=call.params,
        headers=headers,
        timeout=60,
    )


@pytest.mark.parametrize("name", list(HTTP_CASES))
def test_a_bad_request_to_any_route_gets_its_4xx_and_never_a_5xx(corpus: Corpus, name: str) -> None:
    call = HTTP_CASES[name]
    mark = corpus.logs.mark
    answer = _request(corpus, call)
    expected = call.status if isinstance(call.status, tuple) else (call.status,)
    assert answer.status_code in expected, answer.text[:500]
    if call.problem and answer.status_code >= 400:
        assert answer.headers["content-type"].startswith(PROBLEM)
        document = answer.json()
        assert document["status"] == answer.status_code and document["detail"]
    assert crashes(corpus.logs.since(mark)) == []


def test_the_corpus_holds_at_least_a_hundred_cases() -> None:
    cases = (
        2 * len(APP_REFUSES)
        + 2 * len(HOST_REFUSES)
        + len(EVENT_QUEUE_NAMES)
        + len(TASK_QUEUE_NAMES)
        + len(HTTP_CASES)
    )
    assert cases >= 100
