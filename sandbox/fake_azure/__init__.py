"""Sandbox fake Azure: a stateful HTTPS server answering like ARM, Resource Graph, Log Analytics.

Start it with ``FakeAzure.start(scenario)`` (or ``python -m sandbox.fake_azure``); see README.md.
"""

from .faults import ErrorRule, FaultPlan, LroFailure, WriteThrottle
from .model import (
    AzureModel,
    MaintenanceRun,
    ManualClock,
    ModelSettings,
    PatchResult,
    PowerState,
    SystemClock,
    VirtualMachine,
    VmSpec,
)
from .request_log import RecordedRequest, RequestLog
from .scenario import Scenario, ScenarioError, fleet_scenario, load_scenario
from .server import FakeAzure

__all__ = [
    "AzureModel",
    "ErrorRule",
    "FakeAzure",
    "FaultPlan",
    "LroFailure",
    "MaintenanceRun",
    "ManualClock",
    "ModelSettings",
    "PatchResult",
    "PowerState",
    "RecordedRequest",
    "RequestLog",
    "Scenario",
    "ScenarioError",
    "SystemClock",
    "VirtualMachine",
    "VmSpec",
    "WriteThrottle",
    "fleet_scenario",
    "load_scenario",
]
