"""Reading a Secret by name with the official Kubernetes client (``get`` only: the
operator may neither list nor watch Secrets). The client blocks, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from failback.errors import Retryable
from failback.ports.vsphere import Secrets


def api_client() -> Any:
    """The pod's ServiceAccount in a cluster, else ``$KUBECONFIG`` (as kopf logs in)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]


class KubernetesSecrets:
    """Implements ``ports.vsphere.Secrets``."""

    def __init__(self, api: Any | None = None) -> None:
        self._api = api

    def _read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        if self._api is None:
            self._api = api_client()
        try:
            secret = client.CoreV1Api(self._api).read_namespaced_secret(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise Retryable(
                f"reading Secret {namespace}/{name} failed: HTTP {exc.status} {exc.reason}"
            ) from None
        data = secret.data or {}
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return await asyncio.to_thread(self._read, namespace, name)


def _implements(secrets: KubernetesSecrets) -> Secrets:
    """Never called: mypy checks here that the class implements the port."""
    return secrets
