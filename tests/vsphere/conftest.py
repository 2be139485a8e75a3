"""Fixtures for the vSphere tests: the adapter against the test bed's vcsim.

The vcsim of the session is shared by every test, so each test builds its own VMs (and
this module its own datastore) and removes them afterwards; the default inventory is
never changed.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from pyVmomi import vim

from failback.adapters.kubernetes import KubeReads
from failback.adapters.vsphere import Sessions
from failback.domain.vsphere import VCenterCredentials
from failback.ports.vsphere import NewDisk, NewVM, VMPlacement
from testbed.vcsim import VCenter, plain_session

VMFS_DATASTORE = "FB_VMFS_0"
"""A datastore typed VMFS on host DC0_H0. vcsim cannot format VMFS (it has no
CreateVmfsDatastore) but keeps the type a NAS datastore is created with, so the tests
mount one that way; the default LocalDS_* are typed OTHER, as vcsim's local disks."""


def credentials(vc: VCenter, **changes: Any) -> VCenterCredentials:
    values: dict[str, Any] = {
        "server": f"{vc.host}:{vc.port}",
        "username": vc.username,
        "password": vc.password,
        "ca_bundle": vc.ca_file.read_text(),
    }
    values.update(changes)
    return VCenterCredentials(**values)


@pytest.fixture(scope="session")
def si(vcenter: VCenter) -> Iterator[Any]:
    """A plain pyVmomi session for building situations (never the adapter's own)."""
    with plain_session(vcenter) as conn:
        yield conn


def find(si: Any, kind: type, name: str) -> Any:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [kind], True)
    try:
        return next(o for o in view.view if o.name == name)
    finally:
        view.Destroy()


@pytest.fixture(scope="session")
def vmfs_datastore(si: Any, vcenter: VCenter) -> str:
    host = find(si, vim.HostSystem, "DC0_H0")
    path = Path(vcenter.datastore_dir) / VMFS_DATASTORE  # vcsim names it after the folder
    path.mkdir(parents=True, exist_ok=True)
    spec = vim.host.NasVolume.Specification(
        remoteHost="127.0.0.1",
        remotePath=str(path),
        localPath=str(path),
        accessMode="readWrite",
        type="VMFS",
    )
    # vcsim can neither remove nor destroy a datastore: this one stays for the session
    # (tests/testbed/test_vcsim.py, which counts the default two, runs before this folder).
    if VMFS_DATASTORE not in {ds.name for ds in host.datastore}:
        host.configManager.datastoreSystem.CreateNasDatastore(spec)
    return VMFS_DATASTORE


@pytest.fixture
async def sessions() -> AsyncIterator[Sessions]:
    s = Sessions(inventory_max_age=0.0, check_interval=60.0, timeout=30.0)
    yield s
    await s.close()


@pytest.fixture
async def vc(sessions: Sessions, vcenter: VCenter) -> Any:
    return await sessions.connect(credentials(vcenter))


VMMaker = Callable[..., Any]


@pytest.fixture
def make_vm(si: Any, vc: Any, vmfs_datastore: str) -> Iterator[VMMaker]:
    """Create a VM through the adapter (``create_vm``) and destroy it after the test."""
    made: list[str] = []

    async def make(
        host: str = "DC0_H0",
        datastore: str = vmfs_datastore,
        disks: int = 1,
        enable_uuid: bool = True,
        name: str | None = None,
    ) -> str:
        instance_uuid = str(uuid.uuid4())
        vm_name = name or f"fb-{instance_uuid[:8]}"
        cluster = "DC0_C0" if host.startswith("DC0_C0") else None
        spec = NewVM(
            name=vm_name,
            guest_id="otherLinux64Guest",
            placement=VMPlacement(
                datacenter="DC0", datastore=datastore, host=host, cluster=cluster
            ),
            new_disks=tuple(
                NewDisk(f"[{datastore}] {vm_name}/disk-{i}.vmdk", 1 << 30) for i in range(disks)
            ),
            extra_config={"disk.EnableUUID": "TRUE"} if enable_uuid else None,
            instance_uuid=instance_uuid,
        )
        started = await vc.create_vm(spec)
        assert not isinstance(started, str)
        done = await vc.wait(started.moref, 60)
        assert done.state == "success", done
        made.append(instance_uuid)
        return instance_uuid

    yield make
    for instance_uuid in made:
        vm = si.content.searchIndex.FindByUuid(None, instance_uuid, True, True)
        if vm is None:
            continue
        if vm.runtime.powerState != "poweredOff":
            wait_task(vm.PowerOffVM_Task())
        wait_task(vm.Destroy_Task())


def wait_task(task: Any, timeout: float = 60.0) -> None:
    """Wait for a task started with plain pyVmomi (pyVim's WaitForTask trips on vcsim's
    task names)."""
    deadline = time.monotonic() + timeout
    while task.info.state not in ("success", "error"):
        assert time.monotonic() < deadline, f"task {task} did not end"
        time.sleep(0.05)
    assert task.info.state == "success", task.info.error


def vm_of(si: Any, instance_uuid: str) -> Any:
    vm = si.content.searchIndex.FindByUuid(None, instance_uuid, True, True)
    assert vm is not None
    return vm


def put_secret(k8s_client: Any, namespace: str, name: str, data: dict[str, str]) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    client.CoreV1Api(k8s_client).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    )


def vcenter_secret(vc: VCenter, **changes: str) -> dict[str, str]:
    data = {
        "server": f"{vc.host}:{vc.port}",
        "username": vc.username,
        "password": vc.password,
        "caBundle": vc.ca_file.read_text(),
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v}


@pytest.fixture
def secrets(k8s_client: Any) -> KubeReads:
    return KubeReads(k8s_client)
