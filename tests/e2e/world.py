"""The end-to-end tests' view of the product: the Kubernetes objects, the operator process
(which a test may kill and restart), and waiting with a readable report when it times out."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from failback.api.constants import GROUP, VERSION
from failback.services.sites import FAILBACK_VM_NAMESPACE
from failback.settings import DEFAULT_PEERING as PEERING
from testbed import operator as operator_
from testbed.kube import Kube
from testbed.procs import stop
from testbed.scenario import Scenario


def get(k8s: Any, ns: str, plural: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = client.CustomObjectsApi(k8s).get_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name
    )
    return got


def patch(k8s: Any, ns: str, plural: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name, {"spec": spec}
    )


def failback_vm_uuid_of(uid: str) -> str:
    return str(uuid.uuid5(FAILBACK_VM_NAMESPACE, uid))


def set_power(si: Any, instance_uuid: str, on: bool) -> None:
    """Power a vcsim VM on or off out of band (as a person at the vSphere client would)."""
    vm = si.content.searchIndex.FindByUuid(None, instance_uuid, True, True)
    task = vm.PowerOnVM_Task() if on else vm.PowerOffVM_Task()
    deadline = time.monotonic() + 60
    while task.info.state not in ("success", "error"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"powering {instance_uuid} {'on' if on else 'off'}")
        time.sleep(0.05)
    assert task.info.state == "success", task.info.error


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"])
        for c in (obj.get("status") or {}).get("conditions", [])
    }


@dataclass
class World:
    sc: Scenario
    k8s: Any
    kube: Kube
    workdir: Path
    operator_args: Sequence[str]
    metrics_port: int = 0
    op: operator_.Operator | None = None
    restarts: int = 0
    logs: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ the operator

    def start_operator(self) -> None:
        self.op = operator_.start(
            self.kube,
            self.workdir / f"operator-{self.restarts}",
            recheck_interval=1,
            namespace=self.sc.namespace,
            log_format="json",
            extra_args=list(self.operator_args),
        )
        self.logs.append(self.op.log_file)

    def kill_operator(self) -> None:
        """SIGKILL: no cleanup, no last status write."""
        if self.op is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.op.pid, signal.SIGKILL)
            stop(self.op.pid, grace=5)  # reaps it
            self.op = None
            self.restarts += 1
            # A killed operator leaves its peering record until its lease runs out (a
            # minute): the restarted one would wait for it. Forget it, as an expiry would.
            self.sc.kubectl.run(
                "-n", self.sc.namespace, "patch", "kopfpeering", PEERING, "--type=json",
                "-p", '[{"op": "replace", "path": "/status", "value": {}}]', check=False,
            )  # fmt: skip

    def stop_operator(self) -> None:
        if self.op is not None:
            stop(self.op.pid)
            self.op = None

    def metrics(self) -> str:
        """The operator's Prometheus exposition."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as got:
            text: str = got.read().decode()
        return text

    # ------------------------------------------------------------------ objects

    def pvm(self, name: str) -> dict[str, Any]:
        return get(self.k8s, self.sc.namespace, "protectedvms", name)

    def plan(self) -> dict[str, Any]:
        return get(self.k8s, self.sc.namespace, "failbackplans", self.sc.plan)

    def plan_status(self) -> dict[str, Any]:
        return self.plan().get("status") or {}

    def set_plan(self, **spec: Any) -> None:
        patch(self.k8s, self.sc.namespace, "failbackplans", self.sc.plan, spec)

    def step(self, name: str, vm: str | None) -> dict[str, Any]:
        return next(
            (s for s in self.plan_status().get("steps", []) if s["name"] == name
             and s.get("vm") == vm),
            {},
        )  # fmt: skip

    def pvm_target(self, name: str) -> str:
        """The on-premises VM the machine runs as after failback."""
        if name in self.sc.originals:
            return self.sc.originals[name]
        return failback_vm_uuid_of(self.pvm(name)["metadata"]["uid"])

    def protected(self, name: str) -> bool:
        status = self.pvm(name).get("status") or {}
        return (
            status.get("phase") == "Protected"
            and (status.get("recoveryPoints") or {}).get("count", 0) >= 1
        )

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        self.fail(f"{what} within {timeout:g}s")

    def wait_phase(self, phase: str, timeout: float = 180.0) -> None:
        self.wait(f"the plan reached {phase}",
                  lambda: self.plan_status().get("phase") == phase, timeout)  # fmt: skip

    def fail(self, what: str) -> None:
        brief = {
            name: {
                "phase": (obj.get("status") or {}).get("phase"),
                "conditions": {t: c for t, c in conditions(obj).items() if c[0] != "True"},
                "replication": (obj.get("status") or {}).get("replication"),
            }
            for name, obj in [("plan", self.plan())] + [(m, self.pvm(m)) for m in self.sc.machines]
        }
        steps = self.plan_status().get("steps", [])
        lines = [line for log in self.logs for line in log.read_text().splitlines()]
        errors = [x for x in lines if '"severity": "error"' in x or '"severity": "warning"' in x]
        pytest.fail(
            f"{what}\n{json.dumps(brief, indent=1, default=str)}\n"
            f"steps: {json.dumps(steps, indent=1)[-3000:]}\noperator warnings:\n"
            + "\n".join(errors[-20:])
        )
