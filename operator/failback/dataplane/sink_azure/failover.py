"""Failover to Azure from replica disks: a VM that boots from a recovery point.

::

    failover_to_azure(compute, sinks, vm_name=, subnet_id=, vm_size=, point_id=, state=)

1. Disks: for each sink (the first is the OS disk), a managed disk ``<vm>-disk<i>``
   copied from the point's snapshot (``createOption: Copy``), tagged with the point. For
   the newest point, when the replica holds exactly that point (nothing applied since, no
   SAS open) and ``use_replica`` is set, the replica disk itself is attached instead (no
   copy; the replica is then the VM's and reverse replication of it ends).
2. VM: created with the OS disk attached (``createOption: Attach``; no image, no OS
   profile) and the other disks at LUN 0, 1, ...; a VM that exists already and is not
   running is started.

Idempotent and resumable: every name is deterministic, an existing disk of the right point
is reused (one of another point is refused), and every long-running operation's
continuation token is kept in ``FailoverState.pending`` before it is waited for, so a
restarted caller resumes it without a second write.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from failback.dataplane.sink_azure.sink import (
    ManagedDiskSink,
    SinkPoint,
    handle_from_dict,
    handle_to_dict,
)
from failback.domain.replicas import ROLE, TAG_POINT
from failback.errors import Permanent
from failback.ports.azure import (
    AzureCompute,
    AzureConflict,
    AzureNotFound,
    ManagedDisk,
    OperationHandle,
    PowerState,
    VirtualMachine,
    VMDeployment,
)

log = logging.getLogger(__name__)

FAILOVER = "failover"


class NoSuchPoint(Permanent):
    """The chosen point has no snapshot on one of the disks (never taken, or pruned)."""


@dataclass
class FailoverState:
    """Operations under way, by resource name (persist it between passes)."""

    pending: dict[str, OperationHandle] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"pending": {k: handle_to_dict(v) for k, v in self.pending.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailoverState:
        pending = {}
        for name, raw in (data.get("pending") or {}).items():
            handle = handle_from_dict(raw)
            if handle is not None:
                pending[str(name)] = handle
        return cls(pending)


@dataclass(frozen=True)
class FailoverResult:
    vm: VirtualMachine
    disks: tuple[ManagedDisk, ...]
    """OS disk first."""
    point: SinkPoint
    used_replica: bool


def _find(points: Sequence[SinkPoint], point_id: str | None) -> SinkPoint | None:
    if not points:
        return None
    if point_id is None:
        return points[-1]
    return next((p for p in points if p.point_id == point_id), None)


async def _run(
    compute: AzureCompute,
    state: FailoverState,
    name: str,
    begin: Callable[[], Awaitable[OperationHandle]],
) -> None:
    """Start an operation (unless one is pending for ``name``: resume it) and wait for it;
    the token is in ``state`` while it runs."""
    handle = state.pending.get(name)
    if handle is None:
        handle = await begin()
        state.pending[name] = handle
    await compute.wait(handle)
    del state.pending[name]


async def failover_to_azure(
    compute: AzureCompute,
    sinks: Sequence[ManagedDiskSink],
    *,
    vm_name: str,
    vm_size: str,
    subnet_id: str,
    point_id: str | None = None,
    resource_group: str | None = None,
    os_type: str = "Linux",
    tags: Mapping[str, str] | None = None,
    use_replica: bool = True,
    state: FailoverState | None = None,
) -> FailoverResult:
    """Disks from point ``point_id`` (None: the newest point every disk has) and a running
    VM booting from them. Call again with the same ``state`` after any failure."""
    if not sinks:
        raise ValueError("a failover needs at least the OS disk")
    state = state if state is not None else FailoverState()
    rg = resource_group or sinks[0].resource_group
    extra = dict(tags or {})
    chosen: list[SinkPoint] = []
    for sink in sinks:
        point = _find(await sink.points(), point_id)
        if point is None:
            raise NoSuchPoint(
                f"replica {sink.disk_name} has no point {point_id or '(none at all)'}"
            )
        chosen.append(point)
    if point_id is None and len({p.point_id for p in chosen}) != 1:
        raise NoSuchPoint(
            "the replicas' newest points differ ("
            + ", ".join(f"{s.disk_name}: {p.point_id}" for s, p in zip(sinks, chosen, strict=True))
            + "); name the point"
        )
    point = chosen[0]
    newest = all(
        p.point_id == point.point_id and s.state.points and s.state.points[-1] == p
        for s, p in zip(sinks, chosen, strict=True)
    )
    replica_ok = (
        use_replica
        and newest
        and all(
            s.state.applied_seq == p.seq and not s.state.sas_open
            for s, p in zip(sinks, chosen, strict=True)
        )
    )
    disks: list[ManagedDisk] = []
    for i, (sink, p) in enumerate(zip(sinks, chosen, strict=True)):
        if replica_ok:
            found = await compute.get_disk(sink.resource_group, sink.disk_name)
            if found is None:
                raise AzureNotFound(f"replica disk {sink.disk_name} is gone")
            disks.append(found)
            continue
        name = f"{vm_name}-disk{i}"[:80]
        disk = await compute.get_disk(rg, name)
        if disk is not None and disk.tags.get(TAG_POINT) != p.point_id:
            raise AzureConflict(
                f"disk {rg}/{name} exists for point {disk.tags.get(TAG_POINT)!r}, "
                f"not {p.point_id!r}: delete it to fail over to another point"
            )
        if disk is None or name in state.pending:
            snap = await compute.get_snapshot(sink.resource_group, p.snapshot)
            if snap is None:
                raise NoSuchPoint(f"the snapshot {p.snapshot} of point {p.point_id} is gone")
            disk_tags = {**extra, ROLE: FAILOVER, TAG_POINT: p.point_id}
            begin = functools.partial(
                compute.begin_disk_create_from_snapshot,
                rg,
                name,
                snap,
                disk_tags,
                os_type if i == 0 else None,
            )
            await _run(compute, state, name, begin)
            disk = await compute.get_disk(rg, name)
            if disk is None:
                raise AzureConflict(f"disk {rg}/{name} was not created; try again")
        disks.append(disk)
        log.info("failover %s: disk %s from point %s", vm_name, name, p.point_id)
    vm = await compute.get_vm(rg, vm_name)
    if vm is None or vm_name in state.pending:
        deployment = VMDeployment.from_disks(
            resource_group=rg,
            name=vm_name,
            location=disks[0].location,
            vm_size=vm_size,
            subnet_id=subnet_id,
            os_disk_id=disks[0].id,
            data_disk_ids=tuple(d.id for d in disks[1:]),
            os_type=os_type,
            tags={**extra, ROLE: FAILOVER, TAG_POINT: point.point_id},
        )
        await _run(compute, state, vm_name, lambda: compute.begin_vm_create(deployment))
        vm = await compute.get_vm(rg, vm_name)
        if vm is None:
            raise AzureConflict(f"VM {rg}/{vm_name} was not created; try again")
    elif vm.power_state not in (PowerState.RUNNING, PowerState.STARTING):
        await _run(compute, state, f"{vm_name}/start", lambda: compute.begin_start(rg, vm_name))
        vm = await compute.get_vm(rg, vm_name) or vm
    log.info(
        "failover %s: VM from point %s (%s)",
        vm_name,
        point.point_id,
        "replica disks" if replica_ok else "disks copied from the point's snapshots",
    )
    return FailoverResult(vm, tuple(disks), point, replica_ok)
