"""Retention and capacity decisions. Pure: the journal hands in what it has."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass


def first_kept(source_us: Sequence[int], retention: dt.timedelta) -> int:
    """Index of the oldest point to keep, given the points' source times, oldest first.

    A point is kept when its source time is within ``retention`` of the newest point's
    (never the local clock). The newest point is always kept. 0 for no points.
    """
    if not source_us:
        return 0
    horizon = source_us[-1] - retention // dt.timedelta(microseconds=1)
    for i, when in enumerate(source_us):
        if when >= horizon:
            return i
    return len(source_us) - 1


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """A segment as retention sees it: the ordinal of its base point (-1 for none)."""

    index: int
    base_ordinal: int


def deletable_segments(segments: Sequence[SegmentSpan], keep_ordinal: int) -> list[int]:
    """Segments (oldest first) holding only cycles at or before point ``keep_ordinal``.

    Segment *s* holds the cycles after its base up to the next segment's base, so it can go
    once the next segment's base is no newer than the oldest kept point. The newest segment
    always stays (it is being written).
    """
    out: list[int] = []
    for cur, nxt in itertools.pairwise(segments):
        if nxt.base_ordinal > keep_ordinal:
            break
        out.append(cur.index)
    return out


def fits(used: int, capacity: int, free_on_volume: int, needed: int) -> tuple[bool, int]:
    """Whether ``needed`` more bytes fit under both the capacity and the volume's free space.

    Returns (fits, available).
    """
    available = max(0, min(capacity - used, free_on_volume))
    return needed <= available, available
