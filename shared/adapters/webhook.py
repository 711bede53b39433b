"""Run summaries to a Teams/Slack-style incoming webhook (requests), with retries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.domain.errors import NotificationFailed


class WebhookNotifier:
    """POSTs `{"text": ..., "run": {...}}`; retries 429/5xx with backoff, then raises."""

    def __init__(
        self, url: str, attempts: int = 3, backoff: float = 1.0, timeout: float = 10.0
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._session = requests.Session()
        retry = Retry(
            total=attempts - 1,
            backoff_factor=backoff,
            allowed_methods=["POST"],
            status_forcelist=(429, 500, 502, 503, 504),
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)  # settings allow https only; tests use http

    def send(self, summary: Mapping[str, Any]) -> None:
        """Deliver the summary; raise if the webhook never accepts it."""
        try:
            answer = self._session.post(self._url, json=dict(summary), timeout=self._timeout)
        except requests.RequestException as e:
            raise NotificationFailed(f"webhook unreachable: {type(e).__name__}") from e
        if answer.status_code >= 300:
            raise NotificationFailed(f"webhook answered {answer.status_code}: {answer.text[:300]}")
