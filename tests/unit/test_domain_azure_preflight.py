"""The Azure side of a ProtectedVM's preflight: VM, OS, managed disks, and the agent's
late registration (R-PRE-13) as a waiting state with a growing delay."""

from __future__ import annotations

import datetime as dt

import pytest

from failback.api.common import OSType
from failback.api.conditions import FALSE, TRUE, UNKNOWN, Condition, ConditionType, Reason
from failback.domain import azure_preflight as pre

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
VM_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01"


def facts(
    os_type: str | None = "Linux",
    unmanaged: tuple[str, ...] = (),
    power: str = "running",
    running_for: dt.timedelta | None = dt.timedelta(hours=2),
) -> pre.AzureVMFacts:
    since = None if running_for is None else NOW - running_for
    return pre.AzureVMFacts(os_type, unmanaged, power, since)


def waiting_since(minutes: float) -> Condition:
    return Condition(
        ConditionType.AGENT_REGISTERED,
        UNKNOWN,
        Reason.WAITING_FOR_AGENT_REGISTRATION,
        "waiting",
        1,
        NOW - dt.timedelta(minutes=minutes),
    )


@pytest.mark.parametrize(
    ("vm", "os_type", "registered", "previous", "status", "reason", "retry"),
    [
        (None, OSType.LINUX, True, None, FALSE, Reason.AZURE_VM_NOT_FOUND, None),
        (facts("Windows"), OSType.LINUX, True, None, FALSE, Reason.AZURE_OS_TYPE_MISMATCH, None),
        (facts("linux"), OSType.LINUX, True, None, TRUE, Reason.CHECK_PASSED, None),
        (facts(None), OSType.WINDOWS, True, None, TRUE, Reason.CHECK_PASSED, None),
        (facts(unmanaged=("os",)), OSType.LINUX, True, None, FALSE, Reason.UNMANAGED_DISKS, None),
        (facts(), OSType.LINUX, None, None, UNKNOWN, Reason.SERVICE_CHECK_PENDING, None),
        # Booted 1 minute ago, waited for since before: wait (the first re-check after 30 s).
        (
            facts(running_for=dt.timedelta(minutes=1)),
            OSType.LINUX,
            False,
            waiting_since(5),
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            30.0,
        ),
        # Waited for 10 minutes: still waiting, with a longer delay (half the wait, at most
        # 4 min).
        (
            facts(),
            OSType.LINUX,
            False,
            waiting_since(10),
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            240.0,
        ),
        # 14.5 minutes: the next check lands just after the window ends.
        (
            facts(),
            OSType.LINUX,
            False,
            waiting_since(14.5),
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            31.0,
        ),
        # 15 minutes: now it is a failure.
        (
            facts(),
            OSType.LINUX,
            False,
            waiting_since(15),
            FALSE,
            Reason.AGENT_NOT_REGISTERED,
            None,
        ),
        # A VM that ran for hours before it was protected gets its 15 minutes from now
        # (counting from its start failed it on its first check).
        (
            facts(running_for=dt.timedelta(hours=2)),
            OSType.LINUX,
            False,
            None,
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            30.0,
        ),
        # Booted 16 minutes ago and waited for as long: a failure.
        (
            facts(running_for=dt.timedelta(minutes=16)),
            OSType.LINUX,
            False,
            waiting_since(16),
            FALSE,
            Reason.AGENT_NOT_REGISTERED,
            None,
        ),
        # Waited for an hour but the VM booted 2 minutes ago: its window starts at the boot.
        (
            facts(running_for=dt.timedelta(minutes=2)),
            OSType.LINUX,
            False,
            waiting_since(60),
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            60.0,
        ),
        # Boot time unknown: the wait counts from when waiting started ...
        (
            facts(running_for=None),
            OSType.LINUX,
            False,
            waiting_since(16),
            FALSE,
            Reason.AGENT_NOT_REGISTERED,
            None,
        ),
        # ... or from now.
        (
            facts(running_for=None),
            OSType.LINUX,
            False,
            None,
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            30.0,
        ),
        # A deallocated VM cannot register: wait for it to run, never fail.
        (
            facts(power="deallocated", running_for=dt.timedelta(hours=5)),
            OSType.LINUX,
            False,
            waiting_since(60),
            UNKNOWN,
            Reason.WAITING_FOR_AGENT_REGISTRATION,
            30.0,
        ),
    ],
)
def test_azure_preflight(
    vm: pre.AzureVMFacts | None,
    os_type: OSType,
    registered: bool | None,
    previous: Condition | None,
    status: str,
    reason: str,
    retry: float | None,
) -> None:
    result = pre.judge(VM_ID, vm, os_type, registered, previous, 7, NOW)
    cond = result.condition
    assert cond.type == ConditionType.AGENT_REGISTERED
    assert (cond.status, cond.reason) == (status, reason)
    assert cond.observed_generation == 7
    assert result.retry_after == retry
    if reason == Reason.WAITING_FOR_AGENT_REGISTRATION:
        assert "Not a failure" in cond.message or "registers once it runs" in cond.message


def test_messages_say_what_to_do() -> None:
    missing = pre.judge(VM_ID, None, OSType.LINUX, True, None, 1, NOW).condition
    assert VM_ID in missing.message
    assert "spec.azure.vmId" in missing.message
    os = pre.judge(VM_ID, facts("Windows"), OSType.LINUX, True, None, 1, NOW).condition
    assert "set spec.osType to Windows" in os.message


@pytest.mark.parametrize(
    ("waited", "left", "delay"),
    [
        (dt.timedelta(0), dt.timedelta(minutes=15), 30.0),
        (dt.timedelta(minutes=2), dt.timedelta(minutes=13), 60.0),
        (dt.timedelta(minutes=6), dt.timedelta(minutes=9), 180.0),
        (dt.timedelta(minutes=12), dt.timedelta(minutes=3), 181.0),
        (dt.timedelta(minutes=14, seconds=59), dt.timedelta(seconds=1), 2.0),
    ],
)
def test_backoff_grows_and_stops_at_the_window(
    waited: dt.timedelta, left: dt.timedelta, delay: float
) -> None:
    assert pre.backoff(waited, left) == delay
