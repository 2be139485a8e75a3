"""Pure rules of the process server: where it may live, how healthy it is, and what to do
about its Azure VM.

- :func:`check_connectivity`: R-ARCH-2/3/6 — over a site-to-site VPN the PS runs in Azure,
  close to the VMs; on-premises needs ExpressRoute (the CRD says so too; this guards
  objects that bypassed it).
- :func:`judge_health`: the conditions ``Reachable``, ``Heartbeat``, ``Healthy`` and
  ``ControlPlaneReachable`` from one probe of the PS's health endpoint
  (``docs/processserver-api.md``), with the original product's thresholds.
- :func:`decide_deployment` / :func:`decide_removal`: the next step for a PS VM the
  operator deploys, from what Azure shows now and the operation stored in status.

No I/O and no clock: the time comes in as ``now``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from failback.api.common import Site
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
)
from failback.api.processserver import Connectivity
from failback.errors import SpecInvalid

CPU_WARNING: Final = 80
CPU_CRITICAL: Final = 95
MEMORY_WARNING: Final = 80
MEMORY_CRITICAL: Final = 95
CACHE_FREE_WARNING: Final = 30
CACHE_FREE_CRITICAL: Final = 25
HEARTBEAT_TIMEOUT: Final = dt.timedelta(minutes=15)
"""No heartbeat for this long is critical (R-PRE-12)."""


def check_connectivity(location: Site, connectivity: Connectivity) -> None:
    """R-ARCH-3/6: a PS on-premises needs ExpressRoute; raise ``SpecInvalid`` otherwise."""
    if location == Site.ON_PREM and connectivity != Connectivity.EXPRESS_ROUTE:
        raise SpecInvalid(
            "spec.location",
            "spec.location OnPrem needs spec.connectivity ExpressRoute: over a site-to-site "
            "VPN the process server must run in Azure, close to the VMs (R-ARCH-3)",
        )


# ------------------------------------------------------------------ health


@dataclass(frozen=True)
class HealthReport:
    """What the PS's ``GET /v1/health`` answered (``docs/processserver-api.md``)."""

    version: str
    heartbeat: dt.datetime
    """When the PS's replication loop last ran (its own clock, UTC)."""
    cpu_percent: int
    memory_percent: int
    cache_free_percent: int
    throughput_bytes_per_second: int
    queue_bytes: int
    control_plane_reachable: bool
    control_plane_error: str | None
    sessions: tuple[str, ...]
    """The ProtectedVMs (``namespace/name``) replicating through it."""
    registered_agents: tuple[str, ...]
    """Resource IDs (lower case) of the Azure VMs whose agent registered with it (R-PRE-13)."""


@dataclass(frozen=True)
class Probe:
    """One attempt to read the health endpoint: a report, or why there is none."""

    report: HealthReport | None
    failure: Reason | None = None
    """``ConnectionFailed`` or ``TLSVerificationFailed`` when there is no report."""
    message: str = ""


def _cond(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
) -> Condition:
    return Condition(type_, status, reason, message, generation, now)


def reachable(probe: Probe | None, generation: int | None, now: dt.datetime) -> Condition:
    t = ConditionType.REACHABLE
    if probe is None:
        return _cond(
            t,
            UNKNOWN,
            Reason.SERVICE_CHECK_PENDING,
            "No endpoint to probe yet: set spec.endpoint, or wait for the deployed VM.",
            generation,
            now,
        )
    if probe.report is None:
        reason = probe.failure or Reason.CONNECTION_FAILED
        return _cond(t, FALSE, reason, probe.message, generation, now)
    message = f"The control API answered over mutual TLS (version {probe.report.version})."
    return _cond(t, TRUE, Reason.CONNECTED, message, generation, now)


def heartbeat(last: dt.datetime | None, generation: int | None, now: dt.datetime) -> Condition:
    """``Heartbeat`` from the newest heartbeat known (reported now or kept in status)."""
    t = ConditionType.HEARTBEAT
    if last is None:
        return _cond(
            t,
            UNKNOWN,
            Reason.NO_HEARTBEAT_YET,
            "The process server never reported.",
            generation,
            now,
        )
    age = now - last
    minutes = int(max(age.total_seconds(), 0) // 60)
    if age >= HEARTBEAT_TIMEOUT:
        message = (
            f"No heartbeat for {minutes} minutes (since {last.isoformat()}): replication "
            "stops; check the process server VM and its service (R-PRE-12)."
        )
        return _cond(t, FALSE, Reason.HEARTBEAT_MISSING, message, generation, now)
    message = f"Last heartbeat {minutes} minutes ago."
    return _cond(t, TRUE, Reason.HEARTBEAT_RECEIVED, message, generation, now)


def healthy(report: HealthReport | None, generation: int | None, now: dt.datetime) -> Condition:
    """``Healthy`` with the original product's thresholds: CPU or memory above 80 % warns,
    above 95 % is critical; cache free space below 30 % warns, below 25 % is critical."""
    t = ConditionType.HEALTHY
    if report is None:
        return _cond(
            t,
            UNKNOWN,
            Reason.SERVICE_CHECK_PENDING,
            "The process server has not answered; its health is not known.",
            generation,
            now,
        )
    critical: list[str] = []
    warning: list[str] = []
    for name, value, warn, crit in (
        ("CPU", report.cpu_percent, CPU_WARNING, CPU_CRITICAL),
        ("memory", report.memory_percent, MEMORY_WARNING, MEMORY_CRITICAL),
    ):
        if value > crit:
            critical.append(f"{name} {value} % (critical above {crit} %)")
        elif value > warn:
            warning.append(f"{name} {value} % (warning above {warn} %)")
    free = report.cache_free_percent
    if free < CACHE_FREE_CRITICAL:
        critical.append(f"cache free space {free} % (critical below {CACHE_FREE_CRITICAL} %)")
    elif free < CACHE_FREE_WARNING:
        warning.append(f"cache free space {free} % (warning below {CACHE_FREE_WARNING} %)")
    if critical:
        message = "; ".join(critical + warning) + (
            ": give it more resources, or move VMs to another process server."
        )
        return _cond(t, FALSE, Reason.THRESHOLD_CRITICAL, message, generation, now)
    if warning:
        message = "; ".join(warning) + ": plan a bigger VM or another process server."
        return _cond(t, TRUE, Reason.THRESHOLD_WARNING, message, generation, now)
    message = (
        f"CPU {report.cpu_percent} %, memory {report.memory_percent} %, cache free space {free} %."
    )
    return _cond(t, TRUE, Reason.WITHIN_THRESHOLDS, message, generation, now)


def control_plane(
    report: HealthReport | None, generation: int | None, now: dt.datetime
) -> Condition:
    """R-PRE-12: the PS reaches the Kubernetes API (the configuration server) on 443."""
    t = ConditionType.CONTROL_PLANE_REACHABLE
    if report is None:
        return _cond(
            t,
            UNKNOWN,
            Reason.SERVICE_CHECK_PENDING,
            "The process server has not answered; whether it reaches the Kubernetes API "
            "is not known.",
            generation,
            now,
        )
    if report.control_plane_reachable:
        message = "The process server reaches the Kubernetes API on 443."
        return _cond(t, TRUE, Reason.CONNECTED, message, generation, now)
    detail = f" ({report.control_plane_error})" if report.control_plane_error else ""
    message = (
        f"The process server cannot reach the Kubernetes API on 443{detail}: open 443 from "
        "the process server to the API server over the VPN or ExpressRoute (R-ARCH-6, R-PRE-12)."
    )
    return _cond(t, FALSE, Reason.CONTROL_PLANE_UNREACHABLE, message, generation, now)


def judge_health(
    probe: Probe | None,
    last_heartbeat: dt.datetime | None,
    generation: int | None,
    now: dt.datetime,
) -> tuple[list[Condition], dt.datetime | None]:
    """The four health conditions, and the newest heartbeat to keep in status.

    ``probe`` is None when there is nothing to probe yet; ``last_heartbeat`` is the one
    kept in status from earlier probes (a PS that stops answering keeps its last one,
    so ``Heartbeat`` turns False 15 minutes after it).
    """
    report = probe.report if probe is not None else None
    newest = last_heartbeat
    if report is not None and (newest is None or report.heartbeat > newest):
        newest = report.heartbeat
    conditions = [
        reachable(probe, generation, now),
        heartbeat(newest, generation, now),
        healthy(report, generation, now),
        control_plane(report, generation, now),
    ]
    return conditions, newest


# ------------------------------------------------------------------ the deployed VM


class Step(enum.StrEnum):
    """The next thing to do about the process server VM."""

    NOTHING = "Nothing"
    CREATE = "Create"
    START = "Start"
    POLL = "Poll"
    """An operation is in flight (its token is in status): check it, do not start another."""
    DELETE = "Delete"
    DONE = "Done"
    """Removal: the VM is gone; the finalizer may go."""


@dataclass(frozen=True)
class ObservedVM:
    """The process server VM as Azure shows it now."""

    id: str
    provisioning_state: str
    power_state: str
    """running, starting, stopping, stopped, deallocating, deallocated or unknown."""


@dataclass(frozen=True)
class Decision:
    step: Step
    deployed: Condition
    """The ``Deployed`` condition that goes with the step."""


def decide_deployment(
    vm: ObservedVM | None,
    operation: str | None,
    previous: Condition | None,
    generation: int | None,
    now: dt.datetime,
) -> Decision:
    """What to do so the PS VM exists and runs.

    ``operation`` names the operation stored in status (``create-vm``, ``start-vm``), if
    any; ``previous`` is the last ``Deployed`` condition: a creation Azure refused for
    this generation is not tried again until the spec changes.
    """
    t = ConditionType.DEPLOYED
    if operation is not None:
        message = f"Azure operation {operation} in progress; status.operations holds its token."
        return Decision(Step.POLL, _cond(t, UNKNOWN, Reason.DEPLOYING, message, generation, now))
    if vm is None:
        if (
            previous is not None
            and previous.reason == Reason.DEPLOYMENT_FAILED
            and previous.observed_generation == generation
        ):
            return Decision(Step.NOTHING, previous)
        message = "Creating the process server VM."
        return Decision(Step.CREATE, _cond(t, UNKNOWN, Reason.DEPLOYING, message, generation, now))
    state = vm.provisioning_state.lower()
    if state == "failed":
        message = (
            f"Azure reports the process server VM {vm.id} as Failed: look at it in Azure, "
            "then delete it (the operator creates it again) or delete this ProcessServer."
        )
        return Decision(
            Step.NOTHING, _cond(t, FALSE, Reason.DEPLOYMENT_FAILED, message, generation, now)
        )
    if state in {"creating", "updating"} or vm.power_state == "starting":
        message = f"The process server VM {vm.id} is {state or vm.power_state}."
        return Decision(Step.NOTHING, _cond(t, UNKNOWN, Reason.DEPLOYING, message, generation, now))
    if vm.power_state == "running":
        message = f"The process server VM {vm.id} exists and runs."
        return Decision(Step.NOTHING, _cond(t, TRUE, Reason.VM_DEPLOYED, message, generation, now))
    message = f"The process server VM {vm.id} is {vm.power_state}; starting it."
    return Decision(Step.START, _cond(t, UNKNOWN, Reason.DEPLOYING, message, generation, now))


def decide_removal(
    vm: ObservedVM | None,
    operation: str | None,
    users: Sequence[str],
    generation: int | None,
    now: dt.datetime,
) -> Decision:
    """What to do about the PS VM while its ProcessServer is being deleted.

    While ProtectedVMs (``users``) still name this process server, nothing is deleted.
    """
    t = ConditionType.DEPLOYED
    if users:
        message = (
            f"Not deleting the process server VM: ProtectedVMs {', '.join(sorted(users))} "
            "still use this ProcessServer; point their spec.processServerRef at another one "
            "(or delete them) first."
        )
        return Decision(
            Step.NOTHING, _cond(t, FALSE, Reason.PROCESS_SERVER_IN_USE, message, generation, now)
        )
    if operation is not None:
        message = f"Azure operation {operation} in progress; status.operations holds its token."
        return Decision(Step.POLL, _cond(t, FALSE, Reason.DELETING, message, generation, now))
    if vm is None:
        message = "The process server VM is deleted."
        return Decision(Step.DONE, _cond(t, FALSE, Reason.DELETING, message, generation, now))
    message = f"Deleting the process server VM {vm.id}."
    return Decision(Step.DELETE, _cond(t, FALSE, Reason.DELETING, message, generation, now))
