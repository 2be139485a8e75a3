"""The process server's health endpoint over mutual TLS (the transport is
:mod:`failback.adapters.mtls`, shared with the master target's client).

The contract is ``docs/processserver-api.md``.
"""

from __future__ import annotations

from typing import Any

from failback.adapters.mtls import ContractError, MutualTLS, Unanswered
from failback.api import parse_time
from failback.api.conditions import Reason
from failback.domain.processserver import HealthReport, Probe
from failback.ports.tls import TLSMaterial

__all__ = ["HEALTH_PATH", "ContractError", "HealthClient", "parse_health"]

HEALTH_PATH = "/v1/health"


def _int(data: dict[str, Any], key: str, low: int = 0, high: int | None = None) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ContractError(f"{key} must be an integer >= {low}")
    if high is not None and value > high:
        raise ContractError(f"{key} must be at most {high}")
    return value


def parse_health(data: Any) -> HealthReport:
    """A :class:`HealthReport` from the JSON answer; :class:`ContractError` says what is wrong."""
    if not isinstance(data, dict):
        raise ContractError("the answer must be a JSON object")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ContractError("version must be a non-empty string")
    heartbeat = data.get("heartbeat")
    try:
        beat = parse_time(heartbeat) if isinstance(heartbeat, str) else None
    except ValueError:
        beat = None
    if beat is None:
        raise ContractError("heartbeat must be an RFC 3339 time")
    plane = data.get("controlPlane")
    if not isinstance(plane, dict) or not isinstance(plane.get("reachable"), bool):
        raise ContractError("controlPlane.reachable must be true or false")
    error = plane.get("error")
    sessions = data.get("sessions", [])
    agents = data.get("agents", [])
    if not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions):
        raise ContractError("sessions must be a list of strings")
    if not isinstance(agents, list) or not all(
        isinstance(a, dict) and isinstance(a.get("vmId"), str) for a in agents
    ):
        raise ContractError("agents must be a list of objects with a vmId")
    return HealthReport(
        version=version,
        heartbeat=beat,
        cpu_percent=_int(data, "cpuPercent", 0, 100),
        memory_percent=_int(data, "memoryPercent", 0, 100),
        cache_free_percent=_int(data, "cacheFreePercent", 0, 100),
        throughput_bytes_per_second=_int(data, "throughputBytesPerSecond"),
        queue_bytes=_int(data, "queueBytes"),
        control_plane_reachable=plane["reachable"],
        control_plane_error=str(error)[:512] if error else None,
        sessions=tuple(sorted(sessions)),
        registered_agents=tuple(sorted(a["vmId"].lower() for a in agents)),
    )


class HealthClient:
    """Implements ``ports.processserver.ProcessServerClient``."""

    def __init__(self, timeout: float = 10.0, mtls: MutualTLS | None = None) -> None:
        """``mtls``: a transport shared with the other clients of the operator's services
        (one aiohttp session); by default one of its own, with ``timeout``."""
        self._mtls = mtls if mtls is not None else MutualTLS(timeout)

    @property
    def mtls(self) -> MutualTLS:
        """The transport, to share with the session and recovery point clients."""
        return self._mtls

    async def probe(self, endpoint: str, tls: TLSMaterial) -> Probe:
        answer = await self._mtls.get(endpoint, HEALTH_PATH, tls, parse_health)
        if isinstance(answer, Unanswered):
            reason = Reason.TLS_VERIFICATION_FAILED if answer.kind.tls else Reason.CONNECTION_FAILED
            return Probe(None, reason, answer.message)
        return Probe(answer)

    async def close(self) -> None:
        await self._mtls.close()
