"""Client-side pacing of ARM requests, and a retry policy that honours ``Retry-After``.

ARM throttles per principal and subscription (legacy: 1,200 writes and 12,000 reads per
hour) and answers 429 with ``Retry-After``. The operator paces itself below that with one
:class:`TokenBucket` per principal, subscription and kind (write or read), shared by every
client of that principal: a request waits for a token when the wait is short, and
otherwise fails at once with ``AzureThrottled(delay)`` so the reconcile is retried later
instead of holding a handler. ARM's ``x-ms-ratelimit-remaining-subscription-*`` caps the
bucket (other clients of the principal spend from the same quota), and a 429 that still
comes drains it for the ``Retry-After`` it names.

:class:`RetryAfterPolicy` is azure-core's retry policy with one change: a ``Retry-After``
longer than ``max_inline_wait`` is not slept through inside a handler; the answer goes
back to the caller, whose fault mapping turns it into ``Retryable(delay=Retry-After)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy

from failback.adapters.azure.faults import retry_after
from failback.ports.azure import AzureThrottled

_READ_METHODS = frozenset({"GET", "HEAD"})


class TokenBucket:
    """``capacity`` tokens refilled at ``per_hour`` per hour; ``clock`` is monotonic seconds."""

    def __init__(
        self, per_hour: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_hour <= 0 or capacity < 1:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = per_hour / 3600.0
        self.capacity = capacity
        self._clock = clock
        self._level = float(capacity)
        self._updated = clock()
        self._blocked_until = 0.0
        self.taken = 0
        self.waited = 0.0

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0: now)."""
        now = self._clock()
        self._refill(now)
        blocked = max(0.0, self._blocked_until - now)
        missing = max(0.0, 1.0 - self._level) / self.rate
        return max(blocked, missing)

    def take(self) -> None:
        """Take one token; call after :meth:`wait_time` said 0 (it may go negative: a debt)."""
        self._refill(self._clock())
        self._level -= 1
        self.taken += 1

    def observe(self, remaining: int) -> None:
        """ARM said how many requests it has left for this principal
        (``x-ms-ratelimit-remaining-subscription-*``): never plan on more than that, as
        other clients of the same principal spend from the same quota."""
        self._refill(self._clock())
        self._level = min(self._level, float(remaining))

    def block_for(self, seconds: float) -> None:
        """Azure said 429: hand out nothing for ``seconds``."""
        now = self._clock()
        self._refill(now)
        self._level = min(self._level, 0.0)
        self._blocked_until = max(self._blocked_until, now + seconds)


class Buckets:
    """The buckets of every principal, subscription and kind."""

    def __init__(
        self,
        writes_per_hour: float,
        write_burst: int,
        reads_per_hour: float,
        read_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = {
            "write": (writes_per_hour, write_burst),
            "read": (reads_per_hour, read_burst),
        }
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def bucket(self, principal: str, subscription: str, kind: str) -> TokenBucket:
        key = (principal, subscription.lower(), kind)
        found = self._buckets.get(key)
        if found is None:
            per_hour, burst = self._config[kind]
            found = self._buckets[key] = TokenBucket(per_hour, burst, self._clock)
        return found


class ThrottlePolicy(AsyncHTTPPolicy[Any, Any]):
    """Takes a token from the principal's bucket before every attempt of a request."""

    def __init__(
        self, buckets: Buckets, principal: str, subscription: str, max_inline_wait: float
    ) -> None:
        super().__init__()
        self._buckets = buckets
        self._principal = principal
        self._subscription = subscription
        self._max_wait = max_inline_wait

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        kind = "read" if request.http_request.method.upper() in _READ_METHODS else "write"
        bucket = self._buckets.bucket(self._principal, self._subscription, kind)
        wait = bucket.wait_time()
        if wait > self._max_wait:
            raise AzureThrottled(
                f"the operator paces its Azure {kind}s for this principal and subscription "
                f"(settings.azure_{kind}s_per_hour); next one in {wait:.0f} s",
                delay=wait,
                code="ClientSideThrottled",
            )
        if wait > 0:
            bucket.waited += wait
            await asyncio.sleep(wait)
        bucket.take()
        response = await self.next.send(request)
        http = response.http_response
        if http.status_code == 429:
            bucket.block_for(retry_after(http) or 30.0)
        remaining = http.headers.get(f"x-ms-ratelimit-remaining-subscription-{kind}s")
        if remaining is not None and remaining.isdigit():
            bucket.observe(int(remaining))
        return response


class RetryAfterPolicy(AsyncRetryPolicy):  # type: ignore[type-arg]  # generic in stubs only
    """azure-core's retries, but never a ``Retry-After`` longer than ``max_inline_wait``."""

    def __init__(self, max_inline_wait: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_inline_wait = max_inline_wait

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        after = retry_after(response.http_response)
        if after is not None and after > self._max_inline_wait:
            return False
        return bool(super().is_retry(settings, response))
