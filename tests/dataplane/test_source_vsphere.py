"""The vSphere source against vcsim, with the test bed's guest writer standing in for CBT.

vcsim takes and removes real snapshots and keeps ``changeTrackingEnabled``, but does no
disk I/O and has no ``QueryChangedDiskAreas``: the guest writer (hack/testbed/guest.py)
writes the flat files and records each write in a ``.cbt`` sidecar, which the source reads
with ``change_tracking="sidecar"``. The pure planning (areas, coalescing, batches) is
tested at the end without vcsim.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from failback.dataplane.journal import MAX_EXTENT, Batch, Extent, extent_checksum
from failback.dataplane.source_vsphere import (
    ALL,
    CycleMode,
    CycleNotFinished,
    DatastoreFiles,
    DiskFileNotFound,
    SourceSettings,
    UserSnapshotPresent,
    VCenterChangedAreas,
    VMCycle,
    VMSource,
    VMState,
    allocated_ranges,
    batched,
    gaps,
    normalize,
    plan_reads,
    read_sidecar,
)
from failback.ports.vsphere import (
    REPLICATION_SNAPSHOT,
    ChangedArea,
    ChangedBlockTrackingUnavailable,
    ChangeIdRejected,
    DiskChangeInfo,
    SnapshotDisk,
    VSphereFault,
)
from testbed.guest import GuestDisk

from .conftest import GuestVM, VMFactory

KIB = 1 << 10
MIB = 1 << 20
DISK = 4 * MIB
SIDECAR = SourceSettings(change_tracking="sidecar", read_chunk=256 * KIB, coalesce_gap=8 * KIB)

on_vcsim = pytest.mark.testbed


# ------------------------------------------------------------------ fixtures


async def run_cycle(source: VMSource, first_seq: int = 1) -> tuple[VMCycle, list[Batch]]:
    async with source.open_cycle() as cycle:
        batches = [b async for b in cycle.batches(first_seq)]
    await source.complete(cycle)
    return cycle, batches


def extents_of(batches: list[Batch]) -> list[Extent]:
    return [e for b in batches for e in b.extents]


def apply(image: bytearray, extents: list[Extent]) -> None:
    for ext in extents:
        assert ext.offset % 512 == 0
        assert ext.length % 512 == 0
        data = ext.data if ext.data is not None else bytes(ext.length)
        image[ext.offset : ext.offset + ext.length] = data


def covered(extents: list[Extent]) -> list[tuple[int, int]]:
    """The data extents' ranges, neighbours merged."""
    out: list[list[int]] = []
    for ext in sorted((e for e in extents if e.data is not None), key=lambda e: e.offset):
        if out and out[-1][1] == ext.offset:
            out[-1][1] = ext.offset + ext.length
        else:
            out.append([ext.offset, ext.offset + ext.length])
    return [(a, b) for a, b in out]


def source_of(vc: Any, vm: GuestVM, files: DatastoreFiles, **kwargs: Any) -> VMSource:
    kwargs.setdefault("settings", SIDECAR)
    return VMSource(vc, vm.uuid, files, **kwargs)


# ------------------------------------------------------------------ cycles on vcsim


@on_vcsim
async def test_initial_then_incremental_cycle(
    vc: Any, si: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    vm = await guest_vm()
    (disk,) = vm.disks
    disk.write(0, os.urandom(64 * KIB))
    disk.write(1000, b"x" * 100)  # unaligned: read as the sectors around it
    disk.write(DISK - 512, b"\xee" * 512)
    disk.write(300 * KIB, os.urandom(700 * KIB))  # longer than one read

    source = source_of(vc, vm, files)
    cycle, batches = await run_cycle(source)
    (report,) = cycle.reports
    assert report.mode is CycleMode.INITIAL
    assert report.change_id_from == ALL
    assert report.change_id_to == disk.change_id
    extents = extents_of(batches)
    assert all(e.checksum == extent_checksum(e.data) for e in extents if e.data is not None)
    assert all(e.length <= SIDECAR.read_chunk for e in extents)
    # Every allocated area: what was written, widened to the file system's blocks.
    sent = covered(extents)
    for start, end in [(0, 64 * KIB), (300 * KIB, KIB * 1000), (DISK - 512, DISK)]:
        assert any(a <= start and end <= b for a, b in sent), (start, end, sent)
    assert sum(b - a for a, b in sent) < DISK // 2, "never-written space is not read"
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    image = bytearray(DISK)
    apply(image, extents)
    assert bytes(image) == disk.read(0, DISK), "the first cycle is the disk, byte for byte"
    assert await vc.snapshots(vm.uuid) == (), "the replication snapshot is removed"
    assert cycle.snapshot.name == REPLICATION_SNAPSHOT
    assert cycle.source_time.tzinfo is not None
    vm_obj = si.content.searchIndex.FindByUuid(None, vm.uuid, True, True)
    assert vm_obj.config.changeTrackingEnabled is True

    # Persisted and restored: the next cycle sends exactly what was written since.
    state = VMState.from_dict(json.loads(json.dumps(source.state.to_dict())))
    assert state == source.state
    disk.write(2 * MIB, b"\x11" * 4096)
    disk.write(8 * KIB, b"\x22" * 512)
    disk.write(2 * MIB + 4096, b"\x33" * 512)  # touches the first: one area
    again = source_of(vc, vm, files, state=state)
    cycle2, batches2 = await run_cycle(again, first_seq=batches[-1].seq + 1)
    assert cycle2.number == 2
    assert cycle2.reports[0].mode is CycleMode.INCREMENTAL
    assert cycle2.snapshot.moref != cycle.snapshot.moref
    extents2 = extents_of(batches2)
    assert covered(extents2) == [(8 * KIB, 8 * KIB + 512), (2 * MIB, 2 * MIB + 4608)]
    assert batches2[0].seq == batches[-1].seq + 1
    apply(image, extents2)
    assert bytes(image) == disk.read(0, DISK)
    assert await vc.snapshots(vm.uuid) == ()

    # Nothing written: an empty cycle.
    _, batches3 = await run_cycle(again)
    assert batches3 == []


@on_vcsim
async def test_several_disks_one_snapshot_one_sequence(
    vc: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    vm = await guest_vm(disks=3)
    for i, disk in enumerate(vm.disks):
        disk.write(i * MIB, bytes([i + 1]) * (300 * KIB))
    source = source_of(
        vc,
        vm,
        files,
        settings=SourceSettings(
            change_tracking="sidecar", batch_bytes=MIB // 4, read_chunk=64 * KIB
        ),
    )
    cycle, batches = await run_cycle(source)
    assert len(cycle.cycles) == 3
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    assert all(sum(e.length for e in b.extents if e.data) <= MIB // 4 for b in batches)
    ids = [c.source.disk_id for c in cycle.cycles]
    assert len(set(ids)) == 3
    for disk_id, disk in zip(ids, vm.disks, strict=True):
        image = bytearray(DISK)
        apply(image, [e for e in extents_of(batches) if e.disk_id == disk_id])
        assert bytes(image) == disk.read(0, DISK)
    assert set(source.state.disks) == set(ids)


@on_vcsim
async def test_snapshot_removed_when_reading_fails(
    vc: Any, guest_vm: VMFactory, files: DatastoreFiles, tmp_path: Path
) -> None:
    vm = await guest_vm()
    vm.disks[0].write(0, b"a" * (64 * KIB))
    source = source_of(vc, vm, files)
    opened: list[VMCycle] = []

    async def read_with_the_datastore_gone() -> None:
        async with source.open_cycle() as cycle:
            opened.append(cycle)
            assert len(await vc.snapshots(vm.uuid)) == 1
            cycle.cycles[0].flat = tmp_path / "gone-flat.vmdk"
            async for _ in cycle.extents():
                pass

    with pytest.raises(FileNotFoundError):
        await read_with_the_datastore_gone()
    (cycle,) = opened
    assert await vc.snapshots(vm.uuid) == ()
    with pytest.raises(CycleNotFinished):
        await source.complete(cycle)
    assert source.state == VMState()

    # A failing caller (the sink) too; and the next cycle starts afresh.
    with pytest.raises(RuntimeError, match="sink"):
        async with source.open_cycle():
            raise RuntimeError("sink refused")
    assert await vc.snapshots(vm.uuid) == ()
    cycle, batches = await run_cycle(source)
    assert covered(extents_of(batches)) == [(0, 64 * KIB)]


@on_vcsim
async def test_a_users_snapshot_is_refused_and_left_alone(
    vc: Any, si: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    vm = await guest_vm()
    vm_obj = si.content.searchIndex.FindByUuid(None, vm.uuid, True, True)
    task = vm_obj.CreateSnapshot_Task(
        name="before-upgrade", description="mine", memory=False, quiesce=False
    )
    assert (await vc.wait(task._moId, 30)).state == "success"
    before = await vc.snapshots(vm.uuid)
    source = source_of(vc, vm, files)
    with pytest.raises(UserSnapshotPresent, match="before-upgrade") as caught:
        async with source.open_cycle():
            pytest.fail("no cycle on a VM with a user's snapshot")
    assert caught.value.snapshots == before
    assert await vc.snapshots(vm.uuid) == before, "the user's snapshot is untouched"
    assert not vm_obj.config.changeTrackingEnabled, "nothing changed on the VM"


@on_vcsim
async def test_resume_after_a_crash_reuses_the_snapshot(
    vc: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    vm = await guest_vm()
    vm.disks[0].write(0, b"r" * (128 * KIB))
    crashed = source_of(vc, vm, files)
    taken = await crashed.take_snapshot()  # ... and the process dies before reading
    assert [s.moref for s in await vc.snapshots(vm.uuid)] == [taken.moref]

    before = vc.wire_calls()["CreateSnapshot_Task"]
    restarted = source_of(vc, vm, files, state=VMState.from_dict(crashed.state.to_dict()))
    cycle, batches = await run_cycle(restarted)
    assert cycle.snapshot.moref == taken.moref, "the same snapshot, not a second one"
    assert vc.wire_calls()["CreateSnapshot_Task"] == before
    assert covered(extents_of(batches)) == [(0, 128 * KIB)]
    assert await vc.snapshots(vm.uuid) == ()

    # A crash while the snapshot task ran: the persisted task moref is waited for.
    started = await vc.create_snapshot(
        vm.uuid, REPLICATION_SNAPSHOT, description="failback.io replication cycle 2"
    )
    again = source_of(vc, vm, files, state=restarted.state)
    snap = await again.take_snapshot(task=started.moref)
    assert snap.moref == (await vc.wait(started.moref, 30)).result
    assert again.pending is None
    # A task vCenter forgot: the snapshot list decides.
    lost = source_of(vc, vm, files, state=restarted.state)
    assert (await lost.take_snapshot(task="task-987654")).moref == snap.moref
    async with lost.open_cycle() as cycle:
        assert cycle.snapshot.moref == snap.moref
    assert await vc.snapshots(vm.uuid) == ()


@on_vcsim
async def test_a_stale_replication_snapshot_is_replaced(
    vc: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    vm = await guest_vm()
    source = source_of(vc, vm, files)
    await run_cycle(source)
    # The removal of cycle 1's snapshot "failed": it is still there at cycle 2.
    started = await vc.create_snapshot(
        vm.uuid, REPLICATION_SNAPSHOT, description="failback.io replication cycle 1"
    )
    stale = (await vc.wait(started.moref, 30)).result
    async with source.open_cycle() as cycle:
        assert cycle.snapshot.moref != stale
        assert [s.moref for s in await vc.snapshots(vm.uuid)] == [cycle.snapshot.moref]
        [_ async for _ in cycle.extents()]
    assert await vc.snapshots(vm.uuid) == ()


@on_vcsim
async def test_full_resync_after_a_resize_or_a_cbt_reset(
    vc: Any, si: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    from pyVmomi import vim

    vm = await guest_vm()
    (disk,) = vm.disks
    disk.write(MIB, b"1" * 4096)
    source = source_of(vc, vm, files)
    await run_cycle(source)

    # CBT reset (a new sidecar epoch): the old changeId is rejected → full resync.
    disk.reset_tracking()
    disk.write(2 * MIB, b"2" * 512)
    cycle, batches = await run_cycle(source)
    (report,) = cycle.reports
    assert report.mode is CycleMode.FULL_RESYNC
    assert "changeId rejected" in report.reason
    extents = extents_of(batches)
    sent = covered(extents)
    for start, end in [(MIB, MIB + 4096), (2 * MIB, 2 * MIB + 512)]:
        assert any(a <= start and end <= b for a, b in sent), "every allocated area"
    assert sum(e.length for e in extents) == DISK, "and zeros for the rest"
    image = bytearray(b"\xff" * DISK)  # the target may hold anything
    apply(image, extents)
    assert bytes(image) == disk.read(0, DISK)

    # The disk grows: full resync over the new capacity.
    vm_obj = si.content.searchIndex.FindByUuid(None, vm.uuid, True, True)
    dev = next(d for d in vm_obj.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
    dev.capacityInKB, dev.capacityInBytes = 2 * DISK // KIB, 2 * DISK
    edit = vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev)
    task = vm_obj.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[edit]))
    assert (await vc.wait(task._moId, 30)).state == "success"
    disk.grow(2 * DISK)
    disk.write(DISK + 4096, b"3" * 1024)
    cycle, batches = await run_cycle(source)
    (report,) = cycle.reports
    assert report.mode is CycleMode.FULL_RESYNC
    assert "resized" in report.reason
    assert report.size_bytes == 2 * DISK
    extents = extents_of(batches)
    assert sum(e.length for e in extents) == 2 * DISK
    image = bytearray(2 * DISK)
    apply(image, extents)
    assert bytes(image) == disk.read(0, 2 * DISK)
    assert source.state.disks[cycle.cycles[0].source.disk_id].capacity_bytes == 2 * DISK


@on_vcsim
async def test_vcenter_cbt_on_vcsim_is_unavailable_and_cleans_up(
    vc: Any, guest_vm: VMFactory, files: DatastoreFiles
) -> None:
    vm = await guest_vm()
    source = source_of(vc, vm, files, settings=SourceSettings(change_tracking="vcenter"))
    with pytest.raises(ChangedBlockTrackingUnavailable, match="sidecar"):
        async with source.open_cycle():
            pytest.fail("vcsim has no QueryChangedDiskAreas")
    assert await vc.snapshots(vm.uuid) == ()


@on_vcsim
async def test_a_datastore_without_a_directory_is_named(vc: Any, guest_vm: VMFactory) -> None:
    vm = await guest_vm()
    source = source_of(vc, vm, DatastoreFiles({"LocalDS_1": "/nonexistent"}))
    with pytest.raises(DiskFileNotFound, match="LocalDS_0"):
        async with source.open_cycle():
            pass
    assert await vc.snapshots(vm.uuid) == ()


# ------------------------------------------------------------------ pure units


def areas(*spans: tuple[int, int]) -> tuple[ChangedArea, ...]:
    return tuple(ChangedArea(s, e - s) for s, e in spans)


def test_normalize_aligns_merges_and_clips() -> None:
    raw = [ChangedArea(1000, 100), ChangedArea(0, 10), ChangedArea(1536, 512)]
    raw.append(ChangedArea(9000, 5000))
    # Sectors around each area; touching ones merged; the last one clipped at the end.
    assert normalize(raw, 10240) == areas((0, 2048), (8704, 10240))
    assert normalize([ChangedArea(0, 512), ChangedArea(512, 512)], 4096) == areas((0, 1024))
    assert normalize([ChangedArea(5000, 0)], 4096) == ()


def test_plan_reads_coalesces_close_areas_and_splits_long_ones() -> None:
    chunk, gap = 4096, 1024
    plan = plan_reads(areas((0, 512), (1024, 1536), (4096, 4608)), chunk, gap)
    assert [(r.start, r.end) for r in plan] == [(0, 1536), (4096, 4608)]
    assert plan[0].pieces == ((0, 512), (1024, 1536))
    long = plan_reads(areas((0, 10000 // 512 * 512)), chunk, gap)
    assert [(r.start, r.end) for r in long] == [(0, 4096), (4096, 8192), (8192, 9728)]
    # Coalescing never makes a read longer than one chunk.
    many = plan_reads(areas(*((i * 1024, i * 1024 + 512) for i in range(10))), chunk, gap + 1)
    assert all(r.end - r.start <= chunk for r in many)
    assert sum(len(r.pieces) for r in many) == 10
    assert len(many) == 3


def test_gaps_are_the_complement() -> None:
    assert gaps(areas((512, 1024), (2048, 4096)), 8192) == [(0, 512), (1024, 2048), (4096, 8192)]
    assert gaps((), 1024) == [(0, 1024)]


async def test_batched_limits_bytes_and_count() -> None:
    async def gen() -> AsyncIterator[Extent]:
        for i in range(5):
            yield Extent.of("d", i * 1024, b"\0" * 1024)
        yield Extent.zero("d", 8192, MAX_EXTENT)

    out = [b async for b in batched(gen(), 7, max_bytes=2048, max_count=3)]
    assert [b.seq for b in out] == [7, 8, 9]
    assert [len(b.extents) for b in out] == [2, 2, 2]


def test_sidecar_since_and_rejections(tmp_path: Path) -> None:
    flat = tmp_path / "d-flat.vmdk"
    flat.write_bytes(b"")
    disk = GuestDisk.prepare(flat, 8192)
    side = disk.sidecar
    assert read_sidecar(side, ALL, 8192) == ((), disk.change_id)
    first = disk.change_id
    disk.write(512, b"a" * 10)
    disk.write(4096, b"b" * 512)
    found, now = read_sidecar(side, first, 8192)
    assert found == areas((512, 1024), (4096, 4608))
    assert now == disk.change_id
    assert read_sidecar(side, now, 8192) == ((), now)
    epoch = now.split("/")[0]
    for bad in (f"{epoch}/99", "other/1", "garbage"):
        with pytest.raises(ChangeIdRejected):
            read_sidecar(side, bad, 8192)
    with side.open("a") as f:
        f.write('{"id": 3, "sta')  # torn: written before the data, so no data yet
    assert read_sidecar(side, ALL, 8192)[1] == now


def test_allocated_ranges_of_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with path.open("wb") as f:
        f.truncate(16 * MIB)
        f.seek(4 * MIB)
        f.write(b"x" * 4096)
    found = allocated_ranges(path, 16 * MIB)
    assert sum(a.length for a in found) < 16 * MIB or found == areas((0, 16 * MIB))
    assert any(a.start <= 4 * MIB < a.end for a in found)
    assert allocated_ranges(path, 0) == ()


def test_settings_and_state_validation() -> None:
    with pytest.raises(ValueError, match="read_chunk"):
        SourceSettings(read_chunk=1000)
    with pytest.raises(ValueError, match="read_chunk"):
        SourceSettings(read_chunk=MAX_EXTENT + 512)
    state = VMState.from_dict({"counter": 3, "disks": {"u": {"changeId": None}}})
    assert state.disks["u"].change_id is None
    assert VMState.from_dict(state.to_dict()) == state


class PagedCBT:
    """QueryChangedDiskAreas as vCenter answers it, one page per ``page`` bytes (vcsim has
    no such method, so its paging is tested against this stand-in of the port)."""

    def __init__(self, page: int, changed: list[ChangedArea], stall_at: int | None = None) -> None:
        self.page = page
        self.changed = changed
        self.stall_at = stall_at
        self.asked: list[tuple[int, str]] = []

    async def query_changed_areas(
        self, instance_uuid: str, snapshot: str, device_key: int, start_offset: int, change_id: str
    ) -> DiskChangeInfo:
        self.asked.append((start_offset, change_id))
        if start_offset == self.stall_at:
            return DiskChangeInfo(start_offset, 0, ())
        end = start_offset + self.page
        inside = tuple(a for a in self.changed if start_offset <= a.start < end)
        return DiskChangeInfo(start_offset, self.page, inside)


async def test_vcenter_changed_areas_pages_through_the_disk() -> None:
    changed = [ChangedArea(100, 10), ChangedArea(3 * MIB, 64 * KIB), ChangedArea(MIB, 512)]
    cbt = PagedCBT(MIB, changed)
    disk = SnapshotDisk(2000, "[ds] vm/d.vmdk", "u", 4 * MIB + 512, "52 aa/7")
    source = VCenterChangedAreas(cast(Any, cbt), "vm-uuid")
    found = await source.changed_areas("snapshot-1", disk, "52 aa/3")
    assert [at for at, _ in cbt.asked] == [0, MIB, 2 * MIB, 3 * MIB, 4 * MIB]
    assert {since for _, since in cbt.asked} == {"52 aa/3"}
    assert found.areas == areas((0, 512), (MIB, MIB + 512), (3 * MIB, 3 * MIB + 64 * KIB))
    assert found.change_id == "52 aa/7", "the snapshot disk's changeId"
    assert source.queries == 5

    stalled = VCenterChangedAreas(cast(Any, PagedCBT(MIB, changed, stall_at=MIB)), "vm-uuid")
    with pytest.raises(VSphereFault, match="no progress"):
        await stalled.changed_areas("snapshot-1", disk, "*")
