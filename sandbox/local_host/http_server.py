"""The HTTP side of the host: a loopback ThreadingHTTPServer and the router behind it.

Paths, as on the real host: `/<routePrefix>/...` for HTTP triggers, `/runtime/webhooks/eventgrid`
for Event Grid, `/admin/functions/{name}` for the admin API.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.local_host.admin_api import ADMIN_FUNCTIONS_PATH, AdminApi
from sandbox.local_host.eventgrid_webhook import WEBHOOK_PATH, EventGridWebhook
from sandbox.local_host.http_messages import HostRequest, HostResponse
from sandbox.local_host.http_triggers import HttpTriggers
from sandbox.local_host.invocation import InvocationTracker

log = logging.getLogger(__name__)
_QUERY = re.compile(r"\?[^\s\"]*")

LOOPBACK = "127.0.0.1"
# The Functions host's own limit on request bodies.
MAX_BODY_BYTES = 100 * 1024 * 1024


class RequestRouter:
    """Sends each request to the part of the host that serves its path."""

    def __init__(
        self,
        http_triggers: HttpTriggers,
        webhook: EventGridWebhook,
        admin: AdminApi,
        route_prefix: str,
        tracker: InvocationTracker,
    ) -> None:
        self._http_triggers = http_triggers
        self._webhook = webhook
        self._admin = admin
        self._route_prefix = route_prefix.strip("/")
        self._tracker = tracker
        self.stopping = threading.Event()

    def route(self, request: HostRequest) -> HostResponse:
        """Answer one request; a host error is a 500, never a dropped connection."""
        if self.stopping.is_set():
            return HostResponse.text(503, "The host is shutting down.")
        with self._tracker.tracking():
            try:
                return self._route(request)
            except Exception:
                log.exception("Local host error on %s %s", request.method, request.path)
                return HostResponse.text(500, "Local host error; see the host log.")

    def _route(self, request: HostRequest) -> HostResponse:
        path = request.path
        if path.rstrip("/") == WEBHOOK_PATH:
            return self._webhook.handle(request)
        if path.startswith(ADMIN_FUNCTIONS_PATH):
            name = urllib.parse.unquote(path[len(ADMIN_FUNCTIONS_PATH) :]).strip("/")
            return self._admin.handle(request, name)
        if not self._route_prefix:
            return self._http_triggers.handle(request, path)
        prefix = f"/{self._route_prefix}"
        if path == prefix or path.startswith(prefix + "/"):
            return self._http_triggers.handle(request, path[len(prefix) :])
        return HostResponse.text(404, "Not found.")


class LocalHttpServer(ThreadingHTTPServer):
    """Serves the router on the loopback interface; one thread per connection."""

    daemon_threads = True

    def __init__(self, port: int, router: RequestRouter) -> None:
        self.router = router
        super().__init__((LOOPBACK, port), _RequestHandler)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalHttpServer
    protocol_version = "HTTP/1.1"
    # Seconds a kept-alive connection may sit idle (or a client stall mid-request) before its
    # thread gives up; keeps threads from piling up behind idle clients.
    timeout = 60

    # BaseHTTPRequestHandler dispatches each method to do_<METHOD>.
    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, QUERY, ...) reaches the router too, which answers 404 for a
        # method no function accepts, as the Functions host does; the stdlib would say 501.
        if name.startswith("do_") and name[3:].isalpha() and name[3:].isupper():
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as problem:
            self._send(HostResponse.text(400, str(problem)), close=True)
            return
        target = urllib.parse.urlsplit(self.path)
        request = HostRequest(
            method=self.command,
            path=target.path or "/",
            query=target.query,
            headers=tuple(self.headers.items()),
            body=body,
            base_url=f"http://{self.headers.get('Host') or f'{LOOPBACK}:{self.server.port}'}",
        )
        response = self.server.router.route(request)
        self._send(response, close=self.server.router.stopping.is_set())

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length") or "0"
        if not length_text.isdigit():
            raise ValueError(f"Bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise ValueError("The body is larger than the host accepts (100 MB).")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError("Bad chunk size in a chunked body") from None
            if size == 0:
                # Skip trailer fields up to the blank line that ends the message.
                while self.rfile.readline(8192).strip():
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError("The body is larger than the host accepts (100 MB).")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk

    def _send(self, response: HostResponse, *, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        # The request line carries the query string, and with it any `?code=` key.
        log.debug("%s %s", self.address_string(), _QUERY.sub("", format % args))
