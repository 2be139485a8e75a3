"""The emulated clock: real time multiplied by a scale, which tests may also jump ahead.

Every time inside the emulator (operation durations, token and SAS expiry, rate
windows, token buckets, event timestamps) is emulated time, in seconds since the
epoch. With ``scale`` 60 one real second is one emulated minute. Only values a
client acts on in real time are converted back: ``Retry-After`` headers and a token's
``expires_in``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time


class Clock:
    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("the time scale must be positive")
        self._scale = scale
        self._mono0 = time.monotonic()
        self._wall0 = time.time()
        self._emulated0 = self._wall0

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        """Emulated seconds since the epoch."""
        return self._emulated0 + (time.monotonic() - self._mono0) * self._scale

    def _rebase(self) -> None:
        emulated = self.now()
        self._mono0 = time.monotonic()
        self._wall0 = time.time()
        self._emulated0 = emulated

    def set_scale(self, scale: float) -> None:
        """Change the speed from now on; emulated time stays continuous."""
        if scale <= 0:
            raise ValueError("the time scale must be positive")
        self._rebase()
        self._scale = scale

    def advance(self, seconds: float) -> None:
        """Jump emulated time forward (never back)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._rebase()
        self._emulated0 += seconds

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long ``emulated_seconds`` last in real time at the current scale."""
        return emulated_seconds / self._scale

    def wall_time(self, emulated: float) -> float:
        """The real wall-clock time at which the clock shows (or showed) ``emulated``."""
        return self._wall0 + (emulated - self._emulated0) / self._scale


def iso(ts: float) -> str:
    """ARM's timestamp format (ISO 8601 with offset)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def rfc1123(ts: float) -> str:
    """HTTP dates as Storage sends them (``Last-Modified``, ``Date``)."""
    return email.utils.formatdate(ts, usegmt=True)
