"""The run index: one partition of copies of the run rows, keyed so that a page of runs (all,
by configuration, by status, the open ones) is one range read, newest first. See table_ledger for
the layout."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError, UpdateMode

from shared.domain.errors import LedgerConflict, LedgerUnavailable
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.runs import (
    Run,
    RunStatus,
)

if TYPE_CHECKING:
    pass

from shared.adapters.table_access import TableAccess
from shared.adapters.table_rows import (
    TRANSACTION_LIMIT,
    checked_operation,
    digest,
    etag_of,
    partition_key,
    run_entity,
    run_from,
    strings_of,
    unavailable_on_error,
)

log = logging.getLogger(__name__)

INDEX_PARTITION = "runindex"
INDEX_ALL = "all|"
INDEX_OPEN = "open|"
INDEX_CONFIGURATION = "configuration|"
INDEX_DONE = "indexed"
INDEX_RETRIES = 4
# Newest first: the largest Unix time a run can have, minus its start.
INVERTED_BASE = 9_999_999_999


class RunIndex(TableAccess):
    """Index maintenance and the reads it serves."""

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
            prefix = f"status|{digest(status.lower())}|"
        elif configuration and "/" in configuration:
            prefix = f"cfg|{digest(configuration.lower())}|"
        elif configuration:
            prefix = f"name|{digest(configuration.lower())}|"
        else:
            prefix = INDEX_ALL
        low, high = prefix, prefix[:-1] + "}"
        if start_to is not None:
            low = max(low, f"{prefix}{inverted_time(start_to, round_up=True) + 1:010d}")
        if start_from is not None:
            high = min(high, f"{prefix}{inverted_time(start_from, round_up=True) + 1:010d}")
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
        with unavailable_on_error("list runs"):
            for entity in self.table.query_entities(
                " and ".join(conditions), parameters=parameters, results_per_page=top + 1
            ):
                run = indexed_run(entity)
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
        prefix = f"named|{digest(configuration_name.lower())}|{run_name}|"
        with unavailable_on_error("find runs"):
            return [
                indexed_run(entity)
                for entity in self.table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": INDEX_PARTITION, "lo": prefix, "hi": prefix[:-1] + "}"},
                )
            ]

    def list_open_runs(self) -> Iterator[Run]:
        """Runs that are not completed yet (from the index: O(open runs), not O(history))."""
        for entity in self._query(INDEX_PARTITION, INDEX_OPEN):
            yield indexed_run(entity)

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
        low = f"{INDEX_ALL}{inverted_time(cutoff, round_up=True) + 1:010d}"
        removed: list[RunId] = []
        with unavailable_on_error("find old runs"):
            pages = self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": INDEX_PARTITION, "lo": low, "hi": INDEX_ALL[:-1] + "}"},
                results_per_page=limit,
            ).by_page()
            entities = list(next(iter(pages), []))[:limit]
        index_keys: list[str] = []
        for entity in entities:
            run = indexed_run(entity)
            self._delete_partition(partition_key(run.run_id))
            index_keys.extend(index_row_keys(run, strings_of(entity.get("StatusKeys"))))
            if run.status is not RunStatus.COMPLETED:
                # A completed run has none: the index write that completed it deleted it.
                index_keys.append(open_row_key(run))
            removed.append(run.run_id)
        # Index rows last, all the batch's together (transactions of 100): a remover stopped
        # half-way finds the same runs through them next time.
        self._delete_rows(INDEX_PARTITION, index_keys)
        return removed

    def _index_run(self, run: Run, created: bool = False) -> None:
        """Bring the run's index rows in step with `run` (just saved) in one transaction.

        The `all` row is ETag-checked, so two writers cannot interleave; on a conflict the
        run row, the truth, is read again and indexed. The run's own write has succeeded
        whatever happens here: a failure is logged, and the next write of the run repairs it.
        A run whose row was just `created` has no index rows yet: they are not read first (a
        new pre event's answer waits for one storage request less); should some exist after
        all, the transaction fails and the loop reads them.
        """
        for attempt in range(INDEX_RETRIES):
            try:
                if created and attempt == 0:
                    current = None
                else:
                    current = self._get(INDEX_PARTITION, all_row_key(run))
                operations = self._index_operations(run, current)
                try:
                    with unavailable_on_error("index a run"):
                        self.wire.transact(operations)
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
        statuses = status_keys(run)
        entity = {
            **run_entity(run),
            "PartitionKey": INDEX_PARTITION,
            "Kind": "runindex",
            "RunVersion": run.version,
            "StatusKeys": json.dumps(statuses),
            "IndexConfigurationKey": run.run_id.configuration.key,
            "IndexConfigurationName": run.run_id.configuration.name.lower(),
        }
        entity = {k: v for k, v in entity.items() if v is not None}
        all_row = {**entity, "RowKey": all_row_key(run)}
        operations: list[Any] = [
            checked_operation(all_row, None if current is None else etag_of(current))
        ]
        for row_key in index_row_keys(run, statuses)[1:]:
            operations.append(
                ("upsert", {**entity, "RowKey": row_key}, {"mode": UpdateMode.REPLACE})
            )
        if run.status is not RunStatus.COMPLETED:
            operations.append(
                ("upsert", {**entity, "RowKey": open_row_key(run)}, {"mode": UpdateMode.REPLACE})
            )
        elif current is not None and current.get("Status") != RunStatus.COMPLETED.value:
            operations.append(
                ("delete", {"PartitionKey": INDEX_PARTITION, "RowKey": open_row_key(run)})
            )
        previous = strings_of(current.get("StatusKeys")) if current is not None else ()
        for gone in sorted(set(previous) - set(statuses)):
            operations.append(
                ("delete", {"PartitionKey": INDEX_PARTITION, "RowKey": status_row_key(run, gone)})
            )
        configuration = run.run_id.configuration
        operations.append(
            (
                "upsert",
                {
                    "PartitionKey": INDEX_PARTITION,
                    "RowKey": f"{INDEX_CONFIGURATION}{digest(configuration.key)}",
                    "Kind": "runindex",
                    "ConfigurationId": configuration.text,
                },
                {"mode": UpdateMode.REPLACE},
            )
        )
        return operations

    def _delete_partition(self, partition: str) -> None:
        with unavailable_on_error("read a run to remove"):
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
                with unavailable_on_error("remove rows"):
                    self.wire.transact(
                        [("delete", {"PartitionKey": partition, "RowKey": k}) for k in chunk]
                    )
            except TableTransactionError:
                # Some were gone already (another remover, or an open row never written).
                for key in chunk:
                    with (
                        unavailable_on_error("remove a row"),
                        contextlib.suppress(ResourceNotFoundError),
                    ):
                        self.table.delete_entity(partition, key)


def inverted_time(moment: datetime, *, round_up: bool = False) -> int:
    """INVERTED_BASE minus the Unix time (seconds, rounded up for range bounds)."""
    seconds = moment.timestamp()
    whole = int(seconds) if not round_up or seconds.is_integer() else int(seconds) + 1
    return INVERTED_BASE - whole


def run_suffix(run: Run) -> str:
    return f"{inverted_time(run.scheduled_start):010d}|{digest(run.run_id.key)}"


def all_row_key(run: Run) -> str:
    return f"{INDEX_ALL}{run_suffix(run)}"


def open_row_key(run: Run) -> str:
    return f"{INDEX_OPEN}{run_suffix(run)}"


def status_row_key(run: Run, status_key: str) -> str:
    return f"status|{status_key}|{run_suffix(run)}"


def status_keys(run: Run) -> list[str]:
    """The status rows a run has: its own status and the platform's (lower case, hashed)."""
    words = {run.status.value.lower()}
    if run.platform_status:
        words.add(run.platform_status.lower())
    return sorted(digest(word) for word in words)


def index_row_keys(run: Run, statuses: Iterable[str]) -> list[str]:
    """Every index row of the run but the open one, the `all` row first."""
    configuration = run.run_id.configuration
    return [
        all_row_key(run),
        f"cfg|{digest(configuration.key)}|{run_suffix(run)}",
        f"name|{digest(configuration.name.lower())}|{run_suffix(run)}",
        f"named|{digest(configuration.name.lower())}|{run.run_id.run_name}|"
        f"{digest(run.run_id.key)}",
        *(status_row_key(run, s) for s in statuses),
    ]


def indexed_run(entity: Mapping[str, Any]) -> Run:
    """The run an index row copies, with the run row's version."""
    return dataclasses.replace(run_from(entity), version=entity.get("RunVersion"))
