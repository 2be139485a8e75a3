"""The process server seam: its health endpoint, and the Kubernetes reads the ProcessServer
controller needs (a Secret by name, the ProtectedVMs that use a process server).

The health endpoint's contract is ``docs/processserver-api.md``; the adapter is
``failback.adapters.processserver``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from failback.domain.processserver import Probe

TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")
"""The keys of the mutual-TLS Secret (``spec.tlsSecretRef``)."""


@dataclass(frozen=True)
class TLSMaterial:
    """The operator's client certificate and key, and the CA that signed the services'.

    PEM text; ``repr`` shows none of it."""

    cert: str = field(repr=False)
    key: str = field(repr=False)
    ca: str = field(repr=False)


class ProcessServerClient(Protocol):
    """Asks a process server how it is."""

    async def probe(self, endpoint: str, tls: TLSMaterial) -> Probe:
        """One ``GET /v1/health`` over mutual TLS. Never raises for the network or the
        peer: a refused connection, a timeout, a certificate that does not verify or an
        answer that breaks the contract is a :class:`Probe` without a report, with the
        reason and a message saying what happened."""
        ...
