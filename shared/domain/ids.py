"""ARM ids the app trusts: subscriptions, maintenance configurations and runs (applyupdates).

Every id that later reaches a query or a URL passes through here first. The patterns follow ARM's
naming rules (resource-name-rules: resource groups take Unicode letters and digits, '_', '-',
'.', '(' and ')', and do not end in '.'), so a name ARM accepts is never refused here; quotes,
pipes, slashes, whitespace, control characters and `..` never validate. Query text still quotes
every value with KQL's own escaping (shared/adapters/kql.py) rather than trusting these patterns.
ARM ids are compared case-insensitively; the original text is kept for calls.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.domain.timeline import within_calendar

GUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# `\w` is Unicode-aware: letters and digits of any script, and '_' (ARM's Char.IsLetterOrDigit).
# Resource group names: letters, digits, '_', '-', '.', '(' and ')'; at most 90; no trailing '.'.
RESOURCE_GROUP_PATTERN = r"[\w.()-]{0,89}[\w()-]"
# Maintenance configuration names: ARM's general rule (the Maintenance provider documents none):
# the resource group's characters, at most 128, no trailing '.'.
CONFIGURATION_NAME_PATTERN = r"[\w.()-]{0,127}[\w()-]"
RUN_NAME_PATTERN = r"[0-9]{14}"
RUN_NAME_FORMAT = "%Y%m%d%H%M%S"

_SUBSCRIPTION = re.compile(GUID_PATTERN)
_CONFIGURATION = re.compile(
    rf"/subscriptions/(?P<sub>{GUID_PATTERN})"
    rf"/resourcegroups/(?P<rg>{RESOURCE_GROUP_PATTERN})"
    rf"/providers/microsoft\.maintenance/maintenanceconfigurations/(?P<name>{CONFIGURATION_NAME_PATTERN})",
    re.IGNORECASE,
)
_RUN_SUFFIX = re.compile(
    rf"(?P<configuration>.+)/providers/microsoft\.maintenance/applyupdates/(?P<run>{RUN_NAME_PATTERN})",
    re.IGNORECASE,
)
MAX_ID_LENGTH = 512


def describe_for_log(value: object, limit: int = 100) -> str:
    """Untrusted text made safe for one log line: repr (escapes newlines), truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidId(ValueError):
    """A value that is not the kind of ARM id (or name) it claims to be."""


def _check_plain(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidId(f"{what} must be a string")
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{what} must be 1..{MAX_ID_LENGTH} characters")
    if ".." in value:
        raise InvalidId(f"{what} must not contain '..'")
    return value


def parse_subscription_id(value: object) -> str:
    """A subscription id (GUID), normalised to lower case."""
    text = _check_plain(value, "subscription id")
    if not _SUBSCRIPTION.fullmatch(text):
        raise InvalidId(f"subscription id is not a GUID: {describe_for_log(text)}")
    return text.lower()


def parse_run_name(value: object) -> datetime:
    """The scheduled start (UTC) that a run name (yyyyMMddHHmmss) stands for."""
    text = _check_plain(value, "run name")
    if not re.fullmatch(RUN_NAME_PATTERN, text):
        raise InvalidId(f"run name is not yyyyMMddHHmmss: {describe_for_log(text)}")
    try:
        start = datetime.strptime(text, RUN_NAME_FORMAT).replace(tzinfo=UTC)
    except ValueError as e:
        raise InvalidId(f"run name is not a real date and time: {describe_for_log(text)}") from e
    if not within_calendar(start):
        raise InvalidId(f"run name is too close to the end of the calendar: {text}")
    return start


@dataclass(frozen=True)
class ConfigurationId:
    """A maintenance configuration's ARM id."""

    text: str
    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, value: object) -> ConfigurationId:
        """Validate a maintenance configuration id; raise InvalidId otherwise."""
        text = _check_plain(value, "maintenance configuration id")
        match = _CONFIGURATION.fullmatch(text)
        if not match:
            raise InvalidId(f"not a maintenance configuration id: {describe_for_log(text)}")
        return cls(
            text=text,
            subscription_id=match["sub"].lower(),
            resource_group=match["rg"],
            name=match["name"],
        )

    @property
    def key(self) -> str:
        """Case-insensitive identity of the configuration."""
        return self.text.lower()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigurationId) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class RunId:
    """A run's ARM id, which is also its CorrelationId: `<MC id>/providers/microsoft.maintenance/
    applyupdates/<yyyyMMddHHmmss>`."""

    text: str
    configuration: ConfigurationId
    run_name: str
    scheduled_start: datetime

    @classmethod
    def parse(cls, value: object) -> RunId:
        """Validate a CorrelationId; raise InvalidId otherwise."""
        text = _check_plain(value, "CorrelationId")
        match = _RUN_SUFFIX.fullmatch(text)
        if not match:
            raise InvalidId(f"CorrelationId is not an applyupdates id: {describe_for_log(text)}")
        configuration = ConfigurationId.parse(match["configuration"])
        start = parse_run_name(match["run"])
        return cls(
            text=text, configuration=configuration, run_name=match["run"], scheduled_start=start
        )

    @classmethod
    def of(cls, configuration: ConfigurationId, run_name: str) -> RunId:
        """The run of `configuration` named `run_name`, written the way the platform writes it."""
        start = parse_run_name(run_name)
        text = f"{configuration.text}/providers/microsoft.maintenance/applyupdates/{run_name}"
        return cls(text=text, configuration=configuration, run_name=run_name, scheduled_start=start)

    @property
    def key(self) -> str:
        """Case-insensitive identity of the run."""
        return self.text.lower()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunId) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


# VM names: up to 64 (Linux; 15 for Windows) letters, digits, '_', '-', '.'; Arc machine names up
# to 54 of the same. Parentheses are accepted too, as ARM's generic rule allows them; no trailing
# '.'.
MACHINE_NAME_PATTERN = r"[\w.()-]{0,63}[\w()-]"
_MACHINE = re.compile(
    rf"/subscriptions/(?P<sub>{GUID_PATTERN})"
    rf"/resourcegroups/(?P<rg>{RESOURCE_GROUP_PATTERN})"
    r"/providers/(?P<type>microsoft\.compute/virtualmachines|microsoft\.hybridcompute/machines)"
    rf"/(?P<name>{MACHINE_NAME_PATTERN})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class MachineId:
    """An Azure VM's or an Arc-enabled server's ARM id."""

    text: str
    subscription_id: str
    resource_group: str
    name: str
    is_arc: bool

    @classmethod
    def parse(cls, value: object) -> MachineId:
        """Validate a VM or Arc machine id; raise InvalidId otherwise. The ids a process has
        parsed lately are remembered (a fan-out parses each of thousands of ids many times;
        an id is immutable, and a refused one is never remembered)."""
        if isinstance(value, str):
            return _machine_id(value)
        return _parse_machine_id(value)

    @property
    def key(self) -> str:
        """Case-insensitive identity of the machine."""
        return self.text.lower()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MachineId) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def _parse_machine_id(value: object) -> MachineId:
    text = _check_plain(value, "machine id")
    match = _MACHINE.fullmatch(text)
    if not match:
        raise InvalidId(f"not a VM or Arc machine id: {describe_for_log(text)}")
    return MachineId(
        text=text,
        subscription_id=match["sub"].lower(),
        resource_group=match["rg"],
        name=match["name"],
        is_arc=match["type"].lower() == "microsoft.hybridcompute/machines",
    )


# Bounded: a process sees a few fleets' ids; each entry is a few hundred bytes.
_machine_id = functools.lru_cache(maxsize=20_000)(_parse_machine_id)
