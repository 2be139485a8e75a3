"""`failback operator` runs on the real API server, as its least-privilege ServiceAccount.

The operator is started as a process (the console script) with the kubeconfig of a
ServiceAccount bound only to the Role of ``manifests/rbac.yaml``, so a
permission the manifests forgot fails here. It must find its peering object, seed every
condition that applies to each object (Unknown until its check lands) with the object's
generation, follow a spec
change, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from failback.api import failbackplan, mastertarget, processserver, protectedvm
from failback.api.constants import FAILBACK_PLAN, GROUP, MASTER_TARGET, PROCESS_SERVER, VERSION
from failback.api.constants import PROTECTED_VM as PVM
from testbed.kube import Kube
from testbed.tools import Tool

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SAMPLES = MANIFESTS / "samples"
SAMPLE_NAMESPACE = "failback-system"

KINDS: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[str, ...]]]] = {
    PVM.kind: (PVM.plural, lambda o: protectedvm.condition_types(protectedvm.parse(o).spec)),
    FAILBACK_PLAN.kind: (FAILBACK_PLAN.plural, lambda _: failbackplan.CONDITION_TYPES),
    MASTER_TARGET.kind: (MASTER_TARGET.plural, lambda _: mastertarget.CONDITION_TYPES),
    PROCESS_SERVER.kind: (
        PROCESS_SERVER.plural,
        lambda o: processserver.condition_types(processserver.parse(o).spec),
    ),
}
"""plural, and the condition types an object of the kind must show."""


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _in_namespace(docs: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The manifests moved from failback-system to ``namespace`` (the RBAC is namespaced only)."""
    moved: list[dict[str, Any]] = json.loads(
        json.dumps(docs).replace(f'"{SAMPLE_NAMESPACE}"', f'"{namespace}"')
    )
    assert not [d for d in moved if d["kind"].startswith("Cluster")], "nothing cluster-wide"
    return moved


def _apply(kubectl: Tool, docs: list[dict[str, Any]]) -> None:
    kubectl.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))


def _wait(what: str, check: Callable[[], bool], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} within {timeout:g}s; operator log:\n{log.read_text()[-4000:]}")


@pytest.fixture
def operator_namespace(
    namespace: str,
    kubectl: Tool,
    crds_installed: list[str],
    service_account: Callable[[str, str], Path],
) -> tuple[str, Path]:
    """``namespace`` prepared like failback-system: peering object, RBAC, ServiceAccount."""
    for name in ("serviceaccount.yaml", "rbac.yaml", "peering.yaml"):
        _apply(kubectl, _in_namespace(_docs(MANIFESTS / name), namespace))
    return namespace, service_account(namespace, "failback-operator")


@pytest.fixture
def operator(
    operator_namespace: tuple[str, Path], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    namespace, kubeconfig = operator_namespace
    log = tmp_path / "operator.log"
    script = Path(sys.executable).parent / "failback"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(script), "operator", "--namespace", namespace, "--recheck-interval", "2"],
            env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _objects(k8s_client: Any, namespace: str, kind: str) -> list[dict[str, Any]]:
    plural, _ = KINDS[kind]
    api = client.CustomObjectsApi(k8s_client)
    items: list[dict[str, Any]] = api.list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural
    )["items"]
    return items


def _seeded(obj: dict[str, Any]) -> bool:
    types = KINDS[obj["kind"]][1](obj)
    status = obj.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    generation = obj["metadata"]["generation"]
    return (
        status.get("observedGeneration") == generation
        and set(conditions) >= set(types)
        and all(c["observedGeneration"] == generation for c in conditions.values())
    )


def test_operator_seeds_every_condition_and_stops_on_sigterm(
    operator: tuple[subprocess.Popen[bytes], Path],
    operator_namespace: tuple[str, Path],
    kubectl: Tool,
    kube: Kube,
    k8s_client: Any,
) -> None:
    proc, log = operator
    namespace, _ = operator_namespace
    samples = [
        d for path in sorted(SAMPLES.glob("*.yaml")) for d in _docs(path) if d["kind"] != "Secret"
    ]
    _apply(kubectl, _in_namespace(samples, namespace))
    expected = {(d["kind"], d["metadata"]["name"]) for d in samples}
    assert {k for k, _ in expected} == set(KINDS), "the samples must cover every kind"

    def all_seeded() -> bool:
        seen = [o for kind in KINDS for o in _objects(k8s_client, namespace, kind)]
        return {(o["kind"], o["metadata"]["name"]) for o in seen} == expected and all(
            _seeded(o) for o in seen
        )

    _wait("every object got its applicable conditions", all_seeded, log)
    for kind in KINDS:
        for obj in _objects(k8s_client, namespace, kind):
            conditions = obj["status"]["conditions"]
            assert {c["type"] for c in conditions} == set(KINDS[kind][1](obj)), kind
            for cond in conditions:
                # Unknown until a check lands; a check that ran says True or False, and
                # either way the reason and message say why.
                assert cond["status"] in {"True", "False", "Unknown"}, (kind, cond)
                assert cond["reason"], (kind, cond)
                assert cond["message"], (kind, cond)

    # A spec change is a new generation: the operator follows it.
    vm = _objects(k8s_client, namespace, PVM.kind)[0]
    kubectl.run(
        "patch", "-n", namespace, PVM.plural, vm["metadata"]["name"], "--type=merge",
        "-p", '{"spec": {"policy": {"rpoThreshold": "20m"}}}',
    )  # fmt: skip

    def follows() -> bool:
        now = client.CustomObjectsApi(k8s_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PVM.plural, vm["metadata"]["name"]
        )
        return bool(now["metadata"]["generation"] == 2 and _seeded(now))

    _wait("the ProtectedVM's new generation was observed", follows, log)

    # kopf's bookkeeping stays in failback.io annotations, never in status.
    annotations = _objects(k8s_client, namespace, PVM.kind)[0]["metadata"].get("annotations", {})
    assert not any(key.startswith("kopf.zalando.org/") for key in annotations), annotations

    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the operator did not stop within 30s of SIGTERM:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert code == 0, text[-4000:]
    for line in text.splitlines():
        record = json.loads(line)  # every line is one JSON object (structured logs)
        assert record.get("severity", record.get("levelname", "")).lower() not in {
            "error",
            "critical",
        }, line
        assert "Traceback" not in line
        assert "forbidden" not in line.lower(), f"RBAC refused the operator something: {line}"
