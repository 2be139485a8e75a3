"""The cross-object checks of a ProtectedVM, and how its status is assembled.

Pure: the objects it is judged against (its master target, the other members of its
replication group, the plans) and ``now`` come in as arguments. The vSphere and Azure
preflights are judged elsewhere (``onprem_preflight``, ``azure_preflight``); this
module merges their verdicts with its own into one status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from failback.api import crossobject
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    set_condition,
)
from failback.api.failbackplan import FailbackPlan
from failback.api.mastertarget import MasterTarget
from failback.api.protectedvm import (
    Location,
    ProtectedVM,
    ProtectedVMStatus,
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


def replication_pending(generation: int, now: dt.datetime) -> list[Condition]:
    """ReplicationHealthy and RPOWithinThreshold until the data plane exists: Unknown."""
    message = (
        "This release has no process server or master target service to replicate "
        "through yet; replication starts when the data plane is installed."
    )
    return [
        Condition(t, UNKNOWN, Reason.DATA_PLANE_NOT_BUILT, message, generation, now)
        for t in (ConditionType.REPLICATION_HEALTHY, ConditionType.RPO_WITHIN_THRESHOLD)
    ]


def assemble(
    vm: ProtectedVM,
    judged: Iterable[Condition],
    location: Location | None,
    managed_by: str | None,
    now: dt.datetime,
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
    return ProtectedVMStatus(
        observed_generation=generation,
        phase=derive_phase(conditions),
        active_site=vm.status.active_site,
        managed_by=managed_by,
        allowed_actions=vm.status.allowed_actions,
        location=location,
        replication=vm.status.replication,
        rpo_seconds=vm.status.rpo_seconds,
        recovery_points=vm.status.recovery_points,
        operations=vm.status.operations,
        conditions=tuple(conditions),
    )
