"""LocalHost: serves a v2-model FunctionApp the way the Functions host does, in this process."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import azure.functions as func

from sandbox.local_host.admin_api import AdminApi
from sandbox.local_host.eventgrid_webhook import WEBHOOK_PATH, EventGridWebhook
from sandbox.local_host.host_config import HostConfig
from sandbox.local_host.http_server import LocalHttpServer, RequestRouter
from sandbox.local_host.http_triggers import HttpRoute, HttpTriggers
from sandbox.local_host.invocation import FunctionInvoker, InvocationTracker
from sandbox.local_host.keys import HostKeys
from sandbox.local_host.local_settings import EnvironmentOverlay, read_local_settings
from sandbox.local_host.ncrontab import CronSchedule, InvalidSchedule
from sandbox.local_host.queues import QueueListener
from sandbox.local_host.registry import (
    FunctionIndex,
    IndexedFunction,
    TriggerType,
    load_function_app,
    resolve_binding_expression,
)
from sandbox.local_host.timers import TimerTrigger
from sandbox.local_host.worker_pool import worker_thread_count

log = logging.getLogger(__name__)

DEFAULT_APP = "function_app:app"
DEFAULT_CONNECTION = "AzureWebJobsStorage"
# Storage rules: 3-63 lower-case letters, digits and single hyphens, no hyphen at either end.
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
# How often wait_idle() looks at the queues while work remains.
IDLE_CHECK_INTERVAL = 0.05


class HostStartError(ValueError):
    """The app cannot be served as configured; the message names the function and setting."""


class LocalHost:
    """A running local Functions host: HTTP, Event Grid webhook, queue pollers, timers.

    Start one with `LocalHost.start(...)`; use it as a context manager to stop it.
    """

    def __init__(
        self,
        index: FunctionIndex,
        *,
        config: HostConfig,
        keys: HostKeys,
        port: int,
        environ: Mapping[str, str],
    ) -> None:
        """Build every part from the index; nothing runs until `serve()`."""
        self.index = index
        self.config = config
        self.keys = keys
        self.tracker = InvocationTracker()
        invoker = FunctionInvoker(self.tracker, worker_thread_count(environ))
        self.invoker = invoker
        try:
            routes = [HttpRoute.of(f, environ) for f in index.of_type(TriggerType.HTTP)]
            self.http_triggers = HttpTriggers(routes, keys, invoker)
            self.queue_listeners = [
                self._listener(f, environ, invoker) for f in index.of_type(TriggerType.QUEUE)
            ]
            self.timers = [
                self._timer(f, environ, invoker) for f in index.of_type(TriggerType.TIMER)
            ]
        except HostStartError:
            raise
        except ValueError as problem:  # MissingSetting, InvalidRoute, RouteConflict, ...
            raise HostStartError(str(problem)) from problem
        self.eventgrid_functions = index.of_type(TriggerType.EVENT_GRID)
        self._router = RequestRouter(
            self.http_triggers,
            EventGridWebhook(self.eventgrid_functions, keys, invoker),
            AdminApi(index, keys, invoker),
            config.route_prefix,
            self.tracker,
        )
        self._server = LocalHttpServer(port, self._router)
        self._serving: threading.Thread | None = None
        self._environment: EnvironmentOverlay | None = None
        self._stopped = False

    @classmethod
    def start(
        cls,
        app: func.FunctionApp | str = DEFAULT_APP,
        *,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        settings_file: Path | None = None,
        host_json: Path | Mapping[str, Any] | None = None,
        keys: HostKeys | None = None,
        keys_file: Path | None = None,
        functions: Collection[str] | None = None,
    ) -> LocalHost:
        """Start serving `app` (a FunctionApp or `module:attribute`) on 127.0.0.1:`port`.

        `env` is set in the process environment for the host's life (replacing current values);
        `settings_file` values only where unset. Both are undone by `stop()`. `host_json` is a
        path or a parsed document (None: the host's defaults). Keys come from `keys`, else the
        LOCAL_HOST_*_KEY variables, else `keys_file`, else are generated. `functions` serves
        only the functions named (like `func start --functions`); None serves them all.
        """
        environment = EnvironmentOverlay()
        try:
            environment.set(env or {})
            if settings_file is not None:
                environment.set_defaults(read_local_settings(settings_file))
            function_app = load_function_app(app) if isinstance(app, str) else app
            host = cls(
                FunctionIndex.from_app(function_app, only=functions),
                config=HostConfig.load(host_json),
                keys=keys or HostKeys.load(os.environ, keys_file),
                port=port,
                environ=os.environ,
            )
        except BaseException:
            environment.restore()
            raise
        host._environment = environment
        host.serve()
        return host

    def serve(self) -> None:
        """Start the HTTP server, the queue pollers and the timers."""
        self._serving = threading.Thread(
            target=self._server.serve_forever,
            # stop() waits up to one poll interval for the accept loop to notice.
            kwargs={"poll_interval": 0.05},
            name="local-host-http",
            daemon=True,
        )
        self._serving.start()
        for listener in self.queue_listeners:
            listener.start()
        for timer in self.timers:
            timer.start()
        log.info(
            "Local host listening on %s; %d worker threads", self.url, self.invoker.worker_threads
        )

    @property
    def port(self) -> int:
        """The port the host listens on."""
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:7071."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def function_key(self) -> str:
        """Opens FUNCTION-level HTTP functions."""
        return self.keys.function

    @property
    def master_key(self) -> str:
        """Opens everything, including ADMIN-level functions and the admin API."""
        return self.keys.master

    @property
    def system_key(self) -> str:
        """The `eventgrid_extension` system key for the Event Grid webhook."""
        return self.keys.eventgrid_extension

    def webhook_url(self, function_name: str) -> str:
        """The URL an Event Grid subscription would deliver this function's events to."""
        return f"{self.url}{WEBHOOK_PATH}?functionName={function_name}&code={self.system_key}"

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every polled queue is empty and nothing runs; False if the timeout passed."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            if self._idle():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not self.tracker.wait_until_idle(remaining):
                return False
            pause.wait(min(IDLE_CHECK_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _idle(self) -> bool:
        if self.tracker.in_flight:
            return False
        if not all(listener.is_idle() for listener in self.queue_listeners):
            return False
        # A message fetched while the queues were checked is counted by now.
        return self.tracker.in_flight == 0

    def stop(self, drain_timeout: float = 30.0) -> bool:
        """Stop taking work, let running invocations finish; False if some did not in time."""
        if self._stopped:
            return True
        self._stopped = True
        self._router.stopping.set()
        if self._serving is not None:
            # Only a serving server can be shut down: shutdown() waits for the accept loop.
            self._server.shutdown()
        for listener in self.queue_listeners:
            listener.stop()
        for timer in self.timers:
            timer.stop()
        drained = self.tracker.wait_until_idle(drain_timeout)
        if not drained:
            log.warning("Stopped with %d invocations still running", self.tracker.in_flight)
        for listener in self.queue_listeners:
            listener.close(wait=drained)
        self.invoker.close(wait=drained)
        self._server.server_close()
        if self._environment is not None:
            self._environment.restore()
        log.info("Local host stopped")
        return drained

    def __enter__(self) -> LocalHost:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def describe(self) -> list[str]:
        """Human-readable lines: each function and how to reach it."""
        lines = []
        for route in self.http_triggers.routes:
            lines.append(
                f"{route.function.name}: {route.describe(self.url, self.config.route_prefix)}"
            )
        for function in self.eventgrid_functions:
            lines.append(
                f"{function.name}: eventGridTrigger {self.url}{WEBHOOK_PATH}"
                f"?functionName={function.name}&code=<eventgrid_extension key>"
            )
        for listener in self.queue_listeners:
            lines.append(f"{listener.function.name}: queueTrigger on queue {listener.queue_name}")
        for timer in self.timers:
            lines.append(
                f"{timer.function.name}: timerTrigger {timer.schedule} "
                f"(next {timer.next_occurrence().isoformat()})"
            )
        return lines

    def ready_document(self) -> dict[str, Any]:
        """What the ready file holds: where the host listens and its keys."""
        return {
            "url": self.url,
            "pid": os.getpid(),
            "keys": self.keys.as_document(),
            "functions": {f.name: str(f.trigger_type) for f in self.index},
        }

    def _listener(
        self, function: IndexedFunction, environ: Mapping[str, str], invoker: FunctionInvoker
    ) -> QueueListener:
        trigger = function.trigger
        queue_name = resolve_binding_expression(
            str(trigger.get("queueName", "")), environ, f"{function.name} queueName"
        ).lower()
        if not _QUEUE_NAME.match(queue_name):
            raise HostStartError(f"{function.name}: {queue_name!r} is not a valid queue name")
        setting = str(trigger.get("connection") or DEFAULT_CONNECTION)
        # The host also looks the name up with the AzureWebJobs prefix.
        connection = environ.get(setting) or environ.get(f"AzureWebJobs{setting}")
        if not connection:
            identity_based = any(k.startswith(f"{setting}__") and environ[k] for k in environ)
            hint = (
                " (identity-based connections are not supported locally)" if identity_based else ""
            )
            raise HostStartError(
                f"{function.name}: connection setting {setting!r} holds no connection string{hint}"
            )
        return QueueListener(
            function,
            queue_name,
            connection,
            self.config.queues,
            invoker,
            lease=self.config.function_timeout,
        )

    def _timer(
        self, function: IndexedFunction, environ: Mapping[str, str], invoker: FunctionInvoker
    ) -> TimerTrigger:
        trigger = function.trigger
        expression = resolve_binding_expression(
            str(trigger.get("schedule", "")), environ, f"{function.name} schedule"
        )
        try:
            schedule = CronSchedule.parse(expression)
        except InvalidSchedule as problem:
            raise HostStartError(f"{function.name}: {problem}") from problem
        return TimerTrigger(
            function, schedule, invoker, run_on_startup=bool(trigger.get("runOnStartup", False))
        )
