"""Reconcile a ProcessServer: resolve its Secrets, deploy (or find again) its Azure VM,
probe its health endpoint, and return the status; remove the VM when the object goes.

One pass does at most one Azure write. A write's continuation token goes into
``status.operations`` in the status this pass returns, and the next pass resumes it from
there (``AzureCompute.poll``: reads only), so a restarted operator never starts the same
operation twice. The VM is named after the object's UID and tagged with it, so a lost
status finds it again (by tag).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

from failback.api import processserver as api
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
    set_condition,
)
from failback.domain import processserver as rules
from failback.domain.status import refresh_conditions
from failback.ports.azure import (
    AzureClients,
    AzureCompute,
    AzureIdentity,
    AzureNotFound,
    AzureOperationFailed,
    AzurePermanent,
    AzureRetryable,
    ClientCertificate,
    ClientSecret,
    OperationHandle,
    OperationKind,
    VirtualMachine,
    VMDeployment,
    WorkloadIdentity,
)
from failback.ports.kubernetes import ProcessServerUsers, SecretReader
from failback.ports.processserver import TLS_KEYS, ProcessServerClient, TLSMaterial

TAG_UID: Final = "failback.io/uid"
"""Tag holding the ProcessServer's UID on the VM the operator deployed for it."""
TAG_OWNER: Final = "failback.io/process-server"
"""Tag holding ``namespace/name`` of that ProcessServer (for people)."""
TAG_MANAGED_BY: Final = "failback.io/managed-by"
MANAGED_BY: Final = "failback-operator"
AZURE_KEYS_TEXT: Final = "tenantId, clientId, and clientSecret or clientCertificate"
ADMIN_USERNAME: Final = "failback"
POLL_AGAIN: Final = 5.0
"""Seconds before an operation in flight is worth another look."""

_OPERATIONS: Final = {
    "create-vm": OperationKind.VM_CREATE,
    "start-vm": OperationKind.VM_START,
    "delete-vm": OperationKind.VM_DELETE,
}


@dataclass(frozen=True)
class Dependencies:
    azure: AzureClients
    health: ProcessServerClient
    secrets: SecretReader
    users: ProcessServerUsers
    process_server_port: int = 9443
    """The control port of the process servers the operator deploys (R-ARCH-5)."""


@dataclass(frozen=True)
class Outcome:
    status: api.ProcessServerStatus
    retry_after: float | None = None
    """Seconds after which another pass is worth it (an operation in flight, a throttle)."""
    removed: bool = False
    """Deletion: the VM is gone; the finalizer may be removed."""


class Unresolved(Exception):
    """A Secret the spec names is missing or lacks a key; the message says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def vm_name(ps: api.ProcessServer) -> str:
    """The Azure VM's name: the object's name and the start of its UID (≤ 64, [a-z0-9-])."""
    base = re.sub(r"[^a-z0-9-]", "-", ps.meta.name.lower())[:50].strip("-")
    return f"ps-{base}-{ps.meta.uid[:8]}"


# ------------------------------------------------------------------ references


async def _secret(
    secrets: SecretReader, namespace: str, name: str, field: str, keys: tuple[str, ...], text: str
) -> dict[str, str]:
    data = await secrets.read(namespace, name)
    if data is None:
        raise Unresolved(
            Reason.SECRET_NOT_FOUND,
            f"Secret {name} ({field}) does not exist in namespace {namespace}: create it or "
            "correct the name",
        )
    for key in keys:
        if not (data.get(key) or "").strip():
            raise Unresolved(
                Reason.SECRET_KEY_MISSING,
                f"Secret {name} ({field}) has no key {key}: add it (this Secret needs {text})",
            )
    return dict(data)


async def tls_material(secrets: SecretReader, namespace: str, name: str) -> TLSMaterial:
    data = await _secret(
        secrets, namespace, name, "spec.tlsSecretRef", TLS_KEYS, ", ".join(TLS_KEYS)
    )
    return TLSMaterial(cert=data["tls.crt"], key=data["tls.key"], ca=data["ca.crt"])


async def azure_identity(
    secrets: SecretReader,
    namespace: str,
    field: str,
    secret_name: str | None,
    workload: tuple[str, str] | None,
) -> AzureIdentity:
    """The identity a spec names: a Secret's service principal, or workload identity
    (``(tenant, client)``). Shared with the ProtectedVM preflight."""
    if secret_name is None:
        assert workload is not None, "the CRD requires one of the two"
        return WorkloadIdentity(tenant_id=workload[0], client_id=workload[1])
    data = await _secret(
        secrets, namespace, secret_name, field, ("tenantId", "clientId"), AZURE_KEYS_TEXT
    )
    secret = (data.get("clientSecret") or "").strip()
    certificate = (data.get("clientCertificate") or "").strip()
    if secret:
        return ClientSecret(data["tenantId"].strip(), data["clientId"].strip(), secret)
    if certificate:
        return ClientCertificate(
            data["tenantId"].strip(), data["clientId"].strip(), certificate.encode()
        )
    raise Unresolved(
        Reason.SECRET_KEY_MISSING,
        f"Secret {secret_name} ({field}) has no key clientSecret: add it (this Secret needs "
        f"{AZURE_KEYS_TEXT})",
    )


def _condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> Condition:
    return Condition(type_, status, reason, message, generation, now)


# ------------------------------------------------------------------ the deployed VM


def _observed(vm: VirtualMachine | None) -> rules.ObservedVM | None:
    if vm is None:
        return None
    return rules.ObservedVM(vm.id, vm.provisioning_state, str(vm.power_state))


async def _find_vm(
    compute: AzureCompute, ps: api.ProcessServer, deployment: api.AzureDeployment
) -> VirtualMachine | None:
    """This ProcessServer's VM: by name (status.vmId), else by its UID tag (a lost status)."""
    name = vm_name(ps)
    found = await compute.get_vm(deployment.resource_group, name)
    if found is not None and found.tags.get(TAG_UID) == ps.meta.uid:
        return found
    tagged = await compute.find_vms_by_tag(deployment.resource_group, TAG_UID, ps.meta.uid)
    if tagged:
        return tagged[0]
    if found is not None:
        raise AzurePermanent(
            f"Azure VM {found.id} exists but is not tagged {TAG_UID}={ps.meta.uid}: the "
            "operator does not adopt a VM it did not create; delete or rename it",
            code="Conflict",
        )
    return None


def _deployment(ps: api.ProcessServer, deployment: api.AzureDeployment) -> VMDeployment:
    return VMDeployment(
        resource_group=deployment.resource_group,
        name=vm_name(ps),
        location=deployment.region,
        vm_size=deployment.vm_size,
        subnet_id=deployment.subnet_id,
        image_publisher=deployment.image.publisher,
        image_offer=deployment.image.offer,
        image_sku=deployment.image.sku,
        image_version=deployment.image.version,
        admin_username=ADMIN_USERNAME,
        tags={
            TAG_UID: ps.meta.uid,
            TAG_OWNER: f"{ps.meta.namespace}/{ps.meta.name}",
            TAG_MANAGED_BY: MANAGED_BY,
        },
    )


@dataclass
class _Azure:
    """What a pass learns and changes on the Azure side."""

    deployed: Condition | None = None
    vm_id: str | None = None
    endpoint: str | None = None
    """The deployed VM's control API, from its primary NIC's private address."""
    operations: tuple[api.Operation, ...] = ()
    retry_after: float | None = None
    removed: bool = False


def _in_flight(operations: tuple[api.Operation, ...]) -> api.Operation | None:
    return next((op for op in operations if op.name in _OPERATIONS), None)


async def _resume(
    compute: AzureCompute,
    operation: api.Operation,
    resource_group: str,
    name: str,
) -> bool:
    """Check the stored operation once; True when it ended (AzureOperationFailed if badly).

    An operation Azure no longer knows (its status monitor is gone, days later) counts as
    ended: the pass then looks at the VM itself."""
    handle = OperationHandle(_OPERATIONS[operation.name], resource_group, name, operation.id)
    try:
        return (await compute.poll(handle)).done
    except AzureNotFound:
        return True


async def _endpoint(
    compute: AzureCompute, ps: api.ProcessServer, vm: VirtualMachine, port: int
) -> str | None:
    """``https://<private address>:<port>`` of the VM; read once, then kept in status."""
    if ps.status.endpoint and ps.status.vm_id == vm.id:
        return ps.status.endpoint
    if not vm.nic_ids:
        return None
    address = await compute.private_ip(vm.nic_ids[0])
    if address is None:
        return None
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


async def _deploy(
    compute: AzureCompute,
    ps: api.ProcessServer,
    deployment: api.AzureDeployment,
    out: _Azure,
    now: dt.datetime,
    port: int,
) -> None:
    gen = ps.meta.generation
    previous = find_condition(ps.status.conditions, ConditionType.DEPLOYED)
    operation = _in_flight(out.operations)
    if operation is not None:
        try:
            done = await _resume(compute, operation, deployment.resource_group, vm_name(ps))
        except AzureOperationFailed as exc:
            out.operations = tuple(o for o in out.operations if o is not operation)
            out.deployed = _condition(
                ConditionType.DEPLOYED, FALSE, Reason.DEPLOYMENT_FAILED, str(exc), gen, now
            )
            return
        if not done:
            decision = rules.decide_deployment(None, operation.name, previous, gen, now)
            out.deployed, out.retry_after = decision.deployed, POLL_AGAIN
            return
        out.operations = tuple(o for o in out.operations if o is not operation)
    vm = await _find_vm(compute, ps, deployment)
    out.vm_id = vm.id if vm is not None else None
    decision = rules.decide_deployment(_observed(vm), None, previous, gen, now)
    out.deployed = decision.deployed
    if vm is None:
        out.endpoint = None
    elif decision.deployed.status == TRUE:
        out.endpoint = await _endpoint(compute, ps, vm, port)
    handle: OperationHandle | None = None
    if decision.step == rules.Step.CREATE:
        handle = await compute.begin_vm_create(_deployment(ps, deployment))
        name = "create-vm"
    elif decision.step == rules.Step.START:
        handle = await compute.begin_start(deployment.resource_group, vm_name(ps))
        name = "start-vm"
    elif decision.step == rules.Step.NOTHING and decision.deployed.status == UNKNOWN:
        out.retry_after = POLL_AGAIN
    if handle is not None:
        out.operations = (
            *out.operations,
            api.Operation(name, api.OperationKind.AZURE_OPERATION, handle.token, now),
        )
        out.retry_after = POLL_AGAIN


async def _remove(
    compute: AzureCompute,
    ps: api.ProcessServer,
    deployment: api.AzureDeployment,
    users: tuple[str, ...],
    out: _Azure,
    now: dt.datetime,
) -> None:
    gen = ps.meta.generation
    operation = _in_flight(out.operations)
    if users:
        # Checked again at the operator's re-check interval (nothing to poll in Azure).
        decision = rules.decide_removal(None, None, users, gen, now)
        out.deployed, out.retry_after = decision.deployed, None
        return
    if operation is not None:
        if operation.name == "delete-vm":
            try:
                done = await _resume(compute, operation, deployment.resource_group, vm_name(ps))
            except AzureOperationFailed as exc:
                out.operations = tuple(o for o in out.operations if o is not operation)
                out.deployed = _condition(
                    ConditionType.DEPLOYED, FALSE, Reason.DELETING, str(exc), gen, now
                )
                out.retry_after = 30.0
                return
            if not done:
                decision = rules.decide_removal(None, operation.name, (), gen, now)
                out.deployed, out.retry_after = decision.deployed, POLL_AGAIN
                return
        # A creation or start still in flight is superseded by the delete.
        out.operations = tuple(o for o in out.operations if o is not operation)
    vm = await _find_vm(compute, ps, deployment)
    decision = rules.decide_removal(_observed(vm), None, (), gen, now)
    out.deployed = decision.deployed
    out.vm_id = vm.id if vm is not None else None
    if decision.step == rules.Step.DELETE:
        handle = await compute.begin_vm_delete(deployment.resource_group, vm_name(ps))
        out.operations = (
            *out.operations,
            api.Operation("delete-vm", api.OperationKind.AZURE_OPERATION, handle.token, now),
        )
        out.retry_after = POLL_AGAIN
    elif decision.step == rules.Step.DONE:
        out.removed = True


def _azure_fault(
    exc: AzureRetryable | AzurePermanent, out: _Azure, generation: int, now: dt.datetime
) -> None:
    """An Azure fault in a pass: the Deployed condition says it, in Azure's words."""
    if isinstance(exc, AzureRetryable):
        out.deployed = _condition(
            ConditionType.DEPLOYED, UNKNOWN, exc.reason, str(exc), generation, now
        )
        out.retry_after = exc.delay
        return
    reason = exc.reason
    if isinstance(exc, AzureOperationFailed) or reason == Reason.AZURE_VM_NOT_FOUND:
        reason = Reason.DEPLOYMENT_FAILED
    out.deployed = _condition(ConditionType.DEPLOYED, FALSE, reason, str(exc), generation, now)


# ------------------------------------------------------------------ the passes


async def _identity_or_problem(
    deps: Dependencies, ps: api.ProcessServer
) -> tuple[AzureIdentity | None, Unresolved | None]:
    deployment = ps.spec.azure
    if not ps.spec.deploy or deployment is None:
        return None, None
    workload = deployment.workload_identity
    try:
        identity = await azure_identity(
            deps.secrets,
            ps.meta.namespace,
            "spec.azure.credentialsSecretRef",
            deployment.credentials_secret_ref.name if deployment.credentials_secret_ref else None,
            (workload.tenant_id, workload.client_id) if workload else None,
        )
    except Unresolved as problem:
        return None, problem
    return identity, None


def _finish(
    ps: api.ProcessServer,
    conditions: list[Condition],
    now: dt.datetime,
    deleting: bool,
    **fields: object,
) -> api.ProcessServerStatus:
    gen = ps.meta.generation
    refreshed = refresh_conditions(
        conditions, api.condition_types(ps.spec), api.ready_inputs(ps.spec), gen, now
    )
    return dataclasses.replace(
        ps.status,
        observed_generation=gen,
        phase=api.derive_phase(refreshed, deleting=deleting),
        conditions=tuple(refreshed),
        **fields,  # type: ignore[arg-type]
    )


async def reconcile(ps: api.ProcessServer, deps: Dependencies, now: dt.datetime) -> Outcome:
    """One level-based pass; ``SpecInvalid`` when the spec breaks R-ARCH-3."""
    spec, meta = ps.spec, ps.meta
    gen = meta.generation
    rules.check_connectivity(spec.location, spec.connectivity)
    conditions = list(ps.status.conditions)
    problems: list[Unresolved] = []
    tls: TLSMaterial | None = None
    try:
        tls = await tls_material(deps.secrets, meta.namespace, spec.tls_secret_ref.name)
    except Unresolved as problem:
        problems.append(problem)
    identity, unresolved = await _identity_or_problem(deps, ps)
    if unresolved is not None:
        problems.append(unresolved)
    if problems:
        refs = _condition(
            ConditionType.REFERENCES_RESOLVED,
            FALSE,
            problems[0].reason,
            "; ".join(str(p) for p in problems),
            gen,
            now,
        )
    else:
        refs = _condition(
            ConditionType.REFERENCES_RESOLVED,
            TRUE,
            Reason.CHECK_PASSED,
            "Every Secret the spec names exists with the keys it needs.",
            gen,
            now,
        )
    conditions = set_condition(conditions, refs)

    # Until Azure says otherwise this pass, the deployed VM's endpoint is the one known.
    known = ps.status.endpoint if spec.deploy and not spec.endpoint else None
    out = _Azure(vm_id=ps.status.vm_id, operations=ps.status.operations, endpoint=known)
    deployment = spec.azure
    if spec.deploy and deployment is not None and identity is not None:
        try:
            compute = await deps.azure.compute(identity, deployment.subscription_id)
            await _deploy(compute, ps, deployment, out, now, deps.process_server_port)
        except (AzureRetryable, AzurePermanent) as exc:
            _azure_fault(exc, out, gen, now)
        if out.deployed is not None:
            conditions = set_condition(conditions, out.deployed)

    endpoint = spec.endpoint or out.endpoint
    probe = None
    if endpoint is not None and tls is not None:
        probe = await deps.health.probe(endpoint, tls)
    health, newest = rules.judge_health(probe, ps.status.last_heartbeat, gen, now)
    for cond in health:
        conditions = set_condition(conditions, cond)
    report = probe.report if probe is not None else None
    metrics: dict[str, object] = {}
    if report is not None:
        metrics = {
            "version": report.version,
            "cpu_percent": report.cpu_percent,
            "memory_percent": report.memory_percent,
            "cache_free_percent": report.cache_free_percent,
            "throughput_bytes_per_second": report.throughput_bytes_per_second,
            "queue_bytes": report.queue_bytes,
            "session_count": len(report.sessions),
            "sessions": report.sessions,
            "registered_agents": report.registered_agents,
        }
    status = _finish(
        ps,
        conditions,
        now,
        deleting=False,
        endpoint=endpoint,
        vm_id=out.vm_id,
        operations=out.operations,
        last_heartbeat=newest,
        **metrics,
    )
    return Outcome(status, out.retry_after)


async def remove(ps: api.ProcessServer, deps: Dependencies, now: dt.datetime) -> Outcome:
    """A pass while the ProcessServer is being deleted: delete its VM once no ProtectedVM
    uses it. ``removed`` tells when the finalizer may go."""
    gen = ps.meta.generation
    deployment = ps.spec.azure
    if not ps.spec.deploy or deployment is None:
        return Outcome(ps.status, removed=True)
    conditions = list(ps.status.conditions)
    out = _Azure(vm_id=ps.status.vm_id, operations=ps.status.operations)
    users = await deps.users.users(ps.meta.namespace, ps.meta.name)
    identity, problem = await _identity_or_problem(deps, ps)
    if problem is not None:
        refs = _condition(
            ConditionType.REFERENCES_RESOLVED,
            FALSE,
            problem.reason,
            f"{problem}; the operator needs it to delete the process server VM",
            gen,
            now,
        )
        conditions = set_condition(conditions, refs)
        out.retry_after = 30.0
    elif identity is not None:
        try:
            compute = await deps.azure.compute(identity, deployment.subscription_id)
            await _remove(compute, ps, deployment, users, out, now)
        except (AzureRetryable, AzurePermanent) as exc:
            _azure_fault(exc, out, gen, now)
            if out.retry_after is None:
                out.retry_after = 60.0
        if out.deployed is not None:
            conditions = set_condition(conditions, out.deployed)
    status = _finish(ps, conditions, now, deleting=True, vm_id=out.vm_id, operations=out.operations)
    return Outcome(status, out.retry_after, removed=out.removed)
