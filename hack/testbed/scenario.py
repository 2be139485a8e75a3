"""A whole failback situation on the test bed, shared by the end-to-end tests and the demo.

Machines that were failed over to Azure run there (emulator VMs with data on their disks);
their on-premises side is in vcsim (a master target VM, the original VMs of those that
come back to their original location); the data plane runs (a process server and a master
target as processes, the MT opening vcsim's disk files by UUID); and the Kubernetes objects
describe it all: Secrets, a MasterTarget, a ProcessServer, a ProtectedVM per machine and a
FailbackPlan with one group per machine, ``activeSite: Azure``.

::

    sc = Scenario(root, namespace, kubectl, emulator, vcenter, si)
    sc.build([Machine("web-01"), Machine("app-01", original=False, disks=(4 << 20, 2 << 20))])
    ...  # start the operator, wait for Protected, flip the plan
    assert sc.onprem_bytes("web-01") == sc.azure_bytes("web-01")
    sc.stop()
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.azure.process import AzureEmulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.guest import GuestDisk, datastore_directories, flat_file
from testbed.tools import Tool
from testbed.vcsim import VCenter

API = "failback.io/v1alpha1"
MIB = 1 << 20
DATACENTER, HOST, DATASTORE = "DC0", "DC0_H0", "LocalDS_0"


@dataclass(frozen=True)
class Machine:
    """One machine that runs in Azure and comes home."""

    name: str
    original: bool = True
    """Its original VM still exists on-premises (delta sync into it, R-LOC-1); else a new
    VM is made at the alternate placement (R-LOC-2)."""
    physical: bool = False
    """It was a physical server: it comes back as a new VM (R-LOC-3)."""
    disks: tuple[int, ...] = (4 * MIB,)
    """Sizes of its Azure disks, the OS disk first."""
    replication_group: str | None = None
    """``spec.replicationGroup``: members fail back to one point in time (R-GRP-1)."""


@dataclass
class Scenario:
    root: Path
    namespace: str
    kubectl: Tool
    emulator: AzureEmulator
    vcenter: VCenter
    si: Any
    resource_group: str = "rg-failback-e2e"
    plan: str = "failback"
    interval: float = 2.0
    master_target: str = "mt"
    """The MasterTarget object's name."""
    process_server: str = "ps"
    """The ProcessServer object's name."""
    machines: dict[str, Machine] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)
    """Machine name → instance UUID of its original VM."""
    mt_vm: str = ""
    rig: DataPlane | None = None
    existing_vms: set[str] | None = None

    # ------------------------------------------------------------------ build

    def _vm_morefs(self) -> set[str]:
        from pyVmomi import vim

        content = self.si.content
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            return {vm._moId for vm in view.view}
        finally:
            view.Destroy()

    def build(
        self,
        machines: Sequence[Machine],
        *,
        plan_extra: dict[str, Any] | None = None,
        groups: Sequence[tuple[str, Sequence[str]]] | None = None,
    ) -> None:
        """Both sites, the data plane and the objects; the plan has ``groups`` (name,
        members) in order, else one group per machine."""
        self.existing_vms = self._vm_morefs()
        fast_emulator(self.emulator)
        self.emulator.control.create_resource_group(self.resource_group)
        rng = random.Random(7)
        self.mt_vm = self._vsphere_vm(f"mt-{self.namespace}"[:40], (), enable_uuid=True)
        for m in machines:
            self.machines[m.name] = m
            self.emulator.control.create_vm(
                self.resource_group,
                m.name,
                os_disk_size=m.disks[0],
                data_disk_sizes=tuple(m.disks[1:]),
            )
            for disk in self.azure_disks(m.name):
                self.write_azure(disk, rng, writes=12)
            if m.original and not m.physical:
                self.originals[m.name] = self._vsphere_vm(
                    f"{m.name}-{self.namespace}"[:60], m.disks
                )
        self.rig = self._data_plane()
        self.rig.start()
        self._apply(self._objects(plan_extra or {}, groups))

    def _vsphere_vm(self, name: str, disks: Sequence[int], enable_uuid: bool = False) -> str:
        from failback.adapters.vsphere import operations
        from failback.ports.vsphere import NewDisk, NewVM, VMPlacement

        instance = str(uuid.uuid4())
        spec = NewVM(
            name=name,
            guest_id="otherLinux64Guest",
            placement=VMPlacement(datacenter=DATACENTER, datastore=DATASTORE, host=HOST),
            instance_uuid=instance,
            cpus=1,
            memory_mib=128,
            new_disks=tuple(
                NewDisk(f"[{DATASTORE}] {name}/disk-{i}.vmdk", size) for i, size in enumerate(disks)
            ),
            extra_config={"disk.EnableUUID": "TRUE"} if enable_uuid else None,
        )
        started = operations.create_vm(self.si.content, spec)
        moref = getattr(started, "moref", None)
        if moref is not None:
            self._wait_task(moref)
        for path, size in zip(self.onprem_files(instance), disks, strict=True):
            GuestDisk.prepare(path, size)
        return instance

    def _find(self, instance: str) -> Any:
        return self.si.content.searchIndex.FindByUuid(None, instance, True, True)

    def _wait_task(self, moref: str) -> None:
        from pyVmomi import vim

        task: Any = vim.Task(moref, self.si._stub)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 60
        while task.info.state not in ("success", "error"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"vSphere task {moref}")
            time.sleep(0.05)

    def _data_plane(self) -> DataPlane:
        creds = self.root / "vcenter-credentials"
        creds.mkdir(parents=True, exist_ok=True)
        vc = self.vcenter
        for key, value in (
            ("server", f"{vc.host}:{vc.port}"),
            ("username", vc.username),
            ("password", vc.password),
            ("caBundle", vc.ca_file.read_text()),
        ):
            (creds / key).write_text(value)
        dirs = datastore_directories(self.si)
        datacenter = self.si.content.rootFolder.childEntity[0]._moId
        root_dir = dirs[DATASTORE].parent
        return DataPlane(
            self.root / "dp",
            self.emulator,
            resource_group=self.resource_group,
            ps_extra=(
                "--snapshot-rate=1000/1s",
                f"--vcenter-credentials={creds}",
                "--change-tracking=sidecar",
                *(f"--datastore={n}={d}" for n, d in dirs.items()),
            ),
            mt_extra=(f"--disk-resolver=datastore:{root_dir},datacenter={datacenter}",),
        )

    def _objects(
        self,
        plan_extra: dict[str, Any],
        groups: Sequence[tuple[str, Sequence[str]]] | None = None,
    ) -> list[dict[str, Any]]:
        assert self.rig is not None
        rig, emu, vc, ns = self.rig, self.emulator, self.vcenter, self.namespace
        meta = {"namespace": ns}

        def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, **meta},
                    "type": "Opaque", "stringData": data}  # fmt: skip

        tls = {
            "tls.crt": rig.operator_pair.cert.read_text(),
            "tls.key": rig.operator_pair.key.read_text(),
            "ca.crt": rig.pki.ca_file.read_text(),
        }
        objects = [
            secret("vcenter", {"server": f"{vc.host}:{vc.port}", "username": vc.username,
                               "password": vc.password, "caBundle": vc.ca_file.read_text()}),
            secret("azure", {"tenantId": emu.tenant_id, "clientId": emu.client_id,
                             "clientSecret": emu.client_secret}),
            secret("dataplane-tls", tls),
            {
                "apiVersion": API, "kind": "MasterTarget",
                "metadata": {"name": self.master_target, **meta},
                "spec": {
                    "vcenterSecretRef": {"name": "vcenter"},
                    "vm": {"instanceUUID": self.mt_vm},
                    "osType": "Linux",
                    "endpoint": f"https://127.0.0.1:{rig.mt.client.port}",
                    "tlsSecretRef": {"name": "dataplane-tls"},
                },
            },
            {
                "apiVersion": API, "kind": "ProcessServer",
                "metadata": {"name": self.process_server, **meta},
                "spec": {
                    "location": "OnPrem",
                    "connectivity": "ExpressRoute",
                    "endpoint": f"https://127.0.0.1:{rig.ps.client.port}",
                    "tlsSecretRef": {"name": "dataplane-tls"},
                },
            },
        ]  # fmt: skip
        for m in self.machines.values():
            objects.append(self._protected_vm(m))
        objects.append(
            {
                "apiVersion": API,
                "kind": "FailbackPlan",
                "metadata": {"name": self.plan, **meta},
                "spec": {
                    "activeSite": "Azure",
                    "groups": [
                        {"name": name, "members": list(members)}
                        for name, members in (
                            groups
                            if groups is not None
                            else [(f"g{i + 1}-{m}", [m]) for i, m in enumerate(self.machines)]
                        )
                    ],
                    **plan_extra,
                },
            }
        )
        return objects

    def set_vcenter_server(self, server: str | None) -> None:
        """Point the operator's vCenter Secret at ``server`` (None: the real vcsim again),
        as a network partition between the operator and vCenter would look."""
        vc = self.vcenter
        data = {"server": server or f"{vc.host}:{vc.port}", "username": vc.username,
                "password": vc.password, "caBundle": vc.ca_file.read_text()}  # fmt: skip
        self._apply([{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": "vcenter", "namespace": self.namespace},
                      "stringData": data}])  # fmt: skip

    def _protected_vm(self, m: Machine) -> dict[str, Any]:
        on_prem: dict[str, Any] = {"vcenterSecretRef": {"name": "vcenter"}}
        if m.name in self.originals:
            on_prem["failbackLocation"] = "Original"
            on_prem["originalVM"] = {"instanceUUID": self.originals[m.name]}
        else:
            on_prem["failbackLocation"] = "Alternate"
            on_prem["alternatePlacement"] = {
                "datacenter": DATACENTER,
                "host": HOST,
                "datastore": DATASTORE,
            }
        spec: dict[str, Any] = {
            "osType": "Linux",
            "sourceType": "Physical" if m.physical else "VMware",
            "azure": {"vmId": self.vm_id(m.name), "credentialsSecretRef": {"name": "azure"}},
            "onPrem": on_prem,
            "masterTargetRef": {"name": self.master_target},
            "processServerRef": {"name": self.process_server},
        }
        if m.replication_group is not None:
            spec["replicationGroup"] = m.replication_group
        return {
            "apiVersion": API,
            "kind": "ProtectedVM",
            "metadata": {"name": m.name, "namespace": self.namespace},
            "spec": spec,
        }

    def _apply(self, objects: Sequence[dict[str, Any]]) -> None:
        self.kubectl.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))

    # ------------------------------------------------------------------ the sites

    def vm_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.emulator.subscription_id}/resourceGroups/"
            f"{self.resource_group}/providers/Microsoft.Compute/virtualMachines/{name}"
        )

    def azure_disks(self, name: str) -> list[str]:
        m = self.machines[name]
        return [f"{name}-os", *(f"{name}-data{i}" for i in range(len(m.disks) - 1))]

    def azure_vm_disks(self, name: str) -> list[str]:
        """The disks ``name``'s Azure VM boots from now: the OS disk, then by LUN (after a
        failover to Azure, those the failover made)."""
        storage = self.emulator.control.vm(self.resource_group, name)["properties"][
            "storageProfile"
        ]
        data = sorted(storage.get("dataDisks") or [], key=lambda d: d["lun"])
        return [storage["osDisk"]["name"], *(d["name"] for d in data)]

    def write_azure(self, disk: str, rng: random.Random, writes: int = 8) -> None:
        size = self._azure_size(disk)
        specs = []
        for _ in range(writes):
            length = rng.randrange(1, 32) * 4096
            offset = rng.randrange(0, (size - length) // 512) * 512
            specs.append(
                {"offset": offset, "data": base64.b64encode(rng.randbytes(length)).decode()}
            )
        self.emulator.control.guest_writes(self.resource_group, disk, specs, require_running=False)

    def _azure_size(self, disk: str) -> int:
        for name, m in self.machines.items():
            for i, d in enumerate(self.azure_disks(name)):
                if d == disk:
                    return m.disks[i]
        raise KeyError(disk)

    def azure_bytes(self, name: str, disks: Sequence[str] | None = None) -> list[bytes]:
        """The bytes of ``name``'s Azure disks (or of ``disks``, as large as those)."""
        control = self.emulator.control
        out = []
        for own, disk in zip(self.azure_disks(name), disks or self.azure_disks(name), strict=True):
            size = self._azure_size(own)
            out.append(
                b"".join(
                    control.read_disk(self.resource_group, disk, at, min(MIB, size - at))
                    for at in range(0, size, MIB)
                )
            )
        return out

    def onprem_files(self, instance_uuid: str) -> list[Path]:
        from pyVmomi import vim

        vm = self._find(instance_uuid)
        if vm is None:
            raise KeyError(f"no vSphere VM {instance_uuid}")
        dirs = datastore_directories(self.si)
        devices: list[Any] = list(vm.config.hardware.device)
        return [
            flat_file(dirs, str(getattr(d.backing, "fileName", "")))
            for d in devices
            if isinstance(d, vim.vm.device.VirtualDisk)
        ]

    def onprem_bytes(self, instance_uuid: str, sizes: Sequence[int]) -> list[bytes]:
        out = []
        for path, size in zip(self.onprem_files(instance_uuid), sizes, strict=True):
            with path.open("rb") as f:
                data = f.read(size)
            out.append(data + bytes(size - len(data)))
        return out

    def disk_files(self, instance_uuid: str) -> list[str]:
        """The datastore paths of the disks attached to a VM, in device order."""
        from pyVmomi import vim

        vm = self._find(instance_uuid)
        devices: list[Any] = list(vm.config.hardware.device) if vm is not None else []
        return [
            str(getattr(d.backing, "fileName", ""))
            for d in devices
            if isinstance(d, vim.vm.device.VirtualDisk)
        ]

    def vms_named(self, name: str) -> list[str]:
        """Instance UUIDs of every vSphere VM called ``name``."""
        from pyVmomi import vim

        content = self.si.content
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            return [vm.config.instanceUuid for vm in view.view if vm.name == name]
        finally:
            view.Destroy()

    def azure_power(self, name: str) -> str:
        """The Azure VM's power state, from the emulator's history (``running``...)."""
        state = "unknown"
        suffix = f"/virtualmachines/{name.lower()}"
        for event in self.emulator.control.events(kind="vm.power"):
            if str(event.get("resource_id", "")).lower().endswith(suffix):
                state = str(event.get("to"))
        return state

    def power(self, instance_uuid: str) -> str:
        vm = self._find(instance_uuid)
        return str(vm.runtime.powerState) if vm is not None else "missing"

    # ------------------------------------------------------------------ the processes

    def operator_args(self) -> list[str]:
        """``failback operator`` flags for this scenario: the emulator's endpoints, and a
        replication cycle every ``interval`` seconds (re-checks soon after a change)."""
        emu = self.emulator
        return [
            f"--azure-arm-endpoint={emu.arm_url}",
            f"--azure-authority={emu.authority}",
            f"--azure-ca-file={emu.ca_file}",
            "--azure-poll-interval=0.2",  # the emulator's operations take a second or so
            "--recheck-idle=0.5",
            f"--replication-interval={self.interval:g}",
        ]

    def data_plane_pids(self) -> dict[str, int]:
        """The running data-plane processes by service name (what ``down`` must stop)."""
        if self.rig is None:
            return {}
        return {s.name: s.proc.pid for s in (self.rig.ps, self.rig.mt) if s.proc is not None}

    # ------------------------------------------------------------------ end

    def stop(self, *, keep_vms: bool = False) -> None:
        """Stop the data plane and (unless ``keep_vms``) remove every vSphere VM made since
        ``build``, by it or by the operator, so the session's vcsim is as it was."""
        if self.rig is not None:
            self.rig.stop()
        if not keep_vms:
            self.remove_vms()

    def remove_vms(self) -> None:
        from pyVmomi import vim

        if self.existing_vms is None:
            return
        for moref in sorted(self._vm_morefs() - self.existing_vms):
            vm: Any = vim.VirtualMachine(moref, self.si._stub)  # type: ignore[no-untyped-call]
            if str(vm.runtime.powerState) != "poweredOff":
                self._wait_task(vm.PowerOffVM_Task()._moId)
            self._wait_task(vm.Destroy_Task()._moId)
