"""One JSON ``GET`` over mutual TLS with aiohttp: the transport of the operator's clients of
its own services (the process servers' and the master targets' health endpoints).

One ``ssl.SSLContext`` per TLS Secret content (cached by digest): the CA of ``ca.crt``
verifies the service's certificate and host name, and ``tls.crt``/``tls.key`` prove the
operator. The key is written to a private temporary file only for as long as
``load_cert_chain`` reads it.

:meth:`MutualTLS.get` never raises for the network or the peer: it returns the parsed
answer, or an :class:`Unanswered` with its :class:`Failure` kind and a message saying what
happened; each client maps the kinds to its condition reasons.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from failback.ports.tls import TLSMaterial

T = TypeVar("T")

MESSAGE_LIMIT = 1024


class ContractError(ValueError):
    """The answer is not what the service's API document says; the message says what."""


class Failure(enum.StrEnum):
    """Why there is no answer."""

    TLS_MATERIAL = "tls-material"
    """The Secret's certificate, key or CA cannot be loaded."""
    TLS_VERIFY = "tls-verify"
    """The service's certificate does not verify against ``ca.crt``."""
    TLS_HANDSHAKE = "tls-handshake"
    """The handshake failed otherwise (the service refused the operator's certificate)."""
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    """No such host, no route, the connection dropped..."""
    HTTP_STATUS = "http-status"
    NOT_JSON = "not-json"
    CONTRACT = "contract"

    @property
    def tls(self) -> bool:
        return self in (Failure.TLS_MATERIAL, Failure.TLS_VERIFY, Failure.TLS_HANDSHAKE)

    @property
    def answered(self) -> bool:
        """The service answered, but not as its contract says."""
        return self in (Failure.HTTP_STATUS, Failure.NOT_JSON, Failure.CONTRACT)


@dataclass(frozen=True)
class Unanswered:
    kind: Failure
    message: str


def ssl_context(tls: TLSMaterial) -> ssl.SSLContext:
    """A client context: TLS 1.2 or newer, ``ca.crt`` only, the operator's certificate."""
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


def _reset(exc: BaseException) -> bool:
    os_error = getattr(exc, "os_error", None) or exc
    return (
        isinstance(exc, aiohttp.ServerDisconnectedError)
        or isinstance(os_error, ConnectionResetError)
        or (isinstance(os_error, OSError) and os_error.errno == errno.ECONNRESET)
    )


def _refused(exc: BaseException) -> bool:
    os_error = getattr(exc, "os_error", None)
    return isinstance(os_error, ConnectionRefusedError) or (
        isinstance(os_error, OSError) and os_error.errno == errno.ECONNREFUSED
    )


class MutualTLS:
    """A shared aiohttp session and the SSL contexts of the TLS Secrets seen."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None

    def _context(self, tls: TLSMaterial) -> ssl.SSLContext:
        digest = hashlib.sha256("\0".join((tls.cert, tls.key, tls.ca)).encode()).hexdigest()
        context = self._contexts.get(digest)
        if context is None:
            context = self._contexts[digest] = ssl_context(tls)
        return context

    async def get(
        self, endpoint: str, path: str, tls: TLSMaterial, parse: Callable[[Any], T]
    ) -> T | Unanswered:
        """``GET endpoint + path``, its JSON answer through ``parse`` (which raises
        :class:`ContractError`), or why not."""
        url = endpoint.rstrip("/") + path
        try:
            context = self._context(tls)
        except (ssl.SSLError, ValueError) as exc:
            return Unanswered(
                Failure.TLS_MATERIAL,
                f"The TLS Secret (spec.tlsSecretRef) does not hold a usable certificate, key "
                f"and CA: {type(exc).__name__}",
            )
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url, ssl=context) as response:
                if response.status != 200:
                    return Unanswered(
                        Failure.HTTP_STATUS,
                        f"{endpoint} answered HTTP {response.status} on {path}.",
                    )
                data = await response.json(content_type=None)
            return parse(data)
        except aiohttp.ClientConnectorCertificateError as exc:
            return Unanswered(
                Failure.TLS_VERIFY,
                f"The certificate of {endpoint} does not verify against ca.crt of "
                f"spec.tlsSecretRef: {exc.certificate_error}",
            )
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return Unanswered(
                Failure.TLS_HANDSHAKE,
                f"The TLS handshake with {endpoint} failed (does it accept the operator's "
                f"client certificate?): {type(exc).__name__}",
            )
        except ContractError as exc:
            return Unanswered(
                Failure.CONTRACT, f"{endpoint} answered {path} outside its contract: {exc}."
            )
        except ValueError:
            return Unanswered(Failure.NOT_JSON, f"{endpoint} did not answer JSON.")
        except TimeoutError:
            return Unanswered(
                Failure.TIMEOUT,
                f"{endpoint} did not answer within {self.timeout:g} s: check the endpoint, "
                "that the service runs, and the firewall.",
            )
        except (aiohttp.ClientError, OSError) as exc:
            if _refused(exc):
                return Unanswered(
                    Failure.REFUSED,
                    f"{endpoint} did not answer: the connection was refused (is the service "
                    f"running and listening on that port?): {exc}"[:MESSAGE_LIMIT],
                )
            detail = str(exc) or type(exc).__name__
            if _reset(exc):
                # With TLS 1.3 a server that does not trust the client's certificate says so
                # after the client's side of the handshake: the client sees a reset.
                detail += (
                    " (a service that does not trust the operator's client certificate resets "
                    "the connection: check that tls.crt of spec.tlsSecretRef is signed by a CA "
                    "the service trusts)"
                )
            return Unanswered(
                Failure.UNREACHABLE, f"{endpoint} did not answer: {detail}"[:MESSAGE_LIMIT]
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
