"""The MasterTarget controller: kopf registrations only; the behaviour lives in
``failback.services.mastertarget``. The vSphere sessions, the Secret reader and the
master target services' health client are the shared clients of ``controllers.resources``."""

from __future__ import annotations

from typing import Any

import kopf

from failback.api import mastertarget, merge_patch
from failback.api.constants import MASTER_TARGET
from failback.controllers import resources, routing
from failback.controllers.bridge import kopf_errors
from failback.services import mastertarget as service
from failback.settings import Settings


async def reconcile_mastertarget(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Parse, check against vCenter and the MT service, write the status; errors through
    the bridge."""
    now = routing.now()
    old = dict(body.get("status") or {})
    shared = resources.shared(memo)
    with kopf_errors():
        mt = routing.parse_or_report(body, patch, mastertarget.parse, now)
        status = await service.reconcile(
            mt, shared.kube, shared.vsphere, shared.master_targets, now
        )
    patch.status.update(merge_patch(old, status.to_dict()))


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """The routed reconcile of MasterTargets."""
    routing.route(registry, settings, MASTER_TARGET, reconcile_mastertarget)
