"""The HTTPS server: one aiohttp application for identity, ARM, blob and control routes.

One middleware wraps every emulated request: it settles due operations, classes and
counts the request, applies fault rules, renders errors in the service's shape and
logs one line with the path only (never the query, which holds SAS signatures, and
never a header or body, which hold tokens and secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from testbed.azure import arm, blob, control, identity
from testbed.azure.control import ControlError
from testbed.azure.errors import AadError, ArmError, EmulatedError, StorageError
from testbed.azure.faults import FaultRule
from testbed.azure.state import EMULATOR, Emulator

log = logging.getLogger("testbed.azure")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK = {"127.0.0.1", "::1"}


def classify(method: str, path: str) -> tuple[str, str | None]:
    """(route class, ARM write operation) of a request; see ``stats.ROUTE_CLASSES``."""
    if path.startswith("/_emulator/"):
        return "control", None
    if path.startswith("/subscriptions/"):
        return arm.classify(method, path)
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
        return "token", None
    if len(parts) == 4 and parts[1:3] == ["v2.0", ".well-known"]:
        return "identity_discovery", None
    if len(parts) == 3 and parts[0].startswith("md-"):
        return ("blob_write" if method == "PUT" else "blob_read"), None
    return "other", None


def _error_for(route: str, status: int, code: str | None, message: str | None) -> EmulatedError:
    """An injected error in the shape of the service the route belongs to."""
    if route.startswith("blob"):
        busy = status in {429, 503}
        return StorageError(
            status,
            code or ("ServerBusy" if busy else "InternalError"),
            message
            or (
                "The server is busy."
                if busy
                else "Server encountered an internal error. Please try again after some time."
            ),
        )
    if route in {"token", "identity_discovery"}:
        return AadError(
            status, code or "temporarily_unavailable", 50196, message or "The server is busy."
        )
    default = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InternalServerError")
    text = message or {
        429: "The request is being throttled (injected fault).",
        503: "The service is temporarily unavailable (injected fault).",
    }.get(status, "An internal error occurred (injected fault).")
    return ArmError(status, code or default, text)


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=499)


async def _inject(request: web.Request, rule: FaultRule, route: str) -> web.StreamResponse | None:
    """The answer a fault rule gives instead of the service, if any."""
    if rule.action == "error":
        error = _error_for(route, rule.status, rule.code, rule.message)
        if rule.retry_after is not None:
            error.headers["Retry-After"] = str(rule.retry_after)
        raise error
    if rule.action in {"hang", "delay"}:
        await asyncio.sleep(rule.seconds)
        if rule.action == "hang":
            return _drop(request)
        return None
    if rule.action == "close":
        return _drop(request)
    if rule.action == "corrupt":
        request["corrupt"] = True
        return None
    if rule.action == "fail_operation":
        request["fail_operation"] = (
            rule.code or "InternalExecutionError",
            rule.message or "An internal execution error occurred (injected fault).",
        )
    return None


def _render(route: str, err: Exception, request_id: str) -> web.Response:
    if isinstance(err, EmulatedError):
        return err.response(request_id)
    if isinstance(err, web.HTTPException):
        status = err.status
        if route.startswith("blob"):
            return StorageError(
                status, "ResourceNotFound", "The specified resource does not exist."
            ).response(request_id)
        return ArmError(status, "NotFound" if status == 404 else "BadRequest", err.reason).response(
            request_id
        )
    log.error("internal error on %s %s: %s", request_id, type(err).__name__, err)
    return _error_for(route, 500, None, None).response(request_id)


@web.middleware
async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    started = time.monotonic()
    route, operation = classify(request.method, request.path)
    request_id = str(uuid.uuid4())
    status = 0
    try:
        if route == "control":
            if request.remote not in LOOPBACK:
                return web.json_response({"error": "the control API is loopback only"}, status=403)
            try:
                response = await handler(request)
            except ControlError as err:
                response = err.response()
            except ArmError as err:
                response = web.json_response(
                    {"error": err.message, "code": err.code}, status=err.status
                )
            except Exception as err:  # an emulator bug: tell the caller what it was
                log.error("control %s failed: %s: %s", request.path, type(err).__name__, err)
                response = web.json_response({"error": f"{type(err).__name__}: {err}"}, status=500)
            status = response.status
            return response
        emu.settle()
        emu.stats.request(route, request.method, operation)
        try:
            rule = emu.faults.fire(route, request.method, request.path, emu.clock.now())
            if rule is not None:
                emu.stats.faults_injected += 1
                log.info(
                    "fault %s (%s) on %s %s", rule.id, rule.action, request.method, request.path
                )
                injected = await _inject(request, rule, route)
                if injected is not None:
                    status = injected.status
                    return injected
            response = await handler(request)
        except Exception as err:  # every failure becomes an answer in the service's shape
            response = _render(route, err, request_id)
        response.headers["x-ms-request-id"] = request_id
        if route.startswith("arm"):
            response.headers["x-ms-correlation-request-id"] = request_id
        status = response.status
        emu.stats.response(route, status)
        return response
    finally:
        log.info(
            "%s %s %s -> %s (%.1f ms)",
            route,
            request.method,
            request.path,
            status or "dropped",
            (time.monotonic() - started) * 1000,
        )


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    """Complete due operations even when nobody asks, so the history is timely."""

    async def tick() -> None:
        while True:
            app[EMULATOR].settle()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(tick())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app(emu: Emulator) -> web.Application:
    app = web.Application(middlewares=[pipeline], client_max_size=64 << 20)
    app[EMULATOR] = emu
    control.add_routes(app)
    arm.add_routes(app)
    identity.add_routes(app)
    blob.add_routes(app)
    app.cleanup_ctx.append(_ticker)
    return app


def serve(
    *, host: str, port: int, cert: Path, key: Path, client_secret: str, time_scale: float
) -> None:
    """Run until SIGTERM/SIGINT."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    emu = Emulator(
        endpoint=f"https://{host}:{port}", client_secret=client_secret, time_scale=time_scale
    )
    log.info("Azure emulator on https://%s:%d (time scale %g)", host, port, time_scale)
    web.run_app(
        make_app(emu),
        host=host,
        port=port,
        ssl_context=context,
        access_log=None,
        print=None,
        shutdown_timeout=2.0,
    )
