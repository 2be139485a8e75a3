"""The master target's write-ahead journal of recovery points for one consistency group.

Write path of a batch (``apply``): verify every extent (disk, bounds, alignment, source
checksum) → check capacity → for each extent read the bytes it will overwrite (undo) and
append a record with new data + undo → append BATCH_END → fsync the journal → write the
targets. ``commit_point``: fsync the targets → append the point's two commit frames → fsync
the journal → report the point. So a listed point is always durable on journal and disks.

Recovery on open: verify every frame, cut a torn tail, finish an interrupted rollback (the
``ROLLBACK`` intent file), then roll back (or, if configured, resume) an interrupted cycle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from failback.dataplane.journal import format as fmt
from failback.dataplane.journal import retention, segments, store
from failback.dataplane.journal.diskio import DiskIO, write_zeros
from failback.dataplane.journal.errors import (
    InvalidExtent,
    JournalCorrupt,
    PointOrderError,
    RetentionVolumeFull,
    SequenceError,
    UnknownRecoveryPoint,
)
from failback.dataplane.journal.model import (
    Batch,
    JournalConfig,
    RecoveryPoint,
    from_micros,
    to_micros,
    validate_batch,
)

MAX_POINT_ID = 1024


@dataclass
class _Segment:
    index: int
    path: Path
    size: int
    header_end: int
    base: fmt.PointMeta | None
    base_seq: int


@dataclass
class _Cycle:
    """The records between two points (or after the last one): [start, end) of one segment."""

    seg: int
    start: int
    end: int
    damage: list[tuple[Path, int, str]] = field(default_factory=list)
    batch_end: int = -1
    """Offset just after the last BATCH_END frame seen in this cycle (-1: none)."""
    batch_seq: int = 0


@dataclass
class _Point:
    meta: fmt.PointMeta
    seg: int
    end: int
    """Offset just after the point's commit frames (or the segment header for a base point)."""
    cycle: _Cycle | None
    """The cycle that led to this point; None when its records were pruned."""


@dataclass
class _Record:
    seg: int
    start: int
    end: int
    head: fmt.ExtentHead


@dataclass
class RecoveryReport:
    """What opening the journal had to do; for logs and status."""

    torn_bytes: int = 0
    """Bytes of a torn tail cut from the last segment."""
    rollback_resumed: str | None = None
    """The point an interrupted ``roll_to`` was finished to."""
    cycle_rolled_back: int = 0
    """Extent records of an interrupted cycle undone."""
    cycle_resumed: int = 0
    """Extent records of an interrupted cycle redone (``open_cycle="resume"``)."""
    damage: list[JournalCorrupt] = field(default_factory=list)
    """Records that failed their checksum at rest and were not used."""


@dataclass(frozen=True, slots=True)
class Space:
    """The journal's room: ``available`` is the lesser of capacity left and volume free."""

    used_bytes: int
    capacity_bytes: int
    available_bytes: int


class Journal:
    """One consistency group's journal directory and its target disks.

    Not thread-safe: one caller drives it (the MT's session for this group).
    """

    def __init__(
        self,
        directory: Path,
        disks: Mapping[str, DiskIO],
        config: JournalConfig,
        lock_fd: int,
    ) -> None:
        self.directory = directory
        self.config = config
        self.report = RecoveryReport()
        self._disks = dict(disks)
        self._sizes = {k: d.size() for k, d in self._disks.items()}
        self._lock_fd = lock_fd
        self._segs: list[_Segment] = []
        self._points: list[_Point] = []
        self._open: _Cycle | None = None
        self._last_seq = 0
        self._dirty: set[str] = set()
        self._fd = -1

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: Path,
        disks: Mapping[str, DiskIO],
        config: JournalConfig | None = None,
    ) -> Journal:
        """Open (creating if empty) the journal in ``directory`` and recover it.

        After this returns the disks equal the newest point (``rollback``, the default) or
        the newest point plus the durable batches of the interrupted cycle (``resume``).
        Raises :class:`JournalCorrupt` when that state cannot be reached safely.
        """
        directory.mkdir(parents=True, exist_ok=True)
        lock_fd = store.lock_directory(directory / segments.LOCK)
        journal = cls(directory, disks, config or JournalConfig(), lock_fd)
        try:
            journal._recover()
        except BaseException:
            journal.close()
            raise
        return journal

    def close(self) -> None:
        """Release the files and the directory lock (idempotent). Does not touch the disks."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- queries

    @property
    def last_durable_seq(self) -> int:
        """The last batch whose records are durable: the sender resends from the next one."""
        return self._last_seq

    @property
    def cycle_open(self) -> bool:
        """Whether batches were applied since the last point (disks are between points)."""
        return self._open is not None and self._open.end > self._open.start

    @property
    def used_bytes(self) -> int:
        """Bytes of the journal's segment files."""
        return sum(s.size for s in self._segs)

    def space(self) -> Space:
        """How full the journal is, for the MT's status and its volume-full alarm."""
        free = store.free_bytes(self.directory)
        available = retention.fits(self.used_bytes, self.config.capacity_bytes, free, 0)[1]
        return Space(self.used_bytes, self.config.capacity_bytes, available)

    def points(self) -> list[RecoveryPoint]:
        """The recovery points within retention, oldest first."""
        visible = self._visible()
        damaged_after = [False] * len(visible)
        bad = self._open is not None and bool(self._open.damage)
        for i in range(len(visible) - 1, -1, -1):
            damaged_after[i] = bad
            cyc = visible[i].cycle
            bad = bad or (cyc is not None and bool(cyc.damage))
        disks = tuple(sorted(self._disks))
        return [
            RecoveryPoint(
                point_id=p.meta.point_id,
                source_time=from_micros(p.meta.source_us),
                app_consistent=p.meta.app_consistent,
                seq=p.meta.seq,
                disks=disks,
                restorable=not damaged_after[i],
            )
            for i, p in enumerate(visible)
        ]

    def latest_source_time(self) -> dt.datetime | None:
        """The newest durable point's source time (RPO = now - this), or None."""
        return from_micros(self._points[-1].meta.source_us) if self._points else None

    # ---------------------------------------------------------------- writing

    def begin_cycle(self, *, changed_bytes: int, extents: int = 0) -> None:
        """Reserve room for a cycle of ``changed_bytes`` over ``extents`` extents.

        Raises :class:`RetentionVolumeFull` before writing anything if the worst case (new
        data + undo data + record overheads) does not fit. Optional: ``apply`` starts a
        cycle on its own, then checking room batch by batch.
        """
        if changed_bytes < 0 or extents < 0:
            raise InvalidExtent("changed_bytes and extents must be >= 0")
        undo = 2 if self._points else 1
        overhead = extents * (fmt.HEADER_SIZE + 64 + 256) + fmt.COMMIT_RESERVE
        self._ensure_cycle(undo * changed_bytes + overhead)

    def apply(self, batch: Batch) -> int:
        """Journal then apply one batch; return the last durable sequence number.

        A batch at or below ``last_durable_seq`` is a resend: nothing is done.
        """
        if batch.seq <= self._last_seq:
            return self._last_seq
        if self._last_seq and batch.seq != self._last_seq + 1:
            raise SequenceError(
                f"batch {batch.seq} after {self._last_seq}: batches "
                f"{self._last_seq + 1}..{batch.seq - 1} are missing; resend from "
                f"{self._last_seq + 1}"
            )
        validate_batch(batch, self._sizes)
        if not self._points and self.config.first_cycle == "direct":
            return self._apply_direct(batch)
        with_undo = bool(self._points)
        need = fmt.BATCH_END_SIZE + sum(
            fmt.frame_size_extent(e.disk_id, e.length, zero=e.data is None, undo=with_undo)
            for e in batch.extents
        )
        cycle = self._ensure_cycle(need + fmt.COMMIT_RESERVE)
        seg = self._segs[-1]
        start = seg.size
        pos = start
        try:
            for ext in batch.extents:
                disk = self._disks[ext.disk_id]
                undo = disk.pread(ext.offset, ext.length) if with_undo else None
                rec = fmt.extent_frame(
                    batch.seq, ext.disk_id, ext.offset, ext.length, ext.data, undo, ext.checksum
                )
                store.write_all(self._fd, rec, pos)
                pos += len(rec)
            end = fmt.batch_end_frame(batch.seq, len(batch.extents))
            store.write_all(self._fd, end, pos)
            pos += len(end)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back(start, exc)
            raise
        seg.size = cycle.end = cycle.batch_end = pos
        cycle.batch_seq = batch.seq
        for ext in batch.extents:
            disk = self._disks[ext.disk_id]
            if ext.data is None:
                write_zeros(disk, ext.offset, ext.length)
            else:
                disk.pwrite(ext.offset, ext.data)
            self._dirty.add(ext.disk_id)
        self._last_seq = batch.seq
        return batch.seq

    def _apply_direct(self, batch: Batch) -> int:
        """The initial copy: disks written and fsync'd, then only a BATCH_END journaled."""
        cycle = self._ensure_cycle(fmt.BATCH_END_SIZE + fmt.COMMIT_RESERVE)
        for ext in batch.extents:
            disk = self._disks[ext.disk_id]
            if ext.data is None:
                write_zeros(disk, ext.offset, ext.length)
            else:
                disk.pwrite(ext.offset, ext.data)
            self._dirty.add(ext.disk_id)
        self._sync_disks()
        seg = self._segs[-1]
        end = fmt.batch_end_frame(batch.seq, len(batch.extents))
        try:
            store.write_all(self._fd, end, seg.size)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back(seg.size, exc)
            raise
        seg.size = cycle.end = cycle.batch_end = seg.size + len(end)
        cycle.batch_seq = self._last_seq = batch.seq
        return batch.seq

    def commit_point(
        self, point_id: str, source_time: dt.datetime, app_consistent: bool
    ) -> RecoveryPoint:
        """Close the current cycle as a recovery point, durably, and prune past retention.

        Committing the newest point's id again (a resend) returns it unchanged.
        """
        if not point_id or len(point_id.encode()) > MAX_POINT_ID:
            raise InvalidExtent(f"point id must be 1..{MAX_POINT_ID} bytes")
        source_us = to_micros(source_time)
        if self._points:
            newest = self._points[-1].meta
            if newest.point_id == point_id and not self.cycle_open:
                return self._public(self._points[-1])
            if any(p.meta.point_id == point_id for p in self._points):
                raise PointOrderError(f"point {point_id!r} already exists")
            if source_us < newest.source_us:
                raise PointOrderError(
                    f"point {point_id!r} at {source_time.isoformat()} is older than the "
                    f"newest point {newest.point_id!r} at {from_micros(newest.source_us)}"
                )
        cycle = self._ensure_cycle(fmt.COMMIT_RESERVE)
        for disk_id in sorted(self._dirty):
            self._disks[disk_id].fsync()
        self._dirty.clear()
        ordinal = self._points[-1].meta.ordinal + 1 if self._points else 1
        meta = fmt.PointMeta(ordinal, point_id, source_us, app_consistent, self._last_seq)
        data = fmt.commit_frames(meta)
        seg = self._segs[-1]
        try:
            store.write_all(self._fd, data, seg.size)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back(seg.size, exc)
            raise
        cycle.end = seg.size
        seg.size += len(data)
        point = _Point(meta, seg.index, seg.size, cycle)
        self._points.append(point)
        self._open = None
        self._prune()
        return self._public(point)

    def abort_cycle(self) -> None:
        """Undo the batches applied since the newest point; the disks equal it again."""
        if self._points:
            self._roll(self._points[-1])
        elif self._open is not None:
            # No point yet: there is nothing to go back to, only the records to drop.
            self._truncate_segment(self._segs[-1], self._open.start)
            self._open = None
            self._last_seq = self._segs[-1].base_seq

    def roll_to(self, point_id: str) -> RecoveryPoint:
        """Restore every disk to ``point_id`` exactly and discard every later point.

        Crash-safe: an interrupted rollback is finished by the next ``open``.
        """
        for p in self._visible():
            if p.meta.point_id == point_id:
                self._roll(p)
                return self._public(p)
        known = ", ".join(p.meta.point_id for p in self._visible()) or "none"
        raise UnknownRecoveryPoint(f"no recovery point {point_id!r} (have: {known})")

    # ---------------------------------------------------------------- internals

    def _public(self, p: _Point) -> RecoveryPoint:
        for rp in self.points():
            if rp.point_id == p.meta.point_id:
                return rp
        return RecoveryPoint(
            p.meta.point_id,
            from_micros(p.meta.source_us),
            p.meta.app_consistent,
            p.meta.seq,
            tuple(sorted(self._disks)),
        )

    def _visible(self) -> list[_Point]:
        keep = retention.first_kept([p.meta.source_us for p in self._points], self.config.retention)
        return self._points[keep:]

    def _seg(self, index: int) -> _Segment:
        for s in self._segs:
            if s.index == index:
                return s
        raise KeyError(index)

    def _cut_back(self, size: int, exc: OSError) -> None:
        """Undo a failed append (the records never reached a target)."""
        seg = self._segs[-1]
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        seg.size = size
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RetentionVolumeFull(
                f"{self.directory}: retention volume full while writing the journal",
                needed=0,
                available=0,
            ) from exc

    def _ensure_cycle(self, need: int) -> _Cycle:
        """Check room for ``need`` more bytes, open a cycle (rotating segments) if none."""
        last = self._segs[-1]
        rotate = (
            self._open is None
            and last.size > last.header_end
            and last.size >= self.config.segment_bytes
        )
        need_total = need + (4096 if rotate else 0)
        ok, available = retention.fits(
            self.used_bytes,
            self.config.capacity_bytes,
            store.free_bytes(self.directory),
            need_total,
        )
        if not ok:
            raise RetentionVolumeFull(
                f"{self.directory}: the journal needs {need_total} more bytes, "
                f"{available} available (capacity {self.config.capacity_bytes}, "
                f"used {self.used_bytes}); nothing of this cycle was written",
                needed=need_total,
                available=available,
            )
        if self._open is None:
            if rotate:
                self._new_segment()
            seg = self._segs[-1]
            self._open = _Cycle(seg.index, seg.size, seg.size)
        return self._open

    def _new_segment(self) -> None:
        index = self._segs[-1].index + 1 if self._segs else 0
        base = self._points[-1].meta if self._points else None
        header = fmt.segment_frame(fmt.SegmentHeader(index, self._last_seq, base))
        path = self.directory / segments.segment_name(index)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            store.write_all(fd, header, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        store.fsync_dir(self.directory)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._segs.append(_Segment(index, path, len(header), len(header), base, self._last_seq))

    def _open_last(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._segs[-1].path, os.O_RDWR)

    def _truncate_segment(self, seg: _Segment, size: int) -> None:
        store.truncate_durably(seg.path, size)
        seg.size = size

    def _prune(self) -> None:
        if not self._points:
            return
        keep = self._visible()[0].meta.ordinal
        spans = [
            retention.SegmentSpan(s.index, s.base.ordinal if s.base else -1) for s in self._segs
        ]
        doomed = set(retention.deletable_segments(spans, keep))
        if not doomed:
            return
        for s in [s for s in self._segs if s.index in doomed]:
            store.unlink_durably(s.path)
        self._segs = [s for s in self._segs if s.index not in doomed]
        first = self._segs[0]
        kept: list[_Point] = []
        for p in self._points:
            if p.seg not in doomed:
                kept.append(p)
            elif first.base is not None and p.meta.ordinal == first.base.ordinal:
                kept.append(_Point(p.meta, first.index, first.header_end, None))
        self._points = kept

    # ---------------------------------------------------------------- reading records

    def _records(self, cycle: _Cycle) -> list[_Record]:
        """The extent records of ``cycle``, every frame verified (else JournalCorrupt)."""
        if cycle.damage:
            path, offset, detail = cycle.damage[0]
            raise JournalCorrupt(path, offset, detail)
        seg = self._seg(cycle.seg)
        out: list[_Record] = []
        with _mapped(seg.path) as buf:
            pos = cycle.start
            while pos < cycle.end:
                raw = fmt.check_frame(buf, pos, cycle.end)
                if isinstance(raw, fmt.Damage):
                    raise JournalCorrupt(seg.path, pos, raw.value)
                if raw.ftype is fmt.FrameType.EXTENT:
                    head = fmt.parse_extent(_head_bytes(buf, raw))
                    rec = _Record(seg.index, raw.start, raw.end, head)
                    self._disk(head.disk_id, rec)  # refuse before writing, not half-way
                    out.append(rec)
                pos = raw.end
        return out

    def _read_verified(self, rec: _Record) -> bytes:
        """A record's payload, read again and verified again just before it is used."""
        seg = self._seg(rec.seg)
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            data = store.read_exact(fd, rec.start, rec.end - rec.start)
        finally:
            os.close(fd)
        raw = fmt.check_frame(data, 0, len(data))
        if isinstance(raw, fmt.Damage):
            raise JournalCorrupt(seg.path, rec.start, raw.value)
        return data[fmt.HEADER_SIZE :]

    def _undo(self, records: list[_Record]) -> None:
        for rec in reversed(records):
            head = rec.head
            if not head.has_undo:
                raise JournalCorrupt(
                    self._seg(rec.seg).path, rec.start, "record has no undo data to roll back"
                )
            payload = self._read_verified(rec)
            undo = payload[head.undo_at : head.undo_at + head.length]
            self._disk(head.disk_id, rec).pwrite(head.offset, undo)
            self._dirty.add(head.disk_id)

    def _redo(self, records: list[_Record]) -> None:
        for rec in records:
            head = rec.head
            disk = self._disk(head.disk_id, rec)
            if head.zero:
                write_zeros(disk, head.offset, head.length)
            else:
                payload = self._read_verified(rec)
                disk.pwrite(head.offset, payload[head.data_at : head.data_at + head.length])
            self._dirty.add(head.disk_id)

    def _disk(self, disk_id: str, rec: _Record) -> DiskIO:
        disk = self._disks.get(disk_id)
        where = f"{self._seg(rec.seg).path} offset {rec.start}"
        if disk is None:
            raise InvalidExtent(
                f"{where}: the journal has records for disk {disk_id!r}, which was not "
                f"given to open()"
            )
        if rec.head.offset + rec.head.length > self._sizes[disk_id]:
            raise InvalidExtent(
                f"{where}: record for {disk_id!r} ends at {rec.head.offset + rec.head.length}, "
                f"beyond the disk ({self._sizes[disk_id]} bytes): was the disk swapped or shrunk?"
            )
        return disk

    def _sync_disks(self) -> None:
        for disk_id in sorted(self._dirty):
            self._disks[disk_id].fsync()
        self._dirty.clear()

    # ---------------------------------------------------------------- rollback

    def _roll(self, target: _Point) -> None:
        """Undo every cycle after ``target`` (newest first), durably, then discard them."""
        i = self._points.index(target)
        cycles = [p.cycle for p in self._points[i + 1 :]]
        if self._open is not None:
            cycles.append(self._open)
        if any(c is None for c in cycles):
            raise JournalCorrupt(self.directory, 0, "a cycle after the target was pruned")
        records = [self._records(c) for c in cycles if c is not None]
        if any(records):
            intent = f"{target.meta.ordinal} {target.meta.point_id}\n".encode()
            store.replace_durably(self.directory / segments.ROLLBACK_INTENT, intent + _sum(intent))
            for recs in reversed(records):
                self._undo(recs)
            self._sync_disks()
        self._discard_after(target)
        store.unlink_durably(self.directory / segments.ROLLBACK_INTENT)

    def _discard_after(self, target: _Point) -> None:
        """Drop every segment after the target's, newest first, then cut the target's."""
        for seg in reversed(self._segs):
            if seg.index > target.seg:
                store.unlink_durably(seg.path)
        self._segs = [s for s in self._segs if s.index <= target.seg]
        seg = self._segs[-1]
        if seg.size != target.end:
            self._truncate_segment(seg, target.end)
        self._open_last()
        self._points = self._points[: self._points.index(target) + 1]
        self._open = None
        self._dirty.clear()
        self._last_seq = target.meta.seq

    # ---------------------------------------------------------------- recovery

    def _recover(self) -> None:
        names = sorted(os.listdir(self.directory))
        for leftover in names:
            if leftover.endswith(".tmp"):
                (self.directory / leftover).unlink()
        indexes = segments.segment_indexes(names)
        for n, index in enumerate(indexes):
            last = n == len(indexes) - 1
            self._load_segment(index, last=last, light=not (last or self.config.verify_on_open))
        if not self._segs:
            self._new_segment()
        else:
            self._open_last()
        if self._open is not None and self._open.end == self._open.start and not self._open.damage:
            self._open = None
        intent = self.directory / segments.ROLLBACK_INTENT
        if intent.exists():
            target = self._intent_target(intent)
            self._roll(target)
            self.report.rollback_resumed = target.meta.point_id
        elif self._open is not None:
            self._recover_open_cycle(self._open)
        self._prune()

    def _intent_target(self, intent: Path) -> _Point:
        data = intent.read_bytes()
        body, check = data[:-8], data[-8:]
        if len(data) < 9 or _sum(body) != check:
            raise JournalCorrupt(intent, 0, "rollback intent file is damaged")
        ordinal_text, _, point_id = body.decode().rstrip("\n").partition(" ")
        for p in self._points:
            if p.meta.ordinal == int(ordinal_text) and p.meta.point_id == point_id:
                return p
        raise JournalCorrupt(intent, 0, f"rollback target {point_id!r} is not in the journal")

    def _recover_open_cycle(self, cycle: _Cycle) -> None:
        records = self._records(cycle)
        if not self._points and not records and cycle.batch_end > cycle.start:
            # A direct initial copy: each batch was on the disks (fsync'd) before its
            # BATCH_END, so it resumes after the last one, whatever the mode.
            seg = self._seg(cycle.seg)
            if seg.size != cycle.batch_end:
                self._truncate_segment(seg, cycle.batch_end)
            cycle.end = cycle.batch_end
            self._last_seq = cycle.batch_seq
            return
        if self.config.open_cycle == "resume" and cycle.batch_end > cycle.start:
            done = [r for r in records if r.end <= cycle.batch_end]
            partial = [r for r in records if r.end > cycle.batch_end]
            if partial and partial[0].head.has_undo:
                self._undo(partial)
            self._redo(done)
            self._sync_disks()
            seg = self._seg(cycle.seg)
            if seg.size != cycle.batch_end:
                self._truncate_segment(seg, cycle.batch_end)
            cycle.end = cycle.batch_end
            self._last_seq = cycle.batch_seq
            self.report.cycle_resumed = len(done)
            self.report.cycle_rolled_back = len(partial)
            return
        self.report.cycle_rolled_back = len(records)
        if self._points:
            self._roll(self._points[-1])
        else:
            # The first cycle keeps no undo data: there is no point to go back to.
            self._truncate_segment(self._seg(cycle.seg), cycle.start)
            self._open = None
            self._last_seq = self._segs[-1].base_seq

    def _load_segment(self, index: int, *, last: bool, light: bool = False) -> None:
        path = self.directory / segments.segment_name(index)
        size = path.stat().st_size
        with _mapped(path) as buf:
            events = list(_scan(buf, size, light=light))
        valid_end = size
        torn = events[-1] if last and events else None
        if isinstance(torn, _Bad) and torn.end == size:
            events.pop()
            valid_end = torn.start
            self.report.torn_bytes += size - valid_end
        if last and not events:
            # A segment whose header never became durable: created, then crashed.
            store.unlink_durably(path)
            return
        if valid_end != size:
            store.truncate_durably(path, valid_end)
        first = events[0]
        header_damage: tuple[Path, int, str] | None = None
        if isinstance(first, _Good) and first.raw.ftype is fmt.FrameType.SEGMENT:
            header = fmt.parse_segment(first.payload)
            header_end = first.raw.end
            if header.index != index:
                raise JournalCorrupt(path, 0, f"segment header says index {header.index}")
        elif isinstance(first, _Bad) and first.start == 0:
            # The header is damaged: what it said is what the previous segment ended with.
            # The damaged region may hide records too, so the cycle after it is marked.
            base = self._points[-1].meta if self._points else None
            header = fmt.SegmentHeader(index, self._last_seq, base)
            header_end = first.end
            header_damage = (path, 0, f"segment header unreadable ({first.damage.value})")
            self.report.damage.append(JournalCorrupt(*header_damage))
        else:
            raise JournalCorrupt(path, 0, "segment does not start with a segment header")
        seg = _Segment(index, path, valid_end, header_end, header.base, header.base_seq)
        if self._segs and self._segs[-1].index != index - 1:
            # Never left by the journal itself (pruning deletes the oldest files first,
            # rollback the newest): someone removed a file. What it held cannot be undone.
            missing = self.directory / segments.segment_name(index - 1)
            gap = (missing, 0, "segment file missing")
            self.report.damage.append(JournalCorrupt(*gap))
            known = self._points[-1].meta.ordinal if self._points else 0
            if header.base is not None and header.base.ordinal > known and self._open:
                self._open.damage.append(gap)  # the cycle that led to this segment's base
            else:
                header_damage = header_damage or gap
        self._segs.append(seg)
        if not self._points:
            self._last_seq = header.base_seq
            if header.base is not None:
                self._points.append(_Point(header.base, index, seg.header_end, None))
        elif header.base is not None and header.base.ordinal > self._points[-1].meta.ordinal:
            # The previous segment lost this point's commit frames to damage: the point is
            # known from this header, and the damaged cycle before it stays marked.
            self._points.append(_Point(header.base, index, seg.header_end, self._open))
            self._last_seq = header.base_seq
        cycle = _Cycle(index, seg.header_end, seg.header_end)
        if header_damage is not None:
            cycle.damage.append(header_damage)
        for ev in events[1:]:
            if isinstance(ev, _Bad):
                detail = ev.damage.value
                self.report.damage.append(JournalCorrupt(path, ev.start, detail))
                newest = self._points[-1] if self._points else None
                if (
                    newest is not None
                    and newest.seg == index
                    and newest.end == ev.start == cycle.start
                    and ev.end - ev.start == len(fmt.commit_frame(newest.meta, 1))
                ):
                    # Exactly the second commit copy of the point just before: expendable.
                    cycle.start = cycle.end = ev.end
                    continue
                cycle.damage.append((path, ev.start, detail))
                cycle.end = ev.end
                continue
            raw = ev.raw
            if raw.ftype is fmt.FrameType.EXTENT or raw.ftype is fmt.FrameType.SEGMENT:
                cycle.end = raw.end
            elif raw.ftype is fmt.FrameType.BATCH_END:
                end = fmt.parse_batch_end(ev.payload)
                cycle.end = cycle.batch_end = raw.end
                cycle.batch_seq = end.seq
            elif raw.ftype is fmt.FrameType.COMMIT:
                commit = fmt.parse_commit(ev.payload)
                newest = self._points[-1] if self._points else None
                if newest is not None and newest.meta.ordinal == commit.point.ordinal:
                    # The second copy of the newest point's commit.
                    if cycle.start == raw.start and newest.end == raw.start:
                        newest.end = raw.end
                        cycle.start = cycle.end = raw.end
                    continue
                records_end = raw.start
                lost_first = raw.start - (raw.end - raw.start)
                if commit.copy == 1 and any(d[1] == lost_first for d in cycle.damage):
                    # The first copy is the damaged region just before: not the cycle's.
                    cycle.damage = [d for d in cycle.damage if d[1] != lost_first]
                    records_end = lost_first
                point = _Point(commit.point, index, raw.end, cycle)
                cycle.end = records_end
                self._points.append(point)
                self._last_seq = commit.point.seq
                cycle = _Cycle(index, raw.end, raw.end)
        self._open = cycle


@dataclass
class _Good:
    raw: fmt.RawFrame
    payload: bytes


@dataclass
class _Bad:
    start: int
    end: int
    damage: fmt.Damage


def _scan(buf: fmt.Buffer, size: int, *, light: bool = False) -> Iterator[_Good | _Bad]:
    """Every frame of a segment, and every damaged region between frames."""
    check = fmt.check_frame_light if light else fmt.check_frame
    pos = 0
    while pos < size:
        raw = check(buf, pos, size)
        if isinstance(raw, fmt.RawFrame):
            if raw.ftype is fmt.FrameType.EXTENT:
                payload = _head_bytes(buf, raw)
            else:
                payload = fmt.payload_of(buf, raw)
            yield _Good(raw, payload)
            pos = raw.end
            continue
        nxt = fmt.find_next_magic(buf, pos, size)
        while nxt != -1 and not isinstance(fmt.check_frame(buf, nxt, size), fmt.RawFrame):
            nxt = fmt.find_next_magic(buf, nxt, size)
        end = size if nxt == -1 else nxt
        yield _Bad(pos, end, raw)
        pos = end


def _head_bytes(buf: fmt.Buffer, raw: fmt.RawFrame) -> bytes:
    """Enough of an extent frame's payload to decode its fixed part and disk id."""
    start = raw.start + fmt.HEADER_SIZE
    return bytes(buf[start : min(raw.end, start + 64 + 65536)])


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[fmt.Buffer]:
    size = path.stat().st_size
    if size == 0:
        yield b""
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        yield mm


def _sum(data: bytes) -> bytes:
    return xxhash.xxh3_64_digest(data)
