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

    recheck_interval: float = 60.0
    """Seconds between two level-based re-checks of an object that did not change."""

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

    def __post_init__(self) -> None:
        if not self.namespaces:
            raise ValueError("at least one namespace must be served (--namespace)")
        if self.recheck_interval <= 0:
            raise ValueError("recheck_interval must be positive")
