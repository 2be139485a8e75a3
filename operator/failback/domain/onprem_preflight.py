"""The on-premises preflight of a ProtectedVM, and where it comes back (R-LOC-1/2/3).

From one read of the VM's vCenter: R-PRE-1 (the account can discover and act), R-PRE-2
(no snapshots on the original VM it fails back into), R-PRE-10 (same OS family as the
master target), R-PRE-14 (no disk UUID shared with the master target), R-PRE-15 (the
host it comes back on is licensed for it), R-PRE-16 (a physical source's OS can fail
back), R-PRE-17 (this vCenter holds the master target VM), and the location: the original
VM with a delta sync when it still exists and may be used, else a new VM at the alternate
placement with a full sync. Pure: the inventory, the specs and the time come in.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from failback.api import crossobject
from failback.api.common import OSType
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
)
from failback.api.mastertarget import MasterTargetSpec
from failback.api.protectedvm import (
    FailbackLocation,
    Location,
    LocationTarget,
    ProtectedVMSpec,
    SourceType,
    SyncMode,
    condition_types,
)
from failback.domain import mastertarget as mt_rules
from failback.domain import vsphere as vs
from failback.domain.vsphere import REPLICATION_SNAPSHOT

UNSUPPORTED_PHYSICAL_OS: Final = re.compile(r"windows\s+server\s+2008\s+r2.*sp1", re.IGNORECASE)
"""R-PRE-16: a physical Windows Server 2008 R2 SP1 cannot fail back."""


@dataclass(frozen=True)
class Preflight:
    """The conditions the on-premises side decides, and the location (None when it
    cannot be decided: LocationResolved says why)."""

    conditions: tuple[Condition, ...]
    location: Location | None = None


@dataclass(frozen=True)
class MasterTargetRef:
    """The MasterTarget a ProtectedVM names, as far as the preflight needs it."""

    name: str
    spec: MasterTargetSpec


def datacenter_of(inv: vs.Inventory, folder: str | None) -> vs.Datacenter | None:
    """The datacenter above a folder (walking up the parents)."""
    by_moref = {f.moref: f for f in inv.folders}
    seen: set[str] = set()
    current = folder
    while current is not None and current not in seen:
        seen.add(current)
        dc = next((d for d in inv.datacenters if d.moref == current), None)
        if dc is not None:
            return dc
        parent = by_moref.get(current)
        current = parent.parent if parent else None
    return None


def _folder_path(inv: vs.Inventory, dc: vs.Datacenter, path: str) -> vs.Folder | None:
    """The VM folder at ``a/b`` under the datacenter's VM folder."""
    current = dc.vm_folder
    for part in [p for p in path.strip("/").split("/") if p]:
        current = next(
            (f.moref for f in inv.folders if f.parent == current and f.name == part), None
        )
        if current is None:
            return None
    return next((f for f in inv.folders if f.moref == current), None)


@dataclass(frozen=True)
class _Placement:
    hosts: tuple[vs.Host, ...]
    datastore: vs.Datastore


def resolve_placement(
    inv: vs.Inventory, spec: ProtectedVMSpec
) -> tuple[_Placement | None, str | None]:
    """The alternate placement's hosts and datastore, or why it does not resolve."""
    place = spec.on_prem.alternate_placement
    if place is None:
        return None, "spec.onPrem.alternatePlacement is not set"
    dc = next((d for d in inv.datacenters if d.name == place.datacenter), None)
    if dc is None:
        return None, f"datacenter {place.datacenter} does not exist"
    hosts: tuple[vs.Host, ...] = ()
    if place.cluster:
        cluster = next((c for c in inv.compute if c.cluster and c.name == place.cluster), None)
        if cluster is None:
            return None, f"cluster {place.cluster} does not exist in {place.datacenter}"
        hosts = tuple(h for h in inv.hosts if h.moref in cluster.hosts)
        if place.host:
            hosts = tuple(h for h in hosts if h.name == place.host)
            if not hosts:
                return None, f"host {place.host} is not in cluster {place.cluster}"
    elif place.host:
        hosts = tuple(h for h in inv.hosts if h.name == place.host)
        if not hosts:
            return None, f"host {place.host} does not exist in {place.datacenter}"
    ds = inv.datastore_named(place.datastore)
    if ds is None:
        return None, f"datastore {place.datastore} does not exist"
    if place.folder and _folder_path(inv, dc, place.folder) is None:
        return None, f"VM folder {place.folder} does not exist in {place.datacenter}"
    names = {n.name for n in inv.networks}
    for net in place.networks:
        if net.port_group not in names:
            return None, f"port group {net.port_group} does not exist"
    return _Placement(hosts, ds), None


def writable_from(ds: vs.Datastore, host: vs.Host) -> bool:
    """Whether ``host`` mounts ``ds`` read-write and can reach it."""
    mount = ds.mount_on(host.moref)
    return (
        ds.accessible
        and (mount is not None or ds.moref in host.datastores)
        and (mount is None or mount.mounted is not False)
        and (mount is None or (mount.accessible is not False and mount.access_mode != "readOnly"))
    )


def preflight(
    spec: ProtectedVMSpec,
    master_target: MasterTargetRef | None,
    inv: vs.Inventory,
    generation: int,
    now: dt.datetime,
    source_os: str | None = None,
) -> Preflight:
    """Judge the on-premises prerequisites of a ProtectedVM from its vCenter's inventory.

    ``master_target`` is None when the MasterTarget does not exist (ReferencesResolved
    reports that); ``source_os`` is the protected machine's OS name (from Azure) when
    known, for R-PRE-16.
    """
    applicable = set(condition_types(spec))
    out: list[Condition] = []

    def c(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        out.append(Condition(type_, status, reason, message, generation, now))

    # R-PRE-10
    if master_target is not None:
        if master_target.spec.os_type != spec.os_type:
            out.append(
                crossobject.OS_MISMATCH.condition(
                    generation,
                    now,
                    os_type=spec.os_type.value,
                    master_target_os_type=master_target.spec.os_type.value,
                    master_target=master_target.name,
                )
            )
        else:
            c(ConditionType.OS_MATCHES_MASTER_TARGET, TRUE, Reason.CHECK_PASSED,
              f"MasterTarget {master_target.name} runs {spec.os_type.value} too.")  # fmt: skip

    # R-PRE-16
    if ConditionType.SOURCE_OS_SUPPORTED in applicable and source_os is None:
        if spec.os_type is OSType.LINUX:
            c(ConditionType.SOURCE_OS_SUPPORTED, TRUE, Reason.CHECK_PASSED,
              "A Linux server can fail back from a physical source (R-PRE-16 concerns "
              "Windows Server 2008 R2 SP1 only).")  # fmt: skip
        else:
            c(ConditionType.SOURCE_OS_SUPPORTED, UNKNOWN, Reason.SOURCE_OS_UNKNOWN,
              "Azure reports no OS name for this Windows server yet (its VM agent tells it): "
              "Windows Server 2008 R2 SP1 protected as a physical machine cannot fail back "
              "(R-PRE-16), so the check waits for it.")  # fmt: skip
    elif ConditionType.SOURCE_OS_SUPPORTED in applicable and source_os is not None:
        if UNSUPPORTED_PHYSICAL_OS.search(source_os):
            c(ConditionType.SOURCE_OS_SUPPORTED, FALSE, Reason.UNSUPPORTED_SOURCE_OS,
              f"This physical server runs {source_os}: Windows Server 2008 R2 SP1 protected "
              "as a physical machine cannot fail back; upgrade it, or keep it in Azure "
              "(R-PRE-16).")  # fmt: skip
        else:
            c(ConditionType.SOURCE_OS_SUPPORTED, TRUE, Reason.CHECK_PASSED,
              f"{source_os} can fail back from a physical source.")  # fmt: skip

    # R-PRE-17: this vCenter holds the master target VM.
    mt_vm = None
    if master_target is not None:
        mt_vm = inv.vm_by_uuid(master_target.spec.vm.instance_uuid)
        if mt_vm is None:
            c(ConditionType.VCENTER_DISCOVERED, FALSE, Reason.VCENTER_NOT_DISCOVERED,
              f"vCenter {inv.server} (spec.onPrem.vcenterSecretRef) does not hold the VM "
              f"{master_target.spec.vm.instance_uuid} of MasterTarget {master_target.name}: "
              "fail back to the vCenter of the master target, or register a MasterTarget in "
              "this vCenter first (R-PRE-17).")  # fmt: skip
        else:
            c(ConditionType.VCENTER_DISCOVERED, TRUE, Reason.CHECK_PASSED,
              f"vCenter {inv.server} holds MasterTarget {master_target.name}'s VM "
              f"{mt_vm.name}.")  # fmt: skip
    mt_host = inv.host(mt_vm.host) if mt_vm else None

    # The original VM, and where the machine comes back.
    original = None
    if spec.on_prem.original_vm is not None:
        original = inv.vm_by_uuid(spec.on_prem.original_vm.instance_uuid)
    location, location_cond = _location(spec, inv, original, mt_host)
    c(ConditionType.LOCATION_RESOLVED, *location_cond)

    # R-PRE-1
    dc = None
    if spec.on_prem.alternate_placement is not None and (
        location is None or location.target == LocationTarget.ALTERNATE
    ):
        dc = next(
            (d for d in inv.datacenters if d.name == spec.on_prem.alternate_placement.datacenter),
            None,
        )
    if dc is None and original is not None:
        dc = datacenter_of(inv, original.folder)
    if dc is None and mt_vm is not None:
        dc = datacenter_of(inv, mt_vm.folder)
    lacking = inv.missing_on(dc.moref) if dc else ()
    if dc is None and len(inv.datacenters) == 1:
        dc = inv.datacenters[0]
        lacking = inv.missing_on(dc.moref)
    if lacking:
        c(ConditionType.VCENTER_PERMISSIONS, FALSE, Reason.INSUFFICIENT_VCENTER_PERMISSIONS,
          f"The vCenter account lacks {', '.join(lacking)} on datacenter "
          f"{dc.name if dc else '?'}: grant them (a read-only account cannot discover "
          "datastores or fail back), update spec.onPrem.vcenterSecretRef's Secret if you use "
          "another account, and the operator retries (R-PRE-1).")  # fmt: skip
    elif mt_host is not None and not mt_host.datastores:
        c(ConditionType.VCENTER_PERMISSIONS, FALSE, Reason.INSUFFICIENT_VCENTER_PERMISSIONS,
          f"No datastore of host {mt_host.name} is visible to the vCenter account: grant it "
          "the datastore privileges (R-PRE-1).")  # fmt: skip
    elif dc is None:
        c(ConditionType.VCENTER_PERMISSIONS, UNKNOWN, Reason.VM_NOT_FOUND,
          "Neither the original VM, the alternate placement's datacenter nor the master "
          "target VM was found, so the privileges cannot be checked (R-PRE-1).")  # fmt: skip
    else:
        c(ConditionType.VCENTER_PERMISSIONS, TRUE, Reason.CHECK_PASSED,
          f"The vCenter account has every privilege failback needs on {dc.name}.")  # fmt: skip

    # R-PRE-2
    if ConditionType.ORIGINAL_VM_NO_SNAPSHOTS in applicable:
        if original is None:
            c(ConditionType.ORIGINAL_VM_NO_SNAPSHOTS, TRUE, Reason.CHECK_PASSED,
              "The original VM no longer exists, so no snapshot of it can block the "
              "failback.")  # fmt: skip
        elif users := [n for n in original.snapshots if n != REPLICATION_SNAPSHOT]:
            # The replication's own cycle snapshot (reprotect back to Azure) is not the user's.
            c(ConditionType.ORIGINAL_VM_NO_SNAPSHOTS, FALSE, Reason.ORIGINAL_VM_HAS_SNAPSHOTS,
              f"The original VM {original.name} ({original.instance_uuid}) has "
              f"{len(users)} snapshot(s) ({', '.join(users[:10])}): "
              "delete them before reprotect, or fail back to the alternate location "
              "(R-PRE-2).")  # fmt: skip
        else:
            c(ConditionType.ORIGINAL_VM_NO_SNAPSHOTS, TRUE, Reason.CHECK_PASSED,
              f"The original VM {original.name} has no snapshots.")  # fmt: skip

    # R-PRE-14
    if mt_vm is not None and original is not None:
        clashes = mt_rules.uuid_conflicts(mt_vm, [original])
        if clashes:
            c(ConditionType.DISK_UUIDS_UNIQUE, FALSE, Reason.DISK_UUID_CONFLICT,
              "Disk UUID conflict: " + "; ".join(clashes[:10]) + ". The master target and "
              "this VM were cloned from one template: use a master target that was not "
              "(R-PRE-14).")  # fmt: skip
        else:
            c(ConditionType.DISK_UUIDS_UNIQUE, TRUE, Reason.CHECK_PASSED,
              f"No disk of {original.name} shares a UUID with the master target.")  # fmt: skip
    elif mt_vm is not None:
        c(ConditionType.DISK_UUIDS_UNIQUE, TRUE, Reason.CHECK_PASSED,
          "The VM comes back as a new VM with new disks: no UUID can clash.")  # fmt: skip

    # R-PRE-15: the host(s) it comes back on.
    hosts = _target_hosts(spec, inv, location, original, mt_host)
    verdicts = [mt_rules.license_verdict(h) for h in hosts]
    bad = next((v for v in verdicts if v[0] == FALSE), None)
    unknown = next((v for v in verdicts if v[0] == UNKNOWN), None)
    if bad or unknown:
        status, reason, message = bad or unknown  # type: ignore[misc]
        c(ConditionType.LICENSE_ALLOWS_FAILBACK, ConditionStatus(status), reason, message)
    elif verdicts:
        c(ConditionType.LICENSE_ALLOWS_FAILBACK, TRUE, Reason.CHECK_PASSED,
          "Licensed for failback: " + "; ".join(v[2] for v in verdicts))  # fmt: skip

    return Preflight(tuple(x for x in out if x.type in applicable), location)


def _target_hosts(
    spec: ProtectedVMSpec,
    inv: vs.Inventory,
    location: Location | None,
    original: vs.VM | None,
    mt_host: vs.Host | None,
) -> Sequence[vs.Host]:
    if location is not None and location.target == LocationTarget.ORIGINAL and original:
        host = inv.host(original.host)
        return [host] if host else []
    placement, _ = resolve_placement(inv, spec)
    if placement is not None and placement.hosts:
        return placement.hosts
    return [mt_host] if mt_host else []


def _location(
    spec: ProtectedVMSpec, inv: vs.Inventory, original: vs.VM | None, mt_host: vs.Host | None
) -> tuple[Location | None, tuple[ConditionStatus, str, str]]:
    where = spec.on_prem.failback_location
    physical = spec.source_type == SourceType.PHYSICAL
    wanted = spec.on_prem.original_vm

    def original_ok(vm: vs.VM) -> tuple[Location | None, tuple[ConditionStatus, str, str]]:
        if mt_host is not None:
            blocked = [
                ds.name
                for m in vm.datastores
                if (ds := inv.datastore(m)) is not None and not writable_from(ds, mt_host)
            ]
            if blocked:
                return None, (
                    FALSE,
                    Reason.DATASTORE_NOT_ACCESSIBLE,
                    f"The master target's host {mt_host.name} cannot read and write "
                    f"{', '.join(blocked)}, where the original VM {vm.name} keeps its disks: "
                    "mount them read-write on that host, or fail back to the alternate "
                    "location (R-LOC-1).",
                )
        why = f"the original VM {vm.name} exists: only changed blocks are copied (R-LOC-1)"
        return Location(LocationTarget.ORIGINAL, SyncMode.DELTA, why), (
            TRUE,
            Reason.ORIGINAL_LOCATION,
            f"Fails back into {why}.",
        )

    def alternate(why: str) -> tuple[Location | None, tuple[ConditionStatus, str, str]]:
        placement, problem = resolve_placement(inv, spec)
        if placement is None:
            return None, (
                FALSE,
                Reason.PLACEMENT_NOT_FOUND,
                f"The alternate placement does not resolve: {problem}. Correct "
                "spec.onPrem.alternatePlacement (R-LOC-2).",
            )
        if mt_host is not None and not writable_from(placement.datastore, mt_host):
            return None, (
                FALSE,
                Reason.DATASTORE_NOT_ACCESSIBLE,
                f"The master target's host {mt_host.name} cannot read and write datastore "
                f"{placement.datastore.name} of the alternate placement: choose a datastore "
                "it mounts read-write (R-LOC-2, R-LOC-5).",
            )
        return Location(LocationTarget.ALTERNATE, SyncMode.FULL, why), (
            TRUE,
            Reason.ALTERNATE_LOCATION,
            f"Fails back as a new VM at the alternate placement, with a full copy: {why}.",
        )

    if physical:
        return alternate("a physical server always comes back as a new VM (R-LOC-3)")
    if where == FailbackLocation.ALTERNATE:
        return alternate("spec.onPrem.failbackLocation is Alternate (R-LOC-2)")
    if original is not None:
        return original_ok(original)
    gone = (
        f"the original VM {wanted.instance_uuid} no longer exists"
        if wanted is not None
        else "no original VM is given"
    )
    if where == FailbackLocation.ORIGINAL or spec.on_prem.alternate_placement is None:
        return None, (
            FALSE,
            Reason.ORIGINAL_VM_NOT_FOUND,
            f"Cannot fail back into the original VM: {gone} in vCenter {inv.server}. Set "
            "spec.onPrem.alternatePlacement and failbackLocation Auto or Alternate to fail "
            "back as a new VM (R-LOC-2).",
        )
    return alternate(f"{gone} (R-LOC-2)")
