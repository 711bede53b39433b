"""Connections are reused: one pooled transport per endpoint, sized for the app's concurrency and
shared by every SDK client that calls the endpoint, and the CA bundle checked once, not per
request. Real SDK clients over real HTTPS against the fake Azure."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from azure.identity import ManagedIdentityCredential
from urllib3.exceptions import NewConnectionError

from sandbox.fake_azure import FakeAzure
from shared.adapters.arm_pacing import ArmBudgets
from shared.adapters.compute import ComputeMachines
from shared.adapters.http_transport import (
    EndpointTransports,
    PooledAdapter,
    PooledSession,
    ca_bundle_location,
    pooled_session,
)
from shared.bootstrap import Container, http_pool_size
from shared.config import Settings
from shared.domain.ids import MachineId
from shared.domain.machines import PowerState
from tests.fake_azure import CLIENT_ID, FAST_RETRIES, SUBSCRIPTION, WORKSPACE_ID, vm_id

WEB = MachineId.parse(vm_id(SUBSCRIPTION, "rg-web", "web-01"))
THREADS = 40


def container_for(fake: FakeAzure, **settings: str) -> Container:
    return Container(
        settings=Settings.from_environ(
            {
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "MANAGED_IDENTITY_CLIENT_ID": CLIENT_ID,
                "ARM_ENDPOINT": fake.url,
                "LOG_ANALYTICS_ENDPOINT": fake.url,
                "LOG_ANALYTICS_WORKSPACE_ID": WORKSPACE_ID,
                **settings,
            }
        ),
        client_options=dict(FAST_RETRIES),
    )


def adapter_of(transports: EndpointTransports, url: str) -> PooledAdapter:
    session = transports.for_endpoint(url).session
    assert session is not None
    adapter = session.get_adapter(url)
    assert isinstance(adapter, PooledAdapter)
    return adapter


def read_power_from_many_threads(compute: ComputeMachines, times: int) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        powers = list(pool.map(lambda _: compute.get_power(WEB), range(times)))
    assert {p.state for p in powers} == {PowerState.RUNNING}


def test_the_sdk_clients_of_one_endpoint_share_one_transport_sized_for_the_app(
    fake: FakeAzure,
) -> None:
    container = container_for(fake, START_CONCURRENCY="8")
    arm = container.transports.for_endpoint(fake.url)
    # Compute, Maintenance and Resource Graph all call ARM: one transport between them.
    assert container.compute._clients._transport is arm
    assert container.maintenance._clients._transport is arm
    assert container.resource_graph._client._client._pipeline._transport is arm
    assert container.transports.for_endpoint(fake.url + "/anything") is arm
    assert http_pool_size(container.settings) == 8 * 12 + 32
    assert adapter_of(container.transports, fake.url)._pool_maxsize == 8 * 12 + 32  # type: ignore[attr-defined]


def test_many_threads_reuse_pooled_connections_without_pool_is_full_warnings(
    fake: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    fake.faults.set_arm_limits(reads=(1000, 500.0))  # 160 reads in a burst: beyond ARM's 250/s
    container = container_for(fake)
    # The reads all at once, as many threads ask (not at the pacing's spending pace, which
    # would send them one after another and test no pool).
    container.built["arm_budgets"] = ArmBudgets(spend_over_refill=None)
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    read_power_from_many_threads(container.compute, 4 * THREADS)
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    pool = next(
        iter(adapter_of(container.transports, fake.url).poolmanager.pools._container.values())
    )
    # At most one connection per thread was ever opened, and they were kept for reuse.
    assert pool.num_connections <= THREADS
    assert pool.pool.qsize() == pool.pool.maxsize


def test_a_pool_smaller_than_the_concurrency_is_what_warns(
    fake: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    # The same load through a pool of 4 connections: the warning the app used to log by the
    # thousand (so the test above would see one if the sizing were wrong).
    fake.faults.set_arm_limits(reads=(1000, 500.0))
    transports = EndpointTransports(pool_size=4)
    compute = ComputeMachines.build(
        ManagedIdentityCredential(client_id=CLIENT_ID),
        fake.url,
        transport=transports.for_endpoint(fake.url),
        arm_budgets=ArmBudgets(spend_over_refill=None),
        **FAST_RETRIES,
    )
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    read_power_from_many_threads(compute, 4 * THREADS)
    assert [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_the_ca_bundle_is_checked_once_not_on_every_request(fake: FakeAzure) -> None:
    ca_bundle_location.cache_clear()
    container = container_for(fake)
    for _ in range(20):
        container.compute.get_power(WEB)
    checks = ca_bundle_location.cache_info()
    assert checks.misses == 1  # the path was looked at once...
    assert checks.hits >= 20  # ...and every request after used what was found


def test_a_missing_ca_bundle_still_fails_loudly(tmp_path: object) -> None:
    ca_bundle_location.cache_clear()
    with pytest.raises(OSError, match="CA certificate bundle"):
        ca_bundle_location("/nonexistent/ca.pem")


def test_a_cold_instance_fanning_out_asks_the_identity_endpoint_for_a_token_once(
    fake: FakeAzure,
) -> None:
    fake.faults.set_arm_limits(reads=(1000, 500.0))
    container = container_for(fake)
    fake.clear_requests()
    read_power_from_many_threads(container.compute, THREADS)
    assert len([r for r in fake.requests if r.endpoint == "token"]) == 1


def test_proxies_and_the_ca_bundle_come_from_the_environment_as_requests_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "storage.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/app/ca.pem")
    pooled, plain = pooled_session(), requests.Session()
    for url in ("https://management.internal/subscriptions", "https://storage.internal/t"):
        ours = pooled.merge_environment_settings(url, {}, None, True, None)
        theirs = plain.merge_environment_settings(url, {}, None, True, None)
        assert ours == theirs
    proxied = pooled.merge_environment_settings(
        "https://management.internal/x", {}, None, True, None
    )
    assert proxied["proxies"]["https"] == "http://proxy.internal:3128"
    assert proxied["verify"] == "/etc/app/ca.pem"
    bypassed = pooled.merge_environment_settings("https://storage.internal/x", {}, None, True, None)
    assert "https" not in bypassed["proxies"]
    # An explicit verify (azure-core's connection_verify) wins over the variable, as in requests.
    explicit = pooled.merge_environment_settings(
        "https://management.internal/x", {}, None, "/x", None
    )
    assert explicit["verify"] == "/x"


def test_the_environment_is_read_once_per_host_not_on_every_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    session = pooled_session()
    first = session.merge_environment_settings(
        "https://management.internal/a", {}, None, True, None
    )
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.internal:8080")
    again = session.merge_environment_settings(
        "https://management.internal/b", {}, None, True, None
    )
    assert again["proxies"] == first["proxies"]
    other_host = session.merge_environment_settings(
        "https://graph.internal/c", {}, None, True, None
    )
    assert other_host["proxies"]["https"] == "http://elsewhere.internal:8080"


def test_a_netrc_entry_never_replaces_the_sdks_authorization_header(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine management.internal login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    request = requests.Request(
        "GET", "https://management.internal/x", headers={"Authorization": "Bearer token"}
    )
    # requests alone would swap the bearer token for the netrc's basic credentials.
    assert requests.Session().prepare_request(request).headers["Authorization"].startswith("Basic")
    prepared = pooled_session().prepare_request(request)
    assert prepared.headers["Authorization"] == "Bearer token"


@pytest.mark.parametrize("session_cookie", [False, True])
@pytest.mark.parametrize(
    "request_",
    [
        requests.Request("GET", "https://storage.internal/t(PartitionKey='a',RowKey='b')"),
        requests.Request(
            "PUT",
            "https://storage.internal/t?$filter=PartitionKey%20eq%20'a'",
            headers={"If-Match": 'W/"1"', "Accept": "application/json", "User-Agent": None},
            data=b'{"A": 1}',
        ),
        requests.Request("POST", "https://management.internal/x", data="text", params={"a": "1"}),
        requests.Request("POST", "https://management.internal/x", json={"a": [1, 2]}),
    ],
)
def test_a_request_is_prepared_exactly_as_requests_prepares_it(
    request_: requests.Request, session_cookie: bool
) -> None:
    ours_session, plain = pooled_session(), requests.Session()
    plain.trust_env = False  # the netrc lookup aside, which the pooled session never does
    if session_cookie:  # a session that holds a cookie goes requests' own way
        for session in (ours_session, plain):
            session.cookies.set("affinity", "1", domain="management.internal")
    ours, theirs = ours_session.prepare_request(request_), plain.prepare_request(request_)
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(ours.headers) == dict(theirs.headers)


class Recorded(http.server.BaseHTTPRequestHandler):
    """Records each request as the server received it; answers 200 with a small body (a
    cookie when the path asks for one, a slow answer when it asks for that)."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, list[tuple[str, str]], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = sorted((k.lower(), v) for k, v in self.headers.items())
        Recorded.seen.append((self.command, self.path, headers, body))
        if "slow" in self.path:
            time.sleep(0.5)
        answer = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        if "cookie" in self.path:
            self.send_header("Set-Cookie", "affinity=1; Path=/")
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_MERGE(self) -> None:
        self._answer()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SENT = [
    ("GET", "/t(PartitionKey='a%7Cb',RowKey='run')", None, {"Accept": "application/json"}),
    ("GET", "/t()?$filter=PartitionKey%20eq%20'a%27%27b'&NextRowKey=x%7D", None, {}),
    ("PUT", "/t(PartitionKey='a',RowKey='b')", b'{"A": "\xc3\xbc"}', {"If-Match": 'W/"1"'}),
    ("POST", "/$batch", b"--batch_1\r\n\r\n--batch_1--\r\n", {"Content-Type": "multipart/mixed"}),
    ("POST", "/subscriptions/s/start?api-version=2024-07-01", None, {"User-Agent": None}),
    ("DELETE", "/q/messages/1?popreceipt=AbC%2B%2F%3D", b"", {}),
    ("MERGE", "/t(PartitionKey='a',RowKey='c')", b"{}", {"Content-Length": "2"}),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), SENT)
def test_a_lean_request_reaches_the_server_as_requests_sends_it(
    echo: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_lean(*args: object, **kwargs: object) -> None:
        raise AssertionError("went requests' own way")

    monkeypatch.setattr(PooledSession, "send", not_lean)
    plain = requests.Session()
    plain.trust_env = False
    received, answered = [], []
    for session in (pooled_session(), plain):
        Recorded.seen.clear()
        answer = session.request(
            method, echo + path, data=body, headers=headers, timeout=(3, 3), allow_redirects=False
        )
        answered.append((answer.status_code, answer.json(), answer.headers["Content-Type"]))
        received.append(Recorded.seen[0])
    assert received[0] == received[1]
    assert answered[0] == answered[1]


def test_a_lean_request_keeps_a_cookie_as_requests_does_and_then_goes_requests_way(
    echo: str,
) -> None:
    session = pooled_session()
    session.request("GET", echo + "/cookie", allow_redirects=False)
    assert session.cookies.get("affinity") == "1"
    Recorded.seen.clear()
    session.request("GET", echo + "/next", allow_redirects=False)
    assert ("cookie", "affinity=1") in Recorded.seen[0][2]


# What a request that gets no answer raises through the pooled adapter (which does not retry).
FAILURES = (requests.exceptions.RequestException, NewConnectionError)


def test_a_lean_request_fails_as_the_same_request_sent_requests_way(echo: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    session = pooled_session()
    for url, timeout in ((f"http://127.0.0.1:{port}/x", None), (echo + "/slow", (3, 0.1))):
        raised = []
        # allow_redirects=True sends the same request requests' own way (the lean path never
        # follows redirects; neither request is answered with one).
        for follow in (False, True):
            with pytest.raises(
                (requests.exceptions.RequestException, NewConnectionError)
            ) as failure:
                session.request("GET", url, timeout=timeout, allow_redirects=follow)
            raised.append(type(failure.value))
        assert raised[0] is raised[1]


def test_a_streamed_lean_answer_is_read_when_asked(echo: str) -> None:
    answer = pooled_session().request("GET", echo + "/x", stream=True, allow_redirects=False)
    assert answer.raw.read() == b'{"ok": true}'
