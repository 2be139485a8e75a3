"""The Azure sink against the test bed's emulator: a replica disk written through a Write
SAS, read back by samples, recovery points as incremental snapshots, failover to a VM.

The emulator's clock runs 60 times faster than real time with short operations (as in
test_source_azure). Every test greps what was logged (here and by the emulator) for SAS
signatures, tokens and the client secret.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest

from failback.adapters.azure.compute import vm_body
from failback.dataplane.journal import (
    Batch,
    Extent,
    PointOrderError,
    SequenceError,
    SourceChecksumMismatch,
)
from failback.dataplane.sink_azure import (
    VHD_FOOTER,
    CycleStillOpen,
    FailoverState,
    ManagedDiskSink,
    NotAReplica,
    SinkPoint,
    SinkSettings,
    SinkState,
    WriteVerificationFailed,
    failover_to_azure,
    point_snapshot_name,
    replica_size,
    vhd_footer,
)
from failback.ports.azure import (
    AzureCompute,
    AzureThrottled,
    AzureUnavailable,
    OperationHandle,
    OperationKind,
    PowerState,
    VMDeployment,
)
from testbed.azure.process import AzureEmulator
from testbed.leaks import LeakGuard, guard_logs

from .conftest import guarded_compute

pytestmark = pytest.mark.testbed

RG = "rg-failback-sink-tests"
SCALE = 60.0
FAST = 6.0
PAGE = 512
MIB = 1 << 20
SIZE = 12 * MIB + 3 * PAGE  # not MiB aligned: the replica is rounded up
T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
SUBNET = (
    "/subscriptions/x/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def emulator(azure_emulator: AzureEmulator) -> Iterator[AzureEmulator]:
    control = azure_emulator.control
    control.reset()
    control.set_time_scale(SCALE)
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
    for url in recorder.sas_urls:
        assert "sig=" in url


def settings(emulator: AzureEmulator, **changes: Any) -> SinkSettings:
    base: dict[str, Any] = {
        "ca_file": str(emulator.ca_file),
        "snapshot_window": 300.0 / SCALE,
        "max_inline_wait": 1.0,
        "poll_interval": 0.05,
        "request_timeout": 10.0,
        "verify_seed": 7,
    }
    base.update(changes)
    return SinkSettings(**base)


def new_sink(
    emulator: AzureEmulator,
    compute: AzureCompute,
    state: SinkState | None = None,
    name: str = "vm1-replica0",
    **changes: Any,
) -> ManagedDiskSink:
    return ManagedDiskSink(
        compute,
        RG,
        name,
        SIZE,
        location="westeurope",
        disk_id="scsi0:0",
        os_type="Linux",
        state=state,
        settings=settings(emulator, **changes),
    )


# ------------------------------------------------------------------ helpers


def pattern(seed: int, length: int) -> bytes:
    block = bytes((seed * 31 + i) % 251 for i in range(4096))
    return (block * (length // 4096 + 1))[:length]


def data(offset: int, payload: bytes) -> Extent:
    return Extent.of("scsi0:0", offset, payload)


def zero(offset: int, length: int) -> Extent:
    return Extent.zero("scsi0:0", offset, length)


def apply_model(image: bytearray, batches: list[Batch]) -> None:
    for batch in batches:
        for ext in batch.extents:
            image[ext.offset : ext.offset + ext.length] = ext.data or bytes(ext.length)


def disk_bytes(emu: AzureEmulator, name: str, size: int = SIZE) -> bytes:
    return b"".join(
        emu.control.read_disk(RG, name, at, min(4 * MIB, size - at))
        for at in range(0, size, 4 * MIB)
    )


def events_of(emu: AzureEmulator, kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in emu.control.events(kind=kind) if e["resource_id"].endswith(f"/{name}")]


def blob_writes(emu: AzureEmulator) -> int:
    return int(emu.control.stats()["requests"]["blob_write"])


def first_batches() -> list[Batch]:
    return [
        Batch(
            1,
            [
                data(0, pattern(1, 64 << 10)),
                data(2 * MIB, pattern(2, 5 * MIB)),  # longer than one Put Page: split
                data(SIZE - 4 * PAGE, pattern(3, 4 * PAGE)),  # the disk's last pages
            ],
        ),
        Batch(2, [data(9 * MIB, pattern(4, 3 * PAGE)), zero(2 * MIB + 4096, MIB)]),
    ]


# ------------------------------------------------------------------ tests


async def test_batches_are_written_cleared_and_verified_through_one_write_sas(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)
    disk = await sink.ensure_disk()
    assert disk.size_bytes == replica_size(SIZE) == 13 * MIB + VHD_FOOTER
    assert disk.tags["failback.io/role"] == "replica"
    assert (await sink.ensure_disk()).id == disk.id  # idempotent
    assert len(events_of(emulator, "disk.created", "vm1-replica0")) == 1

    emulator.control.reset_stats()
    batches = first_batches()
    async with sink.open_cycle() as cycle:
        for batch in batches:
            assert await cycle.apply(batch)
    image = bytearray(SIZE)
    apply_model(image, batches)
    assert disk_bytes(emulator, "vm1-replica0") == bytes(image)
    assert disk_bytes(emulator, "vm1-replica0")[2 * MIB + 4096 : 3 * MIB + 4096] == bytes(MIB)
    footer = emulator.control.read_disk(RG, "vm1-replica0", 13 * MIB, VHD_FOOTER)
    assert footer.startswith(b"conectix")
    assert sink.state.applied_seq == 2
    # 1 footer + 1 + 2 (5 MiB split at 4 MiB) + 1 + 1 + 1 clear.
    assert cycle.report.blob.writes == blob_writes(emulator) == 7
    assert cycle.report.bytes_cleared == MIB
    # First, last and one random sector of each of the 5 extents, some read together.
    assert cycle.report.samples >= 5 * 2
    assert 0 < cycle.report.blob.reads <= cycle.report.samples
    granted = events_of(emulator, "access.granted", "vm1-replica0")
    assert [e["access"] for e in granted] == ["Write"]
    assert len(events_of(emulator, "access.revoked", "vm1-replica0")) == 1
    assert not sink.state.sas_open
    assert (await compute.get_disk(RG, "vm1-replica0")).disk_state == "Unattached"  # type: ignore[union-attr]


async def test_a_resent_batch_is_harmless_and_a_durable_one_is_skipped(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)
    batches = first_batches()
    async with sink.open_cycle() as cycle:
        await cycle.apply(batches[0])
        after_first = SinkState.from_dict(sink.state.to_dict())  # persisted
        await cycle.apply(batches[1])
    image = bytearray(SIZE)
    apply_model(image, batches)

    # Crash after batch 2 was written but before its state was persisted: the PS resends
    # it. The writes are offset-addressed: the same bytes land at the same offsets.
    again = new_sink(emulator, compute, after_first)
    async with again.open_cycle() as cycle:
        assert await cycle.apply(batches[1])
        # The state now says batch 2 is durable: one more resend costs no write at all.
        before = blob_writes(emulator)
        assert not await cycle.apply(batches[1])
        assert blob_writes(emulator) == before
        assert cycle.report.batches_skipped == 1
        # A batch that skips ahead (one was lost) is refused.
        with pytest.raises(SequenceError):
            await cycle.apply(Batch(4, [data(0, pattern(9, PAGE))]))
    assert disk_bytes(emulator, "vm1-replica0") == bytes(image)


async def test_a_corrupted_extent_is_refused_with_nothing_written(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)
    good = data(0, pattern(5, 8192))
    payload = pattern(6, 8192)
    bad = Extent("scsi0:0", MIB, len(payload), payload[:-1] + b"\x00", data(MIB, payload).checksum)
    async with sink.open_cycle() as cycle:
        before = blob_writes(emulator)
        with pytest.raises(SourceChecksumMismatch):
            await cycle.apply(Batch(1, [good, bad]))
        assert blob_writes(emulator) == before
    assert sink.state.applied_seq == 0
    assert disk_bytes(emulator, "vm1-replica0", 2 * MIB) == bytes(2 * MIB)
    assert len(events_of(emulator, "access.revoked", "vm1-replica0")) == 1


async def test_read_back_catches_a_disk_that_changed_under_the_sink(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)

    async def cycle_with_a_corrupt_write() -> None:
        async with sink.open_cycle() as cycle:
            # The next Put Page is answered 201 but stored with a flipped first byte.
            emulator.control.add_fault("corrupt", times=1)
            await cycle.apply(Batch(1, [data(MIB, pattern(7, 64 << 10))]))

    with pytest.raises(WriteVerificationFailed) as caught:
        await cycle_with_a_corrupt_write()
    assert caught.value.offset == MIB
    assert sink.state.applied_seq == 0  # not durable: the batch is sent again
    assert not sink.state.sas_open
    assert len(events_of(emulator, "access.revoked", "vm1-replica0")) == 1


async def test_throttles_are_waited_per_retry_after_and_failures_revoke_the_sas(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    sink = new_sink(emulator, compute)
    async with sink.open_cycle() as cycle:
        control.add_fault("error", route="blob_write", status=429, retry_after=1, times=1)
        control.add_fault("error", route="blob_read", status=503, retry_after=1, times=1)
        assert await cycle.apply(Batch(1, [data(0, pattern(8, 8192))]))
    assert cycle.report.blob.retries == 2

    async def cycle_with_failing_writes() -> None:
        async with sink.open_cycle() as cycle:
            reports.append(cycle.report)
            control.add_fault("error", route="blob_write", status=500, times=10)
            await cycle.apply(Batch(2, [data(0, pattern(9, 8192))]))

    reports: list[Any] = []
    with pytest.raises(AzureUnavailable) as failed:
        await cycle_with_failing_writes()
    control.clear_faults()
    assert "sig=" not in str(failed.value)
    assert "vm1-replica0 bytes 0-8191" in str(failed.value)
    assert reports[0].blob.writes == 1 + 3  # footer, then 3 attempts
    assert len(events_of(emulator, "access.granted", "vm1-replica0")) == 2
    assert len(events_of(emulator, "access.revoked", "vm1-replica0")) == 2
    assert sink.state.applied_seq == 1


async def test_points_are_snapshots_taken_once_across_a_crash(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    sink = new_sink(emulator, compute)
    batches = first_batches()
    async with sink.open_cycle() as cycle:
        await cycle.apply(batches[0])
        with pytest.raises(CycleStillOpen):
            await sink.commit_point("p1", T0, app_consistent=True)
    persisted = sink.state.to_dict()  # the last state saved before the "crash"
    point = await sink.commit_point("p1", T0, app_consistent=True)
    assert point.seq == 1
    assert point.app_consistent
    snap = await compute.get_snapshot(RG, point.snapshot)
    assert snap is not None
    assert snap.incremental
    assert snap.tags["failback.io/source-time"] == T0.isoformat()
    assert snap.tags["failback.io/app-consistent"] == "true"

    # A new process from the state persisted before the point: the snapshot is found by
    # its deterministic name and reused, not taken twice.
    control.reset_stats()
    again = new_sink(emulator, compute, SinkState.from_dict(persisted))
    assert await again.commit_point("p1", T0, app_consistent=True) == point
    assert "snapshots/createOrUpdate" not in control.stats()["arm_writes_by_operation"]
    assert [p.point_id for p in await again.points()] == ["p1"]
    with pytest.raises(PointOrderError):
        await again.commit_point("p0", T0 - dt.timedelta(minutes=5), app_consistent=False)

    # A crash inside a cycle left its SAS open: the point revokes it first.
    crashed = new_sink(emulator, compute, SinkState.from_dict({**persisted, "sasOpen": True}))
    await crashed.commit_point("p2", T0 + dt.timedelta(minutes=15), app_consistent=False)
    assert not crashed.state.sas_open
    assert [p.point_id for p in await crashed.points()] == ["p1", "p2"]
    image = bytearray(SIZE)
    apply_model(image, batches[:1])
    snap_bytes = b"".join(
        control.read_snapshot(RG, point.snapshot, at, min(4 * MIB, SIZE - at))
        for at in range(0, SIZE, 4 * MIB)
    )
    assert snap_bytes == bytes(image)


async def test_points_are_pruned_by_retention_never_the_newest(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)
    await sink.ensure_disk()
    hours = [0, 1, 2, 3, 4, 5]
    for h in hours:
        await sink.commit_point(f"p{h}", T0 + dt.timedelta(hours=h), app_consistent=h in (1, 3))
        emulator.control.advance(60.0)
    assert [p.point_id for p in await sink.points()] == [f"p{h}" for h in hours]

    deleted = await sink.prune(
        dt.timedelta(hours=2),
        T0 + dt.timedelta(hours=5),
        keep_app_consistent_every=dt.timedelta(hours=2),
    )
    # Within retention (from 03:00): p3, p4, p5. Expired: p0, p1, p2, of which p1 is the
    # app-consistent point of its 2-hour interval and stays.
    assert sorted(p.point_id for p in deleted) == ["p0", "p2"]
    assert [p.point_id for p in await sink.points()] == ["p1", "p3", "p4", "p5"]
    deleted = await sink.prune(dt.timedelta(0), T0 + dt.timedelta(hours=48))
    assert [p.point_id for p in await sink.points()] == ["p5"]  # never the newest
    assert len(deleted) == 3
    assert [p.point_id for p in sink.state.points] == ["p5"]


async def test_point_snapshots_are_paced_below_the_azure_rate(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    control = emulator.control
    control.set_limits(snapshots_per_window=2, snapshot_window_seconds=3000.0)
    sink = new_sink(emulator, compute, snapshots_per_window=2, snapshot_window=50.0)
    await sink.commit_point("a", T0, app_consistent=False)
    await sink.commit_point("b", T0 + dt.timedelta(minutes=5), app_consistent=False)
    control.reset_stats()
    with pytest.raises(AzureThrottled) as paced:
        await sink.commit_point("c", T0 + dt.timedelta(minutes=10), app_consistent=False)
    assert paced.value.code == "SnapshotRatePaced"
    assert 40.0 < paced.value.delay <= 50.0
    assert control.stats()["arm_writes_by_operation"].get("snapshots/createOrUpdate", 0) == 0
    # Another process that does not know: Azure's 429 once, then paced locally.
    fresh = new_sink(emulator, compute, sink.state, snapshots_per_window=2, snapshot_window=50.0)
    for _ in range(2):
        with pytest.raises(AzureThrottled):
            await fresh.commit_point("c", T0 + dt.timedelta(minutes=10), app_consistent=False)
    assert control.stats()["arm_writes_by_operation"].get("snapshots/createOrUpdate", 0) == 1


async def test_a_disk_of_that_name_that_is_no_replica_is_never_written(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    emulator.control.create_disk(RG, "somebody-elses", 16 * MIB)
    sink = new_sink(emulator, compute, name="somebody-elses")
    with pytest.raises(NotAReplica):
        async with sink.open_cycle():
            pass
    assert not events_of(emulator, "access.granted", "somebody-elses")


async def test_failover_boots_a_vm_from_a_point_with_its_bytes(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)
    batches = first_batches()
    async with sink.open_cycle() as cycle:
        await cycle.apply(batches[0])
    await sink.commit_point("p1", T0, app_consistent=True)
    async with sink.open_cycle() as cycle:
        await cycle.apply(batches[1])
    await sink.commit_point("p2", T0 + dt.timedelta(minutes=15), app_consistent=False)
    at_p1 = bytearray(SIZE)
    apply_model(at_p1, batches[:1])

    state = FailoverState()
    result = await failover_to_azure(
        compute, [sink], vm_name="vm1-fo", vm_size="Standard_D2s_v3", subnet_id=SUBNET,
        point_id="p1", state=state,
    )  # fmt: skip
    assert not result.used_replica
    assert result.point.point_id == "p1"
    assert result.vm.power_state is PowerState.RUNNING
    assert result.vm.os_disk.id is not None
    assert result.vm.os_disk.id.lower() == result.disks[0].id.lower()
    assert disk_bytes(emulator, "vm1-fo-disk0") == bytes(at_p1)
    assert state.pending == {}

    # Again (a retried pass): nothing new is written.
    emulator.control.reset_stats()
    again = await failover_to_azure(
        compute, [sink], vm_name="vm1-fo", vm_size="Standard_D2s_v3", subnet_id=SUBNET,
        point_id="p1", state=FailoverState.from_dict(state.to_dict()),
    )  # fmt: skip
    assert again.vm.id == result.vm.id
    assert emulator.control.stats()["requests"]["arm_write"] == 0


async def test_failover_to_the_newest_point_attaches_the_replica_itself(
    emulator: AzureEmulator, compute: AzureCompute
) -> None:
    sink = new_sink(emulator, compute)
    batches = first_batches()
    async with sink.open_cycle() as cycle:
        for batch in batches:
            await cycle.apply(batch)
    await sink.commit_point("p1", T0, app_consistent=True)
    image = bytearray(SIZE)
    apply_model(image, batches)
    result = await failover_to_azure(
        compute, [sink], vm_name="vm1-latest", vm_size="Standard_D2s_v3", subnet_id=SUBNET
    )
    assert result.used_replica
    assert result.disks[0].name == "vm1-replica0"
    assert events_of(emulator, "disk.attached", "vm1-replica0")
    assert disk_bytes(emulator, "vm1-replica0") == bytes(image)
    assert not events_of(emulator, "disk.created", "vm1-latest-disk0")  # no copy


# ------------------------------------------------------------------ pure parts


def test_names_sizes_footer_state_and_the_attach_body() -> None:
    assert replica_size(MIB) == MIB + VHD_FOOTER
    assert replica_size(MIB + PAGE) == 2 * MIB + VHD_FOOTER
    with pytest.raises(ValueError, match="multiple"):
        replica_size(MIB + 1)
    footer = vhd_footer(13 * MIB, b"u" * 16)
    assert len(footer) == VHD_FOOTER
    assert footer[:8] == b"conectix"
    assert int.from_bytes(footer[48:56], "big") == 13 * MIB
    stored = int.from_bytes(footer[64:68], "big")
    assert stored == (~sum(footer[:64] + bytes(4) + footer[68:])) & 0xFFFFFFFF

    long_id = "point/" + "x" * 200
    names = {point_snapshot_name("fbp", "d" * 90, pid) for pid in ("p1", "p2", long_id)}
    assert len(names) == 3
    for name in names:
        assert len(name) <= 80
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9_]", name)
    assert point_snapshot_name("fbp", "d", long_id) == point_snapshot_name("fbp", "d", long_id)

    state = SinkState(
        disk_created=True,
        applied_seq=9,
        sas_open=True,
        points=(SinkPoint("p1", "snap-1", T0, True, 9),),
        snapshot_pending=OperationHandle(OperationKind.SNAPSHOT_CREATE, RG, "snap-2", "tok"),
    )
    assert SinkState.from_dict(json.loads(json.dumps(state.to_dict()))) == state

    body = vm_body(
        VMDeployment.from_disks(
            resource_group=RG,
            name="vm1",
            location="westeurope",
            vm_size="Standard_D2s_v3",
            subnet_id=SUBNET,
            os_disk_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/os",
            data_disk_ids=(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
            ),
            tags={},
        )
    )
    storage = body["properties"]["storageProfile"]
    assert "osProfile" not in body["properties"]
    assert "imageReference" not in storage
    assert storage["osDisk"]["createOption"] == "Attach"
    assert storage["dataDisks"][0]["lun"] == 0
