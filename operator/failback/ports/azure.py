"""The Azure seam: what the services ask of Azure, and the faults it can answer with.

The adapter (``failback.adapters.azure``) implements :class:`AzureCompute` with the real
``azure-mgmt-compute`` ``aio`` clients; tests hand in that adapter pointed at the test
bed's emulator. Every write is a long-running operation: ``begin_*`` starts it and
returns its continuation token *without waiting*, so the caller stores the token in
status before anything else happens; :meth:`AzureCompute.poll` checks it once, from the
token alone (a restarted operator resumes it without a second write).

Faults (raised by every method)::

    Retryable
    ├── AzureThrottled(delay)        429: wait for Retry-After (delay) and try again
    └── AzureUnavailable(delay)      5xx, timeouts, dropped connections
    Permanent
    ├── AzureAuthenticationFailed    Entra ID refused the identity
    ├── AzureAuthorizationFailed     403: a role is missing
    ├── AzureNotFound                404 (a delete of something gone is not a fault)
    ├── AzureConflict                409: Azure refuses in the current state
    └── AzureOperationFailed         a long-running operation ended Failed/Canceled

Each carries ``reason`` (a :class:`~failback.api.conditions.Reason`) and ``code`` (Azure's
error code) so a service can put it in a condition as is.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from failback.api.conditions import Reason
from failback.errors import Permanent, Retryable

# ------------------------------------------------------------------ faults


class AzureRetryable(Retryable):
    """A transient Azure fault; ``delay`` honours ``Retry-After`` when Azure sent one."""

    reason: Reason = Reason.CONNECTION_FAILED

    def __init__(self, message: str, *, delay: float = 30.0, code: str = "") -> None:
        super().__init__(message, delay=delay)
        self.code = code


class AzureThrottled(AzureRetryable):
    reason = Reason.AZURE_THROTTLED


class AzureUnavailable(AzureRetryable):
    reason = Reason.CONNECTION_FAILED


class AzurePermanent(Permanent):
    """An Azure fault a person must act on."""

    reason: Reason = Reason.DEPLOYMENT_FAILED

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class AzureAuthenticationFailed(AzurePermanent):
    reason = Reason.AZURE_AUTHENTICATION_FAILED


class AzureAuthorizationFailed(AzurePermanent):
    reason = Reason.AZURE_AUTHORIZATION_FAILED


class AzureNotFound(AzurePermanent):
    reason = Reason.AZURE_VM_NOT_FOUND


class AzureConflict(AzurePermanent):
    reason = Reason.DEPLOYMENT_FAILED


class AzureOperationFailed(AzurePermanent):
    reason = Reason.DEPLOYMENT_FAILED


# ------------------------------------------------------------------ identities


@dataclass(frozen=True)
class ClientSecret:
    """A service principal with a client secret (from a Secret's ``clientSecret``)."""

    tenant_id: str
    client_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class ClientCertificate:
    """A service principal with a PEM certificate and key (``clientCertificate``)."""

    tenant_id: str
    client_id: str
    pem: bytes = field(repr=False)


@dataclass(frozen=True)
class WorkloadIdentity:
    """The operator's federated Kubernetes token, exchanged as this client and tenant."""

    tenant_id: str
    client_id: str


AzureIdentity = ClientSecret | ClientCertificate | WorkloadIdentity
"""Who the operator is in Azure for one object. ``repr`` never shows secret material."""


# ------------------------------------------------------------------ resources


class PowerState(enum.StrEnum):
    """``PowerState/*`` of the instance view; ``UNKNOWN`` when Azure reports none."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEALLOCATING = "deallocating"
    DEALLOCATED = "deallocated"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DiskRef:
    """A disk as a VM's storage profile names it."""

    name: str
    id: str | None
    """The managed disk's resource ID; None for an unmanaged (VHD) disk."""
    lun: int | None
    """None for the OS disk."""
    vhd_uri: str | None = None


@dataclass(frozen=True)
class VirtualMachine:
    """A VM with its instance view."""

    id: str
    name: str
    resource_group: str
    location: str
    vm_size: str
    os_type: str | None
    """``Linux`` or ``Windows`` as the OS disk says; None when Azure does not say."""
    os_disk: DiskRef
    data_disks: tuple[DiskRef, ...]
    provisioning_state: str
    power_state: PowerState
    power_since: dt.datetime | None
    """When the last operation on the VM (a start, a create) ended: the time of the
    instance view's provisioning status, which is when it reached its power state."""
    tags: Mapping[str, str]
    nic_ids: tuple[str, ...] = ()
    """Resource IDs of its network interfaces, the primary one first."""

    @property
    def disks(self) -> tuple[DiskRef, ...]:
        return (self.os_disk, *self.data_disks)


@dataclass(frozen=True)
class ManagedDisk:
    id: str
    name: str
    location: str
    size_bytes: int
    disk_state: str
    """Unattached, Attached, Reserved, ActiveSAS, ReadyToUpload, ActiveUpload."""
    managed_by: str | None
    os_type: str | None
    provisioning_state: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    location: str
    incremental: bool
    source_id: str | None
    time_created: dt.datetime | None
    provisioning_state: str
    tags: Mapping[str, str]
    size_bytes: int = 0
    """The source disk's size when the snapshot was taken (0 when Azure does not say)."""


@dataclass(frozen=True)
class VMDeployment:
    """A VM to create: the process server's, or a failover target's."""

    resource_group: str
    name: str
    location: str
    vm_size: str
    subnet_id: str
    image_publisher: str
    image_offer: str
    image_sku: str
    image_version: str
    admin_username: str
    """The admin account; its password is random and never kept (use Azure's password
    reset for break-glass access)."""
    tags: Mapping[str, str]
    os_disk_size_gb: int = 64
    os_disk_id: str | None = None
    """An existing managed disk to attach as the OS disk (``createOption: Attach``; a
    failover target's disk made from a recovery point). Then the image fields and
    ``admin_username`` are ignored: the disk holds the OS and its accounts."""
    data_disk_ids: tuple[str, ...] = ()
    """Existing managed disks attached as data disks, at LUN 0, 1, ... in this order."""
    os_type: str = "Linux"
    """``Linux`` or ``Windows``: the OS of an attached OS disk."""

    @classmethod
    def from_disks(
        cls,
        *,
        resource_group: str,
        name: str,
        location: str,
        vm_size: str,
        subnet_id: str,
        os_disk_id: str,
        data_disk_ids: tuple[str, ...] = (),
        os_type: str = "Linux",
        tags: Mapping[str, str],
    ) -> VMDeployment:
        """A VM that boots from existing managed disks (no image, no OS profile)."""
        return cls(
            resource_group=resource_group,
            name=name,
            location=location,
            vm_size=vm_size,
            subnet_id=subnet_id,
            image_publisher="",
            image_offer="",
            image_sku="",
            image_version="",
            admin_username="",
            tags=tags,
            os_disk_id=os_disk_id,
            data_disk_ids=data_disk_ids,
            os_type=os_type,
        )


class OperationKind(enum.StrEnum):
    """Every long-running operation the adapter can start and resume."""

    VM_CREATE = "vm-create"
    VM_DELETE = "vm-delete"
    VM_POWER_OFF = "vm-power-off"
    VM_DEALLOCATE = "vm-deallocate"
    VM_START = "vm-start"
    VM_UPDATE = "vm-update"
    DISK_CREATE = "disk-create"
    DISK_DELETE = "disk-delete"
    DISK_GRANT = "disk-grant-access"
    DISK_REVOKE = "disk-revoke-access"
    SNAPSHOT_CREATE = "snapshot-create"
    SNAPSHOT_DELETE = "snapshot-delete"
    SNAPSHOT_GRANT = "snapshot-grant-access"
    SNAPSHOT_REVOKE = "snapshot-revoke-access"


@dataclass(frozen=True)
class OperationHandle:
    """A started operation: what it is, on what, and its continuation token."""

    kind: OperationKind
    resource_group: str
    name: str
    token: str = field(repr=False)
    """Opaque; it holds URLs only (no secret), but it is long: never log it."""
    retry_after: float | None = None
    """Seconds Azure asked to wait before the first poll (``Retry-After``), if it said."""


@dataclass(frozen=True)
class OperationStatus:
    """One check of an operation."""

    done: bool
    result: str | None = None
    """For grant access: the SAS URL (a secret: never log it). Otherwise None."""


class AzureCompute(Protocol):
    """The compute operations the product needs, for one identity and subscription."""

    subscription_id: str

    async def get_vm(self, resource_group: str, name: str) -> VirtualMachine | None: ...

    async def find_vms_by_tag(
        self, resource_group: str, key: str, value: str
    ) -> list[VirtualMachine]: ...

    async def private_ip(self, nic_id: str) -> str | None:
        """The primary private address of a network interface; None if it is gone."""
        ...

    async def begin_vm_create(self, vm: VMDeployment) -> OperationHandle: ...

    async def begin_vm_delete(self, resource_group: str, name: str) -> OperationHandle: ...

    async def begin_power_off(self, resource_group: str, name: str) -> OperationHandle: ...

    async def begin_deallocate(self, resource_group: str, name: str) -> OperationHandle: ...

    async def begin_start(self, resource_group: str, name: str) -> OperationHandle: ...

    async def begin_vm_set_disks(
        self,
        resource_group: str,
        name: str,
        os_disk_id: str,
        data_disks: Sequence[tuple[int, str]],
    ) -> OperationHandle:
        """Make a deallocated VM boot from ``os_disk_id`` with exactly ``data_disks`` (LUN,
        disk ID) attached (a PATCH of its storage profile). Azure attaches no disk at a LUN
        another disk still holds: detach first (``data_disks`` without that LUN)."""
        ...

    async def list_disks(self, resource_group: str) -> list[ManagedDisk]: ...

    async def get_disk(self, resource_group: str, name: str) -> ManagedDisk | None: ...

    async def begin_disk_create_for_upload(
        self,
        resource_group: str,
        name: str,
        location: str,
        size_bytes: int,
        tags: Mapping[str, str],
        os_type: str | None = None,
    ) -> OperationHandle: ...

    async def begin_disk_create_from_snapshot(
        self,
        resource_group: str,
        name: str,
        snapshot: Snapshot,
        tags: Mapping[str, str],
        os_type: str | None = None,
    ) -> OperationHandle:
        """A managed disk copied from ``snapshot`` (``createOption: Copy``), in its location."""
        ...

    async def begin_disk_delete(self, resource_group: str, name: str) -> OperationHandle: ...

    async def begin_snapshot_create(
        self, resource_group: str, name: str, disk: ManagedDisk, tags: Mapping[str, str]
    ) -> OperationHandle: ...

    async def begin_snapshot_delete(self, resource_group: str, name: str) -> OperationHandle: ...

    async def get_snapshot(self, resource_group: str, name: str) -> Snapshot | None: ...

    async def list_snapshots(
        self, resource_group: str, tags: Mapping[str, str] | None = None
    ) -> list[Snapshot]:
        """The snapshots of ``resource_group`` carrying every tag of ``tags`` (all without)."""
        ...

    async def begin_grant_access(
        self, resource_group: str, name: str, *, snapshot: bool, write: bool, seconds: int
    ) -> OperationHandle: ...

    async def begin_revoke_access(
        self, resource_group: str, name: str, *, snapshot: bool
    ) -> OperationHandle: ...

    async def poll(self, handle: OperationHandle) -> OperationStatus: ...

    async def wait(self, handle: OperationHandle) -> OperationStatus: ...


class AzureClients(Protocol):
    """Cached compute clients, one per identity and subscription."""

    async def compute(self, identity: AzureIdentity, subscription_id: str) -> AzureCompute: ...
