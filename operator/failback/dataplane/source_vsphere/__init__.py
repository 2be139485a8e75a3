"""The OnPremToAzure source: a vSphere VM's disks read through a snapshot plus changed
block tracking, from the datastore.

Public surface::

    VMSource(vcenter, instance_uuid, files, state=, settings=, changes=)
        .take_snapshot(task=None) -> SnapshotInfo   refuses a user's snapshot; resumable
        async with .open_cycle(resync=None) as cycle:   snapshot removed on exit, also on error
            cycle.extents() / cycle.batches(first_seq) ; cycle.reports ; cycle.source_time
        await .complete(cycle) -> VMState          after the sink made the cycle durable
    VSphereDiskSource(disk_id, changes=, files=, state=, settings=)   one disk's reads
    DatastoreFiles({datastore: directory})          datastore path → flat file
    VCenterChangedAreas / SidecarChangedAreas / changed_areas_source(kind, ...)
    VMState, DiskState (persist them), SourceSettings, CycleMode, CycleReport,
    plan_reads, normalize, batched

``vcenter`` is the ``ports.vsphere.VCenter`` seam (the adapter implements it). See
docs/source-vsphere.md.
"""

from failback.dataplane.extents import CycleMode, batched
from failback.dataplane.source_vsphere.changes import (
    ALL,
    ChangeTracking,
    SidecarChangedAreas,
    VCenterChangedAreas,
    allocated_ranges,
    changed_areas_source,
    normalize,
    read_sidecar,
)
from failback.dataplane.source_vsphere.files import DatastoreFiles, DiskFileNotFound
from failback.dataplane.source_vsphere.source import (
    CycleNotFinished,
    CycleReport,
    DiskCycle,
    DiskState,
    Read,
    SnapshotFailed,
    SnapshotPending,
    SourceSettings,
    UserSnapshotPresent,
    VMCycle,
    VMSource,
    VMState,
    VSphereDiskSource,
    gaps,
    plan_reads,
)

__all__ = [
    "ALL",
    "ChangeTracking",
    "CycleMode",
    "CycleNotFinished",
    "CycleReport",
    "DatastoreFiles",
    "DiskCycle",
    "DiskFileNotFound",
    "DiskState",
    "Read",
    "SidecarChangedAreas",
    "SnapshotFailed",
    "SnapshotPending",
    "SourceSettings",
    "UserSnapshotPresent",
    "VCenterChangedAreas",
    "VMCycle",
    "VMSource",
    "VMState",
    "VSphereDiskSource",
    "allocated_ranges",
    "batched",
    "changed_areas_source",
    "gaps",
    "normalize",
    "plan_reads",
    "read_sidecar",
]
