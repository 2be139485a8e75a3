"""The batch framing of the master target's data channel, pure: every damage is named."""

from __future__ import annotations

import random

import pytest

from failback.dataplane.journal import Extent
from failback.dataplane.mt import FrameError, decode_batch, encode_batch
from failback.dataplane.mt.wire import HEAD_SIZE


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
