"""Protocols between the services and the outside world.

Services depend on these seams only; adapters implement them; tests of services
hand in real adapters against the test bed. One module per seam: ``ports.vsphere``,
``ports.azure``, ``ports.dataplane``; the clock is here.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    """The time source. The pure domain never reads the clock; it is given ``now``."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware (UTC)."""
        ...
