"""Reprotect: what one ProtectedVM's replication needs next, and what its status says.

Pure. The service observes (the Azure VM's disks, the on-premises VMs, the master target's
group, the process server's session), calls :func:`next_step` and performs the one action
it returns; the next pass observes again. Every step is guarded by what was observed, never
by "I already asked for it", so a crash anywhere is resumed by looking again.

Towards on-premises (AzureToOnPrem), in order:

1. **targets**: the on-premises disk files the Azure disks replicate into, recorded in the
   status *before* anything is touched (so a restart finds them again once they moved):
   the original VM's own disks (R-LOC-1), or new VMDKs in a folder on the alternate
   placement's datastore (R-LOC-2, R-LOC-3);
2. **detach** them from any other VM (only a powered-off one: a running original VM pauses
   replication and its disks are never touched);
3. **attach** them to the master target VM (creating the new ones);
4. **group**: register them, by disk UUID, as the VM's consistency group on the MT;
5. **session**: ask the process server to replicate the Azure disks into that group.

Towards Azure (OnPremToAzure, after a committed failback): one session from the vSphere VM
into Azure replica disks.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass

from failback.api.protectedvm import (
    Action,
    Direction,
    Replication,
    ReplicationState,
    TargetDisk,
)
from failback.domain.recoverypoints import GroupState, GroupStatus
from failback.domain.replication import CycleMode, SessionPhase, SessionStatus

MAX_GROUP_NAME = 63

THROTTLED = "AzureThrottled"
"""A session error that is Azure's pacing, not a failure: the cycle waits, the RPO grows."""


def group_name(namespace: str, name: str) -> str:
    """The MT consistency group of a VM: ``<namespace>.<name>``, shortened with a hash when
    longer than the MT allows (63)."""
    full = f"{namespace}.{name}"
    if len(full) <= MAX_GROUP_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: MAX_GROUP_NAME - 11].rstrip('.-')}-{digest}"


def alternate_folder(datastore: str, namespace: str, name: str) -> str:
    """Where the new VMDKs of an alternate-location failback live: ``[ds] failback/ns-name``."""
    return f"[{datastore}] failback/{namespace}-{name}"


@dataclass(frozen=True)
class AzureDisk:
    resource_group: str
    name: str
    size_bytes: int


@dataclass(frozen=True)
class VDisk:
    """A virtual disk attached to an on-premises VM."""

    file_name: str
    uuid: str | None
    capacity_bytes: int


@dataclass(frozen=True)
class VSphereVM:
    instance_uuid: str
    name: str
    powered_off: bool
    disks: tuple[VDisk, ...]

    def attached(self, file_name: str) -> VDisk | None:
        return next((d for d in self.disks if d.file_name == file_name), None)


class StepKind(enum.StrEnum):
    RECORD_TARGETS = "RecordTargets"
    DETACH = "Detach"
    ATTACH_TO_MASTER_TARGET = "AttachToMasterTarget"
    ENSURE_GROUP = "EnsureGroup"
    ENSURE_SESSION = "EnsureSession"
    BLOCKED = "Blocked"
    """Nothing the operator may do: the message says what the user must do."""
    REPLICATING = "Replicating"
    """Every step holds."""


@dataclass(frozen=True)
class Step:
    kind: StepKind
    message: str = ""
    vm: str | None = None
    """DETACH: the instance UUID of the VM to detach from."""
    files: tuple[str, ...] = ()
    new: tuple[TargetDisk, ...] = ()
    """ATTACH_TO_MASTER_TARGET: the disks to create (in ``folder``, created first)."""
    folder: str | None = None
    targets: tuple[TargetDisk, ...] = ()
    """RECORD_TARGETS: what to record."""
    reason: str = ""
    """BLOCKED: a condition reason."""


@dataclass(frozen=True)
class ForwardFacts:
    """A fresh observation of everything an AzureToOnPrem replication depends on."""

    namespace: str
    name: str
    alternate: bool
    """Fail back to the alternate placement (new disks) rather than the original VM."""
    azure_disks: tuple[AzureDisk, ...]
    recorded: tuple[TargetDisk, ...]
    """``status.replication.targetDisks`` as last written."""
    master_target: VSphereVM
    others: tuple[VSphereVM, ...] = ()
    """Other VMs that may hold the target disks: the original VM, a VM a cancelled
    failback created."""
    original: VSphereVM | None = None
    alternate_datastore: str | None = None
    group: GroupStatus | None = None
    session: SessionStatus | None = None


def _choose_targets(f: ForwardFacts) -> Step:
    if not f.alternate:
        original = f.original
        if original is None:
            return Step(
                StepKind.BLOCKED, "the original VM is not found", reason="OriginalVMNotFound"
            )
        if len(original.disks) != len(f.azure_disks):
            return Step(
                StepKind.BLOCKED,
                f"the original VM {original.name} has {len(original.disks)} disks and the Azure "
                f"VM {len(f.azure_disks)}: fail back to the alternate location "
                "(spec.onPrem.failbackLocation: Alternate), or make the disks match",
                reason="TargetDisksMismatch",
            )
        small = [
            (d, a) for d, a in zip(original.disks, f.azure_disks, strict=True)
            if d.capacity_bytes < a.size_bytes
        ]  # fmt: skip
        if small:
            d, a = small[0]
            return Step(
                StepKind.BLOCKED,
                f"disk {d.file_name} of the original VM ({d.capacity_bytes} bytes) is smaller "
                f"than Azure disk {a.name} ({a.size_bytes} bytes): extend it, or fail back to "
                "the alternate location",
                reason="TargetDisksMismatch",
            )
        targets = tuple(
            TargetDisk(a.name, d.file_name, a.size_bytes, d.uuid)
            for d, a in zip(original.disks, f.azure_disks, strict=True)
        )
    else:
        if f.alternate_datastore is None:
            return Step(
                StepKind.BLOCKED,
                "no alternate placement: set spec.onPrem.alternatePlacement",
                reason="PlacementNotFound",
            )
        folder = alternate_folder(f.alternate_datastore, f.namespace, f.name)
        targets = tuple(
            TargetDisk(a.name, f"{folder}/disk-{i}.vmdk", a.size_bytes, None)
            for i, a in enumerate(f.azure_disks)
        )
    return Step(StepKind.RECORD_TARGETS, "choosing the target disks", targets=targets)


def next_step(f: ForwardFacts) -> Step:
    """The first step of an AzureToOnPrem replication that does not hold yet."""
    if not f.azure_disks:
        return Step(StepKind.BLOCKED, "the Azure VM has no managed disk", reason="NoDisks")
    sources = tuple(a.name for a in f.azure_disks)
    if tuple(t.source for t in f.recorded) != sources:
        return _choose_targets(f)
    targets = f.recorded
    mt = f.master_target
    if f.original is not None and not f.original.powered_off and not f.alternate:
        return Step(
            StepKind.BLOCKED,
            f"the original VM {f.original.name} is powered on: replication is paused and its "
            "disks are not overwritten; power it off (it is stale: the VM runs in Azure) to "
            "go on",
            reason="OnPremVMRunning",
        )
    for other in f.others:
        held = tuple(t.file for t in targets if other.attached(t.file) is not None)
        if not held:
            continue
        if not other.powered_off:
            return Step(
                StepKind.BLOCKED,
                f"VM {other.name} runs with target disk {held[0]} attached: power it off so "
                "replication can take its disks; nothing was written to them",
                reason="OnPremVMRunning",
            )
        return Step(StepKind.DETACH, f"detaching {len(held)} disks from {other.name}",
                    vm=other.instance_uuid, files=held)  # fmt: skip
    missing = [t for t in targets if mt.attached(t.file) is None]
    if missing:
        new = tuple(t for t in missing if f.alternate and t.uuid is None)
        return Step(
            StepKind.ATTACH_TO_MASTER_TARGET,
            f"attaching {len(missing)} disks to the master target VM {mt.name}",
            files=tuple(t.file for t in missing if t not in new),
            new=new,
            folder=new[0].file.rsplit("/", 1)[0] if new else None,
        )
    uuids = [mt.attached(t.file) for t in targets]
    if any(d is None or d.uuid is None for d in uuids):
        return Step(StepKind.BLOCKED, "vCenter reports no UUID for a target disk",
                    reason="DiskUUIDMissing")  # fmt: skip
    resolved = tuple(
        TargetDisk(t.source, t.file, t.size_bytes, d.uuid)
        for t, d in zip(targets, uuids, strict=True)
        if d is not None
    )
    if resolved != targets:
        return Step(StepKind.RECORD_TARGETS, "recording the disk UUIDs", targets=resolved)
    wanted = tuple(sorted(t.uuid or "" for t in targets))
    g = f.group
    if g is None or g.state is GroupState.RELEASED or tuple(sorted(g.disks)) != wanted:
        return Step(StepKind.ENSURE_GROUP, "registering the target disks on the master target")
    if f.session is None:
        return Step(StepKind.ENSURE_SESSION, "starting replication on the process server")
    return Step(StepKind.REPLICATING)


# ------------------------------------------------------------------ status


def replication_status(
    direction: Direction,
    session: SessionStatus | None,
    total_bytes: int,
    now: dt.datetime,
    paused: bool = False,
) -> Replication:
    """``status.replication`` from the session's own report."""
    if session is None:
        state = ReplicationState.PAUSED if paused else ReplicationState.NOT_STARTED
        return Replication(direction=direction, state=state)
    state = _state(session)
    cycle = session.cycle
    sent = cycle.bytes_sent if cycle is not None else None
    initial = state is ReplicationState.INITIAL_SYNC
    total = total_bytes if initial and total_bytes else None
    percent = eta = None
    if total and sent is not None:
        percent = min(99, sent * 100 // total)
        rate = session.throughput_bytes_per_second
        eta = (total - sent) // rate if rate > 0 and total > sent else None
    return Replication(
        direction=direction,
        state=state,
        bytes_total=total,
        bytes_sent=sent,
        percent=percent,
        eta_seconds=eta,
        last_cycle_time=session.rpo_source_time,
    )


def _state(session: SessionStatus) -> ReplicationState:
    if session.phase is SessionPhase.PAUSED:
        return ReplicationState.PAUSED
    if session.phase is SessionPhase.RELEASED:
        return ReplicationState.STOPPED
    throttled = session.last_error is not None and session.last_error.code == THROTTLED
    if session.last_error is not None and session.phase is SessionPhase.WAITING and not throttled:
        return ReplicationState.ERROR
    modes = set(session.cycle.modes.values()) if session.cycle is not None else set()
    if session.last_point is None:
        return ReplicationState.INITIAL_SYNC
    if session.resync_pending or CycleMode.FULL_RESYNC in modes:
        return ReplicationState.RESYNCHRONIZING
    return ReplicationState.REPLICATING


def allowed_actions(
    *, active_on_prem: bool, held: bool, has_point: bool, replicating: bool, awaiting: bool
) -> tuple[Action, ...]:
    """What a user (or a plan) may do now (``status.allowedActions``)."""
    if awaiting:
        return (Action.COMMIT, Action.CANCEL, Action.CHANGE_RECOVERY_POINT)
    if held:
        return ()
    out: list[Action] = []
    if not active_on_prem and has_point:
        out.append(Action.FAILBACK)
    if replicating:
        out.append(Action.RESYNC)
    elif active_on_prem:
        out.append(Action.REPROTECT)
    return tuple(out)
