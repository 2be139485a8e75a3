"""The test bed's guest: writes into a vcsim VM's disks, and stands in for CBT.

vcsim (govmomi 0.46) does no disk I/O: a disk it creates is two empty files in the VM's
folder (``x.vmdk``, ``x-flat.vmdk``), and it has no ``QueryChangedDiskAreas``. So the
tests play the guest OS here: :class:`GuestDisk` writes bytes into the flat file (sized
to the disk's capacity first) and records each write's area in a **sidecar** next to it,
``<flat>.cbt``, which the product reads through its ``sidecar`` changed-areas source
(``failback.dataplane.source_vsphere.SidecarChangedAreas``) exactly as it asks vCenter
"what changed since changeId X".

The sidecar, JSON lines (docs/source-vsphere.md)::

    {"format": "failback-cbt/1", "epoch": "<uuid4>", "capacity": <bytes>}     header
    {"id": 1, "start": <byte offset>, "length": <bytes>}                      one per write
    {"id": 2, ...}

Ids increase by one per write. A changeId is ``"<epoch>/<id>"`` (the last write it
covers); :meth:`GuestDisk.reset_tracking` starts a new epoch, like a CBT reset, so every
changeId handed out before is rejected. A record is appended (and flushed) *before* its
data is written: a torn last line is a write that never happened.

Unlike a real snapshot, vcsim's does not freeze the disk: write between cycles, not
while a cycle reads.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SIDECAR_SUFFIX = ".cbt"
FORMAT = "failback-cbt/1"

_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rel>.*)$")


def sidecar_of(flat: Path) -> Path:
    return flat.with_name(flat.name + SIDECAR_SUFFIX)


def datastore_directories(si: Any) -> dict[str, Path]:
    """Every datastore vcsim keeps as a local folder: its name → ``info.url``."""
    from pyVmomi import vim

    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    try:
        return {ds.name: Path(ds.info.url) for ds in view.view if Path(ds.info.url).is_dir()}
    finally:
        view.Destroy()


def flat_file(directories: Mapping[str, Path], file_name: str) -> Path:
    """The ``-flat.vmdk`` vcsim made beside ``[ds] folder/x.vmdk``."""
    match = _DS_PATH.match(file_name)
    if match is None:
        raise ValueError(f"{file_name!r} is no datastore path")
    path = directories[match["ds"]] / match["rel"]
    flat = path.with_name(path.name.replace(".vmdk", "-flat.vmdk", 1))
    return flat if flat.is_file() else path


class GuestDisk:
    """One disk of a vcsim VM, written as its guest would, with CBT in the sidecar."""

    def __init__(self, flat: Path, capacity: int) -> None:
        self.flat = flat
        self.capacity = capacity
        self.sidecar = sidecar_of(flat)

    @classmethod
    def prepare(cls, flat: Path, capacity: int) -> GuestDisk:
        """Size the (empty) flat file to ``capacity`` (sparse) and start tracking."""
        disk = cls(flat, capacity)
        if flat.stat().st_size < capacity:
            os.truncate(flat, capacity)
        if not disk.sidecar.exists():
            disk.reset_tracking()
        return disk

    def reset_tracking(self) -> str:
        """A new epoch (like a CBT reset): every earlier changeId becomes invalid."""
        epoch = str(uuid.uuid4())
        header = {"format": FORMAT, "epoch": epoch, "capacity": self.capacity}
        self.sidecar.write_text(json.dumps(header) + "\n")
        return epoch

    def _records(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        lines = self.sidecar.read_text().splitlines()
        return json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]

    @property
    def change_id(self) -> str:
        """The changeId covering every write so far."""
        header, records = self._records()
        return f"{header['epoch']}/{records[-1]['id'] if records else 0}"

    def write(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; the id of the change recorded for it."""
        if offset < 0 or offset + len(data) > self.capacity:
            raise ValueError(f"write {offset}+{len(data)} beyond the disk ({self.capacity})")
        _, records = self._records()
        change = (records[-1]["id"] if records else 0) + 1
        record = {"id": change, "start": offset, "length": len(data)}
        with self.sidecar.open("a") as side:
            side.write(json.dumps(record) + "\n")
            side.flush()
            os.fsync(side.fileno())
        fd = os.open(self.flat, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        return int(change)

    def read(self, offset: int, length: int) -> bytes:
        """The disk's bytes (zeros past the end of the file)."""
        with self.flat.open("rb") as f:
            f.seek(offset)
            data = f.read(length)
        return data + bytes(length - len(data))

    def grow(self, capacity: int) -> None:
        """The disk grew (after vCenter extended it): size the file, keep tracking."""
        self.capacity = capacity
        if self.flat.stat().st_size < capacity:
            os.truncate(self.flat, capacity)
