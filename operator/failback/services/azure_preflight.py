"""The Azure side of a ProtectedVM's preflight: read the Azure VM once, judge it
(:mod:`failback.domain.azure_preflight`), and return the ``AgentRegistered`` condition.

The ProtectedVM controller calls :func:`azure_preflight` in its reconcile and merges the
result into the VM's status: ``condition`` replaces ``AgentRegistered``, ``references``
(when set) is the ``ReferencesResolved`` verdict on ``spec.azure.credentialsSecretRef``,
and ``retry_after`` says when the next pass is worth it (R-PRE-13 waits with a growing
delay; Azure's ``Retry-After`` after a throttle). Reads only: never an Azure write.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass

from failback.api import protectedvm
from failback.api.conditions import (
    FALSE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
)
from failback.domain import azure_preflight as rules
from failback.ports.azure import (
    AzureClients,
    AzurePermanent,
    AzureRetryable,
    AzureThrottled,
    PowerState,
    VirtualMachine,
)
from failback.ports.kubernetes import SecretReader
from failback.services.processserver import Unresolved, azure_identity

_VM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AzurePreflight:
    condition: Condition
    """``AgentRegistered``: VM found, OS as spec.osType, managed disks, agent registered."""
    references: Condition | None
    """``ReferencesResolved`` False when the Azure credentials Secret is missing or lacks a
    key; None when it resolved (or workload identity is used)."""
    retry_after: float | None
    """Seconds until another check is worth it; None: the next re-check will do."""
    vm: VirtualMachine | None
    """The Azure VM as read (None when not found or not read)."""


def facts_of(vm: VirtualMachine) -> rules.AzureVMFacts:
    unmanaged = tuple(d.name or "?" for d in vm.disks if d.id is None or d.vhd_uri is not None)
    running = vm.power_state == PowerState.RUNNING
    return rules.AzureVMFacts(
        os_type=vm.os_type,
        unmanaged_disks=unmanaged,
        power_state=str(vm.power_state),
        running_since=vm.power_since if running else None,
    )


async def azure_preflight(
    vm: protectedvm.ProtectedVM,
    clients: AzureClients,
    secrets: SecretReader,
    now: dt.datetime,
    *,
    registered_agents: Collection[str] | None = None,
) -> AzurePreflight:
    """The Azure-side checks of ``vm``.

    ``registered_agents`` are the lower-case resource IDs of the Azure VMs whose agent
    registered with the VM's process server (from its health report,
    ``HealthReport.registered_agents``); None when the process server could not be asked.
    """
    gen = vm.meta.generation
    azure = vm.spec.azure
    previous = find_condition(vm.status.conditions, ConditionType.AGENT_REGISTERED)

    def cond(status: ConditionStatus, reason: str, message: str) -> Condition:
        return Condition(ConditionType.AGENT_REGISTERED, status, reason, message, gen, now)

    parsed = _VM_ID.match(azure.vm_id)
    if parsed is None:
        message = f"spec.azure.vmId {azure.vm_id} is not a virtual machine's resource ID."
        return AzurePreflight(cond(FALSE, Reason.AZURE_VM_NOT_FOUND, message), None, None, None)
    workload = azure.workload_identity
    try:
        identity = await azure_identity(
            secrets,
            vm.meta.namespace,
            "spec.azure.credentialsSecretRef",
            azure.credentials_secret_ref.name if azure.credentials_secret_ref else None,
            (workload.tenant_id, workload.client_id) if workload else None,
        )
    except Unresolved as problem:
        references = Condition(
            ConditionType.REFERENCES_RESOLVED, FALSE, problem.reason, str(problem), gen, now
        )
        pending = cond(
            UNKNOWN,
            Reason.SERVICE_CHECK_PENDING,
            "The Azure VM is checked once spec.azure.credentialsSecretRef resolves.",
        )
        return AzurePreflight(pending, references, None, None)
    try:
        compute = await clients.compute(identity, parsed["sub"])
        found = await compute.get_vm(parsed["rg"], parsed["name"])
    except AzureThrottled as exc:
        if (
            previous is not None
            and previous.status != UNKNOWN
            and previous.observed_generation == gen
        ):
            # Azure asks to slow down: a read refused for pacing says nothing new, so the
            # last verdict on this spec stands (Ready does not flap under ARM throttling).
            return AzurePreflight(previous, None, exc.delay, None)
        return AzurePreflight(cond(UNKNOWN, exc.reason, str(exc)), None, exc.delay, None)
    except AzureRetryable as exc:
        return AzurePreflight(cond(UNKNOWN, exc.reason, str(exc)), None, exc.delay, None)
    except AzurePermanent as exc:
        return AzurePreflight(cond(FALSE, exc.reason, str(exc)), None, None, None)
    registered = None
    if registered_agents is not None:
        registered = azure.vm_id.lower() in {a.lower() for a in registered_agents}
    result = rules.judge(
        azure.vm_id,
        facts_of(found) if found is not None else None,
        vm.spec.os_type,
        registered,
        previous,
        gen,
        now,
    )
    return AzurePreflight(result.condition, None, result.retry_after, found)
