"""Pure rules of the Azure side of a ProtectedVM's preflight.

The Azure VM must exist, run the OS family ``spec.osType`` says, keep its disks on
managed disks (only those have incremental snapshots and page-range diffs), and its
mobility agent must have registered with the process server. A freshly booted VM
registers late, up to 15 minutes (R-PRE-13): that is a *waiting* state, retried with a
growing delay, and only a failure once the 15 minutes have passed.

Everything is reported on the ``AgentRegistered`` condition ("the Azure VM is registered
with its process server and its disks can be read"): the first check that fails gives
its reason. No I/O and no clock: ``now`` comes in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from failback.api.common import OSType
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
)

REGISTRATION_WINDOW: Final = dt.timedelta(minutes=15)
"""How long a booted Azure VM's agent may take to register (R-PRE-13)."""
FIRST_RETRY: Final = 30.0
"""Seconds before the first re-check while waiting for the agent."""
MAX_RETRY: Final = 240.0
"""The longest wait between two re-checks."""


@dataclass(frozen=True)
class AzureVMFacts:
    """What Azure shows of the protected VM."""

    os_type: str | None
    """``Linux`` or ``Windows`` as its OS disk says; None when Azure does not say."""
    unmanaged_disks: tuple[str, ...]
    """Names of disks that are VHD blobs, not managed disks."""
    power_state: str
    """running, starting, stopped, deallocated, ... or unknown."""
    running_since: dt.datetime | None
    """When its last start (or creation) ended, if known."""


@dataclass(frozen=True)
class PreflightResult:
    condition: Condition
    """``AgentRegistered``."""
    retry_after: float | None
    """Seconds until the next check is worth it while waiting (R-PRE-13); None otherwise."""


def backoff(waited: dt.timedelta, left: dt.timedelta) -> float:
    """The delay before the next check: half of what was waited so far, between 30 s and
    4 min, and never past the end of the registration window (plus a second)."""
    delay = min(max(waited.total_seconds() / 2, FIRST_RETRY), MAX_RETRY)
    return max(1.0, min(delay, left.total_seconds() + 1))


def judge(
    vm_id: str,
    facts: AzureVMFacts | None,
    os_type: OSType,
    agent_registered: bool | None,
    previous: Condition | None,
    generation: int | None,
    now: dt.datetime,
) -> PreflightResult:
    """The ``AgentRegistered`` condition for the Azure VM ``vm_id``.

    ``facts`` is None when Azure has no such VM; ``agent_registered`` is None when the
    process server could not be asked; ``previous`` is the condition as it stands.
    """

    def cond(status: ConditionStatus, reason: str, message: str) -> Condition:
        return Condition(ConditionType.AGENT_REGISTERED, status, reason, message, generation, now)

    if facts is None:
        return PreflightResult(
            cond(
                FALSE,
                Reason.AZURE_VM_NOT_FOUND,
                f"Azure has no VM {vm_id} (spec.azure.vmId): correct the resource ID, or "
                "check that the identity sees that subscription.",
            ),
            None,
        )
    if facts.os_type is not None and facts.os_type.lower() != os_type.value.lower():
        return PreflightResult(
            cond(
                FALSE,
                Reason.AZURE_OS_TYPE_MISMATCH,
                f"The Azure VM runs {facts.os_type} but spec.osType is {os_type.value}: set "
                f"spec.osType to {facts.os_type} (it chooses the master target, R-PRE-10).",
            ),
            None,
        )
    if facts.unmanaged_disks:
        return PreflightResult(
            cond(
                FALSE,
                Reason.UNMANAGED_DISKS,
                f"Disks {', '.join(facts.unmanaged_disks)} of the Azure VM are unmanaged (VHD "
                "blobs): only managed disks can be replicated; convert the VM to managed disks.",
            ),
            None,
        )
    if agent_registered is True:
        return PreflightResult(
            cond(TRUE, Reason.CHECK_PASSED, "The Azure VM's agent is registered."), None
        )
    if agent_registered is None:
        return PreflightResult(
            cond(
                UNKNOWN,
                Reason.SERVICE_CHECK_PENDING,
                "The process server has not said whether the Azure VM's agent registered.",
            ),
            None,
        )
    waiting = previous is not None and previous.reason == Reason.WAITING_FOR_AGENT_REGISTRATION
    if facts.power_state != "running":
        message = (
            f"The Azure VM is {facts.power_state}: its agent registers once it runs "
            "(R-PRE-13); the operator checks again."
        )
        return PreflightResult(
            cond(UNKNOWN, Reason.WAITING_FOR_AGENT_REGISTRATION, message),
            backoff(dt.timedelta(0), REGISTRATION_WINDOW),
        )
    # The window counts from when registration could first happen: the later of the VM's
    # start and the moment the operator began waiting for it. A VM that has run for months
    # before it is protected gets its 15 minutes too.
    began = previous.last_transition_time if waiting and previous is not None else now
    started = facts.running_since
    since = began if started is None or started > now else max(started, began)
    waited = now - since
    left = REGISTRATION_WINDOW - waited
    minutes = int(waited.total_seconds() // 60)
    if left <= dt.timedelta(0):
        return PreflightResult(
            cond(
                FALSE,
                Reason.AGENT_NOT_REGISTERED,
                f"The Azure VM has run for {minutes} minutes since replication began and its "
                "agent has still not registered with the process server (R-PRE-13): check "
                "the mobility agent in the VM and that it reaches the process server.",
            ),
            None,
        )
    return PreflightResult(
        cond(
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            f"The Azure VM has run for {minutes} minutes since replication began; its agent "
            "may take up to 15 to register (R-PRE-13). Not a failure: the operator checks "
            "again.",
        ),
        backoff(waited, left),
    )
