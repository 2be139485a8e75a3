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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from failback.api.constants import GROUP, VERSION
from testbed import operator as operator_
from testbed.azure.process import AzureEmulator
from testbed.kube import Kube
from testbed.procs import stop
from testbed.scenario import Machine, Scenario
from testbed.tools import Tool
from testbed.vcsim import VCenter

pytestmark = pytest.mark.testbed


def _get(k8s: Any, ns: str, plural: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = client.CustomObjectsApi(k8s).get_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name
    )
    return got


def _patch(k8s: Any, ns: str, plural: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name, {"spec": spec}
    )


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
        sc.build([Machine("web-01")])
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


def test_planned_failback_to_the_original_vm(world: World) -> None:
    sc = world.sc
    rng = random.Random(11)
    world.wait("web-01 is Protected with a recovery point", lambda: world.protected("web-01"))
    sizes = list(sc.machines["web-01"].disks)

    # The machine keeps writing in Azure; a planned failback loses none of it.
    for disk in sc.azure_disks("web-01"):
        sc.write_azure(disk, rng)
    _patch(world.k8s, sc.namespace, "failbackplans", sc.plan, {"activeSite": "OnPrem"})
    world.wait(
        "the plan completed",
        lambda: (world.plan().get("status") or {}).get("phase") == "Completed",
        timeout=180,
    )
    original = sc.originals["web-01"]
    assert sc.power(original) == "poweredOn"
    assert sc.onprem_bytes(original, sizes) == sc.azure_bytes("web-01")
