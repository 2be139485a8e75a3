"""The replica disk of one on-premises disk in Azure: written through a write SAS, recovery
points kept as incremental snapshots of it.

One cycle of one disk::

    ensure_disk()           the replica exists (created for upload, tagged
                            failback.io/role=replica, size rounded up to whole MiB plus the
                            512-byte VHD footer); resumable from ``state.disk_pending``
    open_cycle()            grants a Write SAS on it (revoked on exit, however it ends)
      cycle.apply(batch)    validate every extent (checksum, bounds) before any byte is
                            written; Put Page updates of at most 4 MiB, clears for zero
                            extents; then read back samples and compare XXH3
    commit_point(...)       after the SAS is revoked: an incremental snapshot named after
                            the point (reused, never taken twice), tagged with its source
                            time and app-consistency; paced below 7 per disk per 5 minutes
    points() / prune(...)   the tagged snapshots, oldest first; retention

Writes are offset-addressed: a batch sent again (a crash between the write and the
persisted ``applied_seq``) writes the same bytes at the same offsets, which is harmless; a
batch at or below ``state.applied_seq`` is skipped without a request.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import logging
import random
import re
import ssl
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import xxhash

from failback.dataplane.journal import (
    SECTOR,
    Batch,
    Extent,
    PointOrderError,
    SequenceError,
)
from failback.dataplane.journal.model import validate_batch
from failback.dataplane.pacing import Pacer, paced
from failback.dataplane.source_azure.pageblob import MAX_PAGE_WRITE, PageBlob, RequestCounts
from failback.domain.replicas import (
    RECOVERY_POINT,
    REPLICA,
    ROLE,
    TAG_APP_CONSISTENT,
    TAG_DISK_ID,
    TAG_POINT,
    TAG_REPLICA,
    TAG_SEQ,
    TAG_SOURCE_TIME,
)
from failback.errors import Permanent
from failback.ports.azure import (
    AzureCompute,
    AzureConflict,
    AzureNotFound,
    ManagedDisk,
    OperationHandle,
    OperationKind,
    Snapshot,
)

log = logging.getLogger(__name__)

MIB = 1 << 20
VHD_FOOTER = 512
"""A fixed VHD's footer: the last 512 bytes of a disk uploaded to Azure."""


# ------------------------------------------------------------------ errors


class WriteVerificationFailed(Permanent):
    """Bytes read back from the replica differ from what was written: the disk changed
    under the sink, or a write was lost. ``applied_seq`` is not advanced."""

    def __init__(self, disk: str, offset: int, length: int, expected: int, actual: int) -> None:
        super().__init__(
            f"replica {disk}: bytes {offset}-{offset + length - 1} read back with XXH3 "
            f"{actual:016x}, written {expected:016x}"
        )
        self.disk = disk
        self.offset = offset
        self.length = length


class NotAReplica(Permanent):
    """A disk of the replica's name exists but is not tagged ``failback.io/role=replica``
    (or is too small): the sink never writes into a disk it did not create."""


class CycleStillOpen(Permanent):
    """``commit_point`` while a cycle's Write SAS is open (leave the ``async with`` first)."""


class PointSnapshotFailed(Permanent):
    """A point's snapshot ended in a state other than Succeeded."""


# ------------------------------------------------------------------ settings and state


@dataclass(frozen=True)
class SinkSettings:
    """How a sink writes; the defaults follow Azure's limits (docs/sink-azure.md)."""

    write_chunk: int = MAX_PAGE_WRITE
    """The most bytes of one Put Page update (Azure: 4 MiB)."""
    clear_chunk: int = 64 << 20
    """The most bytes of one Put Page clear (Azure allows the whole blob)."""
    parallel_writes: int = 4
    """Put Page requests in flight at once (within one batch)."""
    verify_random_sectors: int = 1
    """Sectors read back at random positions of every extent, besides its first and last."""
    verify_full_fraction: float = 0.0
    """Fraction (0..1) of extents read back whole instead of sampled."""
    verify_coalesce_gap: int = 64 << 10
    """Samples closer than this are read back with one ranged GET (up to 4 MiB)."""
    verify_seed: int | None = None
    """Seed of the sample positions (tests); None: a fresh random sequence."""
    sas_seconds: int = 3600
    """Lifetime of the Write SAS of one cycle (revoked as soon as the cycle ends)."""
    snapshots_per_window: int = 7
    snapshot_window: float = 300.0
    """Client-side pacing: at most ``snapshots_per_window`` point snapshots of the replica
    per ``snapshot_window`` seconds (Azure: 7 per 5 minutes)."""
    max_inline_wait: float = 5.0
    """A throttle asking to wait longer than this is raised as ``AzureThrottled(delay)``."""
    blob_retries: int = 2
    request_timeout: float = 60.0
    poll_interval: float = 1.0
    max_points: int = 450
    """The most point snapshots kept (Azure allows 500 incremental snapshots per disk)."""
    max_deletes_per_prune: int = 50
    """ARM deletes one ``prune`` sends at most (the rest go next time)."""
    snapshot_prefix: str = "fbp"
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.write_chunk <= MAX_PAGE_WRITE or self.write_chunk % SECTOR:
            raise ValueError(f"write_chunk must be 1..{MAX_PAGE_WRITE}, a multiple of {SECTOR}")
        if self.clear_chunk <= 0 or self.clear_chunk % SECTOR:
            raise ValueError(f"clear_chunk must be a positive multiple of {SECTOR}")
        if not 0.0 <= self.verify_full_fraction <= 1.0:
            raise ValueError("verify_full_fraction must be within 0..1")
        if self.parallel_writes < 1 or self.verify_random_sectors < 0:
            raise ValueError("parallel_writes >= 1 and verify_random_sectors >= 0")


def handle_to_dict(handle: OperationHandle | None) -> dict[str, Any] | None:
    if handle is None:
        return None
    return {
        "kind": str(handle.kind),
        "resourceGroup": handle.resource_group,
        "name": handle.name,
        "token": handle.token,
    }


def handle_from_dict(data: Mapping[str, Any] | None) -> OperationHandle | None:
    if not data:
        return None
    return OperationHandle(
        OperationKind(str(data["kind"])),
        str(data["resourceGroup"]),
        str(data["name"]),
        str(data["token"]),
    )


@dataclass(frozen=True)
class SinkPoint:
    """A recovery point of one replica disk: its incremental snapshot."""

    point_id: str
    snapshot: str
    source_time: dt.datetime
    app_consistent: bool
    seq: int
    """The last batch applied before the point was taken."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "pointId": self.point_id,
            "snapshot": self.snapshot,
            "sourceTime": self.source_time.isoformat(),
            "appConsistent": self.app_consistent,
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SinkPoint:
        return cls(
            str(data["pointId"]),
            str(data["snapshot"]),
            dt.datetime.fromisoformat(str(data["sourceTime"])),
            bool(data["appConsistent"]),
            int(data["seq"]),
        )


@dataclass(frozen=True)
class SinkState:
    """What a sink must remember; the caller persists it (``to_dict``/``from_dict``) after
    each applied batch and each point. No secret: no SAS URL is ever part of it."""

    disk_created: bool = False
    disk_pending: OperationHandle | None = None
    """The replica's creation under way (resumed from its continuation token)."""
    applied_seq: int = 0
    """The last batch written and verified; a resumed cycle skips batches up to it."""
    sas_open: bool = False
    """A Write SAS may be live (set before the grant, cleared after the revoke): a sink
    restarted after a crash revokes it before anything else."""
    points: tuple[SinkPoint, ...] = ()
    """Committed points, oldest first (the snapshots in Azure are the truth: ``points()``)."""
    snapshot_pending: OperationHandle | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "diskCreated": self.disk_created,
            "diskPending": handle_to_dict(self.disk_pending),
            "appliedSeq": self.applied_seq,
            "sasOpen": self.sas_open,
            "points": [p.to_dict() for p in self.points],
            "snapshotPending": handle_to_dict(self.snapshot_pending),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SinkState:
        return cls(
            disk_created=bool(data.get("diskCreated", False)),
            disk_pending=handle_from_dict(data.get("diskPending")),
            applied_seq=int(data.get("appliedSeq", 0)),
            sas_open=bool(data.get("sasOpen", False)),
            points=tuple(SinkPoint.from_dict(p) for p in data.get("points", ())),
            snapshot_pending=handle_from_dict(data.get("snapshotPending")),
        )


@dataclass
class SinkReport:
    """What one cycle wrote and checked."""

    disk: str
    batches: int = 0
    batches_skipped: int = 0
    extents: int = 0
    bytes_written: int = 0
    bytes_cleared: int = 0
    bytes_verified: int = 0
    """Bytes read back and compared."""
    samples: int = 0
    arm_calls: int = 0
    blob: RequestCounts = field(default_factory=RequestCounts)


# ------------------------------------------------------------------ helpers


def replica_size(source_bytes: int) -> int:
    """The upload size of a replica of a ``source_bytes`` disk: whole MiB (Azure takes
    fixed VHDs of whole MiB) plus the 512-byte VHD footer."""
    if source_bytes <= 0 or source_bytes % SECTOR:
        raise ValueError(f"disk size {source_bytes} must be a positive multiple of {SECTOR}")
    return -(-source_bytes // MIB) * MIB + VHD_FOOTER


def _chs(total_sectors: int) -> tuple[int, int, int]:
    """The VHD specification's CHS geometry of a disk."""
    total = min(total_sectors, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def vhd_footer(virtual_bytes: int, unique: bytes) -> bytes:
    """The 512-byte footer of a fixed VHD of ``virtual_bytes`` (deterministic: no time)."""
    cylinders, heads, spt = _chs(virtual_bytes // SECTOR)
    body = bytearray(
        struct.pack(
            ">8sIIQI4sI4sQQHBBII16sB",
            b"conectix",
            2,
            0x00010000,
            0xFFFFFFFFFFFFFFFF,
            0,
            b"fbop",
            0x00010000,
            b"Wi2k",
            virtual_bytes,
            virtual_bytes,
            cylinders,
            heads,
            spt,
            2,  # fixed
            0,
            unique[:16].ljust(16, b"\0"),
            0,
        )
    )
    body.extend(b"\0" * (VHD_FOOTER - len(body)))
    checksum = (~sum(body)) & 0xFFFFFFFF
    body[64:68] = struct.pack(">I", checksum)
    return bytes(body)


_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]")


def point_snapshot_name(prefix: str, disk_name: str, point_id: str) -> str:
    """A deterministic Azure name (≤ 80 characters) for the snapshot of ``point_id``."""
    slug = _NAME_OK.sub("-", point_id).strip("-.") or "p"
    digest = xxhash.xxh3_64_hexdigest(f"{disk_name}\0{point_id}".encode())
    if len(slug) > 24:
        slug = slug[:12].rstrip("-.") + "-" + digest[:11]
    head = f"{prefix}-{disk_name}"[: 80 - len(slug) - 1 - 9].rstrip("-.")
    return f"{head}-{digest[:8]}-{slug}"[:80]


def _point_from_snapshot(snap: Snapshot) -> SinkPoint | None:
    tags = snap.tags
    try:
        return SinkPoint(
            point_id=tags[TAG_POINT],
            snapshot=snap.name,
            source_time=dt.datetime.fromisoformat(tags[TAG_SOURCE_TIME]),
            app_consistent=tags.get(TAG_APP_CONSISTENT) == "true",
            seq=int(tags.get(TAG_SEQ, "0")),
        )
    except (KeyError, ValueError):
        log.warning("snapshot %s is tagged as a recovery point but its tags are bad", snap.name)
        return None


# ------------------------------------------------------------------ the cycle


class SinkCycle:
    """One open cycle: apply batches in order, then leave the ``async with``."""

    def __init__(self, sink: ManagedDiskSink, blob: PageBlob, report: SinkReport) -> None:
        self.sink = sink
        self.report = report
        self._blob = blob
        self.closed = False

    async def apply(self, batch: Batch) -> bool:
        """Write ``batch`` and verify it; False when it was applied already (skipped).

        Raises ``SourceChecksumMismatch``/``InvalidExtent`` (nothing written),
        ``SequenceError`` (a batch was lost), ``WriteVerificationFailed``, or a
        ``ports.azure`` fault of the page blob (429/503 waited per ``Retry-After`` when
        short, else raised with it)."""
        if self.closed:
            raise RuntimeError("the cycle is closed (its Write SAS is revoked)")
        sink = self.sink
        state = sink.state
        if batch.seq <= state.applied_seq:
            self.report.batches_skipped += 1
            log.info("replica %s: batch %d applied already, skipped", sink.disk_name, batch.seq)
            return False
        if state.applied_seq and batch.seq != state.applied_seq + 1:
            raise SequenceError(
                f"replica {sink.disk_name}: batch {batch.seq} after {state.applied_seq}: "
                "a batch was lost; resend from the next one"
            )
        # Every extent is checked before the first byte goes out.
        validate_batch(batch, {sink.disk_id: sink.size_bytes})
        await self._write(batch.extents)
        await self._verify(batch.extents)
        sink.state = replace(sink.state, applied_seq=batch.seq)
        self.report.batches += 1
        self.report.extents += len(batch.extents)
        return True

    async def _write(self, extents: Sequence[Extent]) -> None:
        settings = self.sink.settings
        report = self.report
        jobs: list[tuple[int, bytes | None, int]] = []
        for ext in extents:
            if ext.data is None:
                report.bytes_cleared += ext.length
                for at in range(ext.offset, ext.offset + ext.length, settings.clear_chunk):
                    n = min(settings.clear_chunk, ext.offset + ext.length - at)
                    jobs.append((at, None, n))
            else:
                report.bytes_written += ext.length
                view = memoryview(ext.data)
                for rel in range(0, ext.length, settings.write_chunk):
                    piece = bytes(view[rel : rel + settings.write_chunk])
                    jobs.append((ext.offset + rel, piece, len(piece)))
        # The order of overlapping writes matters: then one at a time.
        parallel = 1 if _overlapping(extents) else settings.parallel_writes
        limit = asyncio.Semaphore(parallel)

        async def run(offset: int, data: bytes | None, length: int) -> None:
            async with limit:
                if data is None:
                    await self._blob.clear(offset, length)
                else:
                    await self._blob.write(offset, data)

        if parallel == 1:
            for job in jobs:
                await run(*job)
            return
        # gather raises the first failure as is (a TaskGroup would wrap it in a group).
        tasks = [asyncio.create_task(run(*job)) for job in jobs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _regions(self, extents: Sequence[Extent]) -> list[tuple[int, int]]:
        settings = self.sink.settings
        rng = self.sink.rng
        regions: set[tuple[int, int]] = set()
        for ext in extents:
            if rng.random() < settings.verify_full_fraction:
                for at in range(ext.offset, ext.offset + ext.length, MAX_PAGE_WRITE):
                    regions.add((at, min(MAX_PAGE_WRITE, ext.offset + ext.length - at)))
                continue
            sectors = ext.length // SECTOR
            picks = {0, sectors - 1}
            picks.update(rng.randrange(sectors) for _ in range(settings.verify_random_sectors))
            regions.update((ext.offset + s * SECTOR, SECTOR) for s in picks)
        return sorted(regions)

    async def _verify(self, extents: Sequence[Extent]) -> None:
        """Read back samples of every extent and compare their XXH3 with what was written."""
        settings = self.sink.settings
        regions = self._regions(extents)
        expected = _Expected(extents)
        groups: list[list[tuple[int, int]]] = []
        for region in regions:
            if groups:
                last = groups[-1]
                lo, end = last[0][0], last[-1][0] + last[-1][1]
                if (
                    region[0] - end <= settings.verify_coalesce_gap
                    and region[0] + region[1] - lo <= MAX_PAGE_WRITE
                ):
                    last.append(region)
                    continue
            groups.append([region])
        for group in groups:
            lo = group[0][0]
            hi = max(o + n for o, n in group)
            data = await self._blob.read(lo, hi - lo)
            for offset, length in group:
                want = xxhash.xxh3_64_intdigest(expected.bytes(offset, length))
                got = xxhash.xxh3_64_intdigest(data[offset - lo : offset - lo + length])
                self.report.samples += 1
                self.report.bytes_verified += length
                if want != got:
                    raise WriteVerificationFailed(self.sink.disk_name, offset, length, want, got)


def _overlapping(extents: Sequence[Extent]) -> bool:
    spans = sorted((e.offset, e.offset + e.length) for e in extents)
    return any(a[1] > b[0] for a, b in itertools.pairwise(spans))


class _Expected:
    """The bytes a batch leaves at any range inside its extents (later extents win)."""

    def __init__(self, extents: Sequence[Extent]) -> None:
        self._extents = extents
        self._overlap = _overlapping(extents)
        ordered = sorted(extents, key=lambda e: e.offset)
        self._sorted = ordered
        self._starts = [e.offset for e in ordered]

    @staticmethod
    def _piece(ext: Extent, offset: int, length: int) -> bytes:
        if ext.data is None:
            return bytes(length)
        return ext.data[offset - ext.offset : offset - ext.offset + length]

    def bytes(self, offset: int, length: int) -> bytes:
        if not self._overlap:
            ext = self._sorted[bisect.bisect_right(self._starts, offset) - 1]
            return self._piece(ext, offset, length)
        out = bytearray(length)
        for ext in self._extents:
            lo, hi = max(offset, ext.offset), min(offset + length, ext.offset + ext.length)
            if lo < hi:
                out[lo - offset : hi - offset] = self._piece(ext, lo, hi - lo)
        return bytes(out)


# ------------------------------------------------------------------ the sink


class ManagedDiskSink:
    """The Azure replica of one disk: ``ensure_disk``, cycles of batches, points.

    ``disk_id`` is the journal's name of the disk (extents carry it; default the replica's
    name); ``size_bytes`` the source disk's size (extents must stay below it)."""

    def __init__(
        self,
        compute: AzureCompute,
        resource_group: str,
        disk_name: str,
        size_bytes: int,
        *,
        location: str,
        disk_id: str | None = None,
        os_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        state: SinkState | None = None,
        settings: SinkSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        replica_size(size_bytes)  # validates
        self.compute = compute
        self.resource_group = resource_group
        self.disk_name = disk_name
        self.size_bytes = size_bytes
        self.location = location
        self.disk_id = disk_id or disk_name
        self.os_type = os_type
        self.tags = dict(tags or {})
        self.state = state or SinkState()
        self.settings = settings or SinkSettings()
        self.rng = random.Random(self.settings.verify_seed)  # noqa: S311 - sampling, not secrets
        self._pacer = Pacer(
            self.settings.snapshots_per_window, self.settings.snapshot_window, clock
        )
        self._session = session
        self._cycle: SinkCycle | None = None
        self.arm_calls = 0

    @property
    def upload_bytes(self) -> int:
        return replica_size(self.size_bytes)

    def snapshot_name(self, point_id: str) -> str:
        return point_snapshot_name(self.settings.snapshot_prefix, self.disk_name, point_id)

    async def _arm(self, call: Any) -> Any:
        self.arm_calls += 1
        return await call

    # -- the replica disk -----------------------------------------------------------

    async def ensure_disk(self) -> ManagedDisk:
        """The replica disk, created for upload if missing (resumes ``state.disk_pending``).
        Idempotent; refuses a disk of that name that is not a replica (``NotAReplica``)."""
        rg, name = self.resource_group, self.disk_name
        disk = await self._arm(self.compute.get_disk(rg, name))
        if disk is None:
            handle = self.state.disk_pending
            if handle is None:
                tags = {**self.tags, ROLE: REPLICA, TAG_DISK_ID: self.disk_id}
                handle = await self._arm(
                    self.compute.begin_disk_create_for_upload(
                        rg, name, self.location, self.upload_bytes, tags, self.os_type
                    )
                )
                self.state = replace(self.state, disk_pending=handle)
                log.info("replica disk %s/%s: creating (%d bytes)", rg, name, self.upload_bytes)
            with contextlib.suppress(AzureNotFound):
                await self._arm(self.compute.wait(handle))
            disk = await self._arm(self.compute.get_disk(rg, name))
            if disk is None:
                # The operation ended without a disk (it failed and was cleaned up): again.
                self.state = replace(self.state, disk_pending=None)
                raise AzureConflict(f"replica disk {rg}/{name} was not created; try again")
        assert isinstance(disk, ManagedDisk)
        while disk.provisioning_state.lower() in ("creating", "updating"):
            await asyncio.sleep(self.settings.poll_interval)
            found = await self._arm(self.compute.get_disk(rg, name))
            if found is None:
                raise AzureNotFound(f"replica disk {rg}/{name} disappeared while created")
            disk = found
        if disk.tags.get(ROLE) != REPLICA:
            raise NotAReplica(
                f"disk {rg}/{name} exists but is not tagged {ROLE}={REPLICA}: not written"
            )
        if disk.size_bytes < self.upload_bytes:
            raise NotAReplica(
                f"replica disk {rg}/{name} holds {disk.size_bytes} bytes, "
                f"{self.upload_bytes} needed (resize it first)"
            )
        self.state = replace(self.state, disk_created=True, disk_pending=None)
        return disk  # type: ignore[no-any-return]

    # -- access ---------------------------------------------------------------------

    async def _revoke(self) -> None:
        try:
            handle = await self._arm(
                self.compute.begin_revoke_access(
                    self.resource_group, self.disk_name, snapshot=False
                )
            )
            await self._arm(self.compute.wait(handle))
        except AzureNotFound:
            pass
        self.state = replace(self.state, sas_open=False)
        log.info("replica %s: write access revoked", self.disk_name)

    @contextlib.asynccontextmanager
    async def open_cycle(self) -> AsyncIterator[SinkCycle]:
        """A cycle with a Write SAS on the replica; the SAS is revoked when the block ends,
        however it ends (a failed write, a failed verification, a cancellation)."""
        if self._cycle is not None and not self._cycle.closed:
            raise CycleStillOpen(f"replica {self.disk_name} has a cycle open already")
        if not self.state.disk_created:
            await self.ensure_disk()
        self.arm_calls = 0
        session = self._session or aiohttp.ClientSession()
        report = SinkReport(self.disk_name)
        cycle: SinkCycle | None = None
        try:
            self.state = replace(self.state, sas_open=True)
            handle = await self._arm(
                self.compute.begin_grant_access(
                    self.resource_group,
                    self.disk_name,
                    snapshot=False,
                    write=True,
                    seconds=self.settings.sas_seconds,
                )
            )
            status = await self._arm(self.compute.wait(handle))
            if not status.result:
                raise AzureConflict(f"write access to {self.disk_name} was granted without a SAS")
            blob = PageBlob(
                session,
                str(status.result),
                self.disk_name,
                counts=report.blob,
                ssl_context=ssl.create_default_context(cafile=self.settings.ca_file),
                retries=self.settings.blob_retries,
                max_inline_wait=self.settings.max_inline_wait,
                timeout=self.settings.request_timeout,
            )
            # The footer Azure expects of an uploaded fixed VHD (same bytes every cycle).
            unique = uuid.uuid5(uuid.NAMESPACE_URL, f"failback:{self.disk_id}").bytes
            footer_at = self.upload_bytes - VHD_FOOTER
            footer = vhd_footer(footer_at, unique)
            await blob.write(footer_at, footer)
            # Read back like every write: a point must never hold a damaged footer.
            stored = await blob.read(footer_at, VHD_FOOTER)
            if stored != footer:
                raise WriteVerificationFailed(
                    self.disk_name,
                    footer_at,
                    VHD_FOOTER,
                    xxhash.xxh3_64_intdigest(footer),
                    xxhash.xxh3_64_intdigest(stored),
                )
            cycle = self._cycle = SinkCycle(self, blob, report)
            log.info("replica %s: cycle opened (write access granted)", self.disk_name)
            yield cycle
        finally:
            try:
                await self._revoke()
            except Exception as err:  # never mask the cycle's own error; sas_open stays
                log.warning("revoking write access to %s failed: %s", self.disk_name, err)
            finally:
                if cycle is not None:
                    cycle.closed = True
                report.arm_calls = self.arm_calls
                if self._session is None:
                    await session.close()

    # -- points ---------------------------------------------------------------------

    async def _begin_snapshot(
        self, name: str, disk: ManagedDisk, tags: Mapping[str, str]
    ) -> OperationHandle:
        """One snapshot write, paced; a throttle asking for a short wait is waited once."""
        settings = self.settings
        handle = await paced(
            self._pacer,
            lambda: self._arm(
                self.compute.begin_snapshot_create(self.resource_group, name, disk, tags)
            ),
            what=f"snapshot of replica {self.disk_name}",
            limit=f"{settings.snapshots_per_window} per {settings.snapshot_window:g} s",
            max_inline_wait=settings.max_inline_wait,
        )
        assert isinstance(handle, OperationHandle)
        return handle

    async def commit_point(
        self, point_id: str, source_time: dt.datetime, app_consistent: bool
    ) -> SinkPoint:
        """The point ``point_id``: an incremental snapshot of the replica as written so far.
        Resumable: a snapshot of that name (from before a crash) is reused, never taken
        twice; ``state.snapshot_pending`` resumes one being created."""
        if self._cycle is not None and not self._cycle.closed:
            raise CycleStillOpen(
                f"replica {self.disk_name}: leave the cycle (revoke its SAS) before a point"
            )
        if source_time.tzinfo is None:
            raise ValueError("source_time must be timezone-aware")
        known = next((p for p in self.state.points if p.point_id == point_id), None)
        if known is not None:
            if await self._arm(self.compute.get_snapshot(self.resource_group, known.snapshot)):
                return known
            # Taking it again would capture later writes under the old point's name.
            raise PointSnapshotFailed(
                f"point {point_id} was committed, but its snapshot {known.snapshot} is gone"
            )
        newest = self.state.points[-1] if self.state.points else None
        if newest is not None and source_time < newest.source_time:
            raise PointOrderError(
                f"point {point_id} at {source_time.isoformat()} is older than point "
                f"{newest.point_id} at {newest.source_time.isoformat()}"
            )
        if self.state.sas_open:
            await self._revoke()  # a cycle interrupted by a crash left it open
        name = self.snapshot_name(point_id)
        rg = self.resource_group
        handle = self.state.snapshot_pending
        snap = await self._arm(self.compute.get_snapshot(rg, name))
        if snap is not None and snap.provisioning_state.lower() == "failed":
            log.warning("point snapshot %s had failed; taking it again", name)
            gone = await self._arm(self.compute.begin_snapshot_delete(rg, name))
            await self._arm(self.compute.wait(gone))
            snap, handle = None, None
        if snap is None:
            disk = await self.ensure_disk()
            if disk.disk_state.lower() == "readytoupload":
                # Never written (no cycle yet): an empty cycle writes the VHD footer and
                # ends the upload, so that the disk can be snapshotted.
                async with self.open_cycle():
                    pass
                disk = await self.ensure_disk()
            tags = {
                **self.tags,
                ROLE: RECOVERY_POINT,
                TAG_REPLICA: self.disk_name,
                TAG_POINT: point_id,
                TAG_SOURCE_TIME: source_time.isoformat(),
                TAG_APP_CONSISTENT: "true" if app_consistent else "false",
                TAG_SEQ: str(self.state.applied_seq),
            }
            handle = await self._begin_snapshot(name, disk, tags)
            self.state = replace(self.state, snapshot_pending=handle)
            log.info("point %s of replica %s: snapshot %s started", point_id, self.disk_name, name)
        if handle is not None and handle.name == name:
            await self._arm(self.compute.wait(handle))
        while True:
            snap = await self._arm(self.compute.get_snapshot(rg, name))
            if snap is None:
                raise PointSnapshotFailed(f"point snapshot {name} disappeared")
            state = snap.provisioning_state.lower()
            if state == "succeeded":
                break
            if state in ("failed", "canceled", "deleting"):
                raise PointSnapshotFailed(f"point snapshot {name} is {state}")
            await asyncio.sleep(self.settings.poll_interval)
        assert isinstance(snap, Snapshot)
        point = _point_from_snapshot(snap)
        if point is None or point.point_id != point_id:
            raise PointSnapshotFailed(f"snapshot {name} is not the snapshot of point {point_id}")
        points = sorted(
            [p for p in self.state.points if p.point_id != point_id] + [point],
            key=lambda p: (p.source_time, p.seq),
        )
        self.state = replace(self.state, points=tuple(points), snapshot_pending=None)
        return point

    async def points(self) -> list[SinkPoint]:
        """The recovery points in Azure (the tagged, finished snapshots), oldest first;
        ``state.points`` is brought in line with them."""
        found = await self._arm(
            self.compute.list_snapshots(
                self.resource_group, {ROLE: RECOVERY_POINT, TAG_REPLICA: self.disk_name}
            )
        )
        points = [
            p
            for s in found
            if s.provisioning_state.lower() == "succeeded"
            and (p := _point_from_snapshot(s)) is not None
        ]
        points.sort(key=lambda p: (p.source_time, p.seq))
        self.state = replace(self.state, points=tuple(points))
        return points

    async def prune(
        self,
        retention: dt.timedelta,
        now_source_time: dt.datetime,
        *,
        keep_app_consistent_every: dt.timedelta | None = None,
    ) -> list[SinkPoint]:
        """Delete the points older than ``retention`` before ``now_source_time`` (never
        the newest). With ``keep_app_consistent_every``, the newest app-consistent point of
        each such interval is kept past retention. Never more than ``max_points`` stay
        (oldest go first) and at most ``max_deletes_per_prune`` deletes are sent. Returns
        the points deleted."""
        points = await self.points()
        if not points:
            return []
        horizon = now_source_time - retention
        keep = {points[-1].snapshot}
        keep.update(p.snapshot for p in points if p.source_time >= horizon)
        if keep_app_consistent_every is not None and keep_app_consistent_every.total_seconds() > 0:
            buckets: dict[int, SinkPoint] = {}
            step = keep_app_consistent_every.total_seconds()
            for p in points:
                if p.app_consistent and p.source_time < horizon:
                    buckets[int(p.source_time.timestamp() // step)] = p  # the newest wins
            keep.update(p.snapshot for p in buckets.values())
        kept = [p for p in points if p.snapshot in keep]
        while len(kept) > max(1, self.settings.max_points):
            keep.discard(kept.pop(0).snapshot)
        doomed = [p for p in points if p.snapshot not in keep][
            : self.settings.max_deletes_per_prune
        ]
        deleted = []
        for p in doomed:
            try:
                handle = await self._arm(
                    self.compute.begin_snapshot_delete(self.resource_group, p.snapshot)
                )
                await self._arm(self.compute.wait(handle))
            except AzureNotFound:
                pass
            deleted.append(p)
            log.info("point %s of replica %s pruned", p.point_id, self.disk_name)
        gone = {p.snapshot for p in deleted}
        self.state = replace(
            self.state, points=tuple(p for p in self.state.points if p.snapshot not in gone)
        )
        return deleted
