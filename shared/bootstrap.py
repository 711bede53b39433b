"""Composition root: builds settings and adapters lazily, once per process.

Nothing here runs at import time, so the worker indexes functions fast and a bad setting fails
the first call with a message naming it. SDK modules are imported inside the builders, where
first used. Tests install their own Container with `use()`, handing in fakes by name.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.domain.timeline import Clock, SystemClock

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.adapters.arm_pacing import ArmBudgets
    from shared.adapters.compute import ComputeMachines
    from shared.adapters.http_transport import EndpointTransports
    from shared.adapters.log_analytics import LogAnalyticsHeartbeats
    from shared.adapters.maintenance import MaintenanceRuns
    from shared.adapters.resource_graph import ResourceGraphMachines
    from shared.config import Settings
    from shared.services.orchestration import Orchestrator
    from shared.services.ports import Notifier, ReportStore, RunLedger, TaskQueue
    from shared.services.reconcile import Reconciler

T = TypeVar("T")

# Queue messages one instance works on at once: host.json's queues batchSize (8) plus its
# newBatchThreshold (4).
QUEUE_MESSAGES_IN_FLIGHT = 12
# HTTP requests and timers served beside them.
OTHER_CALLS_IN_FLIGHT = 32


def http_pool_size(settings: Settings) -> int:
    """Connections to keep per endpoint: every call the instance can have in flight at once."""
    return settings.policy.start_concurrency * QUEUE_MESSAGES_IN_FLIGHT + OTHER_CALLS_IN_FLIGHT


log = logging.getLogger(__name__)


@dataclass
class Container:
    """The process's settings, clock and adapters; each adapter is built on first use.

    `client_options` go to every Azure SDK client (tests use them to shorten retry waits).
    """

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    client_options: dict[str, Any] = field(default_factory=dict)
    # Adapters by name, as built; one handed in here ready-made is used as it is.
    built: dict[str, Any] = field(default_factory=dict)
    # Re-entrant: building one adapter builds the ones it needs (the orchestrator, the ledger).
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if name not in self.built:
            with self._lock:
                if name not in self.built:
                    self.built[name] = build()
        value: T = self.built[name]
        return value

    @property
    def ledger(self) -> RunLedger:
        """The run ledger (Azure Table storage)."""
        return self._once("ledger", self._build_ledger)

    @property
    def credential(self) -> TokenCredential:
        """The identity for ARM, Resource Graph and Log Analytics."""
        from shared.adapters.credentials import azure_credential

        return self._once(
            "credential",
            lambda: azure_credential(
                self.settings.managed_identity_client_id, self.settings.authority_host
            ),
        )

    @property
    def resource_graph(self) -> ResourceGraphMachines:
        """Azure Resource Graph."""
        from shared.adapters.resource_graph import ResourceGraphMachines

        return self._once(
            "resource_graph",
            lambda: ResourceGraphMachines.build(
                self.credential,
                self.settings.arm_endpoint,
                **self._client_options(self.settings.arm_endpoint),
            ),
        )

    @property
    def compute(self) -> ComputeMachines:
        """VM power operations."""
        from shared.adapters.compute import ComputeMachines

        return self._once(
            "compute",
            lambda: ComputeMachines.build(
                self.credential,
                self.settings.arm_endpoint,
                **self._client_options(self.settings.arm_endpoint),
                arm_budgets=self.arm_budgets,
            ),
        )

    @property
    def maintenance(self) -> MaintenanceRuns:
        """Cancel and read runs."""
        from shared.adapters.maintenance import MaintenanceRuns

        return self._once(
            "maintenance",
            lambda: MaintenanceRuns.build(
                self.credential,
                self.settings.arm_endpoint,
                self.settings.maintenance_api_version,
                **self._client_options(self.settings.arm_endpoint),
                arm_budgets=self.arm_budgets,
            ),
        )

    @property
    def heartbeats(self) -> LogAnalyticsHeartbeats:
        """Log Analytics heartbeat queries."""
        from shared.adapters.log_analytics import LogAnalyticsHeartbeats

        return self._once(
            "heartbeats",
            lambda: LogAnalyticsHeartbeats.build(
                self.credential,
                self.settings.log_analytics_endpoint,
                **self._client_options(self.settings.log_analytics_endpoint),
            ),
        )

    @property
    def task_queue(self) -> TaskQueue:
        """The worker's task queue (Storage queue)."""
        from shared.adapters.task_queue import StorageTaskQueue, build_queue_client
        from shared.domain.tasks import TASK_QUEUE

        return self._once(
            "task_queue",
            lambda: StorageTaskQueue(
                build_queue_client(
                    self.settings.storage,
                    TASK_QUEUE,
                    self._storage_credential(),
                    self.transports,
                )
            ),
        )

    @property
    def reports(self) -> ReportStore:
        """Run reports (blob container)."""
        from shared.adapters.report_store import BlobReportStore, build_container_client

        return self._once(
            "reports",
            lambda: BlobReportStore(
                build_container_client(
                    self.settings.storage,
                    self.settings.report_container,
                    self._storage_credential(),
                    self.transports,
                )
            ),
        )

    @property
    def notifier(self) -> Notifier | None:
        """The webhook notifier, or None when no webhook is configured."""
        url = self.settings.notify_webhook_url
        if url is None:
            return None
        from shared.adapters.webhook import WebhookNotifier

        return self._once("notifier", lambda: WebhookNotifier(url))

    @property
    def orchestrator(self) -> Orchestrator:
        """The task worker's use cases, wired to the adapters."""
        from shared.services.orchestration import Orchestrator

        def build() -> Orchestrator:
            settings = self.settings
            return Orchestrator(
                ledger=self.ledger,
                queue=self.task_queue,
                graph=self.resource_graph,
                machines=self.compute,
                canceller=self.maintenance,
                reports=self.reports,
                clock=self.clock,
                policy=settings.policy,
                heartbeats=self.heartbeats if settings.log_analytics_workspace_id else None,
                notifier=self.notifier,
            )

        return self._once("orchestrator", build)

    @property
    def reconciler(self) -> Reconciler:
        """The reconcile timer's use case."""
        from shared.services.reconcile import Reconciler

        return self._once(
            "reconciler",
            lambda: Reconciler(
                ledger=self.ledger,
                graph=self.resource_graph,
                queue=self.task_queue,
                clock=self.clock,
                policy=self.settings.policy,
                target_configurations=self.settings.target_configuration_ids,
                retention=self.settings.run_retention,
            ),
        )

    def _client_options(self, endpoint: str) -> dict[str, Any]:
        """SDK client options, with the endpoint's shared pooled transport."""
        if "transport" in self.client_options:
            return dict(self.client_options)
        return {**self.client_options, "transport": self.transports.for_endpoint(endpoint)}

    @property
    def arm_budgets(self) -> ArmBudgets:
        """ARM's budgets as the process sees them, shared by every ARM client (one principal)."""
        from shared.adapters.arm_pacing import ArmBudgets

        return self._once("arm_budgets", ArmBudgets)

    @property
    def transports(self) -> EndpointTransports:
        """One pooled HTTP transport per endpoint, sized for the calls the app has in flight."""
        from shared.adapters.http_transport import EndpointTransports

        return self._once("transports", lambda: EndpointTransports(http_pool_size(self.settings)))

    def _storage_credential(self) -> TokenCredential | None:
        storage = self.settings.storage
        if storage.connection_string:
            return None
        from shared.adapters.credentials import storage_credential

        return self._once("storage_credential", lambda: storage_credential(storage))

    def _build_ledger(self) -> RunLedger:
        from shared.adapters.table_ledger import TableRunLedger, build_table_service

        service = build_table_service(
            self.settings.storage, self._storage_credential(), self.transports
        )
        return TableRunLedger(service, self.settings.ledger_table)


_container: Container | None = None
_container_lock = threading.Lock()


def container() -> Container:
    """The process-wide container, built from the environment on first call."""
    global _container
    if _container is None:
        from shared.config import Settings

        with _container_lock:
            if _container is None:
                settings = Settings.from_environ(os.environ)
                for disabled in settings.disabled_features:
                    log.error("%s; fix the setting and restart the app", disabled.describe())
                _container = Container(settings=settings)
    return _container


def use(replacement: Container | None) -> None:
    """Install a container (tests), or None to rebuild from the environment on next use."""
    global _container
    with _container_lock:
        _container = replacement
