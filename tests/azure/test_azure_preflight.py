"""The Azure side of a ProtectedVM's preflight, against the emulator (and the test bed's
API server for the credentials Secret). ``now`` is the emulator's clock: its time runs 60
times faster than real time."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter
from failback.adapters.kubernetes import KubeReads
from failback.api import protectedvm
from failback.api.conditions import FALSE, Condition, ConditionType, Reason
from failback.services.azure_preflight import AzurePreflight, azure_preflight
from testbed.azure.process import AzureEmulator

from .conftest import RG
from .operator_harness import Kube


@pytest.fixture
def kube_reads(k8s_client: Any, namespace: str, emulator: AzureEmulator) -> KubeReads:
    Kube(k8s_client, namespace).secret(
        "azure-creds",
        {
            "tenantId": emulator.tenant_id,
            "clientId": emulator.client_id,
            "clientSecret": emulator.client_secret,
        },
    )
    Kube(k8s_client, namespace).secret("azure-wrong", {"tenantId": emulator.tenant_id})
    return KubeReads(k8s_client)


def emulated_now(emu: AzureEmulator) -> dt.datetime:
    return dt.datetime.fromtimestamp(emu.control.clock()["now"], dt.UTC)


def protected(
    emu: AzureEmulator,
    namespace: str,
    vm: str,
    os_type: str = "Linux",
    secret: str = "azure-creds",
    conditions: tuple[Condition, ...] = (),
) -> protectedvm.ProtectedVM:
    body = {
        "metadata": {"name": vm, "namespace": namespace, "uid": "u-1", "generation": 2},
        "spec": {
            "osType": os_type,
            "azure": {
                "vmId": (
                    f"/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers"
                    f"/Microsoft.Compute/virtualMachines/{vm}"
                ),
                "credentialsSecretRef": {"name": secret},
            },
            "onPrem": {
                "vcenterSecretRef": {"name": "vcenter"},
                "originalVM": {"instanceUUID": "50321f6b-2d8c-4a95-b370-9e4c1d6a8f02"},
            },
            "masterTargetRef": {"name": "mt"},
            "processServerRef": {"name": "ps"},
        },
        "status": {"conditions": [c.to_dict() for c in conditions]},
    }
    return protectedvm.parse(body)


def agent(result: AzurePreflight) -> tuple[str, str]:
    assert result.condition.type == ConditionType.AGENT_REGISTERED
    assert result.condition.observed_generation == 2
    return str(result.condition.status), str(result.condition.reason)


async def test_a_registered_linux_vm_passes(
    emulator: AzureEmulator, clients: AzureClientsAdapter, kube_reads: KubeReads, namespace: str
) -> None:
    emulator.control.create_vm(RG, "web-01", data_disk_sizes=(1 << 20,))
    vm = protected(emulator, namespace, "web-01")
    emulator.control.reset_stats()
    result = await azure_preflight(
        vm, clients, kube_reads, emulated_now(emulator), registered_agents=[vm.spec.azure.vm_id]
    )
    assert agent(result) == ("True", Reason.CHECK_PASSED)
    assert result.references is None
    assert result.vm is not None
    assert result.vm.name == "web-01"
    stats = emulator.control.stats()
    assert stats["requests"]["arm_write"] == 0
    assert stats["requests"]["arm_read"] == 1


async def test_the_vm_must_exist_and_run_the_os_of_the_spec(
    emulator: AzureEmulator, clients: AzureClientsAdapter, kube_reads: KubeReads, namespace: str
) -> None:
    emulator.control.create_vm(RG, "sql-01", os_type="Windows")
    now = emulated_now(emulator)
    missing = await azure_preflight(
        protected(emulator, namespace, "gone"), clients, kube_reads, now
    )
    assert agent(missing) == ("False", Reason.AZURE_VM_NOT_FOUND)
    assert "/virtualMachines/gone" in missing.condition.message
    wrong_os = await azure_preflight(
        protected(emulator, namespace, "sql-01", "Linux"), clients, kube_reads, now
    )
    assert agent(wrong_os) == ("False", Reason.AZURE_OS_TYPE_MISMATCH)
    assert "set spec.osType to Windows" in wrong_os.condition.message


async def test_a_late_agent_is_waited_for_then_reported(
    emulator: AzureEmulator, clients: AzureClientsAdapter, kube_reads: KubeReads, namespace: str
) -> None:
    control = emulator.control
    control.create_vm(RG, "app-01", power_state="deallocated")
    vm = protected(emulator, namespace, "app-01")
    deallocated = await azure_preflight(
        vm, clients, kube_reads, emulated_now(emulator), registered_agents=[]
    )
    assert agent(deallocated) == ("Unknown", Reason.WAITING_FOR_AGENT_REGISTRATION)
    control.set_power_state(RG, "app-01", "running")  # it boots now
    control.advance(60)
    # The condition stays Unknown, so it keeps the time the wait began (set_condition).
    waiting = protected(emulator, namespace, "app-01", conditions=(deallocated.condition,))
    first = await azure_preflight(
        waiting, clients, kube_reads, emulated_now(emulator), registered_agents=[]
    )
    assert agent(first) == ("Unknown", Reason.WAITING_FOR_AGENT_REGISTRATION)
    # Half of what was waited, at least 30 s (the emulated clock runs on meanwhile).
    assert first.retry_after is not None
    assert 30.0 <= first.retry_after < 40.0
    assert "run for 1 minutes" in first.condition.message
    control.advance(9 * 60)
    later = await azure_preflight(
        waiting, clients, kube_reads, emulated_now(emulator), registered_agents=[]
    )
    assert agent(later) == ("Unknown", Reason.WAITING_FOR_AGENT_REGISTRATION)
    assert later.retry_after == 240.0
    control.advance(6 * 60)
    late = await azure_preflight(
        waiting, clients, kube_reads, emulated_now(emulator), registered_agents=[]
    )
    assert agent(late) == ("False", Reason.AGENT_NOT_REGISTERED)
    # A VM that has run all along, protected only now, gets its own 15 minutes.
    fresh = await azure_preflight(
        vm, clients, kube_reads, emulated_now(emulator), registered_agents=[]
    )
    assert agent(fresh) == ("Unknown", Reason.WAITING_FOR_AGENT_REGISTRATION)
    assert late.retry_after is None
    unknown = await azure_preflight(vm, clients, kube_reads, emulated_now(emulator))
    assert agent(unknown) == ("Unknown", Reason.SERVICE_CHECK_PENDING)


async def test_azure_faults_become_the_condition(
    emulator: AzureEmulator, clients: AzureClientsAdapter, kube_reads: KubeReads, namespace: str
) -> None:
    emulator.control.create_vm(RG, "db-01")
    now = emulated_now(emulator)
    judged = await azure_preflight(
        protected(emulator, namespace, "db-01"), clients, kube_reads, now, registered_agents=[]
    )
    assert agent(judged)[0] == "Unknown"
    assert judged.condition.reason == Reason.WAITING_FOR_AGENT_REGISTRATION
    decided = replace(judged.condition, status=FALSE, reason=Reason.AGENT_NOT_REGISTERED)
    emulator.control.add_fault("error", route="arm_read", status=429, retry_after=300, times=1)
    # A decided verdict on the same spec stands through a throttled read (Ready must not
    # flap while ARM paces the reads), and the next check waits as Azure asked.
    kept = await azure_preflight(
        protected(emulator, namespace, "db-01", conditions=(decided,)),
        clients,
        kube_reads,
        now,
        registered_agents=[],
    )
    assert kept.condition == decided
    assert kept.retry_after is not None
    assert 299 <= kept.retry_after <= 300
    # Nothing decided yet (or Unknown): the throttling itself is what there is to say.
    throttled = await azure_preflight(
        protected(emulator, namespace, "db-01"), clients, kube_reads, now
    )
    assert agent(throttled) == ("Unknown", Reason.AZURE_THROTTLED)
    assert throttled.retry_after is not None
    assert 290 <= throttled.retry_after <= 300
    unresolved = await azure_preflight(
        protected(emulator, namespace, "db-01", secret="azure-wrong"), clients, kube_reads, now
    )
    assert unresolved.references is not None
    assert unresolved.references.reason == Reason.SECRET_KEY_MISSING
    assert "has no key clientId" in unresolved.references.message
    assert agent(unresolved) == ("Unknown", Reason.SERVICE_CHECK_PENDING)
    missing = await azure_preflight(
        protected(emulator, namespace, "db-01", secret="nope"), clients, kube_reads, now
    )
    assert missing.references is not None
    assert missing.references.reason == Reason.SECRET_NOT_FOUND
