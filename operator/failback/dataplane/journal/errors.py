"""The journal's errors, each one a specific answer to a specific situation.

::

    FailbackError
    ├── Retryable
    │   ├── RetentionVolumeFull     the next cycle (or batch) does not fit; nothing of it written
    │   └── JournalLocked           another process holds the journal directory
    └── Permanent
        ├── InvalidExtent           bad input: unknown disk, beyond the disk, negative, misaligned
        ├── SourceChecksumMismatch  an extent's data does not match its source checksum
        ├── SequenceError           a batch sequence number skips ahead (a lost batch)
        ├── UnknownRecoveryPoint    no such point (never committed, pruned or rolled away)
        ├── PointOrderError         a commit whose id or source time goes backwards
        └── JournalCorrupt          a record failed its checksum at rest (names file and offset)

All of them are also :class:`JournalError`, so a caller can catch the journal's errors at once.
"""

from __future__ import annotations

from pathlib import Path

from failback.errors import FailbackError, Permanent, Retryable


class JournalError(FailbackError):
    """Base of every error the journal raises."""


class InvalidExtent(JournalError, Permanent):
    """An extent that can never be applied as sent (the sender must fix it)."""


class SourceChecksumMismatch(JournalError, Permanent):
    """An extent's data does not match the checksum the source computed; nothing was written."""

    def __init__(self, disk_id: str, offset: int, expected: int, actual: int) -> None:
        super().__init__(
            f"extent {disk_id}@{offset}: source checksum {expected:016x} "
            f"!= computed {actual:016x}; batch refused, nothing written"
        )
        self.disk_id = disk_id
        self.offset = offset


class SequenceError(JournalError, Permanent):
    """A batch's sequence number skips ahead of the last durable one (a batch was lost)."""


class UnknownRecoveryPoint(JournalError, Permanent):
    """The requested recovery point does not exist (or no longer does)."""


class PointOrderError(JournalError, Permanent):
    """A commit would reuse an older point's id or go back in source time."""


class RetentionVolumeFull(JournalError, Retryable):
    """The journal's capacity (or the volume) cannot take the next cycle or batch.

    Raised before any byte of that cycle or batch is written: existing points stay intact.
    """

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message, delay=300.0)
        self.needed = needed
        self.available = available


class JournalLocked(JournalError, Retryable):
    """Another process has the journal directory open."""


class JournalCorrupt(JournalError, Permanent):
    """A record failed its checksum at rest: it is never applied.

    ``path`` and ``offset`` name the first byte of the damaged region.
    """

    def __init__(self, path: Path, offset: int, detail: str) -> None:
        super().__init__(f"journal corrupt at {path} offset {offset}: {detail}")
        self.path = path
        self.offset = offset
