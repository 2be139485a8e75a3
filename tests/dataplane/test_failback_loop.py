"""The data plane's whole cycle, twice around: Azure → on-premises → Azure → on-premises.

1. replicate an Azure managed disk (emulator) into the flat file of a vcsim VM's disk, which
   the master target opens *by its disk UUID* through ``--disk-resolver datastore:``;
2. fail back: stop the session, release the MT group; the on-premises guest writes;
3. reprotect: replicate the vcsim disk to an Azure replica (OnPremToAzure);
4. fail over to Azure from the replica's newest point (a VM attached to the replica);
   the Azure guest writes;
5. replicate that VM's disk back into the same vcsim flat file (the MT sees a new session
   on a group with old points: a full resync).

After each leg the destination's bytes equal the source's, byte for byte.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter, AzureOptions
from failback.dataplane.sink_azure import ManagedDiskSink, SinkState, failover_to_azure
from failback.ports.azure import ClientSecret
from testbed.azure.process import AzureEmulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.guest import datastore_directories
from testbed.leaks import LeakGuard, guard_logs
from testbed.vcsim import VCenter

from .conftest import GuestVM

pytestmark = pytest.mark.testbed

MIB = 1 << 20
SIZE = 4 * MIB
SUBNET = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/"
    "vnet/subnets/default"
)


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
    directories = datastore_directories(si)
    datacenter = si.content.rootFolder.childEntity[0]._moId
    plane = DataPlane(
        tmp_path / "dp",
        azure_emulator,
        ps_extra=(
            "--snapshot-rate=1000/1s",
            f"--vcenter-credentials={creds}",
            "--change-tracking=sidecar",
            *(f"--datastore={n}={d}" for n, d in directories.items()),
        ),
        mt_extra=(f"--disk-resolver=datastore:{directories['LocalDS_0']},datacenter={datacenter}",),
    )
    guard = LeakGuard(secrets=[azure_emulator.client_secret, vcenter.password])
    with guard_logs(guard, azure_emulator.log_file, plane.ps.log, plane.mt.log):
        yield plane
        plane.stop()


def azure_write(rig: DataPlane, disk: str, rng: random.Random, writes: int = 8) -> None:
    specs = []
    for _ in range(writes):
        length = rng.randrange(1, 32) * 4096
        offset = rng.randrange(0, (SIZE - length) // 512) * 512
        specs.append({"offset": offset, "data": base64.b64encode(rng.randbytes(length)).decode()})
    rig.emulator.control.guest_writes(rig.resource_group, disk, specs, require_running=False)


def same_file(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def azure_bytes(rig: DataPlane, disk: str) -> bytes:
    control = rig.emulator.control
    return b"".join(
        control.read_disk(rig.resource_group, disk, at, MIB) for at in range(0, SIZE, MIB)
    )


def forward_body(rig: DataPlane, disk: str, uuid: str) -> dict[str, Any]:
    return {
        "subscriptionId": rig.emulator.subscription_id,
        "masterTarget": {"endpoint": f"https://127.0.0.1:{rig.mt.client.port}", "group": "loop"},
        "disks": [{"resourceGroup": rig.resource_group, "name": disk, "targetDiskId": uuid}],
        "intervalSeconds": 3600,
    }


async def test_azure_to_onprem_to_azure_to_onprem(
    rig: DataPlane, guest_vm: Any, vc: Any, vcenter: VCenter
) -> None:
    rng = random.Random(42)
    vm: GuestVM = await guest_vm(disks=1, capacity=SIZE)
    uuid = (await vc.vm(vm.uuid)).disks[0].uuid
    flat = vm.disks[0]
    control = rig.emulator.control

    # 1. Azure → on-premises, into the vcsim disk found by its UUID.
    control.create_disk(rig.resource_group, "loop-os", SIZE)
    azure_write(rig, "loop-os", rng)
    rig.mt_extra = (*rig.mt_extra, f"--disk={uuid}", f"--group=loop={uuid}")
    rig.start()
    listening = [json.loads(line) for line in rig.mt.log.read_text().splitlines()]
    resolved = next(e for e in listening if e.get("message") == "listening")["disks"][uuid]
    assert same_file(resolved, flat.flat)
    rig.ps.client.ok("PUT", "/v1/sessions/dr/loop", forward_body(rig, "loop-os", uuid))
    rig.wait_point("loop", after=0)
    assert flat.read(0, SIZE) == azure_bytes(rig, "loop-os")

    # 2. Failback: replication stops, the group is released, the VM runs on-premises.
    rig.ps.client.ok("DELETE", "/v1/sessions/dr/loop")
    rig.mt.client.ok("POST", "/v1/groups/loop/release")
    for _ in range(8):
        length = rng.randrange(1, 32) * 4096
        flat.write(rng.randrange(0, (SIZE - length) // 512) * 512, rng.randbytes(length))

    # 3. Reprotect: on-premises → Azure replica.
    reverse = {
        "direction": "OnPremToAzure",
        "subscriptionId": rig.emulator.subscription_id,
        "vcenter": {"server": f"{vcenter.host}:{vcenter.port}", "vmInstanceUuid": vm.uuid},
        "replicas": [
            {"sourceDiskUuid": uuid, "resourceGroup": rig.resource_group, "name": "loop-replica"}
        ],
        "location": "westeurope",
        "intervalSeconds": 3600,
    }
    rig.ps.client.ok("PUT", "/v1/sessions/dr/loop-back", reverse)
    rig.wait_point("loop-back", after=0)
    assert azure_bytes(rig, "loop-replica") == flat.read(0, SIZE)

    # 4. Fail over to Azure from the replica's newest point.
    saved = json.loads((rig.root / "ps-state" / "sessions" / "dr_loop-back.target").read_text())
    rig.ps.client.ok("DELETE", "/v1/sessions/dr/loop-back")
    emulator = rig.emulator
    adapter = AzureClientsAdapter(
        AzureOptions(
            arm_endpoint=emulator.arm_url,
            authority=emulator.authority,
            ca_file=str(emulator.ca_file),
            poll_interval=0.05,
            writes_per_hour=36_000.0,
        )
    )
    try:
        compute = await adapter.compute(
            ClientSecret(emulator.tenant_id, emulator.client_id, emulator.client_secret),
            emulator.subscription_id,
        )
        sink = ManagedDiskSink(
            compute,
            rig.resource_group,
            "loop-replica",
            SIZE,
            location="westeurope",
            disk_id=uuid,
            state=SinkState.from_dict(saved["sinks"][uuid]),
        )
        result = await failover_to_azure(
            compute,
            [sink],
            vm_name="loop-azure",
            vm_size="Standard_D2s_v3",
            subnet_id=SUBNET.format(sub=emulator.subscription_id, rg=rig.resource_group),
        )
    finally:
        await adapter.close()
    azure_disk = result.disks[0].name
    assert azure_bytes(rig, azure_disk) == flat.read(0, SIZE)
    azure_write(rig, azure_disk, rng)

    # 5. Azure → on-premises again, into the same disk: the MT group is taken back (a
    # released group stays released across restarts; the operator takes it back once the
    # disk is attached to the MT again), and the new session's first cycle is a full
    # resync over the old points.
    rig.mt.stop()
    rig.mt.start()
    assert rig.mt.client.ok("GET", "/v1/groups/loop")["state"] == "released"
    rig.mt.client.ok("PUT", "/v1/groups/loop", {"disks": [{"id": uuid, "sizeBytes": SIZE}]})
    rig.ps.client.ok("PUT", "/v1/sessions/dr/loop-again", forward_body(rig, azure_disk, uuid))
    status = rig.wait_point("loop-again", after=0)
    assert {d["mode"] for d in status["lastCycle"]["disks"]} == {"FullResync"}
    assert flat.read(0, SIZE) == azure_bytes(rig, azure_disk)
