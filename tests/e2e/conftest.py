"""Fixtures of the end-to-end tests: the whole test bed, the operator as a process."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect

from testbed.vcsim import VCenter


@pytest.fixture(scope="session")
def si(vcenter: VCenter) -> Iterator[Any]:
    """A plain pyVmomi session for building situations (never the operator's own)."""
    conn = SmartConnect(
        host=vcenter.host,
        port=vcenter.port,
        user=vcenter.username,
        pwd=vcenter.password,
        sslContext=ssl.create_default_context(cafile=str(vcenter.ca_file)),
    )
    yield conn
    Disconnect(conn)
