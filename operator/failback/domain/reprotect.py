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

Drift: when to pause the session
--------------------------------

A step that cannot be taken is ``BLOCKED``: the operator touches no disk and says why. Most
blocks only stop the *next* step, and a session that already runs is left alone: it writes
the disks it was started with, which nothing else uses, and pausing it would only let the
RPO grow. A few blocks mean that the session itself would now destroy data; then the
session is paused (``PUT`` with ``paused: true``, the spec otherwise the same; the MT keeps
every durable point: retention counts from the newest point's source time, not the clock)
and ``status.replication.state`` is ``Paused`` until the drift clears. Those are
:data:`PAUSING` (:func:`pauses`, :func:`session_paused`):

``OnPremVMRunning``
    A powered-on on-premises VM (the original, or one a cancelled failback created) holds
    a disk replication writes (:attr:`ForwardFacts.recorded`). Those disks are that VM's
    running data, the only on-premises copy of it: nothing may be written into them. Only
    a VM *holding* a target disk counts: an original VM powered on after its disks moved
    to the master target has none of them, replication goes on and the status only notes
    it (it must be off before a failback into it). The check comes before anything else,
    so a block that is not a drift (disks that do not match) cannot hide it.
``AzureVMNotFound``, ``NoDisks``
    The Azure VM is gone (or has no managed disk): what the session would read is no
    longer the machine (disks left behind, free to be deleted, reused or written by
    anything). The master target's points are now the only copy of the machine: further
    cycles could only overwrite them with something else and age the machine's last good
    points out of the retention window. Nothing on-premises is touched either (no detach,
    no attach, no rollback, no delete). A VM of that resource ID again, with the recorded
    disks, resumes replication. (The operator records no unique ID of the Azure VM or its
    disks, so a *different* VM created under that ID from disks of the same names would
    resume too: the points stay selectable for the retention window.)

Not pausing:

- the **master target moved by Storage vMotion** (R-PRE-4, its ``NoStorageVMotion``
  False): Storage vMotion moves a running VM's disks under it and keeps their UUIDs, so
  the MT goes on writing the very disks its points describe. What breaks is finding them
  by their recorded files: the operator attaches, detaches and creates no disk while it
  lasts (the service evaluates the steps without taking them), and a failback could not
  complete (the condition says so). It may still *pause* for a drift above, never resume;
- ``TargetDisksMismatch``, ``OriginalVMNotFound``, ``PlacementNotFound``,
  ``DiskUUIDMissing``: the operator cannot choose or resolve the *next* targets; the
  session, if one runs, keeps the disks it has.

A session is resumed (``paused: false``) only by a pass that could take every step and
found that all of them hold (:attr:`StepKind.REPLICATING`), and none of this applies while
a FailbackPlan's run holds the VM (the plan drives the session).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass, replace
from typing import Final

from failback.api.conditions import Reason
from failback.api.protectedvm import (
    Action,
    Direction,
    ProtectedVM,
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


GROUP_PREFIX: Final = "group."
"""A replication group's session and master target group are named ``group.<name>`` (so
no ProtectedVM may be named so)."""


def replication_key(name: str, replication_group: str | None) -> str:
    """What a VM's process-server session and master target group are named after: the VM,
    or its replication group, whose members replicate as one cut (R-GRP-1)."""
    return f"{GROUP_PREFIX}{replication_group}" if replication_group else name


def forward_key(vm: ProtectedVM) -> str:
    """The name of ``vm``'s Azure → on-premises session and master target group (in its
    namespace): its replication group's, if it has one."""
    return replication_key(vm.meta.name, vm.spec.replication_group)


def alternate_folder(datastore: str, namespace: str, name: str) -> str:
    """Where the new VMDKs of an alternate-location failback live: ``[ds] failback/ns-name``."""
    return f"[{datastore}] failback/{namespace}-{name}"


@dataclass(frozen=True)
class AzureDisk:
    resource_group: str
    name: str
    size_bytes: int
    replaces: str | None = None
    """For a disk a failover to Azure copied from a point: the disk it took the place of
    (its ``failback.io/source-disk`` tag). Its targets on-premises are that disk's."""


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
    WAITING = "Waiting"
    """A replication group's member waits for the others (or for the member that starts
    the group's session): nothing is wrong."""


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
    """RECORD_TARGETS: what to record; ENSURE_GROUP, ENSURE_SESSION: every disk of the
    group, members in order (a VM alone: its own)."""
    reason: str = ""
    """BLOCKED: a condition reason."""


@dataclass(frozen=True)
class GroupMember:
    """A member of the VM's replication group, as its status says."""

    name: str
    targets: tuple[TargetDisk, ...]
    """Its ``status.replication.targetDisks``."""


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
    replication_group: str | None = None
    members: tuple[GroupMember, ...] = ()
    """Every member of the replication group, this VM too, by name (empty: no group)."""


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


def _running_holder(f: ForwardFacts) -> Step | None:
    """BLOCKED if a powered-on VM other than the master target holds a recorded target."""
    for other in f.others:
        held = [t.file for t in f.recorded if other.attached(t.file) is not None]
        if held and not other.powered_off:
            return Step(
                StepKind.BLOCKED,
                f"VM {other.name} is powered on with target disk {held[0]} attached: "
                "replication is paused and its disks are never written (they hold that VM's "
                "data). Power it off (it is stale: the machine runs in Azure) and "
                "replication resumes by itself",
                reason=Reason.ON_PREM_VM_RUNNING,
            )
    return None


def next_step(f: ForwardFacts) -> Step:
    """The first step of an AzureToOnPrem replication that does not hold yet."""
    running = _running_holder(f)
    if running is not None:
        return running
    if not f.azure_disks:
        return Step(
            StepKind.BLOCKED,
            "the Azure VM has no managed disk: replication is paused and the master target "
            "keeps its recovery points; give the VM its managed disks back and replication "
            "resumes by itself",
            reason=Reason.NO_DISKS,
        )
    sources = tuple(a.name for a in f.azure_disks)
    recorded = tuple(t.source for t in f.recorded)
    if recorded != sources:
        if recorded and tuple(a.replaces for a in f.azure_disks) == recorded:
            # A failover to Azure swapped the VM's disks for copies of a point: the same
            # targets on-premises, which hold that point's data already.
            renamed = tuple(
                replace(t, source=a.name) for t, a in zip(f.recorded, f.azure_disks, strict=True)
            )
            return Step(
                StepKind.RECORD_TARGETS,
                "the Azure VM boots from a failover's disks: keeping their targets",
                targets=renamed,
            )
        return _choose_targets(f)
    targets = f.recorded
    mt = f.master_target
    for other in f.others:
        held = tuple(t.file for t in targets if other.attached(t.file) is not None)
        if held:  # powered off: _running_holder said so
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
                    reason=Reason.DISK_UUID_MISSING)  # fmt: skip
    resolved = tuple(
        TargetDisk(t.source, t.file, t.size_bytes, d.uuid)
        for t, d in zip(targets, uuids, strict=True)
        if d is not None
    )
    if resolved != targets:
        return Step(StepKind.RECORD_TARGETS, "recording the disk UUIDs", targets=resolved)
    leader, every = f.name, targets
    if f.members:
        # R-GRP-1: one master target group and one session for every member's disks, so a
        # point is one cut across them; the first member by name starts them, once every
        # member's disks are on the master target.
        waiting = _group_waits(f)
        if waiting is not None:
            return waiting
        leader = f.members[0].name
        every = tuple(t for m in f.members for t in (targets if m.name == f.name else m.targets))
    wanted = tuple(sorted(t.uuid or "" for t in every))
    g = f.group
    if g is None or g.state is GroupState.RELEASED or tuple(sorted(g.disks)) != wanted:
        if leader != f.name:
            return Step(StepKind.WAITING, f"{leader} registers replication group "
                        f"{f.replication_group} on the master target")  # fmt: skip
        return Step(StepKind.ENSURE_GROUP, "registering the target disks on the master target",
                    targets=every)  # fmt: skip
    if f.session is None:
        if leader != f.name:
            return Step(StepKind.WAITING, f"{leader} starts replication group "
                        f"{f.replication_group}'s session")  # fmt: skip
        return Step(StepKind.ENSURE_SESSION, "starting replication on the process server",
                    targets=every)  # fmt: skip
    original = f.original
    if original is not None and not original.powered_off and not f.alternate:
        return Step(
            StepKind.REPLICATING,
            f"the original VM {original.name} is powered on without its disks (they are on "
            "the master target), so replication goes on; power it off before failing back "
            "into it",
        )
    return Step(StepKind.REPLICATING)


def _group_waits(f: ForwardFacts) -> Step | None:
    """WAITING while another member's disks are not all on the master target with UUIDs."""
    mt = f.master_target
    behind = [
        m.name
        for m in f.members
        if m.name != f.name
        and not (m.targets and all(t.uuid and mt.attached(t.file) for t in m.targets))
    ]
    if not behind:
        return None
    return Step(
        StepKind.WAITING,
        f"replication group {f.replication_group} replicates as one cut: waiting for "
        f"{', '.join(behind)} to bring its disks to the master target",
    )


# ------------------------------------------------------------------ drift

PAUSING: Final = frozenset({Reason.ON_PREM_VM_RUNNING, Reason.AZURE_VM_NOT_FOUND, Reason.NO_DISKS})
"""The blocks during which the session itself would destroy data (see the module doc)."""


def azure_vm_gone(vm_id: str) -> Step:
    """The block of a VM whose Azure VM a fresh read found gone."""
    return Step(
        StepKind.BLOCKED,
        f"Azure has no VM {vm_id} any more (deleted, or the identity lost access to it): "
        "replication is paused and nothing on-premises is touched, so the master target "
        "keeps every recovery point it holds, which may now be the only copy of the "
        "machine. Restore the Azure VM under that resource ID (or the identity's access) and "
        "replication resumes by itself; otherwise recover the machine on-premises from "
        "those points",
        reason=Reason.AZURE_VM_NOT_FOUND,
    )


def pauses(step: Step | None) -> bool:
    """Whether ``step`` is a drift during which the session must not run."""
    return step is not None and step.kind is StepKind.BLOCKED and step.reason in PAUSING


def session_paused(
    step: Step | None, session: SessionStatus | None, *, acting: bool
) -> bool | None:
    """The ``paused`` to PUT the session with now, or None to leave it as it is.

    ``step`` is what this pass found (None: nothing was judged, e.g. a plan holds the VM or
    Azure could not be read); ``acting``: the pass could take the steps (False while the
    master target's disks moved, R-PRE-4, or while a prerequisite of the VM fails): then it
    may pause, never resume. A session the master target released (a failback's) is the
    plan's.
    """
    if step is None or session is None or session.phase is SessionPhase.RELEASED:
        return None
    paused = session.phase is SessionPhase.PAUSED
    if pauses(step):
        # Again while a cycle under way finishes (the PS answers the same spec with 200).
        return None if paused else True
    if acting and step.kind is StepKind.REPLICATING and paused:
        return False
    return None


# ------------------------------------------------------------------ status


def replication_status(
    direction: Direction,
    session: SessionStatus | None,
    total_bytes: int,
    now: dt.datetime,
    paused: bool = False,
    *,
    drift: bool = False,
) -> Replication:
    """``status.replication`` from the session's own report.

    ``paused``: a plan's run holds the VM (Paused when there is no session); ``drift``: a
    drift pauses replication (:func:`pauses`): Paused whatever the session says (a cycle
    under way still finishes)."""
    if session is None:
        state = ReplicationState.PAUSED if paused or drift else ReplicationState.NOT_STARTED
        return Replication(direction=direction, state=state)
    state = ReplicationState.PAUSED if drift else _state(session)
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
