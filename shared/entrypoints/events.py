"""Maintenance events in: two Event Grid triggers (pre, post) and a Storage-queue trigger for
event subscriptions that deliver to a queue.

An event the app cannot use (malformed, not a maintenance event, a configuration it does not
manage, a topic that is not the configuration's system topic) is refused loudly (an ERROR line,
a refused-event record listed by GET /api/events/refused, the webhook) and without an exception:
raising would make Event Grid retry it for 24 hours. An infrastructure failure (ledger storage)
raises, so the delivery is retried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared import bootstrap
from shared.domain.events import (
    EventKind,
    InvalidEvent,
    MaintenanceEvent,
    describe_for_log,
    parse_delivery,
    parse_event,
)

if TYPE_CHECKING:
    from shared.services.intake import IntakeOutcome

log = logging.getLogger(__name__)

EVENTS_QUEUE = "maintenance-events"
PRE_ONLY = frozenset({EventKind.PRE})
POST_ONLY = frozenset({EventKind.POST})
ANY_KIND = frozenset(EventKind)

bp = func.Blueprint()


@bp.function_name("on_pre_maintenance_event")
@bp.event_grid_trigger(arg_name="event")
def on_pre_maintenance_event(event: func.EventGridEvent) -> None:
    """Pre maintenance event delivered by an Event Grid subscription."""
    _take_in(
        lambda: parse_event(envelope_of(event), PRE_ONLY),
        "Event Grid (pre)",
        lambda: _envelope_text(event),
        event.id,
    )


@bp.function_name("on_post_maintenance_event")
@bp.event_grid_trigger(arg_name="event")
def on_post_maintenance_event(event: func.EventGridEvent) -> None:
    """Post maintenance event delivered by an Event Grid subscription."""
    _take_in(
        lambda: parse_event(envelope_of(event), POST_ONLY),
        "Event Grid (post)",
        lambda: _envelope_text(event),
        event.id,
    )


@bp.function_name("on_maintenance_event_message")
@bp.queue_trigger(arg_name="message", queue_name=EVENTS_QUEUE, connection="AzureWebJobsStorage")
def on_maintenance_event_message(message: func.QueueMessage) -> None:
    """Pre or post event delivered by an Event Grid subscription to a Storage queue."""
    _take_in(
        lambda: parse_delivery(message.get_body(), ANY_KIND),
        f"queue {EVENTS_QUEUE} (message {message.id})",
        lambda: message.get_body().decode("utf-8", errors="replace"),
        None,
    )


def envelope_of(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The envelope as it came over the wire, rebuilt from the binding's object."""
    if isinstance(event, func.CloudEvent):
        return {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "time": _iso(event.time),
            "subject": event.subject,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": _iso(event.event_time),
        "dataVersion": event.data_version,
        "data": event.get_json(),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _envelope_text(event: func.EventGridEvent | func.CloudEvent) -> str:
    try:
        return json.dumps(envelope_of(event), default=str)
    except (TypeError, ValueError) as e:  # data that is not JSON: keep what can be said
        return f"(event {event.id!r}: its data could not be read: {type(e).__name__})"


def _take_in(
    parse: Callable[[], MaintenanceEvent],
    channel: str,
    payload: Callable[[], str],
    envelope_id: str | None,
) -> IntakeOutcome | None:
    # Imported on the first event, not when the worker indexes the functions (cold start).
    from shared.services.intake import follow_up, preparation_delay, take_in_event, unmanaged_reason

    services = bootstrap.container()
    try:
        event = parse()
    except InvalidEvent as refusal:
        _refuse(channel, refusal.reason, refusal.event_id or envelope_id, payload())
        return None
    unmanaged = unmanaged_reason(event, services.settings.target_configuration_ids or None)
    if unmanaged is not None:
        _refuse(channel, unmanaged, event.event_id, payload())
        return None
    # Resource Graph is asked (and its client built) only about a post event before its run.
    early_post = event.kind is EventKind.POST and services.clock.now() < event.start
    graph = services.resource_graph if early_post else None
    outcome = take_in_event(event, services.ledger, services.clock, graph)
    task = follow_up(event, outcome)
    if task is not None:
        start = outcome.run.scheduled_start if outcome.run else event.start
        services.task_queue.send(task, preparation_delay(task, services.clock.now(), start))
    log.info(
        "Took in %s event %s for run %s from %s: %s",
        event.kind.short,
        describe_for_log(event.event_id),
        event.run.text,
        channel,
        "duplicate, nothing changed"
        if outcome.duplicate
        else "held: it came before the run's start"
        if outcome.held
        else "recorded",
    )
    return outcome


def _refuse(channel: str, reason: str, event_id: str | None, payload: str) -> None:
    from shared.services.intake import refuse_event

    services = bootstrap.container()
    refuse_event(
        channel=channel,
        reason=reason,
        event_id=event_id,
        payload=payload,
        ledger=services.ledger,
        clock=services.clock,
        notifier=services.notifier,
    )
