"""Replication cycles of managed disks: incremental snapshot → SAS → page-range diff → extents.

One cycle of one disk::

    take_snapshot()        an incremental snapshot (deterministic name: a crash resumes the
                           same one, never a second write); paced below 7 per 5 min
    open_cycle()           grants read SAS on it (and on the base), decides the mode:
                             INITIAL       no base yet: Get Page Ranges, allocated ranges only
                             INCREMENTAL   diff against the base: written + cleared ranges
                             FULL_RESYNC   base gone or disk resized across 4 TiB: every
                                           allocated range, and zeros for the rest
                                           (also when the base turns out to be of another
                                           snapshot family: the disk was recreated)
      cycle.extents()      segments of ``segment_bytes``, each listed page by page (marker),
                           reads coalesced up to ``read_chunk`` bytes, one extent per range
      cycle.batches(seq)   the same, grouped into journal batches
    (exit)                 revokes every SAS it granted, also on error
    complete(cycle)        the caller says the cycle is durable: the new snapshot becomes
                           the base and the superseded one is deleted (a crash before that
                           leaves the old base, never none)

``DiskGroupSource`` does the same for the disks of one VM or replication group: it
snapshots them all first (as close together in time as the API allows), then reads them
one after another, with one sequence of batch numbers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from failback.dataplane.extents import CycleMode, zero_extents
from failback.dataplane.extents import batched as shared_batched
from failback.dataplane.journal.model import MAX_EXTENT, SECTOR, Batch, Extent
from failback.dataplane.pacing import Pacer, paced
from failback.dataplane.source_azure.pageblob import PageBlob, PageRange, RequestCounts
from failback.errors import Permanent
from failback.ports.azure import (
    AzureCompute,
    AzureNotFound,
    AzurePermanent,
    ManagedDisk,
    OperationHandle,
    Snapshot,
)

log = logging.getLogger(__name__)

NOT_SAME_FAMILY = "PreviousSnapshotOperationNotSupported"
"""Storage's answer to a diff against a snapshot of another family."""

RESIZE_BOUNDARY = 4 << 40
"""Azure cannot diff incremental snapshots across a resize past 4 TiB."""


VHD_FOOTER = 512
"""A disk uploaded to Azure ends with a fixed VHD's footer: N MiB of data, then 512 bytes."""


def guest_size(blob_size: int) -> int:
    """The bytes the guest sees of a managed disk whose page blob is ``blob_size``: an
    uploaded disk's (or a replica's) VHD footer is not part of the disk, and a target disk
    of the guest's size must not receive it."""
    if blob_size % (1 << 20) == VHD_FOOTER:
        return blob_size - VHD_FOOTER
    return blob_size


class CycleNotFinished(Permanent):
    """``complete`` of a cycle whose extents were not all read, or whose SAS is still open."""


class SnapshotFailed(Permanent):
    """The snapshot of a cycle ended in a state other than Succeeded."""


@dataclass(frozen=True)
class SourceSettings:
    """How a source reads; the defaults follow Azure's limits (docs/source-azure.md)."""

    segment_bytes: int = 1 << 30
    """Each diff or page-range listing covers at most this much of the disk."""
    read_chunk: int = 4 << 20
    """The most bytes one ranged GET asks for (and so the largest data extent)."""
    coalesce_gap: int = 64 << 10
    """Neighbouring ranges closer than this are read with one GET (the gap is discarded)."""
    batch_bytes: int = 16 << 20
    """The most data bytes of one batch."""
    batch_extents: int = 1024
    """The most extents (data or zero) of one batch."""
    max_results: int = 10_000
    """Ranges asked for per listing answer (Azure never sends more than 10,000)."""
    sas_seconds: int = 3600
    """Lifetime of the read SAS granted per cycle (revoked as soon as the cycle ends)."""
    snapshots_per_window: int = 7
    snapshot_window: float = 300.0
    """Client-side pacing: at most ``snapshots_per_window`` snapshots of one disk per
    ``snapshot_window`` seconds (Azure: 7 per 5 minutes)."""
    max_inline_wait: float = 5.0
    """A throttle asking to wait longer than this is raised as ``AzureThrottled(delay)``."""
    read_ahead: int = 3
    """Ranged GETs in flight per disk while earlier extents are consumed (1: one at a time)."""
    blob_retries: int = 2
    """Retries of one page-blob request after a short transient fault."""
    request_timeout: float = 60.0
    poll_interval: float = 1.0
    """Seconds between checks of a snapshot another process is still creating."""
    snapshot_prefix: str = "fb"
    ca_file: str | None = None
    """CA bundle for the page blob endpoint (the test bed's); None: the system's."""

    def __post_init__(self) -> None:
        for name in ("segment_bytes", "read_chunk", "batch_bytes"):
            value = getattr(self, name)
            if value <= 0 or value % SECTOR:
                raise ValueError(f"{name} {value} must be a positive multiple of {SECTOR}")
        if self.read_chunk > MAX_EXTENT:
            raise ValueError(f"read_chunk must not exceed {MAX_EXTENT}")
        if not 1 <= self.max_results <= 10_000:
            raise ValueError("max_results must be 1..10000")
        if self.read_ahead < 1:
            raise ValueError("read_ahead must be at least 1")


@dataclass(frozen=True)
class BaseSnapshot:
    """The snapshot the next cycle diffs against (the last durable one)."""

    resource_group: str
    name: str
    size_bytes: int
    source_time: dt.datetime


@dataclass(frozen=True)
class DiskState:
    """What a source must remember between cycles; the caller persists it after
    :meth:`ManagedDiskSource.complete` (``to_dict``/``from_dict``)."""

    base: BaseSnapshot | None = None
    counter: int = 0
    """Number of the last completed cycle; the next snapshot is named after ``counter + 1``."""
    superseded: tuple[str, ...] = ()
    """Snapshots no longer needed whose deletion has not succeeded yet."""

    def to_dict(self) -> dict[str, Any]:
        base = None
        if self.base is not None:
            base = {
                "resourceGroup": self.base.resource_group,
                "name": self.base.name,
                "sizeBytes": self.base.size_bytes,
                "sourceTime": self.base.source_time.isoformat(),
            }
        return {"base": base, "counter": self.counter, "superseded": list(self.superseded)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskState:
        raw = data.get("base")
        base = None
        if raw:
            base = BaseSnapshot(
                str(raw["resourceGroup"]),
                str(raw["name"]),
                int(raw["sizeBytes"]),
                dt.datetime.fromisoformat(str(raw["sourceTime"])),
            )
        return cls(base, int(data.get("counter", 0)), tuple(data.get("superseded", ())))


@dataclass
class CycleReport:
    """What one cycle of one disk did."""

    disk: str
    snapshot: str
    mode: CycleMode
    reason: str
    """Why this mode (e.g. why a full resync)."""
    source_time: dt.datetime
    """When the snapshot was taken: the RPO's source time."""
    size_bytes: int
    bytes_changed: int = 0
    """Bytes of data extents (written since the base, or allocated)."""
    bytes_cleared: int = 0
    """Bytes of zero extents (cleared since the base; in a full resync also unallocated)."""
    bytes_read: int = 0
    """Bytes transferred by ranged GETs (changed bytes plus coalesced gaps)."""
    ranges_changed: int = 0
    ranges_cleared: int = 0
    extents: int = 0
    segments: int = 0
    arm_calls: int = 0
    """Calls made through the compute port (each a write, a read or a wait)."""
    blob: RequestCounts = field(default_factory=RequestCounts)

    @property
    def requests(self) -> int:
        """Page-blob requests plus compute calls."""
        return self.blob.total + self.arm_calls


def _ssl_context(settings: SourceSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_file)


@dataclass
class _Read:
    """One ranged GET and the extents it carries."""

    lo: int
    hi: int
    pieces: tuple[PageRange, ...]
    task: asyncio.Future[bytes] | None = None


@dataclass
class _Zeros:
    extents: list[Extent]


_Work = _Read | _Zeros


class DiskCycle:
    """One open cycle of one disk: read its extents (once), then leave the ``async with``."""

    def __init__(
        self,
        source: ManagedDiskSource,
        number: int,
        snapshot: Snapshot,
        blob: PageBlob,
        previous: PageBlob | None,
        report: CycleReport,
    ) -> None:
        self.source = source
        self.number = number
        self.snapshot = snapshot
        self.report = report
        self._blob = blob
        self._previous = previous
        self.finished = False
        self.closed = False
        self._started = False

    @property
    def mode(self) -> CycleMode:
        return self.report.mode

    @property
    def source_time(self) -> dt.datetime:
        return self.report.source_time

    async def extents(self) -> AsyncIterator[Extent]:
        """Every extent of the cycle in offset order (can be iterated once).

        Up to ``settings.read_ahead`` ranged GETs are in flight while earlier extents are
        consumed; the extents come out in the same order whatever the timing, so a cycle
        read again after a crash gives the same batches."""
        if self._started:
            raise RuntimeError(f"the extents of cycle {self.snapshot.name} were read already")
        if self.closed:
            raise RuntimeError(f"cycle {self.snapshot.name} is closed (its SAS is revoked)")
        self._started = True
        report = self.report
        window: collections.deque[_Work] = collections.deque()
        ahead = self.source.settings.read_ahead
        try:
            async for work in self._plan():
                window.append(work)
                self._start(window, ahead)
                while sum(isinstance(w, _Read) for w in window) > ahead:
                    for ext in await self._done(window.popleft()):
                        yield ext
                    self._start(window, ahead)
            while window:
                for ext in await self._done(window.popleft()):
                    yield ext
                self._start(window, ahead)
        finally:
            for work in window:
                if isinstance(work, _Read) and work.task is not None:
                    work.task.cancel()
            await asyncio.gather(
                *(w.task for w in window if isinstance(w, _Read) and w.task is not None),
                return_exceptions=True,
            )
        self._finish(report)

    def _start(self, window: collections.deque[_Work], ahead: int) -> None:
        """Start the GETs of the first ``ahead`` reads of ``window`` (no more in flight)."""
        for work in [w for w in window if isinstance(w, _Read)][:ahead]:
            if work.task is None:
                work.task = asyncio.ensure_future(self._blob.read(work.lo, work.hi - work.lo))

    async def _done(self, work: _Work) -> list[Extent]:
        """The extents of one planned piece of work, in order (awaiting its read)."""
        if isinstance(work, _Zeros):
            return work.extents
        if work.task is None:
            work.task = asyncio.ensure_future(self._blob.read(work.lo, work.hi - work.lo))
        data = await work.task
        report = self.report
        report.bytes_read += len(data)
        out = []
        for r in work.pieces:
            piece = data[r.start - work.lo : r.end - work.lo]
            report.bytes_changed += len(piece)
            report.extents += 1
            out.append(Extent.of(self.source.disk_id, r.start, piece))
        return out

    async def _plan(self) -> AsyncIterator[_Work]:
        """The cycle as a sequence of reads (coalesced ranges) and zero extents."""
        settings = self.source.settings
        size = self.report.size_bytes
        disk_id = self.source.disk_id
        report = self.report
        resync = report.mode is CycleMode.FULL_RESYNC
        previous = self._previous if report.mode is CycleMode.INCREMENTAL else None
        pending: list[PageRange] = []

        def flush() -> list[_Work]:
            if not pending:
                return []
            work = _Read(pending[0].start, pending[-1].end, tuple(pending))
            pending.clear()
            return [work]

        def zeros(start: int, end: int) -> list[_Work]:
            out = zero_extents(disk_id, start, end)
            report.bytes_cleared += max(0, end - start)
            report.extents += len(out)
            return [_Zeros(out)] if out else []

        async def listing(seg_start: int, seg_end: int) -> AsyncIterator[PageRange]:
            nonlocal previous, resync
            first = previous is not None and seg_start == 0
            try:
                async for r in self._blob.page_ranges(
                    seg_start, seg_end, previous, max_results=settings.max_results
                ):
                    first = False
                    yield r
                return
            except AzurePermanent as err:
                if not first or err.code != NOT_SAME_FAMILY:
                    raise
            # The very first diff answer says the base is of another snapshot family (the
            # disk was recreated under the same name): nothing was read yet, so resync.
            previous, resync = None, True
            report.mode = CycleMode.FULL_RESYNC
            report.reason = (
                f"base snapshot {self.source.state.base.name if self.source.state.base else '?'}"
                " is of another snapshot family (the disk was recreated): full resync"
            )
            log.warning("disk %s: %s", self.source.disk_name, report.reason)
            async for r in self._blob.page_ranges(
                seg_start, seg_end, None, max_results=settings.max_results
            ):
                yield r

        for seg_start in range(0, size, settings.segment_bytes):
            seg_end = min(size, seg_start + settings.segment_bytes)
            report.segments += 1
            cursor = seg_start
            async for r in listing(seg_start, seg_end):
                if resync and r.start > cursor:
                    for work in [*flush(), *zeros(cursor, r.start)]:
                        yield work
                cursor = r.end
                if r.cleared:
                    report.ranges_cleared += 1
                    for work in [*flush(), *zeros(r.start, r.end)]:
                        yield work
                    continue
                report.ranges_changed += 1
                # Split a range longer than one read; coalesce short neighbours.
                for at in range(r.start, r.end, settings.read_chunk):
                    piece = PageRange(at, min(r.end, at + settings.read_chunk))
                    if pending and (
                        piece.start - pending[-1].end > settings.coalesce_gap
                        or piece.end - pending[0].start > settings.read_chunk
                    ):
                        for work in flush():
                            yield work
                    pending.append(piece)
            for work in flush():
                yield work
            if resync and cursor < seg_end:
                for work in zeros(cursor, seg_end):
                    yield work

    def _finish(self, report: CycleReport) -> None:
        self.finished = True
        log.info(
            "cycle %s of disk %s (%s) read: %d changed bytes in %d ranges, %d cleared in %d, "
            "%d bytes read with %d requests",
            self.snapshot.name,
            self.source.disk_name,
            report.mode,
            report.bytes_changed,
            report.ranges_changed,
            report.bytes_cleared,
            report.ranges_cleared,
            report.bytes_read,
            report.blob.total,
        )

    async def batches(self, first_seq: int, **limits: int) -> AsyncIterator[Batch]:
        """The extents grouped into batches numbered from ``first_seq``."""
        async for batch in batched(self.extents(), first_seq, self.source.settings, **limits):
            yield batch


async def batched(
    extents: AsyncIterable[Extent],
    first_seq: int,
    settings: SourceSettings,
    *,
    batch_bytes: int | None = None,
    batch_extents: int | None = None,
) -> AsyncIterator[Batch]:
    """``extents`` in batches of at most ``batch_bytes`` data bytes and ``batch_extents``
    extents (a single larger extent goes alone), numbered ``first_seq``, ``first_seq + 1``…"""
    async for batch in shared_batched(
        extents,
        first_seq,
        max_bytes=batch_bytes or settings.batch_bytes,
        max_count=batch_extents or settings.batch_extents,
    ):
        yield batch


class ManagedDiskSource:
    """Replication cycles of one managed disk, through the compute port and its snapshots'
    page blobs. ``state`` is what the caller persisted after the last :meth:`complete`."""

    def __init__(
        self,
        compute: AzureCompute,
        resource_group: str,
        disk_name: str,
        *,
        disk_id: str | None = None,
        state: DiskState | None = None,
        settings: SourceSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.compute = compute
        self.resource_group = resource_group
        self.disk_name = disk_name
        self.disk_id = disk_id or disk_name
        self.state = state or DiskState()
        self.settings = settings or SourceSettings()
        self.pending: OperationHandle | None = None
        """The snapshot creation under way (persist it to resume after a restart)."""
        self._pacer = Pacer(
            self.settings.snapshots_per_window, self.settings.snapshot_window, clock
        )
        self._session = session
        self._arm_calls = 0

    def snapshot_name(self, number: int) -> str:
        prefix = self.settings.snapshot_prefix
        return f"{prefix}-{self.disk_name[: 80 - len(prefix) - 9]}-{number:07d}"

    async def _arm(self, call: Any) -> Any:
        self._arm_calls += 1
        return await call

    # -- the snapshot ---------------------------------------------------------------

    async def _disk(self) -> ManagedDisk:
        disk = await self._arm(self.compute.get_disk(self.resource_group, self.disk_name))
        if disk is None:
            raise AzureNotFound(f"managed disk {self.resource_group}/{self.disk_name} not found")
        assert isinstance(disk, ManagedDisk)
        return disk

    async def _begin_snapshot(self, name: str, disk: ManagedDisk) -> OperationHandle:
        """One snapshot write, paced; a throttle that asks for a short wait is waited once."""
        tags = {"failback.io/disk": self.disk_name, "failback.io/role": "replication-cycle"}
        settings = self.settings
        handle = await paced(
            self._pacer,
            lambda: self._arm(
                self.compute.begin_snapshot_create(self.resource_group, name, disk, tags)
            ),
            what=f"snapshot of disk {self.disk_name}",
            limit=f"{settings.snapshots_per_window} per {settings.snapshot_window:g} s",
            max_inline_wait=settings.max_inline_wait,
        )
        assert isinstance(handle, OperationHandle)
        return handle

    async def take_snapshot(self, handle: OperationHandle | None = None) -> Snapshot:
        """The snapshot of the next cycle, finished. If it exists already (a cycle that
        crashed or failed before :meth:`complete`), it is reused without a second write;
        ``handle`` (a persisted :attr:`pending`) resumes its creation."""
        self._arm_calls = 0
        name = self.snapshot_name(self.state.counter + 1)
        handle = handle or self.pending
        snap = await self._arm(self.compute.get_snapshot(self.resource_group, name))
        if snap is not None and snap.provisioning_state.lower() == "failed":
            # A creation that failed leaves a husk: remove it and take the snapshot again.
            log.warning("snapshot %s of disk %s had failed; taking it again", name, self.disk_name)
            gone = await self._arm(self.compute.begin_snapshot_delete(self.resource_group, name))
            await self._arm(self.compute.wait(gone))
            snap, handle = None, None
        if snap is None:
            disk = await self._disk()
            handle = await self._begin_snapshot(name, disk)
            self.pending = handle
            log.info("snapshot %s of disk %s started", name, self.disk_name)
        if handle is not None and handle.name == name:
            await self._arm(self.compute.wait(handle))
        self.pending = None
        while True:
            snap = await self._arm(self.compute.get_snapshot(self.resource_group, name))
            if snap is None:
                raise SnapshotFailed(f"snapshot {name} of disk {self.disk_name} disappeared")
            assert isinstance(snap, Snapshot)
            state = snap.provisioning_state.lower()
            if state == "succeeded":
                return snap
            if state in ("failed", "canceled", "deleting"):
                raise SnapshotFailed(f"snapshot {name} of disk {self.disk_name} is {state}")
            await asyncio.sleep(self.settings.poll_interval)

    # -- access ---------------------------------------------------------------------

    async def _grant(self, name: str) -> str:
        handle = await self._arm(
            self.compute.begin_grant_access(
                self.resource_group,
                name,
                snapshot=True,
                write=False,
                seconds=self.settings.sas_seconds,
            )
        )
        status = await self._arm(self.compute.wait(handle))
        if not status.result:
            raise SnapshotFailed(f"read access to snapshot {name} was granted without a SAS")
        return str(status.result)

    async def _revoke(self, resource_group: str, name: str) -> None:
        try:
            handle = await self._arm(
                self.compute.begin_revoke_access(resource_group, name, snapshot=True)
            )
            await self._arm(self.compute.wait(handle))
        except AzureNotFound:
            return

    # -- the cycle ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_cycle(
        self, snapshot: Snapshot | None = None, *, resync: str | None = None
    ) -> AsyncIterator[DiskCycle]:
        """A cycle on ``snapshot`` (default: :meth:`take_snapshot`); every SAS it grants is
        revoked when the block ends, however it ends. ``resync`` (a reason) forces a full
        resync: every range, unallocated ones as zeros (the target may hold anything)."""
        if snapshot is None:
            snapshot = await self.take_snapshot()
        if snapshot.time_created is None:
            raise SnapshotFailed(f"snapshot {snapshot.name} reports no creation time")
        number = self.state.counter + 1
        base = self.state.base
        mode, reason = CycleMode.INITIAL, "first cycle: every allocated range"
        if resync is not None:
            mode, reason = CycleMode.FULL_RESYNC, resync
        elif base is not None:
            found = await self._arm(self.compute.get_snapshot(base.resource_group, base.name))
            if found is None:
                mode = CycleMode.FULL_RESYNC
                reason = f"base snapshot {base.name} is gone: full resync"
            else:
                mode, reason = CycleMode.INCREMENTAL, f"changes since {base.name}"
        granted: list[tuple[str, str]] = []
        session = self._session or aiohttp.ClientSession()
        counts = RequestCounts()
        context = _ssl_context(self.settings)

        def blob(url: str, name: str) -> PageBlob:
            return PageBlob(
                session,
                url,
                name,
                counts=counts,
                ssl_context=context,
                retries=self.settings.blob_retries,
                max_inline_wait=self.settings.max_inline_wait,
                timeout=self.settings.request_timeout,
            )

        cycle: DiskCycle | None = None
        try:
            # Both grants at once: each is a long-running operation of its own.
            granted.append((self.resource_group, snapshot.name))
            want_base = base is not None and mode is CycleMode.INCREMENTAL
            if base is not None and want_base:
                granted.append((base.resource_group, base.name))
            grants = await asyncio.gather(
                *(self._grant(name) for _, name in granted), return_exceptions=True
            )
            if isinstance(grants[0], BaseException):
                raise grants[0]
            current = blob(grants[0], snapshot.name)
            previous = None
            if base is not None and want_base:
                answer = grants[1]
                if isinstance(answer, AzureNotFound):
                    granted.pop()
                    mode = CycleMode.FULL_RESYNC
                    reason = f"base snapshot {base.name} is gone: full resync"
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    previous = blob(answer, base.name)
            size = guest_size(await current.size())
            if (
                base is not None
                and mode is CycleMode.INCREMENTAL
                and (base.size_bytes > RESIZE_BOUNDARY) != (size > RESIZE_BOUNDARY)
            ):
                mode = CycleMode.FULL_RESYNC
                reason = (
                    f"disk resized across 4 TiB ({base.size_bytes} → {size} bytes): "
                    "no diff across that boundary, full resync"
                )
            if mode is CycleMode.FULL_RESYNC:
                log.warning("disk %s: %s", self.disk_name, reason)
            report = CycleReport(
                disk=self.disk_name,
                snapshot=snapshot.name,
                mode=mode,
                reason=reason,
                source_time=snapshot.time_created,
                size_bytes=size,
                blob=counts,
            )
            cycle = DiskCycle(self, number, snapshot, current, previous, report)
            log.info(
                "cycle %s of disk %s opened: %s (%s)", snapshot.name, self.disk_name, mode, reason
            )
            yield cycle
        finally:
            try:
                revoked = await asyncio.gather(
                    *(self._revoke(group, name) for group, name in granted),
                    return_exceptions=True,
                )
                for (_, name), outcome in zip(granted, revoked, strict=True):
                    if isinstance(outcome, Exception):  # never mask the cycle's own error
                        log.warning("revoking read access to snapshot %s failed: %s", name, outcome)
            finally:
                if cycle is not None:
                    cycle.closed = True
                    cycle.report.arm_calls = self._arm_calls
                if self._session is None:
                    await session.close()

    async def complete(self, cycle: DiskCycle) -> DiskState:
        """The caller made ``cycle`` durable: its snapshot becomes the base, superseded
        snapshots are deleted (one that cannot be is kept in ``state.superseded`` and tried
        again next time). Returns the state to persist."""
        if cycle.source is not self:
            raise ValueError("that cycle belongs to another source")
        if not cycle.finished or not cycle.closed:
            raise CycleNotFinished(
                f"cycle {cycle.snapshot.name} of disk {self.disk_name} is not finished "
                "(read every extent and leave the `async with` first)"
            )
        base = BaseSnapshot(
            self.resource_group, cycle.snapshot.name, cycle.report.size_bytes, cycle.source_time
        )
        return await self.settle(base, cycle.number)

    async def settle(self, base: BaseSnapshot, number: int) -> DiskState:
        """Make ``base`` (the snapshot of cycle ``number``, which the sink made durable) the
        base of the next cycle and delete the superseded snapshots. :meth:`complete` calls
        it; a process server that crashed after the sink committed calls it directly with
        what it persisted about the cycle. Idempotent."""
        self.advance(base, number)
        return await self.delete_superseded()

    def advance(self, base: BaseSnapshot, number: int) -> DiskState:
        """The state after cycle ``number`` on ``base``: the old base joins the superseded
        snapshots (deleted by :meth:`delete_superseded`, which may run later). No I/O."""
        old = self.state.base
        superseded = list(self.state.superseded)
        if old is not None and old.name != base.name and old.name not in superseded:
            superseded.append(old.name)
        self.state = DiskState(base, number, tuple(superseded))
        return self.state

    async def delete_superseded(self) -> DiskState:
        """Delete the superseded snapshots; one that cannot be deleted stays listed."""
        superseded = self.state.superseded
        left = []
        for name in superseded:
            try:
                handle = await self.compute.begin_snapshot_delete(self.resource_group, name)
                await self.compute.wait(handle)
            except AzureNotFound:
                pass
            except Exception as err:  # retried at the next complete
                log.warning("deleting superseded snapshot %s failed: %s", name, err)
                left.append(name)
        self.state = replace(self.state, superseded=tuple(left))
        return self.state

    async def discard(self, cycle: DiskCycle) -> None:
        """Give up ``cycle`` (never completed): delete its snapshot so the next cycle takes
        a fresh one. The base is untouched."""
        if not cycle.closed:
            raise CycleNotFinished(f"cycle {cycle.snapshot.name} is still open")
        handle = await self.compute.begin_snapshot_delete(self.resource_group, cycle.snapshot.name)
        await self.compute.wait(handle)


@dataclass
class GroupCycle:
    """One cycle of every disk of a group."""

    cycles: tuple[DiskCycle, ...]

    @property
    def source_time(self) -> dt.datetime:
        """The oldest snapshot time of the group: the cut's (conservative) source time."""
        return min(c.source_time for c in self.cycles)

    @property
    def reports(self) -> tuple[CycleReport, ...]:
        return tuple(c.report for c in self.cycles)

    async def extents(self) -> AsyncIterator[Extent]:
        for cycle in self.cycles:
            async for ext in cycle.extents():
                yield ext

    async def batches(
        self, first_seq: int, settings: SourceSettings, **limits: int
    ) -> AsyncIterator[Batch]:
        async for batch in batched(self.extents(), first_seq, settings, **limits):
            yield batch


class DiskGroupSource:
    """Cycles of several disks (one VM, or one replication group) taken together."""

    def __init__(self, sources: Sequence[ManagedDiskSource]) -> None:
        if not sources:
            raise ValueError("a group needs at least one disk")
        ids = [s.disk_id for s in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"disk ids must be unique: {ids}")
        self.sources = tuple(sources)

    @contextlib.asynccontextmanager
    async def open_cycle(self, *, resync: str | None = None) -> AsyncIterator[GroupCycle]:
        """One cycle of every disk, their snapshots taken together; ``resync`` (a reason)
        forces a full resync of every disk."""
        snapshots = await asyncio.gather(*(s.take_snapshot() for s in self.sources))
        async with contextlib.AsyncExitStack() as stack:
            cycles = [
                await stack.enter_async_context(source.open_cycle(snap, resync=resync))
                for source, snap in zip(self.sources, snapshots, strict=True)
            ]
            yield GroupCycle(tuple(cycles))

    async def complete(self, cycle: GroupCycle) -> tuple[DiskState, ...]:
        return tuple([await c.source.complete(c) for c in cycle.cycles])
