"""Sparse disk content in 512-byte pages, and the page-range listings Storage returns.

A page that was never written (or was cleared) is absent and reads as zeros. Every
write gives each page it touches a new *generation* from one process-wide counter,
so a diff against an older copy reports the pages written since, even when the
bytes are the same (as Azure does), and reports pages present in the older copy
but absent now as cleared.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PAGE = 512
ZERO_PAGE = bytes(PAGE)
_generations = itertools.count(1)


@dataclass(frozen=True)
class PageRange:
    """Bytes ``start``..``end`` inclusive, as in ``<PageRange>``/``<ClearRange>``."""

    start: int
    end: int
    cleared: bool = False


class PageStore:
    """The pages of one disk or snapshot; a snapshot holds a frozen copy."""

    def __init__(self, size: int, pages: dict[int, tuple[int, bytes]] | None = None) -> None:
        self.size = size
        self.pages: dict[int, tuple[int, bytes]] = pages if pages is not None else {}
        self.version = 0
        self.modified = 0.0
        """Emulated time of the last change (set by whoever writes)."""

    def copy(self) -> PageStore:
        clone = PageStore(self.size, dict(self.pages))
        clone.version = self.version
        clone.modified = self.modified
        return clone

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"bytes {offset}..{offset + length - 1} are outside the disk of {self.size} bytes"
            )

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (any alignment); touched pages get new generations."""
        self._check(offset, len(data))
        if not data:
            return
        end = offset + len(data)
        for index in range(offset // PAGE, (end - 1) // PAGE + 1):
            first = index * PAGE
            lo, hi = max(offset, first), min(end, first + PAGE)
            if hi - lo == PAGE:
                page = data[lo - offset : hi - offset]
            else:
                old = self.pages.get(index)
                buf = bytearray(old[1] if old else ZERO_PAGE)
                buf[lo - first : hi - first] = data[lo - offset : hi - offset]
                page = bytes(buf)
            self.pages[index] = (next(_generations), page)
        self.version += 1

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
        if last_whole - first_whole < len(self.pages):
            for index in range(first_whole, last_whole):
                self.pages.pop(index, None)
        else:
            for index in [i for i in self.pages if first_whole <= i < last_whole]:
                del self.pages[index]
        self.version += 1

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
        end = offset + length
        first, last = offset // PAGE, (end - 1) // PAGE
        out = bytearray((last - first + 1) * PAGE)
        for index in range(first, last + 1):
            page = self.pages.get(index)
            if page is not None:
                at = (index - first) * PAGE
                out[at : at + PAGE] = page[1]
        skip = offset - first * PAGE
        return bytes(out[skip : skip + length])

    def _indices(self, lo: int, hi: int, keys: Iterable[int]) -> list[int]:
        return sorted(i for i in keys if lo <= i < hi)

    def valid_ranges(self, start: int, end: int) -> list[PageRange]:
        """Written pages within bytes ``start``..``end`` (inclusive, page aligned)."""
        lo, hi = start // PAGE, end // PAGE + 1
        return _merge((i, False) for i in self._indices(lo, hi, self.pages))

    def diff(self, previous: PageStore, start: int, end: int) -> list[PageRange]:
        """Pages written since ``previous`` and pages cleared since, in offset order."""
        lo, hi = start // PAGE, end // PAGE + 1
        now, before = self.pages, previous.pages

        def changes() -> Iterator[tuple[int, bool]]:
            for index in self._indices(lo, hi, now.keys() | before.keys()):
                page = now.get(index)
                old = before.get(index)
                if page is None:
                    yield index, True
                elif old is None or old[0] != page[0]:
                    yield index, False

        return _merge(changes())


def _merge(pages: Iterable[tuple[int, bool]]) -> list[PageRange]:
    """Adjacent pages of the same kind become one range."""
    ranges: list[PageRange] = []
    run_start = run_end = -2
    run_cleared = False
    for index, cleared in pages:
        if index == run_end + 1 and cleared == run_cleared:
            run_end = index
            continue
        if run_start >= 0:
            ranges.append(PageRange(run_start * PAGE, (run_end + 1) * PAGE - 1, run_cleared))
        run_start = run_end = index
        run_cleared = cleared
    if run_start >= 0:
        ranges.append(PageRange(run_start * PAGE, (run_end + 1) * PAGE - 1, run_cleared))
    return ranges
