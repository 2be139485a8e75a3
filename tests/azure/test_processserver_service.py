"""The ProcessServer service pass by pass, against the emulator (Secrets from the test bed's
API server): Azure's faults land in the ``Deployed`` condition, one write per pass, and a
creation Azure refused is not retried for the same generation."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter
from failback.adapters.kubernetes import KubeReads
from failback.adapters.processserver.client import HealthClient
from failback.api import processserver as api
from failback.api.conditions import find_condition
from failback.services import processserver as service
from testbed.azure.process import AzureEmulator
from testbed.pki import Pki

from .conftest import RG
from .operator_harness import Kube
from .test_processserver_controller import azure_spec

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
async def deps(
    emulator: AzureEmulator,
    clients: AzureClientsAdapter,
    k8s_client: Any,
    namespace: str,
    testbed_pki: Pki,
) -> AsyncIterator[service.Dependencies]:
    kube = Kube(k8s_client, namespace)
    kube.tls_secret("ps-mtls", testbed_pki)
    kube.secret(
        "azure-creds",
        {
            "tenantId": emulator.tenant_id,
            "clientId": emulator.client_id,
            "clientSecret": emulator.client_secret,
        },
    )
    kube.secret(
        "azure-wrong",
        {"tenantId": emulator.tenant_id, "clientId": emulator.client_id, "clientSecret": "no"},
    )
    reads = KubeReads(k8s_client)
    health = HealthClient(timeout=2.0)
    yield service.Dependencies(azure=clients, health=health, secrets=reads, users=reads)
    await health.close()


def process_server(emu: AzureEmulator, namespace: str, secret: str = "azure-creds") -> Any:
    spec = azure_spec(emu)
    spec["azure"]["credentialsSecretRef"] = {"name": secret}
    body = {
        "metadata": {
            "name": "ps-svc",
            "namespace": namespace,
            "uid": "0f1e2d3c-4b5a",
            "generation": 1,
        },
        "spec": spec,
    }
    return api.parse(body)


def deployed(status: api.ProcessServerStatus) -> tuple[str, str]:
    cond = find_condition(status.conditions, "Deployed")
    assert cond is not None
    return str(cond.status), cond.reason


async def test_a_throttled_creation_waits_for_retry_after_then_goes_on(
    emulator: AzureEmulator, deps: service.Dependencies, namespace: str
) -> None:
    ps = process_server(emulator, namespace)
    emulator.control.add_fault("error", route="arm_write", status=429, retry_after=90, times=5)
    first = await service.reconcile(ps, deps, NOW)
    assert deployed(first.status) == ("Unknown", "AzureThrottled")
    assert first.retry_after == 90
    assert first.status.operations == ()
    emulator.control.clear_faults()
    # The bucket of this principal holds writes for the Retry-After Azure gave: a new
    # client (another operator start) goes on.
    fresh = AzureClientsAdapter(deps.azure.options)  # type: ignore[attr-defined]
    try:
        deps2 = dataclasses.replace(deps, azure=fresh)
        second = await service.reconcile(dataclasses.replace(ps, status=first.status), deps2, NOW)
        assert deployed(second.status) == ("Unknown", "Deploying")
        assert [op.name for op in second.status.operations] == ["create-vm"]
        assert second.status.phase == api.ProcessServerPhase.DEPLOYING
        status = second.status
        for _ in range(100):
            outcome = await service.reconcile(dataclasses.replace(ps, status=status), deps2, NOW)
            status = outcome.status
            if deployed(status) == ("True", "VMDeployed"):
                break
        assert deployed(status) == ("True", "VMDeployed")
        assert status.operations == ()
        assert status.vm_id is not None
        assert status.vm_id.endswith(f"/virtualMachines/{service.vm_name(ps)}")
    finally:
        await fresh.close()
    writes = emulator.control.stats()["arm_writes_by_operation"]
    # One throttled (a 90 s Retry-After is not slept through inside a pass), one accepted.
    assert writes == {"virtualMachines/createOrUpdate": 2}, writes


async def test_a_refused_creation_is_not_retried_for_the_same_generation(
    emulator: AzureEmulator, deps: service.Dependencies, namespace: str
) -> None:
    ps = process_server(emulator, namespace)
    emulator.control.add_fault(
        "fail_operation",
        path="/virtualMachines/",
        code="SkuNotAvailable",
        message="Standard_D8s_v5 is not available in westeurope",
    )
    status = (await service.reconcile(ps, deps, NOW)).status
    for _ in range(100):
        status = (await service.reconcile(dataclasses.replace(ps, status=status), deps, NOW)).status
        if deployed(status)[0] != "Unknown":
            break
    assert deployed(status) == ("False", "DeploymentFailed")
    cond = find_condition(status.conditions, "Deployed")
    assert cond is not None
    assert "SkuNotAvailable" in cond.message or "not available" in cond.message
    emulator.control.reset_stats()
    again = await service.reconcile(dataclasses.replace(ps, status=status), deps, NOW)
    assert deployed(again.status) == ("False", "DeploymentFailed")
    assert emulator.control.stats()["requests"]["arm_write"] == 0
    # The failed VM is left as Azure left it: delete the ProcessServer, or fix and retry.
    ready = find_condition(again.status.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "DeploymentFailed"


async def test_a_refused_identity_is_a_false_condition_naming_entra_id(
    emulator: AzureEmulator, deps: service.Dependencies, namespace: str
) -> None:
    ps = process_server(emulator, namespace, secret="azure-wrong")
    outcome = await service.reconcile(ps, deps, NOW)
    assert deployed(outcome.status) == ("False", "AzureAuthenticationFailed")
    cond = find_condition(outcome.status.conditions, "Deployed")
    assert cond is not None
    assert "7000215" in cond.message
    assert emulator.control.stats()["requests"]["arm_write"] == 0
    refs = find_condition(outcome.status.conditions, "ReferencesResolved")
    assert refs is not None
    assert refs.status == "True"


async def test_a_vm_not_created_by_the_operator_is_not_adopted(
    emulator: AzureEmulator, deps: service.Dependencies, namespace: str
) -> None:
    ps = process_server(emulator, namespace)
    emulator.control.create_vm(RG, service.vm_name(ps))  # same name, no tag
    outcome = await service.reconcile(ps, deps, NOW)
    assert deployed(outcome.status) == ("False", "DeploymentFailed")
    cond = find_condition(outcome.status.conditions, "Deployed")
    assert cond is not None
    assert "does not adopt a VM it did not create" in cond.message
    assert emulator.control.stats()["requests"]["arm_write"] == 0
