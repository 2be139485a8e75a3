"""The process server's health endpoint over mutual TLS, with aiohttp.

The contract is ``docs/processserver-api.md``.

One ``ssl.SSLContext`` per TLS Secret content (cached by digest): the CA of ``ca.crt``
verifies the process server's certificate and host name, and ``tls.crt``/``tls.key`` prove
the operator. The key is written to a private temporary file only for as long as
``load_cert_chain`` reads it.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from failback.api import parse_time
from failback.api.conditions import Reason
from failback.domain.processserver import HealthReport, Probe
from failback.ports.processserver import TLSMaterial

HEALTH_PATH = "/v1/health"


class ContractError(ValueError):
    """The answer is not what ``docs/processserver-api.md`` says."""


def _ssl_context(tls: TLSMaterial) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=tls.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="failback-tls-") as directory:
        cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        cert.write_text(tls.cert)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(tls.key)
        context.load_cert_chain(cert, key)
    return context


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

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None

    def _context(self, tls: TLSMaterial) -> ssl.SSLContext:
        digest = hashlib.sha256("\0".join((tls.cert, tls.key, tls.ca)).encode()).hexdigest()
        context = self._contexts.get(digest)
        if context is None:
            context = self._contexts[digest] = _ssl_context(tls)
        return context

    async def probe(self, endpoint: str, tls: TLSMaterial) -> Probe:
        url = endpoint.rstrip("/") + HEALTH_PATH
        try:
            context = self._context(tls)
        except (ssl.SSLError, ValueError) as exc:
            return Probe(
                None,
                Reason.TLS_VERIFICATION_FAILED,
                f"The TLS Secret (spec.tlsSecretRef) does not hold a usable certificate, key "
                f"and CA: {type(exc).__name__}",
            )
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url, ssl=context) as response:
                if response.status != 200:
                    return Probe(
                        None,
                        Reason.CONNECTION_FAILED,
                        f"{endpoint} answered HTTP {response.status} on {HEALTH_PATH}.",
                    )
                data = await response.json(content_type=None)
            return Probe(parse_health(data))
        except aiohttp.ClientConnectorCertificateError as exc:
            return Probe(
                None,
                Reason.TLS_VERIFICATION_FAILED,
                f"The certificate of {endpoint} does not verify against ca.crt of "
                f"spec.tlsSecretRef: {exc.certificate_error}",
            )
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return Probe(
                None,
                Reason.TLS_VERIFICATION_FAILED,
                f"The TLS handshake with {endpoint} failed (does it accept the operator's "
                f"client certificate?): {type(exc).__name__}",
            )
        except ContractError as exc:
            return Probe(
                None,
                Reason.CONNECTION_FAILED,
                f"{endpoint} answered {HEALTH_PATH} outside its contract: {exc}.",
            )
        except ValueError:
            return Probe(None, Reason.CONNECTION_FAILED, f"{endpoint} did not answer JSON.")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            return Probe(
                None, Reason.CONNECTION_FAILED, f"{endpoint} did not answer: {detail}"[:1024]
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
