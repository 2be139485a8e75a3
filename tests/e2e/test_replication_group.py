"""A replication group end to end (R-GRP-1): its members replicate through **one** process
server session into **one** master target group, so every recovery point is one cut across
all their disks; the plan fails them back at that one point, restoring the shared group
only once every member is fenced and synced.

Two machines of group ``erp``: ``app-01`` into its original VM, ``db-01`` (two disks) to a
new VM at the alternate location. The plan lists them in one group.
"""

from __future__ import annotations

import random

import pytest

from failback.domain.reprotect import group_name, replication_key
from testbed.invariant import check_never_both_running
from testbed.scenario import Machine

from .conftest import WorldMaker

pytestmark = pytest.mark.testbed

MIB = 1 << 20
MACHINES = [
    Machine("app-01", replication_group="erp"),
    Machine("db-01", original=False, disks=(4 * MIB, 2 * MIB), replication_group="erp"),
]
PLAN_GROUPS = [{"name": "erp", "members": ["app-01", "db-01"]}]


def test_a_replication_group_replicates_as_one_cut_and_fails_back_at_one_point(
    make_world: WorldMaker,
) -> None:
    world = make_world(MACHINES, groups=PLAN_GROUPS)
    sc = world.sc
    assert sc.rig is not None
    ps, mt, ns = sc.rig.ps.client, sc.rig.mt.client, sc.namespace
    since = sc.emulator.control.events()[-1]["seq"]
    for name in sc.machines:
        world.wait(f"{name} is Protected with a recovery point", lambda n=name: world.protected(n))

    # One session, one master target group, holding every member's disks.
    key = replication_key("app-01", "erp")
    session = ps.ok("GET", f"/v1/sessions/{ns}/{key}")
    sources = [d["name"] for d in session["spec"]["disks"]]
    assert sources == ["app-01-os", "db-01-os", "db-01-data0"], sources
    assert sorted(session["spec"]["vmIds"] + [session["spec"]["vmId"]]) == sorted(
        sc.vm_id(n) for n in sc.machines
    )
    for name in sc.machines:
        status, _ = ps.request("GET", f"/v1/sessions/{ns}/{name}")
        assert status == 404, f"{name} has a session of its own"
    group = mt.ok("GET", f"/v1/groups/{group_name(ns, key)}")
    assert len(group["disks"]) == 3, group
    # Both report the group's points: the same newest point, the same time.
    latest = {world.pvm(n)["status"]["recoveryPoints"]["latest"] for n in sc.machines}
    assert len(latest) == 1, latest
    for name in sc.machines:
        agent = world.pvm(name)["status"].get("conditions") or []
        registered = next(c for c in agent if c["type"] == "AgentRegistered")
        assert registered["status"] == "True", (name, registered)  # every member's vmId

    # The machines keep writing; a planned failback brings every byte of both back.
    rng = random.Random(5)
    for name in sc.machines:
        for disk in sc.azure_disks(name):
            sc.write_azure(disk, rng)
    world.set_plan(activeSite="OnPrem")
    world.wait_phase("Completed", timeout=240)
    for name, machine in sc.machines.items():
        target = world.pvm_target(name)
        assert sc.power(target) == "poweredOn", name
        assert sc.onprem_bytes(target, machine.disks) == sc.azure_bytes(name), name
    pairs = [((sc.resource_group, n), world.pvm_target(n)) for n in sc.machines]
    report = check_never_both_running(sc.emulator.control, sc.si, pairs, since_seq=since)
    assert all(p.azure for p in report.pairs)


def test_a_replication_group_split_across_plan_groups_is_refused(make_world: WorldMaker) -> None:
    split = [{"name": "first", "members": ["app-01"]}, {"name": "second", "members": ["db-01"]}]
    world = make_world(MACHINES, groups=split)
    world.wait(
        "the plan reports the split group",
        lambda: (
            next(
                (
                    c
                    for c in world.plan_status().get("conditions", [])
                    if c["type"] == "ReplicationGroupConsistent"
                ),
                {},
            ).get("reason")
            == "ReplicationGroupSplit"
        ),
        timeout=60,
    )
    message = next(
        c["message"]
        for c in world.plan_status()["conditions"]
        if c["type"] == "ReplicationGroupConsistent"
    )
    assert "split across groups first, second" in message
    assert "put its members in one group" in message
    # Asked to fail back anyway, nothing moves: both stay in Azure.
    world.set_plan(activeSite="OnPrem")
    world.wait(
        "the plan says why it cannot start",
        lambda: "split" in (world.step("preflight", "app-01").get("message") or ""),
        timeout=60,
    )
    assert world.plan_status()["phase"] == "Validating"
    assert all(sc_power == "running" for sc_power in map(world.sc.azure_power, world.sc.machines))
    assert world.step("fence", "app-01").get("state") == "Pending"
