"""Conditions: the ``metav1.Condition`` shape, the pure functions that update a list of
them, and the catalog of every condition type and reason the product reports.

Conditions are the machine contract of every kind (``phase`` is only a summary for
people). A check reports ``True`` when it passed, ``False`` when a person must fix
something, and ``Unknown`` while it cannot tell yet. Each type and each reason is
documented once, here, in the catalog; ``docs/api.md`` tells users what to do about each.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Self

from failback.api._codec import decode, encode

TYPE_PATTERN: Final = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
"""What the API server accepts as a condition type (the CRDs' pattern)."""

REASON_PATTERN: Final = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
"""What the API server accepts as a condition reason (the CRDs' pattern)."""

MESSAGE_MAX: Final = 32768
"""The longest message the CRDs accept; longer ones are cut, with an ellipsis."""


class ConditionStatus(enum.StrEnum):
    """The three values of ``condition.status``."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


TRUE: Final = ConditionStatus.TRUE
FALSE: Final = ConditionStatus.FALSE
UNKNOWN: Final = ConditionStatus.UNKNOWN


class _Documented(enum.StrEnum):
    """A string enum whose members each carry their documentation in ``doc``."""

    doc: str

    def __new__(cls, value: str, doc: str) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.doc = doc
        return member


class ConditionType(_Documented):
    """Every condition type the product reports. A type means the same on every kind."""

    # Summaries
    READY = (
        "Ready",
        "Summary of every kind: True when every check that gates the object is True; "
        "otherwise the reason and message of the checks that are not.",
    )
    PROGRESSING = (
        "Progressing",
        "FailbackPlan: True while a run acts (validating, failing over, committing, "
        "reprotecting, cancelling); False when idle or waiting for the user.",
    )
    SUCCEEDED = (
        "Succeeded",
        "FailbackPlan: the outcome of the current run; Unknown until it ends.",
    )
    # ProtectedVM prerequisites (R-PRE-*)
    VCENTER_PERMISSIONS = (
        "VCenterPermissions",
        "R-PRE-1: the vCenter account can discover datastores, hosts and networks and manage VMs.",
    )
    ORIGINAL_VM_NO_SNAPSHOTS = (
        "OriginalVMNoSnapshots",
        "R-PRE-2: the original on-premises VM, when it is failed back into, has no snapshots.",
    )
    OS_MATCHES_MASTER_TARGET = (
        "OSMatchesMasterTarget",
        "R-PRE-10: the VM's osType equals its master target's.",
    )
    AGENT_REGISTERED = (
        "AgentRegistered",
        "R-PRE-13: the Azure VM is registered with its process server and its disks can be "
        "read; a freshly booted VM can take up to 15 minutes.",
    )
    SOURCE_OS_SUPPORTED = (
        "SourceOSSupported",
        "R-PRE-16: a machine protected as physical runs an OS that can fail back.",
    )
    VCENTER_DISCOVERED = (
        "VCenterDiscovered",
        "R-PRE-17: the vCenter the VM fails back to is reachable and holds its master target VM.",
    )
    # Shared by ProtectedVM and MasterTarget
    DISK_UUIDS_UNIQUE = (
        "DiskUUIDsUnique",
        "R-PRE-14: no master target disk shares a UUID with a disk of a VM it protects.",
    )
    LICENSE_ALLOWS_FAILBACK = (
        "LicenseAllowsFailback",
        "R-PRE-15: the ESXi host's licence allows failback.",
    )
    # ProtectedVM placement, references and replication
    LOCATION_RESOLVED = (
        "LocationResolved",
        "R-LOC-1/2/3/5: where the VM comes back is known and usable (the original VM, or "
        "the alternate placement's datacenter, cluster or host, datastore, folder, networks).",
    )
    REFERENCES_RESOLVED = (
        "ReferencesResolved",
        "Every object the spec names exists in the namespace: MasterTarget, "
        "ProcessServer, and Secrets holding the keys they need.",
    )
    REPLICATION_GROUP_CONSISTENT = (
        "ReplicationGroupConsistent",
        "R-GRP-1: the members of a replication group use one master target and fail back "
        "through one FailbackPlan.",
    )
    RETENTION_VOLUME_AVAILABLE = (
        "RetentionVolumeAvailable",
        "The VM's retention volume (its own or its master target's) is on its master target.",
    )
    REPLICATION_HEALTHY = (
        "ReplicationHealthy",
        "Changed blocks flow from the active site to the other one and recovery points are made.",
    )
    RPO_WITHIN_THRESHOLD = (
        "RPOWithinThreshold",
        "status.rpoSeconds is at most spec.policy.rpoThreshold (R-POL-1). Not part of "
        "Ready: a late RPO degrades the VM, it does not block a failback.",
    )
    # MasterTarget prerequisites
    DISK_UUID_ENABLED = (
        "DiskUUIDEnabled",
        "R-PRE-3: the master target VM has disk.EnableUUID = TRUE.",
    )
    NO_STORAGE_VMOTION = (
        "NoStorageVMotion",
        "R-PRE-4: the master target VM's disks are on the datastores they were on when it "
        "was registered (status.registeredDatastores).",
    )
    RETENTION_VOLUME_VALID = (
        "RetentionVolumeValid",
        "R-PRE-5: the retention volume exists, is dedicated, unlocked, not FAT/FAT32 and "
        "not empty.",
    )
    VMWARE_TOOLS_RUNNING = (
        "VMwareToolsRunning",
        "R-PRE-6: VMware Tools run in the master target VM.",
    )
    VMFS_DATASTORE_ATTACHED = (
        "VMFSDatastoreAttached",
        "R-PRE-7: the master target's host has a VMFS datastore it may use.",
    )
    NO_SNAPSHOTS = (
        "NoSnapshots",
        "R-PRE-8: the master target VM has no snapshots.",
    )
    SCSI_CONTROLLER_SUPPORTED = (
        "SCSIControllerSupported",
        "R-PRE-9: the master target VM's SCSI controllers are LSI Logic, not Paravirtual.",
    )
    DISK_CAPACITY_AVAILABLE = (
        "DiskCapacityAvailable",
        "R-PRE-18: the master target VM has fewer than 60 disks attached.",
    )
    VERSION_COMPATIBLE = (
        "VersionCompatible",
        "R-PRE-18: the master target service is not newer than the operator.",
    )
    SERVICE_REACHABLE = (
        "ServiceReachable",
        "The master target service answers at spec.endpoint over mutual TLS.",
    )
    # ProcessServer
    REACHABLE = (
        "Reachable",
        "The process server's control API answers at its endpoint over mutual TLS.",
    )
    HEARTBEAT = (
        "Heartbeat",
        "The process server reported within the last 15 minutes (status.lastHeartbeat).",
    )
    HEALTHY = (
        "Healthy",
        "The process server's CPU and memory are below 95 % and its cache has at least "
        "25 % free space.",
    )
    CONTROL_PLANE_REACHABLE = (
        "ControlPlaneReachable",
        "R-PRE-12: the process server reaches the Kubernetes API (the configuration "
        "server) on port 443.",
    )
    DEPLOYED = (
        "Deployed",
        "With spec.deploy: the process server VM the operator creates exists and runs.",
    )
    # FailbackPlan validation
    MEMBERS_FOUND = (
        "MembersFound",
        "R-PRE-11: every VM the plan lists is a ProtectedVM of the namespace.",
    )
    MEMBERS_EXCLUSIVE = (
        "MembersExclusive",
        "No VM of the plan belongs to another FailbackPlan.",
    )
    MEMBERS_READY = (
        "MembersReady",
        "Every VM of the plan, its master target and process server are Ready.",
    )
    RECOVERY_POINT_AVAILABLE = (
        "RecoveryPointAvailable",
        "R-FO-1: the recovery point spec.failover.recoveryPoint asks for exists for every "
        "member (one shared point per replication group with multiVmConsistency).",
    )


class Reason(_Documented):
    """Every reason the product puts in a condition, with what it means."""

    # Any check
    INITIALIZING = "Initializing", "Unknown: the operator has not checked this yet."
    CHECK_PASSED = "CheckPassed", "True: the check passed."
    ALL_CHECKS_PASSED = "AllChecksPassed", "Ready True: every check that gates it passed."
    SPEC_INVALID = (
        "SpecInvalid",
        "Ready False: the operator cannot read the spec (the API server's validation was "
        "bypassed, or its CRD is older than the operator); the message names the field.",
    )
    NOT_YET_IMPLEMENTED = (
        "NotYetImplemented",
        "Unknown: this release cannot make the check yet; it is shown, not hidden.",
    )
    SERVICE_CHECK_PENDING = (
        "ServiceCheckPending",
        "Unknown: the answer comes from the master target or process server service, "
        "which has not answered yet.",
    )
    TLS_VERIFICATION_FAILED = (
        "TLSVerificationFailed",
        "False: a peer's certificate (vCenter, master target, process server) did not "
        "verify against the CA bundle or thumbprint of its Secret.",
    )
    CONNECTION_FAILED = (
        "ConnectionFailed",
        "False: the endpoint refused the connection, did not resolve or timed out.",
    )
    CONNECTED = "Connected", "True: the endpoint answered over mutual TLS."
    UNEXPECTED_ANSWER = (
        "UnexpectedAnswer",
        "False: the service answered, but not as its API says (an HTTP status other than "
        "200, not JSON, a field missing or of the wrong type); another service on the port, "
        "or an incompatible version.",
    )
    VCENTER_UNREACHABLE = (
        "VCenterUnreachable",
        "Unknown: vCenter did not answer; the operator retries.",
    )
    VCENTER_LOGIN_FAILED = (
        "VCenterLoginFailed",
        "False: vCenter refused the user name and password of the vCenter Secret.",
    )
    VM_NOT_FOUND = (
        "VMNotFound",
        "False: vCenter has no VM with the instance UUID the spec gives.",
    )
    AZURE_VM_NOT_FOUND = "AzureVMNotFound", "False: spec.azure.vmId names no Azure VM."
    AZURE_AUTHENTICATION_FAILED = (
        "AzureAuthenticationFailed",
        "False: Microsoft Entra ID refused the service principal or workload identity.",
    )
    AZURE_AUTHORIZATION_FAILED = (
        "AzureAuthorizationFailed",
        "False: the Azure identity lacks a role the operation needs (HTTP 403).",
    )
    AZURE_THROTTLED = (
        "AzureThrottled",
        "Unknown: Azure answered 429; the operator waits for Retry-After and tries again.",
    )
    # References (cross-object)
    MASTER_TARGET_NOT_FOUND = (
        "MasterTargetNotFound",
        "False: spec.masterTargetRef names no MasterTarget in the namespace.",
    )
    PROCESS_SERVER_NOT_FOUND = (
        "ProcessServerNotFound",
        "False: spec.processServerRef names no ProcessServer in the namespace.",
    )
    SECRET_NOT_FOUND = "SecretNotFound", "False: a *SecretRef names no Secret in the namespace."
    SECRET_KEY_MISSING = (
        "SecretKeyMissing",
        "False: a referenced Secret lacks a key the operator needs.",
    )
    MASTER_TARGET_NOT_READY = (
        "MasterTargetNotReady",
        "False: the VM's MasterTarget is not Ready, so replication cannot run.",
    )
    PROCESS_SERVER_NOT_READY = (
        "ProcessServerNotReady",
        "False: the VM's ProcessServer is not Ready, so replication cannot run.",
    )
    # ProtectedVM prerequisites
    INSUFFICIENT_VCENTER_PERMISSIONS = (
        "InsufficientVCenterPermissions",
        "False (R-PRE-1): the vCenter account lacks privileges; the message lists them.",
    )
    ORIGINAL_VM_HAS_SNAPSHOTS = (
        "OriginalVMHasSnapshots",
        "False (R-PRE-2): the original VM has snapshots.",
    )
    OS_MISMATCH = (
        "OSMismatch",
        "False (R-PRE-10): the VM's OS family differs from its master target's.",
    )
    WAITING_FOR_AGENT_REGISTRATION = (
        "WaitingForAgentRegistration",
        "Unknown (R-PRE-13): the Azure VM booted recently and has not registered yet; the "
        "operator waits up to 15 minutes. Not a failure.",
    )
    AZURE_OS_TYPE_MISMATCH = (
        "AzureOSTypeMismatch",
        "False: the Azure VM's OS disk says another OS family than spec.osType.",
    )
    UNMANAGED_DISKS = (
        "UnmanagedDisks",
        "False: the Azure VM has unmanaged (VHD blob) disks; only managed disks replicate.",
    )
    AGENT_NOT_REGISTERED = (
        "AgentNotRegistered",
        "False (R-PRE-13): the Azure VM has run for 15 minutes and is still not registered.",
    )
    DISK_UUID_CONFLICT = (
        "DiskUUIDConflict",
        "False (R-PRE-14): a master target disk and a protected VM disk share a UUID.",
    )
    LICENSE_FORBIDS_FAILBACK = (
        "LicenseForbidsFailback",
        "False (R-PRE-15): the ESXi host runs a free licence that cannot fail back.",
    )
    LICENSE_UNKNOWN = (
        "LicenseUnknown",
        "Unknown (R-PRE-15): vCenter reports no licence edition for the ESXi host.",
    )
    SOURCE_OS_UNKNOWN = (
        "SourceOSUnknown",
        "Unknown (R-PRE-16): Azure reports no OS name for the Windows server yet.",
    )
    UNSUPPORTED_SOURCE_OS = (
        "UnsupportedSourceOS",
        "False (R-PRE-16): Windows Server 2008 R2 SP1 protected as physical cannot fail back.",
    )
    VCENTER_NOT_DISCOVERED = (
        "VCenterNotDiscovered",
        "False (R-PRE-17): the VM's vCenter does not hold its master target VM.",
    )
    # ProtectedVM placement
    ORIGINAL_LOCATION = (
        "OriginalLocation",
        "True: the VM fails back into the original VM (delta sync, R-LOC-1).",
    )
    ALTERNATE_LOCATION = (
        "AlternateLocation",
        "True: the VM fails back as a new VM at the alternate placement (full sync, R-LOC-2).",
    )
    ORIGINAL_VM_NOT_FOUND = (
        "OriginalVMNotFound",
        "False: failbackLocation is Original and the original VM no longer exists.",
    )
    PLACEMENT_NOT_FOUND = (
        "PlacementNotFound",
        "False: a datacenter, cluster, host, datastore, folder or port group of "
        "alternatePlacement does not exist.",
    )
    DATASTORE_NOT_ACCESSIBLE = (
        "DatastoreNotAccessible",
        "False (R-LOC-1): the master target's host cannot read and write the datastore "
        "the VM's disks go to.",
    )
    # Replication groups and retention (cross-object)
    REPLICATION_GROUP_MASTER_TARGET_MISMATCH = (
        "ReplicationGroupMasterTargetMismatch",
        "False (R-GRP-1): members of one replication group use different master targets.",
    )
    REPLICATION_GROUP_NEEDS_PLAN = (
        "ReplicationGroupNeedsPlan",
        "False (R-GRP-1): a replication group member is not in a FailbackPlan.",
    )
    REPLICATION_GROUP_SPLIT = (
        "ReplicationGroupSplit",
        "False (R-GRP-1): a replication group has members outside this plan.",
    )
    RETENTION_VOLUME_NOT_ON_MASTER_TARGET = (
        "RetentionVolumeNotOnMasterTarget",
        "False: spec.retentionVolume is not a volume of the VM's master target.",
    )
    # ProtectedVM replication
    REPLICATING = "Replicating", "True: replication runs and makes recovery points."
    INITIAL_SYNC = "InitialSync", "Unknown: the first full copy runs; no recovery point yet."
    RESYNCHRONIZING = (
        "Resynchronizing",
        "Unknown: the disks are compared and copied again after an interruption.",
    )
    REPLICATION_NOT_STARTED = (
        "ReplicationNotStarted",
        "Unknown: replication starts once every other check of the VM passes.",
    )
    REPLICATION_PAUSED = (
        "ReplicationPaused",
        "False: the owning FailbackPlan paused replication during its run.",
    )
    REPLICATION_FAILED = (
        "ReplicationFailed",
        "False: the process server or master target reported an error.",
    )
    ON_PREM_VM_RUNNING = (
        "OnPremVMRunning",
        "False: an on-premises VM holding the target disks is powered on: replication is "
        "paused and its disks are not written.",
    )
    TARGET_DISKS_MISMATCH = (
        "TargetDisksMismatch",
        "False: the original VM's disks do not match the Azure VM's (count or size).",
    )
    NO_DISKS = (
        "NoDisks",
        "False: the Azure VM has no managed disk: replication is paused, the master target "
        "keeps its recovery points.",
    )
    DISK_UUID_MISSING = (
        "DiskUUIDMissing",
        "False: vCenter reports no UUID for a target disk on the master target VM, so the "
        "master target cannot find it.",
    )
    UNPROTECTED = (
        "Unprotected",
        "False (R-FLOW-5): the VM runs on-premises and nothing replicates it to Azure yet.",
    )
    RPO_MET = "RPOMet", "True: the RPO is within spec.policy.rpoThreshold."
    RPO_EXCEEDED = "RPOExceeded", "False: the RPO is above spec.policy.rpoThreshold."
    NO_RECOVERY_POINT = "NoRecoveryPoint", "Unknown: no durable recovery point exists yet."
    # MasterTarget prerequisites
    DISK_UUID_DISABLED = (
        "DiskUUIDDisabled",
        "False (R-PRE-3): disk.EnableUUID is not TRUE on the master target VM.",
    )
    STORAGE_VMOTION_DETECTED = (
        "StorageVMotionDetected",
        "False (R-PRE-4): the master target VM's disks moved to other datastores.",
    )
    RETENTION_VOLUME_NOT_FOUND = (
        "RetentionVolumeNotFound",
        "False (R-PRE-5): no volume is mounted at the retention path of the master target "
        "(spec.retentionVolume or the OS default); the path is a directory of another volume.",
    )
    RETENTION_VOLUME_NOT_USED = (
        "RetentionVolumeNotUsed",
        "False (R-PRE-5): the master target service keeps its journals (--retention-dir) "
        "outside the retention path.",
    )
    RETENTION_VOLUME_NOT_DEDICATED = (
        "RetentionVolumeNotDedicated",
        "False (R-PRE-5): the retention volume is the volume the master target service is "
        "installed on (its install or cache volume).",
    )
    RETENTION_VOLUME_FILE_SYSTEM_UNSUPPORTED = (
        "RetentionVolumeFileSystemUnsupported",
        "False (R-PRE-5): the retention volume is formatted FAT, FAT32 or exFAT.",
    )
    RETENTION_VOLUME_EMPTY = (
        "RetentionVolumeEmpty",
        "False (R-PRE-5): the retention volume has no capacity.",
    )
    RETENTION_VOLUME_LOCKED = (
        "RetentionVolumeLocked",
        "False (R-PRE-5): the master target service cannot write the retention volume "
        "(read-only, locked, or not permitted).",
    )
    VMWARE_TOOLS_NOT_RUNNING = (
        "VMwareToolsNotRunning",
        "False (R-PRE-6): VMware Tools are missing or stopped in the master target VM.",
    )
    NO_VMFS_DATASTORE = (
        "NoVMFSDatastore",
        "False (R-PRE-7): the master target's host has no usable VMFS datastore.",
    )
    MASTER_TARGET_HAS_SNAPSHOTS = (
        "MasterTargetHasSnapshots",
        "False (R-PRE-8): the master target VM has snapshots.",
    )
    PARAVIRTUAL_CONTROLLER = (
        "ParavirtualController",
        "False (R-PRE-9): the master target VM has a Paravirtual SCSI controller.",
    )
    DISK_LIMIT_REACHED = (
        "DiskLimitReached",
        "False (R-PRE-18): the master target VM has 60 disks attached.",
    )
    VERSION_TOO_NEW = (
        "VersionTooNew",
        "False (R-PRE-18): the master target service is newer than the operator.",
    )
    # ProcessServer
    HEARTBEAT_RECEIVED = "HeartbeatReceived", "True: a heartbeat came in the last 15 minutes."
    HEARTBEAT_MISSING = "HeartbeatMissing", "False: no heartbeat for 15 minutes or more."
    NO_HEARTBEAT_YET = "NoHeartbeatYet", "Unknown: the process server never reported."
    WITHIN_THRESHOLDS = (
        "WithinThresholds",
        "True: CPU and memory below 80 %, cache free space above 30 %.",
    )
    THRESHOLD_WARNING = (
        "ThresholdWarning",
        "True: CPU or memory above 80 %, or cache free space below 30 %.",
    )
    THRESHOLD_CRITICAL = (
        "ThresholdCritical",
        "False: CPU or memory above 95 %, or cache free space below 25 %.",
    )
    CONTROL_PLANE_UNREACHABLE = (
        "ControlPlaneUnreachable",
        "False (R-PRE-12): the process server cannot reach the Kubernetes API on 443.",
    )
    DEPLOYING = "Deploying", "Unknown: the operator is creating the process server VM."
    VM_DEPLOYED = "VMDeployed", "True: the process server VM exists and runs."
    DEPLOYMENT_FAILED = (
        "DeploymentFailed",
        "False: Azure refused to create the process server VM.",
    )
    DELETING = "Deleting", "False: the operator is deleting the process server VM."
    PROCESS_SERVER_IN_USE = (
        "ProcessServerInUse",
        "False: the ProcessServer is being deleted but ProtectedVMs still use it; its VM is "
        "kept until they point at another process server.",
    )
    # FailbackPlan
    MEMBER_NOT_FOUND = (
        "MemberNotFound",
        "False (R-PRE-11): a VM the plan lists is not a ProtectedVM of the namespace.",
    )
    VM_IN_ANOTHER_PLAN = (
        "VMInAnotherPlan",
        "False: a VM of this plan already belongs to another FailbackPlan.",
    )
    MEMBERS_NOT_READY = (
        "MembersNotReady",
        "False: some VMs, master targets or process servers of the plan are not Ready.",
    )
    RECOVERY_POINT_NOT_FOUND = (
        "RecoveryPointNotFound",
        "False: the recovery point asked for does not exist for some member.",
    )
    IDLE = "Idle", "Progressing False: no run is in progress."
    VALIDATING = "Validating", "Progressing True: the run checks every member first."
    FAILING_OVER = "FailingOver", "Progressing True: the run fences and fails VMs back."
    AWAITING_COMMIT_APPROVAL = (
        "AwaitingCommitApproval",
        "Progressing False: the VMs run on-premises; with commit mode Manual the run "
        "waits for spec.commit.approvedRunId.",
    )
    COMMITTING = "Committing", "Progressing True: the run makes the failback final."
    REPROTECTING = "Reprotecting", "Progressing True: replication back to Azure starts."
    CANCELLING = (
        "Cancelling",
        "Progressing True: activeSite went back to Azure before commit; the run undoes.",
    )
    NO_RUN = "NoRun", "Succeeded Unknown: no failback was asked for yet."
    RUN_IN_PROGRESS = "RunInProgress", "Succeeded Unknown: the current run has not ended."
    COMMITTED = "Committed", "Succeeded True: the failback is committed (no reprotect asked)."
    COMPLETED = (
        "Completed",
        "Succeeded True: the failback is committed and replication to Azure is healthy.",
    )
    DRY_RUN_COMPLETED = (
        "DryRunCompleted",
        "Succeeded True: the dry run published its steps; nothing was changed.",
    )
    CANCELLED = "Cancelled", "Succeeded False: the run was cancelled; the VMs run in Azure."
    RUN_FAILED = "RunFailed", "Succeeded False: a step failed; status.steps names it."
    FENCE_NOT_CONFIRMED = (
        "FenceNotConfirmed",
        "Succeeded False: an Azure VM could not be confirmed stopped, so nothing was started "
        "on-premises.",
    )


@dataclasses.dataclass(frozen=True)
class Condition:
    """One ``metav1.Condition``. Messages longer than the CRD allows are cut."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    observed_generation: int | None
    """The ``metadata.generation`` the condition was computed from."""
    last_transition_time: dt.datetime
    """When ``status`` last changed (not reason or message): aware, UTC."""

    def __post_init__(self) -> None:
        if not TYPE_PATTERN.fullmatch(self.type):
            raise ValueError(f"{self.type!r} is not a valid condition type")
        if not REASON_PATTERN.fullmatch(self.reason):
            raise ValueError(f"{self.reason!r} is not a valid condition reason")
        if len(self.message) > MESSAGE_MAX:
            object.__setattr__(self, "message", self.message[: MESSAGE_MAX - 1] + "…")

    def to_dict(self) -> dict[str, Any]:
        """The condition as the API stores it: camelCase keys, RFC 3339 'Z' time."""
        out: dict[str, Any] = encode(self)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "condition") -> Condition:
        """Read a stored condition; :class:`~failback.errors.SpecInvalid` names a bad field."""
        return decode(cls, data, path)


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of type ``type_``, if there is one."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """``conditions`` with ``new`` in place of the one of its type (or appended).

    When the status does not change, the old ``lastTransitionTime`` is kept: it records
    when the status changed, not when the reason or message did.
    """
    old = find_condition(conditions, new.type)
    if old is None:
        return [*conditions, new]
    if old.status == new.status:
        new = dataclasses.replace(new, last_transition_time=old.last_transition_time)
    return [new if c.type == new.type else c for c in conditions]


def seed_conditions(
    existing: Sequence[Condition],
    types: Iterable[str],
    generation: int | None,
    now: dt.datetime,
    reason: str = Reason.INITIALIZING,
    message: str = "The operator has not checked this yet.",
) -> list[Condition]:
    """``existing`` unchanged, followed by an Unknown condition for each missing type."""
    present = {c.type for c in existing}
    missing = [t for t in dict.fromkeys(types) if t not in present]
    return [*existing, *(Condition(t, UNKNOWN, reason, message, generation, now) for t in missing)]


def summarize(
    conditions: Iterable[Condition],
    inputs: Iterable[str],
    generation: int | None,
    now: dt.datetime,
    type_: str = ConditionType.READY,
) -> Condition:
    """The summary condition (``Ready``) of the checks named in ``inputs``.

    True with ``AllChecksPassed`` when every input is True. Otherwise False when any is
    False, else Unknown; the reason is that of the first such input (in ``inputs`` order)
    and the message lists each of them as ``Type: message``. A missing input counts as
    Unknown, ``Initializing``.
    """
    by_type = {c.type: c for c in conditions}
    checks = [
        by_type.get(t) or Condition(t, UNKNOWN, Reason.INITIALIZING, "not checked yet", None, now)
        for t in inputs
    ]
    for status in (FALSE, UNKNOWN):
        failing = [c for c in checks if c.status == status]
        if failing:
            message = "; ".join(f"{c.type}: {c.message}" for c in failing)
            return Condition(type_, status, failing[0].reason, message, generation, now)
    message = f"All {len(checks)} checks passed."
    return Condition(type_, TRUE, Reason.ALL_CHECKS_PASSED, message, generation, now)
