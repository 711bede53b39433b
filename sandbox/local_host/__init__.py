"""A development stand-in for Azure Functions Core Tools: serves a v2-model FunctionApp.

HTTP triggers, the Event Grid webhook, Storage-queue triggers polling Azurite, timer triggers,
and the admin API, with function keys, as the Functions host does. See README.md here.
"""

from sandbox.local_host.host import HostStartError, LocalHost
from sandbox.local_host.keys import AuthLevel, HostKeys

__all__ = ["AuthLevel", "HostKeys", "HostStartError", "LocalHost"]
