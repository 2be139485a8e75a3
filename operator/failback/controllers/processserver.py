"""The ProcessServer controller: kopf registrations only; the behaviour lives in
``failback.services.processserver``.

- one routed reconcile (resume, create, update and the re-check timer): parse, one
  service call, the returned status written through ``patch.status``;
- a deletion handler for process servers the operator deploys (``spec.deploy``): kopf
  keeps the finalizer ``failback.io/finalizer`` on them until their VM is deleted, which
  waits while a ProtectedVM still uses the process server;
- startup and cleanup handlers that open and close the clients kept in kopf's memo:
  ``memo.azure_clients`` (shared with every controller that talks to Azure) and
  ``memo.processserver`` (the service's dependencies).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import kopf

from failback.adapters.azure.clients import AzureClientsAdapter, AzureOptions
from failback.adapters.processserver.client import HealthClient
from failback.adapters.processserver.kube import KubeReads
from failback.api import merge_patch, processserver
from failback.api.conditions import FALSE, Condition, ConditionType, Reason
from failback.api.constants import GROUP, PROCESS_SERVER, VERSION
from failback.controllers import routing
from failback.controllers.bridge import kopf_errors
from failback.errors import SpecInvalid, Waiting
from failback.services import processserver as service
from failback.settings import Settings


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def azure_clients(memo: kopf.Memo, settings: Settings) -> AzureClientsAdapter:
    """The operator's one set of Azure clients, made on first use and kept in the memo."""
    clients: AzureClientsAdapter | None = getattr(memo, "azure_clients", None)
    if clients is None:
        clients = AzureClientsAdapter(AzureOptions.from_settings(settings))
        memo.azure_clients = clients
    return clients


def _deps(memo: kopf.Memo) -> service.Dependencies:
    deps: service.Dependencies = memo.processserver
    return deps


def _spec_invalid(
    old: Mapping[str, Any], body: Mapping[str, Any], error: SpecInvalid, now: dt.datetime
) -> dict[str, Any]:
    generation = int(body.get("metadata", {}).get("generation") or 0)
    ready = Condition(ConditionType.READY, FALSE, Reason.SPEC_INVALID, str(error), generation, now)
    kept = [c for c in old.get("conditions", []) if c.get("type") != ConditionType.READY]
    return {**old, "observedGeneration": generation, "conditions": [ready.to_dict(), *kept]}


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register the ProcessServer handlers on ``registry``."""

    async def open_clients(memo: kopf.Memo, **_: Any) -> None:
        kube = KubeReads()
        memo.processserver_kube = kube
        memo.processserver_health = health = HealthClient(settings.process_server_timeout)
        memo.processserver = service.Dependencies(
            azure=azure_clients(memo, settings),
            health=health,
            secrets=kube,
            users=kube,
            process_server_port=settings.process_server_port,
        )

    async def close_clients(memo: kopf.Memo, **_: Any) -> None:
        health: HealthClient | None = getattr(memo, "processserver_health", None)
        if health is not None:
            await health.close()
        kube: KubeReads | None = getattr(memo, "processserver_kube", None)
        if kube is not None:
            kube.close()
        clients: AzureClientsAdapter | None = getattr(memo, "azure_clients", None)
        if clients is not None:
            await clients.close()
            memo.azure_clients = None

    async def reconcile_processserver(
        body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
    ) -> None:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return  # the deletion handler owns the object now
        now = _now()
        old = dict(body.get("status") or {})
        with kopf_errors():
            try:
                outcome = await service.reconcile(processserver.parse(body), _deps(memo), now)
            except SpecInvalid as exc:
                patch.status.update(merge_patch(old, _spec_invalid(old, body, exc, now)))
                raise
        patch.status.update(merge_patch(old, outcome.status.to_dict()))

    async def remove_processserver_vm(
        body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
    ) -> None:
        now = _now()
        old = dict(body.get("status") or {})
        with kopf_errors():
            outcome = await service.remove(processserver.parse(body), _deps(memo), now)
            patch.status.update(merge_patch(old, outcome.status.to_dict()))
            if not outcome.removed:
                deployed = next(
                    (c for c in outcome.status.conditions if c.type == ConditionType.DEPLOYED),
                    None,
                )
                raise Waiting(
                    deployed.message if deployed is not None else "deleting the VM",
                    delay=outcome.retry_after or 30.0,
                )

    kopf.on.startup(registry=registry, id="processserver-clients")(open_clients)
    kopf.on.cleanup(registry=registry, id="processserver-clients")(close_clients)
    routing.route(registry, settings, PROCESS_SERVER, reconcile_processserver)
    kopf.on.delete(
        GROUP,
        VERSION,
        PROCESS_SERVER.plural,
        id="remove-vm",
        registry=registry,
        when=lambda spec, **_: bool(spec.get("deploy")),
    )(remove_processserver_vm)
