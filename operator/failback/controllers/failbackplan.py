"""The FailbackPlan controller: kopf registrations only; the behaviour lives in
``failback.services.failbackplan`` (observe every member, decide, act, log)."""

from __future__ import annotations

from typing import Any

import kopf

from failback.api import failbackplan
from failback.api.constants import FAILBACK_PLAN
from failback.controllers import metrics, resources, routing
from failback.controllers.bridge import kopf_errors
from failback.services import failbackplan as service
from failback.settings import Settings


def _deps(memo: kopf.Memo) -> service.Deps:
    shared = resources.shared(memo)
    return service.Deps(
        objects=shared.kube,
        secrets=shared.kube,
        vcenters=shared.vsphere,
        azure=shared.azure,
        sessions=shared.sessions,
        points=shared.points,
    )


async def reconcile_failbackplan(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Parse, observe every member, act on the decision, write the status and Events.

    The plan is read again here, and its status written before this returns: a pass that
    waited behind the previous one (``routing.one_at_a_time``) would otherwise start from
    the body kopf handed it before that pass's status was written, and, say, number a
    second run for the same failback."""
    now = routing.now()
    kube = resources.shared(memo).kube
    with kopf_errors():
        fresh = await routing.latest(kube, FAILBACK_PLAN, body)
    if fresh is None:
        return  # deleted meanwhile
    old = dict(fresh.get("status") or {})
    with kopf_errors():
        plan = routing.parse_or_report(fresh, patch, failbackplan.parse, now)
        outcome = await service.reconcile(plan, _deps(memo), now)
        await routing.write_status(kube, FAILBACK_PLAN, fresh, old, outcome.status.to_dict())
    if outcome.status.phase is not None:
        metrics.plan(plan.meta.namespace, plan.meta.name, outcome.status.phase,
                     outcome.transitions)  # fmt: skip
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """The routed reconcile of FailbackPlans: a run is re-observed every few seconds."""
    routing.route(
        registry,
        settings,
        FAILBACK_PLAN,
        reconcile_failbackplan,
        interval=min(settings.recheck_interval, settings.plan_interval),
        idle=min(settings.recheck_idle, 1.0),
    )
