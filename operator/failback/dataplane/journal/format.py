"""The on-disk record format (see docs/journal.md). Pure: bytes in, values out.

A segment file is a sequence of frames::

    magic "FBJ1" | type u8 | version u8 | reserved u16 | payload length u32 | xxh3-64 u64 | payload

All integers little-endian. The checksum covers the first 12 header bytes and the payload.
"""

from __future__ import annotations

import enum
import mmap
import struct
from dataclasses import dataclass

import xxhash

Buffer = bytes | mmap.mmap
"""What frames are read from: a whole segment in memory, or mapped."""

MAGIC = b"FBJ1"
VERSION = 1
HEADER = struct.Struct("<4sBBHIQ")
HEADER_SIZE = HEADER.size  # 20
MAX_PAYLOAD = (64 << 20) * 2 + 4096


class FrameType(enum.IntEnum):
    """What a frame holds."""

    SEGMENT = 1
    EXTENT = 2
    BATCH_END = 3
    COMMIT = 4


@dataclass(frozen=True, slots=True)
class PointMeta:
    """A recovery point as stored: ``ordinal`` orders points over the journal's life."""

    ordinal: int
    point_id: str
    source_us: int
    app_consistent: bool
    seq: int


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """First frame of every segment: the point the segment starts from (if any)."""

    index: int
    base_seq: int
    base: PointMeta | None


@dataclass(frozen=True, slots=True)
class ExtentHead:
    """The fixed part of an extent record (the data follows in the payload)."""

    seq: int
    disk_id: str
    offset: int
    length: int
    zero: bool
    has_undo: bool
    source_checksum: int
    data_at: int
    """Where, inside the payload, the new data starts (absent if ``zero``)."""
    undo_at: int
    """Where, inside the payload, the undo data starts (absent unless ``has_undo``)."""


@dataclass(frozen=True, slots=True)
class BatchEnd:
    """Closes a batch: every extent record of ``seq`` precedes it."""

    seq: int
    extents: int


@dataclass(frozen=True, slots=True)
class Commit:
    """A recovery point's marker; written twice (``copy`` 0 then 1) in one fsync."""

    point: PointMeta
    copy: int


_POINT = struct.Struct("<QQqBH")
_SEGMENT = struct.Struct("<QQB")
_EXTENT = struct.Struct("<QQIBHQ")
_BATCH_END = struct.Struct("<QI")
_COPY = struct.Struct("<B")
_ZERO = 1
_UNDO = 2


def frame(ftype: FrameType, *parts: bytes | bytearray | memoryview) -> bytes:
    """One complete frame holding the concatenation of ``parts``."""
    length = sum(len(p) for p in parts)
    head = struct.pack("<4sBBHI", MAGIC, ftype, VERSION, 0, length)
    hasher = xxhash.xxh3_64(head)
    for part in parts:
        hasher.update(part)
    return b"".join((head, struct.pack("<Q", hasher.intdigest()), *parts))


def _point_bytes(p: PointMeta) -> bytes:
    raw = p.point_id.encode()
    return _POINT.pack(p.ordinal, p.seq, p.source_us, int(p.app_consistent), len(raw)) + raw


def _point_from(payload: bytes, at: int) -> tuple[PointMeta, int]:
    ordinal, seq, source_us, app, n = _POINT.unpack_from(payload, at)
    start = at + _POINT.size
    point_id = payload[start : start + n].decode()
    if len(point_id.encode()) != n:
        raise ValueError("short point id")
    return PointMeta(ordinal, point_id, source_us, bool(app), seq), start + n


def segment_frame(header: SegmentHeader) -> bytes:
    """The frame that opens a segment."""
    base = header.base
    body = _SEGMENT.pack(header.index, header.base_seq, int(base is not None))
    return frame(FrameType.SEGMENT, body + (_point_bytes(base) if base else b""))


def extent_frame(
    seq: int,
    disk_id: str,
    offset: int,
    length: int,
    data: bytes | None,
    undo: bytes | None,
    source_checksum: int,
) -> bytes:
    """An extent record: new data (unless a cleared range) and undo data (if any)."""
    raw = disk_id.encode()
    flags = (_ZERO if data is None else 0) | (_UNDO if undo is not None else 0)
    head = _EXTENT.pack(seq, offset, length, flags, len(raw), source_checksum) + raw
    return frame(FrameType.EXTENT, head, data or b"", undo or b"")


def batch_end_frame(seq: int, extents: int) -> bytes:
    """The frame that closes batch ``seq``."""
    return frame(FrameType.BATCH_END, _BATCH_END.pack(seq, extents))


def commit_frame(point: PointMeta, copy: int) -> bytes:
    """One of the two commit frames of a point."""
    return frame(FrameType.COMMIT, _point_bytes(point), _COPY.pack(copy))


def commit_frames(point: PointMeta) -> bytes:
    """Both commit frames: the first one survives a torn second, the second a flipped first."""
    return commit_frame(point, 0) + commit_frame(point, 1)


def frame_size_extent(disk_id: str, length: int, *, zero: bool, undo: bool) -> int:
    """The size on disk of an extent record, without building it."""
    data = 0 if zero else length
    return HEADER_SIZE + _EXTENT.size + len(disk_id.encode()) + data + (length if undo else 0)


BATCH_END_SIZE = HEADER_SIZE + _BATCH_END.size
COMMIT_RESERVE = 2 * (HEADER_SIZE + _POINT.size + 1024 + _COPY.size)
"""Room kept for a cycle's commit frames (point ids up to 1 KiB)."""


class Damage(enum.Enum):
    """Why no valid frame starts at a position."""

    SHORT = "short"
    """Fewer bytes than a header, or than the header's length says: a torn tail if last."""
    MAGIC = "bad magic"
    LENGTH = "impossible length"
    CHECKSUM = "checksum mismatch"
    UNKNOWN = "unknown frame type or version"


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame whose checksum verified."""

    ftype: FrameType
    start: int
    end: int


def check_frame(buf: Buffer, pos: int, limit: int) -> RawFrame | Damage:
    """Verify the frame at ``pos`` in ``buf[:limit]``; return it or why it is no frame."""
    if limit - pos < HEADER_SIZE:
        return Damage.SHORT
    magic, ftype, version, _, length, checksum = HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        return Damage.MAGIC
    if length > MAX_PAYLOAD:
        return Damage.LENGTH
    end = pos + HEADER_SIZE + length
    if end > limit:
        return Damage.SHORT
    hasher = xxhash.xxh3_64(buf[pos : pos + 12])
    hasher.update(buf[pos + HEADER_SIZE : end])
    if hasher.intdigest() != checksum:
        return Damage.CHECKSUM
    if version != VERSION or ftype not in FrameType._value2member_map_:
        return Damage.UNKNOWN
    return RawFrame(FrameType(ftype), pos, end)


def check_frame_light(buf: Buffer, pos: int, limit: int) -> RawFrame | Damage:
    """Like :func:`check_frame`, without hashing the payload of an EXTENT frame.

    Its header must still be plausible and the next frame must start where it says it ends;
    every other frame type is verified in full. For a fast open of older segments: the
    records are verified in full again before they are ever used.
    """
    if limit - pos < HEADER_SIZE:
        return Damage.SHORT
    magic, ftype, version, _, length, _ = HEADER.unpack_from(buf, pos)
    if magic != MAGIC or ftype != FrameType.EXTENT or version != VERSION:
        return check_frame(buf, pos, limit)
    end = pos + HEADER_SIZE + length
    if length > MAX_PAYLOAD or end > limit:
        return check_frame(buf, pos, limit)
    if end != limit and buf[end : end + 4] != MAGIC:
        return check_frame(buf, pos, limit)
    return RawFrame(FrameType.EXTENT, pos, end)


def payload_of(buf: Buffer, raw: RawFrame) -> bytes:
    """The payload of a verified frame, as bytes."""
    return bytes(buf[raw.start + HEADER_SIZE : raw.end])


def parse_segment(payload: bytes) -> SegmentHeader:
    """Decode a SEGMENT payload."""
    index, base_seq, has_base = _SEGMENT.unpack_from(payload, 0)
    base = _point_from(payload, _SEGMENT.size)[0] if has_base else None
    return SegmentHeader(index, base_seq, base)


def parse_extent(payload: bytes) -> ExtentHead:
    """Decode the fixed part of an EXTENT payload."""
    seq, offset, length, flags, n, checksum = _EXTENT.unpack_from(payload, 0)
    start = _EXTENT.size
    disk_id = payload[start : start + n].decode()
    data_at = start + n
    zero = bool(flags & _ZERO)
    undo_at = data_at + (0 if zero else length)
    return ExtentHead(
        seq, disk_id, offset, length, zero, bool(flags & _UNDO), checksum, data_at, undo_at
    )


def parse_batch_end(payload: bytes) -> BatchEnd:
    """Decode a BATCH_END payload."""
    seq, extents = _BATCH_END.unpack_from(payload, 0)
    return BatchEnd(seq, extents)


def parse_commit(payload: bytes) -> Commit:
    """Decode a COMMIT payload."""
    point, at = _point_from(payload, 0)
    (copy,) = _COPY.unpack_from(payload, at)
    return Commit(point, copy)


def find_next_magic(buf: Buffer, pos: int, limit: int) -> int:
    """The next position after ``pos`` where the magic appears, or -1."""
    return buf.find(MAGIC, pos + 1, limit)
