"""Sessions' state on the process server's state directory: one JSON file per session,
replaced atomically (write, fsync, rename, fsync the directory), so a crash leaves either
the old state or the new one, never half of either."""

from __future__ import annotations

import json
import os
from pathlib import Path

from failback.dataplane.ps.model import SessionState


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: write a temporary file, fsync it, rename it
    over ``path``, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateCorrupt(Exception):
    """A session file that does not parse: named, never silently dropped."""


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory / "sessions"

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):
            stale.unlink()

    def _path(self, namespace: str, name: str) -> Path:
        return self.directory / f"{namespace}_{name}.json"

    def load_all(self) -> list[SessionState]:
        states = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                states.append(SessionState.from_dict(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError) as exc:
                raise StateCorrupt(f"session state {path} does not parse: {exc}") from exc
        return states

    def save(self, state: SessionState) -> None:
        path = self._path(state.spec.namespace, state.spec.name)
        atomic_write(path, json.dumps(state.to_dict(), indent=1, sort_keys=True).encode())

    def delete(self, namespace: str, name: str) -> None:
        for path in (self._path(namespace, name), self.target_file(namespace, name)):
            if path.exists():
                path.unlink()
        sync_directory(self.directory)

    def target_file(self, namespace: str, name: str) -> Path:
        """Where a target that keeps its own position (Azure replicas) persists it."""
        return self.directory / f"{namespace}_{name}.target"
