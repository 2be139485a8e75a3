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

Content encoding: the process server may send the body compressed, ``Content-Encoding:
zstd``: exactly one zstd frame (Zstandard, RFC 8878), with its content size and content
checksum (:func:`compress_body` writes both), and nothing after it. :func:`encode_body`
picks: it sends ``identity`` when zstd does not save at least 5 % (already compressed or
encrypted data), since the MT would pay the decompression for nothing. The MT decompresses
with :func:`decompress_body`, which never holds more than ``limit`` bytes of output.

Errors::

    ValueError
      FrameError              the (decompressed) body is not a well-formed batch
      CompressionError        the body is not one complete, valid zstd frame
        DecompressedTooLarge  it would decompress to more than the limit (a zip bomb)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import xxhash
import zstandard

from failback.dataplane.journal import Batch, Extent

MEDIA_TYPE = "application/vnd.failback.batch.v1"
MAGIC = b"FBB1"
VERSION = 1
FLAG_ZERO = 1

_HEAD = struct.Struct("<4sB3xQI")
_EXT = struct.Struct("<QIBxHQ")
_SUM = struct.Struct("<Q")
HEAD_SIZE = _HEAD.size + _SUM.size

IDENTITY = "identity"
ZSTD = "zstd"
ENCODINGS = (IDENTITY, ZSTD)
"""The ``Content-Encoding`` values the master target accepts (absent means identity)."""
DEFAULT_LEVEL = 3
MIN_SAVING = 0.05
""":func:`encode_body` compresses only when that saves at least this share of the bytes."""
MAX_WINDOW = 8 << 20
"""The largest zstd window the MT accepts: every level up to 19 fits (the ``--ultra``
levels 20..22 do not), and a frame cannot make the decoder allocate a 2 GiB window."""
_CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FrameError(ValueError):
    """The body is not a well-formed batch; ``offset`` is where decoding stopped."""

    def __init__(self, offset: int, detail: str) -> None:
        super().__init__(f"malformed batch frame at byte {offset}: {detail}")
        self.offset = offset


class CompressionError(ValueError):
    """The body is not one complete, valid zstd frame (garbage, truncated, corrupt, trailing)."""


class DecompressedTooLarge(CompressionError):
    """The body would decompress to more than ``limit`` bytes; refused before holding them."""

    def __init__(self, limit: int, detail: str) -> None:
        super().__init__(f"the body decompresses to more than {limit} bytes ({detail})")
        self.limit = limit


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


def compress_body(body: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """``body`` as one zstd frame with its content size and content checksum."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return compressor.compress(body)


def encode_body(
    body: bytes, level: int = DEFAULT_LEVEL, min_saving: float = MIN_SAVING
) -> tuple[bytes, str]:
    """What the process server sends: ``(payload, content_encoding)``.

    zstd when it saves at least ``min_saving`` of the bytes, else ``body`` as is with
    ``identity`` (the header may then be left out).
    """
    packed = compress_body(body, level)
    if len(packed) <= len(body) * (1 - min_saving):
        return packed, ZSTD
    return body, IDENTITY


def decompress_body(data: bytes, limit: int) -> bytes:
    """The content of the single zstd frame ``data``, at most ``limit`` bytes.

    Never holds more than ``limit`` bytes of output (plus one 1 MiB chunk): a frame that
    declares a larger content size is refused from its header; one that does not declare
    it is first decompressed into a reused 1 MiB buffer, only counting, and refused as soon
    as the count passes ``limit``. Only then is it decompressed for keeps (so a frame
    without a declared size costs two passes; :func:`compress_body` always declares it,
    and libzstd refuses to write past a declared size).

    Raises :class:`DecompressedTooLarge` over the limit and :class:`CompressionError` for
    anything else wrong: not zstd, truncated, corrupt (content checksum), bytes after the
    frame, more than one frame, a window over :data:`MAX_WINDOW`.
    """
    if data[:4] != _ZSTD_MAGIC:
        raise CompressionError(
            f"not a zstd frame: it starts with {bytes(data[:4])!r}, not {_ZSTD_MAGIC!r}"
        )
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise CompressionError(f"not a valid zstd frame header: {exc}") from exc
    if params.window_size > MAX_WINDOW:
        raise CompressionError(
            f"the frame's window is {params.window_size} bytes, more than {MAX_WINDOW}: "
            "compress with a level up to 19"
        )
    declared = params.content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > limit:
        raise DecompressedTooLarge(limit, f"its header declares {declared}")
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    try:
        if declared == zstandard.CONTENTSIZE_UNKNOWN:
            _count_within(decompressor, data, limit)
        stream = decompressor.decompressobj(read_across_frames=False)
        out = stream.decompress(data)
    except zstandard.ZstdError as exc:
        raise CompressionError(f"corrupt zstd data: {exc}") from exc
    if not stream.eof:
        raise CompressionError(
            f"truncated zstd frame: {len(data)} bytes end before the frame does "
            f"({len(out)} bytes decompressed so far)"
        )
    if stream.unused_data:
        raise CompressionError(f"{len(stream.unused_data)} bytes after the zstd frame")
    if declared != zstandard.CONTENTSIZE_UNKNOWN and len(out) != declared:
        raise CompressionError(f"the frame declares {declared} bytes and holds {len(out)}")
    if len(out) > limit:  # the counting pass makes this unreachable; keep the promise anyway
        raise DecompressedTooLarge(limit, f"it holds {len(out)}")
    return out


def _count_within(decompressor: zstandard.ZstdDecompressor, data: bytes, limit: int) -> None:
    """Decompress ``data``'s first frame into one reused buffer; raise once over ``limit``."""
    buffer = bytearray(_CHUNK)
    total = 0
    reader = decompressor.stream_reader(data, read_across_frames=False)
    with reader:
        while n := reader.readinto(buffer):
            total += n
            if total > limit:
                raise DecompressedTooLarge(limit, f"{total} bytes and counting")
