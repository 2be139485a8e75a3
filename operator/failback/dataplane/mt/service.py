"""The master target service: an aiohttp HTTPS server (mutual TLS) in front of one
:class:`~failback.dataplane.journal.Journal` per consistency group.

The API is ``docs/master-target-api.md``. Journals are not thread-safe and block on fsync:
each group has an ``asyncio.Lock`` and every journal call runs in a worker thread under it.
Health answers from a snapshot refreshed after every change, so it never waits for a batch.

Errors answer ``{"error": {"code", "message"}}`` with a specific status::

    400 bad_json | invalid_field | malformed_frame | bad_compression
                                                        the request itself is malformed
    404 unknown_group | unknown_point | not_found       nothing by that name
    409 sequence_gap | point_order | cycle_open | group_released
    413 batch_too_large (on the wire, or once decompressed)
    415 unsupported_media_type | unsupported_encoding
    422 unknown_disk | extent_out_of_range | extent_misaligned | extent_too_long |
        checksum_mismatch | invalid_extent              the batch can never be applied as sent
    507 retention_volume_full                           nothing of the cycle or batch written
    500 journal_corrupt | io_error | internal_error
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from failback import __version__
from failback.api import format_time
from failback.dataplane import httpkit
from failback.dataplane.httpkit import ApiError, StartupError
from failback.dataplane.journal import (
    MAX_EXTENT,
    SECTOR,
    Batch,
    FileDisk,
    InvalidExtent,
    Journal,
    JournalConfig,
    JournalCorrupt,
    JournalError,
    PointOrderError,
    RecoveryPoint,
    RetentionVolumeFull,
    SequenceError,
    SourceChecksumMismatch,
    UnknownRecoveryPoint,
    extent_checksum,
)
from failback.dataplane.mt import logs, volume
from failback.dataplane.mt.config import MasterTargetConfig
from failback.dataplane.mt.wire import (
    ENCODINGS,
    IDENTITY,
    MEDIA_TYPE,
    ZSTD,
    CompressionError,
    DecompressedTooLarge,
    FrameError,
    decode_batch,
    decompress_body,
)

BATCH_TYPES = (MEDIA_TYPE, "application/octet-stream")
MAX_JSON = 64 << 10


def _point_json(p: RecoveryPoint) -> dict[str, Any]:
    return {
        "id": p.point_id,
        "sourceTime": format_time(p.source_time),
        "appConsistent": p.app_consistent,
        "lastSeq": p.seq,
        "disks": list(p.disks),
        "restorable": p.restorable,
    }


@dataclass
class Group:
    """One consistency group: its disks, its journal and what health reports about it."""

    name: str
    disk_ids: tuple[str, ...]
    journal: Journal | None = None
    files: dict[str, FileDisk] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    released: bool = False
    snapshot: dict[str, Any] = field(default_factory=dict)

    def require(self) -> Journal:
        if self.released or self.journal is None:
            raise ApiError(
                409,
                "group_released",
                f"group {self.name!r} was released: its disks are closed and may be attached "
                "elsewhere; restart the service to take them again",
            )
        return self.journal


class MasterTargetService:
    def __init__(self, config: MasterTargetConfig, logger: logging.Logger | None = None) -> None:
        self.config = config
        self.log = logger or logging.getLogger(logs.LOGGER)
        self.groups = {name: Group(name, disks) for name, disks in config.groups.items()}
        self.sizes: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Open every disk and every group's journal (recovering it)."""
        jconfig = JournalConfig(
            retention=self.config.retention,
            capacity_bytes=self.config.capacity_bytes,
            open_cycle="resume",
            first_cycle="direct" if self.config.first_cycle == "direct" else "journal",
        )
        self.config.retention_dir.mkdir(parents=True, exist_ok=True)
        for group in self.groups.values():
            try:
                for disk_id in group.disk_ids:
                    disk = FileDisk(self.config.disks[disk_id])
                    group.files[disk_id] = disk
                    self.sizes[disk_id] = disk.size()
                group.journal = Journal.open(
                    self.config.retention_dir / group.name, group.files, jconfig
                )
            except (JournalError, OSError) as exc:
                self.close()
                raise StartupError(f"group {group.name}: {exc}") from exc
            report = group.journal.report
            logs.event(
                self.log,
                logging.WARNING if report.damage else logging.INFO,
                "journal opened",
                group=group.name,
                lastDurableSeq=group.journal.last_durable_seq,
                points=len(group.journal.points()),
                tornBytes=report.torn_bytes,
                rollbackResumed=report.rollback_resumed,
                recordsRolledBack=report.cycle_rolled_back,
                recordsResumed=report.cycle_resumed,
                damage=[str(d) for d in report.damage],
            )
            self._refresh(group)

    def close(self) -> None:
        for group in self.groups.values():
            self._close_group(group)

    def _close_group(self, group: Group) -> None:
        if group.journal is not None:
            group.journal.close()
            group.journal = None
        for disk in group.files.values():
            with contextlib.suppress(OSError):
                disk.fsync()
            disk.close()
        group.files.clear()

    def _refresh(self, group: Group) -> None:
        """Recompute what health says about ``group`` (call with its lock held)."""
        journal = group.journal
        if journal is None:
            group.snapshot = {**group.snapshot, "state": "released"}
            return
        points = journal.points()
        space = journal.space()
        newest = points[-1] if points else None
        group.snapshot = {
            "name": group.name,
            "state": "active",
            "disks": list(group.disk_ids),
            "lastDurableSeq": journal.last_durable_seq,
            "cycleOpen": journal.cycle_open,
            "pointCount": len(points),
            "newestPoint": _point_json(newest) if newest else None,
            "oldestPoint": _point_json(points[0]) if points else None,
            "rpoSourceTime": format_time(newest.source_time) if newest else None,
            "journalUsedBytes": space.used_bytes,
            "journalCapacityBytes": space.capacity_bytes,
            "journalAvailableBytes": space.available_bytes,
            "points": [_point_json(p) for p in points],
        }

    # ------------------------------------------------------------------ HTTP plumbing

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                httpkit.error_middleware(
                    self.log,
                    {
                        413: f"the body is larger than {self.config.max_batch_bytes} bytes; "
                        "split the batch",
                    },
                    codes={413: "batch_too_large"},
                )
            ],
            client_max_size=self.config.max_batch_bytes + (1 << 20),
        )
        r = app.router
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/groups/{group}", self.group_state)
        r.add_post("/v1/groups/{group}/cycles", self.begin_cycle)
        r.add_post("/v1/groups/{group}/batches", self.apply_batch)
        r.add_post("/v1/groups/{group}/points", self.commit_point)
        r.add_get("/v1/groups/{group}/points", self.list_points)
        r.add_post("/v1/groups/{group}/rollback", self.rollback)
        r.add_post("/v1/groups/{group}/release", self.release)
        return app

    def _group(self, request: web.Request) -> Group:
        name = request.match_info["group"]
        group = self.groups.get(name)
        if group is None:
            raise ApiError(
                404,
                "unknown_group",
                f"no group {name!r} on this master target (have: {', '.join(sorted(self.groups))})",
            )
        return group

    # ------------------------------------------------------------------ handlers

    async def health(self, request: web.Request) -> web.Response:
        info = await asyncio.to_thread(volume.inspect, self.config.retention_dir)
        groups = [dict(g.snapshot) for g in self.groups.values()]
        for g in groups:
            g.pop("points", None)
        newest = [g for g in groups if g.get("newestPoint")]
        latest = max(newest, key=lambda g: g["newestPoint"]["sourceTime"], default=None)
        all_have = bool(groups) and len(newest) == len(groups)
        rpo = min((g["rpoSourceTime"] for g in newest), default=None) if all_have else None
        return web.json_response(
            {
                "version": __version__,
                "heartbeat": format_time(dt.datetime.now(dt.UTC).replace(microsecond=0)),
                "retentionVolume": {
                    "path": info.path,
                    "mountPoint": info.mount_point,
                    "fileSystem": info.file_system,
                    "capacityBytes": info.capacity_bytes,
                    "freeBytes": info.free_bytes,
                    "writable": info.writable,
                    "sharesInstallVolume": info.shares_install_volume,
                },
                "journalUsedBytes": sum(g.get("journalUsedBytes", 0) for g in groups),
                "newestPoint": (
                    {"group": latest["name"], **latest["newestPoint"]} if latest else None
                ),
                "rpoSourceTime": rpo,
                "disks": [
                    {
                        "id": disk_id,
                        "path": str(path),
                        "sizeBytes": self.sizes.get(disk_id),
                        "group": self.config.group_of(disk_id),
                    }
                    for disk_id, path in self.config.disks.items()
                ],
                "groups": groups,
            }
        )

    async def group_state(self, request: web.Request) -> web.Response:
        group = self._group(request)
        state = dict(group.snapshot)
        state.pop("points", None)
        return web.json_response(state)

    async def begin_cycle(self, request: web.Request) -> web.Response:
        group = self._group(request)
        body = await httpkit.json_body(request)
        changed = httpkit.int_field(body, "changedBytes")
        extents = httpkit.int_field(body, "extents", required=False)
        async with group.lock:
            journal = group.require()
            await self._call(group, journal.begin_cycle, changed_bytes=changed, extents=extents)
            space = journal.space()
            return web.json_response(
                {
                    "group": group.name,
                    "lastDurableSeq": journal.last_durable_seq,
                    "journalAvailableBytes": space.available_bytes,
                }
            )

    async def apply_batch(self, request: web.Request) -> web.Response:
        group = self._group(request)
        if request.content_type not in BATCH_TYPES:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"send Content-Type: {MEDIA_TYPE}, not {request.content_type!r}",
            )
        encoding = request.headers.get("Content-Encoding", "").strip().lower() or IDENTITY
        if encoding not in ENCODINGS:
            raise ApiError(
                415,
                "unsupported_encoding",
                f"Content-Encoding {encoding!r} is not supported: send the batch with "
                f"Content-Encoding {' or '.join(ENCODINGS)} (or none, meaning identity)",
            )
        length = request.content_length
        if length is not None and length > self.config.max_batch_bytes:
            raise ApiError(
                413,
                "batch_too_large",
                f"{length} bytes is more than {self.config.max_batch_bytes}; split the batch",
            )
        body = await request.read()
        request["encoding"], request["wireBytes"] = encoding, len(body)
        batch = await asyncio.to_thread(self._decode_and_check, group, body, encoding)
        async with group.lock:
            journal = group.require()
            last = journal.last_durable_seq
            if batch.seq <= last:
                return web.json_response(
                    {"group": group.name, "lastDurableSeq": last, "applied": False}
                )
            if batch.seq != last + 1:
                raise ApiError(
                    409,
                    "sequence_gap",
                    f"batch {batch.seq} after {last}: batches {last + 1}..{batch.seq - 1} are "
                    f"missing; resend from {last + 1}",
                    lastDurableSeq=last,
                )
            durable = await self._call(group, journal.apply, batch)
            return web.json_response(
                {"group": group.name, "lastDurableSeq": durable, "applied": True}
            )

    def _decode_and_check(self, group: Group, body: bytes, encoding: str) -> Batch:
        """Decode ``body`` and refuse it before anything is written if any extent is bad."""
        if encoding == ZSTD:
            limit = self.config.max_batch_bytes
            try:
                body = decompress_body(body, limit)
            except DecompressedTooLarge as exc:
                raise ApiError(
                    413, "batch_too_large", f"{exc}; split the batch; nothing written"
                ) from exc
            except CompressionError as exc:
                raise ApiError(
                    400,
                    "bad_compression",
                    f"Content-Encoding zstd, but {exc}; send one complete zstd frame; "
                    "nothing written",
                ) from exc
        try:
            batch = decode_batch(body)
        except FrameError as exc:
            raise ApiError(400, "malformed_frame", str(exc), byteOffset=exc.offset) from exc
        if batch.seq < 1:
            raise ApiError(400, "malformed_frame", "the batch sequence number must be >= 1")
        for index, ext in enumerate(batch.extents):
            where = f"extent {index} ({ext.disk_id}@{ext.offset}+{ext.length}) of batch {batch.seq}"
            if ext.disk_id not in group.disk_ids:
                raise ApiError(
                    422,
                    "unknown_disk",
                    f"{where}: disk {ext.disk_id!r} is not in group {group.name!r} "
                    f"(its disks: {', '.join(group.disk_ids)}); nothing written",
                )
            if ext.offset % SECTOR or ext.length % SECTOR or ext.length == 0:
                raise ApiError(
                    422,
                    "extent_misaligned",
                    f"{where}: offset and length must be non-zero multiples of {SECTOR}; "
                    "nothing written",
                )
            if ext.length > MAX_EXTENT:
                raise ApiError(
                    422,
                    "extent_too_long",
                    f"{where}: at most {MAX_EXTENT} bytes per extent; split it; nothing written",
                )
            size = self.sizes[ext.disk_id]
            if ext.offset + ext.length > size:
                raise ApiError(
                    422,
                    "extent_out_of_range",
                    f"{where}: ends at {ext.offset + ext.length}, beyond the end of the disk "
                    f"({size} bytes); nothing written",
                )
            if ext.data is not None and extent_checksum(ext.data) != ext.checksum:
                raise ApiError(
                    422,
                    "checksum_mismatch",
                    f"{where}: the data does not match its source checksum "
                    f"{ext.checksum:016x}; batch refused, nothing written",
                )
        return batch

    async def commit_point(self, request: web.Request) -> web.Response:
        group = self._group(request)
        body = await httpkit.json_body(request)
        point_id = httpkit.str_field(body, "id")
        when = httpkit.time_field(body, "sourceTime")
        app_consistent = body.get("appConsistent", False)
        if not isinstance(app_consistent, bool):
            raise ApiError(400, "invalid_field", "appConsistent must be true or false")
        async with group.lock:
            journal = group.require()
            points = journal.points()
            resend = bool(points) and points[-1].point_id == point_id and not journal.cycle_open
            point = await self._call(group, journal.commit_point, point_id, when, app_consistent)
            logs.event(
                self.log,
                logging.INFO,
                "recovery point committed",
                group=group.name,
                point=point.point_id,
                sourceTime=format_time(point.source_time),
                appConsistent=point.app_consistent,
                lastSeq=point.seq,
                resend=resend,
            )
            return web.json_response(
                {"group": group.name, "point": _point_json(point)}, status=200 if resend else 201
            )

    async def list_points(self, request: web.Request) -> web.Response:
        group = self._group(request)
        return web.json_response({"group": group.name, "points": group.snapshot.get("points", [])})

    async def rollback(self, request: web.Request) -> web.Response:
        group = self._group(request)
        body = await httpkit.json_body(request)
        point_id = httpkit.str_field(body, "pointId")
        async with group.lock:
            journal = group.require()
            point = await self._call(group, journal.roll_to, point_id)
            logs.event(
                self.log, logging.INFO, "rolled back", group=group.name, point=point.point_id
            )
            return web.json_response(
                {
                    "group": group.name,
                    "point": _point_json(point),
                    "lastDurableSeq": journal.last_durable_seq,
                }
            )

    async def release(self, request: web.Request) -> web.Response:
        group = self._group(request)
        async with group.lock:
            if not group.released:
                journal = group.require()
                if journal.cycle_open:
                    raise ApiError(
                        409,
                        "cycle_open",
                        f"group {group.name!r} has batches after its newest point (up to "
                        f"{journal.last_durable_seq}): commit a point or roll back to one "
                        "before releasing, so the disks hold a recovery point",
                    )
                await _finish(self._close_group, group)
                group.released = True
                self._refresh(group)
                logs.event(self.log, logging.INFO, "group released", group=group.name)
            newest = group.snapshot.get("newestPoint")
            return web.json_response({"group": group.name, "released": True, "point": newest})

    async def _call(self, group: Group, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a journal call in a thread, map its errors, refresh the group's snapshot."""
        try:
            return await _finish(fn, *args, **kwargs)
        except RetentionVolumeFull as exc:
            logs.event(
                self.log,
                logging.ERROR,
                "retention volume full",
                group=group.name,
                neededBytes=exc.needed,
                availableBytes=exc.available,
            )
            raise ApiError(
                507,
                "retention_volume_full",
                str(exc),
                neededBytes=exc.needed,
                availableBytes=exc.available,
            ) from exc
        except SequenceError as exc:
            raise ApiError(409, "sequence_gap", str(exc)) from exc
        except PointOrderError as exc:
            raise ApiError(409, "point_order", str(exc)) from exc
        except UnknownRecoveryPoint as exc:
            raise ApiError(404, "unknown_point", str(exc)) from exc
        except SourceChecksumMismatch as exc:
            raise ApiError(422, "checksum_mismatch", str(exc)) from exc
        except InvalidExtent as exc:
            raise ApiError(422, "invalid_extent", str(exc)) from exc
        except JournalCorrupt as exc:
            raise ApiError(500, "journal_corrupt", str(exc)) from exc
        except OSError as exc:
            raise ApiError(500, "io_error", f"{exc.__class__.__name__}: {exc}") from exc
        finally:
            if group.journal is not None:
                self._refresh(group)

    # ------------------------------------------------------------------ running

    async def run(self, context: ssl.SSLContext) -> None:
        await httpkit.run_until_signalled(
            self.app(),
            self.config.host,
            self.config.port,
            context,
            self.log,
            groups={g.name: list(g.disk_ids) for g in self.groups.values()},
            disks={d: str(p) for d, p in self.config.disks.items()},
            retentionDir=str(self.config.retention_dir),
            version=__version__,
        )


async def _finish(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in a worker thread; if the request is cancelled, still wait for it.

    The caller holds its group's lock: releasing it while the thread still writes the
    journal would let a second call into a journal that is not thread-safe.
    """
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


def serve(config: MasterTargetConfig, *, verbose: bool = False) -> int:
    """Run the service until SIGTERM/SIGINT; raises :class:`StartupError` if it cannot start."""
    logger = logs.configure(verbose)
    context = httpkit.server_context(config.cert, config.key, config.client_ca)
    service = MasterTargetService(config, logger)
    service.open()
    try:
        asyncio.run(service.run(context))
    finally:
        service.close()
    return 0
