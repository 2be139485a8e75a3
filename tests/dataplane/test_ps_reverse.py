"""Reverse replication (reprotect after failback) as real processes: a vcsim VM's disks
(flat files written by the test bed's guest writer, changed areas from its CBT sidecar) →
`failback process-server` (an OnPremToAzure session) → Azure replica managed disks in the
emulator, with a point snapshot per cycle.

Every check compares the replica disks' bytes (read through the emulator's control API) with
the flat files' bytes at the point.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        if status["phase"] in ("Idle", "Paused") and status["lastPoint"].endswith(
            f"{round_ + 1:09d}"
        ):
            rig.cycle_now(name)
        rig.wait_point(name, after=round_ + 1, timeout=90)
        assert_replicas_equal_flat_files(rig, name, vm)
    assert rig.resends() == 0
