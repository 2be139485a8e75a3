"""The Azure source's pure parts: batching, snapshot pacing, state, settings (no test bed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from failback.dataplane.journal import Extent
from failback.dataplane.pacing import Pacer
from failback.dataplane.source_azure import BaseSnapshot, DiskState, SourceSettings, batched

KIB = 1024


async def stream(extents: list[Extent]) -> AsyncIterator[Extent]:
    for ext in extents:
        yield ext


def data(offset: int, length: int) -> Extent:
    return Extent.of("d", offset, bytes(length))


@pytest.mark.parametrize(
    ("lengths", "batch_bytes", "batch_extents", "expected"),
    [
        ([4, 4, 4, 4], 8, 100, [2, 2]),  # by bytes
        ([4, 4, 4, 4], 100, 3, [3, 1]),  # by count
        ([4, 16, 4], 8, 100, [1, 1, 1]),  # a larger extent goes alone
        ([0, 0, 0, 4, 4, 4], 8, 100, [5, 1]),  # zeros weigh nothing (0: a zero extent)
        ([], 8, 100, []),
    ],
)
async def test_batches_are_bounded_and_numbered(
    lengths: list[int], batch_bytes: int, batch_extents: int, expected: list[int]
) -> None:
    extents = []
    offset = 0
    for n in lengths:
        extents.append(data(offset, n * KIB) if n else Extent.zero("d", offset, 64 * KIB))
        offset += max(n, 64) * KIB
    batches = [
        b
        async for b in batched(
            stream(extents),
            5,
            SourceSettings(),
            batch_bytes=batch_bytes * KIB,
            batch_extents=batch_extents,
        )
    ]
    assert [len(b.extents) for b in batches] == expected
    assert [b.seq for b in batches] == list(range(5, 5 + len(batches)))
    assert [e for b in batches for e in b.extents] == extents


def test_the_pacer_allows_n_per_window_and_honours_a_block() -> None:
    now = [0.0]
    pacer = Pacer(2, 300.0, lambda: now[0])
    assert pacer.wait_time() == 0
    pacer.taken()
    now[0] = 10.0
    pacer.taken()
    assert pacer.wait_time() == pytest.approx(290.0)
    now[0] = 300.5
    assert pacer.wait_time() == 0
    pacer.block_for(60.0)
    assert pacer.wait_time() == pytest.approx(60.0)


def test_disk_state_round_trips() -> None:
    when = dt.datetime(2026, 11, 23, 20, 0, tzinfo=dt.UTC)
    for state in (
        DiskState(),
        DiskState(BaseSnapshot("rg", "fb-d-0000003", 1 << 30, when), 3, ("fb-d-0000002",)),
    ):
        assert DiskState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize(
    "changes",
    [
        {"segment_bytes": 1000},
        {"read_chunk": 128 << 20},
        {"max_results": 10_001},
        {"batch_bytes": 0},
    ],
)
def test_settings_refuse_what_azure_or_the_journal_cannot_take(changes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        SourceSettings(**changes)  # type: ignore[arg-type]


def test_an_uploaded_disks_vhd_footer_is_not_part_of_the_guest_disk() -> None:
    from failback.dataplane.source_azure.source import guest_size

    assert guest_size(4 << 20) == 4 << 20
    assert guest_size((4 << 20) + 512) == 4 << 20
    assert guest_size(128 << 30) == 128 << 30
