"""The orchestration's knobs, and the gate's rule, as pure code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from shared.domain.timeline import DEFAULT_CANCEL_SAFETY_MARGIN


@dataclass(frozen=True)
class OptOutTag:
    """A tag that keeps a machine out of the app's hands: `name` (any value) or `name=value`."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> OptOutTag:
        """`UpdateAutomation=skip` or `NoAutoStart`."""
        name, _, value = text.partition("=")
        if not name.strip():
            raise ValueError("tag name is empty")
        return cls(name=name.strip(), value=value.strip() or None)

    def matches(self, tags: Mapping[str, str]) -> bool:
        """True when the machine carries the tag (names and values compare case-insensitively)."""
        for name, value in tags.items():
            if name.lower() == self.name.lower():
                return self.value is None or (value or "").lower() == self.value.lower()
        return False


@dataclass(frozen=True)
class OrchestrationPolicy:
    """How the app prepares and wraps up runs."""

    failure_budget_percent: float = 10.0
    start_batch_size: int = 50
    start_concurrency: int = 4
    verify_interval: timedelta = timedelta(seconds=60)
    arg_retry: timedelta = timedelta(seconds=30)
    wrap_up_wait: timedelta = timedelta(minutes=120)
    health_wait: timedelta = timedelta(minutes=15)
    # Only the optional OS-disk snapshot is waited on; starts and deallocations never are.
    operation_wait_seconds: float = 240.0
    # A worker renews the intents it holds at a third of this; a lapsed one is a dead worker's.
    task_lease: timedelta = timedelta(seconds=45)
    opt_out_tag: OptOutTag = OptOutTag("UpdateAutomation", "skip")
    snapshot_before_start: bool = False
    cancel_safety_margin: timedelta = DEFAULT_CANCEL_SAFETY_MARGIN
    log_analytics_workspace_id: str | None = None


@dataclass(frozen=True)
class GateCount:
    """Machines the app had to start, and how many of them are not running."""

    attempted: int
    not_running: int
    # Read at the gate, but Azure would not say (throttled or failing): not a failure.
    unknown: int = 0

    def exceeds(self, budget_percent: float) -> bool:
        """More than `budget_percent` of the attempted starts are not running."""
        return self.attempted > 0 and self.not_running * 100 > budget_percent * self.attempted

    def describe(self, budget_percent: float) -> str:
        """One line for the ledger and the report."""
        unread = f"; {self.unknown} unreadable, not counted" if self.unknown else ""
        return (
            f"{self.not_running} of {self.attempted} machines the app had to start are not "
            f"running{unread} (budget: more than {budget_percent:g}% fails the gate)"
        )
