"""What the retention volume is: mount point, file system, size, free space (R-PRE-5)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_MOUNTS = Path("/proc/self/mounts")


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    path: str
    mount_point: str
    file_system: str
    capacity_bytes: int
    free_bytes: int
    writable: bool
    shares_install_volume: bool
    """Whether the MT's own installation lives on the same volume (R-PRE-5 wants a
    dedicated retention volume)."""


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def _mount_of(path: Path) -> tuple[str, str]:
    """The mount point holding ``path`` and its file-system type (``unknown`` if unseen)."""
    best, fs_type = "/", "unknown"
    try:
        lines = _MOUNTS.read_text().splitlines()
    except OSError:
        return best, fs_type
    target = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = _unescape(fields[1])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best) and (mount != best or fs_type == "unknown"):
            best, fs_type = mount, fields[2]
    return best, fs_type


def inspect(directory: Path) -> VolumeInfo:
    """The facts about the volume holding ``directory`` (which must exist)."""
    real = directory.resolve()
    st = os.statvfs(real)
    mount, fs_type = _mount_of(real)
    install = Path(__file__).resolve().parent
    return VolumeInfo(
        path=str(real),
        mount_point=mount,
        file_system=fs_type,
        capacity_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bavail * st.f_frsize,
        writable=os.access(real, os.W_OK),
        shares_install_volume=os.stat(real).st_dev == os.stat(install).st_dev,
    )
