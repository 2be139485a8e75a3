"""What the data plane's tests share: the Azure adapter on the emulator with every SAS URL
it sees guarded against leaks; a pyVmomi connection to vcsim, the product's vSphere client,
and VMs whose disks the test bed's guest writer fills."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter, AzureOptions
from failback.adapters.vsphere import Sessions
from failback.dataplane.source_vsphere import DatastoreFiles
from failback.domain.vsphere import VCenterCredentials
from failback.ports.azure import AzureCompute, ClientSecret, OperationHandle, OperationStatus
from failback.ports.vsphere import NewDisk, NewVM, VMPlacement
from testbed.azure.process import AzureEmulator
from testbed.guest import GuestDisk, datastore_directories, flat_file
from testbed.leaks import LeakGuard
from testbed.vcsim import VCenter, plain_session

DISK = 4 << 20


class SasRecorder:
    """The adapter, with every SAS URL its grants return added to the leak guard's secrets."""

    def __init__(self, inner: AzureCompute, guard: LeakGuard) -> None:
        self._inner = inner
        self._guard = guard
        self.sas_urls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def wait(self, handle: OperationHandle) -> OperationStatus:
        status = await self._inner.wait(handle)
        if status.result:
            self.sas_urls.append(status.result)
            self._guard.secrets.append(status.result)
            self._guard.secrets.append(status.result.split("sig=", 1)[1].split("&", 1)[0])
        return status


@contextlib.asynccontextmanager
async def guarded_compute(emulator: AzureEmulator, guard: LeakGuard) -> AsyncIterator[SasRecorder]:
    """The product's Azure adapter on the emulator (quick polls, a generous write budget),
    recording every SAS URL into ``guard``."""
    adapter = AzureClientsAdapter(
        AzureOptions(
            arm_endpoint=emulator.arm_url,
            authority=emulator.authority,
            ca_file=str(emulator.ca_file),
            poll_interval=0.05,
            connect_timeout=5.0,
            read_timeout=10.0,
            retries=3,
            max_inline_wait=1.0,
            writes_per_hour=36_000.0,
        )
    )
    identity = ClientSecret(emulator.tenant_id, emulator.client_id, emulator.client_secret)
    try:
        yield SasRecorder(await adapter.compute(identity, emulator.subscription_id), guard)
    finally:
        await adapter.close()


@pytest.fixture(scope="module")
def si(vcenter: VCenter) -> Iterator[Any]:
    with plain_session(vcenter) as conn:
        yield conn


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
