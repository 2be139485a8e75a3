"""A minimal process server: a real HTTPS server with mutual TLS that speaks the health
contract of ``docs/processserver-api.md`` and nothing else (the data plane is not built
yet). Tests change what it reports through :attr:`ProcessServerStub.health`.
"""

from __future__ import annotations

import datetime as dt
import ssl
from typing import Any

from aiohttp import web

from failback.api import format_time
from testbed.pki import Pki
from testbed.procs import free_port


def healthy_report(now: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "heartbeat": format_time((now or dt.datetime.now(dt.UTC)).replace(microsecond=0)),
        "cpuPercent": 35,
        "memoryPercent": 50,
        "cacheFreePercent": 70,
        "throughputBytesPerSecond": 52_428_800,
        "queueBytes": 1024,
        "controlPlane": {"reachable": True, "error": None},
        "sessions": [],
        "agents": [],
    }


class ProcessServerStub:
    """``GET /v1/health`` over mutual TLS on ``host`` (a loopback address), with
    certificates of ``pki``."""

    def __init__(
        self, pki: Pki, name: str = "ps", host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.pki = pki
        self.name = name
        self.host = host
        self.health: dict[str, Any] = healthy_report()
        self.status = 200
        self.port = port or free_port()
        self.requests = 0
        self.client_subjects: list[str] = []
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def _health(self, request: web.Request) -> web.Response:
        self.requests += 1
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            subject = dict(x[0] for x in peer.get("subject", ()))
            self.client_subjects.append(str(subject.get("commonName", "")))
        if self.status != 200:
            return web.json_response({"error": "injected"}, status=self.status)
        return web.json_response(self.health)

    async def start(self) -> None:
        pair = self.pki.serving(f"{self.name}-server", (self.host, "localhost"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no answer
        context.load_cert_chain(pair.cert, pair.key)
        app = web.Application()
        app.router.add_get("/v1/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
