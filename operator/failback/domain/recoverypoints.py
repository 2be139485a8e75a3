"""A master target's consistency groups and their recovery points, as the operator sees
them (``docs/master-target-api.md``: ``GET /v1/groups/{group}``, ``.../points``,
``.../rollback``, ``.../release``).

Pure models; the adapter ``failback.adapters.mastertarget.points`` parses answers into them
(strictly: a field outside the contract is a ``ContractError`` naming it).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class RecoveryPoint:
    """A durable, consistent cut across every disk of a group."""

    id: str
    source_time: dt.datetime
    """When the source snapshots were taken: RPO is measured from it, never the MT's clock."""
    app_consistent: bool
    last_seq: int
    """The last batch the point holds; after a rollback to it, batches continue from here."""
    disks: tuple[str, ...]
    restorable: bool
    """False when damage at rest between it and the newest point makes it unreachable."""


class GroupState(enum.StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    """Disks closed for vSphere to attach elsewhere; changes refused until a restart."""


@dataclass(frozen=True)
class GroupStatus:
    """``GET /v1/groups/{group}``."""

    name: str
    state: GroupState
    disks: tuple[str, ...]
    last_durable_seq: int
    cycle_open: bool
    """Batches were applied after the newest point (release is refused until rollback or
    commit)."""
    point_count: int
    newest_point: RecoveryPoint | None
    oldest_point: RecoveryPoint | None
    rpo_source_time: dt.datetime | None
    journal_used_bytes: int
    journal_capacity_bytes: int
    journal_available_bytes: int


@dataclass(frozen=True)
class RolledBack:
    """``POST /v1/groups/{group}/rollback``: every disk of the group holds ``point``."""

    group: str
    point: RecoveryPoint
    last_durable_seq: int


@dataclass(frozen=True)
class Released:
    """``POST /v1/groups/{group}/release``: the disks are closed, holding ``point``
    (``None`` for a group that never had one)."""

    group: str
    point: RecoveryPoint | None


__all__ = ["GroupState", "GroupStatus", "RecoveryPoint", "Released", "RolledBack"]
