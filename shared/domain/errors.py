"""Errors the domain and its ports speak. Adapters translate SDK errors into these."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of run-ledger errors."""


class LedgerUnavailable(LedgerError):
    """The ledger's storage cannot be reached or failed; the caller should let the trigger retry."""


class LedgerConflict(LedgerError):
    """Someone else changed the row since it was read (ETag mismatch) or created it first."""


class DuplicateEvent(LedgerError):
    """This (event type, id) was recorded before; nothing was changed."""


class AzureCallFailed(Exception):
    """An Azure service answered with an error, or could not be reached.

    Keeps the service's own code and message, so operators see what Azure said.
    """

    def __init__(self, service: str, status: int | None, code: str | None, message: str) -> None:
        super().__init__(f"{service} answered {status or 'no status'} {code or ''}: {message}")
        self.service = service
        self.status = status
        self.code = code
        self.message = message

    @property
    def is_transient(self) -> bool:
        """Throttled (429), a server error, or no answer: the same call may work later."""
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def is_refusal(self) -> bool:
        """A 4xx other than throttling: asking again will not help."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


class CallWithdrawn(AzureCallFailed):
    """A call ARM had only throttled (429) was given up unsent: its caller no longer wanted it."""


class CancelRefused(AzureCallFailed):
    """The maintenance service refused to cancel a run (any 4xx)."""


class ResourceGraphQueryRefused(AzureCallFailed):
    """Resource Graph refused a query (400 InvalidQuery and the like)."""


class StorageUnavailable(Exception):
    """The app's own storage (task queue, report container) failed; the trigger should retry."""


class NotificationFailed(Exception):
    """The notification webhook did not accept the message; the notify task is retried."""
