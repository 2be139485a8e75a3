"""Running kopf: every setting chosen on purpose, and the operator's main coroutine.

kopf's defaults suit a demo, not a DR product, so each one that matters is set here:

- **finalizer** ``failback.io/finalizer`` (kopf's default names another project);
- **progress and diff-base storage** in ``failback.io/*`` annotations only: kopf's
  default also writes ``status.kopf``, which our structural status schema would prune,
  and the status belongs to the product's conditions;
- **peering** namespaced, named ``failback-operator`` and *mandatory*: a second replica
  (a rolling update gone wrong, a stuck node) pauses instead of acting twice;
- **watches** end server-side every 5 minutes, with a client-side guard just after,
  so a silently dead connection is replaced;
- **events**: only warnings and errors become Kubernetes Events, reported as
  ``failback-operator`` with this replica's name; transitions are posted explicitly;
- **no cluster-wide scanning**: the served namespaces are named and the resources are
  discovered once at startup, so the operator needs no right to list namespaces or
  watch CustomResourceDefinitions (a CRD upgrade is noticed at the next restart; a Helm
  upgrade to a new chart version rolls the Deployment, otherwise restart it);
- **login** through the official client only (in-cluster ServiceAccount, else
  ``$KUBECONFIG``), registered explicitly rather than guessed from installed packages;
- **sync handlers** (none yet; the vSphere SDK blocks) get a bounded thread pool.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import kopf

from failback.api.constants import FIELD_MANAGER, FINALIZER, GROUP
from failback.controllers import (
    failbackplan,
    mastertarget,
    metrics,
    processserver,
    protectedvm,
    resources,
)
from failback.settings import Settings

SYNC_WORKERS = 8
"""Threads for blocking SDK calls made from handlers (pyvmomi, sync Azure clients)."""


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's settings for ``settings``, every relevant one explicit."""
    ks = kopf.OperatorSettings()
    ks.persistence.finalizer = FINALIZER
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    ks.peering.name = settings.peering
    ks.peering.standalone = settings.standalone
    ks.peering.mandatory = not settings.standalone
    ks.peering.clusterwide = False
    ks.peering.priority = settings.priority
    ks.watching.server_timeout = settings.watch_server_timeout
    ks.watching.client_timeout = settings.watch_client_timeout
    ks.watching.connect_timeout = settings.connect_timeout
    ks.networking.connect_timeout = settings.connect_timeout
    ks.posting.enabled = True
    ks.posting.level = logging.WARNING
    ks.posting.reporting_component = FIELD_MANAGER
    ks.posting.reporting_instance = settings.instance
    ks.posting.event_name_prefix = "failback-"
    ks.execution.max_workers = SYNC_WORKERS
    ks.scanning.disabled = True
    return ks


def registry(settings: Settings) -> kopf.OperatorRegistry:
    """A fresh registry: how to log in, and the routed reconcile entries of every kind.

    Login is the official client's: the pod's ServiceAccount in a cluster, else the
    kubeconfig of ``$KUBECONFIG`` (the test bed, a developer's shell).
    """
    reg = kopf.OperatorRegistry()
    kopf.on.login(registry=reg)(kopf.login_via_client)
    for controller in (protectedvm, failbackplan, mastertarget, processserver):
        controller.register(reg, settings)
    return reg


async def run(settings: Settings, stop_flag: threading.Event | None = None) -> None:
    """Run the controllers until SIGTERM/SIGINT (or ``stop_flag``); return cleanly."""
    ks = kopf_settings(settings)
    memo = resources.memo(settings)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    try:
        await kopf.operator(
            registry=registry(settings),
            settings=ks,
            namespaces=settings.namespaces,
            clusterwide=False,
            standalone=settings.standalone,
            peering_name=settings.peering,
            priority=settings.priority,
            liveness_endpoint=settings.liveness_endpoint,
            memo=memo,
            stop_flag=stop_flag,
        )
    finally:
        # After kopf has stopped every handler: a cleanup activity could close the clients
        # under a timer that is still running, and that timer would log an error.
        await resources.close(memo)
        executor = ks.execution.executor
        if isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
