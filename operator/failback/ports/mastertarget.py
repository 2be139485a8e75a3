"""The master target seam: its service's health endpoint over mutual TLS.

The contract is ``docs/master-target-api.md``; the adapter is
``failback.adapters.mastertarget``.
"""

from __future__ import annotations

from typing import Protocol

from failback.domain.mastertarget import ServiceProbe
from failback.ports.tls import TLS_KEYS, TLSMaterial

__all__ = ["TLS_KEYS", "MasterTargetClient", "TLSMaterial"]


class MasterTargetClient(Protocol):
    """Asks a master target service how it is."""

    async def health(self, endpoint: str, tls: TLSMaterial) -> ServiceProbe:
        """One ``GET /v1/health`` over mutual TLS. Never raises for the network or the
        peer: a refused connection, a timeout, a certificate that does not verify or an
        answer that breaks the contract is a :class:`ServiceProbe` without a report, with
        the reason and a message saying what happened."""
        ...
