"""Drift during reprotect, on the whole test bed (issue 8): what a DR product must not do
when the sites change under it.

- The original on-premises VM is powered on before its disks moved to the master target:
  replication is paused (``Paused``, ``OnPremVMRunning``), the VM's disks are neither
  detached nor written, and once it is powered off replication goes on by itself.
- The Azure VM is deleted while protected: the process server's session is paused, not
  deleted (read through the PS's own API: ``phase: Paused``, the same spec), the master
  target keeps every recovery point (none deleted, none rolled back) and nothing on-premises
  moves or is written (``Paused``, ``AzureVMNotFound``).

Both machines share one world (one build, one operator) to keep the test short.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient

from testbed.azure.process import AzureEmulator
from testbed.guest import GuestDisk, datastore_directories, flat_file
from testbed.scenario import Machine, Scenario

from .conftest import WorldMaker
from .world import World, conditions, set_power

pytestmark = pytest.mark.testbed

WEB, APP = "web-01", "app-01"
MACHINES = [Machine(WEB), Machine(APP, original=False)]


def delete_azure_vm(emu: AzureEmulator, resource_group: str, name: str) -> None:
    """Through ARM, as a person with the portal would (its disks stay: deleteOption Detach)."""
    credential = ClientSecretCredential(
        emu.tenant_id, emu.client_id, emu.client_secret, **emu.credential_kwargs()
    )
    with ComputeManagementClient(
        credential, emu.subscription_id, polling_interval=0.05, **emu.arm_client_kwargs()
    ) as client:
        client.virtual_machines.begin_delete(resource_group, name).result()


def paused_by(world: World, name: str, reason: str) -> bool:
    status = world.pvm(name).get("status") or {}
    healthy = conditions(world.pvm(name)).get("ReplicationHealthy")
    return (status.get("replication") or {}).get("state") == "Paused" and (
        healthy is not None and healthy[:2] == ("False", reason)
    )


def test_drift_pauses_replication_and_keeps_every_byte_on_premises(
    make_world: WorldMaker,
) -> None:
    rng = random.Random(8)
    before_operator: dict[str, Any] = {}

    def original_runs_with_data(sc: Scenario) -> None:
        # The original VM has data of its own (it ran on-premises before the disaster) and
        # someone powers it on before the operator could take its disks.
        original = sc.originals[WEB]
        for path, size in zip(sc.onprem_files(original), sc.machines[WEB].disks, strict=True):
            disk = GuestDisk(path, size)
            for _ in range(8):
                disk.write(rng.randrange(0, size // 4096) * 4096, rng.randbytes(4096))
        set_power(sc.si, original, on=True)
        before_operator["files"] = sc.disk_files(original)
        before_operator["bytes"] = sc.onprem_bytes(original, sc.machines[WEB].disks)

    world = make_world(MACHINES, before=original_runs_with_data)
    sc = world.sc
    assert sc.rig is not None
    ps, mt, ns = sc.rig.ps.client, sc.rig.mt.client, sc.namespace
    original = sc.originals[WEB]
    web_files: list[str] = before_operator["files"]
    web_bytes: list[bytes] = before_operator["bytes"]

    def web_untouched() -> None:
        assert sc.power(original) == "poweredOn"
        assert sc.disk_files(original) == web_files, "nothing was detached"
        assert sc.onprem_bytes(original, sc.machines[WEB].disks) == web_bytes, "nothing written"
        assert not set(web_files) & set(sc.disk_files(sc.mt_vm)), "nothing was attached"
        assert ps.request("GET", f"/v1/sessions/{ns}/{WEB}")[0] == 404, "no session"
        assert mt.request("GET", f"/v1/groups/{ns}.{WEB}")[0] == 404, "no group"

    # (a) The original VM runs: replication is paused before any of its disks moves.
    world.wait(
        f"{WEB} is paused: its original VM runs",
        lambda: paused_by(world, WEB, "OnPremVMRunning"),
    )
    message = conditions(world.pvm(WEB))["ReplicationHealthy"][2]
    assert "powered on" in message, message
    assert "Power it off" in message, message
    world.wait(f"{APP} is Protected with a recovery point", lambda: world.protected(APP))
    web_untouched()

    # (b) The Azure VM of app-01 is deleted while it is protected.
    group = f"{ns}.{APP}"
    targets = [t["file"] for t in world.pvm(APP)["status"]["replication"]["targetDisks"]]
    assert set(targets) <= set(sc.disk_files(sc.mt_vm))
    spec = ps.ok("GET", f"/v1/sessions/{ns}/{APP}")["spec"]
    assert spec["paused"] is False
    kept = [p["id"] for p in mt.ok("GET", f"/v1/groups/{group}/points")["points"]]
    assert kept
    vms_named_app = sorted(sc.vms_named(APP))
    delete_azure_vm(sc.emulator, sc.resource_group, APP)

    world.wait(
        f"the session of {APP} is paused on the process server",
        lambda: ps.ok("GET", f"/v1/sessions/{ns}/{APP}")["phase"] == "Paused",
        timeout=60,
    )
    world.wait(
        f"{APP} is paused: its Azure VM is gone", lambda: paused_by(world, APP, "AzureVMNotFound")
    )
    message = conditions(world.pvm(APP))["ReplicationHealthy"][2]
    assert "nothing on-premises is touched" in message, message
    assert "Restore the Azure VM" in message, message
    session = ps.ok("GET", f"/v1/sessions/{ns}/{APP}")
    assert session["spec"] == {**spec, "paused": True}, "paused, the spec otherwise the same"
    dirs = datastore_directories(sc.si)
    paused_bytes = [flat_file(dirs, f).read_bytes() for f in targets]

    def app_kept() -> None:
        points = mt.ok("GET", f"/v1/groups/{group}/points")["points"]
        assert set(kept) <= {p["id"] for p in points}, "no point deleted or rolled back"
        assert mt.ok("GET", f"/v1/groups/{group}")["state"] == "active", "not released"
        assert ps.ok("GET", f"/v1/sessions/{ns}/{APP}")["phase"] == "Paused"
        assert set(targets) <= set(sc.disk_files(sc.mt_vm)), "nothing detached"
        assert [flat_file(dirs, f).read_bytes() for f in targets] == paused_bytes, "not written"
        assert sorted(sc.vms_named(APP)) == vms_named_app, "no VM created on-premises"

    app_kept()
    web_untouched()  # many passes later, still

    # The original VM is powered off: the drift is over, web-01's replication goes on by
    # itself, while app-01's stays paused with its points.
    set_power(sc.si, original, on=False)
    world.wait(f"{WEB} is Protected with a recovery point", lambda: world.protected(WEB))
    assert set(web_files) <= set(sc.disk_files(sc.mt_vm)), "its disks are the MT's now"
    app_kept()
    assert paused_by(world, APP, "AzureVMNotFound")
