"""A failback asked for before its VM is protected (everything applied at once, the plan
with ``activeSite: OnPrem`` already), while the original VM still runs with its own old
disks: nothing is fenced or powered on until the VM is Ready, then it fails back at a point
of its own replication, never onto those old disks.

A plan that took "the target disks are on the VM" for "already restored" before
reprotect moved them stopped the Azure VM and went on with the original VM's stale disks
(found by ``test_replication_group.py``; fixed in ``services/failbackplan.py``).
"""

from __future__ import annotations

import time

import pytest

from testbed.scenario import Machine, Scenario

from .conftest import WorldMaker
from .world import conditions, set_power

pytestmark = pytest.mark.testbed

WEB = "web-01"


def test_a_failback_asked_for_before_protection_waits_then_loses_nothing(
    make_world: WorldMaker,
) -> None:
    def original_runs(sc: Scenario) -> None:
        set_power(sc.si, sc.originals[WEB], on=True)

    world = make_world([Machine(WEB)], before=original_runs, activeSite="OnPrem")
    sc = world.sc
    original = sc.originals[WEB]
    stale = sc.onprem_bytes(original, sc.machines[WEB].disks)
    assert stale != sc.azure_bytes(WEB), "the test needs the original VM's disks to differ"

    # Replication is paused (the original runs with the disks it would write) and the plan
    # waits: its target disks are recorded, still on the original VM, no group exists.
    world.wait(
        "the plan waits for the VM",
        lambda: (
            world.step("preflight", WEB).get("state") == "Pending"
            and bool((world.pvm(WEB).get("status") or {}).get("replication", {}).get("targetDisks"))
        ),
        timeout=60,
    )
    until = time.monotonic() + 5
    while time.monotonic() < until:  # several plan passes (one per second at most)
        assert conditions(world.pvm(WEB)).get("Ready", ("",))[0] != "True"
        assert sc.azure_power(WEB) == "running"
        assert sc.power(original) == "poweredOn"
        assert world.step("fence", WEB).get("state") != "Succeeded"
        time.sleep(0.3)
    assert sc.onprem_bytes(original, sc.machines[WEB].disks) == stale

    # The owner powers the original off: it is reprotected, then failed back.
    set_power(sc.si, original, on=False)
    world.wait_phase("Completed", timeout=120)
    assert sc.power(original) == "poweredOn"
    assert sc.onprem_bytes(original, sc.machines[WEB].disks) == sc.azure_bytes(WEB)
