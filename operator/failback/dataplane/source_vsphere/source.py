"""Replication cycles of a vSphere VM: snapshot → changed areas → datastore reads → extents.

One cycle of one VM::

    take_snapshot()        refuses a VM carrying a user's snapshot (UserSnapshotPresent,
                           nothing touched); enables CBT (idempotent); takes the snapshot
                           ``failback-replication`` (description names the cycle: a crash
                           resumes the same one, a stale one of an older cycle is removed)
    open_cycle()           asks each disk's changed areas since its persisted changeId:
                             INITIAL       never completed: ``"*"``, allocated areas only
                             INCREMENTAL   areas changed since the changeId
                             FULL_RESYNC   disk resized, no changeId, or the changeId
                                           rejected: every allocated area, zeros for the rest
      cycle.extents()      the areas read from the disk's flat file on the datastore,
                           split at ``read_chunk``, neighbours closer than ``coalesce_gap``
                           read together; one checksummed extent per piece
      cycle.batches(seq)   the same, grouped into journal batches
    (exit)                 removes the replication snapshot, also on error
    complete(cycle)        the caller made the cycle durable: the new changeIds become the
                           state to persist
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failback.api.conditions import Reason
from failback.dataplane.extents import CycleMode, batched, zero_extents
from failback.dataplane.journal.model import MAX_EXTENT, SECTOR, Batch, Extent
from failback.dataplane.source_vsphere.changes import (
    ALL,
    ChangeTracking,
    changed_areas_source,
)
from failback.dataplane.source_vsphere.files import DatastoreFiles
from failback.errors import Permanent, Retryable
from failback.ports.vsphere import (
    REPLICATION_SNAPSHOT,
    ChangedArea,
    ChangedAreas,
    ChangeIdRejected,
    NotFound,
    SnapshotDisk,
    SnapshotInfo,
    TaskState,
    VCenter,
)

log = logging.getLogger(__name__)


class UserSnapshotPresent(Permanent):
    """The VM carries a snapshot that is not the replication snapshot: it is the user's,
    and the source leaves the VM alone until the user removes it."""

    reason: str = Reason.ORIGINAL_VM_HAS_SNAPSHOTS

    def __init__(self, vm: str, snapshots: Sequence[SnapshotInfo]) -> None:
        names = ", ".join(f"{s.name!r} ({s.moref})" for s in snapshots)
        super().__init__(
            f"VM {vm} carries snapshot(s) {names} not taken by failback: replication reads "
            "through its own snapshot only on a VM without any other; remove or consolidate "
            "them (failback never touches a user's snapshot)"
        )
        self.snapshots = tuple(snapshots)


class SnapshotFailed(Permanent):
    """vCenter failed the replication snapshot's task."""


class SnapshotPending(Retryable):
    """The snapshot task is still running after ``task_patience``; :attr:`VMSource.pending`
    holds its moref, so the next try waits for that task instead of starting another."""


class CycleNotFinished(Permanent):
    """``complete`` of a cycle whose extents were not all read or which is still open."""


@dataclass(frozen=True)
class SourceSettings:
    """How a vSphere source reads (docs/source-vsphere.md)."""

    change_tracking: ChangeTracking = "vcenter"
    """Where changed areas come from: ``vcenter`` (QueryChangedDiskAreas) or ``sidecar``
    (the test bed's guest writer)."""
    quiesce: bool = False
    """Ask VMware Tools to quiesce the guest for the snapshot (app-consistent points)."""
    enable_change_tracking: bool = True
    """Turn CBT on for the VM before its first snapshot (idempotent)."""
    read_chunk: int = 4 << 20
    """The most bytes one read asks for (and so the largest data extent)."""
    coalesce_gap: int = 64 << 10
    """Areas closer than this are read together (the gap is read and discarded)."""
    batch_bytes: int = 16 << 20
    batch_extents: int = 1024
    task_patience: float = 300.0
    """Seconds to wait for a snapshot task before raising :class:`SnapshotPending`."""

    def __post_init__(self) -> None:
        for name in ("read_chunk", "batch_bytes"):
            value = getattr(self, name)
            if value <= 0 or value % SECTOR:
                raise ValueError(f"{name} {value} must be a positive multiple of {SECTOR}")
        if self.read_chunk > MAX_EXTENT:
            raise ValueError(f"read_chunk must not exceed {MAX_EXTENT}")
        if self.coalesce_gap < 0 or self.batch_extents < 1:
            raise ValueError("coalesce_gap must be >= 0 and batch_extents >= 1")


@dataclass(frozen=True)
class DiskState:
    """What one disk's source remembers between cycles."""

    change_id: str | None = None
    """The changeId of the last durable cycle (None: no usable one)."""
    capacity_bytes: int = 0
    file_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "changeId": self.change_id,
            "capacityBytes": self.capacity_bytes,
            "fileName": self.file_name,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskState:
        change = data.get("changeId")
        return cls(
            str(change) if change is not None else None,
            int(data.get("capacityBytes", 0)),
            str(data.get("fileName", "")),
        )


@dataclass(frozen=True)
class VMState:
    """What a VM's source remembers between cycles; persist ``to_dict()`` after
    :meth:`VMSource.complete`. No secret in it."""

    counter: int = 0
    """Number of the last completed cycle."""
    disks: Mapping[str, DiskState] = field(default_factory=dict)
    """By disk id (the disk's ``backing.uuid``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "disks": {k: v.to_dict() for k, v in sorted(self.disks.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VMState:
        disks = {str(k): DiskState.from_dict(v) for k, v in (data.get("disks") or {}).items()}
        return cls(int(data.get("counter", 0)), disks)


@dataclass
class CycleReport:
    """What one cycle of one disk did."""

    disk: str
    snapshot: str
    mode: CycleMode
    reason: str
    source_time: dt.datetime
    size_bytes: int
    change_id_from: str
    change_id_to: str | None
    bytes_changed: int = 0
    """Bytes of data extents (changed, or allocated)."""
    bytes_cleared: int = 0
    """Bytes of zero extents (in a full resync: everything not allocated)."""
    bytes_read: int = 0
    """Bytes read from the flat file (changed bytes plus coalesced gaps)."""
    ranges_changed: int = 0
    reads: int = 0
    extents: int = 0


# ------------------------------------------------------------------ pure planning


@dataclass(frozen=True)
class Read:
    """One read of ``[start, end)`` cut into the extents ``pieces`` (each inside it)."""

    start: int
    end: int
    pieces: tuple[tuple[int, int], ...]


def plan_reads(areas: Sequence[ChangedArea], read_chunk: int, coalesce_gap: int) -> list[Read]:
    """Reads for sorted, disjoint ``areas``: each area split into pieces of at most
    ``read_chunk``; consecutive pieces closer than ``coalesce_gap`` read together while
    the read stays within ``read_chunk``."""
    reads: list[Read] = []
    pending: list[tuple[int, int]] = []

    def flush() -> None:
        if pending:
            reads.append(Read(pending[0][0], pending[-1][1], tuple(pending)))
            pending.clear()

    for area in areas:
        for at in range(area.start, area.end, read_chunk):
            piece = (at, min(area.end, at + read_chunk))
            if pending and (
                piece[0] - pending[-1][1] >= coalesce_gap or piece[1] - pending[0][0] > read_chunk
            ):
                flush()
            pending.append(piece)
    flush()
    return reads


def gaps(areas: Sequence[ChangedArea], size: int) -> list[tuple[int, int]]:
    """The ranges of ``[0, size)`` no area covers (areas sorted and disjoint)."""
    out, cursor = [], 0
    for area in areas:
        if area.start > cursor:
            out.append((cursor, area.start))
        cursor = max(cursor, area.end)
    if cursor < size:
        out.append((cursor, size))
    return out


def _pread(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``; zeros past the end of the file (a thin disk's
    unwritten tail reads as zeros)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    return data + bytes(length - len(data))


# ------------------------------------------------------------------ one disk


class DiskCycle:
    """One open cycle of one disk: read its extents (once) inside the ``async with``."""

    def __init__(
        self,
        source: VSphereDiskSource,
        disk: SnapshotDisk,
        flat: Path,
        areas: tuple[ChangedArea, ...],
        report: CycleReport,
    ) -> None:
        self.source = source
        self.disk = disk
        self.flat = flat
        self.areas = areas
        self.report = report
        self.finished = False
        self.closed = False
        self._started = False

    @property
    def mode(self) -> CycleMode:
        return self.report.mode

    async def extents(self) -> AsyncIterator[Extent]:
        """Every extent of the cycle, in offset order (can be iterated once)."""
        if self._started:
            raise RuntimeError(f"the extents of disk {self.source.disk_id} were read already")
        if self.closed:
            raise RuntimeError(f"cycle of disk {self.source.disk_id} is closed (snapshot gone)")
        self._started = True
        settings = self.source.settings
        report = self.report
        disk_id = self.source.disk_id
        zeros = gaps(self.areas, report.size_bytes) if report.mode is CycleMode.FULL_RESYNC else []
        zi = 0
        for read in plan_reads(self.areas, settings.read_chunk, settings.coalesce_gap):
            while zi < len(zeros) and zeros[zi][0] < read.start:
                for ext in zero_extents(disk_id, *zeros[zi]):
                    report.bytes_cleared += ext.length
                    report.extents += 1
                    yield ext
                zi += 1
            data = await asyncio.to_thread(_pread, self.flat, read.start, read.end - read.start)
            report.reads += 1
            report.bytes_read += len(data)
            for lo, hi in read.pieces:
                piece = data[lo - read.start : hi - read.start]
                report.bytes_changed += len(piece)
                report.extents += 1
                yield Extent.of(disk_id, lo, piece)
        for start, end in zeros[zi:]:
            for ext in zero_extents(disk_id, start, end):
                report.bytes_cleared += ext.length
                report.extents += 1
                yield ext
        self.finished = True
        log.info(
            "disk %s cycle on %s read (%s): %d bytes in %d areas, %d bytes cleared, "
            "%d bytes in %d reads",
            disk_id,
            report.snapshot,
            report.mode,
            report.bytes_changed,
            report.ranges_changed,
            report.bytes_cleared,
            report.bytes_read,
            report.reads,
        )

    async def batches(self, first_seq: int) -> AsyncIterator[Batch]:
        settings = self.source.settings
        async for batch in batched(
            self.extents(),
            first_seq,
            max_bytes=settings.batch_bytes,
            max_count=settings.batch_extents,
        ):
            yield batch


class VSphereDiskSource:
    """Cycles of one virtual disk: which areas to read (through ``changes``) and reading
    them from the datastore (through ``files``). :class:`VMSource` owns the snapshot."""

    def __init__(
        self,
        disk_id: str,
        *,
        changes: ChangedAreas,
        files: DatastoreFiles,
        state: DiskState | None = None,
        settings: SourceSettings | None = None,
    ) -> None:
        self.disk_id = disk_id
        self.changes = changes
        self.files = files
        self.state = state
        """None until a cycle of this disk completed."""
        self.settings = settings or SourceSettings()

    def _mode(self, disk: SnapshotDisk, resync: str | None) -> tuple[CycleMode, str, str]:
        """The mode, why, and the changeId to ask since."""
        state = self.state
        if resync is not None:
            return CycleMode.FULL_RESYNC, resync, ALL
        if state is None:
            return CycleMode.INITIAL, "first cycle: every allocated area", ALL
        if state.capacity_bytes != disk.capacity_bytes:
            return (
                CycleMode.FULL_RESYNC,
                f"disk resized ({state.capacity_bytes} → {disk.capacity_bytes} bytes): full resync",
                ALL,
            )
        if state.change_id is None:
            return (
                CycleMode.FULL_RESYNC,
                "the last cycle left no changeId (CBT was not active): full resync",
                ALL,
            )
        return CycleMode.INCREMENTAL, f"changes since {state.change_id}", state.change_id

    async def open(
        self, snapshot: SnapshotInfo, disk: SnapshotDisk, *, resync: str | None = None
    ) -> DiskCycle:
        """Decide the mode and ask the changed areas of ``disk`` in ``snapshot``."""
        mode, reason, since = self._mode(disk, resync)
        try:
            changes = await self.changes.changed_areas(snapshot.moref, disk, since)
        except ChangeIdRejected as err:
            if since == ALL:
                raise
            mode, reason = CycleMode.FULL_RESYNC, f"changeId rejected ({err}): full resync"
            since = ALL
            changes = await self.changes.changed_areas(snapshot.moref, disk, since)
        if mode is CycleMode.FULL_RESYNC:
            log.warning("disk %s: %s", self.disk_id, reason)
        flat = await asyncio.to_thread(self.files.flat_file, disk.file_name)
        report = CycleReport(
            disk=self.disk_id,
            snapshot=snapshot.moref,
            mode=mode,
            reason=reason,
            source_time=snapshot.created or dt.datetime.min.replace(tzinfo=dt.UTC),
            size_bytes=disk.capacity_bytes,
            change_id_from=since,
            change_id_to=changes.change_id,
            ranges_changed=len(changes.areas),
        )
        return DiskCycle(self, disk, flat, changes.areas, report)

    def complete(self, cycle: DiskCycle) -> DiskState:
        if cycle.source is not self:
            raise ValueError("that cycle belongs to another disk")
        if not cycle.finished or not cycle.closed:
            raise CycleNotFinished(
                f"cycle of disk {self.disk_id} is not finished (read every extent and leave "
                "the `async with` first)"
            )
        self.state = DiskState(
            cycle.report.change_id_to, cycle.disk.capacity_bytes, cycle.disk.file_name
        )
        return self.state


# ------------------------------------------------------------------ one VM


@dataclass
class VMCycle:
    """One cycle of every disk of a VM, read through one snapshot."""

    number: int
    snapshot: SnapshotInfo
    cycles: tuple[DiskCycle, ...]

    @property
    def source_time(self) -> dt.datetime:
        """When the snapshot was taken: the recovery point's source time."""
        assert self.snapshot.created is not None  # take_snapshot refuses one without
        return self.snapshot.created

    @property
    def app_consistent(self) -> bool:
        return self.snapshot.quiesced

    @property
    def reports(self) -> tuple[CycleReport, ...]:
        return tuple(c.report for c in self.cycles)

    async def extents(self) -> AsyncIterator[Extent]:
        for cycle in self.cycles:
            async for ext in cycle.extents():
                yield ext

    async def batches(self, first_seq: int) -> AsyncIterator[Batch]:
        """Every disk's extents, one after the other, in batches numbered from
        ``first_seq``."""
        s = self.cycles[0].source.settings if self.cycles else SourceSettings()
        async for batch in batched(
            self.extents(), first_seq, max_bytes=s.batch_bytes, max_count=s.batch_extents
        ):
            yield batch


def _description(number: int) -> str:
    return f"failback.io replication cycle {number}"


class VMSource:
    """Replication cycles of one VM's disks through one vSphere snapshot per cycle.

    ``files`` maps the datastores this process can read to local directories; ``changes``
    (default: from ``settings.change_tracking``) says which areas changed; ``state`` is
    what the caller persisted after the last :meth:`complete`.
    """

    def __init__(
        self,
        vcenter: VCenter,
        instance_uuid: str,
        files: DatastoreFiles,
        *,
        state: VMState | None = None,
        settings: SourceSettings | None = None,
        changes: ChangedAreas | None = None,
    ) -> None:
        self.vcenter = vcenter
        self.instance_uuid = instance_uuid
        self.files = files
        self.state = state or VMState()
        self.settings = settings or SourceSettings()
        self.changes = changes or changed_areas_source(
            self.settings.change_tracking,
            vcenter=vcenter,
            instance_uuid=instance_uuid,
            files=files,
        )
        self.pending: str | None = None
        """The moref of the snapshot task under way (persist it to resume after a restart)."""

    def disk_id(self, disk: SnapshotDisk) -> str:
        """A disk's id in the journal: its ``backing.uuid`` (else VM and device key)."""
        return disk.uuid or f"{self.instance_uuid}:{disk.device_key}"

    async def _wait(self, moref: str, what: str) -> TaskState:
        state = await self.vcenter.wait(moref, self.settings.task_patience)
        if not state.done:
            raise SnapshotPending(f"{what} (task {moref}) is still running", delay=10.0)
        if state.state != "success":
            raise SnapshotFailed(f"{what} failed (task {moref}): {state.error}")
        return state

    async def _remove(self, moref: str) -> None:
        task = await self.vcenter.remove_snapshot(moref)
        if task is not None:
            await self._wait(task.moref, f"removing snapshot {moref} of VM {self.instance_uuid}")

    async def take_snapshot(self, task: str | None = None) -> SnapshotInfo:
        """The replication snapshot of the next cycle, taken. A VM with any snapshot that
        is not ours raises :class:`UserSnapshotPresent` before anything is changed. Ours of
        this cycle (a crash before the exit removed it) is reused; ours of another cycle is
        removed first. ``task`` (a persisted :attr:`pending`) resumes waiting for it."""
        number = self.state.counter + 1
        description = _description(number)
        found = await self.vcenter.snapshots(self.instance_uuid)
        users = [s for s in found if s.name != REPLICATION_SNAPSHOT]
        if users:
            raise UserSnapshotPresent(self.instance_uuid, users)
        task = task or self.pending
        if task is not None:
            self.pending = task
            try:
                await self._wait(task, f"snapshot of VM {self.instance_uuid}")
            except (SnapshotFailed, NotFound) as err:  # taken again below
                log.warning("VM %s: the snapshot task resumed is lost: %s", self.instance_uuid, err)
            self.pending = None
            found = await self.vcenter.snapshots(self.instance_uuid)
        for snap in found:
            if snap.description != description:
                log.warning(
                    "VM %s: removing stale replication snapshot %s (%s)",
                    self.instance_uuid,
                    snap.moref,
                    snap.description,
                )
                await self._remove(snap.moref)
        ours = [s for s in found if s.description == description]
        if ours:
            log.info(
                "VM %s: resuming cycle %d on snapshot %s", self.instance_uuid, number, ours[0].moref
            )
            return ours[0]
        if self.settings.enable_change_tracking:
            enabling = await self.vcenter.enable_change_tracking(self.instance_uuid)
            if enabling is not None:
                await self._wait(enabling.moref, f"enabling CBT on VM {self.instance_uuid}")
        started = await self.vcenter.create_snapshot(
            self.instance_uuid,
            REPLICATION_SNAPSHOT,
            description=description,
            quiesce=self.settings.quiesce,
        )
        if isinstance(started, TaskState):
            self.pending = started.moref
            try:
                await self._wait(started.moref, f"snapshot of VM {self.instance_uuid}")
            except SnapshotFailed:
                self.pending = None
                raise
            self.pending = None
        for snap in await self.vcenter.snapshots(self.instance_uuid):
            if snap.name == REPLICATION_SNAPSHOT and snap.description == description:
                return snap
        raise SnapshotFailed(f"the snapshot of VM {self.instance_uuid} disappeared")

    @contextlib.asynccontextmanager
    async def open_cycle(self, *, resync: str | None = None) -> AsyncIterator[VMCycle]:
        """A cycle through a fresh (or resumed) replication snapshot, which is removed when
        the block ends, however it ends. ``resync`` (a reason) forces a full resync."""
        snapshot = await self.take_snapshot()
        cycles: list[DiskCycle] = []
        try:
            if snapshot.created is None:
                raise SnapshotFailed(f"snapshot {snapshot.moref} reports no creation time")
            disks = await self.vcenter.snapshot_disks(snapshot.moref)
            for disk in disks:
                disk_id = self.disk_id(disk)
                source = VSphereDiskSource(
                    disk_id,
                    changes=self.changes,
                    files=self.files,
                    state=self.state.disks.get(disk_id),
                    settings=self.settings,
                )
                cycles.append(await source.open(snapshot, disk, resync=resync))
            log.info(
                "VM %s cycle %d opened on snapshot %s: %s",
                self.instance_uuid,
                self.state.counter + 1,
                snapshot.moref,
                ", ".join(f"{c.source.disk_id} {c.mode}" for c in cycles),
            )
            yield VMCycle(self.state.counter + 1, snapshot, tuple(cycles))
        finally:
            try:
                await self._remove(snapshot.moref)
            except Exception as err:  # never mask the cycle's own error; retried next cycle
                log.warning(
                    "VM %s: removing replication snapshot %s failed: %s",
                    self.instance_uuid,
                    snapshot.moref,
                    err,
                )
            finally:
                for cycle in cycles:
                    cycle.closed = True

    async def complete(self, cycle: VMCycle) -> VMState:
        """The caller made ``cycle`` durable: each disk's new changeId becomes its base.
        Returns the state to persist."""
        if cycle.number != self.state.counter + 1:
            raise CycleNotFinished(
                f"cycle {cycle.number} of VM {self.instance_uuid} does not follow cycle "
                f"{self.state.counter}"
            )
        disks = {c.source.disk_id: c.source.complete(c) for c in cycle.cycles}
        self.state = VMState(cycle.number, disks)
        return self.state
