"""The operator on the test bed, installed the way a user installs it.

``install_and_start`` applies ``manifests/`` (namespace, ServiceAccount, least-privilege
RBAC, peering object) and the samples, then starts ``failback operator`` as a process
with the ServiceAccount's own token, so what it may do is exactly what the manifests
grant. The Deployment itself is not applied: the test bed runs no kubelet.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def install_crds(kubectl: Tool) -> list[str]:
    """Every CRD of ``crds/``, applied server-side, once they are Established."""
    crds = sorted((REPO / "crds").glob("*.yaml"))
    for crd in crds:
        _apply(kubectl, crd)
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=failback-operator",
    )
    # Established is not yet served: right after, a list can still answer 429 "storage is
    # (re)initializing". Wait until every kind lists, so clients start on a ready API.
    kinds = ",".join(_kinds(crds))
    deadline = time.monotonic() + 60
    while kubectl.run("get", kinds, "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            kubectl.run("get", kinds, "-A")  # raises with kubectl's own error
        time.sleep(0.2)
    return [c.name for c in crds]


def _kinds(crds: Sequence[Path]) -> list[str]:
    """``plural.group`` of every CRD in ``crds``."""
    out = []
    for path in crds:
        doc = yaml.safe_load(path.read_text())
        out.append(f"{doc['spec']['names']['plural']}.{doc['spec']['group']}")
    return out


def _apply(kubectl: Tool, path: Path) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(path))


def install(kubectl: Tool) -> None:
    """The manifests a user applies before the operator runs, then the samples."""
    for name in INSTALL_ORDER:
        _apply(kubectl, MANIFESTS / name)
    _apply(kubectl, MANIFESTS / "samples")


def moved(docs: Sequence[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """Manifests written for failback-system, moved to ``namespace`` (a test's own)."""
    text = json.dumps(list(docs)).replace(f'"{NAMESPACE}"', f'"{namespace}"')
    out: list[dict[str, Any]] = json.loads(text)
    return out


def install_into(kubectl: Tool, namespace: str) -> None:
    """ServiceAccount, RBAC and peering object of ``manifests/`` in ``namespace``, so an
    operator serving it runs with exactly the rights a user grants."""
    for name in INSTALL_ORDER[1:]:
        docs = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
        kubectl.run(
            "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(moved(docs, namespace))
        )


def _failback_script() -> Path:
    script = Path(sys.executable).parent / "failback"
    if not script.is_file():
        raise TestbedError(f"{script} is missing: install the project with `make venv`")
    return script


def start(
    kube: Kube,
    workdir: Path,
    recheck_interval: float = 30.0,
    *,
    namespace: str = NAMESPACE,
    extra_args: Sequence[str] = (),
    log_format: str = "text",
) -> Operator:
    """Start ``failback operator`` detached, serving ``namespace`` as its ServiceAccount."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = service_account_kubeconfig(
        kube, namespace, ACCOUNT, workdir / "operator.kubeconfig", expiration_seconds=86400
    )
    log = workdir / "operator.log"
    proc = spawn(
        [
            str(_failback_script()),
            "operator",
            f"--namespace={namespace}",
            f"--recheck-interval={recheck_interval:g}",
            f"--log-format={log_format}",
            *extra_args,
        ],
        log,
        env={
            "KUBECONFIG": str(kubeconfig),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
        },
    )
    return Operator(pid=proc.pid, log_file=log, kubeconfig=kubeconfig, namespace=namespace)


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
