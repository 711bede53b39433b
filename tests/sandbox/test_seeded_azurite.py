"""The ledger benchmark's fast build (benchmarks/azurite_seeded_table.js): rows put into Azurite's
store in bulk read back exactly as the same rows written over HTTP, and the app reads the seeded
ledger as one it wrote itself."""

from __future__ import annotations

from pathlib import Path

from azure.data.tables import TableServiceClient

from benchmarks.ledger import SeededAzurite, build, history
from shared.adapters.table_ledger import TableRunLedger
from shared.services import run_queries
from shared.services.run_queries import RunFilter


def test_a_seeded_history_reads_back_as_written_over_http_and_pages_newest_first(
    tmp_path: Path,
) -> None:
    runs = history(120)
    azurite = SeededAzurite(tmp_path)
    try:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        # build() writes a sample of the rows over HTTP too and compares each with its twin.
        _, rows = build(azurite, service, "seeded", runs)
        ledger = TableRunLedger(service, "seeded")
        first = run_queries.list_runs(ledger, RunFilter(), 50, None)
        second = run_queries.list_runs(ledger, RunFilter(), 50, first.next_token)
        found = ledger.find_run(runs[70].run_id)
    finally:
        azurite.close()
    # A run row and 6 index rows a run, 5 open rows, 2 configuration rows, the marker.
    assert rows == len(runs) * 7 + 5 + 2 + 1
    listed = [r["correlationId"] for r in (*first.runs, *second.runs)]
    assert listed == [r.run_id.text for r in runs[:100]]
    assert found is not None
    assert found.status is runs[70].status
