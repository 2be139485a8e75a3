"""One replication session: the cycles of one VM's (or replication group's) managed disks
into one consistency group of a master target.

A cycle, and what makes it safe to crash anywhere in it::

    1. ask the MT where the group is (lastDurableSeq, newest point)
    2. a cycle persisted as open whose point the MT holds: it committed before a crash,
       settle it (new base snapshots) and stop here
    3. the MT is not where this session left it (another point, batches nobody recorded,
       a new journal): roll the MT back to its newest point and make this cycle a full
       resync, so the disks converge whatever they hold
    4. snapshot every disk together (a resumed cycle reuses its snapshots: same names,
       checked by creation time), persist the cycle as open *before* any batch is sent
    5. read, batch, encode and compress in one task, send in another: a bounded queue
       between them keeps memory flat when the MT is slow (backpressure); batches the MT
       already made durable are read again but not sent (a resume resends at most the one
       batch that was in flight)
    6. commit the recovery point (a resend is harmless), then settle: the snapshots become
       the next base, the superseded ones are deleted, the state is persisted

Errors never end the session: it records them (``lastError``) and tries again after a
delay (Azure's Retry-After when there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from failback.api import format_time
from failback.dataplane import logs
from failback.dataplane.journal import Batch
from failback.dataplane.ps.model import (
    CycleSnapshot,
    OpenCycle,
    SessionSpec,
    SessionState,
    point_id,
)
from failback.dataplane.ps.store import StateStore
from failback.dataplane.ps.target import (
    Position,
    Prepared,
    Target,
    TargetRefused,
    TargetUnreachable,
)
from failback.dataplane.source_azure import (
    BaseSnapshot,
    DiskGroupSource,
    ManagedDiskSource,
    SourceSettings,
)
from failback.errors import Permanent, Retryable
from failback.ports.azure import AzureCompute, AzureRetryable

ComputeFactory = Callable[[str], Awaitable[AzureCompute]]

RETRY_BASE = 0.5
RETRY_CAP = 30.0
SEND_ATTEMPTS_ON_DAMAGE = 3


def batch_weight(batch: Batch) -> int:
    """What a batch holds in memory: its data, plus a little per extent."""
    return sum((e.length if e.data is not None else 0) + 64 for e in batch.extents)


def backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: 0.5, 1, 2... up to 30."""
    return min(RETRY_CAP, RETRY_BASE * float(1 << min(max(failures - 1, 0), 8)))


class CycleAbandoned(Exception):
    """The cycle cannot go on as it started (the MT moved, a snapshot changed): the next
    attempt starts over from the MT's state."""


class SessionStopped(Exception):
    """The group was released on the MT (failback): nothing more to send."""


@dataclass
class Progress:
    """The cycle under way, for status."""

    number: int = 0
    first_seq: int = 0
    skip_through: int = 0
    batches_sent: int = 0
    batches_skipped: int = 0
    bytes_sent: int = 0
    wire_bytes: int = 0
    started: float = 0.0
    modes: dict[str, str] = field(default_factory=dict)


@dataclass
class Counters:
    cycles: int = 0
    bytes_sent: int = 0
    wire_bytes: int = 0
    resends: int = 0
    recent: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time, wire bytes) of recent batches, for throughput."""

    def sent(self, raw: int, wire: int) -> None:
        now = time.monotonic()
        self.bytes_sent += raw
        self.wire_bytes += wire
        self.recent.append((now, wire))
        while self.recent and self.recent[0][0] < now - 60:
            self.recent.pop(0)

    def throughput(self) -> int:
        now = time.monotonic()
        return int(sum(b for t, b in self.recent if t >= now - 60) / 60)


class Session:
    def __init__(
        self,
        state: SessionState,
        *,
        store: StateStore,
        compute_for: ComputeFactory,
        target: Target,
        source_settings: SourceSettings,
        max_queue_bytes: int,
        log: logging.Logger,
    ) -> None:
        self.state = state
        self.store = store
        self.compute_for = compute_for
        self.target = target
        self.source_settings = source_settings
        self.max_queue_bytes = max_queue_bytes
        self.log = log
        self.phase = "Starting"
        self.progress = Progress()
        self.counters = Counters()
        self.queue_bytes = 0
        self.last_error: dict[str, Any] | None = None
        self.last_cycle: dict[str, Any] | None = None
        self.last_point: dict[str, Any] | None = None
        self.next_cycle_at: float | None = None
        self.created = dt.datetime.now(dt.UTC)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cleanup: asyncio.Task[None] | None = None

    @property
    def spec(self) -> SessionSpec:
        return self.state.spec

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"session {self.spec.key}")

    async def stop(self) -> None:
        if self._cleanup is not None and not self._cleanup.done():
            self._cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def update(self, spec: SessionSpec) -> None:
        """A change of ``paused`` or ``intervalSeconds``."""
        self._persist(replace(self.state, spec=spec))
        self._wake.set()

    def request_cycle(self, resync: str | None = None) -> None:
        """Run a cycle now (``resync``: as a full resync, for that reason)."""
        if resync is not None and self.state.resync is None:
            self._persist(replace(self.state, resync=resync))
        self._wake.set()

    def _persist(self, state: SessionState) -> None:
        self.store.save(state)
        self.state = state

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        failures = 0
        while True:
            if self.spec.paused:
                self.phase = "Paused"
                self.next_cycle_at = None
                await self._sleep(None)
                continue
            started = time.monotonic()
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except SessionStopped as exc:
                self._error("GroupReleased", str(exc))
                self.phase = "Released"
                await self._sleep(None)
                continue
            except Exception as exc:  # recorded, never fatal: a DR product keeps trying
                failures += 1
                delay = self._failed(exc, failures)
                self.phase = "Waiting"
                self.next_cycle_at = time.time() + delay
                await self._sleep(delay)
                continue
            failures = 0
            self.last_error = None
            self.phase = "Idle"
            wait = max(0.0, started + self.spec.interval_seconds - time.monotonic())
            self.next_cycle_at = time.time() + wait
            await self._sleep(wait)

    async def _sleep(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _failed(self, exc: Exception, failures: int) -> float:
        delay = backoff(failures)
        if isinstance(exc, AzureRetryable):
            delay = max(delay, float(exc.delay))
            code = "AzureThrottled" if "throttl" in type(exc).__name__.lower() else "AzureRetry"
        elif isinstance(exc, TargetUnreachable):
            code = "TargetUnreachable"
        elif isinstance(exc, TargetRefused):
            code = {
                "retention_volume_full": "RetentionVolumeFull",
                "sequence_gap": "SequenceGap",
            }.get(exc.code, "TargetRefused")
            if exc.code == "retention_volume_full":
                delay = max(delay, RETRY_CAP)
        elif isinstance(exc, CycleAbandoned):
            code, delay = "CycleAbandoned", RETRY_BASE
        elif isinstance(exc, Retryable):
            code = "Retryable"
        elif isinstance(exc, Permanent):
            code = "Permanent"
        else:
            code = "InternalError"
        self._error(code, f"{exc.__class__.__name__}: {exc}", retryIn=round(delay, 1))
        return delay

    def _error(self, code: str, message: str, **fields: Any) -> None:
        self.last_error = {
            "code": code,
            "message": message[:1024],
            "time": format_time(dt.datetime.now(dt.UTC)),
        }
        logs.event(
            self.log,
            logging.ERROR if code in ("RetentionVolumeFull", "InternalError") else logging.WARNING,
            "replication cycle failed",
            session=self.spec.key,
            code=code,
            error=message[:1024],
            **fields,
        )

    # ------------------------------------------------------------------ one cycle

    async def _cycle(self) -> None:
        spec = self.spec
        self.phase = "Checking"
        mt = await self.target.position()
        if mt.released:
            raise SessionStopped(f"{self.target.name} was released (failback)")
        compute = await self.compute_for(spec.subscription_id)
        sources = [
            ManagedDiskSource(
                compute,
                d.resource_group,
                d.name,
                disk_id=d.target_disk_id,
                state=self.state.disks.get(d.name),
                settings=self.source_settings,
            )
            for d in spec.disks
        ]
        opened = self.state.open
        if opened is not None and mt.newest_point == opened.point_id:
            await self._settle(sources, opened)
            return
        await self._reconcile_target(mt)
        opened = self.state.open
        mt = await self.target.position()
        group = DiskGroupSource(sources)
        self.phase = "Snapshotting"
        resync = opened.resync if opened is not None else self.state.resync
        async with group.open_cycle(resync=resync) as cycle:
            snapshots = {
                c.source.disk_name: CycleSnapshot(
                    c.snapshot.name, c.report.size_bytes, c.source_time
                )
                for c in cycle.cycles
            }
            if self.state.registered is None:
                self._persist(replace(self.state, registered=dt.datetime.now(dt.UTC)))
            if opened is None:
                number = self.state.counter + 1
                opened = OpenCycle(
                    number,
                    mt.last_durable_seq + 1,
                    point_id(number),
                    cycle.source_time,
                    snapshots,
                    resync,
                )
                self._persist(replace(self.state, open=opened))
            elif opened.snapshots != snapshots:
                self._persist(
                    replace(
                        self.state,
                        open=None,
                        resync=f"the snapshots of cycle {opened.number} changed while it was "
                        "interrupted: full resync",
                    )
                )
                raise CycleAbandoned(f"cycle {opened.number}: its snapshots changed")
            self.progress = Progress(
                number=opened.number,
                first_seq=opened.first_seq,
                skip_through=mt.last_durable_seq,
                started=time.monotonic(),
                modes={c.source.disk_name: str(c.mode) for c in cycle.cycles},
            )
            self.phase = "Copying"
            async with self.target.cycle():
                await self._stream(cycle.batches(opened.first_seq, self.source_settings), mt)
        self.phase = "Committing"
        await self._commit(opened)
        self.last_cycle = {
            "number": opened.number,
            "disks": [
                {
                    "name": r.disk,
                    "snapshot": r.snapshot,
                    "mode": str(r.mode),
                    "reason": r.reason,
                    "bytesChanged": r.bytes_changed,
                    "bytesCleared": r.bytes_cleared,
                    "bytesRead": r.bytes_read,
                }
                for r in cycle.reports
            ],
            "batchesSent": self.progress.batches_sent,
            "batchesSkipped": self.progress.batches_skipped,
            "wireBytes": self.progress.wire_bytes,
            "seconds": round(time.monotonic() - self.progress.started, 3),
        }
        logs.event(
            self.log,
            logging.INFO,
            "recovery point committed",
            session=self.spec.key,
            point=opened.point_id,
            sourceTime=format_time(opened.source_time),
            batches=self.progress.batches_sent,
            skipped=self.progress.batches_skipped,
        )
        await self._settle(sources, opened)

    async def _reconcile_target(self, mt: Position) -> None:
        """Make sure the target is where this session left it; if not, plan a full
        resync."""
        opened = self.state.open
        expected = self.state.last_point
        reason = None
        if mt.newest_point != expected:
            reason = (
                f"the target's newest point is {mt.newest_point or 'none'}, this "
                f"session last committed {expected or 'none'}: full resync"
            )
        elif opened is not None and mt.last_durable_seq < opened.first_seq - 1:
            reason = (
                f"the target holds batches up to {mt.last_durable_seq}, cycle "
                f"{opened.number} started at {opened.first_seq}: full resync"
            )
        elif opened is None and mt.cycle_open:
            reason = "the target holds batches no cycle of this session recorded"
        if reason is None:
            return
        logs.event(self.log, logging.WARNING, "target diverged", session=self.spec.key, why=reason)
        if mt.cycle_open and mt.newest_point is not None:
            await self.target.rollback(mt.newest_point)
        # Not a first copy into zeroed disks unless the target never got anything.
        needs_resync = mt.newest_point is not None or mt.last_durable_seq > 0
        self._persist(
            replace(
                self.state,
                open=None,
                last_point=mt.newest_point,
                resync=reason if needs_resync else None,
            )
        )

    async def _stream(self, batches: Any, mt: Position) -> None:
        """Three stages in three tasks, so reading, encoding (a worker thread: checksums are
        done, compression here) and sending overlap:

            read ──raw──► encode ──ready──► send

        The data of batches read and not yet acknowledged never exceeds
        ``max_queue_bytes`` (their encoded copies add at most as much again): when the
        target is slow the reader waits, so memory stays flat and RPO grows instead."""
        raw: asyncio.Queue[Batch | None] = asyncio.Queue()
        ready: asyncio.Queue[tuple[Prepared, int] | None] = asyncio.Queue()
        room = asyncio.Condition()
        skip_through = mt.last_durable_seq

        async def read() -> None:
            async for batch in batches:
                if batch.seq <= skip_through:
                    self.progress.batches_skipped += 1
                    continue
                weight = batch_weight(batch)
                async with room:
                    await room.wait_for(lambda n=weight: self._fits(n))  # type: ignore[misc]
                    self.queue_bytes += weight
                await raw.put(batch)
            await raw.put(None)

        async def encode() -> None:
            while (batch := await raw.get()) is not None:
                item = await asyncio.to_thread(self.target.prepare, batch)
                await ready.put((item, batch_weight(batch)))
            await ready.put(None)

        async def send() -> None:
            while (entry := await ready.get()) is not None:
                item, weight = entry
                await self._send(item)
                async with room:
                    self.queue_bytes -= weight
                    room.notify_all()

        tasks = [asyncio.create_task(stage()) for stage in (read, encode, send)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.queue_bytes = 0

    def _fits(self, size: int) -> bool:
        return self.queue_bytes == 0 or self.queue_bytes + size <= self.max_queue_bytes

    async def _send(self, item: Prepared) -> None:
        damaged = 0
        failures = 0
        while True:
            try:
                applied = await self.target.send(item)
            except TargetUnreachable as exc:
                failures += 1
                self._error("TargetUnreachable", str(exc), seq=item.seq)
                await asyncio.sleep(backoff(failures))
                continue
            except TargetRefused as exc:
                if exc.code == "group_released":
                    raise SessionStopped(str(exc)) from exc
                if exc.code in ("checksum_mismatch", "malformed_frame", "bad_compression"):
                    damaged += 1
                    if damaged < SEND_ATTEMPTS_ON_DAMAGE:
                        self.counters.resends += 1
                        continue
                if exc.code in ("io_error", "internal_error") and failures < 5:
                    failures += 1
                    await asyncio.sleep(backoff(failures))
                    continue
                raise
            break
        if not applied:
            # The target had made it durable before a crash cut its answer: a resend.
            self.counters.resends += 1
            logs.event(
                self.log,
                logging.INFO,
                "batch was already durable",
                session=self.spec.key,
                seq=item.seq,
            )
        self.progress.batches_sent += 1
        self.progress.bytes_sent += item.raw_bytes
        self.progress.wire_bytes += item.size
        self.counters.sent(item.raw_bytes, item.size)
        if self.last_error and self.last_error["code"] == "TargetUnreachable":
            self.last_error = None

    async def _commit(self, opened: OpenCycle) -> None:
        failures = 0
        while True:
            try:
                await self.target.commit(opened.point_id, opened.source_time, False)
                return
            except TargetUnreachable as exc:
                failures += 1
                self._error("TargetUnreachable", str(exc), point=opened.point_id)
                await asyncio.sleep(backoff(failures))

    async def _settle(self, sources: list[ManagedDiskSource], opened: OpenCycle) -> None:
        """The point is durable at the target: its snapshots become the bases (persisted
        at once), and the superseded snapshots are deleted in the background, off the
        path of the next cycle (a crash before that leaves them listed, deleted later)."""
        self.phase = "Settling"
        disks = dict(self.state.disks)
        for source in sources:
            snap = opened.snapshots[source.disk_name]
            base = BaseSnapshot(source.resource_group, snap.name, snap.size_bytes, snap.source_time)
            disks[source.disk_name] = source.advance(base, opened.number)
        self._persist(
            replace(
                self.state,
                counter=opened.number,
                last_point=opened.point_id,
                disks=disks,
                open=None,
                resync=None,
            )
        )
        self.counters.cycles += 1
        self.last_point = {"id": opened.point_id, "sourceTime": format_time(opened.source_time)}
        if self._cleanup is None or self._cleanup.done():
            self._cleanup = asyncio.create_task(self._delete_superseded(sources))

    async def _delete_superseded(self, sources: list[ManagedDiskSource]) -> None:
        for source in sources:
            before = set(source.state.superseded)
            try:
                left = set((await source.delete_superseded()).superseded)
            except Exception as exc:  # tried again after the next cycle
                self._error("CleanupFailed", f"{exc.__class__.__name__}: {exc}")
                continue
            current = self.state.disks.get(source.disk_name)
            if current is None or not before - left:
                continue
            kept = tuple(n for n in current.superseded if n not in before - left)
            disks = {**self.state.disks, source.disk_name: replace(current, superseded=kept)}
            self._persist(replace(self.state, disks=disks))

    # ------------------------------------------------------------------ status

    def rpo_source_time(self) -> dt.datetime | None:
        opened_time = None
        for disk in self.state.disks.values():
            if disk.base is not None:
                t = disk.base.source_time
                opened_time = t if opened_time is None else min(opened_time, t)
        return opened_time if self.state.last_point else None

    def status(self) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        rpo_time = self.rpo_source_time()
        progress = self.progress
        return {
            "namespace": self.spec.namespace,
            "name": self.spec.name,
            "spec": self.spec.to_dict(),
            "phase": self.phase,
            "cyclesCompleted": self.counters.cycles,
            "lastPoint": self.state.last_point,
            "rpoSourceTime": format_time(rpo_time) if rpo_time else None,
            # Negative when the source's clock is ahead of ours: reported as is (check NTP),
            # so RPO still grows visibly while replication is stuck.
            "rpoSeconds": round((now - rpo_time).total_seconds(), 3) if rpo_time else None,
            "resyncPending": self.state.resync,
            "cycle": (
                {
                    "number": progress.number,
                    "firstSeq": progress.first_seq,
                    "batchesSent": progress.batches_sent,
                    "batchesSkipped": progress.batches_skipped,
                    "bytesSent": progress.bytes_sent,
                    "wireBytes": progress.wire_bytes,
                    "modes": progress.modes,
                }
                if self.phase in ("Copying", "Committing", "Settling")
                else None
            ),
            "lastCycle": self.last_cycle,
            "queueBytes": self.queue_bytes,
            "bytesSent": self.counters.bytes_sent,
            "wireBytes": self.counters.wire_bytes,
            "throughputBytesPerSecond": self.counters.throughput(),
            "lastError": self.last_error,
            "nextCycleAt": (
                format_time(dt.datetime.fromtimestamp(self.next_cycle_at, dt.UTC))
                if self.next_cycle_at
                else None
            ),
        }
