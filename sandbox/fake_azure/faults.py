"""Fault injection for the fake Azure: latency, error answers, throttling, failing operations.

Every knob can come from a scenario's ``faults`` object (:meth:`FaultPlan.configure`) and can be
changed while the server runs. Randomness comes from one seeded RNG so a failing test replays.

Endpoint names used by the rules (``fnmatch`` patterns such as ``compute.*`` are accepted):
``token``, ``arg``, ``compute.get``, ``compute.start``, ``compute.deallocate``,
``compute.poweroff``,
``compute.operation``, ``compute.snapshot.put``, ``compute.snapshot.get``, ``maintenance.cancel``,
``maintenance.get``, ``maintenance.configuration.get``, ``loganalytics.query``.
"""

from __future__ import annotations

import fnmatch
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = (
    "token",
    "arg",
    "compute.get",
    "compute.list",
    "compute.start",
    "compute.deallocate",
    "compute.poweroff",
    "compute.operation",
    "compute.snapshot.put",
    "compute.snapshot.get",
    "maintenance.cancel",
    "maintenance.get",
    "maintenance.configuration.get",
    "loganalytics.query",
)
DEFAULT_ALLOCATION_FAILED_MESSAGE = (
    "Allocation failed. We do not have sufficient capacity for the requested VM size in this "
    "region. "
    "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"
)


_FAULT_SETTINGS = frozenset(
    [
        "seed",
        "latency",
        "errors",
        "write_throttle",
        "arm_limits",
        "compute_limits",
        "arg_quota",
        "lro_failures",
        "log_analytics_partial",
        "cancel",
        "lro_retry_after_seconds",
        "lost_answers",
    ]
)


def _bucket(spec: Any, default: tuple[int, float]) -> tuple[int, float]:
    """A scenario's {"capacity", "refill_per_second"} (or [capacity, refill]) as a tuple."""
    if spec is None:
        return default
    if isinstance(spec, Mapping):
        return int(spec["capacity"]), float(spec["refill_per_second"])
    capacity, refill = spec
    return int(capacity), float(refill)


def _require_known_endpoint(pattern: str) -> None:
    # A typo ("compute.strat") would otherwise be a fault that silently never fires.
    if not any(fnmatch.fnmatchcase(name, pattern) for name in ENDPOINTS):
        raise ValueError(f"{pattern!r} matches no endpoint; known: {', '.join(ENDPOINTS)}")


@dataclass
class ErrorRule:
    """Answer ``status`` instead of serving the request, ``times`` times or with ``probability``.

    With neither ``times`` nor ``probability`` the rule fires on every matching request.
    ``retry_after`` (seconds) adds a Retry-After header; None sends none.
    ``after_applying`` serves the request first (Azure did the work) and then answers the
    error instead: the answer was lost. Status 0 closes the connection without any answer.
    """

    endpoint: str
    status: int
    times: int | None = None
    probability: float | None = None
    retry_after: float | None = None
    path_regex: str | None = None
    method: str | None = None
    code: str | None = None
    message: str | None = None
    fired: int = 0
    after_applying: bool = False

    def matches(self, endpoint: str, method: str, path: str) -> bool:
        """True when this rule applies to the request (ignoring how often it may fire)."""
        if not fnmatch.fnmatchcase(endpoint, self.endpoint):
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_regex and not re.search(self.path_regex, path, re.IGNORECASE))


@dataclass
class LroFailure:
    """Make a VM's long-running operation end Failed with ``code``/``message``."""

    vm: str
    operation: str = "start"
    code: str = "AllocationFailed"
    message: str = DEFAULT_ALLOCATION_FAILED_MESSAGE
    times: int | None = None
    fired: int = 0

    def matches(self, vm_id: str, operation: str) -> bool:
        """True for this VM (by name or full id, case-insensitive) and operation."""
        if self.operation.lower() != operation.lower():
            return False
        wanted = self.vm.lower().rstrip("/")
        vm_key = vm_id.lower().rstrip("/")
        return wanted == vm_key or ("/" not in wanted and vm_key.rsplit("/", 1)[-1] == wanted)


LOST_ANSWER_MODES = ("502", "503", "504", "drop", "timeout")


@dataclass
class LostAnswer:
    """Serve the request (ARM applies it), then lose the answer: a 5xx instead of it
    (``mode`` "502", "503", "504"), the connection closed without one ("drop"), or held
    ``seconds`` and then closed ("timeout", what a client whose read timeout passed sees).

    Fires only on requests the service accepted (status below 400); ``times`` /
    ``probability`` as for :class:`ErrorRule`.
    """

    endpoint: str
    mode: str = "502"
    times: int | None = None
    probability: float | None = None
    path_regex: str | None = None
    seconds: float = 5.0
    fired: int = 0

    def matches(self, endpoint: str, path: str) -> bool:
        """True when this rule applies to the request (ignoring how often it may fire)."""
        if not fnmatch.fnmatchcase(endpoint, self.endpoint):
            return False
        return not (self.path_regex and not re.search(self.path_regex, path, re.IGNORECASE))


@dataclass(frozen=True)
class ThrottleDecision:
    """Outcome of taking one write token: allowed, tokens left, seconds until the next one."""

    allowed: bool
    remaining: int
    retry_after: int


class TokenBuckets:
    """Token buckets keyed by scope (capacity, refill per second), each full when first used.

    Azure's ARM and Compute limits are all of this shape; a request spends one token of each
    bucket that covers it, and is refused (429) when a bucket is empty.
    """

    def __init__(
        self,
        capacity: int,
        refill_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or refill_per_second <= 0:
            raise ValueError("capacity must be >= 1 and refill_per_second > 0")
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        # Seconds, monotonic; a test injects its own to refill the buckets without waiting.
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _level(self, bucket_key: str, moment: float) -> float:
        tokens, last = self._buckets.get(bucket_key, (float(self.capacity), moment))
        return min(float(self.capacity), tokens + (moment - last) * self.refill_per_second)

    def take(self, scope: str, now: float | None = None) -> ThrottleDecision:
        """Spend one token of the scope's bucket if there is one."""
        moment = self._clock() if now is None else now
        bucket_key = scope.lower()
        with self._lock:
            tokens = self._level(bucket_key, moment)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[bucket_key] = (tokens, moment)
                return ThrottleDecision(True, int(tokens), 0)
            self._buckets[bucket_key] = (tokens, moment)
            wait = math.ceil((1.0 - tokens) / self.refill_per_second)
            return ThrottleDecision(False, 0, max(wait, 1))

    def give_back(self, scope: str, now: float | None = None) -> None:
        """Return a token spent on a request another bucket then refused (it never ran)."""
        moment = self._clock() if now is None else now
        bucket_key = scope.lower()
        with self._lock:
            tokens = self._level(bucket_key, moment)
            self._buckets[bucket_key] = (min(float(self.capacity), tokens + 1.0), moment)

    def remaining(self, scope: str, now: float | None = None) -> int:
        """Whole tokens left in the scope's bucket, without spending one."""
        moment = self._clock() if now is None else now
        with self._lock:
            return int(self._level(scope.lower(), moment))


class WriteThrottle(TokenBuckets):
    """ARM's per-subscription write limit as a token bucket (capacity, refill per second)."""


# learn.microsoft.com, "Understand how Azure Resource Manager throttles requests" (token bucket
# architecture, 2024 on): per subscription, per principal, per region, per operation type.
ARM_READ_BUCKET = (250, 25.0)
ARM_WRITE_BUCKET = (200, 10.0)
ARM_DELETE_BUCKET = (200, 10.0)
# learn.microsoft.com, "Compute throttling limits", policy "Update VM" (start, deallocate,
# powerOff, restart, update): per VM 12 tokens refilled 4/min; per subscription and region 1,500
# refilled 500/min.
COMPUTE_UPDATE_VM_RESOURCE_BUCKET = (12, 4.0 / 60.0)
COMPUTE_UPDATE_VM_SUBSCRIPTION_BUCKET = (1500, 500.0 / 60.0)
# Header policy names. The format (<provider>/<policy>;<count>) is documented ("Troubleshooting
# API throttling errors"); these two names are invented: Azure does not list them.
COMPUTE_UPDATE_VM_RESOURCE_POLICY = "Microsoft.Compute/UpdateVMResource"
COMPUTE_UPDATE_VM_SUBSCRIPTION_POLICY = "Microsoft.Compute/UpdateVMSubscription"
COMPUTE_UPDATE_VM_ENDPOINTS = frozenset(["compute.start", "compute.deallocate", "compute.poweroff"])


class ArmLimits:
    """ARM's read, write and delete buckets, per subscription and principal (on by default).

    A loopback fake has one ARM region, so the region part of ARM's key is constant here.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        reads: tuple[int, float] = ARM_READ_BUCKET,
        writes: tuple[int, float] = ARM_WRITE_BUCKET,
        deletes: tuple[int, float] = ARM_DELETE_BUCKET,
    ) -> None:
        self.enabled = enabled
        self.reads = TokenBuckets(*reads)
        self.writes = TokenBuckets(*writes)
        self.deletes = TokenBuckets(*deletes)

    def buckets_for(self, method: str) -> tuple[str, TokenBuckets]:
        """The operation type ("reads", "writes", "deletes") of an HTTP method and its buckets."""
        upper = method.upper()
        if upper in ("GET", "HEAD"):
            return "reads", self.reads
        if upper == "DELETE":
            return "deletes", self.deletes
        return "writes", self.writes


class ComputeLimits:
    """Compute's "Update VM" budgets: per VM and per subscription and region (on by default)."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        per_vm: tuple[int, float] = COMPUTE_UPDATE_VM_RESOURCE_BUCKET,
        per_subscription: tuple[int, float] = COMPUTE_UPDATE_VM_SUBSCRIPTION_BUCKET,
    ) -> None:
        self.enabled = enabled
        self.per_vm = TokenBuckets(*per_vm)
        self.per_subscription = TokenBuckets(*per_subscription)


@dataclass
class ArgQuota:
    """Resource Graph's per-user quota: ``limit`` queries per ``window_seconds`` window.

    The quota headers are always reported; requests over the limit get 429 only when ``enforce``.
    """

    limit: int = 15
    window_seconds: float = 5.0
    enforce: bool = False
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def spend(self, principal: str, now: float | None = None) -> tuple[bool, int, float]:
        """Count one query; returns (allowed, remaining, seconds until the window resets)."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            started, used = self._windows.get(principal, (moment, 0))
            if moment - started >= self.window_seconds:
                started, used = moment, 0
            resets_after = max(self.window_seconds - (moment - started), 0.0)
            if used >= self.limit and self.enforce:
                self._windows[principal] = (started, used)
                return False, 0, resets_after
            used += 1
            self._windows[principal] = (started, used)
            return True, max(self.limit - used, 0), resets_after


@dataclass
class PartialResultFault:
    """Log Analytics answers 200 with an ``error`` beside the tables (a partial failure)."""

    keep_rows: int | None = None
    code: str = "PartialError"
    message: str = "There were some errors when processing your query."


CANCEL_ANSWER_BODIES = ("spec", "run", "none")


@dataclass
class CancelPolicy:
    """How the fake Maintenance RP answers cancel requests.

    An accepted cancel is answered ``answer_status`` (200, 201, 202 or 204) with the body
    ``answer_body``: "spec" is the REST spec's example (``name`` and ``resourceId`` the
    configuration's name), "run" the run's own document (later spec revisions), "none" no body
    (a 204 never has one); ``answer_word`` is its ``properties.status``. The default is the
    spec's example: 202 "Cancel".

    ``already_cancelled`` "ok" answers 200 again (PUT is idempotent in ARM; the most plausible
    Azure behaviour); "conflict" answers 409. ``refuse`` forces every cancel to be refused with
    ``{status, code, message}``.
    """

    enforce_cutoff: bool = True
    too_late_status: int = 409
    already_cancelled: str = "ok"
    refuse: dict[str, Any] | None = None
    answer_status: int = 202
    answer_body: str = "spec"
    answer_word: str = "Cancel"

    def __post_init__(self) -> None:
        if not 200 <= self.answer_status <= 299:
            raise ValueError("answer_status must be a 2xx status: refusals use `refuse`")
        if self.answer_body not in CANCEL_ANSWER_BODIES:
            raise ValueError(f"answer_body must be one of {', '.join(CANCEL_ANSWER_BODIES)}")


class FaultPlan:
    """All injected faults of one fake Azure; thread-safe, seeded, changeable at runtime."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.seed = seed
        self._rng = random.Random(seed)
        self._latency: dict[str, tuple[float, float]] = {}
        self._errors: list[ErrorRule] = []
        self._lro_failures: list[LroFailure] = []
        # A throttle a test sets on purpose, on top of ARM's documented limits (kept for tests
        # that want a tiny bucket; the documented ones are in ``arm_limits``).
        self._lost_answers: list[LostAnswer] = []
        self.write_throttle: WriteThrottle | None = None
        self.arm_limits = ArmLimits()
        self.compute_limits = ComputeLimits()
        self.arg_quota = ArgQuota()
        self.log_analytics_partial: PartialResultFault | None = None
        self.cancel_policy = CancelPolicy()
        # Seconds in the Retry-After header of 202 answers and in-progress polls. 0 lets the
        # client's polling_interval decide (azure-core ignores a zero Retry-After).
        self.lro_retry_after_seconds = 0

    # -- configuration -------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Restart the RNG from ``seed``."""
        with self._lock:
            self.seed = seed
            self._rng = random.Random(seed)

    def set_latency(
        self, endpoint: str, seconds: float | tuple[float, float] | list[float]
    ) -> None:
        """Delay answers of matching endpoints by ``seconds`` (or uniformly within [min, max])."""
        if isinstance(seconds, int | float):
            low = high = float(seconds)
        else:
            low, high = float(seconds[0]), float(seconds[1])
        if low < 0 or high < low:
            raise ValueError("latency needs 0 <= min <= max")
        _require_known_endpoint(endpoint)
        with self._lock:
            self._latency[endpoint] = (low, high)

    def add_error(
        self,
        endpoint: str,
        status: int,
        *,
        times: int | None = None,
        probability: float | None = None,
        retry_after: float | None = None,
        path_regex: str | None = None,
        method: str | None = None,
        code: str | None = None,
        message: str | None = None,
        after_applying: bool = False,
    ) -> ErrorRule:
        """Add an error rule and return it (its ``fired`` counts how often it answered).
        ``after_applying``: serve the request, then answer ``status`` (0: no answer at all)."""
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if status == 0 and not after_applying:
            raise ValueError("status 0 (no answer) needs after_applying")
        _require_known_endpoint(endpoint)
        rule = ErrorRule(
            endpoint,
            status,
            times,
            probability,
            retry_after,
            path_regex,
            method,
            code,
            message,
            after_applying=after_applying,
        )
        with self._lock:
            self._errors.append(rule)
        return rule

    def lose_answer(
        self,
        endpoint: str,
        mode: str = "502",
        *,
        times: int | None = None,
        probability: float | None = None,
        path_regex: str | None = None,
        seconds: float = 5.0,
    ) -> LostAnswer:
        """Apply matching requests, then lose their answers (see :class:`LostAnswer`)."""
        if mode not in LOST_ANSWER_MODES:
            raise ValueError(f"mode must be one of {', '.join(LOST_ANSWER_MODES)}")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        _require_known_endpoint(endpoint)
        rule = LostAnswer(endpoint, mode, times, probability, path_regex, seconds)
        with self._lock:
            self._lost_answers.append(rule)
        return rule

    def remove_error(self, rule: ErrorRule) -> None:
        """Drop one error rule."""
        with self._lock:
            self._errors = [r for r in self._errors if r is not rule]

    def set_write_throttle(
        self,
        capacity: int,
        refill_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> WriteThrottle:
        """Limit ARM writes per subscription with a token bucket (refilled as `clock` moves)."""
        throttle = WriteThrottle(capacity, refill_per_second, clock)
        with self._lock:
            self.write_throttle = throttle
        return throttle

    def set_arm_limits(
        self,
        *,
        enabled: bool = True,
        reads: tuple[int, float] = ARM_READ_BUCKET,
        writes: tuple[int, float] = ARM_WRITE_BUCKET,
        deletes: tuple[int, float] = ARM_DELETE_BUCKET,
    ) -> ArmLimits:
        """Resize (or, for a test that needs a burst beyond Azure's, turn off) ARM's buckets."""
        limits = ArmLimits(enabled=enabled, reads=reads, writes=writes, deletes=deletes)
        with self._lock:
            self.arm_limits = limits
        return limits

    def set_compute_limits(
        self,
        *,
        enabled: bool = True,
        per_vm: tuple[int, float] = COMPUTE_UPDATE_VM_RESOURCE_BUCKET,
        per_subscription: tuple[int, float] = COMPUTE_UPDATE_VM_SUBSCRIPTION_BUCKET,
    ) -> ComputeLimits:
        """Resize (or turn off) Compute's Update VM budgets."""
        limits = ComputeLimits(enabled=enabled, per_vm=per_vm, per_subscription=per_subscription)
        with self._lock:
            self.compute_limits = limits
        return limits

    def set_arg_quota(
        self, limit: int = 15, window_seconds: float = 5.0, *, enforce: bool = True
    ) -> ArgQuota:
        """Set Resource Graph's per-user quota (enforced by default when set explicitly)."""
        quota = ArgQuota(limit=limit, window_seconds=window_seconds, enforce=enforce)
        with self._lock:
            self.arg_quota = quota
        return quota

    def fail_lro(
        self,
        vm: str,
        operation: str = "start",
        *,
        code: str = "AllocationFailed",
        message: str | None = None,
        times: int | None = None,
    ) -> LroFailure:
        """Make ``operation`` on ``vm`` (name or id) end Failed with ``code``."""
        failure = LroFailure(
            vm,
            operation,
            code,
            message
            or (
                DEFAULT_ALLOCATION_FAILED_MESSAGE
                if code == "AllocationFailed"
                else f"Operation failed: {code}"
            ),
            times,
        )
        with self._lock:
            self._lro_failures.append(failure)
        return failure

    def set_log_analytics_partial(
        self, enabled: bool = True, *, keep_rows: int | None = None
    ) -> None:
        """Turn the Log Analytics partial-result answer on or off."""
        with self._lock:
            self.log_analytics_partial = (
                PartialResultFault(keep_rows=keep_rows) if enabled else None
            )

    def clear(self) -> None:
        """Remove every fault (latency, errors, throttles, LRO failures, partial results)."""
        with self._lock:
            self._latency.clear()
            self._errors.clear()
            self._lro_failures.clear()
            self._lost_answers.clear()
            self.write_throttle = None
            # Azure's documented limits are not a fault: clearing faults restores them.
            self.arm_limits = ArmLimits()
            self.compute_limits = ComputeLimits()
            self.arg_quota = ArgQuota()
            self.log_analytics_partial = None
            self.cancel_policy = CancelPolicy()

    def configure(self, spec: Mapping[str, Any]) -> None:
        """Apply a scenario's ``faults`` object (see the package README for the format)."""
        unknown = set(spec) - _FAULT_SETTINGS
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if "seed" in spec:
            self.reseed(int(spec["seed"]))
        for endpoint, seconds in (spec.get("latency") or {}).items():
            self.set_latency(endpoint, seconds)
        for rule in spec.get("errors") or []:
            self.add_error(**rule)
        for failure in spec.get("lro_failures") or []:
            self.fail_lro(**failure)
        for lost in spec.get("lost_answers") or []:
            self.lose_answer(**lost)
        if spec.get("write_throttle"):
            self.set_write_throttle(*_bucket(spec["write_throttle"], ARM_WRITE_BUCKET))
        if spec.get("cancel"):
            self.cancel_policy = CancelPolicy(**spec["cancel"])
        if "lro_retry_after_seconds" in spec:
            self.lro_retry_after_seconds = int(spec["lro_retry_after_seconds"])
        self._configure_limits(spec)

    def _configure_limits(self, spec: Mapping[str, Any]) -> None:
        if "arm_limits" in spec:
            arm = spec["arm_limits"] or {}
            self.set_arm_limits(
                enabled=bool(arm.get("enabled", True)),
                reads=_bucket(arm.get("reads"), ARM_READ_BUCKET),
                writes=_bucket(arm.get("writes"), ARM_WRITE_BUCKET),
                deletes=_bucket(arm.get("deletes"), ARM_DELETE_BUCKET),
            )
        if "compute_limits" in spec:
            compute = spec["compute_limits"] or {}
            self.set_compute_limits(
                enabled=bool(compute.get("enabled", True)),
                per_vm=_bucket(compute.get("per_vm"), COMPUTE_UPDATE_VM_RESOURCE_BUCKET),
                per_subscription=_bucket(
                    compute.get("per_subscription"), COMPUTE_UPDATE_VM_SUBSCRIPTION_BUCKET
                ),
            )
        quota = spec.get("arg_quota")
        if quota:
            self.set_arg_quota(
                int(quota.get("limit", 15)),
                float(quota.get("window_seconds", 5.0)),
                enforce=bool(quota.get("enforce", True)),
            )
        partial = spec.get("log_analytics_partial")
        if partial:
            keep = partial.get("keep_rows") if isinstance(partial, Mapping) else None
            self.set_log_analytics_partial(True, keep_rows=keep)

    # -- decisions (used by the server) --------------------------------------------------------
    def latency_for(self, endpoint: str) -> float:
        """Seconds to wait before answering ``endpoint`` (most specific pattern wins)."""
        with self._lock:
            matches = [
                (pattern, span)
                for pattern, span in self._latency.items()
                if fnmatch.fnmatchcase(endpoint, pattern)
            ]
            if not matches:
                return 0.0
            # An exact name beats a wildcard; among wildcards, the longest pattern wins.
            _pattern, (low, high) = max(matches, key=lambda m: (m[0] == endpoint, len(m[0])))
            return low if low == high else self._rng.uniform(low, high)

    def pick_error(self, endpoint: str, method: str, path: str) -> ErrorRule | None:
        """The error rule that fires for this request, if any (and count it)."""
        with self._lock:
            for rule in self._errors:
                if not rule.matches(endpoint, method, path):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
            return None

    def pick_lost_answer(self, endpoint: str, path: str) -> LostAnswer | None:
        """The lost-answer rule that fires for this served request, if any (and count it)."""
        with self._lock:
            for rule in self._lost_answers:
                if not rule.matches(endpoint, path):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
            return None

    def lro_failure_for(self, vm_id: str, operation: str) -> dict[str, str] | None:
        """The {code, message} a VM operation should fail with, if any (and count it)."""
        with self._lock:
            for failure in self._lro_failures:
                if not failure.matches(vm_id, operation):
                    continue
                if failure.times is not None and failure.fired >= failure.times:
                    continue
                failure.fired += 1
                return {"code": failure.code, "message": failure.message}
            return None
