"""The master target service's ``GET /v1/health`` over mutual TLS (the transport is
:mod:`failback.adapters.mtls`, shared with the process servers' client).

The contract is ``docs/master-target-api.md``. Refused, timed out or unreachable is
``ConnectionFailed``; a certificate that does not verify (either way) is
``TLSVerificationFailed``; an answer outside the contract is ``UnexpectedAnswer``.
"""

from __future__ import annotations

from typing import Any

from failback.adapters.mtls import ContractError, MutualTLS, Unanswered
from failback.api import parse_time
from failback.api.conditions import Reason
from failback.domain.mastertarget import (
    RetentionVolumeReport,
    ServiceHealth,
    ServiceProbe,
    version_key,
)
from failback.ports.tls import TLSMaterial

HEALTH_PATH = "/v1/health"


def _int(data: dict[str, Any], key: str, where: str = "") -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ContractError(f"{where}{key} must be an integer >= 0")
    return value


def _str(data: dict[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ContractError(f"{where}{key} must be a non-empty string")
    return value


def _bool(data: dict[str, Any], key: str, where: str = "") -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ContractError(f"{where}{key} must be true or false")
    return value


def parse_health(data: Any) -> ServiceHealth:
    """A :class:`ServiceHealth` from the JSON answer; :class:`ContractError` says what is
    wrong. Fields the operator does not use are not checked (clients ignore unknown ones)."""
    if not isinstance(data, dict):
        raise ContractError("the answer must be a JSON object")
    version = _str(data, "version")
    if version_key(version) is None:
        raise ContractError(f"version {version[:64]!r} is not a version number like 0.1.0")
    heartbeat = data.get("heartbeat")
    try:
        beat = parse_time(heartbeat) if isinstance(heartbeat, str) else None
    except ValueError:
        beat = None
    if beat is None:
        raise ContractError("heartbeat must be an RFC 3339 time")
    volume = data.get("retentionVolume")
    if not isinstance(volume, dict):
        raise ContractError("retentionVolume must be an object")
    w = "retentionVolume."
    report = RetentionVolumeReport(
        path=_str(volume, "path", w),
        mount_point=_str(volume, "mountPoint", w),
        file_system=_str(volume, "fileSystem", w),
        capacity_bytes=_int(volume, "capacityBytes", w),
        free_bytes=_int(volume, "freeBytes", w),
        writable=_bool(volume, "writable", w),
        shares_install_volume=_bool(volume, "sharesInstallVolume", w),
    )
    return ServiceHealth(
        version=version,
        heartbeat=beat,
        retention_volume=report,
        journal_used_bytes=_int(data, "journalUsedBytes"),
    )


class HealthClient:
    """Implements ``ports.mastertarget.MasterTargetClient``."""

    def __init__(self, timeout: float = 10.0, mtls: MutualTLS | None = None) -> None:
        """``mtls``: a transport shared with the other clients of the operator's services
        (one aiohttp session); by default one of its own, with ``timeout``."""
        self._mtls = mtls if mtls is not None else MutualTLS(timeout)

    @property
    def mtls(self) -> MutualTLS:
        """The transport, to share with the session and recovery point clients."""
        return self._mtls

    async def health(self, endpoint: str, tls: TLSMaterial) -> ServiceProbe:
        answer = await self._mtls.get(endpoint, HEALTH_PATH, tls, parse_health)
        if isinstance(answer, Unanswered):
            if answer.kind.tls:
                reason = Reason.TLS_VERIFICATION_FAILED
            elif answer.kind.answered:
                reason = Reason.UNEXPECTED_ANSWER
            else:
                reason = Reason.CONNECTION_FAILED
            return ServiceProbe(None, reason, answer.message)
        return ServiceProbe(answer)

    async def close(self) -> None:
        await self._mtls.close()
