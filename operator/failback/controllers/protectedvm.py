"""The ProtectedVM controller: kopf registrations only; the behaviour lives in
``failback.services.protectedvm`` (the objects it names, the Azure and on-premises
preflights, replication). The clients are the shared ones of ``controllers.resources``."""

from __future__ import annotations

from typing import Any

import kopf

from failback.api import protectedvm
from failback.api.constants import PROTECTED_VM
from failback.controllers import metrics, resources, routing
from failback.controllers.bridge import kopf_errors
from failback.services import protectedvm as service
from failback.services import replication
from failback.settings import Settings


def _deps(memo: kopf.Memo) -> service.Dependencies:
    shared = resources.shared(memo)
    settings: Settings = memo.settings
    return service.Dependencies(
        objects=shared.kube,
        secrets=shared.kube,
        vcenters=shared.vsphere,
        azure=shared.azure,
        replication=replication.Deps(
            secrets=shared.kube,
            vcenters=shared.vsphere,
            azure=shared.azure,
            sessions=shared.sessions,
            points=shared.points,
            interval=settings.replication_interval,
        ),
    )


async def reconcile_protectedvm(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Parse, observe both sites, write the status (before the next pass may start: see
    ``routing.latest``); errors through the bridge."""
    now = routing.now()
    kube = resources.shared(memo).kube
    with kopf_errors():
        fresh = await routing.latest(kube, PROTECTED_VM, body)
    if fresh is None:
        return  # deleted meanwhile
    old = dict(fresh.get("status") or {})
    with kopf_errors():
        vm = routing.parse_or_report(fresh, patch, protectedvm.parse, now)
        outcome = await service.reconcile(vm, _deps(memo), now)
        await routing.write_status(kube, PROTECTED_VM, fresh, old, outcome.status.to_dict())
    points = outcome.status.recovery_points
    metrics.vm(
        vm.meta.namespace,
        vm.meta.name,
        outcome.status.rpo_seconds,
        vm.spec.policy.rpo_threshold.total_seconds(),
        points.count if points is not None else None,
    )
    for message in outcome.events:
        kopf.info(body, reason="Replication", message=message)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """The routed reconcile of ProtectedVMs."""
    routing.route(registry, settings, PROTECTED_VM, reconcile_protectedvm)
