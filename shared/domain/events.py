"""Maintenance events from Event Grid: parsing and validation (reference §1).

Accepts the Event Grid schema and CloudEvents 1.0, reads `data` keys case-insensitively, and
refuses anything malformed with an InvalidEvent that says why in one line. What Azure may
legitimately vary (a run name that is not UTC, ResourceSubscriptionIds as a string, a list or
empty) is accepted and written down in the event's `oddities`, never refused.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.domain.ids import (
    ConfigurationId,
    InvalidId,
    RunId,
    describe_for_log,
    parse_subscription_id,
)
from shared.domain.json_input import (
    MAX_JSON_DEPTH,
    UnreadableJson,
    load_json,
    value_nesting_depth,
)
from shared.domain.timeline import within_calendar

# Real events are about 1-2 KB; anything far larger is not a maintenance event.
MAX_EVENT_BYTES = 64 * 1024
MAX_SUBSCRIPTIONS = 1000
MAX_EVENT_ID_LENGTH = 512
MAX_STATUS_LENGTH = 64


class EventKind(enum.StrEnum):
    """The two event types of a maintenance configuration's system topic."""

    PRE = "Microsoft.Maintenance.PreMaintenanceEvent"
    POST = "Microsoft.Maintenance.PostMaintenanceEvent"

    @property
    def short(self) -> str:
        """`pre` or `post`."""
        return "pre" if self is EventKind.PRE else "post"


class EnvelopeSchema(enum.StrEnum):
    """How the event was wrapped."""

    EVENT_GRID = "EventGrid"
    CLOUD_EVENTS = "CloudEvents"


class InvalidEvent(ValueError):
    """A delivery that is not a valid maintenance event; retrying it cannot help."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


@dataclass(frozen=True)
class MaintenanceEvent:
    """A validated pre or post maintenance event."""

    event_id: str
    kind: EventKind
    schema: EnvelopeSchema
    run: RunId
    event_time: datetime | None
    start: datetime
    end: datetime
    cancellation_cutoff: datetime | None
    subscription_ids: tuple[str, ...]
    status: str | None
    # Things Azure may send that the documents do not promise, accepted and worth a run note.
    oddities: tuple[str, ...] = ()

    @property
    def configuration(self) -> ConfigurationId:
        """The maintenance configuration whose run this is."""
        return self.run.configuration


_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?",
    re.IGNORECASE,
)


def parse_time(value: object, what: str) -> datetime:
    """An ISO 8601 time as written by Azure (up to 7 fraction digits, `Z` or an offset) in UTC.

    A time without a zone is read as UTC, which is what the platform means by it.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise InvalidEvent(f"{what} is not a time string")
    match = _TIME.fullmatch(value.strip())
    if not match:
        raise InvalidEvent(f"{what} is not an ISO 8601 time: {describe_for_log(value)}")
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    zone = match["zone"] or "Z"
    zone = "+00:00" if zone.upper() == "Z" else zone
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{zone}")
        in_utc = parsed.astimezone(UTC)
    except (ValueError, OverflowError) as e:
        # OverflowError: the offset moves the time out of the calendar (0001-01-01T00:00+14:00).
        raise InvalidEvent(f"{what} is not a real time: {describe_for_log(value)}") from e
    if not within_calendar(in_utc):
        raise InvalidEvent(f"{what} is outside years 2..9998: {describe_for_log(value)}")
    return in_utc


def parse_delivery(body: bytes | str, expected: frozenset[EventKind]) -> MaintenanceEvent:
    """Parse a raw delivery (an event object, or an array holding exactly one event)."""
    try:
        document = load_json(body, max_bytes=MAX_EVENT_BYTES)
    except UnreadableJson as e:
        raise InvalidEvent(f"payload is not JSON the app reads: {e}") from e
    if isinstance(document, list):
        if len(document) != 1:
            raise InvalidEvent(f"expected one event in the array, got {len(document)}")
        document = document[0]
    if not isinstance(document, dict):
        raise InvalidEvent("payload is not a JSON object")
    return _parse_envelope(document, expected)


def parse_event(envelope: Mapping[str, Any], expected: frozenset[EventKind]) -> MaintenanceEvent:
    """Validate one event envelope (Event Grid schema or CloudEvents 1.0)."""
    event_id = envelope.get("id")
    if value_nesting_depth(envelope) > MAX_JSON_DEPTH:
        raise InvalidEvent(
            f"event nests deeper than {MAX_JSON_DEPTH} levels",
            event_id if isinstance(event_id, str) else None,
        )
    size = len(json.dumps(envelope, default=str))
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {size} bytes exceeds {MAX_EVENT_BYTES} bytes")
    return _parse_envelope(envelope, expected)


def _parse_envelope(
    envelope: Mapping[str, Any], expected: frozenset[EventKind]
) -> MaintenanceEvent:
    schema, type_key, time_key = _schema_of(envelope)
    event_id = _event_id(envelope)
    kind = _kind_of(envelope.get(type_key), event_id)
    if kind not in expected:
        wanted = " or ".join(sorted(k.value for k in expected))
        raise InvalidEvent(f"event type {kind.value} is not {wanted} here", event_id)
    raw_data = envelope.get("data")
    if not isinstance(raw_data, Mapping):
        raise InvalidEvent("event has no data object", event_id)
    data = _case_insensitive(raw_data, event_id)
    oddities: list[str] = []
    run, subscriptions = _run_and_subscriptions(envelope, schema, data, event_id, oddities)
    start, end, cutoff = _times(data, run, event_id, oddities)
    status = _status(data, event_id)
    event_time = None
    if envelope.get(time_key) is not None:
        event_time = _wrap(lambda: parse_time(envelope.get(time_key), time_key), event_id)
    return MaintenanceEvent(
        event_id=event_id,
        kind=kind,
        schema=schema,
        run=run,
        event_time=event_time,
        start=start,
        end=end,
        cancellation_cutoff=cutoff,
        subscription_ids=subscriptions,
        status=status,
        oddities=tuple(oddities),
    )


def _schema_of(envelope: Mapping[str, Any]) -> tuple[EnvelopeSchema, str, str]:
    """The envelope's schema, and the names of its type and time fields."""
    if "specversion" not in envelope:
        return EnvelopeSchema.EVENT_GRID, "eventType", "eventTime"
    if envelope.get("specversion") != "1.0":
        raise InvalidEvent(
            "unsupported CloudEvents specversion " + describe_for_log(envelope.get("specversion"))
        )
    return EnvelopeSchema.CLOUD_EVENTS, "type", "time"


def _event_id(envelope: Mapping[str, Any]) -> str:
    event_id = envelope.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidEvent("event has no id")
    if len(event_id) > MAX_EVENT_ID_LENGTH or not event_id.isprintable():
        raise InvalidEvent("event id is too long or holds control characters")
    return event_id


def _run_and_subscriptions(
    envelope: Mapping[str, Any],
    schema: EnvelopeSchema,
    data: Mapping[str, Any],
    event_id: str,
    oddities: list[str],
) -> tuple[RunId, tuple[str, ...]]:
    """The run, checked against the configuration and the topic, and its subscriptions."""
    try:
        run = RunId.parse(_required(data, "CorrelationId", event_id))
        configuration = ConfigurationId.parse(
            _required(data, "MaintenanceConfigurationId", event_id)
        )
        subscriptions = _subscription_ids(data.get("resourcesubscriptionids"), oddities)
    except InvalidId as e:
        raise InvalidEvent(str(e), event_id) from e
    if configuration != run.configuration:
        raise InvalidEvent("MaintenanceConfigurationId does not match the CorrelationId", event_id)
    _check_topic(envelope, schema, configuration, event_id)
    if not subscriptions:
        subscriptions = (configuration.subscription_id,)
        oddities.append(
            "ResourceSubscriptionIds is empty or missing; the machines are looked for in the "
            f"configuration's own subscription {configuration.subscription_id}"
        )
    return run, subscriptions


def _times(
    data: Mapping[str, Any], run: RunId, event_id: str, oddities: list[str]
) -> tuple[datetime, datetime, datetime | None]:
    """StartDateTime (T), EndDateTime and the cancellation cut-off, checked against each
    other."""
    start = _time(data, "StartDateTime", event_id)
    end = _time(data, "EndDateTime", event_id)
    if start != run.scheduled_start:
        # Run names are not documented to be UTC; a configuration has its own time zone.
        oddities.append(
            f"StartDateTime {start.isoformat()} differs from the run name {run.run_name} read as "
            "UTC (it may be in the configuration's time zone); T is taken from StartDateTime, "
            "the run name still identifies the run"
        )
    if end <= start:
        raise InvalidEvent("EndDateTime is not after StartDateTime", event_id)
    cutoff = None
    if data.get("cancellationcutoffdatetime") is not None:
        cutoff = _time(data, "CancellationCutOffDateTime", event_id)
        if cutoff > start:
            raise InvalidEvent("CancellationCutOffDateTime is after StartDateTime", event_id)
    return start, end, cutoff


def _status(data: Mapping[str, Any], event_id: str) -> str | None:
    status = data.get("status")
    if status is not None and (
        not isinstance(status, str) or len(status) > MAX_STATUS_LENGTH or not status.isprintable()
    ):
        raise InvalidEvent("Status is not a short string", event_id)
    return status


def _check_topic(
    envelope: Mapping[str, Any],
    schema: EnvelopeSchema,
    configuration: ConfigurationId,
    event_id: str,
) -> None:
    """The envelope's topic (Event Grid) or source (CloudEvents) names the configuration.

    A maintenance configuration's system topic always sets it to the configuration's id; an
    event from any other topic is not one the platform sent about this configuration.
    """
    name = "source" if schema is EnvelopeSchema.CLOUD_EVENTS else "topic"
    value = envelope.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"event has no {name}", event_id)
    try:
        topic = ConfigurationId.parse(value.strip())
    except InvalidId:
        topic = None
    if topic != configuration:
        raise InvalidEvent(
            f"event {name} {describe_for_log(value)} is not the system topic of "
            f"{configuration.text}",
            event_id,
        )


def _kind_of(event_type: object, event_id: str) -> EventKind:
    for kind in EventKind:
        if isinstance(event_type, str) and event_type.lower() == kind.value.lower():
            return kind
    raise InvalidEvent(
        f"event type {describe_for_log(event_type)} is not a maintenance event", event_id
    )


def _case_insensitive(data: Mapping[Any, Any], event_id: str) -> dict[str, Any]:
    folded: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        lower = key.lower()
        if lower in folded and folded[lower] != value:
            raise InvalidEvent(f"data holds {key!r} twice with different values", event_id)
        folded[lower] = value
    return folded


def _required(data: Mapping[str, Any], name: str, event_id: str) -> Any:
    value = data.get(name.lower())
    if value is None:
        raise InvalidEvent(f"data.{name} is missing", event_id)
    return value


def _time(data: Mapping[str, Any], name: str, event_id: str) -> datetime:
    value = _required(data, name, event_id)
    return _wrap(lambda: parse_time(value, f"data.{name}"), event_id)


def _wrap(parse: Callable[[], datetime], event_id: str) -> datetime:
    try:
        return parse()
    except InvalidEvent as e:
        raise InvalidEvent(e.reason, event_id) from e


_SUBSCRIPTION_SEPARATORS = re.compile(r"[\s,;]+")


def _subscription_ids(value: object, oddities: list[str]) -> tuple[str, ...]:
    """ResourceSubscriptionIds in any shape Azure's documents show: the schema table says a
    string, its examples an array; a string may hold one id, several separated by commas, or a
    JSON array. Empty or missing gives an empty tuple (the caller falls back)."""
    if value is None:
        return ()
    items: list[object]
    if isinstance(value, list):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                decoded = json.loads(text)
            except ValueError as e:
                raise InvalidId("ResourceSubscriptionIds is not a JSON array of ids") from e
            if not isinstance(decoded, list):
                raise InvalidId("ResourceSubscriptionIds is not a JSON array of ids")
            items = decoded
        else:
            items = [part for part in _SUBSCRIPTION_SEPARATORS.split(text) if part]
        if items:  # an empty string is noted as empty by the caller
            oddities.append(
                "ResourceSubscriptionIds came as a string, not an array; read "
                f"{len(items)} subscription id(s) from it"
            )
    else:
        raise InvalidId("ResourceSubscriptionIds is neither an array nor a string")
    if len(items) > MAX_SUBSCRIPTIONS:
        raise InvalidId(f"ResourceSubscriptionIds holds more than {MAX_SUBSCRIPTIONS} ids")
    return tuple(dict.fromkeys(parse_subscription_id(item) for item in items))


__all__ = [
    "MAX_EVENT_BYTES",
    "EnvelopeSchema",
    "EventKind",
    "InvalidEvent",
    "MaintenanceEvent",
    "describe_for_log",
    "parse_delivery",
    "parse_event",
    "parse_time",
]
