"""MasterTarget: an on-premises master target VM and its service
(``crds/failback.io_mastertargets.yaml``).

It receives replicated data, writes the target disks (VMDKs attached to the MT VM) and
keeps the retention volume of recovery points (R-ARCH-4).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from failback.api import constants
from failback.api._codec import Encodable, decode
from failback.api.common import ObjectMeta, ObjectRef, OSType, VMInstance, parse_meta
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    find_condition,
)

KIND: Final = constants.MASTER_TARGET.kind
PLURAL: Final = constants.MASTER_TARGET.plural
SHORT_NAME: Final = constants.MASTER_TARGET.short_name

DISK_LIMIT: Final = 60
"""Disks a master target VM can have attached (R-PRE-18)."""

DEFAULT_RETENTION_VOLUME: Final[Mapping[OSType, str]] = {
    OSType.WINDOWS: "R:",
    OSType.LINUX: "/mnt/retention",
}
"""The retention volume when spec.retentionVolume is not set (R-PRE-5)."""

# ------------------------------------------------------------------ spec


@dataclass(frozen=True)
class MasterTargetSpec:
    vcenter_secret_ref: ObjectRef
    vm: VMInstance
    os_type: OSType
    endpoint: str
    """``https://host:port`` of the master target service."""
    tls_secret_ref: ObjectRef
    retention_volume: str | None = None
    """See :attr:`effective_retention_volume`."""
    allowed_datastores: tuple[str, ...] = ()
    """Datastores new disks may go to; every one the host sees when empty."""

    @property
    def effective_retention_volume(self) -> str:
        """spec.retentionVolume, or the default for the OS: ``R:`` or ``/mnt/retention``."""
        return self.retention_volume or DEFAULT_RETENTION_VOLUME[self.os_type]


# ------------------------------------------------------------------ status


class MasterTargetPhase(enum.StrEnum):
    """A human summary for ``kubectl get``; see :func:`derive_phase`."""

    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    UNREACHABLE = "Unreachable"


@dataclass(frozen=True)
class Datastore:
    """A datastore the master target's host can use (R-PRE-7)."""

    name: str
    type: str | None = None
    """VMFS, NFS, vSAN, vVol..."""
    capacity_bytes: int | None = None
    free_bytes: int | None = None
    accessible: bool | None = None


@dataclass(frozen=True)
class RetentionVolumeStatus(Encodable):
    """The retention volume as the master target service reports it (R-PRE-5)."""

    path: str | None = None
    file_system: str | None = None
    capacity_bytes: int | None = None
    free_bytes: int | None = None


@dataclass(frozen=True)
class MasterTargetStatus(Encodable):
    observed_generation: int | None = None
    phase: MasterTargetPhase | None = None
    version: str | None = None
    host: str | None = None
    """The ESXi host the MT VM runs on."""
    registered_datastores: tuple[str, ...] = ()
    """Datastores of the MT VM's disks at registration; a change means Storage vMotion."""
    datastores: tuple[Datastore, ...] = ()
    disks_in_use: int | None = None
    disk_limit: int | None = None
    retention_volume: RetentionVolumeStatus | None = None
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class MasterTarget:
    meta: ObjectMeta
    spec: MasterTargetSpec
    status: MasterTargetStatus


def parse(body: Mapping[str, Any]) -> MasterTarget:
    """A MasterTarget object; :class:`~failback.errors.SpecInvalid` names the first bad field."""
    spec = decode(MasterTargetSpec, body.get("spec"), "spec")
    status = decode(MasterTargetStatus, body.get("status") or {}, "status")
    return MasterTarget(parse_meta(body), spec, status)


# ------------------------------------------------------------------ conditions and phase

PREREQUISITES: Final[tuple[str, ...]] = (
    ConditionType.REFERENCES_RESOLVED,
    ConditionType.DISK_UUID_ENABLED,
    ConditionType.NO_STORAGE_VMOTION,
    ConditionType.RETENTION_VOLUME_VALID,
    ConditionType.VMWARE_TOOLS_RUNNING,
    ConditionType.VMFS_DATASTORE_ATTACHED,
    ConditionType.NO_SNAPSHOTS,
    ConditionType.SCSI_CONTROLLER_SUPPORTED,
    ConditionType.DISK_UUIDS_UNIQUE,
    ConditionType.LICENSE_ALLOWS_FAILBACK,
    ConditionType.DISK_CAPACITY_AVAILABLE,
    ConditionType.VERSION_COMPATIBLE,
    ConditionType.SERVICE_REACHABLE,
)
"""What ``Ready`` summarizes, in the order the checks are judged."""

CONDITION_TYPES: Final[tuple[str, ...]] = (ConditionType.READY, *PREREQUISITES)
"""Every condition type a MasterTarget reports."""


def derive_phase(conditions: Iterable[Condition]) -> MasterTargetPhase:
    """The printer-column phase, from Ready and ServiceReachable."""
    conditions = tuple(conditions)
    ready = find_condition(conditions, ConditionType.READY)
    service = find_condition(conditions, ConditionType.SERVICE_REACHABLE)
    if ready is None or ready.status == UNKNOWN:
        return MasterTargetPhase.PENDING
    if ready.status == TRUE:
        return MasterTargetPhase.READY
    if service is not None and service.status == FALSE:
        return MasterTargetPhase.UNREACHABLE
    return MasterTargetPhase.NOT_READY
