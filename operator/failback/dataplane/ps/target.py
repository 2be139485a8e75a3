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

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from failback.dataplane.journal import Batch
from failback.dataplane.mt.wire import encode_batch, encode_body
from failback.dataplane.ps.mtclient import (
    MasterTargetClient,
    MasterTargetRefused,
    MasterTargetUnreachable,
)


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

    def cycle(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a cycle's batches are sent (e.g. a write SAS)."""
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
    async def cycle(self) -> AsyncIterator[None]:
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
