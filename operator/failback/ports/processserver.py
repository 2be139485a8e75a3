"""The process server seam: its health endpoint, and the Kubernetes reads the ProcessServer
controller needs (a Secret by name, the ProtectedVMs that use a process server).

The health endpoint's contract is ``docs/processserver-api.md``; the adapter is
``failback.adapters.processserver``.
"""

from __future__ import annotations

from typing import Protocol

from failback.domain.processserver import Probe
from failback.ports.tls import TLS_KEYS, TLSMaterial

__all__ = ["TLS_KEYS", "ProcessServerClient", "TLSMaterial"]


class ProcessServerClient(Protocol):
    """Asks a process server how it is."""

    async def probe(self, endpoint: str, tls: TLSMaterial) -> Probe:
        """One ``GET /v1/health`` over mutual TLS. Never raises for the network or the
        peer: a refused connection, a timeout, a certificate that does not verify or an
        answer that breaks the contract is a :class:`Probe` without a report, with the
        reason and a message saying what happened."""
        ...
