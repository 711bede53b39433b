"""Management SDK clients that need a subscription id are built once per subscription, all
sharing one HTTP transport (one connection pool): the endpoint's, when the caller passes it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shared.adapters.http_transport import pooled_transport

ClientT = TypeVar("ClientT")


class PerSubscription(Generic[ClientT]):
    """Lazily built clients keyed by subscription, sharing a transport."""

    def __init__(self, factory: Callable[..., ClientT], **options: Any) -> None:
        self._factory = factory
        self._transport = options.pop("transport", None) or pooled_transport()
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
