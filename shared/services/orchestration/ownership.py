"""Who owns a VM the app started, across runs (invariant 2): a run claims a VM before starting
it, a run that finds it running because another active run started it says it needs it, and at
wrap-up a VM still needed by another active run is handed over instead of stopped."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from shared.domain.ids import InvalidId, MachineId, RunId
from shared.domain.runs import (
    MachineAction,
    MachineClaim,
    MachineRecord,
    NoteLevel,
    Run,
)
from shared.services.conflicts import retry_on_conflict
from shared.services.orchestration.base import StepsBase

log = logging.getLogger(__name__)


class Ownership(StepsBase):
    """The machine claims: one owner per VM, and the runs that still need it."""

    def _is_active(self, run_text: str) -> bool:
        try:
            other = self.ledger.find_run(RunId.parse(run_text))
        except InvalidId:
            return False
        return other is not None and other.is_active

    def _claim_for_start(self, run_id: RunId, machine: MachineId) -> bool:
        """Make this run the VM's owner unless another active run already is. A claim nobody
        holds is removed (see `_release`), so the first try creates it without reading: one
        request in the usual case; a claim that exists makes that a conflict, and it is read."""
        tries: list[bool] = []

        def attempt() -> bool:
            if not tries:
                tries.append(True)
                self.ledger.save_claim(
                    MachineClaim(
                        resource_id=machine.text, owner_run=run_id.text, needed_by=(run_id.text,)
                    )
                )
                return True
            claim = self.ledger.find_claim(machine) or MachineClaim(resource_id=machine.text)
            owner = claim.owner_run
            mine = owner is None or owner.lower() == run_id.key or not self._is_active(owner)
            updated = claim.needing(run_id.text)
            self.ledger.save_claim(replace(updated, owner_run=run_id.text) if mine else updated)
            return mine

        return retry_on_conflict(attempt, what=f"claim of {machine.text}")

    def _need(self, run_id: RunId, machine: MachineId) -> None:
        """Say this run needs a VM another active run started (it is handed over, not stopped,
        when that run wraps up)."""

        def attempt() -> None:
            claim = self.ledger.find_claim(machine) or MachineClaim(resource_id=machine.text)
            self.ledger.save_claim(claim.needing(run_id.text))

        retry_on_conflict(attempt, what=f"claim of {machine.text}")

    def _already_up(
        self,
        run: Run,
        row: MachineRecord,
        machine: MachineId,
        seen: Mapping[str, str],
        now: datetime,
    ) -> MachineRecord:
        """A VM running before this run touched it: another active run's (this run needs it
        too, and it is handed over rather than stopped), or nobody's (left alone, never
        stopped by the app)."""
        claim = self.ledger.find_claim(machine)
        owner = claim.owner_run if claim else None
        if owner and owner.lower() != run.run_id.key and self._is_active(owner):
            self._need(run.run_id, machine)
            return self.ledger.save_machine(
                row.moved_to(
                    MachineAction.SHARED_WITH_RUN,
                    now,
                    f"started by the app for run {owner}",
                    **seen,
                )
            )
        return self.ledger.save_machine(
            row.moved_to(
                MachineAction.LEFT_ALONE, now, "already running: never stopped by the app", **seen
            )
        )

    def _hand_over(self, run_id: RunId, row: MachineRecord) -> bool:
        """Pass a VM this run started to another active run that needs it; True if passed."""
        machine = MachineId.parse(row.resource_id)

        def pass_claim() -> RunId | None:
            claim = self.ledger.find_claim(machine)
            if claim is None:
                return None
            heirs = [r for r in claim.needed_by if r.lower() != run_id.key and self._is_active(r)]
            if not heirs:
                return None
            heir = RunId.parse(heirs[0])
            self.ledger.save_claim(replace(claim.released_by(run_id.text), owner_run=heir.text))
            return heir

        heir = retry_on_conflict(pass_claim, what=f"claim of {machine.text}")
        if heir is None:
            return False
        self._move(
            row, MachineAction.HANDED_OVER, f"still needed by run {heir.text}", owner_run=heir.text
        )
        heir_row = self.ledger.find_machine(heir, machine.text)
        if heir_row is not None and not heir_row.action.owned_by_run:
            self._move(
                heir_row,
                MachineAction.STARTED,
                f"ownership passed from run {run_id.text}",
                owner_run=heir.text,
            )
        self._note(
            run_id, NoteLevel.INFO, "wrap-up", f"{machine.text} handed over to run {heir.text}"
        )
        return True

    def _release(self, run_id: RunId, machine: MachineId) -> None:
        """This run no longer needs the VM (stopped, or never started by it). A claim left
        with no owner and no run needing it is removed: it says nothing a missing one does
        not, and the next run to start the VM creates it again in one request."""

        def attempt() -> None:
            claim = self.ledger.find_claim(machine)
            if claim is None:
                return
            released = claim.released_by(run_id.text)
            if released.owner_run is None and not released.needed_by:
                self.ledger.delete_claim(claim)
            elif released != claim:
                self.ledger.save_claim(released)

        retry_on_conflict(attempt, what=f"claim of {machine.text}")
