"""The emulated resources and their ARM JSON.

Disks, snapshots and VMs hold each other by reference (a VM its disks, a disk the VM
it is attached to); resource names are case-insensitive as in Azure, but answers use
the name as it was created.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.azure.clock import iso
from testbed.azure.pages import PageStore
from testbed.azure.principal import SUBSCRIPTION_ID

GIB = 1 << 30
PROVIDER = "Microsoft.Compute"

POWER_DISPLAY = {
    "running": "VM running",
    "stopped": "VM stopped",
    "deallocated": "VM deallocated",
    "starting": "VM starting",
    "stopping": "VM stopping",
    "deallocating": "VM deallocating",
}
RUNNING_STATES = frozenset({"running", "starting", "stopping"})
"""Power states in which the guest may be running (for "never ran twice" proofs)."""


def resource_id(resource_group: str, kind: str, name: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{resource_group}"
        f"/providers/{PROVIDER}/{kind}/{name}"
    )


@dataclass
class ResourceGroup:
    name: str
    location: str


@dataclass
class AccessGrant:
    """One SAS handed out by beginGetAccess; ``container`` names it in the SAS URL."""

    id: str
    account: str
    container: str
    target: Disk | Snapshot
    write: bool
    expires: float
    active_from: float | None = None
    revoked: bool = False

    def live(self, now: float) -> bool:
        """Granted or being granted, not revoked, not expired."""
        return not self.revoked and now < self.expires

    def usable(self, now: float) -> bool:
        return self.live(now) and self.active_from is not None and now >= self.active_from


@dataclass
class Disk:
    resource_group: str
    name: str
    location: str
    sku: str
    content: PageStore
    unique_id: str
    created: float
    seq: int
    create_option: str
    os_type: str | None = None
    source_id: str | None = None
    source_unique_id: str | None = None
    upload_size: int | None = None
    awaiting_upload: bool = False
    provisioning_state: str = "Succeeded"
    attached_to: VirtualMachine | None = None
    grant: AccessGrant | None = None
    tags: dict[str, str] = field(default_factory=dict)

    kind = "disks"

    @property
    def id(self) -> str:
        return resource_id(self.resource_group, "disks", self.name)

    @property
    def family_id(self) -> str:
        return self.unique_id

    def state(self, now: float) -> str:
        grant = self.grant
        if grant is not None and grant.live(now):
            return "ActiveUpload" if grant.write else "ActiveSAS"
        if self.awaiting_upload:
            return "ReadyToUpload"
        if self.attached_to is not None:
            return "Reserved" if self.attached_to.power == "deallocated" else "Attached"
        return "Unattached"

    def to_json(self, now: float) -> dict[str, Any]:
        size = self.content.size
        creation: dict[str, Any] = {"createOption": self.create_option}
        if self.source_id:
            creation["sourceResourceId"] = self.source_id
        if self.source_unique_id:
            creation["sourceUniqueId"] = self.source_unique_id
        if self.upload_size is not None:
            creation["uploadSizeBytes"] = self.upload_size
        properties: dict[str, Any] = {
            "creationData": creation,
            "diskSizeGB": math.ceil(size / GIB),
            "diskSizeBytes": size,
            "uniqueId": self.unique_id,
            "provisioningState": self.provisioning_state,
            "diskState": self.state(now),
            "timeCreated": iso(self.created),
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "networkAccessPolicy": "AllowAll",
            "publicNetworkAccess": "Enabled",
        }
        if self.os_type:
            properties["osType"] = self.os_type
            properties["hyperVGeneration"] = "V2"
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": f"{PROVIDER}/disks",
            "location": self.location,
            "tags": dict(self.tags),
            "sku": {"name": self.sku, "tier": self.sku.split("_")[0]},
            "properties": properties,
        }
        if self.attached_to is not None:
            body["managedBy"] = self.attached_to.id
        return body


@dataclass
class Snapshot:
    resource_group: str
    name: str
    location: str
    sku: str
    content: PageStore
    unique_id: str
    family_id: str
    created: float
    seq: int
    incremental: bool
    create_option: str
    source_id: str
    source_unique_id: str
    os_type: str | None = None
    provisioning_state: str = "Succeeded"
    grant: AccessGrant | None = None
    copy_started: float | None = None
    copy_seconds: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)

    kind = "snapshots"

    @property
    def id(self) -> str:
        return resource_id(self.resource_group, "snapshots", self.name)

    def completion_percent(self, now: float) -> float:
        if self.copy_started is None or self.copy_seconds <= 0:
            return 100.0
        return min(100.0, round(100.0 * (now - self.copy_started) / self.copy_seconds, 1))

    def state(self, now: float) -> str:
        grant = self.grant
        return "ActiveSAS" if grant is not None and grant.live(now) else "Unattached"

    def to_json(self, now: float) -> dict[str, Any]:
        size = self.content.size
        properties: dict[str, Any] = {
            "creationData": {
                "createOption": self.create_option,
                "sourceResourceId": self.source_id,
                "sourceUniqueId": self.source_unique_id,
            },
            "diskSizeGB": math.ceil(size / GIB),
            "diskSizeBytes": size,
            "uniqueId": self.unique_id,
            "incremental": self.incremental,
            "provisioningState": self.provisioning_state,
            "diskState": self.state(now),
            "timeCreated": iso(self.created),
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "networkAccessPolicy": "AllowAll",
            "publicNetworkAccess": "Enabled",
        }
        if self.incremental:
            properties["incrementalSnapshotFamilyId"] = self.family_id
        if self.copy_started is not None:
            properties["completionPercent"] = self.completion_percent(now)
        if self.os_type:
            properties["osType"] = self.os_type
            properties["hyperVGeneration"] = "V2"
        return {
            "id": self.id,
            "name": self.name,
            "type": f"{PROVIDER}/snapshots",
            "location": self.location,
            "tags": dict(self.tags),
            "sku": {"name": self.sku, "tier": "Standard"},
            "properties": properties,
        }


@dataclass
class DataDisk:
    lun: int
    disk: Disk
    create_option: str = "Attach"
    caching: str = "None"
    delete_option: str = "Detach"


NETWORK_PROVIDER = "Microsoft.Network"


@dataclass
class NetworkInterface:
    """A NIC the emulator creates for a VM's ``networkInterfaceConfigurations``. Its
    private address is on the loopback network, where the test bed runs everything."""

    resource_group: str
    name: str
    location: str
    subnet_id: str
    private_ip: str
    vm_id: str
    delete_with_vm: bool = True

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{self.resource_group}"
            f"/providers/{NETWORK_PROVIDER}/networkInterfaces/{self.name}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": f"{NETWORK_PROVIDER}/networkInterfaces",
            "location": self.location,
            "properties": {
                "provisioningState": "Succeeded",
                "primary": True,
                "virtualMachine": {"id": self.vm_id},
                "ipConfigurations": [
                    {
                        "name": "ipconfig1",
                        "properties": {
                            "primary": True,
                            "privateIPAddress": self.private_ip,
                            "privateIPAllocationMethod": "Dynamic",
                            "subnet": {"id": self.subnet_id},
                        },
                    }
                ],
            },
        }


@dataclass
class VirtualMachine:
    resource_group: str
    name: str
    location: str
    vm_size: str
    vm_id: str
    os_disk: Disk
    created: float
    power: str
    os_disk_create_option: str = "Attach"
    os_disk_delete_option: str = "Detach"
    data_disks: list[DataDisk] = field(default_factory=list)
    provisioning_state: str = "Succeeded"
    power_operation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    nics: list[NetworkInterface] = field(default_factory=list)
    state_changed: float | None = None
    """When the power state last changed (the time of the last provisioning status, as
    Azure reports the end of the last operation); ``created`` until then."""

    kind = "virtualMachines"

    @property
    def id(self) -> str:
        return resource_id(self.resource_group, "virtualMachines", self.name)

    def disks(self) -> list[Disk]:
        return [self.os_disk, *(d.disk for d in self.data_disks)]

    def _disk_ref(self, disk: Disk) -> dict[str, Any]:
        return {"id": disk.id, "storageAccountType": disk.sku}

    def to_json(self, now: float, instance_view: bool = False) -> dict[str, Any]:
        os_disk = self.os_disk
        storage = {
            "osDisk": {
                "osType": os_disk.os_type or "Linux",
                "name": os_disk.name,
                "createOption": self.os_disk_create_option,
                "caching": "ReadWrite",
                "managedDisk": self._disk_ref(os_disk),
                "diskSizeGB": math.ceil(os_disk.content.size / GIB),
                "deleteOption": self.os_disk_delete_option,
            },
            "dataDisks": [
                {
                    "lun": d.lun,
                    "name": d.disk.name,
                    "createOption": d.create_option,
                    "caching": d.caching,
                    "managedDisk": self._disk_ref(d.disk),
                    "diskSizeGB": math.ceil(d.disk.content.size / GIB),
                    "toBeDetached": False,
                    "deleteOption": d.delete_option,
                }
                for d in sorted(self.data_disks, key=lambda d: d.lun)
            ],
        }
        properties: dict[str, Any] = {
            **self.extra,
            "vmId": self.vm_id,
            "hardwareProfile": {"vmSize": self.vm_size},
            "storageProfile": storage,
            "provisioningState": self.provisioning_state,
            "timeCreated": iso(self.created),
        }
        network = dict(properties.get("networkProfile") or {})
        network["networkInterfaces"] = [
            {"id": nic.id, "properties": {"primary": i == 0}} for i, nic in enumerate(self.nics)
        ]
        properties["networkProfile"] = network
        if instance_view:
            properties["instanceView"] = self.instance_view(now)
        return {
            "id": self.id,
            "name": self.name,
            "type": f"{PROVIDER}/virtualMachines",
            "location": self.location,
            "tags": dict(self.tags),
            "properties": properties,
        }

    def instance_view(self, now: float) -> dict[str, Any]:
        state = self.provisioning_state
        provisioning = {
            "code": f"ProvisioningState/{state.lower()}",
            "level": "Info",
            "displayStatus": f"Provisioning {state.lower()}",
            "time": iso(self.state_changed if self.state_changed is not None else self.created),
        }
        disk_status = {
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "time": iso(self.created),
        }
        return {
            "computerName": self.name,
            "osName": "linux" if (self.os_disk.os_type or "Linux") == "Linux" else "windows",
            "hyperVGeneration": "V2",
            "disks": [{"name": d.name, "statuses": [disk_status]} for d in self.disks()],
            "statuses": [
                provisioning,
                {
                    "code": f"PowerState/{self.power}",
                    "level": "Info",
                    "displayStatus": POWER_DISPLAY[self.power],
                },
            ],
        }


@dataclass
class Operation:
    """A long-running operation; ``complete`` applies its effect when its time comes."""

    id: str
    name: str
    location: str
    resource_id: str
    family: str
    start: float
    end: float
    complete: Callable[[float], dict[str, Any] | None]
    abort: Callable[[float], None] | None = None
    fail_with: tuple[str, str] | None = None
    status: str = "InProgress"
    finished: float | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.id,
            "startTime": iso(self.start),
            "status": self.status,
        }
        if self.finished is not None:
            body["endTime"] = iso(self.finished)
        if self.output is not None:
            body["properties"] = {"output": self.output}
        if self.error is not None:
            body["error"] = self.error
        return body
