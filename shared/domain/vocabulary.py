"""The words a run is described in, each defined once: the platform's status words (read
tolerantly, since Azure spells them more than one way), who cancelled a run, the answer to a
cancel request, how that request is audited, and what the gate decided."""

from __future__ import annotations

import enum


class PlatformStatus(enum.StrEnum):
    """A maintenance run's (or one machine's) status as Azure reports it, in one spelling."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    SUCCEEDED = "Succeeded"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    # The spec's own example answers a cancel PUT with "Cancel"; later revisions "Cancelled".
    CANCEL = "Cancel"
    CANCELLED = "Cancelled"
    NOT_STARTED = "NotStarted"
    SKIPPED = "Skipped"
    RETRY_NOW = "RetryNow"
    RETRY_LATER = "RetryLater"
    NO_UPDATES_PENDING = "NoUpdatesPending"

    @classmethod
    def of(cls, word: str | None) -> PlatformStatus | str | None:
        """The status a word names, whatever its case and spaces ("Canceled" is Cancelled);
        an unknown word is kept as Azure wrote it (trimmed); no word is None."""
        if word is None or not word.strip():
            return None
        key = word.replace(" ", "").lower()
        return _BY_KEY.get(key, word.strip())

    @property
    def finished(self) -> bool:
        """The run is over and was not cancelled."""
        return self in _FINISHED

    @property
    def cancelled(self) -> bool:
        """Azure accepted a cancel ("Cancel") or reports the run cancelled."""
        return self in (PlatformStatus.CANCEL, PlatformStatus.CANCELLED)

    @property
    def machine_unfinished(self) -> bool:
        """A machine with this status is still being patched."""
        return self in _MACHINE_UNFINISHED


_BY_KEY = {status.value.lower(): status for status in PlatformStatus} | {
    "canceled": PlatformStatus.CANCELLED
}
_FINISHED = frozenset(
    {
        PlatformStatus.COMPLETED,
        PlatformStatus.SUCCEEDED,
        PlatformStatus.COMPLETED_WITH_WARNINGS,
        PlatformStatus.FAILED,
        PlatformStatus.TIMED_OUT,
        PlatformStatus.NO_UPDATES_PENDING,
        PlatformStatus.SKIPPED,
    }
)
_MACHINE_UNFINISHED = frozenset(
    {
        PlatformStatus.PENDING,
        PlatformStatus.IN_PROGRESS,
        PlatformStatus.NOT_STARTED,
        PlatformStatus.RETRY_NOW,
        PlatformStatus.RETRY_LATER,
    }
)


def is_cancelled(word: PlatformStatus | str | None) -> bool:
    """Any spelling of an accepted or done cancel ("Cancel", "Cancelled", "Canceled")."""
    status = word if isinstance(word, PlatformStatus) else PlatformStatus.of(word)
    return isinstance(status, PlatformStatus) and status.cancelled


def is_confirmed_cancel(word: PlatformStatus | str | None) -> bool:
    """Azure says the run is cancelled, not only that it accepted the request."""
    status = word if isinstance(word, PlatformStatus) else PlatformStatus.of(word)
    return status is PlatformStatus.CANCELLED


def is_finished(word: PlatformStatus | str | None) -> bool:
    """Any spelling of a run that ended without a cancel."""
    status = word if isinstance(word, PlatformStatus) else PlatformStatus.of(word)
    return isinstance(status, PlatformStatus) and status.finished


class CancelSource(enum.StrEnum):
    """Who cancelled a run."""

    USER = "User"
    GATE = "AppGate"
    PLATFORM = "Platform"
    # Seen by the reconciler: cancelled through Azure's API or portal, not through this app.
    USER_OUTSIDE_APP = "UserOutsideApp"
    UNKNOWN = "Unknown"

    @classmethod
    def of_message(cls, message: str | None) -> CancelSource:
        """Who cancelled, from a run record's message (its wording changed over time)."""
        text = (message or "").lower()
        if "platform" in text:
            return cls.PLATFORM
        return cls.USER_OUTSIDE_APP if "cancel" in text and "api" in text else cls.UNKNOWN


class CancelOutcome(enum.StrEnum):
    """How a cancel request ended, as its audit row keeps it."""

    ACCEPTED = "Accepted"
    ALREADY_CANCELLED = "AlreadyCancelled"
    WOULD_CANCEL = "WouldCancel"
    REFUSED_OUTSIDE_WINDOW = "RefusedOutsideWindow"
    REFUSED_RUN_STATE = "RefusedRunState"
    REFUSED_BY_AZURE = "RefusedByAzure"
    UNCONFIRMED = "Unconfirmed"


class GateOutcome(enum.StrEnum):
    """What the gate decided."""

    PASSED = "Passed"
    CANCELLED = "Cancelled"
    TOO_LATE_TO_CANCEL = "TooLateToCancel"
    CANCEL_REFUSED = "CancelRefused"
    CANCEL_UNCONFIRMED = "CancelUnconfirmed"
    CANCEL_FAILED = "CancelFailed"
    ALREADY_CANCELLED = "AlreadyCancelled"
    NOTHING_TO_START = "NothingToStart"
    SKIPPED_LATE_PRE_EVENT = "SkippedLatePreEvent"


class CancelVerdict(enum.StrEnum):
    """The answer to a cancel request; it says how it is audited and what a gate makes of it."""

    CANCELLED = "Cancelled"
    CANCEL_REQUESTED = "CancelRequested"
    ALREADY_CANCELLED = "AlreadyCancelled"
    WOULD_CANCEL = "WouldCancel"
    TOO_EARLY = "TooEarly"
    TOO_LATE = "TooLate"
    NOT_CANCELLABLE = "NotCancellable"
    IN_FLIGHT = "CancelInFlight"
    REFUSED_BY_AZURE = "RefusedByAzure"
    UNCONFIRMED = "CancelUnconfirmed"

    @property
    def accepted(self) -> bool:
        """Azure accepted the cancel (done, or only requested)."""
        return self in (CancelVerdict.CANCELLED, CancelVerdict.CANCEL_REQUESTED)

    @property
    def audit_outcome(self) -> CancelOutcome:
        """The outcome the request's audit row records."""
        return _AUDIT_OUTCOMES.get(self, CancelOutcome.REFUSED_RUN_STATE)

    @property
    def gate_outcome(self) -> GateOutcome:
        """What the gate records when its own cancel got this answer."""
        return _GATE_OUTCOMES.get(self, GateOutcome.CANCEL_REFUSED)


_AUDIT_OUTCOMES = {
    CancelVerdict.CANCELLED: CancelOutcome.ACCEPTED,
    CancelVerdict.CANCEL_REQUESTED: CancelOutcome.ACCEPTED,
    CancelVerdict.UNCONFIRMED: CancelOutcome.UNCONFIRMED,
    CancelVerdict.ALREADY_CANCELLED: CancelOutcome.ALREADY_CANCELLED,
    CancelVerdict.WOULD_CANCEL: CancelOutcome.WOULD_CANCEL,
    CancelVerdict.TOO_EARLY: CancelOutcome.REFUSED_OUTSIDE_WINDOW,
    CancelVerdict.TOO_LATE: CancelOutcome.REFUSED_OUTSIDE_WINDOW,
    CancelVerdict.REFUSED_BY_AZURE: CancelOutcome.REFUSED_BY_AZURE,
}
_GATE_OUTCOMES = {
    CancelVerdict.CANCELLED: GateOutcome.CANCELLED,
    CancelVerdict.CANCEL_REQUESTED: GateOutcome.CANCELLED,
    CancelVerdict.ALREADY_CANCELLED: GateOutcome.ALREADY_CANCELLED,
    CancelVerdict.IN_FLIGHT: GateOutcome.ALREADY_CANCELLED,
    CancelVerdict.TOO_LATE: GateOutcome.TOO_LATE_TO_CANCEL,
    CancelVerdict.REFUSED_BY_AZURE: GateOutcome.CANCEL_REFUSED,
    CancelVerdict.UNCONFIRMED: GateOutcome.CANCEL_UNCONFIRMED,
}
