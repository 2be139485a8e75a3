"""Benchmark: the MT journal's apply throughput against a plain write + fsync of the same bytes.

In one run, on the same volume, with the same extents (1 MiB each, batches of 16 = 16 MiB
per fsync, random offsets on a disk image file):

- **baseline**: ``pwrite`` every extent to the disk image, ``fsync`` once per batch;
- **journal, first cycle**: ``Journal.apply`` with no point yet (no undo data is kept);
- **first cycle, direct**: the same with ``first_cycle="direct"`` (disks written and fsync'd,
  only a BATCH_END journaled: the initial copy);
- **journal, steady state**: ``Journal.apply`` after a point exists (undo read + record
  with new data and undo + journal fsync, then the target write; fsync of the disk at the
  commit of each cycle).

Prints MB/s and the ratio to the baseline. Run:

    PYTHONPATH=operator .venv/bin/python hack/bench/journal.py [--mib 512] [--dir /path]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from failback.dataplane.journal import Batch, Extent, FileDisk, Journal, JournalConfig

EXTENT = 1 << 20
PER_BATCH = 16


def _extents(rng: random.Random, disk_size: int, total: int) -> list[Extent]:
    payload = rng.randbytes(EXTENT * 4)  # reused slices: generating data is not the test
    out = []
    for i in range(total // EXTENT):
        offset = rng.randrange(0, disk_size // EXTENT) * EXTENT
        start = (i % 4) * EXTENT
        out.append(Extent.of("disk", offset, payload[start : start + EXTENT]))
    return out


def _baseline(path: Path, extents: list[Extent]) -> float:
    fd = os.open(path, os.O_RDWR)
    t = time.perf_counter()
    for i, e in enumerate(extents):
        assert e.data is not None
        os.pwrite(fd, e.data, e.offset)
        if i % PER_BATCH == PER_BATCH - 1:
            os.fsync(fd)
    os.fsync(fd)
    elapsed = time.perf_counter() - t
    os.close(fd)
    return elapsed


def _journal(
    root: Path, disk: Path, extents: list[Extent], *, steady: bool, direct: bool = False
) -> float:
    jdir = root / "journal"
    shutil.rmtree(jdir, ignore_errors=True)
    config = JournalConfig(first_cycle="direct" if direct else "journal")
    with FileDisk(disk) as fdisk, Journal.open(jdir, {"disk": fdisk}, config) as j:
        seq = 0
        hour = 0
        if steady:
            seq += 1
            j.apply(Batch(seq, extents[:1]))
            hour += 1
            j.commit_point("warm", dt.datetime(2026, 1, 1, hour, tzinfo=dt.UTC), False)
        t = time.perf_counter()
        for start in range(0, len(extents), PER_BATCH):
            seq += 1
            j.apply(Batch(seq, extents[start : start + PER_BATCH]))
            if steady and seq % 8 == 0:  # a cycle of 8 batches (128 MiB) per point
                hour += 1
                j.commit_point(f"p{seq}", dt.datetime(2026, 1, 1, hour % 24, tzinfo=dt.UTC), False)
        hour += 1
        j.commit_point("end", dt.datetime(2026, 1, 2, 0, tzinfo=dt.UTC), False)
        return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="bytes to apply per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    total = args.mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        disk = root / "disk.flat"
        disk_size = max(4 * total, 1 << 30)
        with open(disk, "wb") as fh:
            fh.truncate(disk_size)
        extents = _extents(random.Random(1), disk_size, total)
        rows: dict[str, list[float]] = {
            "baseline": [],
            "first cycle": [],
            "direct": [],
            "steady state": [],
        }
        for _ in range(args.rounds):
            rows["baseline"].append(_baseline(disk, extents))
            rows["first cycle"].append(_journal(root, disk, extents, steady=False))
            rows["direct"].append(_journal(root, disk, extents, steady=False, direct=True))
            rows["steady state"].append(_journal(root, disk, extents, steady=True))
        base = min(rows["baseline"])
        print(
            f"{args.mib} MiB in {EXTENT >> 20} MiB extents, {PER_BATCH} per batch, best of "
            f"{args.rounds}"
        )
        print(f"{'what':<28}{'MB/s':>10}{'vs baseline':>14}")
        for name, times in rows.items():
            best = min(times)
            label = {
                "baseline": "baseline: pwrite + fsync",
                "first cycle": "journal, first cycle",
                "direct": "first cycle, direct",
                "steady state": "journal, with undo",
            }[name]
            print(f"{label:<28}{total / best / 1e6:>10.0f}{base / best:>13.2f}x")


if __name__ == "__main__":
    main()
