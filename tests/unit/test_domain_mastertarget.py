"""The master target's prerequisites (R-PRE-3..9, 14, 15, 18) as tables: facts in, the
condition out. The vcsim tests build most situations for real; these also cover what
vcsim cannot (VMware Tools running, a free licence, two cloned disks sharing a UUID)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from failback.api import mastertarget as api
from failback.api.common import ObjectRef, OSType, VMInstance
from failback.api.conditions import ConditionType as CT
from failback.api.conditions import Reason
from failback.domain import mastertarget as rules
from failback.domain import vsphere as vs

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
UUID = "50321111-2222-4333-8444-555566667777"
SPEC = api.MasterTargetSpec(
    vcenter_secret_ref=ObjectRef("vc"),
    vm=VMInstance(UUID),
    os_type=OSType.LINUX,
    endpoint="https://mt:9443",
    tls_secret_ref=ObjectRef("tls"),
)
VMFS = vs.Datastore(
    "datastore-1", "VMFS_1", "VMFS", 100, 50, True, (vs.Mount("host-1", "readWrite", True, True),)
)
NFS = vs.Datastore("datastore-2", "NFS_1", "NFS", 100, 50, True, (vs.Mount("host-1"),))
HOST = vs.Host(
    "host-1", "esx-01", license=vs.License("esxEnterprise", "vSphere 8 Enterprise Plus"),
    datastores=("datastore-1", "datastore-2"),
)  # fmt: skip
DISK = vs.Disk(
    2000, "Hard disk 1", "[VMFS_1] mt/mt.vmdk", "VMFS_1", "6000c291-aaaa", 1 << 30, 1000, 0
)
GOOD = vs.VM(
    moref="vm-1",
    name="mt-01",
    instance_uuid=UUID,
    power_state=vs.PowerState.ON,
    host="host-1",
    tools_running="guestToolsRunning",
    extra_config=(("disk.EnableUUID", "TRUE"),),
    controllers=(vs.Controller(1000, vs.ControllerKind.LSI_LOGIC_SAS, 0, "SCSI controller 0"),),
    disks=(DISK,),
    datastores=("datastore-1",),
)
INV = vs.Inventory(vms=(GOOD,), hosts=(HOST,), datastores=(VMFS, NFS), server="vc")


def judge(
    vm: vs.VM = GOOD,
    inv: vs.Inventory = INV,
    registered: tuple[str, ...] = ("VMFS_1",),
    **spec: Any,
) -> dict[str, tuple[str, str, str]]:
    inv = dataclasses.replace(inv, vms=(vm, *(v for v in inv.vms if v.moref != vm.moref)))
    check = rules.check(dataclasses.replace(SPEC, **spec), inv, registered, 3, NOW)
    assert all(c.observed_generation == 3 for c in check.conditions)
    return {c.type: (c.status, c.reason, c.message) for c in check.conditions}


def test_a_good_master_target_passes_every_vsphere_check() -> None:
    result = judge()
    assert set(result) == set(rules.VSPHERE_CHECKS)
    assert {v[:2] for v in result.values()} == {("True", "CheckPassed")}


def _with(**changes: Any) -> vs.VM:
    return dataclasses.replace(GOOD, **changes)


CLONE = vs.VM(
    "vm-9", "app-01", "50329999-0000-4000-8000-000000000000",
    disks=(dataclasses.replace(DISK, file_name="[VMFS_1] app/app.vmdk", label="Hard disk 1"),),
)  # fmt: skip
SAME_FILE = vs.VM("vm-8", "app-02", "50328888-0000-4000-8000-000000000000", disks=(DISK,))
FREE = dataclasses.replace(HOST, license=vs.License("esxBasic", "vSphere 6 Hypervisor"))
NO_LICENSE = dataclasses.replace(HOST, license=None)
PVSCSI = vs.Controller(1001, vs.ControllerKind.PARAVIRTUAL, 1, "SCSI controller 1")
SIXTY = tuple(
    dataclasses.replace(DISK, key=2000 + i, file_name=f"[VMFS_1] d{i}.vmdk") for i in range(60)
)

CASES: list[tuple[str, dict[str, Any], str, str, str, tuple[str, ...]]] = [
    # (case, judge() arguments, condition, status, reason, words in the message)
    ("EnableUUID unset", {"vm": _with(extra_config=())}, CT.DISK_UUID_ENABLED, "False",
     "DiskUUIDDisabled", ("unset", "disk.EnableUUID = TRUE")),
    ("EnableUUID false", {"vm": _with(extra_config=(("DISK.enableUUID", "false"),))},
     CT.DISK_UUID_ENABLED, "False", "DiskUUIDDisabled", ("'false'",)),
    ("EnableUUID any case", {"vm": _with(extra_config=(("disk.enableuuid", "true"),))},
     CT.DISK_UUID_ENABLED, "True", "CheckPassed", ()),
    ("first registration", {"registered": ()}, CT.NO_STORAGE_VMOTION, "True", "CheckPassed",
     ("Registered", "VMFS_1")),
    ("moved away", {"registered": ("VMFS_OLD",)}, CT.NO_STORAGE_VMOTION, "False",
     "StorageVMotionDetected", ("VMFS_OLD", "Move it back")),
    ("more datastores is fine", {"vm": _with(datastores=("datastore-1", "datastore-2"))},
     CT.NO_STORAGE_VMOTION, "True", "CheckPassed", ()),
    ("tools not running", {"vm": _with(tools_running="guestToolsNotRunning")},
     CT.VMWARE_TOOLS_RUNNING, "False", "VMwareToolsNotRunning", ("start VMware Tools",)),
    ("tools not installed", {"vm": _with(tools_running="guestToolsNotRunning",
                                         tools_version_status="guestToolsNotInstalled")},
     CT.VMWARE_TOOLS_RUNNING, "False", "VMwareToolsNotRunning", ("not installed",)),
    ("no VMFS", {"inv": dataclasses.replace(INV, datastores=(NFS,))}, CT.VMFS_DATASTORE_ATTACHED,
     "False", "NoVMFSDatastore", ("NFS_1 is NFS", "esx-01")),
    ("VMFS not allowed", {"allowed_datastores": ("NFS_1",)}, CT.VMFS_DATASTORE_ATTACHED, "False",
     "NoVMFSDatastore", ("VMFS_1 is not in spec.allowedDatastores",)),
    ("VMFS read-only", {"inv": dataclasses.replace(INV, datastores=(dataclasses.replace(
        VMFS, mounts=(vs.Mount("host-1", "readOnly", True, True),)), NFS))},
     CT.VMFS_DATASTORE_ATTACHED, "False", "NoVMFSDatastore", ("not mounted read-write",)),
    ("VMFS inaccessible", {"inv": dataclasses.replace(INV, datastores=(dataclasses.replace(
        VMFS, accessible=False), NFS))},
     CT.VMFS_DATASTORE_ATTACHED, "False", "NoVMFSDatastore", ("not accessible",)),
    ("snapshots", {"vm": _with(snapshots=("a", "b"))}, CT.NO_SNAPSHOTS, "False",
     "MasterTargetHasSnapshots", ("2 snapshot(s)", "a, b")),
    ("paravirtual", {"vm": _with(controllers=(*GOOD.controllers, PVSCSI))},
     CT.SCSI_CONTROLLER_SUPPORTED, "False", "ParavirtualController", ("SCSI controller 1",)),
    ("clone shares a disk UUID", {"inv": dataclasses.replace(INV, vms=(GOOD, CLONE))},
     CT.DISK_UUIDS_UNIQUE, "False", "DiskUUIDConflict", ("app-01", "6000c291-aaaa", "template")),
    ("one file on two VMs is no clash", {"inv": dataclasses.replace(INV, vms=(GOOD, SAME_FILE))},
     CT.DISK_UUIDS_UNIQUE, "True", "CheckPassed", ()),
    ("free licence", {"inv": dataclasses.replace(INV, hosts=(FREE,))}, CT.LICENSE_ALLOWS_FAILBACK,
     "False", "LicenseForbidsFailback", ("vSphere 6 Hypervisor", "paid vSphere licence")),
    ("no licence known", {"inv": dataclasses.replace(INV, hosts=(NO_LICENSE,))},
     CT.LICENSE_ALLOWS_FAILBACK, "Unknown", "LicenseUnknown", ("esx-01",)),
    ("evaluation", {"inv": dataclasses.replace(INV, hosts=(dataclasses.replace(
        HOST, license=vs.License("eval", "Evaluation Mode")),))},
     CT.LICENSE_ALLOWS_FAILBACK, "True", "CheckPassed", ()),
    ("59 disks", {"vm": _with(disks=SIXTY[:59])}, CT.DISK_CAPACITY_AVAILABLE, "True",
     "CheckPassed", ("59 of 60",)),
    ("60 disks", {"vm": _with(disks=SIXTY)}, CT.DISK_CAPACITY_AVAILABLE, "False",
     "DiskLimitReached", ("60 disks", "another MasterTarget")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "type_", "status", "reason", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_rules(
    args: dict[str, Any], type_: str, status: str, reason: str, words: tuple[str, ...]
) -> None:
    got_status, got_reason, message = judge(**args)[type_]
    assert (got_status, got_reason) == (status, reason), message
    for word in words:
        assert word in message


def test_vm_not_found_fails_every_vsphere_check() -> None:
    inv = dataclasses.replace(INV, vms=())
    check = rules.check(SPEC, inv, (), 1, NOW)
    assert {(c.status, c.reason) for c in check.conditions} == {("False", "VMNotFound")}
    assert {c.type for c in check.conditions} == set(rules.VSPHERE_CHECKS)
    assert check.disks_in_use is None


def test_status_facts() -> None:
    check = rules.check(SPEC, INV, (), 1, NOW)
    assert check.host == "esx-01"
    assert check.disks_in_use == 1
    assert check.registered_datastores == ("VMFS_1",)
    assert [d.name for d in check.datastores] == ["NFS_1", "VMFS_1"]
    assert check.datastores[1] == api.Datastore("VMFS_1", "VMFS", 100, 50, True)
    # Later passes keep the registration.
    assert rules.check(SPEC, INV, ("VMFS_0",), 1, NOW).registered_datastores == ("VMFS_0",)


def test_service_checks_wait_for_the_service() -> None:
    probe = rules.ServiceProbe(None, Reason.CONNECTION_FAILED, "https://mt:9443 did not answer")
    conditions = rules.judge_service(SPEC, probe, "0.1.0", 1, NOW)
    assert [c.type for c in conditions] == list(rules.SERVICE_CHECKS)
    got = {c.type: (c.status, c.reason) for c in conditions}
    assert got == {
        CT.RETENTION_VOLUME_VALID: ("Unknown", "ServiceCheckPending"),
        CT.VERSION_COMPATIBLE: ("Unknown", "ServiceCheckPending"),
        CT.SERVICE_REACHABLE: ("False", "ConnectionFailed"),
    }
    assert "/mnt/retention" in conditions[0].message
    assert conditions[2].message == "https://mt:9443 did not answer"


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({}, "server", "has no key server"),
        ({"server": "vc", "username": "u"}, "password", "has no key password"),
        ({"server": "vc", "username": "u", "password": "p"}, "caBundle", "caBundle or thumbprint"),
        ({"server": "vc", "username": "u", "password": "p", "caBundle": "x"}, "caBundle", "PEM"),
        ({"server": "vc", "username": "u", "password": "p", "thumbprint": "12:34"}, "thumbprint",
         "SHA-256"),
    ],
)  # fmt: skip
def test_vcenter_secret_problems(data: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(vs.SecretProblem, match=words) as info:
        vs.parse_vcenter_secret(data)
    assert info.value.key == key


def test_vcenter_secret_parsed() -> None:
    thumb = ":".join(["AB"] * 32)
    creds = vs.parse_vcenter_secret(
        {"server": " vcsa:8443 ", "username": "svc", "password": "s3cret", "thumbprint": thumb}
    )
    assert (creds.host, creds.port, creds.thumbprint) == ("vcsa", 8443, "ab" * 32)
    assert "s3cret" not in repr(creds)
    assert vs.VCenterCredentials("https://vc.example/sdk", "u", "p").port == 443
    assert vs.VCenterCredentials("[::1]:444", "u", "p").host == "::1"
    assert vs.VCenterCredentials("[::1]:444", "u", "p").port == 444
    assert vs.normalize_thumbprint("AA" * 20) == "aa" * 20


# ------------------------------------------------------------------ the service (R-PRE-5, 18)

VOLUME = rules.RetentionVolumeReport(
    path="/mnt/retention/journals",
    mount_point="/mnt/retention",
    file_system="xfs",
    capacity_bytes=1 << 40,
    free_bytes=3 << 38,
    writable=True,
    shares_install_volume=False,
)


def healthy(version: str = "0.1.0", **volume: Any) -> rules.ServiceProbe:
    report = rules.ServiceHealth(version, NOW, dataclasses.replace(VOLUME, **volume))
    return rules.ServiceProbe(report)


def service(
    probe: rules.ServiceProbe, operator: str = "0.1.0", **spec: Any
) -> dict[str, tuple[str, str, str]]:
    conditions = rules.judge_service(dataclasses.replace(SPEC, **spec), probe, operator, 1, NOW)
    return {c.type: (c.status, c.reason, c.message) for c in conditions}


def test_a_good_service() -> None:
    c = service(healthy())
    assert c[CT.SERVICE_REACHABLE] == (
        "True",
        "Connected",
        "The master target service answered at https://mt:9443 over mutual TLS (version 0.1.0).",
    )
    assert c[CT.VERSION_COMPATIBLE][:2] == ("True", "CheckPassed")
    status, reason, message = c[CT.RETENTION_VOLUME_VALID]
    assert (status, reason) == ("True", "CheckPassed")
    assert "/mnt/retention (xfs, 768.0 GiB free of 1024.0 GiB)" in message


@pytest.mark.parametrize(
    ("spec", "volume", "reason", "words"),
    [
        # The volume holding the journals is mounted at the retention path, or under it.
        ({}, {"path": "/mnt/retention"}, "CheckPassed", "dedicated and writable"),
        ({"retention_volume": "/mnt/retention/"}, {}, "CheckPassed", "journals in"),
        ({"os_type": OSType.WINDOWS}, {"path": "r:\\failback", "mount_point": "R:\\",
                                       "file_system": "NTFS"}, "CheckPassed", "NTFS"),
        ({"retention_volume": "/data"}, {}, "RetentionVolumeNotUsed",
         "keeps its journals in /mnt/retention/journals (volume /mnt/retention, xfs), not on "
         "the retention volume /data: start it with --retention-dir on /data, or set "
         "spec.retentionVolume to /mnt/retention"),
        ({"retention_volume": "/mnt/retentions"}, {}, "RetentionVolumeNotUsed", "/mnt/retentions"),
        ({}, {"mount_point": "/"}, "RetentionVolumeNotFound",
         "No volume is mounted at /mnt/retention: /mnt/retention/journals is on the volume "
         "mounted at /; attach a dedicated volume and mount it at /mnt/retention"),
        ({}, {"shares_install_volume": True}, "RetentionVolumeNotDedicated",
         "is the volume the master target service is installed on; give the retention a "
         "dedicated volume"),
        ({}, {"file_system": "vfat"}, "RetentionVolumeFileSystemUnsupported", "formatted vfat"),
        ({}, {"file_system": "FAT32"}, "RetentionVolumeFileSystemUnsupported", "NTFS or ReFS"),
        ({}, {"file_system": "exFAT"}, "RetentionVolumeFileSystemUnsupported", "ext4 or xfs"),
        ({}, {"file_system": "ntfs3"}, "CheckPassed", "ntfs3"),
        ({}, {"capacity_bytes": 0, "free_bytes": 0}, "RetentionVolumeEmpty", "has no capacity"),
        ({}, {"writable": False}, "RetentionVolumeLocked", "cannot write"),
    ],
)  # fmt: skip
def test_retention_volume(
    spec: dict[str, Any], volume: dict[str, Any], reason: str, words: str
) -> None:
    status, got, message = service(healthy(**volume), **spec)[CT.RETENTION_VOLUME_VALID]
    assert (status, got) == ("True" if reason == "CheckPassed" else "False", reason)
    assert words in message
    if reason != "CheckPassed":
        assert message.endswith("(R-PRE-5).")


def test_every_retention_failure_is_named_the_first_gives_the_reason() -> None:
    probe = healthy(mount_point="/", shares_install_volume=True, file_system="vfat",
                    capacity_bytes=0, writable=False)  # fmt: skip
    status, reason, message = service(probe)[CT.RETENTION_VOLUME_VALID]
    assert (status, reason) == ("False", "RetentionVolumeNotFound")
    for words in ("No volume is mounted", "installed on", "formatted vfat", "no capacity",
                  "cannot write"):  # fmt: skip
        assert words in message


@pytest.mark.parametrize(
    ("mt", "operator", "expected"),
    [
        ("0.1.0", "0.1.0", ("True", "CheckPassed")),
        ("0.1", "0.1.0", ("True", "CheckPassed")),
        ("0.0.9", "0.1.0", ("True", "CheckPassed")),
        ("0.1.0rc1", "0.1.0", ("True", "CheckPassed")),
        ("0.1.0.dev3+g1a2b", "0.1.0", ("True", "CheckPassed")),
        ("0.1.0", "0.1.0.post1", ("True", "CheckPassed")),
        ("0.1.1", "0.1.0", ("False", "VersionTooNew")),
        ("0.2.0", "0.1.10", ("False", "VersionTooNew")),
        ("0.10.0", "0.9.0", ("False", "VersionTooNew")),
        ("0.1.0", "0.1.0rc2", ("False", "VersionTooNew")),
        ("0.1.0.post1", "0.1.0", ("False", "VersionTooNew")),
        ("1.0.0", "0.1.0", ("False", "VersionTooNew")),
        ("banana", "0.1.0", ("Unknown", "UnexpectedAnswer")),
    ],
)
def test_version_compatible(mt: str, operator: str, expected: tuple[str, str]) -> None:
    status, reason, message = service(healthy(version=mt), operator)[CT.VERSION_COMPATIBLE]
    assert (status, reason) == expected
    assert mt in message
    assert operator in message
    if reason == "VersionTooNew":
        assert "upgrade the operator first" in message
        assert "(R-PRE-18)" in message


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Reason.CONNECTION_FAILED, "ConnectionFailed"),
        (Reason.TLS_VERIFICATION_FAILED, "TLSVerificationFailed"),
        (Reason.UNEXPECTED_ANSWER, "UnexpectedAnswer"),
        (None, "ConnectionFailed"),
    ],
)
def test_an_unreachable_service(failure: Reason | None, reason: str) -> None:
    c = service(rules.ServiceProbe(None, failure, "why"))
    assert c[CT.SERVICE_REACHABLE] == ("False", reason, "why")
    assert c[CT.RETENTION_VOLUME_VALID][:2] == ("Unknown", "ServiceCheckPending")
    assert c[CT.VERSION_COMPATIBLE][:2] == ("Unknown", "ServiceCheckPending")
