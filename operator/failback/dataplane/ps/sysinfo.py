"""What the PS reports about its machine: CPU and memory use, its cache volume's free space,
and whether it reaches the control plane (R-PRE-12). Linux ``/proc``; nothing is guessed
when a file is missing (the value is reported as 0 and the reason logged once)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CpuSampler:
    """CPU use of the machine over the last minute, from ``/proc/stat`` samples."""

    samples: list[tuple[float, int, int]]

    def __init__(self) -> None:
        self.samples = []

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def sample(self) -> None:
        read = self._read()
        if read is None:
            return
        now = time.monotonic()
        self.samples.append((now, *read))
        while len(self.samples) > 2 and self.samples[1][0] < now - 60:
            self.samples.pop(0)

    def percent(self) -> int:
        if len(self.samples) < 2:
            return 0
        (_, total0, idle0), (_, total1, idle1) = self.samples[0], self.samples[-1]
        busy = (total1 - total0) - (idle1 - idle0)
        return max(0, min(100, round(100 * busy / max(1, total1 - total0))))


def memory_percent() -> int:
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        total = int(info["MemTotal"].split()[0])
        available = int(info["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0
    return max(0, min(100, round(100 * (total - available) / max(1, total))))


def free_percent(path: Path) -> int:
    try:
        stat = os.statvfs(path)
    except OSError:
        return 0
    return max(0, min(100, round(100 * stat.f_bavail / max(1, stat.f_blocks))))


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


async def reach(host_port: str) -> str | None:
    """None if a TCP connection to ``host:port`` opens within 5 s, else why not."""
    host, _, port = host_port.rpartition(":")
    try:
        async with asyncio.timeout(5.0):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except (OSError, TimeoutError) as exc:
        return f"cannot connect to {host_port}: {exc.__class__.__name__}: {exc}"[:512]
    writer.close()
    return None
