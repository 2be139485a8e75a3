"""The ProtectedVM controller end to end: `failback operator`, as its least-privilege
ServiceAccount, judges a ProtectedVM against vcsim, the Azure emulator and the objects it
names, and catches drift on its re-check timer (a snapshot taken on the original VM).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from failback.api.constants import GROUP, VERSION
from testbed import operator as operator_
from testbed.azure.process import AzureEmulator
from testbed.kube import Kube
from testbed.procs import stop
from testbed.tools import Tool
from testbed.vcsim import VCenter

from .conftest import VMMaker, put_secret, vcenter_secret, vm_of, wait_task
from .test_mastertarget import TLS

RG = "rg-pvm-operator"


def _apply(kubectl: Tool, *objects: dict[str, Any]) -> None:
    kubectl.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))


def _get(k8s_client: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = client.CustomObjectsApi(k8s_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return got


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"])
        for c in (obj.get("status") or {}).get("conditions", [])
    }


def _wait(what: str, check: Callable[[], bool], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:g}s; operator log:\n{log.read_text()[-6000:]}")


@pytest.fixture
def operator_ns(
    namespace: str,
    kubectl: Tool,
    crds_installed: list[str],
    k8s_client: Any,
    vcenter: VCenter,
    azure_emulator: AzureEmulator,
) -> str:
    """The namespace with the operator's RBAC and peering object, and every Secret."""
    operator_.install_into(kubectl, namespace)
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter))
    put_secret(k8s_client, namespace, "mt-tls", TLS)
    put_secret(
        k8s_client,
        namespace,
        "azure",
        {
            "tenantId": azure_emulator.tenant_id,
            "clientId": azure_emulator.client_id,
            "clientSecret": azure_emulator.client_secret,
        },
    )
    return namespace


@pytest.fixture
def running_operator(
    operator_ns: str, kube: Kube, azure_emulator: AzureEmulator, tmp_path: Path
) -> Iterator[operator_.Operator]:
    op = operator_.start(
        kube,
        tmp_path / "operator",
        recheck_interval=2,
        namespace=operator_ns,
        log_format="json",
        extra_args=[
            f"--azure-arm-endpoint={azure_emulator.arm_url}",
            f"--azure-authority={azure_emulator.authority}",
            f"--azure-ca-file={azure_emulator.ca_file}",
        ],
    )
    try:
        yield op
    finally:
        stop(op.pid)


async def test_a_protected_vm_is_judged_on_both_sites_and_drift_is_caught(
    running_operator: operator_.Operator,
    operator_ns: str,
    kubectl: Tool,
    k8s_client: Any,
    azure_emulator: AzureEmulator,
    make_vm: VMMaker,
    si: Any,
) -> None:
    ns, log = operator_ns, running_operator.log_file
    mt_uuid = await make_vm()
    original_uuid = await make_vm()
    vm_name = f"web-{uuid.uuid4().hex[:6]}"
    azure_emulator.control.create_resource_group(RG)
    azure_emulator.control.create_vm(RG, vm_name, os_type="Linux")
    vm_id = (
        f"/subscriptions/{azure_emulator.subscription_id}/resourceGroups/{RG}"
        f"/providers/Microsoft.Compute/virtualMachines/{vm_name}"
    )
    meta = {"namespace": ns}
    _apply(
        kubectl,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MasterTarget",
            "metadata": {"name": "mt", **meta},
            "spec": {
                "vcenterSecretRef": {"name": "vcenter"},
                "vm": {"instanceUUID": mt_uuid},
                "osType": "Linux",
                "endpoint": "https://127.0.0.1:9",
                "tlsSecretRef": {"name": "mt-tls"},
            },
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ProcessServer",
            "metadata": {"name": "ps", **meta},
            "spec": {
                "location": "OnPrem",
                "connectivity": "ExpressRoute",
                "endpoint": "https://127.0.0.1:9",
                "tlsSecretRef": {"name": "mt-tls"},
            },
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ProtectedVM",
            "metadata": {"name": vm_name, **meta},
            "spec": {
                "azure": {"vmId": vm_id, "credentialsSecretRef": {"name": "azure"}},
                "onPrem": {
                    "vcenterSecretRef": {"name": "vcenter"},
                    "originalVM": {"instanceUUID": original_uuid},
                },
                "osType": "Linux",
                "masterTargetRef": {"name": "mt"},
                "processServerRef": {"name": "ps"},
            },
        },
    )

    def judged() -> bool:
        conds = _conditions(_get(k8s_client, ns, "protectedvms", vm_name))
        wanted = ("ReferencesResolved", "OSMatchesMasterTarget", "VCenterPermissions",
                  "LocationResolved", "OriginalVMNoSnapshots")  # fmt: skip
        return all(conds.get(t, ("",))[0] == "True" for t in wanted)

    _wait("the ProtectedVM's references, OS, permissions and location were judged", judged, log)
    pvm = _get(k8s_client, ns, "protectedvms", vm_name)
    conds = _conditions(pvm)
    # R-LOC-1: the original VM exists, so it fails back into it with a delta sync.
    assert pvm["status"]["location"]["target"] == "Original", pvm["status"]["location"]
    assert pvm["status"]["location"]["sync"] == "Delta", pvm["status"]["location"]
    # The Azure side was read through the emulator: the check is past its first pass.
    assert conds["AgentRegistered"][1] != "Initializing", conds["AgentRegistered"]
    # Its process server listens nowhere: replication cannot start, and says where it asked.
    health = conds["ReplicationHealthy"]
    assert health[:2] == ("Unknown", "ReplicationFailed"), health
    assert "https://127.0.0.1:9" in health[2], health
    assert conds["Ready"][0] in {"Unknown", "False"}, "not protected until replication runs"

    # Drift: a snapshot on the original VM (R-PRE-2) is caught by the re-check timer.
    wait_task(vm_of(si, original_uuid).CreateSnapshot_Task("user-snap", "", False, False))

    def snapshot_seen() -> bool:
        conds = _conditions(_get(k8s_client, ns, "protectedvms", vm_name))
        return conds.get("OriginalVMNoSnapshots", ("",))[0] == "False"

    _wait("the snapshot on the original VM turned OriginalVMNoSnapshots False", snapshot_seen, log)
    message = _conditions(_get(k8s_client, ns, "protectedvms", vm_name))["OriginalVMNoSnapshots"]
    assert "user-snap" in message[2] or "snapshot" in message[2].lower(), message

    # A clean stop, and nothing alarming in the log.
    stop(running_operator.pid)  # SIGTERM first
    for line in log.read_text().splitlines():
        record = json.loads(line)
        assert record.get("severity") not in {"error", "critical"}, line
        assert "forbidden" not in line.lower(), line
