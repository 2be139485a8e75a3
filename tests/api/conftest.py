"""Fixtures for the API tests: the CRDs of crds/ installed on the test bed's API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.tools import Tool

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def crds_installed(kubectl: Tool) -> list[str]:
    files = sorted(CRDS.glob("*.yaml"))
    assert files, f"no CRDs in {CRDS}"
    for crd in files:
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=failback-operator",
    )
    return [f.name for f in files]
