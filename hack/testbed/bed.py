"""The whole test bed: start every component, describe it in a state file, stop it.

``up`` starts the components detached and writes ``state.json`` in the run folder;
``env`` reads it back and prints shell exports; ``down`` stops every process it
names. The pytest plugin uses the same pieces, one component at a time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from testbed import build
from testbed.azure.process import AzureEmulator, launch_azure_emulator
from testbed.kube import Kube, launch_kube
from testbed.operator import Operator
from testbed.pki import Pki
from testbed.procs import TestbedError, alive, stop
from testbed.tools import Tool
from testbed.vcsim import VCenter, launch_vcenter

STATE_FILE = "state.json"


def default_run_dir() -> Path:
    return build.cache_root() / "run"


def _paths_to_str(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _paths_to_str(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Testbed:
    """A running test bed as recorded in its state file."""

    root: Path
    kube: Kube
    vcenter: VCenter
    azure: AzureEmulator
    kubectl_binary: Path
    helm_binary: Path
    operator: Operator | None = None
    """``failback operator``, when ``up --with-operator`` or ``demo`` started it."""
    services: Mapping[str, int] = field(default_factory=dict)
    """The demo's data-plane processes (``process-server``, ``master-target``) by pid."""

    def kubectl(self) -> Tool:
        return Tool(self.kubectl_binary, self.kube.kubeconfig, self.root / "tools-home")

    def helm(self) -> Tool:
        return Tool(self.helm_binary, self.kube.kubeconfig, self.root / "tools-home")

    def pids(self) -> list[int]:
        """The components' processes: the test bed is alive while all of them are."""
        return [self.kube.apiserver_pid, self.kube.etcd_pid, self.vcenter.pid, self.azure.pid]

    def all_pids(self) -> list[int]:
        """Every process to stop on ``down``: the operator's first, then the data plane."""
        operator = [self.operator.pid] if self.operator else []
        return operator + list(self.services.values()) + self.pids()

    def with_operator(self, operator: Operator | None) -> Testbed:
        return replace(self, operator=operator)

    def with_services(self, services: Mapping[str, int]) -> Testbed:
        return replace(self, services=dict(services))

    def save(self) -> Path:
        state = {
            "root": str(self.root),
            "kube": _paths_to_str(asdict(self.kube)),
            "vcenter": _paths_to_str(asdict(self.vcenter)),
            "azure": self.azure.to_dict(),
            "kubectl_binary": str(self.kubectl_binary),
            "helm_binary": str(self.helm_binary),
            "operator": _paths_to_str(asdict(self.operator)) if self.operator else None,
            "services": dict(self.services),
        }
        path = self.root / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)
        return path

    @classmethod
    def load(cls, state_file: Path) -> Testbed:
        try:
            state = json.loads(state_file.read_text())
        except FileNotFoundError:
            raise TestbedError(
                f"no test bed is running ({state_file} does not exist); start one with "
                "`make demo` or `PYTHONPATH=hack .venv/bin/python -m testbed up`"
            ) from None
        kube: dict[str, Any] = {
            k: Path(v) if k in {"ca_file", "kubeconfig", "client_cert", "client_key"} else v
            for k, v in state["kube"].items()
        }
        vcenter: dict[str, Any] = {
            k: Path(v) if k in {"ca_file", "datastore_dir", "password_file"} else v
            for k, v in state["vcenter"].items()
        }
        return cls(
            root=Path(state["root"]),
            kube=Kube(**kube),
            vcenter=VCenter(**vcenter),
            azure=AzureEmulator.from_dict(state["azure"]),
            kubectl_binary=Path(state["kubectl_binary"]),
            helm_binary=Path(state["helm_binary"]),
            operator=_operator(state.get("operator")),
            services={str(k): int(v) for k, v in (state.get("services") or {}).items()},
        )

    def env(self) -> dict[str, str]:
        """Variables that point a shell (kubectl, govc, az-style tools) at the test bed.

        Secrets are not values here: each one is read from its 0600 file when the
        shell evaluates the line, so they never appear in a log. ``PATH`` puts the
        test bed's kubectl and helm first.
        """
        tool_dirs = {str(self.kubectl_binary.parent), str(self.helm_binary.parent)}
        return {
            "PATH": ":".join([*sorted(tool_dirs), "$PATH"]),
            "FAILBACK_TESTBED_STATE": str(self.root / STATE_FILE),
            "KUBECONFIG": str(self.kube.kubeconfig),
            "FAILBACK_TESTBED_CA": str(self.kube.ca_file),
            "GOVC_URL": self.vcenter.url,
            "GOVC_USERNAME": self.vcenter.username,
            "GOVC_PASSWORD": f"$(cat {self.vcenter.password_file})",
            "GOVC_TLS_CA_CERTS": str(self.vcenter.ca_file),
            "AZURE_AUTHORITY_HOST": self.azure.authority,
            "AZURE_TENANT_ID": self.azure.tenant_id,
            "AZURE_CLIENT_ID": self.azure.client_id,
            "AZURE_CLIENT_SECRET": f"$(cat {self.azure.client_secret_file})",
            "AZURE_SUBSCRIPTION_ID": self.azure.subscription_id,
            "FAILBACK_AZURE_ARM_URL": self.azure.arm_url,
        }


def _operator(state: dict[str, Any] | None) -> Operator | None:
    if not state:
        return None
    return Operator(
        pid=state["pid"],
        log_file=Path(state["log_file"]),
        kubeconfig=Path(state["kubeconfig"]),
        namespace=state["namespace"],
    )


def running(state_file: Path) -> Testbed | None:
    """The test bed described by ``state_file`` if every one of its processes is alive."""
    if not state_file.exists():
        return None
    bed = Testbed.load(state_file)
    return bed if all(alive(pid) for pid in bed.pids()) else None


def up(root: Path) -> Testbed:
    """Start every component detached and record them in ``root/state.json``."""
    state_file = root / STATE_FILE
    if running(state_file) is not None:
        raise TestbedError(f"a test bed is already running from {state_file}; `down` it first")
    if state_file.exists():
        down(root)  # the remains of a test bed that died: clean them up
    bins = build.require()
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root / "pki")
    started: list[int] = []
    try:
        kube = launch_kube(root / "kube", pki, bins)
        started += [kube.apiserver_pid, kube.etcd_pid]
        vcenter = launch_vcenter(root / "vcenter", pki, bins)
        started.append(vcenter.pid)
        azure = launch_azure_emulator(root / "azure", pki)
        started.append(azure.pid)
    except BaseException:
        for pid in started:
            stop(pid)
        raise
    bed = Testbed(root, kube, vcenter, azure, bins.kubectl, bins.helm)
    bed.save()
    return bed


def down(root: Path) -> None:
    """Stop every process of the test bed in ``root`` and remove its run folder."""
    state_file = root / STATE_FILE
    if state_file.exists():
        with contextlib.suppress(TestbedError, KeyError, ValueError, TypeError):
            for pid in Testbed.load(state_file).all_pids():
                stop(pid)
    shutil.rmtree(root, ignore_errors=True)
