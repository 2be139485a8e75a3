"""``domain.reprotect``: the steps of an AzureToOnPrem replication, each from observed facts."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from failback.api.protectedvm import Action, Direction, ReplicationState, TargetDisk
from failback.domain.recoverypoints import GroupState, GroupStatus
from failback.domain.replication import CycleProgress, SessionPhase, SessionStatus
from failback.domain.reprotect import (
    PAUSING,
    AzureDisk,
    ForwardFacts,
    GroupMember,
    Step,
    StepKind,
    VDisk,
    VSphereVM,
    allowed_actions,
    azure_vm_gone,
    group_name,
    next_step,
    pauses,
    replication_status,
    session_paused,
)

MIB = 1 << 20
NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
AZ = (AzureDisk("rg", "web-os", 4 * MIB), AzureDisk("rg", "web-data0", 2 * MIB))
ORIG_DISKS = (
    VDisk("[ds] web/disk-0.vmdk", "u-0", 4 * MIB),
    VDisk("[ds] web/disk-1.vmdk", "u-1", 2 * MIB),
)
ORIGINAL = VSphereVM("orig", "web", True, ORIG_DISKS)
MT = VSphereVM("mt", "mt-01", False, ())
TARGETS = (
    TargetDisk("web-os", "[ds] web/disk-0.vmdk", 4 * MIB, "u-0"),
    TargetDisk("web-data0", "[ds] web/disk-1.vmdk", 2 * MIB, "u-1"),
)


def facts(**changes: object) -> ForwardFacts:
    base = ForwardFacts(
        namespace="dr",
        name="web",
        alternate=False,
        azure_disks=AZ,
        recorded=(),
        master_target=MT,
        others=(ORIGINAL,),
        original=ORIGINAL,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def group(disks: tuple[str, ...], state: GroupState = GroupState.ACTIVE) -> GroupStatus:
    return GroupStatus("dr.web", state, disks, 0, False, 0, None, None, None, 0, 0, 0)


def session(**changes: object) -> SessionStatus:
    base = SessionStatus(
        "dr", "web", SessionPhase.IDLE, 1, 1, "1-1", NOW, 3.0, None, None, None, 0, 0, 0,
        1000, None, None,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_targets_are_recorded_before_anything_moves() -> None:
    step = next_step(facts())
    assert step.kind is StepKind.RECORD_TARGETS
    assert step.targets == TARGETS


def test_a_running_original_vm_pauses_replication_and_is_never_touched() -> None:
    running = replace(ORIGINAL, powered_off=False)
    step = next_step(facts(recorded=TARGETS, original=running, others=(running,)))
    assert step.kind is StepKind.BLOCKED
    assert step.reason == "OnPremVMRunning"
    assert "powered on" in step.message
    assert "Power it off" in step.message
    assert pauses(step)


def test_a_running_holder_is_seen_before_a_block_that_is_no_drift() -> None:
    # The Azure VM got a third disk: the original's two no longer match (TargetDisksMismatch),
    # but the recorded targets, which the session writes, are in a running VM's hands.
    running = replace(ORIGINAL, powered_off=False)
    third = (*AZ, AzureDisk("rg", "web-data1", MIB))
    step = next_step(facts(azure_disks=third, recorded=TARGETS, original=running,
                           others=(running,)))  # fmt: skip
    assert (step.kind, step.reason) == (StepKind.BLOCKED, "OnPremVMRunning")
    off = next_step(facts(azure_disks=third, recorded=TARGETS))
    assert (off.kind, off.reason) == (StepKind.BLOCKED, "TargetDisksMismatch")
    assert not pauses(off)


def test_an_original_vm_running_without_its_disks_does_not_stop_replication() -> None:
    """Its disks are on the master target: nothing replication writes is the running VM's."""
    on_mt = replace(MT, disks=ORIG_DISKS)
    bare = VSphereVM("orig", "web", False, ())
    base = facts(recorded=TARGETS, master_target=on_mt, original=bare, others=(bare,))
    assert next_step(base).kind is StepKind.ENSURE_GROUP
    grouped = replace(base, group=group(("u-0", "u-1")))
    assert next_step(grouped).kind is StepKind.ENSURE_SESSION
    step = next_step(replace(grouped, session=session()))
    assert step.kind is StepKind.REPLICATING
    assert "web is powered on without its disks" in step.message
    assert "before failing back" in step.message
    assert not pauses(step)
    # Failing back elsewhere (a new VM): the original's power is none of replication's business.
    alternate = replace(grouped, session=session(), alternate=True)
    assert next_step(alternate) == Step(StepKind.REPLICATING)


def test_the_original_disks_are_detached_then_attached_to_the_master_target() -> None:
    step = next_step(facts(recorded=TARGETS))
    assert step.kind is StepKind.DETACH
    assert step.vm == "orig"
    assert step.files == tuple(t.file for t in TARGETS)
    detached = replace(ORIGINAL, disks=())
    step = next_step(facts(recorded=TARGETS, original=detached, others=(detached,)))
    assert step.kind is StepKind.ATTACH_TO_MASTER_TARGET
    assert step.files == tuple(t.file for t in TARGETS)
    assert step.new == ()


def test_then_the_group_then_the_session() -> None:
    on_mt = replace(MT, disks=ORIG_DISKS)
    detached = replace(ORIGINAL, disks=())
    base = facts(recorded=TARGETS, master_target=on_mt, original=detached, others=(detached,))
    assert next_step(base).kind is StepKind.ENSURE_GROUP
    released = replace(base, group=group(("u-0", "u-1"), GroupState.RELEASED))
    assert next_step(released).kind is StepKind.ENSURE_GROUP, "a released group is taken again"
    grouped = replace(base, group=group(("u-1", "u-0")))
    assert next_step(grouped).kind is StepKind.ENSURE_SESSION
    assert next_step(replace(grouped, session=session())).kind is StepKind.REPLICATING


def test_the_original_vm_must_match_the_azure_disks() -> None:
    one = replace(ORIGINAL, disks=ORIG_DISKS[:1])
    step = next_step(facts(original=one, others=(one,)))
    assert (step.kind, step.reason) == (StepKind.BLOCKED, "TargetDisksMismatch")
    small = replace(ORIGINAL, disks=(ORIG_DISKS[0], replace(ORIG_DISKS[1], capacity_bytes=MIB)))
    step = next_step(facts(original=small, others=(small,)))
    assert (step.kind, step.reason) == (StepKind.BLOCKED, "TargetDisksMismatch")
    assert "smaller" in step.message


def test_alternate_location_creates_new_disks_in_a_folder() -> None:
    step = next_step(facts(alternate=True, original=None, others=(), alternate_datastore="ds2"))
    assert step.kind is StepKind.RECORD_TARGETS
    assert [t.file for t in step.targets] == [
        "[ds2] failback/dr-web/disk-0.vmdk",
        "[ds2] failback/dr-web/disk-1.vmdk",
    ]
    assert all(t.uuid is None for t in step.targets)
    step = next_step(
        facts(alternate=True, original=None, others=(), alternate_datastore="ds2",
              recorded=step.targets)
    )  # fmt: skip
    assert step.kind is StepKind.ATTACH_TO_MASTER_TARGET
    assert len(step.new) == 2
    assert step.folder == "[ds2] failback/dr-web"


def test_uuids_are_recorded_once_the_disks_are_on_the_master_target() -> None:
    new = tuple(replace(t, uuid=None) for t in TARGETS)
    on_mt = replace(MT, disks=ORIG_DISKS)
    step = next_step(facts(recorded=new, master_target=on_mt, original=None, others=(),
                           alternate=True, alternate_datastore="ds"))  # fmt: skip
    assert step.kind is StepKind.RECORD_TARGETS
    assert step.targets == TARGETS


def test_a_changed_azure_vm_chooses_targets_again() -> None:
    step = next_step(facts(recorded=TARGETS[:1]))
    assert step.kind is StepKind.RECORD_TARGETS


def test_a_failovers_disks_keep_the_targets_of_the_disks_they_replaced() -> None:
    # After a failover to Azure the VM boots from copies named otherwise, each tagged with
    # the disk it replaced: the targets on-premises are kept (they hold that point), only
    # renamed; they are not chosen again (an alternate location's would be recreated).
    copies = (
        AzureDisk("rg", "web-fo0-1a2b", 4 * MIB, replaces="web-os"),
        AzureDisk("rg", "web-fo1-3c4d", 2 * MIB, replaces="web-data0"),
    )
    step = next_step(facts(recorded=TARGETS, azure_disks=copies))
    assert step.kind is StepKind.RECORD_TARGETS
    assert step.targets == (
        replace(TARGETS[0], source="web-fo0-1a2b"),
        replace(TARGETS[1], source="web-fo1-3c4d"),
    )
    # A copy of another VM's disk is no match: the targets are chosen again.
    stranger = (copies[0], replace(copies[1], replaces="db-data0"))
    again = next_step(facts(recorded=TARGETS, azure_disks=stranger))
    assert again.targets == (
        TargetDisk("web-fo0-1a2b", "[ds] web/disk-0.vmdk", 4 * MIB, "u-0"),
        TargetDisk("web-fo1-3c4d", "[ds] web/disk-1.vmdk", 2 * MIB, "u-1"),
    )


def test_a_vm_a_cancelled_failback_created_is_detached_only_when_off() -> None:
    created = VSphereVM("new", "web-new", False, ORIG_DISKS)
    step = next_step(facts(recorded=TARGETS, alternate=True, original=None, others=(created,),
                           alternate_datastore="ds"))  # fmt: skip
    assert (step.kind, step.reason) == (StepKind.BLOCKED, "OnPremVMRunning")
    off = replace(created, powered_off=True)
    step = next_step(facts(recorded=TARGETS, alternate=True, original=None, others=(off,),
                           alternate_datastore="ds"))  # fmt: skip
    assert (step.kind, step.vm) == (StepKind.DETACH, "new")


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({"last_point": None}, ReplicationState.INITIAL_SYNC),
        ({}, ReplicationState.REPLICATING),
        ({"resync_pending": "a disk grew"}, ReplicationState.RESYNCHRONIZING),
        ({"phase": SessionPhase.PAUSED}, ReplicationState.PAUSED),
    ],
)
def test_replication_state(changes: dict[str, object], state: ReplicationState) -> None:
    got = replication_status(Direction.AZURE_TO_ON_PREM, session(**changes), 6 * MIB, NOW)
    assert got.state is state


def test_initial_sync_progress_and_eta() -> None:
    progress = CycleProgress(1, 1, 3, 0, 2 * MIB, MIB)
    got = replication_status(
        Direction.AZURE_TO_ON_PREM,
        session(last_point=None, cycle=progress, throughput_bytes_per_second=MIB),
        6 * MIB,
        NOW,
    )
    assert (got.bytes_total, got.bytes_sent, got.percent, got.eta_seconds) == (
        6 * MIB, 2 * MIB, 33, 4,
    )  # fmt: skip
    assert replication_status(Direction.AZURE_TO_ON_PREM, None, 0, NOW).state is (
        ReplicationState.NOT_STARTED
    )


def test_allowed_actions() -> None:
    assert allowed_actions(active_on_prem=False, held=False, has_point=True, replicating=True,
                           awaiting=False) == (Action.FAILBACK, Action.RESYNC)  # fmt: skip
    assert allowed_actions(active_on_prem=False, held=True, has_point=True, replicating=True,
                           awaiting=False) == ()  # fmt: skip
    assert Action.COMMIT in allowed_actions(active_on_prem=False, held=True, has_point=True,
                                            replicating=False, awaiting=True)  # fmt: skip
    assert allowed_actions(active_on_prem=True, held=False, has_point=False, replicating=False,
                           awaiting=False) == (Action.REPROTECT,)  # fmt: skip


def test_group_names_fit_the_master_target() -> None:
    assert group_name("dr", "web-01") == "dr.web-01"
    long = group_name("dr", "x" * 200)
    assert len(long) <= 63
    assert long != group_name("dr", "x" * 199)


# ------------------------------------------------------------------ drift

RUNNING = Step(StepKind.BLOCKED, "VM web is powered on", reason="OnPremVMRunning")
GONE = azure_vm_gone(
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web"
)
REPLICATING = Step(StepKind.REPLICATING)


@pytest.mark.parametrize(
    ("step", "pausing"),
    [
        (RUNNING, True),
        (GONE, True),
        (Step(StepKind.BLOCKED, "no managed disk", reason="NoDisks"), True),
        (Step(StepKind.BLOCKED, "disks differ", reason="TargetDisksMismatch"), False),
        (Step(StepKind.BLOCKED, "gone", reason="OriginalVMNotFound"), False),
        (Step(StepKind.BLOCKED, "no placement", reason="PlacementNotFound"), False),
        (Step(StepKind.BLOCKED, "no UUID", reason="DiskUUIDMissing"), False),
        (REPLICATING, False),
        (Step(StepKind.ATTACH_TO_MASTER_TARGET, "attaching"), False),
        (None, False),
    ],
)
def test_only_drifts_that_endanger_data_pause(step: Step | None, pausing: bool) -> None:
    assert pauses(step) is pausing


def test_the_pausing_reasons_are_exactly_the_dangerous_drifts() -> None:
    assert sorted(PAUSING) == ["AzureVMNotFound", "NoDisks", "OnPremVMRunning"]


def test_an_azure_vm_gone_says_what_happened_and_what_to_do() -> None:
    assert (GONE.kind, GONE.reason) == (StepKind.BLOCKED, "AzureVMNotFound")
    assert "virtualMachines/web" in GONE.message
    for words in ("paused", "nothing on-premises is touched", "recovery point", "Restore"):
        assert words in GONE.message


def test_an_azure_vm_without_managed_disks_pauses() -> None:
    step = next_step(facts(azure_disks=(), recorded=TARGETS))
    assert (step.kind, step.reason) == (StepKind.BLOCKED, "NoDisks")
    assert pauses(step)


IDLE, PAUSED, COPYING = SessionPhase.IDLE, SessionPhase.PAUSED, SessionPhase.COPYING
RELEASED, WAITING = SessionPhase.RELEASED, SessionPhase.WAITING
TARGETS_MISMATCH = Step(StepKind.BLOCKED, "disks differ", reason="TargetDisksMismatch")


@pytest.mark.parametrize(
    ("step", "phase", "acting", "want"),
    [
        # A drift pauses a session that runs, in any phase, even while the steps are only
        # judged (the master target moved, a prerequisite fails).
        (RUNNING, IDLE, True, True),
        (RUNNING, COPYING, True, True),  # PUT again until the cycle under way finished
        (RUNNING, WAITING, False, True),
        (GONE, IDLE, True, True),
        (GONE, COPYING, False, True),
        (RUNNING, PAUSED, True, None),  # paused already: nothing to send
        (GONE, PAUSED, False, None),
        (RUNNING, None, True, None),  # no session: nothing to pause
        (GONE, RELEASED, True, None),  # released for a failback: the plan's
        # Resumed only by a pass that could act and found every step holding.
        (REPLICATING, PAUSED, True, False),
        (REPLICATING, PAUSED, False, None),
        (Step(StepKind.DETACH, "detaching"), PAUSED, True, None),
        (TARGETS_MISMATCH, PAUSED, True, None),
        (REPLICATING, IDLE, True, None),
        # A block that is no drift leaves the session as it is.
        (TARGETS_MISMATCH, IDLE, True, None),
        (None, PAUSED, True, None),  # nothing judged (held, Azure unreadable)
        (None, IDLE, True, None),
    ],
)
def test_when_the_session_is_paused_or_resumed(
    step: Step | None, phase: SessionPhase | None, acting: bool, want: bool | None
) -> None:
    observed = session(phase=phase) if phase is not None else None
    assert session_paused(step, observed, acting=acting) is want


@pytest.mark.parametrize(
    ("observed", "drift", "state"),
    [
        (None, True, ReplicationState.PAUSED),
        (None, False, ReplicationState.NOT_STARTED),
        ({"phase": SessionPhase.COPYING}, True, ReplicationState.PAUSED),
        ({"phase": SessionPhase.PAUSED}, True, ReplicationState.PAUSED),
        ({"last_point": None}, True, ReplicationState.PAUSED),
        ({}, False, ReplicationState.REPLICATING),
    ],
)
def test_a_drift_reports_paused_whatever_the_session_says(
    observed: dict[str, object] | None, drift: bool, state: ReplicationState
) -> None:
    got = replication_status(
        Direction.AZURE_TO_ON_PREM,
        session(**observed) if observed is not None else None,
        6 * MIB,
        NOW,
        drift=drift,
    )
    assert got.state is state
    if drift and observed is not None:
        assert got.last_cycle_time == NOW, "the last point is still shown"


# ------------------------------------------------------------------ replication groups (R-GRP-1)

DB_TARGETS = (TargetDisk("db-os", "[ds] db/disk-0.vmdk", 4 * MIB, "u-9"),)
ON_MT = VSphereVM("mt", "mt-01", False, (*ORIG_DISKS, VDisk("[ds] db/disk-0.vmdk", "u-9", 4 * MIB)))


def grouped(
    name: str = "web", db: tuple[TargetDisk, ...] = DB_TARGETS, **changes: object
) -> ForwardFacts:
    members = tuple(
        sorted((GroupMember("web", TARGETS), GroupMember("db", db)), key=lambda m: m.name)
    )
    own = TARGETS if name == "web" else DB_TARGETS
    disks = AZ if name == "web" else (AzureDisk("rg", "db-os", 4 * MIB),)
    return facts(
        name=name, recorded=own, azure_disks=disks, others=(), original=None,
        master_target=ON_MT, replication_group="erp", members=members, **changes,
    )  # fmt: skip


def test_a_group_waits_for_every_member_to_bring_its_disks() -> None:
    step = next_step(grouped(db=()))
    assert step.kind is StepKind.WAITING
    assert "db" in step.message
    assert "one cut" in step.message
    not_on_mt = replace(DB_TARGETS[0], file="[ds] db/elsewhere.vmdk")
    assert next_step(grouped(db=(not_on_mt,))).kind is StepKind.WAITING


def test_the_first_member_registers_every_disk_then_starts_the_one_session() -> None:
    # "db" < "web": db leads; web waits for it.
    assert next_step(grouped()).kind is StepKind.WAITING
    lead = next_step(grouped(name="db"))
    assert lead.kind is StepKind.ENSURE_GROUP
    assert lead.targets == (*DB_TARGETS, *TARGETS)  # members by name
    every = ("u-0", "u-1", "u-9")
    registered = group(every)
    session_step = next_step(grouped(name="db", group=registered))
    assert session_step.kind is StepKind.ENSURE_SESSION
    assert session_step.targets == (*DB_TARGETS, *TARGETS)
    assert "db starts" in next_step(grouped(group=registered)).message
    running = next_step(grouped(group=registered, session=session()))
    assert running.kind is StepKind.REPLICATING
