"""ProcessServer: a process server and where it lives (``crds/failback.io_processservers.yaml``).

It reads changed blocks from the protected VMs' disks and forwards them to a master
target (R-ARCH-2, R-ARCH-3). Over a site-to-site VPN it runs in Azure, and the operator
can create its VM and delete it after failback.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from failback.api import constants
from failback.api._codec import Encodable, decode
from failback.api.common import ObjectMeta, ObjectRef, Site, WorkloadIdentity, parse_meta
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    find_condition,
)

KIND: Final = constants.PROCESS_SERVER.kind
PLURAL: Final = constants.PROCESS_SERVER.plural
SHORT_NAME: Final = constants.PROCESS_SERVER.short_name

# ------------------------------------------------------------------ spec


class Connectivity(enum.StrEnum):
    """The network between Azure and the on-premises site (R-ARCH-6)."""

    S2S_VPN = "S2SVPN"
    EXPRESS_ROUTE = "ExpressRoute"


@dataclass(frozen=True)
class Image:
    """A marketplace image reference."""

    publisher: str
    offer: str
    sku: str
    version: str


@dataclass(frozen=True)
class AzureDeployment:
    """The Azure VM the operator creates for the process server (with ``deploy``)."""

    subscription_id: str
    resource_group: str
    region: str
    subnet_id: str
    vm_size: str
    image: Image
    credentials_secret_ref: ObjectRef | None = None
    workload_identity: WorkloadIdentity | None = None


@dataclass(frozen=True)
class ProcessServerSpec:
    location: Site
    connectivity: Connectivity
    tls_secret_ref: ObjectRef
    endpoint: str | None = None
    """``https://host:port`` of the control API; with deploy, the operator finds it."""
    deploy: bool = False
    azure: AzureDeployment | None = None
    delete_after_failback: bool = False
    """With deploy: delete the VM once no ProtectedVM replicates through it (R-ARCH-2)."""


# ------------------------------------------------------------------ status


class ProcessServerPhase(enum.StrEnum):
    """A human summary for ``kubectl get``; see :func:`derive_phase`."""

    PENDING = "Pending"
    DEPLOYING = "Deploying"
    READY = "Ready"
    DEGRADED = "Degraded"
    UNREACHABLE = "Unreachable"
    DELETING = "Deleting"


class OperationKind(enum.StrEnum):
    AZURE_OPERATION = "AzureOperation"


@dataclass(frozen=True)
class Operation:
    """An Azure operation in flight (its continuation token), so a restart resumes it."""

    name: str
    kind: OperationKind
    id: str
    started: dt.datetime


@dataclass(frozen=True)
class ProcessServerStatus(Encodable):
    observed_generation: int | None = None
    phase: ProcessServerPhase | None = None
    endpoint: str | None = None
    """The endpoint in use: spec.endpoint, or the deployed VM's."""
    vm_id: str | None = None
    """Resource ID of the VM the operator deployed."""
    version: str | None = None
    last_heartbeat: dt.datetime | None = None
    cpu_percent: int | None = None
    memory_percent: int | None = None
    cache_free_percent: int | None = None
    throughput_bytes_per_second: int | None = None
    queue_bytes: int | None = None
    session_count: int | None = None
    sessions: tuple[str, ...] = ()
    registered_agents: tuple[str, ...] = ()
    """Resource IDs (lower case) of the Azure VMs whose agent registered (R-PRE-13)."""
    """The ProtectedVMs replicating through this process server."""
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class ProcessServer:
    meta: ObjectMeta
    spec: ProcessServerSpec
    status: ProcessServerStatus


def parse(body: Mapping[str, Any]) -> ProcessServer:
    """A ProcessServer object; :class:`~failback.errors.SpecInvalid` names the first bad field."""
    spec = decode(ProcessServerSpec, body.get("spec"), "spec")
    status = decode(ProcessServerStatus, body.get("status") or {}, "status")
    return ProcessServer(parse_meta(body), spec, status)


# ------------------------------------------------------------------ conditions and phase

CONDITION_TYPES: Final[tuple[str, ...]] = (
    ConditionType.READY,
    ConditionType.REFERENCES_RESOLVED,
    ConditionType.DEPLOYED,
    ConditionType.REACHABLE,
    ConditionType.HEARTBEAT,
    ConditionType.HEALTHY,
    ConditionType.CONTROL_PLANE_REACHABLE,
)
"""Every condition type a ProcessServer reports (Deployed only with spec.deploy)."""


def condition_types(spec: ProcessServerSpec) -> tuple[str, ...]:
    """The condition types that apply: Deployed only when the operator deploys the VM."""
    return tuple(t for t in CONDITION_TYPES if spec.deploy or t != ConditionType.DEPLOYED)


def ready_inputs(spec: ProcessServerSpec) -> tuple[str, ...]:
    """What ``Ready`` summarizes: every applicable condition but Ready."""
    return tuple(t for t in condition_types(spec) if t != ConditionType.READY)


def derive_phase(conditions: Iterable[Condition], *, deleting: bool = False) -> ProcessServerPhase:
    """The printer-column phase, from the conditions (and whether the object is deleted)."""
    conditions = tuple(conditions)
    ready = find_condition(conditions, ConditionType.READY)
    deployed = find_condition(conditions, ConditionType.DEPLOYED)
    reachable = find_condition(conditions, ConditionType.REACHABLE)
    healthy = find_condition(conditions, ConditionType.HEALTHY)
    if deleting or (deployed is not None and deployed.reason == Reason.DELETING):
        return ProcessServerPhase.DELETING
    if deployed is not None and deployed.reason == Reason.DEPLOYING:
        return ProcessServerPhase.DEPLOYING
    if ready is None or ready.status == UNKNOWN:
        return ProcessServerPhase.PENDING
    if reachable is not None and reachable.status == FALSE:
        return ProcessServerPhase.UNREACHABLE
    if ready.status == TRUE:
        warned = healthy is not None and healthy.reason == Reason.THRESHOLD_WARNING
        return ProcessServerPhase.DEGRADED if warned else ProcessServerPhase.READY
    return ProcessServerPhase.DEGRADED
