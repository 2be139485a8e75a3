"""The Kubernetes reads of the services, with the official client (it blocks, so each
call runs in a thread): one Secret by name (``get`` only: the operator may neither list
nor watch Secrets), and the ProtectedVMs of a namespace (``list``, granted by the
operator's Role) that name a process server.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from failback.api.constants import GROUP, PROTECTED_VM, VERSION
from failback.errors import Retryable


def api_client() -> Any:
    """The pod's ServiceAccount in a cluster, else ``$KUBECONFIG`` as it is now (the
    client's own default is read once, when it is imported)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG")
        )


class KubeReads:
    """Implements ``ports.kubernetes.SecretReader``, ``ObjectReader`` and
    ``ProcessServerUsers``."""

    def __init__(self, api: Any | None = None) -> None:
        self._api = api

    def _client(self) -> Any:
        if self._api is None:
            self._api = api_client()
        return self._api

    def _read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            secret = client.CoreV1Api(self._client()).read_namespaced_secret(name, namespace)
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

    def _get(self, namespace: str, plural: str, name: str) -> Mapping[str, Any] | None:
        try:
            found = client.CustomObjectsApi(self._client()).get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise Retryable(
                f"reading {plural} {namespace}/{name} failed: HTTP {exc.status} {exc.reason}"
            ) from None
        return found if isinstance(found, Mapping) else None

    async def get(self, namespace: str, plural: str, name: str) -> Mapping[str, Any] | None:
        return await asyncio.to_thread(self._get, namespace, plural, name)

    def _patch_status(
        self, namespace: str, plural: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        try:
            client.CustomObjectsApi(self._client()).patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": dict(patch)}
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing to report on
            raise Retryable(
                f"writing the status of {plural} {namespace}/{name} failed: HTTP {exc.status} "
                f"{exc.reason}"
            ) from None

    async def patch_status(
        self, namespace: str, plural: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """Merge ``patch`` into the object's status (its status subresource)."""
        await asyncio.to_thread(self._patch_status, namespace, plural, name, patch)

    def _list(self, namespace: str, plural: str) -> list[Mapping[str, Any]]:
        try:
            listed = client.CustomObjectsApi(self._client()).list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural
            )
        except client.ApiException as exc:
            raise Retryable(
                f"listing {plural} of {namespace} failed: HTTP {exc.status} {exc.reason}"
            ) from None
        items: list[Mapping[str, Any]] = listed.get("items", []) if isinstance(listed, dict) else []
        return items

    async def list(self, namespace: str, plural: str) -> list[Mapping[str, Any]]:
        return await asyncio.to_thread(self._list, namespace, plural)

    def _users(self, namespace: str, process_server: str) -> tuple[str, ...]:
        return tuple(
            sorted(
                item["metadata"]["name"]
                for item in self._list(namespace, PROTECTED_VM.plural)
                if ((item.get("spec") or {}).get("processServerRef") or {}).get("name")
                == process_server
            )
        )

    async def users(self, namespace: str, process_server: str) -> tuple[str, ...]:
        return await asyncio.to_thread(self._users, namespace, process_server)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
