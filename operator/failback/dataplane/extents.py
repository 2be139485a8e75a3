"""What both sources (Azure managed disks, vSphere VMs) make of changed ranges: the mode of
a cycle, zero extents for cleared or unallocated ranges, and journal batches."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterable, AsyncIterator

from failback.dataplane.journal import MAX_EXTENT, Batch, Extent


class CycleMode(enum.StrEnum):
    INITIAL = "Initial"
    INCREMENTAL = "Incremental"
    FULL_RESYNC = "FullResync"


def zero_extents(disk_id: str, start: int, end: int) -> list[Extent]:
    """Bytes ``start``..``end`` of ``disk_id`` as zeros, in extents of at most MAX_EXTENT."""
    return [
        Extent.zero(disk_id, at, min(MAX_EXTENT, end - at)) for at in range(start, end, MAX_EXTENT)
    ]


async def batched(
    extents: AsyncIterable[Extent], first_seq: int, *, max_bytes: int, max_count: int
) -> AsyncIterator[Batch]:
    """``extents`` in batches of at most ``max_bytes`` data bytes and ``max_count`` extents
    (a single larger extent goes alone), numbered ``first_seq``, ``first_seq + 1``…"""
    seq, current, size = first_seq, list[Extent](), 0
    async for ext in extents:
        weight = ext.length if ext.data is not None else 0
        if current and (size + weight > max_bytes or len(current) >= max_count):
            yield Batch(seq, tuple(current))
            seq += 1
            current, size = [], 0
        current.append(ext)
        size += weight
    if current:
        yield Batch(seq, tuple(current))
