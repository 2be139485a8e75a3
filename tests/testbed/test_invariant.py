"""The test bed's checker of the core safety invariant (``testbed.invariant``): a VM's Azure
instance and its on-premises twin never run at the same time.

The pure core (intervals from power events, overlaps) and each site's normalization are
tables; the emulator's wall times are checked in process across a clock jump; and one
story runs against the real emulator and vcsim: Azure deallocated then vCenter powered on
passes, both powered on fails naming the pair.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from pyVmomi import vim

from testbed.azure.clock import Clock
from testbed.azure.process import AzureEmulator
from testbed.azure.stats import Stats
from testbed.azure.store import Store
from testbed.dataplane import fast_emulator
from testbed.invariant import (
    Change,
    Interval,
    InvariantViolated,
    PowerEvent,
    VCenterHistory,
    azure_power_events,
    check_never_both_running,
    onprem_power_events,
    overlaps,
    running_intervals,
)
from testbed.vcsim import VCenter, plain_session

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def t(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def ev(seconds: float, change: str) -> PowerEvent:
    return PowerEvent(t(seconds), Change(change), f"{change}@{seconds}")


def spans(intervals: list[Interval]) -> list[tuple[float | None, float | None]]:
    def sec(at: dt.datetime | None) -> float | None:
        return None if at is None else (at - T0).total_seconds()

    return [(sec(i.start), sec(i.end)) for i in intervals]


# -- running_intervals -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "initially_running", "expected"),
    [
        pytest.param([], None, [], id="no history: never ran"),
        pytest.param([], True, [(None, None)], id="running before an empty history: always"),
        pytest.param(
            [ev(1, "starting"), ev(2, "running"), ev(3, "stopping"), ev(4, "stopped")],
            None,
            [(1, 4)],
            id="from the start request to the completed stop",
        ),
        pytest.param(
            [ev(1, "starting"), ev(2, "running"), ev(3, "stopping")],
            None,
            [(1, None)],
            id="a stop requested but not completed still runs",
        ),
        pytest.param(
            [ev(5, "stopping"), ev(6, "stopped"), ev(8, "starting")],
            None,
            [(None, 6), (8, None)],
            id="a first stop: running before the history began",
        ),
        pytest.param(
            [ev(5, "running"), ev(6, "stopped")],
            None,
            [(None, 6)],
            id="powered on without a start: running before the history began",
        ),
        pytest.param(
            [ev(5, "running"), ev(6, "stopped")],
            False,
            [(5, 6)],
            id="seen running, known off before",
        ),
        pytest.param(
            [ev(1, "stopped"), ev(2, "starting")],
            False,
            [(2, None)],
            id="a stop of a stopped VM changes nothing",
        ),
        pytest.param(
            [ev(1, "starting"), ev(2, "starting"), ev(3, "running"), ev(4, "stopped")],
            None,
            [(1, 4)],
            id="a second start keeps the first one's time",
        ),
        pytest.param(
            [ev(1, "starting"), ev(2, "stopping"), ev(3, "starting"), ev(4, "stopped")],
            None,
            [(1, 4)],
            id="a stop preempted by a start never ended the run",
        ),
        pytest.param(
            [ev(3, "stopped"), ev(1, "starting"), ev(5, "starting"), ev(4, "stopping")],
            None,
            [(1, 3), (5, None)],
            id="events in any order are sorted by time",
        ),
        pytest.param(
            [ev(1, "starting"), ev(1, "stopped"), ev(2, "starting"), ev(9, "stopped")],
            None,
            [(1, 1), (2, 9)],
            id="a run of no measurable length is still a run",
        ),
    ],
)
def test_running_intervals(
    events: list[PowerEvent],
    initially_running: bool | None,
    expected: list[tuple[float | None, float | None]],
) -> None:
    assert spans(running_intervals(events, initially_running=initially_running)) == expected


def test_an_interval_names_the_events_that_bound_it() -> None:
    [first, second] = running_intervals(
        [ev(5, "stopped"), PowerEvent(t(8.5), Change.STARTING, "VmStartingEvent #3")]
    )
    assert str(first) == (
        "since before the history began (already running) "
        "until 2026-01-01T12:00:05.000000Z (stopped@5)"
    )
    assert str(second) == (
        "from 2026-01-01T12:00:08.500000Z (VmStartingEvent #3) until now (no completed stop)"
    )


# -- overlaps --------------------------------------------------------------------------


def iv(start: float | None, end: float | None) -> Interval:
    return Interval(None if start is None else t(start), None if end is None else t(end), "s")


@pytest.mark.parametrize(
    ("azure", "onprem", "since", "expected"),
    [
        pytest.param([iv(0, 10)], [iv(20, 30)], None, [], id="apart"),
        pytest.param(
            [iv(0, 10)], [iv(10, 30)], None, [], id="touching: Azure stops as vCenter starts"
        ),
        pytest.param([iv(10, 30)], [iv(0, 10)], None, [], id="touching the other way"),
        pytest.param(
            [iv(0, 10.000001)], [iv(10, 30)], None, [(10, 10.000001)], id="one microsecond"
        ),
        pytest.param([iv(0, 20)], [iv(10, 30)], None, [(10, 20)], id="overlapping"),
        pytest.param([iv(0, 40)], [iv(10, 30)], None, [(10, 30)], id="containing"),
        pytest.param([iv(0, None)], [iv(10, 30)], None, [(10, 30)], id="Azure still running"),
        pytest.param([iv(0, 10)], [iv(5, None)], None, [(5, 10)], id="vCenter still running"),
        pytest.param([iv(0, None)], [iv(5, None)], None, [(5, None)], id="both still running"),
        pytest.param([iv(None, 10)], [iv(None, 3)], None, [(None, 3)], id="both before history"),
        pytest.param([iv(None, None)], [iv(None, None)], None, [(None, None)], id="both always"),
        pytest.param([iv(None, 10)], [iv(12, None)], None, [], id="ran before, stopped in time"),
        pytest.param([iv(1, 2), iv(7, 9)], [iv(3, 6), iv(9, 12)], None, [], id="taking turns"),
        pytest.param([iv(1, 4), iv(7, 9)], [iv(3, 8)], None, [(3, 4), (7, 8)], id="two overlaps"),
        pytest.param([iv(0, 20)], [iv(10, 30)], t(25), [], id="an overlap before since"),
        pytest.param([iv(0, 20)], [iv(10, 30)], t(15), [(15, 20)], id="cut at since"),
        pytest.param([iv(None, None)], [iv(10, None)], t(15), [(15, None)], id="since, open"),
    ],
)
def test_overlaps(
    azure: list[Interval],
    onprem: list[Interval],
    since: dt.datetime | None,
    expected: list[tuple[float | None, float | None]],
) -> None:
    found = overlaps(azure, onprem, since=since)
    assert [
        (
            None if o.start is None else (o.start - T0).total_seconds(),
            None if o.end is None else (o.end - T0).total_seconds(),
        )
        for o in found
    ] == expected


# -- the Azure emulator's history, normalized ------------------------------------------

VM_ID = "/subscriptions/s/resourceGroups/RG-A/providers/Microsoft.Compute/virtualMachines/vm-1"
OTHER = "/subscriptions/s/resourceGroups/RG-A/providers/Microsoft.Compute/virtualMachines/vm-2"


def power(
    seq: int, seconds: float, before: str | None, after: str, vm: str = VM_ID
) -> dict[str, Any]:
    return {
        "seq": seq,
        "kind": "vm.power",
        "resource_id": vm,
        "from": before,
        "to": after,
        "wall_time": t(seconds).isoformat(),
    }


def test_the_emulators_power_transitions_become_intervals() -> None:
    history = [
        {"seq": 1, "kind": "vm.created", "resource_id": VM_ID, "wall_time": t(0).isoformat()},
        power(2, 0, None, "starting"),
        power(3, 1, None, "running", vm=OTHER),
        power(4, 2, "starting", "running"),
        power(5, 10, "running", "deallocating"),
        power(6, 12, "deallocating", "deallocated"),
        power(7, 20, "deallocated", "starting"),
        power(8, 21, "starting", "stopped"),  # a failed start
        power(9, 30, "stopped", "running"),  # out of band, by the control API
        power(10, 40, "running", "stopping"),
        {"seq": 11, "kind": "vm.deleted", "resource_id": VM_ID, "wall_time": t(45).isoformat()},
    ]
    for ref in (VM_ID, VM_ID.upper(), ("rg-a", "VM-1")):
        arm_id, events, before = azure_power_events(history, ref)
        assert arm_id == VM_ID
        assert before is False
        assert spans(running_intervals(events, initially_running=before)) == [
            (0, 12),
            (20, 21),
            (30, 45),
        ]
    [interval, *_] = running_intervals(events, initially_running=before)
    assert interval.start_label == "vm.power new->starting, seq 2"
    assert interval.end_label == "vm.power deallocating->deallocated, seq 6"


def test_an_emulator_vm_running_when_its_history_begins() -> None:
    _, events, before = azure_power_events([power(7, 5, "running", "stopping")], VM_ID)
    assert before is True
    assert spans(running_intervals(events, initially_running=before)) == [(None, None)]


def test_an_unknown_emulator_vm_is_an_error_not_a_pass() -> None:
    with pytest.raises(LookupError, match="vm-9"):
        azure_power_events([power(1, 0, None, "running")], ("rg-a", "vm-9"))


# -- vCenter's history, normalized -----------------------------------------------------


def vc_event(kind: str, key: int, seconds: float, moref: str = "vm-7", **extra: Any) -> Any:
    arg = vim.event.VmEventArgument(name=moref, vm=vim.VirtualMachine(moref))
    cls = getattr(vim.event, kind)
    return cls(key=key, chainId=key, createdTime=t(seconds), vm=arg, **extra)


def created(key: int, seconds: float, instance_uuid: str, moref: str = "vm-7") -> list[Any]:
    return [
        vc_event("VmBeingCreatedEvent", key, seconds, moref),
        vc_event(
            "VmInstanceUuidAssignedEvent", key + 1, seconds, moref, instanceUuid=instance_uuid
        ),
        vc_event("VmCreatedEvent", key + 2, seconds, moref),
    ]


UUID = "5023f3e6-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("events", "power_state", "expected"),
    [
        pytest.param(
            [
                *created(1, 0, UUID),
                vc_event("VmStartingEvent", 4, 1),
                vc_event("VmPoweredOnEvent", 5, 1.5),
                vc_event("VmStartingEvent", 6, 2, moref="vm-8"),
                vc_event("VmStoppingEvent", 7, 3),
                vc_event("VmPoweredOffEvent", 8, 4),
                vc_event("VmStartingEvent", 9, 5),
                vc_event("VmPoweredOnEvent", 10, 5),
                vc_event("VmSuspendingEvent", 11, 6),
                vc_event("VmSuspendedEvent", 12, 7),
                vc_event("VmStartingEvent", 13, 8),
                vc_event("VmPoweredOnEvent", 14, 8),
                vc_event("VmGuestShutdownEvent", 15, 9),
            ],
            "poweredOn",
            [(1, 4), (5, 7), (8, None)],
            id="created here: power-on, off, suspend; a guest shutdown not yet done",
        ),
        pytest.param(
            [
                *created(1, 0, UUID),
                vc_event("VmStartingEvent", 4, 1),
                vc_event("VmFailedToPowerOnEvent", 5, 2),
            ],
            "poweredOff",
            [(1, 2)],
            id="a failed power-on ran (conservatively) until it failed",
        ),
        pytest.param(created(1, 0, UUID), "poweredOff", [], id="created off, never started"),
        pytest.param(
            [vc_event("VmInstanceUuidAssignedEvent", 1, 0, instanceUuid=UUID)],
            "poweredOn",
            [(None, None)],
            id="powered on with no record of it: since forever",
        ),
    ],
)
def test_vcenters_power_events_become_intervals(
    events: list[Any], power_state: str, expected: list[tuple[float | None, float | None]]
) -> None:
    moref, found, before = onprem_power_events(
        VCenterHistory(events), UUID, vim.VirtualMachine("vm-7"), power_state
    )
    assert moref == "vm-7"
    assert spans(running_intervals(found, initially_running=before)) == expected


def test_a_destroyed_vm_is_found_by_the_uuid_vcenter_assigned_it() -> None:
    events = [
        *created(1, 0, UUID),
        vc_event("VmStartingEvent", 4, 1),
        vc_event("VmPoweredOffEvent", 5, 2),
        vc_event("VmRemovedEvent", 6, 3),
    ]
    moref, found, before = onprem_power_events(VCenterHistory(events), UUID.upper(), None, None)
    assert moref == "vm-7"
    assert spans(running_intervals(found, initially_running=before)) == [(1, 2)]
    with pytest.raises(LookupError, match="5023f3e6-0000-4000-8000-00000000ffff"):
        onprem_power_events(
            VCenterHistory(events), "5023f3e6-0000-4000-8000-00000000ffff", None, None
        )


@pytest.mark.parametrize(
    ("events", "power_state", "expected"),
    [
        pytest.param(
            [vc_event("VmStartingEvent", 500, 20), vc_event("VmPoweredOffEvent", 501, 30)],
            "poweredOff",
            [(None, 10), (20, 30)],
            id="off at the horizon: unknown before it",
        ),
        pytest.param(
            [vc_event("VmPoweredOffEvent", 501, 30)],
            "poweredOff",
            [(None, 30)],
            id="first kept event a power-off: running since forever until then",
        ),
        pytest.param([], "poweredOff", [(None, 10)], id="no event kept, off now"),
        pytest.param([], "poweredOn", [(None, None)], id="no event kept, on now"),
    ],
)
def test_a_vm_whose_creation_vcenter_pruned_counts_as_running_before_the_horizon(
    events: list[Any], power_state: str, expected: list[tuple[float | None, float | None]]
) -> None:
    horizon = vim.event.UserLoginSessionEvent(key=400, chainId=400, createdTime=t(10))
    history = VCenterHistory([horizon, *events])
    assert history.pruned
    _, found, before = onprem_power_events(history, UUID, vim.VirtualMachine("vm-7"), power_state)
    assert spans(running_intervals(found, initially_running=before)) == expected


# -- the emulator's wall times ---------------------------------------------------------


def test_wall_times_never_go_back_when_the_emulated_clock_jumps() -> None:
    clock = Clock(60.0)
    store = Store(clock, Stats())
    store.record("vm.power", clock.now(), "vm", **{"from": "running", "to": "deallocating"})
    store.start_operation(
        "virtualMachines/deallocate",
        location="westeurope",
        resource_id="vm",
        duration=600.0,
        complete=lambda at: store.record("vm.power", at, "vm", to="deallocated"),
    )
    before = time.time()
    store.settle()  # as POST clock/advance does: settle, jump, settle
    clock.advance(3600.0)
    store.settle()
    after = time.time()
    requested, done = (dt.datetime.fromisoformat(e["wall_time"]) for e in store.events)
    # Without the floor, the completion's wall time would be 590 emulated s (~10 real s)
    # before the jump: before the request itself.
    assert requested <= done
    assert before - 0.001 <= done.timestamp() <= after
    assert dt.datetime.fromisoformat(store.events[1]["time"]).timestamp() == pytest.approx(
        store.events[0]["timestamp"] + 600.0
    )


# -- against the real emulator and vcsim -----------------------------------------------

RG = "rg-invariant"


@pytest.fixture(scope="module")
def si(vcenter: VCenter) -> Iterator[Any]:
    with plain_session(vcenter) as conn:
        yield conn


def wait(task: Any) -> None:
    deadline = time.monotonic() + 30
    while task.info.state not in ("success", "error"):
        assert time.monotonic() < deadline, "the vCenter task did not finish"
        time.sleep(0.02)
    assert task.info.state == "success", task.info.error


@pytest.fixture
def onprem_vm(si: Any) -> Iterator[Any]:
    """A powered-off VM on DC0_H0 with a fresh instance UUID; destroyed after."""
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    try:
        host = next(h for h in view.view if h.name == "DC0_H0")
    finally:
        view.Destroy()
    instance_uuid = str(uuid.uuid4())
    spec = vim.vm.ConfigSpec(
        name=f"fb-inv-{instance_uuid[:8]}",
        guestId="otherLinux64Guest",
        instanceUuid=instance_uuid,
        files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
        numCPUs=1,
        memoryMB=128,
    )
    datacenter = host.parent.parent.parent
    wait(datacenter.vmFolder.CreateVM_Task(spec, host.parent.resourcePool, host))
    vm = content.searchIndex.FindByUuid(None, instance_uuid, True, True)
    yield vm
    if vm.runtime.powerState != "poweredOff":
        wait(vm.PowerOffVM_Task())
    wait(vm.Destroy_Task())


@pytest.fixture
def emulator(azure_emulator: AzureEmulator) -> AzureEmulator:
    fast_emulator(azure_emulator)
    azure_emulator.control.create_resource_group(RG)
    return azure_emulator


def compute(emu: AzureEmulator) -> ComputeManagementClient:
    credential = ClientSecretCredential(
        emu.tenant_id, emu.client_id, emu.client_secret, **emu.credential_kwargs()
    )
    return ComputeManagementClient(
        credential, emu.subscription_id, polling_interval=0.05, **emu.arm_client_kwargs()
    )


@pytest.mark.testbed
def test_failing_back_after_azure_deallocated_passes_and_both_running_fails(
    emulator: AzureEmulator, si: Any, onprem_vm: Any
) -> None:
    control = emulator.control
    control.create_vm(RG, "web-01")  # running, as after a failover
    instance_uuid = onprem_vm.config.instanceUuid
    pair = ((RG, "web-01"), instance_uuid)
    with compute(emulator) as client:
        client.virtual_machines.begin_deallocate(RG, "web-01").result()
        wait(onprem_vm.PowerOnVM_Task())

        report = check_never_both_running(control, si, [pair])
        [checked] = report.pairs
        assert checked.azure_vm.endswith(
            "/resourceGroups/rg-invariant/providers/Microsoft.Compute/virtualMachines/web-01"
        )
        assert checked.onprem_moref == onprem_vm._moId
        [azure] = checked.azure
        [onprem] = checked.onprem
        assert azure.end is not None
        assert onprem.start is not None
        assert azure.end <= onprem.start
        assert onprem.end is None
        assert "deallocating->deallocated" in (azure.end_label or "")
        assert onprem.start_label.startswith("VmStartingEvent #")

        # Azure started again while vCenter's twin runs: caught, with both intervals.
        client.virtual_machines.begin_start(RG, "web-01").result()
        with pytest.raises(AssertionError) as failed:
            check_never_both_running(control, si, [pair])
        message = str(failed.value)
        assert "/virtualMachines/web-01" in message
        assert instance_uuid in message
        assert "vm.power deallocated->starting" in message
        assert "VmStartingEvent #" in message
        assert "until now (no completed stop)" in message

        # Judged only after both stopped again, the same history passes.
        wait(onprem_vm.PowerOffVM_Task())
        client.virtual_machines.begin_power_off(RG, "web-01").result()
        since_seq = control.events()[-1]["seq"]
        later = check_never_both_running(control, si, [pair], since_seq=since_seq)
        assert later.since is not None
        assert len(later.pairs[0].azure) == 2


@pytest.mark.testbed
def test_a_stop_completed_in_a_clock_jump_ends_at_the_jumps_real_time(
    emulator: AzureEmulator, si: Any, onprem_vm: Any
) -> None:
    control = emulator.control
    # A deallocation of 600 emulated s (10 real s at the fast clock), cut short by a jump.
    control.set_limits(durations={"virtualMachines/deallocate": 600.0})
    arm_id = control.create_vm(RG, "db-01")["id"]
    pair = (arm_id, onprem_vm.config.instanceUuid)
    with compute(emulator) as client:
        poller = client.virtual_machines.begin_deallocate(RG, "db-01")
        wait(onprem_vm.PowerOnVM_Task())  # too early: Azure is still deallocating
        jumped = time.time()
        control.advance(3600.0)
        after = time.time()
        poller.result()
    with pytest.raises(InvariantViolated) as failed:
        check_never_both_running(control, si, [pair])
    [checked] = failed.value.report.pairs
    [overlap] = checked.overlaps
    assert overlap.azure.end_label is not None
    assert "deallocating->deallocated" in overlap.azure.end_label
    assert overlap.onprem.start_label.startswith("VmStartingEvent #")
    # The deallocation completed in the jump: at its real time, not at the real time its
    # emulated end time maps to (50 s before the jump, before vCenter's power-on).
    assert overlap.azure.end is not None
    assert jumped - 0.001 <= overlap.azure.end.timestamp() <= after
