"""The parts of host.json the local host honours, with the real host's defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

# d.hh:mm:ss[.fffffff], hh:mm:ss[.fffffff] or hh:mm, as .NET writes a TimeSpan.
_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2})"
    r"(?::(?P<seconds>\d{1,2})(?:\.(?P<fraction>\d{1,7}))?)?$"
)
MAX_BATCH_SIZE = 32  # the Storage queue service hands out at most 32 messages per call


class InvalidHostConfig(ValueError):
    """host.json holds a value the host would refuse; the message names it."""


def parse_timespan(text: str, setting: str) -> timedelta:
    """A .NET TimeSpan string (`00:00:30`, `1.02:00:00`) as a timedelta."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise InvalidHostConfig(f"{setting}: {text!r} is not a time span like 00:00:30")
    parts = match.groupdict()
    fraction = parts["fraction"] or "0"
    return timedelta(
        days=int(parts["days"] or 0),
        hours=int(parts["hours"]),
        minutes=int(parts["minutes"]),
        seconds=int(parts["seconds"] or 0),
        microseconds=int(fraction.ljust(7, "0")) // 10,
    )


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues`: how queue triggers fetch, retry and give up on messages."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: timedelta = timedelta(minutes=1)
    visibility_timeout: timedelta = timedelta(0)
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> QueueOptions:
        """Read the section; missing keys take the host's defaults."""
        batch_size = _whole_number(section, "batchSize", cls.batch_size, 1, MAX_BATCH_SIZE)
        encoding = str(section.get("messageEncoding", cls.message_encoding)).lower()
        if encoding not in ("base64", "none"):
            raise InvalidHostConfig(
                f"extensions.queues.messageEncoding: {encoding!r} is not base64 or none"
            )
        return cls(
            batch_size=batch_size,
            # The host's default for out-of-process workers on one instance: half a batch.
            new_batch_threshold=_whole_number(
                section, "newBatchThreshold", batch_size // 2, 0, 10_000
            ),
            max_polling_interval=_timespan(section, "maxPollingInterval", cls.max_polling_interval),
            visibility_timeout=_timespan(section, "visibilityTimeout", cls.visibility_timeout),
            max_dequeue_count=_whole_number(
                section, "maxDequeueCount", cls.max_dequeue_count, 1, 10_000
            ),
            message_encoding=encoding,
        )


@dataclass(frozen=True)
class HostConfig:
    """host.json as the local host reads it."""

    queues: QueueOptions = field(default_factory=QueueOptions)
    route_prefix: str = "api"
    function_timeout: timedelta = timedelta(minutes=10)
    log_level: str = "Information"

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> HostConfig:
        """Read a parsed host.json; unknown sections are ignored, as the host does."""
        extensions = document.get("extensions") or {}
        http = extensions.get("http") or {}
        log_levels = (document.get("logging") or {}).get("logLevel") or {}
        timeout_text = document.get("functionTimeout")
        return cls(
            queues=QueueOptions.from_section(extensions.get("queues") or {}),
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            function_timeout=(
                parse_timespan(str(timeout_text), "functionTimeout")
                if timeout_text
                else cls.function_timeout
            ),
            log_level=str(log_levels.get("default", "Information")),
        )

    @classmethod
    def load(cls, source: Path | Mapping[str, Any] | None) -> HostConfig:
        """From a host.json path, an already parsed document, or None for the defaults."""
        if source is None:
            return cls()
        if isinstance(source, Path):
            try:
                document = json.loads(source.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as problem:
                raise InvalidHostConfig(f"{source}: {problem}") from problem
            return cls.from_document(document)
        return cls.from_document(source)


def _whole_number(section: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidHostConfig(
            f"extensions.queues.{key}: {value!r} must be a whole number from {low} to {high}"
        )
    return value


def _timespan(section: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    if key not in section:
        return default
    return parse_timespan(str(section[key]), f"extensions.queues.{key}")
