"""Every MasterTarget prerequisite on vcsim, in both states, each bad situation built for
real (a snapshot taken, a Paravirtual controller, disk.EnableUUID unset, disks moved by
Storage vMotion, a host without VMFS, 60 disks...), through the service and the real
Secret reader against the test bed's API server. The master target service itself is not
running here (its endpoint refuses): ``tests/mastertarget`` checks against a real one."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from failback.adapters.kubernetes import KubeReads
from failback.adapters.mastertarget.client import HealthClient
from failback.adapters.vsphere import Sessions
from failback.api import mastertarget as api
from failback.api.conditions import ConditionType as CT
from failback.domain.mastertarget import SERVICE_CHECKS, VSPHERE_CHECKS
from failback.ports.vsphere import NewDisk
from failback.services import mastertarget as service
from testbed.pki import Pki
from testbed.procs import free_port
from testbed.vcsim import VCenter

from .conftest import VMMaker, put_secret, vcenter_secret, vm_of, wait_task

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
TLS = {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "CA"}
"""Keys present but no usable PEM: the service is not contacted (TLSVerificationFailed)."""
NOBODY = f"https://127.0.0.1:{free_port()}"
"""An endpoint where nothing listens: the connection is refused at once."""


def pki_tls(pki: Pki) -> dict[str, str]:
    """A usable TLS Secret for the operator, from the test bed's CA."""
    pair = pki.client("operator", "failback-operator")
    return {
        "tls.crt": pair.cert.read_text(),
        "tls.key": pair.key.read_text(),
        "ca.crt": pki.ca_file.read_text(),
    }


def master_target(
    namespace: str, instance_uuid: str, status: dict[str, Any] | None = None, **spec: Any
) -> api.MasterTarget:
    body = {
        "metadata": {"name": "mt", "namespace": namespace, "uid": "u1", "generation": 1},
        "spec": {
            "vcenterSecretRef": {"name": "vcenter"},
            "vm": {"instanceUUID": instance_uuid},
            "osType": "Linux",
            "endpoint": NOBODY,
            "tlsSecretRef": {"name": "mt-tls"},
            **spec,
        },
        "status": status or {},
    }
    return api.parse(body)


@pytest.fixture
def secret_ns(k8s_client: Any, namespace: str, vcenter: VCenter, tmp_path: Path) -> str:
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter))
    put_secret(k8s_client, namespace, "mt-tls", pki_tls(Pki(tmp_path / "pki")))
    return namespace


async def run(
    mt: api.MasterTarget, secrets: KubeReads, sessions: Sessions
) -> api.MasterTargetStatus:
    client = HealthClient(timeout=5.0)
    try:
        return await service.reconcile(mt, secrets, sessions, client, NOW)
    finally:
        await client.close()


def conds(status: api.MasterTargetStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions}


async def test_a_good_master_target(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, vc: Any
) -> None:
    uuid_ = await make_vm()
    status = await run(master_target(secret_ns, uuid_), secrets, sessions)
    c = conds(status)
    assert set(c) == set(api.CONDITION_TYPES)
    for t in (
        CT.REFERENCES_RESOLVED,
        CT.DISK_UUID_ENABLED,
        CT.NO_STORAGE_VMOTION,
        CT.VMFS_DATASTORE_ATTACHED,
        CT.NO_SNAPSHOTS,
        CT.SCSI_CONTROLLER_SUPPORTED,
        CT.DISK_UUIDS_UNIQUE,
        CT.LICENSE_ALLOWS_FAILBACK,
        CT.DISK_CAPACITY_AVAILABLE,
    ):
        assert c[t][:2] == ("True", "CheckPassed"), (t, c[t])
    # vcsim runs no VMware Tools (only its container-backed VMs would).
    assert c[CT.VMWARE_TOOLS_RUNNING][:2] == ("False", "VMwareToolsNotRunning")
    assert "install or start VMware Tools" in c[CT.VMWARE_TOOLS_RUNNING][2]
    # Nothing listens at the endpoint: unreachable, and what only the service can tell is
    # Unknown until it answers.
    state, reason, message = c[CT.SERVICE_REACHABLE]
    assert (state, reason) == ("False", "ConnectionFailed")
    assert NOBODY in message
    assert "refused" in message
    for t in set(SERVICE_CHECKS) - {CT.SERVICE_REACHABLE}:
        assert c[t][:2] == ("Unknown", "ServiceCheckPending"), t
    assert status.phase == "Unreachable"
    assert status.version is None
    assert status.retention_volume is None
    assert c[CT.READY][0] == "False"
    assert status.host == "DC0_H0"
    assert status.registered_datastores == ("FB_VMFS_0",)
    assert status.disks_in_use == 1
    assert status.disk_limit == 60
    vmfs = next(d for d in status.datastores if d.name == "FB_VMFS_0")
    assert vmfs.type == "VMFS"
    assert vmfs.accessible
    assert vmfs.free_bytes
    assert vmfs.capacity_bytes
    assert {d.name for d in status.datastores} >= {"LocalDS_0", "LocalDS_1", "FB_VMFS_0"}
    # The status as the CRD stores it.
    stored = status.to_dict()
    assert stored["diskLimit"] == 60
    assert stored["registeredDatastores"] == ["FB_VMFS_0"]


def enable_uuid(value: str) -> Any:
    return vim.vm.ConfigSpec(
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value=value)]
    )


async def test_disk_enable_uuid(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, si: Any
) -> None:
    uuid_ = await make_vm(enable_uuid=False)
    c = conds(await run(master_target(secret_ns, uuid_), secrets, sessions))
    status, reason, message = c[CT.DISK_UUID_ENABLED]
    assert (status, reason) == ("False", "DiskUUIDDisabled")
    assert "disk.EnableUUID unset" in message
    assert "disk.EnableUUID = TRUE" in message
    spec = vim.vm.ConfigSpec(
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value="FALSE")]
    )
    wait_task(vm_of(si, uuid_).ReconfigVM_Task(spec))
    c = conds(await run(master_target(secret_ns, uuid_), secrets, sessions))
    assert c[CT.DISK_UUID_ENABLED][:2] == ("False", "DiskUUIDDisabled")
    assert "'FALSE'" in c[CT.DISK_UUID_ENABLED][2]
    spec = vim.vm.ConfigSpec(
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value="TRUE")]
    )
    wait_task(vm_of(si, uuid_).ReconfigVM_Task(spec))
    c = conds(await run(master_target(secret_ns, uuid_), secrets, sessions))
    assert c[CT.DISK_UUID_ENABLED][:2] == ("True", "CheckPassed")


async def test_snapshots_added_later_are_caught(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, si: Any
) -> None:
    uuid_ = await make_vm()
    mt = master_target(secret_ns, uuid_)
    assert conds(await run(mt, secrets, sessions))[CT.NO_SNAPSHOTS][0] == "True"
    vm = vm_of(si, uuid_)
    wait_task(vm.CreateSnapshot_Task("before-patch", "", False, False))
    status, reason, message = conds(await run(mt, secrets, sessions))[CT.NO_SNAPSHOTS]
    assert (status, reason) == ("False", "MasterTargetHasSnapshots")
    assert "before-patch" in message
    assert "delete them" in message
    wait_task(vm.RemoveAllSnapshots_Task())
    assert conds(await run(mt, secrets, sessions))[CT.NO_SNAPSHOTS][0] == "True"


async def test_paravirtual_controller(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, si: Any
) -> None:
    uuid_ = await make_vm()
    mt = master_target(secret_ns, uuid_)
    assert conds(await run(mt, secrets, sessions))[CT.SCSI_CONTROLLER_SUPPORTED][0] == "True"
    pvscsi = vim.vm.device.ParaVirtualSCSIController(key=-101, busNumber=1, sharedBus="noSharing")
    change = vim.vm.device.VirtualDeviceSpec(operation="add", device=pvscsi)
    wait_task(vm_of(si, uuid_).ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    status, reason, message = conds(await run(mt, secrets, sessions))[CT.SCSI_CONTROLLER_SUPPORTED]
    assert (status, reason) == ("False", "ParavirtualController")
    assert "LSI Logic SAS" in message


async def test_storage_vmotion_since_registration(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, si: Any
) -> None:
    uuid_ = await make_vm()
    first = await run(master_target(secret_ns, uuid_), secrets, sessions)
    assert first.registered_datastores == ("FB_VMFS_0",)
    stored = first.to_dict()
    vm = vm_of(si, uuid_)
    target = next(ds for ds in vm.runtime.host.datastore if ds.name == "LocalDS_1")
    wait_task(vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=target)))
    later = await run(master_target(secret_ns, uuid_, stored), secrets, sessions)
    status, reason, message = conds(later)[CT.NO_STORAGE_VMOTION]
    assert (status, reason) == ("False", "StorageVMotionDetected")
    assert "FB_VMFS_0" in message
    assert "LocalDS_1" in message
    assert "Move it back" in message
    assert later.registered_datastores == ("FB_VMFS_0",), "registration is not rewritten"


async def test_no_vmfs_datastore(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker
) -> None:
    # The cluster's hosts see only vcsim's local datastores (type OTHER).
    uuid_ = await make_vm(host="DC0_C0_H0", datastore="LocalDS_0")
    status, reason, message = conds(await run(master_target(secret_ns, uuid_), secrets, sessions))[
        CT.VMFS_DATASTORE_ATTACHED
    ]
    assert (status, reason) == ("False", "NoVMFSDatastore")
    assert "DC0_C0_H0" in message
    assert "LocalDS_0 is OTHER" in message
    # On DC0_H0 the VMFS one is there, unless spec.allowedDatastores rules it out.
    good = await make_vm()
    mt = master_target(secret_ns, good, allowedDatastores=["LocalDS_0"])
    status, reason, message = conds(await run(mt, secrets, sessions))[CT.VMFS_DATASTORE_ATTACHED]
    assert (status, reason) == ("False", "NoVMFSDatastore")
    assert "FB_VMFS_0 is not in spec.allowedDatastores" in message


async def test_disk_limit_of_sixty(
    secret_ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, vc: Any
) -> None:
    uuid_ = await make_vm(disks=59)
    mt = master_target(secret_ns, uuid_)
    status = await run(mt, secrets, sessions)
    assert status.disks_in_use == 59
    assert conds(status)[CT.DISK_CAPACITY_AVAILABLE][:2] == ("True", "CheckPassed")
    name = (await vc.vm(uuid_)).name
    added = await vc.attach_disks(uuid_, [], [NewDisk(f"[FB_VMFS_0] {name}/d60.vmdk", 1 << 20)])
    assert (await vc.wait(added.moref, 60)).state == "success"
    status = await run(mt, secrets, sessions)
    assert status.disks_in_use == 60
    state, reason, message = conds(status)[CT.DISK_CAPACITY_AVAILABLE]
    assert (state, reason) == ("False", "DiskLimitReached")
    assert "60 disks" in message
    assert "another MasterTarget" in message


async def test_vm_not_found_shows_on_every_vsphere_check(
    secret_ns: str, secrets: KubeReads, sessions: Sessions
) -> None:
    missing = str(uuid.uuid4())
    c = conds(await run(master_target(secret_ns, missing), secrets, sessions))
    for t in VSPHERE_CHECKS:
        assert c[t][:2] == ("False", "VMNotFound"), t
        assert missing in c[t][2]
    assert c[CT.READY][:2] == ("False", "VMNotFound")


@pytest.mark.parametrize(
    ("secret", "reason", "words"),
    [
        (None, "SecretNotFound", "Secret vcenter (spec.vcenterSecretRef) does not exist"),
        ({"password": ""}, "SecretKeyMissing", "has no key password"),
        ({"caBundle": ""}, "SecretKeyMissing", "has no key caBundle or thumbprint"),
        ({"thumbprint": "zz", "caBundle": ""}, "SecretKeyMissing", "invalid thumbprint"),
    ],
)
async def test_vcenter_secret_missing_or_incomplete(
    k8s_client: Any,
    namespace: str,
    vcenter: VCenter,
    secrets: KubeReads,
    sessions: Sessions,
    secret: dict[str, str] | None,
    reason: str,
    words: str,
) -> None:
    put_secret(k8s_client, namespace, "mt-tls", TLS)
    if secret is not None:
        put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter, **secret))
    c = conds(await run(master_target(namespace, str(uuid.uuid4())), secrets, sessions))
    assert c[CT.REFERENCES_RESOLVED][:2] == ("False", reason)
    assert words in c[CT.REFERENCES_RESOLVED][2]
    assert f"namespace {namespace}" in c[CT.REFERENCES_RESOLVED][2] or reason != "SecretNotFound"
    assert c[CT.READY][:2] == ("False", reason)
    for t in VSPHERE_CHECKS:  # not left as an older pass found them
        assert c[t][:2] == ("Unknown", reason), t
    assert sessions.clients() == [], "no vCenter login without a usable Secret"


async def test_tls_secret_missing_a_key(
    k8s_client: Any,
    namespace: str,
    vcenter: VCenter,
    secrets: KubeReads,
    sessions: Sessions,
) -> None:
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter))
    put_secret(k8s_client, namespace, "mt-tls", {"tls.crt": "C", "tls.key": "K"})
    c = conds(await run(master_target(namespace, str(uuid.uuid4())), secrets, sessions))
    assert c[CT.REFERENCES_RESOLVED][:2] == ("False", "SecretKeyMissing")
    assert "Secret mt-tls (spec.tlsSecretRef) has no key ca.crt" in c[CT.REFERENCES_RESOLVED][2]
