"""Use case: orchestrate a run, one queued task at a time.

Where things are: `starting` (prepare, start), `watching` (verify, gate, cancel read-back),
`wrapping_up` (wrap-up, stop), `finishing` (finish, notify, poison notes), `ownership` (machine
claims across runs), `base` (the ports and the ledger writes all steps share). The decision for
each machine is a pure function in shared/domain/machine_steps.py.

prepare → start (batches) → verify (until every VM runs or T−15) → gate (cancel if too many
failed and the window is open) … post event or cancel → wrap-up → stop (batches) → finish
(health check, patch results, report) → notify.

Invariants (ARCHITECTURE.md), whatever the order or number of deliveries:
1. A VM that was running before the run is never stopped by this app: only machines whose row
   says the app started them (`MachineAction.owned_by_run`) are ever deallocated.
2. Every VM the app started is deallocated after its run ends, unless another active run still
   needs it; then ownership passes to that run (the machine's claim row).
3. No action twice for one delivery repeated: each step reads the machine's row first and writes
   what it is about to do *before* calling Azure; a retry that finds "Starting" checks the VM's
   power state instead of starting it again.
4. A cancel is sent only inside the window (shared with the cancel API: services/cancellation).
"""

from shared.services.orchestration.orchestrator import Orchestrator

__all__ = ["Orchestrator"]
