"""The Azure source against the test bed's emulator: snapshots, SAS, page-range diffs, extents.

The emulator's clock runs 60 times faster than real time (5 emulated minutes, the snapshot
rate window, are 5 real seconds) with short operations. Every test greps what was logged
(here and by the emulator) for SAS signatures, tokens and the client secret.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from failback.dataplane.journal import MAX_EXTENT, Batch, Extent, extent_checksum
from failback.dataplane.source_azure import (
    CycleMode,
    CycleNotFinished,
    DiskCycle,
    DiskGroupSource,
    DiskState,
    ManagedDiskSource,
    SourceSettings,
)
from failback.errors import Retryable
from failback.ports.azure import (
    AzureCompute,
    AzureOperationFailed,
    AzureThrottled,
    AzureUnavailable,
)
from testbed.azure.process import AzureEmulator
from testbed.leaks import LeakGuard, guard_logs

from .conftest import guarded_compute

pytestmark = pytest.mark.testbed

RG = "rg-failback-source-tests"
SCALE = 60.0
FAST = 6.0
PAGE = 512
MIB = 1 << 20


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def emulator(azure_emulator: AzureEmulator) -> Iterator[AzureEmulator]:
    control = azure_emulator.control
    control.reset()
    control.set_time_scale(SCALE)
    # Operations take 0.1 s; polls follow the client's 50 ms interval, not Retry-After's 1 s.
    control.set_limits(
        durations=dict.fromkeys(control.limits()["durations"], FAST), poll_retry_after=0
    )
    control.create_resource_group(RG)
    yield azure_emulator
    control.clear_faults()


@pytest.fixture(autouse=True)
def leak_guard(emulator: AzureEmulator) -> Iterator[LeakGuard]:
    """Every log line of the test and the emulator's log: no secret may show up in one."""
    with guard_logs(LeakGuard(secrets=[emulator.client_secret]), emulator.log_file) as guard:
        yield guard


@pytest.fixture
async def compute(emulator: AzureEmulator, leak_guard: LeakGuard) -> AsyncIterator[AzureCompute]:
    async with guarded_compute(emulator, leak_guard) as recorder:
        yield cast(AzureCompute, recorder)
    assert recorder.sas_urls, "the test saw no SAS URL to guard"
    for url in recorder.sas_urls:
        assert "sig=" in url


def settings(emulator: AzureEmulator, **changes: Any) -> SourceSettings:
    base: dict[str, Any] = {
        "ca_file": str(emulator.ca_file),
        "segment_bytes": 4 * MIB,
        "read_chunk": 256 << 10,
        "coalesce_gap": 8 << 10,
        "snapshot_window": 300.0 / SCALE,
        "max_inline_wait": 1.0,
        "poll_interval": 0.05,
        "request_timeout": 10.0,
    }
    base.update(changes)
    return SourceSettings(**base)


# ------------------------------------------------------------------ helpers


@dataclass
class Collected:
    extents: list[Extent]
    batches: list[Batch]

    @property
    def data(self) -> list[Extent]:
        return [e for e in self.extents if e.data is not None]

    @property
    def zeros(self) -> list[Extent]:
        return [e for e in self.extents if e.data is None]


async def run_cycle(
    source: ManagedDiskSource, first_seq: int = 1, complete: bool = True
) -> tuple[Any, Collected]:
    batches: list[Batch] = []
    async with source.open_cycle() as cycle:
        async for batch in cycle.batches(first_seq):
            batches.append(batch)
    if complete:
        await source.complete(cycle)
    return cycle, Collected([e for b in batches for e in b.extents], batches)


def apply(image: bytearray, extents: list[Extent]) -> None:
    for ext in extents:
        if ext.data is None:
            image[ext.offset : ext.offset + ext.length] = bytes(ext.length)
        else:
            assert len(ext.data) == ext.length
            assert extent_checksum(ext.data) == ext.checksum
            image[ext.offset : ext.offset + ext.length] = ext.data


def pages_of(extents: list[Extent]) -> set[int]:
    return {p for e in extents for p in range(e.offset // PAGE, (e.offset + e.length) // PAGE)}


def pages(offset: int, length: int) -> set[int]:
    return set(range(offset // PAGE, (offset + length + PAGE - 1) // PAGE))


def pattern(seed: int, length: int) -> bytes:
    block = bytes((seed * 31 + i) % 251 for i in range(4096))
    return (block * (length // 4096 + 1))[:length]


def snapshot_bytes(emu: AzureEmulator, name: str, size: int) -> bytes:
    return b"".join(
        emu.control.read_snapshot(RG, name, at, min(4 * MIB, size - at))
        for at in range(0, size, 4 * MIB)
    )


def events(emu: AzureEmulator, kind: str) -> list[dict[str, Any]]:
    return emu.control.events(kind=kind)


def assert_every_grant_revoked(emu: AzureEmulator) -> int:
    granted = [e for e in events(emu, "access.granted") if "/snapshots/" in str(e)]
    revoked = [e for e in events(emu, "access.revoked") if "/snapshots/" in str(e)]
    assert granted, "no access was granted"
    assert len(revoked) == len(granted)
    return len(granted)


# ------------------------------------------------------------------ tests


async def test_first_cycle_copies_exactly_the_allocated_ranges(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    size = 16 * MIB
    control.create_vm(RG, "vm1", data_disk_sizes=(size,))
    writes = [(4096, 1000), (4 * MIB - 2048, 4096), (9 * MIB, 700 << 10), (size - PAGE, PAGE)]
    for i, (offset, length) in enumerate(writes):
        control.guest_write(RG, "vm1-data0", offset, pattern(i, length))
    expected_pages = set().union(*(pages(o, n) for o, n in writes))
    source = ManagedDiskSource(compute, RG, "vm1-data0", settings=settings(emulator))
    control.reset_stats()

    cycle, got = await run_cycle(source, first_seq=7)

    report = cycle.report
    assert cycle.mode is CycleMode.INITIAL
    assert got.zeros == []
    assert pages_of(got.data) == expected_pages
    assert report.bytes_changed == len(expected_pages) * PAGE
    assert report.source_time == (await compute.get_snapshot(RG, cycle.snapshot.name)).time_created
    image = bytearray(size)
    apply(image, got.extents)
    assert bytes(image) == snapshot_bytes(emulator, cycle.snapshot.name, size)
    # Bounded reads: one listing per 4 MiB segment, no read above the chunk size.
    assert report.segments == 4
    assert report.blob.ranges == 4
    assert all(e.length <= 256 << 10 for e in got.data)
    # 1 + 2 (the write across 4 MiB lies in two segments) + ceil(700 KiB / 256 KiB) + 1
    assert report.blob.reads == 7
    assert report.bytes_read == report.bytes_changed
    assert [b.seq for b in got.batches] == list(range(7, 7 + len(got.batches)))
    stats = control.stats()
    assert stats["requests"]["blob_read"] == report.blob.total
    assert stats["throttled"] == 0
    assert assert_every_grant_revoked(emulator) == 1
    assert source.state.base is not None
    assert source.state.base.name == cycle.snapshot.name


async def test_second_cycle_yields_written_ranges_and_cleared_ranges_as_zeros(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    size = 8 * MIB
    control.create_vm(RG, "vm2", data_disk_sizes=(size,))
    control.guest_write(RG, "vm2-data0", 0, pattern(1, 2 * MIB))
    control.guest_write(RG, "vm2-data0", 5 * MIB, pattern(2, MIB))
    source = ManagedDiskSource(compute, RG, "vm2-data0", settings=settings(emulator))
    first, got1 = await run_cycle(source)
    image = bytearray(size)
    apply(image, got1.extents)

    control.guest_write(RG, "vm2-data0", 100 * PAGE, pattern(3, 10 * PAGE))  # overwrite
    control.guest_write(RG, "vm2-data0", 3 * MIB, pattern(4, 3000))  # new, unaligned end
    control.guest_write(RG, "vm2-data0", 5 * MIB, pattern(2, PAGE))  # same bytes, rewritten
    control.guest_clear(RG, "vm2-data0", MIB, 256 << 10)  # discard
    control.guest_clear(RG, "vm2-data0", 5 * MIB + 64 * PAGE, 64 * PAGE)
    control.reset_stats()

    second, got2 = await run_cycle(source, first_seq=got1.batches[-1].seq + 1)

    assert second.mode is CycleMode.INCREMENTAL
    assert first.snapshot.name in second.report.reason
    written = pages(100 * PAGE, 10 * PAGE) | pages(3 * MIB, 3000) | pages(5 * MIB, PAGE)
    cleared = pages(MIB, 256 << 10) | pages(5 * MIB + 64 * PAGE, 64 * PAGE)
    assert pages_of(got2.data) == written
    assert pages_of(got2.zeros) == cleared
    assert second.report.bytes_cleared == len(cleared) * PAGE
    assert second.report.bytes_changed == len(written) * PAGE
    assert second.report.ranges_changed == 3
    assert second.report.ranges_cleared == 2
    assert second.report.blob.ranges == 2  # one diff listing per 4 MiB segment
    apply(image, got2.extents)
    assert bytes(image) == snapshot_bytes(emulator, second.snapshot.name, size)
    assert second.source_time > first.source_time
    # The superseded base is deleted only at complete(); the new one is the base now.
    deleted = [e for e in events(emulator, "snapshot.deleted") if first.snapshot.name in str(e)]
    assert len(deleted) == 1
    assert await compute.get_snapshot(RG, first.snapshot.name) is None
    assert source.state.base is not None
    assert source.state.base.name == second.snapshot.name
    assert DiskState.from_dict(source.state.to_dict()) == source.state
    assert assert_every_grant_revoked(emulator) == 3  # 1 + (new + base)
    assert got2.batches[0].seq == got1.batches[-1].seq + 1


async def test_reads_ahead_give_the_same_batches_as_one_read_at_a_time(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    """A resumed cycle skips the batches the target already has: they must be the same
    batches however the reads overlapped."""
    control = emulator.control
    control.create_vm(RG, "vm9", data_disk_sizes=(8 * MIB,))
    for at in range(0, 8 * MIB, 700 * 1024):
        control.guest_write(RG, "vm9-data0", at, pattern(at // 1024, 96 << 10))
    control.guest_clear(RG, "vm9-data0", 2 * MIB, 512 << 10)
    snapshot = await ManagedDiskSource(
        compute, RG, "vm9-data0", settings=settings(emulator)
    ).take_snapshot()
    seen = []
    for ahead in (1, 4):
        source = ManagedDiskSource(
            compute, RG, "vm9-data0", settings=settings(emulator, read_ahead=ahead)
        )
        async with source.open_cycle(snapshot, resync="compare read-ahead") as cycle:
            seen.append([b async for b in cycle.batches(1, batch_bytes=256 << 10)])
    assert seen[0] == seen[1]
    assert len(seen[0]) > 4


async def test_the_base_stays_until_the_cycle_is_confirmed(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm3", data_disk_sizes=(2 * MIB,))
    control.guest_write(RG, "vm3-data0", 0, pattern(5, 8192))
    source = ManagedDiskSource(compute, RG, "vm3-data0", settings=settings(emulator))
    first, _ = await run_cycle(source)
    control.guest_write(RG, "vm3-data0", 8192, pattern(6, 8192))

    second, got = await run_cycle(source, complete=False)  # the sink never confirmed it
    assert got.data
    assert await compute.get_snapshot(RG, first.snapshot.name) is not None
    assert source.state.base is not None
    assert source.state.base.name == first.snapshot.name

    # A restart (a new source from the persisted state) resumes the same snapshot: no second
    # snapshot write, the same changes again.
    control.reset_stats()
    again = ManagedDiskSource(
        compute, RG, "vm3-data0", state=source.state, settings=settings(emulator)
    )
    third, got3 = await run_cycle(again)
    assert third.snapshot.name == second.snapshot.name
    assert control.stats()["arm_writes_by_operation"].get("snapshots/createOrUpdate", 0) == 0
    assert [(e.offset, e.length) for e in got3.extents] == [
        (e.offset, e.length) for e in got.extents
    ]
    async with again.open_cycle() as unread:  # opened, never read
        pass
    with pytest.raises(CycleNotFinished):
        await again.complete(unread)


async def test_more_than_10000_ranges_are_paged_with_markers(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    count = 10_050
    size = 12 * MIB
    control.create_vm(RG, "vm4", data_disk_sizes=(size,))
    control.guest_writes(
        RG,
        "vm4-data0",
        [{"offset": 2 * i * PAGE, "length": PAGE, "fill": i % 200 + 1} for i in range(count)],
    )
    source = ManagedDiskSource(
        compute,
        RG,
        "vm4-data0",
        settings=settings(emulator, segment_bytes=1 << 30, read_chunk=4 * MIB, coalesce_gap=4096),
    )
    control.reset_stats()

    cycle, got = await run_cycle(source)

    report = cycle.report
    assert report.ranges_changed == count
    assert len(got.data) == count
    assert pages_of(got.data) == {2 * i for i in range(count)}
    # One segment (the disk is smaller than 1 GiB): two listing answers (10,000 + 50);
    # reads coalesced over the one-page gaps: ceil(span / 4 MiB) GETs, not 10,050.
    assert report.segments == 1
    assert report.blob.ranges == 2
    span = 2 * (count - 1) * PAGE + PAGE
    assert report.blob.reads == -(-span // (4 * MIB))
    assert report.bytes_read <= span
    assert control.stats()["requests"]["blob_read"] == report.blob.total
    image = bytearray(size)
    apply(image, got.extents)
    assert bytes(image) == snapshot_bytes(emulator, cycle.snapshot.name, size)


async def test_sas_is_revoked_when_reading_fails(
    emulator: AzureEmulator, compute: AzureCompute, leak_guard: LeakGuard
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm5", data_disk_sizes=(8 * MIB,))
    control.guest_write(RG, "vm5-data0", 0, pattern(7, 64 << 10))
    control.guest_write(RG, "vm5-data0", 6 * MIB, pattern(8, 64 << 10))
    # One GET at a time, so the fault added after the first extent hits the next read.
    source = ManagedDiskSource(compute, RG, "vm5-data0", settings=settings(emulator, read_ahead=1))
    control.reset_stats()

    opened: list[DiskCycle] = []

    async def read_until_it_fails() -> None:
        async with source.open_cycle() as cycle:
            opened.append(cycle)
            async for _ in cycle.extents():
                # The first segment is read: from now on every blob GET fails.
                if not control.faults():
                    control.add_fault("error", route="blob_read", method="GET", status=500, times=3)

    with pytest.raises(AzureUnavailable) as failed:
        await read_until_it_fails()
    cycle = opened[0]

    assert isinstance(failed.value, Retryable)
    message = str(failed.value)
    assert "sig=" not in message
    assert "https://" not in message
    assert cycle.snapshot.name in message
    assert "500" in message
    leak_guard.lines.append(message)
    assert cycle.closed
    assert not cycle.finished
    assert assert_every_grant_revoked(emulator) == 1
    assert control.stats()["faults_injected"] == 3  # the first try and two retries, no more
    # Not confirmed: the cycle cannot complete, and the next one runs on the same snapshot.
    with pytest.raises(CycleNotFinished):
        await source.complete(cycle)
    retry, got = await run_cycle(source)
    assert retry.snapshot.name == cycle.snapshot.name
    assert pages_of(got.data) == pages(0, 64 << 10) | pages(6 * MIB, 64 << 10)


async def test_sas_is_revoked_when_the_caller_fails(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm6", data_disk_sizes=(2 * MIB,))
    control.guest_write(RG, "vm6-data0", 0, pattern(9, 8192))
    source = ManagedDiskSource(compute, RG, "vm6-data0", settings=settings(emulator))
    await run_cycle(source)
    control.guest_write(RG, "vm6-data0", 0, pattern(10, 8192))

    modes: list[CycleMode] = []

    async def fail_inside() -> None:
        async with source.open_cycle() as cycle:
            modes.append(cycle.mode)
            raise RuntimeError("sink down")

    with pytest.raises(RuntimeError, match="sink down"):
        await fail_inside()
    assert modes == [CycleMode.INCREMENTAL]
    assert assert_every_grant_revoked(emulator) == 3


async def test_the_snapshot_rate_is_honoured_without_a_storm(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    # 2 snapshots per 3,000 emulated seconds (50 real): a wait far beyond an inline one.
    control.set_limits(snapshots_per_window=2, snapshot_window_seconds=3000.0)
    control.create_vm(RG, "vm7", data_disk_sizes=(MIB,))
    control.guest_write(RG, "vm7-data0", 0, pattern(11, 4096))
    tuned = settings(emulator, snapshots_per_window=2, snapshot_window=50.0)
    source = ManagedDiskSource(compute, RG, "vm7-data0", settings=tuned)
    await run_cycle(source)
    await run_cycle(source)
    control.reset_stats()

    # Paced on this side: refused before any request reaches Azure.
    with pytest.raises(AzureThrottled) as paced:
        await source.take_snapshot()
    assert paced.value.code == "SnapshotRatePaced"
    assert 40.0 < paced.value.delay <= 50.0
    assert control.stats()["arm_writes_by_operation"].get("snapshots/createOrUpdate", 0) == 0

    # A source that does not know (another process, a restart): Azure's 429 comes back as
    # AzureThrottled with its Retry-After, after exactly one request.
    fresh = ManagedDiskSource(compute, RG, "vm7-data0", state=source.state, settings=tuned)
    with pytest.raises(AzureThrottled) as throttled:
        await fresh.take_snapshot()
    assert throttled.value.delay > 30.0
    stats = control.stats()
    assert stats["throttled"] == 1
    assert stats["arm_writes_by_operation"].get("snapshots/createOrUpdate", 0) == 1
    # And it remembers: the next try is paced locally, not sent.
    with pytest.raises(AzureThrottled):
        await fresh.take_snapshot()
    assert control.stats()["arm_writes_by_operation"].get("snapshots/createOrUpdate", 0) == 1


async def test_a_short_snapshot_throttle_is_waited_once(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm8", data_disk_sizes=(MIB,))
    control.guest_write(RG, "vm8-data0", 0, pattern(12, 4096))
    control.add_fault(
        "error", route="arm_write", method="PUT", path="/snapshots/", status=429, retry_after=1
    )
    source = ManagedDiskSource(
        compute, RG, "vm8-data0", settings=settings(emulator, max_inline_wait=2.0)
    )
    control.reset_stats()
    cycle, got = await run_cycle(source)
    assert got.data
    stats = control.stats()
    assert stats["throttled"] == 1
    assert stats["arm_writes_by_operation"]["snapshots/createOrUpdate"] == 2
    assert cycle.report.arm_calls > 0


async def test_a_deleted_base_snapshot_means_a_full_resync(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    size = 6 * MIB
    control.create_vm(RG, "vm9", data_disk_sizes=(size,))
    control.guest_write(RG, "vm9-data0", MIB, pattern(13, MIB))
    source = ManagedDiskSource(compute, RG, "vm9-data0", settings=settings(emulator))
    first, _ = await run_cycle(source)
    await compute.wait(await compute.begin_snapshot_delete(RG, first.snapshot.name))
    control.guest_write(RG, "vm9-data0", 4 * MIB, pattern(14, 4096))

    cycle, got = await run_cycle(source)

    assert cycle.mode is CycleMode.FULL_RESYNC
    assert "gone" in cycle.report.reason
    assert first.snapshot.name in cycle.report.reason
    assert pages_of(got.data) == pages(MIB, MIB) | pages(4 * MIB, 4096)
    # Everything else is sent as zeros (the target may hold anything): the whole disk.
    assert pages_of(got.extents) == set(range(size // PAGE))
    assert sum(e.length for e in got.extents) == size
    assert all(e.length <= MAX_EXTENT for e in got.extents)
    image = bytearray(b"\xee" * size)
    apply(image, got.extents)
    assert bytes(image) == snapshot_bytes(emulator, cycle.snapshot.name, size)
    assert source.state.base is not None
    assert source.state.base.name == cycle.snapshot.name


async def test_a_group_snapshots_every_disk_and_numbers_batches_across_them(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm10", os_disk_size=4 * MIB, data_disk_sizes=(4 * MIB, 2 * MIB))
    disks = ["vm10-os", "vm10-data0", "vm10-data1"]
    for i, disk in enumerate(disks):
        control.guest_write(RG, disk, i * 4096, pattern(20 + i, 300 << 10))
    tuned = settings(emulator, batch_bytes=128 << 10, read_chunk=64 << 10)
    group = DiskGroupSource(
        [ManagedDiskSource(compute, RG, d, disk_id=f"disk-{d}", settings=tuned) for d in disks]
    )
    async with group.open_cycle() as cycle:
        batches = [b async for b in cycle.batches(41, tuned)]
    states = await group.complete(cycle)

    assert [b.seq for b in batches] == list(range(41, 41 + len(batches)))
    assert all(sum(e.length for e in b.extents if e.data) <= 128 << 10 for b in batches)
    # 3 x 300 KiB in extents of at most 64 KiB (5 per disk), two per 128 KiB batch; a batch
    # may carry the end of one disk and the start of the next.
    assert len(batches) == 8
    by_disk = {e.disk_id for b in batches for e in b.extents}
    assert by_disk == {f"disk-{d}" for d in disks}
    assert cycle.source_time == min(r.source_time for r in cycle.reports)
    assert [s.base.name for s in states if s.base] == [c.snapshot.name for c in cycle.cycles]
    assert all(r.bytes_changed == 300 << 10 for r in cycle.reports)
    assert assert_every_grant_revoked(emulator) == 3


async def resize(emulator: AzureEmulator, disk: str, size_gb: int) -> None:
    """Grow a disk through ARM (createOrUpdate of an existing disk with a larger size)."""
    from azure.identity.aio import ClientSecretCredential
    from azure.mgmt.compute.aio import ComputeManagementClient

    credential = ClientSecretCredential(
        emulator.tenant_id,
        emulator.client_id,
        emulator.client_secret,
        **emulator.credential_kwargs(),
    )
    async with (
        credential,
        ComputeManagementClient(
            credential, emulator.subscription_id, **emulator.arm_client_kwargs()
        ) as client,
    ):
        body: Any = {"location": "westeurope", "properties": {"diskSizeGB": size_gb}}
        poller = await client.disks.begin_create_or_update(RG, disk, body, polling_interval=0.05)
        await poller.result()


async def test_a_resize_across_4_tib_means_a_full_resync(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.create_disk(RG, "big", 64 * MIB)
    control.guest_write(RG, "big", 8 * MIB, pattern(30, 64 << 10), require_running=False)
    tuned = settings(emulator, segment_bytes=512 << 30)
    source = ManagedDiskSource(compute, RG, "big", settings=tuned)
    first, _ = await run_cycle(source)
    assert first.mode is CycleMode.INITIAL
    await resize(emulator, "big", 4097)  # 4 TiB + 1 GiB
    control.guest_write(RG, "big", (4096 << 30) + MIB, pattern(31, 4096), require_running=False)

    cycle, got = await run_cycle(source)

    size = 4097 << 30
    report = cycle.report
    assert cycle.mode is CycleMode.FULL_RESYNC
    assert "4 TiB" in report.reason
    assert report.size_bytes == size
    assert pages_of(got.data) == pages(8 * MIB, 64 << 10) | pages((4096 << 30) + MIB, 4096)
    for ext in got.data:
        expected = control.read_snapshot(RG, cycle.snapshot.name, ext.offset, ext.length)
        assert ext.data == expected
    # Every other byte of the 4 TiB disk is sent as zeros, without reading it.
    assert sum(e.length for e in got.extents) == size
    assert report.bytes_cleared == size - report.bytes_changed
    assert report.bytes_read == report.bytes_changed
    assert report.blob.ranges == report.segments == 9  # listings of 512 GiB each
    offsets = [e.offset for e in got.extents]
    assert offsets == sorted(offsets)


async def test_a_recreated_disk_means_a_full_resync(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    size = 4 * MIB
    control.create_disk(RG, "again", size)
    control.guest_write(RG, "again", 0, pattern(40, 8192), require_running=False)
    source = ManagedDiskSource(compute, RG, "again", settings=settings(emulator))
    first, _ = await run_cycle(source)
    # The disk is deleted and made again under the same name: the base snapshot survives,
    # but belongs to the old disk's snapshot family.
    await compute.wait(await compute.begin_disk_delete(RG, "again"))
    control.create_disk(RG, "again", size)
    control.guest_write(RG, "again", MIB, pattern(41, 4096), require_running=False)

    cycle, got = await run_cycle(source)

    assert cycle.mode is CycleMode.FULL_RESYNC
    assert "another snapshot family" in cycle.report.reason
    assert first.snapshot.name in cycle.report.reason
    assert pages_of(got.data) == pages(MIB, 4096)
    assert sum(e.length for e in got.extents) == size
    image = bytearray(b"\xee" * size)
    apply(image, got.extents)
    assert bytes(image) == snapshot_bytes(emulator, cycle.snapshot.name, size)
    assert assert_every_grant_revoked(emulator) == 3


async def test_a_failed_snapshot_is_reported_and_taken_again(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm11", data_disk_sizes=(MIB,))
    control.guest_write(RG, "vm11-data0", 0, pattern(50, 4096))
    control.add_fault("fail_operation", path="/snapshots/", code="InternalDiskManagementError")
    source = ManagedDiskSource(compute, RG, "vm11-data0", settings=settings(emulator))

    with pytest.raises(AzureOperationFailed, match="InternalDiskManagementError"):
        await source.take_snapshot()
    assert events(emulator, "access.granted") == []

    cycle, got = await run_cycle(source)
    assert cycle.mode is CycleMode.INITIAL
    assert pages_of(got.data) == pages(0, 4096)
