"""The master target seam: its service's health endpoint, and its groups (registered on
their disks, their recovery points, rollback, release, deleted) over mutual TLS.

The contract is ``docs/master-target-api.md``; the adapters are
``failback.adapters.mastertarget.client`` (health) and ``.points`` (groups and points).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from failback.domain.mastertarget import ServiceProbe
from failback.domain.outcome import Outcome
from failback.domain.recoverypoints import GroupStatus, RecoveryPoint, Released, RolledBack
from failback.ports.tls import TLS_KEYS, TLSMaterial

__all__ = ["TLS_KEYS", "MasterTargetClient", "RecoveryPoints", "TLSMaterial"]


class MasterTargetClient(Protocol):
    """Asks a master target service how it is."""

    async def health(self, endpoint: str, tls: TLSMaterial) -> ServiceProbe:
        """One ``GET /v1/health`` over mutual TLS. Never raises for the network or the
        peer: a refused connection, a timeout, a certificate that does not verify or an
        answer that breaks the contract is a :class:`ServiceProbe` without a report, with
        the reason and a message saying what happened."""
        ...


class RecoveryPoints(Protocol):
    """A master target's consistency groups: registered on their disks, their points,
    rollback and release (DESIGN.md §2, steps 4 and 5), deleted after a committed failback.
    Every call is one request over mutual TLS and never raises for the network or the
    peer: it returns an :data:`~failback.domain.outcome.Outcome`, the answer, a ``Refused``
    (the MT said no: ``unknown_group``, ``unknown_point``, ``cycle_open``,
    ``group_released``, ``group_conflict``, ``disk_in_use``...) or an ``Unanswered``."""

    async def ensure_group(
        self, endpoint: str, tls: TLSMaterial, group: str, disks: Sequence[tuple[str, int]]
    ) -> Outcome[GroupStatus]:
        """``PUT /v1/groups/{group}``: register the group on ``disks`` (``(disk UUID,
        size in bytes)``, attached to the MT VM) and open its journal. Idempotent: the same
        disks again answer the group as it is, and take a released group back (reattach
        its disks first). ``Refused``: ``group_conflict`` (other disks), ``disk_in_use``
        (another group's), ``disk_not_found``, ``disk_too_small``, ``invalid_field``."""
        ...

    async def points(
        self, endpoint: str, tls: TLSMaterial, group: str
    ) -> Outcome[tuple[RecoveryPoint, ...]]:
        """``GET /v1/groups/{group}/points``: the durable points within retention, oldest
        first."""
        ...

    async def group(self, endpoint: str, tls: TLSMaterial, group: str) -> Outcome[GroupStatus]:
        """``GET /v1/groups/{group}``: where the group is (``last_durable_seq``,
        ``cycle_open``, active or released, newest and oldest point)."""
        ...

    async def rollback(
        self, endpoint: str, tls: TLSMaterial, group: str, point_id: str
    ) -> Outcome[RolledBack]:
        """``POST /v1/groups/{group}/rollback``: every disk of the group back to the point,
        durably; later points are discarded."""
        ...

    async def release(self, endpoint: str, tls: TLSMaterial, group: str) -> Outcome[Released]:
        """``POST /v1/groups/{group}/release``: close the group's journal and disks so
        vSphere can move them to the recovered VM. Idempotent; refused (``cycle_open``)
        while batches follow the newest point."""
        ...

    async def delete_group(self, endpoint: str, tls: TLSMaterial, group: str) -> Outcome[bool]:
        """``DELETE /v1/groups/{group}``: forget a released group and discard its journal
        (after a committed failback). ``True`` when this call deleted it, ``False`` when
        the MT has no such group (deleted before): done either way. ``Refused``:
        ``group_active`` (release it first)."""
        ...
