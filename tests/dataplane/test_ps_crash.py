"""SIGKILL the process server or the master target at random moments of replication cycles,
restart it, and check after each kill that replication converges with nothing lost:

- every recovery point the MT listed before the kill is still listed;
- the next point is committed and the target flat files equal the emulator's disks byte for
  byte (the guest does not write while a cycle runs, so the disk *is* the snapshot);
- a resume resent at most one batch (the PS logs each batch the MT already had).

Batches are small (64 KiB) so most kills land in the middle of a cycle's stream. The same
loop, longer, is ``make soak-dataplane`` (hack/soak/dataplane.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.azure.process import AzureEmulator
from testbed.dataplane import DataPlane, fast_emulator, kill_and_converge
from testbed.leaks import LeakGuard, guard_logs

from .test_ps_service import MIB

pytestmark = pytest.mark.testbed

KILLS = 16


@pytest.fixture
def rig(azure_emulator: AzureEmulator, tmp_path: Path) -> Iterator[DataPlane]:
    fast_emulator(azure_emulator)
    plane = DataPlane(
        tmp_path / "dp",
        azure_emulator,
        ps_extra=("--snapshot-rate", "1000/1s", "--batch-size", "64Ki", "--max-queue", "256Ki"),
    )
    guard = LeakGuard(secrets=[azure_emulator.client_secret])
    with guard_logs(guard, azure_emulator.log_file, plane.ps.log, plane.mt.log):
        yield plane
        plane.stop()


def test_sigkill_of_ps_or_mt_mid_cycle_loses_nothing_and_converges(rig: DataPlane) -> None:
    rng = random.Random(2026)
    rig.add_vm("erp", {"erp-os": 4 * MIB, "erp-data0": 2 * MIB})
    rig.start()
    rig.start_session("erp")
    rig.wait_point("erp", after=0)
    report = kill_and_converge(rig, "erp", rng, kills=KILLS)
    assert report.kills == {"process-server": report.ps_kills, "master-target": report.mt_kills}
    assert report.ps_kills >= KILLS // 4
    assert report.mt_kills >= KILLS // 4
    assert report.max_resent_per_kill <= 1
    assert report.mid_cycle_kills >= KILLS // 4, "too few kills landed inside a cycle"
