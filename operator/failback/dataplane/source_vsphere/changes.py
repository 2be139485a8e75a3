"""Which areas of a disk changed since a changeId: two implementations of ``ChangedAreas``.

``vcenter`` (:class:`VCenterChangedAreas`)
    Real changed block tracking: ``QueryChangedDiskAreas`` through the ``VCenter`` port,
    paged through ``startOffset`` until the disk's capacity is covered; the new changeId
    is the one the snapshot's disk carries (``backing.changeId``).

``sidecar`` (:class:`SidecarChangedAreas`, the test bed)
    vcsim has no ``QueryChangedDiskAreas``. The test bed's guest writer
    (``hack/testbed/guest.py``) records every write's area in ``<flat file>.cbt``
    (JSON lines, a header with an epoch, then ``{"id", "start", "length"}`` per write);
    a changeId is ``"<epoch>/<id>"``. Areas since ``E/n`` are the records with an id above
    ``n``. ``"*"`` is, as for CBT, every *allocated* area: the flat file's data ranges
    (``SEEK_DATA``/``SEEK_HOLE``, so block-granular) plus every area recorded. Another
    epoch, or an id beyond the last record, is a :class:`ChangeIdRejected` (the
    equivalent of a CBT reset). A disk without a sidecar is untracked: ``"*"`` answers
    its allocated ranges and no changeId; anything else is rejected.

:func:`normalize` is the pure part both share: sorted, merged, sector-aligned, clipped.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from failback.dataplane.journal.model import SECTOR
from failback.dataplane.source_vsphere.files import DatastoreFiles
from failback.ports.vsphere import (
    ChangedArea,
    ChangedAreas,
    ChangeIdRejected,
    Changes,
    SnapshotDisk,
    VCenter,
    VSphereFault,
)

ALL = "*"
"""The changeId that asks for every allocated area."""

SIDECAR_SUFFIX = ".cbt"
SIDECAR_FORMAT = "failback-cbt/1"

ChangeTracking = Literal["vcenter", "sidecar"]


def normalize(areas: Iterable[ChangedArea], capacity: int) -> tuple[ChangedArea, ...]:
    """``areas`` sorted, widened to whole sectors, clipped to ``capacity``, overlapping and
    touching ones merged."""
    spans = []
    for area in areas:
        start = max(0, area.start) // SECTOR * SECTOR
        end = min(capacity, -(-(area.start + area.length) // SECTOR) * SECTOR)
        if end > start:
            spans.append((start, end))
    spans.sort()
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple(ChangedArea(s, e - s) for s, e in merged)


class VCenterChangedAreas:
    """Changed block tracking of a real vCenter (``QueryChangedDiskAreas``)."""

    def __init__(self, vcenter: VCenter, instance_uuid: str) -> None:
        self.vcenter = vcenter
        self.instance_uuid = instance_uuid
        self.queries = 0
        """``QueryChangedDiskAreas`` calls made (one per answer page)."""

    async def changed_areas(self, snapshot: str, disk: SnapshotDisk, since: str) -> Changes:
        areas: list[ChangedArea] = []
        offset = 0
        while offset < disk.capacity_bytes:
            self.queries += 1
            info = await self.vcenter.query_changed_areas(
                self.instance_uuid, snapshot, disk.device_key, offset, since
            )
            areas.extend(info.areas)
            covered = info.start_offset + info.length
            if covered <= offset:
                raise VSphereFault(
                    f"QueryChangedDiskAreas of disk {disk.device_key} answered no progress "
                    f"at offset {offset} (startOffset {info.start_offset}, length {info.length})"
                )
            offset = covered
        return Changes(normalize(areas, disk.capacity_bytes), disk.change_id)


def sidecar_of(flat: Path) -> Path:
    return flat.with_name(flat.name + SIDECAR_SUFFIX)


def allocated_ranges(path: Path, capacity: int) -> tuple[ChangedArea, ...]:
    """The ranges of ``path`` holding data (``SEEK_DATA``/``SEEK_HOLE``; the whole file
    where the file system cannot tell), within ``capacity``."""
    size = min(path.stat().st_size, capacity)
    if size == 0:
        return ()
    if not hasattr(os, "SEEK_DATA"):
        return normalize([ChangedArea(0, size)], capacity)
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        at = 0
        while at < size:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after ``at``
                break
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append(ChangedArea(start, end - start))
            at = end
    finally:
        os.close(fd)
    return normalize(out, capacity)


def read_sidecar(sidecar: Path, since: str, capacity: int) -> tuple[tuple[ChangedArea, ...], str]:
    """The areas a sidecar recorded after ``since`` and the changeId of its last record."""
    lines = sidecar.read_text().splitlines()
    if not lines:
        raise ChangeIdRejected(f"CBT sidecar {sidecar} is empty (tracking was reset)")
    header = json.loads(lines[0])
    if header.get("format") != SIDECAR_FORMAT:
        raise ChangeIdRejected(f"CBT sidecar {sidecar}: format {header.get('format')!r}")
    epoch = str(header["epoch"])
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn last record: written before its data, so no data yet
            raise ChangeIdRejected(f"CBT sidecar {sidecar}: line {number} is damaged") from None
    last = int(records[-1]["id"]) if records else 0
    after = 0
    if since != ALL:
        their_epoch, _, n = since.rpartition("/")
        if their_epoch != epoch or not n.isdigit() or int(n) > last:
            raise ChangeIdRejected(
                f"changeId {since!r} is not one of CBT sidecar {sidecar} (epoch {epoch}, "
                f"last change {last}): tracking was reset"
            )
        after = int(n)
    areas = (
        ChangedArea(int(r["start"]), int(r["length"])) for r in records if int(r["id"]) > after
    )
    return normalize(areas, capacity), f"{epoch}/{last}"


class SidecarChangedAreas:
    """The test bed's stand-in for CBT: the guest writer's ``<flat>.cbt`` sidecars."""

    def __init__(self, files: DatastoreFiles) -> None:
        self.files = files

    def _changed(self, disk: SnapshotDisk, since: str) -> Changes:
        flat = self.files.flat_file(disk.file_name)
        sidecar = sidecar_of(flat)
        if not sidecar.exists():
            if since != ALL:
                raise ChangeIdRejected(
                    f"disk {disk.file_name} has no CBT sidecar {sidecar}: changeId {since!r} "
                    "cannot be answered"
                )
            return Changes(allocated_ranges(flat, disk.capacity_bytes), None)
        areas, change_id = read_sidecar(sidecar, since, disk.capacity_bytes)
        if since == ALL:
            # Every allocated area, as CBT answers "*": what the file holds, also what was
            # written before this epoch of the sidecar began (a reset forgets no data).
            allocated = allocated_ranges(flat, disk.capacity_bytes)
            areas = normalize((*areas, *allocated), disk.capacity_bytes)
        return Changes(areas, change_id)

    async def changed_areas(self, snapshot: str, disk: SnapshotDisk, since: str) -> Changes:
        return await asyncio.to_thread(self._changed, disk, since)


def changed_areas_source(
    kind: ChangeTracking, *, vcenter: VCenter, instance_uuid: str, files: DatastoreFiles
) -> ChangedAreas:
    """The ``ChangedAreas`` the configuration names: ``vcenter`` or ``sidecar``."""
    if kind == "vcenter":
        return VCenterChangedAreas(vcenter, instance_uuid)
    if kind == "sidecar":
        return SidecarChangedAreas(files)
    raise ValueError(f"change tracking {kind!r}: 'vcenter' or 'sidecar'")
