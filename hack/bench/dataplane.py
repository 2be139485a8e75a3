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
  undo data, which every cycle after the first goes through. The default (384 MiB) is what
  54 MB/s of churn accumulates in a cycle of about 7 s: sustained churn is the steady state
  where each cycle carries what the guest wrote during the previous one. Smaller cycles
  (``--churn-mib 64``) show the fixed cost of a cycle instead (snapshot, SAS, commit).
- **reverse** (reprotect after failback, OnPremToAzure; ``--no-reverse`` skips it): a vcsim
  (started here) VM with one disk of ``--size-mib`` fully written with the same data by the
  test bed's guest writer (a flat file, changed areas in its ``.cbt`` sidecar) through
  ``failback process-server`` (an OnPremToAzure session, ``--change-tracking sidecar``)
  into an Azure replica managed disk in the emulator (a write SAS per cycle, writes read
  back, a point snapshot per cycle): the initial cycle, then ``--churn-cycles``
  incremental ones with the same churn. The issue sets no goal for this direction: the
  forward goals are printed beside it for comparison only.

MB/s are of the disk bytes (``bytesChanged`` of the PS's ``lastCycle``), over the cycle's
own ``seconds`` (first batch read to point committed) and over wall time (session start or
cycle request until the PS reports the point settled: snapshots and SAS included). It also
prints the CPU seconds each process (emulator, PS, MT; vcsim in the reverse run) spent on
each cycle: with 2 cores a sum near 2 x wall means the machine is saturated, and says who
spends it. For the reverse cycles it also sums the emulator's own request times per route
from its log (Put Page writes, read-back GETs, ARM) and places the PS's log events on the
cycle's clock (vSphere snapshot, SAS granted, source read, SAS revoked, point snapshot).
Goals are printed as PASS/MISS, never asserted. Run:

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
import asyncio
import base64
import datetime as dt
import json
import os
import random
import re
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyVim.connect import Disconnect, SmartConnect

from failback.adapters.vsphere import Sessions
from failback.domain.vsphere import VCenterCredentials
from failback.ports.vsphere import NewDisk, NewVM, TaskState, VMPlacement
from testbed import build
from testbed.azure.process import AzureEmulator, start_azure_emulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.guest import GuestDisk, datastore_directories, flat_file
from testbed.pki import Pki
from testbed.vcsim import VCenter, start_vcenter

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
    status: dict[str, Any], wall: float, cpu: dict[str, float], ps_log: Path, mt_log: Path | None
) -> dict[str, Any]:
    last = status["lastCycle"]
    disks = last["disks"]
    changed = sum(d["bytesChanged"] for d in disks)
    figures = {
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
    }
    if mt_log is not None:
        figures["mtBatchMs"] = _batch_ms(mt_log)
    return figures


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


# ---------------------------------------------------------------------------- reverse


REVERSE_VM = "bench-rev"
EMULATOR_REQUEST = re.compile(
    r"^(\S+ \S+) \S+ testbed\.azure (\w+) [A-Z]+ \S+ -> \S+ \(([\d.]+) ms\)$"
)
"""One request in the emulator's log: when it ended, its route class, its own ms."""
PS_EVENTS = (
    ("vSphere snapshot", re.compile(r"^VM \S+ cycle \d+ opened on snapshot")),
    ("write SAS granted", re.compile(r"^replica \S+: cycle opened")),
    ("source read done", re.compile(r"^disk \S+ cycle on \S+ read")),
    ("write SAS revoked", re.compile(r"^replica \S+: write access revoked")),
    ("point snapshot started", re.compile(r"^point \S+ of replica \S+: snapshot")),
    ("point committed", re.compile(r"^recovery point committed")),
)


class LogMark:
    """Where a log file ended at a moment: what was appended since is one cycle's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[str]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace").splitlines()


def emulator_requests(lines: list[str]) -> dict[str, dict[str, float]]:
    """Per route class, from the emulator's log: requests, their ``ms`` summed (requests in
    flight together overlap), and ``phaseSeconds``: the wall time of the runs of that
    class's requests, each run from the end of the other class's run before it to the
    end of its own last request (for ``blob_write`` and ``blob_read``: a batch's Put
    Pages, then its read-back GETs, one after the other)."""
    routes: dict[str, dict[str, float]] = {}
    blob: list[tuple[float, str, float]] = []
    for line in lines:
        match = EMULATOR_REQUEST.match(line)
        if match is None:
            continue
        counts = routes.setdefault(match[2], {"requests": 0, "ms": 0.0, "phaseSeconds": 0.0})
        counts["requests"] += 1
        counts["ms"] = round(counts["ms"] + float(match[3]), 1)
        if match[2] in ("blob_write", "blob_read"):
            ended = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            blob.append((ended, match[2], float(match[3]) / 1000))
    if blob:
        mark = blob[0][0] - blob[0][2]
        for i, (ended, route, _) in enumerate(blob):
            if i + 1 == len(blob) or blob[i + 1][1] != route:
                phase = routes[route]
                phase["phaseSeconds"] = round(phase["phaseSeconds"] + ended - mark, 3)
                mark = ended
    return routes


def ps_timeline(lines: list[str], began: float) -> dict[str, float]:
    """Seconds from the cycle's request to the first PS log event of each kind."""
    seen: dict[str, float] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = str(entry.get("message", ""))
        for label, pattern in PS_EVENTS:
            if label not in seen and pattern.search(message):
                at = dt.datetime.fromisoformat(str(entry["time"])).timestamp()
                seen[label] = round(at - began, 3)
    return seen


@dataclass
class GuestVm:
    uuid: str
    disk_uuid: str
    disk: GuestDisk


async def create_guest_vm(vcenter: VCenter, size: int) -> GuestVm:
    """One VM on LocalDS_0 with one disk of ``size`` bytes, created through the product's
    vSphere client, its flat file sized for the guest writer (as tests/dataplane do)."""
    sessions = Sessions(inventory_max_age=0.0, timeout=30.0)
    try:
        vc = await sessions.connect(
            VCenterCredentials(
                server=f"{vcenter.host}:{vcenter.port}",
                username=vcenter.username,
                password=vcenter.password,
                ca_bundle=vcenter.ca_file.read_text(),
            )
        )
        instance_uuid = str(uuid.uuid4())
        name = f"{REVERSE_VM}-{instance_uuid[:8]}"
        started = await vc.create_vm(
            NewVM(
                name=name,
                guest_id="otherLinux64Guest",
                placement=VMPlacement(datacenter="DC0", datastore="LocalDS_0", host="DC0_H0"),
                new_disks=(NewDisk(f"[LocalDS_0] {name}/disk-0.vmdk", size),),
                instance_uuid=instance_uuid,
                cpus=1,
                memory_mib=128,
            )
        )
        if isinstance(started, TaskState):
            done = await vc.wait(started.moref, 60)
            if done.state != "success":
                raise SystemExit(f"vcsim: creating VM {name} failed: {done}")
        vm = await vc.vm(instance_uuid)
        if vm is None or len(vm.disks) != 1 or vm.disks[0].uuid is None:
            raise SystemExit(f"vcsim: VM {name} is missing, or has not one disk with a UUID: {vm}")
        disk = vm.disks[0]
        disk_uuid = str(disk.uuid)
    finally:
        await sessions.close()
    flat = flat_file(datastores(vcenter), disk.file_name)
    return GuestVm(instance_uuid, disk_uuid, GuestDisk.prepare(flat, size))


def datastores(vcenter: VCenter) -> dict[str, Path]:
    """vcsim's datastores as local folders (pyVim is untyped: hence the ignores)."""
    si = SmartConnect(  # type: ignore[no-untyped-call]
        host=vcenter.host,
        port=vcenter.port,
        user=vcenter.username,
        pwd=vcenter.password,
        sslContext=ssl.create_default_context(cafile=str(vcenter.ca_file)),
    )
    try:
        return datastore_directories(si)
    finally:
        Disconnect(si)  # type: ignore[no-untyped-call]


def vcenter_credentials(vcenter: VCenter, folder: Path) -> Path:
    """The folder ``--vcenter-credentials`` reads (one file per key, as a mounted Secret)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in (
        ("server", f"{vcenter.host}:{vcenter.port}"),
        ("username", vcenter.username),
        ("password", vcenter.password),
        ("caBundle", vcenter.ca_file.read_text()),
    ):
        (folder / key).write_text(value)
        (folder / key).chmod(0o600)
    return folder


def reverse_body(rig: DataPlane, vcenter: VCenter, vm: GuestVm, name: str) -> dict[str, Any]:
    return {
        "direction": "OnPremToAzure",
        "subscriptionId": rig.emulator.subscription_id,
        "vcenter": {"server": f"{vcenter.host}:{vcenter.port}", "vmInstanceUuid": vm.uuid},
        "replicas": [
            {
                "sourceDiskUuid": vm.disk_uuid,
                "resourceGroup": rig.resource_group,
                "name": f"{name}-disk0-replica",
            }
        ],
        "location": "westeurope",
        "intervalSeconds": 3600,
    }


def assert_replica_equals_flat_file(rig: DataPlane, name: str, vm: GuestVm) -> None:
    control = rig.emulator.control
    for at in range(0, vm.disk.capacity, READ_CHUNK):
        length = min(READ_CHUNK, vm.disk.capacity - at)
        replica = control.read_disk(rig.resource_group, f"{name}-disk0-replica", at, length)
        if replica != vm.disk.read(at, length):
            raise SystemExit(f"reverse: replica of {name} differs from the flat file at {at}")


def reverse_cycle(
    rig: DataPlane,
    emulator: AzureEmulator,
    name: str,
    *,
    after: int,
    start: Any,
    pids: dict[str, int],
    timeout: float,
) -> dict[str, Any]:
    """One reverse cycle (``start()`` asks for it): its figures, with the emulator's
    request times and the PS's log events of that cycle."""
    marks = LogMark(emulator.log_file), LogMark(rig.ps.log)
    with Cpu(pids) as cpu:
        began = time.time()
        started = time.perf_counter()
        start()
        status = rig.wait_point(name, after=after, timeout=timeout)
        wall = time.perf_counter() - started
    figures = cycle_figures(status, wall, cpu.used(), rig.ps.log, None)
    figures["emulator"] = emulator_requests(marks[0].lines())
    figures["psTimeline"] = ps_timeline(marks[1].lines(), began)
    return figures


def run_reverse(
    emulator: AzureEmulator,
    vcenter: VCenter,
    work: Path,
    corpus: bytes,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The reverse rig: a vcsim VM's disk filled by the guest writer → the PS (an
    OnPremToAzure session) → a replica disk in the emulator; the initial cycle, then
    ``--churn-cycles`` incremental ones. The PS is stopped however it ends."""
    size = args.size_mib * MIB
    fast_emulator(emulator)
    root = work / "dp-reverse"
    vm = asyncio.run(create_guest_vm(vcenter, size))
    filled = time.perf_counter()
    vm.disk.write(0, corpus[:size])
    result: dict[str, Any] = {"fillSeconds": round(time.perf_counter() - filled, 2)}
    rig = DataPlane(
        root,
        emulator,
        ps_extra=(
            "--snapshot-rate=1000/1s",
            f"--vcenter-credentials={vcenter_credentials(vcenter, root / 'vcenter-credentials')}",
            "--change-tracking=sidecar",
            *(f"--datastore={n}={d}" for n, d in datastores(vcenter).items()),
        ),
    )
    name = f"rev-{vm.uuid[:8]}"
    try:
        rig.ps.start()
        assert rig.ps.proc is not None
        pids = {"emulator": emulator.pid, "ps": rig.ps.proc.pid, "vcsim": vcenter.pid}
        body = reverse_body(rig, vcenter, vm, name)
        result["initial"] = reverse_cycle(
            rig,
            emulator,
            name,
            after=0,
            start=lambda: rig.ps.client.ok("PUT", f"/v1/sessions/dr/{name}", body),
            pids=pids,
            timeout=args.timeout,
        )
        if args.verify:
            assert_replica_equals_flat_file(rig, name, vm)
        rng = random.Random(17)
        cycles = []
        for number in range(args.churn_cycles):
            for offset, length in churn_writes(rng, size, args.churn_mib * MIB):
                at = rng.randrange(0, len(corpus) - length)
                vm.disk.write(offset, corpus[at : at + length])
            cycles.append(
                reverse_cycle(
                    rig,
                    emulator,
                    name,
                    after=number + 1,
                    start=lambda: rig.cycle_now(name),
                    pids=pids,
                    timeout=args.timeout,
                )
            )
        if cycles:
            if args.verify:
                assert_replica_equals_flat_file(rig, name, vm)
            changed = sum(c["bytesChanged"] for c in cycles)
            result["churn"] = {
                "cycles": cycles,
                "bytesChanged": changed,
                "mbps": changed / sum(c["cycleSeconds"] for c in cycles) / 1e6,
                "wallMbps": changed / sum(c["wallSeconds"] for c in cycles) / 1e6,
            }
    finally:
        result["exitCodes"] = {"process-server": rig.ps.stop()}
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------- report


def verdict(ok: bool | None) -> str:
    return "no goal" if ok is None else "PASS" if ok else "MISS"


def report(result: dict[str, Any]) -> list[str]:
    base = result["baseline"]["mbps"]
    runs = result["runs"]
    lines = [
        f"dataplane: baseline {base:.1f} MB/s (local pread/pwrite 4 MiB, fsync 16 MiB; "
        f"runs {', '.join(f'{x:.1f}' for x in result['baseline']['all'])})"
    ]
    summary: list[tuple[str, float, str, bool | None]] = []

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
    reverse = result.get("reverse")
    if reverse:
        lines += report_reverse(reverse, base)
        first = reverse["initial"]
        summary.append(("reverse initial (x baseline)", first["mbps"] / base, "-", None))
        if reverse.get("churn"):
            wall = reverse["churn"]["wallMbps"]
            summary.append(("reverse churn end to end (MB/s)", wall, "-", None))
    lines.append("dataplane: summary")
    for label, value, goal, ok in summary:
        target = f"goal {goal:<8} " if ok is not None else ""
        lines.append(f"dataplane:   {label:<38} {value:>8.2f}  {target}{verdict(ok)}")
    return lines


def report_reverse(reverse: dict[str, Any], base: float) -> list[str]:
    """The reverse direction's lines: no goal of its own, the forward ones beside it."""
    first = reverse["initial"]
    ratio = first["mbps"] / base
    lines = [
        f"dataplane: reverse initial (vcsim flat file -> PS -> replica disk) {first['mbps']:.1f} "
        f"MB/s = {ratio:.2f} x baseline (no goal; forward goals: journal off >= "
        f"{GOALS['journal off']:.2f}, journal on >= {GOALS['journal on']:.2f}); wall "
        f"{first['wallMbps']:.1f} MB/s = {first['wallMbps'] / base:.2f} x; cpu s "
        f"{first['cpuSeconds']} in {first['cycleSeconds']:.2f} s",
        *_reverse_detail("reverse initial", first),
    ]
    churned = reverse.get("churn")
    if churned:
        for i, c in enumerate(churned["cycles"], 1):
            lines.append(
                f"dataplane: reverse churn cycle {i}: {c['bytesChanged'] / MIB:.1f} MiB changed, "
                f"{c['mbps']:.1f} MB/s in {c['cycleSeconds']:.2f} s, wall "
                f"{c['wallMbps']:.1f} MB/s in {c['wallSeconds']:.2f} s; cpu s {c['cpuSeconds']}"
            )
            lines += _reverse_detail(f"reverse churn cycle {i}", c)
        lines.append(
            f"dataplane: reverse incremental {churned['mbps']:.1f} MB/s over the cycles' own "
            f"seconds = {churned['mbps'] / base:.2f} x baseline, {churned['wallMbps']:.1f} MB/s "
            f"end to end (no goal; forward: journal on >= {GOALS['journal on']:.2f} x, "
            f"churn >= {GOALS['churn']:.0f} MB/s end to end)"
        )
    return lines


def _reverse_detail(label: str, cycle: dict[str, Any]) -> list[str]:
    routes = cycle["emulator"]
    none = {"requests": 0, "ms": 0.0, "phaseSeconds": 0.0}
    writes, reads = routes.get("blob_write", none), routes.get("blob_read", none)
    arm = {r: v["requests"] for r, v in sorted(routes.items()) if r.startswith("arm")}
    timeline = ", ".join(f"{event} {at:.2f}" for event, at in cycle["psTimeline"].items())
    return [
        f"dataplane:   {label}: emulator: {writes['requests']:.0f} Put Page in "
        f"{writes['phaseSeconds']:.2f} s of write phases ({writes['ms'] / 1000:.2f} s summed), "
        f"{reads['requests']:.0f} read-back GETs in {reads['phaseSeconds']:.2f} s of read-back "
        f"phases ({reads['ms'] / 1000:.2f} s summed); ARM requests {arm}",
        f"dataplane:   {label}: PS log, s after the request: {timeline}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="the VM's one disk")
    parser.add_argument(
        "--churn-mib",
        type=int,
        default=384,
        help="rewritten between cycles (default 384: what 54 MB/s of churn accumulates in a "
        "cycle of about 7 s, the steady state the sustained-churn goal is about)",
    )
    parser.add_argument("--churn-cycles", type=int, default=2)
    parser.add_argument(
        "--levels", default="1,3,0", help="zstd levels; the first (the PS's default) for all runs"
    )
    parser.add_argument("--no-journal-first", action="store_true", help="skip journal on")
    parser.add_argument(
        "--no-reverse", action="store_true", help="skip the reverse direction (vcsim -> Azure)"
    )
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
        pki = Pki(work / "pki")
        with start_azure_emulator(work / "azure", pki) as emulator:
            for run in runs:
                print(f"dataplane: running {run.name} ...", flush=True)
                result["runs"][run.name] = run_pipeline(emulator, work, run, corpus, args)
            if not args.no_reverse:
                print("dataplane: running reverse (vcsim -> Azure replica) ...", flush=True)
                with start_vcenter(work / "vcenter", pki, build.require()) as vcenter:
                    result["reverse"] = run_reverse(emulator, vcenter, work, corpus, args)
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
    rigs = {**result["runs"], **({"reverse": result["reverse"]} if "reverse" in result else {})}
    bad = {n: r["exitCodes"] for n, r in rigs.items() if any(r["exitCodes"].values())}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    if bad:
        raise SystemExit(f"services exited with errors: {bad}")


if __name__ == "__main__":
    main()
