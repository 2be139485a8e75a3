"""The process server's session API over mutual TLS (``docs/processserver-api.md``,
*Sessions*): start or change, read, hurry, resync and stop one ProtectedVM's replication.

Implements ``ports.processserver.ReplicationSessions`` on the shared transport
:class:`~failback.adapters.mtls.MutualTLS` (one aiohttp session for every client of the
operator's services). Answers are parsed strictly: a field outside the contract is an
``Unanswered(Failure.CONTRACT)`` whose message names it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from failback.adapters.mtls import Fields, MutualTLS
from failback.domain.outcome import Outcome
from failback.domain.replication import (
    CycleMode,
    CycleProgress,
    CycleSummary,
    DiskCycleReport,
    SessionError,
    SessionPhase,
    SessionSpec,
    SessionStatus,
)
from failback.ports.tls import TLSMaterial

__all__ = [
    "SessionsClient",
    "parse_deleted",
    "parse_session",
    "parse_sessions",
    "session_path",
]


def session_path(namespace: str, name: str, action: str = "") -> str:
    """``/v1/sessions/{namespace}/{name}[/action]``, each part percent-encoded."""
    path = f"/v1/sessions/{quote(namespace, safe='')}/{quote(name, safe='')}"
    return f"{path}/{action}" if action else path


def _modes(fields: Fields, key: str) -> dict[str, CycleMode]:
    raw = fields.object(key)
    return {disk: raw.choice(disk, CycleMode) for disk in raw.data}


def _progress(f: Fields) -> CycleProgress:
    return CycleProgress(
        number=f.integer("number"),
        first_seq=f.integer("firstSeq"),
        batches_sent=f.integer("batchesSent"),
        batches_skipped=f.integer("batchesSkipped"),
        bytes_sent=f.integer("bytesSent"),
        wire_bytes=f.integer("wireBytes"),
        modes=_modes(f, "modes"),
    )


def _summary(f: Fields) -> CycleSummary:
    return CycleSummary(
        number=f.integer("number"),
        disks=tuple(
            DiskCycleReport(
                name=d.text("name"),
                mode=d.choice("mode", CycleMode),
                reason=d.text_or_none("reason"),
                bytes_changed=d.integer("bytesChanged"),
                bytes_cleared=d.integer("bytesCleared"),
                bytes_read=d.integer("bytesRead"),
            )
            for d in f.objects("disks")
        ),
        batches_sent=f.integer("batchesSent"),
        batches_skipped=f.integer("batchesSkipped"),
        wire_bytes=f.integer("wireBytes"),
        seconds=f.number("seconds"),
    )


def _error(f: Fields) -> SessionError:
    return SessionError(code=f.text("code"), message=f.text("message"), time=f.time("time"))


def parse_session(data: Any, where: str = "") -> SessionStatus:
    """A :class:`SessionStatus` from one session's status; :class:`ContractError` names the
    field that is wrong. Fields the operator does not read (``spec``) are not checked."""
    f = Fields(data, where)
    cycle, last_cycle, error = f.object_or_none("cycle"), f.object_or_none("lastCycle"), None
    if (raw_error := f.object_or_none("lastError")) is not None:
        error = _error(raw_error)
    return SessionStatus(
        namespace=f.text("namespace"),
        name=f.text("name"),
        phase=f.choice("phase", SessionPhase),
        cycles_completed=f.integer("cyclesCompleted"),
        cycle_number=f.integer("cycleNumber"),
        last_point=f.text_or_none("lastPoint"),
        rpo_source_time=f.time_or_none("rpoSourceTime"),
        rpo_seconds=f.number_or_none("rpoSeconds", low=None),
        resync_pending=f.text_or_none("resyncPending"),
        cycle=_progress(cycle) if cycle is not None else None,
        last_cycle=_summary(last_cycle) if last_cycle is not None else None,
        queue_bytes=f.integer("queueBytes"),
        bytes_sent=f.integer("bytesSent"),
        wire_bytes=f.integer("wireBytes"),
        throughput_bytes_per_second=f.integer("throughputBytesPerSecond"),
        last_error=error,
        next_cycle_at=f.time_or_none("nextCycleAt"),
    )


def parse_sessions(data: Any) -> tuple[SessionStatus, ...]:
    """``GET /v1/sessions``: ``{"sessions": [status, ...]}``."""
    return tuple(parse_session(item.data, item.where) for item in Fields(data).objects("sessions"))


def parse_deleted(data: Any) -> tuple[str, ...]:
    """``DELETE``: ``{"deleted", "snapshotsLeft": [...]}``: the snapshots left behind."""
    f = Fields(data)
    f.text("deleted")
    return f.texts("snapshotsLeft")


class SessionsClient:
    """Implements ``ports.processserver.ReplicationSessions`` over ``mtls`` (shared with
    the health clients: one aiohttp session, one SSL context per TLS Secret)."""

    def __init__(self, mtls: MutualTLS) -> None:
        self._mtls = mtls

    async def put_session(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str, spec: SessionSpec
    ) -> Outcome[SessionStatus]:
        return await self._mtls.request(
            "PUT", endpoint, session_path(namespace, name), tls, parse_session, spec.to_json()
        )

    async def session(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[SessionStatus]:
        return await self._mtls.request(
            "GET", endpoint, session_path(namespace, name), tls, parse_session
        )

    async def sessions(self, endpoint: str, tls: TLSMaterial) -> Outcome[tuple[SessionStatus, ...]]:
        return await self._mtls.request("GET", endpoint, "/v1/sessions", tls, parse_sessions)

    async def delete_session(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[tuple[str, ...]]:
        return await self._mtls.request(
            "DELETE", endpoint, session_path(namespace, name), tls, parse_deleted
        )

    async def run_cycle(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[SessionStatus]:
        return await self._mtls.request(
            "POST", endpoint, session_path(namespace, name, "cycle"), tls, parse_session
        )

    async def resync(
        self, endpoint: str, tls: TLSMaterial, namespace: str, name: str
    ) -> Outcome[SessionStatus]:
        return await self._mtls.request(
            "POST", endpoint, session_path(namespace, name, "resync"), tls, parse_session
        )
