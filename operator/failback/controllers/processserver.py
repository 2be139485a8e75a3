"""The ProcessServer controller: kopf registrations only; the behaviour lives in
``failback.services.processserver``.

- one routed reconcile (resume, create, update and the re-check timer): parse, one
  service call, the returned status written through ``patch.status``;
- a deletion handler for process servers the operator deploys (``spec.deploy``): kopf
  keeps the finalizer ``failback.io/finalizer`` on them until their VM is deleted, which
  waits while a ProtectedVM still uses the process server;
- the Azure clients, the health client and the Kubernetes reads are the shared clients
  of ``controllers.resources``.
"""

from __future__ import annotations

from typing import Any

import kopf

from failback.api import merge_patch, processserver
from failback.api.conditions import ConditionType
from failback.api.constants import GROUP, PROCESS_SERVER, VERSION
from failback.controllers import resources, routing
from failback.controllers.bridge import kopf_errors
from failback.errors import SpecInvalid, Waiting
from failback.services import processserver as service
from failback.settings import Settings


def _deps(memo: kopf.Memo, settings: Settings) -> service.Dependencies:
    shared = resources.shared(memo)
    return service.Dependencies(
        azure=shared.azure,
        health=shared.health,
        secrets=shared.kube,
        users=shared.kube,
        process_server_port=settings.process_server_port,
    )


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register the ProcessServer handlers on ``registry``."""

    async def reconcile_processserver(
        body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
    ) -> None:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return  # the deletion handler owns the object now
        now = routing.now()
        old = dict(body.get("status") or {})
        with kopf_errors():
            try:
                ps = processserver.parse(body)
            except SpecInvalid as exc:
                patch.status.update(
                    merge_patch(old, routing.spec_invalid_status(old, body, exc, now))
                )
                raise
            outcome = await service.reconcile(ps, _deps(memo, settings), now)
        patch.status.update(merge_patch(old, outcome.status.to_dict()))

    async def remove_processserver_vm(
        body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
    ) -> None:
        now = routing.now()
        old = dict(body.get("status") or {})
        with kopf_errors():
            outcome = await service.remove(processserver.parse(body), _deps(memo, settings), now)
            patch.status.update(merge_patch(old, outcome.status.to_dict()))
            if not outcome.removed:
                deployed = next(
                    (c for c in outcome.status.conditions if c.type == ConditionType.DEPLOYED),
                    None,
                )
                raise Waiting(
                    deployed.message if deployed is not None else "deleting the VM",
                    delay=outcome.retry_after or settings.recheck_interval,
                )

    routing.route(registry, settings, PROCESS_SERVER, reconcile_processserver)
    kopf.on.delete(
        GROUP,
        VERSION,
        PROCESS_SERVER.plural,
        id="remove-vm",
        registry=registry,
        when=lambda spec, **_: bool(spec.get("deploy")),
    )(remove_processserver_vm)
