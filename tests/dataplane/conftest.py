"""Fixtures shared by the data plane's vSphere tests: a pyVmomi connection to vcsim, the
product's vSphere client, and VMs whose disks the test bed's guest writer fills."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect

from failback.adapters.vsphere import Sessions
from failback.dataplane.source_vsphere import DatastoreFiles
from failback.domain.vsphere import VCenterCredentials
from failback.ports.vsphere import NewDisk, NewVM, VMPlacement
from testbed.guest import GuestDisk, datastore_directories, flat_file
from testbed.vcsim import VCenter

DISK = 4 << 20


@pytest.fixture(scope="module")
def si(vcenter: VCenter) -> Iterator[Any]:
    conn = SmartConnect(
        host=vcenter.host,
        port=vcenter.port,
        user=vcenter.username,
        pwd=vcenter.password,
        sslContext=ssl.create_default_context(cafile=str(vcenter.ca_file)),
    )
    yield conn
    Disconnect(conn)


@pytest.fixture
async def vc(vcenter: VCenter) -> AsyncIterator[Any]:
    sessions = Sessions(inventory_max_age=0.0, timeout=30.0)
    yield await sessions.connect(
        VCenterCredentials(
            server=f"{vcenter.host}:{vcenter.port}",
            username=vcenter.username,
            password=vcenter.password,
            ca_bundle=vcenter.ca_file.read_text(),
        )
    )
    await sessions.close()


@pytest.fixture
def files(si: Any) -> DatastoreFiles:
    return DatastoreFiles(datastore_directories(si))


@dataclass
class GuestVM:
    uuid: str
    disks: list[GuestDisk]
    file_names: list[str]


VMFactory = Callable[..., Any]


@pytest.fixture
def guest_vm(si: Any, vc: Any) -> Iterator[VMFactory]:
    """A VM on LocalDS_0 with small disks, prepared for the guest writer; destroyed after."""
    made: list[str] = []

    async def make(disks: int = 1, capacity: int = DISK) -> GuestVM:
        instance_uuid = str(uuid.uuid4())
        name = f"fb-src-{instance_uuid[:8]}"
        spec = NewVM(
            name=name,
            guest_id="otherLinux64Guest",
            placement=VMPlacement(datacenter="DC0", datastore="LocalDS_0", host="DC0_H0"),
            new_disks=tuple(
                NewDisk(f"[LocalDS_0] {name}/disk-{i}.vmdk", capacity) for i in range(disks)
            ),
            instance_uuid=instance_uuid,
            cpus=1,
            memory_mib=128,
        )
        started = await vc.create_vm(spec)
        assert (await vc.wait(started.moref, 60)).state == "success"
        made.append(instance_uuid)
        dirs = datastore_directories(si)
        names = [d.file_name for d in (await vc.vm(instance_uuid)).disks]
        guests = [GuestDisk.prepare(flat_file(dirs, n), capacity) for n in names]
        return GuestVM(instance_uuid, guests, names)

    yield make
    for instance_uuid in made:
        vm = si.content.searchIndex.FindByUuid(None, instance_uuid, True, True)
        if vm is not None:
            task = vm.Destroy_Task()
            while task.info.state not in ("success", "error"):
                pass
