"""Benchmark: the forward data plane end to end against a local copy of the same bytes.

Starts its own Azure emulator (TLS, a throwaway CA; time x60, fast operations, the
snapshot limit raised as in tests/dataplane), then, in one run, on one file system:

- **baseline**: the same bytes copied locally: read a source file in 4 MiB chunks (the
  PS's ranged GETs), ``os.pwrite`` each into a target file, ``fsync`` every 16 MiB (a
  batch); best of three (two before the pipelines, one after);
- **journal off**: the initial cycle of one VM (one managed disk of ``--size-mib`` fully
  written with OS-like data: files of /usr/lib/python3* and /usr/bin, text and ELF)
  through ``failback process-server`` → ``failback master-target --first-cycle direct``
  → a flat file, zstd level 1 on the wire (the PS's default; ``--levels``);
- **journal on**: the same with ``--first-cycle journal`` (write-ahead);
- **level 3** and **level 0**: the journal-off cycle at other zstd levels (``--levels``),
  for ``wireBytes / bytesChanged`` and for what compression costs in MB/s;
- **churn**: after the journal-off cycle, ``--churn-cycles`` incremental cycles, the guest
  rewriting ``--churn-mib`` between them in scattered 64 KiB-1 MiB writes: the journal with
  undo data, which every cycle after the first goes through.

MB/s are of the disk bytes (``bytesChanged`` of the PS's ``lastCycle``), over the cycle's
own ``seconds`` (first batch read to point committed) and over wall time (session start or
cycle request until the PS reports the point settled: snapshots and SAS included). It also
prints the CPU seconds each process (emulator, PS, MT) spent on each cycle: with 2 cores a
sum near 2 x wall means the machine is saturated, and says who spends it. Goals are printed
as PASS/MISS, never asserted. Run:

    PYTHONPATH=hack .venv/bin/python hack/bench/dataplane.py [--size-mib 256] [--json FILE]

(``make bench-dataplane`` does the same.)
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder holds azure.py: keep it off sys.path (it would hide the azure package).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import base64
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from testbed.azure.process import AzureEmulator, start_azure_emulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.pki import Pki

MIB = 1 << 20
READ_CHUNK = 4 * MIB
"""The PS's largest ranged GET (``SourceSettings.read_chunk``)."""
BATCH = 16 * MIB
"""The PS's batch (``--batch-size`` default) and the direct first cycle's fsync unit."""
FILL_REQUEST = 4 * MIB
"""Guest data per control request (base64 in JSON)."""
TICK = os.sysconf("SC_CLK_TCK")

GOALS = {
    "journal off": 0.70,
    "journal on": 0.40,
    "wire": 0.5,
    "churn": 54.0,
}


# ---------------------------------------------------------------------------- data


def os_like_corpus(size: int) -> bytes:
    """``size`` bytes of real files (Python sources and modules, ELF binaries) in a stable
    order; repeated from the start if the machine has fewer."""
    roots = [*sorted(Path("/usr/lib").glob("python3*")), Path("/usr/bin")]
    out = bytearray()
    while len(out) < size:
        before = len(out)
        for root in roots:
            for path in _files(root):
                try:
                    out += path.read_bytes()
                except OSError:
                    continue
                if len(out) >= size:
                    return bytes(out[:size])
        if len(out) == before:
            raise SystemExit("no readable files under /usr/lib/python3* or /usr/bin")
    return bytes(out[:size])


def _files(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                yield path


def churn_writes(rng: random.Random, disk_size: int, total: int) -> list[tuple[int, int]]:
    """Scattered guest writes of about ``total`` bytes: (offset, length), 64 KiB to 1 MiB
    each, 4 KiB-aligned, one per distinct MiB of the disk."""
    slots = rng.sample(range(disk_size // MIB), k=min(disk_size // MIB, 2 * total // MIB + 1))
    writes, done = [], 0
    for slot in slots:
        if done >= total:
            break
        length = min(rng.randrange(16, 257) * 4096, MIB, total - done)
        length = max(4096, length // 4096 * 4096)
        start = slot * MIB + rng.randrange(0, (MIB - length) // 4096 + 1) * 4096
        writes.append((start, length))
        done += length
    return sorted(writes)


# ---------------------------------------------------------------------------- baseline


def baseline(source: Path, target: Path) -> float:
    """Seconds to copy ``source`` into ``target``: 4 MiB pread/pwrite, fsync per 16 MiB."""
    size = source.stat().st_size
    with target.open("wb") as out:
        out.truncate(size)
    src = os.open(source, os.O_RDONLY)
    dst = os.open(target, os.O_RDWR)
    try:
        started = time.perf_counter()
        since_sync = 0
        for offset in range(0, size, READ_CHUNK):
            data = os.pread(src, READ_CHUNK, offset)
            os.pwrite(dst, data, offset)
            since_sync += len(data)
            if since_sync >= BATCH:
                os.fsync(dst)
                since_sync = 0
        os.fsync(dst)
        return time.perf_counter() - started
    finally:
        os.close(src)
        os.close(dst)


# ---------------------------------------------------------------------------- the rig


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Cpu:
    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> Cpu:
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def used(self) -> dict[str, float]:
        return {
            name: round(cpu_seconds(pid) - self.start[name], 2) for name, pid in self.pids.items()
        }


def write_guest(
    emulator: AzureEmulator, rig: DataPlane, disk: str, writes: list[tuple[int, bytes]]
) -> None:
    """The guest's writes, ``FILL_REQUEST`` bytes of data per control request at most."""
    control = emulator.control
    specs: list[dict[str, Any]] = []
    pending = 0
    for offset, data in writes:
        for at in range(0, len(data), FILL_REQUEST):
            piece = data[at : at + FILL_REQUEST]
            specs.append({"offset": offset + at, "data": base64.b64encode(piece).decode()})
            pending += len(piece)
            if pending >= FILL_REQUEST:
                control.guest_writes(rig.resource_group, disk, specs, require_running=False)
                specs, pending = [], 0
    if specs:
        control.guest_writes(rig.resource_group, disk, specs, require_running=False)


def cycle_figures(
    status: dict[str, Any], wall: float, cpu: dict[str, float], ps_log: Path, mt_log: Path
) -> dict[str, Any]:
    last = status["lastCycle"]
    disks = last["disks"]
    changed = sum(d["bytesChanged"] for d in disks)
    return {
        "mode": sorted({d["mode"] for d in disks}),
        "bytesChanged": changed,
        "bytesCleared": sum(d["bytesCleared"] for d in disks),
        "bytesRead": sum(d["bytesRead"] for d in disks),
        "batchesSent": last["batchesSent"],
        "wireBytes": last["wireBytes"],
        "wireRatio": last["wireBytes"] / changed if changed else None,
        "cycleSeconds": last["seconds"],
        "wallSeconds": round(wall, 3),
        "mbps": changed / last["seconds"] / 1e6 if last["seconds"] else None,
        "wallMbps": changed / wall / 1e6,
        "cpuSeconds": cpu,
        "mtBatchMs": _batch_ms(mt_log),
    }


def _batch_ms(mt_log: Path) -> dict[str, float]:
    """The MT's own time on ``POST .../batches`` (its JSON log's ``ms``), summed."""
    total, count = 0.0, 0
    for line in mt_log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "request" and str(entry.get("path", "")).endswith("/batches"):
            total += float(entry.get("ms", 0.0))
            count += 1
    return {"requests": count, "ms": round(total, 1)}


@dataclass
class Run:
    name: str
    first_cycle: str
    level: int
    churn: bool = False


def run_pipeline(
    emulator: AzureEmulator,
    work: Path,
    run: Run,
    corpus: bytes,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One rig: fill the disk, time its initial cycle, then (``run.churn``) incremental
    cycles. The rig's folder is removed afterwards unless ``--keep``."""
    size = args.size_mib * MIB
    fast_emulator(emulator)
    root = work / f"dp-{run.name.replace(' ', '-')}"
    rig = DataPlane(
        root,
        emulator,
        compression_level=run.level,
        mt_extra=("--first-cycle", run.first_cycle),
        ps_extra=("--snapshot-rate", "1000/1s"),
    )
    vm, disk = "bench-01", "bench-01-os"
    rig.add_vm(vm, {disk: size})
    filled = time.perf_counter()
    write_guest(emulator, rig, disk, [(0, corpus[:size])])
    fill_seconds = time.perf_counter() - filled
    result: dict[str, Any] = {
        "firstCycle": run.first_cycle,
        "level": run.level,
        "fillSeconds": round(fill_seconds, 2),
    }
    try:
        rig.start()
        assert rig.ps.proc is not None
        assert rig.mt.proc is not None
        pids = {"emulator": emulator.pid, "ps": rig.ps.proc.pid, "mt": rig.mt.proc.pid}
        with Cpu(pids) as cpu:
            started = time.perf_counter()
            rig.start_session(vm)
            status = rig.wait_point(vm, after=0, timeout=args.timeout)
            wall = time.perf_counter() - started
        result["initial"] = cycle_figures(status, wall, cpu.used(), rig.ps.log, rig.mt.log)
        if args.verify:
            rig.assert_converged(vm)
        if run.churn:
            result["churn"] = churn(emulator, rig, vm, disk, corpus, args, cpu_pids=pids)
    finally:
        codes = rig.stop()
        result["exitCodes"] = codes
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def churn(
    emulator: AzureEmulator,
    rig: DataPlane,
    vm: str,
    disk: str,
    corpus: bytes,
    args: argparse.Namespace,
    *,
    cpu_pids: dict[str, int],
) -> dict[str, Any]:
    size = args.size_mib * MIB
    rng = random.Random(17)
    cycles = []
    for number in range(args.churn_cycles):
        plan = churn_writes(rng, size, args.churn_mib * MIB)
        writes = []
        for offset, length in plan:
            at = rng.randrange(0, len(corpus) - length)
            writes.append((offset, corpus[at : at + length]))
        write_guest(emulator, rig, disk, writes)
        with Cpu(cpu_pids) as cpu:
            started = time.perf_counter()
            rig.cycle_now(vm)
            status = rig.wait_point(vm, after=number + 1, timeout=args.timeout)
            wall = time.perf_counter() - started
        cycles.append(cycle_figures(status, wall, cpu.used(), rig.ps.log, rig.mt.log))
    if args.verify:
        rig.assert_converged(vm)
    changed = sum(c["bytesChanged"] for c in cycles)
    seconds = sum(c["cycleSeconds"] for c in cycles)
    wall_total = sum(c["wallSeconds"] for c in cycles)
    return {
        "cycles": cycles,
        "bytesChanged": changed,
        "mbps": changed / seconds / 1e6,
        "wallMbps": changed / wall_total / 1e6,
    }


# ---------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(result: dict[str, Any]) -> list[str]:
    base = result["baseline"]["mbps"]
    runs = result["runs"]
    lines = [
        f"dataplane: baseline {base:.1f} MB/s (local pread/pwrite 4 MiB, fsync 16 MiB; "
        f"runs {', '.join(f'{x:.1f}' for x in result['baseline']['all'])})"
    ]
    summary = []

    def throughput(label: str, run: str, goal: float) -> None:
        first = runs[run]["initial"]
        ratio, wall_ratio = first["mbps"] / base, first["wallMbps"] / base
        lines.append(
            f"dataplane: {label} {first['mbps']:.1f} MB/s = {ratio:.2f} x baseline "
            f"(goal >= {goal:.2f}) {verdict(ratio >= goal)}; wall {first['wallMbps']:.1f} MB/s "
            f"= {wall_ratio:.2f} x; cpu s {first['cpuSeconds']} in {first['cycleSeconds']:.2f} s"
        )
        summary.append((f"{label} (x baseline)", ratio, f">= {goal:.2f}", ratio >= goal))

    throughput("journal off", "journal off", GOALS["journal off"])
    if "journal on" in runs:
        throughput("journal on", "journal on", GOALS["journal on"])
    for name, data in runs.items():
        first = data["initial"]
        ratio = first["wireRatio"]
        if not data["level"]:
            continue
        lines.append(
            f"dataplane: wire level {data['level']} ({name}) {ratio:.3f} wireBytes/bytesChanged "
            f"(goal <= {GOALS['wire']:.2f}) {verdict(ratio <= GOALS['wire'])}"
        )
        if data["level"] in (1, 3) and data["firstCycle"] == "direct":
            summary.append(
                (
                    f"wire level {data['level']}",
                    ratio,
                    f"<= {GOALS['wire']}",
                    ratio <= GOALS["wire"],
                )
            )
    for name, data in runs.items():
        if name.startswith("level"):
            first = data["initial"]
            lines.append(
                f"dataplane: journal off, {name}: {first['mbps']:.1f} MB/s = "
                f"{first['mbps'] / base:.2f} x baseline (no goal); cpu s {first['cpuSeconds']}"
            )
    churned = runs["journal off"].get("churn")
    if churned:
        for i, c in enumerate(churned["cycles"], 1):
            lines.append(
                f"dataplane: churn cycle {i}: {c['bytesChanged'] / MIB:.1f} MiB changed, "
                f"{c['mbps']:.1f} MB/s in {c['cycleSeconds']:.2f} s, wall "
                f"{c['wallMbps']:.1f} MB/s in {c['wallSeconds']:.2f} s; cpu s {c['cpuSeconds']}"
            )
        ratio = churned["mbps"] / base
        lines.append(
            f"dataplane: journal on (incremental, with undo) {churned['mbps']:.1f} MB/s = "
            f"{ratio:.2f} x baseline (goal >= {GOALS['journal on']:.2f}) "
            f"{verdict(ratio >= GOALS['journal on'])}"
        )
        summary.append(
            (
                "journal on, incremental (x baseline)",
                ratio,
                f">= {GOALS['journal on']:.2f}",
                ratio >= GOALS["journal on"],
            )
        )
        wall = churned["wallMbps"]
        lines.append(
            f"dataplane: sustained churn {wall:.1f} MB/s end to end (goal >= "
            f"{GOALS['churn']:.0f} MB/s) {verdict(wall >= GOALS['churn'])}; "
            f"{churned['mbps']:.1f} MB/s over the cycles' own seconds"
        )
        summary.append(
            ("sustained churn (MB/s)", wall, f">= {GOALS['churn']:.0f}", wall >= GOALS["churn"])
        )
    lines.append("dataplane: summary")
    for label, value, goal, ok in summary:
        lines.append(f"dataplane:   {label:<38} {value:>8.2f}  goal {goal:<8} {verdict(ok)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="the VM's one disk")
    parser.add_argument("--churn-mib", type=int, default=64, help="rewritten between cycles")
    parser.add_argument("--churn-cycles", type=int, default=3)
    parser.add_argument(
        "--levels", default="1,3,0", help="zstd levels; the first (the PS's default) for all runs"
    )
    parser.add_argument("--no-journal-first", action="store_true", help="skip journal on")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the rigs' folders and logs")
    parser.add_argument("--verify", action="store_true", help="compare bytes after cycles")
    parser.add_argument("--timeout", type=float, default=300.0, help="per cycle, seconds")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not levels:
        levels = [1]
    size = args.size_mib * MIB
    if size % BATCH:
        raise SystemExit("--size-mib must be a multiple of 16")

    began = time.perf_counter()
    corpus = os_like_corpus(size + 64 * MIB)
    runs = [Run("journal off", "direct", levels[0], churn=args.churn_cycles > 0)]
    if not args.no_journal_first:
        runs.append(Run("journal on", "journal", levels[0]))
    runs += [Run(f"level {level}", "direct", level) for level in levels[1:]]

    work = Path(tempfile.mkdtemp(prefix="bench-dataplane-", dir=args.dir))
    result: dict[str, Any] = {"sizeMib": args.size_mib, "cores": os.cpu_count(), "runs": {}}
    try:
        source = work / "source.img"
        with source.open("wb") as fh:
            fh.write(corpus[:size])
            os.fsync(fh.fileno())  # no writeback of it left to slow the first baseline
        target = work / "baseline-flat.vmdk"
        base_times = [baseline(source, target) for _ in range(2)]
        with start_azure_emulator(work / "azure", Pki(work / "pki")) as emulator:
            for run in runs:
                print(f"dataplane: running {run.name} ...", flush=True)
                result["runs"][run.name] = run_pipeline(emulator, work, run, corpus, args)
        base_times.append(baseline(source, target))
        result["baseline"] = {
            "seconds": min(base_times),
            "mbps": size / min(base_times) / 1e6,
            "all": [size / t / 1e6 for t in base_times],
        }
        result["seconds"] = round(time.perf_counter() - began, 1)
        result["work"] = str(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for line in report(result):
        print(line)
    print(f"dataplane: whole run {result['seconds']:.0f} s")
    bad = {n: r["exitCodes"] for n, r in result["runs"].items() if any(r["exitCodes"].values())}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    if bad:
        raise SystemExit(f"services exited with errors: {bad}")


if __name__ == "__main__":
    main()
