"""Access tokens of the fake Azure: issued by its managed-identity endpoint, checked on every call.

Tokens look like JWTs (header.claims.signature) so they read naturally in logs, but the fake
only trusts tokens it issued itself: a token is valid when it is in :class:`TokenStore`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

# Audiences a real ARM / Log Analytics token may carry, accepted besides the fake's own URL.
ARM_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")
LOG_ANALYTICS_AUDIENCES = ("https://api.loganalytics.io",)


@dataclass(frozen=True)
class TokenGrant:
    """What a token was issued for."""

    token: str
    resource: str
    client_id: str | None
    object_id: str
    expires_at: dt.datetime


class TokenError(Exception):
    """A token the fake refuses; ``code`` is ARM's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def normalise_audience(value: str) -> str:
    """Compare audiences without a trailing slash or a ``/.default`` suffix, case-insensitively."""
    text = value.strip()
    if text.endswith("/.default"):
        text = text[: -len("/.default")]
    return text.rstrip("/").lower()


class TokenStore:
    """Issues and validates bearer tokens."""

    def __init__(self, tenant_id: str, lifetime: dt.timedelta = dt.timedelta(hours=24)) -> None:
        self.tenant_id = tenant_id
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._grants: dict[str, TokenGrant] = {}

    def issue(
        self, resource: str, client_id: str | None = None, *, now: dt.datetime | None = None
    ) -> TokenGrant:
        """Issue a token for ``resource`` (the audience) on behalf of ``client_id``."""
        issued_at = now or dt.datetime.now(dt.UTC)
        expires_at = issued_at + self.lifetime
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-azure-mi:{client_id or 'system'}"))
        claims: dict[str, object] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": int(issued_at.timestamp()),
            "nbf": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "appid": client_id or object_id,
            "oid": object_id,
            "sub": object_id,
            "tid": self.tenant_id,
            "idtyp": "app",
        }
        token = ".".join(
            [_b64({"typ": "JWT", "alg": "none"}), _b64(claims), secrets.token_urlsafe(24)]
        )
        grant = TokenGrant(token, resource, client_id, object_id, expires_at)
        with self._lock:
            self._grants[token] = grant
        return grant

    def validate(
        self,
        authorization: str | None,
        *,
        audiences: Iterable[str] | None = None,
        now: dt.datetime | None = None,
    ) -> TokenGrant:
        """Check an Authorization header; raise :class:`TokenError` (ARM's code) when refused."""
        if not authorization:
            raise TokenError(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenError(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid "
                "format.",
            )
        with self._lock:
            grant = self._grants.get(token.strip())
        if grant is None:
            raise TokenError("InvalidAuthenticationToken", "The access token is invalid.")
        moment = now or dt.datetime.now(dt.UTC)
        if moment >= grant.expires_at:
            raise TokenError(
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{grant.expires_at:%m/%d/%Y %I:%M:%S %p}' "
                "is earlier "
                f"than current UTC time '{moment:%m/%d/%Y %I:%M:%S %p}'.",
            )
        if audiences is not None:
            allowed = {normalise_audience(a) for a in audiences}
            if normalise_audience(grant.resource) not in allowed:
                raise TokenError(
                    "InvalidAuthenticationTokenAudience",
                    "The access token has been obtained for wrong audience or resource "
                    f"'{grant.resource}'. "
                    f"It should exactly match with one of the allowed audiences {sorted(allowed)}.",
                )
        return grant

    @property
    def grants(self) -> list[TokenGrant]:
        """Every token issued and still known."""
        with self._lock:
            return list(self._grants.values())
