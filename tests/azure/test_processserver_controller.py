"""The ProcessServer controller on the real API server: an on-premises process server
registered and probed over mutual TLS (a real HTTPS server speaking the health contract),
and a process server deployed in the Azure emulator, resumed after a restart without a
second write, kept while a ProtectedVM uses it and deleted with its object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter
from failback.api import processserver
from failback.api.constants import PROCESS_SERVER, PROTECTED_VM
from failback.services.processserver import TAG_UID, vm_name
from testbed.azure.process import AzureEmulator
from testbed.kube import Kube as BedKube
from testbed.leaks import LeakGuard
from testbed.pki import Pki
from testbed.procs import free_port

from .conftest import RG, identity, options
from .operator_harness import Kube, condition, eventually, operator_settings, running_operator
from .psserver import ProcessServerStub

PS = PROCESS_SERVER.plural


@pytest.fixture
def kube_api(k8s_client: Any, namespace: str, crds_installed: list[str]) -> Kube:
    return Kube(k8s_client, namespace)


@pytest.fixture
async def ps_server(testbed_pki: Pki) -> AsyncIterator[ProcessServerStub]:
    server = ProcessServerStub(testbed_pki)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def kubeconfig(kube: BedKube, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    return Path(kube.kubeconfig)


def on_prem_spec(endpoint: str) -> dict[str, Any]:
    return {
        "location": "OnPrem",
        "connectivity": "ExpressRoute",
        "endpoint": endpoint,
        "tlsSecretRef": {"name": "ps-mtls"},
    }


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    obj = kube.get(PS, name)
    assert obj is not None
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def test_an_on_prem_process_server_is_registered_and_its_health_followed(
    kube_api: Kube,
    ps_server: ProcessServerStub,
    azure_emulator: AzureEmulator,
    testbed_pki: Pki,
    kubeconfig: Path,
    leak_guard: LeakGuard,
) -> None:
    kube_api.tls_secret("ps-mtls", testbed_pki)
    tls_key = testbed_pki.directory.joinpath("ps-mtls.key").read_text()
    leak_guard.secrets.append(tls_key.splitlines()[1])
    settings = operator_settings(kube_api.namespace, azure_emulator)
    async with running_operator(settings, kubeconfig):
        await asyncio.to_thread(kube_api.create, PS, "ps-onprem", on_prem_spec(ps_server.endpoint))

        def ready() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-onprem"), "Ready")
            return cond if cond and cond["status"] == "True" else None

        await eventually("the process server became Ready", ready)
        status = await asyncio.to_thread(status_of, kube_api, "ps-onprem")
        assert status["phase"] == "Ready"
        assert status["endpoint"] == ps_server.endpoint
        assert status["version"] == "0.1.0"
        assert status["cpuPercent"] == 35
        assert status["cacheFreePercent"] == 70
        assert status["lastHeartbeat"]
        reasons = {c["type"]: c["reason"] for c in status["conditions"]}
        assert reasons == {
            "Ready": "AllChecksPassed",
            "ReferencesResolved": "CheckPassed",
            "Reachable": "Connected",
            "Heartbeat": "HeartbeatReceived",
            "Healthy": "WithinThresholds",
            "ControlPlaneReachable": "Connected",
        }
        assert "failback-operator" in ps_server.client_subjects  # mutual TLS it was

        # CPU above 95 %: critical; cache below 30 %: a warning on top.
        ps_server.health = {**ps_server.health, "cpuPercent": 97, "cacheFreePercent": 28}

        def critical() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-onprem"), "Healthy")
            return cond if cond and cond["reason"] == "ThresholdCritical" else None

        healthy = await eventually("Healthy turned critical", critical)
        assert healthy["status"] == "False"
        assert "CPU 97 % (critical above 95 %)" in healthy["message"]
        assert "cache free space 28 % (warning below 30 %)" in healthy["message"]
        assert (await asyncio.to_thread(status_of, kube_api, "ps-onprem"))["phase"] == "Degraded"

        # The PS loses the Kubernetes API (R-PRE-12).
        ps_server.health = {
            **ps_server.health,
            "cpuPercent": 10,
            "cacheFreePercent": 90,
            "controlPlane": {"reachable": False, "error": "dial tcp 10.0.0.1:443: i/o timeout"},
        }

        def plane_lost() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-onprem"), "ControlPlaneReachable")
            return cond if cond and cond["status"] == "False" else None

        plane = await eventually("ControlPlaneReachable turned False", plane_lost)
        assert plane["reason"] == "ControlPlaneUnreachable"
        assert "i/o timeout" in plane["message"]

        # The service goes away: unreachable, and the last heartbeat is kept.
        await ps_server.stop()

        def unreachable() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-onprem"), "Reachable")
            return cond if cond and cond["status"] == "False" else None

        gone = await eventually("Reachable turned False", unreachable)
        assert gone["reason"] == "ConnectionFailed"
        status = await asyncio.to_thread(status_of, kube_api, "ps-onprem")
        assert status["phase"] == "Unreachable"
        assert status["lastHeartbeat"]
        assert condition({"status": status}, "Heartbeat")["reason"] == "HeartbeatReceived"  # type: ignore[index]
    events = await asyncio.to_thread(kube_api.events)
    for text in events:
        assert tls_key.splitlines()[1] not in text


async def test_a_certificate_from_another_ca_is_refused(
    kube_api: Kube,
    azure_emulator: AzureEmulator,
    testbed_pki: Pki,
    tmp_path: Path,
    kubeconfig: Path,
) -> None:
    stranger = ProcessServerStub(Pki(tmp_path / "other-ca"), "stranger")
    await stranger.start()
    kube_api.tls_secret("ps-mtls", testbed_pki)
    settings = operator_settings(kube_api.namespace, azure_emulator)
    try:
        async with running_operator(settings, kubeconfig):
            await asyncio.to_thread(
                kube_api.create, PS, "ps-stranger", on_prem_spec(stranger.endpoint)
            )

            def refused() -> dict[str, Any] | None:
                cond = condition(kube_api.get(PS, "ps-stranger"), "Reachable")
                return cond if cond and cond["status"] == "False" else None

            cond = await eventually("Reachable turned False", refused)
            assert cond["reason"] == "TLSVerificationFailed"
            assert "ca.crt of spec.tlsSecretRef" in cond["message"]
            assert stranger.requests == 0
    finally:
        await stranger.stop()


async def test_a_missing_tls_secret_is_reported_and_nothing_is_probed(
    kube_api: Kube, ps_server: ProcessServerStub, azure_emulator: AzureEmulator, kubeconfig: Path
) -> None:
    settings = operator_settings(kube_api.namespace, azure_emulator)
    async with running_operator(settings, kubeconfig):
        await asyncio.to_thread(
            kube_api.create, PS, "ps-nosecret", on_prem_spec(ps_server.endpoint)
        )

        def unresolved() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-nosecret"), "ReferencesResolved")
            return cond if cond and cond["status"] == "False" else None

        cond = await eventually("ReferencesResolved turned False", unresolved)
        assert cond["reason"] == "SecretNotFound"
        assert cond["message"] == (
            f"Secret ps-mtls (spec.tlsSecretRef) does not exist in namespace "
            f"{kube_api.namespace}: create it or correct the name"
        )
        ready = condition(await asyncio.to_thread(kube_api.get, PS, "ps-nosecret"), "Ready")
        assert ready is not None
        assert ready["status"] == "False"
    assert ps_server.requests == 0


# ------------------------------------------------------------------ deployed in Azure


def azure_spec(emu: AzureEmulator) -> dict[str, Any]:
    sub = emu.subscription_id
    return {
        "location": "Azure",
        "connectivity": "S2SVPN",
        "tlsSecretRef": {"name": "ps-mtls"},
        "deploy": True,
        "azure": {
            "subscriptionId": sub,
            "resourceGroup": RG,
            "region": "westeurope",
            "subnetId": (
                f"/subscriptions/{sub}/resourceGroups/rg-net/providers/Microsoft.Network"
                "/virtualNetworks/vnet-dr/subnets/snet-replication"
            ),
            "vmSize": "Standard_D8s_v5",
            "image": {
                "publisher": "Canonical",
                "offer": "ubuntu-24_04-lts",
                "sku": "server",
                "version": "latest",
            },
            "credentialsSecretRef": {"name": "azure-creds"},
        },
    }


def protected_vm_spec(emu: AzureEmulator, process_server: str) -> dict[str, Any]:
    return {
        "osType": "Linux",
        "azure": {
            "vmId": (
                f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers"
                "/Microsoft.Compute/virtualMachines/web-01"
            ),
            "credentialsSecretRef": {"name": "azure-creds"},
        },
        "onPrem": {
            "vcenterSecretRef": {"name": "vcenter"},
            "failbackLocation": "Original",
            "originalVM": {"instanceUUID": "50321f6b-2d8c-4a95-b370-9e4c1d6a8f02"},
        },
        "masterTargetRef": {"name": "mt-linux-01"},
        "processServerRef": {"name": process_server},
    }


@pytest.fixture
async def vm_service(testbed_pki: Pki) -> AsyncIterator[ProcessServerStub]:
    """The deployed VM's service: the emulator gives the VM's NIC 127.0.0.4 (loopback, like
    everything on the test bed)."""
    server = ProcessServerStub(testbed_pki, "ps-vm", host="127.0.0.4", port=free_port())
    await server.start()
    yield server
    await server.stop()


async def test_a_deployed_process_server_survives_a_restart_and_is_deleted_when_unused(
    kube_api: Kube,
    emulator: AzureEmulator,
    vm_service: ProcessServerStub,
    testbed_pki: Pki,
    kubeconfig: Path,
    leak_guard: LeakGuard,
) -> None:
    control = emulator.control
    # 10 real seconds to create the VM: the operator is restarted in the middle.
    control.set_limits(durations={"virtualMachines/create": 600})
    kube_api.tls_secret("ps-mtls", testbed_pki)
    kube_api.secret(
        "azure-creds",
        {
            "tenantId": emulator.tenant_id,
            "clientId": emulator.client_id,
            "clientSecret": emulator.client_secret,
        },
    )
    service_port = vm_service.port
    settings = operator_settings(kube_api.namespace, emulator, process_server_port=service_port)
    control.reset_stats()

    def operation_stored() -> list[dict[str, Any]] | None:
        obj = kube_api.get(PS, "ps-azure")
        ops = ((obj or {}).get("status") or {}).get("operations") or []
        return [op for op in ops if op["name"] == "create-vm"] or None

    async with running_operator(settings, kubeconfig):
        await asyncio.to_thread(kube_api.create, PS, "ps-azure", azure_spec(emulator))
        ops = await eventually("the create operation was stored in status", operation_stored)
    assert ops[0]["kind"] == "AzureOperation"
    obj = await asyncio.to_thread(kube_api.get, PS, "ps-azure")
    assert obj is not None
    assert "failback.io/finalizer" in obj["metadata"]["finalizers"]
    deployed = condition(obj, "Deployed")
    assert deployed is not None
    assert deployed["reason"] == "Deploying"
    assert obj["status"]["phase"] == "Deploying"

    # A new operator process: it finds the token in status and only polls.
    async with running_operator(settings, kubeconfig):

        def deployed_true() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-azure"), "Deployed")
            return cond if cond and cond["status"] == "True" else None

        cond = await eventually("the VM was deployed", deployed_true, within=60)
        assert cond["reason"] == "VMDeployed"
        status = await asyncio.to_thread(status_of, kube_api, "ps-azure")
        assert "operations" not in status
        name = vm_name_of(obj)
        assert status["vmId"].endswith(f"/virtualMachines/{name}")

        # Its endpoint comes from its NIC, and its service answers there.
        def ready() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-azure"), "Ready")
            return cond if cond and cond["status"] == "True" else None

        await eventually("the deployed process server became Ready", ready)
        status = await asyncio.to_thread(status_of, kube_api, "ps-azure")
        assert status["endpoint"] == f"https://127.0.0.4:{service_port}"
        assert vm_service.requests >= 1
        stats = control.stats()
        assert stats["arm_writes_by_operation"] == {"virtualMachines/createOrUpdate": 1}, stats

        # In use: deleting the ProcessServer is refused while a ProtectedVM names it.
        await asyncio.to_thread(
            kube_api.create, PROTECTED_VM.plural, "web-01", protected_vm_spec(emulator, "ps-azure")
        )
        await asyncio.to_thread(kube_api.delete, PS, "ps-azure")

        def refused() -> dict[str, Any] | None:
            cond = condition(kube_api.get(PS, "ps-azure"), "Deployed")
            return cond if cond and cond["reason"] == "ProcessServerInUse" else None

        cond = await eventually("the deletion was refused", refused)
        assert cond["status"] == "False"
        assert "ProtectedVMs web-01 still use this ProcessServer" in cond["message"]
        ready = condition(await asyncio.to_thread(kube_api.get, PS, "ps-azure"), "Ready")
        assert ready is not None
        assert ready["reason"] == "ProcessServerInUse"
        assert (await asyncio.to_thread(status_of, kube_api, "ps-azure"))["phase"] == "Deleting"
        assert control.stats()["arm_writes_by_operation"].get("virtualMachines/delete") is None
        assert control.events(kind="vm.deleted") == []

        # Unused: the VM is deleted, then the object.
        await asyncio.to_thread(kube_api.delete, PROTECTED_VM.plural, "web-01")
        await eventually(
            "the ProcessServer was deleted",
            lambda: kube_api.get(PS, "ps-azure") is None,
            within=90,
        )
    assert [e["resource_id"].rsplit("/", 1)[1] for e in control.events(kind="vm.deleted")] == [name]
    writes = control.stats()["arm_writes_by_operation"]
    assert writes == {"virtualMachines/createOrUpdate": 1, "virtualMachines/delete": 1}, writes
    for text in await asyncio.to_thread(kube_api.events):
        assert emulator.client_secret not in text


def vm_name_of(obj: dict[str, Any]) -> str:
    return vm_name(processserver.parse(obj))


async def test_a_lost_status_finds_the_vm_again_by_its_tag(
    kube_api: Kube, emulator: AzureEmulator, testbed_pki: Pki, kubeconfig: Path
) -> None:
    kube_api.tls_secret("ps-mtls", testbed_pki)
    kube_api.secret(
        "azure-creds",
        {
            "tenantId": emulator.tenant_id,
            "clientId": emulator.client_id,
            "clientSecret": emulator.client_secret,
        },
    )
    settings = operator_settings(kube_api.namespace, emulator)
    async with running_operator(settings, kubeconfig):
        await asyncio.to_thread(kube_api.create, PS, "ps-tagged", azure_spec(emulator))

        def deployed() -> dict[str, Any] | None:
            obj = kube_api.get(PS, "ps-tagged")
            cond = condition(obj, "Deployed")
            return obj if cond and cond["status"] == "True" else None

        obj = await eventually("the VM was deployed", deployed)
    vms = [
        vm
        for vm in emulator.control.events(kind="vm.created")
        if vm["resource_id"].endswith(vm_name_of(obj))
    ]
    assert len(vms) == 1
    # Azure holds the tag; a status wiped clean (a restore from backup) finds it again.
    writes_before = emulator.control.stats()["requests"]["arm_write"]
    await asyncio.to_thread(
        kube_api.custom.patch_namespaced_custom_object_status,
        "failback.io",
        "v1alpha1",
        kube_api.namespace,
        PS,
        "ps-tagged",
        {"status": {"vmId": None, "conditions": None, "phase": None}},
    )
    async with running_operator(settings, kubeconfig):
        again = await eventually("the VM was found again", deployed)
    assert again["status"]["vmId"].endswith(vm_name_of(obj))
    assert emulator.control.stats()["requests"]["arm_write"] == writes_before
    created = await asyncio.to_thread(emulator.control.events, 0, "vm.created")
    assert len(created) == 1
    adapter = AzureClientsAdapter(options(emulator))
    try:
        az = await adapter.compute(identity(emulator), emulator.subscription_id)
        vm = await az.get_vm(RG, vm_name_of(obj))
    finally:
        await adapter.close()
    assert vm is not None
    assert vm.tags[TAG_UID] == obj["metadata"]["uid"]
    assert vm.tags["failback.io/process-server"] == f"{kube_api.namespace}/ps-tagged"
