"""Identity: the managed-identity token endpoint, bearer checks, and sandbox probes."""

from __future__ import annotations

import uuid

from .identity import ARM_AUDIENCES, LOG_ANALYTICS_AUDIENCES, TokenError
from .service_base import Request, Response, Route, ServiceBase, arm_error, route

MSI_API_VERSION = "2019-08-01"


class IdentityRoutes(ServiceBase):
    """Identity: the managed-identity token endpoint, bearer checks, and sandbox probes."""

    def identity_routes(self) -> list[Route]:
        """This service's routes."""
        return [
            route("GET", r"/_sandbox/health", "sandbox.health", self.health, auth=None),
            route("GET", r"/msi/token", "token", self.msi_token, auth=None),
            route(
                "POST",
                r"/_sandbox/webhook/(?P<hook>[^/]+)",
                "sandbox.webhook",
                self.webhook_sink,
                auth=None,
            ),
        ]

    def _authenticate(self, request: Request, audience_kind: str) -> Response | None:
        if self.check_audience:
            extra = ARM_AUDIENCES if audience_kind == "arm" else LOG_ANALYTICS_AUDIENCES
            # The fake's own URL, by the address it was started with or the one the client used.
            audiences: tuple[str, ...] | None = (self.base_url, self._base_url(request), *extra)
        else:
            audiences = None
        try:
            # Token expiry follows the wall clock, as the client's token cache does.
            request.grant = self.tokens.validate(
                request.header("Authorization"), audiences=audiences
            )
        except TokenError as refusal:
            challenge = (
                "Bearer authorization_uri="
                f'"https://login.microsoftonline.com/{self.tokens.tenant_id}", '
                f'error="invalid_token", error_description="{refusal.message}"'
            )
            if audience_kind == "loganalytics":
                return Response(
                    401,
                    {
                        "error": {
                            "code": "AuthorizationRequiredError",
                            "message": refusal.message,
                            "innererror": {"code": refusal.code},
                        }
                    },
                    {"WWW-Authenticate": challenge},
                )
            return arm_error(
                401, refusal.code, refusal.message, headers={"WWW-Authenticate": challenge}
            )
        return None

    def health(self, request: Request) -> Response:
        """Readiness probe for scripts that start the fake in another process."""
        return Response(200, {"status": "ok", **self.model.summary()})

    def webhook_sink(self, request: Request) -> Response:
        """A Teams/Slack-style incoming webhook: accepts any JSON post; the request log keeps
        it, so tests read what the app notified (``requests_matching("POST", "webhook")``)."""
        return Response(200, {"accepted": True})

    def msi_token(self, request: Request) -> Response:
        """App Service managed identity protocol (api-version 2019-08-01, X-IDENTITY-HEADER)."""

        def refuse(status: int, message: str) -> Response:
            return Response(
                status,
                {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
            )

        if request.header("X-IDENTITY-HEADER") != self.identity_header:
            return refuse(401, "Unauthorized: the X-IDENTITY-HEADER header is missing or wrong.")
        if request.param("api-version") != MSI_API_VERSION:
            return refuse(
                400,
                f"Unsupported api-version '{request.param('api-version')}'; "
                f"expected {MSI_API_VERSION}.",
            )
        resource = request.param("resource")
        if not resource:
            return refuse(400, "The 'resource' parameter is required.")
        client_id = request.param("client_id")
        if request.param("mi_res_id") or request.param("object_id"):
            client_id = client_id or request.param("mi_res_id") or request.param("object_id")
        if (
            self.allowed_client_ids is not None
            and client_id
            and client_id.lower() not in self.allowed_client_ids
        ):
            return refuse(
                400,
                "No User Assigned or Delegated Managed Identity found for specified "
                "ClientId/ResourceId/PrincipalId.",
            )
        grant = self.tokens.issue(resource, client_id)
        request.grant = grant
        return Response(
            200,
            {
                "access_token": grant.token,
                "expires_on": str(int(grant.expires_at.timestamp())),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or grant.object_id,
            },
        )
