"""Machine power states and the answers of power operations."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PowerState(enum.StrEnum):
    """A VM's power state, from its instance view's `PowerState/<word>` status."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    STOPPING = "stopping"
    DEALLOCATED = "deallocated"
    DEALLOCATING = "deallocating"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, word: str | None) -> PowerState | str:
        """The state a word names; an unknown word is kept as it is, lower case."""
        if not word:
            return cls.UNKNOWN
        lowered = word.strip().lower()
        for state in cls:
            if state.value == lowered:
                return state
        return lowered

    @property
    def startable(self) -> bool:
        """States from which a start brings the VM up."""
        return self in (PowerState.STOPPED, PowerState.DEALLOCATED)


@dataclass(frozen=True)
class MachinePower:
    """What the app knows of a machine's power: the state, and whether the app can start it."""

    state: PowerState | str | None
    startable: bool
    note: str = ""
    # Azure's code and message when the VM's last operation failed (its instance view reads
    # `ProvisioningState/failed/<code>`): how an accepted start or deallocate that failed shows.
    failed_code: str | None = None
    failed_message: str | None = None


class OperationOutcome(enum.StrEnum):
    """How a power operation (start, deallocate, snapshot) ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NOT_STARTABLE = "NotStartable"
    STILL_RUNNING = "StillRunning"
    # No trustworthy answer (a 5xx or no answer while polling): the power state decides.
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class OperationResult:
    """The end of a power operation, with Azure's own code and message when it failed."""

    outcome: OperationOutcome
    code: str | None = None
    message: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the operation did what it was asked."""
        return self.outcome is OperationOutcome.SUCCEEDED
