"""The AzureToOnPrem source: managed disks read through incremental snapshots.

Public surface::

    ManagedDiskSource(compute, resource_group, disk_name, disk_id=, state=, settings=)
        .take_snapshot() -> Snapshot        paced, resumable (deterministic name, .pending)
        async with .open_cycle() as cycle:  grants read SAS; revoked on exit, also on error
            cycle.extents() / cycle.batches(first_seq) ; cycle.report ; cycle.mode
        .complete(cycle) -> DiskState       after the sink made the cycle durable
        .discard(cycle)                     give an unfinished cycle's snapshot up
    DiskGroupSource([...]).open_cycle() / .complete(group_cycle)
    DiskState (persist it), SourceSettings, CycleMode, CycleReport, PageBlob, batched

``compute`` is the ``ports.azure.AzureCompute`` seam (the adapter implements it); the page
blobs behind the SAS URLs are read here with aiohttp. See docs/source-azure.md.
"""

from failback.dataplane.extents import CycleMode
from failback.dataplane.source_azure.pageblob import PageBlob, PageRange, RequestCounts
from failback.dataplane.source_azure.source import (
    RESIZE_BOUNDARY,
    BaseSnapshot,
    CycleNotFinished,
    CycleReport,
    DiskCycle,
    DiskGroupSource,
    DiskState,
    GroupCycle,
    ManagedDiskSource,
    SnapshotFailed,
    SourceSettings,
    batched,
)

__all__ = [
    "RESIZE_BOUNDARY",
    "BaseSnapshot",
    "CycleMode",
    "CycleNotFinished",
    "CycleReport",
    "DiskCycle",
    "DiskGroupSource",
    "DiskState",
    "GroupCycle",
    "ManagedDiskSource",
    "PageBlob",
    "PageRange",
    "RequestCounts",
    "SnapshotFailed",
    "SourceSettings",
    "batched",
]
