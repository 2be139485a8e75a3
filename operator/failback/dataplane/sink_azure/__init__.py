"""The OnPremToAzure sink: replica managed disks written through a Write SAS, recovery
points kept as their incremental snapshots.

Public surface::

    ManagedDiskSink(compute, resource_group, disk_name, size_bytes, location=,
                    disk_id=, os_type=, tags=, state=, settings=)
        .ensure_disk() -> ManagedDisk          create for upload (tagged replica), resumable
        async with .open_cycle() as cycle:     Write SAS granted; revoked on exit, always
            await cycle.apply(batch) -> bool   checked, written (≤ 4 MiB per Put Page),
                                               read back by samples; False: applied already
        .commit_point(point_id, source_time, app_consistent) -> SinkPoint
        .points() -> [SinkPoint]  ;  .prune(retention, now_source_time, keep_app_consistent_every=)
    SinkState (persist it), SinkSettings, SinkReport, SinkPoint, replica_size, vhd_footer
    failover_to_azure(compute, sinks, vm_name=, vm_size=, subnet_id=, point_id=, state=)
        -> FailoverResult ; FailoverState (persist it)

Errors: ``WriteVerificationFailed``, ``NotAReplica``, ``CycleStillOpen``,
``PointSnapshotFailed``, ``NoSuchPoint`` (all ``Permanent``), the journal's
``SourceChecksumMismatch``/``InvalidExtent``/``SequenceError``/``PointOrderError``, and
``ports.azure`` faults. See docs/sink-azure.md.
"""

from failback.dataplane.sink_azure.failover import (
    FailoverResult,
    FailoverState,
    NoSuchPoint,
    failover_to_azure,
)
from failback.dataplane.sink_azure.sink import (
    VHD_FOOTER,
    CycleStillOpen,
    ManagedDiskSink,
    NotAReplica,
    PointSnapshotFailed,
    SinkCycle,
    SinkPoint,
    SinkReport,
    SinkSettings,
    SinkState,
    WriteVerificationFailed,
    point_snapshot_name,
    replica_size,
    vhd_footer,
)

__all__ = [
    "VHD_FOOTER",
    "CycleStillOpen",
    "FailoverResult",
    "FailoverState",
    "ManagedDiskSink",
    "NoSuchPoint",
    "NotAReplica",
    "PointSnapshotFailed",
    "SinkCycle",
    "SinkPoint",
    "SinkReport",
    "SinkSettings",
    "SinkState",
    "WriteVerificationFailed",
    "failover_to_azure",
    "point_snapshot_name",
    "replica_size",
    "vhd_footer",
]
