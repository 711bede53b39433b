from shared.domain.vocabulary import (
    CancelOutcome,
    CancelSource,
    CancelVerdict,
    GateOutcome,
    PlatformStatus,
    is_cancelled,
    is_confirmed_cancel,
    is_finished,
)


def test_status_words_are_read_in_any_spelling_and_unknown_words_kept() -> None:
    assert PlatformStatus.of("Canceled") is PlatformStatus.CANCELLED
    assert PlatformStatus.of("cancelled") is PlatformStatus.CANCELLED
    assert PlatformStatus.of("in progress") is PlatformStatus.IN_PROGRESS
    assert PlatformStatus.of("completedWithWarnings") is PlatformStatus.COMPLETED_WITH_WARNINGS
    assert PlatformStatus.of(" Frobnicated ") == "Frobnicated"
    assert not isinstance(PlatformStatus.of("Frobnicated"), PlatformStatus)
    assert PlatformStatus.of("") is None
    assert PlatformStatus.of(None) is None


def test_cancel_words_tell_accepted_from_confirmed() -> None:
    assert is_cancelled("Cancel") and not is_confirmed_cancel("Cancel")
    assert is_cancelled("Canceled") and is_confirmed_cancel("Canceled")
    assert not is_cancelled("InProgress") and not is_cancelled(None)
    assert not is_cancelled("Cancelling soon")


def test_finished_words_exclude_cancels_and_running_states() -> None:
    assert is_finished("Succeeded") and is_finished("no updates pending")
    assert not is_finished("Cancelled") and not is_finished("InProgress")
    assert not is_finished("Frobnicated")


def test_machine_statuses_still_being_patched() -> None:
    unfinished = {s for s in PlatformStatus if s.machine_unfinished}
    assert unfinished == {
        PlatformStatus.PENDING,
        PlatformStatus.IN_PROGRESS,
        PlatformStatus.NOT_STARTED,
        PlatformStatus.RETRY_NOW,
        PlatformStatus.RETRY_LATER,
    }


def test_cancel_source_is_read_loosely_from_the_message() -> None:
    message = "Maintenance canceled using cancellation API at 10:01"
    assert CancelSource.of_message(message) is CancelSource.USER_OUTSIDE_APP
    platform_failure = "Maintenance schedule cancelled due to internal platform failure"
    assert CancelSource.of_message(platform_failure) is CancelSource.PLATFORM
    assert CancelSource.of_message(None) is CancelSource.UNKNOWN


def test_every_verdict_has_one_audit_outcome_and_one_gate_outcome() -> None:
    audit = {v: v.audit_outcome for v in CancelVerdict}
    assert audit[CancelVerdict.CANCEL_REQUESTED] is CancelOutcome.ACCEPTED
    assert audit[CancelVerdict.TOO_EARLY] is CancelOutcome.REFUSED_OUTSIDE_WINDOW
    assert audit[CancelVerdict.IN_FLIGHT] is CancelOutcome.REFUSED_RUN_STATE
    assert audit[CancelVerdict.NOT_CANCELLABLE] is CancelOutcome.REFUSED_RUN_STATE
    gate = {v: v.gate_outcome for v in CancelVerdict}
    assert gate[CancelVerdict.CANCEL_REQUESTED] is GateOutcome.CANCELLED
    assert gate[CancelVerdict.IN_FLIGHT] is GateOutcome.ALREADY_CANCELLED
    assert gate[CancelVerdict.UNCONFIRMED] is GateOutcome.CANCEL_UNCONFIRMED
    assert gate[CancelVerdict.NOT_CANCELLABLE] is GateOutcome.CANCEL_REFUSED
    assert {v for v in CancelVerdict if v.accepted} == {
        CancelVerdict.CANCELLED,
        CancelVerdict.CANCEL_REQUESTED,
    }
