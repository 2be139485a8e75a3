"""The failback step machine (``failback.domain.failback.decide``), table-driven, and the
never-both-running invariant over every combination of observations."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from failback.api.common import Site
from failback.api.failbackplan import (
    Commit,
    CommitMode,
    FailbackPlanSpec,
    Failover,
    FailoverType,
    Group,
    PlanPhase,
    StepState,
)
from failback.domain.failback import (
    Action,
    ActionKind,
    Decision,
    Power,
    RunFacts,
    StepName,
    VMFacts,
    decide,
)

RUN = RunFacts(run_id="run-1")


def plan(
    *groups: tuple[str, ...],
    site: Site = Site.ON_PREM,
    unplanned: bool = False,
    force: bool = False,
    manual: bool = False,
    approved: str | None = None,
    reprotect: bool = True,
    dry_run: bool = False,
    max_parallel: int | None = None,
) -> FailbackPlanSpec:
    return FailbackPlanSpec(
        active_site=site,
        groups=tuple(Group(f"g{i}", members, max_parallel) for i, members in enumerate(groups, 1)),
        failover=Failover(
            type=FailoverType.UNPLANNED if unplanned else FailoverType.PLANNED,
            force=force,
            force_reason="datacenter lost" if force else None,
        ),
        commit=Commit(CommitMode.MANUAL if manual else CommitMode.AUTOMATIC, approved),
        reprotect_after_commit=reprotect,
        dry_run=dry_run,
    )


def vm(name: str, **changes: Any) -> VMFacts:
    return replace(VMFacts(name, point="p-0300"), **changes)


DONE = {
    "azure": Power.STOPPED,
    "synced_after_fence": True,
    "restored": True,
    "attached": True,
    "onprem": Power.RUNNING,
    "guest_ready": True,
}


def facts(*vms: VMFacts) -> dict[str, VMFacts]:
    return {f.name: f for f in vms}


def kinds(decision: Decision) -> list[tuple[ActionKind, str | None]]:
    return [(a.kind, a.vm) for a in decision.actions]


def step_state(decision: Decision, vm_name: str, step: StepName) -> StepState:
    return next(s.state for s in decision.steps if s.vm == vm_name and s.name == step)


# ------------------------------------------------------------------ one VM, step by step

PLANNED_PATH = [
    ({}, StepName.FENCE, ActionKind.POWER_OFF_AZURE),
    ({"azure": Power.STOPPED}, StepName.FINAL_SYNC, ActionKind.SYNC_NOW),
    ({"azure": Power.MISSING}, StepName.FINAL_SYNC, ActionKind.SYNC_NOW),
    (
        {"azure": Power.STOPPED, "synced_after_fence": True},
        StepName.RESTORE,
        ActionKind.RESTORE_POINT,
    ),
    (
        {"azure": Power.STOPPED, "synced_after_fence": True, "restored": True},
        StepName.ATTACH,
        ActionKind.ATTACH_DISKS,
    ),
    (
        {"azure": Power.STOPPED, "restored": True, "attached": True},
        StepName.POWER_ON,
        ActionKind.POWER_ON_ONPREM,
    ),
]


@pytest.mark.parametrize(("changes", "step", "action"), PLANNED_PATH)
def test_a_planned_failback_advances_one_observed_step_at_a_time(
    changes: dict[str, Any], step: StepName, action: ActionKind
) -> None:
    decision = decide(plan(("web",)), RUN, facts(vm("web", **changes)))
    assert kinds(decision) == [(action, "web")]
    assert decision.phase is PlanPhase.FAILING_OVER
    assert step_state(decision, "web", step) is StepState.RUNNING
    before = [s for s in decision.steps if s.vm == "web"]
    index = [s.name for s in before].index(step)
    assert all(s.state is StepState.SUCCEEDED for s in before[:index])
    assert all(s.state is StepState.PENDING for s in before[index + 1 :])
    if action is ActionKind.RESTORE_POINT:
        assert decision.actions[0].point == "p-0300"


def test_waiting_for_the_guest_is_not_an_action_and_not_a_block() -> None:
    decision = decide(plan(("web",)), RUN, facts(vm("web", **{**DONE, "guest_ready": False})))
    assert decision.actions == ()
    assert decision.phase is PlanPhase.FAILING_OVER
    assert "VMware Tools" in next(
        s.message for s in decision.steps if s.state is StepState.PENDING and s.vm
    )


# ------------------------------------------------------------------ the fence


def test_a_planned_failback_waits_while_azure_cannot_confirm_the_vm_stopped() -> None:
    decision = decide(plan(("web",)), RUN, facts(vm("web", azure=Power.UNKNOWN)))
    assert decision.actions == ()
    assert "cannot be confirmed stopped" in decision.blocked
    assert step_state(decision, "web", StepName.FENCE) is StepState.PENDING


def test_an_unplanned_failback_needs_force_to_pass_an_unconfirmed_fence() -> None:
    unknown = facts(vm("web", azure=Power.UNKNOWN))
    refused = decide(plan(("web",), unplanned=True), RUN, unknown)
    assert refused.actions == ()
    assert "spec.failover.force" in refused.blocked
    forced = decide(plan(("web",), unplanned=True, force=True), RUN, unknown)
    assert kinds(forced) == [(ActionKind.RESTORE_POINT, "web")]
    assert step_state(forced, "web", StepName.FINAL_SYNC) is StepState.SKIPPED


def test_an_unplanned_failback_skips_the_final_sync() -> None:
    decision = decide(plan(("web",), unplanned=True), RUN, facts(vm("web", azure=Power.STOPPED)))
    assert kinds(decision) == [(ActionKind.RESTORE_POINT, "web")]


# ------------------------------------------------------------------ preflight


def test_a_member_not_ready_or_without_a_point_holds_the_plan_in_validation() -> None:
    not_ready = decide(
        plan(("web", "db")),
        RUN,
        facts(vm("web"), vm("db", ready=False, not_ready_reason="R-PRE-1: VM is not licensed")),
    )
    assert not_ready.phase is PlanPhase.FAILING_OVER  # web may start its fence already
    assert "db: R-PRE-1" in not_ready.blocked
    assert (ActionKind.POWER_OFF_AZURE, "db") not in kinds(not_ready)
    no_point = decide(plan(("web",)), RUN, facts(vm("web", point=None)))
    assert no_point.phase is PlanPhase.VALIDATING
    assert "no recovery point" in no_point.blocked
    missing = decide(plan(("ghost",)), RUN, {})
    assert missing.actions == ()
    assert "ghost: not found" in missing.blocked


def test_a_member_already_fenced_is_not_sent_back_to_preflight() -> None:
    """After the fence the ProtectedVM's replication stops and it may turn not Ready: the
    run goes on from what was observed."""
    decision = decide(
        plan(("web",)),
        RUN,
        facts(vm("web", azure=Power.STOPPED, ready=False, synced_after_fence=True)),
    )
    assert kinds(decision) == [(ActionKind.RESTORE_POINT, "web")]


# ------------------------------------------------------------------ groups


def test_groups_run_in_order_and_members_in_parallel_up_to_the_bound() -> None:
    spec = plan(("a", "b", "c"), ("d",), max_parallel=2)
    first = decide(spec, RUN, facts(vm("a"), vm("b"), vm("c"), vm("d")))
    assert kinds(first) == [(ActionKind.POWER_OFF_AZURE, "a"), (ActionKind.POWER_OFF_AZURE, "b")]
    waiting = [s for s in first.steps if s.vm == "d"]
    assert waiting
    assert all(s.state is StepState.PENDING for s in waiting)
    assert waiting[0].message == "waits for group g1"
    group_one_done = facts(vm("a", **DONE), vm("b", **DONE), vm("c", **DONE), vm("d"))
    second = decide(spec, RUN, group_one_done)
    assert kinds(second) == [(ActionKind.POWER_OFF_AZURE, "d")]


# ------------------------------------------------------------------ commit and reprotect


def test_automatic_commit_then_reprotect_then_completed() -> None:
    spec = plan(("web", "db"))
    done = facts(vm("web", **DONE), vm("db", **DONE))
    commit = decide(spec, RUN, done)
    assert (commit.phase, kinds(commit)) == (PlanPhase.COMMITTING, [(ActionKind.COMMIT, None)])
    reprotect = decide(spec, replace(RUN, committed=True), done)
    assert reprotect.phase is PlanPhase.REPROTECTING
    assert sorted(kinds(reprotect)) == [
        (ActionKind.START_REPROTECT, "db"),
        (ActionKind.START_REPROTECT, "web"),
    ]
    completed = decide(spec, replace(RUN, committed=True, reprotect_started=True), done)
    assert (completed.phase, completed.actions, completed.done) == (PlanPhase.COMPLETED, (), True)
    without = decide(plan(("web", "db"), reprotect=False), replace(RUN, committed=True), done)
    assert (without.phase, without.done) == (PlanPhase.COMPLETED, True)


def test_manual_commit_waits_in_failed_over_until_the_run_is_approved() -> None:
    done = facts(vm("web", **DONE))
    waiting = decide(plan(("web",), manual=True), RUN, done)
    assert (waiting.phase, waiting.actions) == (PlanPhase.FAILED_OVER, ())
    assert "approvedRunId to run-1" in waiting.blocked
    stale = decide(plan(("web",), manual=True, approved="run-0"), RUN, done)
    assert stale.phase is PlanPhase.FAILED_OVER
    approved = decide(plan(("web",), manual=True, approved="run-1"), RUN, done)
    assert kinds(approved) == [(ActionKind.COMMIT, None)]


# ------------------------------------------------------------------ dry run, failure


def test_a_dry_run_publishes_the_step_plan_and_does_nothing() -> None:
    decision = decide(plan(("web",), ("db",), dry_run=True), RUN, facts(vm("web"), vm("db")))
    assert decision.actions == ()
    assert decision.blocked == "dry run: nothing is done"
    assert {s.name for s in decision.steps if s.vm == "web"} >= {StepName.FENCE, StepName.RESTORE}


def test_a_failed_run_stops_and_says_where() -> None:
    run = replace(RUN, failed="restore of db: the MT refused the point (unknown_point)")
    decision = decide(plan(("web",)), run, facts(vm("web")))
    assert (decision.phase, decision.actions) == (PlanPhase.FAILED, ())
    assert "unknown_point" in decision.blocked


# ------------------------------------------------------------------ cancel


CANCEL_PATH = [
    ({"onprem": Power.RUNNING, "restored": True}, ActionKind.POWER_OFF_ONPREM),
    ({"onprem": Power.STOPPED, "azure": Power.STOPPED, "restored": True}, ActionKind.START_AZURE),
    ({"onprem": Power.MISSING, "azure": Power.STOPPED}, ActionKind.START_AZURE),
    ({"onprem": Power.STOPPED, "azure": Power.RUNNING}, ActionKind.RESUME_REPLICATION),
]


@pytest.mark.parametrize(("changes", "action"), CANCEL_PATH)
def test_a_cancel_stops_on_premises_before_azure_starts_again(
    changes: dict[str, Any], action: ActionKind
) -> None:
    decision = decide(plan(("web",), site=Site.AZURE), RUN, facts(vm("web", **changes)))
    assert decision.phase is PlanPhase.CANCELLING
    assert kinds(decision) == [(action, "web")]


def test_a_cancel_waits_while_vcenter_cannot_confirm_the_vm_stopped() -> None:
    decision = decide(
        plan(("web",), site=Site.AZURE),
        RUN,
        facts(vm("web", onprem=Power.UNKNOWN, azure=Power.STOPPED)),
    )
    assert decision.actions == ()
    assert "cannot be confirmed stopped" in decision.blocked


def test_a_finished_cancel_and_a_plan_that_never_left_azure() -> None:
    back = facts(vm("web", azure=Power.RUNNING, onprem=Power.STOPPED, replicating_from_azure=True))
    finished = decide(plan(("web",), site=Site.AZURE), RUN, back)
    assert (finished.phase, finished.actions, finished.done) == (PlanPhase.READY, (), True)
    idle = decide(plan(("web",), site=Site.AZURE), RunFacts(), back)
    assert (idle.phase, idle.actions) == (PlanPhase.READY, ())
    not_ready = decide(
        plan(("web",), site=Site.AZURE),
        RunFacts(),
        facts(vm("web", ready=False, not_ready_reason="x")),
    )
    assert (not_ready.phase, not_ready.blocked) == (PlanPhase.VALIDATING, "web: x")


# ------------------------------------------------------------------ failover to Azure again

FAILOVER = RunFacts(run_id="run-2", target=Site.AZURE, home=Site.ON_PREM)
"""A failover run, after a committed failback (the VMs run on-premises)."""
ON_PREM = {"azure": Power.STOPPED, "onprem": Power.RUNNING, "restored": False,
           "attached": False, "guest_ready": False}  # fmt: skip
ARRIVED = {"azure": Power.RUNNING, "onprem": Power.STOPPED, "synced_after_fence": True,
           "restored": True, "attached": True, "guest_ready": True}  # fmt: skip

FAILOVER_PATH = [
    ({}, StepName.FENCE, ActionKind.POWER_OFF_ONPREM),
    ({"onprem": Power.STOPPED}, StepName.FINAL_SYNC, ActionKind.SYNC_REPLICAS_NOW),
    (
        {"onprem": Power.STOPPED, "synced_after_fence": True},
        StepName.RESTORE,
        ActionKind.DISKS_FROM_POINT,
    ),
    (
        {"onprem": Power.STOPPED, "synced_after_fence": True, "restored": True},
        StepName.ATTACH,
        ActionKind.SET_AZURE_DISKS,
    ),
    (
        {"onprem": Power.STOPPED, "restored": True, "attached": True},
        StepName.POWER_ON,
        ActionKind.START_AZURE,
    ),
]


@pytest.mark.parametrize(("changes", "step", "kind"), FAILOVER_PATH)
def test_a_failover_goes_step_by_step(
    changes: dict[str, Any], step: StepName, kind: ActionKind
) -> None:
    f = vm("web", **{**ON_PREM, **changes})
    decision = decide(plan(("web",), site=Site.AZURE), FAILOVER, facts(f))
    assert decision.phase is PlanPhase.FAILING_OVER
    assert kinds(decision) == [(kind, "web")]
    assert decision.actions[0].step in (step, None)
    assert step_state(decision, "web", step) is StepState.RUNNING


def test_a_failover_fences_the_onprem_vm_and_logs_it_as_the_fence() -> None:
    decision = decide(plan(("web",), site=Site.AZURE), FAILOVER, facts(vm("web", **ON_PREM)))
    assert decision.actions == (Action(ActionKind.POWER_OFF_ONPREM, "web", step=StepName.FENCE),)


def test_a_failover_never_starts_azure_while_vcenter_cannot_say() -> None:
    unknown = vm("web", **{**ON_PREM, "onprem": Power.UNKNOWN})
    waits = decide(plan(("web",), site=Site.AZURE), FAILOVER, facts(unknown))
    assert waits.actions == ()
    assert "cannot be confirmed stopped" in waits.blocked
    assert "force" in waits.blocked
    # Unplanned with force goes on without the final sync (audited by the controller).
    forced = decide(
        plan(("web",), site=Site.AZURE, unplanned=True, force=True), FAILOVER, facts(unknown)
    )
    assert kinds(forced) == [(ActionKind.DISKS_FROM_POINT, "web")]


def test_a_failover_commits_then_reprotects_towards_onprem() -> None:
    arrived = facts(vm("web", **ARRIVED))
    commit = decide(plan(("web",), site=Site.AZURE), FAILOVER, arrived)
    assert (commit.phase, kinds(commit)) == (PlanPhase.COMMITTING, [(ActionKind.COMMIT, None)])
    manual = decide(plan(("web",), site=Site.AZURE, manual=True), FAILOVER, arrived)
    assert manual.phase is PlanPhase.FAILED_OVER
    assert "approvedRunId to run-2" in manual.blocked
    assert "back to OnPrem" in manual.blocked
    committed = replace(FAILOVER, committed=True, home=Site.AZURE)
    reprotect = decide(plan(("web",), site=Site.AZURE), committed, arrived)
    assert reprotect.phase is PlanPhase.REPROTECTING
    done = decide(
        plan(("web",), site=Site.AZURE), replace(committed, reprotect_started=True), arrived
    )
    assert (done.phase, done.done) == (PlanPhase.COMPLETED, True)


def test_after_a_committed_failback_activesite_azure_is_a_failover_not_a_cancel() -> None:
    # The controller numbers a new run; before that (or in a dry run) decide() already
    # plans a failover from the committed failback's facts.
    committed = RunFacts(run_id="run-1", committed=True, home=Site.ON_PREM)
    decision = decide(plan(("web",), site=Site.AZURE), committed, facts(vm("web", **ON_PREM)))
    assert kinds(decision) == [(ActionKind.POWER_OFF_ONPREM, "web")]
    dry = decide(
        plan(("web",), site=Site.AZURE, dry_run=True), committed, facts(vm("web", **ON_PREM))
    )
    assert (dry.phase, dry.actions) == (PlanPhase.READY, ())
    assert [s.name for s in dry.steps if s.vm == "web"][:2] == [StepName.PREFLIGHT, StepName.FENCE]


def test_a_failover_is_cancelled_azure_off_first_then_onprem_on() -> None:
    spec = plan(("web",), site=Site.ON_PREM)
    running = decide(spec, FAILOVER, facts(vm("web", **ARRIVED)))
    assert running.phase is PlanPhase.CANCELLING
    assert running.actions == (
        Action(ActionKind.POWER_OFF_AZURE, "web", step=StepName.CANCEL_POWER_OFF),
    )
    off = {**ARRIVED, "azure": Power.STOPPED}
    start = decide(spec, FAILOVER, facts(vm("web", **off)))
    assert kinds(start) == [(ActionKind.POWER_ON_ONPREM, "web")]
    assert start.actions[0].step is StepName.CANCEL_START_ONPREM
    unknown = decide(spec, FAILOVER, facts(vm("web", **{**ARRIVED, "azure": Power.UNKNOWN})))
    assert (unknown.actions, unknown.phase) == ((), PlanPhase.CANCELLING)
    back = {**off, "onprem": Power.RUNNING}
    resume = decide(spec, FAILOVER, facts(vm("web", **back)))
    assert kinds(resume) == [(ActionKind.RESUME_REPLICATION, "web")]
    done = decide(spec, FAILOVER, facts(vm("web", **back, replicating_to_azure=True)))
    assert (done.phase, done.done) == (PlanPhase.READY, True)
    # Settled on-premises again: nothing to do.
    settled = decide(spec, RunFacts(home=Site.ON_PREM), facts(vm("web", **back)))
    assert (settled.phase, settled.actions) == (PlanPhase.READY, ())


# ------------------------------------------------------------------ the invariant


def _starts_twin_while_running(action: Action, f: VMFacts, spec: FailbackPlanSpec) -> bool:
    forced = spec.failover.type is FailoverType.UNPLANNED and spec.failover.force
    if action.kind is ActionKind.POWER_ON_ONPREM:
        return f.azure is Power.RUNNING or (f.azure is Power.UNKNOWN and not forced)
    if action.kind is ActionKind.START_AZURE:
        # A forced failover's fence may be unconfirmed (Unknown), never a VM seen running.
        return f.onprem is Power.RUNNING or (f.onprem is Power.UNKNOWN and not forced)
    return False


def test_no_decision_ever_starts_a_vm_whose_twin_may_run() -> None:
    """Every combination of observations, both directions, every failover mode: an action
    that starts a VM only comes with its twin confirmed stopped (or a forced fence)."""
    powers = list(Power)
    flags = [False, True]
    specs = [
        plan(("web",), site=site, unplanned=unplanned, force=force)
        for site in (Site.ON_PREM, Site.AZURE)
        for unplanned, force in ((False, False), (True, False), (True, True))
    ]
    checked = 0
    for azure, onprem, synced, restored, attached, ready in itertools.product(
        powers, powers, flags, flags, flags, flags
    ):
        f = vm(
            "web",
            azure=azure,
            onprem=onprem,
            synced_after_fence=synced,
            restored=restored,
            attached=attached,
            ready=ready,
        )
        for spec, run in itertools.product(specs, RUNS):
            decision = decide(spec, run, facts(f))
            assert decision == decide(spec, run, facts(f))  # same facts, same decision
            for action in decision.actions:
                assert not _starts_twin_while_running(action, f, spec), (spec, run, f, action)
            checked += 1
    assert checked == 4 * 4 * 16 * 6 * len(RUNS)


RUNS = (
    RUN,  # a failback
    FAILOVER,  # a failover (and, with activeSite OnPrem, its cancel)
    RunFacts(run_id="run-1", committed=True, home=Site.ON_PREM),  # before a new run's id
    RunFacts(),  # no run ever
)


def test_a_committed_run_does_not_look_at_the_vm_steps_again() -> None:
    # After commit the recovery points are discarded: no point is found any more, and that
    # must not send the run back to preflight.
    gone = VMFacts("web", point=None, azure=Power.STOPPED, onprem=Power.RUNNING,
                   restored=True, attached=True, guest_ready=True)  # fmt: skip
    committed = RunFacts(run_id="run-1", committed=True)
    decision = decide(plan(("web",)), committed, {"web": gone})
    assert decision.phase is PlanPhase.REPROTECTING
    assert [a.kind for a in decision.actions] == [ActionKind.START_REPROTECT]
    vm_lines = [s for s in decision.steps if s.vm == "web"]
    assert all(s.state is StepState.SUCCEEDED for s in vm_lines if s.name != StepName.FINAL_SYNC)


def test_a_restored_vm_needs_no_point_to_go_on() -> None:
    restored = VMFacts("web", point=None, azure=Power.STOPPED, onprem=Power.STOPPED,
                       restored=True, synced_after_fence=True)  # fmt: skip
    decision = decide(plan(("web",)), RUN, {"web": restored})
    assert [a.kind for a in decision.actions] == [ActionKind.ATTACH_DISKS]


def test_a_twin_seen_running_after_commit_is_stopped_again() -> None:
    # A forced fence left the Azure VM unconfirmed; Azure came back and it runs: the
    # committed run stops it, whatever else it is doing.
    back = vm("web", **{**DONE, "azure": Power.RUNNING})
    committed = replace(RUN, committed=True, home=Site.ON_PREM)
    reprotecting = decide(plan(("web",)), committed, facts(back))
    assert reprotecting.phase is PlanPhase.REPROTECTING
    assert reprotecting.actions[0] == Action(ActionKind.POWER_OFF_AZURE, "web", step=StepName.FENCE)
    done = decide(plan(("web",)), replace(committed, reprotect_started=True), facts(back))
    assert (done.phase, done.done) == (PlanPhase.COMPLETED, False)
    assert kinds(done) == [(ActionKind.POWER_OFF_AZURE, "web")]
    # After a committed failover, the on-premises VM is the one kept off.
    failover = replace(FAILOVER, committed=True, home=Site.AZURE, reprotect_started=True)
    started = vm("web", **{**ARRIVED, "onprem": Power.RUNNING})
    again = decide(plan(("web",), site=Site.AZURE), failover, facts(started))
    assert again.actions == (Action(ActionKind.POWER_OFF_ONPREM, "web", step=StepName.FENCE),)


def test_a_replication_group_is_restored_only_once_every_member_is_fenced_and_synced() -> None:
    # R-GRP-1: web and db share one master target group; restoring it for web would
    # release db's disks before db's Azure VM is stopped.
    spec = plan(("web", "db"))
    synced = {"azure": Power.STOPPED, "synced_after_fence": True, "replication_group": "erp"}
    web = vm("web", **synced)
    db = vm("db", replication_group="erp")  # still running in Azure
    decision = decide(spec, RUN, facts(web, db))
    assert kinds(decision) == [(ActionKind.POWER_OFF_AZURE, "db")]
    line = next(s for s in decision.steps if s.vm == "web" and s.name is StepName.RESTORE)
    assert line.state is StepState.PENDING
    assert "waits for db" in line.message
    both = decide(spec, RUN, facts(web, replace(db, **synced)))
    assert kinds(both) == [(ActionKind.RESTORE_POINT, "web"), (ActionKind.RESTORE_POINT, "db")]
    # A VM outside any replication group does not wait for anyone.
    alone = decide(spec, RUN, facts(vm("web", **synced), vm("db")))
    assert (ActionKind.RESTORE_POINT, "web") in kinds(alone)


def test_a_wrong_plan_does_not_begin_but_a_begun_run_goes_on() -> None:
    wrong = replace(RUN, invalid="web is also in FailbackPlan other")
    fresh = decide(plan(("web",)), wrong, facts(vm("web")))
    assert (fresh.phase, fresh.actions, fresh.blocked) == (
        PlanPhase.VALIDATING,
        (),
        "web is also in FailbackPlan other",
    )
    # A VM already fenced is not left half-way: the run goes on.
    fenced = vm("web", azure=Power.STOPPED, synced_after_fence=True)
    assert kinds(decide(plan(("web",)), wrong, facts(fenced))) == [
        (ActionKind.RESTORE_POINT, "web")
    ]


def test_a_failover_needs_the_azure_vm_it_boots_and_says_so_before_touching_anything() -> None:
    gone = vm("web", **{**ON_PREM, "azure": Power.MISSING})
    decision = decide(plan(("web",), site=Site.AZURE), FAILOVER, facts(gone))
    assert decision.actions == ()
    assert "no longer exists" in decision.blocked
    assert "recreate it" in decision.blocked
