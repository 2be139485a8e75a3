"""What the data plane's two HTTPS services share: mutual TLS, JSON errors, request logs,
field checks and the run loop. The master target (:mod:`.mt`) and the process server
(:mod:`.ps`) each add their routes.

Every refusal answers ``{"error": {"code", "message", **extra}}`` with a specific status;
an unexpected exception answers 500 ``internal_error`` and is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from failback.api import parse_time
from failback.dataplane import logs

MAX_JSON = 64 << 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StartupError(Exception):
    """The service cannot start (certificate, state, port in use...)."""


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message", **extra}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS 1.2+, our certificate, and only clients whose certificate ``client_ca`` signed."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"cannot use --cert {cert} / --key {key} / --client-ca {client_ca}: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    return context


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """TLS 1.2+ to a peer service whose certificate ``ca`` signed, proving ``cert``."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"cannot use --cert {cert} / --key {key} / CA {ca} as a client: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    return context


def _peer(request: web.Request) -> str | None:
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


LOG_FIELDS = ("encoding", "wireBytes")
"""Keys a handler may set on its request (``request["wireBytes"] = n``) for the log line."""


def error_middleware(
    log: logging.Logger, messages: dict[int, str], codes: dict[int, str] | None = None
) -> Any:
    """Answers :class:`ApiError` and aiohttp's own refusals as JSON; logs one line per
    request (method, path, status, the client certificate's CN, milliseconds, and any of
    :data:`LOG_FIELDS` the handler set). ``messages`` and ``codes`` override what aiohttp's
    statuses answer (413: how big a body may be)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = web.json_response(
                {"error": {"code": exc.code, "message": exc.message, **exc.extra}},
                status=exc.status,
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {
                404: "not_found",
                405: "method_not_allowed",
                413: "body_too_large",
                **(codes or {}),
            }.get(exc.status, "bad_request")
            message = {
                404: f"no such endpoint: {request.path}",
                405: f"{request.method} is not allowed on {request.path}",
                **messages,
            }.get(exc.status, exc.reason)
            response = web.json_response(
                {"error": {"code": code, "message": message}}, status=exc.status
            )
        except Exception:
            log.exception("request failed", extra={"fields": {"path": request.path}})
            response = web.json_response(
                {"error": {"code": "internal_error", "message": "internal error; see the log"}},
                status=500,
            )
        logs.event(
            log,
            logging.INFO if response.status < 500 else logging.ERROR,
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            client=_peer(request),
            ms=round((time.monotonic() - started) * 1000, 1),
            **{k: request[k] for k in LOG_FIELDS if k in request},
        )
        return response

    return middleware


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (at most 64 KiB), or a 400/413/415 saying what is wrong."""
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {request.content_type or '(none)'}: send application/json",
        )
    raw = await request.content.read(MAX_JSON + 1)
    if len(raw) > MAX_JSON:
        raise ApiError(413, "body_too_large", f"a control body may be at most {MAX_JSON} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def int_field(body: dict[str, Any], name: str, *, required: bool = True) -> int:
    value = body.get(name, None if required else 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApiError(400, "invalid_field", f"{name} must be an integer >= 0")
    return value


def str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value.encode()) > 1024:
        raise ApiError(400, "invalid_field", f"{name} must be a string of 1 to 1024 bytes")
    return value


def time_field(body: dict[str, Any], name: str) -> dt.datetime:
    value = body.get(name)
    try:
        return parse_time(value) if isinstance(value, str) else parse_time("")
    except ValueError as exc:
        raise ApiError(
            400, "invalid_field", f"{name} must be an RFC 3339 time like 2026-11-23T03:00:00Z"
        ) from exc


async def run_until_signalled(
    app: web.Application,
    host: str,
    port: int,
    context: ssl.SSLContext,
    log: logging.Logger,
    **listening: Any,
) -> None:
    """Serve ``app`` over TLS until SIGTERM or SIGINT; :class:`StartupError` if the port
    cannot be bound."""
    # auto_decompress=False: aiohttp would otherwise inflate gzip/deflate/br/zstd request
    # bodies itself, before a handler can refuse an encoding or bound the output.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logs.event(log, logging.INFO, "listening", host=host, port=port, **listening)
    await stop.wait()
    logs.event(log, logging.INFO, "stopping")
    await runner.cleanup()
