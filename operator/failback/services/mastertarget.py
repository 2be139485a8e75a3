"""Check a MasterTarget: read its Secrets, read vCenter once (shared by every object of the
pass) and ask its service for its health over mutual TLS (both at once), judge every
prerequisite (:mod:`failback.domain.mastertarget`) and return the status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from failback import __version__
from failback.api import crossobject
from failback.api import mastertarget as api
from failback.api.conditions import TRUE, Condition, ConditionType, Reason, set_condition
from failback.domain import mastertarget as rules
from failback.domain.status import refresh_conditions
from failback.errors import FailbackError
from failback.ports.kubernetes import SecretReader
from failback.ports.mastertarget import TLS_KEYS, MasterTargetClient, TLSMaterial
from failback.ports.vsphere import VCenters
from failback.services.vcenter import (
    Unresolved,
    error_conditions,
    not_checked,
    secret_not_found,
    vcenter_credentials,
)


async def _tls_secret(
    secrets: SecretReader, namespace: str, name: str, generation: int, now: dt.datetime
) -> TLSMaterial:
    field = "spec.tlsSecretRef"
    data = await secrets.read(namespace, name)
    if data is None:
        raise secret_not_found(name, field, namespace, generation, now)
    for key in TLS_KEYS:
        if not data.get(key):
            raise Unresolved(
                crossobject.SECRET_KEY_MISSING.condition(
                    generation, now, name=name, field=field, key=key, keys=", ".join(TLS_KEYS)
                )
            )
    return TLSMaterial(cert=data["tls.crt"], key=data["tls.key"], ca=data["ca.crt"])


async def reconcile(
    mt: api.MasterTarget,
    secrets: SecretReader,
    vcenters: VCenters,
    service: MasterTargetClient,
    now: dt.datetime,
    operator_version: str = __version__,
) -> api.MasterTargetStatus:
    """The MasterTarget's status after one pass. ``operator_version`` is what the service
    may not be newer than (R-PRE-18): the operator's, which its process servers run."""
    gen = mt.meta.generation
    ns = mt.meta.namespace
    old = mt.status
    found: list[Condition] = []
    check: rules.Check | None = None
    probe: rules.ServiceProbe | None = None
    try:
        creds = await vcenter_credentials(
            secrets, ns, mt.spec.vcenter_secret_ref.name, "spec.vcenterSecretRef", gen, now
        )
        tls = await _tls_secret(secrets, ns, mt.spec.tls_secret_ref.name, gen, now)
    except Unresolved as exc:
        found.append(exc.condition)
        found += not_checked(exc, rules.VSPHERE_CHECKS + rules.SERVICE_CHECKS, gen, now)
    else:
        found.append(
            Condition(
                ConditionType.REFERENCES_RESOLVED,
                TRUE,
                Reason.CHECK_PASSED,
                f"Secrets {mt.spec.vcenter_secret_ref.name} and {mt.spec.tls_secret_ref.name} "
                "exist with the keys needed.",
                gen,
                now,
            )
        )

        async def read_vcenter() -> None:
            nonlocal check
            try:
                client = await vcenters.connect(creds)
                inventory = await client.inventory()
            except FailbackError as exc:
                found.extend(error_conditions(exc, rules.VSPHERE_CHECKS, gen, now))
            else:
                check = rules.check(mt.spec, inventory, old.registered_datastores, gen, now)
                found.extend(check.conditions)

        _, answer = await asyncio.gather(read_vcenter(), service.health(mt.spec.endpoint, tls))
        found += rules.judge_service(mt.spec, answer, operator_version, gen, now)
        probe = answer
    conditions: list[Condition] = list(old.conditions)
    for c in found:
        conditions = set_condition(conditions, c)
    conditions = refresh_conditions(conditions, api.CONDITION_TYPES, api.PREREQUISITES, gen, now)
    status = dataclasses.replace(
        old,
        observed_generation=gen,
        conditions=tuple(conditions),
        phase=api.derive_phase(conditions),
        disk_limit=api.DISK_LIMIT,
    )
    report = probe.report if probe is not None else None
    if report is not None:
        volume = report.retention_volume
        status = dataclasses.replace(
            status,
            version=report.version[:64],  # the CRD's bounds
            retention_volume=api.RetentionVolumeStatus(
                path=volume.path[:255],
                file_system=volume.file_system[:32],
                capacity_bytes=volume.capacity_bytes,
                free_bytes=volume.free_bytes,
            ),
        )
    if check is not None:
        status = dataclasses.replace(
            status,
            host=check.host,
            datastores=check.datastores,
            disks_in_use=check.disks_in_use,
            registered_datastores=check.registered_datastores or old.registered_datastores,
        )
    return status
