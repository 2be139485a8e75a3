"""The Kubernetes reads the services make besides their own object (which kopf hands in).

The operator may ``get`` a Secret by name, never list or watch Secrets; it may list
the four failback.io kinds in the namespaces it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class SecretReader(Protocol):
    """Reads one Secret by name (``get``; the operator may not list or watch Secrets)."""

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The decoded ``data`` of the Secret, or None when it does not exist."""
        ...


class ProcessServerUsers(Protocol):
    """Which ProtectedVMs name a process server in ``spec.processServerRef``."""

    async def users(self, namespace: str, process_server: str) -> tuple[str, ...]:
        """Their names, sorted."""
        ...


class ObjectReader(Protocol):
    """Reads the product's own objects (the four failback.io kinds) in one namespace."""

    async def get(self, namespace: str, plural: str, name: str) -> Mapping[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    async def list(self, namespace: str, plural: str) -> list[Mapping[str, Any]]:
        """Every object of that kind in ``namespace``."""
        ...
