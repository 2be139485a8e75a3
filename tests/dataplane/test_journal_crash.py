"""SIGKILL the journal's writer at random moments; nothing acknowledged may be lost.

The writer is this file run as a script: it opens the journal (recovering it), resends the last
batch and commit as a restarted PS would, then replicates cycle after cycle, printing ``ACK``
after each durable point, and now and then rolls back to an older point (``ROLL``/``ROLLED``).
The parent kills it at a random time, reopens the journal itself, and checks that the disks
equal the model's bytes of the newest point, which must be the last acknowledged one or the
one after it (a commit that became durable before its ``ACK`` was printed).

Every cycle's content depends only on its number, so the model of point ``c-k`` is the
initial disks plus cycles 1..k, whatever history (rollbacks, crashes) led there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "operator"))

from failback.dataplane.journal import (  # noqa: E402
    SECTOR,
    Batch,
    Extent,
    FileDisk,
    Journal,
    JournalConfig,
)

SIZES = {"os": 1 << 20, "data": 512 << 10}
BATCHES = 3
EXTENTS = 6
T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def config(mode: str) -> JournalConfig:
    return JournalConfig(
        retention=dt.timedelta(hours=8),
        segment_bytes=384 << 10,
        open_cycle="resume" if mode == "resume" else "rollback",
        first_cycle="direct" if mode == "resume" else "journal",
    )


def initial(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {k: rng.randbytes(v) for k, v in SIZES.items()}


def cycle_batches(seed: int, k: int) -> list[Batch]:
    """The batches of cycle ``k``: sequence numbers (k-1)*BATCHES+1 .. k*BATCHES."""
    rng = random.Random(seed * 1_000_003 + k)
    out = []
    for b in range(BATCHES):
        extents = []
        for _ in range(EXTENTS):
            disk_id = rng.choice(sorted(SIZES))
            sectors = rng.randint(1, 128)
            offset = rng.randrange(0, SIZES[disk_id] // SECTOR - sectors + 1) * SECTOR
            if rng.random() < 0.2:
                extents.append(Extent.zero(disk_id, offset, sectors * SECTOR))
            else:
                extents.append(Extent.of(disk_id, offset, rng.randbytes(sectors * SECTOR)))
        out.append(Batch((k - 1) * BATCHES + b + 1, extents))
    return out


def point_time(k: int) -> dt.datetime:
    return T0 + dt.timedelta(hours=k)


class Model:
    """The bytes every point must hold, computed without the journal."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.states: list[dict[str, bytes]] = [initial(seed)]
        self.digests: list[dict[str, str]] = [_digest(self.states[0])]

    def digest(self, k: int) -> dict[str, str]:
        while len(self.states) <= k:
            disks = {n: bytearray(v) for n, v in self.states[-1].items()}
            for batch in cycle_batches(self.seed, len(self.states)):
                for e in batch.extents:
                    disks[e.disk_id][e.offset : e.offset + e.length] = e.data or bytes(e.length)
            self.states.append({n: bytes(v) for n, v in disks.items()})
            self.digests.append(_digest(self.states[-1]))
        return self.digests[k]

    def partial_digest(self, k: int, seq: int) -> dict[str, str]:
        """Point ``c-k`` plus the batches of cycle k+1 up to sequence ``seq``."""
        self.digest(k)
        disks = {n: bytearray(v) for n, v in self.states[k].items()}
        for batch in cycle_batches(self.seed, k + 1):
            if batch.seq <= seq:
                for e in batch.extents:
                    disks[e.disk_id][e.offset : e.offset + e.length] = e.data or bytes(e.length)
        return _digest({n: bytes(v) for n, v in disks.items()})


def _digest(disks: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in disks.items()}


def disk_digest(root: Path) -> dict[str, str]:
    return {k: hashlib.sha256((root / f"{k}.flat").read_bytes()).hexdigest() for k in SIZES}


def number(point_id: str) -> int:
    return int(point_id.removeprefix("c-"))


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def writer(root: Path, seed: int, mode: str) -> None:
    """Replicate forever (until killed)."""
    disks = {k: FileDisk(root / f"{k}.flat") for k in SIZES}
    rng = random.Random()
    with Journal.open(root / "journal", disks, config(mode)) as j:
        _say("OPEN")
        points = j.points()
        k = number(points[-1].point_id) if points else 0
        if k:
            # A restarted PS resends its last batch and commit: both must be harmless.
            j.apply(cycle_batches(seed, k)[-1])
            j.commit_point(f"c-{k}", point_time(k), app_consistent=False)
        while True:
            visible = j.points()
            if len(visible) > 2 and rng.random() < 0.15:
                target = rng.choice(visible[:-1]).point_id
                _say(f"ROLL {target}")
                j.roll_to(target)
                _say(f"ROLLED {target}")
                k = number(target)
                continue
            k += 1
            for batch in cycle_batches(seed, k):
                if batch.seq > j.last_durable_seq:
                    j.apply(batch)
            j.commit_point(f"c-{k}", point_time(k), app_consistent=k % 4 == 0)
            _say(f"ACK c-{k}")


def prepare(root: Path, seed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for k, data in initial(seed).items():
        (root / f"{k}.flat").write_bytes(data)


def run_kills(
    root: Path, seed: int, mode: str, kills: int, rng: random.Random, max_delay: float = 0.6
) -> dict[str, int]:
    """Start and SIGKILL the writer ``kills`` times, checking the journal after each."""
    model = Model(seed)
    acked = 0
    names = ("kills", "before_open", "first_cycle", "mid_roll", "ahead", "parent_rolls", "resumed")
    stats = dict.fromkeys(names, 0)
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    for i in range(kills):
        proc = subprocess.Popen(
            [sys.executable, str(HERE), str(root), str(seed), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(rng.uniform(0.02, max_delay))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        stats["kills"] += 1
        rolling: int | None = None
        stats["before_open"] += not out.startswith(b"OPEN")
        for line in out.decode().splitlines():
            word, _, arg = line.partition(" ")
            if word == "ACK":
                acked = number(arg)
            elif word == "ROLL":
                rolling = number(arg)
            elif word == "ROLLED":
                acked, rolling = number(arg), None
        disks = {k: FileDisk(root / f"{k}.flat") for k in SIZES}
        try:
            with Journal.open(root / "journal", disks, config(mode)) as j:
                ids = [p.point_id for p in j.points()]
                newest = number(ids[-1]) if ids else 0
                allowed = {acked, acked + 1} if rolling is None else {acked, rolling}
                assert newest in allowed, (i, newest, allowed, ids, out.decode()[-300:])
                if acked and newest == acked + 1:
                    assert f"c-{acked}" in ids, (i, ids)
                if rolling is not None and newest == rolling:
                    stats["mid_roll"] += 1
                stats["ahead"] += newest == acked + 1
                if j.cycle_open:
                    # Resume mode kept the interrupted cycle's durable batches: the disks hold
                    # exactly those on top of the point; then go back to the point.
                    assert mode == "resume"
                    partial = model.partial_digest(newest, j.last_durable_seq)
                    assert disk_digest(root) == partial, (i, newest, j.last_durable_seq)
                    stats["resumed"] += 1
                    j.abort_cycle()
                if newest:
                    assert disk_digest(root) == model.digest(newest), (i, newest, ids)
                else:
                    # Killed in the very first cycle: no point was ever made, and that cycle
                    # (the initial copy) keeps no undo data, so there is nothing to compare.
                    assert j.last_durable_seq == 0
                    stats["first_cycle"] += 1
                acked = newest
                if len(ids) > 2 and i % 5 == 4:
                    target = rng.choice(ids[:-1])
                    j.roll_to(target)
                    acked = number(target)
                    assert disk_digest(root) == model.digest(acked), (i, target)
                    stats["parent_rolls"] += 1
        finally:
            for d in disks.values():
                d.close()
    return stats


def test_sigkill_rollback_mode(tmp_path: Path) -> None:
    prepare(tmp_path, 7)
    stats = run_kills(tmp_path, 7, "rollback", 30, random.Random(1))
    assert stats["kills"] == 30


def test_sigkill_resume_mode(tmp_path: Path) -> None:
    prepare(tmp_path, 8)
    stats = run_kills(tmp_path, 8, "resume", 25, random.Random(2))
    assert stats["kills"] == 25


if __name__ == "__main__":
    writer(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
