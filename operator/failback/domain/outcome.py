"""What one call of the operator to its own services (process servers, master targets)
comes back with: the answer, a refusal, or no answer.

::

    Outcome[T] = T | Refused | Unanswered

- ``T``: the service answered 2xx, within its contract (``docs/processserver-api.md``,
  ``docs/master-target-api.md``), parsed into a pure model.
- :class:`Refused`: the service answered and said no, with its error body
  ``{"error": {"code", "message", ...}}`` (``invalid_field``, ``unknown_session``,
  ``unknown_point``, ``cycle_open``...). A decision to make, not a network problem.
- :class:`Unanswered`: no usable answer, and :class:`Failure` says why (refused connection,
  timeout, TLS, an answer outside the contract...). Usually worth a retry.

A union rather than a wrapper so that ``isinstance`` narrows it for mypy; the health probes
(``Probe``, ``ServiceProbe``) fold the same two failure kinds into their condition reasons.
Pure: the adapter (``failback.adapters.mtls``) makes them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")


class Failure(enum.StrEnum):
    """Why there is no answer."""

    TLS_MATERIAL = "tls-material"
    """The Secret's certificate, key or CA cannot be loaded."""
    TLS_VERIFY = "tls-verify"
    """The service's certificate does not verify against ``ca.crt``."""
    TLS_HANDSHAKE = "tls-handshake"
    """The handshake failed otherwise (the service refused the operator's certificate)."""
    REFUSED = "refused"
    """The connection was refused (nothing listens there)."""
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    """No such host, no route, the connection dropped..."""
    HTTP_STATUS = "http-status"
    """An HTTP status the contract does not have, without the services' error body."""
    NOT_JSON = "not-json"
    CONTRACT = "contract"
    """JSON, but not what the API document says (the message names the field)."""

    @property
    def tls(self) -> bool:
        return self in (Failure.TLS_MATERIAL, Failure.TLS_VERIFY, Failure.TLS_HANDSHAKE)

    @property
    def answered(self) -> bool:
        """The service answered, but not as its contract says."""
        return self in (Failure.HTTP_STATUS, Failure.NOT_JSON, Failure.CONTRACT)


@dataclass(frozen=True)
class Unanswered:
    """No usable answer: why, and a message for a condition."""

    kind: Failure
    message: str


@dataclass(frozen=True)
class Refused:
    """The service answered 4xx/5xx with its error body: it refused, and said why."""

    status: int
    code: str
    """The contract's error code: ``invalid_field``, ``unknown_session``, ``unknown_point``..."""
    message: str
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    """The error object's other members: ``field`` (``invalid_field``),
    ``lastDurableSeq`` (``sequence_gap``), ``neededBytes``..."""

    @property
    def field(self) -> str | None:
        """For ``invalid_field``: the JSON field to fix (``disks[1].targetDiskId``)."""
        value = self.extra.get("field")
        return value if isinstance(value, str) else None


Outcome: TypeAlias = T | Refused | Unanswered
"""The answer (``T``), a refusal, or no answer."""


__all__ = ["Failure", "Outcome", "Refused", "Unanswered"]
