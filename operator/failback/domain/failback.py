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


StepOutcome = tuple[StepName | None, Action | None, str]
"""The first step not yet satisfied, the action that advances it (None: wait or blocked),
and a message; ``(None, None, "")`` when every step holds."""

_VM_OF = {Site.AZURE: "the Azure VM", Site.ON_PREM: "the on-premises VM"}
_DOWN = {Site.AZURE: "Azure unreachable", Site.ON_PREM: "vCenter unreachable"}
_STOP = {Site.AZURE: ActionKind.POWER_OFF_AZURE, Site.ON_PREM: ActionKind.POWER_OFF_ONPREM}
_START = {Site.AZURE: ActionKind.START_AZURE, Site.ON_PREM: ActionKind.POWER_ON_ONPREM}


def _power(f: VMFacts, site: Site) -> Power:
    return f.azure if site is Site.AZURE else f.onprem


@dataclass(frozen=True)
class _Way:
    """What differs between the two directions of a run; the step machine is the same."""

    target: Site
    run: str
    no_point: str
    sync: ActionKind
    sync_message: str
    restore: ActionKind
    restore_message: str
    """With ``{point}``."""
    attach: ActionKind
    attach_message: str
    start_message: str
    guest_message: str
    target_gone: str
    """Why a run cannot begin when the target site's VM does not exist ("": it may not:
    a failback creates it at the alternate location)."""
    cancel_start: StepName

    @property
    def source(self) -> Site:
        return Site.AZURE if self.target is Site.ON_PREM else Site.ON_PREM

    def replicating_back(self, f: VMFacts) -> bool:
        """A cancel's last step holds: replication from the source site runs again."""
        return f.replicating_from_azure if self.source is Site.AZURE else f.replicating_to_azure


_WAYS = {
    Site.ON_PREM: _Way(
        target=Site.ON_PREM,
        run="failback",
        no_point="no recovery point matches spec.failover.recoveryPoint",
        sync=ActionKind.SYNC_NOW,
        sync_message="final delta sync",
        restore=ActionKind.RESTORE_POINT,
        restore_message="rolling the MT group back to {point}",
        attach=ActionKind.ATTACH_DISKS,
        attach_message="attaching disks",
        start_message="powering on",
        guest_message="waiting for VMware Tools in the guest",
        target_gone="",
        cancel_start=StepName.CANCEL_START_AZURE,
    ),
    Site.AZURE: _Way(
        target=Site.AZURE,
        run="failover",
        no_point="no recovery point of the Azure replicas matches spec.failover.recoveryPoint",
        sync=ActionKind.SYNC_REPLICAS_NOW,
        sync_message="final delta sync into the Azure replicas",
        restore=ActionKind.DISKS_FROM_POINT,
        restore_message="copying point {point} of the replicas into new disks",
        attach=ActionKind.SET_AZURE_DISKS,
        attach_message="making the Azure VM boot from them",
        start_message="starting the Azure VM",
        guest_message="waiting for Azure to report the VM running",
        target_gone=(
            "the Azure VM of spec.azure.vmId no longer exists: a failover boots that VM from "
            "the point's disks, so recreate it under that resource ID (its size and network "
            "interface; any disks: they are swapped) and the failover goes on"
        ),
        cancel_start=StepName.CANCEL_START_ONPREM,
    ),
}


def _vm_step(f: VMFacts, spec: FailbackPlanSpec, way: _Way) -> StepOutcome:
    """The next step of one member in a run ``way`` (towards ``way.target``)."""
    planned = spec.failover.type is FailoverType.PLANNED
    source, target = _power(f, way.source), _power(f, way.target)
    untouched = source is Power.RUNNING and not f.restored
    if not f.ready and untouched:
        return StepName.PREFLIGHT, None, f.not_ready_reason or "the ProtectedVM is not Ready"
    if f.point is None and not f.restored:
        return StepName.PREFLIGHT, None, way.no_point
    if way.target_gone and target is Power.MISSING and untouched:
        return StepName.PREFLIGHT, None, way.target_gone
    if source is Power.RUNNING:
        stop = Action(_STOP[way.source], f.name, step=StepName.FENCE)
        return StepName.FENCE, stop, f"stopping {_VM_OF[way.source]}"
    if source is Power.UNKNOWN and (planned or not spec.failover.force):
        return (
            StepName.FENCE,
            None,
            f"{_VM_OF[way.source]} cannot be confirmed stopped ({_DOWN[way.source]}): a "
            f"Planned {way.run} waits; an Unplanned one needs spec.failover.force with a reason",
        )
    if planned and not f.synced_after_fence and not f.restored:
        return StepName.FINAL_SYNC, Action(way.sync, f.name), way.sync_message
    if not f.restored:
        restore = Action(way.restore, f.name, f.point)
        return StepName.RESTORE, restore, way.restore_message.format(point=f.point)
    if not f.attached:
        return StepName.ATTACH, Action(way.attach, f.name, f.point), way.attach_message
    if target is not Power.RUNNING:
        # Reached only with the source confirmed stopped (or a forced, audited fence).
        if way.target_gone and target is Power.MISSING:
            return StepName.POWER_ON, None, way.target_gone
        start = Action(_START[way.target], f.name, step=StepName.POWER_ON)
        return StepName.POWER_ON, start, way.start_message
    if not f.guest_ready:
        return StepName.GUEST_READY, None, way.guest_message
    return None, None, ""


def _cancel_step(f: VMFacts, way: _Way) -> StepOutcome:
    """Undo a run ``way`` before its commit: the target's VM off (confirmed) before the
    source's starts again, then replication from the source resumes."""
    source, target = _power(f, way.source), _power(f, way.target)
    if target is Power.RUNNING:
        stop = Action(_STOP[way.target], f.name, step=StepName.CANCEL_POWER_OFF)
        return StepName.CANCEL_POWER_OFF, stop, f"stopping {_VM_OF[way.target]}"
    if target is Power.UNKNOWN:
        return (
            StepName.CANCEL_POWER_OFF,
            None,
            f"{_VM_OF[way.target]} cannot be confirmed stopped ({_DOWN[way.target]}): waiting",
        )
    if source is not Power.RUNNING:
        if source is Power.UNKNOWN:
            return way.cancel_start, None, f"{_DOWN[way.source]}: waiting"
        if source is Power.MISSING:
            return way.cancel_start, None, f"{_VM_OF[way.source]} is gone: nothing to start"
        start = Action(_START[way.source], f.name, step=way.cancel_start)
        return way.cancel_start, start, f"starting {_VM_OF[way.source]} again"
    if not way.replicating_back(f):
        direction = "from" if way.source is Site.AZURE else "to"
        return (
            StepName.CANCEL_RESUME,
            Action(ActionKind.RESUME_REPLICATION, f.name),
            f"resuming replication {direction} Azure",
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
        return _cancel(spec, facts, _WAYS[run.target])
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
    way = _WAYS[run.target]
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
                (None, None, "") if run.committed else _vm_step(member.facts, spec, way)
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
    fence = tuple(a for m in members if (a := _refence(m.facts, way)) is not None)
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


def _refence(f: VMFacts, way: _Way) -> Action | None:
    """Stop the VM the run left behind if it is seen running again after the commit."""
    if _power(f, way.source) is not Power.RUNNING:
        return None
    return Action(_STOP[way.source], f.name, step=StepName.FENCE)


_BEFORE_RESTORE = frozenset({StepName.PREFLIGHT, StepName.FENCE, StepName.FINAL_SYNC})


def _behind(members: Sequence[_Member], spec: FailbackPlanSpec) -> dict[str, list[str]]:
    """Per replication group, its members not yet fenced and synced (before restore)."""
    out: dict[str, list[str]] = {}
    for m in members:
        group = m.facts.replication_group
        if group is None:
            continue
        name, _, _ = _vm_step(m.facts, spec, _WAYS[Site.ON_PREM])
        if name in _BEFORE_RESTORE:
            out.setdefault(group, []).append(m.facts.name)
    return out


def _cancel(spec: FailbackPlanSpec, facts: Mapping[str, VMFacts], way: _Way) -> Decision:
    """Undo a run before its commit, members in the reverse order of the run."""
    order = (StepName.CANCEL_POWER_OFF, way.cancel_start, StepName.CANCEL_RESUME)
    steps: list[StepLine] = []
    actions: list[Action] = []
    blocked = ""
    for member in reversed(_members(spec, facts)):
        name, action, message = _cancel_step(member.facts, way)
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
