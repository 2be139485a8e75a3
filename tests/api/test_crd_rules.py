"""Every validation rule of the CRDs, applied to the real API server.

Each case takes a valid object, breaks one thing, and asserts the message a user
reads from `kubectl apply`: it must name the field and say what to do.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "failback.io", "v1alpha1"
SUB = "0b9e3a5c-1d2f-4e6a-8b7c-9d0e1f2a3b4c"
UUID_A = "42154fd2-3c5e-8a1b-6f9d-0e2c4b6a8d10"
UUID_B = "4215a0b1-c2d3-e4f5-a6b7-c8d9e0f1a2b3"

Obj = dict[str, Any]


def protected_vm() -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProtectedVM",
        "metadata": {"name": "web-01"},
        "spec": {
            "azure": {
                "vmId": f"/subscriptions/{SUB}/resourceGroups/dr-rg/providers/"
                "Microsoft.Compute/virtualMachines/web-01",
                "credentialsSecretRef": {"name": "azure-credentials"},
            },
            "onPrem": {
                "vcenterSecretRef": {"name": "vcenter"},
                "originalVM": {"instanceUUID": UUID_A},
            },
            "osType": "Linux",
            "masterTargetRef": {"name": "mt-linux"},
            "processServerRef": {"name": "ps-azure"},
        },
    }


def physical() -> Obj:
    obj = protected_vm()
    del obj["spec"]["onPrem"]["originalVM"]
    obj["spec"]["sourceType"] = "Physical"
    obj["spec"]["onPrem"]["alternatePlacement"] = {
        "datacenter": "DC0",
        "cluster": "DC0_C0",
        "datastore": "LocalDS_0",
    }
    return obj


def plan() -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FailbackPlan",
        "metadata": {"name": "home"},
        "spec": {
            "activeSite": "Azure",
            "groups": [
                {"name": "databases", "members": ["db-01"]},
                {"name": "apps", "members": ["app-01", "app-02"]},
            ],
        },
    }


def master_target() -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MasterTarget",
        "metadata": {"name": "mt-linux"},
        "spec": {
            "vcenterSecretRef": {"name": "vcenter"},
            "vm": {"instanceUUID": UUID_A},
            "osType": "Linux",
            "endpoint": "https://mt-linux.corp.example:9443",
            "tlsSecretRef": {"name": "mt-linux-tls"},
        },
    }


def process_server() -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProcessServer",
        "metadata": {"name": "ps-azure"},
        "spec": {
            "location": "Azure",
            "connectivity": "S2SVPN",
            "endpoint": "https://10.20.0.4:9443",
            "tlsSecretRef": {"name": "ps-tls"},
        },
    }


def deployed_process_server() -> Obj:
    obj = process_server()
    obj["spec"]["deploy"] = True
    obj["spec"]["azure"] = {
        "subscriptionId": SUB,
        "resourceGroup": "rg-dr",
        "region": "westeurope",
        "subnetId": f"/subscriptions/{SUB}/resourceGroups/rg-net/providers/"
        "Microsoft.Network/virtualNetworks/vnet-dr/subnets/replication",
        "vmSize": "Standard_D4s_v5",
        "image": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                  "version": "latest"},
        "credentialsSecretRef": {"name": "azure-credentials"},
    }  # fmt: skip
    return obj


PLURALS = {
    "ProtectedVM": "protectedvms",
    "FailbackPlan": "failbackplans",
    "MasterTarget": "mastertargets",
    "ProcessServer": "processservers",
}


def create(api: client.CustomObjectsApi, namespace: str, obj: Obj, *, dry_run: bool) -> Obj:
    kwargs = {"dry_run": "All"} if dry_run else {}
    created: Obj = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj, **kwargs
    )
    return created


@pytest.fixture
def api(k8s_client: Any, crds_installed: list[str]) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_client)


# ------------------------------------------------------------------ valid objects


@pytest.mark.parametrize(
    "make", [protected_vm, physical, plan, master_target, process_server, deployed_process_server]
)
def test_valid_objects_are_accepted(
    api: client.CustomObjectsApi, namespace: str, make: Callable[[], Obj]
) -> None:
    create(api, namespace, make(), dry_run=True)


def test_defaults_are_the_failback_policy(api: client.CustomObjectsApi, namespace: str) -> None:
    pvm = create(api, namespace, protected_vm(), dry_run=True)
    assert pvm["spec"]["policy"] == {
        "rpoThreshold": "15m",
        "recoveryPointRetention": "24h",
        "appConsistentFrequency": "60m",
    }
    assert pvm["spec"]["sourceType"] == "VMware"
    assert pvm["spec"]["onPrem"]["failbackLocation"] == "Auto"

    fbp = create(api, namespace, plan(), dry_run=True)
    assert fbp["spec"]["failover"] == {
        "type": "Planned",
        "recoveryPoint": {"type": "Latest"},
        "multiVmConsistency": True,
        "force": False,
    }
    assert fbp["spec"]["commit"] == {"mode": "Automatic"}
    assert fbp["spec"]["reprotectAfterCommit"] is True
    assert fbp["spec"]["dryRun"] is False


# ------------------------------------------------------------------ bad objects


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def apply(obj: Obj) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return apply


def _delete(path: str) -> Callable[[Obj], None]:
    def apply(obj: Obj) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            node = node[key]
        del node[leaf]

    return apply


def _groups(*groups: tuple[str, list[str]]) -> Callable[[Obj], None]:
    return _set("spec.groups", [{"name": n, "members": m} for n, m in groups])


BAD: list[tuple[str, Callable[[], Obj], Callable[[Obj], None], str]] = [
    # ProtectedVM
    (
        "pvm-group-name",
        protected_vm,
        _set("metadata.name", "group.erp"),
        "metadata.name may not begin with 'group.'",
    ),
    (
        "pvm-vmid-pattern",
        protected_vm,
        _set("spec.azure.vmId", "web-01"),
        "spec.azure.vmId in body should match",
    ),
    (
        "pvm-no-credentials",
        protected_vm,
        _delete("spec.azure.credentialsSecretRef"),
        "spec.azure needs exactly one of credentialsSecretRef",
    ),
    (
        "pvm-two-credentials",
        protected_vm,
        _set("spec.azure.workloadIdentity", {"clientId": UUID_A, "tenantId": UUID_B}),
        "spec.azure needs exactly one of credentialsSecretRef",
    ),
    (
        "pvm-os",
        protected_vm,
        _set("spec.osType", "Solaris"),
        'spec.osType: Unsupported value: "Solaris"',
    ),
    (
        "pvm-no-mt",
        protected_vm,
        _delete("spec.masterTargetRef"),
        "spec.masterTargetRef: Required value",
    ),
    (
        "pvm-uuid-pattern",
        protected_vm,
        _set("spec.onPrem.originalVM.instanceUUID", "vm-42"),
        "spec.onPrem.originalVM.instanceUUID in body should match",
    ),
    (
        "pvm-nowhere",
        protected_vm,
        _delete("spec.onPrem.originalVM"),
        "spec.onPrem needs originalVM",
    ),
    (
        "pvm-physical-no-placement",
        physical,
        _delete("spec.onPrem.alternatePlacement"),
        "spec.onPrem.alternatePlacement is required when spec.sourceType is Physical",
    ),
    (
        "pvm-physical-original",
        physical,
        _set("spec.onPrem.failbackLocation", "Original"),
        "spec.onPrem.failbackLocation cannot be Original when spec.sourceType is Physical",
    ),
    (
        "pvm-physical-original-vm",
        physical,
        _set("spec.onPrem.originalVM", {"instanceUUID": UUID_A}),
        "spec.onPrem.originalVM must not be set when spec.sourceType is Physical",
    ),
    (
        "pvm-alternate-without-placement",
        protected_vm,
        _set("spec.onPrem.failbackLocation", "Alternate"),
        "spec.onPrem.alternatePlacement is required when spec.onPrem.failbackLocation is Alternate",
    ),
    (
        "pvm-placement-cluster-and-host",
        physical,
        _set("spec.onPrem.alternatePlacement.host", "DC0_H0"),
        "needs exactly one of cluster or host",
    ),
    (
        "pvm-rpo-low",
        protected_vm,
        _set("spec.policy", {"rpoThreshold": "30s"}),
        "spec.policy.rpoThreshold must be a duration like 15m, between 1m and 24h",
    ),
    (
        "pvm-rpo-garbage",
        protected_vm,
        _set("spec.policy", {"rpoThreshold": "soon"}),
        "spec.policy.rpoThreshold must be a duration like 15m",
    ),
    (
        "pvm-retention-high",
        protected_vm,
        _set("spec.policy", {"recoveryPointRetention": "100h"}),
        "spec.policy.recoveryPointRetention must be a duration like 24h, between 1h and 72h",
    ),
    (
        "pvm-app-frequency",
        protected_vm,
        _set("spec.policy", {"appConsistentFrequency": "5m"}),
        "spec.policy.appConsistentFrequency must be 0s (off) or a duration like 60m",
    ),
    (
        "pvm-app-over-retention",
        protected_vm,
        _set("spec.policy", {"recoveryPointRetention": "2h", "appConsistentFrequency": "3h"}),
        "spec.policy.appConsistentFrequency must not exceed spec.policy.recoveryPointRetention",
    ),
    (
        "pvm-group-name",
        protected_vm,
        _set("spec.replicationGroup", "Finance DB"),
        "spec.replicationGroup in body should match",
    ),
    (
        "pvm-retention-volume",
        protected_vm,
        _set("spec.retentionVolume", "retention"),
        "spec.retentionVolume in body should match",
    ),
    # FailbackPlan
    (
        "fbp-no-groups",
        plan,
        _set("spec.groups", []),
        "spec.groups: Invalid value: 0: spec.groups in body should have at least 1 items",
    ),
    (
        "fbp-empty-group",
        plan,
        _groups(("g", [])),
        "spec.groups[0].members in body should have at least 1 items",
    ),
    ("fbp-site", plan, _set("spec.activeSite", "GCP"), 'spec.activeSite: Unsupported value: "GCP"'),
    (
        "fbp-over-100",
        plan,
        _groups(("a", [f"vm-{i}" for i in range(60)]), ("b", [f"vm-{i}" for i in range(60, 120)])),
        "spec.groups holds more than 100 VMs in all",
    ),
    (
        "fbp-vm-twice",
        plan,
        _groups(("a", ["vm-1"]), ("b", ["vm-1"])),
        "a VM may appear in only one group of the plan",
    ),
    (
        "fbp-vm-twice-in-group",
        plan,
        _groups(("a", ["vm-1", "vm-1"])),
        "spec.groups[0].members[1]: Duplicate value",
    ),
    (
        "fbp-group-name-twice",
        plan,
        _groups(("a", ["vm-1"]), ("a", ["vm-2"])),
        "spec.groups[].name must be unique",
    ),
    (
        "fbp-force-planned",
        plan,
        _set(
            "spec.failover", {"type": "Planned", "force": True, "forceReason": "Azure region down"}
        ),
        "spec.failover.force is allowed only with spec.failover.type Unplanned",
    ),
    (
        "fbp-force-no-reason",
        plan,
        _set("spec.failover", {"type": "Unplanned", "force": True}),
        "spec.failover.forceReason is required with spec.failover.force",
    ),
    (
        "fbp-force-empty-reason",
        plan,
        _set("spec.failover", {"type": "Unplanned", "force": True, "forceReason": ""}),
        "spec.failover.forceReason is required with spec.failover.force",
    ),
    (
        "fbp-pit-no-time",
        plan,
        _set("spec.failover", {"recoveryPoint": {"type": "PointInTime"}}),
        "spec.failover.recoveryPoint.time is required when spec.failover.recoveryPoint.type is "
        "PointInTime",
    ),
    (
        "fbp-time-without-pit",
        plan,
        _set(
            "spec.failover", {"recoveryPoint": {"type": "Latest", "time": "2026-11-21T03:00:00Z"}}
        ),
        "spec.failover.recoveryPoint.time is required when",
    ),
    (
        "fbp-pit-bad-time",
        plan,
        _set(
            "spec.failover",
            {
                "type": "Unplanned",
                "recoveryPoint": {"type": "PointInTime", "time": "yesterday 3am"},
            },
        ),
        "spec.failover.recoveryPoint.time in body must be of type date-time",
    ),
    (
        "fbp-recovery-point-type",
        plan,
        _set("spec.failover", {"recoveryPoint": {"type": "Oldest"}}),
        'spec.failover.recoveryPoint.type: Unsupported value: "Oldest"',
    ),
    (
        "fbp-commit-mode",
        plan,
        _set("spec.commit", {"mode": "Sometimes"}),
        'spec.commit.mode: Unsupported value: "Sometimes"',
    ),
    # MasterTarget
    (
        "mt-endpoint-http",
        master_target,
        _set("spec.endpoint", "http://mt:9443"),
        "spec.endpoint must be an https URL with a host and no path",
    ),
    (
        "mt-endpoint-path",
        master_target,
        _set("spec.endpoint", "https://mt:9443/api"),
        "spec.endpoint must be an https URL with a host and no path",
    ),
    (
        "mt-retention-linux-drive",
        master_target,
        _set("spec.retentionVolume", "R:"),
        "spec.retentionVolume must be a drive letter on a Windows master target",
    ),
    (
        "mt-retention-garbage",
        master_target,
        _set("spec.retentionVolume", "retention"),
        "spec.retentionVolume must be a drive letter like R: (Windows) or an absolute path",
    ),
    ("mt-no-vm", master_target, _delete("spec.vm"), "spec.vm: Required value"),
    # ProcessServer
    (
        "ps-onprem-vpn",
        process_server,
        _set("spec.location", "OnPrem"),
        "spec.location OnPrem needs spec.connectivity ExpressRoute",
    ),
    (
        "ps-deploy-onprem",
        process_server,
        lambda o: o["spec"].update(location="OnPrem", connectivity="ExpressRoute", deploy=True),
        "spec.deploy is only for spec.location Azure",
    ),
    (
        "ps-deploy-no-azure",
        process_server,
        _set("spec.deploy", True),
        "spec.azure (resource group, subnet, size, image, credentials) is required when "
        "spec.deploy is true",
    ),
    (
        "ps-no-endpoint",
        process_server,
        _delete("spec.endpoint"),
        "spec.endpoint is required for a process server the operator does not deploy",
    ),
    (
        "ps-endpoint-http",
        process_server,
        _set("spec.endpoint", "ftp://ps"),
        "spec.endpoint must be an https URL",
    ),
    (
        "ps-delete-after-failback-without-deploy",
        process_server,
        _set("spec.deleteAfterFailback", True),
        "spec.deleteAfterFailback needs spec.deploy",
    ),
    (
        "ps-subnet-in-another-subscription",
        deployed_process_server,
        _set(
            "spec.azure.subnetId",
            "/subscriptions/11111111-2222-4333-8444-555555555555/resourceGroups/rg-net/"
            "providers/Microsoft.Network/virtualNetworks/vnet-dr/subnets/replication",
        ),
        "spec.azure.subnetId must be in spec.azure.subscriptionId",
    ),
    (
        "pvm-policy-not-a-duration",
        protected_vm,
        _set("spec.policy", {"appConsistentFrequency": "hourly"}),
        "spec.policy.appConsistentFrequency must be 0s (off) or a duration like 60m",
    ),
]


@pytest.mark.parametrize(("case", "make", "breaks", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_object_is_rejected_with_a_message_naming_the_field(
    api: client.CustomObjectsApi,
    namespace: str,
    case: str,
    make: Callable[[], Obj],
    breaks: Callable[[Obj], None],
    message: str,
) -> None:
    obj = make()
    breaks(obj)
    with pytest.raises(ApiException) as rejected:
        create(api, namespace, obj, dry_run=True)
    assert rejected.value.status == 422, rejected.value.body
    assert message in json.loads(rejected.value.body)["message"]


# ------------------------------------------------------------------ immutable fields

IMMUTABLE: list[tuple[str, Callable[[], Obj], dict[str, Any], str]] = [
    (
        "azure-vm-id",
        protected_vm,
        {
            "spec": {
                "azure": {
                    "vmId": f"/subscriptions/{SUB}/resourceGroups/dr-rg/providers/"
                    "Microsoft.Compute/virtualMachines/other"
                }
            }
        },
        "spec.azure.vmId is immutable",
    ),
    (
        "original-vm-uuid",
        protected_vm,
        {"spec": {"onPrem": {"originalVM": {"instanceUUID": UUID_B}}}},
        "spec.onPrem.originalVM.instanceUUID is immutable",
    ),
    ("pvm-os-type", protected_vm, {"spec": {"osType": "Windows"}}, "spec.osType is immutable"),
    (
        "pvm-source-type",
        protected_vm,
        {
            "spec": {
                "sourceType": "Physical",
                "onPrem": {
                    "alternatePlacement": {
                        "datacenter": "DC0",
                        "host": "DC0_H0",
                        "datastore": "LocalDS_0",
                    }
                },
            }
        },
        "spec.sourceType is immutable",
    ),
    (
        "original-vm-removed",
        protected_vm,
        {
            "spec": {
                "onPrem": {
                    "originalVM": None,
                    "alternatePlacement": {
                        "datacenter": "DC0",
                        "host": "DC0_H0",
                        "datastore": "LocalDS_0",
                    },
                }
            }
        },
        "spec.onPrem.originalVM cannot be removed once set",
    ),
    (
        "ps-azure-removed",
        deployed_process_server,
        {"spec": {"deploy": False, "azure": None, "endpoint": "https://10.20.0.4:9443"}},
        "spec.azure cannot be removed once set",
    ),
    ("mt-vm", master_target, {"spec": {"vm": {"instanceUUID": UUID_B}}}, "spec.vm is immutable"),
    (
        "mt-os-type",
        master_target,
        {"spec": {"osType": "Windows", "retentionVolume": "R:"}},
        "spec.osType is immutable",
    ),
    (
        "ps-location",
        process_server,
        {"spec": {"location": "OnPrem", "connectivity": "ExpressRoute"}},
        "spec.location is immutable",
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "patch", "message"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE]
)
def test_identity_fields_are_immutable(
    api: client.CustomObjectsApi,
    namespace: str,
    case: str,
    make: Callable[[], Obj],
    patch: dict[str, Any],
    message: str,
) -> None:
    obj = make()
    obj["metadata"]["name"] = f"{case}-{uuid.uuid4().hex[:6]}"
    create(api, namespace, obj, dry_run=False)
    with pytest.raises(ApiException) as rejected:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURALS[obj["kind"]],
            obj["metadata"]["name"],
            copy.deepcopy(patch),
        )
    assert rejected.value.status == 422, rejected.value.body
    assert message in json.loads(rejected.value.body)["message"]


def test_a_non_duration_policy_gets_only_its_own_message(
    api: client.CustomObjectsApi, namespace: str
) -> None:
    """The cross-field policy rule must not add a CEL type-conversion error for a typo."""
    obj = protected_vm()
    obj["spec"]["policy"] = {"recoveryPointRetention": "1 day"}
    with pytest.raises(ApiException) as rejected:
        create(api, namespace, obj, dry_run=True)
    message = json.loads(rejected.value.body)["message"]
    assert "spec.policy.recoveryPointRetention must be a duration like 24h" in message
    assert "type conversion error" not in message


def test_status_accepts_more_than_60_disks_in_use(
    api: client.CustomObjectsApi, namespace: str
) -> None:
    """Over 60 disks is a condition to report (R-PRE-18), not a status to reject."""
    obj = master_target()
    create(api, namespace, obj, dry_run=False)
    patched = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "mastertargets", obj["metadata"]["name"],
        {"status": {"disksInUse": 61, "diskLimit": 60}},
    )  # fmt: skip
    assert patched["status"]["disksInUse"] == 61


def test_mutable_fields_stay_mutable(api: client.CustomObjectsApi, namespace: str) -> None:
    """Flipping activeSite is the failback: the schema must never block it."""
    create(api, namespace, plan(), dry_run=False)
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "failbackplans", "home", {"spec": {"activeSite": "OnPrem"}}
    )
    assert patched["spec"]["activeSite"] == "OnPrem"
