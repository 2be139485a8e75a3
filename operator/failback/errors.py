"""The exception hierarchy every layer shares.

::

    FailbackError
    ├── Retryable(delay)          transient: try the same step again after `delay` seconds
    │   └── Waiting(delay)        not an error at all: a condition we are waiting for
    └── Permanent                 retrying the same input cannot succeed
        └── SpecInvalid(field)    the user's spec is wrong; `field` names what to fix

Controllers translate these into kopf's ``TemporaryError``/``PermanentError`` in one
bridge module; adapters translate their SDK's faults into these in their own
``faults.py``. Nothing else raises SDK exceptions upward.
"""

from __future__ import annotations


class FailbackError(Exception):
    """Base of every error the product raises on purpose."""


class Retryable(FailbackError):
    """A transient failure: the same step may succeed after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 30.0) -> None:
        super().__init__(message)
        self.delay = delay


class Waiting(Retryable):
    """Not a failure: something we depend on is not there yet (R-PRE-13)."""


class Permanent(FailbackError):
    """Retrying the same input cannot succeed; a person must change something."""


class SpecInvalid(Permanent):
    """The spec is wrong. ``field`` is the JSON path of the field to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
