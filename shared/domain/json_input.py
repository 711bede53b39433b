"""JSON from outside the app (event deliveries, queue messages, request bodies, headers), read
with limits on size and nesting.

`json.loads` recurses once per level and raises RecursionError near a thousand levels, which no
caller expects; a document nested that deep is never one of ours. So the nesting is measured on
the text first, without recursion, and anything over the limit is refused as unreadable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Maintenance events nest five levels, tasks two, principals three: far below this.
MAX_JSON_DEPTH = 32

# A JSON string, escapes included: brackets inside strings do not nest anything.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")


class UnreadableJson(ValueError):
    """Input that is not JSON the app can read: too large, too deep, not UTF-8 or not JSON."""


def load_json(raw: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode `raw` as JSON, refusing more than `max_bytes` or `max_depth` levels of nesting."""
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise UnreadableJson(f"{size} bytes exceeds {max_bytes} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise UnreadableJson("the bytes are not UTF-8") from e
    depth = text_nesting_depth(text)
    if depth > max_depth:
        raise UnreadableJson(f"nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError also covers integers too long to convert; RecursionError cannot happen
        # below the depth limit but is kept out of callers all the same.
        raise UnreadableJson("not JSON") from e


def text_nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text (strings ignored), without recursion."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def value_nesting_depth(value: object, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep lists and mappings nest in a decoded value, counting no further than
    `limit + 1`, without recursion (a value built in memory may be nested arbitrarily)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, Mapping):
            children: list[object] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if level > limit:
            return deepest
        pending.extend((child, level) for child in children)
    return deepest
