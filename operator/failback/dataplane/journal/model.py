"""The journal's vocabulary: extents, batches, recovery points, settings. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import xxhash

from failback.dataplane.journal.errors import InvalidExtent, SourceChecksumMismatch

SECTOR = 512
"""Every offset and length is a multiple of this: Azure pages are 512 bytes."""

MAX_EXTENT = 64 * 1024 * 1024
"""The largest extent one record holds; the sender splits larger ranges."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def extent_checksum(data: bytes | bytearray | memoryview) -> int:
    """The source checksum of an extent's data: XXH3-64 (the PS computes the same)."""
    return xxhash.xxh3_64_intdigest(data)


def to_micros(when: dt.datetime) -> int:
    """A timezone-aware time as integer microseconds since the Unix epoch."""
    if when.tzinfo is None:
        raise ValueError(f"source time {when!r} must be timezone-aware")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> dt.datetime:
    """Inverse of :func:`to_micros` (UTC)."""
    return _EPOCH + dt.timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class Extent:
    """One changed range of one disk.

    ``data`` is the new content, or ``None`` for a cleared range (zeros, not read at the
    source; then ``checksum`` is ignored and may be 0).
    """

    disk_id: str
    offset: int
    length: int
    data: bytes | None
    checksum: int = 0

    @classmethod
    def of(cls, disk_id: str, offset: int, data: bytes) -> Extent:
        """An extent carrying ``data``, with its source checksum computed here."""
        return cls(disk_id, offset, len(data), data, extent_checksum(data))

    @classmethod
    def zero(cls, disk_id: str, offset: int, length: int) -> Extent:
        """A cleared range."""
        return cls(disk_id, offset, length, None, 0)


@dataclass(frozen=True, slots=True)
class Batch:
    """What the PS sends in one go: ``seq`` increases by one per batch over the journal's life."""

    seq: int
    extents: Sequence[Extent]


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """A consistent cut across every disk of the consistency group."""

    point_id: str
    source_time: dt.datetime
    app_consistent: bool
    seq: int
    """The last batch sequence number included in the point."""
    disks: tuple[str, ...]
    restorable: bool = True
    """False when a damaged record between this point and the newest one makes it unreachable."""


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """How a journal behaves; the defaults follow R-POL-1 and the MT sizing."""

    retention: dt.timedelta = dt.timedelta(hours=24)
    """Points older than this, measured from the newest point's source time, are pruned."""
    capacity_bytes: int = 1 << 40
    """The most the journal directory may hold (the retention volume's share of this group)."""
    segment_bytes: int = 256 << 20
    """A new segment file starts at the first cycle after the current one reaches this size."""
    open_cycle: Literal["rollback", "resume"] = "rollback"
    """What recovery does with an interrupted cycle: ``rollback`` (disks back to the last point;
    the sender resends the cycle) or ``resume`` (durable batches kept and redone; the sender
    resends from ``last_durable_seq + 1``, at most one batch)."""
    first_cycle: Literal["journal", "direct"] = "journal"
    """How the first cycle (the initial copy, before any point exists) is written. ``journal``:
    like every other cycle (new data in the journal first; there is no undo to keep). ``direct``:
    the disks are written and fsync'd first and only a BATCH_END goes to the journal, so an
    initial copy larger than the retention volume fits and runs at disk speed; it resumes from
    ``last_durable_seq + 1`` after a crash in either ``open_cycle`` mode."""
    verify_on_open: bool = True
    """Hash every record of every segment when opening. False hashes only the newest segment's
    extent records (and every header and commit everywhere): a fast restart over a large
    retention volume; older records are still verified in full before any use."""

    def __post_init__(self) -> None:
        if self.retention < dt.timedelta(0):
            raise ValueError(f"retention {self.retention} must not be negative")
        if self.capacity_bytes <= 0 or self.segment_bytes <= 0:
            raise ValueError("capacity_bytes and segment_bytes must be > 0")
        if self.first_cycle not in ("journal", "direct"):
            raise ValueError(f"first_cycle {self.first_cycle!r}: 'journal' or 'direct'")
        if self.open_cycle not in ("rollback", "resume"):
            raise ValueError(f"open_cycle {self.open_cycle!r}: 'rollback' or 'resume'")


def validate_batch(batch: Batch, disk_sizes: Mapping[str, int]) -> None:
    """Refuse a batch that could never be applied, before any byte is written.

    Raises :class:`InvalidExtent` or :class:`SourceChecksumMismatch`.
    """
    if batch.seq < 1:
        raise InvalidExtent(f"batch sequence {batch.seq} must be >= 1")
    for ext in batch.extents:
        where = f"extent {ext.disk_id}@{ext.offset}+{ext.length} in batch {batch.seq}"
        size = disk_sizes.get(ext.disk_id)
        if size is None:
            known = ", ".join(sorted(disk_sizes)) or "none"
            raise InvalidExtent(f"{where}: unknown disk id {ext.disk_id!r} (known: {known})")
        if ext.offset < 0 or ext.length <= 0:
            raise InvalidExtent(f"{where}: offset must be >= 0 and length > 0")
        if ext.offset % SECTOR or ext.length % SECTOR:
            raise InvalidExtent(f"{where}: offset and length must be multiples of {SECTOR}")
        if ext.length > MAX_EXTENT:
            raise InvalidExtent(f"{where}: longer than {MAX_EXTENT} bytes; split it")
        if ext.offset + ext.length > size:
            raise InvalidExtent(f"{where}: beyond the end of the disk ({size} bytes)")
        if ext.data is not None:
            if len(ext.data) != ext.length:
                raise InvalidExtent(f"{where}: carries {len(ext.data)} bytes of data")
            actual = extent_checksum(ext.data)
            if actual != ext.checksum:
                raise SourceChecksumMismatch(ext.disk_id, ext.offset, ext.checksum, actual)
