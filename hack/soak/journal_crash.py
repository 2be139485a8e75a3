"""Soak: SIGKILL the MT journal's writer hundreds of times; nothing acknowledged may be lost.

Runs the writer and the checks of ``tests/dataplane/test_journal_crash.py`` (the same code the
test suite runs 55 times) for ``--kills`` kills in each recovery mode, on one journal per mode
that lives through every crash, rotation, pruning and rollback. Exits non-zero on the first
violation. Run:

    .venv/bin/python hack/soak/journal_crash.py [--kills 200] [--seed 1] [--dir /path]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _crash_module() -> Any:
    path = REPO / "tests" / "dataplane" / "test_journal_crash.py"
    spec = importlib.util.spec_from_file_location("journal_crash_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="kills per recovery mode")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--modes", default="rollback,resume")
    args = parser.parse_args()
    crash = _crash_module()
    total = 0
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            root = Path(tmp)
            crash.prepare(root, args.seed)
            started = time.perf_counter()
            stats = crash.run_kills(root, args.seed, mode, args.kills, random.Random(args.seed))
            total += stats["kills"]
            print(f"{mode}: {stats} in {time.perf_counter() - started:.0f} s")
    print(f"{total} kills, no acknowledged point lost, every recovered state byte-exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
