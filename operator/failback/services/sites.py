"""Everything one protected VM's orchestration talks to, resolved from its spec: its
vCenter, its Azure subscription, its master target and process server (endpoint and
mutual-TLS material).

Shared by the ProtectedVM's replication and the FailbackPlan's steps, so both find the same
objects the same way. A missing Secret or key raises one of the two ``Unresolved`` of
``services.processserver`` and ``services.vcenter``; vCenter and Azure faults are the
ports' own (``Retryable`` / ``Permanent``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from dataclasses import dataclass

from failback.api import mastertarget, processserver, protectedvm
from failback.api.conditions import Reason
from failback.domain.replicas import TAG_SOURCE_DISK
from failback.domain.reprotect import AzureDisk, VDisk, VSphereVM
from failback.domain.vsphere import VM, PowerState
from failback.errors import Permanent, Retryable
from failback.ports.azure import AzureClients, AzureCompute, VirtualMachine
from failback.ports.kubernetes import SecretReader
from failback.ports.tls import TLSMaterial
from failback.ports.vsphere import VCenter, VCenters, VCenterUnreachable
from failback.services.processserver import Unresolved, azure_identity, tls_material
from failback.services.vcenter import vcenter_credentials

_VM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_RESOURCE_GROUP = re.compile(r"/resourceGroups/(?P<rg>[^/]+)/", re.IGNORECASE)


def resource_group_of(resource_id: str | None, default: str) -> str:
    """The resource group an Azure resource ID names, or ``default``."""
    match = _RESOURCE_GROUP.search(resource_id or "")
    return match["rg"] if match else default


FAILBACK_VM_NAMESPACE = uuid.UUID("8f6c2b0e-5a43-4c1e-9b7d-2f1e0c3a4d5b")

_RECONFIGURING: dict[tuple[str, str], asyncio.Lock] = {}


def reconfiguring(server: str, instance_uuid: str) -> asyncio.Lock:
    """Held while one pass changes a VM's devices and waits for the task: two passes
    attaching disks to one master target VM at once would pick the same free SCSI slots
    from their own reads, and vCenter refuses the second (``InvalidDeviceSpec``)."""
    return _RECONFIGURING.setdefault((server, instance_uuid.lower()), asyncio.Lock())


def failback_vm_uuid(vm: protectedvm.ProtectedVM) -> str:
    """The instance UUID of the VM an alternate-location failback creates: derived from the
    ProtectedVM's uid, so a retry or a restarted operator finds it instead of creating a
    second one."""
    return str(uuid.uuid5(FAILBACK_VM_NAMESPACE, vm.meta.uid))


def target_vm_uuid(vm: protectedvm.ProtectedVM) -> str:
    """The on-premises VM the machine comes back as (and runs as after failback): its
    original VM when the location is Original, else the VM a failback creates."""
    location = vm.status.location
    original = vm.spec.on_prem.original_vm
    if original is not None and (
        location is None or location.target == protectedvm.LocationTarget.ORIGINAL
    ):
        return original.instance_uuid
    return failback_vm_uuid(vm)


@dataclass(frozen=True)
class AzureVMRef:
    subscription: str
    resource_group: str
    name: str


def azure_ref(vm: protectedvm.ProtectedVM) -> AzureVMRef:
    parsed = _VM_ID.match(vm.spec.azure.vm_id)
    if parsed is None:
        raise Permanent(f"spec.azure.vmId {vm.spec.azure.vm_id} is not a VM's resource ID")
    return AzureVMRef(parsed["sub"], parsed["rg"], parsed["name"])


@dataclass(frozen=True)
class Service:
    endpoint: str
    tls: TLSMaterial


@dataclass(frozen=True)
class Sites:
    vcenter_or_none: VCenter | None
    """None when vCenter could not be reached (``unreachable`` says why)."""
    compute: AzureCompute
    azure: AzureVMRef
    master_target: Service
    master_target_vm: str
    """The MT VM's instance UUID."""
    process_server: Service
    unreachable: str = ""

    @property
    def vcenter(self) -> VCenter:
        """The vCenter session; ``VCenterUnreachable`` when there is none."""
        if self.vcenter_or_none is None:
            raise VCenterUnreachable(f"vCenter is unreachable: {self.unreachable}", delay=10)
        return self.vcenter_or_none


async def resolve(
    vm: protectedvm.ProtectedVM,
    mt: mastertarget.MasterTarget,
    ps: processserver.ProcessServer,
    secrets: SecretReader,
    vcenters: VCenters,
    azure: AzureClients,
    now: dt.datetime,
) -> Sites:
    """Connect to both sites for ``vm`` (cached sessions and clients)."""
    ns, gen = vm.meta.namespace, vm.meta.generation
    ref = azure_ref(vm)
    az = vm.spec.azure
    workload = az.workload_identity
    identity = await azure_identity(
        secrets,
        ns,
        "spec.azure.credentialsSecretRef",
        az.credentials_secret_ref.name if az.credentials_secret_ref else None,
        (workload.tenant_id, workload.client_id) if workload else None,
    )
    compute = await azure.compute(identity, ref.subscription)
    creds = await vcenter_credentials(
        secrets,
        ns,
        vm.spec.on_prem.vcenter_secret_ref.name,
        "spec.onPrem.vcenterSecretRef",
        gen,
        now,
    )
    vcenter: VCenter | None = None
    unreachable = ""
    try:
        vcenter = await vcenters.connect(creds)
    except Retryable as exc:
        unreachable = str(exc)
    mt_tls = await tls_material(secrets, ns, mt.spec.tls_secret_ref.name)
    ps_tls = await tls_material(secrets, ns, ps.spec.tls_secret_ref.name)
    ps_endpoint = ps.spec.endpoint or ps.status.endpoint
    if not ps_endpoint:
        raise Unresolved(
            Reason.PROCESS_SERVER_NOT_READY, f"ProcessServer {ps.meta.name} has no endpoint yet"
        )
    return Sites(
        vcenter_or_none=vcenter,
        compute=compute,
        azure=ref,
        master_target=Service(mt.spec.endpoint, mt_tls),
        master_target_vm=mt.spec.vm.instance_uuid,
        process_server=Service(ps_endpoint, ps_tls),
        unreachable=unreachable,
    )


async def azure_disks(compute: AzureCompute, found: VirtualMachine) -> tuple[AzureDisk, ...]:
    """The Azure VM's managed disks, the OS disk first, then data disks by LUN, with sizes."""
    refs = (found.os_disk, *sorted(found.data_disks, key=lambda d: d.lun or 0))
    out = []
    for ref in refs:
        rg = resource_group_of(ref.id, found.resource_group)
        disk = await compute.get_disk(rg, ref.name)
        if disk is None:
            raise Permanent(f"Azure disk {ref.name} of VM {found.name} is not found")
        out.append(AzureDisk(rg, ref.name, disk.size_bytes, disk.tags.get(TAG_SOURCE_DISK)))
    return tuple(out)


def vsphere_vm(found: VM) -> VSphereVM:
    return VSphereVM(
        instance_uuid=found.instance_uuid,
        name=found.name,
        powered_off=found.power_state is PowerState.OFF,
        disks=tuple(VDisk(d.file_name, d.uuid, d.capacity_bytes) for d in found.disks),
    )
