"""The run ledger on Azure Table storage (azure-data-tables).

One table. A run's rows share a partition, so an event and its run are written in one
entity-group transaction:

| PartitionKey | RowKey | what |
|---|---|---|
| `<subscription>|<resource group>|<configuration>|<run name>` (lower case) | `run` | the run |
| same | `watch` | the last round its watch loop began (verify, gate, finish) |
| same | `event|pre|<sha256(id)>`, `event|post|<sha256(id)>` | an event seen (dedupe key) |
| same | `machine|<sha256(resource id)>` | a machine of the run |
| same | `cancel|<requested at>|<request id>` | a cancel request and its audit |
| same | `note|<at>|<id>` | a note: an error, a warning, a decision |
| `claim|<sha256(machine id)>` | `claim` | which run owns a VM the app started, which runs need it |
| `refused` | `refused|<inverted time>|<id>` | an event the app refused (newest first) |
| `runindex` | `all|<inverted start>|<run>`, `cfg|…`, `status|…`, `open|…`, … | the run index |

The run index is one partition, so a run's index rows are written in one entity-group
transaction. `<inverted start>` is 9999999999 minus the scheduled start in Unix seconds, so a
range read returns the newest runs first; `GET /api/runs` reads one page of one key range (all,
a configuration, a configuration name or a status), a single-run report reads the `named` range
and then the run's own partition, and the reconcile tick reads the `open` range and the known
configurations instead of every run. Index rows are copies of the run row (with the run row's
ETag in `RunVersion`); the `all` row also lists which status rows the run has, so a status change
removes the old ones in the same transaction.

State changes are ETag-checked (If-Match), so two instances cannot overwrite each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableServiceClient, TableTransactionError

from shared.config import StorageConnection
from shared.domain.errors import DuplicateEvent, LedgerConflict, LedgerUnavailable
from shared.domain.ids import MachineId, RunId
from shared.domain.machines import PowerState
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineAction,
    MachineClaim,
    MachineRecord,
    NoteLevel,
    RefusedEvent,
    Run,
    RunNote,
    WatchRound,
    check_saved_together,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.adapters.http_transport import EndpointTransports

from shared.adapters.table_rows import (
    CLAIM_ROW,
    INVERTED_TIME_BASE,
    LEASE_PARTITION,
    MAX_NOTE_LENGTH,
    REFUSED_PARTITION,
    TRANSACTION_LIMIT,
    WATCH_ROW,
    base_entity,
    cancel_entity,
    cancel_from,
    checked_operation,
    claim_partition,
    etag_of,
    event_entity,
    event_from,
    is_exists_error,
    is_precondition_error,
    machine_entity,
    machine_from,
    machine_row_key,
    moment_of,
    partition_key,
    required_moment,
    run_entity,
    strings_of,
    unavailable_on_error,
    utc_or_none,
    with_version,
    without_none,
)
from shared.adapters.table_run_index import RunIndex
from shared.adapters.table_wire import odata_filter

log = logging.getLogger(__name__)


# Bounded retries: an Event Grid delivery waits 30 s for the answer, so fail well before that
# and let Event Grid retry. azure-core's retry policy: two retries 1 s then 2 s apart, a
# storage account that does not take the connection within 3 s counts as down, and one call
# with its retries never takes longer than 20 s.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 2,
    "connection_timeout": 3,
    "read_timeout": 10,
    "timeout": 20,
}


def build_table_service(
    storage: StorageConnection,
    credential: TokenCredential | None = None,
    transports: EndpointTransports | None = None,
) -> TableServiceClient:
    """A Table service client for the app's storage account, on the process's pooled transport
    for the table endpoint when `transports` is given."""
    options = (
        dict(CLIENT_OPTIONS)
        if transports is None
        else transports.storage_options("table", CLIENT_OPTIONS)
    )
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string, **options)
    if storage.table_endpoint is None or credential is None:
        raise ValueError("an identity-based connection needs a table endpoint and a credential")
    return TableServiceClient(endpoint=storage.table_endpoint, credential=credential, **options)


class TableRunLedger(RunIndex):
    """RunLedger on one Azure table."""

    def save_run(self, run: Run) -> Run:
        """Create or update (ETag-checked) a run."""
        entity = run_entity(run)
        saved = with_version(run, self._write(entity, run.version))
        self._index_run(saved, created=run.version is None)
        return saved

    def record_event(self, event: EventRecord, run: Run) -> Run:
        """Store the event row and the run row in one transaction."""
        if event.run_id != run.run_id:
            raise ValueError("event and run differ")
        operations: list[Any] = [
            ("create", event_entity(event)),
            checked_operation(run_entity(run), run.version),
        ]
        try:
            with unavailable_on_error("record an event"):
                results = self.wire.transact(operations)
        except TableTransactionError as e:
            if e.index == 0 and is_exists_error(e):
                raise DuplicateEvent(f"{event.kind.short} event {event.event_id!r}") from e
            if e.index == 1 and (is_exists_error(e) or is_precondition_error(e)):
                raise LedgerConflict(f"run {run.run_id.text} changed") from e
            raise LedgerUnavailable(f"transaction failed: {e.message}") from e
        saved = with_version(run, str(results[1]["etag"]))
        self._index_run(saved, created=run.version is None)
        return saved

    def list_events(self, run_id: RunId) -> Iterator[EventRecord]:
        """Events of a run."""
        for entity in self._query(partition_key(run_id), "event|"):
            yield event_from(entity, run_id)

    def find_machine(self, run_id: RunId, resource_id: str) -> MachineRecord | None:
        """One machine of a run, or None."""
        entity = self._get(partition_key(run_id), machine_row_key(resource_id))
        return None if entity is None else machine_from(entity, run_id)

    def save_machine(self, machine: MachineRecord) -> MachineRecord:
        """Create or update (ETag-checked) a machine row."""
        entity = machine_entity(machine)
        return with_version(machine, self._write(entity, machine.version))

    def add_machines(self, machines: Iterable[MachineRecord]) -> int:
        """Create the rows that do not exist yet, 100 to a transaction; returns the count."""
        by_run: dict[str, list[MachineRecord]] = {}
        for machine in machines:
            by_run.setdefault(partition_key(machine.run_id), []).append(machine)
        created = 0
        for records in by_run.values():
            existing = {m.resource_id.lower() for m in self.list_machines(records[0].run_id)}
            fresh = {
                m.resource_id.lower(): m for m in records if m.resource_id.lower() not in existing
            }
            batch = [("create", machine_entity(m)) for m in fresh.values()]
            for start in range(0, len(batch), TRANSACTION_LIMIT):
                chunk = batch[start : start + TRANSACTION_LIMIT]
                try:
                    with unavailable_on_error("add machines"):
                        self.wire.transact(chunk)
                except TableTransactionError as e:
                    if not is_exists_error(e):
                        raise LedgerUnavailable(f"transaction failed: {e.message}") from e
                    # Another worker added some of these meanwhile: add the rest one by one.
                    created += self._create_each(chunk)
                    continue
                created += len(chunk)
        return created

    def _create_each(self, operations: list[tuple[str, dict[str, Any]]]) -> int:
        created = 0
        for _, entity in operations:
            try:
                self._write(entity, None)
                created += 1
            except LedgerConflict:
                continue
        return created

    def save_machines(self, machines: Sequence[MachineRecord]) -> list[MachineRecord]:
        """Create or update (each ETag-checked) several machine rows of one run in one
        entity-group transaction: all or nothing; new versions from the transaction's answer."""
        check_saved_together(machines)
        if not machines:
            return []
        if len(machines) == 1:
            # The same condition for one row, at a third of a transaction's CPU (azure-core
            # builds and parses a transaction's multipart body with the email package).
            return [self.save_machine(machines[0])]
        operations = [checked_operation(machine_entity(m), m.version) for m in machines]
        try:
            with unavailable_on_error("save machines"):
                results = self.wire.transact(operations)
        except TableTransactionError as e:
            # 412: a row changed; 409: a created row exists; 404: an updated row is gone.
            if is_exists_error(e) or is_precondition_error(e) or e.status_code == 404:
                raise LedgerConflict(
                    f"a machine row changed or exists: none of {len(machines)} was saved"
                ) from e
            raise LedgerUnavailable(f"transaction failed: {e.message}") from e
        return [
            with_version(machine, str(result["etag"]))
            for machine, result in zip(machines, results, strict=True)
        ]

    def list_machines(self, run_id: RunId) -> Iterator[MachineRecord]:
        """Machines of a run."""
        for entity in self._query(partition_key(run_id), "machine|"):
            yield machine_from(entity, run_id)

    def list_machines_not_seen_running(self, run_id: RunId) -> Iterator[MachineRecord]:
        """Machines of a run but those Started and seen running, filtered by the service (a
        row without a power state is kept: a comparison with a missing property is false)."""
        lower, upper = "machine|", "machine}"
        with unavailable_on_error("query the ledger"):
            for entity in self.wire.query(
                odata_filter(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
                    " and not (Action eq @started and LastPowerState eq @running)",
                    pk=partition_key(run_id),
                    lo=lower,
                    hi=upper,
                    started=MachineAction.STARTED.value,
                    running=str(PowerState.RUNNING),
                )
            ):
                yield machine_from(entity, run_id)

    def find_machines(
        self, run_id: RunId, machines: Iterable[MachineId]
    ) -> dict[MachineId, MachineRecord]:
        """The rows of these machines of one run: one range query over the run's partition
        from the lowest to the highest of their row keys (the SDK follows the service's
        continuations, 1,000 rows a page), keeping only the rows asked for. Machines cut into
        batches `in_storage_order` make each batch's range exactly its own rows; scattered
        machines are read right too, through a wider range."""
        asked = {machine_row_key(m.text): m for m in machines}
        if not asked:
            return {}
        found: dict[MachineId, MachineRecord] = {}
        with unavailable_on_error("read machines"):
            for entity in self.wire.query(
                odata_filter(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
                    pk=partition_key(run_id),
                    lo=min(asked),
                    hi=max(asked),
                )
            ):
                machine = asked.get(str(entity["RowKey"]))
                if machine is not None:
                    found[machine] = machine_from(entity, run_id)
        return found

    def in_storage_order(self, machines: Iterable[MachineId]) -> list[MachineId]:
        """By row key: the order of a run's machine rows in its partition."""
        return sorted(machines, key=lambda m: machine_row_key(m.text))

    def find_watch_round(self, run_id: RunId) -> WatchRound | None:
        """The run's watch round (its own row in the run's partition), or None."""
        entity = self._get(partition_key(run_id), WATCH_ROW)
        if entity is None:
            return None
        return WatchRound(run_id, entity.get("Mark"), etag_of(entity))

    def save_watch_round(self, watch: WatchRound) -> WatchRound:
        """Create or update (ETag-checked) the run's watch round."""
        entity = without_none(
            {**base_entity(watch.run_id, WATCH_ROW), "Kind": "watch", "Mark": watch.mark}
        )
        return dataclasses.replace(watch, version=self._write(entity, watch.version))

    def find_claim(self, machine: MachineId) -> MachineClaim | None:
        """Who owns / needs a machine across runs."""
        entity = self._get(claim_partition(machine.text), CLAIM_ROW)
        if entity is None:
            return None
        return MachineClaim(
            resource_id=entity["ResourceId"],
            owner_run=entity.get("OwnerRun"),
            needed_by=strings_of(entity.get("NeededBy")),
            version=etag_of(entity),
        )

    def save_claim(self, claim: MachineClaim) -> MachineClaim:
        """Create or update (ETag-checked) a machine's claim."""
        entity = without_none(
            {
                "PartitionKey": claim_partition(claim.resource_id),
                "RowKey": CLAIM_ROW,
                "Kind": "claim",
                "ResourceId": claim.resource_id,
                "OwnerRun": claim.owner_run,
                "NeededBy": json.dumps(list(claim.needed_by)),
            }
        )
        return dataclasses.replace(claim, version=self._write(entity, claim.version))

    def delete_claim(self, claim: MachineClaim) -> None:
        """Remove a claim as read (ETag-checked)."""
        if claim.version is None:
            raise LedgerConflict(f"claim of {claim.resource_id} was never stored")
        try:
            with unavailable_on_error("delete a claim"):
                self.table.delete_entity(
                    claim_partition(claim.resource_id),
                    CLAIM_ROW,
                    etag=claim.version,
                    match_condition=MatchConditions.IfNotModified,
                )
        except ResourceModifiedError as e:
            raise LedgerConflict(f"claim of {claim.resource_id} changed") from e

    def acquire_lease(self, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
        """Take (or renew) a named lease until now + duration; False if someone else holds it."""
        entity = self._get(LEASE_PARTITION, name)
        version = None
        if entity is not None:
            expires = moment_of(entity, "ExpiresAt")
            if entity.get("Holder") != holder and expires is not None and expires > now:
                return False
            version = etag_of(entity)
        lease = {
            "PartitionKey": LEASE_PARTITION,
            "RowKey": name,
            "Kind": "lease",
            "Holder": holder,
            "ExpiresAt": utc_or_none(now + duration),
        }
        try:
            self._write(lease, version)
        except LedgerConflict:
            return False
        return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give a lease back early (only its holder can)."""
        entity = self._get(LEASE_PARTITION, name)
        if entity is None or entity.get("Holder") != holder:
            return
        with (
            unavailable_on_error("release a lease"),
            contextlib.suppress(ResourceModifiedError, ResourceNotFoundError),
        ):
            self.table.delete_entity(
                LEASE_PARTITION,
                name,
                etag=etag_of(entity),
                match_condition=MatchConditions.IfNotModified,
            )

    def add_note(self, note: RunNote) -> None:
        """Append a note to the run."""
        stamp = note.at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        entity = without_none(
            {
                **base_entity(note.run_id, f"note|{stamp}|{uuid.uuid4().hex[:12]}"),
                "Kind": "note",
                "At": utc_or_none(note.at),
                "Level": note.level.value,
                "Source": note.source,
                "Message": note.message[:MAX_NOTE_LENGTH],
            }
        )
        self._write(entity, None)

    def list_notes(self, run_id: RunId) -> Iterator[RunNote]:
        """The run's notes, oldest first."""
        for entity in self._query(partition_key(run_id), "note|"):
            yield RunNote(
                run_id=run_id,
                at=required_moment(entity, "At"),
                level=NoteLevel(entity["Level"]),
                source=entity["Source"],
                message=entity["Message"],
            )

    def add_cancel_request(self, request: CancelRequest) -> None:
        """Append a cancel request to the audit."""
        entity = cancel_entity(request)
        self._write(entity, None)

    def list_cancel_requests(self, run_id: RunId) -> Iterator[CancelRequest]:
        """Cancel requests of a run, oldest first (row keys sort by time)."""
        for entity in self._query(partition_key(run_id), "cancel|"):
            yield cancel_from(entity, run_id)

    def add_refused_event(self, refusal: RefusedEvent) -> RefusedEvent:
        """Keep a refused delivery; returns it with its record id."""
        at = refusal.refused_at.astimezone(UTC)
        micros = int(at.timestamp() * 1_000_000)
        record_id = f"{INVERTED_TIME_BASE - micros:020d}-{uuid.uuid4().hex[:12]}"
        entity = without_none(
            {
                "PartitionKey": REFUSED_PARTITION,
                "RowKey": f"refused|{record_id}",
                "Kind": "refused",
                "RefusedAt": at,
                "Channel": refusal.channel[:MAX_NOTE_LENGTH],
                "Reason": refusal.reason[:MAX_NOTE_LENGTH],
                "EventId": refusal.event_id,
                "Excerpt": refusal.excerpt[:MAX_NOTE_LENGTH],
            }
        )
        self._write(entity, None)
        return dataclasses.replace(refusal, record_id=record_id)

    def list_refused_events(self, limit: int) -> list[RefusedEvent]:
        """The newest `limit` refused deliveries, newest first."""
        refused: list[RefusedEvent] = []
        for entity in self._query(REFUSED_PARTITION, "refused|"):
            refused.append(
                RefusedEvent(
                    refused_at=required_moment(entity, "RefusedAt"),
                    channel=entity.get("Channel", ""),
                    reason=entity.get("Reason", ""),
                    event_id=entity.get("EventId"),
                    excerpt=entity.get("Excerpt", ""),
                    record_id=str(entity["RowKey"]).removeprefix("refused|"),
                )
            )
            if len(refused) >= limit:
                break
        return refused
