"""JSON over mutual TLS with aiohttp: the transport of the operator's clients of its own
services (the process servers' and the master targets' health and control APIs).

One ``ssl.SSLContext`` per TLS Secret content (cached by digest): the CA of ``ca.crt``
verifies the service's certificate and host name, and ``tls.crt``/``tls.key`` prove the
operator. The key is written to a private temporary file only for as long as
``load_cert_chain`` reads it.

:meth:`MutualTLS.request` never raises for the network or the peer. It returns an
:data:`~failback.domain.outcome.Outcome`: the answer parsed by the caller's ``parse``
(which raises :class:`ContractError`), a :class:`Refused` when the service answered 4xx/5xx
with its error body ``{"error": {"code", "message", ...}}``, or an :class:`Unanswered` with
its :class:`Failure` kind and a message saying what happened. :meth:`MutualTLS.get` is the
health probes' ``GET``: a refusal is one more way of not answering there. :class:`Fields`
reads an answer's JSON object strictly, each :class:`ContractError` naming the field.
"""

from __future__ import annotations

import datetime as dt
import enum
import errno
import hashlib
import json
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from failback.api import parse_time
from failback.domain.outcome import Failure, Outcome, Refused, Unanswered
from failback.ports.tls import TLSMaterial

__all__ = [
    "ContractError",
    "Failure",
    "Fields",
    "MutualTLS",
    "Outcome",
    "Refused",
    "Unanswered",
    "ssl_context",
]

T = TypeVar("T")
E = TypeVar("E", bound=enum.StrEnum)

MESSAGE_LIMIT = 1024


class ContractError(ValueError):
    """The answer is not what the service's API document says; the message says what."""


class Fields:
    """Strict reads of one JSON object of an answer. ``where`` is its path in the answer
    (``lastCycle.disks[0].``), so every :class:`ContractError` names the field."""

    def __init__(self, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise ContractError(f"{where.rstrip('.') or 'the answer'} must be a JSON object")
        self.data: dict[str, Any] = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}{key}"

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise ContractError(f"{self._name(key)} must be a non-empty string")
        return value

    def text_or_none(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise ContractError(f"{self._name(key)} must be a string or null")
        return value

    def integer(self, key: str, low: int = 0) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ContractError(f"{self._name(key)} must be an integer >= {low}")
        return value

    def number(self, key: str, low: float | None = 0.0) -> float:
        value = self.data.get(key)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or (low is not None and value < low)
        ):
            bound = f" >= {low:g}" if low is not None else ""
            raise ContractError(f"{self._name(key)} must be a number{bound}")
        return float(value)

    def number_or_none(self, key: str, low: float | None = 0.0) -> float | None:
        return None if self.data.get(key) is None else self.number(key, low)

    def choice(self, key: str, kind: type[E]) -> E:
        """One of the values of the enum ``kind``."""
        value = self.data.get(key)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        allowed = ", ".join(member.value for member in kind)
        raise ContractError(f"{self._name(key)} must be one of {allowed}")

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if not isinstance(value, bool):
            raise ContractError(f"{self._name(key)} must be true or false")
        return value

    def time(self, key: str) -> dt.datetime:
        value = self.data.get(key)
        try:
            when = parse_time(value) if isinstance(value, str) else None
        except ValueError:
            when = None
        if when is None:
            raise ContractError(f"{self._name(key)} must be an RFC 3339 time")
        return when

    def time_or_none(self, key: str) -> dt.datetime | None:
        return None if self.data.get(key) is None else self.time(key)

    def object(self, key: str) -> Fields:
        return Fields(self.data.get(key), f"{self._name(key)}.")

    def object_or_none(self, key: str) -> Fields | None:
        return None if self.data.get(key) is None else self.object(key)

    def objects(self, key: str) -> list[Fields]:
        items = self.data.get(key)
        if not isinstance(items, list):
            raise ContractError(f"{self._name(key)} must be a list of objects")
        return [Fields(item, f"{self._name(key)}[{i}].") for i, item in enumerate(items)]

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.data.get(key)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ContractError(f"{self._name(key)} must be a list of strings")
        return tuple(items)


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


def _refusal(status: int, raw: bytes) -> Refused | None:
    """The services' error body ``{"error": {"code", "message", ...}}`` of a 4xx/5xx, or
    ``None`` when the body is anything else."""
    if not 400 <= status < 600:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not code or not isinstance(message, str):
        return None
    extra = {k: v for k, v in error.items() if k not in ("code", "message")}
    return Refused(status, code, message[:MESSAGE_LIMIT], extra)


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
        :class:`ContractError`), or why not: for a probe, a refusal is a way of not
        answering too (``HTTP_STATUS``, with the service's code and message)."""
        answer = await self.request("GET", endpoint, path, tls, parse)
        if isinstance(answer, Refused):
            return Unanswered(
                Failure.HTTP_STATUS,
                f"{endpoint} answered HTTP {answer.status} on {path}: {answer.code}: "
                f"{answer.message}"[:MESSAGE_LIMIT],
            )
        return answer

    async def request(
        self,
        method: str,
        endpoint: str,
        path: str,
        tls: TLSMaterial,
        parse: Callable[[Any], T],
        body: Any = None,
    ) -> Outcome[T]:
        """``method endpoint + path`` with ``body`` as JSON (none if ``None``). A 2xx answer
        goes through ``parse`` (which raises :class:`ContractError`); a 4xx/5xx with the
        services' error body is :class:`Refused`; anything else is :class:`Unanswered`."""
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
            async with self._session.request(method, url, ssl=context, json=body) as response:
                status = response.status
                raw = await response.read()
            if not 200 <= status < 300:
                refusal = _refusal(status, raw)
                if refusal is not None:
                    return refusal
                return Unanswered(
                    Failure.HTTP_STATUS, f"{endpoint} answered HTTP {status} on {path}."
                )
            data = json.loads(raw)
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
                Failure.CONTRACT,
                f"{endpoint} answered {path} outside its contract: {exc}."[:MESSAGE_LIMIT],
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
