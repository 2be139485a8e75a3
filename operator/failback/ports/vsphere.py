"""The vSphere seam: what services ask of vCenter, and the errors it answers with.

:mod:`failback.adapters.vsphere` implements it with pyVmomi (one cached session per
vCenter and user, PropertyCollector reads with fixed property lists, faults mapped in one
module). Services depend on this Protocol only.

Errors (each carries the condition ``reason`` a service reports)::

    Retryable
    └── VCenterUnreachable        connection refused, DNS, timeout, vCenter busy
    Permanent
    ├── VCenterLoginFailed        the Secret's user name or password was refused
    ├── TLSVerificationFailed     the certificate matched neither caBundle nor thumbprint
    ├── PermissionDenied          NoPermission: the message names the privilege and object
    ├── NotFound                  a VM, host, datastore... that is not (or no longer) there
    └── VSphereFault              any other fault vCenter raised, with its message
        ├── ChangedBlockTrackingUnavailable  QueryChangedDiskAreas is not there (vcsim) or
        │                                    CBT is off for the disk
        └── ChangeIdRejected      the changeId is not valid (any more): resync the disk
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from failback.api.conditions import Reason
from failback.domain.vsphere import REPLICATION_SNAPSHOT as REPLICATION_SNAPSHOT
from failback.domain.vsphere import VM, Inventory, VCenterCredentials
from failback.errors import Permanent, Retryable


class VCenterUnreachable(Retryable):
    reason: str = Reason.VCENTER_UNREACHABLE


class VCenterLoginFailed(Permanent):
    reason: str = Reason.VCENTER_LOGIN_FAILED


class TLSVerificationFailed(Permanent):
    reason: str = Reason.TLS_VERIFICATION_FAILED


class PermissionDenied(Permanent):
    reason: str = Reason.INSUFFICIENT_VCENTER_PERMISSIONS


class NotFound(Permanent):
    reason: str = Reason.VM_NOT_FOUND


class VSphereFault(Permanent):
    # Reported Unknown (the operator retries), with vCenter's own message.
    reason: str = Reason.VCENTER_UNREACHABLE


class ChangedBlockTrackingUnavailable(VSphereFault):
    """vCenter cannot answer ``QueryChangedDiskAreas`` for this disk: the method is not
    implemented (vcsim), or changed block tracking is off for the VM or the disk."""


class ChangeIdRejected(VSphereFault):
    """The changeId asked about is not valid for the disk (CBT was reset, the disk was
    replaced or reverted): the only safe answer is a full resync of the disk."""


@dataclass(frozen=True)
class TaskState:
    """A vSphere task, by moref, as vCenter reports it now."""

    moref: str
    state: str
    """``queued``, ``running``, ``success`` or ``error``."""
    error: str | None = None
    result: str | None = None
    """The moref the task produced (a created VM), if any."""
    progress: int | None = None

    @property
    def done(self) -> bool:
        return self.state in ("success", "error")


@dataclass(frozen=True)
class NewDisk:
    """A disk to create, named by its file so that a retry finds it instead of adding
    a second one."""

    file_name: str
    """``[datastore] folder/name.vmdk``; the folder must exist (a VM's folder does)."""
    capacity_bytes: int
    thin: bool = True


@dataclass(frozen=True)
class VMPlacement:
    """Where a new VM goes (R-LOC-2): every name resolved inside ``datacenter``."""

    datacenter: str
    datastore: str
    host: str | None = None
    cluster: str | None = None
    folder: str | None = None
    """A folder path under the datacenter's VM folder (``dr/restored``), or None for it."""
    networks: tuple[str, ...] = ()
    """Port group names, one NIC each, in order."""


@dataclass(frozen=True)
class NewVM:
    name: str
    guest_id: str
    placement: VMPlacement
    instance_uuid: str
    """Chosen by the caller and stored before the task starts, so that a retry (or a
    restarted operator) finds the VM a lost task created instead of creating another."""
    cpus: int = 2
    memory_mib: int = 4096
    disk_files: tuple[str, ...] = ()
    """Existing VMDKs (``[ds] path.vmdk``) to attach, in order."""
    disk_sizes: Mapping[str, int] | None = None
    """Their sizes by file, when known (see ``VCenter.attach_disks``)."""
    new_disks: tuple[NewDisk, ...] = ()
    extra_config: Mapping[str, str] | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot in a VM's snapshot tree."""

    moref: str
    name: str
    description: str = ""
    created: dt.datetime | None = None
    quiesced: bool = False
    parent: str | None = None
    """The moref of the snapshot this one was taken on top of (None: a root)."""


@dataclass(frozen=True)
class SnapshotDisk:
    """One virtual disk as a snapshot froze it (``snapshot.config.hardware.device``)."""

    device_key: int
    file_name: str
    """The backing's ``[datastore] folder/name.vmdk`` holding the snapshot's image."""
    uuid: str | None
    """``backing.uuid`` (stable across snapshots: the disk's identity)."""
    capacity_bytes: int
    change_id: str | None
    """``backing.changeId``: the CBT position of this image (None when CBT is off, and
    always on vcsim)."""


@dataclass(frozen=True)
class ChangedArea:
    """A byte range of a disk (``start``, ``length`` in bytes)."""

    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class DiskChangeInfo:
    """One answer of ``QueryChangedDiskAreas``: it covers ``[start_offset, start_offset +
    length)`` of the disk, the areas inside it changed since the changeId asked about."""

    start_offset: int
    length: int
    areas: tuple[ChangedArea, ...]


@dataclass(frozen=True)
class Changes:
    """What a :class:`ChangedAreas` answers: the areas changed since a changeId (every
    allocated area for ``"*"``), and the changeId of the image they were read from."""

    areas: tuple[ChangedArea, ...]
    change_id: str | None


class ChangedAreas(Protocol):
    """Where a vSphere source learns which areas of a disk changed (real CBT through
    :meth:`VCenter.query_changed_areas`, or the test bed's sidecar files)."""

    async def changed_areas(self, snapshot: str, disk: SnapshotDisk, since: str) -> Changes:
        """The areas of ``disk`` (as snapshot ``snapshot`` froze it) changed since the
        changeId ``since``; ``"*"``: every allocated area. Raises :class:`ChangeIdRejected`
        when ``since`` is not valid for the disk."""
        ...


class VCenter(Protocol):
    """One vCenter, as one user (one cached session)."""

    @property
    def server(self) -> str: ...

    async def inventory(self, max_age: float | None = None) -> Inventory:
        """One read of everything (fixed property lists), shared by every caller for
        ``max_age`` seconds (the settings' default when None)."""
        ...

    async def vm(self, instance_uuid: str) -> VM | None:
        """A fresh read of one VM, found by instance UUID."""
        ...

    async def privileges(
        self, morefs: Sequence[str], privileges: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        """For each entity, the privileges of ``privileges`` the session lacks on it."""
        ...

    async def power_on(self, instance_uuid: str) -> TaskState | None:
        """Start powering on; None when it already is (nothing to wait for)."""
        ...

    async def power_off(self, instance_uuid: str) -> TaskState | None:
        """Start a hard power-off; None when it already is off."""
        ...

    async def create_vm(self, spec: NewVM) -> TaskState | str:
        """Start creating ``spec``; the moref of the VM when it already exists."""
        ...

    async def attach_disks(
        self,
        instance_uuid: str,
        files: Sequence[str],
        new: Sequence[NewDisk] = (),
        sizes: Mapping[str, int] | None = None,
    ) -> TaskState | None:
        """Attach existing VMDKs (and create new ones) to the VM; None when every file
        is attached already and no new disk is asked for. ``sizes``: the existing files'
        sizes when known (vSphere reads them from the descriptors; vcsim needs them)."""
        ...

    async def detach_disks(self, instance_uuid: str, files: Sequence[str]) -> TaskState | None:
        """Detach the VMDKs (keeping the files); None when none of them is attached."""
        ...

    async def make_directory(self, datacenter: str, path: str) -> None:
        """Create the datastore folder ``[ds] a/b`` (and its parents) unless it exists."""
        ...

    async def enable_change_tracking(self, instance_uuid: str) -> TaskState | None:
        """Turn changed block tracking on for the VM; None when it is on already."""
        ...

    async def create_snapshot(
        self, instance_uuid: str, name: str, *, description: str = "", quiesce: bool = False
    ) -> TaskState | str:
        """Start taking a snapshot without memory (the task's ``result`` is the snapshot's
        moref); the moref of a snapshot with this name and description when the VM has one
        already (a retry after a lost task)."""
        ...

    async def remove_snapshot(self, snapshot: str) -> TaskState | None:
        """Start removing one snapshot (its children stay, consolidated); None when it is
        gone already."""
        ...

    async def snapshots(self, instance_uuid: str) -> tuple[SnapshotInfo, ...]:
        """Every snapshot in the VM's tree, parents before children."""
        ...

    async def snapshot_disks(self, snapshot: str) -> tuple[SnapshotDisk, ...]:
        """The virtual disks of a snapshot, in device order."""
        ...

    async def query_changed_areas(
        self, instance_uuid: str, snapshot: str, device_key: int, start_offset: int, change_id: str
    ) -> DiskChangeInfo:
        """One ``QueryChangedDiskAreas`` answer (the caller pages through ``start_offset``
        until the disk's capacity is covered). Raises :class:`ChangedBlockTrackingUnavailable`
        or :class:`ChangeIdRejected`."""
        ...

    async def task(self, moref: str) -> TaskState:
        """A task's state now (``NotFound`` once vCenter forgot it)."""
        ...

    async def wait(self, moref: str, patience: float) -> TaskState:
        """Wait for a task to end; its last state after ``patience`` seconds."""
        ...


class VCenters(Protocol):
    """The session cache: one :class:`VCenter` per server and user."""

    async def connect(self, credentials: VCenterCredentials) -> VCenter: ...
