"""Settings: one frozen object read from the environment (app settings), validated once.

Every setting the app (or its host) reads is listed, with its default and description, in
shared/settings_catalogue.py.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from shared.domain.ids import ConfigurationId, InvalidId
from shared.domain.policy import OptOutTag, OrchestrationPolicy
from shared.settings_catalogue import SECRET_SETTINGS, SETTINGS, STORAGE

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"Setting {setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class DisabledFeature:
    """An optional feature turned off because its setting is malformed."""

    setting: str
    feature: str
    problem: str

    def describe(self) -> str:
        """One line for the log and for answers: names the setting, never a secret's value."""
        return f"{self.feature}: off, because setting {self.setting} {self.problem}"


@dataclass(frozen=True)
class StorageConnection:
    """How to reach the app's storage account: a connection string, or endpoints + identity."""

    connection_string: str | None = None
    table_endpoint: str | None = None
    queue_endpoint: str | None = None
    blob_endpoint: str | None = None
    managed_identity_client_id: str | None = None


@dataclass(frozen=True)
class Settings:
    """Every setting the app reads, validated."""

    storage: StorageConnection
    ledger_table: str
    managed_identity_client_id: str | None
    arm_endpoint: str
    authority_host: str
    log_analytics_endpoint: str
    log_analytics_workspace_id: str | None
    maintenance_api_version: str
    report_container: str
    notify_webhook_url: str | None
    policy: OrchestrationPolicy
    target_subscription_ids: tuple[str, ...]
    target_configuration_ids: tuple[ConfigurationId, ...]
    cancel_allowed_callers: frozenset[str] | None
    # App Service authentication is on (the platform sets WEBSITE_AUTH_ENABLED=True).
    platform_authentication: bool = False
    run_retention: timedelta = timedelta(days=90)
    disabled_features: tuple[DisabledFeature, ...] = ()

    def disabled(self, setting: str) -> DisabledFeature | None:
        """The feature a malformed `setting` turned off, if any."""
        return next((d for d in self.disabled_features if d.setting == setting), None)

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate settings; raise ConfigError naming the first bad one."""
        reader = _Reader(env)
        workspace_id = _heartbeat_workspace(reader)
        return cls(
            storage=_storage(reader),
            ledger_table=reader.get("LEDGER_TABLE_NAME", _table_name),
            managed_identity_client_id=reader.optional("MANAGED_IDENTITY_CLIENT_ID", _guid),
            arm_endpoint=reader.get("ARM_ENDPOINT", _https_url),
            authority_host=reader.get("AZURE_AUTHORITY_HOST", _https_url),
            log_analytics_endpoint=reader.feature(
                "LOG_ANALYTICS_ENDPOINT", _https_url, "The heartbeat check"
            )
            or _default("LOG_ANALYTICS_ENDPOINT"),
            log_analytics_workspace_id=workspace_id,
            maintenance_api_version=reader.get("MAINTENANCE_API_VERSION", _maintenance_version),
            report_container=reader.get("REPORT_CONTAINER", _container_name),
            notify_webhook_url=reader.feature(
                "NOTIFY_WEBHOOK_URL", _webhook_url, "Run notifications"
            ),
            policy=_policy(reader, workspace_id),
            target_subscription_ids=reader.optional("TARGET_SUBSCRIPTION_IDS", _list_of(_guid))
            or (),
            target_configuration_ids=reader.optional(
                "TARGET_CONFIGURATION_IDS", _list_of(_configuration)
            )
            or (),
            cancel_allowed_callers=_allowed_callers(reader),
            # Only the platform's own word turns authentication on; anything else is off.
            platform_authentication=reader.get("WEBSITE_AUTH_ENABLED", str.lower) == "true",
            run_retention=timedelta(days=reader.get("RUN_RETENTION_DAYS", _int_between(1, 3650))),
            disabled_features=tuple(reader.disabled),
        )


def _default(name: str) -> str:
    value = next(spec.default for spec in SETTINGS if spec.name == name)
    assert value is not None
    return value


def _heartbeat_workspace(reader: _Reader) -> str | None:
    workspace = reader.feature("LOG_ANALYTICS_WORKSPACE_ID", _guid, "The heartbeat check")
    # A malformed endpoint turns the check off too: there is nowhere valid to ask.
    endpoint_ok = reader.feature("LOG_ANALYTICS_ENDPOINT", _https_url, "The heartbeat check")
    return workspace if endpoint_ok is not None else None


def _allowed_callers(reader: _Reader) -> frozenset[str] | None:
    name = "CANCEL_ALLOWED_CALLERS"
    if reader.raw(name) is None:
        return None
    callers = reader.feature(name, lambda v: frozenset(_list_of(_guid)(v)), "Cancelling runs")
    # Fail closed: a malformed allow-list allows nobody, and keeps events and tasks running.
    return frozenset() if callers is None else callers


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._defaults = {spec.name: spec.default for spec in SETTINGS}
        self.disabled: list[DisabledFeature] = []

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or not value.strip():
            return self._defaults.get(name)
        return value.strip()

    def get(self, name: str, parse: Callable[[str], T]) -> T:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required")
        try:
            return parse(value)
        except ValueError as e:
            # `from None`: the parser's own error may quote the value.
            raise ConfigError(name, f"{e} ({_shown(name, value)})") from None

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        return None if self.raw(name) is None else self.get(name, parse)

    def feature(self, name: str, parse: Callable[[str], T], feature: str) -> T | None:
        """An optional feature's setting: malformed turns the feature off, never the app."""
        try:
            return self.optional(name, parse)
        except ConfigError as e:
            problem = str(e).removeprefix(f"Setting {name}: ")
            if not any(d.setting == name for d in self.disabled):
                self.disabled.append(DisabledFeature(name, feature, problem))
            return None


def _shown(name: str, value: str) -> str:
    """How an error shows a bad value: never a secret's, never a URL's query or user info."""
    if name in SECRET_SETTINGS:
        return "value not shown: it holds a secret"
    visible = value.split("?", 1)[0].split("#", 1)[0]
    if "@" in visible:
        scheme, _, rest = visible.rpartition("://")
        visible = f"{scheme}://" * bool(scheme) + rest.rsplit("@", 1)[-1]
    suffix = " (query not shown)" if visible != value else ""
    return f"got {visible!r}{suffix}"


_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _table_name(value: str) -> str:
    if not _TABLE.fullmatch(value):
        raise ValueError("must be 3-63 letters and digits, starting with a letter")
    return value


def _guid(value: str) -> str:
    if not _GUID.fullmatch(value):
        raise ValueError("must be a GUID")
    return value.lower()


# Cancel arrived in 2023-09-01-preview; older versions cannot cancel a run.
_MAINTENANCE_VERSION = re.compile(r"(?P<date>20\d\d-\d\d-\d\d)(-preview)?")


def _maintenance_version(value: str) -> str:
    match = _MAINTENANCE_VERSION.fullmatch(value)
    if not match or match["date"] < "2023-09-01":
        raise ValueError("must be an api-version that can cancel: 2023-09-01-preview or later")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= number <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return number

    return parse


def _https_url(value: str) -> str:
    if not re.fullmatch(r"https://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?", value):
        raise ValueError("must be an https:// URL")
    return value.rstrip("/")


def _list_of(parse: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    def parse_list(value: str) -> tuple[T, ...]:
        return tuple(parse(item.strip()) for item in value.split(",") if item.strip())

    return parse_list


def _configuration(value: str) -> ConfigurationId:
    try:
        return ConfigurationId.parse(value)
    except InvalidId as e:
        raise ValueError(str(e)) from e


def _container_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", value):
        raise ValueError("must be a blob container name: 3-63 lower-case letters, digits, '-'")
    return value


def _webhook_url(value: str) -> str:
    try:
        parts = urllib.parse.urlsplit(value)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:  # e.g. a malformed port or IPv6 literal
        scheme, host = "", None
    if scheme != "https" or not host or re.search(r"\s", value):
        raise ValueError("must be an https:// URL")
    return value


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ValueError("must be true or false")
    return lowered == "true"


def _seconds_between(low: int, high: int) -> Callable[[str], timedelta]:
    number = _int_between(low, high)
    return lambda value: timedelta(seconds=number(value))


def _minutes_between(low: int, high: int) -> Callable[[str], timedelta]:
    number = _int_between(low, high)
    return lambda value: timedelta(minutes=number(value))


def _percent(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number from 0 to 100") from None
    if not 0 <= number <= 100:
        raise ValueError("must be a number from 0 to 100")
    return number


def _policy(reader: _Reader, workspace_id: str | None) -> OrchestrationPolicy:
    return OrchestrationPolicy(
        failure_budget_percent=reader.get("FAILURE_BUDGET_PERCENT", _percent),
        start_batch_size=reader.get("START_BATCH_SIZE", _int_between(1, 150)),
        start_concurrency=reader.get("START_CONCURRENCY", _int_between(1, 64)),
        verify_interval=reader.get("VERIFY_INTERVAL_SECONDS", _seconds_between(1, 600)),
        arg_retry=reader.get("ARG_RETRY_SECONDS", _seconds_between(1, 600)),
        wrap_up_wait=reader.get("WRAP_UP_WAIT_MINUTES", _minutes_between(1, 1440)),
        health_wait=reader.get("HEALTH_WAIT_MINUTES", _minutes_between(0, 240)),
        operation_wait_seconds=float(reader.get("OPERATION_WAIT_SECONDS", _int_between(1, 540))),
        task_lease=reader.get("TASK_LEASE_SECONDS", _seconds_between(3, 600)),
        opt_out_tag=reader.get("OPT_OUT_TAG", OptOutTag.parse),
        snapshot_before_start=reader.get("SNAPSHOT_BEFORE_START", _boolean),
        cancel_safety_margin=timedelta(
            seconds=reader.get("CANCEL_SAFETY_MARGIN_SECONDS", _int_between(0, 600))
        ),
        log_analytics_workspace_id=workspace_id,
    )


def _storage(reader: _Reader) -> StorageConnection:
    connection_string = reader.raw(STORAGE)
    if connection_string:
        if "=" not in connection_string:
            raise ConfigError(STORAGE, "is not a storage connection string")
        return StorageConnection(connection_string=connection_string)
    account = reader.raw(f"{STORAGE}__accountName")
    table = reader.raw(f"{STORAGE}__tableServiceUri")
    queue = reader.raw(f"{STORAGE}__queueServiceUri")
    blob = reader.raw(f"{STORAGE}__blobServiceUri")
    if not (account or table):
        raise ConfigError(
            STORAGE,
            f"is required: set a connection string, or {STORAGE}__accountName for an "
            "identity-based connection",
        )
    if account and not _ACCOUNT.fullmatch(account):
        raise ConfigError(f"{STORAGE}__accountName", "must be 3-24 lower-case letters and digits")
    table_endpoint = (
        reader.get(f"{STORAGE}__tableServiceUri", _https_url)
        if table
        else f"https://{account}.table.core.windows.net"
    )
    queue_endpoint = (
        reader.get(f"{STORAGE}__queueServiceUri", _https_url)
        if queue
        else f"https://{account}.queue.core.windows.net"
        if account
        else None
    )
    blob_endpoint = (
        reader.get(f"{STORAGE}__blobServiceUri", _https_url)
        if blob
        else f"https://{account}.blob.core.windows.net"
        if account
        else None
    )
    credential = (reader.raw(f"{STORAGE}__credential") or "managedidentity").lower()
    if credential != "managedidentity":
        raise ConfigError(f"{STORAGE}__credential", "must be `managedidentity`")
    client_id = reader.optional(f"{STORAGE}__clientId", _guid)
    return StorageConnection(
        table_endpoint=table_endpoint,
        queue_endpoint=queue_endpoint,
        blob_endpoint=blob_endpoint,
        managed_identity_client_id=client_id,
    )
