"""FailbackPlan: the recovery plan, and the only way to move VMs between sites
(``crds/failback.io_failbackplans.yaml``).

``spec.activeSite`` is where the plan's VMs should run: flipping it from Azure to OnPrem
is the failback; flipping it back before commit cancels it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from failback.api import constants
from failback.api._codec import Encodable, decode
from failback.api.common import ObjectMeta, Site, parse_meta
from failback.api.conditions import FALSE, TRUE, Condition, ConditionType, Reason, find_condition

KIND: Final = constants.FAILBACK_PLAN.kind
PLURAL: Final = constants.FAILBACK_PLAN.plural
SHORT_NAME: Final = constants.FAILBACK_PLAN.short_name

MAX_VMS: Final = 100
"""At most this many VMs in one plan, over all its groups (R-FO-3)."""

# ------------------------------------------------------------------ spec


@dataclass(frozen=True)
class Group:
    """ProtectedVMs that fail back together; groups start in order (R-FO-3)."""

    name: str
    members: tuple[str, ...]
    """ProtectedVM names, same namespace."""
    max_parallel: int | None = None
    """How many members fail back at once; all of them when None."""


class FailoverType(enum.StrEnum):
    PLANNED = "Planned"
    """Stop the Azure VMs, final sync, zero data loss."""
    UNPLANNED = "Unplanned"
    """Use the chosen recovery point even if Azure is unreachable."""


class RecoveryPointType(enum.StrEnum):
    LATEST = "Latest"
    LATEST_PROCESSED = "LatestProcessed"
    LATEST_APP_CONSISTENT = "LatestAppConsistent"
    LATEST_CRASH_CONSISTENT = "LatestCrashConsistent"
    POINT_IN_TIME = "PointInTime"


@dataclass(frozen=True)
class RecoveryPoint:
    """The recovery point to fail back to (R-FO-1)."""

    type: RecoveryPointType = RecoveryPointType.LATEST
    time: dt.datetime | None = None
    """With PointInTime: the newest point at or before this time."""


@dataclass(frozen=True)
class Failover:
    """How the failback runs (R-FO-1, R-FO-2)."""

    type: FailoverType = FailoverType.PLANNED
    recovery_point: RecoveryPoint = field(default_factory=RecoveryPoint)
    multi_vm_consistency: bool = True
    force: bool = False
    """Unplanned only: go on when the Azure VMs cannot be confirmed stopped (audited)."""
    force_reason: str | None = None


class CommitMode(enum.StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


@dataclass(frozen=True)
class Commit:
    """How the failback is made final (R-FO-4)."""

    mode: CommitMode = CommitMode.AUTOMATIC
    approved_run_id: str | None = None
    """With Manual: the status.runId the user approved."""


@dataclass(frozen=True)
class FailbackPlanSpec:
    active_site: Site
    groups: tuple[Group, ...]
    failover: Failover = field(default_factory=Failover)
    commit: Commit = field(default_factory=Commit)
    reprotect_after_commit: bool = True
    dry_run: bool = False

    @property
    def members(self) -> tuple[str, ...]:
        """Every VM of the plan, group by group."""
        return tuple(vm for group in self.groups for vm in group.members)


# ------------------------------------------------------------------ status


class PlanPhase(enum.StrEnum):
    """A human summary for ``kubectl get``; see :func:`derive_phase`."""

    PENDING = "Pending"
    VALIDATING = "Validating"
    READY = "Ready"
    FAILING_OVER = "FailingOver"
    FAILED_OVER = "FailedOver"
    COMMITTING = "Committing"
    COMMITTED = "Committed"
    REPROTECTING = "Reprotecting"
    COMPLETED = "Completed"
    CANCELLING = "Cancelling"
    FAILED = "Failed"


class ObservedSite(enum.StrEnum):
    """Where the plan's VMs run now; Mixed while some have failed back and some not."""

    AZURE = "Azure"
    ON_PREM = "OnPrem"
    MIXED = "Mixed"


class StepState(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


@dataclass(frozen=True)
class RunRecoveryPoint:
    """The recovery point the current run uses."""

    type: RecoveryPointType | None = None
    time: dt.datetime | None = None


@dataclass(frozen=True)
class ForcedRun:
    """Audit record of a run whose fence was forced."""

    run_id: str | None = None
    reason: str | None = None
    by: str | None = None
    at: dt.datetime | None = None


@dataclass(frozen=True)
class Step:
    """One line of the job log (R-POST-3)."""

    name: str
    state: StepState
    group: str | None = None
    vm: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class FailbackPlanStatus(Encodable):
    observed_generation: int | None = None
    phase: PlanPhase | None = None
    active_site: ObservedSite | None = None
    run_id: str | None = None
    run_target: Site | None = None
    """Where the current run moves the VMs: OnPrem (a failback) or Azure (a failover)."""
    committed_site: Site | None = None
    """Where the VMs run when no run moves them: where the last committed run left them
    (Azure before any failback)."""
    vm_count: int | None = None
    rpo_seconds: int | None = None
    """The worst RPO among the plan's VMs."""
    current_step: str | None = None
    recovery_point: RunRecoveryPoint | None = None
    forced: ForcedRun | None = None
    steps: tuple[Step, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class FailbackPlan:
    meta: ObjectMeta
    spec: FailbackPlanSpec
    status: FailbackPlanStatus


def parse(body: Mapping[str, Any]) -> FailbackPlan:
    """A FailbackPlan object; :class:`~failback.errors.SpecInvalid` names the first bad field."""
    spec = decode(FailbackPlanSpec, body.get("spec"), "spec")
    status = decode(FailbackPlanStatus, body.get("status") or {}, "status")
    return FailbackPlan(parse_meta(body), spec, status)


# ------------------------------------------------------------------ conditions and phase

VALIDATIONS: Final[tuple[str, ...]] = (
    ConditionType.MEMBERS_FOUND,
    ConditionType.MEMBERS_EXCLUSIVE,
    ConditionType.REPLICATION_GROUP_CONSISTENT,
    ConditionType.MEMBERS_READY,
    ConditionType.RECOVERY_POINT_AVAILABLE,
)
"""What ``Ready`` summarizes: the plan can fail back now."""

CONDITION_TYPES: Final[tuple[str, ...]] = (
    ConditionType.READY,
    ConditionType.PROGRESSING,
    ConditionType.SUCCEEDED,
    *VALIDATIONS,
)
"""Every condition type a FailbackPlan reports."""

_RUNNING: Final[dict[str, PlanPhase]] = {
    Reason.VALIDATING: PlanPhase.VALIDATING,
    Reason.FAILING_OVER: PlanPhase.FAILING_OVER,
    Reason.COMMITTING: PlanPhase.COMMITTING,
    Reason.REPROTECTING: PlanPhase.REPROTECTING,
    Reason.CANCELLING: PlanPhase.CANCELLING,
}
_FINISHED: Final[dict[str, PlanPhase]] = {
    Reason.COMMITTED: PlanPhase.COMMITTED,
    Reason.COMPLETED: PlanPhase.COMPLETED,
}


def derive_phase(conditions: Iterable[Condition]) -> PlanPhase:
    """The printer-column phase, from Ready, Progressing and Succeeded."""
    conditions = tuple(conditions)
    ready = find_condition(conditions, ConditionType.READY)
    progressing = find_condition(conditions, ConditionType.PROGRESSING)
    succeeded = find_condition(conditions, ConditionType.SUCCEEDED)
    if progressing is not None and progressing.status == TRUE:
        return _RUNNING.get(progressing.reason, PlanPhase.VALIDATING)
    if progressing is not None and progressing.reason == Reason.AWAITING_COMMIT_APPROVAL:
        return PlanPhase.FAILED_OVER
    if succeeded is not None and succeeded.status == FALSE and succeeded.reason != Reason.CANCELLED:
        return PlanPhase.FAILED
    if succeeded is not None and succeeded.status == TRUE and succeeded.reason in _FINISHED:
        return _FINISHED[succeeded.reason]
    if ready is None or ready.status == FALSE or ready.reason == Reason.INITIALIZING:
        return PlanPhase.PENDING
    return PlanPhase.READY if ready.status == TRUE else PlanPhase.VALIDATING
