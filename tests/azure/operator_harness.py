"""Run the ProcessServer controller in this test's event loop, against the test bed's
real API server and the Azure emulator, and read what it wrote.

Only the ProcessServer controller is registered (the other kinds have their own
tests). Kubernetes calls of the tests run in threads, so they never stall the operator
sharing the loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import kopf
from kubernetes import client

from failback.api.constants import GROUP, PROCESS_SERVER, PROTECTED_VM, VERSION
from failback.controllers import processserver, resources
from failback.controllers.runtime import kopf_settings
from failback.settings import Settings
from testbed.azure.process import AzureEmulator
from testbed.pki import Pki

T = TypeVar("T")


def operator_settings(namespace: str, emu: AzureEmulator, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "namespaces": (namespace,),
        "standalone": True,
        "recheck_interval": 1.0,
        "recheck_idle": 0.5,
        "azure_arm_endpoint": emu.arm_url,
        "azure_authority": emu.authority,
        "azure_ca_file": str(emu.ca_file),
        "azure_federated_token_file": None,
        "azure_poll_interval": 0.1,
        "process_server_timeout": 3.0,
        **changes,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_operator(settings: Settings, kubeconfig: Path) -> AsyncIterator[None]:
    """The ProcessServer controller, until the block ends (then stopped cleanly)."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    processserver.register(registry, settings)
    stop = asyncio.Event()
    ks = kopf_settings(settings)
    ks.peering.mandatory = False
    memo = resources.memo(settings)
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=ks,
            namespaces=list(settings.namespaces),
            clusterwide=False,
            standalone=True,
            memo=memo,
            stop_flag=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await resources.close(memo)


async def eventually(
    what: str, check: Callable[[], T | None], within: float = 60.0, every: float = 0.25
) -> T:
    """The first truthy result of ``check()`` (run in a thread) within ``within`` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"{what} did not happen within {within:g} s; last: {last!r}")


class Kube:
    """The tests' side of the API server, as the admin."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def secret(self, name: str, data: dict[str, str], type_: str = "Opaque") -> None:
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type=type_,
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        )
        self.core.create_namespaced_secret(self.namespace, body)

    def tls_secret(self, name: str, pki: Pki, common_name: str = "failback-operator") -> None:
        pair = pki.client(name, common_name)
        self.secret(
            name,
            {
                "tls.crt": pair.cert.read_text(),
                "tls.key": pair.key.read_text(),
                "ca.crt": pki.ca_file.read_text(),
            },
            "kubernetes.io/tls",
        )

    def create(self, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        kind = {PROCESS_SERVER.plural: PROCESS_SERVER.kind, PROTECTED_VM.plural: PROTECTED_VM.kind}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind[plural],
            "metadata": {"name": name},
            "spec": spec,
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return created

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, {"spec": spec}
        )

    def events(self) -> list[str]:
        found = self.core.list_namespaced_event(self.namespace).items
        return [f"{e.reason} {e.message}" for e in found]


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            found: dict[str, Any] = cond
            return found
    return None
