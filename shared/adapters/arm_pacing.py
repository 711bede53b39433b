"""Pace ARM calls to the subscription's budgets, across every thread of the process.

ARM keeps token buckets per subscription, principal and operation type (learn.microsoft.com,
"Understand how Azure Resource Manager throttles requests": reads 250 refilled 25/s, writes and
deletes 200 refilled 10/s each) and reports what is left on every answer
(`x-ms-ratelimit-remaining-subscription-reads|writes|deletes`, and the `-global-` variants shared
by all principals). Compute adds its own budgets and reports them in
`x-ms-ratelimit-remaining-resource` (`Microsoft.Compute/PutVM3Min;239,...`).

`ArmBudgets` models ARM's buckets locally, one per (subscription, operation type): a request
takes a token before it is sent; each answer lowers the level to what Azure says remains (other
instances of the app, and other principals for the global budget, spend the same tokens); a 429
empties the bucket until its Retry-After. A token is reserved, not polled for: when the bucket
is dry the caller is given its place in line and sleeps until then, so a crowd of threads is
served in order at the refill rate instead of stampeding. A place further away than
`max_wait` seconds is refused at once (`ArmThrottled`, a 429 that never left the process): the
caller's work goes back to the queue for later instead of holding a worker thread.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ODataV4Format
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy, RetryPolicy

log = logging.getLogger(__name__)

READS = "reads"
WRITES = "writes"
DELETES = "deletes"
# ARM's documented buckets (capacity, refill per second), per subscription and principal.
ARM_BUCKETS: Mapping[str, tuple[int, float]] = {
    READS: (250, 25.0),
    WRITES: (200, 10.0),
    DELETES: (200, 10.0),
}
# Tokens are handed out at most this many times faster than the bucket refills, even from a full
# bucket. Spending a full bucket at once gains a fleet nothing: tokens spent at 1.5x the refill
# still empty ARM's write bucket after 40 s, long before 1,500 starts in a subscription need it
# (the last is sent at 130 s either way), while a burst of hundreds of starts in the first
# seconds is the process's busiest moment, when pre events queue behind it.
SPEND_OVER_REFILL = 1.5
# A thread waits at most this long for a token; a later place in line fails the call as
# throttled, so the work is re-sent by the queue rather than by a sleeping worker thread.
MAX_WAIT_SECONDS = 3.0
# Turns promised to put-off work (`ArmBudgets.appoint`) that nobody came for are forgotten this
# long after the last of them was due (their work was dropped: the run ended meanwhile).
APPOINTMENT_GRACE_SECONDS = 30.0
# A 429 without a readable Retry-After empties the bucket for this long.
DEFAULT_RETRY_AFTER_SECONDS = 1.0
# How often one call is re-sent in place after a 429 (each wait within max_wait) before it is
# given back to its caller as throttled.
THROTTLED_RETRIES_IN_PLACE = 2
# Per-call option: how long this call may wait for a token (a cancel may wait longer than a
# start: it is rare and urgent).
MAX_WAIT_OPTION = "pacing_max_wait"

_SUBSCRIPTION = re.compile(r"/subscriptions/([^/?#]+)", re.IGNORECASE)
_COMPUTE = re.compile(r"/providers/microsoft\.compute/", re.IGNORECASE)
_REMAINING = "x-ms-ratelimit-remaining-subscription-{}"
_REMAINING_GLOBAL = "x-ms-ratelimit-remaining-subscription-global-{}"
_REMAINING_RESOURCE = "x-ms-ratelimit-remaining-resource"
TOO_MANY_REQUESTS = 429


def operation_type(method: str) -> str:
    """ARM's operation type for an HTTP method: GET/HEAD read, DELETE deletes, others write."""
    upper = method.upper()
    if upper in ("GET", "HEAD"):
        return READS
    if upper == "DELETE":
        return DELETES
    return WRITES


class ArmThrottled(HttpResponseError):
    """The subscription's budget has no token for this call within the allowed wait: the call
    was not sent. Reads like ARM's own 429 (status 429, a Retry-After in seconds)."""

    def __init__(self, subscription: str, kind: str, retry_after: float) -> None:
        message = (
            f"Number of '{kind}' requests for subscription '{subscription}' would exceed ARM's "
            f"budget; not sent, try again after {retry_after:.1f} seconds"
        )
        super().__init__(message=message)
        self.status_code = TOO_MANY_REQUESTS
        self.reason = "Too Many Requests"
        self.retry_after = retry_after
        self.error = ODataV4Format({"code": "ThrottledBeforeSending", "message": message})


@dataclass
class _Bucket:
    """One token bucket; `level` may go below zero (tokens promised to waiting callers), and
    `updated` may lie ahead (no refill before then: the bucket was emptied by a 429)."""

    capacity: float
    refill_per_second: float
    level: float
    updated: float
    # How many times a 429 emptied it (places in line given before then are void).
    emptied: int = 0
    # Requests of this process sent and not yet answered: ARM may not have counted them yet.
    in_flight: int = 0
    # Tokens are handed out at most once per `spend_interval` seconds; the next one from then.
    spend_interval: float = 0.0
    next_spend: float = 0.0

    def settle(self, now: float) -> None:
        if now > self.updated:
            gained = (now - self.updated) * self.refill_per_second
            self.level = min(self.capacity, self.level + gained)
            self.updated = now

    def ready_at(self, now: float) -> float:
        """When the next token could be used (nothing taken)."""
        self.settle(now)
        return max(
            self.updated + max(0.0, 1.0 - self.level) / self.refill_per_second, self.next_spend
        )

    def reserve(self, now: float, max_wait: float) -> float:
        """Take a token; the seconds to wait before using it, or -(seconds) when refused."""
        ready_at = self.ready_at(now)
        wait = max(0.0, ready_at - now)
        if wait > max_wait:
            return -wait
        self.level -= 1.0
        self.next_spend = max(ready_at, now) + self.spend_interval
        return wait

    def lower_to(self, remaining: float, now: float) -> None:
        self.settle(now)
        self.level = min(self.level, remaining)

    def empty_until(self, until: float, now: float) -> None:
        self.settle(now)
        # Every place in line given so far is void (its holder takes a new one): none owed.
        self.level = 0.0
        self.updated = max(self.updated, until)
        self.emptied += 1


@dataclass
class _Promised:
    """Turns of one bucket promised to work put off until them (`ArmBudgets.appoint`) and not
    taken yet, and when the last of them is expected."""

    turns: float = 0.0
    until: float = 0.0


@dataclass
class HeldTurn:
    """A token taken ahead of a request by the thread that will send it (`ArmBudgets.hold`):
    that thread's next request of this kind to this subscription uses it instead of queueing
    again; given back if no request used it."""

    subscription: str
    kind: str
    ready_at: float
    emptied: int
    used: bool = False


class ArmBudgets:
    """The process's view of ARM's budgets, per (subscription, operation type), thread-safe.

    One per credential (ARM counts per principal); every ARM client of the process shares it.
    `monotonic` and `sleep` are injectable so tests need no wall clock.
    """

    def __init__(
        self,
        buckets: Mapping[str, tuple[int, float]] = ARM_BUCKETS,
        max_wait: float = MAX_WAIT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        spend_over_refill: float | None = SPEND_OVER_REFILL,
    ) -> None:
        self._sizes = dict(buckets)
        # None: a full bucket is spent as fast as it is asked (tests of the bucket itself).
        self._spend_over_refill = spend_over_refill
        self.max_wait = max_wait
        self._monotonic = monotonic
        self._sleep = sleep
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Compute writes of a subscription held back until then (a Compute budget ran dry).
        self._compute_held: dict[str, float] = {}
        self._lock = threading.Lock()
        # Turns each thread holds for its next request (see `hold`).
        self._held = threading.local()
        # Turns promised to put-off work, per bucket (see `appoint`).
        self._promised: dict[tuple[str, str], _Promised] = {}

    def _bucket(self, subscription: str, kind: str, now: float) -> _Bucket:
        key = (subscription, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity, refill = self._sizes.get(kind, self._sizes[WRITES])
            bucket = _Bucket(float(capacity), refill, float(capacity), now)
            if self._spend_over_refill:
                bucket.spend_interval = 1.0 / (refill * self._spend_over_refill)
            self._buckets[key] = bucket
        return bucket

    def _turn_allowed(self, max_wait: float | None) -> float:
        """How far ahead a turn may be held: the caller's bound, never past the budgets' own."""
        return self.max_wait if max_wait is None else min(max_wait, self.max_wait)

    def _compute_hold(self, subscription: str, now: float, compute_write: bool) -> float:
        """Seconds a Compute write to `subscription` is still held back (0 or less: none)."""
        return self._compute_held.get(subscription, now) - now if compute_write else 0.0

    def acquire(
        self,
        subscription: str,
        kind: str,
        *,
        compute_write: bool = False,
        max_wait: float | None = None,
    ) -> float:
        """Take a token for one request, sleeping for it if it comes within the allowed wait;
        raise ArmThrottled (nothing taken) if not. Returns the seconds slept.

        A place in line given before a 429 emptied the bucket is given up after the sleep and
        taken again behind the pause: those tokens were never there."""
        allowed = self.max_wait if max_wait is None else max_wait
        subscription = subscription.lower()
        slept = self._use_held(subscription, kind)
        if slept is not None:
            return slept
        slept = 0.0
        while True:
            with self._lock:
                now = self._monotonic()
                bucket = self._bucket(subscription, kind, now)
                held = self._compute_hold(subscription, now, compute_write)
                if held > allowed - slept:
                    raise ArmThrottled(subscription, kind, held)
                wait = bucket.reserve(now, allowed - slept)
                if wait < 0:
                    raise ArmThrottled(subscription, kind, -wait)
                wait = max(wait, held)
                emptied = bucket.emptied
            if wait <= 0:
                with self._lock:
                    bucket.in_flight += 1
                return slept
            self._sleep(wait)
            slept += wait
            with self._lock:
                if bucket.emptied == emptied:
                    bucket.in_flight += 1
                    return slept

    def turn_wait(
        self,
        subscription: str,
        kind: str,
        *,
        compute_write: bool = False,
        max_wait: float | None = None,
    ) -> float:
        """0.0 when `hold` would hold a turn now; else the seconds until one would come. Nothing
        is taken: a caller whose turn is far learns it without spending anything."""
        subscription = subscription.lower()
        allowed = self._turn_allowed(max_wait)
        with self._lock:
            now = self._monotonic()
            bucket = self._bucket(subscription, kind, now)
            held = self._compute_hold(subscription, now, compute_write)
            wait = max(bucket.ready_at(now) - now, held, 0.0)
        return 0.0 if wait <= allowed else wait

    @contextlib.contextmanager
    def hold(
        self,
        subscription: str,
        kind: str,
        *,
        compute_write: bool = False,
        max_wait: float | None = None,
    ) -> Iterator[float]:
        """Take this thread's next turn for a `kind` request to `subscription` now, before the
        work that leads to the request (so a crowd of threads learns its places at once, and
        those too far back do no work at all). Yields 0.0 when the turn is held: the thread's
        next such request uses it (sleeping until it comes, at most `max_wait`, itself at most
        the budgets' own); a turn no request used is given back on exit. Yields the seconds to
        the turn (nothing taken) when it is further than that."""
        subscription = subscription.lower()
        allowed = self._turn_allowed(max_wait)
        with self._lock:
            now = self._monotonic()
            bucket = self._bucket(subscription, kind, now)
            held = self._compute_hold(subscription, now, compute_write)
            wait = bucket.reserve(now, allowed) if held <= allowed else -held
            if wait < 0:
                refused = -wait
            else:
                refused = 0.0
                turn = HeldTurn(subscription, kind, now + max(wait, held), bucket.emptied)
                promised = self._promised.get((subscription, kind))
                if promised is not None and promised.turns > 0:
                    promised.turns -= 1
        if refused:
            yield max(refused, held)
            return
        turns: dict[tuple[str, str], HeldTurn] = self._held.__dict__.setdefault("turns", {})
        outer = turns.get((subscription, kind))
        turns[(subscription, kind)] = turn
        try:
            yield 0.0
        finally:
            if outer is None:
                turns.pop((subscription, kind), None)
            else:
                turns[(subscription, kind)] = outer
            if not turn.used:
                with self._lock:
                    if bucket.emptied == turn.emptied:
                        bucket.level = min(bucket.capacity, bucket.level + 1.0)

    def _use_held(self, subscription: str, kind: str) -> float | None:
        """The seconds slept for this thread's held turn, or None when it holds none (or the
        turn was voided by a 429 since: the request queues again)."""
        turns: dict[tuple[str, str], HeldTurn] = self._held.__dict__.get("turns", {})
        turn = turns.get((subscription, kind))
        if turn is None or turn.used:
            return None
        turn.used = True
        wait = max(0.0, turn.ready_at - self._monotonic())
        if wait > 0:
            self._sleep(wait)
        with self._lock:
            bucket = self._bucket(subscription, kind, self._monotonic())
            if bucket.emptied != turn.emptied:
                return None
            bucket.in_flight += 1
        return wait

    def appoint(
        self,
        subscription: str,
        kind: str,
        count: int,
        *,
        compute_write: bool = False,
    ) -> float:
        """Promise `count` turns to work put off until its turns come, after those promised
        before; the seconds until the first of them (nothing is taken now).

        Without it, everything put off learns the same nearest turn and comes back at once:
        one caller gets the turns, the rest are put off again, and a large fan-out's tasks came
        back about once for every two VMs. Promised turns are handed out, in the order
        promised, at the pace the bucket will hand them out: its spending pace while it holds
        tokens, its refill once empty. Each turn held (by anyone) counts one promised turn as
        taken; promised turns nobody came for are forgotten `APPOINTMENT_GRACE_SECONDS` after
        the last was due."""
        subscription = subscription.lower()
        with self._lock:
            now = self._monotonic()
            bucket = self._bucket(subscription, kind, now)
            bucket.settle(now)
            promised = self._promised.setdefault((subscription, kind), _Promised())
            if promised.until < now - APPOINTMENT_GRACE_SECONDS:
                promised.turns = 0.0
            held = max(0.0, self._compute_hold(subscription, now, compute_write))
            first = max(bucket.ready_at(now) - now, held)
            start = max(first, _time_for(bucket, promised.turns))
            promised.turns += max(0, count)
            promised.until = max(promised.until, now + _time_for(bucket, promised.turns))
        return start

    def observe(
        self,
        subscription: str,
        kind: str,
        status: int,
        headers: Mapping[str, str],
        *,
        compute: bool = False,
    ) -> None:
        """Learn from an answer: lower each bucket to what ARM says remains; on a 429, empty
        the bucket that ran dry (or hold Compute writes) until Retry-After."""
        subscription = subscription.lower()
        lowered = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            now = self._monotonic()
            dry: list[str] = []
            answered = self._bucket(subscription, kind, now)
            answered.in_flight = max(0, answered.in_flight - 1)
            for each in self._sizes:
                remaining = _min_count(
                    lowered.get(_REMAINING.format(each)),
                    lowered.get(_REMAINING_GLOBAL.format(each)),
                )
                if remaining is None:
                    continue
                bucket = self._bucket(subscription, each, now)
                # Calls still on their way will spend what ARM reports left.
                bucket.lower_to(remaining - bucket.in_flight, now)
                if remaining <= 0:
                    dry.append(each)
            compute_dry = compute and any(
                count <= 0 for count in _compute_budgets(lowered.get(_REMAINING_RESOURCE))
            )
            if status != TOO_MANY_REQUESTS:
                return
            until = now + _retry_after(lowered.get("retry-after"))
            if compute_dry and not dry:
                self._compute_held[subscription] = max(
                    self._compute_held.get(subscription, now), until
                )
                return
            for each in dry or [kind]:
                self._bucket(subscription, each, now).empty_until(until, now)
        log.info(
            "ARM throttled %s in subscription %s; holding them for %.1f s",
            ", ".join(dry or [kind]),
            subscription,
            until - now,
        )

    def unanswered(self, subscription: str, kind: str) -> None:
        """A request taken a token for got no answer (an error): it is no longer on its way."""
        with self._lock:
            bucket = self._bucket(subscription.lower(), kind, self._monotonic())
            bucket.in_flight = max(0, bucket.in_flight - 1)

    def level(self, subscription: str, kind: str) -> float:
        """Tokens the process believes are left now (negative: promised to waiting callers)."""
        with self._lock:
            now = self._monotonic()
            bucket = self._bucket(subscription.lower(), kind, now)
            bucket.settle(now)
            return bucket.level


class ArmPacing(HTTPPolicy[Any, Any]):
    """Per-attempt pipeline policy: a token from `budgets` before each request to a
    subscription, and what the answer says remains back into them."""

    def __init__(self, budgets: ArmBudgets) -> None:
        super().__init__()
        self.budgets = budgets

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        max_wait = request.context.options.pop(MAX_WAIT_OPTION, None)
        if max_wait is not None:
            request.context[MAX_WAIT_OPTION] = max_wait
        http_request = request.http_request
        match = _SUBSCRIPTION.search(http_request.url)
        if match is None:
            return self.next.send(request)
        subscription = match.group(1)
        kind = operation_type(http_request.method)
        compute = _COMPUTE.search(http_request.url) is not None
        self.budgets.acquire(
            subscription,
            kind,
            compute_write=compute and kind != READS,
            max_wait=request.context.get(MAX_WAIT_OPTION),
        )
        try:
            response = self.next.send(request)
        except BaseException:
            self.budgets.unanswered(subscription, kind)
            raise
        http_response = response.http_response
        self.budgets.observe(
            subscription, kind, http_response.status_code, http_response.headers, compute=compute
        )
        return response


class PacedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retries, bounded for throttling: a call the budgets refused is not retried
    here (its caller re-sends it later), and a 429 is re-sent in place only while its
    Retry-After is short, a few times; otherwise the 429 goes back to the caller."""

    def __init__(self, max_wait: float = MAX_WAIT_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_wait = max_wait

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        if response.http_response.status_code == TOO_MANY_REQUESTS:
            throttled_before = sum(
                1
                for attempt in settings["history"]
                if attempt.http_response is not None
                and attempt.http_response.status_code == TOO_MANY_REQUESTS
            )
            retry_after = _retry_after(response.http_response.headers.get("Retry-After"))
            if throttled_before >= THROTTLED_RETRIES_IN_PLACE or retry_after > self.max_wait:
                return False
        return bool(super().is_retry(settings, response))

    def increment(
        self,
        settings: dict[str, Any],
        response: Any = None,
        error: Exception | None = None,
    ) -> bool:
        if isinstance(error, ArmThrottled):
            return False
        return bool(super().increment(settings, response=response, error=error))


def _time_for(bucket: _Bucket, turns: float) -> float:
    """Seconds, from the bucket's last settlement, until it has handed out `turns` more turns:
    at its spending pace while it holds tokens, at its refill once empty."""
    if turns <= 0:
        return 0.0
    return max(turns * bucket.spend_interval, (turns - bucket.level) / bucket.refill_per_second)


def _min_count(*values: str | None) -> int | None:
    counts = []
    for value in values:
        try:
            counts.append(int(str(value).strip()))
        except ValueError:
            continue
    return min(counts) if counts else None


def _compute_budgets(header: str | None) -> list[int]:
    """The counts of `Microsoft.Compute/<policy>;<count>,...` (policies unknown are kept)."""
    counts = []
    for part in (header or "").split(","):
        _, _, count = part.rpartition(";")
        try:
            counts.append(int(count.strip()))
        except ValueError:
            continue
    return counts


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (a number or an HTTP date), DEFAULT_RETRY_AFTER when unreadable."""
    if value is None:
        return DEFAULT_RETRY_AFTER_SECONDS
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS
    return max(0.0, moment.timestamp() - time.time())
