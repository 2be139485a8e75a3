"""Sparse disk content in 512-byte pages, and the page-range listings Storage returns.

A page that was never written (or was cleared) is absent and reads as zeros. Every
write gives each page it touches a new *generation* from one process-wide counter,
so a diff against an older copy reports the pages written since, even when the
bytes are the same (as Azure does), and reports pages present in the older copy
but absent now as cleared.

This is the test bed's hottest code (every byte a benchmark moves passes through it),
so the model is kept in a shape that lets C do the per-page work:

- a store keeps two dicts keyed by page index: the bytes, and the generations. The
  generations dict is kept in write order (a rewritten page is moved to the end), so
  its entries run in ascending generation: the pages written after some generation
  are a suffix of it;
- a store's sorted page indices are computed once per ``version`` and handed to its
  copies (a snapshot never changes), so listings bisect to the range they want;
- a store knows its ancestry: each ``copy()`` starts a new *line* of changes and
  remembers the lines its content came through, each with the generation counter
  when it was left. When ``self`` descends from ``previous`` as it is now (the usual
  diff: a later snapshot of the same disk against an earlier one, both copies of the
  disk's line), every page written since has a generation above ``previous``'s last
  change and every other page is ``previous``'s own, so the diff reads only that
  suffix, and looks for cleared pages only if a clear dropped some since. Any other
  pair is compared page by page, as the definition says;
- the last diff is kept, as callers page through one listing in several requests.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import add, ne
from types import MappingProxyType

PAGE = 512
ZERO_PAGE = bytes(PAGE)


class _Counter:
    """The process-wide generation counter: ``last`` is the newest generation given out."""

    last = 0

    @classmethod
    def take(cls, count: int) -> int:
        """Reserve ``count`` generations; the first of them."""
        first = cls.last + 1
        cls.last += count
        return first


@dataclass(frozen=True)
class PageRange:
    """Bytes ``start``..``end`` inclusive, as in ``<PageRange>``/``<ClearRange>``."""

    start: int
    end: int
    cleared: bool = False


class PageStore:
    """The pages of one disk or snapshot; a snapshot holds a frozen copy."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.version = 0
        self.modified = 0.0
        """Emulated time of the last change (set by whoever writes)."""
        self._data: dict[int, bytes] = {}
        self._generations: dict[int, int] = {}
        """Page index to generation, in ascending generation (write order)."""
        self._sorted: list[int] | None = []
        """The page indices in order, for ``version``; None until asked for."""
        self._line = object()
        """Identifies this store's own history of changes (a copy starts a new one)."""
        self._forks: tuple[tuple[object, int], ...] = ()
        """The lines this store's content came through, each with the counter when left."""
        self._changed = _Counter.last
        """The counter at the last change: every page here has a generation up to it."""
        self._dropped = 0
        """The counter at the last clear that dropped pages, here or before the copy."""
        self._last_diff: tuple[object, int, int, int, int, list[PageRange]] | None = None

    @property
    def pages(self) -> Mapping[int, bytes]:
        """The written pages' bytes by page index (read only)."""
        return MappingProxyType(self._data)

    def copy(self) -> PageStore:
        clone = PageStore(self.size)
        clone.version = self.version
        clone.modified = self.modified
        clone._data = self._data.copy()
        clone._generations = self._generations.copy()
        clone._sorted = self._sorted  # never mutated in place, only replaced
        clone._forks = (*self._forks, (self._line, _Counter.last))
        clone._changed = self._changed
        clone._dropped = self._dropped
        return clone

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"bytes {offset}..{offset + length - 1} are outside the disk of {self.size} bytes"
            )

    def _changes(self, generation: int) -> None:
        """Record a change; every page now has a generation up to ``generation``."""
        self._changed = generation
        self.version += 1
        self._sorted = None
        self._last_diff = None

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (any alignment); touched pages get new generations."""
        self._check(offset, len(data))
        if not data:
            return
        end = offset + len(data)
        first, stop = offset // PAGE, (end - 1) // PAGE + 1
        head, tail = offset - first * PAGE, stop * PAGE - end
        if head or tail:  # the rest of the partly written pages at the edges stays
            data = (
                self._pages(first, first + 1)[:head]
                + bytes(data)
                + self._pages(stop - 1, stop)[PAGE - tail :]
            )
        indices = range(first, stop)
        generation = _Counter.take(len(indices))
        # A rewritten page moves to the end of the generations, which stay in write order.
        deque(map(self._generations.pop, indices, repeat(None)), maxlen=0)
        self._generations.update(zip(indices, range(generation, _Counter.last + 1), strict=True))
        self._data.update(zip(indices, _split(data), strict=True))
        self._changes(_Counter.last)

    def clear(self, offset: int, length: int) -> None:
        """Drop whole pages in the range; partial pages at the edges are zeroed instead."""
        self._check(offset, length)
        if not length:
            return
        end = offset + length
        first_whole = -(-offset // PAGE)
        last_whole = end // PAGE  # exclusive
        if first_whole >= last_whole:
            self.write(offset, bytes(length))
            return
        if offset < first_whole * PAGE:
            self.write(offset, bytes(first_whole * PAGE - offset))
        if end > last_whole * PAGE:
            self.write(last_whole * PAGE, bytes(end - last_whole * PAGE))
        gone: Iterable[int]
        if last_whole - first_whole < len(self._data):
            gone = range(first_whole, last_whole)
        else:
            gone = self._indices(first_whole, last_whole)
        count = len(self._data)
        deque(map(self._data.pop, gone, repeat(None)), maxlen=0)
        deque(map(self._generations.pop, gone, repeat(None)), maxlen=0)
        # A clear takes a generation too: a copy taken before it is told from one after.
        self._changes(_Counter.take(1))
        if len(self._data) < count:
            self._dropped = self._changed

    def chunks(self, offset: int, length: int, chunk: int = 4 << 20) -> Iterator[bytes]:
        """The bytes of ``offset``..``offset+length-1`` in pieces of at most ``chunk``."""
        self._check(offset, length)
        end = offset + length
        position = offset
        while position < end:
            stop = min(end, position + chunk)
            yield self.read(position, stop - position)
            position = stop

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        if not length:
            return b""
        first, stop = offset // PAGE, (offset + length - 1) // PAGE + 1
        out = self._pages(first, stop)
        skip = offset - first * PAGE
        return out if skip == 0 and len(out) == length else out[skip : skip + length]

    def _pages(self, first: int, stop: int) -> bytes:
        """The bytes of pages ``first``..``stop-1``, absent ones as zeros."""
        return b"".join(map(self._data.get, range(first, stop), repeat(ZERO_PAGE)))

    def _indices(self, lo: int, hi: int) -> list[int]:
        """The written page indices ``lo <= index < hi``, in order."""
        if self._sorted is None:
            self._sorted = sorted(self._data)
        keys = self._sorted
        return keys[bisect_left(keys, lo) : bisect_left(keys, hi)]

    def valid_ranges(self, start: int, end: int) -> list[PageRange]:
        """Written pages within bytes ``start``..``end`` (inclusive, page aligned)."""
        lo, hi = start // PAGE, end // PAGE + 1
        return [PageRange(a * PAGE, b * PAGE - 1) for a, b in _runs(self._indices(lo, hi))]

    def diff(self, previous: PageStore, start: int, end: int) -> list[PageRange]:
        """Pages written since ``previous`` and pages cleared since, in offset order."""
        lo, hi = start // PAGE, end // PAGE + 1
        key = (previous._line, previous.version, self.version, lo, hi)
        if self._last_diff is not None and self._last_diff[:5] == key:
            return list(self._last_diff[5])
        now, before = self._generations, previous._generations
        if self._descends_from(previous):
            # Only the pages written since ``previous`` last changed: a suffix of ``now``.
            written: list[int] = []
            for index, generation in reversed(now.items()):
                if generation <= previous._changed:
                    break
                if lo <= index < hi:
                    written.append(index)
            written.sort()
            cleared = (
                sorted(i for i in before.keys() - now.keys() if lo <= i < hi)
                if self._dropped > previous._changed
                else []  # nothing dropped since: every page of ``previous`` is still here
            )
        else:
            written = [i for i in self._indices(lo, hi) if before.get(i) != now[i]]
            cleared = [i for i in previous._indices(lo, hi) if i not in now]
        runs = [(a, b, False) for a, b in _runs(written)] + [
            (a, b, True) for a, b in _runs(cleared)
        ]
        ranges = [PageRange(a * PAGE, b * PAGE - 1, gone) for a, b, gone in sorted(runs)]
        self._last_diff = (*key, ranges)
        return list(ranges)

    def _descends_from(self, previous: PageStore) -> bool:
        """Whether this content is ``previous``'s content now plus changes made after.

        ``previous``'s content now is found on its own line from its last change on and,
        if it has not changed since it was copied, on the line it was copied from at the
        moment of the copy (so two snapshots of one disk meet on the disk's line). This
        store descends from it if its own line, or one it came through, is one of those
        and was followed at least that far.
        """
        origins = [(previous._line, previous._changed)]
        if previous._forks and previous._changed <= previous._forks[-1][1]:
            origins.append(previous._forks[-1])
        path = [*self._forks, (self._line, _Counter.last)]
        return any(line is origin and left >= at for origin, at in origins for line, left in path)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive page indices (sorted, distinct) as ``(first, stop)`` pairs."""
    if not indices:
        return []
    # A run starts where an index is not its predecessor plus one (found in C).
    follows = map(ne, islice(indices, 1, None), map(add, indices, repeat(1)))
    breaks = list(compress(range(1, len(indices)), follows))
    starts, stops = [0, *breaks], [*breaks, len(indices)]
    return [(indices[a], indices[b - 1] + 1) for a, b in zip(starts, stops, strict=True)]


def _split(data: bytes) -> Iterator[bytes]:
    """``data`` (a whole number of pages) cut into pages."""
    starts = range(0, len(data), PAGE)
    return map(data.__getitem__, map(slice, starts, range(PAGE, len(data) + PAGE, PAGE)))
