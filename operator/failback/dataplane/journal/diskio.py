"""How the journal reaches a target disk: a tiny protocol and a file-backed implementation.

A block device (``/dev/disk/by-id/...``) satisfies the same protocol: ``os.pread``/``os.pwrite``
at absolute offsets, ``os.fdatasync``, and the size from ``lseek(SEEK_END)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

_ZEROS = bytes(1 << 20)


class DiskIO(Protocol):
    """Positioned I/O on one target disk. Offsets and lengths are in bytes."""

    def size(self) -> int:
        """The disk's size in bytes."""
        ...

    def pread(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``."""
        ...

    def pwrite(self, offset: int, data: bytes) -> None:
        """Write all of ``data`` at ``offset``."""
        ...

    def fsync(self) -> None:
        """Make every completed write durable."""
        ...


def write_zeros(disk: DiskIO, offset: int, length: int) -> None:
    """Clear a range (a cleared Azure page range)."""
    while length > 0:
        n = min(length, len(_ZEROS))
        disk.pwrite(offset, _ZEROS[:n])
        offset += n
        length -= n


class FileDisk:
    """A disk image file (a VMDK's flat extent) or a block device, opened read-write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))

    def size(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_END)

    def pread(self, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < length:
            chunk = os.pread(self._fd, length - got, offset + got)
            if not chunk:
                raise OSError(f"{self.path}: short read at {offset + got} (end of disk)")
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def pwrite(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)

    def fsync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Release the file descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
