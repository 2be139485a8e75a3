"""Fixtures of the end-to-end tests: the whole test bed, the operator as a process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from testbed import operator as operator_
from testbed.azure.process import AzureEmulator
from testbed.kube import Kube
from testbed.procs import free_port
from testbed.scenario import Machine, Scenario
from testbed.tools import Tool
from testbed.vcsim import VCenter, plain_session

from .world import World

WorldMaker = Callable[..., World]


@pytest.fixture(scope="session")
def si(vcenter: VCenter) -> Iterator[Any]:
    """A plain pyVmomi session for building situations (never the operator's own)."""
    with plain_session(vcenter) as conn:
        yield conn


@pytest.fixture
def make_world(
    namespace: str,
    kubectl: Tool,
    crds_installed: list[str],
    k8s_client: Any,
    kube: Kube,
    vcenter: VCenter,
    azure_emulator: AzureEmulator,
    si: Any,
    tmp_path: Path,
) -> Iterator[WorldMaker]:
    """``make_world(machines, **plan_spec)``: the scenario built, the operator started."""
    made: list[World] = []

    def make(
        machines: Sequence[Machine],
        before: Callable[[Scenario], None] | None = None,
        **plan_spec: Any,
    ) -> World:
        operator_.install_into(kubectl, namespace)
        metrics_port = free_port()
        sc = Scenario(tmp_path / "sc", namespace, kubectl, azure_emulator, vcenter, si)
        world = World(
            sc,
            k8s_client,
            kube,
            tmp_path,
            [*sc.operator_args(), f"--metrics-port={metrics_port}"],
            metrics_port=metrics_port,
        )
        made.append(world)
        sc.build(machines, plan_extra=plan_spec)
        if before is not None:
            before(sc)  # once both sites are built, before the operator sees them
        world.start_operator()
        return world

    yield make
    for world in made:
        world.stop_operator()
        world.sc.stop()
