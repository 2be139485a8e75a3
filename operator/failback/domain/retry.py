"""How long a server asks us to wait before trying again: Azure's headers, read once."""

from __future__ import annotations

from collections.abc import Mapping


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``x-ms-retry-after-ms`` / ``retry-after-ms`` (milliseconds) or
    ``Retry-After`` (seconds), in that order; None when none holds a number.

    ``headers`` should be case-insensitive, as HTTP clients' header maps are."""
    millis = headers.get("x-ms-retry-after-ms") or headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None
