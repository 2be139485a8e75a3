"""Consistency groups' names and the file that records them: ``<retention-dir>/groups.json``.

The file lists each group the operator registered (``PUT /v1/groups/{group}``) or that was
released (a ``--group`` one too), with its disks, their sizes and whether it is released, so
that a released group stays released across restarts: its disks may by then be attached to
a running on-premises VM, and the service must not open them again. Its format::

    {"version": 1,
     "groups": {"web-01": {"disks": [{"id": "6000C29a-…", "sizeBytes": 137438953472}],
                           "released": true,
                           "status": {…}}}}

``status`` (released groups only) is what ``GET /v1/groups/{group}`` answered when the group
was released, points included: health and the group's endpoints answer it while the journal
stays closed. The file is replaced atomically (:func:`~failback.dataplane.journal.store.
replace_durably`: temporary file, fsync, rename, fsync of the directory), so a crash leaves
the old content or the new one. A file that does not parse is a :class:`GroupsFileError`
naming the file and the field; the service then refuses to start rather than guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failback.dataplane.journal.store import replace_durably
from failback.dataplane.mt.resolver import disk_uuid_hex

GROUP_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
"""A group name: a Kubernetes-style name (it is also the journal's directory name)."""

DISK_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$")
"""A disk id: a disk UUID or any short token without path separators."""

FILE_NAME = "groups.json"
"""The groups file, in the retention directory beside the groups' journal directories."""

RESERVED = frozenset({FILE_NAME, f"{FILE_NAME}.tmp"})
"""Names a group cannot have: its journal directory would be the groups file."""

MAX_DISKS = 64
"""The most disks one group may have."""

VERSION = 1


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a group name, or None."""
    if not GROUP_RE.match(name):
        return (
            f"the name {name!r} must be lower-case letters, digits, '-' and '.', at most 63 "
            "characters, starting and ending alphanumeric"
        )
    if name in RESERVED:
        return f"the name {name!r} is reserved (the retention directory's {FILE_NAME})"
    return None


def disk_key(disk_id: str) -> str:
    """What identifies a disk whatever the spelling: a UUID's 32 hex digits, else the id."""
    return disk_uuid_hex(disk_id) or disk_id


class GroupsFileError(Exception):
    """The groups file does not parse; the message names the file and the field."""


@dataclass(frozen=True)
class DiskRecord:
    id: str
    size_bytes: int
    """The size the operator asked for (``PUT``), or the disk's size when a ``--group``
    group was released."""


@dataclass(frozen=True)
class GroupRecord:
    """One group of the file."""

    disks: tuple[DiskRecord, ...]
    released: bool = False
    status: Mapping[str, Any] | None = None
    """``GET /v1/groups/{group}`` when released (points included); None while active."""

    @property
    def disk_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.disks)


def path_of(directory: Path) -> Path:
    return directory / FILE_NAME


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse(data: Any, where: str) -> dict[str, GroupRecord]:
    """The file's groups, in the file's order; :class:`GroupsFileError` naming the field."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise GroupsFileError(f"{where}: not a groups file of version {VERSION}")
    groups = data.get("groups")
    if not isinstance(groups, dict):
        raise GroupsFileError(f"{where}: groups must be an object")
    records: dict[str, GroupRecord] = {}
    for name, entry in groups.items():
        at = f"{where}: groups.{name}"
        problem = name_problem(name)
        if problem is not None:
            raise GroupsFileError(f"{at}: {problem}")
        if not isinstance(entry, dict):
            raise GroupsFileError(f"{at} must be an object")
        disks = entry.get("disks")
        if not isinstance(disks, list) or not 1 <= len(disks) <= MAX_DISKS:
            raise GroupsFileError(f"{at}.disks must be a list of 1 to {MAX_DISKS} disks")
        parsed = []
        for i, disk in enumerate(disks):
            ok = isinstance(disk, dict) and isinstance(disk.get("id"), str)
            if not ok or not DISK_RE.match(disk["id"]) or not _size(disk.get("sizeBytes")):
                raise GroupsFileError(f"{at}.disks[{i}] must be {{id, sizeBytes >= 0}}")
            parsed.append(DiskRecord(disk["id"], disk["sizeBytes"]))
        released = entry.get("released")
        status = entry.get("status")
        if not isinstance(released, bool):
            raise GroupsFileError(f"{at}.released must be true or false")
        if status is not None and not isinstance(status, dict):
            raise GroupsFileError(f"{at}.status must be an object or absent")
        records[name] = GroupRecord(tuple(parsed), released, status if released else None)
    return records


def load(directory: Path) -> dict[str, GroupRecord]:
    """The groups recorded in ``directory`` (none if the file does not exist)."""
    path = path_of(directory)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise GroupsFileError(f"{path}: cannot read it: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise GroupsFileError(f"{path}: not JSON: {exc}") from exc
    return parse(data, str(path))


def released_names(directory: Path) -> frozenset[str]:
    """The groups the file records as released; none when it is missing or does not parse
    (the service reports that when it opens the file)."""
    try:
        return frozenset(name for name, r in load(directory).items() if r.released)
    except GroupsFileError:
        return frozenset()


def encode(records: Mapping[str, GroupRecord]) -> bytes:
    groups: dict[str, Any] = {}
    for name, record in records.items():
        entry: dict[str, Any] = {
            "disks": [{"id": d.id, "sizeBytes": d.size_bytes} for d in record.disks],
            "released": record.released,
        }
        if record.released and record.status is not None:
            entry["status"] = dict(record.status)
        groups[name] = entry
    return json.dumps({"version": VERSION, "groups": groups}, indent=1).encode() + b"\n"


def save(directory: Path, data: bytes) -> None:
    """Replace the file with ``data`` (from :func:`encode`) durably."""
    replace_durably(path_of(directory), data)
