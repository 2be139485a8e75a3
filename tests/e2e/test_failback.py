"""The product end to end: `failback operator` (as its least-privilege ServiceAccount), the
process server and master target as processes, vcsim and the Azure emulator.

Machines run in Azure with data on their disks; the operator reprotects them (Azure →
on-premises), the plan fails them back (fence, final sync, restore, attach, power on),
commits, and replicates them back to Azure. After each leg the disks are compared byte for
byte, and the two sites' own event histories prove that no machine ever ran on both sides.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from testbed.invariant import check_never_both_running
from testbed.scenario import Machine

from .conftest import WorldMaker
from .world import World

pytestmark = pytest.mark.testbed

MIB = 1 << 20
MACHINES = [
    Machine("web-01"),  # its original VM exists: delta sync into it (R-LOC-1)
    Machine("app-01", original=False, disks=(4 * MIB, 2 * MIB)),  # a new VM (R-LOC-2)
    Machine("phys-01", physical=True),  # a physical server comes back as a VM (R-LOC-3)
]


def test_reprotect_planned_failback_of_three_groups_commit_reverse_reprotect_and_failover(
    make_world: WorldMaker,
) -> None:
    world = make_world(MACHINES)
    sc = world.sc
    rng = random.Random(11)
    since = sc.emulator.control.events()[-1]["seq"]
    for name in sc.machines:
        world.wait(f"{name} is Protected with a recovery point", lambda n=name: world.protected(n))
    pvm = world.pvm("app-01")["status"]
    assert pvm["location"]["target"] == "Alternate"
    assert pvm["replication"]["direction"] == "AzureToOnPrem"
    assert [t["source"] for t in pvm["replication"]["targetDisks"]] == ["app-01-os", "app-01-data0"]
    assert "Failback" in pvm["allowedActions"]

    # The machines keep writing in Azure; a planned failback loses none of it.
    for name in sc.machines:
        for disk in sc.azure_disks(name):
            sc.write_azure(disk, rng)
    # A dry run first: the whole step plan is published, nothing is done.
    world.set_plan(activeSite="OnPrem", dryRun=True)

    def dry_run_published() -> bool:
        status = world.plan_status()
        done = {c["type"]: c["reason"] for c in status.get("conditions", [])}
        return done.get("Succeeded") == "DryRunCompleted" and len(status.get("steps", [])) >= 21

    world.wait("the dry run published its steps", dry_run_published, timeout=60)
    dry = world.plan_status()
    assert dry.get("runId") is None
    preflight = next(s for s in dry["steps"] if s["name"] == "preflight" and s["vm"] == "app-01")
    assert "Alternate location" in preflight["message"], preflight
    assert all(sc.azure_power(name) == "running" for name in sc.machines)

    world.set_plan(dryRun=False)
    world.wait_phase("Completed", timeout=240)
    plan = world.plan()["status"]
    assert plan["activeSite"] == "OnPrem"
    assert plan["runId"].startswith("run-")
    by_step: dict[tuple[str, str | None], dict[str, Any]] = {
        (s["name"], s.get("vm")): s for s in plan["steps"]
    }
    for name in sc.machines:
        for step in ("preflight", "fence", "final-sync", "restore", "attach", "power-on"):
            line = by_step[(step, name)]
            assert line["state"] == "Succeeded", line
            assert line["startTime"] <= line["endTime"], line
    # Groups run in order: app-01 was fenced only after web-01 ran on-premises.
    assert by_step[("power-on", "web-01")]["endTime"] <= by_step[("fence", "app-01")]["startTime"]
    assert by_step[("commit", None)]["state"] == "Succeeded"
    exposed = world.metrics()
    plan_line = (
        f'failback_plan_phase{{namespace="{sc.namespace}",phase="Completed",plan="{sc.plan}"}} 1.0'
    )
    assert plan_line in exposed
    assert 'failback_plan_step_duration_seconds_count{step="fence"} 3.0' in exposed
    assert f'failback_vm_rpo_threshold_seconds{{namespace="{sc.namespace}",vm="web-01"}}' in exposed

    for name, machine in sc.machines.items():
        target = world.pvm_target(name)
        assert sc.power(target) == "poweredOn", name
        assert sc.onprem_bytes(target, machine.disks) == sc.azure_bytes(name), name

    # Reverse reprotect: each machine replicates into Azure replica disks.
    def reverse_replicating() -> bool:
        for name in sc.machines:
            status = world.pvm(name).get("status") or {}
            replication = status.get("replication") or {}
            if (
                status.get("activeSite") != "OnPrem"
                or replication.get("direction") != ("OnPremToAzure")
                or replication.get("state") != "Replicating"
            ):
                return False
        return True

    world.wait("every machine replicates back to Azure", reverse_replicating, timeout=120)
    for name, machine in sc.machines.items():
        replicas = [f"{d}-reprotect" for d in sc.azure_disks(name)]
        assert sc.azure_bytes(name, replicas) == sc.onprem_bytes(
            world.pvm_target(name), machine.disks
        ), name

    fail_over_to_azure_again(world)
    never_both_running(world, since)


def fail_over_to_azure_again(world: World) -> None:
    """After the committed failback: activeSite back to Azure is a new run, a failover
    (the on-premises VMs fenced, a final sync into the replicas, new disks from that point,
    the Azure VMs booted from them), then replication Azure → on-premises again."""
    sc = world.sc
    failback_run = world.plan_status()["runId"]
    onprem = {
        name: sc.onprem_bytes(world.pvm_target(name), machine.disks)
        for name, machine in sc.machines.items()
    }
    world.set_plan(activeSite="Azure")

    def failed_over() -> bool:
        status = world.plan_status()
        return status.get("runTarget") == "Azure" and status.get("phase") == "Completed"

    world.wait("the failover to Azure Completed", failed_over, timeout=240)
    plan = world.plan_status()
    assert plan["runId"] != failback_run
    assert plan["committedSite"] == "Azure"
    assert plan["activeSite"] == "Azure"
    for name in sc.machines:
        for step in ("fence", "final-sync", "restore", "attach", "power-on", "guest-ready"):
            assert world.step(step, name).get("state") == "Succeeded", (name, step)
        assert sc.azure_power(name) == "running", name
        assert sc.power(world.pvm_target(name)) == "poweredOff", name
        disks = sc.azure_vm_disks(name)
        assert not set(disks) & set(sc.azure_disks(name)), disks  # new disks, from the point
        # Byte-exact: what ran on-premises until the fence is what Azure boots from.
        assert sc.azure_bytes(name, disks) == onprem[name], name

    # Reprotect: Azure → on-premises again, into the disks the failback used.
    def replicating_home() -> bool:
        for name in sc.machines:
            status = world.pvm(name).get("status") or {}
            replication = status.get("replication") or {}
            if (
                status.get("activeSite") != "Azure"
                or replication.get("direction") != "AzureToOnPrem"
                or replication.get("state") not in ("Replicating", "Resynchronizing")
            ):
                return False
        return True

    world.wait("every machine replicates to on-premises again", replicating_home, timeout=180)


def never_both_running(world: World, since: int) -> None:
    sc = world.sc
    pairs = [((sc.resource_group, name), world.pvm_target(name)) for name in sc.machines]
    report = check_never_both_running(sc.emulator.control, sc.si, pairs, since_seq=since)
    for pair in report.pairs:
        assert pair.azure, "the Azure side ran in this test"
