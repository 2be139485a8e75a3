"""Which recovery point each VM of a failback uses (R-FO-1, R-FO-2). Pure.

The points come from the master targets (``RecoveryPoints.points``), one list per
consistency group: the VMs of one replication group share a group, so they share their
points and fail back to the *same* cut. VMs in different groups cannot share a cut; with
``multiVmConsistency`` they are aligned on time instead: every group takes its newest point
not newer than the newest point *every* group has, so no VM is ahead of another.

Criteria (``spec.failover.recoveryPoint.type``):

- ``Latest``: the newest point. A Planned failback chooses after its final sync, so this is
  the point taken once the Azure VM stopped (zero data loss).
- ``LatestProcessed``: the newest point already durable, without waiting for a sync.
- ``LatestCrashConsistent``: the newest point (every point is crash-consistent).
- ``LatestAppConsistent``: the newest app-consistent point.
- ``PointInTime``: the newest point whose source time is at or before ``time``.

A point damaged at rest (``restorable: false``) is never chosen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from failback.api.failbackplan import RecoveryPointType
from failback.domain.recoverypoints import RecoveryPoint


@dataclass(frozen=True)
class NoPoint:
    """No acceptable point for ``group``: the message says which criterion failed."""

    group: str
    message: str


def _eligible(
    points: Sequence[RecoveryPoint], kind: RecoveryPointType, time: dt.datetime | None
) -> list[RecoveryPoint]:
    usable = [p for p in points if p.restorable]
    if kind is RecoveryPointType.LATEST_APP_CONSISTENT:
        usable = [p for p in usable if p.app_consistent]
    if kind is RecoveryPointType.POINT_IN_TIME:
        if time is None:
            return []
        usable = [p for p in usable if p.source_time <= time]
    return sorted(usable, key=lambda p: (p.source_time, p.last_seq))


def _describe(kind: RecoveryPointType, time: dt.datetime | None) -> str:
    if kind is RecoveryPointType.POINT_IN_TIME:
        return f"no restorable point at or before {time.isoformat() if time else '(no time)'}"
    if kind is RecoveryPointType.LATEST_APP_CONSISTENT:
        return "no restorable app-consistent point"
    return "no restorable point"


def choose_points(
    groups: Mapping[str, Sequence[RecoveryPoint]],
    kind: RecoveryPointType,
    *,
    time: dt.datetime | None = None,
    multi_vm_consistency: bool = True,
) -> dict[str, RecoveryPoint] | NoPoint:
    """The point of every consistency group (by group name), or the first group with none."""
    candidates: dict[str, list[RecoveryPoint]] = {}
    for name in sorted(groups):
        eligible = _eligible(groups[name], kind, time)
        if not eligible:
            return NoPoint(name, f"group {name}: {_describe(kind, time)}")
        candidates[name] = eligible
    if not multi_vm_consistency or len(candidates) < 2:
        return {name: points[-1] for name, points in candidates.items()}
    cut = min(points[-1].source_time for points in candidates.values())
    chosen: dict[str, RecoveryPoint] = {}
    for name, points in candidates.items():
        aligned = [p for p in points if p.source_time <= cut]
        if not aligned:
            return NoPoint(
                name,
                f"group {name}: every point is newer than {cut.isoformat()}, the newest point "
                "of another group: multiVmConsistency cannot align them (wait for the next "
                "cycle of every group, or turn spec.failover.multiVmConsistency off)",
            )
        chosen[name] = aligned[-1]
    return chosen
