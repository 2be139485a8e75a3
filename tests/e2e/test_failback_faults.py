"""The failback under faults: the operator killed at every step, Azure unable to confirm a
stop, vCenter unreachable, and a cancel before commit. Each ends byte-exact, with no
duplicate or orphaned resource, and with both sites' histories proving that no machine
ran on both sides."""

from __future__ import annotations

import random
import time

import pytest

from testbed.scenario import MIB, Machine

from .conftest import WorldMaker
from .test_failback import never_both_running

pytestmark = pytest.mark.testbed

MAX_KILLS = 8


def test_the_operator_killed_at_every_step_converges_without_duplicates(
    make_world: WorldMaker,
) -> None:
    world = make_world([Machine("app-01", original=False, disks=(4 * MIB, 2 * MIB))],
                       reprotectAfterCommit=False)  # fmt: skip
    sc = world.sc
    since = sc.emulator.control.events()[-1]["seq"]
    world.wait("app-01 is Protected", lambda: world.protected("app-01"))
    targets = [t["file"] for t in world.pvm("app-01")["status"]["replication"]["targetDisks"]]
    assert sc.disk_files(sc.mt_vm) == targets

    before = sc.vms_named("app-01")  # other tests' VMs of that name may exist
    world.set_plan(activeSite="OnPrem")
    # SIGKILL at random moments until the run completes: a pass does several steps at
    # once (restore, attach, power on), so kills land inside passes, between an action and
    # its status write, as well as between passes.
    rng = random.Random(3)
    killed_at: list[str] = []
    deadline = time.monotonic() + 240
    while world.plan_status().get("phase") != "Completed":
        if time.monotonic() > deadline:
            world.fail(f"the plan did not complete; the operator was killed at {killed_at}")
        if len(killed_at) < MAX_KILLS:
            time.sleep(rng.uniform(0.5, 3.0))
            status = world.plan_status()
            killed_at.append(f"{status.get('phase')}/{status.get('currentStep')}")
            world.kill_operator()
            world.start_operator()
        time.sleep(0.3)
    assert len(killed_at) >= 4, killed_at
    assert any("FailingOver" in k for k in killed_at), killed_at

    target = world.pvm_target("app-01")
    assert sc.power(target) == "poweredOn"
    assert sc.onprem_bytes(target, sc.machines["app-01"].disks) == sc.azure_bytes("app-01")
    # No duplicate: one VM came back, holding the disks once; no orphan: the master target
    # holds no disk and no group of it any more (the commit dropped its recovery points).
    assert sorted(sc.vms_named("app-01")) == sorted([*before, target])
    assert sc.disk_files(target) == targets
    assert sc.disk_files(sc.mt_vm) == []
    assert sc.rig is not None
    status, _ = sc.rig.mt.client.request("GET", f"/v1/groups/{sc.namespace}.app-01")
    assert status == 404
    never_both_running(world, since)


def test_an_unconfirmed_fence_and_an_unreachable_vcenter_block_then_a_cancel_restores_azure(
    make_world: WorldMaker,
) -> None:
    world = make_world([Machine("web-01")], commit={"mode": "Manual"})
    sc = world.sc
    control = sc.emulator.control
    since = control.events()[-1]["seq"]
    world.wait("web-01 is Protected", lambda: world.protected("web-01"))
    original = sc.originals["web-01"]
    on_mt = sc.disk_files(sc.mt_vm)
    assert on_mt, "the original VM's disks are on the master target"

    # A deallocation now takes about half a minute: the fence can be watched.
    control.set_time_scale(2.0)
    world.set_plan(activeSite="OnPrem")
    world.wait("the fence started",
               lambda: world.step("fence", "web-01").get("state") == "Running")  # fmt: skip

    # 1. Azure stops answering about the VM: its stop cannot be confirmed.
    fault = control.add_fault(
        "error", method="GET", path=r"/virtualMachines/web-01$", status=503, times=100_000
    )
    control.set_time_scale(60.0)  # the deallocation completes in Azure meanwhile
    world.wait(
        "the fence waits for a confirmation",
        lambda: "cannot be confirmed" in world.step("fence", "web-01").get("message", ""),
    )
    time.sleep(3)
    assert world.step("fence", "web-01")["state"] == "Pending"
    assert sc.power(original) == "poweredOff"
    assert sc.disk_files(sc.mt_vm) == on_mt, "nothing was detached"

    # 2. Azure answers again, but vCenter is unreachable from the operator. (Restarted, so
    # that no pass begun with the old Secret is still under way when Azure answers.)
    sc.set_vcenter_server("127.0.0.1:1")
    world.kill_operator()
    world.start_operator()
    control.remove_fault(fault)
    world.wait(
        "the failback stops before the disks move",
        lambda: "unreachable" in world.step("attach", "web-01").get("message", ""),
    )
    assert world.step("restore", "web-01")["state"] == "Succeeded"
    time.sleep(3)
    assert world.step("attach", "web-01")["state"] != "Succeeded"
    assert sc.disk_files(sc.mt_vm) == on_mt, "nothing was detached"
    assert sc.power(original) == "poweredOff"

    # 3. vCenter is back: the failback reaches FailedOver and waits for approval.
    sc.set_vcenter_server(None)
    world.wait_phase("FailedOver")
    assert sc.power(original) == "poweredOn"
    assert sc.azure_power("web-01") == "deallocated"
    world.wait(
        "the ProtectedVM offers commit and cancel",
        lambda: (
            {"Commit", "Cancel"}
            <= set((world.pvm("web-01").get("status") or {}).get("allowedActions", []))
        ),
        timeout=30,
    )

    # 4. Cancel before commit: activeSite back to Azure.
    world.set_plan(activeSite="Azure")
    world.wait(
        "the cancel completed",
        lambda: (
            world.plan_status().get("phase") == "Ready" and world.plan_status().get("runId") is None
        ),
        timeout=120,
    )
    assert sc.power(original) == "poweredOff"
    assert sc.azure_power("web-01") == "running"
    succeeded = next(c for c in world.plan_status()["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "Cancelled"

    # Replication from Azure resumed, into the original VM's disks again (a full resync:
    # they ran on-premises meanwhile).
    rng = random.Random(5)
    for disk in sc.azure_disks("web-01"):
        sc.write_azure(disk, rng)
    sizes = sc.machines["web-01"].disks
    world.wait(
        "replication from Azure resumed and caught up with the new writes",
        lambda: (
            world.protected("web-01")
            and sc.disk_files(sc.mt_vm) == on_mt
            and sc.onprem_bytes(sc.mt_vm, sizes) == sc.azure_bytes("web-01")
        ),
    )
    never_both_running(world, since)
