"""Replication sessions of a process server, as the operator sees them: the spec it sends
(``PUT /v1/sessions/{namespace}/{name}``) and the status it reads back
(``docs/processserver-api.md``, *Sessions*).

Pure models; the adapter ``failback.adapters.processserver.sessions`` parses answers into
them (strictly: a field outside the contract is a ``ContractError`` naming it) and sends
:meth:`AzureToOnPremSpec.to_json` / :meth:`OnPremToAzureSpec.to_json`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

# ------------------------------------------------------------------ the spec


class Direction(enum.StrEnum):
    AZURE_TO_ONPREM = "AzureToOnPrem"
    """Reprotect and failback: Azure managed disks → the MT's target disks."""
    ONPREM_TO_AZURE = "OnPremToAzure"
    """Reprotect after failback: a vSphere VM's disks → Azure replica managed disks."""


@dataclass(frozen=True)
class MasterTargetRef:
    endpoint: str
    """``https://host:port`` of the MT service, no path."""
    group: str
    """The MT's consistency group (``--group``) the session writes."""


@dataclass(frozen=True)
class SourceDisk:
    """AzureToOnPrem: one managed disk and the MT's target disk (its UUID) it replicates to."""

    resource_group: str
    name: str
    target_disk_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "resourceGroup": self.resource_group,
            "name": self.name,
            "targetDiskId": self.target_disk_id,
        }


@dataclass(frozen=True)
class AzureToOnPremSpec:
    """What to replicate from Azure into a master target group, and how often. Only
    ``paused`` and ``interval_seconds`` may change while the session exists."""

    subscription_id: str
    master_target: MasterTargetRef
    disks: tuple[SourceDisk, ...]
    interval_seconds: float = 300.0
    paused: bool = False
    vm_id: str | None = None
    """The Azure VM's resource ID: the PS lists it under ``agents`` once it read its disks
    (R-PRE-13)."""
    vm_ids: tuple[str, ...] = ()
    """A replication group's session: every member's resource ID."""

    direction: ClassVar[Direction] = Direction.AZURE_TO_ONPREM

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "subscriptionId": self.subscription_id,
            "masterTarget": {
                "endpoint": self.master_target.endpoint,
                "group": self.master_target.group,
            },
            "disks": [d.to_json() for d in self.disks],
            "intervalSeconds": self.interval_seconds,
            "paused": self.paused,
        }
        if self.vm_id is not None:
            body["vmId"] = self.vm_id
        if self.vm_ids:
            body["vmIds"] = list(self.vm_ids)
        return body


@dataclass(frozen=True)
class VCenterVM:
    server: str
    """The vCenter's ``host[:port]``: the PS's ``--vcenter-credentials`` must be for it."""
    vm_instance_uuid: str


@dataclass(frozen=True)
class ReplicaDisk:
    """OnPremToAzure: one vSphere disk (``backing.uuid``) and its Azure replica disk."""

    source_disk_uuid: str
    resource_group: str
    name: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sourceDiskUuid": self.source_disk_uuid,
            "resourceGroup": self.resource_group,
            "name": self.name,
        }


@dataclass(frozen=True)
class OnPremToAzureSpec:
    """What to replicate from a vSphere VM into Azure replica disks, and how often."""

    subscription_id: str
    vcenter: VCenterVM
    replicas: tuple[ReplicaDisk, ...]
    location: str
    """The Azure region of the replicas (``westeurope``)."""
    retention_seconds: float = 86_400.0
    """How long the per-cycle point snapshots are kept."""
    interval_seconds: float = 300.0
    paused: bool = False
    vm_id: str | None = None

    direction: ClassVar[Direction] = Direction.ONPREM_TO_AZURE

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "direction": str(self.direction),
            "subscriptionId": self.subscription_id,
            "vcenter": {
                "server": self.vcenter.server,
                "vmInstanceUuid": self.vcenter.vm_instance_uuid,
            },
            "replicas": [r.to_json() for r in self.replicas],
            "location": self.location,
            "retentionSeconds": self.retention_seconds,
            "intervalSeconds": self.interval_seconds,
            "paused": self.paused,
        }
        if self.vm_id is not None:
            body["vmId"] = self.vm_id
        return body


SessionSpec: TypeAlias = AzureToOnPremSpec | OnPremToAzureSpec


# ------------------------------------------------------------------ the status


class SessionPhase(enum.StrEnum):
    STARTING = "Starting"
    CHECKING = "Checking"
    """Asking the MT where the group is."""
    SNAPSHOTTING = "Snapshotting"
    COPYING = "Copying"
    COMMITTING = "Committing"
    SETTLING = "Settling"
    IDLE = "Idle"
    """Until the next cycle."""
    WAITING = "Waiting"
    """After an error, until ``next_cycle_at``."""
    PAUSED = "Paused"
    RELEASED = "Released"
    """The MT released the group for failback."""


class CycleMode(enum.StrEnum):
    INITIAL = "Initial"
    INCREMENTAL = "Incremental"
    FULL_RESYNC = "FullResync"


@dataclass(frozen=True)
class SessionError:
    """``lastError``: the last failure, cleared by the next good cycle."""

    code: str
    """``AzureThrottled``, ``TargetUnreachable``, ``RetentionVolumeFull``, ``Permanent``..."""
    message: str
    time: dt.datetime


@dataclass(frozen=True)
class CycleProgress:
    """``cycle``: the cycle under way (while Copying, Committing or Settling)."""

    number: int
    first_seq: int
    batches_sent: int
    batches_skipped: int
    """Already durable at the target (a resumed cycle)."""
    bytes_sent: int
    wire_bytes: int
    modes: Mapping[str, CycleMode] = field(default_factory=dict, hash=False)
    """Per disk."""


@dataclass(frozen=True)
class DiskCycleReport:
    name: str
    mode: CycleMode
    reason: str | None
    """Why this mode (a full resync's cause)."""
    bytes_changed: int
    bytes_cleared: int
    bytes_read: int


@dataclass(frozen=True)
class CycleSummary:
    """``lastCycle``: the last settled cycle."""

    number: int
    disks: tuple[DiskCycleReport, ...]
    batches_sent: int
    batches_skipped: int
    wire_bytes: int
    seconds: float


@dataclass(frozen=True)
class SessionStatus:
    """``GET /v1/sessions/{namespace}/{name}``."""

    namespace: str
    name: str
    phase: SessionPhase
    cycles_completed: int
    """Settled since the PS process started."""
    cycle_number: int
    """The last cycle this session settled (survives restarts)."""
    last_point: str | None
    """The id of the newest point this session committed (``<incarnation>-<cycle>``)."""
    rpo_source_time: dt.datetime | None
    rpo_seconds: float | None
    """Now minus ``rpo_source_time`` on the PS's clock (negative: Azure's clock is ahead)."""
    resync_pending: str | None
    """Why the next cycle is a full resync."""
    cycle: CycleProgress | None
    last_cycle: CycleSummary | None
    queue_bytes: int
    bytes_sent: int
    wire_bytes: int
    throughput_bytes_per_second: int
    last_error: SessionError | None
    next_cycle_at: dt.datetime | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


__all__ = [
    "AzureToOnPremSpec",
    "CycleMode",
    "CycleProgress",
    "CycleSummary",
    "Direction",
    "DiskCycleReport",
    "MasterTargetRef",
    "OnPremToAzureSpec",
    "ReplicaDisk",
    "SessionError",
    "SessionPhase",
    "SessionSpec",
    "SessionStatus",
    "SourceDisk",
    "VCenterVM",
]
