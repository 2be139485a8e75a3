"""One replication session: the cycles of one VM's (or replication group's) disks from a
source (:mod:`.sources`: Azure managed disks, or a vSphere VM) into a target
(:mod:`.target`: a master target's consistency group, or Azure replica disks).

A cycle, and what makes it safe to crash anywhere in it::

    1. ask the target where it is (lastDurableSeq, newest point)
    2. a cycle persisted as open whose point the target holds: it committed before a
       crash, settle it (new source bases) and stop here
    3. the target is not where this session left it (another point, batches nobody
       recorded, a new journal): roll it back to its newest point and make this cycle a
       full resync, so the disks converge whatever they hold
    4. snapshot every disk together (a resumed cycle reuses its snapshots, checked by
       identity; if they are gone, the target is rolled back to the last point and a new
       cycle starts), persist the cycle as open *before* any batch is sent
    5. read, encode and send in three tasks: a byte budget between them keeps memory flat
       when the target is slow (backpressure); batches the target already made durable are
       read again but not sent (a resume resends at most the one batch in flight)
    6. commit the recovery point (a resend is harmless), then settle: the source's new
       state is persisted, superseded snapshots are deleted in the background

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
from failback.dataplane.ps.model import OpenCycle, SessionSpec, SessionState, point_id
from failback.dataplane.ps.sources import GroupSource
from failback.dataplane.ps.store import StateStore
from failback.dataplane.ps.target import (
    Position,
    Prepared,
    Target,
    TargetRefused,
    TargetUnreachable,
)
from failback.errors import Permanent, Retryable
from failback.ports.azure import AzureRetryable

TargetFactory = Callable[[SessionState], Awaitable[Target]]
"""Builds the session's target (once, at its first cycle)."""
SourceFactory = Callable[[SessionState], Awaitable[GroupSource]]
"""Builds the session's source from its spec and persisted source state."""

RETRY_BASE = 0.5
RETRY_CAP = 30.0
SEND_ATTEMPTS_ON_DAMAGE = 3
CLEANUP_PATIENCE = 60.0
"""Seconds a DELETE waits for the session's snapshot cleanup under way."""


def batch_weight(batch: Batch) -> int:
    """What a batch holds in memory: its data (a cleared range holds none)."""
    return max(1, sum(e.length for e in batch.extents if e.data is not None))


def backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: 0.5, 1, 2... up to 30."""
    return min(RETRY_CAP, RETRY_BASE * float(1 << min(max(failures - 1, 0), 8)))


class CycleAbandoned(Exception):
    """The cycle cannot go on as it started (its snapshots are gone): the next attempt
    starts over from the target's state."""


class SessionStopped(Exception):
    """The target was released (the MT group, for failback): nothing more to send."""


@dataclass
class Progress:
    """The cycle under way, for status."""

    number: int = 0
    first_seq: int = 0
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
        source_for: SourceFactory,
        target_for: TargetFactory,
        max_queue_bytes: int,
        log: logging.Logger,
    ) -> None:
        self.state = state
        self.store = store
        self.source_for = source_for
        self.target_for = target_for
        self._target: Target | None = None
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
    def target(self) -> Target:
        if self._target is None:
            raise RuntimeError("the session's target is opened by its first cycle")
        return self._target

    @property
    def spec(self) -> SessionSpec:
        return self.state.spec

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"session {self.spec.key}")

    async def stop(self, *, finish_cleanup: bool = False) -> None:
        """Stop the session's loop. ``finish_cleanup``: let a snapshot cleanup under way end
        first (a DELETE does, so its own cleanup does not race it); a shutdown cancels it
        (it is done again after the restart)."""
        if self._cleanup is not None and not self._cleanup.done():
            if finish_cleanup:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._cleanup), CLEANUP_PATIENCE)
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
        self.phase = "Checking"
        if self._target is None:
            self._target = await self.target_for(self.state)
        position = await self.target.position()
        if position.released:
            raise SessionStopped(f"{self.target.name} was released (failback)")
        source = await self.source_for(self.state)
        opened = self.state.open
        if opened is not None and position.newest_point == opened.point_id:
            self._settle(source, opened)
            return
        await self._reconcile_target(position)
        opened = self.state.open
        position = await self.target.position()
        self.phase = "Snapshotting"
        resync = opened.resync if opened is not None else self.state.resync
        async with source.open_cycle(resync) as cycle:
            if self.state.registered is None:
                self._persist(replace(self.state, registered=dt.datetime.now(dt.UTC)))
            if opened is not None and opened.identity != cycle.identity:
                await self._abandon(opened, position)
                raise CycleAbandoned(
                    f"cycle {opened.number} cannot resume: what it read is gone "
                    f"({source.name}); a new cycle starts from the last point"
                )
            if opened is None:
                number = self.state.counter + 1
                opened = OpenCycle(
                    number,
                    position.last_durable_seq + 1,
                    point_id(self.state.incarnation, number),
                    cycle.source_time,
                    cycle.identity,
                    resync,
                    cycle.app_consistent,
                )
                self._persist(replace(self.state, open=opened))
            self.progress = Progress(
                number=opened.number,
                first_seq=opened.first_seq,
                started=time.monotonic(),
                modes=cycle.modes,
            )
            self.phase = "Copying"
            async with self.target.cycle(cycle.sizes):
                await self._stream(cycle.batches(opened.first_seq), position)
        self.phase = "Committing"
        await self._commit(opened)
        self.last_cycle = {
            "number": opened.number,
            "disks": cycle.reports(),
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
            appConsistent=opened.app_consistent,
            batches=self.progress.batches_sent,
            skipped=self.progress.batches_skipped,
        )
        self._settle(source, opened)

    async def _abandon(self, opened: OpenCycle, position: Position) -> None:
        """An open cycle whose snapshots are gone: bring the target back to the last point
        this session settled and start over from there (a full resync if there is none)."""
        last = self.state.last_point
        if last is not None and position.newest_point == last:
            await self.target.rollback(last)
            self._persist(replace(self.state, open=None))
            return
        self._persist(
            replace(
                self.state,
                open=None,
                resync=f"cycle {opened.number} was interrupted and its snapshots are gone, "
                "with no point to roll the target back to: full resync",
            )
        )

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
                last_point_time=None,
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
                await self.target.commit(opened.point_id, opened.source_time, opened.app_consistent)
                return
            except TargetUnreachable as exc:
                failures += 1
                self._error("TargetUnreachable", str(exc), point=opened.point_id)
                await asyncio.sleep(backoff(failures))

    def _settle(self, source: GroupSource, opened: OpenCycle) -> None:
        """The point is durable at the target: the source's new state is persisted at once;
        its slow housekeeping (deleting superseded snapshots) runs in the background, off
        the path of the next cycle (after a crash it is done after a later cycle)."""
        self.phase = "Settling"
        self._persist(
            replace(
                self.state,
                counter=opened.number,
                last_point=opened.point_id,
                last_point_time=opened.source_time,
                source=source.settle(opened.identity, opened.number),
                open=None,
                resync=None,
            )
        )
        self.counters.cycles += 1
        self.last_point = {"id": opened.point_id, "sourceTime": format_time(opened.source_time)}
        if self._cleanup is None or self._cleanup.done():
            self._cleanup = asyncio.create_task(self._housekeeping(source))

    async def _housekeeping(self, source: GroupSource) -> None:
        try:
            fold = await source.cleanup()
        except Exception as exc:  # tried again after the next cycle
            self._error("CleanupFailed", f"{exc.__class__.__name__}: {exc}")
            return
        if fold is not None:
            # Folded into the state as it is now: a cycle may have settled meanwhile, and
            # the state of the source this cleanup ran on is older than that.
            self._persist(replace(self.state, source=fold(self.state.source)))

    async def forget(self) -> list[str]:
        """Delete what the session made at its source (for DELETE)."""
        source = await self.source_for(self.state)
        return await source.forget()

    def rpo_source_time(self) -> dt.datetime | None:
        return self.state.last_point_time if self.state.last_point else None

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
            "cycleNumber": self.state.counter,
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
