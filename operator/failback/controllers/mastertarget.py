"""The MasterTarget controller: kopf registrations only; the behaviour lives in services.

The vSphere session cache and the Secret reader live in kopf's memo: made at startup,
closed (every vCenter session logged out) at cleanup.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import kopf

from failback.adapters.vsphere import KubernetesSecrets, Sessions
from failback.api import mastertarget, merge_patch
from failback.api.constants import MASTER_TARGET
from failback.controllers import routing
from failback.controllers.bridge import kopf_errors
from failback.errors import SpecInvalid
from failback.services import mastertarget as service
from failback.settings import Settings


def sessions(settings: Settings) -> Sessions:
    """The vSphere session cache that ``settings`` describe."""
    return Sessions(
        max_concurrency=settings.vsphere_max_concurrency,
        inventory_max_age=settings.vsphere_inventory_max_age,
        check_interval=settings.vsphere_session_check_interval,
        timeout=settings.vsphere_timeout,
        idle_logout=settings.vsphere_idle_logout,
    )


async def open_vsphere(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "vsphere", None) is None:
        memo.vsphere = sessions(memo.settings)
    if getattr(memo, "secrets", None) is None:
        memo.secrets = KubernetesSecrets()


async def close_vsphere(memo: kopf.Memo, **_: Any) -> None:
    vsphere = getattr(memo, "vsphere", None)
    if vsphere is not None:
        memo.vsphere = None
        await vsphere.close()


async def reconcile_mastertarget(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Parse, check against vCenter, write the status; errors through the bridge."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = dict(body.get("status") or {})
    with kopf_errors():
        try:
            mt = mastertarget.parse(body)
        except SpecInvalid as exc:
            patch.status.update(merge_patch(old, {**old, **routing._spec_invalid(body, exc, now)}))
            raise
        if getattr(memo, "vsphere", None) is None:
            await open_vsphere(memo)
        status = await service.reconcile(mt, memo.secrets, memo.vsphere, now)
    patch.status.update(merge_patch(old, status.to_dict()))


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """The routed reconcile of MasterTargets, and the vSphere sessions' lifetime."""
    kopf.on.startup(registry=registry, id="vsphere-sessions")(open_vsphere)
    kopf.on.cleanup(registry=registry, id="vsphere-sessions")(close_vsphere)
    routing.route(registry, settings, MASTER_TARGET, reconcile_mastertarget)
