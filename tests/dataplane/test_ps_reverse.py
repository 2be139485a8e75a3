"""Reverse replication (reprotect after failback) as real processes: a vcsim VM's disks
(flat files written by the test bed's guest writer, changed areas from its CBT sidecar) →
`failback process-server` (an OnPremToAzure session) → Azure replica managed disks in the
emulator, with a point snapshot per cycle.

Every check compares the replica disks' bytes (read through the emulator's control API) with
the flat files' bytes at the point.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testbed.azure.process import AzureEmulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.guest import datastore_directories
from testbed.leaks import LeakGuard, guard_logs
from testbed.vcsim import VCenter

from .conftest import GuestVM

pytestmark = pytest.mark.testbed

MIB = 1 << 20
CAPACITY = 4 * MIB


@pytest.fixture
def rig(
    azure_emulator: AzureEmulator, vcenter: VCenter, si: Any, tmp_path: Path
) -> Iterator[DataPlane]:
    fast_emulator(azure_emulator)
    creds = tmp_path / "vcenter-credentials"
    creds.mkdir()
    for key, value in (
        ("server", f"{vcenter.host}:{vcenter.port}"),
        ("username", vcenter.username),
        ("password", vcenter.password),
        ("caBundle", vcenter.ca_file.read_text()),
    ):
        (creds / key).write_text(value)
    datastores = [f"--datastore={n}={d}" for n, d in datastore_directories(si).items()]
    plane = DataPlane(
        tmp_path / "dp",
        azure_emulator,
        ps_extra=(
            "--snapshot-rate=1000/1s",
            "--batch-size=256Ki",
            f"--vcenter-credentials={creds}",
            "--change-tracking=sidecar",
            *datastores,
        ),
    )
    guard = LeakGuard(secrets=[azure_emulator.client_secret, vcenter.password])
    with guard_logs(guard, azure_emulator.log_file, plane.ps.log):
        yield plane
        assert plane.ps.stop() == 0, plane.ps.tail()


def scribble(vm: GuestVM, rng: random.Random, writes: int = 8) -> None:
    for disk in vm.disks:
        for _ in range(writes):
            length = rng.randrange(1, 32) * 4096
            offset = rng.randrange(0, (CAPACITY - length) // 512) * 512
            disk.write(offset, rng.randbytes(length))


async def reverse_session(rig: DataPlane, vm: GuestVM, vc: Any, vcenter: VCenter) -> str:
    disks = (await vc.vm(vm.uuid)).disks
    name = f"rev-{vm.uuid[:8]}"
    body = {
        "direction": "OnPremToAzure",
        "subscriptionId": rig.emulator.subscription_id,
        "vcenter": {"server": f"{vcenter.host}:{vcenter.port}", "vmInstanceUuid": vm.uuid},
        "replicas": [
            {
                "sourceDiskUuid": d.uuid,
                "resourceGroup": rig.resource_group,
                "name": f"{name}-disk{i}-replica",
            }
            for i, d in enumerate(disks)
        ],
        "location": "westeurope",
        "intervalSeconds": 3600,
    }
    rig.ps.client.ok("PUT", f"/v1/sessions/dr/{name}", body)
    return name


def replica_bytes(rig: DataPlane, name: str, index: int) -> bytes:
    control = rig.emulator.control
    return b"".join(
        control.read_disk(rig.resource_group, f"{name}-disk{index}-replica", at, MIB)
        for at in range(0, CAPACITY, MIB)
    )


def assert_replicas_equal_flat_files(rig: DataPlane, name: str, vm: GuestVM) -> None:
    for index, disk in enumerate(vm.disks):
        assert replica_bytes(rig, name, index) == disk.read(0, CAPACITY), f"disk {index}"


async def test_reprotect_replicates_a_vsphere_vm_to_azure_replicas_byte_exact(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter
) -> None:
    vm: GuestVM = await guest_vm(disks=2, capacity=CAPACITY)
    rng = random.Random(5)
    scribble(vm, rng)
    rig.ps.start()
    name = await reverse_session(rig, vm, vc, vcenter)
    first = rig.wait_point(name, after=0)
    assert_replicas_equal_flat_files(rig, name, vm)
    assert {d["mode"] for d in first["lastCycle"]["disks"]} == {"Initial"}

    scribble(vm, rng)
    rig.cycle_now(name)
    second = rig.wait_point(name, after=1)
    assert_replicas_equal_flat_files(rig, name, vm)
    assert {d["mode"] for d in second["lastCycle"]["disks"]} == {"Incremental"}
    changed = sum(d["bytesChanged"] for d in second["lastCycle"]["disks"])
    assert 0 < changed < 2 * CAPACITY

    # Each point is an incremental snapshot of every replica; no SAS is left open.
    control = rig.emulator.control
    created = [e for e in control.events(kind="snapshot.created") if name in str(e)]
    assert len(created) == 4
    granted = [e for e in control.events(kind="access.granted") if name in str(e)]
    revoked = [e for e in control.events(kind="access.revoked") if name in str(e)]
    assert len(granted) == len(revoked) >= 4
    # The replication snapshot lives only while a cycle reads.
    assert (await vc.snapshots(vm.uuid)) == ()


async def test_a_killed_process_server_resumes_a_reverse_cycle(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter
) -> None:
    vm: GuestVM = await guest_vm(disks=1, capacity=CAPACITY)
    rng = random.Random(9)
    scribble(vm, rng, writes=16)
    rig.ps.start()
    name = await reverse_session(rig, vm, vc, vcenter)
    rig.wait_point(name, after=0)
    for round_ in range(6):
        scribble(vm, rng, writes=16)
        rig.cycle_now(name)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        rig.ps.kill()
        rig.ps.start()
        status = rig.session(name)
        if status["phase"] in ("Idle", "Paused") and status["cycleNumber"] == round_ + 1:
            rig.cycle_now(name)
        rig.wait_point(name, after=round_ + 1, timeout=90)
        assert_replicas_equal_flat_files(rig, name, vm)
    assert rig.resends() == 0


# ---------------------------------------------------------------------- issue 7: integrity,
# crash, resume and backpressure, as the forward direction's tests


T = TypeVar("T")


def poll(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """``probe()`` until it answers something true; fails with its last answer."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout:g}s; last: {last}")


def replica_events(rig: DataPlane, name: str, kind: str) -> list[dict[str, Any]]:
    """The emulator's events of ``kind`` about the session's replica disks (or their
    snapshots)."""
    return [e for e in rig.emulator.control.events(kind=kind) if name in e["resource_id"]]


def failing_with(rig: DataPlane, name: str, text: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = rig.session(name)
        error = status["lastError"]
        return status if error is not None and text in error["message"] else None

    return probe


def hits(control: Any, fault: str) -> int:
    """How many requests the fault rule ``fault`` caught so far."""
    return int(next(f["hits"] for f in control.faults() if f["id"] == fault))


def verification_failures(rig: DataPlane) -> int:
    """Cycles the PS logged as failed by the sink's read-back."""
    return sum(
        '"replication cycle failed"' in line and "WriteVerificationFailed" in line
        for line in rig.ps.log.read_text(errors="replace").splitlines()
    )


def assert_replica_equals(rig: DataPlane, name: str, index: int, disk: Any, size: int) -> None:
    """Compared a MiB at a time, so a difference names where it is."""
    control = rig.emulator.control
    for at in range(0, size, MIB):
        replica = control.read_disk(rig.resource_group, f"{name}-disk{index}-replica", at, MIB)
        assert replica == disk.read(at, MIB), f"disk {index} differs in the MiB at {at}"


def reverse_body(rig: DataPlane, server: str, vm_uuid: str, replica: str) -> dict[str, Any]:
    return {
        "direction": "OnPremToAzure",
        "subscriptionId": rig.emulator.subscription_id,
        "vcenter": {"server": server, "vmInstanceUuid": vm_uuid},
        "replicas": [
            {
                "sourceDiskUuid": str(uuid.uuid4()),
                "resourceGroup": rig.resource_group,
                "name": replica,
            }
        ],
        "location": "westeurope",
        "intervalSeconds": 3600,
    }


async def test_a_silently_corrupted_replica_write_fails_read_back_until_the_fault_ends(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter
) -> None:
    """Integrity at the sink: Put Pages answered 201 but stored with their first byte
    flipped are caught by the read-back; the session says so in ``lastError``, commits no
    point while it lasts, and converges byte-exact by itself once the fault is gone."""
    vm: GuestVM = await guest_vm(disks=1, capacity=CAPACITY)
    rng = random.Random(11)
    scribble(vm, rng)
    rig.ps.start()
    name = await reverse_session(rig, vm, vc, vcenter)
    first = rig.wait_point(name, after=0)
    control = rig.emulator.control
    points = len(replica_events(rig, name, "snapshot.created"))

    scribble(vm, rng)
    fault = control.add_fault("corrupt", for_seconds=3600)  # a minute of real time at most
    try:
        rig.cycle_now(name)
        failing = poll("a read-back failure", failing_with(rig, name, "WriteVerificationFailed"))
        assert failing["lastError"]["code"] == "Permanent", failing["lastError"]
        # It keeps trying, and keeps failing, while the fault lasts.
        poll("a second failed attempt", lambda: verification_failures(rig) >= 2)
        during = rig.session(name)
        assert "WriteVerificationFailed" in during["lastError"]["message"], during
    finally:
        control.remove_fault(fault)
    for status in (failing, during):
        assert (status["cycleNumber"], status["lastPoint"]) == (1, first["lastPoint"])
    assert len(replica_events(rig, name, "snapshot.created")) == points, "a point was committed"

    settled = rig.wait_point(name, after=1, timeout=60)  # no cycle_now: the retry does it
    assert settled["lastError"] is None
    assert settled["lastPoint"] != first["lastPoint"]
    assert_replicas_equal_flat_files(rig, name, vm)
    assert len(replica_events(rig, name, "snapshot.created")) == points + 1


async def test_a_stopped_azure_keeps_the_ps_queue_and_memory_bounded(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter, azure_emulator: AzureEmulator
) -> None:
    """Backpressure: the emulator (every replica write) SIGSTOPped mid-cycle. The PS stops
    reading once its queue is full, so the queue stays within --max-queue and its memory
    flat while the disk holds far more than the queue; after SIGCONT the cycle finishes
    byte-exact. The idle memory is read after a small first cycle, so it holds nothing of
    a large one."""
    rig.ps_extra = (*rig.ps_extra, "--max-queue=512Ki")
    size, chunk = 64 * MIB, 4 * MIB
    vm: GuestVM = await guest_vm(disks=1, capacity=size)
    disk = vm.disks[0]
    rng = random.Random(13)

    def rewrite_everything() -> None:
        for at in range(0, size, chunk):
            disk.write(at, rng.randbytes(chunk))

    disk.write(0, rng.randbytes(64 * 1024))
    rig.ps.start()
    name = await reverse_session(rig, vm, vc, vcenter)
    rig.wait_point(name, after=0)
    rss_idle = rig.ps.client.ok("GET", "/v1/health")["residentBytes"]

    rewrite_everything()  # the next cycle moves 64 MiB, 128 times the queue
    rig.cycle_now(name)
    poll(
        "the cycle copying",
        lambda: (s := rig.session(name))["phase"] == "Copying" and s["cycle"]["batchesSent"] >= 4,
    )
    os.kill(azure_emulator.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(1.0)
        stalled_at = rig.session(name)["cycle"]["batchesSent"]
        healths = []
        for _ in range(6):
            await asyncio.sleep(0.5)
            healths.append(rig.ps.client.ok("GET", "/v1/health"))
        stalled = rig.session(name)
    finally:
        os.kill(azure_emulator.pid, signal.SIGCONT)
    assert stalled["phase"] == "Copying", stalled
    assert stalled["cycle"]["batchesSent"] == stalled_at, "batches went through a stopped Azure"
    assert stalled_at * 256 * 1024 < size // 2, "the cycle was nearly done before Azure stopped"
    queues = [h["queueBytes"] for h in healths]
    assert all(0 < q <= 512 * 1024 for q in queues), queues
    resident = [h["residentBytes"] for h in healths]
    assert max(resident) - rss_idle < 16 * MIB, (rss_idle, resident)
    assert max(resident) - min(resident) < 4 * MIB, resident

    settled = rig.wait_point(name, after=1, timeout=120)
    assert {d["mode"] for d in settled["lastCycle"]["disks"]} == {"Incremental"}
    assert_replica_equals(rig, name, 0, disk, size)


async def test_a_vm_with_a_users_snapshot_is_refused_and_left_alone(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter, si: Any
) -> None:
    vm: GuestVM = await guest_vm(disks=1, capacity=CAPACITY)
    scribble(vm, random.Random(17))
    vm_obj = si.content.searchIndex.FindByUuid(None, vm.uuid, True, True)
    task = vm_obj.CreateSnapshot_Task(
        name="before-upgrade", description="mine", memory=False, quiesce=False
    )
    assert (await vc.wait(task._moId, 30)).state == "success"
    before = await vc.snapshots(vm.uuid)
    rig.ps.start()
    name = await reverse_session(rig, vm, vc, vcenter)
    status = poll("the refusal", failing_with(rig, name, "before-upgrade"))
    error = status["lastError"]
    assert error["code"] == "Permanent", error
    assert error["message"].startswith("UserSnapshotPresent:"), error
    assert (status["cycleNumber"], status["lastPoint"]) == (0, None)
    assert await vc.snapshots(vm.uuid) == before, "the user's snapshot is untouched"
    for kind in ("disk.created", "access.granted", "snapshot.created"):
        assert replica_events(rig, name, kind) == [], f"{kind}: a replica was written"


async def test_a_session_for_another_vcenter_names_the_one_the_ps_holds_credentials_for(
    rig: DataPlane, vcenter: VCenter
) -> None:
    rig.ps.start()
    name = "rev-elsewhere"
    body = reverse_body(rig, "vcenter.example.com", str(uuid.uuid4()), f"{name}-disk0-replica")
    rig.ps.client.ok("PUT", f"/v1/sessions/dr/{name}", body)
    status = poll("the refusal", failing_with(rig, name, "vcenter.example.com"))
    error = status["lastError"]
    assert error["code"] == "Permanent", error
    assert f"holds credentials for vCenter {vcenter.host}:{vcenter.port}" in error["message"]
    assert replica_events(rig, name, "disk.created") == []


def test_bad_reverse_bodies_and_a_shared_replica_are_refused(
    rig: DataPlane, vcenter: VCenter
) -> None:
    rig.ps.start()
    server = f"{vcenter.host}:{vcenter.port}"
    good = reverse_body(rig, server, str(uuid.uuid4()), "rev-shared-disk0-replica")
    good["paused"] = True  # no cycle: the VM does not exist
    rig.ps.client.ok("PUT", "/v1/sessions/dr/rev-first", good)

    def changed(path: str, value: Any) -> dict[str, Any]:
        body: Any = {
            **good,
            "vcenter": dict(good["vcenter"]),
            "replicas": [dict(r) for r in good["replicas"]],
        }
        *parents, leaf = path.split(".")
        where = body
        for key in parents:
            where = where[int(key) if key.isdigit() else key]
        where[leaf] = value
        return dict(body)

    for field, body in (
        ("vcenter.vmInstanceUuid", changed("vcenter.vmInstanceUuid", "vm-42")),
        ("replicas[0].sourceDiskUuid", changed("replicas.0.sourceDiskUuid", "scsi0:0")),
        ("location", changed("location", "West Europe")),
        ("retentionSeconds", changed("retentionSeconds", 5)),
        ("direction", changed("direction", "Sideways")),
    ):
        code, answer = rig.ps.client.request("PUT", "/v1/sessions/dr/rev-bad", body)
        assert code == 400, (field, answer)
        assert answer["error"]["code"] == "invalid_field", answer
        assert answer["error"]["field"] == field, answer

    for replica in ("rev-shared-disk0-replica", "REV-Shared-Disk0-Replica"):
        other = reverse_body(rig, server, str(uuid.uuid4()), replica)
        code, answer = rig.ps.client.request("PUT", "/v1/sessions/dr/rev-second", other)
        assert code == 409, (replica, answer)
        assert answer["error"]["code"] == "group_in_use", answer
        assert "dr/rev-first" in answer["error"]["message"], answer
    listed = rig.ps.client.ok("GET", "/v1/sessions")["sessions"]
    assert [s["name"] for s in listed] == ["rev-first"]


async def test_a_ps_killed_with_a_write_sas_open_revokes_it_and_converges(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter
) -> None:
    """Resume: the PS is SIGKILLed while the replicas' write SAS are open (Put Pages slowed
    so the cycle is caught copying); after the restart every SAS granted is revoked and
    the replicas converge."""
    vm: GuestVM = await guest_vm(disks=2, capacity=CAPACITY)
    rng = random.Random(19)
    control = rig.emulator.control
    replicas = [f"rev-{vm.uuid[:8]}-disk{i}-replica" for i in range(len(vm.disks))]

    def grants() -> dict[str, tuple[int, int]]:
        """(granted, revoked) per replica disk."""
        granted = control.events(kind="access.granted")
        revoked = control.events(kind="access.revoked")
        return {
            replica: (
                sum(e["resource_id"].endswith(f"/{replica}") for e in granted),
                sum(e["resource_id"].endswith(f"/{replica}") for e in revoked),
            )
            for replica in replicas
        }

    def balanced() -> dict[str, tuple[int, int]] | None:
        now = grants()
        return now if all(g == r for g, r in now.values()) else None

    rig.ps.start()
    for round_ in range(2):  # the initial cycle (replicas being created), an incremental one
        scribble(vm, rng)
        slow = control.add_fault("delay", route="blob_write", seconds=0.2, for_seconds=3600)
        try:
            if round_ == 0:
                name = await reverse_session(rig, vm, vc, vcenter)
            else:
                rig.cycle_now(name)
            poll("a Put Page under way", lambda rule=slow: hits(control, rule) > 0)
            rig.ps.kill()
        finally:
            control.remove_fault(slow)
        at_kill = grants()
        assert any(g > r for g, r in at_kill.values()), f"no SAS open at the kill: {at_kill}"
        rig.ps.start()
        rig.wait_point(name, after=round_, timeout=60)
        assert_replicas_equal_flat_files(rig, name, vm)
        balance = poll("every SAS revoked", balanced)
        assert all(g >= round_ + 1 for g, _ in balance.values()), balance


async def test_a_silently_corrupted_vhd_footer_write_never_reaches_a_point(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter
) -> None:
    """The footer (the last 512 bytes of the replica, the first Put Page of a cycle) is
    checked as the batches are: one corrupted write of it must not be committed."""
    vm: GuestVM = await guest_vm(disks=1, capacity=CAPACITY)
    rng = random.Random(23)
    scribble(vm, rng)
    rig.ps.start()
    name = await reverse_session(rig, vm, vc, vcenter)
    rig.wait_point(name, after=0)
    control = rig.emulator.control
    replica = f"{name}-disk0-replica"
    footer = control.read_disk(rig.resource_group, replica, CAPACITY, 512)
    assert footer.startswith(b"conectix"), "a fixed VHD footer after the data"

    scribble(vm, rng)
    control.add_fault("corrupt", times=1)  # the cycle's first Put Page: the footer
    rig.cycle_now(name)
    rig.wait_point(name, after=1)
    assert_replicas_equal_flat_files(rig, name, vm)
    point = [
        e for e in replica_events(rig, name, "snapshot.created") if replica in e["resource_id"]
    ]
    snapshot = point[-1]["resource_id"].rsplit("/", 1)[1]
    in_point = control.read_snapshot(rig.resource_group, snapshot, CAPACITY, 512)
    assert in_point == footer, f"the point holds the footer {in_point[:8]!r}"
