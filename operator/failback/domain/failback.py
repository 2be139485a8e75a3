"""The failback step machine (DESIGN.md §2): what a FailbackPlan must do next, from a fresh
observation of every member. Pure: no I/O, no clock; the controller observes, calls
:func:`decide`, performs the actions it returns and records the steps.

Every step of a VM is guarded by what was *observed*, never by "I already asked for it", so
the same facts always give the same decision and a crash anywhere is resumed by observing
again. Per VM, towards ``OnPrem``::

    preflight     the VM is ready to fail back and its recovery point exists
    fence         the Azure VM is stopped, confirmed by a fresh read (Unplanned: or forced)
    final-sync    Planned: a point taken after the fence is durable at the MT
    restore       the MT group is rolled back to the chosen point and released
    attach        the target disks are attached to the on-premises VM
    power-on      the on-premises VM runs (never while its Azure VM may run)
    guest-ready   VMware Tools answer in the guest

then, for the plan: ``commit`` (Automatic, or Manual once ``approvedRunId`` names the run)
and ``reprotect`` (when ``reprotectAfterCommit``). Flipping ``activeSite`` back to Azure
before commit cancels: every member is powered off on-premises (confirmed) before its Azure
VM starts again and replication resumes from Azure.

After a committed failback, flipping ``activeSite`` back to Azure is a **failover** run, the
same machine in the other direction (the on-premises VM replicates into Azure replicas)::

    preflight     the VM is ready and a point of its Azure replicas exists
    fence         the on-premises VM is powered off, confirmed by a fresh read
    final-sync    Planned: a point taken after the fence is in the replicas
    restore       the point's snapshots are copied into new managed disks
    attach        the VM's own Azure instance boots from them (its disks swapped)
    power-on      the Azure VM starts (never while its on-premises twin may run)
    guest-ready   Azure reports it running

then ``commit`` (the reverse session ends) and ``reprotect`` (Azure → on-premises again).
Flipping it back to OnPrem before that commit cancels the failover.

Groups run in order, members of a group in parallel up to ``maxParallel``; a failure stops
the plan at that member (the others of its group finish the step they are in).

**The invariant**: no action ever starts a VM whose twin is not confirmed stopped. The tests
check it over every decision they make.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from failback.api.common import Site
from failback.api.failbackplan import (
    CommitMode,
    FailbackPlanSpec,
    FailoverType,
    PlanPhase,
    StepState,
)


class Power(enum.StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    """Stopped or deallocated: not running, confirmed by a fresh read."""
    MISSING = "Missing"
    """The VM does not exist (on-premises: the alternate-location VM is not created yet)."""
    UNKNOWN = "Unknown"
    """It could not be read (the site is unreachable)."""


class StepName(enum.StrEnum):
    PREFLIGHT = "preflight"
    FENCE = "fence"
    FINAL_SYNC = "final-sync"
    RESTORE = "restore"
    ATTACH = "attach"
    POWER_ON = "power-on"
    GUEST_READY = "guest-ready"
    COMMIT = "commit"
    REPROTECT = "reprotect"
    CANCEL_POWER_OFF = "cancel-power-off"
    CANCEL_START_AZURE = "cancel-start-azure"
    CANCEL_START_ONPREM = "cancel-start-onprem"
    CANCEL_RESUME = "cancel-resume-replication"


VM_STEPS: tuple[StepName, ...] = (
    StepName.PREFLIGHT,
    StepName.FENCE,
    StepName.FINAL_SYNC,
    StepName.RESTORE,
    StepName.ATTACH,
    StepName.POWER_ON,
    StepName.GUEST_READY,
)
CANCEL_STEPS: tuple[StepName, ...] = (
    StepName.CANCEL_POWER_OFF,
    StepName.CANCEL_START_AZURE,
    StepName.CANCEL_RESUME,
)
CANCEL_FAILOVER_STEPS: tuple[StepName, ...] = (
    StepName.CANCEL_POWER_OFF,
    StepName.CANCEL_START_ONPREM,
    StepName.CANCEL_RESUME,
)


class ActionKind(enum.StrEnum):
    POWER_OFF_AZURE = "PowerOffAzure"
    SYNC_NOW = "SyncNow"
    """Ask the PS for a cycle now (the final delta sync after the fence)."""
    SYNC_REPLICAS_NOW = "SyncReplicasNow"
    """Failover: a reverse cycle now, into the Azure replicas."""
    RESTORE_POINT = "RestorePoint"
    """Roll the MT group back to the chosen point and release it."""
    ATTACH_DISKS = "AttachDisks"
    POWER_ON_ONPREM = "PowerOnOnPrem"
    COMMIT = "Commit"
    START_REPROTECT = "StartReprotect"
    POWER_OFF_ONPREM = "PowerOffOnPrem"
    START_AZURE = "StartAzure"
    RESUME_REPLICATION = "ResumeReplication"
    DISKS_FROM_POINT = "DisksFromPoint"
    """Failover: copy the point's replica snapshots into new managed disks."""
    SET_AZURE_DISKS = "SetAzureDisks"
    """Failover: make the (deallocated) Azure VM boot from those disks."""


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    vm: str | None = None
    """None for a plan-wide action (commit)."""
    point: str | None = None
    step: StepName | None = None
    """The step it advances, when the kind alone does not say (a power-off fences a
    failover and undoes a failback)."""


@dataclass(frozen=True)
class VMFacts:
    """What was observed about one member, just now. In a failover run ``restored`` means
    the point's disks exist in Azure, ``attached`` that the Azure VM boots from them, and
    ``guest_ready`` that Azure reports it running."""

    name: str
    ready: bool = True
    """The ProtectedVM's own checks are green (its Ready condition)."""
    not_ready_reason: str = ""
    point: str | None = None
    """The recovery point this run uses for it (None: none exists)."""
    azure: Power = Power.RUNNING
    onprem: Power = Power.STOPPED
    synced_after_fence: bool = False
    """A point whose source time is after the Azure VM stopped is durable at the MT."""
    restored: bool = False
    """The MT group holds the chosen point and is released."""
    attached: bool = False
    """The target disks are attached to the on-premises VM."""
    guest_ready: bool = False
    """VMware Tools run in the on-premises VM."""
    replicating_from_azure: bool = False
    """A forward session runs (cancel: resumed)."""
    replicating_to_azure: bool = False
    """A reverse session runs (a failover's cancel: resumed)."""
    replication_group: str | None = None
    """Its replication group (R-GRP-1): the members share one master target group, so
    none is restored before every one of them is fenced and synced."""


@dataclass(frozen=True)
class RunFacts:
    """What the plan's status says about the current run."""

    run_id: str | None = None
    target: Site = Site.ON_PREM
    """Where the run moves the plan's VMs: OnPrem for a failback, Azure for a failover."""
    committed: bool = False
    reprotect_started: bool = False
    failed: str | None = None
    """A step that failed in this run (the plan stops there until the spec changes)."""
    home: Site = Site.AZURE
    """Where the VMs run when no run moves them: where the last committed run left them."""
    invalid: str = ""
    """Why the plan itself is wrong (a VM in two plans, a replication group split): a run
    that has not touched any VM yet does not begin."""


@dataclass(frozen=True)
class StepLine:
    """One line of ``status.steps`` as this decision sees it."""

    name: StepName
    state: StepState
    group: str | None = None
    vm: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Decision:
    phase: PlanPhase
    actions: tuple[Action, ...] = ()
    steps: tuple[StepLine, ...] = ()
    blocked: str = ""
    """Why the plan cannot go on by itself (what the user must do), if so."""
    done: bool = False


@dataclass(frozen=True)
class _Member:
    group: str
    facts: VMFacts
    steps: list[StepLine] = field(default_factory=list)


def _vm_step(f: VMFacts, spec: FailbackPlanSpec) -> tuple[StepName | None, Action | None, str]:
    """The first step of ``f`` not yet satisfied, the action that advances it (None: wait or
    blocked), and a message. ``(None, None, "")`` when every step holds."""
    planned = spec.failover.type is FailoverType.PLANNED
    untouched = f.azure is Power.RUNNING and not f.restored
    if not f.ready and untouched:
        return StepName.PREFLIGHT, None, f.not_ready_reason or "the ProtectedVM is not Ready"
    if f.point is None and not f.restored:
        return StepName.PREFLIGHT, None, "no recovery point matches spec.failover.recoveryPoint"
    if f.azure is Power.RUNNING:
        return StepName.FENCE, Action(ActionKind.POWER_OFF_AZURE, f.name), "stopping the Azure VM"
    if f.azure is Power.UNKNOWN and (planned or not spec.failover.force):
        return (
            StepName.FENCE,
            None,
            "the Azure VM cannot be confirmed stopped (Azure unreachable): a Planned "
            "failback waits; an Unplanned one needs spec.failover.force with a reason",
        )
    if planned and not f.synced_after_fence and not f.restored:
        return StepName.FINAL_SYNC, Action(ActionKind.SYNC_NOW, f.name), "final delta sync"
    if not f.restored:
        return (
            StepName.RESTORE,
            Action(ActionKind.RESTORE_POINT, f.name, f.point),
            f"rolling the MT group back to {f.point}",
        )
    if not f.attached:
        return StepName.ATTACH, Action(ActionKind.ATTACH_DISKS, f.name), "attaching disks"
    if f.onprem is not Power.RUNNING:
        # Reached only with the Azure VM confirmed stopped (or a forced, audited fence).
        return StepName.POWER_ON, Action(ActionKind.POWER_ON_ONPREM, f.name), "powering on"
    if not f.guest_ready:
        return StepName.GUEST_READY, None, "waiting for VMware Tools in the guest"
    return None, None, ""


def _failover_step(
    f: VMFacts, spec: FailbackPlanSpec
) -> tuple[StepName | None, Action | None, str]:
    """As :func:`_vm_step`, for a run towards Azure (the on-premises VM is the source)."""
    planned = spec.failover.type is FailoverType.PLANNED
    untouched = f.onprem is Power.RUNNING and not f.restored
    if not f.ready and untouched:
        return StepName.PREFLIGHT, None, f.not_ready_reason or "the ProtectedVM is not Ready"
    if f.point is None and not f.restored:
        return (
            StepName.PREFLIGHT,
            None,
            "no recovery point of the Azure replicas matches spec.failover.recoveryPoint",
        )
    if f.azure is Power.MISSING and untouched:
        return (
            StepName.PREFLIGHT,
            None,
            "the Azure VM of spec.azure.vmId no longer exists: a failover boots that VM from "
            "the point's disks, so recreate it under that resource ID (its size and network "
            "interface; any disks: they are swapped) and the failover goes on",
        )
    if f.onprem is Power.RUNNING:
        return (
            StepName.FENCE,
            Action(ActionKind.POWER_OFF_ONPREM, f.name, step=StepName.FENCE),
            "stopping the on-premises VM",
        )
    if f.onprem is Power.UNKNOWN and (planned or not spec.failover.force):
        return (
            StepName.FENCE,
            None,
            "the on-premises VM cannot be confirmed stopped (vCenter unreachable): a Planned "
            "failover waits; an Unplanned one needs spec.failover.force with a reason",
        )
    if planned and not f.synced_after_fence and not f.restored:
        return (
            StepName.FINAL_SYNC,
            Action(ActionKind.SYNC_REPLICAS_NOW, f.name),
            "final delta sync into the Azure replicas",
        )
    if not f.restored:
        return (
            StepName.RESTORE,
            Action(ActionKind.DISKS_FROM_POINT, f.name, f.point),
            f"copying point {f.point} of the replicas into new disks",
        )
    if not f.attached:
        return (
            StepName.ATTACH,
            Action(ActionKind.SET_AZURE_DISKS, f.name, f.point),
            "making the Azure VM boot from them",
        )
    if f.azure is not Power.RUNNING:
        # Reached only with the on-premises VM confirmed stopped (or a forced fence).
        if f.azure is Power.MISSING:
            return StepName.POWER_ON, None, "the Azure VM is gone (spec.azure.vmId)"
        return (
            StepName.POWER_ON,
            Action(ActionKind.START_AZURE, f.name, step=StepName.POWER_ON),
            "starting the Azure VM",
        )
    if not f.guest_ready:
        return StepName.GUEST_READY, None, "waiting for Azure to report the VM running"
    return None, None, ""


def _cancel_step(f: VMFacts) -> tuple[StepName | None, Action | None, str]:
    if f.onprem is Power.RUNNING:
        return (
            StepName.CANCEL_POWER_OFF,
            Action(ActionKind.POWER_OFF_ONPREM, f.name),
            "stopping the on-premises VM",
        )
    if f.onprem is Power.UNKNOWN:
        return (
            StepName.CANCEL_POWER_OFF,
            None,
            "the on-premises VM cannot be confirmed stopped (vCenter unreachable): waiting",
        )
    if f.azure is not Power.RUNNING:
        if f.azure is Power.UNKNOWN:
            return StepName.CANCEL_START_AZURE, None, "Azure is unreachable: waiting"
        return (
            StepName.CANCEL_START_AZURE,
            Action(ActionKind.START_AZURE, f.name),
            "starting the Azure VM again",
        )
    if not f.replicating_from_azure:
        return (
            StepName.CANCEL_RESUME,
            Action(ActionKind.RESUME_REPLICATION, f.name),
            "resuming replication from Azure",
        )
    return None, None, ""


def _cancel_failover_step(f: VMFacts) -> tuple[StepName | None, Action | None, str]:
    """Undo a failover before its commit: the Azure VM off (confirmed) before the
    on-premises one starts again, then reverse replication resumes."""
    if f.azure is Power.RUNNING:
        return (
            StepName.CANCEL_POWER_OFF,
            Action(ActionKind.POWER_OFF_AZURE, f.name, step=StepName.CANCEL_POWER_OFF),
            "stopping the Azure VM",
        )
    if f.azure is Power.UNKNOWN:
        return (
            StepName.CANCEL_POWER_OFF,
            None,
            "the Azure VM cannot be confirmed stopped (Azure unreachable): waiting",
        )
    if f.onprem is not Power.RUNNING:
        if f.onprem is not Power.STOPPED:
            return StepName.CANCEL_START_ONPREM, None, "vCenter is unreachable: waiting"
        return (
            StepName.CANCEL_START_ONPREM,
            Action(ActionKind.POWER_ON_ONPREM, f.name, step=StepName.CANCEL_START_ONPREM),
            "starting the on-premises VM again",
        )
    if not f.replicating_to_azure:
        return (
            StepName.CANCEL_RESUME,
            Action(ActionKind.RESUME_REPLICATION, f.name),
            "resuming replication to Azure",
        )
    return None, None, ""


def _members(spec: FailbackPlanSpec, facts: Mapping[str, VMFacts]) -> list[_Member]:
    return [
        _Member(group.name, facts.get(vm, VMFacts(vm, ready=False, not_ready_reason="not found")))
        for group in spec.groups
        for vm in group.members
    ]


def decide(spec: FailbackPlanSpec, run: RunFacts, facts: Mapping[str, VMFacts]) -> Decision:
    """What to do now. ``facts`` holds a fresh observation of every member by name.

    ``spec.activeSite`` against the run: the run goes on while they agree; a run not yet
    committed is cancelled when they disagree; with no run moving the VMs, they are settled
    where the last commit left them, or a new run (the controller numbers it) moves them.
    """
    site = spec.active_site
    if run.run_id is not None and run.target is site:
        return _run(spec, run, facts)
    if run.run_id is not None and not run.committed:
        if run.target is Site.ON_PREM:
            return _cancel(spec, run, facts, _cancel_step, CANCEL_STEPS)
        return _cancel(spec, run, facts, _cancel_failover_step, CANCEL_FAILOVER_STEPS)
    if site is run.home:
        return _settled(spec, facts)
    # A run towards ``site`` that has no id yet: what a dry run publishes.
    return _run(spec, RunFacts(target=site, home=run.home), facts)


def _settled(spec: FailbackPlanSpec, facts: Mapping[str, VMFacts]) -> Decision:
    """No run moves the VMs and they are where the plan wants them."""
    waiting = [m.facts for m in _members(spec, facts) if not m.facts.ready]
    if waiting:
        first = waiting[0]
        return Decision(
            PlanPhase.VALIDATING,
            blocked=f"{first.name}: {first.not_ready_reason or 'the ProtectedVM is not Ready'}",
        )
    return Decision(PlanPhase.READY)


def _run(spec: FailbackPlanSpec, run: RunFacts, facts: Mapping[str, VMFacts]) -> Decision:
    """A failback (towards OnPrem) or a failover (towards Azure): the members' steps in
    group order, then commit and reprotect."""
    step_of = _vm_step if run.target is Site.ON_PREM else _failover_step
    members = _members(spec, facts)
    behind = _behind(members, spec) if run.target is Site.ON_PREM else {}
    steps: list[StepLine] = []
    actions: list[Action] = []
    blocked = ""
    all_done = True
    started = touched = False
    skipped = (
        {StepName.FINAL_SYNC} if spec.failover.type is FailoverType.UNPLANNED else set[StepName]()
    )
    waiting_for: str | None = None
    for group in spec.groups:
        in_group = [m for m in members if m.group == group.name]
        if waiting_for is not None:
            # Groups run in order: this one starts once the previous one has arrived.
            for member in in_group:
                steps.extend(
                    StepLine(n, StepState.PENDING, group.name, member.facts.name,
                             f"waits for group {waiting_for}" if n is StepName.PREFLIGHT else "")
                    for n in VM_STEPS
                )  # fmt: skip
            continue
        limit = group.max_parallel or len(in_group) or 1
        active = 0
        group_done = True
        for member in in_group:
            # Once committed, the VM steps are history: the disks hold the committed point.
            name, action, message = (
                (None, None, "") if run.committed else step_of(member.facts, spec)
            )
            if name is StepName.RESTORE and behind.get(member.facts.replication_group or ""):
                late = ", ".join(behind[member.facts.replication_group or ""])
                action, message = (
                    None,
                    (
                        f"waits for {late}: replication group {member.facts.replication_group} "
                        "fails back at one point, once every member is fenced and synced"
                    ),
                )
            steps.extend(
                _lines(group.name, member.facts.name, name, action, message, skipped=skipped)
            )
            if name is None:
                started = touched = True
                continue
            group_done = False
            started = started or name is not StepName.PREFLIGHT
            touched = touched or name not in (StepName.PREFLIGHT, StepName.FENCE)
            if spec.dry_run or run.failed:
                continue
            if action is None:
                blocked = blocked or f"{member.facts.name}: {message}"
                continue
            if active < limit:
                actions.append(action)
                active += 1
        if not group_done:
            all_done = False
            waiting_for = group.name
    if spec.dry_run:
        return Decision(PlanPhase.READY, (), tuple(steps), "dry run: nothing is done")
    if run.failed:
        return Decision(PlanPhase.FAILED, (), tuple(steps), run.failed)
    if run.invalid and not touched:
        return Decision(PlanPhase.VALIDATING, (), tuple(steps), run.invalid)
    if not all_done:
        phase = PlanPhase.FAILING_OVER if started else PlanPhase.VALIDATING
        return Decision(phase, tuple(actions), tuple(steps), blocked)
    # Every member runs at the target: commit, then reprotect.
    if not run.committed:
        if spec.commit.mode is CommitMode.MANUAL and (
            run.run_id is None or spec.commit.approved_run_id != run.run_id
        ):
            steps.append(StepLine(StepName.COMMIT, StepState.PENDING, message="awaiting approval"))
            back = "Azure" if run.target is Site.ON_PREM else "OnPrem"
            return Decision(
                PlanPhase.FAILED_OVER,
                (),
                tuple(steps),
                f"commit is Manual: set spec.commit.approvedRunId to {run.run_id} to commit, "
                f"or spec.activeSite back to {back} to cancel",
            )
        steps.append(StepLine(StepName.COMMIT, StepState.RUNNING))
        return Decision(PlanPhase.COMMITTING, (Action(ActionKind.COMMIT),), tuple(steps))
    steps.append(StepLine(StepName.COMMIT, StepState.SUCCEEDED))
    # The twin left behind must stay off: a VM the run left behind seen running again (a
    # forced fence whose site came back, someone starting it) is stopped at once.
    fence = tuple(_refence(m.facts, run.target) for m in members if _left_running(m.facts, run))
    if spec.reprotect_after_commit and not run.reprotect_started:
        steps.append(StepLine(StepName.REPROTECT, StepState.RUNNING))
        reprotect = tuple(Action(ActionKind.START_REPROTECT, m.facts.name) for m in members)
        return Decision(PlanPhase.REPROTECTING, fence + reprotect, tuple(steps))
    if spec.reprotect_after_commit:
        steps.append(StepLine(StepName.REPROTECT, StepState.SUCCEEDED))
    if fence:
        blocked = ", ".join(a.vm or "" for a in fence)
        return Decision(PlanPhase.COMPLETED, fence, tuple(steps), f"stopping again: {blocked}")
    return Decision(PlanPhase.COMPLETED, (), tuple(steps), done=True)


def _left_running(f: VMFacts, run: RunFacts) -> bool:
    left = f.azure if run.target is Site.ON_PREM else f.onprem
    return left is Power.RUNNING


def _refence(f: VMFacts, target: Site) -> Action:
    kind = ActionKind.POWER_OFF_AZURE if target is Site.ON_PREM else ActionKind.POWER_OFF_ONPREM
    return Action(kind, f.name, step=StepName.FENCE)


_BEFORE_RESTORE = frozenset({StepName.PREFLIGHT, StepName.FENCE, StepName.FINAL_SYNC})


def _behind(members: Sequence[_Member], spec: FailbackPlanSpec) -> dict[str, list[str]]:
    """Per replication group, its members not yet fenced and synced (before restore)."""
    out: dict[str, list[str]] = {}
    for m in members:
        group = m.facts.replication_group
        if group is None:
            continue
        name, _, _ = _vm_step(m.facts, spec)
        if name in _BEFORE_RESTORE:
            out.setdefault(group, []).append(m.facts.name)
    return out


def _cancel(
    spec: FailbackPlanSpec,
    run: RunFacts,
    facts: Mapping[str, VMFacts],
    step_of: Any,
    order: Sequence[StepName],
) -> Decision:
    """Undo a run before its commit, members in the reverse order of the run."""
    steps: list[StepLine] = []
    actions: list[Action] = []
    blocked = ""
    for member in reversed(_members(spec, facts)):
        name, action, message = step_of(member.facts)
        steps.extend(_lines(member.group, member.facts.name, name, action, message, order))
        if name is None:
            continue
        if action is None:
            blocked = blocked or f"{member.facts.name}: {message}"
        else:
            actions.append(action)
    if not actions and not blocked:
        return Decision(PlanPhase.READY, (), tuple(steps), done=True)
    return Decision(PlanPhase.CANCELLING, tuple(actions), tuple(steps), blocked)


def _lines(
    group: str,
    vm: str,
    current: StepName | None,
    action: Action | None,
    message: str,
    order: Sequence[StepName] = VM_STEPS,
    skipped: set[StepName] | frozenset[StepName] = frozenset(),
) -> list[StepLine]:
    """The VM's steps: those before ``current`` succeeded, ``current`` running (or pending
    when nothing can advance it), the rest pending; every step done when ``current`` is
    None. ``skipped`` steps do not apply to this run."""
    lines = []
    reached = False
    for name in order:
        if name in skipped:
            lines.append(StepLine(name, StepState.SKIPPED, group, vm))
        elif name == current:
            reached = True
            state = StepState.RUNNING if action is not None else StepState.PENDING
            lines.append(StepLine(name, state, group, vm, message))
        elif not reached:
            lines.append(StepLine(name, StepState.SUCCEEDED, group, vm))
        else:
            lines.append(StepLine(name, StepState.PENDING, group, vm))
    return lines
