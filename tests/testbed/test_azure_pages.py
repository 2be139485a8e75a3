"""The emulator's page store: reads, writes, clears, copies and diffs, as Azure has them."""

from __future__ import annotations

import itertools
import random

import pytest

from testbed.azure.pages import PAGE, PageRange, PageStore

SIZE = 64 * PAGE


def _filled(size: int = SIZE) -> PageStore:
    store = PageStore(size)
    store.write(0, bytes(range(256)) * (size // 256))
    return store


def test_a_new_store_reads_zeros_and_lists_nothing() -> None:
    store = PageStore(SIZE)
    assert store.read(0, SIZE) == bytes(SIZE)
    assert store.read(7, 3) == bytes(3)
    assert store.valid_ranges(0, SIZE - 1) == []
    assert len(store.pages) == 0


def test_writes_at_odd_alignments_keep_the_rest_of_their_pages() -> None:
    store = _filled()
    before = store.read(0, SIZE)
    store.write(PAGE + 3, b"\xaa" * 5)  # inside one page
    store.write(3 * PAGE - 2, b"\xbb" * (PAGE + 4))  # across three pages
    expected = bytearray(before)
    expected[PAGE + 3 : PAGE + 8] = b"\xaa" * 5
    expected[3 * PAGE - 2 : 4 * PAGE + 2] = b"\xbb" * (PAGE + 4)
    assert store.read(0, SIZE) == bytes(expected)
    assert store.read(PAGE + 2, 7) == bytes(expected[PAGE + 2 : PAGE + 9])


def test_a_partial_write_to_an_absent_page_pads_it_with_zeros() -> None:
    store = PageStore(SIZE)
    store.write(10 * PAGE + 100, b"\x01\x02")
    assert store.read(10 * PAGE, PAGE) == bytes(100) + b"\x01\x02" + bytes(PAGE - 102)
    assert store.valid_ranges(0, SIZE - 1) == [PageRange(10 * PAGE, 11 * PAGE - 1)]


def test_the_last_page_may_be_partial() -> None:
    store = PageStore(4 * PAGE + 100)
    store.write(4 * PAGE + 90, b"\x07" * 10)
    assert store.read(4 * PAGE, 100) == bytes(90) + b"\x07" * 10
    with pytest.raises(ValueError, match="outside the disk"):
        store.write(4 * PAGE + 95, b"\x07" * 10)
    with pytest.raises(ValueError, match="outside the disk"):
        store.read(0, 4 * PAGE + 101)


def test_clear_drops_whole_pages_and_zeroes_partial_ones() -> None:
    store = _filled()
    store.clear(2 * PAGE + 10, 3 * PAGE)  # page 2 from byte 10, pages 3-4, page 5 to byte 10
    assert store.read(2 * PAGE + 10, 3 * PAGE) == bytes(3 * PAGE)
    assert store.read(2 * PAGE, 10) == bytes(range(10))
    assert store.read(5 * PAGE + 10, 1) == bytes([10])
    assert store.valid_ranges(0, SIZE - 1) == [
        PageRange(0, 3 * PAGE - 1),
        PageRange(5 * PAGE, SIZE - 1),
    ]
    store.clear(0, SIZE)
    assert store.valid_ranges(0, SIZE - 1) == []
    assert store.read(0, SIZE) == bytes(SIZE)


def test_valid_ranges_merge_adjacent_pages_and_honour_the_range() -> None:
    store = PageStore(SIZE)
    for index in (1, 2, 3, 7, 9, 10):
        store.write(index * PAGE, b"\x01" * PAGE)
    assert store.valid_ranges(0, SIZE - 1) == [
        PageRange(PAGE, 4 * PAGE - 1),
        PageRange(7 * PAGE, 8 * PAGE - 1),
        PageRange(9 * PAGE, 11 * PAGE - 1),
    ]
    assert store.valid_ranges(2 * PAGE, 9 * PAGE + PAGE - 1) == [
        PageRange(2 * PAGE, 4 * PAGE - 1),
        PageRange(7 * PAGE, 8 * PAGE - 1),
        PageRange(9 * PAGE, 10 * PAGE - 1),
    ]


def test_a_rewrite_of_the_same_bytes_is_in_the_diff() -> None:
    disk = _filled()
    old = disk.copy()
    disk.write(4 * PAGE, disk.read(4 * PAGE, 2 * PAGE))
    new = disk.copy()
    assert new.diff(old, 0, SIZE - 1) == [PageRange(4 * PAGE, 6 * PAGE - 1)]
    assert new.diff(new, 0, SIZE - 1) == []


def test_a_clear_is_in_the_diff_as_cleared() -> None:
    disk = _filled()
    old = disk.copy()
    disk.clear(8 * PAGE, 4 * PAGE)
    disk.write(20 * PAGE, b"\x05" * PAGE)
    new = disk.copy()
    assert new.diff(old, 0, SIZE - 1) == [
        PageRange(8 * PAGE, 12 * PAGE - 1, cleared=True),
        PageRange(20 * PAGE, 21 * PAGE - 1),
    ]
    # Within a narrower range only, and a page written then cleared since is not listed.
    assert new.diff(old, 10 * PAGE, 30 * PAGE - 1) == [
        PageRange(10 * PAGE, 12 * PAGE - 1, cleared=True),
        PageRange(20 * PAGE, 21 * PAGE - 1),
    ]
    empty = PageStore(SIZE)
    base = empty.copy()
    empty.write(0, b"\x01" * PAGE)
    empty.clear(0, PAGE)
    assert empty.copy().diff(base, 0, SIZE - 1) == []


def test_diffs_between_stores_of_other_histories_compare_page_by_page() -> None:
    disk = _filled()
    first = disk.copy()
    disk.write(0, b"\x01" * PAGE)
    second = disk.copy()
    # Backwards: the newer one's page 0 is not in the older one.
    assert first.diff(second, 0, SIZE - 1) == [PageRange(0, PAGE - 1)]
    # A disk made from the older snapshot, written since: only its own write.
    branch = first.copy()
    branch.write(5 * PAGE, b"\x02" * PAGE)
    assert branch.copy().diff(first, 0, SIZE - 1) == [PageRange(5 * PAGE, 6 * PAGE - 1)]
    # Against the other branch: both branches' writes.
    assert branch.diff(second, 0, SIZE - 1) == [
        PageRange(0, PAGE - 1),
        PageRange(5 * PAGE, 6 * PAGE - 1),
    ]
    # Unrelated stores: everything present in either.
    other = PageStore(SIZE)
    other.write(3 * PAGE, b"\x03" * PAGE)
    assert other.diff(first, 0, 8 * PAGE - 1) == [
        PageRange(0, 3 * PAGE - 1, cleared=True),
        PageRange(3 * PAGE, 4 * PAGE - 1),
        PageRange(4 * PAGE, 8 * PAGE - 1, cleared=True),
    ]


def test_a_diff_against_a_store_changed_since_it_was_copied_is_exact() -> None:
    disk = _filled()
    snapshot = disk.copy()
    disk.write(PAGE, b"\x01" * PAGE)
    assert disk.diff(snapshot, 0, SIZE - 1) == [PageRange(PAGE, 2 * PAGE - 1)]
    # The older one changes afterwards (the emulator never does this to a snapshot).
    snapshot.write(2 * PAGE, b"\x02" * PAGE)
    snapshot.clear(3 * PAGE, PAGE)
    # Pages 2 (another generation) and 3 (absent there) count as written.
    assert disk.diff(snapshot, 0, SIZE - 1) == [PageRange(PAGE, 4 * PAGE - 1)]
    assert snapshot.diff(disk, 0, SIZE - 1) == [
        PageRange(PAGE, 3 * PAGE - 1),
        PageRange(3 * PAGE, 4 * PAGE - 1, cleared=True),
    ]


def test_copies_are_independent() -> None:
    disk = _filled()
    snapshot = disk.copy()
    content = snapshot.read(0, SIZE)
    disk.write(0, b"\xff" * SIZE)
    disk.clear(PAGE, PAGE)
    assert snapshot.read(0, SIZE) == content
    assert snapshot.valid_ranges(0, SIZE - 1) == [PageRange(0, SIZE - 1)]
    snapshot.clear(0, SIZE)
    assert disk.read(0, PAGE) == b"\xff" * PAGE
    assert disk.version != snapshot.version


class _Reference:
    """The page store as its definition says, one page at a time."""

    generations = itertools.count(1)

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, tuple[int, bytes]] = {}

    def copy(self) -> _Reference:
        clone = _Reference(self.size)
        clone.pages = dict(self.pages)
        return clone

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        for index in range(offset // PAGE, (end - 1) // PAGE + 1) if data else ():
            lo, hi = max(offset, index * PAGE), min(end, (index + 1) * PAGE)
            page = bytearray(self.pages.get(index, (0, bytes(PAGE)))[1])
            page[lo - index * PAGE : hi - index * PAGE] = data[lo - offset : hi - offset]
            self.pages[index] = (next(self.generations), bytes(page))

    def clear(self, offset: int, length: int) -> None:
        end = offset + length
        for index in range(offset // PAGE, (end - 1) // PAGE + 1):
            if offset <= index * PAGE and (index + 1) * PAGE <= end:
                self.pages.pop(index, None)
            else:
                lo, hi = max(offset, index * PAGE), min(end, (index + 1) * PAGE)
                self.write(lo, bytes(hi - lo))

    def read(self, offset: int, length: int) -> bytes:
        pages = range(offset // PAGE, (offset + length - 1) // PAGE + 1)
        whole = b"".join(self.pages.get(i, (0, bytes(PAGE)))[1] for i in pages)
        return whole[offset % PAGE : offset % PAGE + length]

    def valid_ranges(self, start: int, end: int) -> list[PageRange]:
        return _ranges((i, False) for i in range(start // PAGE, end // PAGE + 1) if i in self.pages)

    def diff(self, previous: _Reference, start: int, end: int) -> list[PageRange]:
        changes = []
        for index in range(start // PAGE, end // PAGE + 1):
            page, old = self.pages.get(index), previous.pages.get(index)
            if page is None and old is not None:
                changes.append((index, True))
            elif page is not None and (old is None or old[0] != page[0]):
                changes.append((index, False))
        return _ranges(changes)


def _ranges(pages: object) -> list[PageRange]:
    ranges: list[PageRange] = []
    for index, cleared in pages:  # type: ignore[attr-defined]
        last = ranges[-1] if ranges else None
        if last is not None and last.end + 1 == index * PAGE and last.cleared == cleared:
            ranges[-1] = PageRange(last.start, (index + 1) * PAGE - 1, cleared)
        else:
            ranges.append(PageRange(index * PAGE, (index + 1) * PAGE - 1, cleared))
    return ranges


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    size = 48 * PAGE + (PAGE // 2 if seed % 2 else 0)
    pages = -(-size // PAGE)
    stores = [(PageStore(size), _Reference(size))]
    for _ in range(300):
        store, reference = rng.choice(stores)
        op = rng.random()
        if op < 0.35:
            if rng.random() < 0.5:  # whole pages, as Put Page writes
                first = rng.randrange(size // PAGE)
                offset, length = first * PAGE, rng.randint(1, size // PAGE - first) * PAGE
            else:
                offset = rng.randrange(size)
                length = rng.randint(0, min(3 * PAGE, size - offset))
            data = rng.randbytes(length) if rng.random() < 0.8 else reference.read(offset, length)
            store.write(offset, data)
            reference.write(offset, data)
        elif op < 0.5:
            offset = rng.randrange(size)
            length = rng.randint(0, size - offset)
            store.clear(offset, length)
            reference.clear(offset, length)
        elif op < 0.65:
            stores.append((store.copy(), reference.copy()))
        elif op < 0.9:
            previous, previous_reference = rng.choice(stores)
            first = rng.randrange(pages)
            start, end = first * PAGE, rng.randrange(first, pages + 1) * PAGE - 1
            if end < start:
                end = pages * PAGE - 1
            expected = reference.diff(previous_reference, start, end)
            assert store.diff(previous, start, end) == expected
            assert store.diff(previous, start, end) == expected  # the remembered answer
        else:
            first = rng.randrange(pages)
            start, end = first * PAGE, rng.randrange(first + 1, pages + 1) * PAGE - 1
            assert store.valid_ranges(start, end) == reference.valid_ranges(start, end)
            offset = rng.randrange(size)
            length = rng.randint(0, size - offset)
            assert store.read(offset, length) == reference.read(offset, length)
    for store, reference in stores:
        assert store.read(0, size) == reference.read(0, size)
        assert store.valid_ranges(0, pages * PAGE - 1) == reference.valid_ranges(
            0, pages * PAGE - 1
        )
        assert len(store.pages) == len(reference.pages)
