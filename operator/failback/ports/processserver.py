"""The process server seam: its health endpoint, and its session API (start, read, hurry,
resync and stop one ProtectedVM's replication).

The contract is ``docs/processserver-api.md``; the adapters are
``failback.adapters.processserver.client`` (health) and ``.sessions`` (sessions).
"""

from __future__ import annotations

from typing import Protocol

from failback.domain.outcome import Outcome
from failback.domain.processserver import Probe
from failback.domain.replication import SessionSpec, SessionStatus
from failback.ports.tls import TLS_KEYS, TLSMaterial

__all__ = ["TLS_KEYS", "ProcessServerClient", "ReplicationSessions", "TLSMaterial"]


class ProcessServerClient(Protocol):
    """Asks a process server how it is."""

    async def probe(self, endpoint: str, tls: TLSMaterial) -> Probe:
        """One ``GET /v1/health`` over mutual TLS. Never raises for the network or the
        peer: a refused connection, a timeout, a certificate that does not verify or an
        answer that breaks the contract is a :class:`Probe` without a report, with the
        reason and a message saying what happened."""
        ...


class ReplicationSessions(Protocol):
    """A process server's replication sessions, keyed by the ProtectedVM's
    ``namespace/name``. Every call is one request over mutual TLS and never raises for the
    network or the peer: it returns an :data:`~failback.domain.outcome.Outcome`, the
    answer, a ``Refused`` (the PS said no: ``invalid_field`` with ``field``,
    ``unknown_session``, ``session_conflict``, ``group_in_use``) or an ``Unanswered``."""

    async def put_session(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str, spec: SessionSpec
    ) -> Outcome[SessionStatus]:
        """``PUT /v1/sessions/{namespace}/{name}``: create the session (its first cycle
        starts at once), or apply a change of ``paused``/``interval_seconds``; the same
        spec again is harmless."""
        ...

    async def session(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[SessionStatus]:
        """``GET /v1/sessions/{namespace}/{name}``."""
        ...

    async def sessions(self, endpoint: str, tls: TLSMaterial) -> Outcome[tuple[SessionStatus, ...]]:
        """``GET /v1/sessions``: every session of the PS."""
        ...

    async def delete_session(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[tuple[str, ...]]:
        """``DELETE /v1/sessions/{namespace}/{name}``: stop it (a cycle under way at once),
        delete its Azure snapshots and state; the names of snapshots that could not be
        deleted. The MT group keeps its points."""
        ...

    async def run_cycle(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[SessionStatus]:
        """``POST .../cycle``: start a cycle now (the planned failback's final sync); wait
        for ``last_point`` to change."""
        ...

    async def resync(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[SessionStatus]:
        """``POST .../resync``: the next cycle, started now, is a full resync."""
        ...
