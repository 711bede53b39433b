"""HTTPS with the generated CA, the App Service managed-identity endpoint as azure-identity uses
it, and bearer-token checks on every other endpoint."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from sandbox.fake_azure import FakeAzure

from .conftest import CLIENT_ID, SUBSCRIPTION

ARG_PATH = "/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01"


def test_requests_verifies_the_server_with_the_generated_ca(fake: FakeAzure) -> None:
    answer = requests.get(f"{fake.url}/_sandbox/health", verify=str(fake.ca_path), timeout=5)
    assert answer.status_code == 200
    assert answer.json()["vms"] == 4


def test_urllib_verifies_the_server_for_every_loopback_name(fake: FakeAzure) -> None:
    context = ssl.create_default_context(cafile=str(fake.ca_path))
    for host in ("127.0.0.1", "localhost"):
        url = f"https://{host}:{fake.port}/_sandbox/health"
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            assert json.load(answer)["status"] == "ok"


def test_a_client_without_the_ca_refuses_the_certificate(fake: FakeAzure) -> None:
    system_trust = ssl.create_default_context()  # REQUESTS_CA_BUNDLE plays no part here
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{fake.url}/_sandbox/health", context=system_trust, timeout=5)  # noqa: S310


def test_each_start_has_its_own_ca(start_fake: Callable[..., FakeAzure]) -> None:
    first, second = start_fake(), start_fake()
    assert first.ca_path.read_bytes() != second.ca_path.read_bytes()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{second.url}/_sandbox/health", verify=str(first.ca_path), timeout=5)


def test_managed_identity_credential_gets_a_token_with_the_app_service_protocol(
    fake: FakeAzure,
) -> None:
    with ManagedIdentityCredential(client_id=CLIENT_ID) as credential:
        token = credential.get_token(fake.credential_scope)
    assert token.token
    [call] = fake.requests_matching("GET", r"^/msi/token$")
    assert call.status == 200
    assert call.query == {"api-version": "2019-08-01", "resource": fake.url, "client_id": CLIENT_ID}
    assert call.headers["X-IDENTITY-HEADER"] == "<redacted>"
    [grant] = fake.tokens.grants
    assert (grant.token, grant.resource, grant.client_id) == (token.token, fake.url, CLIENT_ID)


def test_default_azure_credential_reaches_the_managed_identity_endpoint(fake: FakeAzure) -> None:
    with DefaultAzureCredential() as credential:
        token = credential.get_token(fake.credential_scope)
    [grant] = fake.tokens.grants
    assert grant.token == token.token
    assert grant.client_id is None  # system-assigned: no client_id sent


def test_an_unknown_user_assigned_identity_is_refused(fake: FakeAzure) -> None:
    with (
        ManagedIdentityCredential(client_id="00000000-0000-4000-8000-000000000000") as credential,
        pytest.raises(ClientAuthenticationError),
    ):
        credential.get_token(fake.credential_scope)


def test_the_token_endpoint_requires_the_identity_header(fake: FakeAzure) -> None:
    answer = requests.get(
        fake.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": fake.url},
        headers={"X-IDENTITY-HEADER": "wrong"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert answer.status_code == 401
    assert fake.tokens.grants == []


def test_endpoints_refuse_a_request_without_a_token_in_arm_shape(fake: FakeAzure) -> None:
    answer = requests.post(
        f"{fake.url}{ARG_PATH}", json={"query": "resources"}, verify=str(fake.ca_path), timeout=5
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "AuthenticationFailed"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")


def test_endpoints_refuse_a_token_the_fake_did_not_issue(fake: FakeAzure) -> None:
    answer = requests.get(
        f"{fake.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-web/providers/"
        "Microsoft.Compute/virtualMachines/web-01?api-version=2026-04-01",
        headers={"Authorization": "Bearer not-a-token-it-issued"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert answer.status_code == 401
    assert answer.json() == {
        "error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}
    }


def test_a_token_for_another_audience_is_refused(fake: FakeAzure) -> None:
    token = fake.issue_token(resource="https://vault.azure.net")
    answer = requests.post(
        f"{fake.url}{ARG_PATH}",
        json={"query": "resources"},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_the_request_log_keeps_no_bearer_token(fake: FakeAzure) -> None:
    token = fake.issue_token()
    requests.post(
        f"{fake.url}{ARG_PATH}",
        json={"query": "resources | take 1"},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    [entry] = fake.requests_matching("POST", "ResourceGraph")
    assert entry.headers["Authorization"] == "Bearer <redacted>"
    assert token not in json.dumps(entry.headers)
    assert entry.body == {"query": "resources | take 1"}
    assert (entry.status, entry.endpoint, entry.api_version) == (200, "arg", "2021-03-01")
    fake.clear_requests()
    assert fake.requests == []
