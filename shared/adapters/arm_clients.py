"""Management SDK clients that need a subscription id are built once per subscription, all
sharing one HTTP transport (one connection pool): the endpoint's, when the caller passes it.

Every client's pipeline paces its requests to the subscription's ARM budgets
(`shared.adapters.arm_pacing`): one `ArmBudgets` per process, passed in as `arm_budgets`, so
that all clients and threads draw on the same buckets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shared.adapters.arm_pacing import ArmBudgets, ArmPacing, PacedRetryPolicy
from shared.adapters.http_transport import pooled_transport

ClientT = TypeVar("ClientT")


class PerSubscription(Generic[ClientT]):
    """Lazily built clients keyed by subscription, sharing a transport and ARM budgets."""

    def __init__(self, factory: Callable[..., ClientT], **options: Any) -> None:
        self._factory = factory
        self._transport = options.pop("transport", None) or pooled_transport()
        self.budgets: ArmBudgets = options.pop("arm_budgets", None) or ArmBudgets()
        # The pacing policy runs on every attempt, after any policy that may withdraw it.
        options["per_retry_policies"] = [
            *options.get("per_retry_policies", []),
            ArmPacing(self.budgets),
        ]
        if "retry_policy" not in options:
            retry_settings = {
                k: v for k, v in options.items() if k.startswith("retry_") or k == "timeout"
            }
            options["retry_policy"] = PacedRetryPolicy(self.budgets.max_wait, **retry_settings)
        self._options = options
        self._clients: dict[str, ClientT] = {}
        self._lock = threading.Lock()

    def for_subscription(self, subscription_id: str) -> ClientT:
        """The client for one subscription (built on first use)."""
        key = subscription_id.lower()
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._factory(
                        subscription_id=key, transport=self._transport, **self._options
                    )
                    self._clients[key] = client
        return client
