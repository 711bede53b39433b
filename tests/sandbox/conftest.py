"""The sandbox's own tests use the shared fake-Azure fixtures and constants."""

from tests.fake_azure import (
    CLIENT_ID,
    FAST_RETRIES,
    OTHER_SUBSCRIPTION,
    SMALL_SCENARIO,
    SUBSCRIPTION,
    WORKSPACE_ID,
    small_scenario,
    vm_id,
)

__all__ = [
    "CLIENT_ID",
    "FAST_RETRIES",
    "OTHER_SUBSCRIPTION",
    "SMALL_SCENARIO",
    "SUBSCRIPTION",
    "WORKSPACE_ID",
    "small_scenario",
    "vm_id",
]
