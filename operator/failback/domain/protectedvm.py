"""The cross-object checks of a ProtectedVM, and how its status is assembled.

Pure: the objects it is judged against (its master target, the other members of its
replication group, the plans) and ``now`` come in as arguments. The vSphere and Azure
preflights are judged elsewhere (``onprem_preflight``, ``azure_preflight``); this
module merges their verdicts with its own into one status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from failback.api import crossobject
from failback.api.common import Site
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    set_condition,
)
from failback.api.failbackplan import FailbackPlan, PlanPhase
from failback.api.mastertarget import MasterTarget
from failback.api.protectedvm import (
    Action,
    Location,
    ProtectedVM,
    ProtectedVMStatus,
    RecoveryPoints,
    Replication,
    condition_types,
    derive_phase,
    ready_inputs,
)
from failback.domain.status import refresh_conditions


def references(
    vm: ProtectedVM,
    problems: Iterable[Condition],
    generation: int,
    now: dt.datetime,
) -> Condition:
    """``ReferencesResolved``: True when nothing the spec names is missing; otherwise False
    with the first problem's reason and every problem's message."""
    found = [p for p in problems if p.status == FALSE]
    if found:
        message = "; ".join(p.message for p in found)
        return Condition(
            ConditionType.REFERENCES_RESOLVED, FALSE, found[0].reason, message, generation, now
        )
    spec = vm.spec
    message = (
        f"MasterTarget {spec.master_target_ref.name}, ProcessServer "
        f"{spec.process_server_ref.name} and the Secrets the spec names exist."
    )
    return Condition(
        ConditionType.REFERENCES_RESOLVED, TRUE, Reason.CHECK_PASSED, message, generation, now
    )


def missing_objects(
    vm: ProtectedVM,
    master_target: MasterTarget | None,
    process_server_found: bool,
    generation: int,
    now: dt.datetime,
) -> list[Condition]:
    """The False conditions for a master target or process server that does not exist."""
    spec, namespace = vm.spec, vm.meta.namespace
    problems = []
    if master_target is None:
        problems.append(
            crossobject.MASTER_TARGET_NOT_FOUND.condition(
                generation, now, name=spec.master_target_ref.name, namespace=namespace
            )
        )
    if not process_server_found:
        problems.append(
            crossobject.PROCESS_SERVER_NOT_FOUND.condition(
                generation, now, name=spec.process_server_ref.name, namespace=namespace
            )
        )
    return problems


def replication_group(
    vm: ProtectedVM,
    peers: Sequence[ProtectedVM],
    plans: Sequence[FailbackPlan],
    generation: int,
    now: dt.datetime,
) -> Condition | None:
    """``ReplicationGroupConsistent`` (R-GRP-1), or None outside a replication group.

    Every member must use one master target, or no common recovery point can exist; and a
    replication group is reprotected only through a FailbackPlan that lists the VM.
    ``peers`` are the ProtectedVMs of the namespace (``vm`` among them or not).
    """
    group = vm.spec.replication_group
    if group is None:
        return None
    members = {p.meta.name: p for p in peers if p.spec.replication_group == group}
    members[vm.meta.name] = vm
    targets = {m.spec.master_target_ref.name for m in members.values()}
    if len(targets) > 1:
        used = ", ".join(
            f"{name} → {m.spec.master_target_ref.name}" for name, m in sorted(members.items())
        )
        return crossobject.GROUP_MASTER_TARGET_MISMATCH.condition(
            generation, now, group=group, master_targets=used
        )
    owning = sorted(p.meta.name for p in plans if vm.meta.name in p.spec.members)
    if not owning:
        return crossobject.GROUP_OUTSIDE_PLAN.condition(
            generation, now, vm=vm.meta.name, group=group
        )
    message = (
        f"The {len(members)} members of replication group {group} use MasterTarget "
        f"{targets.pop()}; this VM fails back through FailbackPlan {owning[0]}."
    )
    return Condition(
        ConditionType.REPLICATION_GROUP_CONSISTENT,
        TRUE,
        Reason.CHECK_PASSED,
        message,
        generation,
        now,
    )


def _volume(path: str) -> str:
    """A retention volume compared by what it names: ``r:\\`` is ``R:``, ``/a/`` is ``/a``."""
    if len(path) >= 2 and path[1] == ":":
        return path[:2].upper()
    return path.rstrip("/") or "/"


def retention_volume(
    vm: ProtectedVM, master_target: MasterTarget | None, generation: int, now: dt.datetime
) -> Condition | None:
    """``RetentionVolumeAvailable``, or None when the VM uses its master target's volume."""
    wanted = vm.spec.retention_volume
    if wanted is None:
        return None
    if master_target is None:
        return Condition(
            ConditionType.RETENTION_VOLUME_AVAILABLE,
            UNKNOWN,
            Reason.SERVICE_CHECK_PENDING,
            "Checked once spec.masterTargetRef names an existing MasterTarget.",
            generation,
            now,
        )
    available = master_target.spec.effective_retention_volume
    if _volume(wanted) != _volume(available):
        return crossobject.RETENTION_VOLUME_NOT_ON_MASTER_TARGET.condition(
            generation,
            now,
            volume=wanted,
            master_target=master_target.meta.name,
            available=available,
        )
    return Condition(
        ConditionType.RETENTION_VOLUME_AVAILABLE,
        TRUE,
        Reason.CHECK_PASSED,
        f"Retention volume {wanted} is MasterTarget {master_target.meta.name}'s.",
        generation,
        now,
    )


@dataclass(frozen=True)
class Observed:
    """What the replication pass reports for the status (the old values when None)."""

    active_site: Site | None = None
    allowed_actions: tuple[Action, ...] | None = None
    replication: Replication | None = None
    rpo_seconds: int | None = None
    recovery_points: RecoveryPoints | None = None
    failing_back: bool = False


def assemble(
    vm: ProtectedVM,
    judged: Iterable[Condition],
    location: Location | None,
    managed_by: str | None,
    now: dt.datetime,
    observed: Observed | None = None,
) -> ProtectedVMStatus:
    """The status of ``vm`` once the ``judged`` conditions are in.

    ``managed_by`` is the FailbackPlan that lists the VM, if any. Each judged condition
    replaces the one of its type (keeping ``lastTransitionTime``
    when its status did not change); conditions that do not apply to the spec are
    dropped, those nobody judged stay Unknown, and ``Ready`` summarizes.
    """
    generation = vm.meta.generation
    applicable = condition_types(vm.spec)
    conditions: list[Condition] = list(vm.status.conditions)
    for condition in judged:
        if condition.type in applicable:
            conditions = set_condition(conditions, condition)
    conditions = refresh_conditions(conditions, applicable, ready_inputs(vm.spec), generation, now)
    seen = observed or Observed()
    old = vm.status
    return ProtectedVMStatus(
        observed_generation=generation,
        phase=derive_phase(conditions, failing_back=seen.failing_back),
        active_site=seen.active_site or old.active_site,
        managed_by=managed_by,
        allowed_actions=(
            old.allowed_actions if seen.allowed_actions is None else seen.allowed_actions
        ),
        location=location,
        replication=seen.replication or old.replication,
        rpo_seconds=seen.rpo_seconds if observed is not None else old.rpo_seconds,
        recovery_points=seen.recovery_points if observed is not None else old.recovery_points,
        operations=vm.status.operations,
        conditions=tuple(conditions),
    )


HOLDING_PHASES = frozenset(
    {PlanPhase.FAILING_OVER, PlanPhase.FAILED_OVER, PlanPhase.COMMITTING, PlanPhase.FAILED}
)
"""While its plan's run is in one of these phases, the plan drives a VM's replication."""
ON_PREM_PHASES = frozenset({PlanPhase.COMMITTED, PlanPhase.REPROTECTING, PlanPhase.COMPLETED})
"""Without ``status.committedSite`` (a plan written before it existed), these phases say a
failback was committed: the plan's VMs run on-premises."""


@dataclass(frozen=True)
class PlanView:
    """What a ProtectedVM's replication takes from the plan listing it."""

    plan: str | None = None
    held: bool = False
    site: Site | None = None
    """Where the VM runs when no run moves it (None: no plan lists it)."""
    reprotect: bool = True
    awaiting_commit: bool = False


def plan_view(vm: ProtectedVM, plans: Sequence[FailbackPlan]) -> PlanView:
    """The plan listing ``vm`` (the first, if several: MembersExclusive reports that)."""
    plan = next((p for p in plans if vm.meta.name in p.spec.members), None)
    if plan is None:
        return PlanView()
    status = plan.status
    running = status.run_id is not None
    phase = status.phase
    site = status.committed_site or (
        Site.ON_PREM if running and phase in ON_PREM_PHASES else Site.AZURE
    )
    return PlanView(
        plan=plan.meta.name,
        held=running and phase in HOLDING_PHASES,
        site=site,
        reprotect=plan.spec.reprotect_after_commit,
        awaiting_commit=phase is PlanPhase.FAILED_OVER,
    )
