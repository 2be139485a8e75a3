"""The process server's pure rules: connectivity, health thresholds, heartbeat, and the
steps that deploy and remove its VM. Tables of (input → expected condition)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from failback.api.common import Site
from failback.api.conditions import FALSE, TRUE, UNKNOWN, Condition, ConditionType, Reason
from failback.api.processserver import Connectivity
from failback.domain import processserver as ps
from failback.errors import SpecInvalid

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
GEN = 3


def report(**changes: object) -> ps.HealthReport:
    base = ps.HealthReport(
        version="0.1.0",
        heartbeat=NOW - dt.timedelta(seconds=20),
        cpu_percent=40,
        memory_percent=50,
        cache_free_percent=70,
        throughput_bytes_per_second=1000,
        queue_bytes=0,
        control_plane_reachable=True,
        control_plane_error=None,
        sessions=(),
        registered_agents=(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("location", "connectivity", "ok"),
    [
        (Site.AZURE, Connectivity.S2S_VPN, True),
        (Site.AZURE, Connectivity.EXPRESS_ROUTE, True),
        (Site.ON_PREM, Connectivity.EXPRESS_ROUTE, True),
        (Site.ON_PREM, Connectivity.S2S_VPN, False),
    ],
)
def test_connectivity_against_location(
    location: Site, connectivity: Connectivity, ok: bool
) -> None:
    if ok:
        ps.check_connectivity(location, connectivity)
        return
    with pytest.raises(SpecInvalid) as invalid:
        ps.check_connectivity(location, connectivity)
    assert invalid.value.field == "spec.location"
    assert "ExpressRoute" in str(invalid.value)


@pytest.mark.parametrize(
    ("changes", "status", "reason", "words"),
    [
        ({}, TRUE, Reason.WITHIN_THRESHOLDS, "CPU 40 %"),
        ({"cpu_percent": 80}, TRUE, Reason.WITHIN_THRESHOLDS, "CPU 80 %"),
        ({"cpu_percent": 81}, TRUE, Reason.THRESHOLD_WARNING, "CPU 81 % (warning above 80 %)"),
        ({"cpu_percent": 95}, TRUE, Reason.THRESHOLD_WARNING, "CPU 95 %"),
        ({"cpu_percent": 96}, FALSE, Reason.THRESHOLD_CRITICAL, "CPU 96 % (critical above 95 %)"),
        ({"memory_percent": 85}, TRUE, Reason.THRESHOLD_WARNING, "memory 85 %"),
        ({"memory_percent": 99}, FALSE, Reason.THRESHOLD_CRITICAL, "memory 99 %"),
        ({"cache_free_percent": 30}, TRUE, Reason.WITHIN_THRESHOLDS, "cache free space 30 %"),
        ({"cache_free_percent": 29}, TRUE, Reason.THRESHOLD_WARNING, "below 30 %"),
        ({"cache_free_percent": 25}, TRUE, Reason.THRESHOLD_WARNING, "cache free space 25 %"),
        ({"cache_free_percent": 24}, FALSE, Reason.THRESHOLD_CRITICAL, "below 25 %"),
        (
            {"cpu_percent": 90, "cache_free_percent": 10},
            FALSE,
            Reason.THRESHOLD_CRITICAL,
            "cache free space 10 % (critical below 25 %); CPU 90 % (warning above 80 %)",
        ),
    ],
)
def test_health_thresholds(changes: dict[str, int], status: str, reason: str, words: str) -> None:
    cond = ps.healthy(report(**changes), GEN, NOW)
    assert (cond.type, cond.status, cond.reason) == (ConditionType.HEALTHY, status, reason)
    assert words in cond.message
    assert cond.observed_generation == GEN


@pytest.mark.parametrize(
    ("age", "status", "reason"),
    [
        (None, UNKNOWN, Reason.NO_HEARTBEAT_YET),
        (dt.timedelta(seconds=0), TRUE, Reason.HEARTBEAT_RECEIVED),
        (dt.timedelta(minutes=14, seconds=59), TRUE, Reason.HEARTBEAT_RECEIVED),
        (dt.timedelta(minutes=15), FALSE, Reason.HEARTBEAT_MISSING),
        (dt.timedelta(hours=3), FALSE, Reason.HEARTBEAT_MISSING),
    ],
)
def test_heartbeat_goes_missing_after_15_minutes(
    age: dt.timedelta | None, status: str, reason: str
) -> None:
    cond = ps.heartbeat(None if age is None else NOW - age, GEN, NOW)
    assert (cond.status, cond.reason) == (status, reason)


def test_a_probe_that_failed_keeps_the_last_heartbeat_and_makes_the_rest_unknown() -> None:
    last = NOW - dt.timedelta(minutes=20)
    probe = ps.Probe(None, Reason.TLS_VERIFICATION_FAILED, "certificate verify failed")
    conditions, newest = ps.judge_health(probe, last, GEN, NOW)
    by_type = {c.type: c for c in conditions}
    assert newest == last
    assert by_type[ConditionType.REACHABLE].reason == Reason.TLS_VERIFICATION_FAILED
    assert by_type[ConditionType.REACHABLE].status == FALSE
    assert by_type[ConditionType.HEARTBEAT].reason == Reason.HEARTBEAT_MISSING
    assert by_type[ConditionType.HEALTHY].status == UNKNOWN
    assert by_type[ConditionType.CONTROL_PLANE_REACHABLE].status == UNKNOWN


def test_a_report_gives_every_condition_and_a_newer_heartbeat() -> None:
    probe = ps.Probe(report(control_plane_reachable=False, control_plane_error="dial tcp: i/o"))
    conditions, newest = ps.judge_health(probe, NOW - dt.timedelta(hours=1), GEN, NOW)
    by_type = {c.type: c for c in conditions}
    assert newest == NOW - dt.timedelta(seconds=20)
    assert by_type[ConditionType.REACHABLE].reason == Reason.CONNECTED
    assert by_type[ConditionType.HEARTBEAT].status == TRUE
    plane = by_type[ConditionType.CONTROL_PLANE_REACHABLE]
    assert (plane.status, plane.reason) == (FALSE, Reason.CONTROL_PLANE_UNREACHABLE)
    assert "dial tcp: i/o" in plane.message
    assert "R-PRE-12" in plane.message


def test_nothing_to_probe_is_pending_not_failed() -> None:
    conditions, newest = ps.judge_health(None, None, GEN, NOW)
    assert newest is None
    assert [c.status for c in conditions] == [UNKNOWN] * 4


VM = ps.ObservedVM("/subscriptions/s/resourceGroups/rg/providers/x/vm", "Succeeded", "running")


def failed_before(generation: int) -> Condition:
    return Condition(
        ConditionType.DEPLOYED, FALSE, Reason.DEPLOYMENT_FAILED, "quota", generation, NOW
    )


@pytest.mark.parametrize(
    ("vm", "operation", "previous", "step", "status", "reason"),
    [
        (None, None, None, ps.Step.CREATE, UNKNOWN, Reason.DEPLOYING),
        (None, "create-vm", None, ps.Step.POLL, UNKNOWN, Reason.DEPLOYING),
        (VM, "create-vm", None, ps.Step.POLL, UNKNOWN, Reason.DEPLOYING),
        (VM, None, None, ps.Step.NOTHING, TRUE, Reason.VM_DEPLOYED),
        (
            dataclasses.replace(VM, provisioning_state="Creating", power_state="starting"),
            None,
            None,
            ps.Step.NOTHING,
            UNKNOWN,
            Reason.DEPLOYING,
        ),
        (
            dataclasses.replace(VM, power_state="deallocated"),
            None,
            None,
            ps.Step.START,
            UNKNOWN,
            Reason.DEPLOYING,
        ),
        (
            dataclasses.replace(VM, provisioning_state="Failed", power_state="stopped"),
            None,
            None,
            ps.Step.NOTHING,
            FALSE,
            Reason.DEPLOYMENT_FAILED,
        ),
        # Azure refused this generation: not again until the spec changes ...
        (None, None, failed_before(GEN), ps.Step.NOTHING, FALSE, Reason.DEPLOYMENT_FAILED),
        # ... and a new generation tries again.
        (None, None, failed_before(GEN - 1), ps.Step.CREATE, UNKNOWN, Reason.DEPLOYING),
    ],
)
def test_deployment_steps(
    vm: ps.ObservedVM | None,
    operation: str | None,
    previous: Condition | None,
    step: ps.Step,
    status: str,
    reason: str,
) -> None:
    decision = ps.decide_deployment(vm, operation, previous, GEN, NOW)
    assert decision.step == step
    assert (decision.deployed.status, decision.deployed.reason) == (status, reason)
    assert decision.deployed.type == ConditionType.DEPLOYED


@pytest.mark.parametrize(
    ("vm", "operation", "users", "step", "reason"),
    [
        (VM, None, ("ns/web-01",), ps.Step.NOTHING, Reason.PROCESS_SERVER_IN_USE),
        (None, None, ("ns/web-01",), ps.Step.NOTHING, Reason.PROCESS_SERVER_IN_USE),
        (VM, None, (), ps.Step.DELETE, Reason.DELETING),
        (VM, "delete-vm", (), ps.Step.POLL, Reason.DELETING),
        (None, "delete-vm", (), ps.Step.POLL, Reason.DELETING),
        (None, None, (), ps.Step.DONE, Reason.DELETING),
    ],
)
def test_removal_steps(
    vm: ps.ObservedVM | None,
    operation: str | None,
    users: tuple[str, ...],
    step: ps.Step,
    reason: str,
) -> None:
    decision = ps.decide_removal(vm, operation, users, GEN, NOW)
    assert decision.step == step
    assert decision.deployed.reason == reason
    assert decision.deployed.status == FALSE
    if users:
        assert "ns/web-01" in decision.deployed.message
        assert "spec.processServerRef" in decision.deployed.message
