"""The operator on the test bed, installed the way a user installs it.

``install_and_start`` applies ``manifests/`` (namespace, ServiceAccount, least-privilege
RBAC, peering object) and the samples, then starts ``failback operator`` as a process
with the ServiceAccount's own token, so what it may do is exactly what the manifests
grant. The Deployment itself is not applied: the test bed runs no kubelet.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed.kube import Kube, service_account_kubeconfig
from testbed.procs import TestbedError, log_tail, spawn, stop
from testbed.tools import Tool

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
NAMESPACE = "failback-system"
ACCOUNT = "failback-operator"
INSTALL_ORDER = ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "peering.yaml")


@dataclass(frozen=True)
class Operator:
    pid: int
    log_file: Path
    kubeconfig: Path
    namespace: str = NAMESPACE


def _apply(kubectl: Tool, path: Path) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(path))


def install(kubectl: Tool) -> None:
    """The manifests a user applies before the operator runs, then the samples."""
    for name in INSTALL_ORDER:
        _apply(kubectl, MANIFESTS / name)
    _apply(kubectl, MANIFESTS / "samples")


def _failback_script() -> Path:
    script = Path(sys.executable).parent / "failback"
    if not script.is_file():
        raise TestbedError(f"{script} is missing: install the project with `make venv`")
    return script


def start(kube: Kube, workdir: Path, recheck_interval: float = 30.0) -> Operator:
    """Start ``failback operator`` detached, as its ServiceAccount; wait until it reconciles."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = service_account_kubeconfig(
        kube, NAMESPACE, ACCOUNT, workdir / "operator.kubeconfig", expiration_seconds=86400
    )
    log = workdir / "operator.log"
    proc = spawn(
        [
            str(_failback_script()),
            "operator",
            f"--namespace={NAMESPACE}",
            f"--recheck-interval={recheck_interval:g}",
            "--log-format=text",
        ],
        log,
        env={"KUBECONFIG": str(kubeconfig), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    return Operator(pid=proc.pid, log_file=log, kubeconfig=kubeconfig)


def wait_reconciled(kubectl: Tool, operator: Operator, timeout: float = 60.0) -> None:
    """Until every sample object in the namespace has a status with conditions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = kubectl.run("get", "failback", "-n", operator.namespace, "-o", "yaml").stdout
        items = (yaml.safe_load(listed) or {}).get("items", [])
        if items and all((i.get("status") or {}).get("conditions") for i in items):
            return
        time.sleep(0.5)
    stop(operator.pid)
    raise TestbedError(
        f"the operator did not reconcile the samples within {timeout:g}s; last lines of "
        f"{operator.log_file}:\n{log_tail(operator.log_file)}"
    )
