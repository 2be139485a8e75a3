"""ProtectedVM: one protected machine and how it replicates
(``crds/failback.io_protectedvms.yaml``).

The spec says *how* the machine is protected; the status says *where it runs* and *how
healthy its replication is*. With no FailbackPlan owning it, a ProtectedVM replicates from
its active site to the other one: that is reprotect (R-FLOW-1, R-FLOW-3).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from failback.api import constants
from failback.api._codec import Encodable, decode, json_name
from failback.api.common import (
    ObjectMeta,
    ObjectRef,
    OSType,
    Site,
    VMInstance,
    WorkloadIdentity,
    parse_meta,
)
from failback.api.conditions import (
    FALSE,
    TRUE,
    Condition,
    ConditionType,
    Reason,
    find_condition,
)
from failback.errors import SpecInvalid

KIND: Final = constants.PROTECTED_VM.kind
PLURAL: Final = constants.PROTECTED_VM.plural
SHORT_NAME: Final = constants.PROTECTED_VM.short_name

# ------------------------------------------------------------------ spec


class FailbackLocation(enum.StrEnum):
    """Where the machine comes back on-premises (R-LOC-1, R-LOC-2)."""

    AUTO = "Auto"
    """The original VM if it still exists (delta sync), else the alternate placement."""
    ORIGINAL = "Original"
    ALTERNATE = "Alternate"


class SourceType(enum.StrEnum):
    """What was protected originally. Physical servers come back as new VMs (R-LOC-3)."""

    VMWARE = "VMware"
    PHYSICAL = "Physical"


@dataclass(frozen=True)
class AzureSide:
    """The Azure VM and how the operator authenticates to Azure for it."""

    vm_id: str
    """Resource ID of the Azure VM; the identity of the protected machine."""
    credentials_secret_ref: ObjectRef | None = None
    """Secret with tenantId, clientId and clientSecret (or clientCertificate)."""
    workload_identity: WorkloadIdentity | None = None


@dataclass(frozen=True)
class NetworkMapping:
    """The port group one Azure NIC (in order) connects to."""

    port_group: str
    mac_address: str | None = None


@dataclass(frozen=True)
class AlternatePlacement:
    """Where a new VM is created (R-LOC-2, R-LOC-5). Exactly one of cluster or host."""

    datacenter: str
    datastore: str
    cluster: str | None = None
    host: str | None = None
    folder: str | None = None
    """Inventory path of the VM folder; the datacenter's VM folder when None."""
    networks: tuple[NetworkMapping, ...] = ()


@dataclass(frozen=True)
class OnPremSide:
    """The vCenter, and where the machine comes back."""

    vcenter_secret_ref: ObjectRef
    failback_location: FailbackLocation = FailbackLocation.AUTO
    original_vm: VMInstance | None = field(default=None, metadata=json_name("originalVM"))
    alternate_placement: AlternatePlacement | None = None


@dataclass(frozen=True)
class Policy:
    """The failback policy (R-POL-1); the defaults are the original product's."""

    rpo_threshold: dt.timedelta = dt.timedelta(minutes=15)
    """RPO above which RPOWithinThreshold turns False. Between 1m and 24h."""
    recovery_point_retention: dt.timedelta = dt.timedelta(hours=24)
    """How far back recovery points stay selectable. Between 1h and 72h."""
    app_consistent_frequency: dt.timedelta = dt.timedelta(minutes=60)
    """How often a point is app-consistent; 0 turns them off. Else between 30m and 12h."""


@dataclass(frozen=True)
class ProtectedVMSpec:
    azure: AzureSide
    on_prem: OnPremSide
    os_type: OSType
    master_target_ref: ObjectRef
    process_server_ref: ObjectRef
    source_type: SourceType = SourceType.VMWARE
    retention_volume: str | None = None
    """The master target's retention volume when None."""
    replication_group: str | None = None
    """Multi-VM consistency group (R-GRP-1)."""
    policy: Policy = field(default_factory=Policy)


# ------------------------------------------------------------------ status


class ProtectedVMPhase(enum.StrEnum):
    """A human summary for ``kubectl get``; see :func:`derive_phase`."""

    PENDING = "Pending"
    VALIDATING = "Validating"
    PROTECTING = "Protecting"
    PROTECTED = "Protected"
    UNPROTECTED = "Unprotected"
    FAILING_BACK = "FailingBack"
    DEGRADED = "Degraded"
    ERROR = "Error"


class Action(enum.StrEnum):
    """What a user (or a plan) may do with the machine now."""

    REPROTECT = "Reprotect"
    FAILBACK = "Failback"
    COMMIT = "Commit"
    CANCEL = "Cancel"
    CHANGE_RECOVERY_POINT = "ChangeRecoveryPoint"
    RESYNC = "Resync"


class LocationTarget(enum.StrEnum):
    ORIGINAL = "Original"
    ALTERNATE = "Alternate"


class SyncMode(enum.StrEnum):
    DELTA = "Delta"
    FULL = "Full"


class Direction(enum.StrEnum):
    AZURE_TO_ON_PREM = "AzureToOnPrem"
    ON_PREM_TO_AZURE = "OnPremToAzure"
    NONE = "None"


class ReplicationState(enum.StrEnum):
    NOT_STARTED = "NotStarted"
    INITIAL_SYNC = "InitialSync"
    REPLICATING = "Replicating"
    RESYNCHRONIZING = "Resynchronizing"
    PAUSED = "Paused"
    STOPPED = "Stopped"
    ERROR = "Error"


class OperationKind(enum.StrEnum):
    VSPHERE_TASK = "VSphereTask"
    AZURE_OPERATION = "AzureOperation"
    DATA_PLANE = "DataPlane"


@dataclass(frozen=True)
class Location:
    """Where the machine comes back, and why (R-LOC-1/2/3)."""

    target: LocationTarget | None = None
    sync: SyncMode | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TargetDisk:
    """One Azure disk and the on-premises disk file it replicates into (recorded before the
    file is moved to the master target, so a restart finds it again)."""

    source: str
    """The Azure managed disk's name (the OS disk first, then data disks by LUN)."""
    file: str
    """``[datastore] folder/name.vmdk``."""
    size_bytes: int
    uuid: str | None = None
    """The disk's UUID in vCenter (``backing.uuid``): how the master target finds it."""


@dataclass(frozen=True)
class Replication:
    direction: Direction | None = None
    state: ReplicationState | None = None
    bytes_total: int | None = None
    bytes_sent: int | None = None
    percent: int | None = None
    eta_seconds: int | None = None
    last_cycle_time: dt.datetime | None = None
    target_disks: tuple[TargetDisk, ...] = ()


@dataclass(frozen=True)
class RecoveryPoints:
    latest: dt.datetime | None = None
    latest_app_consistent: dt.datetime | None = None
    oldest: dt.datetime | None = None
    count: int | None = None


@dataclass(frozen=True)
class Operation:
    """An external operation in flight, stored before waiting so a restart resumes it."""

    name: str
    kind: OperationKind
    id: str
    """The vSphere task moref, Azure continuation token or data-plane session id."""
    started: dt.datetime


@dataclass(frozen=True)
class ProtectedVMStatus(Encodable):
    observed_generation: int | None = None
    phase: ProtectedVMPhase | None = None
    active_site: Site | None = None
    managed_by: str | None = None
    """The FailbackPlan that owns this VM, if any."""
    allowed_actions: tuple[Action, ...] = ()
    location: Location | None = None
    replication: Replication | None = None
    rpo_seconds: int | None = None
    recovery_points: RecoveryPoints | None = None
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class ProtectedVM:
    meta: ObjectMeta
    spec: ProtectedVMSpec
    status: ProtectedVMStatus


def parse(body: Mapping[str, Any]) -> ProtectedVM:
    """A ProtectedVM object; :class:`~failback.errors.SpecInvalid` names the first bad field."""
    spec = decode(ProtectedVMSpec, body.get("spec"), "spec")
    check_policy(spec.policy)
    status = decode(ProtectedVMStatus, body.get("status") or {}, "status")
    return ProtectedVM(parse_meta(body), spec, status)


def check_policy(policy: Policy) -> None:
    """The CRD's bounds on ``spec.policy``, with the CRD's messages."""
    minute, hour = dt.timedelta(minutes=1), dt.timedelta(hours=1)
    app = policy.app_consistent_frequency
    rules = (
        (
            "rpoThreshold",
            minute <= policy.rpo_threshold <= 24 * hour,
            "must be a duration like 15m, between 1m and 24h",
        ),
        (
            "recoveryPointRetention",
            hour <= policy.recovery_point_retention <= 72 * hour,
            "must be a duration like 24h, between 1h and 72h",
        ),
        (
            "appConsistentFrequency",
            not app or 30 * minute <= app <= 12 * hour,
            "must be 0s (off) or a duration like 60m, between 30m and 12h",
        ),
        (
            "appConsistentFrequency",
            not app or app <= policy.recovery_point_retention,
            "must not exceed spec.policy.recoveryPointRetention, "
            "or no app-consistent point would be kept",
        ),
    )
    for name, ok, message in rules:
        if not ok:
            raise SpecInvalid(f"spec.policy.{name}", message)


# ------------------------------------------------------------------ conditions and phase

PREREQUISITES: Final[tuple[str, ...]] = (
    ConditionType.REFERENCES_RESOLVED,
    ConditionType.VCENTER_PERMISSIONS,
    ConditionType.VCENTER_DISCOVERED,
    ConditionType.OS_MATCHES_MASTER_TARGET,
    ConditionType.REPLICATION_GROUP_CONSISTENT,
    ConditionType.RETENTION_VOLUME_AVAILABLE,
    ConditionType.LOCATION_RESOLVED,
    ConditionType.ORIGINAL_VM_NO_SNAPSHOTS,
    ConditionType.SOURCE_OS_SUPPORTED,
    ConditionType.DISK_UUIDS_UNIQUE,
    ConditionType.LICENSE_ALLOWS_FAILBACK,
    ConditionType.AGENT_REGISTERED,
)
"""The checks a ProtectedVM must pass before it replicates, in the order they are judged."""

CONDITION_TYPES: Final[tuple[str, ...]] = (
    ConditionType.READY,
    *PREREQUISITES,
    ConditionType.REPLICATION_HEALTHY,
    ConditionType.RPO_WITHIN_THRESHOLD,
)
"""Every condition type a ProtectedVM reports."""


def condition_types(spec: ProtectedVMSpec) -> tuple[str, ...]:
    """The condition types that apply to this VM.

    OriginalVMNoSnapshots only when it may fail back into its original VM;
    SourceOSSupported only for physical servers; ReplicationGroupConsistent only in a
    replication group; RetentionVolumeAvailable only with its own retention volume.
    """
    skip: set[str] = set()
    if spec.on_prem.original_vm is None or (
        spec.on_prem.failback_location == FailbackLocation.ALTERNATE
    ):
        skip.add(ConditionType.ORIGINAL_VM_NO_SNAPSHOTS)
    if spec.source_type != SourceType.PHYSICAL:
        skip.add(ConditionType.SOURCE_OS_SUPPORTED)
    if spec.replication_group is None:
        skip.add(ConditionType.REPLICATION_GROUP_CONSISTENT)
    if spec.retention_volume is None:
        skip.add(ConditionType.RETENTION_VOLUME_AVAILABLE)
    return tuple(t for t in CONDITION_TYPES if t not in skip)


def ready_inputs(spec: ProtectedVMSpec) -> tuple[str, ...]:
    """The conditions ``Ready`` summarizes: every applicable one but Ready and RPO."""
    summary = {ConditionType.READY, ConditionType.RPO_WITHIN_THRESHOLD}
    return tuple(t for t in condition_types(spec) if t not in summary)


def derive_phase(
    conditions: Iterable[Condition], *, failing_back: bool = False
) -> ProtectedVMPhase:
    """The printer-column phase, from the conditions (and whether a plan is failing it back)."""
    conditions = tuple(conditions)
    ready = find_condition(conditions, ConditionType.READY)
    replication = find_condition(conditions, ConditionType.REPLICATION_HEALTHY)
    rpo = find_condition(conditions, ConditionType.RPO_WITHIN_THRESHOLD)
    if failing_back:
        return ProtectedVMPhase.FAILING_BACK
    if ready is None or ready.reason == Reason.INITIALIZING:
        return ProtectedVMPhase.PENDING
    if ready.status == TRUE:
        degraded = rpo is not None and rpo.status == FALSE
        return ProtectedVMPhase.DEGRADED if degraded else ProtectedVMPhase.PROTECTED
    if any(c.type in PREREQUISITES and c.status == FALSE for c in conditions):
        return ProtectedVMPhase.ERROR
    if replication is not None and replication.status == FALSE:
        if replication.reason == Reason.UNPROTECTED:
            return ProtectedVMPhase.UNPROTECTED
        return ProtectedVMPhase.DEGRADED
    if replication is not None and replication.reason in (
        Reason.INITIAL_SYNC,
        Reason.RESYNCHRONIZING,
    ):
        return ProtectedVMPhase.PROTECTING
    return ProtectedVMPhase.VALIDATING
