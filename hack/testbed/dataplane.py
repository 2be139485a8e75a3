"""The data plane on the test bed: `failback master-target` and `failback process-server`
as real processes, with certificates from the test bed's CA, reading the Azure emulator's
managed disks and writing flat files. Used by tests/dataplane, the soak in hack/soak and the
benchmark in hack/bench.

::

    rig = DataPlane(root, emulator)
    rig.add_vm("web-01", {"web-01-os": 8 << 20})      # emulator disks + MT flat files
    rig.start()                                       # MT, then PS
    rig.ps.put_session("dr", "web-01", rig.session_body("web-01"))
    rig.wait_point("web-01", after=0)
    rig.kill_ps(); rig.start_ps()                     # SIGKILL and restart
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.azure.process import AzureEmulator
from testbed.pki import CertPair, Pki
from testbed.procs import free_port, log_tail, spawn, wait_until

FAILBACK = Path(sys.executable).parent / "failback"


def fast_emulator(emulator: AzureEmulator, scale: float = 60.0, seconds: float = 6.0) -> None:
    """The emulator made quick for the data plane: time ``scale`` times faster, every
    long-running operation ``seconds`` emulated seconds (0.1 s real), polls at the
    client's pace, snapshots of a disk no longer rate-limited (the PS paces its own)."""
    control = emulator.control
    control.reset()
    control.set_time_scale(scale)
    control.set_limits(
        durations=dict.fromkeys(control.limits()["durations"], seconds),
        poll_retry_after=0,
        snapshots_per_window=100_000,
    )


class DataPlaneError(AssertionError):
    """The data plane did not do what the caller waited for (with the logs' tails)."""


@dataclass
class Https:
    """A synchronous mutual-TLS JSON client: one connection per request."""

    port: int
    ca: Path
    pair: CertPair
    timeout: float = 30.0

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.pair.cert, self.pair.key)
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context, timeout=self.timeout
        )
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            raw = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=raw, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data.decode(errors="replace")

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise DataPlaneError(f"{method} {path}: {status} {answer}")
        return answer


@dataclass
class Service:
    """One `failback` service process; ``argv`` is rebuilt at each start."""

    name: str
    log: Path
    argv: Callable[[], list[str]]
    client: Https
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self, timeout: float = 30.0) -> None:
        self.proc = spawn(self.argv(), self.log)
        self.starts += 1
        wait_until(
            lambda: self.client.request("GET", "/v1/health")[0] == 200,
            what=f"failback {self.name}",
            log=self.log,
            proc=self.proc,
            timeout=timeout,
        )

    def kill(self) -> None:
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.kills += 1

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def pause(self) -> None:
        """SIGSTOP: the slowest possible target (backpressure tests)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)


@dataclass
class Vm:
    name: str
    disks: dict[str, int]
    """Managed disk name -> size; the target disk id is ``<name>`` upper-cased UUID-like."""

    def target_id(self, disk: str) -> str:
        return hashlib.sha256(disk.encode()).hexdigest()[:32]


@dataclass
class DataPlane:
    root: Path
    emulator: AzureEmulator
    resource_group: str = "rg-dataplane"
    mt_extra: tuple[str, ...] = ()
    ps_extra: tuple[str, ...] = ()
    compression_level: int = 1
    vms: dict[str, Vm] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(self.root / "pki")
        self.mt_pair = self.pki.serving("mt")
        self.ps_pair = self.pki.peer("ps")
        self.operator_pair = self.pki.client("operator", "failback-operator")
        self.credentials = self.root / "azure-credentials"
        self.credentials.mkdir(exist_ok=True)
        for key, value in (
            ("tenantId", self.emulator.tenant_id),
            ("clientId", self.emulator.client_id),
            ("clientSecret", self.emulator.client_secret),
        ):
            path = self.credentials / key
            path.write_text(value)
            path.chmod(0o600)
        mt_port, ps_port = free_port(), free_port()
        self.mt = Service(
            "master-target",
            self.root / "mt.log",
            self._mt_argv,
            Https(mt_port, self.pki.ca_file, self.ps_pair),
        )
        self.ps = Service(
            "process-server",
            self.root / "ps.log",
            self._ps_argv,
            Https(ps_port, self.pki.ca_file, self.operator_pair),
        )
        self.emulator.control.create_resource_group(self.resource_group)

    # ------------------------------------------------------------------ layout

    def flat_file(self, disk: str) -> Path:
        return self.root / "targets" / f"{disk}-flat.vmdk"

    def add_vm(self, name: str, disks: dict[str, int]) -> Vm:
        """Managed disks in the emulator (a running VM's) and zeroed target flat files."""
        vm = self.vms[name] = Vm(name, disks)
        control = self.emulator.control
        for disk, size in disks.items():
            control.create_disk(self.resource_group, disk, size)
            path = self.flat_file(disk)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                out.truncate(size)
        return vm

    def _mt_argv(self) -> list[str]:
        argv = [
            str(FAILBACK),
            "master-target",
            "--listen",
            f"127.0.0.1:{self.mt.client.port}",
            "--cert",
            str(self.mt_pair.cert),
            "--key",
            str(self.mt_pair.key),
            "--client-ca",
            str(self.pki.ca_file),
            "--retention-dir",
            str(self.root / "retention"),
        ]
        for vm in self.vms.values():
            for disk in vm.disks:
                argv += ["--disk", f"{vm.target_id(disk)}={self.flat_file(disk)}"]
            argv += ["--group", f"{vm.name}={','.join(vm.target_id(d) for d in vm.disks)}"]
        return argv + list(self.mt_extra)

    def _ps_argv(self) -> list[str]:
        emu = self.emulator
        return [
            str(FAILBACK),
            "process-server",
            "--listen",
            f"127.0.0.1:{self.ps.client.port}",
            "--cert",
            str(self.ps_pair.cert),
            "--key",
            str(self.ps_pair.key),
            "--client-ca",
            str(self.pki.ca_file),
            "--state-dir",
            str(self.root / "ps-state"),
            "--azure-credentials",
            str(self.credentials),
            "--azure-arm-endpoint",
            emu.arm_url,
            "--azure-authority",
            emu.authority,
            "--azure-ca-file",
            str(emu.ca_file),
            "--azure-poll-interval",
            "0.05",
            "--azure-writes-per-hour",
            "360000",
            "--compression-level",
            str(self.compression_level),
            *self.ps_extra,
        ]

    def start(self) -> None:
        self.mt.start()
        self.ps.start()

    def stop(self) -> dict[str, int]:
        return {"process-server": self.ps.stop(), "master-target": self.mt.stop()}

    # ------------------------------------------------------------------ sessions

    def session_body(self, vm: str, interval: float = 3600.0, **extra: Any) -> dict[str, Any]:
        spec = self.vms[vm]
        return {
            "subscriptionId": self.emulator.subscription_id,
            "masterTarget": {"endpoint": f"https://127.0.0.1:{self.mt.client.port}", "group": vm},
            "disks": [
                {
                    "resourceGroup": self.resource_group,
                    "name": disk,
                    "targetDiskId": spec.target_id(disk),
                }
                for disk in spec.disks
            ],
            "intervalSeconds": interval,
            **extra,
        }

    def start_session(self, vm: str, namespace: str = "dr", **extra: Any) -> Any:
        return self.ps.client.ok(
            "PUT", f"/v1/sessions/{namespace}/{vm}", self.session_body(vm, **extra)
        )

    def session(self, vm: str, namespace: str = "dr") -> dict[str, Any]:
        result: dict[str, Any] = self.ps.client.ok("GET", f"/v1/sessions/{namespace}/{vm}")
        return result

    def cycle_now(self, vm: str, namespace: str = "dr") -> None:
        self.ps.client.ok("POST", f"/v1/sessions/{namespace}/{vm}/cycle")

    def points(self, vm: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.mt.client.ok("GET", f"/v1/groups/{vm}/points")["points"]
        return result

    def group(self, vm: str) -> dict[str, Any]:
        result: dict[str, Any] = self.mt.client.ok("GET", f"/v1/groups/{vm}")
        return result

    def wait_point(self, vm: str, *, after: int, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the session settled a cycle numbered above ``after``; its status."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.session(vm)
            except (OSError, DataPlaneError) as exc:
                last = exc
            else:
                if last.get("cycleNumber", 0) > after and last["phase"] != "Settling":
                    return dict(last)
            time.sleep(0.05)
        raise DataPlaneError(
            f"no point after cycle {after} of {vm} within {timeout:g}s; last status {last}\n"
            f"--- ps.log\n{self.ps.tail()}\n--- mt.log\n{self.mt.tail()}"
        )

    # ------------------------------------------------------------------ bytes

    def source_bytes(self, disk: str) -> bytes:
        size = self._size(disk)
        control = self.emulator.control
        return b"".join(
            control.read_disk(self.resource_group, disk, at, min(4 << 20, size - at))
            for at in range(0, size, 4 << 20)
        )

    def target_bytes(self, disk: str) -> bytes:
        return self.flat_file(disk).read_bytes()

    def _size(self, disk: str) -> int:
        return next(vm.disks[disk] for vm in self.vms.values() if disk in vm.disks)

    # ------------------------------------------------------------------ guest and crashes

    def scribble(self, disk: str, rng: random.Random, writes: int = 6) -> None:
        """The guest writes (and TRIMs, one time in five) at random places of ``disk``."""
        size = self._size(disk)
        specs: list[dict[str, Any]] = []
        for _ in range(writes):
            length = rng.randrange(1, 64) * 4096
            offset = rng.randrange(0, (size - length) // 512) * 512
            if rng.random() < 0.2:
                specs.append({"offset": offset, "length": length, "clear": True})
            else:
                data = rng.randbytes(length // 4) * 4
                specs.append({"offset": offset, "data": base64.b64encode(data).decode()})
        self.emulator.control.guest_writes(self.resource_group, disk, specs, require_running=False)

    def assert_converged(self, vm: str) -> None:
        for disk in self.vms[vm].disks:
            if self.target_bytes(disk) != self.source_bytes(disk):
                raise DataPlaneError(f"target disk {disk} differs from the source")

    def resends(self) -> int:
        """Batches the PS sent that the MT already had (both services' whole life)."""
        return self.ps.log.read_text(errors="replace").count('"batch was already durable"')


@dataclass
class CrashReport:
    ps_kills: int = 0
    mt_kills: int = 0
    mid_cycle_kills: int = 0
    max_resent_per_kill: int = 0
    points_checked: int = 0

    @property
    def kills(self) -> dict[str, int]:
        return {"process-server": self.ps_kills, "master-target": self.mt_kills}


def kill_and_converge(
    rig: DataPlane,
    vm: str,
    rng: random.Random,
    *,
    kills: int,
    max_delay: float = 0.4,
    progress: Callable[[int, CrashReport], None] | None = None,
) -> CrashReport:
    """``kills`` times: the guest writes, a cycle starts, after a random delay the PS or
    the MT is SIGKILLed and restarted; then the next point must come, every point listed
    before must still be listed, the targets must equal the source byte for byte, and at
    most one batch may have been resent. Raises :class:`DataPlaneError` on any breach."""
    report = CrashReport()
    for round_ in range(kills):
        before = rig.points(vm)
        done = int(rig.session(vm)["cycleNumber"])
        for disk in rig.vms[vm].disks:
            rig.scribble(disk, rng)
        resent_before = rig.resends()
        rig.cycle_now(vm)
        time.sleep(rng.uniform(0.0, max_delay))
        victim = rig.ps if rng.random() < 0.5 else rig.mt
        try:
            phase = rig.session(vm)["phase"]
        except (OSError, DataPlaneError):
            phase = "unknown"
        if phase in ("Snapshotting", "Copying", "Committing", "Settling"):
            report.mid_cycle_kills += 1
        victim.kill()
        if victim is rig.ps:
            report.ps_kills += 1
        else:
            report.mt_kills += 1
        victim.start()
        # A PS killed before it recorded the requested cycle does not know of it: ask again.
        status = rig.session(vm)
        if status["cycleNumber"] <= done and status["phase"] in ("Idle", "Paused"):
            rig.cycle_now(vm)
        rig.wait_point(vm, after=done, timeout=90)
        after = {p["id"] for p in rig.points(vm)}
        lost = [p["id"] for p in before if p["id"] not in after]
        if lost:
            raise DataPlaneError(f"round {round_}: acknowledged points lost: {lost}")
        rig.assert_converged(vm)
        report.points_checked += 1
        report.max_resent_per_kill = max(report.max_resent_per_kill, rig.resends() - resent_before)
        if progress is not None:
            progress(round_, report)
    return report
