"""Rows of the ledger table: their keys, and the mapping between table entities and the
domain's records (runs, events, machines, cancel requests). See table_ledger for the layout."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError, UpdateMode

from shared.domain.errors import LedgerUnavailable
from shared.domain.events import EnvelopeSchema, EventKind
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineAction,
    MachineKind,
    MachineRecord,
    Run,
    RunStatus,
)
from shared.domain.vocabulary import CancelOutcome, CancelSource, GateOutcome, PlatformStatus

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
RowT = TypeVar("RowT", Run, MachineRecord)
E = TypeVar("E", GateOutcome, CancelSource)

RUN_ROW = "run"
WATCH_ROW = "watch"  # the run's watch round, beside its run row
CLAIM_ROW = "claim"
REFUSED_PARTITION = "refused"
# Row keys sort ascending; counting down from this many microseconds lists the newest first.
INVERTED_TIME_BASE = 10**19
LEASE_PARTITION = "lease"
TRANSACTION_LIMIT = 100  # entities in one entity-group transaction
MAX_NOTE_LENGTH = 4000


def partition_key(run_id: RunId) -> str:
    """The partition of a run: its configuration and run name, lower case."""
    configuration = run_id.configuration
    return "|".join(
        (
            configuration.subscription_id,
            configuration.resource_group.lower(),
            configuration.name.lower(),
            run_id.run_name,
        )
    )


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def event_row_key(kind: EventKind, event_id: str) -> str:
    """Row key of an event: unique per (event type, id)."""
    return f"event|{kind.short}|{digest(event_id)}"


def claim_partition(resource_id: str) -> str:
    """Partition of a machine's claim (ARM ids compare case-insensitively)."""
    return f"claim|{digest(resource_id.lower())}"


def machine_row_key(resource_id: str) -> str:
    """Row key of a machine of a run (ARM ids compare case-insensitively)."""
    return f"machine|{digest(resource_id.lower())}"


@contextlib.contextmanager
def unavailable_on_error(doing: str) -> Iterator[None]:
    """Translate storage failures, other than those the callers handle, to LedgerUnavailable."""
    try:
        yield
    except (
        ResourceNotFoundError,
        ResourceExistsError,
        ResourceModifiedError,
        TableTransactionError,
    ):
        raise
    except AzureError as e:
        raise LedgerUnavailable(f"could not {doing}: {e}") from e


def checked_operation(entity: dict[str, Any], version: str | None) -> tuple[Any, ...]:
    """An entity-group transaction's operation writing `entity` as `save_*` does: a create
    when it has no version yet, else a replace only while the stored row has that version."""
    if version is None:
        return ("create", entity)
    return (
        "update",
        entity,
        {
            "mode": UpdateMode.REPLACE,
            "etag": version,
            "match_condition": MatchConditions.IfNotModified,
        },
    )


def is_exists_error(error: TableTransactionError) -> bool:
    return (
        str(getattr(error, "error_code", ""))
        in ("EntityAlreadyExists", "TableErrorCode.entity_already_exists")
        or error.status_code == 409
    )


def is_precondition_error(error: TableTransactionError) -> bool:
    return error.status_code == 412 or "UpdateConditionNotSatisfied" in str(
        getattr(error, "error_code", "")
    )


def with_version(row: RowT, version: str) -> RowT:
    return dataclasses.replace(row, version=version)


def etag_of(entity: Mapping[str, Any]) -> str | None:
    """The ETag the SDK keeps in a TableEntity's metadata."""
    metadata = getattr(entity, "metadata", None)
    return None if metadata is None else str(metadata["etag"])


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def moment_of(entity: Mapping[str, Any], name: str) -> datetime | None:
    value = entity.get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def required_moment(entity: Mapping[str, Any], name: str) -> datetime:
    value = moment_of(entity, name)
    if value is None:
        raise LedgerUnavailable(f"ledger row {entity.get('RowKey')!r} has no {name}")
    return value


def strings_of(value: Any) -> tuple[str, ...]:
    return tuple(json.loads(value)) if value else ()


def base_entity(run_id: RunId, row: str) -> dict[str, Any]:
    return {
        "PartitionKey": partition_key(run_id),
        "RowKey": row,
        "CorrelationId": run_id.text,
        "ConfigurationId": run_id.configuration.text,
        "RunName": run_id.run_name,
    }


def run_id_of(entity: Mapping[str, Any]) -> RunId:
    return RunId.of(ConfigurationId.parse(entity["ConfigurationId"]), entity["RunName"])


def without_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if v is not None}


def run_entity(run: Run) -> dict[str, Any]:
    return without_none(
        {
            **base_entity(run.run_id, RUN_ROW),
            "Kind": "run",
            "ScheduledStart": run.scheduled_start,
            "Status": run.status.value,
            "CreatedAt": utc_or_none(run.created_at),
            "UpdatedAt": utc_or_none(run.updated_at),
            "EndDateTime": utc_or_none(run.end),
            "CancellationCutOff": utc_or_none(run.cancellation_cutoff),
            "SubscriptionIds": json.dumps(list(run.subscription_ids)),
            "PreEventAt": utc_or_none(run.pre_event_at),
            "PostEventAt": utc_or_none(run.post_event_at),
            "PostEventStatus": run.post_event_status,
            "PlatformStatus": text_or_none(run.platform_status),
            "GateOutcome": text_or_none(run.gate_outcome),
            "GateDetail": run.gate_detail,
            "CancelSource": text_or_none(run.cancel_source),
            "CancelRequestedAt": utc_or_none(run.cancel_requested_at),
            "WrapUpStartedAt": utc_or_none(run.wrap_up_started_at),
            "CompletedAt": utc_or_none(run.completed_at),
            "ReportLocation": run.report_location,
            "PreEventMissed": run.pre_event_missed or None,
            "WrapUpRequestedAt": utc_or_none(run.wrap_up_requested_at),
            "RedrivenAt": utc_or_none(run.redriven_at),
            "StuckReported": run.stuck_reported or None,
            "StartDateTime": utc_or_none(run.start),
        }
    )


def run_from(entity: Mapping[str, Any]) -> Run:
    created = required_moment(entity, "CreatedAt")
    updated = required_moment(entity, "UpdatedAt")
    return Run(
        run_id=run_id_of(entity),
        status=RunStatus(entity["Status"]),
        created_at=created,
        updated_at=updated,
        end=moment_of(entity, "EndDateTime"),
        cancellation_cutoff=moment_of(entity, "CancellationCutOff"),
        subscription_ids=strings_of(entity.get("SubscriptionIds")),
        pre_event_at=moment_of(entity, "PreEventAt"),
        post_event_at=moment_of(entity, "PostEventAt"),
        post_event_status=entity.get("PostEventStatus"),
        platform_status=PlatformStatus.of(entity.get("PlatformStatus")),
        gate_outcome=member_of(GateOutcome, entity.get("GateOutcome")),
        gate_detail=entity.get("GateDetail"),
        cancel_source=member_of(CancelSource, entity.get("CancelSource")),
        cancel_requested_at=moment_of(entity, "CancelRequestedAt"),
        wrap_up_started_at=moment_of(entity, "WrapUpStartedAt"),
        completed_at=moment_of(entity, "CompletedAt"),
        report_location=entity.get("ReportLocation"),
        pre_event_missed=bool(entity.get("PreEventMissed", False)),
        wrap_up_requested_at=moment_of(entity, "WrapUpRequestedAt"),
        redriven_at=moment_of(entity, "RedrivenAt"),
        stuck_reported=bool(entity.get("StuckReported", False)),
        start=moment_of(entity, "StartDateTime"),
        version=etag_of(entity),
    )


def event_entity(event: EventRecord) -> dict[str, Any]:
    return without_none(
        {
            **base_entity(event.run_id, event_row_key(event.kind, event.event_id)),
            "Kind": "event",
            "EventType": event.kind.value,
            "EventId": event.event_id,
            "Schema": event.schema.value,
            "ReceivedAt": utc_or_none(event.received_at),
            "EventTime": utc_or_none(event.event_time),
            "StartDateTime": utc_or_none(event.start),
            "EndDateTime": utc_or_none(event.end),
            "CancellationCutOff": utc_or_none(event.cancellation_cutoff),
            "SubscriptionIds": json.dumps(list(event.subscription_ids)),
            "EventStatus": event.status,
        }
    )


def event_from(entity: Mapping[str, Any], run_id: RunId) -> EventRecord:
    received, start, end = (
        required_moment(entity, n) for n in ("ReceivedAt", "StartDateTime", "EndDateTime")
    )
    return EventRecord(
        run_id=run_id,
        kind=EventKind(entity["EventType"]),
        event_id=entity["EventId"],
        schema=EnvelopeSchema(entity["Schema"]),
        received_at=received,
        event_time=moment_of(entity, "EventTime"),
        start=start,
        end=end,
        cancellation_cutoff=moment_of(entity, "CancellationCutOff"),
        subscription_ids=strings_of(entity.get("SubscriptionIds")),
        status=entity.get("EventStatus"),
    )


def machine_entity(machine: MachineRecord) -> dict[str, Any]:
    return without_none(
        {
            **base_entity(machine.run_id, machine_row_key(machine.resource_id)),
            "Kind": "machine",
            "ResourceId": machine.resource_id,
            "MachineKind": machine.kind.value,
            "PriorPowerState": machine.prior_power_state,
            "Action": machine.action.value,
            "UpdatedAt": utc_or_none(machine.updated_at),
            "OwnerRun": machine.owner_run,
            "LastPowerState": machine.last_power_state,
            "ErrorCode": machine.error_code,
            "ErrorMessage": machine.error_message,
            "History": json.dumps([list(h) for h in machine.history]),
        }
    )


def machine_from(entity: Mapping[str, Any], run_id: RunId) -> MachineRecord:
    updated = required_moment(entity, "UpdatedAt")
    return MachineRecord(
        run_id=run_id,
        resource_id=entity["ResourceId"],
        kind=MachineKind(entity["MachineKind"]),
        prior_power_state=entity.get("PriorPowerState"),
        action=MachineAction(entity["Action"]),
        updated_at=updated,
        owner_run=entity.get("OwnerRun"),
        last_power_state=entity.get("LastPowerState"),
        error_code=entity.get("ErrorCode"),
        error_message=entity.get("ErrorMessage"),
        history=tuple(tuple(h) for h in json.loads(entity.get("History") or "[]")),
        version=etag_of(entity),
    )


def cancel_entity(request: CancelRequest) -> dict[str, Any]:
    stamp = request.requested_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return without_none(
        {
            **base_entity(request.run_id, f"cancel|{stamp}|{request.request_id}"),
            "Kind": "cancel",
            "RequestId": request.request_id,
            "RequestedAt": utc_or_none(request.requested_at),
            "RequestedBy": request.requested_by,
            "Reason": request.reason,
            "DryRun": request.dry_run,
            "Outcome": request.outcome.value,
            "WindowOpensAt": utc_or_none(request.window_opens_at),
            "WindowClosesAt": utc_or_none(request.window_closes_at),
            "Detail": request.detail,
            "ServiceCode": request.service_code,
            "ServiceMessage": request.service_message,
        }
    )


def cancel_from(entity: Mapping[str, Any], run_id: RunId) -> CancelRequest:
    requested, opens, closes = (
        required_moment(entity, n) for n in ("RequestedAt", "WindowOpensAt", "WindowClosesAt")
    )
    return CancelRequest(
        run_id=run_id,
        request_id=entity["RequestId"],
        requested_at=requested,
        requested_by=entity["RequestedBy"],
        reason=entity["Reason"],
        dry_run=bool(entity["DryRun"]),
        outcome=CancelOutcome(entity["Outcome"]),
        window_opens_at=opens,
        window_closes_at=closes,
        detail=entity.get("Detail", ""),
        service_code=entity.get("ServiceCode"),
        service_message=entity.get("ServiceMessage"),
    )


def text_or_none(word: str | None) -> str | None:
    """A word as the table stores it: plain text (an enum's value), or nothing."""
    return None if word is None else str(word)


def member_of(kind: type[E], word: str | None) -> E | None:
    """The stored word as its enum; a word this version does not know is logged and dropped
    (the row itself stays readable)."""
    if word is None:
        return None
    try:
        return kind(word)
    except ValueError:
        log.warning("Unknown %s %r in the ledger: ignored", kind.__name__, word)
        return None
