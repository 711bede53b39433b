"""Throttling and injected faults: ARM's and Compute's token buckets, Resource Graph's quota."""

from __future__ import annotations

import json
import uuid

from .faults import (
    COMPUTE_UPDATE_VM_RESOURCE_POLICY,
    COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY,
    ErrorRule,
    LostAnswer,
    ThrottleDecision,
)
from .service_base import (
    Request,
    Response,
    ServiceBase,
    ThrottleView,
    arm_error,
    format_seconds,
    hhmmss,
)


class Throttling(ServiceBase):
    """Throttling and injected faults: ARM's and Compute's token buckets, Resource Graph's quota."""

    def _spend_arm_budget(
        self, request: Request, subscription: str, headers: dict[str, str]
    ) -> Response | None:
        """Spend a token of ARM's subscription bucket for this operation type; 429 when empty.

        The bucket is per subscription and principal, as ARM keys it; the remaining count goes
        into ``x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}`` on every answer.
        """
        limits = self.faults.arm_limits
        kind, buckets = limits.buckets_for(request.method)
        if kind == "writes" and self.faults.write_throttle is not None:
            buckets = self.faults.write_throttle  # a test's own (usually tiny) write bucket
        elif not limits.enabled:
            return None
        grant = request.grant
        actor = (grant.object_id or grant.client_id or "unknown") if grant else "unknown"
        decision = buckets.take(f"{subscription}|{actor}")
        header = f"x-ms-ratelimit-remaining-subscription-{kind}"
        headers[header] = str(decision.remaining)
        if decision.allowed:
            return None
        operation = {"reads": "read", "writes": "write", "deletes": "delete"}[kind]
        return arm_error(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of '{operation}' requests for subscription '{subscription}' actor "
            f"'{actor}' exceeded. Please try again after '{decision.retry_after}' seconds after "
            "additional tokens are available. Refer to https://aka.ms/arm-throttling for "
            "additional information.",
            headers={header: "0", "Retry-After": str(decision.retry_after)},
        )

    def _spend_compute_budget(
        self, request: Request, subscription: str, headers: dict[str, str]
    ) -> Response | None:
        """Spend Compute's "Update VM" tokens: the subscription's (per region) and the VM's.

        Both remaining counts go into one ``x-ms-ratelimit-remaining-resource`` header in
        Compute's ``<provider>/<policy>;<count>`` form, comma-separated (as repeated headers
        fold). A refusal is Compute's 429 ``OperationNotAllowed`` with a ``TooManyRequests``
        detail naming the policy.
        """
        limits = self.faults.compute_limits
        if not limits.enabled:
            return None
        vm_path = request.path.rsplit("/", 1)[0]
        vm = self.model.find_vm(vm_path)
        region = vm.location.lower() if vm is not None else "unknown"
        subscription_scope = f"{subscription}|{region}"
        on_subscription: ThrottleDecision | ThrottleView = limits.per_subscription.take(
            subscription_scope
        )
        on_vm: ThrottleDecision | ThrottleView = (
            limits.per_vm.take(vm_path)
            if on_subscription.allowed
            else ThrottleView(limits.per_vm.remaining(vm_path))
        )
        if on_subscription.allowed and not on_vm.allowed:
            limits.per_subscription.give_back(subscription_scope)
            on_subscription = ThrottleView(limits.per_subscription.remaining(subscription_scope))
        headers["x-ms-ratelimit-remaining-resource"] = (
            f"{COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY};{on_subscription.remaining},"
            f"{COMPUTE_UPDATE_VM_RESOURCE_POLICY};{on_vm.remaining}"
        )
        if on_subscription.allowed and on_vm.allowed:
            return None
        refused_by, decision = (
            (COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY, on_subscription)
            if not on_subscription.allowed
            else (COMPUTE_UPDATE_VM_RESOURCE_POLICY, on_vm)
        )
        policy = refused_by.split("/", 1)[1]
        scope = (
            "subscription" if refused_by == COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY else "resource"
        )
        return arm_error(
            429,
            "OperationNotAllowed",
            "The server rejected the request because too many requests have been received for "
            f"this {scope}.",
            headers={**headers, "Retry-After": str(max(decision.retry_after, 1))},
            details=[
                {
                    "code": "TooManyRequests",
                    "target": policy,
                    "message": json.dumps(
                        {"operationGroup": policy, "retryAfterSeconds": decision.retry_after}
                    ),
                }
            ],
        )

    @staticmethod
    def _lost_answer(rule: LostAnswer) -> Response:
        """What the client gets once the request was applied and its answer lost."""
        if rule.mode == "drop":
            return Response(0, drop_after=0.0, answer_lost=True)
        if rule.mode == "timeout":
            return Response(0, drop_after=rule.seconds, answer_lost=True)
        status = int(rule.mode)
        words = {
            502: ("BadGateway", "The gateway did not receive a response from the service."),
            503: ("ServiceUnavailable", "The service is temporarily unavailable."),
            504: ("GatewayTimeout", "The gateway did not receive a response in time."),
        }
        code, message = words[status]
        lost = arm_error(status, code, message)
        lost.answer_lost = True
        return lost

    def _spend_arg_quota(self, request: Request) -> Response | None:
        grant = request.grant
        principal = (grant.client_id or grant.object_id) if grant else "anonymous"
        allowed, remaining, resets_after = self.faults.arg_quota.spend(principal)
        request.quota_headers = {
            "x-ms-user-quota-remaining": str(remaining),
            "x-ms-user-quota-resets-after": hhmmss(resets_after),
        }
        if allowed:
            return None
        return arm_error(
            429,
            "RateLimiting",
            "Please provide below info when asking for support: "
            f"timestamp = {self.model.now().isoformat()}, correlationId = {uuid.uuid4()}.",
            headers={
                **request.quota_headers,
                "Retry-After": str(max(int(resets_after + 0.999), 1)),
            },
            details=[
                {
                    "code": "RateLimiting",
                    "message": "Client application has been throttled and should not "
                    "attempt to repeat the request until an amount of time has elapsed.",
                }
            ],
        )

    def _injected_error(self, endpoint: str, rule: ErrorRule, request: Request) -> Response:
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = format_seconds(rule.retry_after)
        status = rule.status
        if endpoint == "arg" and status == 429:
            headers["x-ms-user-quota-remaining"] = "0"
            headers["x-ms-user-quota-resets-after"] = hhmmss(rule.retry_after or 5)
            return arm_error(
                429,
                rule.code or "RateLimiting",
                rule.message
                or "Please provide below info when asking for support: "
                f"timestamp = {self.model.now().isoformat()}, correlationId = {uuid.uuid4()}.",
                headers=headers,
                details=[
                    {
                        "code": "RateLimiting",
                        "message": "Client application has been throttled and should "
                        "not attempt to repeat the request until an amount of time has elapsed. "
                        "Please see https://aka.ms/resourcegraph-throttling for help.",
                    }
                ],
            )
        defaults = {
            429: (
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for this "
                "operation type. For more information, see https://aka.ms/arm-throttling",
            ),
            500: (
                "InternalServerError",
                "Encountered internal server error. Diagnostic information: "
                f"timestamp '{self.model.now():%Y%m%dT%H%M%SZ}', tracking id '{uuid.uuid4()}'.",
            ),
            502: ("BadGateway", "The gateway did not receive a response from the service."),
            503: (
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please try again later.",
            ),
            504: (
                "GatewayTimeout",
                "The gateway did not receive a response within the specified time period.",
            ),
        }
        code, message = defaults.get(
            status, ("InjectedFault", f"Injected fault answering {status}.")
        )
        if endpoint == "token":
            return Response(
                status,
                {
                    "statusCode": status,
                    "message": rule.message or message,
                    "correlationId": str(uuid.uuid4()),
                },
                headers,
            )
        return arm_error(status, rule.code or code, rule.message or message, headers=headers)
