"""The on-premises preflight and the location decision as tables. vcsim builds most of
these for real (tests/vsphere); these add what it cannot: an account lacking privileges
(vcsim grants every one), a free licence, and cloned disks sharing a UUID."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from failback.api import protectedvm as pvm
from failback.api.common import ObjectRef, OSType, VMInstance
from failback.api.conditions import ConditionType as CT
from failback.api.mastertarget import MasterTargetSpec
from failback.domain import onprem_preflight as rules
from failback.domain import vsphere as vs

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
MT_UUID = "50320000-0000-4000-8000-000000000001"
ORIG_UUID = "50320000-0000-4000-8000-000000000002"
MT = rules.MasterTargetRef(
    "mt-01",
    MasterTargetSpec(
        ObjectRef("vc"), VMInstance(MT_UUID), OSType.LINUX, "https://mt:9443", ObjectRef("t")
    ),
)
DC = vs.Datacenter("datacenter-1", "DC", vm_folder="group-v", host_folder="group-h")
FOLDERS = (vs.Folder("group-v", "vm", "datacenter-1"), vs.Folder("group-r", "restored", "group-v"))
RW = vs.Mount("host-1", "readWrite", True, True)
DS1 = vs.Datastore("datastore-1", "DS1", "VMFS", 100, 50, True, (RW,))
DS2 = vs.Datastore("datastore-2", "DS2", "VMFS", 100, 50, True, (vs.Mount("host-2"),))
LIC = vs.License("enterprisePlus", "vSphere Enterprise Plus")
H1 = vs.Host("host-1", "esx-1", license=LIC, datastores=("datastore-1",))
H2 = vs.Host("host-2", "esx-2", license=LIC, datastores=("datastore-2",))
CLUSTER = vs.ComputeResource("domain-c1", "C1", True, ("host-1", "host-2"))
DISK = vs.Disk(2000, "Hard disk 1", "[DS1] mt/mt.vmdk", "DS1", "6000c29a", 1, 1000, 0)
MT_VM = vs.VM("vm-1", "mt-01", MT_UUID, host="host-1", disks=(DISK,), folder="group-v",
              datastores=("datastore-1",))  # fmt: skip
WEB_DISK = dataclasses.replace(DISK, file_name="[DS1] web/web.vmdk", uuid="6000c29b")
ORIG = vs.VM("vm-2", "web-01", ORIG_UUID, host="host-1", folder="group-v",
             datastores=("datastore-1",), disks=(WEB_DISK,))  # fmt: skip
INV = vs.Inventory(
    vms=(MT_VM, ORIG), hosts=(H1, H2), datastores=(DS1, DS2), datacenters=(DC,),
    compute=(CLUSTER,), folders=FOLDERS, networks=(vs.Network("network-1", "VM Network"),),
    server="vc",
)  # fmt: skip
PLACE = pvm.AlternatePlacement("DC", "DS1", host="esx-1", folder="restored",
                               networks=(pvm.NetworkMapping("VM Network"),))  # fmt: skip


def spec(**on_prem: Any) -> pvm.ProtectedVMSpec:
    source = on_prem.pop("source_type", pvm.SourceType.VMWARE)
    os_type = on_prem.pop("os_type", OSType.LINUX)
    side = pvm.OnPremSide(ObjectRef("vc"), **on_prem)
    return pvm.ProtectedVMSpec(
        pvm.AzureSide("/subscriptions/x"), side, os_type, ObjectRef("mt-01"), ObjectRef("ps"),
        source_type=source,
    )  # fmt: skip


ORIGINAL = {"original_vm": VMInstance(ORIG_UUID), "alternate_placement": PLACE}
GONE = {"original_vm": VMInstance("50320000-0000-4000-8000-00000000dead"),
        "alternate_placement": PLACE}  # fmt: skip


def run(
    on_prem: dict[str, Any], inv: vs.Inventory = INV, source_os: str | None = None
) -> tuple[dict[str, tuple[str, str, str]], pvm.Location | None]:
    result = rules.preflight(spec(**on_prem), MT, inv, 4, NOW, source_os)
    return {c.type: (c.status, c.reason, c.message) for c in result.conditions}, result.location


LOCATIONS = [
    ("original exists", ORIGINAL, "Original", "Delta", "OriginalLocation"),
    ("original gone, Auto", GONE, "Alternate", "Full", "AlternateLocation"),
    ("Alternate asked", {**ORIGINAL, "failback_location": pvm.FailbackLocation.ALTERNATE},
     "Alternate", "Full", "AlternateLocation"),
    ("physical", {"alternate_placement": PLACE, "source_type": pvm.SourceType.PHYSICAL},
     "Alternate", "Full", "AlternateLocation"),
    ("original gone, Original asked", {**GONE, "failback_location": pvm.FailbackLocation.ORIGINAL},
     None, None, "OriginalVMNotFound"),
    ("original gone, no placement", {"original_vm": GONE["original_vm"]}, None, None,
     "OriginalVMNotFound"),
    ("placement datastore missing", {"alternate_placement": dataclasses.replace(PLACE,
     datastore="DS9")}, None, None, "PlacementNotFound"),
    ("placement cluster", {"alternate_placement": dataclasses.replace(PLACE, host=None,
     cluster="C1")}, "Alternate", "Full", "AlternateLocation"),
    ("MT host cannot write the placement datastore", {"alternate_placement": dataclasses.replace(
        PLACE, datastore="DS2")}, None, None, "DatastoreNotAccessible"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("on_prem", "target", "sync", "reason"), [pytest.param(*c[1:], id=c[0]) for c in LOCATIONS]
)
def test_location(
    on_prem: dict[str, Any], target: str | None, sync: str | None, reason: str
) -> None:
    conditions, location = run(on_prem)
    assert conditions[CT.LOCATION_RESOLVED][1] == reason
    assert (location.target if location else None) == target
    assert (location.sync if location else None) == sync


def test_original_on_a_datastore_the_master_target_cannot_write() -> None:
    moved = dataclasses.replace(ORIG, datastores=("datastore-2",), host="host-2")
    conditions, location = run(ORIGINAL, dataclasses.replace(INV, vms=(MT_VM, moved)))
    status, reason, message = conditions[CT.LOCATION_RESOLVED]
    assert (status, reason) == ("False", "DatastoreNotAccessible")
    assert "esx-1" in message
    assert "DS2" in message
    assert location is None


CASES = [
    ("privileges missing", ORIGINAL, dataclasses.replace(INV, missing_privileges=(
        ("datacenter-1", ("Datastore.Browse", "VirtualMachine.Inventory.Create")),)),
     CT.VCENTER_PERMISSIONS, "False", "InsufficientVCenterPermissions",
     ("Datastore.Browse", "read-only")),
    ("no datastore visible", ORIGINAL, dataclasses.replace(INV, hosts=(
        dataclasses.replace(H1, datastores=()), H2)),
     CT.VCENTER_PERMISSIONS, "False", "InsufficientVCenterPermissions", ("No datastore",)),
    ("privileges ok", ORIGINAL, INV, CT.VCENTER_PERMISSIONS, "True", "CheckPassed", ("DC",)),
    ("snapshots on the original", ORIGINAL, dataclasses.replace(INV, vms=(
        MT_VM, dataclasses.replace(ORIG, snapshots=("s1",)))),
     CT.ORIGINAL_VM_NO_SNAPSHOTS, "False", "OriginalVMHasSnapshots", ("s1", "R-PRE-2")),
    ("cloned disk UUID", ORIGINAL, dataclasses.replace(INV, vms=(
        MT_VM, dataclasses.replace(ORIG, disks=(dataclasses.replace(
            DISK, file_name="[DS1] web/web.vmdk"),)))),
     CT.DISK_UUIDS_UNIQUE, "False", "DiskUUIDConflict", ("web-01", "6000c29a")),
    ("free licence on the original's host", ORIGINAL, dataclasses.replace(INV, hosts=(
        dataclasses.replace(H1, license=vs.License("esxBasic", "Hypervisor")), H2)),
     CT.LICENSE_ALLOWS_FAILBACK, "False", "LicenseForbidsFailback", ("esx-1",)),
    ("free licence on one cluster host", {"alternate_placement": dataclasses.replace(
        PLACE, host=None, cluster="C1")}, dataclasses.replace(INV, hosts=(
        H1, dataclasses.replace(H2, license=vs.License("esxBasic.vram", "Free")))),
     CT.LICENSE_ALLOWS_FAILBACK, "False", "LicenseForbidsFailback", ("esx-2",)),
    ("MT not in this vCenter", ORIGINAL, dataclasses.replace(INV, vms=(ORIG,)),
     CT.VCENTER_DISCOVERED, "False", "VCenterNotDiscovered", (MT_UUID, "mt-01")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("on_prem", "inv", "type_", "status", "reason", "words"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_rules(
    on_prem: dict[str, Any],
    inv: vs.Inventory,
    type_: str,
    status: str,
    reason: str,
    words: tuple[str, ...],
) -> None:
    got_status, got_reason, message = run(on_prem, inv)[0][type_]
    assert (got_status, got_reason) == (status, reason), message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("source_os", "status"),
    [("Microsoft Windows Server 2008 R2 SP1 (64-bit)", "False"), ("Windows Server 2022", "True")],
)
def test_physical_windows_2008_r2_sp1(source_os: str, status: str) -> None:
    on_prem = {"alternate_placement": PLACE, "source_type": pvm.SourceType.PHYSICAL,
               "os_type": OSType.WINDOWS}  # fmt: skip
    windows_mt = dataclasses.replace(MT, spec=dataclasses.replace(MT.spec, os_type=OSType.WINDOWS))
    result = rules.preflight(spec(**on_prem), windows_mt, INV, 4, NOW, source_os)
    got = {c.type: c for c in result.conditions}[CT.SOURCE_OS_SUPPORTED]
    assert got.status == status


def test_only_applicable_conditions_are_reported() -> None:
    # No original VM: no OriginalVMNoSnapshots; not physical: no SourceOSSupported.
    conditions, _ = run({"alternate_placement": PLACE}, source_os="Windows Server 2008 R2 SP1")
    assert CT.ORIGINAL_VM_NO_SNAPSHOTS not in conditions
    assert CT.SOURCE_OS_SUPPORTED not in conditions
    assert conditions[CT.DISK_UUIDS_UNIQUE][0] == "True"


def test_datacenter_of_a_folder() -> None:
    assert rules.datacenter_of(INV, "group-r") == DC
    assert rules.datacenter_of(INV, "group-x") is None
