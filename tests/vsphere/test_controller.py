"""The MasterTarget controller inside `failback operator`, against the real API server and
vcsim: the status comes from vCenter (and the service's endpoint, where nothing listens),
and the vCenter session is logged out at shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from failback.api.constants import GROUP, MASTER_TARGET, VERSION
from testbed.kube import Kube
from testbed.pki import Pki
from testbed.tools import Tool
from testbed.vcsim import VCenter

from .conftest import VMMaker, put_secret, vcenter_secret
from .test_mastertarget import NOBODY, pki_tls

CRDS = Path(__file__).resolve().parents[2] / "crds"
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _wait(what: str, check: Callable[[], bool], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} within {timeout:g}s; operator log:\n{log.read_text()[-12000:]}")


def install(kubectl: Tool, k8s_client: Any, namespace: str) -> None:
    """Every CRD of crds/, and the peering object the operator keeps alive, as deployed."""
    for crd in sorted(CRDS.glob("*.yaml")):
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl.run(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
        "app.kubernetes.io/part-of=failback-operator",
    )  # fmt: skip
    peering = yaml.safe_load((MANIFESTS / "peering.yaml").read_text())
    peering["metadata"]["namespace"] = namespace
    deadline = time.monotonic() + 30
    while True:  # a CRD just Established can still 404 for a moment
        try:
            client.CustomObjectsApi(k8s_client).create_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", peering
            )
            return
        except client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def test_the_operator_checks_master_targets_on_vcenter(
    kube: Kube,
    kubectl: Tool,
    k8s_client: Any,
    namespace: str,
    vcenter: VCenter,
    make_vm: VMMaker,
    si: Any,
    tmp_path: Path,
) -> None:
    install(kubectl, k8s_client, namespace)
    uuid_ = await make_vm()
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter))
    put_secret(k8s_client, namespace, "mt-tls", pki_tls(Pki(tmp_path / "pki")))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": MASTER_TARGET.kind,
        "metadata": {"name": "mt-01", "namespace": namespace},
        "spec": {
            "vcenterSecretRef": {"name": "vcenter"},
            "vm": {"instanceUUID": uuid_},
            "osType": "Linux",
            "endpoint": NOBODY,
            "tlsSecretRef": {"name": "mt-tls"},
        },
    }
    api = client.CustomObjectsApi(k8s_client)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, MASTER_TARGET.plural, body)
    before = {s.key for s in si.content.sessionManager.sessionList}

    log = tmp_path / "operator.log"
    script = Path(sys.executable).parent / "failback"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once; the test then only polls)
            [str(script), "operator", "--namespace", namespace, "--recheck-interval", "2"],
            env={"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin",
                 "HOME": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def status() -> dict[str, Any]:
            obj = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, MASTER_TARGET.plural, "mt-01"
            )
            return dict(obj.get("status") or {})

        def checked() -> bool:
            conditions = {c["type"]: c for c in status().get("conditions", [])}
            return conditions.get("DiskUUIDEnabled", {}).get("status") == "True"

        _wait("the MasterTarget was checked on vCenter", checked, log)
        got = status()
        conditions = {c["type"]: c for c in got["conditions"]}
        assert conditions["NoSnapshots"]["status"] == "True"
        assert conditions["VMwareToolsRunning"]["reason"] == "VMwareToolsNotRunning"
        assert conditions["ServiceReachable"]["status"] == "False"
        assert conditions["ServiceReachable"]["reason"] == "ConnectionFailed"
        assert NOBODY in conditions["ServiceReachable"]["message"]
        assert conditions["RetentionVolumeValid"]["reason"] == "ServiceCheckPending"
        assert conditions["Ready"]["status"] == "False"
        assert got["host"] == "DC0_H0"
        assert got["disksInUse"] == 1
        assert got["diskLimit"] == 60
        assert got["registeredDatastores"] == ["FB_VMFS_0"]
        assert any(d["name"] == "FB_VMFS_0" and d["type"] == "VMFS" for d in got["datastores"])
        opened = {s.key for s in si.content.sessionManager.sessionList} - before
        assert len(opened) == 1, "one vCenter session for the operator"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert not opened & {s.key for s in si.content.sessionManager.sessionList}, (
        "the operator logged its vCenter session out at shutdown"
    )
    for line in text.splitlines():
        record = json.loads(line)
        level = record.get("severity", record.get("levelname", "")).lower()
        # kopf retries API calls a just-installed CRD's storage refuses for a moment.
        transient = "will retry" in record.get("message", "")
        assert transient or level not in {"error", "critical"}, line
        assert vcenter.password not in line, "a password reached the log"
