"""Small file-system helpers the journal uses: durable create, rename, unlink, truncate."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from failback.dataplane.journal.errors import JournalLocked


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (creations, renames, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset``."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def read_exact(fd: int, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    chunks: list[bytes] = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def truncate_durably(path: Path, size: int) -> None:
    """Cut a file to ``size`` bytes and fsync it."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_durably(path: Path) -> None:
    """Remove a file (if present) and make the removal durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def replace_durably(path: Path, data: bytes) -> None:
    """Atomically give ``path`` the content ``data`` (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def lock_directory(path: Path) -> int:
    """Take an exclusive lock on ``path`` (created if needed); return the fd that holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise JournalLocked(f"{path}: the journal is open in another process") from exc
        raise
    return fd


def free_bytes(directory: Path) -> int:
    """Bytes available to this process on the volume holding ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
