"""The product end to end: `failback operator` (as its least-privilege ServiceAccount), the
process server and master target as processes, vcsim and the Azure emulator.

Machines run in Azure with data on their disks; the operator reprotects them (Azure →
on-premises), the plan fails them back (fence, final sync, restore, attach, power on),
commits, and replicates them back to Azure. After each leg the disks are compared byte for
byte, and the two sites' own event histories prove that no machine ever ran on both sides.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from failback.api.constants import GROUP, VERSION
from failback.services.sites import FAILBACK_VM_NAMESPACE
from testbed import operator as operator_
from testbed.azure.process import AzureEmulator
from testbed.invariant import check_never_both_running
from testbed.kube import Kube
from testbed.procs import stop
from testbed.scenario import Machine, Scenario
from testbed.tools import Tool
from testbed.vcsim import VCenter

pytestmark = pytest.mark.testbed

MIB = 1 << 20
MACHINES = [
    Machine("web-01"),  # its original VM exists: delta sync into it (R-LOC-1)
    Machine("app-01", original=False, disks=(4 * MIB, 2 * MIB)),  # a new VM (R-LOC-2)
    Machine("phys-01", physical=True),  # a physical server comes back as a VM (R-LOC-3)
]


def _get(k8s: Any, ns: str, plural: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = client.CustomObjectsApi(k8s).get_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name
    )
    return got


def _patch(k8s: Any, ns: str, plural: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name, {"spec": spec}
    )


def failback_vm_uuid_of(uid: str) -> str:
    return str(uuid.uuid5(FAILBACK_VM_NAMESPACE, uid))


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"])
        for c in (obj.get("status") or {}).get("conditions", [])
    }


class World:
    def __init__(self, sc: Scenario, k8s: Any, log: Path) -> None:
        self.sc, self.k8s, self.log = sc, k8s, log

    def pvm(self, name: str) -> dict[str, Any]:
        return _get(self.k8s, self.sc.namespace, "protectedvms", name)

    def plan(self) -> dict[str, Any]:
        return _get(self.k8s, self.sc.namespace, "failbackplans", self.sc.plan)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        brief = {
            name: {
                "phase": (obj.get("status") or {}).get("phase"),
                "conditions": {t: c for t, c in _conditions(obj).items() if c[0] != "True"},
                "replication": (obj.get("status") or {}).get("replication"),
            }
            for name, obj in [("plan", self.plan())] + [(m, self.pvm(m)) for m in self.sc.machines]
        }
        steps = (self.plan().get("status") or {}).get("steps", [])
        errors = [
            line for line in self.log.read_text().splitlines()
            if '"severity": "error"' in line or '"severity": "warning"' in line
        ]  # fmt: skip
        pytest.fail(
            f"{what} within {timeout:g}s\n{json.dumps(brief, indent=1, default=str)}\n"
            f"steps: {json.dumps(steps, indent=1)[-3000:]}\noperator warnings:\n"
            + "\n".join(errors[-20:])
        )

    def pvm_target(self, name: str) -> str:
        """The on-premises VM the machine runs as after failback."""
        if name in self.sc.originals:
            return self.sc.originals[name]
        return failback_vm_uuid_of(self.pvm(name)["metadata"]["uid"])

    def protected(self, name: str) -> bool:
        status = self.pvm(name).get("status") or {}
        return (
            status.get("phase") == "Protected"
            and (status.get("recoveryPoints") or {}).get("count", 0) >= 1
        )


@pytest.fixture
def world(
    namespace: str,
    kubectl: Tool,
    crds_installed: list[str],
    k8s_client: Any,
    kube: Kube,
    vcenter: VCenter,
    azure_emulator: AzureEmulator,
    si: Any,
    tmp_path: Path,
) -> Iterator[World]:
    operator_.install_into(kubectl, namespace)
    sc = Scenario(tmp_path / "sc", namespace, kubectl, azure_emulator, vcenter, si)
    op = None
    try:
        sc.build(MACHINES)
        op = operator_.start(
            kube,
            tmp_path / "operator",
            recheck_interval=1,
            namespace=namespace,
            log_format="json",
            extra_args=[
                f"--azure-arm-endpoint={azure_emulator.arm_url}",
                f"--azure-authority={azure_emulator.authority}",
                f"--azure-ca-file={azure_emulator.ca_file}",
                "--recheck-idle=0.5",
                "--replication-interval=2",
            ],
        )
        yield World(sc, k8s_client, op.log_file)
    finally:
        if op is not None:
            stop(op.pid)
        sc.stop()


def test_reprotect_planned_failback_of_three_groups_commit_and_reverse_reprotect(
    world: World,
) -> None:
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
    _patch(world.k8s, sc.namespace, "failbackplans", sc.plan, {"activeSite": "OnPrem"})
    world.wait(
        "the plan completed",
        lambda: (world.plan().get("status") or {}).get("phase") == "Completed",
        timeout=240,
    )
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

    pairs = []
    for name, machine in sc.machines.items():
        target = world.pvm_target(name)
        assert sc.power(target) == "poweredOn", name
        assert sc.onprem_bytes(target, machine.disks) == sc.azure_bytes(name), name
        pairs.append(((sc.resource_group, name), target))

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

    report = check_never_both_running(sc.emulator.control, sc.si, pairs, since_seq=since)
    for pair in report.pairs:
        assert pair.azure, "the Azure side ran in this test"
        assert pair.onprem, "the on-premises side ran in this test"
