"""The run ledger on Azure Table storage (azure-data-tables).

One table. A run's rows share a partition, so an event and its run are written in one
entity-group transaction:

| PartitionKey | RowKey | what |
|---|---|---|
| `<subscription>|<resource group>|<configuration>|<run name>` (lower case) | `run` | the run |
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
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.config import StorageConnection
from shared.domain.errors import DuplicateEvent, LedgerConflict, LedgerUnavailable
from shared.domain.events import EnvelopeSchema, EventKind
from shared.domain.ids import ConfigurationId, MachineId, RunId
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineAction,
    MachineClaim,
    MachineKind,
    MachineRecord,
    NoteLevel,
    RefusedEvent,
    Run,
    RunNote,
    RunStatus,
)
from shared.domain.vocabulary import CancelOutcome, CancelSource, GateOutcome, PlatformStatus

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)
RowT = TypeVar("RowT", Run, MachineRecord)
E = TypeVar("E", GateOutcome, CancelSource)

RUN_ROW = "run"
CLAIM_ROW = "claim"
REFUSED_PARTITION = "refused"
# Row keys sort ascending; counting down from this many microseconds lists the newest first.
_INVERTED_TIME_BASE = 10**19
LEASE_PARTITION = "lease"
TRANSACTION_LIMIT = 100  # entities in one entity-group transaction
MAX_NOTE_LENGTH = 4000
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


INDEX_PARTITION = "runindex"
INDEX_ALL = "all|"
INDEX_OPEN = "open|"
INDEX_CONFIGURATION = "configuration|"
INDEX_DONE = "indexed"
INDEX_RETRIES = 4
# Newest first: the largest Unix time a run can have, minus its start.
INVERTED_BASE = 9_999_999_999


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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def event_row_key(kind: EventKind, event_id: str) -> str:
    """Row key of an event: unique per (event type, id)."""
    return f"event|{kind.short}|{_digest(event_id)}"


def claim_partition(resource_id: str) -> str:
    """Partition of a machine's claim (ARM ids compare case-insensitively)."""
    return f"claim|{_digest(resource_id.lower())}"


def machine_row_key(resource_id: str) -> str:
    """Row key of a machine of a run (ARM ids compare case-insensitively)."""
    return f"machine|{_digest(resource_id.lower())}"


def build_table_service(
    storage: StorageConnection, credential: TokenCredential | None = None
) -> TableServiceClient:
    """A Table service client for the app's storage account."""
    if storage.connection_string:
        return TableServiceClient.from_connection_string(
            storage.connection_string, **CLIENT_OPTIONS
        )
    if storage.table_endpoint is None or credential is None:
        raise ValueError("an identity-based connection needs a table endpoint and a credential")
    return TableServiceClient(
        endpoint=storage.table_endpoint, credential=credential, **CLIENT_OPTIONS
    )


class TableRunLedger:
    """RunLedger on one Azure table."""

    def __init__(self, service: TableServiceClient, table_name: str) -> None:
        self._service = service
        self._table_name = table_name
        self._table: TableClient | None = None

    @property
    def table(self) -> TableClient:
        """The table client; the table is created on first use, once per process."""
        if self._table is None:
            with _unavailable_on_error("create the ledger table"):
                self._service.create_table_if_not_exists(self._table_name)
            self._table = self._service.get_table_client(self._table_name)
        return self._table

    # Runs ---------------------------------------------------------------------------------

    def find_run(self, run_id: RunId) -> Run | None:
        """The run, or None."""
        entity = self._get(partition_key(run_id), RUN_ROW)
        return None if entity is None else _run_from(entity)

    def save_run(self, run: Run) -> Run:
        """Create or update (ETag-checked) a run."""
        entity = _run_entity(run)
        saved = _with_version(run, self._write(entity, run.version))
        self._index_run(saved)
        return saved

    def record_event(self, event: EventRecord, run: Run) -> Run:
        """Store the event row and the run row in one transaction."""
        if event.run_id != run.run_id:
            raise ValueError("event and run differ")
        operations: list[Any] = [("create", _event_entity(event))]
        run_entity = _run_entity(run)
        if run.version is None:
            operations.append(("create", run_entity))
        else:
            operations.append(
                (
                    "update",
                    run_entity,
                    {
                        "mode": UpdateMode.REPLACE,
                        "etag": run.version,
                        "match_condition": MatchConditions.IfNotModified,
                    },
                )
            )
        try:
            with _unavailable_on_error("record an event"):
                results = self.table.submit_transaction(operations)
        except TableTransactionError as e:
            if e.index == 0 and _is_exists(e):
                raise DuplicateEvent(f"{event.kind.short} event {event.event_id!r}") from e
            if e.index == 1 and (_is_exists(e) or _is_precondition(e)):
                raise LedgerConflict(f"run {run.run_id.text} changed") from e
            raise LedgerUnavailable(f"transaction failed: {e.message}") from e
        saved = _with_version(run, str(results[1]["etag"]))
        self._index_run(saved)
        return saved

    def list_runs(self) -> Iterator[Run]:
        """Every run row in the table."""
        with _unavailable_on_error("list runs"):
            for entity in self.table.query_entities("RowKey eq @row", parameters={"row": RUN_ROW}):
                yield _run_from(entity)

    def list_events(self, run_id: RunId) -> Iterator[EventRecord]:
        """Events of a run."""
        for entity in self._query(partition_key(run_id), "event|"):
            yield _event_from(entity, run_id)

    # The run index (reads that cost O(page), not O(history)) ------------------------------

    def list_runs_page(
        self,
        *,
        configuration: str | None,
        status: str | None,
        start_from: datetime | None,
        start_to: datetime | None,
        top: int,
        after: str | None,
    ) -> tuple[list[Run], str | None]:
        """Runs newest first from one key range of the index, at most `top`; the second value
        continues the listing (pass it as `after`), None when there is no more."""
        if status:
            prefix = f"status|{_digest(status.lower())}|"
        elif configuration and "/" in configuration:
            prefix = f"cfg|{_digest(configuration.lower())}|"
        elif configuration:
            prefix = f"name|{_digest(configuration.lower())}|"
        else:
            prefix = INDEX_ALL
        low, high = prefix, prefix[:-1] + "}"
        if start_to is not None:
            low = max(low, f"{prefix}{_inverted(start_to, round_up=True) + 1:010d}")
        if start_from is not None:
            high = min(high, f"{prefix}{_inverted(start_from, round_up=True) + 1:010d}")
        if after is not None:
            if not after.startswith(prefix):
                raise ValueError("continuation does not belong to this listing")
            low = max(low, after + "\x00")
        conditions = ["PartitionKey eq @pk", "RowKey ge @lo", "RowKey lt @hi"]
        parameters: dict[str, Any] = {"pk": INDEX_PARTITION, "lo": low, "hi": high}
        if status and configuration:
            # The status range is read; the configuration is filtered by the service.
            field = "IndexConfigurationKey" if "/" in configuration else "IndexConfigurationName"
            conditions.append(f"{field} eq @configuration")
            parameters["configuration"] = configuration.lower()
        runs: list[Run] = []
        last_key: str | None = None
        with _unavailable_on_error("list runs"):
            for entity in self.table.query_entities(
                " and ".join(conditions), parameters=parameters, results_per_page=top + 1
            ):
                run = _indexed_run(entity)
                if status and status.lower() not in (
                    run.status.value.lower(),
                    (run.platform_status or "").lower(),
                ):
                    continue  # a status row the last index write has not cleared yet
                if len(runs) == top:
                    return runs, last_key
                runs.append(run)
                last_key = str(entity["RowKey"])
        return runs, None

    def find_runs_named(self, configuration_name: str, run_name: str) -> list[Run]:
        """Runs of every configuration with this name and this run name (a short key range)."""
        prefix = f"named|{_digest(configuration_name.lower())}|{run_name}|"
        with _unavailable_on_error("find runs"):
            return [
                _indexed_run(entity)
                for entity in self.table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": INDEX_PARTITION, "lo": prefix, "hi": prefix[:-1] + "}"},
                )
            ]

    def list_open_runs(self) -> Iterator[Run]:
        """Runs that are not completed yet (from the index: O(open runs), not O(history))."""
        for entity in self._query(INDEX_PARTITION, INDEX_OPEN):
            yield _indexed_run(entity)

    def list_known_configurations(self) -> list[ConfigurationId]:
        """Every configuration the ledger has a run of."""
        return [
            ConfigurationId.parse(entity["ConfigurationId"])
            for entity in self._query(INDEX_PARTITION, INDEX_CONFIGURATION)
        ]

    def index_all_runs(self) -> int:
        """Write the index rows of every run (once, for runs stored before the index)."""
        count = 0
        for run in self.list_runs():
            self._index_run(run)
            count += 1
        return count

    def ensure_indexed(self) -> int:
        """Index the runs stored before the index existed, once per table (a marker row says
        it was done); returns how many runs were indexed now."""
        if self._get(INDEX_PARTITION, INDEX_DONE) is not None:
            return 0
        count = self.index_all_runs()
        with contextlib.suppress(LedgerConflict):
            self._write(
                {
                    "PartitionKey": INDEX_PARTITION,
                    "RowKey": INDEX_DONE,
                    "Kind": "runindex",
                    "Runs": count,
                },
                None,
            )
        return count

    def remove_runs_before(self, cutoff: datetime, limit: int) -> list[RunId]:
        """Delete up to `limit` runs scheduled before `cutoff` (one index page, the newest of
        them first: Tables reads keys in one order only): every row of their partitions, then
        their index rows. Returns the runs removed."""
        low = f"{INDEX_ALL}{_inverted(cutoff, round_up=True) + 1:010d}"
        removed: list[RunId] = []
        with _unavailable_on_error("find old runs"):
            pages = self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": INDEX_PARTITION, "lo": low, "hi": INDEX_ALL[:-1] + "}"},
                results_per_page=limit,
            ).by_page()
            entities = list(next(iter(pages), []))[:limit]
        for entity in entities:
            run = _indexed_run(entity)
            self._delete_partition(partition_key(run.run_id))
            keys = [k for k in _index_row_keys(run, _strings(entity.get("StatusKeys"))) if k]
            keys.append(_open_key(run))
            self._delete_rows(INDEX_PARTITION, keys)
            removed.append(run.run_id)
        return removed

    def _index_run(self, run: Run) -> None:
        """Bring the run's index rows in step with `run` (just saved) in one transaction.

        The `all` row is ETag-checked, so two writers cannot interleave; on a conflict the
        run row, the truth, is read again and indexed. The run's own write has succeeded
        whatever happens here: a failure is logged, and the next write of the run repairs it.
        """
        for _ in range(INDEX_RETRIES):
            try:
                current = self._get(INDEX_PARTITION, _all_key(run))
                operations = self._index_operations(run, current)
                try:
                    with _unavailable_on_error("index a run"):
                        self.table.submit_transaction(operations)
                    return
                except TableTransactionError:
                    fresh = self.find_run(run.run_id)
                    if fresh is None:
                        return
                    run = fresh
            except LedgerUnavailable as e:
                # Never raised to the caller: its write is done, and a caller that saw an error
                # would retry a write that already happened.
                log.error("Run %s saved but not indexed: %s", run.run_id.text, e)
                return
        log.error("Run %s saved but its index kept changing; indexed next time", run.run_id.text)

    def _index_operations(self, run: Run, current: Mapping[str, Any] | None) -> list[Any]:
        statuses = _status_keys(run)
        entity = {
            **_run_entity(run),
            "PartitionKey": INDEX_PARTITION,
            "Kind": "runindex",
            "RunVersion": run.version,
            "StatusKeys": json.dumps(statuses),
            "IndexConfigurationKey": run.run_id.configuration.key,
            "IndexConfigurationName": run.run_id.configuration.name.lower(),
        }
        entity = {k: v for k, v in entity.items() if v is not None}
        operations: list[Any] = []
        all_row = {**entity, "RowKey": _all_key(run)}
        if current is None:
            operations.append(("create", all_row))
        else:
            operations.append(
                (
                    "update",
                    all_row,
                    {
                        "mode": UpdateMode.REPLACE,
                        "etag": _etag(current),
                        "match_condition": MatchConditions.IfNotModified,
                    },
                )
            )
        for row_key in _index_row_keys(run, statuses)[1:]:
            operations.append(
                ("upsert", {**entity, "RowKey": row_key}, {"mode": UpdateMode.REPLACE})
            )
        if run.status is not RunStatus.COMPLETED:
            operations.append(
                ("upsert", {**entity, "RowKey": _open_key(run)}, {"mode": UpdateMode.REPLACE})
            )
        elif current is not None and current.get("Status") != RunStatus.COMPLETED.value:
            operations.append(
                ("delete", {"PartitionKey": INDEX_PARTITION, "RowKey": _open_key(run)})
            )
        previous = _strings(current.get("StatusKeys")) if current is not None else ()
        for gone in sorted(set(previous) - set(statuses)):
            operations.append(
                ("delete", {"PartitionKey": INDEX_PARTITION, "RowKey": _status_key(run, gone)})
            )
        configuration = run.run_id.configuration
        operations.append(
            (
                "upsert",
                {
                    "PartitionKey": INDEX_PARTITION,
                    "RowKey": f"{INDEX_CONFIGURATION}{_digest(configuration.key)}",
                    "Kind": "runindex",
                    "ConfigurationId": configuration.text,
                },
                {"mode": UpdateMode.REPLACE},
            )
        )
        return operations

    def _delete_partition(self, partition: str) -> None:
        with _unavailable_on_error("read a run to remove"):
            keys = [
                str(e["RowKey"])
                for e in self.table.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"]
                )
            ]
        self._delete_rows(partition, keys)

    def _delete_rows(self, partition: str, row_keys: list[str]) -> None:
        for start in range(0, len(row_keys), TRANSACTION_LIMIT):
            chunk = row_keys[start : start + TRANSACTION_LIMIT]
            try:
                with _unavailable_on_error("remove rows"):
                    self.table.submit_transaction(
                        [("delete", {"PartitionKey": partition, "RowKey": k}) for k in chunk]
                    )
            except TableTransactionError:
                # Some were gone already (another remover, or an open row never written).
                for key in chunk:
                    with (
                        _unavailable_on_error("remove a row"),
                        contextlib.suppress(ResourceNotFoundError),
                    ):
                        self.table.delete_entity(partition, key)

    # Machines -----------------------------------------------------------------------------

    def find_machine(self, run_id: RunId, resource_id: str) -> MachineRecord | None:
        """One machine of a run, or None."""
        entity = self._get(partition_key(run_id), machine_row_key(resource_id))
        return None if entity is None else _machine_from(entity, run_id)

    def save_machine(self, machine: MachineRecord) -> MachineRecord:
        """Create or update (ETag-checked) a machine row."""
        entity = _machine_entity(machine)
        return _with_version(machine, self._write(entity, machine.version))

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
            batch = [("create", _machine_entity(m)) for m in fresh.values()]
            for start in range(0, len(batch), TRANSACTION_LIMIT):
                chunk = batch[start : start + TRANSACTION_LIMIT]
                try:
                    with _unavailable_on_error("add machines"):
                        self.table.submit_transaction(chunk)
                except TableTransactionError as e:
                    if not _is_exists(e):
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

    def list_machines(self, run_id: RunId) -> Iterator[MachineRecord]:
        """Machines of a run."""
        for entity in self._query(partition_key(run_id), "machine|"):
            yield _machine_from(entity, run_id)

    # Claims (across runs) -----------------------------------------------------------------

    def find_claim(self, machine: MachineId) -> MachineClaim | None:
        """Who owns / needs a machine across runs."""
        entity = self._get(claim_partition(machine.text), CLAIM_ROW)
        if entity is None:
            return None
        return MachineClaim(
            resource_id=entity["ResourceId"],
            owner_run=entity.get("OwnerRun"),
            needed_by=_strings(entity.get("NeededBy")),
            version=_etag(entity),
        )

    def save_claim(self, claim: MachineClaim) -> MachineClaim:
        """Create or update (ETag-checked) a machine's claim."""
        entity = _drop_none(
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

    # Leases -------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
        """Take (or renew) a named lease until now + duration; False if someone else holds it."""
        entity = self._get(LEASE_PARTITION, name)
        version = None
        if entity is not None:
            expires = _when(entity, "ExpiresAt")
            if entity.get("Holder") != holder and expires is not None and expires > now:
                return False
            version = _etag(entity)
        lease = {
            "PartitionKey": LEASE_PARTITION,
            "RowKey": name,
            "Kind": "lease",
            "Holder": holder,
            "ExpiresAt": _utc(now + duration),
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
            _unavailable_on_error("release a lease"),
            contextlib.suppress(ResourceModifiedError, ResourceNotFoundError),
        ):
            self.table.delete_entity(
                LEASE_PARTITION,
                name,
                etag=_etag(entity),
                match_condition=MatchConditions.IfNotModified,
            )

    # Notes --------------------------------------------------------------------------------

    def add_note(self, note: RunNote) -> None:
        """Append a note to the run."""
        stamp = note.at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        entity = _drop_none(
            {
                **_base(note.run_id, f"note|{stamp}|{uuid.uuid4().hex[:12]}"),
                "Kind": "note",
                "At": _utc(note.at),
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
                at=_required_when(entity, "At"),
                level=NoteLevel(entity["Level"]),
                source=entity["Source"],
                message=entity["Message"],
            )

    # Cancel requests ----------------------------------------------------------------------

    def add_cancel_request(self, request: CancelRequest) -> None:
        """Append a cancel request to the audit."""
        entity = _cancel_entity(request)
        self._write(entity, None)

    def list_cancel_requests(self, run_id: RunId) -> Iterator[CancelRequest]:
        """Cancel requests of a run, oldest first (row keys sort by time)."""
        for entity in self._query(partition_key(run_id), "cancel|"):
            yield _cancel_from(entity, run_id)

    # Refused events -----------------------------------------------------------------------

    def add_refused_event(self, refusal: RefusedEvent) -> RefusedEvent:
        """Keep a refused delivery; returns it with its record id."""
        at = refusal.refused_at.astimezone(UTC)
        micros = int(at.timestamp() * 1_000_000)
        record_id = f"{_INVERTED_TIME_BASE - micros:020d}-{uuid.uuid4().hex[:12]}"
        entity = _drop_none(
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
                    refused_at=_required_when(entity, "RefusedAt"),
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

    # Storage ------------------------------------------------------------------------------

    def _get(self, partition: str, row: str) -> Mapping[str, Any] | None:
        try:
            with _unavailable_on_error("read the ledger"):
                return self.table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    def _query(self, partition: str, prefix: str) -> Iterator[Mapping[str, Any]]:
        # Row keys of one kind share a prefix; '}' sorts right after '|'.
        upper = prefix[:-1] + "}"
        with _unavailable_on_error("query the ledger"):
            yield from self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": partition, "lo": prefix, "hi": upper},
            )

    def _write(self, entity: dict[str, Any], version: str | None) -> str:
        try:
            with _unavailable_on_error("write the ledger"):
                if version is None:
                    meta = self.table.create_entity(entity)
                else:
                    meta = self.table.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=version,
                        match_condition=MatchConditions.IfNotModified,
                    )
        except (ResourceExistsError, ResourceModifiedError) as e:
            raise LedgerConflict(f"row {entity['RowKey']} changed or exists") from e
        return str(meta["etag"])


@contextlib.contextmanager
def _unavailable_on_error(doing: str) -> Iterator[None]:
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


def _is_exists(error: TableTransactionError) -> bool:
    return (
        str(getattr(error, "error_code", ""))
        in ("EntityAlreadyExists", "TableErrorCode.entity_already_exists")
        or error.status_code == 409
    )


def _is_precondition(error: TableTransactionError) -> bool:
    return error.status_code == 412 or "UpdateConditionNotSatisfied" in str(
        getattr(error, "error_code", "")
    )


def _with_version(row: RowT, version: str) -> RowT:
    return dataclasses.replace(row, version=version)


def _etag(entity: Mapping[str, Any]) -> str | None:
    """The ETag the SDK keeps in a TableEntity's metadata."""
    metadata = getattr(entity, "metadata", None)
    return None if metadata is None else str(metadata["etag"])


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _when(entity: Mapping[str, Any], name: str) -> datetime | None:
    value = entity.get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _required_when(entity: Mapping[str, Any], name: str) -> datetime:
    value = _when(entity, name)
    if value is None:
        raise LedgerUnavailable(f"ledger row {entity.get('RowKey')!r} has no {name}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(json.loads(value)) if value else ()


def _base(run_id: RunId, row: str) -> dict[str, Any]:
    return {
        "PartitionKey": partition_key(run_id),
        "RowKey": row,
        "CorrelationId": run_id.text,
        "ConfigurationId": run_id.configuration.text,
        "RunName": run_id.run_name,
    }


def _run_id_of(entity: Mapping[str, Any]) -> RunId:
    return RunId.of(ConfigurationId.parse(entity["ConfigurationId"]), entity["RunName"])


def _drop_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if v is not None}


def _run_entity(run: Run) -> dict[str, Any]:
    return _drop_none(
        {
            **_base(run.run_id, RUN_ROW),
            "Kind": "run",
            "ScheduledStart": run.scheduled_start,
            "Status": run.status.value,
            "CreatedAt": _utc(run.created_at),
            "UpdatedAt": _utc(run.updated_at),
            "EndDateTime": _utc(run.end),
            "CancellationCutOff": _utc(run.cancellation_cutoff),
            "SubscriptionIds": json.dumps(list(run.subscription_ids)),
            "PreEventAt": _utc(run.pre_event_at),
            "PostEventAt": _utc(run.post_event_at),
            "PostEventStatus": run.post_event_status,
            "PlatformStatus": _text(run.platform_status),
            "GateOutcome": _text(run.gate_outcome),
            "GateDetail": run.gate_detail,
            "CancelSource": _text(run.cancel_source),
            "CancelRequestedAt": _utc(run.cancel_requested_at),
            "WrapUpStartedAt": _utc(run.wrap_up_started_at),
            "CompletedAt": _utc(run.completed_at),
            "ReportLocation": run.report_location,
            "PreEventMissed": run.pre_event_missed or None,
            "WrapUpRequestedAt": _utc(run.wrap_up_requested_at),
            "RedrivenAt": _utc(run.redriven_at),
            "StuckReported": run.stuck_reported or None,
            "WatchRound": run.watch_round,
            "StartDateTime": _utc(run.start),
        }
    )


def _run_from(entity: Mapping[str, Any]) -> Run:
    created = _required_when(entity, "CreatedAt")
    updated = _required_when(entity, "UpdatedAt")
    return Run(
        run_id=_run_id_of(entity),
        status=RunStatus(entity["Status"]),
        created_at=created,
        updated_at=updated,
        end=_when(entity, "EndDateTime"),
        cancellation_cutoff=_when(entity, "CancellationCutOff"),
        subscription_ids=_strings(entity.get("SubscriptionIds")),
        pre_event_at=_when(entity, "PreEventAt"),
        post_event_at=_when(entity, "PostEventAt"),
        post_event_status=entity.get("PostEventStatus"),
        platform_status=PlatformStatus.of(entity.get("PlatformStatus")),
        gate_outcome=_member(GateOutcome, entity.get("GateOutcome")),
        gate_detail=entity.get("GateDetail"),
        cancel_source=_member(CancelSource, entity.get("CancelSource")),
        cancel_requested_at=_when(entity, "CancelRequestedAt"),
        wrap_up_started_at=_when(entity, "WrapUpStartedAt"),
        completed_at=_when(entity, "CompletedAt"),
        report_location=entity.get("ReportLocation"),
        pre_event_missed=bool(entity.get("PreEventMissed", False)),
        wrap_up_requested_at=_when(entity, "WrapUpRequestedAt"),
        redriven_at=_when(entity, "RedrivenAt"),
        stuck_reported=bool(entity.get("StuckReported", False)),
        watch_round=entity.get("WatchRound"),
        start=_when(entity, "StartDateTime"),
        version=_etag(entity),
    )


def _inverted(moment: datetime, *, round_up: bool = False) -> int:
    """INVERTED_BASE minus the Unix time (seconds, rounded up for range bounds)."""
    seconds = moment.timestamp()
    whole = int(seconds) if not round_up or seconds.is_integer() else int(seconds) + 1
    return INVERTED_BASE - whole


def _run_suffix(run: Run) -> str:
    return f"{_inverted(run.scheduled_start):010d}|{_digest(run.run_id.key)}"


def _all_key(run: Run) -> str:
    return f"{INDEX_ALL}{_run_suffix(run)}"


def _open_key(run: Run) -> str:
    return f"{INDEX_OPEN}{_run_suffix(run)}"


def _status_key(run: Run, status_key: str) -> str:
    return f"status|{status_key}|{_run_suffix(run)}"


def _status_keys(run: Run) -> list[str]:
    """The status rows a run has: its own status and the platform's (lower case, hashed)."""
    words = {run.status.value.lower()}
    if run.platform_status:
        words.add(run.platform_status.lower())
    return sorted(_digest(word) for word in words)


def _index_row_keys(run: Run, statuses: Iterable[str]) -> list[str]:
    """Every index row of the run but the open one, the `all` row first."""
    configuration = run.run_id.configuration
    return [
        _all_key(run),
        f"cfg|{_digest(configuration.key)}|{_run_suffix(run)}",
        f"name|{_digest(configuration.name.lower())}|{_run_suffix(run)}",
        f"named|{_digest(configuration.name.lower())}|{run.run_id.run_name}|"
        f"{_digest(run.run_id.key)}",
        *(_status_key(run, s) for s in statuses),
    ]


def _indexed_run(entity: Mapping[str, Any]) -> Run:
    """The run an index row copies, with the run row's version."""
    return dataclasses.replace(_run_from(entity), version=entity.get("RunVersion"))


def _event_entity(event: EventRecord) -> dict[str, Any]:
    return _drop_none(
        {
            **_base(event.run_id, event_row_key(event.kind, event.event_id)),
            "Kind": "event",
            "EventType": event.kind.value,
            "EventId": event.event_id,
            "Schema": event.schema.value,
            "ReceivedAt": _utc(event.received_at),
            "EventTime": _utc(event.event_time),
            "StartDateTime": _utc(event.start),
            "EndDateTime": _utc(event.end),
            "CancellationCutOff": _utc(event.cancellation_cutoff),
            "SubscriptionIds": json.dumps(list(event.subscription_ids)),
            "EventStatus": event.status,
        }
    )


def _event_from(entity: Mapping[str, Any], run_id: RunId) -> EventRecord:
    received, start, end = (
        _required_when(entity, n) for n in ("ReceivedAt", "StartDateTime", "EndDateTime")
    )
    return EventRecord(
        run_id=run_id,
        kind=EventKind(entity["EventType"]),
        event_id=entity["EventId"],
        schema=EnvelopeSchema(entity["Schema"]),
        received_at=received,
        event_time=_when(entity, "EventTime"),
        start=start,
        end=end,
        cancellation_cutoff=_when(entity, "CancellationCutOff"),
        subscription_ids=_strings(entity.get("SubscriptionIds")),
        status=entity.get("EventStatus"),
    )


def _machine_entity(machine: MachineRecord) -> dict[str, Any]:
    return _drop_none(
        {
            **_base(machine.run_id, machine_row_key(machine.resource_id)),
            "Kind": "machine",
            "ResourceId": machine.resource_id,
            "MachineKind": machine.kind.value,
            "PriorPowerState": machine.prior_power_state,
            "Action": machine.action.value,
            "UpdatedAt": _utc(machine.updated_at),
            "OwnerRun": machine.owner_run,
            "LastPowerState": machine.last_power_state,
            "ErrorCode": machine.error_code,
            "ErrorMessage": machine.error_message,
            "History": json.dumps([list(h) for h in machine.history]),
        }
    )


def _machine_from(entity: Mapping[str, Any], run_id: RunId) -> MachineRecord:
    updated = _required_when(entity, "UpdatedAt")
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
        version=_etag(entity),
    )


def _cancel_entity(request: CancelRequest) -> dict[str, Any]:
    stamp = request.requested_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return _drop_none(
        {
            **_base(request.run_id, f"cancel|{stamp}|{request.request_id}"),
            "Kind": "cancel",
            "RequestId": request.request_id,
            "RequestedAt": _utc(request.requested_at),
            "RequestedBy": request.requested_by,
            "Reason": request.reason,
            "DryRun": request.dry_run,
            "Outcome": request.outcome.value,
            "WindowOpensAt": _utc(request.window_opens_at),
            "WindowClosesAt": _utc(request.window_closes_at),
            "Detail": request.detail,
            "ServiceCode": request.service_code,
            "ServiceMessage": request.service_message,
        }
    )


def _cancel_from(entity: Mapping[str, Any], run_id: RunId) -> CancelRequest:
    requested, opens, closes = (
        _required_when(entity, n) for n in ("RequestedAt", "WindowOpensAt", "WindowClosesAt")
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


def _text(word: str | None) -> str | None:
    """A word as the table stores it: plain text (an enum's value), or nothing."""
    return None if word is None else str(word)


def _member(kind: type[E], word: str | None) -> E | None:
    """The stored word as its enum; a word this version does not know is logged and dropped
    (the row itself stays readable)."""
    if word is None:
        return None
    try:
        return kind(word)
    except ValueError:
        log.warning("Unknown %s %r in the ledger: ignored", kind.__name__, word)
        return None
