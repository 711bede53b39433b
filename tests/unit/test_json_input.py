"""The one JSON reader for input from outside: size, depth and encoding limits, no recursion."""

from __future__ import annotations

import pytest

from shared.domain.json_input import (
    MAX_JSON_DEPTH,
    UnreadableJson,
    load_json,
    text_nesting_depth,
    value_nesting_depth,
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_within_the_limits_is_read() -> None:
    assert load_json(b'{"a": [1, {"b": "[[[["}]}', max_bytes=100) == {"a": [1, {"b": "[[[["}]}
    assert load_json(nested(MAX_JSON_DEPTH), max_bytes=1000) is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (nested(MAX_JSON_DEPTH + 1), "nested 33 levels"),
        (nested(1000), "nested 1000 levels"),  # json.loads would raise RecursionError here
        (nested(100_000)[:60_000], "levels"),
        ('{"a":' * 5000 + "1" + "}" * 5000, "levels"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("x" * 1001, "exceeds 1000 bytes"),
        ("é" * 600, "exceeds 1000 bytes"),  # counted in bytes, not characters
        ("not json", "not JSON"),
        ("9" * 5000, "not JSON"),  # longer than Python converts to an int
        ("", "not JSON"),
    ],
)
def test_unreadable_json_is_refused_with_a_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(UnreadableJson, match=reason):
        load_json(raw, max_bytes=1000 if "bytes" in reason else 100_000)


def test_brackets_inside_strings_and_escaped_quotes_do_not_count() -> None:
    assert text_nesting_depth(r'{"a": "\"[[[[[[", "b": [{}]}') == 3


def test_the_depth_of_a_decoded_value_is_measured_without_recursion() -> None:
    value: object = {}
    for _ in range(100_000):
        value = [value]
    assert value_nesting_depth(value) == MAX_JSON_DEPTH + 1  # stops counting past the limit
    assert value_nesting_depth({"a": [1, {"b": ()}]}) == 4
    assert value_nesting_depth("text") == 0
