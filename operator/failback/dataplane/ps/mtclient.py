"""The process server's client of a master target (docs/master-target-api.md), over
mutual TLS with the PS's own certificate.

Two kinds of failure: :class:`MasterTargetRefused` (the MT answered with an error code: the
caller decides by ``code``) and :class:`MasterTargetUnreachable` (no answer: retry later).
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from failback.api import format_time
from failback.dataplane.mt.wire import MEDIA_TYPE


class MasterTargetError(Exception):
    pass


class MasterTargetUnreachable(MasterTargetError):
    """No answer: refused, reset, timed out, or the TLS handshake failed."""


class MasterTargetRefused(MasterTargetError):
    """The MT answered with ``{"error": {...}}``."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any]) -> None:
        super().__init__(f"master target refused ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.extra = extra


@dataclass(frozen=True)
class GroupState:
    """What the PS needs of ``GET /v1/groups/{group}``."""

    last_durable_seq: int
    cycle_open: bool
    newest_point: str | None
    newest_source_time: str | None
    released: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupState:
        newest = data.get("newestPoint") or None
        return cls(
            int(data.get("lastDurableSeq", 0)),
            bool(data.get("cycleOpen", False)),
            str(newest["id"]) if newest else None,
            str(newest["sourceTime"]) if newest else None,
            data.get("state") == "released",
        )


class MasterTargetClient:
    """One aiohttp session per MT endpoint (a keep-alive connection for the batches)."""

    def __init__(self, context: ssl.SSLContext, timeout: float = 120.0) -> None:
        self._context = context
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=10.0)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._context, limit_per_host=8),
            )
        return self._session

    async def _call(
        self,
        method: str,
        url: str,
        *,
        json: dict[str, Any] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        try:
            async with self._client().request(
                method, url, json=json, data=data, headers=headers
            ) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise MasterTargetUnreachable(
                f"{method} {url}: {exc.__class__.__name__}: {exc}"[:512]
            ) from exc
        if not isinstance(body, dict):
            raise MasterTargetUnreachable(f"{method} {url}: HTTP {status} without a JSON answer")
        if status >= 400:
            raw = body.get("error")
            error: dict[str, Any] = raw if isinstance(raw, dict) else {}
            raise MasterTargetRefused(
                status,
                str(error.get("code", "unknown")),
                str(error.get("message", ""))[:1024],
                {k: v for k, v in error.items() if k not in ("code", "message")},
            )
        return status, body

    async def group(self, endpoint: str, group: str) -> GroupState:
        _, body = await self._call("GET", f"{endpoint}/v1/groups/{group}")
        return GroupState.from_json(body)

    async def send_batch(
        self, endpoint: str, group: str, body: bytes, encoding: str | None
    ) -> dict[str, Any]:
        headers = {"Content-Type": MEDIA_TYPE}
        if encoding:
            headers["Content-Encoding"] = encoding
        _, answer = await self._call(
            "POST", f"{endpoint}/v1/groups/{group}/batches", data=body, headers=headers
        )
        return answer

    async def commit(
        self,
        endpoint: str,
        group: str,
        point_id: str,
        source_time: dt.datetime,
        app_consistent: bool,
    ) -> dict[str, Any]:
        _, answer = await self._call(
            "POST",
            f"{endpoint}/v1/groups/{group}/points",
            json={
                "id": point_id,
                "sourceTime": format_time(source_time),
                "appConsistent": app_consistent,
            },
        )
        return answer

    async def rollback(self, endpoint: str, group: str, point_id: str) -> dict[str, Any]:
        _, answer = await self._call(
            "POST", f"{endpoint}/v1/groups/{group}/rollback", json={"pointId": point_id}
        )
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
