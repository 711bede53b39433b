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
