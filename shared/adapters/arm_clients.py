"""Management SDK clients that need a subscription id are built once per subscription, all
sharing one HTTP transport (one connection pool) per SDK type."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from azure.core.pipeline.transport import RequestsTransport

ClientT = TypeVar("ClientT")


class PerSubscription(Generic[ClientT]):
    """Lazily built clients keyed by subscription, sharing a transport."""

    def __init__(self, factory: Callable[..., ClientT], **options: Any) -> None:
        self._factory = factory
        self._options = options
        self._transport = RequestsTransport()
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
