"""Where a session's batches go: the seam between the replication loop and a sink.

A :class:`Target` keeps a sequence of durable batches and a list of recovery points, and
says where it is (:class:`Position`) so a restarted session can resume from it. Forward
replication's target is a master target's consistency group (:class:`MasterTargetGroup`);
reverse replication's is a set of Azure replica disks.

Failures are :class:`TargetUnreachable` (no answer: retry the same call) or
:class:`TargetRefused` with a ``code`` the loop decides on (``sequence_gap``,
``retention_volume_full``, ``group_released``, ``checksum_mismatch``...).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from failback.dataplane.journal import Batch
from failback.dataplane.mt.wire import encode_batch, encode_body
from failback.dataplane.ps.mtclient import (
    MasterTargetClient,
    MasterTargetRefused,
    MasterTargetUnreachable,
)
from failback.dataplane.ps.store import atomic_write
from failback.dataplane.sink_azure import ManagedDiskSink, SinkCycle, SinkSettings, SinkState
from failback.ports.azure import AzureCompute


class TargetUnreachable(Exception):
    """The target did not answer; the same call may be retried."""


class TargetRefused(Exception):
    """The target answered with an error ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Position:
    """Where a target is: the last durable batch, its newest point, whether batches came
    after that point, whether it takes no more (released for failback)."""

    last_durable_seq: int
    newest_point: str | None
    cycle_open: bool = False
    released: bool = False


@dataclass(frozen=True)
class Prepared:
    """A batch made ready for the wire (encoded, maybe compressed) in a worker thread."""

    seq: int
    payload: Any
    size: int
    """Bytes it holds in the queue (and sends)."""
    raw_bytes: int
    """Data bytes of its extents."""


class Target(Protocol):
    name: str
    """What to call it in logs and errors."""

    async def position(self) -> Position: ...

    def prepare(self, batch: Batch) -> Prepared:
        """Runs in a worker thread: whatever CPU work sending needs."""
        ...

    def cycle(self, sizes: Mapping[str, int]) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a cycle's batches are sent (e.g. a write SAS); ``sizes``: the
        source disks' sizes by disk id."""
        ...

    async def send(self, item: Prepared) -> bool:
        """Make the batch durable; False if it was durable already (a resend)."""
        ...

    async def commit(self, point_id: str, source_time: dt.datetime, app_consistent: bool) -> None:
        """Make the point durable (a resend of the newest point is harmless)."""
        ...

    async def rollback(self, point_id: str) -> None: ...


def _mapped(exc: Exception) -> Exception:
    if isinstance(exc, MasterTargetUnreachable):
        return TargetUnreachable(str(exc))
    if isinstance(exc, MasterTargetRefused):
        return TargetRefused(exc.code, str(exc))
    return exc


class MasterTargetGroup:
    """A consistency group of a master target (docs/master-target-api.md)."""

    def __init__(
        self, client: MasterTargetClient, endpoint: str, group: str, compression_level: int
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.group = group
        self.compression_level = compression_level
        self.name = f"master target {endpoint} group {group}"

    async def position(self) -> Position:
        try:
            state = await self.client.group(self.endpoint, self.group)
        except (MasterTargetUnreachable, MasterTargetRefused) as exc:
            raise _mapped(exc) from exc
        return Position(
            state.last_durable_seq, state.newest_point, state.cycle_open, state.released
        )

    def prepare(self, batch: Batch) -> Prepared:
        body = encode_batch(batch.seq, batch.extents)
        raw = sum(e.length for e in batch.extents if e.data is not None)
        if self.compression_level > 0:
            wire, encoding = encode_body(body, self.compression_level)
            return Prepared(batch.seq, (wire, encoding), len(wire), raw)
        return Prepared(batch.seq, (body, None), len(body), raw)

    @contextlib.asynccontextmanager
    async def cycle(self, sizes: Mapping[str, int]) -> AsyncIterator[None]:
        yield

    async def send(self, item: Prepared) -> bool:
        body, encoding = item.payload
        try:
            answer = await self.client.send_batch(self.endpoint, self.group, body, encoding)
        except (MasterTargetUnreachable, MasterTargetRefused) as exc:
            raise _mapped(exc) from exc
        return answer.get("applied") is not False

    async def commit(self, point_id: str, source_time: dt.datetime, app_consistent: bool) -> None:
        try:
            await self.client.commit(
                self.endpoint, self.group, point_id, source_time, app_consistent
            )
        except (MasterTargetUnreachable, MasterTargetRefused) as exc:
            raise _mapped(exc) from exc

    async def rollback(self, point_id: str) -> None:
        try:
            await self.client.rollback(self.endpoint, self.group, point_id)
        except (MasterTargetUnreachable, MasterTargetRefused) as exc:
            raise _mapped(exc) from exc


class AzureReplicas:
    """OnPremToAzure: the Azure replica managed disks of a VM (docs/sink-azure.md), one
    :class:`~failback.dataplane.sink_azure.ManagedDiskSink` per source disk.

    Azure keeps no batch sequence, so this target persists its own position (the last
    batch every replica applied, the newest point) in ``state_file`` after each batch and
    each point: fsync'd before ``send`` returns, which is what makes a batch acknowledged.
    Writes are offset-addressed: a batch applied twice, or a newer cycle replayed over a
    partial one, converges, so :meth:`rollback` has nothing to undo."""

    def __init__(
        self,
        compute: AzureCompute,
        replicas: list[tuple[str, str, str]],
        *,
        location: str,
        retention: dt.timedelta,
        state_file: Path,
        settings: SinkSettings | None = None,
    ) -> None:
        """``replicas``: (source disk id, resource group, replica disk name)."""
        self.name = "Azure replica disks " + ", ".join(name for _, _, name in replicas)
        self.compute = compute
        self.replicas = replicas
        self.location = location
        self.retention = retention
        self.state_file = state_file
        self.settings = settings
        saved = json.loads(state_file.read_text()) if state_file.exists() else {}
        self.last_seq = int(saved.get("lastSeq", 0))
        self.newest_point: str | None = saved.get("newestPoint")
        self.point_seq = int(saved.get("pointSeq", 0))
        self.sink_states: dict[str, dict[str, Any]] = dict(saved.get("sinks") or {})
        self.sinks: dict[str, ManagedDiskSink] = {}
        self._cycles: dict[str, SinkCycle] = {}

    def _save(self) -> None:
        for disk_id, sink in self.sinks.items():
            self.sink_states[disk_id] = sink.state.to_dict()
        data = {
            "lastSeq": self.last_seq,
            "newestPoint": self.newest_point,
            "pointSeq": self.point_seq,
            "sinks": self.sink_states,
        }
        atomic_write(self.state_file, json.dumps(data, sort_keys=True).encode())

    async def position(self) -> Position:
        return Position(self.last_seq, self.newest_point, self.last_seq > self.point_seq)

    def prepare(self, batch: Batch) -> Prepared:
        raw = sum(e.length for e in batch.extents if e.data is not None)
        return Prepared(batch.seq, batch, raw, raw)

    async def _sinks(self, sizes: Mapping[str, int]) -> None:
        for disk_id, group, name in self.replicas:
            if disk_id in self.sinks:
                continue
            if disk_id not in sizes:
                raise TargetRefused(
                    "unknown_disk", f"the source has no disk {disk_id} (replica {name})"
                )
            saved = self.sink_states.get(disk_id)
            sink = ManagedDiskSink(
                self.compute,
                group,
                name,
                sizes[disk_id],
                location=self.location,
                disk_id=disk_id,
                state=SinkState.from_dict(saved) if saved else None,
                settings=self.settings,
            )
            await sink.ensure_disk()
            self.sinks[disk_id] = sink
        self._save()

    @contextlib.asynccontextmanager
    async def cycle(self, sizes: Mapping[str, int]) -> AsyncIterator[None]:
        await self._sinks(sizes)
        async with contextlib.AsyncExitStack() as stack:
            self._cycles = {
                disk_id: await stack.enter_async_context(sink.open_cycle())
                for disk_id, sink in self.sinks.items()
            }
            try:
                yield
            finally:
                self._cycles = {}
        self._save()

    async def send(self, item: Prepared) -> bool:
        batch: Batch = item.payload
        if batch.seq <= self.last_seq:
            return False
        unknown = {e.disk_id for e in batch.extents} - set(self._cycles)
        if unknown:
            raise TargetRefused("unknown_disk", f"no replica for disk(s) {sorted(unknown)}")
        # Every replica sees every batch (an empty one if it has no extent in it), so
        # each one's applied sequence moves with the group's.
        await asyncio.gather(
            *(
                cycle.apply(Batch(batch.seq, [e for e in batch.extents if e.disk_id == disk_id]))
                for disk_id, cycle in self._cycles.items()
            )
        )
        self.last_seq = batch.seq
        # fsync'd off the event loop: the reader and encoder keep going meanwhile.
        await asyncio.to_thread(self._save)
        return True

    async def commit(self, point_id: str, source_time: dt.datetime, app_consistent: bool) -> None:
        for sink in self.sinks.values():
            await sink.commit_point(point_id, source_time, app_consistent)
        self.newest_point, self.point_seq = point_id, self.last_seq
        self._save()
        for sink in self.sinks.values():
            await sink.prune(self.retention, source_time)
        self._save()

    async def rollback(self, point_id: str) -> None:
        self.point_seq = self.last_seq  # nothing to undo: the next cycle rewrites
        self._save()
