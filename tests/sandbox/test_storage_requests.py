"""The storage-request count of the fan-out benchmark (benchmarks/storage_requests.py) reads
Azurite's real debug log: each request the app makes is counted once, under its kind."""

from __future__ import annotations

from pathlib import Path

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from benchmarks import storage_requests
from sandbox.azurite import running_azurite
from shared.adapters.table_ledger import TableRunLedger
from shared.domain.ids import MachineId, RunId
from shared.domain.runs import MachineClaim

RUN = (
    "/subscriptions/00000001-0000-4000-8000-000000000001/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly/providers/"
    "Microsoft.Maintenance/applyUpdates/20261201030000"
)
VM = (
    "/subscriptions/00000001-0000-4000-8000-000000000001/resourceGroups/app/providers/"
    "Microsoft.Compute/virtualMachines/web-01"
)


def test_each_request_in_azurites_debug_log_is_counted_once_by_kind(tmp_path: Path) -> None:
    log = tmp_path / "azurite-debug.log"
    with running_azurite(in_memory=True, debug_log=str(log)) as azurite:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        ledger = TableRunLedger(service, "counted")
        claim = ledger.save_claim(MachineClaim(resource_id=VM, owner_run="run"))
        for _ in range(3):
            ledger.find_claim(MachineId.parse(VM))
        ledger.delete_claim(claim)
        assert list(ledger.list_machines(RunId.parse(RUN))) == []
        queue = QueueClient.from_connection_string(azurite.connection_string, "probe-queue")
        queue.create_queue()
        queue.send_message("hello")
    counts = storage_requests.count(str(log))
    assert counts["Table GET claim"] == 3
    assert counts["Table DELETE claim"] == 1
    assert counts["Table POST counted"] == 1  # the claim created
    assert counts["Table GET query of machine rows"] == 1
    assert counts["Queue (the benchmark's probe)"] == 2
    text = storage_requests.summary(counts, per=1)
    assert "  3.00 per VM  Table GET claim (3)" in text
    assert "probe" not in text
