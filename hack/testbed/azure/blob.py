"""The page-blob API behind the SAS URLs of exported disks and snapshots.

- ``HEAD``: properties (``Content-Length``, ``x-ms-blob-type: PageBlob``, ETag, ...);
- ``GET``: data, whole or ranged (``x-ms-range`` or ``Range``), ``If-Match`` honoured;
- ``GET ?comp=pagelist``: valid page ranges, or on a snapshot's SAS with
  ``x-ms-previous-snapshot-url`` (the SAS URL of an older incremental snapshot of the
  same disk) the diff between the two: ``PageRange`` for pages
  written since, ``ClearRange`` for pages cleared since, in offset order, at most
  ``maxresults`` (and never more than 10,000) per answer with ``NextMarker``;
- ``PUT ?comp=page``: ``x-ms-page-write: update|clear`` of 512-byte aligned ranges, only
  through a write SAS (an upload, or the replica disk of reverse replication); an update
  holds at most 4 MiB, a clear may span the whole blob.

Errors are Storage's XML with ``x-ms-error-code``: a bad, expired or revoked SAS is 403
``AuthenticationFailed``; a read SAS that tries to write is 403
``AuthorizationPermissionMismatch``; a diff across snapshot families is 409
``PreviousSnapshotOperationNotSupported``.
"""

from __future__ import annotations

import base64
import bisect
import re
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

from aiohttp import web

from testbed.azure.clock import rfc1123
from testbed.azure.errors import StorageError
from testbed.azure.pages import PAGE, PageRange
from testbed.azure.resources import AccessGrant, Disk, Snapshot
from testbed.azure.sas import BLOB_NAME
from testbed.azure.state import EMULATOR, Emulator

STORAGE_VERSION = "2026-02-06"
MAX_PAGE_WRITE = 4 << 20
ACCOUNT_PATTERN = "md-[a-z0-9]+"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _authorize(
    emu: Emulator, account: str, container: str, blob: str, query: dict[str, str], write: bool
) -> AccessGrant:
    now = emu.clock.now()
    grant_id, permissions = emu.sas.verify(query, account, container, blob, now)
    grant = emu.store.grants.get(container)
    if grant is None or grant.id != grant_id or grant.account != account or blob != BLOB_NAME:
        raise StorageError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
            detail="The SAS names no export of this emulator.",
        )
    if grant.revoked:
        raise StorageError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
            detail="Access to the disk was revoked (endGetAccess).",
        )
    if not grant.live(now):
        raise StorageError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
            detail="The access granted to the disk has expired.",
        )
    if grant.active_from is None:
        raise StorageError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
            detail="Access to the disk is still being granted.",
        )
    if write and ("w" not in permissions or not grant.write):
        raise StorageError(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )
    return grant


def _grant(request: web.Request, write: bool) -> AccessGrant:
    info = request.match_info
    return _authorize(
        request.app[EMULATOR],
        info["account"],
        info["container"],
        info["blob"],
        dict(request.query),
        write,
    )


def _headers(request: web.Request, target: Disk | Snapshot) -> dict[str, str]:
    content = target.content
    return {
        "ETag": f'"0x8D{target.seq:06X}{content.version:010X}"',
        "Last-Modified": rfc1123(max(target.created, content.modified)),
        "x-ms-version": request.headers.get("x-ms-version", STORAGE_VERSION),
        "Date": rfc1123(request.app[EMULATOR].clock.now()),
    }


def _requested_range(request: web.Request) -> tuple[int, int | None] | None:
    """The inclusive byte range asked for (end None: to the end), or None for all."""
    value = request.headers.get("x-ms-range") or request.headers.get("Range")
    if not value:
        return None
    match = _RANGE.match(value.strip())
    if match is None:
        raise StorageError(400, "InvalidHeaderValue", f"The range '{value}' is not valid.")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else None
    if end is not None and end < start:
        raise StorageError(400, "InvalidHeaderValue", f"The range '{value}' is not valid.")
    return start, end


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for, clipped to the blob, or None for all."""
    wanted = _requested_range(request)
    if wanted is None:
        return None
    start, end = wanted
    return start, size - 1 if end is None else min(end, size - 1)


def _check_if_match(request: web.Request, etag: str) -> None:
    wanted = request.headers.get("If-Match")
    if wanted and wanted != "*" and wanted != etag:
        raise StorageError(
            412,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )


async def properties(request: web.Request, grant: AccessGrant) -> web.Response:
    target = grant.target
    headers = _headers(request, target)
    _check_if_match(request, headers["ETag"])
    headers.update(
        {
            "Content-Length": str(target.content.size),
            "Content-Type": "application/octet-stream",
            "x-ms-blob-type": "PageBlob",
            "x-ms-blob-sequence-number": "0",
            "x-ms-creation-time": rfc1123(target.created),
            "x-ms-lease-status": "unlocked",
            "x-ms-lease-state": "available",
            "x-ms-server-encrypted": "true",
            "Accept-Ranges": "bytes",
        }
    )
    return web.Response(status=200, headers=headers)


async def read(request: web.Request, grant: AccessGrant) -> web.StreamResponse:
    target = grant.target
    size = target.content.size
    headers = _headers(request, target)
    _check_if_match(request, headers["ETag"])
    wanted = _range(request, size)
    if wanted is not None and wanted[0] >= size:
        raise StorageError(
            416,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    start, end = wanted if wanted is not None else (0, size - 1)
    length = max(0, end - start + 1)
    headers.update(
        {
            "Content-Length": str(length),
            "Content-Type": "application/octet-stream",
            "x-ms-blob-type": "PageBlob",
            "x-ms-blob-sequence-number": "0",
            "x-ms-creation-time": rfc1123(target.created),
            "x-ms-lease-status": "unlocked",
            "x-ms-lease-state": "available",
            "x-ms-server-encrypted": "true",
            "Accept-Ranges": "bytes",
        }
    )
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206 if wanted is not None else 200, headers=headers)
    await response.prepare(request)
    for chunk in target.content.chunks(start, length):
        await response.write(chunk)
    await response.write_eof()
    return response


def _marker(value: str | None) -> int:
    if not value:
        return 0
    try:
        prefix, encoded = value.split("!", 1)
        offset = int(base64.urlsafe_b64decode(encoded.encode()).decode())
    except ValueError:
        raise StorageError(400, "InvalidQueryParameterValue", "The marker is not valid.") from None
    if prefix != "2" or offset < 0 or offset % PAGE:
        raise StorageError(400, "InvalidQueryParameterValue", "The marker is not valid.")
    return offset


def _encode_marker(offset: int) -> str:
    return "2!" + base64.urlsafe_b64encode(str(offset).encode()).decode()


def _previous(request: web.Request, url: str, target: Disk | Snapshot) -> Snapshot:
    """The older snapshot a diff compares ``target`` with, if the service allows it."""
    emu = request.app[EMULATOR]
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.strip("/").split("/")]
    if len(segments) != 3 or not re.fullmatch(ACCOUNT_PATTERN, segments[0]):
        raise StorageError(
            400,
            "InvalidHeaderValue",
            "x-ms-previous-snapshot-url is not a SAS URL of this emulator.",
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    try:
        grant = _authorize(emu, segments[0], segments[1], segments[2], query, write=False)
    except StorageError as err:
        raise StorageError(
            err.status,
            err.code,
            err.message,
            detail=f"x-ms-previous-snapshot-url: {err.detail or err.message}",
        ) from None
    previous = grant.target
    if not isinstance(previous, Snapshot):
        raise StorageError(
            400,
            "InvalidHeaderValue",
            "x-ms-previous-snapshot-url must name a snapshot, not a disk.",
        )
    if not isinstance(target, Snapshot):
        raise StorageError(
            409,
            "PreviousSnapshotOperationNotSupported",
            "Diffs are between two incremental snapshots of a disk; this SAS names the disk "
            "itself. Take a snapshot and diff that.",
        )
    if previous.family_id != target.family_id or not previous.incremental:
        raise StorageError(
            409,
            "PreviousSnapshotOperationNotSupported",
            "The previous snapshot is not an incremental snapshot of the same disk "
            "(another snapshot family).",
        )
    if previous.seq > target.seq:
        raise StorageError(
            400,
            "PreviousSnapshotCannotBeNewer",
            "The previous snapshot cannot be newer than the target.",
        )
    return previous


def _ranges_xml(ranges: list[PageRange], next_marker: str | None) -> bytes:
    items = "".join(
        f"<{'ClearRange' if r.cleared else 'PageRange'}><Start>{r.start}</Start><End>{r.end}</End>"
        f"</{'ClearRange' if r.cleared else 'PageRange'}>"
        for r in ranges
    )
    tail = f"<NextMarker>{escape(next_marker)}</NextMarker>" if next_marker else "<NextMarker />"
    return f'<?xml version="1.0" encoding="utf-8"?><PageList>{items}{tail}</PageList>'.encode()


async def page_ranges(request: web.Request, grant: AccessGrant) -> web.Response:
    emu = request.app[EMULATOR]
    target = grant.target
    size = target.content.size
    if "prevsnapshot" in request.query:
        raise StorageError(
            400,
            "InvalidQueryParameterValue",
            "prevsnapshot is not emulated for managed disks; use x-ms-previous-snapshot-url.",
        )
    wanted = _range(request, size) or (0, size - 1)
    if wanted[0] % PAGE or (wanted[1] + 1) % PAGE:
        raise StorageError(400, "InvalidPageRange", "The page range specified is invalid.")
    limit = emu.limits.page_ranges_per_response
    if "maxresults" in request.query:
        try:
            asked = int(request.query["maxresults"])
        except ValueError:
            asked = 0
        if asked <= 0:
            raise StorageError(
                400, "OutOfRangeQueryParameterValue", "maxresults must be greater than zero."
            )
        limit = min(limit, asked)
    start_at = _marker(request.query.get("marker"))
    previous_url = request.headers.get("x-ms-previous-snapshot-url")
    if previous_url:
        previous = _previous(request, previous_url, target)
        ranges = target.content.diff(previous.content, wanted[0], wanted[1])
    else:
        ranges = target.content.valid_ranges(wanted[0], wanted[1])
    first = bisect.bisect_left([r.start for r in ranges], start_at)
    page = ranges[first : first + limit + 1]
    next_marker = _encode_marker(page[limit].start) if len(page) > limit else None
    headers = _headers(request, target)
    headers["x-ms-blob-content-length"] = str(size)
    return web.Response(
        body=_ranges_xml(page[:limit], next_marker),
        content_type="application/xml",
        headers=headers,
    )


async def put_page(request: web.Request, grant: AccessGrant) -> web.Response:
    target = grant.target
    assert isinstance(target, Disk)
    size = target.content.size
    mode = request.headers.get("x-ms-page-write", "").lower()
    if mode not in {"update", "clear"}:
        raise StorageError(400, "InvalidHeaderValue", "x-ms-page-write must be update or clear.")
    start, end = _requested_range(request) or (0, None)
    if end is None:
        raise StorageError(400, "MissingRequiredHeader", "x-ms-range with an end is required.")
    if start % PAGE or (end + 1) % PAGE or end >= size:
        raise StorageError(416, "InvalidPageRange", "The page range specified is invalid.")
    length = end - start + 1
    if mode == "update" and length > MAX_PAGE_WRITE:
        # As Azure: an update holds at most 4 MiB; a clear may span the whole blob.
        raise StorageError(413, "RequestBodyTooLarge", "A page write may hold at most 4 MiB.")
    headers = _headers(request, target)
    _check_if_match(request, headers["ETag"])
    data = await request.read()
    if mode == "update":
        if len(data) != length:
            raise StorageError(
                400, "InvalidHeaderValue", "The body length does not match the range."
            )
        if request.get("corrupt"):
            # An injected silent corruption (fault action ``corrupt``): accepted as written,
            # stored with its first byte flipped.
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        target.content.write(start, data)
    else:
        if data:
            raise StorageError(400, "InvalidHeaderValue", "A clear carries no body.")
        target.content.clear(start, length)
    target.content.modified = request.app[EMULATOR].clock.now()
    headers = _headers(request, target)
    headers.update({"x-ms-blob-sequence-number": "0", "x-ms-request-server-encrypted": "true"})
    return web.Response(status=201, headers=headers)


async def handle(request: web.Request) -> web.StreamResponse:
    method = request.method
    comp = request.query.get("comp")
    if method == "HEAD" and comp is None:
        return await properties(request, _grant(request, write=False))
    if method == "GET" and comp is None:
        return await read(request, _grant(request, write=False))
    if method == "GET" and comp == "pagelist":
        return await page_ranges(request, _grant(request, write=False))
    if method == "PUT" and comp == "page":
        return await put_page(request, _grant(request, write=True))
    if method in {"GET", "HEAD", "PUT"}:
        raise StorageError(
            400,
            "InvalidQueryParameterValue",
            f"comp={comp} is not emulated on managed disk SAS URLs.",
        )
    raise StorageError(
        405, "UnsupportedHttpVerb", "The resource doesn't support specified Http Verb."
    )


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", f"/{{account:{ACCOUNT_PATTERN}}}/{{container}}/{{blob}}", handle)
