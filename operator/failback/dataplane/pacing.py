"""Client-side pacing of Azure's snapshot rate limit (7 incremental snapshots of one disk
per 5 minutes), shared by the Azure source and the Azure sink: a snapshot that would go over
is held back here instead of earning a 429."""

from __future__ import annotations

from collections.abc import Callable


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
