"""The vSphere operations later steps use, each idempotent, on vcsim."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pyVmomi import vim

from failback.adapters.vsphere import Sessions
from failback.domain.vsphere import ControllerKind, PowerState
from failback.ports.vsphere import NewDisk, NewVM, NotFound, VMPlacement
from testbed.vcsim import VCenter

from .conftest import VMMaker, credentials, vm_of, wait_task


async def test_find_a_vm_by_instance_uuid_with_its_facts(vc: Any, make_vm: VMMaker) -> None:
    uuid = await make_vm(disks=2)
    vm = await vc.vm(uuid)
    assert vm is not None
    assert vm.instance_uuid == uuid
    assert vm.extra_value("disk.enableuuid") == "TRUE"
    assert [d.datastore for d in vm.disks] == ["FB_VMFS_0", "FB_VMFS_0"]
    assert all(d.uuid for d in vm.disks)
    assert [c.kind for c in vm.controllers if c.kind != ControllerKind.OTHER] == [
        ControllerKind.LSI_LOGIC_SAS
    ]
    assert vm.snapshots == ()
    assert vm.tools_running is not None
    assert await vc.vm("00000000-0000-4000-8000-000000000000") is None


async def test_power_on_and_off_are_idempotent(vc: Any, make_vm: VMMaker) -> None:
    uuid = await make_vm()
    started = await vc.power_on(uuid)
    assert started is not None
    assert (await vc.wait(started.moref, 30)).state == "success"
    assert await vc.power_on(uuid) is None, "already on: nothing to do"
    assert (await vc.vm(uuid)).power_state == PowerState.ON
    stopped = await vc.power_off(uuid)
    assert stopped is not None
    assert (await vc.wait(stopped.moref, 30)).state == "success"
    assert await vc.power_off(uuid) is None
    assert (await vc.vm(uuid)).power_state == PowerState.OFF


async def test_create_vm_again_finds_the_vm_instead_of_a_second_one(
    vc: Any, make_vm: VMMaker
) -> None:
    uuid = await make_vm(host="DC0_C0_H1", datastore="LocalDS_0")
    vm = await vc.vm(uuid)
    assert vm is not None
    inventory = await vc.inventory(max_age=0)
    assert inventory.host(vm.host).name == "DC0_C0_H1"
    again = NewVM(
        name=vm.name,
        guest_id="otherLinux64Guest",
        placement=VMPlacement(datacenter="DC0", datastore="LocalDS_0", cluster="DC0_C0"),
        instance_uuid=uuid,
    )
    assert await vc.create_vm(again) == vm.moref


async def test_hot_add_and_detach_disks_idempotently(vc: Any, make_vm: VMMaker) -> None:
    master = await make_vm(disks=1)
    target = await make_vm(disks=2)
    files = [d.file_name for d in (await vc.vm(target)).disks]
    detached = await vc.detach_disks(target, files)
    assert (await vc.wait(detached.moref, 30)).state == "success"
    assert await vc.detach_disks(target, files) is None
    assert (await vc.vm(target)).disks == ()

    new = [NewDisk(f"[FB_VMFS_0] {(await vc.vm(master)).name}/new.vmdk", 1 << 30)]
    added = await vc.attach_disks(master, files, new)
    assert (await vc.wait(added.moref, 30)).state == "success", await vc.task(added.moref)
    assert await vc.attach_disks(master, files, new) is None
    on_master = {d.file_name for d in (await vc.vm(master)).disks}
    assert set(files) | {new[0].file_name} <= on_master

    # Back to the target VM: attach disks to a target VM.
    assert (await vc.wait((await vc.detach_disks(master, files)).moref, 30)).state == "success"
    assert (await vc.wait((await vc.attach_disks(target, files)).moref, 30)).state == "success"
    assert {d.file_name for d in (await vc.vm(target)).disks} == set(files)


async def test_a_restarted_operator_resumes_waiting_for_the_same_task(
    vc: Any, make_vm: VMMaker, vcenter: VCenter
) -> None:
    uuid = await make_vm()
    started = await vc.power_on(uuid)
    assert started is not None
    # A new process: new cache, new session; only the moref stored in status survives.
    restarted = Sessions()
    try:
        other = await restarted.connect(credentials(vcenter))
        assert other.session_key != vc.session_key
        done = await other.wait(started.moref, 30)
        assert done.state == "success"
        assert await other.power_on(uuid) is None
    finally:
        await restarted.close()


async def test_the_session_users_effective_privileges(vc: Any) -> None:
    inventory = await vc.inventory(max_age=0)
    dc = inventory.datacenters[0].moref
    host = inventory.hosts[0].moref
    wanted = ["System.View", "VirtualMachine.Config.AddExistingDisk"]
    # vcsim grants its one user every privilege: nothing is missing.
    assert await vc.privileges([dc, host], wanted) == {dc: (), host: ()}
    assert inventory.missing_privileges == ()


async def test_a_task_vcenter_forgot_is_not_found(vc: Any) -> None:
    with pytest.raises(NotFound, match="task-987654"):
        await vc.task("task-987654")


async def test_host_licence_product_and_datastores(vc: Any, vmfs_datastore: str) -> None:
    inventory = await vc.inventory(max_age=0)
    host = next(h for h in inventory.hosts if h.name == "DC0_H0")
    assert host.product is not None
    assert "ESXi" in host.product
    assert host.license is not None
    assert host.license.edition_key == "eval"
    seen = {inventory.datastore(m).name: inventory.datastore(m) for m in host.datastores}
    assert seen[vmfs_datastore].type == "VMFS"
    assert seen["LocalDS_0"].free_bytes > 0


async def test_create_vm_with_folder_networks_and_existing_disks(
    vc: Any, make_vm: VMMaker, si: Any
) -> None:
    donor = await make_vm(disks=1)
    files = [d.file_name for d in (await vc.vm(donor)).disks]
    detached = await vc.detach_disks(donor, files)
    assert (await vc.wait(detached.moref, 30)).state == "success"
    dc = si.content.rootFolder.childEntity[0]
    folder = dc.vmFolder.CreateFolder(f"fb-{uuid.uuid4().hex[:6]}")
    spec = NewVM(
        name=f"fb-restored-{uuid.uuid4().hex[:6]}",
        guest_id="otherLinux64Guest",
        placement=VMPlacement(
            datacenter="DC0",
            datastore="FB_VMFS_0",
            host="DC0_H0",
            folder=folder.name,
            networks=("VM Network", "DC0_DVPG0"),
        ),
        instance_uuid=str(uuid.uuid4()),
        disk_files=tuple(files),
    )
    started = await vc.create_vm(spec)
    assert not isinstance(started, str)
    done = await vc.wait(started.moref, 60)
    assert done.state == "success", done
    created = vm_of(si, spec.instance_uuid)
    try:
        assert created.parent == folder
        nics = [
            d
            for d in created.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ]
        assert len(nics) == 2
        assert isinstance(
            nics[1].backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
        )
        assert [d.file_name for d in (await vc.vm(spec.instance_uuid)).disks] == files
        assert done.result == created._moId
    finally:
        wait_task(created.Destroy_Task())
        wait_task(folder.Destroy_Task())
