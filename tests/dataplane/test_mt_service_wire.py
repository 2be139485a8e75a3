"""The batch framing of the master target's data channel and its zstd content encoding,
pure: every damage is named, and no body decompresses past its limit."""

from __future__ import annotations

import random
import tracemalloc

import pytest
import zstandard

from failback.dataplane.journal import Extent
from failback.dataplane.mt import FrameError, decode_batch, encode_batch
from failback.dataplane.mt.wire import (
    HEAD_SIZE,
    IDENTITY,
    ZSTD,
    CompressionError,
    DecompressedTooLarge,
    compress_body,
    decompress_body,
    encode_body,
)


def _extents() -> list[Extent]:
    rng = random.Random(4)
    return [
        Extent.of("6000C29a-1", 0, rng.randbytes(4096)),
        Extent.zero("6000C29a-1", 1 << 20, 1 << 16),
        Extent.of("disk-2", 512, rng.randbytes(512)),
    ]


def test_round_trip() -> None:
    extents = _extents()
    batch = decode_batch(encode_batch(42, extents))
    assert batch.seq == 42
    assert list(batch.extents) == extents


def test_an_empty_batch_is_well_formed() -> None:
    assert decode_batch(encode_batch(1, [])).extents == []


def test_every_truncation_is_a_frame_error() -> None:
    body = encode_batch(7, _extents())
    for cut in range(len(body)):
        with pytest.raises(FrameError):
            decode_batch(body[:cut])


def test_every_header_bit_flip_is_a_frame_error() -> None:
    body = encode_batch(7, [Extent.of("os", 4096, b"z" * 512)])
    header_bytes = HEAD_SIZE + 24 + len("os") + 8
    for bit in range(header_bytes * 8):
        flipped = bytearray(body)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            decode_batch(bytes(flipped))


def test_a_data_bit_flip_decodes_and_fails_the_source_checksum() -> None:
    """Data checksums are the service's to check (it names the extent in its answer)."""
    body = bytearray(encode_batch(7, [Extent.of("os", 4096, b"z" * 512)]))
    body[-1] ^= 1
    ext = decode_batch(bytes(body)).extents[0]
    assert ext.data is not None
    assert Extent.of("os", 4096, ext.data).checksum != ext.checksum


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "shorter than the 28-byte header"),
        (b"NOPE" + encode_batch(1, [])[4:], "magic"),
        (encode_batch(1, []) + b"\0", "1 bytes after the last of 0 extents"),
    ],
)
def test_frame_errors_say_what_and_where(body: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message) as err:
        decode_batch(body)
    assert "malformed batch frame at byte" in str(err.value)


# ---------------------------------------------------------------------- content encoding


def _bomb(decompressed: int) -> bytes:
    """A zstd frame of ``decompressed`` zeros that does not declare its size (streamed)."""
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    parts = [stream.compress(bytes(1 << 20)) for _ in range(decompressed >> 20)]
    return b"".join([*parts, stream.flush()])


def test_zstd_round_trip() -> None:
    body = encode_batch(9, _extents())
    packed = compress_body(body)
    assert decompress_body(packed, len(body)) == body
    assert decode_batch(decompress_body(packed, 1 << 20)).extents == _extents()
    frame = zstandard.get_frame_parameters(packed)
    assert (frame.content_size, frame.has_checksum) == (len(body), True)


def test_an_empty_body_round_trips() -> None:
    assert decompress_body(compress_body(b""), 0) == b""


def test_a_frame_without_its_size_decompresses_too() -> None:
    body = encode_batch(3, _extents()) * 3
    stream = zstandard.ZstdCompressor().compressobj()
    packed = stream.compress(body) + stream.flush()
    assert zstandard.get_frame_parameters(packed).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress_body(packed, len(body)) == body
    with pytest.raises(DecompressedTooLarge):
        decompress_body(packed, len(body) - 1)


def test_encode_body_skips_compression_that_does_not_pay() -> None:
    rng = random.Random(1)
    noise = rng.randbytes(64 << 10)  # like encrypted or already compressed data
    assert encode_body(noise) == (noise, IDENTITY)
    text = b"the quick brown fox " * 4096
    payload, encoding = encode_body(text)
    assert encoding == ZSTD
    assert len(payload) < len(text) // 10
    assert decompress_body(payload, len(text)) == text


def test_a_bomb_is_refused_without_holding_its_output() -> None:
    bomb = _bomb(256 << 20)  # 256 MiB of zeros in a few KiB
    assert len(bomb) < 64 << 10
    tracemalloc.start()
    try:
        with pytest.raises(DecompressedTooLarge, match="more than 4194304 bytes") as err:
            decompress_body(bomb, 4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.limit == 4 << 20
    assert peak < 3 << 20  # one 1 MiB chunk buffer and change, never the 4 MiB limit


def test_a_frame_declaring_more_than_the_limit_is_refused_from_its_header() -> None:
    packed = compress_body(bytes(8 << 20))
    with pytest.raises(DecompressedTooLarge, match="its header declares 8388608"):
        decompress_body(packed, 1 << 20)


def test_a_header_that_understates_the_size_does_not_get_past_it() -> None:
    """libzstd will not write past a declared content size: a lie is corrupt data."""
    packed = bytearray(compress_body(bytes(64 << 20), level=1))
    header = zstandard.frame_header_size(bytes(packed))
    assert packed[4] >> 6 == 2  # a 4-byte content size field, at the end of the header
    packed[header - 4 : header] = (1000).to_bytes(4, "little")
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError):
            decompress_body(bytes(packed), 4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20


def test_every_truncation_is_a_compression_error() -> None:
    packed = compress_body(encode_batch(7, _extents()))
    for cut in range(len(packed)):
        with pytest.raises(CompressionError):
            decompress_body(packed[:cut], 1 << 20)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a zstd frame"),
        (b"garbage, not zstd at all", "not a zstd frame"),
        (encode_batch(1, []), "not a zstd frame"),  # identity sent as zstd
        (compress_body(b"x" * 4096) + b"\0", "1 bytes after the zstd frame"),
        (compress_body(b"a" * 512) * 2, "bytes after the zstd frame"),
        (b"\x28\xb5\x2f\xfd" + b"\xff" * 16, "zstd"),
    ],
)
def test_garbage_is_a_compression_error(data: bytes, message: str) -> None:
    with pytest.raises(CompressionError, match=message) as err:
        decompress_body(data, 1 << 20)
    assert not isinstance(err.value, DecompressedTooLarge)


def test_a_flipped_bit_in_the_compressed_data_is_a_compression_error() -> None:
    packed = compress_body(random.Random(2).randbytes(2048) * 8)
    header = zstandard.frame_header_size(packed)
    for pos in range(header, len(packed), 7):
        flipped = bytearray(packed)
        flipped[pos] ^= 0x04
        with pytest.raises(CompressionError):
            decompress_body(bytes(flipped), 1 << 20)
