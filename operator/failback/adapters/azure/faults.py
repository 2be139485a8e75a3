"""The one place where Azure SDK exceptions become the product's (see ``ports.azure``).

=====================================  =====================================================
Azure answers                          raised as
=====================================  =====================================================
429 (ARM throttling, snapshot rate)    ``AzureThrottled(delay=Retry-After)``
500, 502, 503, 504, timeouts, resets   ``AzureUnavailable(delay=Retry-After or 30 s)``
401 / Entra ID refuses the identity    ``AzureAuthenticationFailed``
403                                    ``AzureAuthorizationFailed``
404                                    ``AzureNotFound``
409                                    ``AzureConflict``
an operation ends Failed or Canceled   ``AzureOperationFailed``
any other 4xx                          ``AzurePermanent``
=====================================  =====================================================

Messages quote Azure's error code and message, with anything shaped like a SAS
signature or bearer token cut out (:func:`redact`), so they can go into conditions.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from failback.domain.retry import retry_after_seconds
from failback.ports.azure import (
    AzureAuthenticationFailed,
    AzureAuthorizationFailed,
    AzureConflict,
    AzureNotFound,
    AzureOperationFailed,
    AzurePermanent,
    AzureRetryable,
    AzureThrottled,
    AzureUnavailable,
)

DEFAULT_DELAY: Final = 30.0
"""Seconds to wait after a transient fault that came without ``Retry-After``."""

TOKEN_REFUSED_CODES: Final = frozenset(
    {
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenExpired",
        "ExpiredAuthenticationToken",
    }
)
"""ARM codes saying the bearer token (not the identity) is bad: sign in again, once."""

_SIGNATURE = re.compile(r"(?i)\b(sig|se|skoid|sktid|skt|ske|sks|skv)=[^&\s\"']+")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*")
_SAS_URL = re.compile(r"https://[^\s\"']*\?[^\s\"']*\bsig=[^\s\"']*")


def redact(text: str) -> str:
    """``text`` without SAS query strings, signatures or bearer tokens."""
    text = _SAS_URL.sub(lambda m: m.group(0).split("?", 1)[0] + "?REDACTED", text)
    text = _SIGNATURE.sub(lambda m: f"{m.group(1)}=REDACTED", text)
    return _BEARER.sub("Bearer REDACTED", text)


def retry_after(response: Any) -> float | None:
    """Seconds from the ``Retry-After`` headers of an HTTP response, if any."""
    return None if response is None else retry_after_seconds(response.headers)


def error_code(exc: AzureError) -> str:
    """Azure's error code (``error.code`` of the body), or ''."""
    if isinstance(exc, HttpResponseError):
        if exc.error is not None and exc.error.code:
            return str(exc.error.code)
        try:
            body = json.loads(exc.response.text()) if exc.response is not None else None
        except (ValueError, TypeError, AttributeError):
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("code"):
            return str(error["code"])
        # A failed long-running operation: the code is quoted in the message.
        found = re.search(r"\(([A-Za-z][A-Za-z0-9]+)\)", str(exc.message or ""))
        if found:
            return found.group(1)
    return ""


def token_refused(exc: AzureError) -> bool:
    """ARM refused the bearer token itself (expired, revoked): signing in again may help."""
    return (
        isinstance(exc, HttpResponseError)
        and exc.status_code == 401
        and error_code(exc) in TOKEN_REFUSED_CODES
    )


def _message(exc: AzureError, what: str) -> str:
    text = exc.message if isinstance(exc, HttpResponseError) else str(exc)
    first = (text or type(exc).__name__).strip().splitlines()[0]
    return redact(f"{what}: {first}")


def translate(exc: AzureError, what: str) -> AzureRetryable | AzurePermanent:
    """The product's error for ``exc``, raised while doing ``what`` (e.g. 'get VM x')."""
    code = error_code(exc)
    message = _message(exc, what)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return AzureUnavailable(message, delay=DEFAULT_DELAY, code=code)
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    delay = retry_after(exc.response) if isinstance(exc, HttpResponseError) else None
    if status == 429:
        return AzureThrottled(
            message, delay=delay if delay is not None else DEFAULT_DELAY, code=code
        )
    if status is not None and status >= 500:
        return AzureUnavailable(
            message, delay=delay if delay is not None else DEFAULT_DELAY, code=code
        )
    if isinstance(exc, ClientAuthenticationError) or status == 401:
        if "temporarily_unavailable" in message or "50196" in message:
            return AzureUnavailable(message, delay=DEFAULT_DELAY, code=code)
        return AzureAuthenticationFailed(message, code=code)
    if status == 403:
        return AzureAuthorizationFailed(message, code=code)
    if status == 404:
        return AzureNotFound(message, code=code)
    if status == 409:
        return AzureConflict(message, code=code)
    if status is None or status < 400:
        # A long-running operation that ended Failed/Canceled (the poller's last answer
        # can be a 200 of the status monitor).
        return AzureOperationFailed(message, code=code)
    return AzurePermanent(message, code=code)
