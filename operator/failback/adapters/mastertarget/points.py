"""The master target's group API over mutual TLS (``docs/master-target-api.md``): a group
registered on its disks, where it is, its recovery points, rollback to one, release of its
disks for failback (DESIGN.md §2, steps 4 and 5), and its journal discarded once the failback
is committed.

Implements ``ports.mastertarget.RecoveryPoints`` on the shared transport
:class:`~failback.adapters.mtls.MutualTLS`. Answers are parsed strictly: a field outside
the contract is an ``Unanswered(Failure.CONTRACT)`` whose message names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from failback.adapters.mtls import ContractError, Fields, MutualTLS
from failback.domain.outcome import Outcome, Refused
from failback.domain.recoverypoints import (
    GroupState,
    GroupStatus,
    RecoveryPoint,
    Released,
    RolledBack,
)
from failback.ports.tls import TLSMaterial

__all__ = [
    "PointsClient",
    "group_path",
    "parse_deleted",
    "parse_group",
    "parse_point",
    "parse_points",
    "parse_released",
    "parse_rolled_back",
]


def group_path(group: str, action: str = "") -> str:
    """``/v1/groups/{group}[/action]``, the group percent-encoded."""
    path = f"/v1/groups/{quote(group, safe='')}"
    return f"{path}/{action}" if action else path


def parse_point(f: Fields) -> RecoveryPoint:
    return RecoveryPoint(
        id=f.text("id"),
        source_time=f.time("sourceTime"),
        app_consistent=f.flag("appConsistent"),
        last_seq=f.integer("lastSeq"),
        disks=f.texts("disks"),
        restorable=f.flag("restorable"),
    )


def _point_or_none(f: Fields, key: str) -> RecoveryPoint | None:
    raw = f.object_or_none(key)
    return parse_point(raw) if raw is not None else None


def parse_points(data: Any) -> tuple[RecoveryPoint, ...]:
    """``GET /v1/groups/{group}/points``: ``{"group", "points": [...]}``, oldest first."""
    f = Fields(data)
    f.text("group")
    return tuple(parse_point(p) for p in f.objects("points"))


def parse_group(data: Any) -> GroupStatus:
    """``GET /v1/groups/{group}``."""
    f = Fields(data)
    return GroupStatus(
        name=f.text("name"),
        state=f.choice("state", GroupState),
        disks=f.texts("disks"),
        last_durable_seq=f.integer("lastDurableSeq"),
        cycle_open=f.flag("cycleOpen"),
        point_count=f.integer("pointCount"),
        newest_point=_point_or_none(f, "newestPoint"),
        oldest_point=_point_or_none(f, "oldestPoint"),
        rpo_source_time=f.time_or_none("rpoSourceTime"),
        journal_used_bytes=f.integer("journalUsedBytes"),
        journal_capacity_bytes=f.integer("journalCapacityBytes"),
        journal_available_bytes=f.integer("journalAvailableBytes"),
    )


def parse_rolled_back(data: Any) -> RolledBack:
    """``POST .../rollback``: ``{"group", "point", "lastDurableSeq"}``."""
    f = Fields(data)
    return RolledBack(
        group=f.text("group"),
        point=parse_point(f.object("point")),
        last_durable_seq=f.integer("lastDurableSeq"),
    )


def parse_deleted(data: Any) -> bool:
    """``DELETE /v1/groups/{group}``: ``{"group", "deleted": true}``."""
    f = Fields(data)
    f.text("group")
    if f.data.get("deleted") is not True:
        raise ContractError("deleted must be true")
    return True


def parse_released(data: Any) -> Released:
    """``POST .../release``: ``{"group", "released": true, "point"}``."""
    f = Fields(data)
    if f.data.get("released") is not True:
        raise ContractError("released must be true")
    return Released(group=f.text("group"), point=_point_or_none(f, "point"))


class PointsClient:
    """Implements ``ports.mastertarget.RecoveryPoints`` over ``mtls`` (shared with the
    health clients: one aiohttp session, one SSL context per TLS Secret)."""

    def __init__(self, mtls: MutualTLS) -> None:
        self._mtls = mtls

    async def points(
        self, endpoint: str, tls: TLSMaterial, group: str
    ) -> Outcome[tuple[RecoveryPoint, ...]]:
        return await self._mtls.request(
            "GET", endpoint, group_path(group, "points"), tls, parse_points
        )

    async def group(self, endpoint: str, tls: TLSMaterial, group: str) -> Outcome[GroupStatus]:
        return await self._mtls.request("GET", endpoint, group_path(group), tls, parse_group)

    async def ensure_group(
        self, endpoint: str, tls: TLSMaterial, group: str, disks: Sequence[tuple[str, int]]
    ) -> Outcome[GroupStatus]:
        body = {"disks": [{"id": disk_id, "sizeBytes": size} for disk_id, size in disks]}
        return await self._mtls.request("PUT", endpoint, group_path(group), tls, parse_group, body)

    async def delete_group(self, endpoint: str, tls: TLSMaterial, group: str) -> Outcome[bool]:
        answer = await self._mtls.request("DELETE", endpoint, group_path(group), tls, parse_deleted)
        if isinstance(answer, Refused) and answer.status == 404 and answer.code == "unknown_group":
            return False  # deleted before (or never registered): done all the same
        return answer

    async def rollback(
        self, endpoint: str, tls: TLSMaterial, group: str, point_id: str
    ) -> Outcome[RolledBack]:
        return await self._mtls.request(
            "POST",
            endpoint,
            group_path(group, "rollback"),
            tls,
            parse_rolled_back,
            {"pointId": point_id},
        )

    async def release(self, endpoint: str, tls: TLSMaterial, group: str) -> Outcome[Released]:
        return await self._mtls.request(
            "POST", endpoint, group_path(group, "release"), tls, parse_released
        )
