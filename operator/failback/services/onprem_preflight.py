"""The on-premises preflight of a ProtectedVM: one entry point for the ProtectedVM
reconcile (which also runs the Azure preflight and the cross-object rules, and merges).

    result = await onprem_preflight(vm, master_target, secrets, vcenters, now,
                                    source_os=azure_os_name)
    # result.conditions: the conditions below, to set_condition() into the status
    # result.location:   status.location (None when LocationResolved is not True)

It reads the Secret of ``spec.onPrem.vcenterSecretRef`` and the inventory of that vCenter
through the shared session cache (one read per pass for every object), and reports:
VCenterPermissions (R-PRE-1), VCenterDiscovered (R-PRE-17), OSMatchesMasterTarget
(R-PRE-10), LocationResolved (R-LOC-1/2/3/5), OriginalVMNoSnapshots (R-PRE-2),
SourceOSSupported (R-PRE-16, only when ``source_os`` is known), DiskUUIDsUnique (R-PRE-14)
and LicenseAllowsFailback (R-PRE-15) — each only where ``protectedvm.condition_types``
applies it. A vCenter Secret that is missing or incomplete gives a False ReferencesResolved (the
other references are the caller's to merge into it) and every vSphere condition Unknown
with the same reason; a vCenter that cannot be read gives every vSphere condition its
reason (TLS, login, unreachable).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from failback.api.conditions import Condition, ConditionType
from failback.api.mastertarget import MasterTarget
from failback.api.protectedvm import Location, ProtectedVM, condition_types
from failback.domain import onprem_preflight as rules
from failback.domain.vsphere import Inventory
from failback.errors import FailbackError
from failback.ports.kubernetes import SecretReader
from failback.ports.vsphere import VCenters
from failback.services.vcenter import (
    Unresolved,
    error_conditions,
    not_checked,
    vcenter_credentials,
)

VSPHERE_CONDITIONS = (
    ConditionType.VCENTER_PERMISSIONS,
    ConditionType.VCENTER_DISCOVERED,
    ConditionType.LOCATION_RESOLVED,
    ConditionType.ORIGINAL_VM_NO_SNAPSHOTS,
    ConditionType.DISK_UUIDS_UNIQUE,
    ConditionType.LICENSE_ALLOWS_FAILBACK,
)
"""The conditions read from vCenter (all but OSMatchesMasterTarget and SourceOSSupported)."""


@dataclass(frozen=True)
class OnPremPreflight:
    conditions: tuple[Condition, ...]
    location: Location | None = None


async def onprem_preflight(
    vm: ProtectedVM,
    master_target: MasterTarget | None,
    secrets: SecretReader,
    vcenters: VCenters,
    now: dt.datetime,
    *,
    source_os: str | None = None,
) -> OnPremPreflight:
    """The on-premises conditions of ``vm`` and where it comes back (see the module doc).

    ``master_target`` is the MasterTarget ``spec.masterTargetRef`` names, None when it
    does not exist; ``source_os`` the OS name of the protected machine when known.
    """
    gen = vm.meta.generation
    applicable = set(condition_types(vm.spec))
    mt = (
        rules.MasterTargetRef(master_target.meta.name, master_target.spec)
        if master_target is not None
        else None
    )
    try:
        creds = await vcenter_credentials(
            secrets,
            vm.meta.namespace,
            vm.spec.on_prem.vcenter_secret_ref.name,
            "spec.onPrem.vcenterSecretRef",
            gen,
            now,
        )
    except Unresolved as exc:
        types = [t for t in VSPHERE_CONDITIONS if t in applicable]
        return OnPremPreflight((exc.condition, *not_checked(exc, types, gen, now)))
    try:
        client = await vcenters.connect(creds)
        inventory = await client.inventory()
    except FailbackError as exc:
        types = [t for t in VSPHERE_CONDITIONS if t in applicable]
        offline = rules.preflight(vm.spec, mt, Inventory(), gen, now, source_os)
        kept = [c for c in offline.conditions if c.type not in VSPHERE_CONDITIONS]
        return OnPremPreflight(tuple(kept + error_conditions(exc, types, gen, now)))
    result = rules.preflight(vm.spec, mt, inventory, gen, now, source_os)
    return OnPremPreflight(result.conditions, result.location)
