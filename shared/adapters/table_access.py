"""One ledger table: reads, prefix queries and ETag-checked writes, with storage errors
translated (LedgerConflict, LedgerUnavailable)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient

from shared.domain.errors import LedgerConflict
from shared.domain.ids import RunId
from shared.domain.runs import Run

if TYPE_CHECKING:
    pass

from shared.adapters.table_rows import (
    RUN_ROW,
    partition_key,
    run_from,
    unavailable_on_error,
)
from shared.adapters.table_wire import TableWire, odata_filter

log = logging.getLogger(__name__)


class TableAccess:
    """The ledger's table and the row operations everything else is built on."""

    def __init__(self, service: TableServiceClient, table_name: str) -> None:
        self._service = service
        self._table_name = table_name
        self._table: TableClient | None = None
        self._wire: TableWire | None = None

    @property
    def table(self) -> TableClient:
        """The table client; the table is created on first use, once per process."""
        if self._table is None:
            with unavailable_on_error("create the ledger table"):
                self._service.create_table_if_not_exists(self._table_name)
            self._table = self._service.get_table_client(self._table_name)
        return self._table

    @property
    def wire(self) -> TableWire:
        """The hot reads and writes (table_wire), through the table client's pipeline."""
        if self._wire is None:
            self._wire = TableWire(self.table)
        return self._wire

    def _get(self, partition: str, row: str) -> Mapping[str, Any] | None:
        with unavailable_on_error("read the ledger"):
            return self.wire.get(partition, row)

    def _query(self, partition: str, prefix: str) -> Iterator[Mapping[str, Any]]:
        # Row keys of one kind share a prefix; '}' sorts right after '|'.
        upper = prefix[:-1] + "}"
        with unavailable_on_error("query the ledger"):
            yield from self.wire.query(
                odata_filter(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    pk=partition,
                    lo=prefix,
                    hi=upper,
                )
            )

    def _write(self, entity: dict[str, Any], version: str | None) -> str:
        try:
            with unavailable_on_error("write the ledger"):
                return self.wire.write(entity, version)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as e:
            # Not found: the row was removed since it was read (a claim nobody needed).
            raise LedgerConflict(f"row {entity['RowKey']} changed, exists or is gone") from e

    def find_run(self, run_id: RunId) -> Run | None:
        """The run, or None."""
        entity = self._get(partition_key(run_id), RUN_ROW)
        return None if entity is None else run_from(entity)

    def list_runs(self) -> Iterator[Run]:
        """Every run row in the table."""
        with unavailable_on_error("list runs"):
            for entity in self.table.query_entities("RowKey eq @row", parameters={"row": RUN_ROW}):
                yield run_from(entity)
