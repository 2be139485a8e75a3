"""The one place where the product's errors become kopf's.

``Retryable`` (and its ``Waiting``) become ``kopf.TemporaryError`` with the same delay,
``Permanent`` becomes ``kopf.PermanentError``. Handlers persist the message in a
condition before raising, because events are garbage-collected and conditions are not.
Anything else is a bug: kopf retries it with its own backoff and logs the traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import kopf

from failback.errors import Permanent, Retryable


@contextmanager
def kopf_errors() -> Iterator[None]:
    """Translate ``Retryable``/``Permanent`` raised inside the block into kopf's errors."""
    try:
        yield
    except Retryable as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
    except Permanent as exc:
        raise kopf.PermanentError(str(exc)) from exc
