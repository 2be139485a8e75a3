"""The Azure side of reverse replication (on-premises → Azure), as the operator sees it.

The process server writes each on-premises disk into an Azure *replica* managed disk and
ends every cycle with an incremental snapshot of every replica, tagged as the cycle's
recovery point. These tags are the contract between the process server (which writes them,
``dataplane/sink_azure``) and the operator (which fails over to Azure from them): both
import them from here.

A failover to Azure builds, per disk, a new managed disk copied from the chosen point's
snapshot (:func:`failover_disk_name`), then boots the VM's own Azure instance from them.
Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from failback.domain.recoverypoints import RecoveryPoint

ROLE = "failback.io/role"
REPLICA = "replica"
"""On a replica disk (written through a write SAS by the process server)."""
RECOVERY_POINT = "recovery-point"
"""On a point snapshot of a replica."""
FAILOVER = "failover"
"""On a disk a failover to Azure made from a point's snapshot."""
TAG_REPLICA = "failback.io/replica"
"""On a point snapshot: the replica disk it is of."""
TAG_DISK_ID = "failback.io/disk-id"
"""On a replica disk: the journal's id of the source disk."""
TAG_POINT = "failback.io/point"
TAG_SOURCE_TIME = "failback.io/source-time"
TAG_APP_CONSISTENT = "failback.io/app-consistent"
TAG_SEQ = "failback.io/seq"
TAG_SOURCE_DISK = "failback.io/source-disk"
"""On a failover disk: the Azure disk it takes the place of."""
TAG_RUN = "failback.io/run"
"""On a failover disk: the plan run that made it (a run finds its own disks again)."""
TAG_VM = "failback.io/protectedvm"
"""On a failover disk: the ProtectedVM (``namespace/name``)."""
TAG_INDEX = "failback.io/index"
"""On a failover disk: its place in the VM (0 the OS disk, then data disks by LUN)."""

_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]")


def replica_name(azure_disk: str) -> str:
    """The replica into which the on-premises twin of ``azure_disk`` is replicated."""
    return f"{azure_disk}-reprotect"[:80]


def failover_disk_name(vm: str, index: int, point_id: str) -> str:
    """A deterministic Azure name (at most 80 characters) for disk ``index`` of ``vm``
    copied from point ``point_id``: a crashed failover finds the disks it made."""
    digest = hashlib.sha256(f"{vm}\0{index}\0{point_id}".encode()).hexdigest()[:10]
    head = _NAME_OK.sub("-", vm).strip("-.")[:60] or "vm"
    return f"{head}-fo{index}-{digest}"


@dataclass(frozen=True)
class PointSnapshot:
    """A snapshot as Azure lists it: its name, tags and whether it is finished."""

    name: str
    tags: Mapping[str, str]
    succeeded: bool


@dataclass(frozen=True)
class ReplicaPoint:
    """A recovery point of a VM's replicas, and the snapshot of each replica (in the order
    of the replicas)."""

    point: RecoveryPoint
    snapshots: tuple[str, ...]


def points_of(
    snapshots: Iterable[PointSnapshot], replicas: Sequence[str]
) -> tuple[ReplicaPoint, ...]:
    """The points every replica of ``replicas`` has a finished snapshot of, oldest first.

    A point missing on one replica (a cycle cut short, a snapshot pruned) is not a point:
    a VM cannot boot from half of one.
    """
    wanted = set(replicas)
    found: dict[str, dict[str, str]] = {}
    facts: dict[str, tuple[dt.datetime, bool, int]] = {}
    for snap in snapshots:
        tags = snap.tags
        replica = tags.get(TAG_REPLICA)
        point = tags.get(TAG_POINT)
        if not snap.succeeded or tags.get(ROLE) != RECOVERY_POINT or replica not in wanted:
            continue
        if point is None:
            continue
        try:
            when = dt.datetime.fromisoformat(tags[TAG_SOURCE_TIME])
            seq = int(tags.get(TAG_SEQ, "0"))
        except (KeyError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        found.setdefault(point, {})[str(replica)] = snap.name
        known = facts.get(point)
        app = tags.get(TAG_APP_CONSISTENT) == "true"
        # The oldest source time of the cut, as a point's own time is (a crash-safe bound).
        facts[point] = (
            min(when, known[0]) if known else when,
            app and (known is None or known[1]),
            seq,
        )
    points = [
        ReplicaPoint(
            RecoveryPoint(
                id=point,
                source_time=facts[point][0],
                app_consistent=facts[point][1],
                last_seq=facts[point][2],
                disks=tuple(replicas),
                restorable=True,
            ),
            tuple(by_replica[r] for r in replicas),
        )
        for point, by_replica in found.items()
        if set(by_replica) == wanted
    ]
    return tuple(sorted(points, key=lambda p: (p.point.source_time, p.point.id)))
