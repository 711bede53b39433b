"""One pooled HTTP transport per endpoint, shared by every SDK client that calls it.

azure-core's default transport gives each client a requests.Session whose pool keeps 10
connections per host. The app calls ARM from hundreds of threads at once (start tasks times
their concurrency), so with the default most calls opened a fresh TLS connection and threw it
away ("Connection pool is full, discarding connection"). The storage clients (ledger, task queue,
reports) did the same against the storage account, and every warning was a log line written
under the logging lock by threads the event intake waits behind. Here one session per endpoint
keeps as many connections as the app has calls in flight, and the CA bundle's path is checked
once per process instead of three `stat` calls per request.

requests also reads the process's whole environment on every request (proxy variables, the CA
bundle variables, `~/.netrc`): in a profile of a storage read that was a fifth of its CPU. The
environment does not change under a running app, so a session here reads it once per host.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies
from urllib3.util.retry import Retry

# Pools kept per session: one per host the endpoint's clients talk to (ARM has one).
HOST_POOLS = 4
# Connections kept when nothing says how many calls run at once.
DEFAULT_POOL_SIZE = 64


@functools.cache
def ca_bundle_location(path: str) -> tuple[str, bool]:
    """The CA bundle (file or directory) at ``path``, checked once per process."""
    if not os.path.exists(path):
        raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {path}")
    return path, os.path.isdir(path)


class PooledAdapter(HTTPAdapter):
    """requests' adapter, with the CA bundle's path checks done once rather than per request."""

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[Any, Any]:
        if not isinstance(verify, str) or cert is not None:
            return super().build_connection_pool_key_attributes(request, verify, cert)
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, None)
        location, is_directory = ca_bundle_location(verify)
        pool_kwargs["ca_cert_dir" if is_directory else "ca_certs"] = location
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        if not isinstance(verify, str) or cert is not None or not url.lower().startswith("https"):
            super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
            return
        location, is_directory = ca_bundle_location(verify)
        conn.cert_reqs = "CERT_REQUIRED"
        if is_directory:
            conn.ca_cert_dir = location
        else:
            conn.ca_certs = location


class PooledSession(requests.Session):
    """A session that reads the environment's proxy and CA bundle settings once per host
    rather than on every request, and never takes credentials from ``~/.netrc``: every request
    carries the SDK's own Authorization header, which a netrc entry would replace."""

    def __init__(self) -> None:
        super().__init__()
        # requests' own per-request reading of the environment (proxies, CA bundle, netrc) is
        # off; merge_environment_settings below applies the proxies and bundle, read once.
        self.trust_env = False
        self._environment: dict[tuple[str, str, str | None], tuple[dict[str, str], str | None]]
        self._environment = {}

    def _holds_nothing_to_merge(self) -> bool:
        """No session-wide auth, params, cookies or hooks: nothing of the session's own goes
        into a request but its default headers."""
        return not (self.auth or self.params or len(self.cookies) or any(self.hooks.values()))

    def _headers(self, given: Mapping[str, Any] | None) -> CaseInsensitiveDict[Any]:
        """The session's default headers, replaced by the request's; a header set to None is
        left out, as requests does."""
        headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(self.headers)
        for name, value in (given or {}).items():
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        return headers

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """requests' own preparation, without merging what neither side has: the SDKs' requests
        bring no cookies, auth, params or hooks, and this session has none (requests merges
        them on every request through runtime protocol checks: a tenth of a storage request's
        CPU). Anything else goes requests' way."""
        if request.cookies or request.auth or request.params or not self._holds_nothing_to_merge():
            return super().prepare_request(request)
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=str(request.method).upper(),
            url=request.url,
            files=request.files,
            data=request.data,
            json=request.json,
            headers=self._headers(request.headers),
            hooks=request.hooks,
        )
        return prepared

    def request(  # type: ignore[override]
        self,
        method: str,
        url: Any,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: bool | None = None,
        verify: Any = None,
        cert: Any = None,
        json: Any = None,
    ) -> requests.Response:
        """requests' own `request`, but for what the SDKs send most: a request of an already
        encoded http(s) URL with a byte body or none, no redirects followed, nothing to merge
        and no proxy for its host. Such a request is sent by this session's adapter as requests
        would send it (the same method, URL, headers and body reach the server, and the same
        exceptions come back), without the steps that do nothing for it: building a `Request`,
        re-parsing and re-quoting the URL azure-core already encoded, merging settings, the
        response hooks and the redirect check (a third of a storage request's CPU in
        `cProfile`). Cookies a server sets are kept in the session as requests keeps them (and
        its later requests then go requests' way)."""
        arguments = (params, cookies, files, auth, hooks, cert, proxies, allow_redirects)
        lean = not (
            any(arguments)
            or json is not None
            or not isinstance(url, str)
            or not url.startswith(("https://", "http://"))
            or not url.isascii()
            or not (data is None or isinstance(data, bytes))
            or not self._holds_nothing_to_merge()
        )
        settings = self.merge_environment_settings(url, {}, stream, verify, None) if lean else {}
        if not lean or settings["proxies"]:
            return super().request(
                method, url, params, data, headers, cookies, files, auth, timeout,
                allow_redirects, proxies, hooks, stream, verify, cert, json,
            )  # fmt: skip
        prepared = requests.PreparedRequest()
        prepared.method = method.upper()
        prepared.url = url
        prepared.headers = self._headers(headers)
        prepared.body = data or None  # requests sends an empty body as none
        if prepared.body is not None:
            prepared.headers["Content-Length"] = str(len(prepared.body))
        elif prepared.method not in ("GET", "HEAD") and "Content-Length" not in prepared.headers:
            prepared.headers["Content-Length"] = "0"
        prepared.hooks = {"response": []}
        started = time.perf_counter()
        response = self.get_adapter(url).send(
            prepared,
            stream=bool(settings["stream"]),
            timeout=timeout,
            verify=settings["verify"],
            cert=None,
            proxies={},
        )
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        if "set-cookie" in response.headers:
            extract_cookies_to_jar(self.cookies, prepared, response.raw)  # type: ignore[no-untyped-call]
        if not settings["stream"]:
            _ = response.content  # read now, as requests does for a request not streamed
        return response

    def merge_environment_settings(
        self,
        url: Any,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:
        """As requests does with `trust_env`, from the environment as first read for the host."""
        no_proxy = proxies.get("no_proxy") if proxies is not None else None
        environment_proxies, environment_bundle = self._environment_for(str(url), no_proxy)
        if proxies is not None:
            for key, value in environment_proxies.items():
                proxies.setdefault(key, value)
        if (verify is True or verify is None) and environment_bundle:
            verify = environment_bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def _environment_for(self, url: str, no_proxy: str | None) -> tuple[dict[str, str], str | None]:
        parts = urlsplit(url)
        key = (parts.scheme.lower(), parts.netloc.lower(), no_proxy)
        found = self._environment.get(key)
        if found is None:
            found = (
                get_environ_proxies(url, no_proxy=no_proxy),
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"),
            )
            self._environment[key] = found  # two threads reading it at once store the same
        return found


def pooled_session(pool_size: int = DEFAULT_POOL_SIZE) -> requests.Session:
    """A session whose pools keep ``pool_size`` connections per host; azure-core retries on
    its own (its RetryPolicy), so the adapter does not."""
    session = PooledSession()
    adapter = PooledAdapter(
        pool_connections=HOST_POOLS,
        pool_maxsize=max(1, pool_size),
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def pooled_transport(
    pool_size: int = DEFAULT_POOL_SIZE,
    *,
    session: requests.Session | None = None,
    connection_timeout: float | None = None,
    read_timeout: float | None = None,
) -> RequestsTransport:
    """A transport on ``session`` (a new pooled one if None), shared by clients.

    The transport does not own the session, so one client closing does not close it under the
    others. A client handed a transport no longer builds one from its own `connection_timeout`
    and `read_timeout`, so the transport carries them (None: azure-core's defaults).
    """
    timeouts: dict[str, float] = {}
    if connection_timeout is not None:
        timeouts["connection_timeout"] = connection_timeout
    if read_timeout is not None:
        timeouts["read_timeout"] = read_timeout
    return RequestsTransport(
        session=session if session is not None else pooled_session(pool_size),
        session_owner=False,
        **timeouts,
    )


class EndpointTransports:
    """The process's transports: one pooled session per endpoint (scheme, host and port),
    and a transport on it per set of timeouts its clients ask for."""

    def __init__(self, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.pool_size = pool_size
        self._sessions: dict[str, requests.Session] = {}
        self._transports: dict[tuple[str, float | None, float | None], RequestsTransport] = {}
        self._lock = threading.Lock()

    def for_endpoint(
        self,
        url: str,
        *,
        connection_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> RequestsTransport:
        """The shared transport for ``url``'s endpoint (built on first use)."""
        parts = urlsplit(url)
        endpoint = f"{parts.scheme}://{parts.netloc}".lower()
        return self._transport(endpoint, connection_timeout, read_timeout)

    def for_storage(
        self, service: str, *, connection_timeout: float, read_timeout: float
    ) -> RequestsTransport:
        """The shared transport for one service (table, queue, blob) of the app's storage
        account: the app has one account, so each of its services is one endpoint, whether the
        account is named by a connection string or by endpoints."""
        return self._transport(f"storage {service}", connection_timeout, read_timeout)

    def storage_options(self, service: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """A storage SDK client's `options` with the shared transport for `service`, which takes
        the options' own time limits (`connection_timeout`, `read_timeout`)."""
        return {
            **options,
            "transport": self.for_storage(
                service,
                connection_timeout=options["connection_timeout"],
                read_timeout=options["read_timeout"],
            ),
        }

    def _transport(
        self, endpoint: str, connection_timeout: float | None, read_timeout: float | None
    ) -> RequestsTransport:
        key = (endpoint, connection_timeout, read_timeout)
        with self._lock:
            transport = self._transports.get(key)
            if transport is None:
                session = self._sessions.get(endpoint)
                if session is None:
                    session = self._sessions[endpoint] = pooled_session(self.pool_size)
                transport = pooled_transport(
                    session=session,
                    connection_timeout=connection_timeout,
                    read_timeout=read_timeout,
                )
                self._transports[key] = transport
            return transport
