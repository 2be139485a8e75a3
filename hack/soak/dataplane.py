"""Soak: SIGKILL the process server or the master target hundreds of times mid-cycle.

The loop of ``tests/dataplane/test_ps_crash.py`` (``testbed.dataplane.kill_and_converge``),
longer: after every kill the next point must come, every point listed before must still be
listed, the target flat files must equal the emulator's disks byte for byte and at most one
batch may have been resent. Exits non-zero on the first violation. Run:

    make soak-dataplane                      # 200 kills
    PYTHONPATH=hack .venv/bin/python hack/soak/dataplane.py [--kills 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from testbed.azure.process import start_azure_emulator
from testbed.dataplane import (
    CrashReport,
    DataPlane,
    DataPlaneError,
    fast_emulator,
    kill_and_converge,
)
from testbed.pki import Pki

MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to keep the rig")
    args = parser.parse_args()
    # SIGTERM ends the soak like Ctrl-C: the processes it started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="soak-dataplane-") as tmp:
        root = Path(tmp)
        with start_azure_emulator(root / "azure", Pki(root / "pki")) as emulator:
            fast_emulator(emulator)
            rig = DataPlane(
                root / "dp",
                emulator,
                ps_extra=(
                    "--snapshot-rate", "100000/1s", "--batch-size", "64Ki", "--max-queue", "256Ki",
                ),
            )  # fmt: skip
            rig.add_vm("soak", {"soak-os": 4 * MIB, "soak-data0": 2 * MIB})
            started = time.monotonic()

            def progress(round_: int, report: CrashReport) -> None:
                if (round_ + 1) % 10 == 0:
                    print(
                        f"{round_ + 1} kills ({report.ps_kills} PS, {report.mt_kills} MT, "
                        f"{report.mid_cycle_kills} mid-cycle), max resent per kill "
                        f"{report.max_resent_per_kill}, {time.monotonic() - started:.0f} s",
                        flush=True,
                    )

            try:
                rig.start()
                rig.start_session("soak")
                rig.wait_point("soak", after=0)
                report = kill_and_converge(rig, "soak", rng, kills=args.kills, progress=progress)
            except DataPlaneError as exc:
                print(f"FAILED: {exc}", file=sys.stderr)
                kept = Path(tempfile.mkdtemp(prefix="soak-dataplane-logs-"))
                for log in (rig.ps.log, rig.mt.log, emulator.log_file):
                    if log.exists():
                        shutil.copy(log, kept / log.name)
                print(f"(the logs are kept in {kept})", file=sys.stderr)
                return 1
            finally:
                rig.stop()
    elapsed = time.monotonic() - started
    print(
        f"soak-dataplane: {report.ps_kills + report.mt_kills} kills ({report.ps_kills} PS, "
        f"{report.mt_kills} MT, {report.mid_cycle_kills} mid-cycle) in {elapsed:.0f} s: every "
        f"point kept, {report.points_checked} byte-exact convergences, at most "
        f"{report.max_resent_per_kill} batch resent per kill"
    )
    if report.max_resent_per_kill > 1:
        print("FAILED: a resume resent more than one batch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
