"""Run summaries to a Teams/Slack-style incoming webhook (requests), with retries.

The webhook URL is a secret (its path is the credential), so nothing here lets it reach a log
line or an exception: errors name the host only and are raised without their cause (requests
puts the URL in its own messages), retries are our own loop rather than urllib3's (whose retry
warnings quote the path), and urllib3's DEBUG line for each request has the path masked.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import requests

from shared.domain.errors import NotificationFailed

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 30.0


class _MaskPaths(logging.Filter):
    """Masks secret URL paths in urllib3's connection-pool records (it logs each request's
    path at DEBUG): a host whose log level is lowered to troubleshoot still shows no secret."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.paths and isinstance(record.args, tuple):
            record.args = tuple(self._masked(arg) for arg in record.args)
        return True

    def _masked(self, value: object) -> object:
        if isinstance(value, str):
            for path in sorted(self.paths, key=len, reverse=True):
                value = value.replace(path, "/(webhook path)")
        return value


_MASK = _MaskPaths()
_MASK_LOCK = threading.Lock()


def _mask_in_urllib3_logs(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return
    if not parts.path.strip("/"):
        return
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    with _MASK_LOCK:
        _MASK.paths.update({target, parts.path})
        pool_log = logging.getLogger("urllib3.connectionpool")
        if _MASK not in pool_log.filters:
            pool_log.addFilter(_MASK)


def webhook_host(url: str) -> str:
    """The part of a webhook URL that may be shown: its host name."""
    try:
        return urllib.parse.urlsplit(url).hostname or "(no host)"
    except ValueError:
        return "(unreadable host)"


class WebhookNotifier:
    """POSTs `{"text": ..., "run": {...}}`; retries 429/5xx with backoff, then raises."""

    def __init__(
        self,
        url: str,
        attempts: int = 3,
        backoff: float = 1.0,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = url
        self._host = webhook_host(url)
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
        self._session = requests.Session()
        _mask_in_urllib3_logs(url)

    def send(self, summary: Mapping[str, Any]) -> None:
        """Deliver the summary; raise if the webhook never accepts it."""
        problem, tries = "", 0
        for attempt in range(self._attempts):
            tries = attempt + 1
            if attempt:
                self._sleep(self._wait(attempt, problem))
            try:
                answer = self._session.post(self._url, json=dict(summary), timeout=self._timeout)
            except requests.RequestException as e:
                problem = f"unreachable ({type(e).__name__})"
                continue
            with answer:
                if answer.status_code < 300:
                    return
                problem = f"answered {answer.status_code}"
                self._retry_after = _retry_after(answer)
                if answer.status_code not in RETRIED_STATUSES:
                    break
        # `from None`: the requests/urllib3 errors underneath quote the URL.
        raise NotificationFailed(
            f"webhook at {self._host} {problem} (attempt {tries} of {self._attempts})"
        ) from None

    _retry_after: float | None = None

    def _wait(self, attempt: int, problem: str) -> float:
        waited = float(self._backoff * 2 ** (attempt - 1))
        if problem.startswith("answered") and self._retry_after is not None:
            waited = max(waited, self._retry_after)
        self._retry_after = None
        return waited


def _retry_after(answer: requests.Response) -> float | None:
    value = answer.headers.get("Retry-After", "")
    try:
        return min(MAX_RETRY_AFTER_SECONDS, max(0.0, float(value)))
    except ValueError:
        return None
