"""Keys, local.settings.json, host.json and binding expressions: where settings come from."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox.local_host.host_config import HostConfig, InvalidHostConfig, parse_timespan
from sandbox.local_host.keys import (
    ENV_FUNCTION_KEY,
    ENV_MASTER_KEY,
    GENERATED,
    AuthLevel,
    HostKeys,
    InvalidKeysFile,
)
from sandbox.local_host.local_settings import EnvironmentOverlay, read_local_settings
from sandbox.local_host.registry import MissingSetting, resolve_binding_expression

ROOT = Path(__file__).resolve().parents[2]


def test_keys_come_from_environment_then_keys_file_then_are_generated(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"function": "from-file", "master": "master-from-file"}))
    keys = HostKeys.load({ENV_FUNCTION_KEY: "from-env"}, keys_file)
    assert keys.function == "from-env"
    assert keys.master == "master-from-file"
    assert keys.sources["eventgrid_extension"] == GENERATED
    assert len(keys.eventgrid_extension) >= 32
    assert HostKeys.load({}).function != HostKeys.load({}).function


def test_bad_keys_file_is_refused(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text('{"function": 7}')
    with pytest.raises(InvalidKeysFile):
        HostKeys.load({}, keys_file)


def test_auth_levels_accept_the_right_keys() -> None:
    keys = HostKeys.load({ENV_FUNCTION_KEY: "f", ENV_MASTER_KEY: "m"})
    assert keys.allows(AuthLevel.ANONYMOUS, None)
    assert keys.allows(AuthLevel.FUNCTION, "f") and keys.allows(AuthLevel.FUNCTION, "m")
    assert not keys.allows(AuthLevel.FUNCTION, None) and not keys.allows(AuthLevel.FUNCTION, "x")
    assert keys.allows(AuthLevel.ADMIN, "m") and not keys.allows(AuthLevel.ADMIN, "f")
    assert keys.allows_eventgrid(keys.eventgrid_extension) and not keys.allows_eventgrid("f")


def test_local_settings_fill_only_unset_variables_and_are_undone(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"A": "file", "B": "file", "N": 5}}))
    environ = {"A": "env"}
    overlay = EnvironmentOverlay(environ)
    assert overlay.set_defaults(read_local_settings(settings)) == ["B", "N"]
    overlay.set({"A": "override"})
    assert environ == {"A": "override", "B": "file", "N": "5"}
    overlay.restore()
    assert environ == {"A": "env"}


def test_the_projects_host_json_is_read_with_its_queue_settings() -> None:
    config = HostConfig.load(ROOT / "host.json")
    assert config.queues.batch_size == 8
    assert config.queues.new_batch_threshold == 4
    assert config.queues.max_dequeue_count == 5
    assert config.queues.visibility_timeout == timedelta(seconds=30)
    assert config.queues.max_polling_interval == timedelta(seconds=2)
    assert config.queues.message_encoding == "base64"
    assert config.function_timeout == timedelta(minutes=10)
    assert config.route_prefix == "api"


def test_host_json_defaults_are_the_hosts() -> None:
    config = HostConfig.load({"extensions": {"queues": {"batchSize": 10}}})
    assert config.queues.new_batch_threshold == 5
    assert config.queues.max_polling_interval == timedelta(minutes=1)
    assert config.queues.visibility_timeout == timedelta(0)


@pytest.mark.parametrize(
    "queues",
    [
        {"batchSize": 33},
        {"batchSize": 0},
        {"messageEncoding": "utf8"},
        {"visibilityTimeout": "30s"},
    ],
)
def test_host_json_values_the_host_refuses_are_refused(queues: dict[str, object]) -> None:
    with pytest.raises(InvalidHostConfig):
        HostConfig.load({"extensions": {"queues": queues}})


def test_timespans_parse_like_dotnet() -> None:
    assert parse_timespan("00:00:00.200", "x") == timedelta(milliseconds=200)
    assert parse_timespan("1.02:03:04", "x") == timedelta(days=1, hours=2, minutes=3, seconds=4)


def test_binding_expressions_resolve_from_the_environment_and_name_a_missing_setting() -> None:
    assert resolve_binding_expression("%Q%-items", {"Q": "work"}, "f") == "work-items"
    assert resolve_binding_expression("plain", {}, "f") == "plain"
    with pytest.raises(MissingSetting, match="%NOPE%"):
        resolve_binding_expression("%NOPE%", {}, "on_thing queueName")
