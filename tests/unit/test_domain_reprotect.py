"""``domain.reprotect``: the steps of an AzureToOnPrem replication, each from observed facts."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from failback.api.protectedvm import Action, Direction, ReplicationState, TargetDisk
from failback.domain.recoverypoints import GroupState, GroupStatus
from failback.domain.replication import CycleProgress, SessionPhase, SessionStatus
from failback.domain.reprotect import (
    AzureDisk,
    ForwardFacts,
    StepKind,
    VDisk,
    VSphereVM,
    allowed_actions,
    group_name,
    next_step,
    replication_status,
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
