"""pytest fixtures for the test bed: each component starts once per session, on demand.

If ``FAILBACK_TESTBED_STATE`` names the state file of a live test bed (``make demo``
or ``python -m testbed up``, then ``eval "$(python -m testbed env)"``), the fixtures
reuse its components instead of starting their own, and leave them running.

A missing binary or a component that does not start is a test *error* with the
reason and the command that fixes it; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testbed import build
from testbed.kube import Kube, service_account_kubeconfig, start_kube
from testbed.pki import Pki
from testbed.tools import Tool
from testbed.vcsim import VCenter, start_vcenter

if TYPE_CHECKING:
    # Imported where used, so a test that needs no Azure never loads the emulator.
    from testbed.azure.process import AzureEmulator
    from testbed.bed import Testbed


@pytest.fixture(scope="session")
def running_testbed() -> Testbed | None:
    """The live test bed named by ``FAILBACK_TESTBED_STATE``, if any."""
    state = os.environ.get("FAILBACK_TESTBED_STATE")
    if not state:
        return None
    from testbed.bed import running

    bed = running(Path(state))
    if bed is None:
        pytest.fail(
            f"FAILBACK_TESTBED_STATE={state} names no live test bed; unset it to let the tests "
            "start their own, or start one with `make demo`"
        )
    return bed


@pytest.fixture(scope="session")
def testbed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testbed")


@pytest.fixture(scope="session")
def testbed_pki(testbed_dir: Path) -> Pki:
    return Pki(testbed_dir / "pki")


@pytest.fixture(scope="session")
def kube(running_testbed: Testbed | None, testbed_dir: Path, testbed_pki: Pki) -> Iterator[Kube]:
    """A real kube-apiserver + etcd with RBAC; ``kube.kubeconfig`` is the admin's."""
    if running_testbed is not None:
        yield running_testbed.kube
        return
    with start_kube(testbed_dir / "kube", testbed_pki, build.require()) as k:
        yield k


@pytest.fixture(scope="session")
def kubectl(kube: Kube, testbed_dir: Path) -> Tool:
    return Tool(build.require().kubectl, kube.kubeconfig, testbed_dir / "tools-home")


@pytest.fixture(scope="session")
def helm(kube: Kube, testbed_dir: Path) -> Tool:
    return Tool(build.require().helm, kube.kubeconfig, testbed_dir / "tools-home")


@pytest.fixture(scope="session")
def k8s_client(kube: Kube) -> Any:
    """A ``kubernetes.client.ApiClient`` authenticated as the test bed's admin."""
    from kubernetes import config

    return config.new_client_from_config(str(kube.kubeconfig))  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(k8s_client: Any) -> str:
    """A fresh namespace for one test (namespaces are never finalized on the test bed)."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(k8s_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    return name


@pytest.fixture
def service_account(kube: Kube, tmp_path: Path) -> Callable[[str, str], Path]:
    """Make a ServiceAccount and return a kubeconfig that acts as it: ``(namespace, name)``."""

    def make(namespace: str, name: str) -> Path:
        return service_account_kubeconfig(kube, namespace, name, tmp_path / f"{name}.kubeconfig")

    return make


@pytest.fixture(scope="session")
def vcenter(
    running_testbed: Testbed | None, testbed_dir: Path, testbed_pki: Pki
) -> Iterator[VCenter]:
    """govmomi's vcsim over TLS signed by the test bed's CA."""
    if running_testbed is not None:
        yield running_testbed.vcenter
        return
    with start_vcenter(testbed_dir / "vcenter", testbed_pki, build.require()) as vc:
        yield vc


@pytest.fixture(scope="session")
def azure_emulator(
    running_testbed: Testbed | None, testbed_dir: Path, testbed_pki: Pki
) -> Iterator[AzureEmulator]:
    """The Azure emulator (ARM compute, identity, blob page API) over TLS."""
    if running_testbed is not None:
        yield running_testbed.azure
        return
    from testbed.azure.process import start_azure_emulator

    with start_azure_emulator(testbed_dir / "azure", testbed_pki) as emulator:
        yield emulator
