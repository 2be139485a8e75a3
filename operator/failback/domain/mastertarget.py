"""The master target's prerequisites (R-PRE-3 to 9, 14, 15, 18), judged from one read
of vCenter and one probe of its service. Pure: ``check(...)`` takes the spec, the
inventory, what the status remembers and the time, and returns every condition with what
to fix, plus the status facts (datastores, disks in use, host, registered datastores);
``judge_service(...)`` judges R-PRE-5, R-PRE-18's version rule and reachability from the
service's ``GET /v1/health`` (``docs/master-target-api.md``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
)
from failback.api.mastertarget import DISK_LIMIT, Datastore, MasterTargetSpec
from failback.domain import vsphere as vs

VSPHERE_CHECKS: Final[tuple[str, ...]] = (
    ConditionType.DISK_UUID_ENABLED,
    ConditionType.NO_STORAGE_VMOTION,
    ConditionType.VMWARE_TOOLS_RUNNING,
    ConditionType.VMFS_DATASTORE_ATTACHED,
    ConditionType.NO_SNAPSHOTS,
    ConditionType.SCSI_CONTROLLER_SUPPORTED,
    ConditionType.DISK_UUIDS_UNIQUE,
    ConditionType.LICENSE_ALLOWS_FAILBACK,
    ConditionType.DISK_CAPACITY_AVAILABLE,
)
"""The checks made from vCenter's inventory, in the order of the MasterTarget's table."""

SERVICE_CHECKS: Final[tuple[str, ...]] = (
    ConditionType.RETENTION_VOLUME_VALID,
    ConditionType.VERSION_COMPATIBLE,
    ConditionType.SERVICE_REACHABLE,
)
"""The checks only the master target service can answer (the data plane)."""

FREE_EDITIONS: Final = ("esxbasic",)
"""Licence edition keys of the free vSphere Hypervisor (ESXi 5.5 and 6 free): its API is
read-only, so a failback cannot write the VM (R-PRE-15)."""

VMFS: Final = "VMFS"
MAX_STATUS_DATASTORES: Final = 256
"""The CRD's bound on status.datastores."""


@dataclass(frozen=True)
class Check:
    """Everything one pass learned about a master target."""

    conditions: tuple[Condition, ...]
    host: str | None = None
    datastores: tuple[Datastore, ...] = ()
    disks_in_use: int | None = None
    registered_datastores: tuple[str, ...] = ()


def _cond(
    type_: str, status: str, reason: str, message: str, generation: int, now: dt.datetime
) -> Condition:
    return Condition(type_, ConditionStatus(status), reason, message, generation, now)


# ------------------------------------------------------------------ the service

FAT_FILE_SYSTEMS: Final = frozenset(
    {"fat", "fat12", "fat16", "fat32", "vfat", "msdos", "umsdos", "exfat"}
)
"""File systems R-PRE-5 rules out (Windows and Linux names, lower case)."""

_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|alpha|b|beta|c|rc|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:[-_.]?(?:post|rev|r)[-_.]?(?P<post>\d*))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d*))?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?$",
    re.IGNORECASE,
)
_PRE_RANK: Final = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}

VersionKey = tuple[tuple[int, ...], int, int, int, int]


def version_key(version: str) -> VersionKey | None:
    """A sortable key of a PEP 440 version (``0.1.0``, ``1.2rc1``, ``0.2.0.dev3+g1a2b``),
    or None when it is none. ``.devN`` sorts before the pre-releases, which sort before
    the release, which sorts before its ``.postN``; the local part is ignored."""
    m = _VERSION.match(version.strip())
    if m is None:
        return None
    release = tuple(int(p) for p in m["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    if m["pre"]:
        pre = _PRE_RANK[m["pre"].lower()]
    elif m["dev"] is not None and m["post"] is None:
        pre = -1
    else:
        pre = 3
    pre_n = int(m["pre_n"] or 0)
    post = int(m["post"] or 0) if m["post"] is not None else -1
    dev = int(m["dev"] or 0) if m["dev"] is not None else 1 << 62
    return release, pre, pre_n, post, dev


@dataclass(frozen=True)
class RetentionVolumeReport:
    """The volume holding the service's ``--retention-dir``, as ``GET /v1/health`` says."""

    path: str
    """The retention directory (resolved)."""
    mount_point: str
    file_system: str
    """From the mount table; ``unknown`` when the service found none."""
    capacity_bytes: int
    free_bytes: int
    writable: bool
    shares_install_volume: bool


@dataclass(frozen=True)
class ServiceHealth:
    """What the master target's ``GET /v1/health`` answered (``docs/master-target-api.md``)."""

    version: str
    heartbeat: dt.datetime
    retention_volume: RetentionVolumeReport
    journal_used_bytes: int = 0


@dataclass(frozen=True)
class ServiceProbe:
    """One attempt to read the health endpoint: a report, or why there is none."""

    report: ServiceHealth | None
    failure: Reason | None = None
    """``ConnectionFailed``, ``TLSVerificationFailed`` or ``UnexpectedAnswer``."""
    message: str = ""


def _parts(path: str) -> tuple[str, ...]:
    """A path's components; a drive letter (``R:``) in upper case."""
    parts = tuple(p for p in re.split(r"[\\/]+", path.strip()) if p)
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = (parts[0].upper(), *parts[1:])
    return parts


def _within(path: str, volume: str) -> bool:
    inner, outer = _parts(path), _parts(volume)
    return inner[: len(outer)] == outer


def service_reachable(
    probe: ServiceProbe, endpoint: str, generation: int, now: dt.datetime
) -> Condition:
    t = ConditionType.SERVICE_REACHABLE
    if probe.report is None:
        reason = probe.failure or Reason.CONNECTION_FAILED
        return _cond(t, FALSE, reason, probe.message, generation, now)
    message = (
        f"The master target service answered at {endpoint} over mutual TLS "
        f"(version {probe.report.version})."
    )
    return _cond(t, TRUE, Reason.CONNECTED, message, generation, now)


def version_compatible(
    report: ServiceHealth | None, operator_version: str, generation: int, now: dt.datetime
) -> Condition:
    """R-PRE-18: the service is not newer than the operator (and the process servers, which
    run the operator's version)."""
    t = ConditionType.VERSION_COMPATIBLE
    if report is None:
        return _cond(t, UNKNOWN, Reason.SERVICE_CHECK_PENDING,
                     "The master target service has not answered; its version is not known "
                     "(see ServiceReachable).", generation, now)  # fmt: skip
    mine, theirs = version_key(operator_version), version_key(report.version)
    if theirs is None or mine is None:
        return _cond(t, UNKNOWN, Reason.UNEXPECTED_ANSWER,
                     f"The master target service reports version {report.version!r}, which "
                     f"the operator ({operator_version}) cannot compare with its own: install "
                     f"master target version {operator_version} (R-PRE-18).",
                     generation, now)  # fmt: skip
    if theirs > mine:
        return _cond(
            t,
            FALSE,
            Reason.VERSION_TOO_NEW,
            f"The master target service runs version {report.version}, newer than the "
            f"operator and its process servers ({operator_version}): upgrade the operator "
            f"first, or install master target version {operator_version} (R-PRE-18).",
            generation,
            now,
        )
    return _cond(t, TRUE, Reason.CHECK_PASSED,
                 f"The master target service runs version {report.version}; the operator "
                 f"runs {operator_version}.", generation, now)  # fmt: skip


def retention_volume_valid(
    report: ServiceHealth | None, volume: str, generation: int, now: dt.datetime
) -> Condition:
    """R-PRE-5 from the service's report: the volume at ``volume`` (spec.retentionVolume or
    the OS default) exists and holds the service's retention directory, and is dedicated
    (not the MT's install volume), non-FAT, not empty and writable. Every failure is named
    in the message; the reason is the first one's, in that order."""
    t = ConditionType.RETENTION_VOLUME_VALID
    if report is None:
        return _cond(t, UNKNOWN, Reason.SERVICE_CHECK_PENDING,
                     f"The retention volume {volume} is checked by the master target service, "
                     "which has not answered (see ServiceReachable).", generation, now)  # fmt: skip
    v = report.retention_volume
    where = f"{v.path} (volume {v.mount_point}, {v.file_system})"
    failures: list[tuple[Reason, str]] = []
    if not _within(v.path, volume):
        failures.append((
            Reason.RETENTION_VOLUME_NOT_USED,
            f"the master target service keeps its journals in {where}, not on the retention "
            f"volume {volume}: start it with --retention-dir on {volume}, or set "
            f"spec.retentionVolume to {v.mount_point}",
        ))  # fmt: skip
    elif _parts(v.mount_point) != _parts(volume):
        failures.append((
            Reason.RETENTION_VOLUME_NOT_FOUND,
            f"no volume is mounted at {volume}: {v.path} is on the volume mounted at "
            f"{v.mount_point}; attach a dedicated volume and mount it at {volume}",
        ))  # fmt: skip
    if v.shares_install_volume:
        failures.append((
            Reason.RETENTION_VOLUME_NOT_DEDICATED,
            f"{where} is the volume the master target service is installed on; give the "
            "retention a dedicated volume (not the install or cache volume)",
        ))  # fmt: skip
    if v.file_system.lower() in FAT_FILE_SYSTEMS:
        failures.append((
            Reason.RETENTION_VOLUME_FILE_SYSTEM_UNSUPPORTED,
            f"{where} is formatted {v.file_system}; format it NTFS or ReFS (Windows), ext4 or "
            "xfs (Linux)",
        ))  # fmt: skip
    if v.capacity_bytes <= 0:
        failures.append((
            Reason.RETENTION_VOLUME_EMPTY,
            f"{where} has no capacity; use a volume sized for the retention window "
            "(about 1 TB for a Linux master target)",
        ))  # fmt: skip
    if not v.writable:
        failures.append((
            Reason.RETENTION_VOLUME_LOCKED,
            f"the master target service cannot write {where}; unlock it (read-only mount, "
            "BitLocker, permissions) so the service's account can write it",
        ))  # fmt: skip
    if failures:
        message = "; ".join(m for _, m in failures)
        message = message[0].upper() + message[1:] + " (R-PRE-5)."
        return _cond(t, FALSE, failures[0][0], message, generation, now)
    gib = 1 << 30
    return _cond(t, TRUE, Reason.CHECK_PASSED,
                 f"The retention volume {v.mount_point} ({v.file_system}, "
                 f"{v.free_bytes / gib:.1f} GiB free of {v.capacity_bytes / gib:.1f} GiB) is "
                 f"dedicated and writable; journals in {v.path}.", generation, now)  # fmt: skip


def judge_service(
    spec: MasterTargetSpec,
    probe: ServiceProbe,
    operator_version: str,
    generation: int,
    now: dt.datetime,
) -> list[Condition]:
    """``RetentionVolumeValid``, ``VersionCompatible`` and ``ServiceReachable`` from one
    probe of the service; the first two Unknown while it does not answer."""
    report = probe.report
    return [
        retention_volume_valid(report, spec.effective_retention_volume, generation, now),
        version_compatible(report, operator_version, generation, now),
        service_reachable(probe, spec.endpoint, generation, now),
    ]


def all_vsphere(
    status: str, reason: str, message: str, generation: int, now: dt.datetime
) -> list[Condition]:
    """Every vSphere check with the same verdict: vCenter unreachable, login refused..."""
    return [_cond(t, status, reason, message, generation, now) for t in VSPHERE_CHECKS]


def vm_datastores(inv: vs.Inventory, vm: vs.VM) -> tuple[str, ...]:
    """Names of the datastores the VM uses (vCenter's ``datastore`` list: its home and its
    disks), sorted; the disks' own datastores when vCenter lists none."""
    names = {ds.name for m in vm.datastores if (ds := inv.datastore(m)) is not None}
    names = names or {d.datastore for d in vm.disks if d.datastore}
    return tuple(sorted(names))


def uuid_conflicts(vm: vs.VM, others: Sequence[vs.VM]) -> list[str]:
    """``"disk <label> of <vm> and <label> of <other>"`` for each disk of ``vm`` whose UUID
    another VM's disk shares while being another file (a clone of one template, R-PRE-14).
    The same file attached to two VMs (a disk hot-added to the master target) is no clash."""
    mine = {d.uuid.lower(): d for d in vm.disks if d.uuid}
    found = []
    for other in others:
        if other.moref == vm.moref:
            continue
        for d in other.disks:
            twin = mine.get((d.uuid or "").lower())
            if twin is not None and twin.file_name != d.file_name:
                found.append(
                    f"{twin.label} ({twin.file_name}) of {vm.name} and {d.label} "
                    f"({d.file_name}) of VM {other.name} ({other.instance_uuid}) share UUID "
                    f"{d.uuid}"
                )
    return found


def license_verdict(host: vs.Host) -> tuple[str, str, str]:
    """(status, reason, message) of R-PRE-15 for ``host``."""
    lic = host.license
    if lic is None or not lic.edition_key:
        return (
            UNKNOWN,
            Reason.LICENSE_UNKNOWN,
            f"vCenter reports no licence edition for host {host.name}; assign it a vSphere "
            "licence (R-PRE-15).",
        )
    if lic.edition_key.lower().startswith(FREE_EDITIONS):
        return (
            FALSE,
            Reason.LICENSE_FORBIDS_FAILBACK,
            f"Host {host.name} runs the free licence {lic.name or lic.edition_key} "
            f"({lic.edition_key}), whose API cannot write VMs: failover works but failback "
            "fails. Assign the host a paid vSphere licence (R-PRE-15).",
        )
    return (
        TRUE,
        Reason.CHECK_PASSED,
        f"Host {host.name} is licensed {lic.name} ({lic.edition_key}).",
    )


def usable_vmfs(
    inv: vs.Inventory, host: vs.Host, allowed: Sequence[str]
) -> tuple[list[vs.Datastore], list[str]]:
    """The VMFS datastores the host can read and write (within ``allowed`` if given), and
    why each other datastore it sees is not one of them."""
    good: list[vs.Datastore] = []
    why: list[str] = []
    for moref in host.datastores:
        ds = inv.datastore(moref)
        if ds is None:
            continue
        mount = ds.mount_on(host.moref)
        if ds.type.upper() != VMFS:
            why.append(f"{ds.name} is {ds.type}")
        elif allowed and ds.name not in allowed:
            why.append(f"{ds.name} is not in spec.allowedDatastores")
        elif not ds.accessible or (mount is not None and mount.accessible is False):
            why.append(f"{ds.name} is not accessible")
        elif mount is not None and (mount.mounted is False or mount.access_mode == "readOnly"):
            why.append(f"{ds.name} is not mounted read-write")
        else:
            good.append(ds)
    return good, why


def _status_datastores(inv: vs.Inventory, host: vs.Host) -> tuple[Datastore, ...]:
    out = []
    for moref in host.datastores:
        ds = inv.datastore(moref)
        if ds is None:
            continue
        mount = ds.mount_on(host.moref)
        accessible = ds.accessible and (mount is None or mount.accessible is not False)
        out.append(
            Datastore(
                name=ds.name[:80],
                type=ds.type[:16],
                capacity_bytes=max(ds.capacity_bytes, 0),
                free_bytes=max(ds.free_bytes, 0),
                accessible=accessible,
            )
        )
    out.sort(key=lambda d: d.name)
    return tuple(out[:MAX_STATUS_DATASTORES])


def check(
    spec: MasterTargetSpec,
    inv: vs.Inventory,
    registered: Sequence[str],
    generation: int,
    now: dt.datetime,
) -> Check:
    """Judge every vSphere prerequisite of the master target from ``inv``.

    ``registered`` is status.registeredDatastores: empty before the first successful
    check, which then records the datastores of the VM's disks (R-PRE-4 compares later
    passes against them).
    """
    uuid = spec.vm.instance_uuid
    vm = inv.vm_by_uuid(uuid)
    if vm is None:
        message = (
            f"vCenter {inv.server} has no VM with instance UUID {uuid}: correct "
            "spec.vm.instanceUUID (config.instanceUuid, e.g. `govc vm.info -json`) or register "
            "the right VM."
        )
        return Check(tuple(all_vsphere(FALSE, Reason.VM_NOT_FOUND, message, generation, now)))

    def c(type_: str, status: str, reason: str, message: str) -> Condition:
        return _cond(type_, status, reason, message, generation, now)

    who = f"VM {vm.name} ({vm.instance_uuid})"
    out: list[Condition] = []

    # R-PRE-3
    enable = vm.extra_value("disk.EnableUUID")
    if (enable or "").strip().lower() in ("true", "1"):
        out.append(c(ConditionType.DISK_UUID_ENABLED, TRUE, Reason.CHECK_PASSED,
                     f"{who} has disk.EnableUUID = {enable}."))  # fmt: skip
    else:
        shown = "unset" if enable is None else f"{enable!r}"
        out.append(
            c(
                ConditionType.DISK_UUID_ENABLED,
                FALSE,
                Reason.DISK_UUID_DISABLED,
                f"{who} has disk.EnableUUID {shown}, so its disks get no stable UUID and "
                "target disks cannot be found: power the VM off, add the advanced setting "
                "disk.EnableUUID = TRUE, and power it on (R-PRE-3).",
            )
        )

    # R-PRE-4
    now_on = vm_datastores(inv, vm)
    new_registered = tuple(registered) or now_on
    left = sorted(set(registered) - set(now_on))
    if not registered:
        out.append(c(ConditionType.NO_STORAGE_VMOTION, TRUE, Reason.CHECK_PASSED,
                     f"Registered with its disks on {', '.join(now_on) or 'no datastore'}; "
                     "moving them (Storage vMotion) will be reported here."))  # fmt: skip
    elif left:
        out.append(
            c(
                ConditionType.NO_STORAGE_VMOTION,
                FALSE,
                Reason.STORAGE_VMOTION_DETECTED,
                f"{who} has no disk left on {', '.join(left)} (registered on "
                f"{', '.join(registered)}, now on {', '.join(now_on) or 'none'}): it was moved "
                "with Storage vMotion and a failback cannot complete. Move it back to "
                f"{', '.join(registered)}, or register it again by deleting and recreating "
                "this MasterTarget (R-PRE-4).",
            )
        )
    else:
        out.append(c(ConditionType.NO_STORAGE_VMOTION, TRUE, Reason.CHECK_PASSED,
                     f"Its disks are still on {', '.join(registered)}."))  # fmt: skip

    # R-PRE-6
    if vm.tools_running == "guestToolsRunning":
        out.append(c(ConditionType.VMWARE_TOOLS_RUNNING, TRUE, Reason.CHECK_PASSED,
                     f"VMware Tools run in {who}."))  # fmt: skip
    else:
        state = (
            "are not installed"
            if vm.tools_version_status == "guestToolsNotInstalled"
            else f"are not running ({vm.tools_running or 'no status'}, VM {vm.power_state})"
        )
        out.append(
            c(
                ConditionType.VMWARE_TOOLS_RUNNING,
                FALSE,
                Reason.VMWARE_TOOLS_NOT_RUNNING,
                f"VMware Tools {state} in {who}, so its host's datastores cannot be "
                "discovered: install or start VMware Tools in the VM (R-PRE-6).",
            )
        )

    # R-PRE-7, R-PRE-15
    host = inv.host(vm.host)
    if host is None:
        message = f"vCenter reports no ESXi host for {who}; is it registered on a host?"
        out.append(c(ConditionType.VMFS_DATASTORE_ATTACHED, UNKNOWN, Reason.VCENTER_UNREACHABLE,
                     message))  # fmt: skip
        out.append(c(ConditionType.LICENSE_ALLOWS_FAILBACK, UNKNOWN, Reason.VCENTER_UNREACHABLE,
                     message))  # fmt: skip
    else:
        good, why = usable_vmfs(inv, host, spec.allowed_datastores)
        if good:
            out.append(c(ConditionType.VMFS_DATASTORE_ATTACHED, TRUE, Reason.CHECK_PASSED,
                         f"Host {host.name} has VMFS datastores "
                         f"{', '.join(d.name for d in good)}."))  # fmt: skip
        else:
            seen = "; ".join(why) or "it sees no datastore"
            out.append(
                c(
                    ConditionType.VMFS_DATASTORE_ATTACHED,
                    FALSE,
                    Reason.NO_VMFS_DATASTORE,
                    f"Host {host.name} of the master target has no usable VMFS datastore "
                    f"({seen}): attach a VMFS datastore to the host, or widen "
                    "spec.allowedDatastores (R-PRE-7).",
                )
            )
        status, reason, message = license_verdict(host)
        out.append(c(ConditionType.LICENSE_ALLOWS_FAILBACK, status, reason, message))

    # R-PRE-8
    if vm.snapshots:
        out.append(
            c(
                ConditionType.NO_SNAPSHOTS,
                FALSE,
                Reason.MASTER_TARGET_HAS_SNAPSHOTS,
                f"{who} has {len(vm.snapshots)} snapshot(s) ({', '.join(vm.snapshots[:10])}): "
                "delete them (Snapshots > Delete All) so the disks are consolidated (R-PRE-8).",
            )
        )
    else:
        out.append(c(ConditionType.NO_SNAPSHOTS, TRUE, Reason.CHECK_PASSED,
                     f"{who} has no snapshots."))  # fmt: skip

    # R-PRE-9
    pvscsi = [x.label for x in vm.controllers if x.kind == vs.ControllerKind.PARAVIRTUAL]
    if pvscsi:
        out.append(
            c(
                ConditionType.SCSI_CONTROLLER_SUPPORTED,
                FALSE,
                Reason.PARAVIRTUAL_CONTROLLER,
                f"{who} has Paravirtual SCSI controller(s) {', '.join(pvscsi)}: change them "
                "to LSI Logic SAS (VM powered off, Edit Settings) (R-PRE-9).",
            )
        )
    else:
        scsi = [x.label for x in vm.controllers if x.kind != vs.ControllerKind.OTHER]
        out.append(c(ConditionType.SCSI_CONTROLLER_SUPPORTED, TRUE, Reason.CHECK_PASSED,
                     f"SCSI controllers: {', '.join(scsi) or 'none yet'}; none is "
                     "Paravirtual."))  # fmt: skip

    # R-PRE-14
    clashes = uuid_conflicts(vm, inv.vms)
    if clashes:
        out.append(
            c(
                ConditionType.DISK_UUIDS_UNIQUE,
                FALSE,
                Reason.DISK_UUID_CONFLICT,
                "Disk UUID conflict: " + "; ".join(clashes[:10]) + ". The VMs were cloned from "
                "one template: use a master target that was not cloned from it (R-PRE-14).",
            )
        )
    else:
        out.append(c(ConditionType.DISK_UUIDS_UNIQUE, TRUE, Reason.CHECK_PASSED,
                     f"No other VM shares a disk UUID with {who}."))  # fmt: skip

    # R-PRE-18
    count = len(vm.disks)
    if count >= DISK_LIMIT:
        out.append(
            c(
                ConditionType.DISK_CAPACITY_AVAILABLE,
                FALSE,
                Reason.DISK_LIMIT_REACHED,
                f"{who} has {count} disks attached, the limit is {DISK_LIMIT}: add another "
                "MasterTarget and move some ProtectedVMs to it (R-PRE-18, R-ARCH-7).",
            )
        )
    else:
        out.append(c(ConditionType.DISK_CAPACITY_AVAILABLE, TRUE, Reason.CHECK_PASSED,
                     f"{count} of {DISK_LIMIT} disks in use."))  # fmt: skip

    return Check(
        conditions=tuple(out),
        host=host.name if host else None,
        datastores=_status_datastores(inv, host) if host else (),
        disks_in_use=count,
        registered_datastores=new_registered,
    )
