"""Fixtures for the Azure tests: a reset emulator, the adapter pointed at it, and a guard
that greps everything a test logged for secrets.

The emulator's clock runs 60 times faster than real time (a real second is an emulated
minute) with short operations, so a test never sleeps long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter, AzureOptions
from failback.ports.azure import ClientSecret
from testbed.azure.process import AzureEmulator
from testbed.leaks import LeakGuard, guard_logs

RG = "rg-failback-azure-tests"
SCALE = 60.0
FAST = 6.0
"""Emulated seconds of a 'fast' operation: 0.1 s of real time."""


@pytest.fixture
def emulator(azure_emulator: AzureEmulator) -> Iterator[AzureEmulator]:
    control = azure_emulator.control
    control.reset()
    control.set_time_scale(SCALE)
    durations = dict.fromkeys(control.limits()["durations"], FAST)
    control.set_limits(durations=durations)
    control.create_resource_group(RG)
    yield azure_emulator
    control.clear_faults()


def options(emu: AzureEmulator, **changes: Any) -> AzureOptions:
    """The adapter's options for the emulator: short polls and timeouts."""
    base = AzureOptions(
        arm_endpoint=emu.arm_url,
        authority=emu.authority,
        ca_file=str(emu.ca_file),
        federated_token_file=None,
        poll_interval=0.05,
        connect_timeout=5.0,
        read_timeout=10.0,
        retries=3,
        max_inline_wait=5.0,
    )
    return replace(base, **changes)


def identity(emu: AzureEmulator, secret: str | None = None) -> ClientSecret:
    return ClientSecret(emu.tenant_id, emu.client_id, secret or emu.client_secret)


@pytest.fixture
async def clients(emulator: AzureEmulator) -> AsyncIterator[AzureClientsAdapter]:
    adapter = AzureClientsAdapter(options(emulator))
    yield adapter
    await adapter.close()


# ------------------------------------------------------------------ the leak guard


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest) -> Iterator[LeakGuard]:
    """Every record of every logger, at DEBUG, for the whole test, and the emulator's own
    log; checked at its end."""
    guard = LeakGuard()
    emu: AzureEmulator | None = None
    if "azure_emulator" in request.fixturenames:
        emu = request.getfixturevalue("azure_emulator")
        guard.secrets.append(emu.client_secret)
    with guard_logs(guard, emu.log_file if emu is not None else None):
        yield guard


# ------------------------------------------------------------------ Kubernetes

CRDS = Path(__file__).resolve().parents[2] / "crds"
