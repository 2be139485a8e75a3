"""Client-side pacing of Azure's snapshot rate limit (7 incremental snapshots of one disk
per 5 minutes), shared by the Azure source and the Azure sink: a snapshot that would go over
is held back here instead of earning a 429."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from failback.ports.azure import AzureThrottled

T = TypeVar("T")
log = logging.getLogger(__name__)


class Pacer:
    """At most ``count`` events per ``window`` seconds (of ``clock``), and none while a
    throttle Azure answered with (``block_for``) lasts."""

    def __init__(self, count: int, window: float, clock: Callable[[], float]) -> None:
        self._count = count
        self._window = window
        self._clock = clock
        self._times: list[float] = []
        self._blocked_until = 0.0

    def wait_time(self) -> float:
        """Seconds to wait before the next event may go."""
        now = self._clock()
        self._times = [t for t in self._times if t > now - self._window]
        wait = max(0.0, self._blocked_until - now)
        if len(self._times) >= self._count:
            wait = max(wait, self._times[len(self._times) - self._count] + self._window - now)
        return wait

    def taken(self) -> None:
        self._times.append(self._clock())

    def block_for(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


async def paced(
    pacer: Pacer,
    begin: Callable[[], Awaitable[T]],
    *,
    what: str,
    limit: str,
    max_inline_wait: float,
) -> T:
    """``begin()`` (one snapshot write), held back by ``pacer``: a wait longer than
    ``max_inline_wait`` is raised as ``AzureThrottled(delay, code="SnapshotRatePaced")``
    without sending anything; a 429 from Azure is waited once when its Retry-After is short,
    else raised, and the pacer remembers it so the next try is paced here."""
    for attempt in (1, 2):
        wait = pacer.wait_time()
        if wait > max_inline_wait:
            raise AzureThrottled(
                f"{what}: at most {limit}; next one in {wait:.1f} s",
                delay=wait,
                code="SnapshotRatePaced",
            )
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            result = await begin()
        except AzureThrottled as err:
            pacer.block_for(err.delay)
            if attempt == 2 or err.delay > max_inline_wait:
                raise
            log.warning("%s throttled; waiting %.1f s once", what, err.delay)
            continue
        pacer.taken()
        return result
    raise AssertionError("unreachable")
