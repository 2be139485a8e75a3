"""The master target service: an aiohttp HTTPS server (mutual TLS) in front of one
:class:`~failback.dataplane.journal.Journal` per consistency group.

The API is ``docs/master-target-api.md``. Journals are not thread-safe and block on fsync:
each group has an ``asyncio.Lock`` and every journal call runs in a worker thread under it.
Health answers from a snapshot refreshed after every change, so it never waits for a batch.

Groups come from the flags and from ``<retention-dir>/groups.json`` (:mod:`.groups`) at
startup, and from ``PUT /v1/groups/{group}`` at run time. What changes the set of groups or
the file (``PUT``, ``DELETE``, release) runs under one more lock, the registry's, taken
before the group's; the file is written before the answer, so an acknowledged release
survives a crash and its disks are never opened again until the group is taken back.

Errors answer ``{"error": {"code", "message"}}`` with a specific status::

    400 bad_json | invalid_field | malformed_frame | bad_compression
                                                        the request itself is malformed
    404 unknown_group | unknown_point | not_found       nothing by that name
    409 sequence_gap | point_order | cycle_open | group_released
    409 group_conflict | disk_in_use | disk_not_found | disk_too_small | group_active
                                                        PUT and DELETE of a group
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
import errno
import fcntl
import logging
import os
import shutil
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
from failback.dataplane.journal.store import fsync_dir
from failback.dataplane.mt import groups, logs, volume
from failback.dataplane.mt.config import MasterTargetConfig
from failback.dataplane.mt.groups import (
    DISK_RE,
    MAX_DISKS,
    DiskRecord,
    GroupRecord,
    GroupsFileError,
    disk_key,
)
from failback.dataplane.mt.resolver import DatastoreResolver, ResolveError, disk_uuid_hex
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
TRASH_PREFIX = ".deleting-"
"""A deleted group's journal directory is renamed so before it is removed (a group name
never starts with a dot); one left by a crash is removed at the next start."""


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
    recorded: bool = False
    """In the groups file: registered by ``PUT``, or released."""
    sizes: dict[str, int] = field(default_factory=dict)
    """The size of each disk the file records: ``PUT``'s ``sizeBytes``, or the disk's own
    when a ``--group`` group was released."""

    def require(self) -> Journal:
        if self.released or self.journal is None:
            raise ApiError(
                409,
                "group_released",
                f"group {self.name!r} was released: its disks are closed and may be attached "
                "elsewhere; once they are attached to this VM again, PUT /v1/groups/"
                f"{self.name} with the same disks takes them back",
            )
        return self.journal


class DiskProblem(Exception):
    """A disk a group needs cannot be used: ``disk_not_found`` or ``disk_too_small``
    (409 to a ``PUT``, a startup error for a group of the groups file)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(frozen=True)
class Opened:
    """A group's disks and journal, opened in a worker thread."""

    files: dict[str, FileDisk]
    journal: Journal
    real: dict[str, Path]
    """Each disk's path with symbolic links resolved (two ids, one device: refused)."""

    def close(self) -> None:
        self.journal.close()
        for disk in self.files.values():
            disk.close()


def _device_size(path: Path) -> int:
    """Bytes of a flat file or a block device (whose ``st_size`` is 0)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _extend(path: Path, size: int) -> None:
    """Make a flat file ``size`` bytes long (zeros at the end), durably."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _released_snapshot(name: str, record: GroupRecord) -> dict[str, Any]:
    """What a group released before this start answers: the status it had when released
    (from the groups file), or an empty one if the file kept none."""
    base: dict[str, Any] = {
        "lastDurableSeq": 0,
        "cycleOpen": False,
        "pointCount": 0,
        "newestPoint": None,
        "oldestPoint": None,
        "rpoSourceTime": None,
        "journalUsedBytes": 0,
        "journalCapacityBytes": 0,
        "journalAvailableBytes": 0,
        "points": [],
    }
    return {
        **base,
        **(record.status or {}),
        "name": name,
        "state": "released",
        "disks": list(record.disk_ids),
    }


class MasterTargetService:
    def __init__(self, config: MasterTargetConfig, logger: logging.Logger | None = None) -> None:
        self.config = config
        self.log = logger or logging.getLogger(logs.LOGGER)
        self.groups: dict[str, Group] = {}
        self.sizes: dict[str, int] = {}
        """Each opened disk's size in bytes (kept after a release)."""
        self.paths: dict[str, Path] = {}
        """Where each opened disk was found (kept after a release)."""
        self.real: dict[str, Path] = {}
        self.registry = asyncio.Lock()
        """Held while the set of groups or the groups file changes (before a group's lock)."""
        self._saved: bytes | None = None
        self._dir_fd = -1
        self._jconfig = JournalConfig(
            retention=config.retention,
            capacity_bytes=config.capacity_bytes,
            open_cycle="resume",
            first_cycle="direct" if config.first_cycle == "direct" else "journal",
        )

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Open every group of the flags and of the groups file, except the released ones
        (recovering each journal), then lock the retention directory for this process."""
        directory = self.config.retention_dir
        directory.mkdir(parents=True, exist_ok=True)
        try:
            records = groups.load(directory)
        except GroupsFileError as exc:
            raise StartupError(f"{exc}; fix or remove it") from exc
        for group in self._merge(records):
            self.groups[group.name] = group
            if group.released:
                logs.event(self.log, logging.INFO, "group stays released", group=group.name)
                continue
            try:
                opened = self._open_disks(group.name, group.disk_ids, group.sizes)
            except (JournalError, OSError, DiskProblem) as exc:
                self.close()
                raise StartupError(f"group {group.name}: {exc}") from exc
            self._take(group, opened)
        self._lock_directory()
        self._sweep()

    def _merge(self, records: Mapping[str, GroupRecord]) -> list[Group]:
        """The flags' groups (in their order), then the file's others; a group in both
        must have the same disks, and a disk may be in one group only."""
        where = groups.path_of(self.config.retention_dir)
        merged: list[Group] = []
        for name, disk_ids in self.config.groups.items():
            record = records.get(name)
            if record is not None and set(record.disk_ids) != set(disk_ids):
                raise StartupError(
                    f"group {name}: the flags (--group/--disk) give it disks "
                    f"{', '.join(disk_ids)} but {where} records {', '.join(record.disk_ids)}: "
                    "give the same disks, or release and DELETE the group before changing them"
                )
            merged.append(self._group_of(name, disk_ids, record))
        for name, record in records.items():
            if name not in self.config.groups:
                merged.append(self._group_of(name, record.disk_ids, record))
        owner: dict[str, str] = {}
        for group in merged:
            for disk_id in group.disk_ids:
                other = owner.setdefault(disk_key(disk_id), group.name)
                if other != group.name:
                    raise StartupError(
                        f"disk {disk_id} is in group {other} and in group {group.name} (flags "
                        f"and {where}): a disk belongs to one group"
                    )
        return merged

    @staticmethod
    def _group_of(name: str, disk_ids: Sequence[str], record: GroupRecord | None) -> Group:
        group = Group(name, tuple(disk_ids))
        if record is not None:
            group.recorded = True
            group.sizes = {d.id: d.size_bytes for d in record.disks}
            if record.released:
                group.released = True
                group.snapshot = _released_snapshot(name, record)
        return group

    def _lock_directory(self) -> None:
        """One service per retention directory: the groups file has one writer."""
        directory = self.config.retention_dir
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            self.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(
                    f"--retention-dir {directory} is in use by another master target"
                ) from exc
            raise StartupError(f"cannot lock --retention-dir {directory}: {exc}") from exc
        self._dir_fd = fd

    def _sweep(self) -> None:
        """Remove what a crash left of deleted groups' journals."""
        directory = self.config.retention_dir
        leftovers = [p for p in directory.glob(f"{TRASH_PREFIX}*") if p.is_dir()]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
            logs.event(self.log, logging.INFO, "deleted journal removed", path=str(path))
        if leftovers:
            fsync_dir(directory)

    def _locate(self, disk_id: str) -> tuple[Path, bool]:
        """Where ``disk_id`` is: its ``--disk ID=PATH`` (or the path the flags' UUID was
        found at), else what ``--disk-resolver`` finds; and whether the resolver found it."""
        given = self.config.disks.get(disk_id)
        if given is not None:
            return given, False
        resolver = self.config.resolver
        if disk_uuid_hex(disk_id) is None:
            raise DiskProblem(
                "disk_not_found",
                f"disk {disk_id!r} is no --disk of this service, and not a disk UUID for "
                f"--disk-resolver {resolver} to find",
                diskId=disk_id,
            )
        try:
            return resolver.resolve(disk_id), True
        except ResolveError as exc:
            raise DiskProblem(
                "disk_not_found", f"{exc} (--disk-resolver {resolver})", diskId=disk_id
            ) from exc

    def _fit(self, disk_id: str, path: Path, want: int | None, by_resolver: bool) -> None:
        """Check that the disk holds ``want`` bytes. The test bed's exception: a flat file
        the ``datastore:`` resolver found is extended to ``want`` (vcsim creates them
        empty; their capacity lives only in its inventory)."""
        try:
            size = _device_size(path)
        except FileNotFoundError as exc:
            raise DiskProblem(
                "disk_not_found", f"disk {disk_id}: {path}: no such file or device", diskId=disk_id
            ) from exc
        if want is None or size >= want:
            return
        testbed = isinstance(self.config.resolver, DatastoreResolver) and by_resolver
        if testbed and path.is_file():
            _extend(path, want)
            logs.event(
                self.log,
                logging.INFO,
                "test bed: flat file extended",
                disk=disk_id,
                path=str(path),
                fromBytes=size,
                toBytes=want,
            )
            return
        raise DiskProblem(
            "disk_too_small",
            f"disk {disk_id} ({path}) holds {size} bytes, less than its sizeBytes {want}",
            diskId=disk_id,
            sizeBytes=want,
            diskSizeBytes=size,
        )

    def _open_disks(
        self,
        name: str,
        disk_ids: Sequence[str],
        want: Mapping[str, int],
        taken: Mapping[Path, tuple[str, str]] | None = None,
    ) -> Opened:
        """Find, check and open a group's disks and its journal (recovering it). Blocks:
        run it in a worker thread once the service runs. ``taken``: the devices other
        groups' disks are on (``disk_in_use``)."""
        files: dict[str, FileDisk] = {}
        real: dict[str, Path] = {}
        try:
            for disk_id in disk_ids:
                path, by_resolver = self._locate(disk_id)
                real[disk_id] = path.resolve()
                owner = (taken or {}).get(real[disk_id])
                if owner is not None:
                    raise DiskProblem(
                        "disk_in_use",
                        f"disk {disk_id} is {real[disk_id]}, which is disk {owner[1]} of group "
                        f"{owner[0]!r}: a disk belongs to one group",
                        diskId=disk_id,
                        group=owner[0],
                    )
                self._fit(disk_id, path, want.get(disk_id), by_resolver)
                files[disk_id] = FileDisk(path)
            journal = Journal.open(self.config.retention_dir / name, files, self._jconfig)
        except BaseException:
            for disk in files.values():
                disk.close()
            raise
        return Opened(files, journal, real)

    def _take(self, group: Group, opened: Opened) -> None:
        """Make ``group`` active on what :meth:`_open_disks` opened."""
        group.files, group.journal, group.released = opened.files, opened.journal, False
        for disk_id, disk in opened.files.items():
            self.paths[disk_id] = disk.path
            self.sizes[disk_id] = disk.size()
            self.real[disk_id] = opened.real[disk_id]
        report = opened.journal.report
        logs.event(
            self.log,
            logging.WARNING if report.damage else logging.INFO,
            "journal opened",
            group=group.name,
            lastDurableSeq=opened.journal.last_durable_seq,
            points=len(opened.journal.points()),
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
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

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

    # ------------------------------------------------------------------ the groups file

    def _record(self, group: Group) -> GroupRecord:
        return GroupRecord(
            disks=tuple(
                DiskRecord(d, group.sizes.get(d, self.sizes.get(d, 0))) for d in group.disk_ids
            ),
            released=group.released,
            status=dict(group.snapshot) if group.released else None,
        )

    async def _save(self, *, drop: str | None = None) -> None:
        """Write the groups file if what it should say changed (registry lock held)."""
        records = {
            g.name: self._record(g) for g in self.groups.values() if g.recorded and g.name != drop
        }
        data = groups.encode(records)
        if data == self._saved:
            return
        try:
            await _finish(groups.save, self.config.retention_dir, data)
        except OSError as exc:
            raise ApiError(
                500,
                "io_error",
                f"cannot write {groups.path_of(self.config.retention_dir)}: {exc}; "
                "the change is not recorded: retry",
            ) from exc
        self._saved = data

    def _status(self, group: Group) -> dict[str, Any]:
        """``GET /v1/groups/{group}``: the snapshot without its points."""
        state = dict(group.snapshot)
        state.pop("points", None)
        return state

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
        r.add_put("/v1/groups/{group}", self.put_group)
        r.add_delete("/v1/groups/{group}", self.delete_group)
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
                f"no group {name!r} on this master target "
                f"(have: {', '.join(sorted(self.groups)) or 'none'})",
            )
        return group

    # ------------------------------------------------------------------ handlers

    async def health(self, request: web.Request) -> web.Response:
        info = await asyncio.to_thread(volume.inspect, self.config.retention_dir)
        states = [self._status(g) for g in self.groups.values()]
        newest = [g for g in states if g.get("newestPoint")]
        latest = max(newest, key=lambda g: g["newestPoint"]["sourceTime"], default=None)
        all_have = bool(states) and len(newest) == len(states)
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
                "journalUsedBytes": sum(g.get("journalUsedBytes", 0) for g in states),
                "newestPoint": (
                    {"group": latest["name"], **latest["newestPoint"]} if latest else None
                ),
                "rpoSourceTime": rpo,
                "disks": [
                    {
                        "id": disk_id,
                        "path": str(self.paths[disk_id]) if disk_id in self.paths else None,
                        "sizeBytes": self.sizes.get(disk_id, g.sizes.get(disk_id)),
                        "group": g.name,
                    }
                    for g in self.groups.values()
                    for disk_id in g.disk_ids
                ],
                "groups": states,
            }
        )

    async def group_state(self, request: web.Request) -> web.Response:
        return web.json_response(self._status(self._group(request)))

    async def put_group(self, request: web.Request) -> web.Response:
        """Register a group (201), or confirm it (200): taking a released one back."""
        name = request.match_info["group"]
        problem = groups.name_problem(name)
        if problem is not None:
            raise ApiError(400, "invalid_field", f"group: {problem}", field="group")
        wanted = self._wanted_disks(await httpkit.json_body(request))
        want = dict(wanted)
        async with self.registry:
            group = self.groups.get(name)
            if group is not None:
                return await self._confirm(group, want)
            disk_ids = tuple(want)
            for disk_id in disk_ids:
                self._require_free(name, disk_id)
            opened = await self._opening(name, disk_ids, want)
            group = Group(name, disk_ids, recorded=True, sizes=want)
            self.groups[name] = group
            self._take(group, opened)
            try:
                await self._save()
            except ApiError:
                await _finish(self._close_group, group)
                self._forget(group)
                raise
            logs.event(self.log, logging.INFO, "group created", group=name, disks=list(disk_ids))
            return web.json_response(self._status(group), status=201)

    async def _confirm(self, group: Group, want: dict[str, int]) -> web.Response:
        """``PUT`` of a group that exists: the same disks or 409 ``group_conflict``; a
        released group is opened again (the operator reattached its disks to this VM)."""
        if set(want) != set(group.disk_ids):
            raise ApiError(
                409,
                "group_conflict",
                f"group {group.name!r} exists with disks {', '.join(group.disk_ids)}, not "
                f"{', '.join(want)}: release and DELETE it before registering other disks",
                disks=list(group.disk_ids),
            )
        async with group.lock:
            if group.released:
                opened = await self._opening(group.name, group.disk_ids, want)
                self._take(group, opened)
                logs.event(self.log, logging.INFO, "group taken back", group=group.name)
            else:
                for disk_id, size in want.items():
                    if self.sizes[disk_id] < size:
                        raise ApiError(
                            409,
                            "disk_too_small",
                            f"disk {disk_id} ({self.paths[disk_id]}) holds "
                            f"{self.sizes[disk_id]} bytes, less than its sizeBytes {size}",
                            diskId=disk_id,
                            sizeBytes=size,
                            diskSizeBytes=self.sizes[disk_id],
                        )
            group.recorded, group.sizes = True, want
            await self._save()
            return web.json_response(self._status(group))

    def _wanted_disks(self, body: dict[str, Any]) -> list[tuple[str, int]]:
        """``{"disks": [{"id", "sizeBytes"}, ...]}``: 1..64 disks, each listed once."""
        disks = body.get("disks")
        if not isinstance(disks, list) or not 1 <= len(disks) <= MAX_DISKS:
            raise ApiError(
                400,
                "invalid_field",
                f"disks must be a list of 1 to {MAX_DISKS} disks {{id, sizeBytes}}",
                field="disks",
            )
        wanted: list[tuple[str, int]] = []
        seen: dict[str, int] = {}
        for i, disk in enumerate(disks):
            at = f"disks[{i}]"
            if not isinstance(disk, dict):
                raise ApiError(
                    400, "invalid_field", f"{at} must be an object {{id, sizeBytes}}", field=at
                )
            disk_id = disk.get("id")
            if (
                not isinstance(disk_id, str)
                or not DISK_RE.match(disk_id)
                or (disk_uuid_hex(disk_id) is None and disk_id not in self.config.disks)
            ):
                raise ApiError(
                    400,
                    "invalid_field",
                    f"{at}.id must be a disk UUID as vCenter reports it (like "
                    "6000C29a-1b2c-3d4e-5f60-718293a4b5c6), or the id of a --disk of this "
                    "service",
                    field=f"{at}.id",
                )
            size = disk.get("sizeBytes")
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % SECTOR:
                raise ApiError(
                    400,
                    "invalid_field",
                    f"{at}.sizeBytes must be a positive multiple of {SECTOR} (the disk's "
                    "capacity in bytes)",
                    field=f"{at}.sizeBytes",
                )
            first = seen.setdefault(disk_key(disk_id), i)
            if first != i:
                raise ApiError(
                    400,
                    "invalid_field",
                    f"{at}.id {disk_id!r} is disks[{first}] again: list each disk once",
                    field=f"{at}.id",
                )
            wanted.append((disk_id, size))
        return wanted

    def _require_free(self, name: str, disk_id: str) -> None:
        """409 ``disk_in_use`` when another group has the disk (released ones too: their
        disks are theirs until they are deleted)."""
        key = disk_key(disk_id)
        for other in self.groups.values():
            if other.name != name and any(disk_key(d) == key for d in other.disk_ids):
                state = " (released: DELETE it first)" if other.released else ""
                raise ApiError(
                    409,
                    "disk_in_use",
                    f"disk {disk_id} is in group {other.name!r}{state}: a disk belongs to "
                    "one group",
                    diskId=disk_id,
                    group=other.name,
                )

    async def _opening(self, name: str, disk_ids: Sequence[str], want: Mapping[str, int]) -> Opened:
        """:meth:`_open_disks` in a worker thread, its failures as answers."""
        taken = {
            self.real[d]: (g.name, d)
            for g in self.groups.values()
            if g.name != name
            for d in g.disk_ids
            if d in self.real
        }
        work = asyncio.ensure_future(
            asyncio.to_thread(self._open_disks, name, disk_ids, want, taken)
        )
        try:
            opened: Opened = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The request went away: what the thread opened must not stay locked.
            with contextlib.suppress(Exception):
                (await work).close()
            raise
        except DiskProblem as exc:
            raise ApiError(409, exc.code, exc.message, **exc.extra) from exc
        except JournalCorrupt as exc:
            raise ApiError(500, "journal_corrupt", f"group {name!r}: {exc}") from exc
        except (JournalError, OSError) as exc:
            raise ApiError(
                500, "io_error", f"group {name!r}: {exc.__class__.__name__}: {exc}"
            ) from exc
        return opened

    async def delete_group(self, request: web.Request) -> web.Response:
        """Forget a released group: its journal (its recovery points) and its entry."""
        async with self.registry:
            group = self._group(request)
            async with group.lock:
                if not group.released:
                    raise ApiError(
                        409,
                        "group_active",
                        f"group {group.name!r} is active: release it first (POST "
                        f"/v1/groups/{group.name}/release), so its disks hold a point and "
                        "are closed",
                    )
                try:
                    trash = await _finish(self._trash, group.name)
                except OSError as exc:
                    raise ApiError(500, "io_error", f"{exc.__class__.__name__}: {exc}") from exc
                await self._save(drop=group.name)
                self._forget(group)
                if trash is not None:
                    await _finish(self._purge, trash)
                logs.event(self.log, logging.INFO, "group deleted", group=group.name)
                return web.json_response({"group": group.name, "deleted": True})

    def _forget(self, group: Group) -> None:
        del self.groups[group.name]
        for disk_id in group.disk_ids:
            for known in (self.sizes, self.paths, self.real):
                known.pop(disk_id, None)

    def _trash(self, name: str) -> Path | None:
        """Rename the group's journal directory out of the way (durably): from here on a
        group of that name starts with an empty journal."""
        directory = self.config.retention_dir
        journal, trash = directory / name, directory / f"{TRASH_PREFIX}{name}"
        if trash.exists():
            shutil.rmtree(trash)
        if not journal.exists():
            return None
        journal.rename(trash)
        fsync_dir(directory)
        return trash

    def _purge(self, trash: Path) -> None:
        """Remove a renamed journal directory; what a crash leaves, the next start does."""
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            fsync_dir(trash.parent)

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
        group.require()  # before reading a body that a released group would refuse
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
        async with self.registry:
            group = self._group(request)
            async with group.lock:
                return await self._release(group)

    async def _release(self, group: Group) -> web.Response:
        """Close the group's disks, then record it released before answering: a restart
        must not open disks that may be attached to a recovered VM by then."""
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
        group.recorded = True
        for disk_id in group.disk_ids:
            group.sizes.setdefault(disk_id, self.sizes.get(disk_id, 0))
        await self._save()
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
            disks={d: str(p) for d, p in self.paths.items()},
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
