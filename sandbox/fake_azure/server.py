"""The HTTPS server of the fake Azure and :class:`FakeAzure`, the handle tests and scripts use.

Standard library only: ``ThreadingHTTPServer`` + ``ssl``. Each start makes a fresh CA in a temp
directory; clients trust it through ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .faults import FaultPlan
from .identity import TokenGrant, TokenStore
from .model import AzureModel, Clock
from .request_log import RecordedRequest, RequestLog
from .scenario import AppliedScenario, Scenario, apply_scenario, load_scenario
from .service import FakeAzureService, Request, Response
from .tls import TlsMaterial, write_tls_material

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :class:`Request` objects for the service."""

    protocol_version = "HTTP/1.1"  # keep-alive: the SDKs reuse connections
    server: _HttpsServer
    # Idle keep-alive connections are dropped after this many seconds so threads don't pile up.
    timeout = 120

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        raw = self._read_body()
        parts = urlsplit(self.path)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={name: value for name, value in self.headers.items()},
            body=body,
            raw_body=raw,
        )
        response = self.server.service.serve(request)
        if response.status == 0:
            self.close_connection = True  # the client sees the connection end, no answer
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        payload = b"" if response.body is None else json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        if response.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The request log records everything; the stderr access log would only drown test output.
        log.debug("%s - %s", self.address_string(), format % args)


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    # ThreadingMixIn would join every connection thread on close; idle keep-alive sockets would
    # make stop() wait for their timeout.
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], service: FakeAzureService, context: ssl.SSLContext
    ) -> None:
        self.service = service
        self.context = context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, address = self.socket.accept()
        # http.server writes headers and body separately; without TCP_NODELAY the body waits for
        # the client's delayed ACK (~40 ms a request on keep-alive connections).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake runs lazily in the connection's thread: a slow client cannot stall accept().
        return self.context.wrap_socket(
            raw, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop a connection mid-request are normal (retries, timeouts); not errors.
        log.debug("connection from %s ended with an error", client_address)


class FakeAzure:
    """A running fake Azure: ``with FakeAzure.start("demo") as fake: ...``.

    Attributes: ``url`` ("https://127.0.0.1:PORT"), ``ca_path``, ``identity_endpoint``,
    ``identity_header``, ``model`` (:class:`AzureModel`), ``faults`` (:class:`FaultPlan`),
    ``request_log`` (:class:`RequestLog`), ``scenario`` and ``applied`` (run ids by key).
    """

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        identity_header: str | None = None,
        tls_dir: str | Path | None = None,
    ) -> None:
        self.scenario = load_scenario(scenario)
        self.model = AzureModel(
            clock=clock,
            settings=self.scenario.model_settings(),
            tenant_id=str(
                self.scenario.data.get("tenant_id") or "8f0c6a54-5a6e-4d38-9bd2-1a2b3c4d5e6f"
            ),
        )
        self.faults = FaultPlan()
        self.request_log = RequestLog()
        self.tokens = TokenStore(
            self.model.tenant_id,
            lifetime=dt.timedelta(
                seconds=float(self.scenario.setting("token_lifetime_seconds", 24 * 3600))
            ),
        )
        self.applied: AppliedScenario = apply_scenario(self.scenario, self.model, self.faults)
        identities = self.scenario.data.get("identities") or []
        allowed = {str(i["client_id"] if isinstance(i, Mapping) else i) for i in identities} or None
        self.identity_header = identity_header or secrets.token_urlsafe(16)
        self.service = FakeAzureService(
            self.model,
            self.faults,
            self.request_log,
            self.tokens,
            identity_header=self.identity_header,
            allowed_client_ids=allowed,
            check_audience=bool(self.scenario.setting("check_audience", True)),
        )
        self._host = host
        self._requested_port = port
        self._owns_tls_dir = tls_dir is None
        # The temp dir is made when serving starts, so a FakeAzure never served leaves nothing.
        self._tls_dir: Path | None = Path(tls_dir) if tls_dir else None
        self._tls: TlsMaterial | None = None
        self._server: _HttpsServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        **options: Any,
    ) -> FakeAzure:
        """Build the model from ``scenario``, generate TLS material and start serving."""
        fake = cls(scenario, **options)
        fake.serve()
        return fake

    def serve(self) -> None:
        """Start the HTTPS server in a background thread."""
        if self._server is not None:
            return
        if self._tls_dir is None:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="fake-azure-"))
        self._tls = write_tls_material(self._tls_dir)
        try:
            self._server = _HttpsServer(
                (self._host, self._requested_port), self.service, self._tls.server_context()
            )
        except OSError:
            self.stop()  # e.g. the port is taken: leave no temp files behind
            raise
        self.service.base_url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-azure",
            daemon=True,
        )
        self._thread.start()
        log.info("fake Azure serving %s (%s)", self.url, self.model.summary())

    def stop(self) -> None:
        """Stop serving and delete the generated TLS files."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._owns_tls_dir and self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None
            self._tls = None

    def __enter__(self) -> FakeAzure:
        self.serve()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("the fake Azure is not serving")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL such as ``https://127.0.0.1:54321``; ARM, ARG and Log Analytics live here."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"https://{host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """PEM file of the generated CA; point ``REQUESTS_CA_BUNDLE`` at it."""
        if self._tls is None:
            raise RuntimeError("the fake Azure is not serving")
        return self._tls.ca_path

    @property
    def tls(self) -> TlsMaterial:
        """The CA and loopback server certificate it serves; another sandbox endpoint (a
        webhook sink) may serve the same certificate so clients trusting ``ca_path`` reach it."""
        if self._tls is None:
            raise RuntimeError("the fake Azure is not serving")
        return self._tls

    @property
    def identity_endpoint(self) -> str:
        """Value for ``IDENTITY_ENDPOINT`` (App Service managed identity)."""
        return f"{self.url}/msi/token"

    @property
    def credential_scope(self) -> str:
        """The scope SDK clients should request: ``<url>/.default``."""
        return f"{self.url}/.default"

    def environment(self) -> dict[str, str]:
        """Environment variables that point azure-identity and requests at this fake."""
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }

    # -- conveniences for tests ----------------------------------------------------------------
    def issue_token(self, resource: str | None = None, client_id: str | None = None) -> str:
        """A valid bearer token for raw HTTP calls (audience defaults to this fake's URL)."""
        grant: TokenGrant = self.tokens.issue(resource or self.url, client_id)
        return grant.token

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, oldest first."""
        return self.request_log.entries

    def requests_matching(
        self, method: str | None = None, path_regex: str | None = None, **filters: Any
    ) -> list[RecordedRequest]:
        """Requests by method and path regex (and ``endpoint=`` / ``status=``)."""
        return self.request_log.matching(method, path_regex, **filters)

    def clear_requests(self) -> None:
        """Forget recorded requests."""
        self.request_log.clear()

    def run_id(self, key: str) -> str:
        """CorrelationId of a scenario run by its ``key`` (or index)."""
        return self.applied.runs[key]
