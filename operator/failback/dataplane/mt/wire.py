"""The batch body on the wire (``application/vnd.failback.batch.v1``): pure encode/decode.

::

    batch header (28 bytes)
      0   4   magic "FBB1"
      4   1   version (1)
      5   3   reserved (0)
      8   8   sequence number (u64)
      16  4   extent count (u32)
      20  8   XXH3-64 of bytes 0..19
    then, per extent:
      0   8   offset (u64)
      8   4   length (u32)
      12  1   flags (1 = cleared range: no data follows)
      13  1   reserved (0)
      14  2   disk id length n (u16)
      16  8   source checksum: XXH3-64 of the data (0 for a cleared range)
      24  n   disk id (UTF-8)
      24+n 8  XXH3-64 of the 24 + n bytes before it
      32+n    data (``length`` bytes; absent for a cleared range)

All integers little-endian. Headers carry their own checksum, so a flipped bit in an offset
or a length is refused as a malformed frame instead of writing good data to the wrong place;
a flipped bit in the data fails the extent's source checksum (checked by the service before
anything of the batch is written). The body must end exactly after the last extent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import xxhash

from failback.dataplane.journal import Batch, Extent

MEDIA_TYPE = "application/vnd.failback.batch.v1"
MAGIC = b"FBB1"
VERSION = 1
FLAG_ZERO = 1

_HEAD = struct.Struct("<4sB3xQI")
_EXT = struct.Struct("<QIBxHQ")
_SUM = struct.Struct("<Q")
HEAD_SIZE = _HEAD.size + _SUM.size


class FrameError(ValueError):
    """The body is not a well-formed batch; ``offset`` is where decoding stopped."""

    def __init__(self, offset: int, detail: str) -> None:
        super().__init__(f"malformed batch frame at byte {offset}: {detail}")
        self.offset = offset


def _xxh(data: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data)


def encode_batch(seq: int, extents: Iterable[Extent]) -> bytes:
    """The body of one batch, as the process server sends it."""
    items = list(extents)
    head = _HEAD.pack(MAGIC, VERSION, seq, len(items))
    parts = [head, _SUM.pack(_xxh(head))]
    for ext in items:
        disk = ext.disk_id.encode()
        flags = FLAG_ZERO if ext.data is None else 0
        fixed = _EXT.pack(ext.offset, ext.length, flags, len(disk), ext.checksum) + disk
        parts += [fixed, _SUM.pack(_xxh(fixed))]
        if ext.data is not None:
            parts.append(ext.data)
    return b"".join(parts)


def decode_batch(body: bytes) -> Batch:
    """The batch in ``body``; :class:`FrameError` names the first thing wrong.

    Checks structure and header checksums only: data checksums are the caller's (so it can
    answer with the extent that failed).
    """
    view = memoryview(body)
    if len(view) < HEAD_SIZE:
        raise FrameError(0, f"{len(view)} bytes is shorter than the {HEAD_SIZE}-byte header")
    magic, version, seq, count = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise FrameError(0, f"magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FrameError(4, f"version {version}, this service speaks {VERSION}")
    if _SUM.unpack_from(view, _HEAD.size)[0] != _xxh(view[: _HEAD.size]):
        raise FrameError(0, "batch header checksum does not match")
    pos = HEAD_SIZE
    extents: list[Extent] = []
    for index in range(count):
        if len(view) - pos < _EXT.size:
            raise FrameError(pos, f"extent {index}: truncated header")
        offset, length, flags, id_len, checksum = _EXT.unpack_from(view, pos)
        fixed_end = pos + _EXT.size + id_len
        if len(view) < fixed_end + _SUM.size:
            raise FrameError(pos, f"extent {index}: truncated header")
        if _SUM.unpack_from(view, fixed_end)[0] != _xxh(view[pos:fixed_end]):
            raise FrameError(pos, f"extent {index}: header checksum does not match")
        if flags & ~FLAG_ZERO:
            raise FrameError(pos, f"extent {index}: unknown flags {flags:#x}")
        try:
            disk_id = bytes(view[pos + _EXT.size : fixed_end]).decode()
        except UnicodeDecodeError as exc:
            raise FrameError(pos, f"extent {index}: disk id is not UTF-8") from exc
        data_start = fixed_end + _SUM.size
        if flags & FLAG_ZERO:
            extents.append(Extent(disk_id, offset, length, None, 0))
            pos = data_start
            continue
        if len(view) - data_start < length:
            raise FrameError(
                data_start,
                f"extent {index}: {length} bytes of data announced, "
                f"{len(view) - data_start} left in the body",
            )
        data = bytes(view[data_start : data_start + length])
        extents.append(Extent(disk_id, offset, length, data, checksum))
        pos = data_start + length
    if pos != len(view):
        raise FrameError(pos, f"{len(view) - pos} bytes after the last of {count} extents")
    return Batch(seq, extents)
