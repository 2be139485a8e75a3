"""The MT journal against real files: byte-exact points, rollback, damage, torn tails, space.

Every disk is a real image file in ``tmp_path``; the "source" is an in-memory model of the
same disks, kept independently, and compared by hash after every step that must match it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from failback.dataplane.journal import (
    SECTOR,
    Batch,
    Extent,
    FileDisk,
    InvalidExtent,
    Journal,
    JournalConfig,
    JournalCorrupt,
    JournalLocked,
    PointOrderError,
    RetentionVolumeFull,
    SequenceError,
    SourceChecksumMismatch,
    UnknownRecoveryPoint,
    extent_checksum,
)
from failback.dataplane.journal import format as fmt

SIZES = {"os": 256 * 1024, "data": 128 * 1024}
T0 = dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC)


class Source:
    """The source disks as the PS sees them: an independent model of what points must hold."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.disks = {k: bytearray(rng.randbytes(v)) for k, v in SIZES.items()}
        self.seq = 0

    def batch(self, extents: int = 4) -> Batch:
        self.seq += 1
        out: list[Extent] = []
        for _ in range(extents):
            disk_id = self.rng.choice(sorted(SIZES))
            sectors = self.rng.randint(1, 16)
            offset = self.rng.randrange(0, SIZES[disk_id] // SECTOR - sectors + 1) * SECTOR
            length = sectors * SECTOR
            if self.rng.random() < 0.25:
                out.append(Extent.zero(disk_id, offset, length))
            else:
                out.append(Extent.of(disk_id, offset, self.rng.randbytes(length)))
        batch = Batch(self.seq, out)
        self.take(batch)
        return batch

    def take(self, batch: Batch) -> None:
        for e in batch.extents:
            self.disks[e.disk_id][e.offset : e.offset + e.length] = e.data or bytes(e.length)

    def digest(self) -> dict[str, str]:
        return {k: hashlib.sha256(v).hexdigest() for k, v in self.disks.items()}


def digest_files(root: Path) -> dict[str, str]:
    return {k: hashlib.sha256((root / f"{k}.flat").read_bytes()).hexdigest() for k in SIZES}


class Bed:
    """Disk image files, a journal directory, and the source model."""

    def __init__(self, tmp_path: Path, seed: int = 1) -> None:
        self.root = tmp_path
        self.jdir = tmp_path / "journal"
        self.source = Source(random.Random(seed))
        for k in SIZES:
            (tmp_path / f"{k}.flat").write_bytes(bytes(self.source.disks[k]))
        self.disks = {k: FileDisk(tmp_path / f"{k}.flat") for k in SIZES}
        self.at_point: dict[str, dict[str, str]] = {}

    def open(self, **config: object) -> Journal:
        return Journal.open(self.jdir, self.disks, JournalConfig(**config))  # type: ignore[arg-type]

    def cycle(self, j: Journal, n: int, batches: int = 3, hours: float = 1.0) -> str:
        for _ in range(batches):
            j.apply(self.source.batch())
        point_id = f"rp-{n}"
        j.commit_point(point_id, T0 + dt.timedelta(hours=hours * n), app_consistent=n % 2 == 0)
        self.at_point[point_id] = self.source.digest()
        assert digest_files(self.root) == self.at_point[point_id]
        return point_id

    def close(self) -> None:
        for d in self.disks.values():
            d.close()


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = Bed(tmp_path)
    yield b
    b.close()


def segment_files(jdir: Path) -> list[Path]:
    return sorted(jdir.glob("seg-*.jnl"))


def test_points_are_byte_exact_and_roll_to_restores_each(bed: Bed) -> None:
    with bed.open() as j:
        ids = [bed.cycle(j, n) for n in range(1, 11)]
        assert [p.point_id for p in j.points()] == ids
        assert [p.app_consistent for p in j.points()] == [n % 2 == 0 for n in range(1, 11)]
        assert all(p.disks == ("data", "os") for p in j.points())
        assert j.latest_source_time() == T0 + dt.timedelta(hours=10)
        for target in ("rp-9", "rp-7", "rp-6", "rp-2"):
            rp = j.roll_to(target)
            assert rp.point_id == target
            assert digest_files(bed.root) == bed.at_point[target]
            assert j.points()[-1].point_id == target
        assert [p.point_id for p in j.points()] == ["rp-1", "rp-2"]
    with bed.open() as j:
        assert [p.point_id for p in j.points()] == ["rp-1", "rp-2"]
        assert digest_files(bed.root) == bed.at_point["rp-2"]
        assert j.last_durable_seq == 6


def test_roll_to_the_oldest_point_then_keep_replicating(bed: Bed) -> None:
    with bed.open() as j:
        for n in range(1, 6):
            bed.cycle(j, n)
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]
        # Replication starts again from the source as it is at rp-1.
        bed.source = Source(random.Random(99))
        bed.source.disks = {k: bytearray((bed.root / f"{k}.flat").read_bytes()) for k in SIZES}
        bed.source.seq = j.last_durable_seq
        bed.cycle(j, 6)
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


def test_reopen_keeps_points_and_continues(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        bed.cycle(j, 2)
    with bed.open() as j:
        assert [p.point_id for p in j.points()] == ["rp-1", "rp-2"]
        assert j.report.torn_bytes == 0
        assert j.report.damage == []
        bed.cycle(j, 3)
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


def test_second_open_is_refused(bed: Bed) -> None:
    with bed.open(), pytest.raises(JournalLocked, match="another process"):
        bed.open()


def test_resent_batch_and_commit_are_harmless(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        b1 = bed.source.batch()
        assert j.apply(b1) == b1.seq
        size = sum(p.stat().st_size for p in segment_files(bed.jdir))
        assert j.apply(b1) == b1.seq  # resent: nothing written
        assert sum(p.stat().st_size for p in segment_files(bed.jdir)) == size
        b2 = bed.source.batch()
        with pytest.raises(SequenceError, match=f"resend from {b2.seq}"):
            j.apply(Batch(b2.seq + 1, b2.extents))
        j.apply(b2)
        rp = j.commit_point("rp-2", T0 + dt.timedelta(hours=2), app_consistent=False)
        assert j.commit_point("rp-2", T0 + dt.timedelta(hours=2), app_consistent=False) == rp
        assert digest_files(bed.root) == bed.source.digest()
        with pytest.raises(PointOrderError, match="already exists"):
            j.commit_point("rp-1", T0 + dt.timedelta(hours=3), app_consistent=False)
        with pytest.raises(PointOrderError, match="older than"):
            j.commit_point("rp-3", T0, app_consistent=False)


def test_reapplying_the_same_extents_under_a_new_sequence_is_harmless(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        b = bed.source.batch()
        j.apply(b)
        j.apply(Batch(b.seq + 1, b.extents))  # the PS lost track and sent it again
        bed.source.seq += 1
        j.commit_point("rp-2", T0 + dt.timedelta(hours=2), app_consistent=False)
        assert digest_files(bed.root) == bed.source.digest()
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


def test_abort_cycle_returns_to_newest_point(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        before = bed.source.seq
        j.apply(bed.source.batch())
        j.apply(bed.source.batch())
        assert j.cycle_open
        j.abort_cycle()
        assert not j.cycle_open
        assert digest_files(bed.root) == bed.at_point["rp-1"]
        assert j.last_durable_seq == before


def test_interrupted_cycle_rolls_back_on_open(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        j.apply(bed.source.batch())
        j.apply(bed.source.batch())
    # close() without commit is a crash as far as the journal knows.
    with bed.open() as j:
        assert j.report.cycle_rolled_back == 8
        assert not j.cycle_open
        assert digest_files(bed.root) == bed.at_point["rp-1"]
        assert j.last_durable_seq == 3


def test_interrupted_cycle_resumes_on_open_when_configured(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        j.apply(bed.source.batch())
        j.apply(bed.source.batch())
        mid = bed.source.digest()
    with bed.open(open_cycle="resume") as j:
        assert j.report.cycle_resumed == 8
        assert j.cycle_open
        assert j.last_durable_seq == 5
        assert digest_files(bed.root) == mid
        j.apply(bed.source.batch())
        j.commit_point("rp-2", T0 + dt.timedelta(hours=2), app_consistent=True)
        assert digest_files(bed.root) == bed.source.digest()
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


def test_interrupted_first_cycle_has_no_point(bed: Bed) -> None:
    with bed.open() as j:
        j.apply(bed.source.batch())
    with bed.open() as j:
        assert j.points() == []
        assert j.last_durable_seq == 0
        assert j.latest_source_time() is None
        bed.source.seq = 0
        bed.cycle(j, 1)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extent", "error", "message"),
    [
        (Extent.of("nope", 0, b"\1" * 512), InvalidExtent, "unknown disk id 'nope'"),
        (Extent.of("data", SIZES["data"], b"\1" * 512), InvalidExtent, "beyond the end"),
        (Extent.zero("os", SIZES["os"] - 512, 1024), InvalidExtent, "beyond the end"),
        (Extent.of("os", -512, b"\1" * 512), InvalidExtent, "offset must be >= 0"),
        (Extent.of("os", 256, b"\1" * 512), InvalidExtent, "multiples of 512"),
        (Extent.of("os", 0, b"\1" * 500), InvalidExtent, "multiples of 512"),
        (
            Extent("os", 0, 512, b"\1" * 512, extent_checksum(b"\2" * 512)),
            SourceChecksumMismatch,
            "source checksum",
        ),
    ],
)
def test_bad_extents_are_refused_and_nothing_is_written(
    bed: Bed, extent: Extent, error: type[Exception], message: str
) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        sizes = [p.stat().st_size for p in segment_files(bed.jdir)]
        good = Extent.of("os", 4096, b"\x55" * 512)
        with pytest.raises(error, match=message):
            j.apply(Batch(bed.source.seq + 1, [good, extent]))
        assert [p.stat().st_size for p in segment_files(bed.jdir)] == sizes
        assert digest_files(bed.root) == bed.at_point["rp-1"]
        assert j.last_durable_seq == bed.source.seq
        assert not j.cycle_open


# ---------------------------------------------------------------- damage at rest


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def _frames(path: Path) -> list[tuple[fmt.FrameType, int, int]]:
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        raw = fmt.check_frame(data, pos, len(data))
        assert isinstance(raw, fmt.RawFrame)
        out.append((raw.ftype, raw.start, raw.end))
        pos = raw.end
    return out


def test_bit_flip_in_committed_record_is_detected_and_never_applied(bed: Bed) -> None:
    with bed.open() as j:
        for n in range(1, 5):
            bed.cycle(j, n)
    seg = segment_files(bed.jdir)[0]
    extents = [f for f in _frames(seg) if f[0] is fmt.FrameType.EXTENT]
    # The 3 batches x 4 extents of rp-3's cycle are extents 24..35 (rp-1 has no undo).
    victim = extents[30]
    _flip(seg, victim[2] - 10)  # inside its undo data
    with bed.open() as j:
        assert [str(d.path) for d in j.report.damage] == [str(seg)]
        assert j.report.damage[0].offset == victim[1]
        assert digest_files(bed.root) == bed.at_point["rp-4"]  # nothing applied
        restorable = {p.point_id: p.restorable for p in j.points()}
        assert restorable == {"rp-1": False, "rp-2": False, "rp-3": True, "rp-4": True}
        with pytest.raises(JournalCorrupt, match=f"{seg} offset {victim[1]}") as info:
            j.roll_to("rp-2")
        assert info.value.path == seg
        assert digest_files(bed.root) == bed.at_point["rp-4"]  # refused before any write
        j.roll_to("rp-3")
        assert digest_files(bed.root) == bed.at_point["rp-3"]


def test_bit_flip_after_open_is_caught_before_any_write(bed: Bed) -> None:
    with bed.open() as j:
        for n in range(1, 4):
            bed.cycle(j, n)
        seg = segment_files(bed.jdir)[0]
        victim = [f for f in _frames(seg) if f[0] is fmt.FrameType.EXTENT][-1]
        _flip(seg, victim[1] + fmt.HEADER_SIZE + 3)
        with pytest.raises(JournalCorrupt, match=f"offset {victim[1]}"):
            j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-3"]


def test_bit_flip_in_interrupted_cycle_refuses_to_open(bed: Bed) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        j.apply(bed.source.batch())
        j.apply(bed.source.batch())
        mid = digest_files(bed.root)
    seg = segment_files(bed.jdir)[0]
    victim = [f for f in _frames(seg) if f[0] is fmt.FrameType.EXTENT][-6]
    _flip(seg, victim[1] + 40)
    with pytest.raises(JournalCorrupt, match=f"{seg} offset {victim[1]}"):
        bed.open()
    assert digest_files(bed.root) == mid


@pytest.mark.parametrize("victim", range(6))
def test_one_damaged_commit_copy_loses_no_point(bed: Bed, victim: int) -> None:
    with bed.open() as j:
        for n in range(1, 4):
            bed.cycle(j, n)
    seg = segment_files(bed.jdir)[0]
    commits = [f for f in _frames(seg) if f[0] is fmt.FrameType.COMMIT]
    _flip(seg, commits[victim][1] + fmt.HEADER_SIZE + 2)  # rp-(victim//2+1), copy victim%2
    with bed.open() as j:
        assert len(j.report.damage) == (0 if victim == 5 else 1)  # the last one: torn tail
        assert [p.point_id for p in j.points()] == ["rp-1", "rp-2", "rp-3"]
        assert all(p.restorable for p in j.points())
        assert digest_files(bed.root) == bed.at_point["rp-3"]
        j.roll_to("rp-2")
        assert digest_files(bed.root) == bed.at_point["rp-2"]
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


# ---------------------------------------------------------------- torn tails


Snap = dict[str, bytes]


def _snap(source: Source) -> Snap:
    return {k: bytes(v) for k, v in source.disks.items()}


def _digest(snap: Snap) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in snap.items()}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("mode", ["rollback", "resume"])
def test_torn_tail_recovers_to_last_durable_state(tmp_path: Path, seed: int, mode: str) -> None:
    rng = random.Random(seed)
    (tmp_path / "bed").mkdir()
    bed = Bed(tmp_path / "bed", seed)
    try:
        with bed.open() as j:
            for n in range(1, 4):
                bed.cycle(j, n)
        at3 = _snap(bed.source)
        seg = segment_files(bed.jdir)[0]
        base = seg.stat().st_size
        # Cycle 4 batch by batch, remembering where each batch ends and the disks after it.
        states: list[tuple[int, Snap, int]] = []
        with bed.open() as j:
            for _ in range(3):
                j.apply(bed.source.batch())
                states.append((seg.stat().st_size, _snap(bed.source), j.last_durable_seq))
            j.commit_point("rp-4", T0 + dt.timedelta(hours=4), app_consistent=False)
        full = seg.read_bytes()
        commit0_end = states[-1][0] + (len(full) - states[-1][0]) // 2
        cut = rng.randrange(base, len(full) + 1)
        # What a real crash at `cut` leaves on the targets: the batches whose BATCH_END was
        # durable may have been written (all of them, here); later ones were not.
        durable = [s for s in states if s[0] <= cut]
        for k, data in (durable[-1][1] if durable else at3).items():
            bed.disks[k].pwrite(0, data)
        tail = bytes(rng.randrange(1, 300)) if rng.random() < 0.5 else b""
        seg.write_bytes(full[:cut] + tail)
        with bed.open(open_cycle=mode) as j:
            ids = [p.point_id for p in j.points()]
            if cut >= commit0_end:
                assert ids[-1] == "rp-4"
                assert digest_files(bed.root) == _digest(states[-1][1])
            elif mode == "resume" and durable:
                assert ids[-1] == "rp-3"
                assert j.last_durable_seq == durable[-1][2]
                assert digest_files(bed.root) == _digest(durable[-1][1])
            else:
                assert ids[-1] == "rp-3"
                assert j.last_durable_seq == 9
                assert digest_files(bed.root) == _digest(at3)
            j.roll_to("rp-1")
            assert digest_files(bed.root) == bed.at_point["rp-1"]
    finally:
        bed.close()


# ---------------------------------------------------------------- space and retention


def test_full_volume_refuses_the_cycle_and_keeps_points(bed: Bed) -> None:
    with bed.open(capacity_bytes=600_000) as j:
        refused: RetentionVolumeFull | None = None
        for n in range(1, 100):
            sizes = [p.stat().st_size for p in segment_files(bed.jdir)]
            try:
                j.begin_cycle(changed_bytes=3 * 4 * 16 * SECTOR, extents=12)
            except RetentionVolumeFull as exc:
                refused = exc
                break
            bed.cycle(j, n)
        assert refused is not None, "the journal never filled"
        assert refused.needed > refused.available
        assert "nothing of this cycle was written" in str(refused)
        assert [p.stat().st_size for p in segment_files(bed.jdir)] == sizes
        full_at = n
        assert j.used_bytes <= 600_000
        space = j.space()
        assert space.used_bytes == j.used_bytes
        assert space.capacity_bytes == 600_000
        assert space.available_bytes == 600_000 - j.used_bytes == refused.available
        # A batch too large for what is left is refused as well, before anything is written.
        big = Batch(bed.source.seq + 1, [Extent.of("os", 0, b"\x11" * SIZES["os"])])
        with pytest.raises(RetentionVolumeFull):
            j.apply(big)
        assert [p.stat().st_size for p in segment_files(bed.jdir)] == sizes
        assert digest_files(bed.root) == bed.at_point[f"rp-{full_at - 1}"]
    with bed.open(capacity_bytes=600_000) as j:
        assert len(j.points()) == full_at - 1
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


def test_retention_prunes_whole_segments_by_source_time(bed: Bed) -> None:
    config = {"retention": dt.timedelta(hours=3), "segment_bytes": 1}
    with bed.open(**config) as j:
        for n in range(1, 9):
            bed.cycle(j, n)
        ids = [p.point_id for p in j.points()]
        assert ids == ["rp-5", "rp-6", "rp-7", "rp-8"]  # within 3 h of rp-8 (source time)
        files = segment_files(bed.jdir)
        assert len(files) <= 6
        with pytest.raises(UnknownRecoveryPoint, match="rp-2"):
            j.roll_to("rp-2")
    with bed.open(**config) as j:
        assert [p.point_id for p in j.points()] == ids
        j.roll_to("rp-5")
        assert digest_files(bed.root) == bed.at_point["rp-5"]
        assert len(segment_files(bed.jdir)) < len(files)


def test_retention_is_measured_from_the_newest_point_not_the_clock(bed: Bed) -> None:
    with bed.open(retention=dt.timedelta(hours=24)) as j:
        for n in range(1, 4):
            bed.cycle(j, n, hours=1000)  # points 1000 h apart, far in the "past"
        assert [p.point_id for p in j.points()] == ["rp-3"]


@pytest.mark.parametrize("seed", range(40))
def test_random_bit_flip_anywhere_never_yields_wrong_bytes(tmp_path: Path, seed: int) -> None:
    """A flip anywhere: refused loudly, or every restorable point is still byte-exact."""
    rng = random.Random(1000 + seed)
    (tmp_path / "bed").mkdir()
    bed = Bed(tmp_path / "bed", seed)
    try:
        with bed.open() as j:
            for n in range(1, 5):
                bed.cycle(j, n)
        seg = segment_files(bed.jdir)[0]
        where = rng.randrange(seg.stat().st_size)
        _flip(seg, where)
        refused: JournalCorrupt | None = None
        try:
            j = bed.open()
        except JournalCorrupt as exc:
            refused = exc
        if refused is not None:
            assert refused.path == seg
            assert refused.offset <= where
            return
        with j:
            assert [p.point_id for p in j.points()][-1] == "rp-4"
            assert digest_files(bed.root) == bed.at_point["rp-4"]
            points = j.points()
            oldest = points[0]
            if not oldest.restorable:
                with pytest.raises(JournalCorrupt, match=str(seg)):
                    j.roll_to(oldest.point_id)
                assert digest_files(bed.root) == bed.at_point["rp-4"]
            restorable = [p for p in points if p.restorable]
            j.roll_to(restorable[0].point_id)
            assert digest_files(bed.root) == bed.at_point[restorable[0].point_id]
    finally:
        bed.close()


def test_damaged_segment_header_is_survived(bed: Bed) -> None:
    with bed.open(segment_bytes=1) as j:
        for n in range(1, 5):
            bed.cycle(j, n)
    files = segment_files(bed.jdir)
    # Segment 0 (cycle 1) is already pruned: nothing restores to before rp-1.
    assert [f.name[-6:-4] for f in files] == ["01", "02", "03"]
    _flip(files[1], 25)  # inside the header of the segment holding rp-3's cycle
    with bed.open(segment_bytes=1) as j:
        assert [(d.path, d.offset) for d in j.report.damage] == [(files[1], 0)]
        restorable = {p.point_id: p.restorable for p in j.points()}
        assert restorable == {"rp-1": False, "rp-2": False, "rp-3": True, "rp-4": True}
        assert digest_files(bed.root) == bed.at_point["rp-4"]
        with pytest.raises(JournalCorrupt, match="segment header unreadable"):
            j.roll_to("rp-2")
        j.roll_to("rp-3")
        assert digest_files(bed.root) == bed.at_point["rp-3"]
        bed.source.disks = {k: bytearray((bed.root / f"{k}.flat").read_bytes()) for k in SIZES}
        bed.source.seq = j.last_durable_seq
        bed.cycle(j, 5)
        j.roll_to("rp-3")
        assert digest_files(bed.root) == bed.at_point["rp-3"]


def test_a_missing_segment_file_makes_older_points_unrestorable(bed: Bed) -> None:
    with bed.open(segment_bytes=1) as j:
        for n in range(1, 6):
            bed.cycle(j, n)
    files = segment_files(bed.jdir)
    files[1].unlink()  # the segment holding rp-3's cycle
    with bed.open(segment_bytes=1) as j:
        assert [d.path.name for d in j.report.damage] == [files[1].name]
        restorable = {p.point_id: p.restorable for p in j.points()}
        assert restorable == {
            "rp-1": False,
            "rp-2": False,
            "rp-3": True,
            "rp-4": True,
            "rp-5": True,
        }
        with pytest.raises(JournalCorrupt, match="segment file missing"):
            j.roll_to("rp-2")
        assert digest_files(bed.root) == bed.at_point["rp-5"]
        j.roll_to("rp-3")
        assert digest_files(bed.root) == bed.at_point["rp-3"]


def test_a_journal_for_other_disks_is_refused_clearly(bed: Bed, tmp_path: Path) -> None:
    with bed.open() as j:
        bed.cycle(j, 1)
        j.apply(bed.source.batch())
    small = tmp_path / "small.flat"
    small.write_bytes(bytes(4096))
    with FileDisk(small) as disk, pytest.raises(InvalidExtent, match=r"beyond the disk|not given"):
        Journal.open(bed.jdir, {"os": disk, "data": disk}, JournalConfig())
    assert small.read_bytes() == bytes(4096)  # refused before writing anything
    assert not (bed.jdir / "ROLLBACK").exists()
    with bed.open() as j:  # with the right disks it recovers
        assert digest_files(bed.root) == bed.at_point["rp-1"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"retention": dt.timedelta(hours=-1)}, "must not be negative"),
        ({"capacity_bytes": 0}, "must be > 0"),
        ({"segment_bytes": -1}, "must be > 0"),
        ({"open_cycle": "maybe"}, "'rollback' or 'resume'"),
        ({"first_cycle": "fast"}, "'journal' or 'direct'"),
    ],
)
def test_bad_config_is_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JournalConfig(**config)  # type: ignore[arg-type]


def test_fast_open_still_never_applies_a_damaged_record(bed: Bed) -> None:
    config = {"segment_bytes": 1, "verify_on_open": False}
    with bed.open(**config) as j:
        for n in range(1, 5):
            bed.cycle(j, n)
    files = segment_files(bed.jdir)
    victim = [f for f in _frames(files[1]) if f[0] is fmt.FrameType.EXTENT][5]
    _flip(files[1], victim[2] - 7)  # undo data of a record of rp-3's cycle
    with bed.open(**config) as j:
        assert j.report.damage == []  # not hashed on open...
        assert digest_files(bed.root) == bed.at_point["rp-4"]
        with pytest.raises(JournalCorrupt, match=f"{files[1]} offset {victim[1]}"):
            j.roll_to("rp-2")  # ...but before it is used, and nothing is written
        assert digest_files(bed.root) == bed.at_point["rp-4"]
        j.roll_to("rp-3")
        assert digest_files(bed.root) == bed.at_point["rp-3"]
    with bed.open(segment_bytes=1) as j:  # a full verification finds it on open
        assert [(d.path, d.offset) for d in j.report.damage] == [(files[1], victim[1])]


@pytest.mark.parametrize("mode", ["rollback", "resume"])
def test_direct_initial_copy_resumes_after_a_crash(bed: Bed, mode: str) -> None:
    config = {"first_cycle": "direct", "open_cycle": mode}
    with bed.open(**config) as j:
        j.apply(bed.source.batch())
        j.apply(bed.source.batch())
        assert j.used_bytes < 1024  # only BATCH_END frames: no data in the journal
    with bed.open(**config) as j:
        assert j.last_durable_seq == 2
        assert j.cycle_open
        assert j.points() == []
        assert digest_files(bed.root) == bed.source.digest()
        j.apply(bed.source.batch())
        j.commit_point("rp-1", T0 + dt.timedelta(hours=1), app_consistent=True)
        bed.at_point["rp-1"] = bed.source.digest()
        assert digest_files(bed.root) == bed.at_point["rp-1"]
        bed.cycle(j, 2)  # later cycles are journaled with undo as usual
        j.roll_to("rp-1")
        assert digest_files(bed.root) == bed.at_point["rp-1"]


class Crash(Exception):
    """The process "dies" here: nothing after this write happens."""


class DyingDisk(FileDisk):
    """A real file disk whose process dies after ``budget`` more writes (fault injection)."""

    budget = 10**9

    def pwrite(self, offset: int, data: bytes) -> None:
        if DyingDisk.budget <= 0:
            raise Crash
        DyingDisk.budget -= 1
        super().pwrite(offset, data)


@pytest.mark.parametrize("writes", [0, 1, 3, 7, 12, 20, 30])
def test_rollback_interrupted_after_n_writes_is_finished_on_open(
    tmp_path: Path, writes: int
) -> None:
    (tmp_path / "bed").mkdir()
    bed = Bed(tmp_path / "bed", writes)
    try:
        with bed.open() as j:
            for n in range(1, 5):
                bed.cycle(j, n)
        dying = {k: DyingDisk(bed.root / f"{k}.flat") for k in SIZES}
        DyingDisk.budget = writes
        try:
            j = Journal.open(bed.jdir, dying, JournalConfig())
            with pytest.raises(Crash):
                j.roll_to("rp-1")
            j.close()  # the "process" is gone; the lock goes with it
        finally:
            DyingDisk.budget = 10**9
            for d in dying.values():
                d.close()
        assert (bed.jdir / "ROLLBACK").exists()
        with bed.open() as j:
            assert j.report.rollback_resumed == "rp-1"
            assert [p.point_id for p in j.points()] == ["rp-1"]
            assert digest_files(bed.root) == bed.at_point["rp-1"]
        assert not (bed.jdir / "ROLLBACK").exists()
    finally:
        bed.close()


@pytest.mark.parametrize("writes", [0, 1, 3])
def test_apply_interrupted_in_target_writes_rolls_back_on_open(tmp_path: Path, writes: int) -> None:
    (tmp_path / "bed").mkdir()
    bed = Bed(tmp_path / "bed", writes)
    try:
        with bed.open() as j:
            bed.cycle(j, 1)
        dying = {k: DyingDisk(bed.root / f"{k}.flat") for k in SIZES}
        try:
            j = Journal.open(bed.jdir, dying, JournalConfig())
            j.apply(bed.source.batch())
            DyingDisk.budget = writes
            with pytest.raises(Crash):
                j.apply(bed.source.batch())
            j.close()
        finally:
            DyingDisk.budget = 10**9
            for d in dying.values():
                d.close()
        with bed.open() as j:
            assert j.report.cycle_rolled_back == 8
            assert digest_files(bed.root) == bed.at_point["rp-1"]
            assert j.last_durable_seq == 3
    finally:
        bed.close()
