"""Check a MasterTarget: read its Secrets, read vCenter once (shared by every object of the
pass), judge every prerequisite (:mod:`failback.domain.mastertarget`) and return the status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from failback.api import crossobject
from failback.api import mastertarget as api
from failback.api.conditions import TRUE, Condition, ConditionType, Reason, set_condition
from failback.domain import mastertarget as rules
from failback.domain.status import refresh_conditions
from failback.errors import FailbackError
from failback.ports.kubernetes import SecretReader
from failback.ports.vsphere import VCenters
from failback.services.vcenter import (
    Unresolved,
    error_conditions,
    not_checked,
    secret_not_found,
    vcenter_credentials,
)

TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")


async def _tls_secret(
    secrets: SecretReader, namespace: str, name: str, generation: int, now: dt.datetime
) -> None:
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


async def reconcile(
    mt: api.MasterTarget, secrets: SecretReader, vcenters: VCenters, now: dt.datetime
) -> api.MasterTargetStatus:
    """The MasterTarget's status after one pass."""
    gen = mt.meta.generation
    ns = mt.meta.namespace
    old = mt.status
    found: list[Condition] = list(rules.service_pending(gen, now, mt.spec))
    check: rules.Check | None = None
    try:
        creds = await vcenter_credentials(
            secrets, ns, mt.spec.vcenter_secret_ref.name, "spec.vcenterSecretRef", gen, now
        )
        await _tls_secret(secrets, ns, mt.spec.tls_secret_ref.name, gen, now)
    except Unresolved as exc:
        found.append(exc.condition)
        found += not_checked(exc, rules.VSPHERE_CHECKS, gen, now)
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
        try:
            client = await vcenters.connect(creds)
            inventory = await client.inventory()
        except FailbackError as exc:
            found += error_conditions(exc, rules.VSPHERE_CHECKS, gen, now)
        else:
            check = rules.check(mt.spec, inventory, old.registered_datastores, gen, now)
            found += check.conditions
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
    if check is not None:
        status = dataclasses.replace(
            status,
            host=check.host,
            datastores=check.datastores,
            disks_in_use=check.disks_in_use,
            registered_datastores=check.registered_datastores or old.registered_datastores,
        )
    return status
