"""Where a session's batches come from: the seam between the replication loop and a
source of changed blocks.

A :class:`GroupSource` opens cycles over every disk of a VM (or replication group) at
once. What a session persists about it is plain JSON the source owns: its ``state``
(bases, change ids) and, per open cycle, an ``identity`` — enough to check that a resumed
cycle reads exactly the same snapshots, and to settle a cycle whose point the target
committed before a crash.

- :class:`AzureDisks`: managed disks through incremental snapshots (AzureToOnPrem).
- :class:`VSphereVM`: a VM's disks through a vSphere snapshot and changed areas
  (OnPremToAzure).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from failback.api import format_time, parse_time
from failback.dataplane.journal import Batch
from failback.dataplane.source_azure import (
    BaseSnapshot,
    DiskGroupSource,
    DiskState,
    ManagedDiskSource,
    SourceSettings,
)
from failback.dataplane.source_vsphere import (
    DatastoreFiles,
    VMSource,
    VMState,
)
from failback.dataplane.source_vsphere import (
    DiskState as VSphereDiskState,
)
from failback.dataplane.source_vsphere import (
    SourceSettings as VSphereSettings,
)
from failback.ports.azure import AzureCompute, AzureNotFound
from failback.ports.vsphere import VCenter

log = logging.getLogger(__name__)


@dataclass
class Cycle:
    """An open cycle, as the loop sees it."""

    identity: dict[str, Any]
    source_time: dt.datetime
    app_consistent: bool
    modes: dict[str, str]
    batches: Any
    """``batches(first_seq) -> AsyncIterator[Batch]``."""
    reports: Any
    """``() -> list[dict]``: per-disk figures once the cycle was read."""
    sizes: dict[str, int]
    """Each disk's size in bytes, by the disk id its extents carry."""


class GroupSource(Protocol):
    name: str

    def open_cycle(self, resync: str | None) -> contextlib.AbstractAsyncContextManager[Cycle]:
        """Snapshot every disk together and open a cycle on them; everything the cycle
        holds (SAS, snapshot) is released when the block ends, however it ends."""
        ...

    def settle(self, identity: dict[str, Any], number: int) -> dict[str, Any]:
        """The source state after cycle ``number`` (described by ``identity``) became
        durable at the target. No I/O: the session persists it at once."""
        ...

    async def cleanup(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """Slow housekeeping after a settle (deleting superseded snapshots), off the path
        of the next cycle. Returns how to fold what it did into the state persisted *by
        then* (later cycles may have moved it on), or None if nothing changed."""
        ...

    async def forget(self) -> list[str]:
        """Delete everything the session made at the source; what could not be."""
        ...

    def rpo_source_time(self) -> dt.datetime | None:
        """Source time of the newest settled cycle."""
        ...


# ---------------------------------------------------------------------- Azure


class AzureDisks:
    """Managed disks read through incremental snapshots (docs/source-azure.md)."""

    def __init__(
        self,
        compute: AzureCompute,
        disks: list[tuple[str, str, str]],
        state: dict[str, Any],
        settings: SourceSettings,
    ) -> None:
        """``disks``: (resource group, disk name, target disk id); ``state``: what
        :meth:`settle` returned last, by disk name."""
        self.name = "Azure managed disks"
        self.compute = compute
        self.sources = [
            ManagedDiskSource(
                compute,
                group,
                name,
                disk_id=target,
                state=DiskState.from_dict(state[name]) if name in state else None,
                settings=settings,
            )
            for group, name, target in disks
        ]

    @contextlib.asynccontextmanager
    async def open_cycle(self, resync: str | None) -> AsyncIterator[Cycle]:
        group = DiskGroupSource(self.sources)
        async with group.open_cycle(resync=resync) as cycle:
            identity = {
                c.source.disk_name: {
                    "name": c.snapshot.name,
                    "sizeBytes": c.report.size_bytes,
                    "sourceTime": format_time(c.source_time),
                }
                for c in cycle.cycles
            }
            settings = self.sources[0].settings

            def batches(first_seq: int) -> AsyncIterator[Batch]:
                return cycle.batches(first_seq, settings)

            def reports() -> list[dict[str, Any]]:
                return [
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
                ]

            yield Cycle(
                identity,
                cycle.source_time,
                False,  # Azure incremental snapshots are crash-consistent
                {c.source.disk_name: str(c.mode) for c in cycle.cycles},
                batches,
                reports,
                {c.source.disk_id: c.report.size_bytes for c in cycle.cycles},
            )

    def settle(self, identity: dict[str, Any], number: int) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for source in self.sources:
            snap = identity[source.disk_name]
            base = BaseSnapshot(
                source.resource_group,
                str(snap["name"]),
                int(snap["sizeBytes"]),
                parse_time(str(snap["sourceTime"])),
            )
            state[source.disk_name] = source.advance(base, number).to_dict()
        return state

    async def cleanup(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        deleted: set[str] = set()
        for source in self.sources:
            before = set(source.state.superseded)
            if before:
                left = set((await source.delete_superseded()).superseded)
                deleted |= before - left
        if not deleted:
            return None

        def fold(state: dict[str, Any]) -> dict[str, Any]:
            return {
                disk: {
                    **data,
                    "superseded": [n for n in data.get("superseded", ()) if n not in deleted],
                }
                for disk, data in state.items()
            }

        return fold

    async def forget(self) -> list[str]:
        left: list[str] = []
        for source in self.sources:
            names = set(source.state.superseded)
            if source.state.base is not None:
                names.add(source.state.base.name)
            for name in sorted(names):
                try:
                    await self.compute.wait(
                        await self.compute.begin_snapshot_delete(source.resource_group, name)
                    )
                except AzureNotFound:
                    pass
                except Exception as exc:
                    # A delete already under way (a cleanup) may refuse a second one.
                    with contextlib.suppress(Exception):
                        if await self.compute.get_snapshot(source.resource_group, name) is None:
                            continue
                    log.warning("deleting snapshot %s failed: %s", name, exc)
                    left.append(name)
        return left

    def rpo_source_time(self) -> dt.datetime | None:
        times = [s.state.base.source_time for s in self.sources if s.state.base is not None]
        return min(times) if len(times) == len(self.sources) else None


# ---------------------------------------------------------------------- vSphere


class VSphereVM:
    """A VM's disks through a vSphere snapshot and changed areas (docs/source-vsphere.md).

    The identity of a cycle is its snapshot (moref, creation time) and the change ids it
    reads up to; a resumed cycle reuses the snapshot while it exists."""

    def __init__(
        self,
        vcenter: VCenter,
        instance_uuid: str,
        files: DatastoreFiles,
        state: dict[str, Any],
        settings: VSphereSettings,
    ) -> None:
        self.name = f"vSphere VM {instance_uuid}"
        self.source = VMSource(
            vcenter,
            instance_uuid,
            files,
            state=VMState.from_dict(state) if state else None,
            settings=settings,
        )
        self._last_time: dt.datetime | None = (
            parse_time(str(state["sourceTime"])) if state.get("sourceTime") else None
        )

    @contextlib.asynccontextmanager
    async def open_cycle(self, resync: str | None) -> AsyncIterator[Cycle]:
        async with self.source.open_cycle(resync=resync) as cycle:
            # What this cycle reads up to is known now: the state after it is durable.
            after = VMState(
                cycle.number,
                {
                    c.source.disk_id: VSphereDiskState(
                        c.report.change_id_to, c.disk.capacity_bytes, c.disk.file_name
                    )
                    for c in cycle.cycles
                },
            )
            identity = {
                "snapshot": cycle.snapshot.moref,
                "created": format_time(cycle.source_time),
                "next": {**after.to_dict(), "sourceTime": format_time(cycle.source_time)},
            }

            def batches(first_seq: int) -> AsyncIterator[Batch]:
                return cycle.batches(first_seq)

            def reports() -> list[dict[str, Any]]:
                return [
                    {
                        "name": r.disk,
                        "snapshot": cycle.snapshot.moref,
                        "mode": str(r.mode),
                        "reason": r.reason,
                        "bytesChanged": r.bytes_changed,
                        "bytesCleared": r.bytes_cleared,
                        "bytesRead": r.bytes_read,
                    }
                    for r in cycle.reports
                ]

            yield Cycle(
                identity,
                cycle.source_time,
                cycle.app_consistent,
                {c.source.disk_id: str(c.mode) for c in cycle.cycles},
                batches,
                reports,
                {c.source.disk_id: c.disk.capacity_bytes for c in cycle.cycles},
            )

    def settle(self, identity: dict[str, Any], number: int) -> dict[str, Any]:
        nxt = identity.get("next")
        if not isinstance(nxt, dict):
            raise ValueError(f"cycle {number} of {self.name} was not read to its end")
        self._last_time = parse_time(str(nxt["sourceTime"]))
        return dict(nxt)

    async def cleanup(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        return None

    async def forget(self) -> list[str]:
        return []  # the replication snapshot lives only while a cycle reads

    def rpo_source_time(self) -> dt.datetime | None:
        return self._last_time
