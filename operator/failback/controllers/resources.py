"""The clients every controller shares, kept in kopf's memo (``memo.shared``) for the
operator's lifetime.

Opened by :func:`memo` before kopf starts (kopf hands each object a shallow copy of the
memo, so what a handler adds to its copy would not be shared), closed by :func:`close`
once kopf has stopped every handler (every vCenter session logged out, every Azure
credential and HTTP session closed):

- ``kube``: the Kubernetes reads (objects of the four kinds, Secrets by name);
- ``vsphere``: the vSphere session cache, one session per vCenter and user;
- ``azure``: the Azure clients, one credential per identity;
- ``health``: the mutual-TLS client of the process servers' health API;
- ``master_targets``: the mutual-TLS client of the master target services' health API;
- ``sessions``, ``points``: the process servers' replication sessions and the master
  targets' groups and recovery points (all four over one transport: one aiohttp session,
  one SSL context per TLS Secret).
"""

from __future__ import annotations

from dataclasses import dataclass

import kopf

from failback.adapters.azure.clients import AzureClientsAdapter, AzureOptions
from failback.adapters.kubernetes import KubeReads
from failback.adapters.mastertarget.client import HealthClient as MasterTargetHealthClient
from failback.adapters.mastertarget.points import PointsClient
from failback.adapters.mtls import MutualTLS
from failback.adapters.processserver.client import HealthClient
from failback.adapters.processserver.sessions import SessionsClient
from failback.adapters.vsphere import Sessions
from failback.settings import Settings


@dataclass(frozen=True)
class Shared:
    """Everything in the memo, typed."""

    kube: KubeReads
    vsphere: Sessions
    azure: AzureClientsAdapter
    health: HealthClient
    master_targets: MasterTargetHealthClient
    sessions: SessionsClient
    points: PointsClient


def open_shared(settings: Settings) -> Shared:
    services = MutualTLS(settings.process_server_timeout)
    return Shared(
        kube=KubeReads(),
        vsphere=Sessions(
            max_concurrency=settings.vsphere_max_concurrency,
            inventory_max_age=settings.vsphere_inventory_max_age,
            check_interval=settings.vsphere_session_check_interval,
            timeout=settings.vsphere_timeout,
            idle_logout=settings.vsphere_idle_logout,
        ),
        azure=AzureClientsAdapter(AzureOptions.from_settings(settings)),
        health=HealthClient(mtls=services),
        master_targets=MasterTargetHealthClient(mtls=services),
        sessions=SessionsClient(services),
        points=PointsClient(services),
    )


def memo(settings: Settings) -> kopf.Memo:
    """kopf's root memo: the settings and the shared clients."""
    return kopf.Memo(settings=settings, shared=open_shared(settings))


def shared(memo: kopf.Memo) -> Shared:
    """The shared clients of the memo :func:`memo` made."""
    found: Shared = memo.shared
    return found


async def close(memo: kopf.Memo) -> None:
    """Close the shared clients, if any were opened."""
    found: Shared | None = getattr(memo, "shared", None)
    if found is None:
        return
    memo.shared = None  # a second close does nothing
    await found.vsphere.close()
    await found.azure.close()
    await found.health.close()
    await found.master_targets.close()  # the same transport: closing twice is harmless
    found.kube.close()
