"""Every test session can use the test bed's fixtures (see hack/testbed/pytest_plugin.py),
and the product's CRDs installed on its API server."""

from __future__ import annotations

import pytest

from testbed import operator as operator_
from testbed.tools import Tool

pytest_plugins = ["testbed.pytest_plugin"]


@pytest.fixture(scope="session")
def crds_installed(kubectl: Tool) -> list[str]:
    """The CRDs of crds/ on the test bed's API server (their file names)."""
    return operator_.install_crds(kubectl)
