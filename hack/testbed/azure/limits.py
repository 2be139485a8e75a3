"""Azure's limits, as the emulator enforces them; every field can change at run time.

Durations are emulated seconds (see ``clock``). The defaults are the numbers from the
field (docs/DOMAIN: "Numbers from the field").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DURATIONS: dict[str, float] = {
    "virtualMachines/create": 60.0,
    "virtualMachines/update": 10.0,
    "virtualMachines/delete": 30.0,
    "virtualMachines/powerOff": 30.0,
    "virtualMachines/deallocate": 60.0,
    "virtualMachines/start": 30.0,
    "virtualMachines/restart": 30.0,
    "disks/create": 5.0,
    "disks/update": 2.0,
    "disks/delete": 5.0,
    "disks/beginGetAccess": 5.0,
    "disks/endGetAccess": 2.0,
    "snapshots/create": 10.0,
    "snapshots/update": 2.0,
    "snapshots/delete": 5.0,
    "snapshots/beginGetAccess": 5.0,
    "snapshots/endGetAccess": 2.0,
    "snapshots/copyStart": 60.0,
}


@dataclass
class Limits:
    """The knobs; ``PATCH /_emulator/limits`` changes any of them (``durations`` merge)."""

    arm_writes_per_hour: float = 1200.0
    """ARM write requests (PUT/POST/PATCH/DELETE) per principal and subscription per hour
    (Azure's legacy throttling); refills continuously."""
    arm_write_burst: int = 1200
    """Size of the write bucket: how many writes may go at once."""
    arm_reads_per_hour: float = 12000.0
    """ARM reads (GET, including polls of long-running operations) per hour."""
    arm_read_burst: int = 12000
    snapshots_per_window: int = 7
    """Incremental snapshots of one disk per ``snapshot_window_seconds``."""
    snapshot_window_seconds: float = 300.0
    snapshots_per_disk: int = 500
    """Incremental snapshots that may exist for one disk."""
    sas_exports_per_family: int = 5
    """Snapshots of one incremental snapshot family with an active SAS at once."""
    page_ranges_per_response: int = 10000
    """The most ranges one Get Page Ranges answer holds (then ``NextMarker``)."""
    token_lifetime_seconds: float = 3600.0
    """Lifetime of an issued access token."""
    poll_retry_after: int | None = None
    """``Retry-After`` (real seconds) on long-running operations; ``None``: the real time
    left, at least 1. ``0`` makes the SDK fall back to its own ``polling_interval``."""
    durations: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    """Emulated seconds each kind of long-running operation takes."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, patch: dict[str, Any]) -> None:
        """Apply a partial change; unknown names or bad values are refused whole."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(patch) - set(known))
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(unknown)}; known: {', '.join(known)}")
        durations = patch.get("durations", {})
        if not isinstance(durations, dict):
            raise ValueError("durations must be an object of operation kind to seconds")
        bad = sorted(set(durations) - set(DEFAULT_DURATIONS))
        if bad:
            raise ValueError(
                f"unknown operation kinds: {', '.join(bad)}; known: {', '.join(DEFAULT_DURATIONS)}"
            )
        for key, value in durations.items():
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"duration of {key} must be a number >= 0")
        for name, value in patch.items():
            if name == "durations":
                continue
            if name == "poll_retry_after":
                if value is not None and (not isinstance(value, int) or value < 0):
                    raise ValueError("poll_retry_after must be null or an integer >= 0")
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number")
        for name, value in patch.items():
            if name == "durations":
                self.durations.update({k: float(v) for k, v in durations.items()})
            elif name == "poll_retry_after":
                self.poll_retry_after = value
            else:
                current = getattr(self, name)
                setattr(self, name, int(value) if isinstance(current, int) else value)


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per emulated second."""

    def __init__(self, capacity: int, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> tuple[bool, int, float]:
        """(allowed, tokens left, emulated seconds until the next token)."""
        self._refill(now)
        if self.level >= 1:
            self.level -= 1
            return True, int(self.level), 0.0
        return False, 0, (1 - self.level) / self.rate


class Throttle:
    """ARM's per principal, per subscription read and write buckets."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def reset(self) -> None:
        self._buckets.clear()

    def take(
        self, limits: Limits, principal: str, subscription: str, write: bool, now: float
    ) -> tuple[bool, int, float]:
        kind = "writes" if write else "reads"
        capacity = limits.arm_write_burst if write else limits.arm_read_burst
        rate = (limits.arm_writes_per_hour if write else limits.arm_reads_per_hour) / 3600.0
        key = (principal, subscription, kind)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != capacity or bucket.rate != rate:
            bucket = self._buckets[key] = TokenBucket(capacity, rate, now)
        return bucket.take(now)


def retry_after(real_seconds: float) -> int:
    """A ``Retry-After`` value: whole real seconds, at least 1."""
    return max(1, math.ceil(real_seconds))
