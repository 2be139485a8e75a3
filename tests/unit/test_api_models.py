"""The api models: parsing (and the error a bad field gives), conditions, durations, phases."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from failback.api import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    crossobject,
    failbackplan,
    find_condition,
    format_duration,
    format_time,
    mastertarget,
    merge_patch,
    parse_duration,
    parse_time,
    processserver,
    protectedvm,
    seed_conditions,
    set_condition,
    summarize,
)
from failback.api.common import OSType
from failback.errors import SpecInvalid

T0 = dt.datetime(2026, 11, 21, 3, 0, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
UUID = "42154fd2-3c5e-8a1b-6f9d-0e2c4b6a8d10"
SUB = "0b9e3a5c-1d2f-4e6a-8b7c-9d0e1f2a3b4c"
Body = dict[str, Any]


def pvm() -> Body:
    return {
        "metadata": {"name": "web-01", "namespace": "dr", "uid": "u1", "generation": 2},
        "spec": {
            "azure": {
                "vmId": f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
                "Microsoft.Compute/virtualMachines/web-01",
                "workloadIdentity": {"clientId": UUID, "tenantId": UUID},
            },
            "onPrem": {
                "vcenterSecretRef": {"name": "vcenter"},
                "originalVM": {"instanceUUID": UUID},
                "alternatePlacement": {
                    "datacenter": "DC0",
                    "host": "esx-01",
                    "datastore": "LocalDS_0",
                    "networks": [{"portGroup": "VM Network", "macAddress": "00:50:56:aa:bb:cc"}],
                },
            },
            "osType": "Windows",
            "masterTargetRef": {"name": "mt-win"},
            "processServerRef": {"name": "ps-azure"},
            "replicationGroup": "finance",
            "policy": {"rpoThreshold": "5m", "recoveryPointRetention": "48h"},
        },
        "status": {
            "activeSite": "Azure",
            "replication": {"direction": "AzureToOnPrem", "lastCycleTime": "2026-11-21T03:00:00Z"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllChecksPassed",
                    "message": "ok",
                    "lastTransitionTime": "2026-11-21T03:00:00Z",
                    "observedGeneration": 2,
                }
            ],
        },
    }


def plan() -> Body:
    return {
        "metadata": {"name": "home", "namespace": "dr", "uid": "u2", "generation": 1},
        "spec": {
            "activeSite": "OnPrem",
            "groups": [
                {"name": "db", "members": ["db-01"]},
                {"name": "apps", "members": ["app-01", "app-02"], "maxParallel": 1},
            ],
            "failover": {
                "type": "Unplanned",
                "recoveryPoint": {"type": "PointInTime", "time": "2026-11-21T04:00:00+01:00"},
                "force": True,
                "forceReason": "Azure region down",
            },
            "commit": {"mode": "Manual", "approvedRunId": "run-1"},
        },
    }


def mt() -> Body:
    return {
        "metadata": {"name": "mt-win", "namespace": "dr", "uid": "u3", "generation": 1},
        "spec": {
            "vcenterSecretRef": {"name": "vcenter"},
            "vm": {"instanceUUID": UUID},
            "osType": "Windows",
            "endpoint": "https://mt-win.corp.example:9443",
            "tlsSecretRef": {"name": "mt-tls"},
        },
    }


def ps() -> Body:
    return {
        "metadata": {"name": "ps-azure", "namespace": "dr", "uid": "u4", "generation": 1},
        "spec": {
            "location": "Azure",
            "connectivity": "S2SVPN",
            "tlsSecretRef": {"name": "ps-tls"},
            "deploy": True,
            "azure": {
                "subscriptionId": SUB,
                "resourceGroup": "dr-rg",
                "region": "westeurope",
                "subnetId": f"/subscriptions/{SUB}/resourceGroups/dr-rg/providers/"
                "Microsoft.Network/virtualNetworks/vnet/subnets/ps",
                "vmSize": "Standard_D4s_v5",
                "image": {"publisher": "p", "offer": "o", "sku": "s", "version": "latest"},
                "credentialsSecretRef": {"name": "azure-credentials"},
            },
        },
    }


# ------------------------------------------------------------------ parsing valid objects


def test_protected_vm_parses_every_part() -> None:
    vm = protectedvm.parse(pvm())
    assert (vm.meta.name, vm.meta.namespace, vm.meta.uid, vm.meta.generation) == (
        "web-01",
        "dr",
        "u1",
        2,
    )
    assert vm.spec.on_prem.original_vm is not None
    assert vm.spec.on_prem.original_vm.instance_uuid == UUID
    assert vm.spec.on_prem.failback_location is protectedvm.FailbackLocation.AUTO
    placement = vm.spec.on_prem.alternate_placement
    assert placement is not None
    assert placement.networks[0].mac_address == "00:50:56:aa:bb:cc"
    assert vm.spec.os_type is OSType.WINDOWS
    assert vm.spec.source_type is protectedvm.SourceType.VMWARE
    assert vm.spec.policy == protectedvm.Policy(
        rpo_threshold=dt.timedelta(minutes=5),
        recovery_point_retention=dt.timedelta(hours=48),
        app_consistent_frequency=dt.timedelta(hours=1),
    )
    assert vm.status.replication is not None
    assert vm.status.replication.last_cycle_time == T0
    assert vm.status.conditions[0].observed_generation == 2


def test_plan_parses_and_lists_members_in_order() -> None:
    p = failbackplan.parse(plan())
    assert p.spec.members == ("db-01", "app-01", "app-02")
    assert p.spec.failover.recovery_point.time == T0
    assert p.spec.failover.recovery_point.time.tzinfo == dt.UTC
    assert p.spec.commit.mode is failbackplan.CommitMode.MANUAL
    assert p.spec.reprotect_after_commit is True
    assert p.status == failbackplan.FailbackPlanStatus()


def test_master_target_retention_volume_defaults_by_os() -> None:
    windows = mastertarget.parse(mt())
    assert windows.spec.effective_retention_volume == "R:"
    linux = mt()
    linux["spec"]["osType"] = "Linux"
    assert mastertarget.parse(linux).spec.effective_retention_volume == "/mnt/retention"
    linux["spec"]["retentionVolume"] = "/srv/retention"
    assert mastertarget.parse(linux).spec.effective_retention_volume == "/srv/retention"


def test_process_server_with_deploy_parses() -> None:
    server = processserver.parse(ps())
    assert server.spec.azure is not None
    assert server.spec.azure.image.sku == "s"
    assert server.spec.endpoint is None
    assert server.spec.delete_after_failback is False


# ------------------------------------------------------------------ bad input


def _set(path: str, value: Any) -> Callable[[Body], None]:
    def apply(body: Body) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[leaf] = value

    return apply


def _delete(path: str) -> Callable[[Body], None]:
    def apply(body: Body) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[leaf]

    return apply


BAD: list[tuple[Callable[[], Body], Callable[[Body], None], str, str]] = [
    # (valid object, breakage, field named, words of the message)
    (pvm, _delete("spec"), "spec", "is required"),
    (
        pvm,
        _delete("spec.onPrem.originalVM.instanceUUID"),
        "spec.onPrem.originalVM.instanceUUID",
        "is required",
    ),
    (pvm, _delete("spec.masterTargetRef"), "spec.masterTargetRef", "is required"),
    (pvm, _delete("spec.azure.vmId"), "spec.azure.vmId", "is required"),
    (
        pvm,
        _set("spec.osType", "Solaris"),
        "spec.osType",
        "must be one of Windows, Linux, not 'Solaris'",
    ),
    (pvm, _set("spec.sourceType", "Hyper-V"), "spec.sourceType", "must be one of VMware, Physical"),
    (
        pvm,
        _set("spec.onPrem.failbackLocation", "Nearby"),
        "spec.onPrem.failbackLocation",
        "Auto, Original, Alternate",
    ),
    (
        pvm,
        _set("spec.onPrem.originalVM", UUID),
        "spec.onPrem.originalVM",
        "must be an object, not a string",
    ),
    (
        pvm,
        _set("spec.onPrem.alternatePlacement.networks", {"portGroup": "x"}),
        "spec.onPrem.alternatePlacement.networks",
        "must be a list",
    ),
    (
        pvm,
        _delete("spec.onPrem.alternatePlacement.networks.0.portGroup"),
        "spec.onPrem.alternatePlacement.networks[0].portGroup",
        "is required",
    ),
    (
        pvm,
        _set("spec.policy.rpoThreshold", "soon"),
        "spec.policy.rpoThreshold",
        "is not a duration like 15m",
    ),
    (
        pvm,
        _set("spec.policy.rpoThreshold", "1.5h"),
        "spec.policy.rpoThreshold",
        "is not a duration",
    ),
    (
        pvm,
        _set("spec.policy.rpoThreshold", "30s"),
        "spec.policy.rpoThreshold",
        "between 1m and 24h",
    ),
    (
        pvm,
        _set("spec.policy.recoveryPointRetention", "73h"),
        "spec.policy.recoveryPointRetention",
        "between 1h and 72h",
    ),
    (
        pvm,
        _set("spec.policy.appConsistentFrequency", "13h"),
        "spec.policy.appConsistentFrequency",
        "0s (off)",
    ),
    (
        pvm,
        _set("spec.policy", {"recoveryPointRetention": "2h", "appConsistentFrequency": "3h"}),
        "spec.policy.appConsistentFrequency",
        "must not exceed",
    ),
    (pvm, _set("status.activeSite", "Mars"), "status.activeSite", "must be one of Azure, OnPrem"),
    (
        pvm,
        _set("status.conditions.0.lastTransitionTime", "2026-11-21T03:00:00"),
        "status.conditions[0].lastTransitionTime",
        "RFC 3339",
    ),
    (pvm, _set("status.rpoSeconds", "60"), "status.rpoSeconds", "must be an integer, not a string"),
    (pvm, _delete("metadata.name"), "metadata.name", "is required"),
    (plan, _set("spec.groups", "db-01"), "spec.groups", "must be a list"),
    (plan, _delete("spec.groups.1.members"), "spec.groups[1].members", "is required"),
    (
        plan,
        _set("spec.groups.1.members", ["app-01", 2]),
        "spec.groups[1].members[1]",
        "must be a string, not a number",
    ),
    (
        plan,
        _set("spec.groups.0.maxParallel", True),
        "spec.groups[0].maxParallel",
        "must be an integer, not a boolean",
    ),
    (plan, _set("spec.activeSite", "GCP"), "spec.activeSite", "must be one of Azure, OnPrem"),
    (
        plan,
        _set("spec.failover.recoveryPoint.type", "Oldest"),
        "spec.failover.recoveryPoint.type",
        "LatestCrashConsistent, PointInTime",
    ),
    (
        plan,
        _set("spec.failover.recoveryPoint.time", "yesterday 3am"),
        "spec.failover.recoveryPoint.time",
        "RFC 3339",
    ),
    (plan, _set("spec.dryRun", "yes"), "spec.dryRun", "must be true or false"),
    (plan, _set("spec.commit.mode", "Sometimes"), "spec.commit.mode", "Automatic, Manual"),
    (mt, _delete("spec.vm.instanceUUID"), "spec.vm.instanceUUID", "is required"),
    (mt, _delete("spec.tlsSecretRef"), "spec.tlsSecretRef", "is required"),
    (mt, _set("spec.osType", "linux"), "spec.osType", "must be one of Windows, Linux"),
    (
        mt,
        _set("spec.allowedDatastores", ["ds1", None]),
        "spec.allowedDatastores[1]",
        "must be a string, not null",
    ),
    (ps, _set("spec.connectivity", "Internet"), "spec.connectivity", "S2SVPN, ExpressRoute"),
    (ps, _delete("spec.azure.image.sku"), "spec.azure.image.sku", "is required"),
    (ps, _set("spec.deploy", "true"), "spec.deploy", "must be true or false, not a string"),
]


@pytest.mark.parametrize(
    ("make", "breakage", "field", "words"),
    BAD,
    ids=[f"{make.__name__}:{field}:{i}" for i, (make, _, field, _) in enumerate(BAD)],
)
def test_bad_input_names_the_field(
    make: Callable[[], Body], breakage: Callable[[Body], None], field: str, words: str
) -> None:
    body = make()
    breakage(body)
    parse = {
        pvm: protectedvm.parse,
        plan: failbackplan.parse,
        mt: mastertarget.parse,
        ps: processserver.parse,
    }[make]
    with pytest.raises(SpecInvalid) as caught:
        parse(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert words in str(caught.value)


def test_unknown_keys_are_ignored_as_the_api_server_prunes_them() -> None:
    body = pvm()
    body["spec"]["colour"] = "blue"
    assert protectedvm.parse(body) == protectedvm.parse(pvm())


# ------------------------------------------------------------------ durations and times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", dt.timedelta(minutes=15)),
        ("24h", dt.timedelta(hours=24)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("1h1h", dt.timedelta(hours=2)),
        ("90s", dt.timedelta(seconds=90)),
        ("0s", dt.timedelta(0)),
        ("2h0m5s", dt.timedelta(hours=2, seconds=5)),
    ],
)
def test_durations_parse(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "1.5h", "100ms", "-1m", "1d", "15 m", "15M"])
def test_durations_outside_the_crd_format_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.timedelta(minutes=60), "1h"),
        (dt.timedelta(minutes=90), "1h30m"),
        (dt.timedelta(hours=24), "24h"),
        (dt.timedelta(seconds=45), "45s"),
        (dt.timedelta(hours=1, seconds=1), "1h1s"),
        (dt.timedelta(0), "0s"),
    ],
)
def test_durations_format_and_round_trip(value: dt.timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


@pytest.mark.parametrize("value", [dt.timedelta(seconds=-1), dt.timedelta(milliseconds=1500)])
def test_durations_the_crd_cannot_hold_are_refused(value: dt.timedelta) -> None:
    with pytest.raises(ValueError, match="whole, non-negative"):
        format_duration(value)


def test_times_are_rfc3339_utc_with_z() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert format_time(dt.datetime(2026, 11, 21, 4, 0, 0, tzinfo=cet)) == "2026-11-21T03:00:00Z"
    assert format_time(T0.replace(microsecond=250000)) == "2026-11-21T03:00:00.250000Z"
    assert parse_time("2026-11-21T03:00:00.25Z") == T0.replace(microsecond=250000)
    assert parse_time("2026-11-21T04:00:00+01:00") == T0
    assert parse_time("2026-11-21t03:00:00z") == T0
    with pytest.raises(ValueError, match="no time zone"):
        format_time(dt.datetime(2026, 11, 21))
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time("2026-11-21")


# ------------------------------------------------------------------ conditions


def cond(
    type_: str = "Ready",
    status: Any = TRUE,
    reason: str = Reason.CHECK_PASSED,
    message: str = "ok",
    at: dt.datetime = T0,
) -> Condition:
    return Condition(type_, status, reason, message, 1, at)


def test_condition_round_trips_in_the_api_shape() -> None:
    c = Condition("Ready", FALSE, Reason.OS_MISMATCH, "Linux VM on a Windows MT", 4, T0)
    stored = c.to_dict()
    assert stored == {
        "type": "Ready",
        "status": "False",
        "reason": "OSMismatch",
        "message": "Linux VM on a Windows MT",
        "observedGeneration": 4,
        "lastTransitionTime": "2026-11-21T03:00:00Z",
    }
    assert Condition.from_dict(stored) == c
    del stored["observedGeneration"]
    assert Condition.from_dict(stored).observed_generation is None


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        (
            {
                "type": "Ready",
                "status": "Yes",
                "reason": "R",
                "message": "",
                "lastTransitionTime": "2026-11-21T03:00:00Z",
            },
            "condition.status",
        ),
        (
            {
                "type": "Ready",
                "status": "True",
                "message": "",
                "lastTransitionTime": "2026-11-21T03:00:00Z",
            },
            "condition.reason",
        ),
        (
            {"type": "Ready", "status": "True", "reason": "R", "message": ""},
            "condition.lastTransitionTime",
        ),
    ],
)
def test_bad_stored_conditions_name_the_field(stored: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        Condition.from_dict(stored)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("type_", "reason"),
    [("Bad Type", "CheckPassed"), ("Ready", "Check passed"), ("Ready", ""), ("Ready", "9Lives")],
)
def test_conditions_the_api_server_would_refuse_cannot_be_built(type_: str, reason: str) -> None:
    with pytest.raises(ValueError, match="not a valid condition"):
        Condition(type_, TRUE, reason, "", None, T0)


def test_long_messages_are_cut_to_what_the_crd_accepts() -> None:
    c = cond(message="x" * 40000)
    assert len(c.message) == 32768
    assert c.message.endswith("…")


SET_CASES = [
    # (before, new, after): transition time kept only when status is unchanged
    ([], cond(), [cond()]),
    (
        [cond(at=T0)],
        cond(reason=Reason.ALL_CHECKS_PASSED, message="new", at=T1),
        [cond(reason=Reason.ALL_CHECKS_PASSED, message="new", at=T0)],
    ),
    (
        [cond(at=T0)],
        cond(status=FALSE, reason=Reason.OS_MISMATCH, at=T1),
        [cond(status=FALSE, reason=Reason.OS_MISMATCH, at=T1)],
    ),
    (
        [cond("A", at=T0), cond("B", at=T0), cond("C", at=T0)],
        cond("B", status=UNKNOWN, reason=Reason.VCENTER_UNREACHABLE, at=T1),
        [
            cond("A", at=T0),
            cond("B", status=UNKNOWN, reason=Reason.VCENTER_UNREACHABLE, at=T1),
            cond("C", at=T0),
        ],
    ),
    ([cond("A")], cond("B", at=T1), [cond("A"), cond("B", at=T1)]),
]


@pytest.mark.parametrize(("before", "new", "after"), SET_CASES)
def test_set_condition(before: list[Condition], new: Condition, after: list[Condition]) -> None:
    snapshot = copy.deepcopy(before)
    assert set_condition(before, new) == after
    assert before == snapshot, "the input list is not changed"


def test_seed_adds_missing_types_as_unknown_and_keeps_the_rest() -> None:
    existing = [cond("Ready", FALSE, Reason.OS_MISMATCH, at=T0)]
    seeded = seed_conditions(existing, ["Ready", "ReplicationHealthy", "Heartbeat"], 7, T1)
    assert seeded[0] is existing[0]
    assert [
        (c.type, c.status, c.reason, c.observed_generation, c.last_transition_time)
        for c in seeded[1:]
    ] == [
        ("ReplicationHealthy", UNKNOWN, "Initializing", 7, T1),
        ("Heartbeat", UNKNOWN, "Initializing", 7, T1),
    ]
    assert seed_conditions(seeded, ["Ready", "Heartbeat"], 8, T1) == seeded


def test_seed_takes_a_reason_and_message() -> None:
    (c,) = seed_conditions(
        [], ["ServiceReachable"], 1, T0, Reason.SERVICE_CHECK_PENDING, "no MT answer yet"
    )
    assert (c.status, c.reason, c.message) == (UNKNOWN, "ServiceCheckPending", "no MT answer yet")


SUMMARY_CASES = [
    # (checks, status, reason, message)
    ([cond("A"), cond("B")], TRUE, "AllChecksPassed", "All 2 checks passed."),
    (
        [
            cond("A"),
            cond("B", FALSE, Reason.OS_MISMATCH, "os"),
            cond("C", FALSE, Reason.VM_NOT_FOUND, "gone"),
        ],
        FALSE,
        "OSMismatch",
        "B: os; C: gone",
    ),
    (
        [
            cond("A", UNKNOWN, Reason.WAITING_FOR_AGENT_REGISTRATION, "booting"),
            cond("B", FALSE, Reason.OS_MISMATCH, "os"),
        ],
        FALSE,
        "OSMismatch",
        "B: os",
    ),
    (
        [cond("A", UNKNOWN, Reason.WAITING_FOR_AGENT_REGISTRATION, "booting"), cond("B")],
        UNKNOWN,
        "WaitingForAgentRegistration",
        "A: booting",
    ),
    ([cond("A")], UNKNOWN, "Initializing", "B: not checked yet"),
]


@pytest.mark.parametrize(("checks", "status", "reason", "message"), SUMMARY_CASES)
def test_summarize(checks: list[Condition], status: Any, reason: str, message: str) -> None:
    ready = summarize(checks, ["A", "B", "C"][: max(2, len(checks))], 9, T1)
    assert (ready.type, ready.status, ready.reason, ready.message) == (
        "Ready",
        status,
        reason,
        message,
    )
    assert ready.observed_generation == 9


def test_find_condition() -> None:
    assert find_condition([cond("A"), cond("B")], "B") == cond("B")
    assert find_condition([cond("A")], "B") is None


# ------------------------------------------------------------------ which conditions apply


def test_protected_vm_condition_types_follow_the_spec() -> None:
    spec = protectedvm.parse(pvm()).spec
    applicable = protectedvm.condition_types(spec)
    assert ConditionType.ORIGINAL_VM_NO_SNAPSHOTS in applicable
    assert ConditionType.REPLICATION_GROUP_CONSISTENT in applicable
    assert ConditionType.SOURCE_OS_SUPPORTED not in applicable
    assert ConditionType.RETENTION_VOLUME_AVAILABLE not in applicable
    assert ConditionType.RPO_WITHIN_THRESHOLD not in protectedvm.ready_inputs(spec)
    assert ConditionType.READY not in protectedvm.ready_inputs(spec)

    physical = pvm()
    del physical["spec"]["onPrem"]["originalVM"]
    del physical["spec"]["replicationGroup"]
    physical["spec"].update(sourceType="Physical", retentionVolume="S:")
    applicable = protectedvm.condition_types(protectedvm.parse(physical).spec)
    assert ConditionType.SOURCE_OS_SUPPORTED in applicable
    assert ConditionType.RETENTION_VOLUME_AVAILABLE in applicable
    assert ConditionType.ORIGINAL_VM_NO_SNAPSHOTS not in applicable
    assert ConditionType.REPLICATION_GROUP_CONSISTENT not in applicable


def test_process_server_reports_deployed_only_when_it_deploys() -> None:
    spec = processserver.parse(ps()).spec
    assert ConditionType.DEPLOYED in processserver.ready_inputs(spec)
    byo = ps()
    byo["spec"].update(deploy=False, endpoint="https://ps:9443")
    del byo["spec"]["azure"]
    assert ConditionType.DEPLOYED not in processserver.condition_types(
        processserver.parse(byo).spec
    )


# ------------------------------------------------------------------ phases

PVM_PHASES = [
    ([], False, "Pending"),
    ([cond("Ready", UNKNOWN, Reason.INITIALIZING)], False, "Pending"),
    ([cond("Ready"), cond("RPOWithinThreshold", reason=Reason.RPO_MET)], False, "Protected"),
    ([cond("Ready"), cond("RPOWithinThreshold", FALSE, Reason.RPO_EXCEEDED)], False, "Degraded"),
    (
        [
            cond("Ready", FALSE, Reason.OS_MISMATCH),
            cond("OSMatchesMasterTarget", FALSE, Reason.OS_MISMATCH),
        ],
        False,
        "Error",
    ),
    (
        [
            cond("Ready", FALSE, Reason.UNPROTECTED),
            cond("ReplicationHealthy", FALSE, Reason.UNPROTECTED),
        ],
        False,
        "Unprotected",
    ),
    (
        [
            cond("Ready", FALSE, Reason.REPLICATION_FAILED),
            cond("ReplicationHealthy", FALSE, Reason.REPLICATION_FAILED),
        ],
        False,
        "Degraded",
    ),
    (
        [
            cond("Ready", UNKNOWN, Reason.INITIAL_SYNC),
            cond("ReplicationHealthy", UNKNOWN, Reason.INITIAL_SYNC),
        ],
        False,
        "Protecting",
    ),
    ([cond("Ready", UNKNOWN, Reason.VCENTER_UNREACHABLE)], False, "Validating"),
    ([cond("Ready")], True, "FailingBack"),
]


@pytest.mark.parametrize(("conditions", "failing_back", "phase"), PVM_PHASES)
def test_protected_vm_phase(conditions: list[Condition], failing_back: bool, phase: str) -> None:
    assert protectedvm.derive_phase(conditions, failing_back=failing_back) == phase


PLAN_PHASES = [
    ([], "Pending"),
    ([cond("Ready", FALSE, Reason.MEMBERS_NOT_READY)], "Pending"),
    ([cond("Ready", UNKNOWN, Reason.VCENTER_UNREACHABLE)], "Validating"),
    (
        [
            cond("Ready"),
            cond("Progressing", FALSE, Reason.IDLE),
            cond("Succeeded", UNKNOWN, Reason.NO_RUN),
        ],
        "Ready",
    ),
    ([cond("Ready"), cond("Progressing", TRUE, Reason.FAILING_OVER)], "FailingOver"),
    ([cond("Ready"), cond("Progressing", TRUE, Reason.VALIDATING)], "Validating"),
    ([cond("Ready"), cond("Progressing", FALSE, Reason.AWAITING_COMMIT_APPROVAL)], "FailedOver"),
    ([cond("Ready"), cond("Progressing", TRUE, Reason.COMMITTING)], "Committing"),
    ([cond("Ready"), cond("Progressing", TRUE, Reason.REPROTECTING)], "Reprotecting"),
    ([cond("Ready"), cond("Progressing", TRUE, Reason.CANCELLING)], "Cancelling"),
    (
        [
            cond("Ready"),
            cond("Progressing", FALSE, Reason.IDLE),
            cond("Succeeded", TRUE, Reason.COMMITTED),
        ],
        "Committed",
    ),
    (
        [
            cond("Ready"),
            cond("Progressing", FALSE, Reason.IDLE),
            cond("Succeeded", TRUE, Reason.COMPLETED),
        ],
        "Completed",
    ),
    ([cond("Ready"), cond("Succeeded", FALSE, Reason.FENCE_NOT_CONFIRMED)], "Failed"),
    ([cond("Ready"), cond("Succeeded", FALSE, Reason.CANCELLED)], "Ready"),
]


@pytest.mark.parametrize(("conditions", "phase"), PLAN_PHASES)
def test_plan_phase(conditions: list[Condition], phase: str) -> None:
    assert failbackplan.derive_phase(conditions) == phase


MT_PHASES = [
    ([], "Pending"),
    ([cond("Ready", UNKNOWN, Reason.SERVICE_CHECK_PENDING)], "Pending"),
    ([cond("Ready")], "Ready"),
    (
        [
            cond("Ready", FALSE, Reason.CONNECTION_FAILED),
            cond("ServiceReachable", FALSE, Reason.CONNECTION_FAILED),
        ],
        "Unreachable",
    ),
    ([cond("Ready", FALSE, Reason.DISK_UUID_DISABLED), cond("ServiceReachable")], "NotReady"),
]


@pytest.mark.parametrize(("conditions", "phase"), MT_PHASES)
def test_master_target_phase(conditions: list[Condition], phase: str) -> None:
    assert mastertarget.derive_phase(conditions) == phase


PS_PHASES = [
    ([], False, "Pending"),
    ([cond("Deployed", UNKNOWN, Reason.DEPLOYING)], False, "Deploying"),
    ([cond("Ready")], True, "Deleting"),
    ([cond("Ready"), cond("Healthy", reason=Reason.WITHIN_THRESHOLDS)], False, "Ready"),
    ([cond("Ready"), cond("Healthy", reason=Reason.THRESHOLD_WARNING)], False, "Degraded"),
    (
        [
            cond("Ready", FALSE, Reason.THRESHOLD_CRITICAL),
            cond("Healthy", FALSE, Reason.THRESHOLD_CRITICAL),
        ],
        False,
        "Degraded",
    ),
    (
        [
            cond("Ready", FALSE, Reason.TLS_VERIFICATION_FAILED),
            cond("Reachable", FALSE, Reason.TLS_VERIFICATION_FAILED),
        ],
        False,
        "Unreachable",
    ),
]


@pytest.mark.parametrize(("conditions", "deleting", "phase"), PS_PHASES)
def test_process_server_phase(conditions: list[Condition], deleting: bool, phase: str) -> None:
    assert processserver.derive_phase(conditions, deleting=deleting) == phase


# ------------------------------------------------------------------ writing status


def test_status_to_dict_is_camel_case_and_leaves_unset_fields_out() -> None:
    status = protectedvm.ProtectedVMStatus(
        observed_generation=2,
        active_site=protectedvm.Site.AZURE,
        replication=protectedvm.Replication(bytes_total=10, last_cycle_time=T0),
        conditions=(cond(),),
    )
    assert status.to_dict() == {
        "observedGeneration": 2,
        "activeSite": "Azure",
        "replication": {"bytesTotal": 10, "lastCycleTime": "2026-11-21T03:00:00Z"},
        "conditions": [cond().to_dict()],
    }


def test_merge_patch_removes_what_the_new_status_leaves_out() -> None:
    old = {
        "managedBy": "home",
        "replication": {"state": "Paused", "percent": 40},
        "phase": "FailingBack",
    }
    new = {"replication": {"state": "Replicating"}, "phase": "Protected", "rpoSeconds": 30}
    assert merge_patch(old, new) == {
        "managedBy": None,
        "replication": {"state": "Replicating", "percent": None},
        "phase": "Protected",
        "rpoSeconds": 30,
    }
    assert merge_patch(new, new) == {}


# ------------------------------------------------------------------ cross-object rules


def test_cross_object_rules_build_their_condition() -> None:
    c = crossobject.OS_MISMATCH.condition(
        3, T0, os_type="Linux", master_target_os_type="Windows", master_target="mt-win"
    )
    assert (c.type, c.status, c.reason) == ("OSMatchesMasterTarget", FALSE, "OSMismatch")
    assert c.message.startswith("This Linux VM cannot use Windows MasterTarget mt-win: ")
    assert crossobject.SECRET_KEY_MISSING.fields == ("name", "field", "key", "keys")


def test_cross_object_rules_are_reported_on_kinds_that_carry_their_condition() -> None:
    modules = {
        "ProtectedVM": protectedvm,
        "FailbackPlan": failbackplan,
        "MasterTarget": mastertarget,
        "ProcessServer": processserver,
    }
    for rule in crossobject.RULES:
        for kind in rule.reported_on:
            assert rule.condition_type in modules[kind].CONDITION_TYPES, (rule.title, kind)
