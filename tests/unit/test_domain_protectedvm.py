"""The cross-object checks of a ProtectedVM and how its status is assembled (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from failback.api import failbackplan, mastertarget, protectedvm
from failback.api.conditions import FALSE, TRUE, UNKNOWN, Condition, ConditionType, Reason
from failback.domain import protectedvm as rules

NOW = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
SUB = "0b9e3a5c-1d2f-4e6a-8b7c-9d0e1f2a3b4c"


def vm(name: str = "web-01", mt: str = "mt-linux", **spec: Any) -> protectedvm.ProtectedVM:
    return protectedvm.parse(
        {
            "metadata": {"name": name, "namespace": "dr", "uid": f"u-{name}", "generation": 3},
            "spec": {
                "azure": {
                    "vmId": f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
                    f"Microsoft.Compute/virtualMachines/{name}",
                    "credentialsSecretRef": {"name": "azure"},
                },
                "onPrem": {
                    "vcenterSecretRef": {"name": "vcenter"},
                    "originalVM": {"instanceUUID": "50321f6b-2d8c-4a95-b370-9e4c1d6a8f02"},
                },
                "osType": "Linux",
                "masterTargetRef": {"name": mt},
                "processServerRef": {"name": "ps"},
                **spec,
            },
        }
    )


def master_target(name: str = "mt-linux", **spec: Any) -> mastertarget.MasterTarget:
    return mastertarget.parse(
        {
            "metadata": {"name": name, "namespace": "dr", "uid": "u-mt", "generation": 1},
            "spec": {
                "vcenterSecretRef": {"name": "vcenter"},
                "vm": {"instanceUUID": "4215a0b1-c2d3-e4f5-a6b7-c8d9e0f1a2b3"},
                "osType": "Linux",
                "endpoint": "https://mt:9443",
                "tlsSecretRef": {"name": "mt-tls"},
                **spec,
            },
        }
    )


def plan(*members: str, name: str = "home") -> failbackplan.FailbackPlan:
    return failbackplan.parse(
        {
            "metadata": {"name": name, "namespace": "dr", "uid": "u-p", "generation": 1},
            "spec": {"activeSite": "Azure", "groups": [{"name": "g", "members": list(members)}]},
        }
    )


# ------------------------------------------------------------------ references


def test_references_resolve_when_nothing_is_missing() -> None:
    got = rules.references(vm(), [], 3, NOW)
    assert (got.status, got.reason) == (TRUE, Reason.CHECK_PASSED)
    assert "MasterTarget mt-linux, ProcessServer ps" in got.message


def test_every_missing_reference_is_named() -> None:
    problems = rules.missing_objects(vm(), None, False, 3, NOW)
    got = rules.references(vm(), problems, 3, NOW)
    assert (got.status, got.reason) == (FALSE, Reason.MASTER_TARGET_NOT_FOUND)
    assert "MasterTarget mt-linux (spec.masterTargetRef) does not exist in namespace dr" in (
        got.message
    )
    assert "ProcessServer ps (spec.processServerRef) does not exist" in got.message


def test_only_false_problems_count() -> None:
    fine = Condition(ConditionType.REFERENCES_RESOLVED, TRUE, Reason.CHECK_PASSED, "ok", 3, NOW)
    assert rules.references(vm(), [fine], 3, NOW).status == TRUE


# ------------------------------------------------------------------ replication groups


@pytest.mark.parametrize(
    ("peers", "plans", "status", "reason", "words"),
    [
        ([vm("db", replicationGroup="erp")], [plan("web-01", "db")], TRUE, Reason.CHECK_PASSED,
         "The 2 members of replication group erp use MasterTarget mt-linux"),
        ([vm("db", mt="mt-other", replicationGroup="erp")], [plan("web-01", "db")], FALSE,
         Reason.REPLICATION_GROUP_MASTER_TARGET_MISMATCH, "db → mt-other, web-01 → mt-linux"),
        ([vm("db", replicationGroup="erp")], [plan("db")], FALSE,
         Reason.REPLICATION_GROUP_NEEDS_PLAN, "list every member of erp in one FailbackPlan"),
        ([vm("db", mt="mt-other", replicationGroup="other")], [plan("web-01")], TRUE,
         Reason.CHECK_PASSED, "The 1 members of replication group erp"),
    ],
)  # fmt: skip
def test_replication_group(
    peers: list[protectedvm.ProtectedVM],
    plans: list[failbackplan.FailbackPlan],
    status: str,
    reason: str,
    words: str,
) -> None:
    me = vm(replicationGroup="erp")
    got = rules.replication_group(me, peers, plans, 3, NOW)
    assert got is not None
    assert (got.status, got.reason) == (status, reason)
    assert words in got.message


def test_no_replication_group_no_condition() -> None:
    assert rules.replication_group(vm(), [vm("db", mt="x")], [], 3, NOW) is None


# ------------------------------------------------------------------ retention volume


@pytest.mark.parametrize(
    ("wanted", "mt_volume", "status"),
    [
        ("/mnt/retention/", None, TRUE),
        ("/mnt/retention", "/mnt/retention", TRUE),
        ("/srv/rp", None, FALSE),
        ("/srv/rp", "/srv/rp/", TRUE),
    ],
)
def test_retention_volume(wanted: str, mt_volume: str | None, status: str) -> None:
    spec = {"retentionVolume": mt_volume} if mt_volume else {}
    got = rules.retention_volume(vm(retentionVolume=wanted), master_target(**spec), 3, NOW)
    assert got is not None
    assert got.status == status
    if status == FALSE:
        assert got.reason == Reason.RETENTION_VOLUME_NOT_ON_MASTER_TARGET
        assert "whose retention volume is /mnt/retention" in got.message


def test_retention_volume_waits_for_the_master_target() -> None:
    got = rules.retention_volume(vm(retentionVolume="/srv"), None, 3, NOW)
    assert got is not None
    assert got.status == UNKNOWN


def test_the_master_targets_own_volume_needs_no_check() -> None:
    assert rules.retention_volume(vm(), master_target(), 3, NOW) is None


# ------------------------------------------------------------------ assembly


def test_assemble_lists_every_applicable_condition_and_summarizes() -> None:
    me = vm()
    judged = [
        rules.references(me, [], 3, NOW),
        Condition(ConditionType.VCENTER_PERMISSIONS, FALSE, "PermissionDenied", "grant X", 3, NOW),
        Condition(ConditionType.REPLICATION_HEALTHY, UNKNOWN, Reason.INITIAL_SYNC, "copy", 3, NOW),
        # A condition that does not apply to this spec is dropped, not published.
        Condition(ConditionType.SOURCE_OS_SUPPORTED, TRUE, Reason.CHECK_PASSED, "ok", 3, NOW),
    ]
    status = rules.assemble(me, judged, None, "home", NOW)
    types = [c.type for c in status.conditions]
    assert types[0] == ConditionType.READY
    assert set(types) == set(protectedvm.condition_types(me.spec))
    ready = status.conditions[0]
    assert (ready.status, ready.reason) == (FALSE, "PermissionDenied")
    assert status.observed_generation == 3
    assert status.managed_by == "home"
    assert str(status.phase) == "Error"
