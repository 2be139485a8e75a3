"""The master target's recovery-point journal (write-ahead, undo-logged, crash-safe).

Public surface::

    Journal.open(directory, disks, config) -> Journal
        .begin_cycle(changed_bytes=, extents=)   reserve room or raise RetentionVolumeFull
        .apply(Batch) -> last durable seq        journal (data + undo), fsync, write targets
        .commit_point(id, source_time, app_consistent) -> RecoveryPoint
        .abort_cycle()  .roll_to(id)  .points()  .latest_source_time()  .last_durable_seq
        .space()  .report (what recovery did)  .close()
    DiskIO (protocol), FileDisk, Extent, Batch, RecoveryPoint, JournalConfig, extent_checksum

The on-disk format is described in docs/journal.md.
"""

from failback.dataplane.journal.diskio import DiskIO, FileDisk
from failback.dataplane.journal.errors import (
    InvalidExtent,
    JournalCorrupt,
    JournalError,
    JournalLocked,
    PointOrderError,
    RetentionVolumeFull,
    SequenceError,
    SourceChecksumMismatch,
    UnknownRecoveryPoint,
)
from failback.dataplane.journal.journal import Journal, RecoveryReport, Space
from failback.dataplane.journal.model import (
    MAX_EXTENT,
    SECTOR,
    Batch,
    Extent,
    JournalConfig,
    RecoveryPoint,
    extent_checksum,
)

__all__ = [
    "MAX_EXTENT",
    "SECTOR",
    "Batch",
    "DiskIO",
    "Extent",
    "FileDisk",
    "InvalidExtent",
    "Journal",
    "JournalConfig",
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "PointOrderError",
    "RecoveryPoint",
    "RecoveryReport",
    "RetentionVolumeFull",
    "SequenceError",
    "SourceChecksumMismatch",
    "Space",
    "UnknownRecoveryPoint",
    "extent_checksum",
]
