"""The journal's pure core: record encoding, segment names, retention and capacity decisions."""

from __future__ import annotations

import datetime as dt

import pytest

from failback.dataplane.journal import format as fmt
from failback.dataplane.journal import retention, segments
from failback.dataplane.journal.errors import InvalidExtent, SourceChecksumMismatch
from failback.dataplane.journal.model import (
    MAX_EXTENT,
    Batch,
    Extent,
    extent_checksum,
    from_micros,
    to_micros,
    validate_batch,
)

POINT = fmt.PointMeta(7, "rp-7", 1_700_000_000_000_000, True, 42)


@pytest.mark.parametrize(
    ("data", "undo"),
    [(b"\x01" * 512, b"\x02" * 512), (None, b"\x03" * 1024), (b"\x04" * 512, None), (None, None)],
)
def test_extent_frame_round_trip(data: bytes | None, undo: bytes | None) -> None:
    length = len(data or undo or b"\0" * 512)
    raw = fmt.extent_frame(9, "disk-0", 4096, length, data, undo, 123)
    assert len(raw) == fmt.frame_size_extent("disk-0", length, zero=data is None, undo=bool(undo))
    frame = fmt.check_frame(raw, 0, len(raw))
    assert isinstance(frame, fmt.RawFrame)
    assert frame.ftype is fmt.FrameType.EXTENT
    payload = fmt.payload_of(raw, frame)
    head = fmt.parse_extent(payload)
    assert (head.seq, head.disk_id, head.offset, head.length) == (9, "disk-0", 4096, length)
    assert head.zero is (data is None)
    assert head.has_undo is (undo is not None)
    assert head.source_checksum == 123
    if data is not None:
        assert payload[head.data_at : head.data_at + length] == data
    if undo is not None:
        assert payload[head.undo_at : head.undo_at + length] == undo


def test_other_frames_round_trip() -> None:
    seg = fmt.segment_frame(fmt.SegmentHeader(3, 41, POINT))
    got = fmt.check_frame(seg, 0, len(seg))
    assert isinstance(got, fmt.RawFrame)
    assert fmt.parse_segment(fmt.payload_of(seg, got)) == fmt.SegmentHeader(3, 41, POINT)
    empty = fmt.segment_frame(fmt.SegmentHeader(0, 0, None))
    got = fmt.check_frame(empty, 0, len(empty))
    assert isinstance(got, fmt.RawFrame)
    assert fmt.parse_segment(fmt.payload_of(empty, got)).base is None
    end = fmt.batch_end_frame(5, 17)
    got = fmt.check_frame(end, 0, len(end))
    assert isinstance(got, fmt.RawFrame)
    assert len(end) == fmt.BATCH_END_SIZE
    assert fmt.parse_batch_end(fmt.payload_of(end, got)) == fmt.BatchEnd(5, 17)
    both = fmt.commit_frames(POINT)
    first = fmt.check_frame(both, 0, len(both))
    assert isinstance(first, fmt.RawFrame)
    second = fmt.check_frame(both, first.end, len(both))
    assert isinstance(second, fmt.RawFrame)
    assert fmt.parse_commit(fmt.payload_of(both, first)) == fmt.Commit(POINT, 0)
    assert fmt.parse_commit(fmt.payload_of(both, second)) == fmt.Commit(POINT, 1)
    assert len(both) <= fmt.COMMIT_RESERVE


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


REC = fmt.extent_frame(1, "d", 0, 512, b"\x05" * 512, b"\x06" * 512, 0)


@pytest.mark.parametrize(
    ("buf", "limit", "damage"),
    [
        (REC, len(REC) - 1, fmt.Damage.SHORT),
        (REC, 10, fmt.Damage.SHORT),
        (_flip(REC, 0), len(REC), fmt.Damage.MAGIC),
        (_flip(REC, 5), len(REC), fmt.Damage.CHECKSUM),  # type byte
        (_flip(REC, 14), len(REC), fmt.Damage.CHECKSUM),  # the checksum itself
        (_flip(REC, 100), len(REC), fmt.Damage.CHECKSUM),  # new data
        (_flip(REC, len(REC) - 1), len(REC), fmt.Damage.CHECKSUM),  # undo data
        (REC[:8] + b"\xff\xff\xff\x7f" + REC[12:], len(REC), fmt.Damage.LENGTH),
    ],
)
def test_check_frame_detects_damage(buf: bytes, limit: int, damage: fmt.Damage) -> None:
    assert fmt.check_frame(buf, 0, limit) is damage


def test_every_single_bit_flip_is_detected() -> None:
    for at in range(len(REC)):
        for bit in range(8):
            bad = bytearray(REC)
            bad[at] ^= 1 << bit
            assert isinstance(fmt.check_frame(bytes(bad), 0, len(bad)), fmt.Damage), (at, bit)


def test_find_next_magic() -> None:
    buf = b"xx" + REC + REC
    assert fmt.find_next_magic(buf, 0, len(buf)) == 2
    assert fmt.find_next_magic(buf, 2, len(buf)) == 2 + len(REC)
    assert fmt.find_next_magic(buf, 2 + len(REC), len(buf)) == -1


@pytest.mark.parametrize(
    ("index", "name"),
    [(0, "seg-0000000000000000.jnl"), (255, "seg-00000000000000ff.jnl")],
)
def test_segment_names(index: int, name: str) -> None:
    assert segments.segment_name(index) == name
    assert segments.parse_segment_name(name) == index


@pytest.mark.parametrize(
    "name", ["journal.lock", "ROLLBACK", "seg-1.jnl", "seg-00000000000000FF.jnl", "x.jnl.tmp"]
)
def test_other_names_are_not_segments(name: str) -> None:
    assert segments.parse_segment_name(name) is None


def test_segment_indexes_sorted() -> None:
    names = [segments.segment_name(i) for i in (10, 2, 0x1F)] + ["ROLLBACK"]
    assert segments.segment_indexes(names) == [2, 10, 0x1F]
    with pytest.raises(ValueError, match="segment index"):
        segments.segment_name(-1)


H = 3_600_000_000  # one hour in microseconds


@pytest.mark.parametrize(
    ("times", "window_h", "first"),
    [
        ([], 24, 0),
        ([0], 24, 0),
        ([0, H, 2 * H], 24, 0),
        ([0, 3 * H, 26 * H], 24, 1),  # horizon 26h-24h = 2h: only 0 is outside
        ([0, H, 2 * H, 30 * H], 24, 3),  # everything but the newest is too old
        ([0, 5 * H, 10 * H], 5, 1),  # exactly on the horizon is kept
        ([0, 0, 0], 0, 0),
    ],
)
def test_first_kept(times: list[int], window_h: int, first: int) -> None:
    assert retention.first_kept(times, dt.timedelta(hours=window_h)) == first


S = retention.SegmentSpan


@pytest.mark.parametrize(
    ("spans", "keep", "doomed"),
    [
        ([S(0, -1)], 5, []),
        ([S(0, -1), S(1, 3), S(2, 6)], 2, []),
        ([S(0, -1), S(1, 3), S(2, 6)], 3, [0]),
        ([S(0, -1), S(1, 3), S(2, 6)], 5, [0]),
        ([S(0, -1), S(1, 3), S(2, 6)], 6, [0, 1]),
        ([S(0, -1), S(1, 3), S(2, 6)], 99, [0, 1]),  # the newest segment always stays
        ([S(4, 2), S(5, 2), S(6, 9)], 2, [4]),  # two segments starting at the same point
        ([S(0, -1), S(1, -1), S(2, 3)], 3, [0, 1]),  # no point yet when segment 1 began
    ],
)
def test_deletable_segments(
    spans: list[retention.SegmentSpan], keep: int, doomed: list[int]
) -> None:
    assert retention.deletable_segments(spans, keep) == doomed


@pytest.mark.parametrize(
    ("used", "capacity", "free", "needed", "ok", "available"),
    [
        (0, 100, 1000, 100, True, 100),
        (0, 100, 1000, 101, False, 100),
        (50, 100, 10, 20, False, 10),  # the volume itself is the limit
        (150, 100, 1000, 1, False, 0),  # already over (capacity lowered)
    ],
)
def test_fits(used: int, capacity: int, free: int, needed: int, ok: bool, available: int) -> None:
    assert retention.fits(used, capacity, free, needed) == (ok, available)


SIZES = {"d0": 1 << 20, "d1": 4096}
GOOD = Extent.of("d0", 512, b"\x01" * 1024)


@pytest.mark.parametrize(
    ("extent", "message"),
    [
        (Extent.of("nope", 0, b"\0" * 512), "unknown disk id 'nope'"),
        (Extent.of("d1", 4096, b"\0" * 512), "beyond the end of the disk"),
        (Extent.of("d1", 3584, b"\0" * 1024), "beyond the end of the disk"),
        (Extent.of("d0", -512, b"\0" * 512), "offset must be >= 0"),
        (Extent.zero("d0", 0, 0), "length > 0"),
        (Extent.of("d0", 100, b"\0" * 512), "multiples of 512"),
        (Extent.of("d0", 0, b"\0" * 100), "multiples of 512"),
        (Extent("d0", 0, 1024, b"\0" * 512, 0), "carries 512 bytes"),
        (Extent.zero("d0", 0, MAX_EXTENT + 512), "split it"),
    ],
)
def test_validate_refuses_bad_extents(extent: Extent, message: str) -> None:
    with pytest.raises(InvalidExtent, match=message):
        validate_batch(Batch(1, [GOOD, extent]), SIZES)


def test_validate_checks_source_checksums() -> None:
    validate_batch(Batch(1, [GOOD, Extent.zero("d1", 0, 4096)]), SIZES)
    bad = Extent("d0", 0, 512, b"\x07" * 512, extent_checksum(b"\x08" * 512))
    with pytest.raises(SourceChecksumMismatch, match="d0@0"):
        validate_batch(Batch(1, [GOOD, bad]), SIZES)
    with pytest.raises(InvalidExtent, match="sequence"):
        validate_batch(Batch(0, [GOOD]), SIZES)


def test_time_round_trip() -> None:
    when = dt.datetime(2026, 11, 23, 3, 0, 0, 123456, tzinfo=dt.UTC)
    assert from_micros(to_micros(when)) == when
    with pytest.raises(ValueError, match="timezone-aware"):
        to_micros(dt.datetime(2026, 1, 1))
