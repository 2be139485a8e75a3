"""A ProtectedVM's replication: observe the data plane and both sites, perform the one step
``domain.reprotect`` asks for, and report progress, RPO and recovery points.

With no plan run driving it, a VM replicates from where it runs to the other site
(reprotect, R-FLOW-1/3): Azure → on-premises through the process server into the master
target's group, or on-premises → Azure into replica disks after a committed failback. While
a FailbackPlan's run moves the VM, this pass only observes: the plan drives the session and
the disks.

Drift (``domain.reprotect``, *Drift*): a pass towards on-premises that finds an
on-premises VM running with the target disks, or the Azure VM gone (a fresh read says 404),
pauses the process server's session (the same spec with ``paused: true``) and reports
``Paused`` with the reason; a later pass that finds every step holding resumes it. A
master target moved by Storage vMotion (R-PRE-4) stops every disk step, not the session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from failback.api import mastertarget, processserver, protectedvm
from failback.api.common import Site
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
)
from failback.api.protectedvm import Direction, Replication, ReplicationState, TargetDisk
from failback.domain import reprotect
from failback.domain.outcome import Refused, Unanswered
from failback.domain.recoverypoints import GroupStatus
from failback.domain.replicas import replica_name
from failback.domain.replication import (
    AzureToOnPremSpec,
    MasterTargetRef,
    OnPremToAzureSpec,
    ReplicaDisk,
    SessionStatus,
    SourceDisk,
    VCenterVM,
)
from failback.errors import FailbackError, Retryable
from failback.ports.azure import AzureClients, AzurePermanent, AzureRetryable, VirtualMachine
from failback.ports.kubernetes import SecretReader
from failback.ports.mastertarget import RecoveryPoints
from failback.ports.processserver import ReplicationSessions
from failback.ports.vsphere import NewDisk, VCenters
from failback.services import processserver as ps_service
from failback.services import vcenter as vc_service
from failback.services.sites import (
    Sites,
    azure_disks,
    failback_vm_uuid,
    reconfiguring,
    resolve,
    resource_group_of,
    target_vm_uuid,
    vsphere_vm,
)

Verdict = tuple[ConditionStatus, str, str]
"""A condition's status, reason and message."""

STEPS_PER_PASS = 8
"""At most this many replication steps in one pass (each after a fresh observation)."""

TASK_PATIENCE = 20.0
"""Seconds one pass waits for a vSphere task it started (longer ones: the next pass)."""

REVERSE_MIN_INTERVAL = 45.0
"""Seconds between two cycles into Azure at least: each makes a snapshot of every replica,
and Azure allows 7 per disk per 5 minutes."""


@dataclass(frozen=True)
class Deps:
    secrets: SecretReader
    vcenters: VCenters
    azure: AzureClients
    sessions: ReplicationSessions
    points: RecoveryPoints
    interval: float = 300.0


@dataclass(frozen=True)
class Ownership:
    """What the FailbackPlan listing the VM (if any) says about it."""

    plan: str | None = None
    held: bool = False
    """A run of the plan drives the VM now: observe only."""
    active_on_prem: bool = False
    """A failback of the VM was committed: it runs on-premises."""
    reprotect: bool = True
    """Replicate back to Azure once on-premises (the plan's reprotectAfterCommit)."""
    awaiting_commit: bool = False
    peers: tuple[protectedvm.ProtectedVM, ...] = ()
    """The other members of the VM's replication group (R-GRP-1)."""


@dataclass(frozen=True)
class Result:
    conditions: tuple[Condition, ...]
    replication: Replication
    active_site: Site
    rpo_seconds: int | None = None
    recovery_points: protectedvm.RecoveryPoints | None = None
    allowed_actions: tuple[protectedvm.Action, ...] = ()
    retry_after: float | None = None
    events: tuple[str, ...] = field(default=())
    """What this pass did, for the VM's Events."""


def rounded_rpo(age: dt.timedelta, vm: protectedvm.ProtectedVM) -> int:
    """The RPO in whole steps of 1/60 of the VM's threshold (15 s for 15 minutes): exact
    enough to judge it, and an idle VM's status does not change on every pass (which would
    be one etcd write per VM per re-check)."""
    step = max(1, int(vm.spec.policy.rpo_threshold.total_seconds()) // 60)
    seconds = max(0, int(age.total_seconds()))
    return seconds - seconds % step


def session_interval(vm: protectedvm.ProtectedVM, configured: float) -> float:
    """Cycles at least three times per RPO threshold, so one missed cycle does not breach it."""
    return max(1.0, min(configured, vm.spec.policy.rpo_threshold.total_seconds() / 3))


def _conds(gen: int, now: dt.datetime, health: Verdict, rpo: Verdict) -> tuple[Condition, ...]:
    return (
        Condition(ConditionType.REPLICATION_HEALTHY, *health, gen, now),
        Condition(ConditionType.RPO_WITHIN_THRESHOLD, *rpo, gen, now),
    )


NO_POINT: Verdict = (UNKNOWN, Reason.NO_RECOVERY_POINT, "No durable recovery point exists yet.")


async def replicate(
    vm: protectedvm.ProtectedVM,
    mt: mastertarget.MasterTarget | None,
    ps: processserver.ProcessServer | None,
    azure_vm: VirtualMachine | None,
    alternate: bool,
    own: Ownership,
    startable: bool,
    deps: Deps,
    now: dt.datetime,
) -> Result:
    """One pass of ``vm``'s replication (see the module doc)."""
    gen = vm.meta.generation
    site = Site.ON_PREM if own.active_on_prem else Site.AZURE
    old = vm.status.replication or Replication()
    direction = Direction.ON_PREM_TO_AZURE if own.active_on_prem else Direction.AZURE_TO_ON_PREM
    idle = replace(old, direction=direction, state=old.state or ReplicationState.NOT_STARTED)
    message = "Replication starts once every other check of the VM passes."
    not_started = Result(
        _conds(gen, now, (UNKNOWN, Reason.REPLICATION_NOT_STARTED, message), NO_POINT),
        idle,
        site,
    )
    gated = not startable and not own.held
    # An Azure VM gone while replication into targets ran: confirmed by a fresh read below,
    # it pauses the session even while another check fails (those gate the start only).
    watch = not own.active_on_prem and not own.held and azure_vm is None and bool(old.target_disks)
    if mt is None or ps is None or (gated and not watch):
        return not_started
    moved: Verdict | None = None
    found = find_condition(mt.status.conditions, ConditionType.NO_STORAGE_VMOTION)
    if not own.held and not own.active_on_prem and found is not None and found.status == FALSE:
        # R-PRE-4: the MT's disks moved; the recorded target files are not where they were.
        # No disk is attached, detached or created until it is fixed; the session goes on
        # (the MT writes the same disks, by UUID), unless a drift pauses it.
        moved = (
            FALSE,
            Reason.MASTER_TARGET_NOT_READY,
            f"MasterTarget {mt.meta.name}: {found.message} Replication attaches or moves no "
            "disk until it is fixed; the process server goes on writing the same disks.",
        )
    try:
        sites = await resolve(vm, mt, ps, deps.secrets, deps.vcenters, deps.azure, now)
        if own.active_on_prem:
            return await _reverse(vm, sites, own, deps, now, idle)
        gone = watch and await _azure_vm_gone(sites)
        if gated and not gone:
            return not_started
        acting = not gated and moved is None
        return await _forward(vm, sites, azure_vm, alternate, own, deps, now, idle,
                              gone=gone, acting=acting, moved=moved)  # fmt: skip
    except (ps_service.Unresolved, vc_service.Unresolved) as exc:
        if gated:
            return not_started
        health = (UNKNOWN, Reason.REPLICATION_NOT_STARTED, f"cannot replicate yet: {exc}")
        return Result(_conds(gen, now, health, NO_POINT), idle, site)
    except FailbackError as exc:
        if gated and isinstance(exc, Retryable):
            return not_started  # the Azure VM could not be confirmed gone: as before
        delay = exc.delay if isinstance(exc, Retryable) else None
        status = UNKNOWN if isinstance(exc, Retryable) else FALSE
        health = (status, Reason.REPLICATION_FAILED, f"replication step failed: {exc}")
        return Result(_conds(gen, now, health, NO_POINT), idle, site, retry_after=delay)


async def _azure_vm_gone(sites: Sites) -> bool:
    """A fresh read of the Azure VM: True only when Azure answers that it does not exist
    (a fault says nothing: the session is left as it is)."""
    try:
        found = await sites.compute.get_vm(sites.azure.resource_group, sites.azure.name)
    except (AzureRetryable, AzurePermanent):
        return False
    return found is None


async def _session(deps: Deps, sites: Sites, ns: str, name: str) -> SessionStatus | None:
    ps = sites.process_server
    got = await deps.sessions.session(ps.endpoint, ps.tls, ns, name)
    if isinstance(got, Refused):
        if got.status == 404:
            return None
        raise FailbackError(f"process server refused: {got.code}: {got.message}")
    if isinstance(got, Unanswered):
        raise Retryable(f"process server {ps.endpoint}: {got.message}", delay=10)
    return got


async def _group(deps: Deps, sites: Sites, group: str) -> GroupStatus | None:
    mt = sites.master_target
    got = await deps.points.group(mt.endpoint, mt.tls, group)
    if isinstance(got, Refused):
        if got.status == 404:
            return None
        raise FailbackError(f"master target refused: {got.code}: {got.message}")
    if isinstance(got, Unanswered):
        raise Retryable(f"master target {mt.endpoint}: {got.message}", delay=10)
    return got


async def _wait_task(sites: Sites, started: object) -> None:
    moref = getattr(started, "moref", None)
    if moref is None:
        return
    state = await sites.vcenter.wait(moref, TASK_PATIENCE)
    if state.state == "error":
        raise FailbackError(f"vSphere task {moref} failed: {state.error}")


async def _forward(
    vm: protectedvm.ProtectedVM,
    sites: Sites,
    azure_vm: VirtualMachine | None,
    alternate: bool,
    own: Ownership,
    deps: Deps,
    now: dt.datetime,
    idle: Replication,
    *,
    gone: bool = False,
    acting: bool = True,
    moved: Verdict | None = None,
) -> Result:
    """Towards on-premises. ``gone``: a fresh read found no Azure VM; ``acting``: the steps
    may be taken (else they are only judged, for a drift to pause the session); ``moved``:
    the master target's Storage vMotion verdict (R-PRE-4), if it moved."""
    ns, name, gen = vm.meta.namespace, vm.meta.name, vm.meta.generation
    key = reprotect.forward_key(vm)
    group_name = reprotect.group_name(ns, key)
    session = await _session(deps, sites, ns, key)
    group = await _group(deps, sites, group_name)
    disks = await azure_disks(sites.compute, azure_vm) if azure_vm is not None else ()
    recorded = idle.target_disks
    events: list[str] = []
    step: reprotect.Step | None = None
    if own.held:
        pass  # the plan drives the session and the disks
    elif gone:
        step = reprotect.azure_vm_gone(vm.spec.azure.vm_id)
    elif azure_vm is not None:
        for _ in range(STEPS_PER_PASS if acting else 1):
            # Observe, act, and observe again: the steps that hold now are not redone.
            facts = await _forward_facts(vm, sites, alternate, disks, recorded, group, session)
            facts = replace(
                facts, replication_group=vm.spec.replication_group,
                members=_members(vm, recorded, own.peers),
            )  # fmt: skip
            step = reprotect.next_step(facts)
            if not acting or step.kind in (reprotect.StepKind.BLOCKED,
                                           reprotect.StepKind.REPLICATING,
                                           reprotect.StepKind.WAITING):  # fmt: skip
                break
            recorded = await _perform(vm, sites, facts, step, deps, group_name, own.peers)
            events.append(step.message)
            if step.kind is reprotect.StepKind.RECORD_TARGETS:
                break  # written to the status before anything is moved, so a crash finds them
            if step.kind is reprotect.StepKind.ENSURE_GROUP:
                group = await _group(deps, sites, group_name)
            if step.kind is reprotect.StepKind.ENSURE_SESSION:
                session = await _session(deps, sites, ns, key)
    paused = reprotect.session_paused(step, session, acting=acting)
    leads = not own.peers or name < min(p.meta.name for p in own.peers)
    if paused is not None and step is not None and leads:
        every = tuple(t for m in _members(vm, recorded, own.peers) for t in m.targets) or recorded
        session = await _pause(vm, sites, deps, group_name, disks, every, paused, own.peers)
        events.append(f"replication paused: {step.reason}" if paused else "replication resumed")
    drift = reprotect.pauses(step)
    total = sum(d.size_bytes for d in disks)
    replication = replace(
        reprotect.replication_status(
            Direction.AZURE_TO_ON_PREM, session, total, now, own.held, drift=drift
        ),
        target_disks=recorded,
    )
    health = _health(replication, session, step, own, moved)
    rpo, points, rpo_cond = _points(vm, group, now)
    has_point = group is not None and group.newest_point is not None
    actions = reprotect.allowed_actions(
        active_on_prem=False,
        held=own.held,
        has_point=has_point,
        replicating=session is not None,
        awaiting=own.awaiting_commit,
    )
    return Result(
        _conds(gen, now, health, rpo_cond),
        replication,
        Site.AZURE,
        rpo,
        points,
        actions,
        retry_after=None,
        events=tuple(events),
    )


async def _forward_facts(
    vm: protectedvm.ProtectedVM,
    sites: Sites,
    alternate: bool,
    disks: tuple[reprotect.AzureDisk, ...],
    recorded: tuple[TargetDisk, ...],
    group: GroupStatus | None,
    session: SessionStatus | None,
) -> reprotect.ForwardFacts:
    vc = sites.vcenter
    mt_vm = await vc.vm(sites.master_target_vm)
    if mt_vm is None:
        raise FailbackError(f"the master target VM {sites.master_target_vm} is not found")
    original = None
    if vm.spec.on_prem.original_vm is not None:
        found = await vc.vm(vm.spec.on_prem.original_vm.instance_uuid)
        original = vsphere_vm(found) if found is not None else None
    others = [original] if original is not None else []
    created = await vc.vm(failback_vm_uuid(vm))
    if created is not None:
        others.append(vsphere_vm(created))
    placement = vm.spec.on_prem.alternate_placement
    return reprotect.ForwardFacts(
        namespace=vm.meta.namespace,
        name=vm.meta.name,
        alternate=alternate,
        azure_disks=disks,
        recorded=recorded,
        master_target=vsphere_vm(mt_vm),
        others=tuple(others),
        original=original,
        alternate_datastore=placement.datastore if placement is not None else None,
        group=group,
        session=session,
    )


async def _perform(
    vm: protectedvm.ProtectedVM,
    sites: Sites,
    facts: reprotect.ForwardFacts,
    step: reprotect.Step,
    deps: Deps,
    group_name: str,
    peers: tuple[protectedvm.ProtectedVM, ...] = (),
) -> tuple[TargetDisk, ...]:
    """Do ``step``; the target disks to record."""
    kind = reprotect.StepKind
    vc = sites.vcenter
    if step.kind is kind.RECORD_TARGETS:
        return step.targets
    if step.kind is kind.DETACH and step.vm is not None:
        async with reconfiguring(vc.server, step.vm):
            await _wait_task(sites, await vc.detach_disks(step.vm, step.files))
    elif step.kind is kind.ATTACH_TO_MASTER_TARGET:
        placement = vm.spec.on_prem.alternate_placement
        if step.folder is not None and placement is not None:
            await vc.make_directory(placement.datacenter, step.folder)
        new = tuple(NewDisk(t.file, t.size_bytes) for t in step.new)
        sizes = {t.file: t.size_bytes for t in facts.recorded}
        async with reconfiguring(vc.server, sites.master_target_vm):
            started = await vc.attach_disks(sites.master_target_vm, step.files, new, sizes)
            await _wait_task(sites, started)
    elif step.kind is kind.ENSURE_GROUP:
        mt = sites.master_target
        wanted = [(t.uuid or "", t.size_bytes) for t in step.targets or facts.recorded]
        got = await deps.points.ensure_group(mt.endpoint, mt.tls, group_name, wanted)
        _check(got, "master target")
    elif step.kind is kind.ENSURE_SESSION:
        ps = sites.process_server
        every = step.targets or facts.recorded
        spec = _session_spec(vm, sites, deps, group_name, facts.azure_disks, every, peers=peers)
        got2 = await deps.sessions.put_session(
            ps.endpoint, ps.tls, vm.meta.namespace, reprotect.forward_key(vm), spec
        )
        _check(got2, "process server")
    return facts.recorded


def _session_spec(
    vm: protectedvm.ProtectedVM,
    sites: Sites,
    deps: Deps,
    group_name: str,
    disks: tuple[reprotect.AzureDisk, ...],
    recorded: tuple[TargetDisk, ...],
    paused: bool = False,
    *,
    peers: tuple[protectedvm.ProtectedVM, ...] = (),
) -> AzureToOnPremSpec:
    """The session's spec: each Azure disk into its recorded target. Without the Azure VM
    (``disks`` empty: it is gone) the recorded sources, in the VM's resource group. A
    replication group's: every member's disks (``recorded``), each in its VM's resource
    group, and every member's resource ID."""
    rgs = {a.name: a.resource_group for a in disks}
    for peer in peers:
        for t in peer.status.replication.target_disks if peer.status.replication else ():
            rgs.setdefault(t.source, resource_group_of(peer.spec.azure.vm_id, ""))
    return AzureToOnPremSpec(
        subscription_id=sites.azure.subscription,
        master_target=MasterTargetRef(sites.master_target.endpoint, group_name),
        disks=tuple(
            SourceDisk(rgs.get(t.source, sites.azure.resource_group), t.source, t.uuid or "")
            for t in recorded
        ),
        interval_seconds=session_interval(vm, deps.interval),
        paused=paused,
        vm_id=vm.spec.azure.vm_id,
        vm_ids=tuple(sorted(p.spec.azure.vm_id for p in peers)),
    )


def _members(
    vm: protectedvm.ProtectedVM,
    recorded: tuple[TargetDisk, ...],
    peers: tuple[protectedvm.ProtectedVM, ...],
) -> tuple[reprotect.GroupMember, ...]:
    """The replication group's members by name, this VM with what this pass recorded."""
    if vm.spec.replication_group is None:
        return ()
    members = [reprotect.GroupMember(vm.meta.name, recorded)] + [
        reprotect.GroupMember(
            p.meta.name, p.status.replication.target_disks if p.status.replication else ()
        )
        for p in peers
    ]
    return tuple(sorted(members, key=lambda m: m.name))


async def _pause(
    vm: protectedvm.ProtectedVM,
    sites: Sites,
    deps: Deps,
    group_name: str,
    disks: tuple[reprotect.AzureDisk, ...],
    recorded: tuple[TargetDisk, ...],
    paused: bool,
    peers: tuple[protectedvm.ProtectedVM, ...] = (),
) -> SessionStatus:
    """Pause (or resume) the session: the spec it was started with, ``paused`` changed
    (which the process server applies in place; anything else would be a conflict)."""
    ps = sites.process_server
    spec = _session_spec(vm, sites, deps, group_name, disks, recorded, paused, peers=peers)
    key = reprotect.forward_key(vm)
    got = await deps.sessions.put_session(ps.endpoint, ps.tls, vm.meta.namespace, key, spec)
    if not isinstance(got, Refused | Unanswered):
        return got
    what = "pause" if paused else "resume"
    if isinstance(got, Refused) and got.code == "session_conflict":
        raise FailbackError(
            f"the process server refused to {what} the session ({got.message}): its disks are "
            f"not the recorded targets in resource group {sites.azure.resource_group}; "
            f"{what} it with PUT /v1/sessions/{vm.meta.namespace}/{key} and "
            f'"paused": {str(paused).lower()} (never delete it: the master target keeps its '
            "points)"
        )
    _check(got, "process server")
    raise FailbackError(f"the process server did not {what} the session: {got}")


def _check(got: object, who: str) -> None:
    if isinstance(got, Refused):
        if got.status >= 500 or got.status == 429:
            raise Retryable(f"the {who} failed: {got.code}: {got.message}", delay=5)
        raise FailbackError(f"the {who} refused: {got.code}: {got.message}")
    if isinstance(got, Unanswered):
        raise Retryable(f"the {who} did not answer: {got.message}", delay=10)


def _health(
    replication: Replication,
    session: SessionStatus | None,
    step: reprotect.Step | None,
    own: Ownership,
    moved: Verdict | None = None,
) -> Verdict:
    blocked = step is not None and step.kind is reprotect.StepKind.BLOCKED
    if step is not None and blocked and (moved is None or reprotect.pauses(step)):
        return FALSE, step.reason or Reason.REPLICATION_FAILED, step.message
    if moved is not None:
        return moved
    if session is None:
        if own.held:
            return (
                FALSE,
                Reason.REPLICATION_PAUSED,
                f"FailbackPlan {own.plan} stopped replication: the VM is failing back",
            )
        doing = step.message if step is not None and step.message else "waiting for the Azure VM"
        return UNKNOWN, Reason.REPLICATION_NOT_STARTED, f"preparing replication: {doing}"
    state = replication.state
    if state is ReplicationState.ERROR and session.last_error is not None:
        e = session.last_error
        text = e.message if e.message.startswith(e.code) else f"{e.code}: {e.message}"
        return FALSE, Reason.REPLICATION_FAILED, text
    if state is ReplicationState.INITIAL_SYNC:
        return UNKNOWN, Reason.INITIAL_SYNC, "the first full copy runs"
    if state is ReplicationState.RESYNCHRONIZING:
        why = session.resync_pending or "a disk is copied again"
        return UNKNOWN, Reason.RESYNCHRONIZING, why
    if state is ReplicationState.PAUSED:
        return (
            FALSE,
            Reason.REPLICATION_PAUSED,
            "the process server's session is paused; it resumes by itself once every "
            "replication step holds",
        )
    note = (
        f"; {step.message}"
        if step is not None and step.kind is reprotect.StepKind.REPLICATING and step.message
        else ""
    )
    if session.last_error is not None and session.last_error.code == reprotect.THROTTLED:
        return (
            TRUE,
            Reason.REPLICATING,
            f"replicating, paced by Azure: {session.last_error.message}{note}",
        )
    return TRUE, Reason.REPLICATING, f"replicating; the newest point is {session.last_point}{note}"


def _points(
    vm: protectedvm.ProtectedVM, group: GroupStatus | None, now: dt.datetime
) -> tuple[int | None, protectedvm.RecoveryPoints | None, Verdict]:
    if group is None or group.newest_point is None:
        return None, None, NO_POINT
    newest = group.newest_point
    rpo = rounded_rpo(now - newest.source_time, vm)
    points = protectedvm.RecoveryPoints(
        latest=newest.source_time,
        latest_app_consistent=newest.source_time if newest.app_consistent else None,
        oldest=group.oldest_point.source_time if group.oldest_point else None,
        count=group.point_count,
    )
    threshold = int(vm.spec.policy.rpo_threshold.total_seconds())
    if rpo <= threshold:
        cond = (TRUE, Reason.RPO_MET, f"RPO {rpo}s is within {threshold}s")
    else:
        cond = (FALSE, Reason.RPO_EXCEEDED, f"RPO {rpo}s is above {threshold}s")
    return rpo, points, cond


# ------------------------------------------------------------------ back to Azure


async def _reverse(
    vm: protectedvm.ProtectedVM,
    sites: Sites,
    own: Ownership,
    deps: Deps,
    now: dt.datetime,
    idle: Replication,
) -> Result:
    """After a committed failback: replicate the on-premises VM into Azure replica disks."""
    ns, name, gen = vm.meta.namespace, vm.meta.name, vm.meta.generation
    session = await _session(deps, sites, ns, name)
    events: list[str] = []
    if session is None and own.reprotect and not own.held:
        onprem_uuid = target_vm_uuid(vm)
        found = await sites.vcenter.vm(onprem_uuid)
        if found is None:
            raise FailbackError(f"the on-premises VM {onprem_uuid} is not found")
        by_file = {d.file_name: d for d in found.disks}
        azure_vm = await sites.compute.get_vm(sites.azure.resource_group, sites.azure.name)
        location = azure_vm.location if azure_vm is not None else ""
        replicas = tuple(
            ReplicaDisk(by_file[t.file].uuid or "", sites.azure.resource_group,
                        replica_name(t.source))
            for t in idle.target_disks
            if t.file in by_file
        )  # fmt: skip
        spec = OnPremToAzureSpec(
            subscription_id=sites.azure.subscription,
            vcenter=VCenterVM(sites.vcenter.server, onprem_uuid),
            replicas=replicas,
            location=location,
            retention_seconds=vm.spec.policy.recovery_point_retention.total_seconds(),
            interval_seconds=max(REVERSE_MIN_INTERVAL, session_interval(vm, deps.interval)),
            vm_id=vm.spec.azure.vm_id,
        )
        ps = sites.process_server
        _check(
            await deps.sessions.put_session(ps.endpoint, ps.tls, ns, name, spec), "process server"
        )
        events.append("reverse replication to Azure started")
        session = await _session(deps, sites, ns, name)
    total = sum(t.size_bytes for t in idle.target_disks)
    replication = replace(
        reprotect.replication_status(Direction.ON_PREM_TO_AZURE, session, total, now),
        target_disks=idle.target_disks,
    )
    health: Verdict
    if session is None:
        health = (
            FALSE,
            Reason.UNPROTECTED,
            "the VM runs on-premises and nothing replicates it to Azure yet",
        )
    else:
        health = _health(replication, session, reprotect.Step(reprotect.StepKind.REPLICATING), own)
    rpo_cond: Verdict = NO_POINT
    rpo = None
    if session is not None and session.rpo_source_time is not None:
        rpo = rounded_rpo(now - session.rpo_source_time, vm)
        threshold = int(vm.spec.policy.rpo_threshold.total_seconds())
        rpo_cond = (
            (TRUE, Reason.RPO_MET, f"RPO {rpo}s is within {threshold}s")
            if rpo <= threshold
            else (FALSE, Reason.RPO_EXCEEDED, f"RPO {rpo}s is above {threshold}s")
        )
    actions = reprotect.allowed_actions(
        active_on_prem=True,
        held=own.held,
        has_point=False,
        replicating=session is not None,
        awaiting=False,
    )
    return Result(
        _conds(gen, now, health, rpo_cond), replication, Site.ON_PREM, rpo, None, actions,
        events=tuple(events),
    )  # fmt: skip
