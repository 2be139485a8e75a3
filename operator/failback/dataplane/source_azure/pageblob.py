"""A small client of a managed disk's (or snapshot's) page blob, behind its SAS (aiohttp).

Three requests, nothing else: ``HEAD`` (the size), ``GET ?comp=pagelist`` (allocated
ranges, or with ``x-ms-previous-snapshot-url`` the diff against an older incremental
snapshot of the same disk; paged with ``marker``, at most 10,000 ranges per answer), and a
ranged ``GET`` of data whose length is verified. azure-storage-blob's
``get_page_range_diff_for_managed_disk`` drops ``NextMarker``, and the data plane needs no
more than these three calls, so they are spoken here directly. The Azure sink
(``dataplane.sink_azure``) writes through a write SAS with two more: ``PUT ?comp=page``
with ``x-ms-page-write: update`` (at most 4 MiB, :meth:`PageBlob.write`) or ``clear``
(:meth:`PageBlob.clear`).

The SAS URL is a secret: it is held in a private attribute, never put in a ``repr``, a
log record or an exception message (aiohttp's own errors quote the URL, so they are
replaced, not chained). Errors name the snapshot and the byte range instead.

Faults map onto ``ports.azure``'s: 429 → ``AzureThrottled(delay=Retry-After)``, 5xx,
timeouts and dropped connections → ``AzureUnavailable``, 403 → ``AzureAuthorizationFailed``
(a revoked or expired SAS), 404 → ``AzureNotFound``, other 4xx → ``AzurePermanent``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

import aiohttp

from failback.domain.retry import retry_after_seconds
from failback.ports.azure import (
    AzureAuthorizationFailed,
    AzureNotFound,
    AzurePermanent,
    AzureRetryable,
    AzureThrottled,
    AzureUnavailable,
)

log = logging.getLogger(__name__)

STORAGE_VERSION = "2021-12-02"
"""``x-ms-version`` sent: new enough for ``x-ms-previous-snapshot-url`` (2019-07-07)."""
PAGE = 512
MAX_RESULTS = 10_000
"""Azure's ceiling of ranges per Get Page Ranges answer."""
MAX_PAGE_WRITE = 4 << 20
"""Azure's ceiling of one Put Page update (a clear may span the whole blob)."""
DEFAULT_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class PageRange:
    """Bytes ``start`` .. ``end`` (exclusive). ``cleared``: a ``ClearRange`` of a diff."""

    start: int
    end: int
    cleared: bool = False

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class RequestCounts:
    """Requests sent to the page blob API, by kind (every attempt counts)."""

    head: int = 0
    ranges: int = 0
    """Get Page Ranges answers asked for (one per segment per marker page)."""
    reads: int = 0
    writes: int = 0
    """Put Page requests (updates and clears)."""
    retries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.head + self.ranges + self.reads + self.writes


_CODE = re.compile(r"<Code>([A-Za-z0-9]+)</Code>")


def _error(
    status: int, code: str, what: str, delay: float | None
) -> AzureRetryable | AzurePermanent:
    message = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    if status == 429:
        return AzureThrottled(
            message, delay=delay if delay is not None else DEFAULT_DELAY, code=code
        )
    if status >= 500 or status == 408:
        return AzureUnavailable(
            message, delay=delay if delay is not None else DEFAULT_DELAY, code=code
        )
    if status in (401, 403):
        return AzureAuthorizationFailed(
            message + " (the SAS was refused: revoked, expired or wrong)", code=code
        )
    if status == 404:
        return AzureNotFound(message, code=code)
    return AzurePermanent(message, code=code)


class PageBlob:
    """One snapshot's page blob, read through its SAS URL.

    ``name`` is what errors and logs call it (the snapshot's name). Several instances may
    share one ``session``; it is not closed here.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        sas_url: str,
        name: str,
        *,
        counts: RequestCounts | None = None,
        ssl_context: ssl.SSLContext | None = None,
        retries: int = 2,
        max_inline_wait: float = 5.0,
        timeout: float = 60.0,
    ) -> None:
        self._session = session
        self.__url = sas_url
        self.name = name
        self.counts = counts if counts is not None else RequestCounts()
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._retries = retries
        self._max_inline_wait = max_inline_wait
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"PageBlob({self.name!r})"

    @property
    def sas_url(self) -> str:
        """The SAS URL (a secret: for ``x-ms-previous-snapshot-url`` only)."""
        return self.__url

    async def _request(
        self,
        kind: str,
        what: str,
        *,
        method: str = "GET",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        want: tuple[int, ...] = (200,),
        data: bytes | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request (retried ``retries`` times on transient faults whose wait is short)."""
        sent = {"x-ms-version": STORAGE_VERSION, **(headers or {})}
        attempt = 0
        while True:
            attempt += 1
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)
            try:
                async with self._session.request(
                    method,
                    self.__url,
                    params=params,
                    headers=sent,
                    data=data,
                    ssl=self._ssl,
                    timeout=self._timeout,
                ) as response:
                    status = response.status
                    body = await response.read()
                    answer = response.headers.copy()
            except (aiohttp.ClientError, TimeoutError) as exc:
                told = False
                # aiohttp's messages quote the URL (and so the signature): name the type only.
                err: AzureRetryable | AzurePermanent = AzureUnavailable(
                    f"{what}: {type(exc).__name__} (connection failed or timed out)",
                    delay=DEFAULT_DELAY,
                )
            else:
                self.counts.by_status[status] = self.counts.by_status.get(status, 0) + 1
                if status in want:
                    return status, answer, body
                found = _CODE.search(body.decode(errors="replace"))
                code = answer.get("x-ms-error-code") or (found.group(1) if found else "")
                after = retry_after_seconds(answer)
                told = after is not None
                err = _error(status, code, what, after)
            if not isinstance(err, AzureRetryable) or attempt > self._retries:
                raise err
            # Azure's Retry-After is waited when short; without one, a short backoff.
            wait = err.delay if told else min(0.2 * 2**attempt, self._max_inline_wait)
            if wait > self._max_inline_wait:
                raise err
            self.counts.retries += 1
            log.warning("%s; retrying in %.1f s (attempt %d)", err, wait, attempt + 1)
            await asyncio.sleep(wait)

    async def size(self) -> int:
        """The blob's length in bytes (one HEAD)."""
        _, headers, _ = await self._request("head", f"properties of {self.name}", method="HEAD")
        length = headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise AzurePermanent(f"properties of {self.name}: no Content-Length")
        return int(length)

    async def page_ranges(
        self, start: int, end: int, previous: PageBlob | None = None, max_results: int = MAX_RESULTS
    ) -> AsyncIterator[PageRange]:
        """Allocated ranges within bytes ``start`` .. ``end`` (exclusive, page aligned), or
        with ``previous`` the ranges written (``cleared=False``) and cleared since it, in
        offset order, following ``NextMarker`` (one request per answer)."""
        if start % PAGE or end % PAGE or end <= start:
            raise ValueError(f"range {start}..{end} must be non-empty and {PAGE}-byte aligned")
        headers = {"x-ms-range": f"bytes={start}-{end - 1}"}
        if previous is not None:
            headers["x-ms-previous-snapshot-url"] = previous.sas_url
        what = f"{'diff' if previous else 'page ranges'} of {self.name} bytes {start}-{end - 1}"
        marker: str | None = None
        while True:
            params = {"comp": "pagelist", "maxresults": str(min(max_results, MAX_RESULTS))}
            if marker:
                params["marker"] = marker
            _, _, body = await self._request("ranges", what, params=params, headers=headers)
            try:
                root = ET.fromstring(body)  # noqa: S314 - Azure Storage's answer over TLS
            except ET.ParseError:
                raise AzureUnavailable(f"{what}: the answer is not XML", delay=5.0) from None
            for item in root:
                if item.tag in ("PageRange", "ClearRange"):
                    lo = int(item.findtext("Start") or "0")
                    hi = int(item.findtext("End") or "-1") + 1
                    if hi > lo:
                        yield PageRange(max(lo, start), min(hi, end), item.tag == "ClearRange")
            marker = (root.findtext("NextMarker") or "").strip() or None
            if marker is None:
                return

    async def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (one ranged GET; a short answer is an error)."""
        last = offset + length - 1
        what = f"read of {self.name} bytes {offset}-{last}"
        _, headers, body = await self._request(
            "reads", what, headers={"x-ms-range": f"bytes={offset}-{last}"}, want=(206, 200)
        )
        content_range = headers.get("Content-Range", "")
        if len(body) != length or (
            content_range and not content_range.startswith(f"bytes {offset}-{last}/")
        ):
            raise AzureUnavailable(
                f"{what}: got {len(body)} bytes ({content_range or 'no Content-Range'})", delay=5.0
            )
        return body

    async def write(self, offset: int, data: bytes) -> None:
        """Put Page ``update``: ``data`` (at most 4 MiB, 512-byte aligned) at ``offset``.
        Offset-addressed: sending the same write twice leaves the same bytes."""
        length = len(data)
        if offset % PAGE or length % PAGE or not 0 < length <= MAX_PAGE_WRITE:
            raise ValueError(
                f"a page write must be 1..{MAX_PAGE_WRITE} bytes, {PAGE}-byte aligned: "
                f"{offset}+{length}"
            )
        last = offset + length - 1
        await self._request(
            "writes",
            f"write of {self.name} bytes {offset}-{last}",
            method="PUT",
            params={"comp": "page"},
            headers={"x-ms-page-write": "update", "x-ms-range": f"bytes={offset}-{last}"},
            want=(201,),
            data=data,
        )

    async def clear(self, offset: int, length: int) -> None:
        """Put Page ``clear``: ``length`` bytes at ``offset`` read as zeros afterwards."""
        if offset % PAGE or length % PAGE or length <= 0:
            raise ValueError(
                f"a clear must be non-empty and {PAGE}-byte aligned: {offset}+{length}"
            )
        last = offset + length - 1
        await self._request(
            "writes",
            f"clear of {self.name} bytes {offset}-{last}",
            method="PUT",
            params={"comp": "page"},
            headers={"x-ms-page-write": "clear", "x-ms-range": f"bytes={offset}-{last}"},
            want=(201,),
            data=b"",
        )
