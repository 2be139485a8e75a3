"""Reconcile a FailbackPlan: observe every member on both sites, decide, act, log.

One pass:

1. reads the plan's ProtectedVMs (and their MasterTargets and ProcessServers), the other
   plans of the namespace, and judges the validations (members found, exclusive, replication
   groups whole, members ready, a recovery point for every member);
2. observes each member *fresh* (``VMFacts``): the Azure VM's power, the on-premises VM's
   power, disks and VMware Tools, the master target group's points and state, the process
   server session;
3. calls the pure :func:`failback.domain.failback.decide`;
4. performs the actions it returns, each idempotent (the next pass observes whether it
   took), and marks a step failed when an action is refused for good;
5. writes the job log (``status.steps``), the run, the phase and the conditions.

Nothing here remembers "I already called it": a restarted operator observes and goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from failback.api import failbackplan, mastertarget, processserver, protectedvm
from failback.api.common import Site
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    find_condition,
    set_condition,
)
from failback.api.constants import FAILBACK_PLAN, MASTER_TARGET, PROCESS_SERVER, PROTECTED_VM
from failback.api.crossobject import GROUP_ACROSS_PLAN_GROUPS, GROUP_SPLIT
from failback.api.failbackplan import (
    FailbackPlan,
    FailbackPlanStatus,
    FailoverType,
    ForcedRun,
    ObservedSite,
    PlanPhase,
    RecoveryPointType,
    RunRecoveryPoint,
    StepState,
)
from failback.domain import failback as machine
from failback.domain import steplog
from failback.domain.failback import Action, ActionKind, Power, RunFacts, StepName, VMFacts
from failback.domain.outcome import Refused, Unanswered
from failback.domain.pointchoice import NoPoint, choose_points
from failback.domain.recoverypoints import GroupState, GroupStatus, RecoveryPoint
from failback.domain.replicas import (
    FAILOVER,
    RECOVERY_POINT,
    ROLE,
    TAG_INDEX,
    TAG_POINT,
    TAG_RUN,
    TAG_SOURCE_DISK,
    TAG_VM,
    PointSnapshot,
    ReplicaPoint,
    failover_disk_name,
    points_of,
    replica_name,
)
from failback.domain.reprotect import forward_key, group_name
from failback.domain.status import refresh_conditions
from failback.domain.vsphere import VM
from failback.domain.vsphere import PowerState as VPower
from failback.errors import FailbackError, Permanent, Retryable
from failback.ports.azure import (
    AzureClients,
    AzureCompute,
    ManagedDisk,
    PowerState,
    Snapshot,
    VirtualMachine,
)
from failback.ports.kubernetes import ObjectReader, SecretReader
from failback.ports.mastertarget import RecoveryPoints
from failback.ports.processserver import ReplicationSessions
from failback.ports.vsphere import NewVM, VCenters, VMPlacement
from failback.services import processserver as ps_service
from failback.services import vcenter as vc_service
from failback.services.sites import Sites, reconfiguring, resolve, target_vm_uuid

TASK_PATIENCE = 20.0
GUEST_IDS = {"Linux": "otherLinux64Guest", "Windows": "windows2019srv_64Guest"}
TOOLS_RUNNING = "guestToolsRunning"
TOOLS_NOT_INSTALLED = "guestToolsNotInstalled"


@dataclass(frozen=True)
class Deps:
    objects: ObjectReader
    secrets: SecretReader
    vcenters: VCenters
    azure: AzureClients
    sessions: ReplicationSessions
    points: RecoveryPoints


@dataclass(frozen=True)
class Event:
    type: str
    """``Normal`` or ``Warning``."""
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    status: FailbackPlanStatus
    events: tuple[Event, ...] = ()
    busy: bool = False
    """A run is under way: check again soon."""
    transitions: tuple[steplog.Transition, ...] = ()
    """The steps whose state changed in this pass (for metrics)."""


@dataclass
class Member:
    """One VM of the plan and everything it is failed back with."""

    name: str
    group: str
    vm: protectedvm.ProtectedVM | None = None
    mt: mastertarget.MasterTarget | None = None
    ps: processserver.ProcessServer | None = None
    sites: Sites | None = None
    problem: str = ""
    points: tuple[RecoveryPoint, ...] = ()
    mt_group: GroupStatus | None = None
    session: bool = False
    target: VM | None = None
    azure_power: Power = Power.UNKNOWN
    azure_stopped_at: dt.datetime | None = None
    unreachable: str = ""
    """Why vCenter could not be read in this pass (the on-premises side is then Unknown)."""
    notes: list[str] = field(default_factory=list)
    azure_vm: VirtualMachine | None = None
    replica_points: tuple[ReplicaPoint, ...] = ()
    """A failover's points: those of the VM's Azure replicas."""
    failover_disks: dict[int, ManagedDisk] = field(default_factory=dict)
    """The disks this run copied from a point, by index (0: the OS disk)."""
    failover_point: str | None = None
    """The point those disks hold: a run keeps the point it began copying."""

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    @property
    def sizes(self) -> dict[str, int]:
        """The target disk files, in order, and their sizes."""
        if self.vm is None or self.vm.status.replication is None:
            return {}
        return {t.file: t.size_bytes for t in self.vm.status.replication.target_disks}


def _parse(body: Mapping[str, Any] | None, parse: Any) -> Any:
    if body is None:
        return None
    try:
        return parse(body)
    except FailbackError:
        return None


def new_run_id(now: dt.datetime) -> str:
    return f"run-{now:%Y%m%d-%H%M%S}"


async def reconcile(plan: FailbackPlan, deps: Deps, now: dt.datetime) -> Outcome:
    spec, status, gen = plan.spec, plan.status, plan.meta.generation
    ns = plan.meta.namespace
    members = [Member(vm, g.name) for g in spec.groups for vm in g.members]
    bodies = await deps.objects.list(ns, FAILBACK_PLAN.plural)
    parsed = (_parse(b, failbackplan.parse) for b in bodies)
    others = [p for p in parsed if p is not None and p.meta.name != plan.meta.name]
    await asyncio.gather(*(_load(m, ns, deps, now) for m in members))
    checks = await _checks(plan, members, others, deps)

    # The run: a new one when activeSite leaves where the last commit put the VMs (a
    # failback from Azure, or a failover back to Azure after a committed failback); the
    # failed mark clears on a new spec.
    run_id = status.run_id
    steps = status.steps
    home, target = _home(status), status.run_target or (Site.ON_PREM if run_id else None)
    if status.observed_generation != gen:
        steps = tuple(
            replace(s, state=StepState.PENDING, message="retrying after a spec change")
            if s.state is StepState.FAILED
            else s
            for s in steps
        )
    committed = run_id is not None and _committed(steps)
    starting = (
        spec.active_site is not home
        and (run_id is None or (target is not spec.active_site and committed))
        and not spec.dry_run
    )
    if starting:
        run_id, steps, target = new_run_id(now), (), spec.active_site
    running = run_id is not None
    events: list[Event] = []
    transitions: list[steplog.Transition] = []
    failures: dict[steplog.Key, str] = {}
    started = time.monotonic()
    # The direction observed: the run's, or the next run's (for the checks and a dry run).
    if running and not committed:
        towards = target or spec.active_site
    elif spec.active_site is not home:
        towards = spec.active_site
    else:
        towards = Site.ON_PREM if home is Site.AZURE else Site.AZURE
    for _ in range(ROUNDS):
        # Observe, decide, act; again at once when every action ended within the pass
        # (a restore, an attach, a power-on), so a failback does not wait a timer per step.
        at = now + dt.timedelta(seconds=int(time.monotonic() - started))
        deep = running or spec.dry_run
        lists = AzureLists()
        await asyncio.gather(*(_observe(m, deps, deep, towards, run_id, lists) for m in members))
        decision, steps, changed, failures = await _round(
            plan,
            members,
            steps,
            run_id,
            (target or towards, towards),
            home,
            checks,
            deps,
            at,
            events,
        )
        transitions.extend(changed)
        if failures or spec.dry_run or not decision.actions:
            break
        if any(a.kind not in SYNCHRONOUS for a in decision.actions):
            break
    new_steps = steps
    chosen = _choose(plan, members)
    phase = decision.phase
    if failures:
        phase = PlanPhase.FAILED
    if run_id is not None and target is not None and _committed(new_steps):
        home = target  # the commit took: the VMs stay where this run put them
    if decision.done and decision.phase is PlanPhase.READY:
        # A cancel completed (or nothing ever ran): the next move is a new run.
        run_id, target = None, None
    forced = status.forced
    unconfirmed = (
        any(m.azure_power is Power.UNKNOWN for m in members)
        if target is Site.ON_PREM
        else any(m.target is None and m.unreachable for m in members)
    )
    if (
        spec.failover.force
        and running
        and unconfirmed
        and (forced is None or forced.run_id != run_id)
    ):
        forced = ForcedRun(run_id, spec.failover.force_reason, None, now)
        events.append(
            Event("Warning", "FenceForced", f"fence forced: {spec.failover.force_reason}")
        )
    conditions = _conditions(
        plan, members, others, chosen, decision, phase, run_id, target, now, checks.split
    )
    site = _site(members, phase)
    rpos = [m.vm.status.rpo_seconds for m in members if m.vm and m.vm.status.rpo_seconds]
    current = next((s for s in new_steps if s.state is StepState.RUNNING), None)
    if phase is not status.phase:
        events.append(Event("Normal", "PhaseChanged", f"{status.phase or 'Pending'} → {phase}"))
    new = FailbackPlanStatus(
        observed_generation=gen,
        phase=phase,
        active_site=site,
        run_id=run_id,
        run_target=target if run_id is not None else None,
        committed_site=home,
        vm_count=len(members),
        rpo_seconds=max(rpos) if rpos else None,
        current_step=(
            f"{current.vm + ' ' if current.vm else ''}{current.name}"[:256] if current else None
        ),
        recovery_point=RunRecoveryPoint(
            spec.failover.recovery_point.type, spec.failover.recovery_point.time
        ),
        forced=forced,
        steps=new_steps if (run_id is not None or spec.dry_run or decision.steps) else (),
        conditions=tuple(conditions),
    )
    busy = phase in (
        PlanPhase.VALIDATING,
        PlanPhase.FAILING_OVER,
        PlanPhase.COMMITTING,
        PlanPhase.REPROTECTING,
        PlanPhase.CANCELLING,
    )
    return Outcome(new, tuple(events), busy or starting, tuple(transitions))


@dataclass(frozen=True)
class Checks:
    """The plan's own validations, judged once per pass."""

    split: Mapping[str, str]
    """Members whose replication group is not whole in one group of the plan, with why."""
    invalid: str
    """The first reason the plan itself is wrong (a run that touched no VM does not begin)."""


async def _checks(
    plan: FailbackPlan, members: Sequence[Member], others: Sequence[FailbackPlan], deps: Deps
) -> Checks:
    split = _split_groups(plan, members, await _outside(plan, members, deps))
    shared = [
        f"{m.name} is also in FailbackPlan {o.meta.name}: a VM belongs to at most one plan"
        for o in others
        for m in members
        if m.name in o.spec.members
    ]
    return Checks(split, next(iter([*split.values(), *shared]), ""))


async def _outside(plan: FailbackPlan, members: Sequence[Member], deps: Deps) -> dict[str, str]:
    """Per replication group of the plan's members, its members the plan does not list."""
    groups = {m.vm.spec.replication_group for m in members if m.vm is not None} - {None}
    if not groups:
        return {}
    listed = {m.name for m in members}
    out: dict[str, list[str]] = {}
    for body in await deps.objects.list(plan.meta.namespace, PROTECTED_VM.plural):
        group = (body.get("spec") or {}).get("replicationGroup")
        name = str((body.get("metadata") or {}).get("name"))
        if group in groups and name not in listed:
            out.setdefault(str(group), []).append(name)
    return {g: ", ".join(sorted(names)) for g, names in out.items()}


def _split_groups(
    plan: FailbackPlan, members: Sequence[Member], outside: Mapping[str, str]
) -> dict[str, str]:
    """Members whose replication group is not whole in one group of this plan (R-GRP-1:
    its members share one point, so they fail back together), with why."""
    where: dict[str, set[str]] = {}
    for m in members:
        if m.vm is not None and m.vm.spec.replication_group is not None:
            where.setdefault(m.vm.spec.replication_group, set()).add(m.group)
    out = {}
    for m in members:
        group = m.vm.spec.replication_group if m.vm is not None else None
        if group is None:
            continue
        if group in outside:
            out[m.name] = GROUP_SPLIT.message(group=group, missing=outside[group])
        elif len(where[group]) > 1:
            out[m.name] = GROUP_ACROSS_PLAN_GROUPS.message(
                group=group, groups=", ".join(sorted(where[group]))
            )
    return out


def _committed(steps: Sequence[failbackplan.Step]) -> bool:
    return steplog.state_of(steps, StepName.COMMIT) is StepState.SUCCEEDED


def _home(status: FailbackPlanStatus) -> Site:
    """Where the plan's VMs run when no run moves them; a status written before
    ``committedSite`` existed only knew failbacks."""
    if status.committed_site is not None:
        return status.committed_site
    return Site.ON_PREM if status.run_id is not None and _committed(status.steps) else Site.AZURE


SYNCHRONOUS = frozenset(
    {
        ActionKind.DISKS_FROM_POINT,
        ActionKind.SET_AZURE_DISKS,
        ActionKind.RESTORE_POINT,
        ActionKind.ATTACH_DISKS,
        ActionKind.POWER_ON_ONPREM,
        ActionKind.POWER_OFF_ONPREM,
        ActionKind.COMMIT,
    }
)
"""Actions whose effect is observable as soon as they return (they wait for their vSphere
task or master target call): the pass observes again at once after them."""

ROUNDS = 6
"""At most this many observe-decide-act rounds in one pass."""


async def _round(
    plan: FailbackPlan,
    members: Sequence[Member],
    steps: tuple[failbackplan.Step, ...],
    run_id: str | None,
    direction: tuple[Site, Site],
    home: Site,
    checks: Checks,
    deps: Deps,
    now: dt.datetime,
    events: list[Event],
) -> tuple[
    machine.Decision,
    tuple[failbackplan.Step, ...],
    tuple[steplog.Transition, ...],
    dict[steplog.Key, str],
]:
    """One observe-decide-act round over fresh observations of ``members``.
    ``direction``: where the run moves the VMs, and where the observations look."""
    spec = plan.spec
    target, towards = direction
    chosen = _choose(plan, members)
    facts = {
        m.name: (
            _facts(m, chosen, steps, spec)
            if towards is Site.ON_PREM
            else _failover_facts(m, chosen, steps)
        )
        for m in members
    }
    for name, why in checks.split.items():
        # Only a member no step touched yet heeds ``ready``: a run under way goes on.
        facts[name] = replace(facts[name], ready=False, not_ready_reason=why)
    failed = steplog.first_failure(steps)
    committed = _committed(steps)
    back = (
        protectedvm.Direction.ON_PREM_TO_AZURE
        if target is Site.ON_PREM
        else protectedvm.Direction.AZURE_TO_ON_PREM
    )
    reprotected = all(
        m.vm is not None
        and m.vm.status.replication is not None
        and m.vm.status.replication.direction == back
        and m.vm.status.replication.state not in (None, protectedvm.ReplicationState.NOT_STARTED)
        for m in members
    )
    run = RunFacts(
        run_id=run_id,
        target=target,
        committed=committed,
        reprotect_started=committed and reprotected,
        failed=f"{failed.vm or ''} {failed.name}: {failed.message}".strip() if failed else None,
        home=home,
        invalid=checks.invalid,
    )
    decision = machine.decide(spec, run, facts)
    failures: dict[steplog.Key, str] = {}
    retrying: dict[steplog.Key, str] = {}
    if not spec.dry_run:
        failures, retrying = await _perform(decision.actions, members, deps, events, run_id, target)
    log_lines = [
        replace(line, message=f"{line.message} (retrying: {retrying[steplog.key(line)]})")
        if steplog.key(line) in retrying
        else line
        for line in decision.steps
    ]
    if any(a.kind is ActionKind.COMMIT for a in decision.actions) and not failures:
        log_lines = [
            replace(line, state=StepState.SUCCEEDED, message="older recovery points discarded")
            if line.name is StepName.COMMIT
            else line
            for line in log_lines
        ]
    new_steps, changed = steplog.merge(steps, _annotate(log_lines, members, spec), now, failures)
    before = {steplog.key(x): x.message for x in steps}
    for x in new_steps:
        k = steplog.key(x)
        if k in retrying and before.get(k) != x.message:  # once per new reason, not per pass
            events.append(Event("Warning", "StepRetrying", f"{x.vm}: {x.name}: {retrying[k]}"))
    for t in changed:
        if t.step.state in (StepState.RUNNING, StepState.SUCCEEDED, StepState.FAILED):
            where = f"{t.step.vm}: " if t.step.vm else ""
            kind = "Warning" if t.step.state is StepState.FAILED else "Normal"
            text = f"{where}{t.step.name} {t.step.state.value.lower()}"
            if t.step.message:
                text += f": {t.step.message}"
            events.append(Event(kind, f"Step{t.step.state.value}", text))
    return decision, new_steps, changed, failures


# ------------------------------------------------------------------ observe


async def _load(m: Member, ns: str, deps: Deps, now: dt.datetime) -> None:
    m.vm = _parse(await deps.objects.get(ns, PROTECTED_VM.plural, m.name), protectedvm.parse)
    if m.vm is None:
        m.problem = f"no ProtectedVM {m.name} in namespace {ns}"
        return
    spec = m.vm.spec
    m.mt = _parse(
        await deps.objects.get(ns, MASTER_TARGET.plural, spec.master_target_ref.name),
        mastertarget.parse,
    )
    m.ps = _parse(
        await deps.objects.get(ns, PROCESS_SERVER.plural, spec.process_server_ref.name),
        processserver.parse,
    )
    if m.mt is None or m.ps is None:
        m.problem = "its MasterTarget or ProcessServer is not found"
        return
    try:
        m.sites = await resolve(m.vm, m.mt, m.ps, deps.secrets, deps.vcenters, deps.azure, now)
    except (ps_service.Unresolved, vc_service.Unresolved, FailbackError) as exc:
        m.problem = f"cannot reach its sites: {exc}"


async def _observe(
    m: Member, deps: Deps, deep: bool, towards: Site, run_id: str | None, lists: AzureLists
) -> None:
    """Fresh reads of one member; what cannot be read stays Unknown. ``towards`` says
    which recovery points matter: the master target's (a failback) or the Azure replicas'
    (a failover)."""
    if m.vm is None or m.sites is None:
        return
    m.notes.clear()
    m.unreachable = ""
    sites, vm = m.sites, m.vm
    if towards is Site.ON_PREM:
        group = group_name(vm.meta.namespace, forward_key(vm))
        mt = sites.master_target
        got = await deps.points.points(mt.endpoint, mt.tls, group)
        if isinstance(got, tuple):
            m.points = got
        g = await deps.points.group(mt.endpoint, mt.tls, group)
        m.mt_group = g if isinstance(g, GroupStatus) else None
    else:
        await _observe_replicas(m, deep, run_id, lists)
    if not deep:
        return
    try:
        azure_vm = await sites.compute.get_vm(sites.azure.resource_group, sites.azure.name)
    except FailbackError:
        m.azure_power = Power.UNKNOWN
    else:
        m.azure_vm = azure_vm
        if azure_vm is None:
            m.azure_power = Power.MISSING
        elif azure_vm.power_state in (PowerState.STOPPED, PowerState.DEALLOCATED):
            m.azure_power = Power.STOPPED
            m.azure_stopped_at = azure_vm.power_since
        elif azure_vm.power_state is PowerState.UNKNOWN:
            m.azure_power = Power.UNKNOWN
        else:
            m.azure_power = Power.RUNNING  # running, starting, stopping: not confirmed off
    ps = sites.process_server
    # The session the run's cancel resumes: the forward one (a replication group's, R-GRP-1)
    # or the VM's reverse one.
    key = forward_key(vm) if towards is Site.ON_PREM else vm.meta.name
    session = await deps.sessions.session(ps.endpoint, ps.tls, vm.meta.namespace, key)
    m.session = not isinstance(session, (Refused, Unanswered))
    try:
        m.target = await sites.vcenter.vm(target_vm_uuid(vm))
    except FailbackError as exc:
        m.target = None
        m.unreachable = str(exc)


def _replicas(vm: protectedvm.ProtectedVM) -> tuple[str, ...]:
    """The Azure replica of every disk, the OS disk first (as ``targetDisks``)."""
    disks = vm.status.replication.target_disks if vm.status.replication else ()
    return tuple(replica_name(t.source) for t in disks)


class AzureLists:
    """One list of point snapshots and one of disks per resource group and round, shared by
    the members that read them (a plan of 100 VMs in one resource group: 2 ARM reads, not
    200)."""

    def __init__(self) -> None:
        self._reads: dict[tuple[str, int, str], asyncio.Future[Any]] = {}

    async def _once(self, key: tuple[str, int, str], read: Callable[[], Awaitable[Any]]) -> Any:
        found = self._reads.get(key)
        if found is None:
            found = self._reads[key] = asyncio.ensure_future(read())
        return await asyncio.shield(found)

    async def snapshots(self, compute: AzureCompute, rg: str) -> list[Snapshot]:
        got: list[Snapshot] = await self._once(
            ("snapshots", id(compute), rg),
            lambda: compute.list_snapshots(rg, {ROLE: RECOVERY_POINT}),
        )
        return got

    async def disks(self, compute: AzureCompute, rg: str) -> list[ManagedDisk]:
        got: list[ManagedDisk] = await self._once(
            ("disks", id(compute), rg), lambda: compute.list_disks(rg)
        )
        return got


async def _observe_replicas(m: Member, deep: bool, run_id: str | None, lists: AzureLists) -> None:
    """The points of the member's Azure replicas and, in a run, the disks it copied."""
    assert m.vm is not None
    assert m.sites is not None
    compute, rg = m.sites.compute, m.sites.azure.resource_group
    replicas = _replicas(m.vm)
    m.failover_disks, m.failover_point = {}, None
    try:
        snaps = await lists.snapshots(compute, rg)
        m.replica_points = (
            points_of(
                (
                    PointSnapshot(x.name, x.tags, x.provisioning_state.lower() == "succeeded")
                    for x in snaps
                ),
                replicas,
            )
            if replicas
            else ()
        )
        m.points = tuple(p.point for p in m.replica_points)
        if not deep or run_id is None:
            return
        own = f"{m.vm.meta.namespace}/{m.vm.meta.name}"
        made = [
            d
            for d in await lists.disks(compute, rg)
            if d.tags.get(ROLE) == FAILOVER
            and d.tags.get(TAG_RUN) == run_id
            and d.tags.get(TAG_VM) == own
        ]
    except FailbackError as exc:
        m.notes.append(f"Azure could not be read: {exc}")
        return
    # A run keeps the point it began copying (newer points of a fenced VM hold the same
    # data; an Unplanned run's point is the user's choice).
    points = sorted({d.tags.get(TAG_POINT, "") for d in made})
    if points:
        m.failover_point = points[-1]
        m.failover_disks = {
            int(index): d
            for d in made
            if d.tags.get(TAG_POINT) == m.failover_point
            and (index := d.tags.get(TAG_INDEX, "")).isdigit()
        }


def _alternate(vm: protectedvm.ProtectedVM) -> bool:
    original = vm.spec.on_prem.original_vm
    return original is None or target_vm_uuid(vm) != original.instance_uuid


def _choose(plan: FailbackPlan, members: Sequence[Member]) -> dict[str, RecoveryPoint] | NoPoint:
    """Every member's point: a Planned run takes each VM's newest (its final sync's, once
    fenced: zero data loss); an Unplanned one the plan's ``recoveryPoint``, aligned across
    members with multiVmConsistency."""
    rp = plan.spec.failover.recovery_point
    groups = {m.name: m.points for m in members if m.vm is not None}
    planned = plan.spec.failover.type is FailoverType.PLANNED
    return choose_points(
        groups,
        RecoveryPointType.LATEST if planned else rp.type,
        time=None if planned else rp.time,
        multi_vm_consistency=plan.spec.failover.multi_vm_consistency and not planned,
    )


def _facts(
    m: Member,
    chosen: dict[str, RecoveryPoint] | NoPoint,
    steps: Sequence[Any],
    spec: failbackplan.FailbackPlanSpec,
) -> VMFacts:
    if m.vm is None or m.sites is None:
        return VMFacts(m.name, ready=False, not_ready_reason=m.problem or "not found")
    ready = find_condition(m.vm.status.conditions, ConditionType.READY)
    point = chosen.get(m.name) if isinstance(chosen, dict) else None
    g = m.mt_group
    newest = g.newest_point if g is not None else None
    released = g is not None and g.state is GroupState.RELEASED
    # Or the group is gone because this run restored and committed it (a crash before the
    # commit was recorded): the disks are on the VM already. Never before this run restored
    # it: before reprotect moves them, the original VM holds its own, stale, disks.
    restored_here = steplog.ended(steps, StepName.RESTORE, m.name) is not None
    restored = (
        released and newest is not None and point is not None and newest.id == point.id
    ) or (
        g is None
        and restored_here
        and bool(m.files)
        and m.target is not None
        and _has(m.target, m.files)
    )
    if restored and point is None and newest is not None:
        point = newest
    stopped_at = m.azure_stopped_at or steplog.ended(steps, StepName.FENCE, m.name)
    synced = newest is not None and stopped_at is not None and newest.source_time > stopped_at
    target = m.target
    if target is None:
        onprem = Power.UNKNOWN if m.unreachable else Power.MISSING
    else:
        onprem = Power.STOPPED if target.power_state is VPower.OFF else Power.RUNNING
    tools = target.tools_running if target is not None else None
    version = target.tools_version_status if target is not None else None
    guest_ready = tools == TOOLS_RUNNING or (
        onprem is Power.RUNNING and version in (TOOLS_NOT_INSTALLED, None)
    )
    if guest_ready and tools != TOOLS_RUNNING:
        m.notes.append("VMware Tools are not installed: the guest's readiness is not checked")
    return VMFacts(
        name=m.name,
        ready=ready is not None and ready.status == TRUE,
        not_ready_reason=(ready.message if ready is not None else "no status yet") or "",
        point=point.id if point is not None else None,
        azure=m.azure_power,
        onprem=onprem,
        synced_after_fence=synced,
        restored=restored,
        attached=target is not None and bool(m.files) and _has(target, m.files),
        guest_ready=guest_ready,
        replicating_from_azure=m.session,
        replication_group=m.vm.spec.replication_group,
    )


def _failover_facts(
    m: Member, chosen: dict[str, RecoveryPoint] | NoPoint, steps: Sequence[Any]
) -> VMFacts:
    """A member's facts in a run towards Azure (see :class:`VMFacts`)."""
    if m.vm is None or m.sites is None:
        return VMFacts(m.name, ready=False, not_ready_reason=m.problem or "not found")
    ready = find_condition(m.vm.status.conditions, ConditionType.READY)
    point = chosen.get(m.name) if isinstance(chosen, dict) else None
    point_id = m.failover_point or (point.id if point is not None else None)
    target = m.target
    if target is None:
        onprem = Power.UNKNOWN if m.unreachable else Power.MISSING
    else:
        onprem = Power.STOPPED if target.power_state is VPower.OFF else Power.RUNNING
    fenced_at = steplog.ended(steps, StepName.FENCE, m.name)
    newest = m.replica_points[-1].point if m.replica_points else None
    synced = newest is not None and fenced_at is not None and newest.source_time > fenced_at
    count = len(_replicas(m.vm))
    disks = [m.failover_disks.get(i) for i in range(count)]
    restored = (
        count > 0
        and m.failover_point is not None
        and all(d is not None and d.provisioning_state.lower() == "succeeded" for d in disks)
    )
    azure_vm = m.azure_vm
    attached = (
        restored
        and azure_vm is not None
        and _boots_from(azure_vm, [d.id for d in disks if d is not None])
    )
    running = (
        azure_vm is not None
        and azure_vm.power_state is PowerState.RUNNING
        and azure_vm.provisioning_state.lower() == "succeeded"
    )
    return VMFacts(
        name=m.name,
        ready=ready is not None and ready.status == TRUE,
        not_ready_reason=(ready.message if ready is not None else "no status yet") or "",
        point=point_id,
        azure=m.azure_power,
        onprem=onprem,
        synced_after_fence=synced,
        restored=restored,
        attached=attached,
        guest_ready=running,
        replicating_to_azure=m.session,
    )


def _boots_from(vm: VirtualMachine, disk_ids: Sequence[str]) -> bool:
    """Whether ``vm`` has exactly ``disk_ids`` (the OS disk first, then LUN 0, 1, ...)."""
    have = [vm.os_disk.id, *(d.id for d in sorted(vm.data_disks, key=lambda d: d.lun or 0))]
    return [(x or "").lower() for x in have] == [x.lower() for x in disk_ids]


def _has(target: VM, files: Sequence[str]) -> bool:
    attached = {d.file_name for d in target.disks}
    return all(f in attached for f in files)


# ------------------------------------------------------------------ act


async def _perform(
    actions: Sequence[Action],
    members: Sequence[Member],
    deps: Deps,
    events: list[Event],
    run_id: str | None,
    target: Site,
) -> tuple[dict[steplog.Key, str], dict[steplog.Key, str]]:
    """Run this pass's actions together; the steps that failed for good, and those that
    will be retried, with why."""
    by_name = {m.name: m for m in members}
    failures: dict[steplog.Key, str] = {}
    retrying: dict[steplog.Key, str] = {}

    async def one(action: Action) -> None:
        m = by_name.get(action.vm or "")
        step = action.step or _STEP_OF[action.kind]
        key = (str(step), m.group if m is not None else None, action.vm)
        try:
            if action.kind is ActionKind.COMMIT:
                await asyncio.gather(*(_commit(x, deps, target) for x in members))
            elif action.kind is ActionKind.START_REPROTECT:
                return  # the ProtectedVM controller starts it once the plan says Reprotecting
            elif m is not None:
                await _act(action, m, deps, run_id)
        except Retryable as exc:
            retrying[key] = str(exc)
        except FailbackError as exc:
            failures[key] = str(exc)

    async def in_turn(restores: Sequence[Action]) -> None:
        # Members of a replication group share one master target group: one restore at a
        # time, each looking at it afresh (the first rolls it back and releases it for all).
        for action in restores:
            await one(action)

    restores = [a for a in actions if a.kind is ActionKind.RESTORE_POINT]
    await asyncio.gather(
        in_turn(restores), *(one(a) for a in actions if a.kind is not ActionKind.RESTORE_POINT)
    )
    return failures, retrying


_STEP_OF = {
    ActionKind.POWER_OFF_AZURE: StepName.FENCE,
    ActionKind.SYNC_NOW: StepName.FINAL_SYNC,
    ActionKind.SYNC_REPLICAS_NOW: StepName.FINAL_SYNC,
    ActionKind.RESTORE_POINT: StepName.RESTORE,
    ActionKind.ATTACH_DISKS: StepName.ATTACH,
    ActionKind.POWER_ON_ONPREM: StepName.POWER_ON,
    ActionKind.COMMIT: StepName.COMMIT,
    ActionKind.START_REPROTECT: StepName.REPROTECT,
    ActionKind.POWER_OFF_ONPREM: StepName.CANCEL_POWER_OFF,
    ActionKind.START_AZURE: StepName.CANCEL_START_AZURE,
    ActionKind.RESUME_REPLICATION: StepName.CANCEL_RESUME,
    ActionKind.DISKS_FROM_POINT: StepName.RESTORE,
    ActionKind.SET_AZURE_DISKS: StepName.ATTACH,
}


def _ok(got: object, who: str, *, missing_ok: bool = False) -> None:
    if isinstance(got, Refused):
        if missing_ok and got.status == 404:
            return
        if got.status >= 500 or got.status == 429:
            raise Retryable(f"the {who} failed: {got.code}: {got.message}", delay=5)
        raise Permanent(f"the {who} refused: {got.code}: {got.message}")
    if isinstance(got, Unanswered):
        raise Retryable(f"the {who} did not answer: {got.message}", delay=10)


async def _wait(sites: Sites, started: object) -> None:
    moref = getattr(started, "moref", None)
    if moref is None:
        return
    state = await sites.vcenter.wait(moref, TASK_PATIENCE)
    if state.state == "error":
        raise Retryable(f"vSphere task {moref} failed: {state.error}", delay=5)


async def _act(action: Action, m: Member, deps: Deps, run_id: str | None) -> None:
    if m.vm is None or m.sites is None:
        return
    sites, vm = m.sites, m.vm
    ns, name = vm.meta.namespace, vm.meta.name
    az, ps, mt = sites.azure, sites.process_server, sites.master_target
    kind = action.kind
    if kind is ActionKind.POWER_OFF_AZURE:
        await sites.compute.begin_deallocate(az.resource_group, az.name)
    elif kind is ActionKind.START_AZURE:
        await sites.compute.begin_start(az.resource_group, az.name)
    elif kind in (ActionKind.SYNC_NOW, ActionKind.SYNC_REPLICAS_NOW):
        key = name if kind is ActionKind.SYNC_REPLICAS_NOW else forward_key(vm)
        got = await deps.sessions.run_cycle(ps.endpoint, ps.tls, ns, key)
        if isinstance(got, Refused) and got.status in (404, 409):
            return  # a cycle runs already, or the session is gone: the next pass looks
        _ok(got, "process server")
    elif kind is ActionKind.RESTORE_POINT and action.point is not None:
        key = forward_key(vm)
        group = group_name(ns, key)
        # Looked at afresh: another member of its replication group may have restored it.
        _ok(await deps.sessions.delete_session(ps.endpoint, ps.tls, ns, key),
            "process server", missing_ok=True)  # fmt: skip
        seen = await deps.points.group(mt.endpoint, mt.tls, group)
        g = seen if isinstance(seen, GroupStatus) else m.mt_group
        if g is not None and g.state is GroupState.ACTIVE:
            newest = g.newest_point
            if g.cycle_open or newest is None or newest.id != action.point:
                _ok(await deps.points.rollback(mt.endpoint, mt.tls, group, action.point),
                    "master target")  # fmt: skip
            _ok(await deps.points.release(mt.endpoint, mt.tls, group), "master target")
    elif kind is ActionKind.ATTACH_DISKS:
        await _attach(m)
    elif kind is ActionKind.POWER_ON_ONPREM:
        await _wait(sites, await sites.vcenter.power_on(target_vm_uuid(vm)))
    elif kind is ActionKind.POWER_OFF_ONPREM:
        await _wait(sites, await sites.vcenter.power_off(target_vm_uuid(vm)))
    elif kind is ActionKind.RESUME_REPLICATION:
        return  # the ProtectedVM controller resumes it once the plan says Cancelling
    elif kind is ActionKind.DISKS_FROM_POINT and action.point is not None and run_id:
        await _disks_from_point(m, action.point, run_id)
    elif kind is ActionKind.SET_AZURE_DISKS:
        await _set_azure_disks(m)


async def _attach(m: Member) -> None:
    """Move the target disks from the master target VM to the VM the member comes back as."""
    if m.vm is None or m.sites is None:
        return
    sites, vm, files = m.sites, m.vm, m.files
    if not files:
        raise Permanent("the ProtectedVM records no target disks (status.replication)")
    vc = sites.vcenter
    async with reconfiguring(vc.server, sites.master_target_vm):
        await _wait(sites, await vc.detach_disks(sites.master_target_vm, files))
    target = target_vm_uuid(vm)
    if not _alternate(vm):
        await _wait(sites, await vc.attach_disks(target, files, sizes=m.sizes))
        return
    placement = vm.spec.on_prem.alternate_placement
    if placement is None:
        raise Permanent("spec.onPrem.alternatePlacement is not set: no place for a new VM")
    spec = NewVM(
        name=vm.meta.name,
        guest_id=GUEST_IDS.get(str(vm.spec.os_type), "otherGuest64"),
        placement=VMPlacement(
            datacenter=placement.datacenter,
            datastore=placement.datastore,
            host=placement.host,
            cluster=placement.cluster,
            folder=placement.folder,
            networks=tuple(n.port_group for n in placement.networks),
        ),
        instance_uuid=target,
        disk_files=files,
        disk_sizes=m.sizes,
    )
    started = await vc.create_vm(spec)
    if isinstance(started, str):
        await _wait(sites, await vc.attach_disks(target, files, sizes=m.sizes))
    else:
        await _wait(sites, started)


async def _disks_from_point(m: Member, point_id: str, run_id: str) -> None:
    """Copy each replica's snapshot of ``point_id`` into a new managed disk, tagged with
    the run (a restarted run finds them; the Azure VM's own disks are never written)."""
    assert m.vm is not None
    assert m.sites is not None
    found = next((p for p in m.replica_points if p.point.id == point_id), None)
    if found is None:
        raise Retryable(f"point {point_id} of the Azure replicas is not found", delay=10)
    compute, rg, vm = m.sites.compute, m.sites.azure.resource_group, m.vm
    targets = vm.status.replication.target_disks if vm.status.replication else ()
    handles = []
    for index, (snapshot_name, t) in enumerate(zip(found.snapshots, targets, strict=True)):
        name = failover_disk_name(vm.meta.name, index, point_id)
        existing = await compute.get_disk(rg, name)
        if existing is not None:
            if existing.tags.get(TAG_RUN) != run_id or existing.tags.get(TAG_POINT) != point_id:
                raise Permanent(
                    f"disk {rg}/{name} exists but was not made by this run from point "
                    f"{point_id}: delete it, or choose another point"
                )
            continue
        snapshot = await compute.get_snapshot(rg, snapshot_name)
        if snapshot is None:
            raise Retryable(f"the snapshot {snapshot_name} of point {point_id} is gone", delay=10)
        tags = {
            ROLE: FAILOVER,
            TAG_POINT: point_id,
            TAG_RUN: run_id,
            TAG_VM: f"{vm.meta.namespace}/{vm.meta.name}",
            TAG_INDEX: str(index),
            TAG_SOURCE_DISK: t.source,
        }
        os_type = str(vm.spec.os_type) if index == 0 else None
        handles.append(
            await compute.begin_disk_create_from_snapshot(rg, name, snapshot, tags, os_type)
        )
    for handle in handles:
        await compute.wait(handle)


async def _set_azure_disks(m: Member) -> None:
    """Make the deallocated Azure VM boot from this run's disks. A LUN another disk still
    holds is freed first (Azure attaches nothing over it); its old disks are kept."""
    assert m.sites is not None
    vm = m.azure_vm
    if vm is None:
        raise Retryable("the Azure VM could not be read", delay=10)
    if vm.power_state is not PowerState.DEALLOCATED:
        raise Retryable(
            f"the Azure VM is {vm.power_state}: its disks change only while deallocated",
            delay=10,
        )
    compute, az = m.sites.compute, m.sites.azure
    disks = [m.failover_disks[i] for i in sorted(m.failover_disks)]
    wanted = [(lun, d.id) for lun, d in enumerate(disks[1:])]
    by_lun = {d.lun: (d.id or "").lower() for d in vm.data_disks}
    keep = [(lun, i) for lun, i in wanted if by_lun.get(lun) == i.lower()]
    if len(keep) != len(by_lun):
        await compute.wait(
            await compute.begin_vm_set_disks(az.resource_group, az.name, disks[0].id, keep)
        )
    await compute.wait(
        await compute.begin_vm_set_disks(az.resource_group, az.name, disks[0].id, wanted)
    )


async def _commit(m: Member, deps: Deps, target: Site) -> None:
    """Make the run final: a failback discards the master target's points; a failover
    ends the reverse session (the VM's Azure disks hold the chosen point)."""
    if m.vm is None or m.sites is None:
        return
    if target is Site.AZURE:
        ps = m.sites.process_server
        _ok(await deps.sessions.delete_session(ps.endpoint, ps.tls, m.vm.meta.namespace,
                                               m.vm.meta.name), "process server",
            missing_ok=True)  # fmt: skip
        return
    mt = m.sites.master_target
    group = group_name(m.vm.meta.namespace, forward_key(m.vm))
    _ok(await deps.points.delete_group(mt.endpoint, mt.tls, group), "master target",
        missing_ok=True)  # fmt: skip


# ------------------------------------------------------------------ report


def _annotate(
    lines: Sequence[machine.StepLine],
    members: Sequence[Member],
    spec: failbackplan.FailbackPlanSpec,
) -> list[machine.StepLine]:
    """Add where each VM comes back and what moves to its preflight line; the notes (R-POST-1/2)
    to its guest-ready line."""
    by_name = {m.name: m for m in members}
    out = []
    for line in lines:
        m = by_name.get(line.vm or "")
        if m is not None and m.vm is not None and line.name is StepName.PREFLIGHT:
            where = _where(m, spec)
            out.append(replace(line, message=f"{line.message}; {where}" if line.message else where))
        elif m is not None and line.name is StepName.GUEST_READY and m.notes and not line.message:
            out.append(replace(line, message="; ".join(m.notes)))
        else:
            out.append(line)
    return out


def _where(m: Member, spec: failbackplan.FailbackPlanSpec) -> str:
    assert m.vm is not None
    location = m.vm.status.location
    target = location.target if location is not None else None
    size = sum(
        t.size_bytes
        for t in (m.vm.status.replication.target_disks if m.vm.status.replication else ())
    )
    sync = "final delta sync" if spec.failover.type is FailoverType.PLANNED else "no final sync"
    return f"to the {target or 'unknown'} location; {sync}; disks {size} bytes"


def _site(members: Sequence[Member], phase: PlanPhase) -> ObservedSite:
    on = sum(1 for m in members if m.target is not None and m.target.power_state is VPower.ON)
    if on == 0:
        return ObservedSite.AZURE
    return ObservedSite.ON_PREM if on == len(members) else ObservedSite.MIXED


_PROGRESS = {
    PlanPhase.VALIDATING: Reason.VALIDATING,
    PlanPhase.FAILING_OVER: Reason.FAILING_OVER,
    PlanPhase.COMMITTING: Reason.COMMITTING,
    PlanPhase.REPROTECTING: Reason.REPROTECTING,
    PlanPhase.CANCELLING: Reason.CANCELLING,
}


def _conditions(
    plan: FailbackPlan,
    members: Sequence[Member],
    others: Sequence[FailbackPlan],
    chosen: dict[str, RecoveryPoint] | NoPoint,
    decision: machine.Decision,
    phase: PlanPhase,
    run_id: str | None,
    target: Site | None,
    now: dt.datetime,
    split: Mapping[str, str],
) -> list[Condition]:
    gen = plan.meta.generation
    conds: list[Condition] = list(plan.status.conditions)

    def put(type_: str, status: Any, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, Condition(type_, status, reason, message, gen, now))

    missing = [m.name for m in members if m.vm is None]
    if missing:
        put(ConditionType.MEMBERS_FOUND, FALSE, Reason.MEMBER_NOT_FOUND,
            f"no ProtectedVM {', '.join(missing)} in namespace {plan.meta.namespace}")  # fmt: skip
    else:
        put(ConditionType.MEMBERS_FOUND, TRUE, Reason.CHECK_PASSED, "every member exists")
    shared = [(m.name, o.meta.name) for o in others for m in members if m.name in o.spec.members]
    if shared:
        vm, other = shared[0]
        put(ConditionType.MEMBERS_EXCLUSIVE, FALSE, Reason.VM_IN_ANOTHER_PLAN,
            f"{vm} is also in FailbackPlan {other}: a VM belongs to at most one plan")  # fmt: skip
    else:
        put(
            ConditionType.MEMBERS_EXCLUSIVE,
            TRUE,
            Reason.CHECK_PASSED,
            "no member is in another plan",
        )
    if split:
        put(ConditionType.REPLICATION_GROUP_CONSISTENT, FALSE, Reason.REPLICATION_GROUP_SPLIT,
            next(iter(split.values())))  # fmt: skip
    else:
        put(ConditionType.REPLICATION_GROUP_CONSISTENT, TRUE, Reason.CHECK_PASSED,
            "every replication group is whole in one group of this plan")  # fmt: skip
    not_ready = [
        m.name
        for m in members
        if m.vm is None
        or (c := find_condition(m.vm.status.conditions, ConditionType.READY)) is None
        or c.status != TRUE
    ]
    held = run_id is not None and phase not in (PlanPhase.READY, PlanPhase.VALIDATING)
    if not_ready and not held:
        put(ConditionType.MEMBERS_READY, FALSE, Reason.MEMBERS_NOT_READY,
            f"not Ready: {', '.join(not_ready)}")  # fmt: skip
    else:
        put(ConditionType.MEMBERS_READY, TRUE, Reason.CHECK_PASSED, "every member is Ready")
    if isinstance(chosen, NoPoint) and not held:
        put(ConditionType.RECOVERY_POINT_AVAILABLE, FALSE, Reason.RECOVERY_POINT_NOT_FOUND,
            chosen.message)  # fmt: skip
    else:
        put(ConditionType.RECOVERY_POINT_AVAILABLE, TRUE, Reason.CHECK_PASSED,
            "every member has the recovery point asked for")  # fmt: skip
    blocked = decision.blocked
    if phase in _PROGRESS:
        put(ConditionType.PROGRESSING, TRUE, _PROGRESS[phase], blocked or f"{phase}")
    elif phase is PlanPhase.FAILED_OVER:
        put(ConditionType.PROGRESSING, FALSE, Reason.AWAITING_COMMIT_APPROVAL, blocked)
    else:
        put(ConditionType.PROGRESSING, FALSE, Reason.IDLE, "no run is in progress")
    if plan.spec.dry_run:
        put(ConditionType.SUCCEEDED, TRUE, Reason.DRY_RUN_COMPLETED,
            "the dry run published its steps in status.steps; nothing was changed")  # fmt: skip
    elif phase is PlanPhase.FAILED:
        put(ConditionType.SUCCEEDED, FALSE, Reason.RUN_FAILED, blocked or "a step failed")
    elif phase is PlanPhase.COMPLETED:
        put(ConditionType.SUCCEEDED, TRUE, Reason.COMPLETED,
            "the failover to Azure is committed and replication to on-premises runs"
            if target is Site.AZURE
            else "the failback is committed and replication to Azure runs")  # fmt: skip
    elif phase is PlanPhase.COMMITTED:
        put(ConditionType.SUCCEEDED, TRUE, Reason.COMMITTED,
            "the failover to Azure is committed" if target is Site.AZURE
            else "the failback is committed")  # fmt: skip
    elif decision.done and plan.status.run_id is not None:
        where = "in Azure" if plan.spec.active_site is Site.AZURE else "on-premises"
        put(ConditionType.SUCCEEDED, FALSE, Reason.CANCELLED,
            f"the run was cancelled; the VMs run {where}")  # fmt: skip
    elif run_id is not None:
        put(ConditionType.SUCCEEDED, UNKNOWN, Reason.RUN_IN_PROGRESS, blocked or "the run goes on")
    else:
        succeeded = find_condition(conds, ConditionType.SUCCEEDED)
        if succeeded is None or succeeded.reason in (Reason.INITIALIZING, Reason.RUN_IN_PROGRESS):
            put(ConditionType.SUCCEEDED, UNKNOWN, Reason.NO_RUN, "no failback was asked for yet")
    return refresh_conditions(
        conds, failbackplan.CONDITION_TYPES, failbackplan.VALIDATIONS, gen, now
    )
