"""The operator's settings: one frozen, documented dataclass, built once at startup.

``failback operator`` builds it from its command line (`cli.py`) and hands it to the
controllers through kopf's memo. Nothing reads the environment at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PEERING = "failback-operator"
"""Name of the KopfPeering object that keeps a second operator replica idle."""


@dataclass(frozen=True)
class Settings:
    """How one operator process runs."""

    namespaces: tuple[str, ...]
    """The namespaces whose custom resources this operator serves. Never empty: the
    operator is granted Secrets only in the namespaces it serves (least privilege)."""

    peering: str = DEFAULT_PEERING
    """Name of the namespaced KopfPeering object in each served namespace. Two operators
    with the same peering name never act at once: the one with the lower priority pauses."""

    standalone: bool = False
    """Run without peering (development only): nothing then stops a second replica."""

    priority: int = 0
    """Peering priority; the highest-priority live operator is the one that acts."""

    liveness_endpoint: str | None = None
    """``http://host:port/path`` for kopf's liveness probe server, or None for none."""

    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (``/metrics``); None: not served."""

    recheck_interval: float = 60.0
    """Seconds between two level-based re-checks of an object that did not change."""

    plan_interval: float = 5.0
    """Seconds between two passes of a FailbackPlan (a run's steps are observed this often)."""

    replication_interval: float = 300.0
    """Seconds between two replication cycles of a VM (capped at a third of its
    spec.policy.rpoThreshold, so one missed cycle does not breach it)."""

    recheck_idle: float = 10.0
    """Seconds an object must stay unchanged before its timer fires (no double work right
    after a change was just reconciled)."""

    instance: str = "failback-operator"
    """This replica's name in the Events it posts (the pod name in a cluster)."""

    watch_server_timeout: int = 300
    """Seconds the API server keeps one watch request open before ending it cleanly."""

    watch_client_timeout: int = 330
    """Seconds after which the client gives up a watch the server forgot to end."""

    connect_timeout: float = 10.0
    """Seconds to connect to the API server before counting it unreachable."""

    azure_arm_endpoint: str | None = None
    """Azure Resource Manager's URL; None is public Azure (``https://management.azure.com``).
    The test bed points it at its emulator."""

    azure_authority: str | None = None
    """Microsoft Entra ID's host for sign-in; None is public Azure's."""

    azure_ca_file: str | None = None
    """A CA bundle trusted for Azure instead of the system's (the test bed's CA); None: the
    system's."""

    azure_federated_token_file: str | None = "/var/run/secrets/azure/tokens/azure-identity-token"  # noqa: S105 - a path
    """The projected service-account token exchanged for workload identity (where the
    Azure workload identity webhook mounts it)."""

    azure_poll_interval: float = 15.0
    """Seconds between two polls of an Azure long-running operation when Azure does not
    say (it usually does, with Retry-After)."""

    azure_connect_timeout: float = 10.0
    """Seconds to connect to Azure before counting the attempt failed."""

    azure_read_timeout: float = 60.0
    """Seconds to wait for an Azure answer before counting the attempt failed."""

    azure_retries: int = 3
    """Attempts after the first for a transient Azure fault (429, 5xx, timeout) within one
    call; afterwards the reconcile is retried later."""

    azure_max_inline_wait: float = 10.0
    """The longest Retry-After (or client-side pacing wait) slept inside a handler; a
    longer one ends the pass and the object is retried after it."""

    azure_writes_per_hour: float = 1000.0
    """Client-side pace of ARM writes per principal and subscription: below Azure's legacy
    1,200 per hour, so the operator is not the one that gets throttled."""

    azure_write_burst: int = 100
    """ARM writes that may go at once before the pace applies."""

    azure_reads_per_hour: float = 10000.0
    """Client-side pace of ARM reads (and polls) per principal and subscription (Azure:
    12,000)."""

    azure_read_burst: int = 1000
    """ARM reads that may go at once before the pace applies."""

    process_server_timeout: float = 10.0
    """Seconds to wait for a process server's health answer."""

    process_server_port: int = 9443
    """The control port of the process servers the operator deploys in Azure: their
    endpoint is ``https://<private address of the VM>:<this>`` unless spec.endpoint says."""

    vsphere_max_concurrency: int = 8
    """vSphere calls in flight at once per vCenter (sessions are shared per server and user)."""

    vsphere_inventory_max_age: float = 20.0
    """Seconds one PropertyCollector read of a vCenter's inventory serves every object
    checked against it: one read per pass instead of one per object."""

    vsphere_session_check_interval: float = 60.0
    """Seconds a cached vCenter session may stay idle before it is checked alive again."""

    vsphere_timeout: float = 60.0
    """Seconds one vCenter request may take before vCenter counts as unreachable."""

    vsphere_idle_logout: float = 600.0
    """Seconds after which a vCenter session no object used (its Secret was rotated or
    deleted) is logged out."""

    def __post_init__(self) -> None:
        if not self.namespaces:
            raise ValueError("at least one namespace must be served (--namespace)")
        if self.recheck_interval <= 0:
            raise ValueError("recheck_interval must be positive")
